//! Operator stories of `platform: kubernetes` on a cluster ops does not manage (`kubeconfig:`),
//! through the real binary: the fake Kubernetes API server, the webapp's real worker tables,
//! extract against the fake Railway first.

use std::time::Duration;

use crate::support::platform::{KubeWorld, NS};

const TOKEN: &str = "kube-token-platform-01";

fn cluster(options: &str) -> KubeWorld {
    KubeWorld::on_kubeconfig(TOKEN, options)
}

fn no_secret(out: &str) {
    crate::support::platform::no_secret(out, &[TOKEN]);
}

#[test]
fn a_new_cluster_gets_the_supervisor_and_a_healthy_run_makes_two_api_requests_and_one_session() {
    let c = cluster("pending_after: 10m");
    let before = c.do_requests();
    c.up();
    let objects = c.kube.names("deployments", NS);
    assert_eq!(objects, ["supervisor"]);
    assert_eq!(
        c.kube.names("secrets", NS),
        ["supervisor", "supervisor-registry"]
    );
    let run = c.healthy_run(0);
    assert_eq!(c.do_requests(), before, "no DigitalOcean request");
    no_secret(&run.all());
    no_secret(&c.f.run(&["events"]).all());

    let status = c.f.run(&["status", "--json"]);
    let k = &status.expect_code(0).json()["supervisor"]["kubernetes"];
    assert_eq!(k["health"], "healthy", "{k}");
    assert_eq!(k["namespace"], NS);
    assert_eq!(k["version"], "v4.5.11");
    assert!(
        k["supervisors"][0]["heartbeat_age_secs"].as_f64().unwrap() < 5.0,
        "{k}"
    );
    assert_eq!(k["pending"], serde_json::json!([]));
    c.f.run(&["status"])
        .expect_code(0)
        .expect_stdout("kubernetes trigger: healthy, supervisor v4.5.11; supervisor-");
    let (_served, addr) = crate::operator::Served::start(&c.f.s.ops);
    let (code, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ops_supervisor_kubernetes_healthy{namespace=\"trigger\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ops_supervisor_kubernetes_run_pods_pending 0"),
        "{metrics}"
    );
    assert!(metrics
        .contains("ops_supervisor_kubernetes_pod_heartbeat_timestamp_seconds{pod=\"supervisor-"));
    no_secret(&status.all());
    no_secret(&metrics);
}

#[test]
fn a_version_change_rolls_the_new_image_deletes_nothing_and_touches_no_run_pod() {
    let mut c = cluster("pending_after: 10m");
    c.up();
    c.kube
        .add_node("runs-1", &[("nodetype", "v4-worker")], "3900m", "7Gi");
    c.kube
        .add_run_pod(NS, "runner-run_long", Some("runs-1"), "medium-1x");
    let run_pod = c.kube.object("pods", NS, "runner-run_long").unwrap();
    let old = c.kube.supervisor_pods(NS)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.version("v4.5.12");
    c.kube.clear();
    let run = c.f.health();
    run.expect_code(0)
        .expect_stdout("applied Deployment trigger/supervisor");
    assert!(
        c.kube.calls().iter().all(|call| call.method != "DELETE"),
        "ops deleted something"
    );
    assert!(c.kube.wait_for(Duration::from_secs(20), |k| {
        let pods = k.supervisor_pods(NS);
        pods.len() == 1 && pods[0]["metadata"]["name"] != old.as_str()
    }));
    assert_eq!(
        c.kube.supervisor_pods(NS)[0]["spec"]["containers"][0]["image"],
        "ghcr.io/triggerdotdev/supervisor:v4.5.12"
    );
    assert!(c
        .kube
        .wait_for(Duration::from_secs(20), |_| c.heartbeating()));
    assert_eq!(
        c.kube.object("pods", NS, "runner-run_long").unwrap(),
        run_pod
    );
    c.f.health()
        .expect_code(0)
        .expect_stdout("1/1 supervisor pods heartbeating");
}

#[test]
fn a_dry_run_shows_the_field_diff_and_changes_nothing() {
    let mut c = cluster("pending_after: 10m");
    c.up();
    c.version("v4.5.12");
    c.kube.clear();
    let run = c.f.run(&["run", "health", "--dry-run"]);
    run.expect_code(0).expect_stdout(
        "would apply Deployment trigger/supervisor: spec.template.spec.containers[supervisor].image: ghcr.io/triggerdotdev/supervisor:v4.5.11 -> ghcr.io/triggerdotdev/supervisor:v4.5.12",
    );
    assert_eq!(c.kube.mutations(), 0, "{:?}", c.kube.calls());
    no_secret(&run.all());
    let live = c.kube.object("deployments", NS, "supervisor").unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/triggerdotdev/supervisor:v4.5.11"
    );
}

