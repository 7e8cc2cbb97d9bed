//! The fleet under load: runs arriving, an environment limit, droplets booting, and the task's
//! own `decide::decide` deciding each minute (the load's verdict through `capacity::scale`, the
//! account's room, `plan::plan`; `scale_in_after` 15m). No IO, no clock.
//!
//! Every run is small-1x (0.5 vCPU, 0.5 GB), so a droplet of the default size (s-2vcpu-2gb:
//! 2 vCPU, 2 GB, $18/month) takes 4 at once, and takes them from its supervisor's start (it
//! dequeues at once; the heartbeat comes later). The environment may run 50 at once
//! (`floor(maximumConcurrencyLimit × concurrencyLimitBurstFactor)`, 25 × 2.0); the run engine
//! hands out no more. Runs are dequeued every 5 s, in arrival order. A droplet costs from its
//! create to its delete, at `price_monthly` prorated over a 730-hour month.

use std::time::Duration;

use super::fleet::{
    follow, minutes, observe, spec, Droplet, Policy, Result as Counts, BAKED_BOOT, BOOT,
    CHECK_EVERY, CURRENT, FLEET_AGE,
};
use crate::clients::webapp_db::{PresetNeed, ReadyGroup, RunOnWorker, WorkerRuns};
use crate::tasks::supervisor::capacity::Bounds;
use crate::tasks::supervisor::decide::{self, Cloud};
use crate::tasks::supervisor::facts::Machine;
use crate::tasks::supervisor::plan::{self, Observation};

const STEP: u64 = 5;
const PER_DROPLET: usize = 4;
pub const ENV_LIMIT: u64 = 50;
pub const MAX: usize = 13;
const PRICE_MONTHLY: f64 = 18.0;
const HOURS_A_MONTH: f64 = 730.0;
const SCALE_OUT_AFTER: u64 = 30;
const SCALE_IN_AFTER: u64 = 15 * 60;
/// When the load starts (seconds after the simulation starts).
const LOAD_AT: u64 = 600;

/// What arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// 200 runs of 3 minutes within one minute; 2 hours in all.
    Burst,
    /// One 2-minute run every 30 minutes for 8 hours.
    QuietNight,
}

impl Traffic {
    fn name(&self) -> &'static str {
        match self {
            Traffic::Burst => "a burst: 200 runs in a minute, 3 min each",
            Traffic::QuietNight => "a quiet night: a 2-min run every 30 min, 8 h",
        }
    }

    fn length(&self) -> u64 {
        match self {
            Traffic::Burst => 2 * 3600,
            Traffic::QuietNight => 8 * 3600,
        }
    }

    fn run_len(&self) -> u64 {
        match self {
            Traffic::Burst => 180,
            Traffic::QuietNight => 120,
        }
    }

    /// Arrival times, from the simulation's start.
    fn arrivals(&self) -> Vec<u64> {
        match self {
            Traffic::Burst => (0..200).map(|i| LOAD_AT + i * 60 / 200).collect(),
            Traffic::QuietNight => (0..16).map(|i| LOAD_AT + i * 1800).collect(),
        }
    }
}

/// What one load cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Seconds the first and the last arriving run waited to start.
    pub first_wait: u64,
    pub last_wait: u64,
    pub longest_wait: u64,
    pub droplet_hours: f64,
    /// The same hours for a fixed fleet of `max`.
    pub fixed_hours: f64,
    pub created: u32,
    pub killed: u32,
    pub unstarted: usize,
}

/// The default SUPERVISOR_SIZE as `GET /v2/sizes` lists it (memory in MB).
fn size() -> Machine {
    Machine {
        slug: "s-2vcpu-2gb".into(),
        vcpus: 2,
        memory: 2048,
        disk: 60,
        price_monthly: PRICE_MONTHLY,
        regions: Vec::new(),
        available: true,
    }
}

pub fn cost(hours: f64) -> f64 {
    hours * PRICE_MONTHLY / HOURS_A_MONTH
}

/// The supervisor dequeues from its start until it is told to drain.
fn takes_runs(d: &Droplet, t: u64) -> bool {
    t >= d.start() && d.draining.is_none() && d.deleted.is_none() && !d.off(t)
}

fn initial(min: usize, beat: u64) -> Vec<Droplet> {
    (1..=min as u64)
        .map(|id| Droplet::initial(id, beat))
        .collect()
}

