//! Contracts with the owners: every object ops applies is valid for the Kubernetes version the
//! fake cluster reports, by the Kubernetes project's own schemas (`kubernetes-validate`, pinned
//! in .ci/kubernetes-validate.txt, strict: an unknown field is an error), and every variable
//! the supervisor's Deployment sets is one Trigger.dev's supervisor reads (env.ts, pinned in
//! tests/fixtures/supervisor-env-names.txt).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trigger_ops::clients::kubernetes::{Credentials, Kube, User};
use trigger_ops::manifests::{self, Spec, Taint};
use trigger_ops::record::ConfigRecord;
use trigger_ops::redact::Secret;

use crate::support::kubernetes::{pki, FakeKube};

const TOKEN: &str = "kube-token-contract-01";

fn record(registry: bool) -> ConfigRecord {
    crate::support::kubernetes::record(
        "tr_wgt_contracttoken00001",
        "managed-secret-contract",
        registry,
    )
}

/// The objects of both shapes: a DOKS cluster (tainted runs pool, a supervisor pool, a
/// registry with credentials) and any cluster (nothing of these).
fn every_object() -> Vec<Value> {
    let (doks, plain) = (record(true), record(false));
    let a = Spec {
        namespace: "trigger",
        version: "v4.5.12",
        record: &doks,
        nodetype: manifests::DEFAULT_NODETYPE,
        runs_taint: Some(Taint::runs(manifests::DEFAULT_NODETYPE)),
        supervisor_nodes: Some((manifests::NODETYPE_KEY, "ops-supervisor")),
    };
    let b = Spec {
        namespace: "trigger-prod",
        version: "v4.5.12",
        record: &plain,
        nodetype: "trigger-runs",
        runs_taint: None,
        supervisor_nodes: None,
    };
    let mut all = manifests::objects(&a);
    all.extend(manifests::objects(&b));
    all
}

/// The `major.minor.0` the fake API server reports, asked through the client.
fn cluster_version() -> String {
    let fake = FakeKube::start(TOKEN);
    let creds = Credentials {
        server: fake.url.clone(),
        ca_pem: pki().ca_pem.clone(),
        user: User::Token(Secret::new(TOKEN)),
    };
    let v = Kube::new(&creds, Instant::now() + Duration::from_secs(10))
        .unwrap()
        .version()
        .unwrap();
    format!("{}.{}.0", v.major, v.minor)
}

/// Runs `kubernetes-validate --strict` on the objects; returns (passed, its output).
fn validate(dir: &Path, objects: &[Value], version: &str) -> (bool, String) {
    let files: Vec<PathBuf> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let path = dir.join(format!("{i:02}.yaml"));
            // JSON is YAML.
            std::fs::write(&path, serde_json::to_string_pretty(o).unwrap()).unwrap();
            path
        })
        .collect();
    let out = std::process::Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(&files)
        .output()
        .expect("python3 runs kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing: python3 -m pip install --no-deps --require-hashes -r .ci/kubernetes-validate.txt (.ci/run does)"
    );
    (out.status.success(), text)
}

#[test]
fn every_object_ops_applies_passes_the_kubernetes_schemas_strictly() {
    let version = cluster_version();
    assert_eq!(version, "1.34.0");
    let dir = tempfile::tempdir().unwrap();
    let objects = every_object();
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    let (ok, out) = validate(dir.path(), &objects, &version);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("passed for resource").count(),
        objects.len(),
        "{out}"
    );
}

#[test]
fn the_schema_check_refuses_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let r = record(false);
    let spec = Spec {
        namespace: "trigger",
        version: "v4.5.12",
        record: &r,
        nodetype: "trigger-runs",
        runs_taint: None,
        supervisor_nodes: None,
    };
    let mut d = manifests::deployment(&spec);
    d["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"secretRef": {"name": "x"}, "prefix2": "Y"}]);
    let (ok, out) = validate(dir.path(), &[d], "1.34.0");
    assert!(!ok, "an unknown field passed: {out}");
    assert!(out.contains("'prefix2' was unexpected"), "{out}");
}

#[test]
fn the_supervisors_variables_are_ones_trigger_dev_reads() {
    let facts = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/supervisor-env-names.txt"
    ))
    .unwrap();
    let known: std::collections::BTreeSet<&str> = facts
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(known.len() > 100, "{} names", known.len());
    let r = record(true);
    let spec = Spec {
        namespace: "trigger",
        version: "v4.5.12",
        record: &r,
        nodetype: manifests::DEFAULT_NODETYPE,
        runs_taint: Some(Taint::runs(manifests::DEFAULT_NODETYPE)),
        supervisor_nodes: None,
    };
    let names = manifests::env_names(&spec);
    assert!(names.len() >= 15, "{names:?}");
    for name in names.keys() {
        assert!(
            known.contains(name.as_str()),
            "{name} is not read by the supervisor (env.ts)"
        );
    }
    for required in [
        "TRIGGER_API_URL",
        "TRIGGER_WORKER_TOKEN",
        "MANAGED_WORKER_SECRET",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "KUBERNETES_FORCE_ENABLED",
        "KUBERNETES_NAMESPACE",
        "KUBERNETES_WORKER_NODETYPE_LABEL",
        "KUBERNETES_RUNNER_TOLERATIONS",
        "KUBERNETES_IMAGE_PULL_SECRETS",
        "TRIGGER_WORKER_INSTANCE_NAME",
        "TRIGGER_WORKLOAD_API_DOMAIN",
        "RESOURCE_MONITOR_ENABLED",
    ] {
        assert!(names.contains_key(required), "{required} not set");
    }
}
