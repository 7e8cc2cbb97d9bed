//! The simulation's fleet: droplets on a timeline (created, `active`, booting, heartbeating,
//! taking runs, draining), what the plan observes of them, and what DigitalOcean does with its
//! actions. Shared by the failure scenarios (`sim`) and the load (`sim::load`).

use std::time::Duration;

use crate::release;
use crate::tasks::supervisor::facts::{Instance, Power};
use crate::tasks::supervisor::plan::{
    self, Action, Heartbeat, Observation, Rules, Spec, Streak, View,
};

pub(super) const CHECK_EVERY: u64 = 60;
pub(super) const ACTIVE_AFTER: u64 = 60;
pub(super) const BOOT: u64 = 150;
/// A droplet made from the baked image (docs/supervisor.md, "The baked image"): no apt install
/// (Docker is in the image) and no image pulls (the supervisor, proxy and Redis images are),
/// so cloud-init only writes its files, starts Docker and `docker compose up`. DigitalOcean
/// makes a droplet from a snapshot no faster (its own answer: "can take longer"), so `active`
/// stays at `ACTIVE_AFTER`.
pub const BAKED_BOOT: u64 = 25;
/// The supervisor's heartbeat before ops set it (Trigger.dev's default); its first heartbeat
/// comes one interval after it starts.
pub(super) const DEFAULT_BEAT: u64 = 30;
/// DigitalOcean answers a create within seconds; the droplet's clock starts then.
pub(super) const CREATE_LATENCY: u64 = 5;
pub(super) const TAG: &str = "trigger-supervisor-sim";
pub(super) const CURRENT: &str = "ops-spec-current";
/// The initial fleet is an hour old and heartbeats 7 s off the checks' phase.
pub(super) const FLEET_AGE: u64 = 3600 - 7;
/// Runs in flight on each running supervisor.
pub(super) const RUN_SLOTS: usize = 2;
pub(super) const DRAIN_TIMEOUT: u64 = 3600;

/// The policy being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Before issue 20: `stale_after` 2m, replace after `unhealthy_after` failed checks (delete,
    /// then create), every silence counted.
    Before,
    /// After issue 20, before issue 25: as `Now`, but a planned delete does not drain.
    NoDrain,
    /// Now: `stale_after` 1m, make before break, the webapp's outages told apart, a droplet
    /// drained before every planned delete (`drain_timeout` 1h).
    Now,
}

impl Policy {
    /// The heartbeat interval of the droplets under this policy.
    pub(super) fn beat(&self) -> u64 {
        match self {
            Policy::Now => crate::cloudinit::HEARTBEAT_INTERVAL_SECS,
            _ => DEFAULT_BEAT,
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Policy::Before => "before",
            Policy::NoDrain => "no drain",
            Policy::Now => "now",
        }
    }
}

/// What a scenario cost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Result {
    /// From the dead supervisor's last heartbeat to the first heartbeat of its replacement.
    pub recovery_secs: Option<u64>,
    pub created: u32,
    pub deleted: u32,
    /// Deleted while their supervisor was running (a rolling upgrade retires old ones by design:
    /// counted apart, in `retired`).
    pub healthy_deleted: u32,
    pub retired: u32,
    /// Runs in flight on a droplet ops deleted while its supervisor ran.
    pub killed: u32,
}

pub(super) struct Droplet {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) created: u64,
    pub(super) spec_tag: &'static str,
    pub(super) dies: Option<u64>,
    /// Heartbeats in these windows are lost.
    pub(super) lost: Vec<(u64, u64)>,
    pub(super) deleted: Option<u64>,
    pub(super) streak: Streak,
    /// (start, end) of the runs it took.
    pub(super) runs: Vec<(u64, u64)>,
    /// When ops told it to stop taking runs.
    pub(super) draining: Option<u64>,
    /// Seconds from `active` to the supervisor's start.
    pub(super) boot: u64,
    /// Its heartbeat interval (the first one an interval after its start).
    pub(super) beat: u64,
}

