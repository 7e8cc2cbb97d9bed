//! How many droplets the load needs, pure: from the runs executing on our supervisors and the
//! runs that could start now, each droplet's room from its size and the runs' presets, clamped
//! to [`min`, `max`]. A run a concurrency limit or a pause holds back stays `PENDING` in the
//! database too (Trigger.dev moves a run to the worker queue only when its environment's
//! `floor(maximumConcurrencyLimit × concurrencyLimitBurstFactor)` and its queue's
//! `concurrencyLimit` allow it): more droplets would not start it, so it is not counted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::facts::Machine;
use crate::clients::webapp_db::{PresetNeed, ReadyGroup};
use crate::tasks::supervisor::presets::{self, Preset};

/// The fleet's bounds: SUPERVISOR_COUNT is both unless the task sets `min`/`max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: usize,
    pub max: usize,
}

impl Bounds {
    pub fn new(count: u32, min: Option<u32>, max: Option<u32>) -> Result<Bounds, String> {
        let (lo, hi) = match (min, max) {
            (None, None) => (count, count),
            (Some(lo), None) => (lo, lo.max(count)),
            (None, Some(hi)) => (count.min(hi), hi),
            (Some(lo), Some(hi)) => (lo, hi),
        };
        if hi == 0 || lo > hi {
            return Err(format!(
                "supervisor task: min {lo} and max {hi} must satisfy min ≤ max and max ≥ 1"
            ));
        }
        Ok(Bounds {
            min: lo as usize,
            max: hi as usize,
        })
    }

    pub fn scales(&self) -> bool {
        self.min < self.max
    }
}

/// What the load asks for this run.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub count: usize,
    /// What the load needs before the bounds clamp it.
    pub need: usize,
    /// Runs that could start now (waiting past `scale_out_after`, not held back).
    pub startable: u64,
    /// Runs waiting past `scale_out_after` that a limit or a pause holds back.
    pub held: u64,
    pub executing: u64,
    /// Runs of the typical preset one droplet takes.
    pub per_droplet: u32,
    pub why: String,
}

/// Runs of these groups that could start now: per queue its limit's room, per environment its
/// limit's room (shared by its queues); a paused environment or queue starts nothing.
pub fn startable(groups: &[ReadyGroup]) -> (u64, u64) {
    let mut envs: Vec<&str> = groups.iter().map(|g| g.environment.as_str()).collect();
    envs.sort_unstable();
    envs.dedup();
    let (mut can, mut all) = (0u64, 0u64);
    for env in envs {
        let of_env: Vec<&ReadyGroup> = groups.iter().filter(|g| g.environment == env).collect();
        let waiting: u64 = of_env.iter().map(|g| g.waiting).sum();
        all += waiting;
        if of_env.iter().any(|g| g.env_paused == Some(true)) {
            continue;
        }
        let by_queue: u64 = of_env
            .iter()
            .filter(|g| g.queue_paused != Some(true))
            .map(|g| {
                g.queue_limit.map_or(g.waiting, |l| {
                    g.waiting.min(l.saturating_sub(g.running_queue))
                })
            })
            .sum();
        let env_room = of_env[0]
            .env_limit
            .map_or(u64::MAX, |l| l.saturating_sub(of_env[0].running_env));
        can += by_queue.min(env_room);
    }
    (can, all - can)
}

/// The average preset of the waiting runs (by CPU and memory), the default when none wait.
fn typical(needs: &[PresetNeed]) -> Preset {
    let waiting: Vec<&PresetNeed> = needs.iter().filter(|n| n.kind == "waiting").collect();
    let n: u64 = waiting.iter().map(|w| w.runs).sum();
    if n == 0 {
        return presets::DEFAULT;
    }
    let (cpu, mem) = waiting.iter().fold((0.0, 0.0), |(c, m), w| {
        let p = presets::resolve(w.preset.as_deref());
        (c + p.cpu * w.runs as f64, m + p.memory_gb * w.runs as f64)
    });
    Preset {
        name: "typical",
        cpu: cpu / n as f64,
        memory_gb: mem / n as f64,
    }
}

