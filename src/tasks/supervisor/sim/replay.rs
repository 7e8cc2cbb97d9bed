//! A load replayed through the fleet: runs arriving (each with its length and preset), an
//! environment limit, droplets booting, and the task's own `decide::decide` deciding at every
//! check (the preset fit, the load's verdict through `capacity::scale`, the account's room,
//! `plan::plan`). No IO, no clock. `sim::load` feeds
//! it the docs' synthetic loads; `ops simulate` feeds it the operator's own week.
//!
//! A supervisor takes runs from its start (it dequeues at once; the heartbeat comes later), as
//! many as its droplet's CPUs and memory hold, in arrival order, every 5 s, while the
//! environment limit has room. A droplet costs from its create to its delete.

use std::collections::BTreeMap;
use std::time::Duration;

use super::fleet::{
    follow, observe, run_id, spec, Droplet, Policy, Result as Counts, BAKED_BOOT, BOOT,
    CHECK_EVERY, CURRENT, FLEET_AGE,
};
use crate::clients::webapp_db::{PresetNeed, ReadyGroup, RunOnWorker, WorkerRuns};
use crate::tasks::supervisor::capacity::Bounds;
use crate::tasks::supervisor::decide::{self, Cloud};
use crate::tasks::supervisor::facts::Machine;
use crate::tasks::supervisor::plan::{self, Observation};
use crate::tasks::supervisor::presets::Preset;

/// How often a supervisor dequeues.
const STEP: u64 = 5;
/// A 730-hour month, as DigitalOcean prorates `price_monthly`.
const HOURS_A_MONTH: f64 = 730.0;

/// One run: when it arrives (seconds after the replay starts), how long it runs, its preset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at: u64,
    pub len: u64,
    pub preset: Preset,
}

/// The supervisor settings a replay runs under.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub bounds: Bounds,
    /// SUPERVISOR_SIZE: its CPUs, memory and price.
    pub size: Machine,
    /// `floor(maximumConcurrencyLimit × concurrencyLimitBurstFactor)` of the environments;
    /// `None`: no limit.
    pub env_limit: Option<u64>,
    /// New droplets start from the baked image.
    pub baked: bool,
    pub scale_out_after: Duration,
    pub scale_in_after: Duration,
    pub drain_timeout: Duration,
}

/// The fleet at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Seconds after the replay starts.
    pub at: u64,
    /// Runs arrived and not started.
    pub waiting: u64,
    /// Droplets that exist (booting, serving or draining).
    pub droplets: u64,
}

/// What a replay cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Seconds each run waited to start (in arrival order); a run never started waited to the
    /// end of the replay.
    pub waits: Vec<u64>,
    pub unstarted: usize,
    pub droplet_hours: f64,
    pub created: u32,
    /// Runs in flight on a droplet ops deleted while its supervisor ran.
    pub killed: u32,
    /// The most droplets at once.
    pub peak: u64,
    pub samples: Vec<Sample>,
}

impl Replay {
    pub fn cost(&self, size: &Machine) -> f64 {
        self.droplet_hours * size.price_monthly / HOURS_A_MONTH
    }
}

/// A droplet's runs in flight: (end, preset), beside `Droplet::runs`.
type Load = BTreeMap<u64, Vec<(u64, Preset)>>;

/// Whether a run of `p` fits beside the runs in flight on a droplet of `size`.
fn fits(in_flight: &[(u64, Preset)], p: &Preset, size: &Machine) -> bool {
    let cpu: f64 = in_flight.iter().map(|(_, q)| q.cpu).sum::<f64>() + p.cpu;
    let gb: f64 = in_flight.iter().map(|(_, q)| q.memory_gb).sum::<f64>() + p.memory_gb;
    cpu <= f64::from(size.vcpus) && gb * 1024.0 <= size.memory as f64
}

/// The supervisor dequeues from its start until it is told to drain.
fn takes_runs(d: &Droplet, t: u64) -> bool {
    t >= d.start() && d.draining.is_none() && d.deleted.is_none() && !d.off(t)
}

/// The account a replay runs in: the one size, room for every droplet.
struct SimCloud<'a>(&'a Settings);

impl Cloud for SimCloud<'_> {
    fn machines(&self) -> Result<Vec<Machine>, String> {
        Ok(vec![self.0.size.clone()])
    }

    fn known_machines(&self) -> Option<Vec<Machine>> {
        Some(vec![self.0.size.clone()])
    }

    fn room(&self) -> Result<usize, String> {
        Ok(self.0.bounds.max)
    }
}