#[test]
fn a_large_preset_waiting_for_a_node_fails_the_task_naming_it_and_the_fix() {
    let c = cluster("pending_after: 1s");
    c.up();
    c.kube.add_run_pod(NS, "runner-run_big", None, "large-2x");
    std::thread::sleep(Duration::from_millis(2100));
    let run = c.f.health();
    run.expect_code(1)
        .expect_stdout("run pod runner-run_big (large-2x) waits 0 min for a node: 0/2 nodes are available: 2 Insufficient memory.")
        .expect_stdout("raise the task's max");
    assert_eq!(
        c.kube.object("pods", NS, "runner-run_big").unwrap()["status"]["phase"],
        "Pending"
    );
}

#[test]
fn an_expired_token_fails_with_the_fix_and_an_exec_plugin_is_refused_in_one_line() {
    let c = cluster("pending_after: 10m");
    c.kube.with(|w| w.tokens.clear());
    let run = c.f.health();
    run.expect_code(1)
        .expect_stdout("answered HTTP 401 Unauthorized")
        .expect_stdout("renew the user's token");
    no_secret(&run.all());
    let path = c.kube.kubeconfig(
        c.f.s.ops.dir.path(),
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: doctl\n",
    );
    let run = c.f.health();
    run.expect_code(2).expect_stderr(&format!(
        "kubeconfig {}: user \"ops\" gets its credential from an exec plugin",
        path.display()
    ));
}

/// The webapp's database is not ours: on Kubernetes too, a healthy cycle reads `"TaskRun"`
/// through its indexes at 1,000,000 runs (the same one session as on droplets).
#[test]
fn with_a_million_runs_a_healthy_kubernetes_cycle_adds_no_sequential_scan_of_taskrun() {
    let c = cluster("pending_after: 10m, min: 1, max: 3");
    let mut db = c.f.db();
    crate::support::webapp::history(&mut db, 1_000_000, 30);
    crate::support::webapp::pending_run(&mut db, "waiting", Duration::from_secs(30));
    let table_blocks: i64 = db
        .query_one(
            r#"SELECT relpages::bigint FROM pg_class WHERE relname = 'TaskRun'"#,
            &[],
        )
        .unwrap()
        .get(0);
    // The first cycle applies the objects and reads the window.
    c.up();
    c.f.health().expect_code(0);
    let first = crate::runs_flow::scans(&mut db);
    for _ in 0..2 {
        c.healthy_run(0);
    }
    let per_cycle = crate::runs_flow::two_cycles_read_little(&mut db, first, table_blocks);
    eprintln!("TaskRun: {table_blocks} blocks; healthy Kubernetes cycle {per_cycle}");
}

/// Someone deleted the supervisor's Secret: its next pod cannot start. Once the supervisor
/// fails (past `boot_grace`), ops reads the objects beside the Deployment and applies the
/// missing one again (an event); a dry run only says it would. Before, only a Deployment
/// without this run's fingerprint was applied, and the pod waited for its Secret for good.
#[test]
fn a_deleted_secret_is_applied_again_once_the_supervisor_fails() {
    let c = cluster("pending_after: 10m, boot_grace: 1s");
    c.up();
    assert!(c.kube.remove("secrets", NS, "supervisor"));
    c.kube.restart_supervisor_pods(NS);
    std::thread::sleep(Duration::from_millis(1500));
    c.kube.clear();
    c.f.run(&["run", "health", "--dry-run"])
        .expect_stdout("would apply Secret trigger/supervisor again (it is missing)");
    assert_eq!(c.kube.mutations(), 0, "{:?}", c.kube.calls());
    assert!(c.kube.object("secrets", NS, "supervisor").is_none());
    // A kubeconfig that may not read one of them: said, passed over, the rest restored.
    c.kube.fail(
        "GET",
        "/api/v1/namespaces/trigger/serviceaccounts/supervisor",
        403,
        1,
    );
    let run = c.f.health();
    run.expect_stdout(
        "applied Secret trigger/supervisor again: it was missing while the supervisor fails",
    );
    assert!(
        run.all()
            .contains("cannot read ServiceAccount trigger/supervisor to see whether it is missing"),
        "{}",
        run.all()
    );
    assert!(c.kube.object("secrets", NS, "supervisor").is_some());
    let events = c.f.run(&["events", "--json"]).json();
    assert!(
        events
            .to_string()
            .contains("applied Secret trigger/supervisor again"),
        "{events}"
    );
    c.kube.restart_supervisor_pods(NS);
    c.wait_heartbeating();
    let healthy = c.f.health();
    healthy.expect_code(0);
    assert!(!healthy.stdout.contains("again"), "{}", healthy.stdout);
}