/// The droplets the load needs: the executing runs' presets plus the startable runs at the
/// waiting runs' typical preset, against one droplet's CPUs and memory; clamped to `bounds`.
pub fn wanted(
    bounds: Bounds,
    serving: usize,
    size: &Machine,
    executing: &[Option<String>],
    ready: &[ReadyGroup],
    needs: &[PresetNeed],
) -> Wanted {
    let (can, held) = startable(ready);
    let typical = typical(needs);
    let (mut cpu, mut mem) = (0.0, 0.0);
    for p in executing.iter().map(|p| presets::resolve(p.as_deref())) {
        cpu += p.cpu;
        mem += p.memory_gb;
    }
    cpu += typical.cpu * can as f64;
    mem += typical.memory_gb * can as f64;
    let vcpus = f64::from(size.vcpus.max(1));
    let gb = (size.memory as f64 / 1024.0).max(0.25);
    let mut need = (cpu / vcpus).max(mem / gb).ceil() as usize;
    // No supervisor at all: the first waiting run brings one up at once (nobody could take it,
    // so waiting `scale_out_after` first would only add to its wait).
    let any_waiting = needs.iter().any(|n| n.kind == "waiting" && n.runs > 0);
    if serving == 0 && any_waiting {
        need = need.max(1);
    }
    let count = need.clamp(bounds.min, bounds.max);
    let per = presets::per_droplet(&typical, size).max(1);
    let mut why = format!(
        "{can} run(s) can start now, {} executing, {per} per droplet",
        executing.len()
    );
    if held > 0 {
        why.push_str(&format!(
            "; {held} more wait(s) behind a concurrency limit or a pause (more droplets would not start them)"
        ));
    }
    if need != count {
        why.push_str(&format!(
            "; {need} needed, kept within min {} and max {}",
            bounds.min, bounds.max
        ));
    }
    Wanted {
        count,
        need,
        startable: can,
        held,
        executing: executing.len() as u64,
        per_droplet: per,
        why,
    }
}

/// The fleet's size this run (the count the load wants when it scales by load, the line saying
/// why) and what it costs, kept for `ops status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleStatus {
    pub wanted: usize,
    pub actual: usize,
    pub min: usize,
    pub max: usize,
    pub why: String,
    /// The fleet's cost per month (USD) from the sizes' `price_monthly`.
    pub cost_monthly: Option<f64>,
    /// The same for a fixed fleet of `max`.
    pub cost_monthly_at_max: Option<f64>,
    #[serde(default)]
    pub scales: bool,
    /// Droplets the load needs before the bounds clamp it, and the runs that could start.
    #[serde(default)]
    pub need: usize,
    #[serde(default)]
    pub startable: u64,
    /// The droplets the account's limit left room for, when it was asked this run.
    #[serde(default)]
    pub room: Option<usize>,
    /// Runs wait because the fleet cannot grow ([`super::capped`]).
    #[serde(default)]
    pub capped: Option<super::capped::Capped>,
}

impl ScaleStatus {
    /// What the capped judgment reads of this verdict, with the oldest wait in our queues.
    pub fn capped_facts(&self, oldest_wait_secs: Option<f64>) -> super::capped::Facts {
        super::capped::Facts {
            startable: self.startable,
            need: self.need,
            max: self.max,
            room: self.room,
            serving: self.actual,
            oldest_wait_secs,
        }
    }
}

/// DigitalOcean makes at most this many droplets at a time.
pub const AT_ONCE: usize = 10;

/// How many droplets to create: those wanted beyond the ones that serve (or will).
pub fn to_create(wanted: usize, live: usize) -> usize {
    wanted.saturating_sub(live)
}

/// Creates beyond the first this run (scaling out), at most [`AT_ONCE`] in all.
pub fn beyond_first(wanted: usize, live: usize) -> usize {
    to_create(wanted, live).saturating_sub(1).min(AT_ONCE - 1)
}

/// The account's droplet limit caps the creates beyond the first: `room` is how many more
/// droplets it allows (or why that is unknown: then one create this run). The count allowed,
/// and what the report adds when the limit bites.
pub fn room_cap(extra: usize, room: Result<usize, String>) -> (usize, Option<String>) {
    match room {
        Ok(room) => {
            let note = (room < extra + 1).then(|| {
                format!(
                    "; the account's droplet limit leaves room for {room}: raise it in DigitalOcean's settings"
                )
            });
            (extra.min(room.saturating_sub(1)), note)
        }
        Err(e) => (
            0,
            Some(format!(
                "; one create this run (droplet limit unknown: {e})"
            )),
        ),
    }
}

/// What the runs ask of the fleet this run, per the webapp's database.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// The presets of the runs executing on our supervisors.
    pub executing: &'a [Option<String>],
    pub ready: &'a [ReadyGroup],
    pub needs: &'a [PresetNeed],
}