/// What the webapp's database would say at `t`: the runs on the droplets with their presets,
/// the runs waiting past `scale_out_after` under the environment limit, and what the waiting
/// runs need.
fn runs(s: &Settings, fleet: &[Droplet], load: &Load, waiting: &Waiting) -> WorkerRuns {
    let on_workers: Vec<RunOnWorker> = fleet
        .iter()
        .flat_map(|d| {
            let mine = load.get(&d.id).map(Vec::as_slice).unwrap_or_default();
            mine.iter().enumerate().map(|(i, (_, p))| {
                let id = run_id(d.id, i);
                RunOnWorker {
                    friendly_id: id.clone(),
                    id,
                    instance: Some(d.name.clone()),
                    status: "EXECUTING".into(),
                    preset: Some(p.name.into()),
                }
            })
        })
        .collect();
    let running = on_workers.len() as u64;
    WorkerRuns {
        on_workers,
        needs: waiting
            .by_preset
            .iter()
            .filter(|(_, runs)| *runs > 0)
            .map(|(name, runs)| PresetNeed {
                kind: "waiting".into(),
                preset: Some(name.to_string()),
                runs: *runs,
            })
            .collect(),
        track_ids: Vec::new(),
        ready: vec![ReadyGroup {
            environment: "env".into(),
            queue: "task/work".into(),
            waiting: waiting.ready,
            env_limit: s.env_limit,
            env_paused: Some(false),
            queue_limit: None,
            queue_paused: Some(false),
            running_env: running,
            running_queue: running,
        }],
    }
}

/// The task's own decision (decide.rs: the preset fit, the load's verdict, the plan) on what
/// the replay observes at `t`.
pub(super) fn decided(s: &Settings, obs: &Observation, runs: &WorkerRuns) -> plan::Plan {
    let mut base = spec(Policy::Now, CURRENT, s.bounds.min);
    base.drain_timeout = s.drain_timeout;
    let desired = |_: &str| base.clone();
    decide::decide(
        &decide::Inputs {
            obs,
            spec: &desired,
            size: &s.size.slug,
            auto: false,
            region: &base.region,
            bounds: s.bounds,
            stale_after: base.rules.stale_after,
            scale_in_after: s.scale_in_after,
            runs: Some(runs),
        },
        &SimCloud(s),
    )
    .plan
}

/// The runs in arrival order and when each started: those before `next` have started (runs
/// start in arrival order).
struct Queue<'a> {
    arrivals: &'a [Arrival],
    /// When the first minute starts on the replay's clock.
    offset: u64,
    started: Vec<Option<u64>>,
    next: usize,
    /// Per preset, how many of the first `i` runs have it: a check counts the waiting runs
    /// in constant time however long the queue (a week's backlog is a million runs).
    prefix: Vec<(&'static str, Vec<u32>)>,
}

