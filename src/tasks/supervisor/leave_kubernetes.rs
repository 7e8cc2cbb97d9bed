//! Moving a deployment back to droplets (`platform: droplets` while ops' Kubernetes objects
//! remain: the state keeps the workload a Kubernetes run saw). The supervisor on Kubernetes
//! serves until a droplet heartbeats (the fleet's own loop brings them up); then ops stops it
//! taking runs by applying its Deployment again with `TRIGGER_DEQUEUE_ENABLED=false` (Trigger.dev's
//! apps/supervisor/src/env.ts: `BoolEnv.default(true)`, handed to the session as
//! `queueConsumerEnabled`; heartbeats and the workload API stay up, and the rollout kills no
//! run pod), waits for the run pods (`app=task-run`) to end, up to `drain_timeout`, and then
//! deletes the objects it applied that carry its `managed-by` label. The namespace stays (ops
//! cannot tell whether it made it, and deleting one deletes all in it); a cluster is never
//! touched. `back` decides (pure); `run` observes and acts.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clients::kubernetes::{Credentials, Kind, Kube, Pod, Selector};
use crate::config::SupervisorOptions;
use crate::manifests;
use crate::state::now_ms;
use crate::task::{ActionRecord, ActionType, Outcome, Status, TaskCtx};

use super::store::{self, KubernetesStatus, KUBERNETES_KEY, KUBERNETES_LEAVING_KEY};

/// The supervisor's variable that turns its queue consumer off (Trigger.dev's env.ts).
pub const DEQUEUE_VAR: &str = "TRIGGER_DEQUEUE_ENABLED";

/// When ops stopped the Kubernetes supervisor taking runs (the state's `kubernetes_leaving`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stopped {
    pub at_ms: i64,
}

/// What the Kubernetes side gets this run.
#[derive(Debug, Clone, PartialEq)]
pub enum Back {
    /// No droplet heartbeats yet: it keeps serving (the line).
    Stay(String),
    /// Stop it taking runs now.
    Stop,
    /// Stopped; its run pods still execute (the line).
    Wait(String),
    /// Delete ops' objects now, for this reason.
    Remove(String),
}

/// The decision, pure: nothing before a droplet heartbeats; then stop, wait for the run pods
/// (named) up to `timeout`, remove.
pub fn back(
    healthy_droplets: usize,
    stopped: Option<&Stopped>,
    run_pods: &[String],
    now_ms: i64,
    timeout: Duration,
) -> Back {
    let Some(stopped) = stopped else {
        return if healthy_droplets == 0 {
            Back::Stay(
                "the supervisor on Kubernetes keeps taking runs until a droplet heartbeats".into(),
            )
        } else {
            Back::Stop
        };
    };
    let elapsed = Duration::from_millis((now_ms - stopped.at_ms).max(0) as u64);
    if run_pods.is_empty() {
        return Back::Remove("no run pod is left".into());
    }
    let named = run_pods.join(", ");
    if elapsed >= timeout && healthy_droplets == 0 {
        // The droplets that were to take over stopped heartbeating: no run is cut short on the
        // old side while nothing serves on the new one.
        return Back::Wait(format!(
            "no droplet heartbeats now: the supervisor on Kubernetes stays (taking no new run) with {} run pod(s) ({named}) past drain_timeout until one does",
            run_pods.len()
        ));
    }
    if elapsed >= timeout {
        return Back::Remove(format!(
            "drain_timeout ({}) passed with {} run pod(s) still there: {named} (ops did not create them and leaves them; without their supervisor their runs fail and Trigger.dev retries them)",
            crate::duration::format(timeout),
            run_pods.len()
        ));
    }
    Back::Wait(format!(
        "the supervisor on Kubernetes takes no new run; {} run pod(s) still execute ({named}); its objects go once none is left, or in {}",
        run_pods.len(),
        crate::duration::format((timeout - elapsed).max(Duration::from_secs(1)))
    ))
}

/// The objects ops applies, but the namespace, in delete order (the Deployment first).
fn applied() -> Vec<(Kind, &'static str)> {
    vec![
        (Kind::Deployment, manifests::NAME),
        (Kind::Service, manifests::NAME),
        (Kind::NetworkPolicy, manifests::NETWORK_POLICY),
        (Kind::RoleBinding, manifests::NAME),
        (Kind::Role, manifests::NAME),
        (Kind::Secret, manifests::NAME),
        (Kind::Secret, manifests::PULL_SECRET),
        (Kind::ServiceAccount, manifests::NAME),
    ]
}

