//! How many droplets the load needs, pure: from the runs executing on our supervisors and the
//! runs that could start now, each droplet's room from its size and the runs' presets, clamped
//! to [`min`, `max`]. A run a concurrency limit or a pause holds back stays `PENDING` in the
//! database too (Trigger.dev moves a run to the worker queue only when its environment's
//! `floor(maximumConcurrencyLimit × concurrencyLimitBurstFactor)` and its queue's
//! `concurrencyLimit` allow it): more droplets would not start it, so it is not counted.

use crate::clients::digitalocean::Size;
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
    size: &Size,
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
        startable: can,
        held,
        executing: executing.len() as u64,
        per_droplet: per,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size() -> Size {
        Size {
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
}
