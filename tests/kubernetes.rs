//! The Kubernetes client against the strict fake API server, and the supervisor's objects
//! applied there: the toy Deployment controller's pod heartbeats into the real Postgres only
//! when the Secret ops wrote holds what the webapp accepts.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trigger_ops::clients::kubernetes::{ApiError, Credentials, Kind, Kube, Pod, Selector, User};
use trigger_ops::manifests::{self, Change, Spec, Taint};
use trigger_ops::record::ConfigRecord;
use trigger_ops::redact::Secret;

use crate::extract::{LOG_TOKEN, SECRET};
use crate::support::kubernetes::{pki, Accepts, FakeKube};
use crate::support::webapp::Webapp;

const TOKEN: &str = "kube-token-for-ops-0001";
const NS: &str = "trigger";

fn creds(fake: &FakeKube, token: &str) -> Credentials {
    Credentials {
        server: fake.url.clone(),
        ca_pem: pki().ca_pem.clone(),
        user: User::Token(Secret::new(token)),
    }
}

fn kube(fake: &FakeKube) -> Kube {
    Kube::new(
        &creds(fake, TOKEN),
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap()
}

fn record(token: &str) -> ConfigRecord {
    crate::support::kubernetes::record(token, SECRET, false)
}

fn spec<'a>(record: &'a ConfigRecord, version: &'a str) -> Spec<'a> {
    Spec {
        namespace: NS,
        version,
        record,
        nodetype: manifests::DEFAULT_NODETYPE,
        runs_taint: Some(Taint::runs(manifests::DEFAULT_NODETYPE)),
        supervisor_nodes: None,
    }
}

fn apply_all(kube: &Kube, spec: &Spec) -> Vec<Value> {
    manifests::objects(spec)
        .iter()
        .map(|o| kube.apply(o).unwrap())
        .collect()
}

/// The webapp's worker instances (name, last heartbeat set).
fn instances(webapp: &Webapp) -> Vec<String> {
    let mut c = postgres::Client::connect(&webapp.url, postgres::NoTls).unwrap();
    c.query(
        r#"SELECT name FROM "WorkerInstance" WHERE "lastHeartbeatAt" IS NOT NULL ORDER BY name"#,
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn cluster_for_webapp() -> (FakeKube, Webapp) {
    let webapp = crate::supervisor::webapp_db();
    let fake = FakeKube::start(TOKEN);
    fake.accepts(Accepts {
        webapp: webapp.clone(),
        managed_secret: SECRET.into(),
    });
    (fake, webapp)
}

fn rolled_out(kube: &Kube) -> bool {
    kube.deployment(NS, manifests::NAME)
        .unwrap()
        .is_some_and(|d| d.rolled_out())
}

#[test]
fn applied_objects_bring_up_a_supervisor_that_heartbeats_with_the_extracted_token() {
    let (fake, webapp) = cluster_for_webapp();
    let k = kube(&fake);
    let r = record(LOG_TOKEN);
    let stored = apply_all(&k, &spec(&r, "v4.5.12"));
    for o in &stored {
        assert!(o["metadata"]["resourceVersion"].is_string(), "{o}");
        assert_eq!(o["metadata"]["managedFields"][0]["manager"], "ops");
    }
    assert_eq!(stored.last().unwrap()["metadata"]["generation"], 1);
    assert!(fake.wait_for(Duration::from_secs(15), |_| rolled_out(&k)));
    let pods = fake.supervisor_pods(NS);
    assert_eq!(pods.len(), 1);
    let pod = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        fake.wait_for(Duration::from_secs(10), |_| instances(&webapp)
            .contains(&pod)),
        "{pod} never heartbeat: {:?}",
        instances(&webapp)
    );
    let supervisors: Vec<Pod> = k
        .pods(
            NS,
            &Selector::default().label(manifests::APP_LABEL.0, manifests::APP_LABEL.1),
        )
        .unwrap();
    assert_eq!(supervisors.len(), 1);
    assert!(supervisors[0].ready());
}

#[test]
fn applying_the_same_objects_again_changes_nothing() {
    let (fake, _webapp) = cluster_for_webapp();
    let k = kube(&fake);
    let r = record(LOG_TOKEN);
    let first = apply_all(&k, &spec(&r, "v4.5.12"));
    let second = apply_all(&k, &spec(&r, "v4.5.12"));
    for (a, b) in first.iter().zip(&second) {
        if a["kind"] != "Deployment" {
            assert_eq!(
                a["metadata"]["resourceVersion"],
                b["metadata"]["resourceVersion"],
                "{}",
                manifests::describe(a)
            );
        }
        assert_eq!(a["metadata"]["generation"], b["metadata"]["generation"]);
    }
    for o in manifests::objects(&spec(&r, "v4.5.12")) {
        let kind = Kind::of(&o).unwrap();
        let live: Option<Value> = k
            .get(
                kind,
                o["metadata"]["namespace"].as_str(),
                o["metadata"]["name"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(
            manifests::diff(&o, live.as_ref()),
            Change::Unchanged,
            "{}",
            manifests::describe(&o)
        );
    }
}

#[test]
fn a_version_change_rolls_a_new_supervisor_and_touches_no_run_pod() {
    let (fake, webapp) = cluster_for_webapp();
    let k = kube(&fake);
    let r = record(LOG_TOKEN);
    apply_all(&k, &spec(&r, "v4.5.11"));
    assert!(fake.wait_for(Duration::from_secs(15), |_| rolled_out(&k)));
    let old = fake.supervisor_pods(NS)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    fake.add_node("runs-1", &[("nodetype", "v4-worker")], "3900m", "7Gi");
    fake.add_run_pod(NS, "runner-run_1", Some("runs-1"), "small-1x");
    fake.add_run_pod(NS, "runner-run_2", None, "large-2x");
    let before = fake.object("pods", NS, "runner-run_1").unwrap();

    let desired = manifests::deployment(&spec(&r, "v4.5.12"));
    let live: Option<Value> = k.get(Kind::Deployment, Some(NS), manifests::NAME).unwrap();
    let Change::Update(changes) = manifests::diff(&desired, live.as_ref()) else {
        panic!("no change planned");
    };
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0]
        .to_string()
        .ends_with("supervisor:v4.5.11 -> ghcr.io/triggerdotdev/supervisor:v4.5.12"));
    fake.clear();
    let stored = apply_all(&k, &spec(&r, "v4.5.12"));
    assert_eq!(stored.last().unwrap()["metadata"]["generation"], 2);
    assert!(
        fake.calls().iter().all(|c| c.method == "PATCH"),
        "only applies"
    );
    assert!(fake.wait_for(Duration::from_secs(15), |f| rolled_out(&k)
        && f.supervisor_pods(NS).len() == 1
        && f.supervisor_pods(NS)[0]["metadata"]["name"] != old.as_str()));
    let new = fake.supervisor_pods(NS)[0].clone();
    assert_eq!(
        new["spec"]["containers"][0]["image"],
        "ghcr.io/triggerdotdev/supervisor:v4.5.12"
    );
    let name = new["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        fake.wait_for(Duration::from_secs(10), |_| instances(&webapp)
            .contains(&name))
    );
    assert_eq!(
        fake.object("pods", NS, "runner-run_1").unwrap(),
        before,
        "a run pod was touched"
    );
    assert!(fake.object("pods", NS, "runner-run_2").is_some());
}

#[test]
fn a_secret_the_webapp_refuses_never_heartbeats_and_the_old_supervisor_stays() {
    let (fake, webapp) = cluster_for_webapp();
    let k = kube(&fake);
    let good = record(LOG_TOKEN);
    apply_all(&k, &spec(&good, "v4.5.12"));
    assert!(fake.wait_for(Duration::from_secs(15), |_| rolled_out(&k)));
    let old = fake.supervisor_pods(NS)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // A token the webapp does not know: the fingerprint changes, so a new pod starts with it.
    let bad = record("tr_wgt_not_the_webapps_token");
    apply_all(&k, &spec(&bad, "v4.5.12"));
    std::thread::sleep(Duration::from_millis(800));
    let pods = fake.supervisor_pods(NS);
    assert_eq!(pods.len(), 2, "maxUnavailable 0 keeps the old pod");
    let new: Vec<Pod> = k
        .pods(
            NS,
            &Selector::default().label(manifests::APP_LABEL.0, manifests::APP_LABEL.1),
        )
        .unwrap()
        .into_iter()
        .filter(|p| p.metadata.name != old)
        .collect();
    assert_eq!(new.len(), 1);
    assert!(!new[0].ready());
    let waiting = new[0].status.container_statuses[0]
        .state
        .waiting
        .clone()
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert!(!rolled_out(&k));
    assert!(!instances(&webapp).contains(&new[0].metadata.name));
    assert!(instances(&webapp).contains(&old));
}

#[test]
fn a_wrong_or_expired_token_is_refused_with_a_status() {
    let fake = FakeKube::start(TOKEN);
    fake.add_token("kube-token-expired-0002", Duration::ZERO);
    for token in ["kube-token-wrong-00003", "kube-token-expired-0002"] {
        let k = Kube::new(
            &creds(&fake, token),
            Instant::now() + Duration::from_secs(10),
        )
        .unwrap();
        let e = k.version().unwrap_err();
        let api = e.downcast_ref::<ApiError>().expect("an ApiError");
        assert!(api.unauthorized(), "{e:#}");
        assert!(
            e.to_string().contains("answered HTTP 401 Unauthorized"),
            "{e:#}"
        );
        assert!(!e.to_string().contains(token), "{e:#}");
        assert_eq!(k.requests.get(), 1, "a 401 is not retried");
    }
    assert_eq!(
        kube(&fake).version().unwrap().git_version,
        crate::support::kubernetes::GIT_VERSION
    );
}

#[test]
fn only_the_clusters_ca_is_trusted() {
    let impostor = FakeKube::impostor(TOKEN);
    let k = kube(&impostor);
    let e = k.version().unwrap_err();
    assert!(
        format!("{e:#}").contains("cannot reach Kubernetes API"),
        "{e:#}"
    );
    assert!(
        impostor.calls().is_empty(),
        "a request reached the impostor"
    );
    // The impostor's own CA is not enough either when the client was given another.
    let mut c = creds(&impostor, TOKEN);
    c.ca_pem = pki().other_ca_pem.clone();
    let k = Kube::new(&c, Instant::now() + Duration::from_secs(10)).unwrap();
    assert!(k.version().is_ok(), "the impostor's CA trusts the impostor");
    let real = FakeKube::start(TOKEN);
    let mut c = creds(&real, TOKEN);
    c.ca_pem = pki().other_ca_pem.clone();
    let e = Kube::new(&c, Instant::now() + Duration::from_secs(10))
        .unwrap()
        .version()
        .unwrap_err();
    assert!(format!("{e:#}").contains("cannot reach"), "{e:#}");
}

#[test]
fn kubeconfig_users_with_a_token_or_a_client_certificate_reach_the_cluster() {
    let fake = FakeKube::start(TOKEN);
    let dir = tempfile::tempdir().unwrap();
    for user in [
        format!("    token: {TOKEN}\n"),
        FakeKube::certificate_user(),
    ] {
        let path = fake.kubeconfig(dir.path(), &user);
        let c = Credentials::from_kubeconfig(&path).unwrap();
        let k = Kube::new(&c, Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!(
            k.version().unwrap().minor,
            crate::support::kubernetes::MINOR
        );
    }
    let path = fake.kubeconfig(
        dir.path(),
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: doctl\n      args: [kubernetes, cluster, kubeconfig, exec-credential]\n",
    );
    let e = Credentials::from_kubeconfig(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "kubeconfig {}: user \"ops\" gets its credential from an exec plugin",
            path.display()
        )),
        "{e}"
    );
    assert_eq!(fake.calls().len(), 2);
}

