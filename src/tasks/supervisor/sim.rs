//! The fleet over time: a discrete simulation that drives the pure `plan` with synthetic
//! observations, to measure what a policy costs in minutes and droplets. No IO, no clock.
//!
//! The timeline (defaults of issue 20, DigitalOcean and Trigger.dev as measured): a check every
//! minute; a droplet is `active` 60 s after its create, its supervisor starts after 150 s more of
//! cloud-init and image pulls, heartbeats 30 s after starting and every 30 s after that. A
//! heartbeat is recorded only while the webapp is up. Each running supervisor keeps
//! `RUN_SLOTS` runs in flight (a new one starts at each check where a slot is free), each
//! `run_len` long; a draining droplet takes no new run and shuts down (`off`) once its last run
//! ends. A run in flight on a droplet ops deletes is a run killed by ops. docs/supervisor.md
//! carries the table `table()` prints; a test keeps the two equal.

use std::time::Duration;

use super::drain::{CAPABLE_TAG, DRAINING_TAG};
use super::plan::{self, Action, Heartbeat, Observation, Rules, Seen, Spec, Streak, View};
use crate::release;

const CHECK_EVERY: u64 = 60;
const ACTIVE_AFTER: u64 = 60;
const BOOT: u64 = 150;
/// A droplet made from the baked image (docs/supervisor.md, "The baked image"): no apt install
/// (Docker is in the image) and no image pulls (the supervisor, proxy and Redis images are),
/// so cloud-init only writes its files, starts Docker and `docker compose up`. DigitalOcean
/// makes a droplet from a snapshot no faster (its own answer: "can take longer"), so `active`
/// stays at `ACTIVE_AFTER`.
pub const BAKED_BOOT: u64 = 25;
const FIRST_BEAT: u64 = 30;
const BEAT_EVERY: u64 = 30;
/// DigitalOcean answers a create within seconds; the droplet's clock starts then.
const CREATE_LATENCY: u64 = 5;
const TAG: &str = "trigger-supervisor-sim";
const CURRENT: &str = "ops-spec-current";
const UPGRADED: &str = "ops-spec-upgraded";
/// The initial fleet is an hour old and heartbeats 7 s off the checks' phase.
const FLEET_AGE: u64 = 3600 - 7;
/// When the scenario's event happens (seconds after the simulation starts).
const EVENT_AT: u64 = 600;
const LENGTH: u64 = 4 * 3600;
/// Runs in flight on each running supervisor.
const RUN_SLOTS: usize = 2;
/// A long run (the seed's AI, video and ETL use cases).
const LONG_RUN: u64 = 40 * 60;
/// Longer than the default `drain_timeout` (1h).
const VERY_LONG_RUN: u64 = 90 * 60;
const DRAIN_TIMEOUT: u64 = 3600;

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
    fn name(&self) -> &'static str {
        match self {
            Policy::Before => "before",
            Policy::NoDrain => "no drain",
            Policy::Now => "now",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One of two supervisors dies (`offset` seconds into a minute).
    Dies { offset: u64 },
    /// The same, its replacement made from the baked image.
    DiesBaked { offset: u64 },
    /// The webapp records no heartbeat and answers `/healthcheck` 502 for this many minutes.
    WebappDown { minutes: u64 },
    /// One supervisor's heartbeats are lost for 90 s (one failing check with the defaults).
    Blip,
    /// The supervisor version changes: a rolling replace.
    Upgrade,
    /// One supervisor dies while DigitalOcean refuses every create for 10 minutes.
    CreatesRefused,
    /// A spec change (SUPERVISOR_SIZE, say) while 40-minute runs are in flight.
    SpecChange,
    /// SUPERVISOR_COUNT lowered from 3 to 2: one droplet is surplus.
    Surplus,
    /// A version upgrade while 90-minute runs are in flight: longer than `drain_timeout`.
    DrainTimeout,
}

