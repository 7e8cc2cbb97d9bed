//! The supervisor on Kubernetes (`platform: kubernetes`): inputs → observe → judge → apply.
//! Observe is two API requests (the Deployment, the namespace's pods) and the one Postgres
//! session the droplets use (`webapp::view`: heartbeats keyed by the supervisor pods' names,
//! routing, waiting runs); `workload` judges (pure); apply is the objects' server-side apply,
//! only when the Deployment lacks their fingerprint (a dry run shows each object's field diff
//! instead). Kubernetes restarts the supervisor itself: ops explains and never deletes here.
//! DigitalOcean Kubernetes' side, pure: which cluster (`cluster`), its node pools and their
//! size (`pools`), and when the API's credentials are fetched again (`credentials`).

pub mod cluster;
pub mod credentials;
pub mod doks;
pub mod on_doks;
pub mod pools;
pub mod workload;

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::Value;

use crate::clients::http::Http;
use crate::clients::kubernetes::{ApiError, Credentials, Deployment, Kind, Kube, Pod, Selector};
use crate::config::SupervisorOptions;
use crate::manifests::{self, Change};
use crate::task::{ActionRecord, ActionType, Outcome, Status, TaskCtx};
use crate::tasks::supervisor::facts::Heartbeat;
use crate::tasks::supervisor::inputs;
use crate::tasks::supervisor::plan::View;
use crate::tasks::supervisor::store;
use crate::tasks::supervisor::webapp;

use workload::{Health, Judged, Observed, Rules};

/// The credentials of a cluster ops does not manage, from its kubeconfig.
fn kubeconfig(path: &std::path::Path) -> anyhow::Result<Credentials> {
    Credentials::from_kubeconfig(path).map_err(|e| crate::exit::config_error(format!("{e:#}")))
}

pub fn run(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    if let Some(path) = &opts.kubeconfig {
        let kube = Kube::new(&kubeconfig(path)?, ctx.deadline)?;
        return tend(opts, ctx, kube, None);
    }
    // DigitalOcean Kubernetes: the cluster and its credentials first (`on_doks`).
    let http = Http::new();
    match on_doks::start(opts, ctx, &http)? {
        on_doks::Start::Ready(mut side, kube) => tend(opts, ctx, kube, Some(&mut side)),
        on_doks::Start::Stop(outcome) => Ok(outcome),
    }
}