#[test]
fn lists_select_by_label_and_field_across_pages() {
    let fake = FakeKube::start(TOKEN);
    let k = kube(&fake);
    k.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    fake.add_node("runs-1", &[("nodetype", "v4-worker")], "3900m", "7Gi");
    for i in 0..1100 {
        let node = (i % 2 == 0).then_some("runs-1");
        fake.add_run_pod(NS, &format!("runner-run_{i:04}"), node, "small-1x");
    }
    fake.add_run_pod("other", "runner-elsewhere", None, "small-1x");
    fake.clear();
    let pending: Vec<Pod> = k
        .pods(
            NS,
            &Selector::default()
                .label("app", "task-run")
                .field("status.phase", "Pending"),
        )
        .unwrap();
    assert_eq!(pending.len(), 550);
    assert!(pending[0]
        .unschedulable()
        .unwrap()
        .contains("Insufficient memory"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "two pages of 500");
    assert!(calls[1].query.contains("continue="), "{:?}", calls[1]);
    let on_node: Vec<Pod> = k
        .pods(NS, &Selector::default().field("spec.nodeName", "runs-1"))
        .unwrap();
    assert_eq!(on_node.len(), 550);
    let none: Vec<Pod> = k
        .pods(NS, &Selector::default().label("app", "other"))
        .unwrap();
    assert!(none.is_empty());
    let e = k
        .pods(NS, &Selector::default().field("spec.schedulerName", "x"))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("400 BadRequest: field label not supported"),
        "{e:#}"
    );
}