impl Droplet {
    /// A new droplet, created at `created` with this spec tag, boot and heartbeat interval.
    pub(super) fn new(
        id: u64,
        name: String,
        created: u64,
        (spec_tag, boot, beat): (&'static str, u64, u64),
    ) -> Droplet {
        Droplet {
            id,
            name,
            created,
            spec_tag,
            dies: None,
            lost: Vec::new(),
            deleted: None,
            streak: Streak::default(),
            runs: Vec::new(),
            draining: None,
            boot,
            beat,
        }
    }

    /// One of the fleet the simulation starts with: an hour old, healthy.
    pub(super) fn initial(id: u64, beat: u64) -> Droplet {
        let mut d = Droplet::new(id, format!("{TAG}-{id}"), 7 + id, (CURRENT, BOOT, beat));
        d.streak.last_ok = Some(0);
        d
    }

    pub(super) fn start(&self) -> u64 {
        self.created + ACTIVE_AFTER + self.boot
    }

    pub(super) fn running(&self, t: u64) -> bool {
        t >= self.start() + self.beat && self.dies.is_none_or(|d| t < d) && !self.off(t)
    }

    pub(super) fn in_flight(&self, t: u64) -> Vec<usize> {
        (0..self.runs.len())
            .filter(|&i| self.runs[i].0 <= t && t < self.runs[i].1)
            .collect()
    }

    /// A drained droplet shuts down once its last run has ended.
    pub(super) fn off(&self, t: u64) -> bool {
        self.draining.is_some_and(|since| {
            t > since && self.runs.iter().all(|r| r.1 <= t) && self.dies.is_none_or(|d| t < d)
        })
    }

    /// Fills free slots with new runs while it takes runs.
    pub(super) fn take_runs(&mut self, t: u64, len: u64) {
        if !self.running(t) || self.draining.is_some() {
            return;
        }
        while self.in_flight(t).len() < RUN_SLOTS {
            self.runs.push((t, t + len));
        }
    }

    /// Its last heartbeat the webapp recorded by `t` (included): `recorded(..).last()`, found
    /// from the end, so a droplet a week old costs a check no more than a new one.
    pub(super) fn last_recorded(&self, t: u64, webapp_down: Option<(u64, u64)>) -> Option<u64> {
        let first = self.start() + self.beat;
        let until = match self.dies {
            Some(d) => t.min(d.checked_sub(1)?),
            None => t,
        };
        let lost = |h: &u64| {
            webapp_down.is_some_and(|(a, b)| (a..b).contains(h))
                || self.lost.iter().any(|(a, b)| (*a..*b).contains(h))
        };
        let last = until.checked_sub(first)? / self.beat;
        (0..=last)
            .rev()
            .map(|k| first + k * self.beat)
            .find(|h| !lost(h))
    }

    /// The heartbeats it sends up to `t` (included) that the webapp records.
    pub(super) fn recorded(
        &self,
        t: u64,
        webapp_down: Option<(u64, u64)>,
    ) -> impl Iterator<Item = u64> + '_ {
        let first = self.start() + self.beat;
        let (dies, every) = (self.dies, self.beat);
        (0..)
            .map(move |k| first + k * every)
            .take_while(move |h| *h <= t && dies.is_none_or(|d| *h < d))
            .filter(move |h| {
                !webapp_down.is_some_and(|(a, b)| (a..b).contains(h))
                    && !self.lost.iter().any(|(a, b)| (*a..*b).contains(h))
            })
    }
}

pub(super) fn spec(policy: Policy, spec_tag: &str, count: usize) -> Spec {
    let now = policy != Policy::Before;
    Spec {
        count,
        tag: TAG.into(),
        spec_tag: spec_tag.into(),
        version: release::supervisor_version(None, Some("v4.5.12")),
        version_line: String::new(),
        rules: Rules {
            boot_grace: Duration::from_secs(600),
            // Now: every droplet beats every 10 s (ops' user-data, and its tag).
            stale_after: match policy {
                Policy::Now => crate::config::STALE_AFTER_FAST,
                Policy::NoDrain => crate::config::STALE_AFTER,
                Policy::Before => Duration::from_secs(120),
            },
        },
        unhealthy_after: 3,
        max_replacements: 3,
        replacement_window: Duration::from_secs(6 * 3600),
        health_sources: false,
        standby: now,
        blame_webapp: now,
        reset_breaker: false,
        profile: "health".into(),
        size: "s-2vcpu-4gb".into(),
        region: "nyc1".into(),
        image: "ubuntu-24-04-x64".into(),
        parts: Default::default(),
        drain_timeout: Duration::from_secs(if policy == Policy::Now {
            DRAIN_TIMEOUT
        } else {
            0
        }),
        max: 0,
        scale_in_after: None,
        extra_creates: 0,
        scale_line: None,
    }
}

/// The id of the `i`-th run a droplet took, as the observation and the webapp's runs name it:
/// sized once, with no growth (a week's replay names tens of millions).
pub(super) fn run_id(droplet: u64, i: usize) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(48);
    let _ = write!(id, "run_{droplet}_{i}");
    id
}

pub(super) fn observe(
    fleet: &[Droplet],
    t: u64,
    webapp_down: Option<(u64, u64)>,
    replacements: &[i64],
) -> Observation {
    let droplets = fleet
        .iter()
        .filter(|d| t >= d.created)
        .map(|d| {
            let active = t >= d.created + ACTIVE_AFTER;
            Instance {
                id: d.id,
                name: d.name.clone(),
                power: if d.off(t) {
                    Power::Off
                } else if active {
                    Power::Up
                } else {
                    Power::Other("new".into())
                },
                ip: active.then(|| format!("192.0.2.{}", d.id)),
                drain_marked: d.draining.is_some(),
                specs: vec![d.spec_tag.into()],
                version: Some("v4.5.12".into()),
                capable: true,
                age_secs: (t - d.created) as i64,
                prev: d.streak.clone(),
                built: Default::default(),
                heartbeat: match d.last_recorded(t, webapp_down) {
                    Some(h) => Heartbeat::Age((t - h) as f64),
                    None => Heartbeat::Never,
                },
                http: None,
                shutdown: Default::default(),
                runs: Some(
                    d.in_flight(t)
                        .into_iter()
                        .map(|i| run_id(d.id, i))
                        .collect(),
                ),
            }
        })
        .collect();
    Observation {
        now_ms: (t * 1000) as i64,
        stamp: format!("{t:012}"),
        droplets,
        foreign: Vec::new(),
        owned: Default::default(),
        view: View::Seen {
            group: "sim".into(),
            queue: "sim".into(),
        },
        replacements: replacements.to_vec(),
        webapp_check: None,
        other_groups: Vec::new(),
    }
}