/// `platform: droplets`: ops' supervisor on Kubernetes leaves once a droplet heartbeats (see the
/// module's comment). Nothing at all while the state keeps no Kubernetes workload. Its trouble
/// fails the task with its line, the fleet's report kept.
pub fn run(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    healthy_droplets: usize,
    outcome: &mut Outcome,
) {
    if let Err(e) = leave(opts, ctx, healthy_droplets, outcome) {
        super::migrate::failed(outcome, "moving off Kubernetes", &e);
    }
}

fn leave(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    healthy_droplets: usize,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let Some(kept) = store::load::<KubernetesStatus>(ctx.state, KUBERNETES_KEY) else {
        return Ok(());
    };
    let ns = kept.namespace.as_str();
    if kept.server.is_empty() {
        // A cluster that never got ready: ops applied nothing there, nothing is to stop.
        if !ctx.dry_run {
            store::delete(ctx.writable_state()?, KUBERNETES_KEY)?;
        }
        return Ok(());
    }
    let stopped = store::load::<Stopped>(ctx.state, KUBERNETES_LEAVING_KEY);
    if stopped.is_none() && healthy_droplets == 0 {
        if let Back::Stay(line) = back(0, None, &[], now_ms(), opts.drain_timeout) {
            outcome
                .detail
                .push(format!("moving off Kubernetes: {line}"));
        }
        return Ok(());
    }
    let kube = client(opts, ctx)?.filter(|k| k.server() == kept.server);
    let Some(kube) = kube else {
        outcome.warnings.push(format!(
            "ops' supervisor objects are still applied in namespace {ns} at {}: keep kubeconfig: in the supervisor task naming that cluster (or, on DigitalOcean Kubernetes, DIGITALOCEAN_TOKEN) so ops can stop and remove them, or delete them yourself (kubectl -n {ns} delete deployment,service,networkpolicy,rolebinding,role,secret,serviceaccount -l {}={})",
            crate::redact::line(&kept.server),
            manifests::MANAGED_BY.0,
            manifests::MANAGED_BY.1
        ));
        return Ok(());
    };
    let run_pods: Vec<String> = match &stopped {
        Some(_) => kube
            .pods(
                ns,
                &Selector::default().label(manifests::RUN_POD_LABEL.0, manifests::RUN_POD_LABEL.1),
            )?
            .into_iter()
            .map(|p: Pod| crate::redact::line(&p.metadata.name))
            .collect(),
        None => Vec::new(),
    };
    match back(
        healthy_droplets,
        stopped.as_ref(),
        &run_pods,
        now_ms(),
        opts.drain_timeout,
    ) {
        Back::Stay(line) | Back::Wait(line) => outcome
            .detail
            .push(format!("moving off Kubernetes: {line}")),
        Back::Stop => stop(ctx, &kube, ns, outcome)?,
        Back::Remove(why) => remove(ctx, &kube, ns, &why, outcome)?,
    }
    Ok(())
}

