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
pub mod pools;
pub mod workload;

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::Value;

use crate::clients::kubernetes::{Credentials, Deployment, Kind, Kube, Pod, Selector};
use crate::config::SupervisorOptions;
use crate::manifests::{self, Change};
use crate::task::{ActionRecord, ActionType, Outcome, Status, TaskCtx};
use crate::tasks::supervisor::facts::Heartbeat;
use crate::tasks::supervisor::inputs;
use crate::tasks::supervisor::plan::View;
use crate::tasks::supervisor::store;
use crate::tasks::supervisor::webapp;

use workload::{Health, Judged, Observed, Rules};

/// The cluster's credentials: a kubeconfig's (any cluster). A DOKS cluster's come from
/// DigitalOcean (the DOKS side), not here.
fn credentials(opts: &SupervisorOptions) -> anyhow::Result<Credentials> {
    let Some(path) = &opts.kubeconfig else {
        return Err(crate::exit::not_configured(
            "platform: kubernetes needs kubeconfig: PATH in the supervisor task (the kubeconfig of the cluster the supervisor runs in)",
        ));
    };
    Credentials::from_kubeconfig(path).map_err(|e| crate::exit::config_error(format!("{e:#}")))
}

pub fn run(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let s = ctx.settings;
    let record = inputs::record(ctx)?;
    let creds = credentials(opts)?;
    let kube = Kube::new(&creds, ctx.deadline)?;
    let version = crate::release::supervisor_version(
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    let ns = opts.namespace.as_str();
    let spec = manifests::Spec {
        namespace: ns,
        version: &version.tag,
        record: &record,
        nodetype: &opts.node_label,
        runs_taint: Some(manifests::Taint::runs(&opts.node_label)),
        supervisor_nodes: None,
    };
    let desired = manifests::objects(&spec);
    let fingerprint = desired
        .last()
        .and_then(manifests::applied_fingerprint)
        .unwrap_or_default()
        .to_string();

    let (deployment, pods, names) = observe(&kube, ns)?;
    let stale = opts.stale_after(true);
    let (view, beats, flow) = webapp::view(ctx, opts, &record, &names, (stale, &[]));
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
        creds.server,
        health_word(&judged.health)
    ));
    if !ctx.dry_run {
        let status = kept(&judged, ns, &creds.server, &version.tag);
        store::save(ctx, store::KUBERNETES_KEY, &status, crate::state::now_ms())?;
    }
    let sessions = u8::from(!matches!(view, View::NotConfigured | View::Skipped));
    outcome.detail.push(format!(
        "DigitalOcean requests: 0, Kubernetes API requests: {}, Postgres sessions: {sessions}",
        kube.requests.get()
    ));
    Ok(outcome)
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
            outcome.status = Status::Planned;
            outcome.detail.push(format!("would {change}"));
            outcome
                .actions
                .push(ActionRecord::planned(typed(object), change));
            continue;
        }
        let stored = kube
            .apply(object)
            .with_context(|| format!("applying {what}"))?;
        let version = stored["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("?");
        let line = format!("applied {what} (resourceVersion {version})");
        ctx.changed("kubernetes.applied", line.clone());
        outcome.detail.push(line);
        outcome.actions.push(ActionRecord::done(
            typed(object),
            format!("apply {what}"),
            "applied",
        ));
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