/// The account the simulation runs in: the default size, room for every droplet.
struct SimCloud;

impl Cloud for SimCloud {
    fn machines(&self) -> std::result::Result<Vec<Machine>, String> {
        Ok(vec![size()])
    }

    fn known_machines(&self) -> Option<Vec<Machine>> {
        Some(vec![size()])
    }

    fn room(&self) -> std::result::Result<usize, String> {
        Ok(MAX)
    }
}

/// What the webapp's database would say at `t`: the runs on the droplets, the runs waiting
/// past `scale_out_after` under the environment limit, and what the waiting runs need.
pub(super) fn runs(fleet: &[Droplet], t: u64, queued: &[u64]) -> WorkerRuns {
    let on_workers: Vec<RunOnWorker> = fleet
        .iter()
        .flat_map(|d| {
            d.in_flight(t).into_iter().map(|i| RunOnWorker {
                id: format!("run_{}_{i}", d.id),
                friendly_id: format!("run_{}_{i}", d.id),
                instance: Some(d.name.clone()),
                status: "EXECUTING".into(),
                preset: None,
            })
        })
        .collect();
    let running = on_workers.len() as u64;
    let ready = queued.iter().filter(|a| t - **a > SCALE_OUT_AFTER).count() as u64;
    WorkerRuns {
        on_workers,
        needs: vec![PresetNeed {
            kind: "waiting".into(),
            preset: None,
            runs: queued.len() as u64,
        }],
        track_ids: Vec::new(),
        ready: vec![ReadyGroup {
            environment: "env".into(),
            queue: "task/work".into(),
            waiting: ready,
            env_limit: Some(ENV_LIMIT),
            env_paused: Some(false),
            queue_limit: None,
            queue_paused: Some(false),
            running_env: running,
            running_queue: running,
        }],
    }
}

/// The task's own decision (decide.rs: the preset fit, the load's verdict, the plan) on what
/// the simulation observes at `t`.
pub(super) fn decided(bounds: Bounds, obs: &Observation, runs: &WorkerRuns) -> plan::Plan {
    let base = spec(Policy::Now, CURRENT, bounds.min);
    let desired = |_: &str| base.clone();
    decide::decide(
        &decide::Inputs {
            obs,
            spec: &desired,
            size: &size().slug,
            auto: false,
            region: &base.region,
            bounds,
            stale_after: base.rules.stale_after,
            scale_in_after: Duration::from_secs(SCALE_IN_AFTER),
            runs: Some(runs),
        },
        &SimCloud,
    )
    .plan
}

/// One load on a fleet of [`min`, `max`], its droplets made from Ubuntu or the baked image;
/// the load starts `phase` seconds after a check.
pub fn run(traffic: Traffic, min: usize, baked: bool, phase: u64) -> Outcome {
    run_checked(traffic, min, baked, phase, &mut |_, _, _| {})
}