/// A client of the cluster ops' objects are in: the task's kubeconfig, else the DigitalOcean
/// Kubernetes cluster ops recorded (its credentials kept sealed, or fetched with
/// DIGITALOCEAN_TOKEN). `None`: neither is at hand.
fn client(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<Option<Kube>> {
    if let Some(path) = &opts.kubeconfig {
        let creds = Credentials::from_kubeconfig(path)
            .map_err(|e| crate::exit::config_error(format!("{e:#}")))?;
        return Ok(Some(Kube::new(&creds, ctx.deadline)?));
    }
    let (Some(state), Some(token)) = (ctx.state, ctx.settings.digitalocean_token.as_ref()) else {
        return Ok(None);
    };
    let Some(cluster) = super::kubernetes::cluster::load(state)?.and_then(|r| r.cluster) else {
        return Ok(None);
    };
    let http = crate::clients::http::Http::new();
    let api = crate::clients::digitalocean::DigitalOcean::new(
        &http,
        &ctx.settings.digitalocean_api_url,
        token,
        ctx.deadline,
    );
    let dctx = super::kubernetes::doks::Ctx {
        api: &api,
        state,
        now: now_ms(),
        dry_run: ctx.dry_run,
    };
    let sealer = crate::sealed::Sealer::load(ctx.state_dir, !ctx.dry_run)?;
    let creds = super::kubernetes::credentials::get(&dctx, sealer.as_ref(), &cluster.id, false)
        .map_err(|e| e.context("fetching the DigitalOcean Kubernetes cluster's credentials"))?;
    Ok(Some(Kube::new(&creds.for_api()?, ctx.deadline)?))
}

/// The live Deployment applied again with the dequeue off (and a fingerprint no Kubernetes run
/// would write, so switching back to Kubernetes applies it whole again). `None`: it has no
/// container to set it on (not a Deployment ops applied as it is).
fn stopped_deployment(live: &Value) -> Option<Value> {
    let mut spec = live.get("spec")?.clone();
    let container = spec
        .pointer_mut("/template/spec/containers/0")?
        .as_object_mut()?;
    let env = container
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()?;
    env.retain(|e| e.get("name").and_then(Value::as_str) != Some(DEQUEUE_VAR));
    env.push(json!({"name": DEQUEUE_VAR, "value": "false"}));
    let mut annotations = live
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        manifests::OBJECTS_ANNOTATION.to_string(),
        json!("dequeue-stopped"),
    );
    let meta = json!({
        "name": live.pointer("/metadata/name"),
        "namespace": live.pointer("/metadata/namespace"),
        "labels": live.pointer("/metadata/labels"),
        "annotations": annotations,
    });
    Some(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}))
}

fn record(outcome: &mut Outcome, verb: &'static str, what: &str, line: String, dry: bool) {
    let t = ActionType::counted(verb, "Kubernetes object").name(what);
    outcome.actions.push(if dry {
        ActionRecord::planned(t, line.clone())
    } else {
        ActionRecord::done(t, line.clone(), line.clone())
    });
    if dry {
        outcome.status = Status::Planned;
        outcome.detail.push(format!("would {line}"));
    } else {
        outcome.detail.push(line);
    }
}

fn stop(ctx: &TaskCtx, kube: &Kube, ns: &str, outcome: &mut Outcome) -> anyhow::Result<()> {
    let what = format!("Deployment {ns}/{}", manifests::NAME);
    let line = format!(
        "stop the supervisor on Kubernetes taking runs (a droplet heartbeats): apply {what} with {DEQUEUE_VAR}=false; its run pods finish"
    );
    let Some(live) = kube.get::<Value>(Kind::Deployment, Some(ns), manifests::NAME)? else {
        // Gone already: nothing takes runs there; its other objects go at once.
        return remove(ctx, kube, ns, "its Deployment is gone", outcome);
    };
    if ctx.dry_run {
        record(outcome, "stop", &what, line, true);
        return Ok(());
    }
    let Some(stopping) = stopped_deployment(&live) else {
        anyhow::bail!("{what} has no container to set {DEQUEUE_VAR}=false on: ops did not apply it as it is; delete it yourself once its run pods are done");
    };
    kube.apply(&stopping)?;
    store::save(
        ctx,
        KUBERNETES_LEAVING_KEY,
        &Stopped { at_ms: now_ms() },
        now_ms(),
    )?;
    let done = format!("stopped the supervisor on Kubernetes taking runs ({what}: {DEQUEUE_VAR}=false; a droplet heartbeats)");
    ctx.changed("kubernetes.stopped", done.clone());
    record(outcome, "stop", &what, done, false);
    Ok(())
}

