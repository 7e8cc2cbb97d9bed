//! The supervisor's Kubernetes objects, built from the extracted record and the task's
//! settings (pure: no IO), and the field diff a dry run shows. Ops applies them by server-side
//! apply with `fieldManager=ops` (clients/kubernetes.rs), in [`objects`]' order: the namespace
//! first, the Deployment last, so the pod never starts before its Secret and Role exist.
//!
//! Facts from Trigger.dev v4.5.12 (apps/supervisor/src/env.ts and workloadManager/, the Helm
//! chart's Role): run pods are bare pods labelled `app=task-run`, placed by
//! `nodeSelector: nodetype=<KUBERNETES_WORKER_NODETYPE_LABEL>` and tolerating
//! `KUBERNETES_RUNNER_TOLERATIONS` (`key=value:Effect`); the supervisor needs pods create,
//! delete, deletecollection, get, list and watch in its namespace, nothing more.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::record::ConfigRecord;

pub use crate::cloudinit::{HEARTBEAT_INTERVAL_SECS, SUPERVISOR_IMAGE};
/// The name of the ServiceAccount, Role, RoleBinding, Secret, Service and Deployment.
pub const NAME: &str = "supervisor";
pub const DEFAULT_NAMESPACE: &str = "trigger";
pub const PULL_SECRET: &str = "supervisor-registry";
pub const NETWORK_POLICY: &str = "task-run-no-metadata";
/// The supervisor pods' label (the Deployment's selector and the Service's).
pub const APP_LABEL: (&str, &str) = ("app.kubernetes.io/name", "trigger-supervisor");
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "trigger-ops");
/// Run pods' label, set by the supervisor on every pod it creates.
pub const RUN_POD_LABEL: (&str, &str) = ("app", "task-run");
/// The node label run pods select (`nodeSelector: {nodetype: <value>}`).
pub const NODETYPE_KEY: &str = "nodetype";
/// `KUBERNETES_WORKER_NODETYPE_LABEL`'s default in the supervisor's env.ts: the value of the
/// runs nodes' `nodetype` label (DOKS runs pools carry it, with the taint [`Taint::runs`]; on
/// another cluster the operator labels, and may taint, the nodes meant for runs).
pub const DEFAULT_NODETYPE: &str = "v4-worker";
/// The pod template's annotation whose change restarts the supervisor: the fingerprint of the
/// Secret's content and the registry credentials.
pub const FINGERPRINT_ANNOTATION: &str = "trigger-ops/config-fingerprint";
/// The Deployment's annotation: the fingerprint of every object ops applied with it.
pub const OBJECTS_ANNOTATION: &str = "trigger-ops/objects-fingerprint";
/// The workload API's port, whose `/health` the probes read (as on droplets).
pub const WORKLOAD_PORT: u16 = crate::cloudinit::HEALTH_PORT;
/// DigitalOcean's metadata service, which run pods must not reach (it serves the droplet's
/// user-data; on DOKS, the node's).
pub const METADATA_CIDR: &str = "169.254.169.254/32";

/// A taint on the nodes meant for runs, which run pods tolerate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    /// The runs nodes' taint: `nodetype=<label>:NoSchedule`, so only run pods land there.
    pub fn runs(nodetype: &str) -> Taint {
        Taint {
            key: NODETYPE_KEY.into(),
            value: nodetype.into(),
            effect: "NoSchedule".into(),
        }
    }

    /// As `KUBERNETES_RUNNER_TOLERATIONS` takes it (envUtil.ts `Tolerations`).
    pub fn toleration(&self) -> String {
        format!("{}={}:{}", self.key, self.value, self.effect)
    }
}

/// What the objects depend on besides the record.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub namespace: &'a str,
    /// The supervisor's release tag (`v4.5.12`), following the webapp as on droplets.
    pub version: &'a str,
    pub record: &'a ConfigRecord,
    /// The value of run nodes' `nodetype` label.
    pub nodetype: &'a str,
    /// The taint of run nodes, tolerated by run pods; `None`: run nodes are not tainted.
    pub runs_taint: Option<Taint>,
    /// Where the supervisor pod runs (a node label), `None`: anywhere it fits.
    pub supervisor_nodes: Option<(&'a str, &'a str)>,
}