/// [`run`], showing each check's observation, runs and plan to `checked`.
fn run_checked(
    traffic: Traffic,
    min: usize,
    baked: bool,
    phase: u64,
    checked: &mut dyn FnMut(&Observation, &WorkerRuns, &plan::Plan),
) -> Outcome {
    let t0 = FLEET_AGE + 60;
    let bounds = Bounds { min, max: MAX };
    let beat = Policy::Now.beat();
    let boot = if baked { BAKED_BOOT } else { BOOT };
    let arrivals: Vec<u64> = traffic.arrivals().iter().map(|a| t0 + a + phase).collect();
    let mut started: Vec<Option<u64>> = vec![None; arrivals.len()];
    let mut fleet = initial(min, beat);
    let mut gone: Vec<(u64, u64)> = Vec::new();
    let mut replacements: Vec<i64> = Vec::new();
    let mut counts = Counts::default();
    let end = t0 + traffic.length();
    let mut t = t0;
    while t < end {
        // The run engine hands a run to a supervisor with room while the environment has room.
        let mut running: usize = fleet.iter().map(|d| d.in_flight(t).len()).sum();
        for d in fleet.iter_mut().filter(|d| takes_runs(d, t)) {
            while d.in_flight(t).len() < PER_DROPLET && (running as u64) < ENV_LIMIT {
                let Some(i) =
                    (0..arrivals.len()).find(|&i| started[i].is_none() && arrivals[i] <= t)
                else {
                    break;
                };
                started[i] = Some(t);
                d.runs.push((t, t + traffic.run_len()));
                running += 1;
            }
        }
        if (t - t0) % CHECK_EVERY == 0 {
            let queued: Vec<u64> = (0..arrivals.len())
                .filter(|&i| started[i].is_none() && arrivals[i] <= t)
                .map(|i| arrivals[i])
                .collect();
            let obs = observe(&fleet, t, None, &replacements);
            let runs = runs(&fleet, t, &queued);
            let p = decided(bounds, &obs, &runs);
            checked(&obs, &runs, &p);
            follow(
                &p,
                t,
                (CURRENT, boot, beat),
                None,
                &mut fleet,
                &mut replacements,
                &mut counts,
            );
            gone.extend(
                fleet
                    .iter()
                    .filter_map(|d| d.deleted.map(|at| (d.created.max(t0), at))),
            );
            fleet.retain(|d| d.deleted.is_none());
        }
        t += STEP;
    }
    let hours = gone
        .iter()
        .copied()
        .chain(fleet.iter().map(|d| (d.created.max(t0), end)))
        .map(|(from, to)| to.saturating_sub(from) as f64 / 3600.0)
        .sum();
    let wait = |i: usize| started[i].map_or(end - arrivals[i], |s| s - arrivals[i]);
    Outcome {
        first_wait: wait(0),
        last_wait: wait(arrivals.len() - 1),
        longest_wait: (0..arrivals.len()).map(wait).max().unwrap_or(0),
        droplet_hours: hours,
        fixed_hours: MAX as f64 * traffic.length() as f64 / 3600.0,
        created: counts.created,
        killed: counts.killed,
        unstarted: started.iter().filter(|s| s.is_none()).count(),
    }
}

/// The load over the twelve 5-second phases of its start within a minute: the mean of each
/// figure, and the worst first wait.
pub fn over_phases(traffic: Traffic, min: usize, baked: bool) -> (Outcome, u64) {
    let all: Vec<Outcome> = (0..60)
        .step_by(5)
        .map(|p| run(traffic, min, baked, p))
        .collect();
    let n = all.len() as f64;
    let mean = |f: fn(&Outcome) -> f64| all.iter().map(f).sum::<f64>() / n;
    let worst_first = all.iter().map(|o| o.first_wait).max().unwrap_or(0);
    (
        Outcome {
            first_wait: mean(|o| o.first_wait as f64).round() as u64,
            last_wait: mean(|o| o.last_wait as f64).round() as u64,
            longest_wait: all.iter().map(|o| o.longest_wait).max().unwrap_or(0),
            droplet_hours: mean(|o| o.droplet_hours),
            fixed_hours: all[0].fixed_hours,
            created: all.iter().map(|o| o.created).max().unwrap_or(0),
            killed: all.iter().map(|o| o.killed).sum(),
            unstarted: all.iter().map(|o| o.unstarted).sum(),
        },
        worst_first,
    )
}