/// One run on a cluster's API: observe, judge, apply; `doks`: DigitalOcean Kubernetes' side
/// (a 401 renews its credentials once; its pools and cordons after the objects).
fn tend(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    mut kube: Kube,
    mut doks: Option<&mut on_doks::Side>,
) -> anyhow::Result<Outcome> {
    let s = ctx.settings;
    let record = inputs::record(ctx)?;
    let version = crate::release::supervisor_version(
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    let ns = opts.namespace.as_str();
    let (desired, fingerprint) = desired(opts, &record, &version.tag, doks.is_some());

    let (deployment, pods, names) = match (observe(&kube, ns), doks.as_deref_mut()) {
        (Err(e), Some(side)) if unauthorized(&e) => {
            kube = side.renew(ctx, &kube)?;
            observe(&kube, ns)
        }
        (r, _) => r,
    }?;
    let run_pods = on_doks::run_pods(&pods);
    let stale = opts.stale_after(true);
    let (view, beats, flow) = webapp::view(ctx, opts, &record, &names, (stale, &[]));
    // Where the next read of the waiting runs starts: without it every cycle read the whole
    // window again (5,368 blocks of "TaskRun" a cycle at 1,000,000 runs; with it, 252).
    if let (Some(scan), false) = (flow.as_ref().and_then(|f| f.scan.as_ref()), ctx.dry_run) {
        store::save(ctx, store::SCAN_KEY, scan, crate::state::now_ms())?;
    }
    let heartbeats: BTreeMap<String, f64> = beats
        .into_iter()
        .filter_map(|(name, b)| match b {
            Heartbeat::Age(age) => Some((name, age)),
            _ => None,
        })
        .collect();
    let judged = workload::judge(
        &Observed {
            deployment,
            pods,
            heartbeats,
            now: chrono::Utc::now(),
        },
        &fingerprint,
        &Rules {
            stale_after: stale,
            boot_grace: opts.boot_grace,
            pending_after: opts.pending_after,
            nodetype: opts.node_label.clone(),
        },
    );
    let mut outcome = apply(ctx, &kube, &desired, &judged)?;
    super::migrate::droplets_leave(opts, ctx, &record, (&judged, flow.as_ref()), &mut outcome);
    if let Some(side) = doks.as_deref_mut() {
        tend_pools(ctx, side, &kube, run_pods, flow.as_ref(), &mut outcome);
    }
    if let View::Unavailable(why) = &view {
        outcome.detail.push(format!("webapp view: {why}"));
    }
    if let Some(f) = flow.as_ref().map(|f| webapp::judge_flow(opts, f)) {
        outcome.detail.extend(f.lines);
        judged_failures(&mut outcome, f.failures);
        outcome.detail.extend(f.detail);
    }
    judged_failures(&mut outcome, judged.problems.clone());
    report(&mut outcome, &judged, stale, ns);
    outcome.detail.push(format!(
        "supervisor {} at {} ({})",
        version.tag,
        kube.server(),
        health_word(&judged.health)
    ));
    let mut status = kept(&judged, ns, kube.server(), &version.tag);
    status.doks = doks.as_deref().map(on_doks::Side::status);
    let sessions = u8::from(!matches!(view, View::NotConfigured | View::Skipped));
    finish(ctx, &mut outcome, &status, &kube, doks.as_deref(), sessions)?;
    Ok(outcome)
}

/// The supervisor's objects as this run wants them, and their fingerprint.
fn desired(
    opts: &SupervisorOptions,
    record: &crate::record::ConfigRecord,
    version: &str,
    on_doks: bool,
) -> (Vec<Value>, String) {
    let spec = manifests::Spec {
        namespace: &opts.namespace,
        version,
        record,
        nodetype: &opts.node_label,
        runs_taint: Some(manifests::Taint::runs(&opts.node_label)),
        // On DOKS the supervisor has a pool of its own; elsewhere it goes where it fits.
        supervisor_nodes: on_doks.then_some((pools::NODETYPE_KEY, pools::SUPERVISOR_NODETYPE)),
    };
    let desired = manifests::objects(&spec);
    let fingerprint = desired
        .last()
        .and_then(manifests::applied_fingerprint)
        .unwrap_or_default()
        .to_string();
    (desired, fingerprint)
}

/// DOKS: the pools and their cordons after the objects; a failure fails the run, its lines
/// join the run's.
fn tend_pools(
    ctx: &TaskCtx,
    side: &mut on_doks::Side,
    kube: &Kube,
    run_pods: pools::RunPods,
    flow: Option<&webapp::FlowRead>,
    outcome: &mut Outcome,
) {
    let failed = side.pools(ctx, kube, run_pods, flow).err();
    judged_failures(
        outcome,
        failed.map(|e| format!("{e:#}")).into_iter().collect(),
    );
    let lines = side.lines();
    let would = on_doks::planned(&lines);
    if ctx.dry_run && !would.is_empty() {
        outcome.status = planned(outcome.status);
        outcome.actions.extend(would);
    }
    outcome.detail.extend(lines);
}

/// Keeps the status (unless a dry run) and ends the run's lines with the cluster and the
/// run's figures.
fn finish(
    ctx: &TaskCtx,
    outcome: &mut Outcome,
    status: &store::KubernetesStatus,
    kube: &Kube,
    doks: Option<&on_doks::Side>,
    sessions: u8,
) -> anyhow::Result<()> {
    if let Some(d) = &status.doks {
        outcome.detail.push(on_doks::line(d));
    }
    if !ctx.dry_run {
        store::save(ctx, store::KUBERNETES_KEY, status, crate::state::now_ms())?;
        // Back on Kubernetes while a move off it was under way: its objects are applied whole
        // again above (the dequeue on), and a later move must start from the beginning, not
        // from this stop's old clock (which would remove a supervisor taking runs at once).
        if store::load::<super::leave_kubernetes::Stopped>(ctx.state, store::KUBERNETES_LEAVING_KEY)
            .is_some()
        {
            store::delete(ctx.writable_state()?, store::KUBERNETES_LEAVING_KEY)?;
            outcome.detail.push(
                "the earlier move off Kubernetes is called off: the supervisor takes runs again"
                    .into(),
            );
        }
    }
    let (do_requests, replaced) = doks.map_or((0, 0), on_doks::Side::requests);
    outcome.detail.push(format!(
        "DigitalOcean requests: {do_requests}, Kubernetes API requests: {}, Postgres sessions: {sessions}",
        kube.requests.get() + replaced
    ));
    Ok(())
}

fn unauthorized(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ApiError>()
            .is_some_and(ApiError::unauthorized)
    })
}