/// What the run at `t` sees, and when it decides: with `confirm` (now), a heartbeat within
/// `CONFIRM_WITHIN` of stale is read again once it would be stale, in the same run, as the
/// task does.
pub(super) fn observe_confirmed(
    spec: &Spec,
    confirm: bool,
    fleet: &[Droplet],
    t: u64,
    webapp_down: Option<(u64, u64)>,
    replacements: &[i64],
) -> (Observation, u64) {
    let obs = observe(fleet, t, webapp_down, replacements);
    let ages: std::collections::BTreeMap<String, Option<f64>> = obs
        .droplets
        .iter()
        .filter_map(|d| match d.heartbeat {
            Heartbeat::Age(a) => Some((d.name.clone(), Some(a))),
            _ => None,
        })
        .collect();
    match plan::confirm_wait(&ages, spec.rules.stale_after) {
        Some(w) if confirm => {
            let t2 = t + w.as_secs_f64().ceil() as u64;
            (observe(fleet, t2, webapp_down, replacements), t2)
        }
        _ => (obs, t),
    }
}

/// The plan followed: its verdicts kept (streaks, breaker), its actions applied.
pub(super) fn follow(
    p: &plan::Plan,
    t: u64,
    new: (&'static str, u64, u64),
    refused: Option<(u64, u64)>,
    fleet: &mut Vec<Droplet>,
    replacements: &mut Vec<i64>,
    out: &mut Result,
) {
    for a in &p.assessed {
        if let Some(d) = fleet.iter_mut().find(|d| d.id == a.id) {
            d.streak = a.streak.clone();
        }
    }
    *replacements = p.replacements.clone();
    apply(&p.actions, t, new, refused, fleet, replacements, out);
}

/// What DigitalOcean does with the plan's actions at time `t` (a create fails while refused).
fn apply(
    actions: &[Action],
    t: u64,
    (current, boot, beat): (&'static str, u64, u64),
    refused: Option<(u64, u64)>,
    fleet: &mut Vec<Droplet>,
    replacements: &mut Vec<i64>,
    out: &mut Result,
) {
    let now_ms = (t * 1000) as i64;
    for action in actions {
        match action {
            Action::ResetBreaker => replacements.clear(),
            // The simulated shutdown always takes.
            Action::Resend { .. } => {}
            Action::Delete {
                id, replacement, ..
            } => {
                let Some(d) = fleet.iter_mut().find(|d| d.id == *id) else {
                    continue;
                };
                d.deleted = Some(t);
                out.deleted += 1;
                if d.running(t) {
                    out.killed += d.in_flight(t).len() as u32;
                    if d.spec_tag != current {
                        out.retired += 1;
                    } else {
                        out.healthy_deleted += 1;
                    }
                }
                if *replacement {
                    replacements.push(now_ms);
                }
            }
            Action::Drain { id, .. } => {
                if let Some(d) = fleet.iter_mut().find(|d| d.id == *id) {
                    d.draining = Some(t);
                }
            }
            Action::Create {
                name, standby_for, ..
            } => {
                if refused.is_some_and(|(a, b)| (a..b).contains(&t)) {
                    continue;
                }
                out.created += 1;
                fleet.push(Droplet::new(
                    100 + u64::from(out.created),
                    name.clone(),
                    t + CREATE_LATENCY,
                    (current, boot, beat),
                ));
                if standby_for.is_some() {
                    replacements.push(now_ms);
                }
            }
        }
    }
}

pub(super) fn minutes(secs: u64) -> String {
    format!("{:.1}", secs as f64 / 60.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_heartbeat_found_from_the_end_is_the_last_one_recorded() {
        let mut d = Droplet::initial(1, 10);
        d.lost.push((5_000, 5_090));
        let mut dead = Droplet::initial(2, 30);
        dead.dies = Some(4_000);
        for down in [None, Some((6_000, 6_600)), Some((0, 100_000))] {
            for t in (0..8_000).step_by(7) {
                for d in [&d, &dead] {
                    assert_eq!(
                        d.last_recorded(t, down),
                        d.recorded(t, down).last(),
                        "t {t}, down {down:?}"
                    );
                }
            }
        }
    }
}