impl Spec<'_> {
    /// The workload API's name inside the cluster (run pods call the supervisor there).
    pub fn workload_domain(&self) -> String {
        format!("{NAME}.{}.svc.cluster.local", self.namespace)
    }

    fn pull_secret(&self) -> Option<Value> {
        let r = self.record;
        let (Some(host), Some(user), Some(pass)) =
            (&r.registry_host, &r.registry_username, &r.registry_password)
        else {
            return None;
        };
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let auths = json!({"auths": {host.as_str(): {
            "username": user,
            "password": pass.expose(),
            "auth": b64(&format!("{user}:{}", pass.expose())),
        }}});
        Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.meta(PULL_SECRET),
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(&auths.to_string())},
        }))
    }

    /// The fingerprint of everything secret the pod reads: when it changes, the pod template's
    /// annotation changes and the Deployment rolls the pod (env from a Secret is read at start).
    pub fn fingerprint(&self) -> String {
        let r = self.record;
        crate::sealed::fingerprint(&[
            r.worker_token.expose(),
            r.managed_secret.expose(),
            r.registry_host.as_deref().unwrap_or(""),
            r.registry_username.as_deref().unwrap_or(""),
            r.registry_password
                .as_ref()
                .map(|p| p.expose())
                .unwrap_or(""),
        ])
    }

    fn labels(&self) -> Value {
        json!({MANAGED_BY.0: MANAGED_BY.1})
    }

    fn meta(&self, name: &str) -> Value {
        json!({"name": name, "namespace": self.namespace, "labels": self.labels()})
    }
}

/// Every object ops applies, in apply order. The Deployment, last, carries the fingerprint of
/// them all ([`OBJECTS_ANNOTATION`]): a healthy run reads the Deployment anyway, and applies
/// nothing when the fingerprint is the one it would write.
pub fn objects(spec: &Spec) -> Vec<Value> {
    let mut out = vec![
        namespace(spec),
        service_account(spec),
        role(spec),
        role_binding(spec),
        secret(spec),
    ];
    out.extend(spec.pull_secret());
    out.extend([service(spec), network_policy(spec)]);
    let mut d = deployment(spec);
    out.push(d.clone());
    d["metadata"]["annotations"] = json!({OBJECTS_ANNOTATION: objects_fingerprint(&out)});
    out.pop();
    out.push(d);
    out
}

/// The fingerprint of the objects as ops builds them (never of what the server adds).
pub fn objects_fingerprint(objects: &[Value]) -> String {
    let texts: Vec<String> = objects.iter().map(Value::to_string).collect();
    let parts: Vec<&str> = texts.iter().map(String::as_str).collect();
    crate::sealed::fingerprint(&parts)
}

/// The fingerprint a live Deployment carries, `None` when it carries none.
pub fn applied_fingerprint(live: &Value) -> Option<&str> {
    live["metadata"]["annotations"][OBJECTS_ANNOTATION].as_str()
}

pub fn namespace(spec: &Spec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.namespace, "labels": spec.labels()},
    })
}

pub fn service_account(spec: &Spec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": spec.meta(NAME),
    })
}

/// What the supervisor may do: manage run pods in its namespace, and nothing else.
pub fn role(spec: &Spec) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": spec.meta(NAME),
        "rules": [{
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["create", "delete", "deletecollection", "get", "list", "watch"],
        }],
    })
}

pub fn role_binding(spec: &Spec) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": spec.meta(NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": spec.namespace}],
    })
}

/// The worker token and the managed-worker secret, read by the supervisor's env.
pub fn secret(spec: &Spec) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": spec.meta(NAME),
        "type": "Opaque",
        "data": {
            "TRIGGER_WORKER_TOKEN": b64(spec.record.worker_token.expose()),
            "MANAGED_WORKER_SECRET": b64(spec.record.managed_secret.expose()),
        },
    })
}

/// The workload API, which run pods call (`TRIGGER_WORKLOAD_API_DOMAIN`).
pub fn service(spec: &Spec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": spec.meta(NAME),
        "spec": {
            "type": "ClusterIP",
            "selector": {APP_LABEL.0: APP_LABEL.1},
            "ports": [{"name": "workload", "port": WORKLOAD_PORT, "targetPort": "workload", "protocol": "TCP"}],
        },
    })
}

/// Run pods reach anything but the metadata service (the droplets' `DOCKER-USER` rule).
pub fn network_policy(spec: &Spec) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": spec.meta(NETWORK_POLICY),
        "spec": {
            "podSelector": {"matchLabels": {RUN_POD_LABEL.0: RUN_POD_LABEL.1}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_CIDR]}},
                {"ipBlock": {"cidr": "::/0"}},
            ]}],
        },
    })
}