/// A dry run that would change something is planned, unless it failed.
fn planned(status: Status) -> Status {
    match status {
        Status::Ok => Status::Planned,
        other => other,
    }
}

/// The Deployment and the namespace's pods (two requests), and the supervisor pods' names.
fn observe(kube: &Kube, ns: &str) -> anyhow::Result<(Option<Deployment>, Vec<Pod>, Vec<String>)> {
    let deployment = kube
        .deployment(ns, manifests::NAME)
        .context("reading the supervisor's Deployment")?;
    let pods: Vec<Pod> = kube
        .pods(ns, &Selector::default())
        .context("listing the namespace's pods")?;
    let names: Vec<String> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .get(manifests::APP_LABEL.0)
                .map(String::as_str)
                == Some(manifests::APP_LABEL.1)
        })
        .map(|p| p.metadata.name.clone())
        .collect();
    Ok((deployment, pods, names))
}

/// What `ops status` and `/metrics` show of this run.
fn kept(judged: &Judged, ns: &str, server: &str, version: &str) -> store::KubernetesStatus {
    store::KubernetesStatus {
        namespace: ns.to_string(),
        server: server.to_string(),
        version: version.to_string(),
        health: health_word(&judged.health).to_string(),
        supervisors: judged
            .supervisors
            .iter()
            .map(|p| store::KubernetesPod {
                name: p.name.clone(),
                ready: p.ready,
                heartbeat_age_secs: p.heartbeat,
                why: p.why.clone(),
            })
            .collect(),
        pending: judged
            .pending
            .iter()
            .map(|p| store::PendingPod {
                pod: p.pod.clone(),
                preset: p.preset.clone(),
                waited_secs: p.waited_secs,
                reason: p.reason.clone(),
            })
            .collect(),
        doks: None,
    }
}

fn health_word(h: &Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Booting => "starting",
        Health::Failing => "failing",
    }
}

/// The run's summary and its notes.
fn report(outcome: &mut Outcome, judged: &Judged, stale: std::time::Duration, ns: &str) {
    let beating = judged
        .supervisors
        .iter()
        .filter(|p| p.heartbeat.is_some_and(|a| a <= stale.as_secs_f64()))
        .count();
    let summary = format!(
        "kubernetes {ns}: {beating}/{} supervisor pods heartbeating, {} run pods waiting for a node",
        judged.supervisors.len(),
        judged.pending.len()
    );
    outcome.detail.push(summary.clone());
    outcome.summary = Some(summary);
    outcome.detail.extend(judged.notes.iter().cloned());
}

fn judged_failures(outcome: &mut Outcome, failures: Vec<String>) {
    if failures.is_empty() {
        return;
    }
    outcome.status = Status::Failed;
    let first = outcome.detail.is_empty();
    for (i, f) in failures.into_iter().enumerate() {
        if first && i == 0 {
            outcome.detail.insert(0, f);
        } else {
            outcome.detail.push(f);
        }
    }
}

fn typed(object: &Value) -> ActionType {
    ActionType::counted("apply", "Kubernetes object").name(manifests::describe(object))
}

