//! Moving a deployment from droplets to Kubernetes (issue 36): the real binary, the fake
//! DigitalOcean with ops' droplet heartbeating, the fake Kubernetes API (its toy controller's
//! supervisor pod heartbeats into the same worker group once the webapp accepts it), and the
//! webapp's real worker tables. No droplet is drained or deleted before the Deployment
//! heartbeats; then each drains through the droplet path's own drain.

use std::time::Duration;

use crate::extract::SECRET;
use crate::supervisor::{fleet, Fleet};
use crate::support::digitalocean::{DoFault, Supervisor};
use crate::support::kubernetes::{Accepts, FakeKube};
use crate::support::platform::KubeWorld;
use crate::support::webapp;

const TOKEN: &str = "kube-token-migration-01";
const NS: &str = "trigger";
const TAG: &str = "trigger-supervisor-envabcde";
const STAY: &str =
    "stay (no drain, no delete) until a supervisor pod of ops' Deployment heartbeats";

struct Moving {
    f: Fleet,
    kube: FakeKube,
    /// Ops' droplet, serving until it leaves, and its supervisor.
    droplet: (u64, String),
    _sup: Supervisor,
}

impl Moving {
    /// One healthy droplet with a run executing on it; then the task says `platform:
    /// kubernetes`. The webapp does not accept the supervisor pods yet (they crash-loop).
    fn start() -> Moving {
        let f = fleet("boot_grace: 10m");
        let (id, sup) = f.one_healthy();
        let name = f
            .api
            .with(|w| w.droplets.iter().find(|d| d.id == id).unwrap().name.clone());
        webapp::executing_run(&mut f.db(), "long1", &name, "small-1x");
        // The droplet's drain service holds its shutdown while a run executes.
        f.api.with(|w| w.hold_shutdown = true);
        let kube = FakeKube::start(TOKEN);
        let path = kube.kubeconfig(f.s.ops.dir.path(), &format!("    token: {TOKEN}\n"));
        f.jobs(&format!(
            "platform: kubernetes, kubeconfig: '{}', pending_after: 10m",
            path.display()
        ));
        Moving {
            f,
            kube,
            droplet: (id, name),
            _sup: sup,
        }
    }

    /// The webapp accepts the supervisor's token and secret now; the crash-looping pod
    /// restarts and heartbeats.
    fn accept(&self) {
        self.kube.accepts(Accepts {
            webapp: self.f.webapp.clone(),
            managed_secret: SECRET.into(),
        });
        self.kube.restart_supervisor_pods(NS);
        assert!(
            self.kube
                .wait_for(Duration::from_secs(20), |_| self.heartbeating()),
            "the supervisor pod never heartbeat"
        );
    }

    fn heartbeating(&self) -> bool {
        heartbeating(&self.f, &self.kube)
    }

    /// The Deployment applied, its pod up but not heartbeating: the droplet stayed untouched.
    fn applied_not_beating(&self) {
        let before = self.f.api.mutations();
        let run = self.f.health();
        run.expect_stdout("applied Deployment trigger/supervisor")
            .expect_stdout(STAY);
        assert!(self.kube.wait_for(Duration::from_secs(20), |k| {
            k.supervisor_pods(NS)
                .iter()
                .any(|p| p["status"]["phase"] == "Running")
        }));
        self.f.health().expect_stdout(STAY);
        assert_eq!(self.f.api.mutations(), before, "a DigitalOcean change");
        assert!(self.f.deletes().is_empty());
        assert!(!self.tags().iter().any(|t| t == "ops-draining"));
    }

    /// Moved as far as the supervisor pod's first heartbeats, nothing done to the droplet yet.
    fn beating() -> Moving {
        let m = Moving::start();
        m.applied_not_beating();
        m.accept();
        m
    }

    fn tags(&self) -> Vec<String> {
        self.f.api.with(|w| {
            w.droplets
                .iter()
                .find(|d| d.id == self.droplet.0)
                .map(|d| d.tags.clone())
                .unwrap_or_default()
        })
    }
}

