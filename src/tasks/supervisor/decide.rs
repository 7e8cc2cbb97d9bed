//! The decision, pure: from what was observed (ops' own facts, time included) to one
//! [`Decision`]: the preset fit, then the load's verdict on the fleet's size, then the fleet's
//! plan, then the findings. No IO and no clock; what it may ask the platform while deciding
//! (its machine sizes, the account's room) comes through [`Cloud`], asked only when needed. The
//! task (DigitalOcean) and the simulation call this same function; a second platform brings its
//! own observe, [`Cloud`] and apply.

use std::time::Duration;

use crate::clients::webapp_db::WorkerRuns;

use super::capacity::{self, Bounds, ScaleStatus};
use super::facts::Machine;
use super::flow;
use super::plan::{self, Observation, Plan, Spec};
use super::presets::{self, Fit};

/// What decide may ask the platform, only when the decision needs it.
pub trait Cloud {
    /// The machine sizes on offer (may ask the platform; kept a day).
    fn machines(&self) -> Result<Vec<Machine>, String>;
    /// The machine sizes already known, however old (never asks).
    fn known_machines(&self) -> Option<Vec<Machine>>;
    /// How many more machines the account allows.
    fn room(&self) -> Result<usize, String>;
}

/// Everything the decision reads.
pub struct Inputs<'a> {
    pub obs: &'a Observation,
    /// The desired state for a size (the size grows with SUPERVISOR_SIZE=auto).
    pub spec: &'a dyn Fn(&str) -> Spec,
    /// The size the fleet is built with, before the preset fit.
    pub size: &'a str,
    /// SUPERVISOR_SIZE=auto: a size too small for the runs grows.
    pub auto: bool,
    pub region: &'a str,
    pub bounds: Bounds,
    /// When a heartbeat is stale, as observe chose it from how often the droplets beat.
    pub stale_after: Duration,
    pub scale_in_after: Duration,
    /// Our group's runs on workers and what its waiting runs need (`None`: not read).
    pub runs: Option<&'a WorkerRuns>,
}

/// What the run does, and what it keeps.
#[derive(Debug, Clone)]
pub struct Decision {
    pub plan: Plan,
    /// The desired state the plan was made for (its size, count and rules this run).
    pub spec: Spec,
    pub scale: ScaleStatus,
    /// The preset fit's lines and failures (reported after the plan's own).
    pub fit: Fit,
}

/// The preset fit → the load's verdict → the fleet's plan.
pub fn decide(i: &Inputs, cloud: &dyn Cloud) -> Decision {
    let fit = match i.runs {
        Some(runs) if presets::needs_sizes(&runs.needs) => presets::fit(
            &runs.needs,
            cloud.machines().as_deref().map_err(String::clone),
            i.size,
            i.region,
            i.auto,
        ),
        _ => Fit::default(),
    };
    let size = fit.auto_size.as_deref().unwrap_or(i.size);
    let mut spec = (i.spec)(size);
    spec.rules.stale_after = i.stale_after;
    let (scale, extra) = scale(i, cloud, size);
    let spec = loaded(spec, i.bounds, &scale, extra, i.scale_in_after);
    Decision {
        plan: plan::plan(i.obs, &spec),
        spec,
        scale,
        fit,
    }
}

/// The load's verdict (capacity::scale) and the creates beyond the first the account allows.
fn scale(i: &Inputs, cloud: &dyn Cloud, size: &str) -> (ScaleStatus, usize) {
    let serving: Vec<Option<&str>> = i
        .obs
        .droplets
        .iter()
        .filter(|d| !d.draining())
        .map(|d| d.built.0.get("size").map(String::as_str))
        .collect();
    // A fixed fleet's cost comes from sizes already known: a healthy cycle asks nothing more.
    let sizes = if i.bounds.scales() {
        cloud.machines().ok()
    } else {
        cloud.known_machines()
    };
    let executing: Vec<Option<String>> = i
        .runs
        .map(|r| r.on_workers.iter().map(|w| w.preset.clone()).collect())
        .unwrap_or_default();
    let load = i.runs.map(|r| capacity::Load {
        executing: &executing,
        ready: &r.ready,
        needs: &r.needs,
    });
    let (mut status, extra) = capacity::scale(
        i.bounds,
        &serving,
        size,
        sizes.as_deref(),
        load,
        i.scale_in_after,
    );
    if extra == 0 {
        return (status, 0);
    }
    let (extra, note) = capacity::room_cap(extra, cloud.room());
    status.why.push_str(&note.unwrap_or_default());
    (status, extra)
}

/// The desired state with this run's load verdict: the count wanted, and when the fleet
/// scales by load, how a surplus leaves and the creates allowed beyond the first.
pub fn loaded(
    mut spec: Spec,
    bounds: Bounds,
    scale: &ScaleStatus,
    extra: usize,
    scale_in_after: Duration,
) -> Spec {
    spec.count = scale.wanted;
    spec.max = bounds.max;
    if bounds.scales() {
        spec.scale_in_after = Some(scale_in_after);
        spec.extra_creates = extra;
        spec.scale_line = Some(scale.why.clone());
    }
    spec
}

/// The findings after the plan's own: the preset fit's, then the webapp's (routing and queues),
/// whose failures are only detail while the webapp itself is blamed: one failure names it.
pub fn findings(d: &mut Decision, webapp: Option<&mut flow::Findings>) {
    d.plan.lines.append(&mut d.fit.lines);
    d.plan.failures.append(&mut d.fit.failures);
    let Some(f) = webapp else {
        return;
    };
    d.plan.lines.append(&mut f.lines);
    if d.plan.webapp_blamed {
        d.plan.lines.extend(
            f.failures
                .drain(..)
                .map(|l| format!("while the webapp is down: {l}")),
        );
    } else {
        d.plan.failures.append(&mut f.failures);
    }
}