/// The supervisor's environment: as on droplets (cloudinit::supervisor_env) less Docker's,
/// plus the Kubernetes workload manager's. Secrets come from the Secret, the instance name
/// from the pod's own name (unique per pod, also when a rollout puts two on one node).
pub fn env(spec: &Spec) -> Vec<Value> {
    let r = spec.record;
    let plain = |name: &str, value: String| json!({"name": name, "value": value});
    let from_secret = |name: &str, secret: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}});
    let mut env = vec![
        plain("TRIGGER_API_URL", r.api_origin.clone()),
        from_secret("TRIGGER_WORKER_TOKEN", NAME),
        from_secret("MANAGED_WORKER_SECRET", NAME),
        plain("OTEL_EXPORTER_OTLP_ENDPOINT", r.otel_endpoint.clone()),
        json!({"name": "TRIGGER_WORKER_INSTANCE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        plain(
            "TRIGGER_WORKER_HEARTBEAT_INTERVAL_SECONDS",
            HEARTBEAT_INTERVAL_SECS.to_string(),
        ),
        plain("TRIGGER_WORKLOAD_API_DOMAIN", spec.workload_domain()),
        plain(
            "TRIGGER_WORKLOAD_API_PORT_INTERNAL",
            WORKLOAD_PORT.to_string(),
        ),
        plain(
            "TRIGGER_WORKLOAD_API_PORT_EXTERNAL",
            WORKLOAD_PORT.to_string(),
        ),
        plain("KUBERNETES_FORCE_ENABLED", "true".into()),
        plain("KUBERNETES_NAMESPACE", spec.namespace.to_string()),
        plain(
            "KUBERNETES_WORKER_NODETYPE_LABEL",
            spec.nodetype.to_string(),
        ),
        // Its Kubernetes monitor reads the Node, which the Role does not grant.
        plain("RESOURCE_MONITOR_ENABLED", "false".into()),
    ];
    if let Some(taint) = &spec.runs_taint {
        env.push(plain("KUBERNETES_RUNNER_TOLERATIONS", taint.toleration()));
    }
    if spec.pull_secret().is_some() {
        env.push(plain("KUBERNETES_IMAGE_PULL_SECRETS", PULL_SECRET.into()));
    }
    env
}

pub fn image(version: &str) -> String {
    format!("{SUPERVISOR_IMAGE}:{version}")
}

/// One supervisor pod; a rollout starts the new pod before the old one stops (run pods are
/// bare pods and outlive both).
pub fn deployment(spec: &Spec) -> Value {
    let probe = |period: u32, failures: u32| json!({"httpGet": {"path": "/health", "port": "workload"}, "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures});
    let mut pod = json!({
        "serviceAccountName": NAME,
        "containers": [{
            "name": NAME,
            "image": image(spec.version),
            "ports": [{"name": "workload", "containerPort": WORKLOAD_PORT, "protocol": "TCP"}],
            "env": env(spec),
            "readinessProbe": probe(10, 3),
            "livenessProbe": probe(30, 5),
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        }],
    });
    if let Some((key, value)) = spec.supervisor_nodes {
        pod["nodeSelector"] = json!({key: value});
    }
    if spec.pull_secret().is_some() {
        pod["imagePullSecrets"] = json!([{"name": PULL_SECRET}]);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": spec.meta(NAME),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {APP_LABEL.0: APP_LABEL.1}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {APP_LABEL.0: APP_LABEL.1, MANAGED_BY.0: MANAGED_BY.1},
                    "annotations": {FINGERPRINT_ANNOTATION: spec.fingerprint()},
                },
                "spec": pod,
            },
        },
    })
}

/// `Kind namespace/name` of an object, for messages.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// What applying one object would change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create,
    Update(Vec<FieldChange>),
    Unchanged,
}

/// One field ops sets whose live value differs (`None`: not set there).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub path: String,
    pub from: Option<String>,
    pub to: String,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{}: {from} -> {}", self.path, self.to),
            None => write!(f, "{}: (unset) -> {}", self.path, self.to),
        }
    }
}