/// The markdown table docs/supervisor.md carries (scaling).
pub fn table() -> String {
    let mut out = format!(
        "| load (environment limit {ENV_LIMIT}, max {MAX}) | min | image | first run waits (min) | last run waits (min) | droplet-hours | cost | a fixed fleet of max | droplets created | runs killed by ops |\n|:--|--:|:--|--:|--:|--:|--:|--:|--:|--:|\n"
    );
    for traffic in [Traffic::Burst, Traffic::QuietNight] {
        for min in [0, 1] {
            for baked in [false, true] {
                let (o, worst) = over_phases(traffic, min, baked);
                out.push_str(&format!(
                    "| {} | {min} | {} | {} (worst {}) | {} | {:.1} | ${:.2} | ${:.2} | {} | {} |\n",
                    traffic.name(),
                    if baked { "baked" } else { "Ubuntu" },
                    minutes(o.first_wait),
                    minutes(worst),
                    minutes(o.last_wait),
                    o.droplet_hours,
                    cost(o.droplet_hours),
                    cost(o.fixed_hours),
                    o.created,
                    o.killed,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bursts_first_run_waits_at_most_two_and_a_half_minutes_with_min_zero_and_the_image() {
        let (o, worst) = over_phases(Traffic::Burst, 0, true);
        assert!(o.first_wait <= 150, "{o:?} (worst {worst})");
        assert_eq!((o.unstarted, o.killed), (0, 0), "{o:?}");
        let (plain, _) = over_phases(Traffic::Burst, 0, false);
        assert_eq!(
            plain.first_wait - o.first_wait,
            BOOT - BAKED_BOOT,
            "{plain:?}"
        );
    }

    #[test]
    fn the_burst_scales_out_to_what_the_environment_limit_lets_run_and_back_to_min() {
        let o = run(Traffic::Burst, 1, true, 0);
        // 50 at once, 4 per droplet: 13 droplets, the max.
        assert_eq!((o.unstarted, o.killed), (0, 0), "{o:?}");
        assert!(o.created as usize >= MAX - 1, "{o:?}");
        assert!(o.droplet_hours < o.fixed_hours / 2.0, "{o:?}");
        // The last runs wait for the limit, not for droplets: four 3-minute waves.
        assert!(o.last_wait >= 3 * 180, "{o:?}");
    }

    #[test]
    fn the_quiet_night_costs_no_more_than_min() {
        for baked in [false, true] {
            let one = run(Traffic::QuietNight, 1, baked, 0);
            assert!(
                (one.droplet_hours - 8.0).abs() < 0.01,
                "min 1 stays one droplet: {one:?}"
            );
            assert_eq!(one.created, 0, "{one:?}");
            let zero = run(Traffic::QuietNight, 0, baked, 0);
            assert!(zero.droplet_hours <= one.droplet_hours, "{zero:?}");
            assert_eq!((zero.unstarted, zero.killed), (0, 0), "{zero:?}");
        }
    }

    /// docs/supervisor.md carries the table between markers; `OPS_UPDATE_DOCS=1` rewrites it.
    #[test]
    fn the_scaling_table_in_the_docs_is_the_simulations() {
        super::super::tests::docs_carry(
            (
                "<!-- simulation-load:begin -->\n",
                "<!-- simulation-load:end -->",
            ),
            &table(),
        );
    }

    /// One scenario both ways: at every check of a burst, the droplets as the simulation knows
    /// them, and the same droplets as DigitalOcean lists them (status, tags) read by the task's
    /// observe, are decided by the task's decide alike.
    #[test]
    fn a_burst_is_decided_alike_from_the_simulations_facts_and_from_digitaloceans_listing() {
        let bounds = Bounds { min: 0, max: MAX };
        let now = chrono::Utc::now();
        let mut checks = 0;
        let mut acted = 0;
        run_checked(Traffic::Burst, 0, true, 0, &mut |obs, runs, p| {
            let mut listed = obs.clone();
            for d in listed.droplets.iter_mut() {
                let mut tags = vec![
                    super::super::fleet::TAG.to_string(),
                    plan::MANAGED_TAG.into(),
                    d.specs[0].clone(),
                    crate::release::version_tag(d.version.as_deref().unwrap_or_default()),
                    crate::tasks::supervisor::drain::CAPABLE_TAG.into(),
                ];
                if d.drain_marked {
                    tags.push(crate::tasks::supervisor::drain::DRAINING_TAG.into());
                }
                let created = now - chrono::Duration::seconds(d.age_secs);
                let droplet: crate::clients::digitalocean::Droplet =
                    serde_json::from_value(serde_json::json!({
                        "id": d.id,
                        "name": d.name,
                        "status": d.power.word(),
                        "created_at": created.to_rfc3339(),
                        "tags": tags,
                        "networks": {"v4": d.ip.iter().map(|ip| serde_json::json!({"ip_address": ip, "type": "public"})).collect::<Vec<_>>()},
                    }))
                    .expect("a droplet as DigitalOcean lists it");
                let mut seen = crate::tasks::supervisor::observe::listed(&droplet, now);
                seen.prev = d.prev.clone();
                seen.built = d.built.clone();
                seen.heartbeat = d.heartbeat.clone();
                seen.runs = d.runs.clone();
                *d = seen;
            }
            let task = decided(bounds, &listed, runs);
            assert_eq!(task.actions, p.actions, "at {}", obs.now_ms);
            assert_eq!(task.lines, p.lines, "at {}", obs.now_ms);
            checks += 1;
            acted += usize::from(!p.actions.is_empty());
        });
        assert!(
            checks > 100 && acted > 5,
            "{checks} checks, {acted} with actions"
        );
    }
}
