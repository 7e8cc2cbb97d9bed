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
    let (scale, extra) = scale(i, cloud, size, &spec.spec_tag);
    let spec = loaded(spec, i.bounds, &scale, extra, i.scale_in_after);
    Decision {
        plan: plan::plan(i.obs, &spec),
        spec,
        scale,
        fit,
    }
}

/// The load's verdict (capacity::scale) and the creates beyond the first the account allows.
fn scale(i: &Inputs, cloud: &dyn Cloud, size: &str, spec_tag: &str) -> (ScaleStatus, usize) {
    let serving: Vec<Option<&str>> = i
        .obs
        .droplets
        .iter()
        .filter(|d| !d.draining())
        .map(|d| d.built.0.get("size").map(String::as_str))
        .collect();
    let stale = i
        .obs
        .droplets
        .iter()
        .filter(|d| !d.draining() && !d.current(spec_tag))
        .count();
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
        stale,
        size,
        sizes.as_deref(),
        load,
        i.scale_in_after,
    );
    if extra == 0 {
        return (status, 0);
    }
    let room = cloud.room();
    status.room = room.as_ref().ok().copied();
    let (extra, note) = capacity::room_cap(extra, room);
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
pub fn findings(plan: &mut Plan, fit: &mut Fit, webapp: Option<&mut flow::Findings>) {
    plan.lines.append(&mut fit.lines);
    plan.failures.append(&mut fit.failures);
    let Some(f) = webapp else {
        return;
    };
    plan.lines.append(&mut f.lines);
    if plan.webapp_blamed {
        plan.lines.extend(
            f.failures
                .drain(..)
                .map(|l| format!("while the webapp is down: {l}")),
        );
    } else {
        plan.failures.append(&mut f.failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> (Plan, Fit, flow::Findings) {
        let plan = Plan {
            lines: vec!["droplet sup-1: failing".into()],
            failures: vec!["the webapp is the likely cause".into()],
            ..Plan::default()
        };
        let fit = Fit {
            lines: vec!["machine presets not checked this run".into()],
            ..Fit::default()
        };
        let webapp = flow::Findings {
            lines: vec!["worker group g: no PENDING run".into()],
            failures: vec!["orphaned queue: 3 run(s) wait in queue q".into()],
            ..flow::Findings::default()
        };
        (plan, fit, webapp)
    }

    #[test]
    fn while_the_webapp_is_blamed_what_its_outage_does_to_the_queues_is_detail_not_a_failure() {
        let (mut plan, mut fit, mut webapp) = found();
        findings(&mut plan, &mut fit, Some(&mut webapp));
        assert_eq!(plan.failures.len(), 2, "{:?}", plan.failures);
        assert_eq!(plan.lines[1], "machine presets not checked this run");
        let (mut plan, mut fit, mut webapp) = found();
        plan.webapp_blamed = true;
        findings(&mut plan, &mut fit, Some(&mut webapp));
        assert_eq!(plan.failures, ["the webapp is the likely cause"]);
        assert_eq!(
            plan.lines.last().map(String::as_str),
            Some("while the webapp is down: orphaned queue: 3 run(s) wait in queue q")
        );
    }
}
