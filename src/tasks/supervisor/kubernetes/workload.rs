//! The supervisor's workload on Kubernetes, judged (pure): whether ops' objects need applying,
//! the Deployment's rollout, each supervisor pod with its heartbeat and, when it is not up, why
//! (the container's waiting reason, the scheduler's message), and run pods waiting for a node
//! longer than `pending_after` with the scheduler's reason and the fix. Kubernetes restarts the
//! supervisor itself: ops explains, and deletes nothing here.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clients::kubernetes::{Deployment, Pod};
use crate::manifests;

/// What one run read: the Deployment (one GET) and the namespace's pods (one LIST), the
/// supervisor pods' heartbeats from the webapp's database, the time.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub deployment: Option<Deployment>,
    pub pods: Vec<Pod>,
    /// Seconds since each supervisor pod's last heartbeat, by pod name (its
    /// `TRIGGER_WORKER_INSTANCE_NAME`); absent: never heartbeat.
    pub heartbeats: BTreeMap<String, f64>,
    pub now: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
pub struct Rules {
    /// A heartbeat older than this is stale.
    pub stale_after: Duration,
    /// How long a new supervisor pod may take to heartbeat before it is failing.
    pub boot_grace: Duration,
    /// A run pod waiting for a node longer than this fails the task.
    pub pending_after: Duration,
    /// The runs nodes' `nodetype` label value, for the fix of an unmatched selector.
    pub nodetype: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// A supervisor pod heartbeats and the rollout is done.
    Healthy,
    /// Rolling out or booting, within its grace.
    Booting,
    Failing,
}

/// One supervisor pod as judged.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorPod {
    pub name: String,
    pub ready: bool,
    pub heartbeat: Option<f64>,
    /// Why it is not up, when it is not.
    pub why: Option<String>,
}

/// A run pod waiting for a node.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRun {
    pub pod: String,
    pub preset: Option<String>,
    pub waited_secs: i64,
    pub reason: String,
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The live Deployment lacks the objects' fingerprint ops would write: apply them all.
    pub apply: bool,
    pub health: Health,
    pub supervisors: Vec<SupervisorPod>,
    pub pending: Vec<PendingRun>,
    /// One line per failure, each with what to do.
    pub problems: Vec<String>,
    /// What the operator should know, not failures.
    pub notes: Vec<String>,
}

fn age_secs(stamp: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> i64 {
    stamp
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0))
        .unwrap_or(0)
}

fn is_supervisor(p: &Pod) -> bool {
    p.metadata
        .labels
        .get(manifests::APP_LABEL.0)
        .map(String::as_str)
        == Some(manifests::APP_LABEL.1)
}

fn is_run(p: &Pod) -> bool {
    p.metadata
        .labels
        .get(manifests::RUN_POD_LABEL.0)
        .map(String::as_str)
        == Some(manifests::RUN_POD_LABEL.1)
}

/// Why a supervisor pod is not up, from what Kubernetes says of it.
pub fn why_down(p: &Pod) -> Option<String> {
    if let Some(msg) = p.unschedulable() {
        return Some(format!("waits for a node: {msg}"));
    }
    let c = p.status.container_statuses.first()?;
    let waiting = c.state.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().unwrap_or("waiting");
    Some(match reason {
        "ImagePullBackOff" | "ErrImagePull" => format!(
            "{reason}: the image {} cannot be pulled (does the version exist? TRIGGER_VERSION pins one)",
            c.image
        ),
        "CrashLoopBackOff" => {
            let exit = c
                .last_state
                .terminated
                .as_ref()
                .and_then(|t| t.exit_code)
                .map(|e| format!(", last exit code {e}"))
                .unwrap_or_default();
            format!(
                "CrashLoopBackOff ({} restarts{exit}): read its log with kubectl logs -n {} {} --previous (a refused worker token shows there; ops extracts it again on its next run)",
                c.restart_count,
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name
            )
        }
        "CreateContainerConfigError" => format!(
            "{reason}: {} (the Secret ops applies is missing or lacks a key: the next run applies it again)",
            waiting.message.as_deref().unwrap_or("")
        ),
        other => format!("{other}: {}", waiting.message.as_deref().unwrap_or("")),
    })
}

/// The fix for a run pod the scheduler cannot place, from its message.
pub fn pending_fix(message: &str, nodetype: &str) -> String {
    if message.contains("Insufficient memory") || message.contains("Insufficient cpu") {
        "no runs node has room for this preset: raise the task's max (more nodes) or SUPERVISOR_SIZE (larger nodes; auto picks the smallest that fits the largest preset waiting)".into()
    } else if message.contains("didn't match Pod's node affinity/selector") {
        format!("no node carries the label nodetype={nodetype}: label the nodes meant for runs (kubectl label node NAME nodetype={nodetype}) or set the label ops uses to theirs")
    } else if message.contains("untolerated taint") {
        "the runs nodes carry a taint run pods do not tolerate (KUBERNETES_RUNNER_TOLERATIONS): taint them nodetype=<label>:NoSchedule as ops expects, or remove the taint".into()
    } else {
        "read kubectl describe pod for the scheduler's events".into()
    }
}