/// The fields of `desired` whose value in `live` differs. Only the fields ops sets count:
/// what the server defaults or other managers own is not ops' to change. Lists of named items
/// (containers, env, ports) are compared by name; a Secret's values show only as `***`.
pub fn diff(desired: &Value, live: Option<&Value>) -> Change {
    let Some(live) = live else {
        return Change::Create;
    };
    let secret = desired["kind"] == "Secret";
    let mut changes = Vec::new();
    walk(
        desired,
        Some(live),
        String::new(),
        &mut |path, want, have| {
            let hide = secret && (path.starts_with("data.") || path.starts_with("stringData."));
            let show = |v: &Value| {
                if hide {
                    crate::redact::MASK.to_string()
                } else {
                    crate::redact::redact(&scalar(v))
                }
            };
            changes.push(FieldChange {
                path: path.to_string(),
                from: have.map(show),
                to: show(want),
            });
        },
    );
    if changes.is_empty() {
        Change::Unchanged
    } else {
        Change::Update(changes)
    }
}

fn walk(
    want: &Value,
    have: Option<&Value>,
    path: String,
    out: &mut dyn FnMut(&str, &Value, Option<&Value>),
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match want {
        Value::Object(fields) => {
            for (key, value) in fields {
                walk(value, have.and_then(|h| h.get(key)), join(key), out);
            }
        }
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.get("name").is_some()) =>
        {
            let by_name = |v: &Value| -> Map<String, Value> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| Some((i.get("name")?.as_str()?.to_string(), i.clone())))
                    .collect()
            };
            let have_items = have.map(by_name).unwrap_or_default();
            for (name, item) in by_name(want) {
                walk(&item, have_items.get(&name), format!("{path}[{name}]"), out);
            }
        }
        _ => {
            if have != Some(want) && !same_quantity(want, have) {
                out(&path, want, have);
            }
        }
    }
}