/// The load's verdict on the fleet's size, and what it costs: `serving` are the droplets that
/// serve (each with the size it was built with, when known), `size` the one this run builds
/// with, `sizes` what the sizes cost (`None`: not known). Returns the status and the creates
/// beyond the first that the count implies (before the account's room, [`room_cap`]). `stale`
/// of the serving droplets have an older spec: they leave as their replacements come up (a
/// rolling replace, not a scale-in).
pub fn scale(
    bounds: Bounds,
    serving: &[Option<&str>],
    stale: usize,
    size: &str,
    sizes: Option<&[Machine]>,
    load: Option<Load>,
    scale_in_after: Duration,
) -> (ScaleStatus, usize) {
    let actual = serving.len();
    let mut seen = ScaleStatus {
        wanted: actual.clamp(bounds.min, bounds.max),
        actual,
        min: bounds.min,
        max: bounds.max,
        scales: bounds.scales(),
        ..ScaleStatus::default()
    };
    let price = |slug: &str| {
        sizes
            .and_then(|all| all.iter().find(|z| z.slug == slug))
            .map(|z| z.price_monthly)
    };
    seen.cost_monthly = serving
        .iter()
        .map(|built| price(built.unwrap_or(size)))
        .sum::<Option<f64>>();
    seen.cost_monthly_at_max = price(size).map(|p| p * bounds.max as f64);
    if !bounds.scales() {
        seen.wanted = bounds.max;
        seen.why = format!("SUPERVISOR_COUNT={}", bounds.max);
        return (seen, 0);
    }
    let current = sizes.and_then(|all| all.iter().find(|z| z.slug == size));
    let (Some(load), Some(current)) = (load, current) else {
        seen.why = "the load is unknown this run (no runs read, or no size from DigitalOcean): the fleet stays as it is".into();
        return (seen, 0);
    };
    let w = wanted(
        bounds,
        actual,
        current,
        load.executing,
        load.ready,
        load.needs,
    );
    seen.wanted = w.count;
    (seen.need, seen.startable) = (w.need, w.startable);
    seen.why = match w.count.cmp(&actual) {
        std::cmp::Ordering::Greater => format!("scale out {actual} → {}: {}", w.count, w.why),
        std::cmp::Ordering::Less if actual - stale <= w.count => format!(
            "fleet: {} droplet(s) wanted (min {}, max {}): {}; {stale} with an older spec stay until their replacements are healthy (rolling replace)",
            w.count, bounds.min, bounds.max, w.why
        ),
        std::cmp::Ordering::Less => format!(
            "scale in {actual} → {}: {} (a droplet goes once it executed nothing for {}, drained)",
            w.count,
            w.why,
            crate::duration::format(scale_in_after)
        ),
        std::cmp::Ordering::Equal => format!(
            "fleet: {} droplet(s) wanted (min {}, max {}): {}",
            w.count, bounds.min, bounds.max, w.why
        ),
    };
    (seen, beyond_first(w.count, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size() -> Machine {
        Machine {
            slug: "s-2vcpu-2gb".into(),
            vcpus: 2,
            memory: 2048,
            disk: 60,
            price_monthly: 18.0,
            regions: vec![],
            available: true,
        }
    }

    fn group(waiting: u64, env_limit: Option<u64>, running: u64) -> ReadyGroup {
        ReadyGroup {
            environment: "env1".into(),
            queue: "task/a".into(),
            waiting,
            env_limit,
            env_paused: Some(false),
            queue_limit: None,
            queue_paused: Some(false),
            running_env: running,
            running_queue: running,
        }
    }

    const B: Bounds = Bounds { min: 1, max: 3 };

    #[test]
    fn thirty_runs_free_to_start_want_the_max() {
        let w = wanted(B, 1, &size(), &[], &[group(30, None, 0)], &[]);
        assert_eq!((w.count, w.startable, w.per_droplet), (3, 30, 4));
        assert!(
            w.why.contains("8 needed, kept within min 1 and max 3"),
            "{}",
            w.why
        );
    }

    #[test]
    fn runs_held_back_by_the_environment_limit_want_nothing_more() {
        // The limit is full with the runs already executing: none of the 30 can start.
        let executing = vec![None; 4];
        let w = wanted(B, 1, &size(), &executing, &[group(30, Some(4), 4)], &[]);
        assert_eq!((w.count, w.startable, w.held), (1, 0, 30));
        let mut paused = group(30, None, 0);
        paused.queue_paused = Some(true);
        assert_eq!(wanted(B, 1, &size(), &[], &[paused], &[]).count, 1);
    }

    #[test]
    fn an_idle_fleet_wants_min_and_min_zero_wants_none() {
        assert_eq!(wanted(B, 1, &size(), &[], &[], &[]).count, 1);
        let zero = Bounds { min: 0, max: 3 };
        assert_eq!(wanted(zero, 0, &size(), &[], &[], &[]).count, 0);
        // The first waiting run brings one up.
        assert_eq!(
            wanted(zero, 0, &size(), &[], &[group(1, None, 0)], &[]).count,
            1
        );
    }

    #[test]
    fn the_environment_room_is_shared_by_its_queues() {
        let mut a = group(20, Some(10), 2);
        let mut b = group(20, Some(10), 2);
        a.queue = "task/a".into();
        b.queue = "task/b".into();
        a.running_queue = 1;
        b.running_queue = 1;
        assert_eq!(startable(&[a, b]), (8, 32));
    }

    #[test]
    fn bounds_follow_supervisor_count_unless_set() {
        assert_eq!(
            Bounds::new(2, None, None).unwrap(),
            Bounds { min: 2, max: 2 }
        );
        assert_eq!(
            Bounds::new(1, Some(0), Some(4)).unwrap(),
            Bounds { min: 0, max: 4 }
        );
        assert!(Bounds::new(1, Some(3), Some(2)).is_err());
        assert!(Bounds::new(1, Some(0), Some(0)).is_err());
    }

    const SCALE_IN: Duration = Duration::from_secs(900);

    #[test]
    fn a_fixed_fleet_wants_its_count_and_costs_what_its_sizes_cost() {
        let fixed = Bounds { min: 2, max: 2 };
        let sizes = [size()];
        let built = [Some("s-2vcpu-2gb"), None];
        let (s, extra) = scale(
            fixed,
            &built,
            0,
            "s-2vcpu-2gb",
            Some(&sizes),
            None,
            SCALE_IN,
        );
        assert_eq!((s.wanted, s.actual, extra, s.scales), (2, 2, 0, false));
        assert_eq!(s.why, "SUPERVISOR_COUNT=2");
        assert_eq!(s.cost_monthly, Some(36.0));
        assert_eq!(s.cost_monthly_at_max, Some(36.0));
        // A droplet of a size whose price is not known: the fleet's cost is not either.
        let (s, _) = scale(
            fixed,
            &[Some("s-8vcpu-16gb")],
            0,
            "s-2vcpu-2gb",
            Some(&sizes),
            None,
            SCALE_IN,
        );
        assert_eq!(s.cost_monthly, None);
    }

    #[test]
    fn scaling_by_load_says_why_and_how_many_creates_beyond_the_first_the_count_implies() {
        let sizes = [size()];
        let groups = [group(30, None, 0)];
        let busy = Load {
            executing: &[],
            ready: &groups,
            needs: &[],
        };
        let (s, extra) = scale(
            B,
            &[None],
            0,
            "s-2vcpu-2gb",
            Some(&sizes),
            Some(busy),
            SCALE_IN,
        );
        assert_eq!((s.wanted, s.actual, extra), (3, 1, 1));
        assert!(
            s.why
                .starts_with("scale out 1 → 3: 30 run(s) can start now"),
            "{}",
            s.why
        );
        let idle = Load {
            executing: &[],
            ready: &[],
            needs: &[],
        };
        let three = [None, None, None];
        let (s, extra) = scale(
            B,
            &three,
            0,
            "s-2vcpu-2gb",
            Some(&sizes),
            Some(idle),
            SCALE_IN,
        );
        assert_eq!((s.wanted, extra), (1, 0));
        assert!(
            s.why.starts_with("scale in 3 → 1") && s.why.contains("executed nothing for 15m"),
            "{}",
            s.why
        );
        // Two of the three have an older spec and are being replaced: not a scale-in.
        let two = [None, None];
        let (s, _) = scale(
            B,
            &two,
            1,
            "s-2vcpu-2gb",
            Some(&sizes),
            Some(idle),
            SCALE_IN,
        );
        assert!(
            s.why
                .contains("1 with an older spec stay until their replacements are healthy")
                && !s.why.contains("scale in"),
            "{}",
            s.why
        );
        // No runs read, or the size not among the platform's: the fleet stays as it is.
        for (size_slug, load) in [("s-2vcpu-2gb", None), ("s-9vcpu", Some(busy))] {
            let (s, extra) = scale(B, &[None, None], 0, size_slug, Some(&sizes), load, SCALE_IN);
            assert_eq!((s.wanted, extra), (2, 0));
            assert!(s.why.starts_with("the load is unknown"), "{}", s.why);
        }
    }

    #[test]
    fn creates_beyond_the_first_stop_at_ten_at_once_and_at_the_accounts_room() {
        assert_eq!((to_create(3, 1), to_create(1, 3)), (2, 0));
        assert_eq!((beyond_first(3, 1), beyond_first(1, 1)), (1, 0));
        assert_eq!(beyond_first(40, 0), AT_ONCE - 1);
        assert_eq!(room_cap(4, Ok(10)), (4, None));
        let (n, note) = room_cap(4, Ok(2));
        assert_eq!(n, 1);
        assert!(note.unwrap().contains("leaves room for 2"));
        let (n, note) = room_cap(4, Err("HTTP 500".into()));
        assert_eq!(n, 0);
        assert!(note.unwrap().contains("droplet limit unknown: HTTP 500"));
    }
}