pub fn judge(obs: &Observed, desired_fingerprint: &str, rules: &Rules) -> Judged {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let applied = obs
        .deployment
        .as_ref()
        .and_then(|d| d.metadata.annotations.get(manifests::OBJECTS_ANNOTATION))
        .map(String::as_str);
    let apply = applied != Some(desired_fingerprint);
    let supervisors = supervisors(obs);
    let beating = supervisors.iter().any(|s| {
        s.heartbeat
            .is_some_and(|age| age <= rules.stale_after.as_secs_f64())
    });
    let rolled_out = obs.deployment.as_ref().is_some_and(Deployment::rolled_out);
    let youngest = obs
        .pods
        .iter()
        .filter(|p| is_supervisor(p))
        .map(|p| age_secs(p.metadata.creation_timestamp.as_deref(), obs.now))
        .min();
    let in_grace = youngest.is_some_and(|a| (a as u64) < rules.boot_grace.as_secs());
    let health = match (beating, rolled_out) {
        (true, true) => Health::Healthy,
        _ if apply || in_grace => Health::Booting,
        _ => Health::Failing,
    };
    if health == Health::Failing {
        problems.push(down(&supervisors));
    } else if beating && !rolled_out {
        notes.push("the supervisor's rollout is in progress; the old pod serves until the new one is ready".into());
    }
    let pending = pending_runs(obs, rules);
    problems.extend(pending.iter().map(|p| {
        format!(
            "run pod {} ({}) waits {} min for a node: {}; {}",
            p.pod,
            p.preset.as_deref().unwrap_or("unknown preset"),
            p.waited_secs / 60,
            p.reason,
            p.fix
        )
    }));
    Judged {
        apply,
        health,
        supervisors,
        pending,
        problems,
        notes,
    }
}

fn supervisors(obs: &Observed) -> Vec<SupervisorPod> {
    obs.pods
        .iter()
        .filter(|p| is_supervisor(p) && p.metadata.deletion_timestamp.is_none())
        .map(|p| SupervisorPod {
            name: p.metadata.name.clone(),
            ready: p.ready(),
            heartbeat: obs.heartbeats.get(&p.metadata.name).copied(),
            why: why_down(p),
        })
        .collect()
}

/// The failure line of a supervisor that is down: each pod, its heartbeat and why.
fn down(supervisors: &[SupervisorPod]) -> String {
    let detail: Vec<String> = supervisors
        .iter()
        .map(|s| {
            let beat = match s.heartbeat {
                Some(age) => format!("last heartbeat {age:.0}s ago"),
                None => "never heartbeat".into(),
            };
            match &s.why {
                Some(why) => format!("{} {beat}, {why}", s.name),
                None => format!("{} {beat}", s.name),
            }
        })
        .collect();
    if detail.is_empty() {
        "no supervisor pod exists: the Deployment's pods are not created (kubectl describe deployment supervisor shows why)".to_string()
    } else {
        format!(
            "the supervisor on Kubernetes is down: {}",
            detail.join("; ")
        )
    }
}

