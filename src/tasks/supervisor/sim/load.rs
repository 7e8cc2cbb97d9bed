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

use super::fleet::minutes;
use super::replay::{self, Arrival, Settings};
use crate::clients::webapp_db::WorkerRuns;
use crate::tasks::supervisor::capacity::Bounds;
use crate::tasks::supervisor::facts::Machine;
use crate::tasks::supervisor::plan::{self, Observation};
use crate::tasks::supervisor::presets;

pub const ENV_LIMIT: u64 = 50;
pub const MAX: usize = 13;
const PRICE_MONTHLY: f64 = 18.0;
const HOURS_A_MONTH: f64 = 730.0;
const SCALE_OUT_AFTER: u64 = 30;
const SCALE_IN_AFTER: u64 = 15 * 60;
const DRAIN_TIMEOUT: u64 = 3600;
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

/// The settings of these tables: [`min`, `MAX`], the default size, the environment limit.
pub fn settings(min: usize, baked: bool) -> Settings {
    Settings {
        bounds: Bounds { min, max: MAX },
        size: size(),
        env_limit: Some(ENV_LIMIT),
        baked,
        scale_out_after: Duration::from_secs(SCALE_OUT_AFTER),
        scale_in_after: Duration::from_secs(SCALE_IN_AFTER),
        drain_timeout: Duration::from_secs(DRAIN_TIMEOUT),
    }
}

impl Traffic {
    /// The runs, every one small-1x.
    pub fn runs(&self) -> Vec<Arrival> {
        self.arrivals()
            .into_iter()
            .map(|at| Arrival {
                at,
                len: self.run_len(),
                preset: presets::DEFAULT,
            })
            .collect()
    }
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
    let r = replay::run_checked(
        &traffic.runs(),
        traffic.length(),
        &settings(min, baked),
        phase,
        &mut |(obs, runs, p)| checked(obs, runs, p),
    );
    let last = r.waits.len() - 1;
    Outcome {
        first_wait: r.waits[0],
        last_wait: r.waits[last],
        longest_wait: r.waits.iter().copied().max().unwrap_or(0),
        droplet_hours: r.droplet_hours,
        fixed_hours: MAX as f64 * traffic.length() as f64 / 3600.0,
        created: r.created,
        killed: r.killed,
        unstarted: r.unstarted,
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
    use super::super::fleet::{BAKED_BOOT, BOOT};
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
        super::super::docs_carry(
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
            let task = replay::decided(&settings(0, true), &listed, runs);
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