#[test]
fn droplets_stay_until_the_deployment_heartbeats_then_drain_away() {
    let m = Moving::beating();
    let (id, name) = m.droplet.clone();
    // The pod heartbeats: the droplet drains through today's drain, not deleted with its run.
    m.f.health()
        .expect_code(0)
        .expect_stdout(&format!(
            "draining droplet {name} (id {id}): moved to Kubernetes: supervisor pod supervisor-"
        ))
        .expect_stdout("1 run(s) execute on it: run_long1")
        .expect_stdout("told it to stop taking runs");
    assert!(m.f.deletes().is_empty(), "deleted with a run on it");
    assert!(m.tags().iter().any(|t| t == "ops-draining"));
    assert_eq!(
        m.f.api.with(|w| w.actions.clone()),
        [(id, "shutdown".to_string())]
    );
    m.f.health()
        .expect_code(0)
        .expect_stdout("1 run(s) still executing (run_long1)");
    assert!(m.f.deletes().is_empty());
    // Its run ends; its drain service lets the shutdown finish.
    webapp::finish_run(&mut m.f.db(), "long1");
    m.f.api.with(|w| {
        w.droplets.iter_mut().find(|d| d.id == id).unwrap().off = true;
    });
    m.f.health()
        .expect_code(0)
        .expect_stdout(&format!(
            "deleted droplet {name} (id {id}): drained (moved to Kubernetes"
        ))
        .expect_stdout("moving off droplets: 0 droplet(s) of ops left");
    assert_eq!(m.f.deletes(), [id]);
    let status = m.f.run(&["status", "--json"]).json();
    assert_eq!(
        status["supervisor"]["droplets"],
        serde_json::Value::Null,
        "{status}"
    );
    assert_eq!(status["supervisor"]["kubernetes"]["health"], "healthy");
    let kinds = event_kinds(&m.f);
    let at = |k: &str| kinds.iter().position(|e| e == k).unwrap_or(usize::MAX);
    assert!(
        at("kubernetes.applied") < at("droplet.draining")
            && at("droplet.draining") < at("droplet.deleted")
            && at("droplet.deleted") < usize::MAX,
        "{kinds:?}"
    );
    // Moved: a run asks DigitalOcean nothing more.
    let before = m.f.api.server.requests().len();
    let run = m.f.health();
    run.expect_code(0)
        .expect_stdout("1/1 supervisor pods heartbeating");
    assert!(
        !run.stdout.contains("moving off droplets"),
        "{}",
        run.stdout
    );
    assert_eq!(
        m.f.api.server.requests().len(),
        before,
        "a DigitalOcean request"
    );
}

#[test]
fn a_dry_run_of_the_move_says_what_it_would_drain_and_changes_nothing() {
    let m = Moving::beating();
    let (id, name) = m.droplet.clone();
    let (do_before, state) = (m.f.api.mutations(), state_of(&m.f));
    m.kube.clear();
    let run = m.f.run(&["run", "health", "--dry-run"]);
    run.expect_code(0).expect_stdout(&format!(
        "would drain droplet {name} (id {id}) before deleting it: moved to Kubernetes"
    ));
    assert_eq!(m.f.api.mutations(), do_before, "a DigitalOcean change");
    assert_eq!(m.kube.mutations(), 0, "{:?}", m.kube.calls());
    assert_eq!(state_of(&m.f), state, "the state changed");
    assert!(!m.tags().iter().any(|t| t == "ops-draining"));
    // The real run then does it.
    m.f.health()
        .expect_code(0)
        .expect_stdout(&format!("draining droplet {name}"));
}

#[test]
fn a_droplet_ops_did_not_create_stays_through_the_move() {
    let m = Moving::beating();
    let (id, _) = m.droplet.clone();
    let planted = m.f.api.insert(
        &format!("{TAG}-260101000000"),
        &[TAG, "ops-managed", "ops-drain:shutdown"],
        Duration::from_secs(86_400),
    );
    webapp::finish_run(&mut m.f.db(), "long1");
    m.f.health()
        .expect_code(0)
        .expect_stdout("moving off droplets: 1 droplet(s) of ops left");
    m.f.api.with(|w| {
        w.droplets.iter_mut().find(|d| d.id == id).unwrap().off = true;
    });
    m.f.health().expect_code(0);
    assert_eq!(m.f.deletes(), [id]);
    let (tags, actions) = m.f.api.with(|w| {
        (
            w.droplets
                .iter()
                .find(|d| d.id == planted.id)
                .map(|d| d.tags.clone()),
            w.actions.iter().filter(|(on, _)| *on == planted.id).count(),
        )
    });
    assert_eq!(
        tags.as_deref(),
        Some(
            &[
                TAG.to_string(),
                "ops-managed".into(),
                "ops-drain:shutdown".into()
            ][..]
        )
    );
    assert_eq!(actions, 0);
}

/// Every kept value of the supervisor task, for "the state did not change".
fn state_of(f: &Fleet) -> Vec<(String, String)> {
    let db = f.s.ops.sqlite();
    let mut q = db
        .prepare("SELECT key, value FROM kv WHERE namespace = 'supervisor' AND key NOT IN ('kubernetes', 'queue', 'queue_scan') ORDER BY key")
        .unwrap();
    let rows = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<(String, String)>, _>>()
        .unwrap();
    rows
}