/// `8020` and `"8020"`, or `1` and `1.0`, are one value to the API server.
fn same_quantity(want: &Value, have: Option<&Value>) -> bool {
    have.is_some_and(|h| !h.is_object() && !h.is_array() && scalar(h) == scalar(want))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The env names the Deployment sets, for the contract test against Trigger.dev's env.ts.
pub fn env_names(spec: &Spec) -> BTreeMap<String, Value> {
    env(spec)
        .into_iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Secret;

    fn record() -> ConfigRecord {
        ConfigRecord {
            worker_token: Secret::new("tr_wgt_manifesttoken0001"),
            token_source: "db".into(),
            token_found_at: 0,
            managed_secret: Secret::new("managed-secret-manifests"),
            api_origin: "https://trigger.example.com".into(),
            otel_endpoint: "https://trigger.example.com/otel".into(),
            registry_host: None,
            registry_username: None,
            registry_password: None,
            webapp_service: "webapp".into(),
            fingerprint: "f".into(),
            extracted_at: 0,
            webapp_version: Some("v4.5.12".into()),
        }
    }

    fn spec(record: &ConfigRecord) -> Spec<'_> {
        Spec {
            namespace: DEFAULT_NAMESPACE,
            version: "v4.5.12",
            record,
            nodetype: DEFAULT_NODETYPE,
            runs_taint: Some(Taint::runs(DEFAULT_NODETYPE)),
            supervisor_nodes: None,
        }
    }

    fn env_value(d: &Value, name: &str) -> Value {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    #[test]
    fn the_objects_come_in_apply_order_namespace_first_deployment_last() {
        let r = record();
        let kinds: Vec<String> = objects(&spec(&r))
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Secret",
                "Service",
                "NetworkPolicy",
                "Deployment"
            ]
        );
    }

    #[test]
    fn the_deployment_carries_the_fingerprint_of_every_object() {
        let r = record();
        let all = objects(&spec(&r));
        let d = all.last().unwrap();
        let mut without = all.clone();
        without.last_mut().unwrap()["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        assert_eq!(
            applied_fingerprint(d),
            Some(objects_fingerprint(&without).as_str())
        );
        let mut other = record();
        other.managed_secret = Secret::new("managed-secret-rotated");
        let changed = objects(&spec(&other));
        assert_ne!(
            applied_fingerprint(changed.last().unwrap()),
            applied_fingerprint(d)
        );
    }

    #[test]
    fn the_role_grants_pods_and_nothing_more() {
        let r = record();
        let role = role(&spec(&r));
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "deletecollection", "get", "list", "watch"]}])
        );
    }

    #[test]
    fn the_deployment_runs_the_webapps_version_with_the_droplets_env() {
        let r = record();
        let d = deployment(&spec(&r));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "ghcr.io/triggerdotdev/supervisor:v4.5.12");
        assert_eq!(
            env_value(&d, "TRIGGER_API_URL")["value"],
            "https://trigger.example.com"
        );
        assert_eq!(
            env_value(&d, "TRIGGER_WORKER_HEARTBEAT_INTERVAL_SECONDS")["value"],
            "10"
        );
        assert_eq!(env_value(&d, "RESOURCE_MONITOR_ENABLED")["value"], "false");
        assert_eq!(env_value(&d, "KUBERNETES_NAMESPACE")["value"], "trigger");
        assert_eq!(env_value(&d, "KUBERNETES_FORCE_ENABLED")["value"], "true");
        assert_eq!(
            env_value(&d, "KUBERNETES_WORKER_NODETYPE_LABEL")["value"],
            "v4-worker"
        );
        assert_eq!(
            env_value(&d, "KUBERNETES_RUNNER_TOLERATIONS")["value"],
            "nodetype=v4-worker:NoSchedule"
        );
        assert_eq!(
            env_value(&d, "TRIGGER_WORKLOAD_API_DOMAIN")["value"],
            "supervisor.trigger.svc.cluster.local"
        );
        assert_eq!(
            env_value(&d, "TRIGGER_WORKER_INSTANCE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(
            env_value(&d, "TRIGGER_WORKER_TOKEN")["valueFrom"]["secretKeyRef"],
            json!({"name": "supervisor", "key": "TRIGGER_WORKER_TOKEN"})
        );
        assert!(d["spec"]["template"]["spec"]
            .get("imagePullSecrets")
            .is_none());
    }

    #[test]
    fn no_secret_is_written_outside_the_secrets() {
        let mut r = record();
        r.registry_host = Some("registry.example.com".into());
        r.registry_username = Some("deploy".into());
        r.registry_password = Some(Secret::new("registry-password-xyz"));
        let all = objects(&spec(&r));
        for o in &all {
            let text = o.to_string();
            let secret = o["kind"] == "Secret";
            for s in [
                "tr_wgt_manifesttoken0001",
                "managed-secret-manifests",
                "registry-password-xyz",
            ] {
                assert!(!text.contains(s), "{} holds a secret in clear", describe(o));
            }
            if !secret {
                assert!(!text.contains("\"data\""), "{}", describe(o));
            }
        }
        let pull = all
            .iter()
            .find(|o| o["metadata"]["name"] == PULL_SECRET)
            .unwrap();
        assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
        let d = all.last().unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": PULL_SECRET}])
        );
        assert_eq!(
            env_value(d, "KUBERNETES_IMAGE_PULL_SECRETS")["value"],
            PULL_SECRET
        );
    }

    #[test]
    fn a_new_token_changes_the_fingerprint_and_so_restarts_the_pod() {
        let r = record();
        let before = deployment(&spec(&r));
        let mut r2 = record();
        r2.worker_token = Secret::new("tr_wgt_manifesttoken0002");
        let after = deployment(&spec(&r2));
        let Change::Update(changes) = diff(&after, Some(&before)) else {
            panic!("no change");
        };
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].path,
            format!("spec.template.metadata.annotations.{FINGERPRINT_ANNOTATION}")
        );
    }

    #[test]
    fn the_diff_names_the_fields_ops_sets_and_ignores_server_defaults() {
        let r = record();
        let desired = deployment(&spec(&r));
        assert_eq!(diff(&desired, None), Change::Create);
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = json!("7");
        live["spec"]["revisionHistoryLimit"] = json!(10);
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
            json!("8020");
        assert_eq!(diff(&desired, Some(&live)), Change::Unchanged);
        live["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("ghcr.io/triggerdotdev/supervisor:v4.5.11");
        let Change::Update(changes) = diff(&desired, Some(&live)) else {
            panic!("no change");
        };
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spec.template.spec.containers[supervisor].image: ghcr.io/triggerdotdev/supervisor:v4.5.11 -> ghcr.io/triggerdotdev/supervisor:v4.5.12"]
        );
    }

    #[test]
    fn a_secrets_diff_never_shows_its_values() {
        let r = record();
        let desired = secret(&spec(&r));
        let mut live = desired.clone();
        live["data"]["TRIGGER_WORKER_TOKEN"] = json!("b2xk");
        let Change::Update(changes) = diff(&desired, Some(&live)) else {
            panic!("no change");
        };
        assert_eq!(
            changes[0].to_string(),
            "data.TRIGGER_WORKER_TOKEN: *** -> ***"
        );
    }
}