#[test]
fn cordon_marks_the_node_unschedulable_and_delete_removes_only_what_is_named() {
    let fake = FakeKube::start(TOKEN);
    let k = kube(&fake);
    fake.add_node("runs-old-1", &[("nodetype", "v4-worker")], "1900m", "3Gi");
    fake.add_node("runs-new-1", &[("nodetype", "v4-worker")], "3900m", "7Gi");
    let node = k.cordon("runs-old-1").unwrap();
    assert!(node.spec.unschedulable);
    let cordoned = k
        .nodes(&Selector::default().field("spec.unschedulable", "true"))
        .unwrap();
    assert_eq!(
        cordoned
            .iter()
            .map(|n| n.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["runs-old-1"]
    );
    let e = k.cordon("missing").unwrap_err();
    assert_eq!(e.downcast_ref::<ApiError>().unwrap().code, 404);
    k.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    fake.add_run_pod(NS, "runner-a", Some("runs-old-1"), "small-1x");
    fake.add_run_pod(NS, "runner-b", Some("runs-old-1"), "small-1x");
    assert!(k.delete(Kind::Pod, Some(NS), "runner-a").unwrap());
    assert!(
        !k.delete(Kind::Pod, Some(NS), "runner-a").unwrap(),
        "already gone"
    );
    assert_eq!(fake.names("pods", NS), ["runner-b"]);
}

#[test]
fn status_errors_are_typed_and_a_429_is_retried_after_its_wait() {
    let fake = FakeKube::start(TOKEN);
    let k = kube(&fake);
    assert!(
        k.deployment(NS, "supervisor").unwrap().is_none(),
        "404 is None"
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    // An object in a namespace that does not exist: 404 from apply.
    let r = record(LOG_TOKEN);
    let sa = manifests::service_account(&spec(&r, "v4.5.12"));
    let e = k.apply(&sa).unwrap_err();
    assert!(
        e.to_string()
            .contains("404 NotFound: namespaces \"trigger\" not found"),
        "{e:#}"
    );
    k.apply(&ns).unwrap();
    // 422: the API server's validation.
    let mut bad = manifests::secret(&spec(&r, "v4.5.12"));
    bad["data"]["TRIGGER_WORKER_TOKEN"] = json!("not base64!");
    let e = k.apply(&bad).unwrap_err();
    let api = e.downcast_ref::<ApiError>().unwrap();
    assert_eq!((api.code, api.reason.as_str()), (422, "Invalid"), "{e:#}");
    // 409 injected: a conflict is reported, not retried.
    fake.fail(
        "PATCH",
        "/api/v1/namespaces/trigger/serviceaccounts",
        409,
        1,
    );
    fake.clear();
    let e = k.apply(&sa).unwrap_err();
    assert_eq!(e.downcast_ref::<ApiError>().unwrap().code, 409);
    assert_eq!(fake.calls().len(), 1);
    // 429 with Retry-After: 1: waited for, then the apply goes through.
    fake.fail(
        "PATCH",
        "/api/v1/namespaces/trigger/serviceaccounts",
        429,
        1,
    );
    fake.clear();
    let started = Instant::now();
    k.apply(&sa).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.calls().len(), 2);
    assert!(fake
        .calls()
        .iter()
        .all(|c| c.content_type == "application/apply-patch+yaml"
            && c.query == "fieldManager=ops&force=true"));
}