impl Scenario {
    pub fn name(&self) -> String {
        match self {
            Scenario::Dies { .. } => "one supervisor dies".into(),
            Scenario::DiesBaked { .. } => "one supervisor dies, baked image".into(),
            Scenario::WebappDown { minutes } => format!("the webapp is down {minutes} min"),
            Scenario::Blip => "a supervisor blips for one check".into(),
            Scenario::Upgrade => "a version upgrade (rolling)".into(),
            Scenario::CreatesRefused => {
                "one dies while DigitalOcean refuses creates for 10 min".into()
            }
            Scenario::SpecChange => "a spec change, 40-min runs in flight".into(),
            Scenario::Surplus => "SUPERVISOR_COUNT 3 → 2".into(),
            Scenario::DrainTimeout => "a version upgrade, 90-min runs (> drain_timeout)".into(),
        }
    }

    fn run_len(&self) -> u64 {
        match self {
            Scenario::DrainTimeout => VERY_LONG_RUN,
            _ => LONG_RUN,
        }
    }

    /// Seconds of cloud-init and image pulls on a droplet ops creates.
    fn boot(&self) -> u64 {
        match self {
            Scenario::DiesBaked { .. } => BAKED_BOOT,
            _ => BOOT,
        }
    }

    fn changes_spec(&self) -> bool {
        matches!(
            self,
            Scenario::Upgrade | Scenario::SpecChange | Scenario::DrainTimeout
        )
    }
}

/// What a scenario cost.
#[derive(Debug, Clone, Copy, PartialEq)]
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

struct Droplet {
    id: u64,
    name: String,
    created: u64,
    spec_tag: &'static str,
    dies: Option<u64>,
    /// Heartbeats in these windows are lost.
    lost: Vec<(u64, u64)>,
    deleted: Option<u64>,
    streak: Streak,
    /// (start, end) of the runs it took.
    runs: Vec<(u64, u64)>,
    /// When ops told it to stop taking runs.
    draining: Option<u64>,
    /// Seconds from `active` to the supervisor's start.
    boot: u64,
}

impl Droplet {
    fn start(&self) -> u64 {
        self.created + ACTIVE_AFTER + self.boot
    }

    fn running(&self, t: u64) -> bool {
        t >= self.start() + FIRST_BEAT && self.dies.is_none_or(|d| t < d) && !self.off(t)
    }

    fn in_flight(&self, t: u64) -> Vec<usize> {
        (0..self.runs.len())
            .filter(|&i| self.runs[i].0 <= t && t < self.runs[i].1)
            .collect()
    }

    /// A drained droplet shuts down once its last run has ended.
    fn off(&self, t: u64) -> bool {
        self.draining.is_some_and(|since| {
            t > since && self.runs.iter().all(|r| r.1 <= t) && self.dies.is_none_or(|d| t < d)
        })
    }

    /// Fills free slots with new runs while it takes runs.
    fn take_runs(&mut self, t: u64, len: u64) {
        if !self.running(t) || self.draining.is_some() {
            return;
        }
        while self.in_flight(t).len() < RUN_SLOTS {
            self.runs.push((t, t + len));
        }
    }

    /// The heartbeats it sends up to `t` (included) that the webapp records.
    fn recorded(&self, t: u64, webapp_down: Option<(u64, u64)>) -> impl Iterator<Item = u64> + '_ {
        let first = self.start() + FIRST_BEAT;
        let dies = self.dies;
        (0..)
            .map(move |k| first + k * BEAT_EVERY)
            .take_while(move |h| *h <= t && dies.is_none_or(|d| *h < d))
            .filter(move |h| {
                !webapp_down.is_some_and(|(a, b)| (a..b).contains(h))
                    && !self.lost.iter().any(|(a, b)| (*a..*b).contains(h))
            })
    }
}

