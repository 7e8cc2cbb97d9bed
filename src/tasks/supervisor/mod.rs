//! supervisor: keep `SUPERVISOR_COUNT` healthy supervisor droplets on DigitalOcean, reconciled
//! level-triggered from DigitalOcean's own tags every run, so a lost state database can never
//! cause duplicates. At most one create and one delete per run; never a droplet without both of
//! our tags, nor one ops has no record of creating (`owned`); a circuit breaker on replacements.
//!
//! This file is the loop only: inputs → observe → decide → apply. `inputs` resolves the run's
//! inputs once; `observe` (with `webapp`, the one Postgres session) turns DigitalOcean's listing
//! into ops' own facts (`facts`); `decide` is pure (the preset fit, `capacity`, `plan` with
//! `health`, the findings); `apply` performs the actions (with `firewall` and `image`); every
//! state key is in `store`. docs/architecture.md draws the rooms.

use crate::clients::digitalocean::DigitalOcean;
use crate::clients::http::Http;
use crate::config::SupervisorOptions;
use crate::release;
use crate::state::now_ms;
use crate::task::{Outcome, TaskCtx};

pub mod action;
pub mod apply;
pub mod capacity;
pub mod capped;
pub mod catalog;
pub mod decide;
pub mod diff;
pub mod disk;
pub mod drain;
pub mod facts;
pub mod firewall;
pub mod flow;
pub mod health;
pub mod image;
pub mod inputs;
pub mod kubernetes;
pub mod leave_kubernetes;
pub mod marks;
pub mod migrate;
pub mod observe;
pub mod owned;
pub mod plan;
pub mod presets;
pub mod sim;
pub mod spec;
pub mod store;
pub mod version;
pub mod webapp;

pub use inputs::{deployment_tag, spec_tag, visibility_problem, AUTO_DEFAULT_SIZE};
pub use plan::{Streak, MANAGED_TAG};

pub fn run(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    if opts.platform == crate::config::Platform::Kubernetes {
        return kubernetes::run(opts, ctx);
    }
    let s = ctx.settings;
    let mut input = inputs::resolve(opts, ctx)?;
    let http = Http::new();
    let api = DigitalOcean::new(&http, &s.digitalocean_api_url, input.token, ctx.deadline);
    let account = observe::Account::new(ctx, &api);
    observe::check_catalog(ctx, &api, &account, &input.size)?;
    let listed = inputs::spec(opts, ctx, &input.record, &input.size, input.bounds);
    let world = observe::observe(ctx, &api, &http, opts, &listed, &input.record)?;
    let version_line = inputs::settle_version(ctx, &mut input, &world.obs);
    let spec = |size: &str| {
        let mut spec = inputs::spec(opts, ctx, &input.record, size, input.bounds);
        spec.version_line = version_line.clone().unwrap_or(spec.version_line);
        spec
    };
    let mut decision = decide::decide(
        &decide::Inputs {
            obs: &world.obs,
            spec: &spec,
            size: &input.size,
            auto: input.auto,
            region: &s.supervisor_region,
            bounds: input.bounds,
            stale_after: world.stale_after,
            scale_in_after: opts.scale_in_after,
            runs: world.flow.as_ref().and_then(|f| f.runs.as_ref().ok()),
        },
        &account,
    );
    let capped_warning = judge_capped(ctx, opts, &mut decision.scale, &world);
    let disks = observe::disks(ctx, &api, &mut decision.plan);
    let mut found = world.flow.as_ref().map(|f| webapp::judge_flow(opts, f));
    decide::findings(&mut decision.plan, &mut decision.fit, found.as_mut());
    let healthy = decision
        .plan
        .assessed
        .iter()
        .filter(|a| a.health == plan::Health::Healthy)
        .count();
    let waiting = world
        .flow
        .as_ref()
        .and_then(|f| f.queues.as_ref().ok())
        .map(|q| format!(", {} waiting", q.waiting_seen))
        .unwrap_or_default();
    let kept = apply::Kept {
        flow: found.as_ref().map(|f| f.status.clone()),
        scan: world.flow.as_ref().and_then(|f| f.scan.clone()),
        sizes: account.fetched(),
        auto_size: decision.fit.auto_size.clone(),
        scale: decision.scale.clone(),
        disks,
    };
    let mut outcome = apply::apply(
        decision.plan,
        &decision.spec,
        ctx,
        &api,
        &input.record,
        opts,
        kept,
    )?;
    leave_kubernetes::run(opts, ctx, healthy, &mut outcome);
    outcome
        .warnings
        .extend(marks::warnings(&world.obs.droplets, &world.obs.owned));
    outcome.warnings.extend(capped_warning);
    outcome.summary = Some(healthy_summary(healthy, decision.spec.count, &waiting));
    let pin = s.trigger_version.as_deref();
    if let Some(w) = release::warning(pin, input.record.webapp_version.as_deref()) {
        outcome.detail.retain(|l| *l != w);
        outcome.warnings.push(w);
    }
    outcome.detail.extend(found.and_then(|f| f.detail));
    outcome.detail.push(observe::counts(&world, &api));
    Ok(outcome)
}

/// Whether runs wait on a fleet that cannot grow ([`capped`]), kept in the load's verdict; the
/// warning on the run an episode begins only.
fn judge_capped(
    ctx: &TaskCtx,
    opts: &SupervisorOptions,
    scale: &mut store::ScaleStatus,
    world: &observe::World,
) -> Option<String> {
    let prev =
        store::load::<store::ScaleStatus>(ctx.state, store::SCALE_KEY).and_then(|p| p.capped);
    let facts = scale.capped_facts(world.flow.as_ref().and_then(observe::oldest_wait));
    scale.capped = capped::judge(&facts, opts.capped_alert_after, prev.as_ref(), now_ms());
    scale
        .capped
        .as_ref()
        .filter(|_| prev.is_none())
        .map(|c| c.text.clone())
}

/// `1/1 healthy, 0 waiting`; healthy droplets beyond what is wanted are on their way out
/// (replaced, or scaled in): `1/1 healthy (+1 leaving)`, never `2/1`.
fn healthy_summary(healthy: usize, wanted: usize, waiting: &str) -> String {
    match healthy.checked_sub(wanted) {
        Some(leaving) if leaving > 0 => {
            format!("{wanted}/{wanted} healthy (+{leaving} leaving){waiting}")
        }
        _ => format!("{healthy}/{wanted} healthy{waiting}"),
    }
}