/// Run pods waiting for a node longer than `pending_after`, the longest-waiting first.
fn pending_runs(obs: &Observed, rules: &Rules) -> Vec<PendingRun> {
    let mut pending: Vec<PendingRun> = obs
        .pods
        .iter()
        .filter(|p| is_run(p) && p.status.phase == "Pending" && p.spec.node_name.is_none())
        .filter_map(|p| {
            let waited = age_secs(p.metadata.creation_timestamp.as_deref(), obs.now);
            if (waited as u64) < rules.pending_after.as_secs() {
                return None;
            }
            let reason = p.unschedulable().unwrap_or("not scheduled yet").to_string();
            Some(PendingRun {
                pod: p.metadata.name.clone(),
                preset: p.metadata.labels.get("machine").cloned(),
                waited_secs: waited,
                fix: pending_fix(&reason, &rules.nodetype),
                reason,
            })
        })
        .collect();
    pending.sort_by(|a, b| b.waited_secs.cmp(&a.waited_secs).then(a.pod.cmp(&b.pod)));
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn rules() -> Rules {
        Rules {
            stale_after: Duration::from_secs(30),
            boot_grace: Duration::from_secs(600),
            pending_after: Duration::from_secs(600),
            nodetype: "v4-worker".into(),
        }
    }

    fn deployment(fp: &str, rolled: bool) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "supervisor", "generation": 2, "annotations": {manifests::OBJECTS_ANNOTATION: fp}},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": if rolled { 1 } else { 0 }, "unavailableReplicas": if rolled { 0 } else { 1 }},
        }))
        .unwrap()
    }

    fn supervisor(name: &str, created: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "trigger", "creationTimestamp": created,
                         "labels": {manifests::APP_LABEL.0: manifests::APP_LABEL.1}},
            "status": status,
        }))
        .unwrap()
    }

    fn running() -> serde_json::Value {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    }

    fn run_pod(name: &str, created: &str, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "trigger", "creationTimestamp": created,
                         "labels": {"app": "task-run", "machine": "large-2x"}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_heartbeating_rolled_out_supervisor_is_healthy_and_nothing_is_applied() {
        let obs = Observed {
            deployment: Some(deployment("fp1", true)),
            pods: vec![supervisor(
                "supervisor-abc-1",
                "2026-12-07T10:00:00Z",
                running(),
            )],
            heartbeats: BTreeMap::from([("supervisor-abc-1".to_string(), 4.0)]),
            now: now(),
        };
        let j = judge(&obs, "fp1", &rules());
        assert_eq!(j.health, Health::Healthy);
        assert!(!j.apply);
        assert!(j.problems.is_empty(), "{:?}", j.problems);
        assert_eq!(j.supervisors[0].heartbeat, Some(4.0));
    }

    #[test]
    fn changed_objects_are_applied_and_the_new_pod_boots_within_its_grace() {
        let obs = Observed {
            deployment: Some(deployment("fp-old", false)),
            pods: vec![supervisor(
                "supervisor-new-1",
                "2026-12-07T11:59:00Z",
                json!({"phase": "Pending"}),
            )],
            heartbeats: BTreeMap::new(),
            now: now(),
        };
        let j = judge(&obs, "fp-new", &rules());
        assert!(j.apply);
        assert_eq!(j.health, Health::Booting);
        assert!(j.problems.is_empty());
    }

    #[test]
    fn a_crash_looping_supervisor_past_its_grace_fails_with_the_reason_and_what_to_do() {
        let status = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "supervisor", "ready": false, "restartCount": 7, "image": "ghcr.io/triggerdotdev/supervisor:v4.5.12",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}]});
        let obs = Observed {
            deployment: Some(deployment("fp1", false)),
            pods: vec![supervisor(
                "supervisor-abc-1",
                "2026-12-07T10:00:00Z",
                status,
            )],
            heartbeats: BTreeMap::from([("supervisor-abc-1".to_string(), 900.0)]),
            now: now(),
        };
        let j = judge(&obs, "fp1", &rules());
        assert_eq!(j.health, Health::Failing);
        assert_eq!(j.problems.len(), 1);
        let p = &j.problems[0];
        assert!(p.contains("supervisor-abc-1 last heartbeat 900s ago, CrashLoopBackOff (7 restarts, last exit code 1)"), "{p}");
        assert!(
            p.contains("kubectl logs -n trigger supervisor-abc-1 --previous"),
            "{p}"
        );
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let status = json!({"phase": "Pending", "containerStatuses": [{"name": "supervisor", "image": "ghcr.io/triggerdotdev/supervisor:v9.9.9",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]});
        let p = supervisor("s", "2026-12-07T10:00:00Z", status);
        assert!(why_down(&p)
            .unwrap()
            .contains("ghcr.io/triggerdotdev/supervisor:v9.9.9 cannot be pulled"));
    }

    #[test]
    fn run_pods_waiting_past_the_threshold_fail_with_the_schedulers_reason_and_the_fix() {
        let obs = Observed {
            deployment: Some(deployment("fp1", true)),
            pods: vec![
                supervisor("supervisor-abc-1", "2026-12-07T10:00:00Z", running()),
                run_pod(
                    "runner-big",
                    "2026-12-07T11:40:00Z",
                    "0/3 nodes are available: 3 Insufficient memory.",
                ),
                run_pod(
                    "runner-new",
                    "2026-12-07T11:58:00Z",
                    "0/3 nodes are available: 3 Insufficient memory.",
                ),
                run_pod(
                    "runner-label",
                    "2026-12-07T11:30:00Z",
                    "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
                ),
            ],
            heartbeats: BTreeMap::from([("supervisor-abc-1".to_string(), 4.0)]),
            now: now(),
        };
        let j = judge(&obs, "fp1", &rules());
        assert_eq!(j.health, Health::Healthy);
        assert_eq!(
            j.pending.iter().map(|p| p.pod.as_str()).collect::<Vec<_>>(),
            ["runner-label", "runner-big"]
        );
        assert!(
            j.problems[0].contains("nodetype=v4-worker"),
            "{:?}",
            j.problems
        );
        assert!(j.problems[1].starts_with("run pod runner-big (large-2x) waits 20 min for a node: 0/3 nodes are available: 3 Insufficient memory.; no runs node has room"), "{:?}", j.problems);
    }

    #[test]
    fn no_supervisor_pod_at_all_is_a_failure_once_the_objects_are_applied() {
        let obs = Observed {
            deployment: Some(deployment("fp1", false)),
            now: now(),
            ..Default::default()
        };
        let j = judge(&obs, "fp1", &rules());
        assert_eq!(j.health, Health::Failing);
        assert!(j.problems[0].starts_with("no supervisor pod exists"));
    }
}