/// A failing supervisor whose Deployment carries this run's fingerprint: an object beside it may
/// have been deleted (its Secret, ServiceAccount or Role: the pod then cannot start). Each one
/// is read, and a missing one applied again; nothing is read while the supervisor is healthy.
/// A refused read or apply is a warning: the run still reports why the supervisor fails.
fn restore_missing(
    ctx: &TaskCtx,
    kube: &Kube,
    desired: &[Value],
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    for object in desired {
        let kind = Kind::of(object).context("an object of an unknown kind")?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let what = manifests::describe(object);
        // Trouble here is said and passed over: the supervisor's own failure is the news.
        let live: Option<Value> =
            match kube.get(kind, object["metadata"]["namespace"].as_str(), name) {
                Ok(live) => live,
                Err(e) => {
                    outcome.warnings.push(format!(
                        "cannot read {what} to see whether it is missing: {e:#}"
                    ));
                    continue;
                }
            };
        if live.is_some() {
            continue;
        }
        if ctx.dry_run {
            let change = format!("apply {what} again (it is missing)");
            would(outcome, object, change);
            continue;
        }
        if let Err(e) = kube.apply(object) {
            outcome
                .warnings
                .push(format!("cannot apply {what} again (it is missing): {e:#}"));
            continue;
        }
        let line = format!("applied {what} again: it was missing while the supervisor fails");
        applied(ctx, outcome, object, line);
    }
    Ok(())
}

/// A dry run's object that would be applied: the line, the planned action.
fn would(outcome: &mut Outcome, object: &Value, change: String) {
    outcome.status = Status::Planned;
    outcome.detail.push(format!("would {change}"));
    outcome
        .actions
        .push(ActionRecord::planned(typed(object), change));
}

/// An object applied: the event, the line, the action.
fn applied(ctx: &TaskCtx, outcome: &mut Outcome, object: &Value, line: String) {
    ctx.changed("kubernetes.applied", line.clone());
    outcome.detail.push(line);
    outcome.actions.push(ActionRecord::done(
        typed(object),
        format!("apply {}", manifests::describe(object)),
        "applied",
    ));
}

/// Applies every object when the Deployment lacks their fingerprint; a dry run reads each one
/// and says what would change, field by field.
fn apply(
    ctx: &TaskCtx,
    kube: &Kube,
    desired: &[Value],
    judged: &Judged,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::lines(Status::Ok, Vec::new());
    if !judged.apply {
        if judged.health == Health::Failing {
            restore_missing(ctx, kube, desired, &mut outcome)?;
        }
        return Ok(outcome);
    }
    for object in desired {
        let what = manifests::describe(object);
        if ctx.dry_run {
            let kind = Kind::of(object).context("an object of an unknown kind")?;
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let live: Option<Value> =
                kube.get(kind, object["metadata"]["namespace"].as_str(), name)?;
            let change = match manifests::diff(object, live.as_ref()) {
                Change::Unchanged => continue,
                Change::Create => format!("apply {what} (create it)"),
                // The fingerprint changes with any field; the fields themselves say what.
                Change::Update(fields)
                    if fields
                        .iter()
                        .all(|f| f.path.ends_with(manifests::OBJECTS_ANNOTATION)) =>
                {
                    continue
                }
                Change::Update(fields) => format!(
                    "apply {what}: {}",
                    fields
                        .iter()
                        .filter(|f| !f.path.ends_with(manifests::OBJECTS_ANNOTATION))
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            would(&mut outcome, object, change);
            continue;
        }
        let stored = kube
            .apply(object)
            .with_context(|| format!("applying {what}"))?;
        let version = stored["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("?");
        let line = format!("applied {what} (resourceVersion {version})");
        applied(ctx, &mut outcome, object, line);
    }
    if !ctx.dry_run {
        outcome.detail.insert(
            0,
            format!(
                "applied {} objects (server-side apply, field manager ops)",
                desired.len()
            ),
        );
    }
    Ok(outcome)
}