/// The runs waiting at a check.
struct Waiting {
    count: u64,
    /// Waiting longer than `scale_out_after`.
    ready: u64,
    by_preset: Vec<(&'static str, u64)>,
}

impl<'a> Queue<'a> {
    fn new(arrivals: &'a [Arrival], offset: u64) -> Queue<'a> {
        let mut names: Vec<&'static str> = arrivals.iter().map(|a| a.preset.name).collect();
        names.sort_unstable();
        names.dedup();
        let prefix = names
            .into_iter()
            .map(|name| {
                let mut counts = Vec::with_capacity(arrivals.len() + 1);
                counts.push(0u32);
                for a in arrivals {
                    let last = counts[counts.len() - 1];
                    counts.push(last + u32::from(a.preset.name == name));
                }
                (name, counts)
            })
            .collect();
        Queue {
            arrivals,
            offset,
            started: vec![None; arrivals.len()],
            next: 0,
            prefix,
        }
    }

    fn at(&self, i: usize) -> u64 {
        self.offset + self.arrivals[i].at
    }

    /// The runs arrived by `t` and not started.
    fn waiting(&self, t: u64, scale_out_after: u64) -> Waiting {
        let rest = &self.arrivals[self.next..];
        let arrived = self.next + rest.partition_point(|a| self.offset + a.at <= t);
        let ready = self.next + rest.partition_point(|a| self.offset + a.at + scale_out_after < t);
        Waiting {
            count: (arrived - self.next) as u64,
            ready: (ready.min(arrived) - self.next) as u64,
            by_preset: self
                .prefix
                .iter()
                .map(|(name, c)| (*name, u64::from(c[arrived] - c[self.next])))
                .collect(),
        }
    }
}

/// The run engine hands a run to a supervisor with room while the environment has room.
fn hand_out(q: &mut Queue, fleet: &mut [Droplet], load: &mut Load, t: u64, s: &Settings) {
    let mut running: u64 = load.values().map(|r| r.len() as u64).sum();
    for d in fleet.iter_mut().filter(|d| takes_runs(d, t)) {
        let mine = load.entry(d.id).or_default();
        while q.next < q.arrivals.len()
            && q.at(q.next) <= t
            && s.env_limit.is_none_or(|l| running < l)
            && fits(mine, &q.arrivals[q.next].preset, &s.size)
        {
            let a = q.arrivals[q.next];
            q.started[q.next] = Some(t);
            d.runs.push((t, t + a.len));
            mine.push((t + a.len, a.preset));
            running += 1;
            q.next += 1;
        }
    }
}

/// What a check observed and decided.
pub type Checked = (Observation, WorkerRuns, plan::Plan);

/// The fleet a replay drives, and what it cost so far.
struct Fleet {
    droplets: Vec<Droplet>,
    load: Load,
    /// (from, to) of the droplets deleted.
    gone: Vec<(u64, u64)>,
    replacements: Vec<i64>,
    counts: Counts,
    peak: u64,
}

impl Fleet {
    /// One check at `t`: the task's decision on what it would observe, followed.
    fn check(&mut self, s: &Settings, waiting: &Waiting, t: u64, t0: u64) -> Checked {
        let boot = if s.baked { BAKED_BOOT } else { BOOT };
        let obs = observe(&self.droplets, t, None, &self.replacements);
        let runs = runs(s, &self.droplets, &self.load, waiting);
        let p = decided(s, &obs, &runs);
        follow(
            &p,
            t,
            (CURRENT, boot, Policy::Now.beat()),
            None,
            &mut self.droplets,
            &mut self.replacements,
            &mut self.counts,
        );
        for d in self.droplets.iter().filter(|d| d.deleted.is_some()) {
            self.gone.push((d.created.max(t0), d.deleted.unwrap_or(t)));
            self.load.remove(&d.id);
        }
        self.droplets.retain(|d| d.deleted.is_none());
        self.peak = self.peak.max(self.droplets.len() as u64);
        (obs, runs, p)
    }
}

/// Replays `arrivals` (sorted by `at`) over `length` seconds on a fleet that starts at `min`
/// healthy droplets; the checks come `phase` seconds before the first minute's arrivals.
pub fn run(arrivals: &[Arrival], length: u64, s: &Settings, phase: u64) -> Replay {
    run_checked(arrivals, length, s, phase, &mut |_| {})
}

/// [`run`], showing each check's observation, runs and plan to `checked`.
pub fn run_checked(
    arrivals: &[Arrival],
    length: u64,
    s: &Settings,
    phase: u64,
    checked: &mut dyn FnMut(&Checked),
) -> Replay {
    let t0 = FLEET_AGE + 60;
    let mut q = Queue::new(arrivals, t0 + phase);
    let droplets: Vec<Droplet> = (1..=s.bounds.min as u64)
        .map(|id| Droplet::initial(id, Policy::Now.beat()))
        .collect();
    let mut f = Fleet {
        peak: droplets.len() as u64,
        droplets,
        load: BTreeMap::new(),
        gone: Vec::new(),
        replacements: Vec::new(),
        counts: Counts::default(),
    };
    let mut samples = Vec::new();
    let end = t0 + length;
    let mut t = t0;
    while t < end {
        for d in f.droplets.iter_mut() {
            d.runs.retain(|r| r.1 > t);
        }
        for runs in f.load.values_mut() {
            runs.retain(|(e, _)| *e > t);
        }
        hand_out(&mut q, &mut f.droplets, &mut f.load, t, s);
        if (t - t0) % CHECK_EVERY == 0 {
            let waiting = q.waiting(t, s.scale_out_after.as_secs());
            checked(&f.check(s, &waiting, t, t0));
            samples.push(Sample {
                at: t - t0,
                waiting: waiting.count,
                droplets: f.droplets.len() as u64,
            });
        }
        t += STEP;
    }
    let droplet_hours = f
        .gone
        .iter()
        .copied()
        .chain(f.droplets.iter().map(|d| (d.created.max(t0), end)))
        .map(|(from, to)| to.saturating_sub(from) as f64 / 3600.0)
        .sum();
    Replay {
        waits: (0..arrivals.len())
            .map(|i| q.started[i].unwrap_or(end).saturating_sub(q.at(i)))
            .collect(),
        unstarted: q.started.iter().filter(|s| s.is_none()).count(),
        droplet_hours,
        created: f.counts.created,
        killed: f.counts.killed,
        peak: f.peak,
        samples,
    }
}