/// Deletes the objects ops applied that carry its label; then forgets the workload.
fn remove(
    ctx: &TaskCtx,
    kube: &Kube,
    ns: &str,
    why: &str,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    for (kind, name) in applied() {
        let what = format!("{} {ns}/{name}", kind.name());
        let Some(live) = kube.get::<Value>(kind, Some(ns), name)? else {
            continue;
        };
        if live["metadata"]["labels"][manifests::MANAGED_BY.0] != manifests::MANAGED_BY.1 {
            outcome.detail.push(format!(
                "not deleting {what}: it lacks ops' label {}={} (ops did not apply it)",
                manifests::MANAGED_BY.0,
                manifests::MANAGED_BY.1
            ));
            continue;
        }
        if ctx.dry_run {
            record(
                outcome,
                "delete",
                &what,
                format!("delete {what}: {why}"),
                true,
            );
            continue;
        }
        if kube.delete(kind, Some(ns), name)? {
            let done = format!("deleted {what}: {why}");
            ctx.changed("kubernetes.deleted", done.clone());
            record(outcome, "delete", &what, done, false);
        }
    }
    outcome.detail.push(format!(
        "moving off Kubernetes: namespace {ns} is left as it is (ops never deletes a namespace or a cluster)"
    ));
    if !ctx.dry_run {
        let st = ctx.writable_state()?;
        store::delete(st, KUBERNETES_LEAVING_KEY)?;
        store::delete(st, KUBERNETES_KEY)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn pods() -> Vec<String> {
        vec!["runner-run_a".into()]
    }

    #[test]
    fn no_run_is_cut_short_while_no_droplet_heartbeats_even_after_the_drain_timeout() {
        let long_ago = Stopped {
            at_ms: NOW - 2 * 3_600_000,
        };
        assert!(matches!(
            back(0, Some(&long_ago), &pods(), NOW, HOUR),
            Back::Wait(line) if line.contains("no droplet heartbeats now")
        ));
        assert!(matches!(
            back(1, Some(&long_ago), &pods(), NOW, HOUR),
            Back::Remove(_)
        ));
    }

    #[test]
    fn the_stopping_deployment_is_built_from_any_shape_without_a_panic() {
        let odd = [
            json!({}),
            json!({"spec": "x"}),
            json!({"spec": {"template": {"spec": {"containers": []}}}}),
            json!({"spec": {"template": {"spec": {"containers": ["x"]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"env": "x"}]}}}}),
        ];
        for live in odd {
            assert_eq!(stopped_deployment(&live), None, "{live}");
        }
        let bare = json!({
            "metadata": {"name": "supervisor", "namespace": "trigger", "annotations": "x"},
            "spec": {"template": {"spec": {"containers": [{"name": "supervisor"}]}}},
        });
        let stopping = stopped_deployment(&bare).unwrap();
        assert_eq!(
            stopping["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": DEQUEUE_VAR, "value": "false"}])
        );
        assert_eq!(
            stopping["metadata"]["annotations"][manifests::OBJECTS_ANNOTATION],
            "dequeue-stopped"
        );
    }

    #[test]
    fn nothing_stops_before_a_droplet_heartbeats_then_the_dequeue_stops() {
        assert!(matches!(back(0, None, &pods(), NOW, HOUR), Back::Stay(_)));
        assert_eq!(back(1, None, &pods(), NOW, HOUR), Back::Stop);
    }

    #[test]
    fn stopped_it_waits_for_the_run_pods_naming_them_then_removes() {
        let s = Stopped {
            at_ms: NOW - 60_000,
        };
        match back(1, Some(&s), &pods(), NOW, HOUR) {
            Back::Wait(l) => assert!(
                l.contains("1 run pod(s) still execute (runner-run_a)"),
                "{l}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(back(1, Some(&s), &[], NOW, HOUR), Back::Remove(_)));
        let late = Stopped {
            at_ms: NOW - 3_600_000,
        };
        assert!(
            matches!(back(1, Some(&late), &pods(), NOW, HOUR), Back::Remove(r) if r.contains("runner-run_a"))
        );
    }

    #[test]
    fn the_stopped_deployment_turns_the_dequeue_off_and_changes_the_fingerprint() {
        let live = json!({"metadata": {"name": "supervisor", "namespace": "trigger", "resourceVersion": "9",
            "labels": {"app.kubernetes.io/managed-by": "trigger-ops"},
            "annotations": {manifests::OBJECTS_ANNOTATION: "abc"}},
            "spec": {"template": {"spec": {"containers": [{"name": "supervisor",
                "env": [{"name": DEQUEUE_VAR, "value": "true"}, {"name": "A", "value": "1"}]}]}}},
            "status": {"replicas": 1}});
        let d = stopped_deployment(&live).unwrap();
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        assert_eq!(env.iter().filter(|e| e["name"] == DEQUEUE_VAR).count(), 1);
        assert!(env.contains(&json!({"name": DEQUEUE_VAR, "value": "false"})));
        assert_ne!(
            d["metadata"]["annotations"][manifests::OBJECTS_ANNOTATION],
            "abc"
        );
        assert!(d.get("status").is_none() && d["metadata"].get("resourceVersion").is_none());
    }
}
