//! The world of `platform: kubernetes` stories: a supervisor fleet's world (fake Railway and
//! webapp, extract run, fake DigitalOcean, the webapp's real worker tables) and the fake
//! Kubernetes API server, whose toy Deployment controller heartbeats into that database when
//! the supervisor's Secret holds what the webapp accepts.

use std::sync::Arc;
use std::time::Duration;

use crate::extract::{LOG_TOKEN, REGISTRY_PASSWORD, SECRET};
use crate::supervisor::{fleet, Fleet};
use crate::support::digitalocean::DO_TOKEN;
use crate::support::doks::DoksWorld;
use crate::support::kubernetes::{pki, Accepts, FakeKube};

/// The namespace of the supervisor's objects (ops' default).
pub const NS: &str = "trigger";

pub struct KubeWorld {
    pub f: Fleet,
    pub kube: FakeKube,
}

impl KubeWorld {
    /// The fleet's world and a fake API server that accepts `token`; no jobs written yet.
    pub fn start(token: &str) -> KubeWorld {
        let mut f = fleet("boot_grace: 10m");
        let kube = FakeKube::start(token);
        kube.accepts(Accepts {
            webapp: f.webapp.clone(),
            managed_secret: SECRET.into(),
        });
        f.s.ops.env("TRIGGER_VERSION", "v4.5.11");
        KubeWorld { f, kube }
    }

    /// The supervisor task on the fake API server through a kubeconfig whose user has `token`.
    pub fn on_kubeconfig(token: &str, options: &str) -> KubeWorld {
        let w = KubeWorld::start(token);
        let path = w
            .kube
            .kubeconfig(w.f.s.ops.dir.path(), &format!("    token: {token}\n"));
        w.jobs(&format!("kubeconfig: '{}', {options}", path.display()));
        w
    }

    /// The supervisor task on DigitalOcean Kubernetes (no kubeconfig), nothing in DigitalOcean
    /// yet: the credentials DigitalOcean issues name the fake API server and its CA, which
    /// takes the tokens DigitalOcean issued while they live (and no other).
    pub fn on_doks(options: &str) -> KubeWorld {
        let w = KubeWorld::start("kube-token-nobody-has-01");
        let ca = String::from_utf8(pki().ca_pem.clone()).unwrap();
        let url = w.kube.url.clone();
        w.f.api.with(|d| {
            d.doks.server = Some(url);
            d.doks.ca_pem = ca;
        });
        let issuer = Arc::clone(&w.f.api.world);
        w.kube.with(|k| {
            k.issuer = Some(Arc::new(move |t: &str| {
                issuer.lock().unwrap().doks.issued_valid(t)
            }))
        });
        w.jobs(options);
        w
    }

    /// Runs until the supervisor is up: a run applies its objects, its pod heartbeats.
    pub fn up(&self) {
        self.f
            .health()
            .expect_code(0)
            .expect_stdout("applied Deployment trigger/supervisor");
        self.wait_heartbeating();
    }

    pub fn doks<R>(&self, f: impl FnOnce(&mut DoksWorld) -> R) -> R {
        self.f.api.with(|w| f(&mut w.doks))
    }

    /// The cluster ops created (named after the deployment tag).
    pub fn cluster_name(&self) -> String {
        self.doks(|d| d.creates[0]["name"].as_str().unwrap().to_string())
    }

    /// The names of a DOKS node pool's provisioned nodes.
    pub fn node_names(&self, pool: &str) -> Vec<String> {
        let name = self.cluster_name();
        self.doks(|d| d.cluster(&name).unwrap().pool(pool).unwrap().node_names())
    }

    /// The supervisor task's state as the binary keeps it.
    pub fn kept(&self) -> Vec<(String, String)> {
        let db = self.f.s.ops.sqlite();
        let mut q = db
            .prepare("SELECT key, value FROM kv WHERE namespace = 'supervisor' ORDER BY key")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// No secret in `out`: the world's, the DigitalOcean token and every token DigitalOcean
    /// issued for a cluster's API.
    #[track_caller]
    pub fn clean(&self, out: &str) {
        let issued: Vec<String> = self.doks(|d| d.issued.iter().map(|i| i.token.clone()).collect());
        let mut secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
        secrets.push(DO_TOKEN);
        no_secret(out, &secrets);
    }

    /// The supervisor task of the `health` profile gets these options.
    pub fn jobs(&self, options: &str) {
        self.f.jobs(&format!("platform: kubernetes, {options}"));
    }

    pub fn version(&mut self, v: &str) {
        self.f.s.ops.env("TRIGGER_VERSION", v);
    }

    /// Every supervisor pod runs and heartbeat within the last 5 seconds.
    pub fn heartbeating(&self) -> bool {
        let mut c = self.f.db();
        let pods = self.kube.supervisor_pods(NS);
        pods.iter().all(|p| {
            let name = p["metadata"]["name"].as_str().unwrap();
            c.query_opt(
                r#"SELECT 1 FROM "WorkerInstance" WHERE name = $1 AND "lastHeartbeatAt" > timezone('UTC', now()) - interval '5 seconds'"#,
                &[&name],
            )
            .unwrap()
            .is_some()
        }) && !pods.is_empty()
            && pods.iter().all(|p| p["status"]["phase"] == "Running")
    }

    #[track_caller]
    pub fn wait_heartbeating(&self) {
        assert!(
            self.kube
                .wait_for(Duration::from_secs(20), |_| self.heartbeating()),
            "the supervisor pod never heartbeat"
        );
    }

    /// A healthy run, its figures as the run prints them and as the fakes saw them: `do`
    /// DigitalOcean requests, two Kubernetes API reads, one Postgres session.
    #[track_caller]
    pub fn healthy_run(&self, r#do: usize) -> crate::support::Run {
        let before = self.do_requests();
        self.kube.clear();
        let run = self.f.health();
        run.expect_code(0)
            .expect_stdout("1/1 supervisor pods heartbeating")
            .expect_stdout(&format!(
                "DigitalOcean requests: {do}, Kubernetes API requests: 2, Postgres sessions: 1",
                do = r#do
            ));
        assert_eq!(self.do_requests() - before, r#do, "DigitalOcean requests");
        let calls = self.kube.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls.iter().all(|c| c.method == "GET"));
        run
    }

    /// Requests the fake DigitalOcean has answered so far.
    pub fn do_requests(&self) -> usize {
        self.f.api.server.requests().len()
    }
}

/// No secret of the world (nor `more`) in `out`.
#[track_caller]
pub fn no_secret(out: &str, more: &[&str]) {
    for s in [LOG_TOKEN, SECRET, REGISTRY_PASSWORD].iter().chain(more) {
        assert!(!out.contains(s), "a secret in the output:\n{out}");
    }
}