fn spec(policy: Policy, spec_tag: &str, count: usize) -> Spec {
    let now = policy != Policy::Before;
    Spec {
        count,
        tag: TAG.into(),
        spec_tag: spec_tag.into(),
        version: release::supervisor_version(None, Some("v4.5.12")),
        version_line: String::new(),
        rules: Rules {
            boot_grace: Duration::from_secs(600),
            stale_after: Duration::from_secs(if now { 60 } else { 120 }),
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

/// Runs one scenario under one policy.
pub fn run(scenario: Scenario, policy: Policy) -> Result {
    // The simulation starts at FLEET_AGE so every time is positive.
    let t0 = FLEET_AGE + 60;
    let at = t0 + EVENT_AT;
    let webapp_down = match scenario {
        Scenario::WebappDown { minutes } => Some((at, at + minutes * 60)),
        _ => None,
    };
    let refused = match scenario {
        Scenario::CreatesRefused => Some((at, at + 600)),
        _ => None,
    };
    let initial = if scenario == Scenario::Surplus { 3 } else { 2 };
    let mut fleet: Vec<Droplet> = (1..=initial)
        .map(|id| Droplet {
            id,
            name: format!("{TAG}-{id}"),
            created: 7 + id,
            spec_tag: CURRENT,
            dies: None,
            lost: Vec::new(),
            deleted: None,
            streak: Streak {
                fails: 0,
                last_ok: Some(0),
                last_error: None,
                drain: None,
                idle_since: None,
            },
            runs: Vec::new(),
            draining: None,
            boot: BOOT,
        })
        .collect();
    match scenario {
        Scenario::Dies { offset } | Scenario::DiesBaked { offset } => {
            fleet[0].dies = Some(at + offset)
        }
        Scenario::CreatesRefused => fleet[0].dies = Some(at),
        Scenario::Blip => fleet[0].lost.push((at, at + 90)),
        _ => {}
    }
    let last_beat = fleet[0]
        .dies
        .and_then(|d| fleet[0].recorded(d, webapp_down).last());
    let mut replacements: Vec<i64> = Vec::new();
    let mut out = Result {
        recovery_secs: None,
        created: 0,
        deleted: 0,
        healthy_deleted: 0,
        retired: 0,
        killed: 0,
    };
    let mut t = t0;
    while t < t0 + LENGTH {
        let current = if scenario.changes_spec() && t >= at {
            UPGRADED
        } else {
            CURRENT
        };
        let count = if scenario == Scenario::Surplus && t < at {
            3
        } else {
            2
        };
        for d in fleet.iter_mut() {
            d.take_runs(t, scenario.run_len());
        }
        let spec = spec(policy, current, count);
        let mut obs = observe(&fleet, t, webapp_down, &replacements);
        if plan::needs_webapp_check(&obs, &spec) {
            let down = webapp_down.is_some_and(|(a, b)| (a..b).contains(&t));
            obs.webapp_check = Some(if down {
                Err("GET /healthcheck answered HTTP 502".into())
            } else {
                Ok(())
            });
        }
        let p = plan::plan(&obs, &spec);
        for a in &p.assessed {
            if let Some(d) = fleet.iter_mut().find(|d| d.id == a.id) {
                d.streak = a.streak.clone();
            }
        }
        replacements = p.replacements.clone();
        apply(
            &p.actions,
            t,
            (current, scenario.boot()),
            refused,
            &mut fleet,
            &mut replacements,
            &mut out,
        );
        fleet.retain(|d| d.deleted.is_none());
        t += CHECK_EVERY;
    }
    // The dead supervisor's last heartbeat → the first recorded heartbeat of a droplet created
    // after it (and still there).
    out.recovery_secs = last_beat.and_then(|last| {
        fleet
            .iter()
            .filter(|d| d.created > last)
            .filter_map(|d| d.recorded(t, webapp_down).next())
            .min()
            .map(|first| first - last)
    });
    out
}

fn observe(
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
            let mut tags = vec![
                TAG.into(),
                plan::MANAGED_TAG.into(),
                d.spec_tag.into(),
                release::version_tag("v4.5.12"),
                CAPABLE_TAG.into(),
            ];
            if d.draining.is_some() {
                tags.push(DRAINING_TAG.into());
            }
            Seen {
                id: d.id,
                name: d.name.clone(),
                status: if d.off(t) {
                    "off"
                } else if active {
                    "active"
                } else {
                    "new"
                }
                .into(),
                ip: active.then(|| format!("192.0.2.{}", d.id)),
                tags,
                age_secs: (t - d.created) as i64,
                prev: d.streak.clone(),
                built: Default::default(),
                heartbeat: match d.recorded(t, webapp_down).last() {
                    Some(h) => Heartbeat::Age((t - h) as f64),
                    None => Heartbeat::Never,
                },
                http: None,
                runs: Some(
                    d.in_flight(t)
                        .into_iter()
                        .map(|i| format!("run_{}_{i}", d.id))
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

/// What DigitalOcean does with the plan's actions at time `t` (a create fails while refused).
fn apply(
    actions: &[Action],
    t: u64,
    (current, boot): (&'static str, u64),
    refused: Option<(u64, u64)>,
    fleet: &mut Vec<Droplet>,
    replacements: &mut Vec<i64>,
    out: &mut Result,
) {
    let now_ms = (t * 1000) as i64;
    for action in actions {
        match action {
            Action::ResetBreaker => replacements.clear(),
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
                fleet.push(Droplet {
                    id: 100 + u64::from(out.created),
                    name: name.clone(),
                    created: t + CREATE_LATENCY,
                    spec_tag: current,
                    dies: None,
                    lost: Vec::new(),
                    deleted: None,
                    streak: Streak::default(),
                    runs: Vec::new(),
                    draining: None,
                    boot,
                });
                if standby_for.is_some() {
                    replacements.push(now_ms);
                }
            }
        }
    }
}

/// Every scenario, both policies.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::Dies { offset: 0 },
        Scenario::DiesBaked { offset: 0 },
        Scenario::WebappDown { minutes: 2 },
        Scenario::WebappDown { minutes: 10 },
        Scenario::WebappDown { minutes: 60 },
        Scenario::Blip,
        Scenario::Upgrade,
        Scenario::CreatesRefused,
        Scenario::SpecChange,
        Scenario::Surplus,
        Scenario::DrainTimeout,
    ]
}

/// A dead supervisor's recovery in seconds over the phases of its death within a minute:
/// (mean, worst).
pub fn recovery_over_phases(policy: Policy, baked: bool) -> (u64, u64) {
    let all: Vec<u64> = (0..60)
        .step_by(5)
        .map(|offset| {
            if baked {
                Scenario::DiesBaked { offset }
            } else {
                Scenario::Dies { offset }
            }
        })
        .filter_map(|s| run(s, policy).recovery_secs)
        .collect();
    let worst = all.iter().copied().max().unwrap_or(0);
    let mean = all.iter().sum::<u64>() / all.len().max(1) as u64;
    (mean, worst)
}

fn minutes(secs: u64) -> String {
    format!("{:.1}", secs as f64 / 60.0)
}

/// The markdown table docs/supervisor.md carries.
pub fn table() -> String {
    let mut out = String::from(
        "| scenario (2 supervisors) | policy | minutes to a healthy replacement | droplets created | deleted | healthy ones deleted | runs killed by ops |\n|:--|:--|--:|--:|--:|--:|--:|\n",
    );
    for s in scenarios() {
        for policy in [Policy::Before, Policy::NoDrain, Policy::Now] {
            let r = run(s, policy);
            let recovery = match s {
                Scenario::Dies { .. } | Scenario::DiesBaked { .. } => {
                    let baked = matches!(s, Scenario::DiesBaked { .. });
                    let (mean, worst) = recovery_over_phases(policy, baked);
                    format!("{} (worst {})", minutes(mean), minutes(worst))
                }
                _ => r.recovery_secs.map_or("–".into(), minutes),
            };
            let healthy = if r.retired > 0 {
                format!(
                    "{} (+{} old version, by design)",
                    r.healthy_deleted, r.retired
                )
            } else {
                r.healthy_deleted.to_string()
            };
            out.push_str(&format!(
                "| {} | {} | {recovery} | {} | {} | {healthy} | {} |\n",
                s.name(),
                policy.name(),
                r.created,
                r.deleted,
                r.killed,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_supervisor_is_back_within_six_minutes_and_faster_than_before() {
        let (now_mean, now_worst) = recovery_over_phases(Policy::Now, false);
        let (before_mean, before_worst) = recovery_over_phases(Policy::Before, false);
        assert!(now_worst <= 360, "now: worst {now_worst}s");
        assert!(before_mean > now_mean + 60, "{before_mean} vs {now_mean}");
        assert!(
            (450..=600).contains(&before_mean),
            "before: {before_mean}s (worst {before_worst}s), issue 20 measured 8-9 min"
        );
        let r = run(Scenario::Dies { offset: 0 }, Policy::Now);
        assert_eq!(
            (r.created, r.deleted, r.healthy_deleted),
            (1, 1, 0),
            "{r:?}"
        );
    }

    #[test]
    fn the_baked_image_takes_its_boot_off_the_recovery_and_nothing_else() {
        let (plain, _) = recovery_over_phases(Policy::Now, false);
        let (baked, worst) = recovery_over_phases(Policy::Now, true);
        eprintln!("dead supervisor → healthy replacement: {plain}s from Ubuntu, {baked}s (worst {worst}s) from the baked image");
        assert_eq!(plain - baked, BOOT - BAKED_BOOT, "{plain} vs {baked}");
        let r = run(Scenario::DiesBaked { offset: 0 }, Policy::Now);
        assert_eq!(
            (r.created, r.deleted, r.healthy_deleted),
            (1, 1, 0),
            "{r:?}"
        );
    }

    #[test]
    fn a_webapp_outage_of_any_length_deletes_nothing() {
        for minutes in [2, 10, 60, 150] {
            let r = run(Scenario::WebappDown { minutes }, Policy::Now);
            assert_eq!((r.created, r.deleted), (0, 0), "{minutes} min: {r:?}");
            let before = run(Scenario::WebappDown { minutes }, Policy::Before);
            if minutes >= 10 {
                assert!(
                    before.healthy_deleted > 0,
                    "{minutes} min before: {before:?}"
                );
            }
        }
    }

    #[test]
    fn a_blip_never_deletes_a_healthy_droplet() {
        let r = run(Scenario::Blip, Policy::Now);
        assert_eq!(r.healthy_deleted, 0, "{r:?}");
        assert!(r.created <= 1 && r.deleted == r.created, "{r:?}");
    }

    #[test]
    fn an_upgrade_rolls_one_by_one_and_refused_creates_recover_after() {
        let r = run(Scenario::Upgrade, Policy::NoDrain);
        assert_eq!(
            (r.created, r.deleted, r.healthy_deleted, r.retired),
            (2, 2, 0, 2)
        );
        // Drained: the old ones go once they are off, nothing running is deleted.
        let r = run(Scenario::Upgrade, Policy::Now);
        assert_eq!(
            (r.created, r.deleted, r.healthy_deleted, r.retired, r.killed),
            (2, 2, 0, 0, 0),
            "{r:?}"
        );
        let r = run(Scenario::CreatesRefused, Policy::Now);
        let secs = r.recovery_secs.expect("recovered");
        assert!(secs > 600 && secs < 1200, "{secs}");
        assert_eq!(r.healthy_deleted, 0, "{r:?}");
    }

    #[test]
    fn with_the_defaults_no_planned_scenario_kills_a_run() {
        for s in [
            Scenario::Upgrade,
            Scenario::SpecChange,
            Scenario::Surplus,
            Scenario::Blip,
        ] {
            let before = run(s, Policy::NoDrain);
            let now = run(s, Policy::Now);
            assert_eq!(now.killed, 0, "{}: {now:?}", s.name());
            assert!(now.deleted >= 1, "{}: {now:?}", s.name());
            if s != Scenario::Blip {
                assert!(
                    before.killed > 0,
                    "{} without a drain: {before:?}",
                    s.name()
                );
            }
        }
        // Runs longer than drain_timeout: the timeout ends the drain, those runs are retried.
        let r = run(Scenario::DrainTimeout, Policy::Now);
        assert!(r.killed > 0 && r.deleted == 2, "{r:?}");
    }

    /// docs/supervisor.md carries the table between markers; `OPS_UPDATE_DOCS=1` rewrites it.
    #[test]
    fn the_table_in_the_docs_is_the_simulations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/supervisor.md");
        let doc = std::fs::read_to_string(path).expect("docs/supervisor.md");
        let (begin, end) = ("<!-- simulation:begin -->\n", "<!-- simulation:end -->");
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc.find(end).expect("end marker");
        let want = table();
        if std::env::var_os("OPS_UPDATE_DOCS").is_some() {
            let new = format!("{}{want}{}", &doc[..start], &doc[stop..]);
            std::fs::write(path, new).expect("write docs/supervisor.md");
            return;
        }
        assert_eq!(
            doc[start..stop],
            want,
            "docs/supervisor.md is out of date: OPS_UPDATE_DOCS=1 cargo test --lib simulation"
        );
    }
}