/// Every supervisor pod runs and heartbeats into the webapp.
fn heartbeating(f: &Fleet, kube: &FakeKube) -> bool {
    let mut c = f.db();
    let pods = kube.supervisor_pods(NS);
    !pods.is_empty()
        && pods.iter().all(|p| {
            let name = p["metadata"]["name"].as_str().unwrap();
            p["status"]["phase"] == "Running"
                && c.query_opt(
                    r#"SELECT 1 FROM "WorkerInstance" WHERE name = $1 AND "lastHeartbeatAt" > timezone('UTC', now()) - interval '5 seconds'"#,
                    &[&name],
                )
                .unwrap()
                .is_some()
        })
}

fn deletes(kube: &FakeKube) -> Vec<String> {
    kube.calls()
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path.clone())
        .collect()
}

#[test]
fn a_digitalocean_error_while_moving_fails_the_run_naming_it_and_keeps_the_kubernetes_report() {
    let m = Moving::beating();
    m.f.api.with(|w| w.faults.push_back(DoFault::Status(403)));
    let run = m.f.health();
    run.expect_code(1)
        .expect_stdout("moving off droplets: ")
        .expect_stdout("HTTP 403")
        .expect_stdout("1/1 supervisor pods heartbeating");
    assert!(m.f.deletes().is_empty());
    assert!(!m.tags().iter().any(|t| t == "ops-draining"));
}

/// The supervisor up on Kubernetes through a kubeconfig (its path), a run pod executing on a
/// runs node.
fn on_kubernetes_with_a_long_run() -> (KubeWorld, std::path::PathBuf) {
    let c = KubeWorld::on_kubeconfig(TOKEN, "pending_after: 10m");
    c.up();
    let path = c.f.s.ops.dir.path().join("kubeconfig");
    c.kube
        .add_node("runs-1", &[("nodetype", "v4-worker")], "3900m", "7Gi");
    c.kube
        .add_run_pod(NS, "runner-run_long", Some("runs-1"), "medium-1x");
    (c, path)
}

#[test]
fn switching_back_stops_kubernetes_once_a_droplet_heartbeats_and_removes_it_after_its_runs() {
    let (c, path) = on_kubernetes_with_a_long_run();
    let (f, kube) = (&c.f, &c.kube);
    // Back to droplets, the kubeconfig kept: the droplet comes up first.
    f.jobs(&format!(
        "kubeconfig: '{}', boot_grace: 10m",
        path.display()
    ));
    kube.clear();
    f.health()
        .expect_code(0)
        .expect_stdout("created droplet")
        .expect_stdout("keeps taking runs until a droplet heartbeats");
    assert_eq!(kube.calls().len(), 0, "{:?}", kube.calls());
    let id = f.ids()[0];
    let _sup = f.serve(id, true);
    kube.clear();
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would stop the supervisor on Kubernetes taking runs (a droplet heartbeats): apply Deployment trigger/supervisor with TRIGGER_DEQUEUE_ENABLED=false");
    assert_eq!(kube.mutations(), 0, "{:?}", kube.calls());
    f.health()
        .expect_code(0)
        .expect_stdout("stopped the supervisor on Kubernetes taking runs (Deployment trigger/supervisor: TRIGGER_DEQUEUE_ENABLED=false");
    let env = kube.object("deployments", NS, "supervisor").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"]
        .clone();
    assert!(
        env.as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "TRIGGER_DEQUEUE_ENABLED", "value": "false"})),
        "{env}"
    );
    // Its run pod still executes: nothing is deleted.
    f.health()
        .expect_code(0)
        .expect_stdout("1 run pod(s) still execute (runner-run_long)");
    assert_eq!(deletes(kube), Vec::<String>::new());
    assert!(kube.object("pods", NS, "runner-run_long").is_some());
    kube.end_pod(NS, "runner-run_long");
    kube.clear();
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would delete Deployment trigger/supervisor: no run pod is left")
        .expect_stdout("would delete ServiceAccount trigger/supervisor");
    assert_eq!(kube.mutations(), 0, "{:?}", kube.calls());
    f.health()
        .expect_code(0)
        .expect_stdout("deleted Deployment trigger/supervisor: no run pod is left")
        .expect_stdout("namespace trigger is left as it is");
    assert_eq!(kube.names("deployments", NS), Vec::<String>::new());
    assert_eq!(kube.names("secrets", NS), Vec::<String>::new());
    assert!(
        kube.object("namespaces", "", NS).is_some(),
        "the namespace went"
    );
    let kinds = event_kinds(f);
    assert!(kinds.iter().any(|k| k == "kubernetes.stopped"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "kubernetes.deleted"), "{kinds:?}");
    // Moved back: no Kubernetes request any more.
    kube.clear();
    f.health().expect_code(0);
    assert_eq!(kube.calls().len(), 0, "{:?}", kube.calls());
}

/// A move off Kubernetes called off halfway (the supervisor stopped taking runs, its run pod
/// still executing, then `platform: kubernetes` again) leaves no clock behind: before, the
/// stop's time stayed in the state, and a move begun weeks later removed a supervisor that was
/// taking runs at its first run, the drain long "over".
#[test]
fn a_move_off_kubernetes_called_off_halfway_leaves_no_stop_behind_for_the_next_move() {
    let (c, path) = on_kubernetes_with_a_long_run();
    let (f, kube) = (&c.f, &c.kube);
    f.jobs(&format!(
        "kubeconfig: '{}', boot_grace: 10m",
        path.display()
    ));
    f.health().expect_code(0).expect_stdout("created droplet");
    let _sup = f.serve(f.ids()[0], true);
    f.health()
        .expect_code(0)
        .expect_stdout("stopped the supervisor on Kubernetes taking runs");
    let leaving = |c: &KubeWorld| c.kept().iter().any(|(k, _)| k == "kubernetes_leaving");
    assert!(leaving(&c), "the stop is kept: {:?}", c.kept());
    // Called off: Kubernetes again, with the same cluster.
    c.jobs(&format!(
        "kubeconfig: '{}', pending_after: 10m",
        path.display()
    ));
    c.f.run(&["run", "health", "--dry-run"]).expect_code(0);
    assert!(leaving(&c), "a dry run keeps the state as it is");
    c.f.health().expect_code(0).expect_stdout(
        "the earlier move off Kubernetes is called off: the supervisor takes runs again",
    );
    assert!(!leaving(&c), "{:?}", c.kept());
    let env = kube.object("deployments", NS, "supervisor").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["env"]
        .clone();
    assert!(
        !env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "TRIGGER_DEQUEUE_ENABLED" && e["value"] == "false"),
        "applied again with the dequeue on: {env}"
    );
}

/// Back to droplets with a `kubeconfig:` that now names another cluster: ops' objects are not
/// there, so ops stops and removes nothing anywhere, and says where they are.
#[test]
fn switching_back_with_a_kubeconfig_of_another_cluster_touches_neither() {
    let c = KubeWorld::on_kubeconfig(TOKEN, "pending_after: 10m");
    c.up();
    let (f, kube) = (&c.f, &c.kube);
    let elsewhere = FakeKube::start(TOKEN);
    let dir = f.s.ops.dir.path().join("elsewhere");
    std::fs::create_dir(&dir).unwrap();
    let path = elsewhere.kubeconfig(&dir, &format!("    token: {TOKEN}\n"));
    f.jobs(&format!(
        "kubeconfig: '{}', boot_grace: 10m",
        path.display()
    ));
    f.health().expect_code(0).expect_stdout("created droplet");
    let _sup = f.serve(f.ids()[0], true);
    kube.clear();
    f.health()
        .expect_code(0)
        .expect_stdout("ops' supervisor objects are still applied in namespace trigger at")
        .expect_stdout("naming that cluster");
    assert_eq!(kube.calls().len(), 0, "{:?}", kube.calls());
    assert_eq!(elsewhere.mutations(), 0, "{:?}", elsewhere.calls());
    assert!(kube.object("deployments", NS, "supervisor").is_some());
}

fn event_kinds(f: &Fleet) -> Vec<String> {
    let events = f.run(&["events", "--json"]).json();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect()
}

/// Back to droplets from DigitalOcean Kubernetes (no kubeconfig: the cluster ops recorded): the
/// credentials ops keeps sealed reach the cluster to stop the supervisor and remove its objects.
#[test]
fn switching_back_from_digitalocean_kubernetes_reaches_the_cluster_with_its_kept_credentials() {
    let c = KubeWorld::on_doks("");
    // The cluster comes up in the first run (provisioning takes no time here), then the objects.
    c.f.health().expect_code(0);
    c.up();
    let (f, kube) = (&c.f, &c.kube);
    f.jobs("boot_grace: 10m");
    f.health()
        .expect_code(0)
        .expect_stdout("created droplet")
        .expect_stdout("keeps taking runs until a droplet heartbeats");
    let id = f.ids()[0];
    let _sup = f.serve(id, true);
    let before = c.doks(|d| d.issued.len());
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("stopped the supervisor on Kubernetes taking runs");
    assert!(
        !run.all().contains("keep kubeconfig:"),
        "the DOKS cluster was not reached: {}",
        run.all()
    );
    assert_eq!(
        c.doks(|d| d.issued.len()),
        before,
        "the kept credentials serve"
    );
    f.health()
        .expect_code(0)
        .expect_stdout("deleted Deployment trigger/supervisor: no run pod is left");
    assert_eq!(kube.names("deployments", NS), Vec::<String>::new());
    c.clean(&f.run(&["status"]).all());
    // The cluster and its pools stay: ops never deletes a cluster.
    assert_eq!(c.doks(|d| (d.clusters.len(), d.pool_deletes.len())), (1, 0));
}
