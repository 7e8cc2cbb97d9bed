//! The supervisor task against a fake DigitalOcean and fake supervisors on loopback.

use std::time::Duration;

use serde_json::Value;

use crate::extract::{scenario, Scenario, LOG_TOKEN, SECRET};
use crate::support::digitalocean::{free_port, DoFault, FakeDo, Supervisor, DO_TOKEN};
use crate::support::pg;
use crate::support::railway::ENVIRONMENT;
use crate::support::webapp::{self, Webapp};

const TAG: &str = "trigger-supervisor-envabcde";

pub struct Fleet {
    pub s: Scenario,
    pub api: FakeDo,
    pub port: u16,
    /// The webapp's database, with Trigger.dev's worker tables and a group for the log token.
    pub webapp: Webapp,
}

impl Fleet {
    pub fn run(&self, args: &[&str]) -> crate::support::Run {
        self.s.ops.run(args)
    }

    pub fn health(&self) -> crate::support::Run {
        self.run(&["run", "health"])
    }

    pub fn creates(&self) -> Vec<Value> {
        self.api.with(|w| w.creates.clone())
    }

    pub fn deletes(&self) -> Vec<u64> {
        self.api.with(|w| w.deletes.iter().map(|d| d.0).collect())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.api.with(|w| w.droplets.iter().map(|d| d.id).collect())
    }

    pub fn ip_of(&self, id: u64) -> String {
        self.api
            .with(|w| w.droplets.iter().find(|d| d.id == id).unwrap().ip.clone())
    }

    /// A supervisor on droplet `id`: `/health` on its IP, and heartbeats to the webapp's
    /// database while healthy.
    pub fn serve(&self, id: u64, healthy: bool) -> Supervisor {
        let name = self
            .api
            .with(|w| w.droplets.iter().find(|d| d.id == id).unwrap().name.clone());
        Supervisor::serve(&self.ip_of(id), self.port, healthy).beating(&self.webapp, &name)
    }

    /// The first run creates one droplet; its supervisor serves and the next run sees it
    /// healthy. Returns the droplet and its supervisor.
    pub fn one_healthy(&self) -> (u64, Supervisor) {
        self.health().expect_code(0);
        let id = self.ids()[0];
        let sup = self.serve(id, true);
        self.health()
            .expect_code(0)
            .expect_stdout("healthy (last heartbeat");
        (id, sup)
    }

    pub fn db(&self) -> postgres::Client {
        postgres::Client::connect(&self.webapp.url, postgres::NoTls).unwrap()
    }

    /// Deletes ops' record of the droplets it created, as a state written by a version before
    /// the record (the next run adopts the droplets named as ops names them).
    pub fn forget_created(&self) {
        self.s
            .ops
            .sqlite()
            .execute(
                "DELETE FROM kv WHERE namespace = 'supervisor' AND key = 'created'",
                [],
            )
            .unwrap();
    }

    pub fn jobs(&self, options: &str) {
        self.s.ops.jobs(&format!(
            "version: 1\nprofiles:\n  extract:\n    cron: '*/15 * * * *'\n    tasks: [extract]\n  health:\n    cron: '* * * * *'\n    timeout: 1m\n    tasks:\n      - {{kind: supervisor, health_port: {}, {options}}}\n",
            self.port
        ));
    }
}

/// The whole fake cloud around a real database: fake Railway and webapp (extract's scenario),
/// a fake DigitalOcean, a free port for the supervisors' health servers, `DATABASE_URL` set.
pub fn cloud(database_url: &str) -> (Scenario, FakeDo, u16) {
    let mut s = scenario("extract");
    let api = FakeDo::start();
    s.ops
        .env("DIGITALOCEAN_TOKEN", DO_TOKEN)
        .env("DIGITALOCEAN_API_URL", &api.server.url())
        .env("DATABASE_URL", database_url);
    (s, api, free_port())
}

/// A fresh database with Trigger.dev's worker tables and a worker group for the log token.
pub fn webapp_db() -> Webapp {
    assert!(
        pg::available(),
        "the supervisor tests need PostgreSQL (run scripts/pg-test-cluster.sh or .ci/run)"
    );
    let cluster = pg::Cluster::shared();
    let db = cluster.create_db();
    webapp::install(&mut cluster.client(&db), LOG_TOKEN);
    Webapp {
        url: cluster.url(&db),
        token: LOG_TOKEN.into(),
    }
}

/// Extract has run against the fake Railway; the health profile runs the supervisor task,
/// which sees the supervisors through the webapp's database (`DATABASE_URL`).
pub fn fleet(options: &str) -> Fleet {
    let mut s = scenario("extract");
    let api = FakeDo::start();
    let webapp = webapp_db();
    s.ops
        .env("DIGITALOCEAN_TOKEN", DO_TOKEN)
        .env("DIGITALOCEAN_API_URL", &api.server.url())
        .env("DATABASE_URL", &webapp.url)
        .env("TRIGGER_VERSION", "v4.5.12");
    let f = Fleet {
        s,
        api,
        port: free_port(),
        webapp,
    };
    f.jobs(options);
    f.run(&["run", "extract"]).expect_code(0);
    f
}

#[test]
fn nothing_exists_so_one_droplet_is_created_with_our_tags_and_valid_user_data() {
    let f = fleet("boot_grace: 10m");
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("created droplet trigger-supervisor-envabcde-");
    let creates = f.creates();
    assert_eq!(creates.len(), 1);
    let body = &creates[0];
    let tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags[..2], [TAG, "ops-managed"]);
    assert!(
        tags[2].starts_with("ops-spec-") && tags[2].len() == "ops-spec-".len() + 16,
        "{tags:?}"
    );
    assert_eq!(
        (
            body["region"].as_str(),
            body["size"].as_str(),
            body["image"].as_str()
        ),
        (Some("nyc1"), Some("s-2vcpu-2gb"), Some("ubuntu-24-04-x64"))
    );
    let user_data = body["user_data"].as_str().unwrap();
    check_user_data(user_data, body["name"].as_str().unwrap());
    // The firewall came along, attached by tag.
    let fw = f.api.with(|w| w.firewalls.clone());
    assert_eq!(fw.len(), 1);
    assert_eq!(fw[0]["tags"][0], TAG);
    assert_eq!(
        fw[0]["inbound_rules"],
        serde_json::json!([]),
        "nothing inbound by default: neither the workload port 8020 nor ssh"
    );
    assert_eq!(fw[0]["outbound_rules"].as_array().unwrap().len(), 3);
}

/// The user-data is a valid cloud-config whose compose file has the expected services and whose
/// .env carries the extracted config.
pub fn check_user_data(user_data: &str, droplet_name: &str) {
    assert!(user_data.starts_with("#cloud-config\n"));
    let doc: serde_yaml::Value = serde_yaml::from_str(user_data).unwrap();
    let files = doc["write_files"].as_sequence().unwrap();
    let env = files
        .iter()
        .find(|f| f["path"] == "/opt/trigger/.env")
        .unwrap();
    assert_eq!(env["permissions"], "0600");
    let env_text = env["content"].as_str().unwrap();
    for line in [
        format!("TRIGGER_WORKER_TOKEN={LOG_TOKEN}"),
        format!("MANAGED_WORKER_SECRET={SECRET}"),
        format!("TRIGGER_WORKER_INSTANCE_NAME={droplet_name}"),
        // A first heartbeat 10 s after the supervisor starts, not 30 (docs/supervisor.md).
        "TRIGGER_WORKER_HEARTBEAT_INTERVAL_SECONDS=10".into(),
        "DOCKER_HOST=tcp://docker-proxy:2375".into(),
        "DOCKER_REGISTRY_URL=registry-prod.invalid".into(),
    ] {
        assert!(
            env_text.lines().any(|l| l == line),
            "{line} missing from .env:\n{env_text}"
        );
    }
    assert!(env_text.contains("TRIGGER_API_URL=http://"));
    assert!(env_text.contains("/otel\n"));
    assert!(!env_text.contains("DEBUG"));
    let compose = files
        .iter()
        .find(|f| f["path"] == "/opt/trigger/docker-compose.yml")
        .unwrap();
    let compose: serde_yaml::Value =
        serde_yaml::from_str(compose["content"].as_str().unwrap()).unwrap();
    let sup = &compose["services"]["supervisor"];
    assert_eq!(sup["image"], "ghcr.io/triggerdotdev/supervisor:v4.5.12");
    assert_eq!(sup["restart"], "unless-stopped");
    assert!(
        sup["ports"].is_null(),
        "the workload port is published only with SUPERVISOR_HEALTH_SOURCES"
    );
    assert!(sup["healthcheck"]["test"][1]
        .as_str()
        .unwrap()
        .contains("8020/health"));
    let proxy = &compose["services"]["docker-proxy"];
    assert!(proxy["image"]
        .as_str()
        .unwrap()
        .starts_with("tecnativa/docker-socket-proxy:v"));
    assert_eq!(
        proxy["volumes"][0],
        "/var/run/docker.sock:/var/run/docker.sock:ro"
    );
    assert!(proxy["healthcheck"].is_mapping());
    cloud_init_schema(user_data);
}

pub fn cloud_init_schema(user_data: &str) {
    if !crate::support::tool("cloud-init") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data.yaml");
    std::fs::write(&path, user_data).unwrap();
    let out = std::process::Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cloud-init schema: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_booting_droplet_is_left_alone() {
    let f = fleet("boot_grace: 10m");
    f.api.with(|w| w.boot_after = Duration::from_secs(3600));
    f.health().expect_code(0);
    let before = f.api.mutations();
    let run = f.health();
    run.expect_code(0).expect_stdout("booting (status new");
    assert_eq!(f.api.mutations(), before);
    assert_eq!(f.creates().len(), 1);
}

#[test]
fn a_healthy_cycle_changes_nothing_with_one_do_request_one_session_and_no_health_get() {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let sup = f.serve(f.ids()[0], true);
    f.health()
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat");
    f.api.server.clear();
    let hits = sup.hits();
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("DigitalOcean requests: 1, Postgres sessions: 1, health checks: 0")
        .expect_stdout("worker group \"ops-test-group\" (queue ops-test-queue): no PENDING run");
    assert_eq!(f.api.mutations(), 0);
    assert_eq!(f.api.gets(), 1);
    assert_eq!(
        sup.hits(),
        hits,
        "no /health GET without SUPERVISOR_HEALTH_SOURCES"
    );
}

#[test]
fn an_unhealthy_droplet_is_replaced_at_once_and_deleted_at_the_third_failed_check() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 3");
    f.health().expect_code(0);
    let first = f.ids()[0];
    let _sup = f.serve(first, false);
    f.health()
        .expect_code(1)
        .expect_stdout("failing 1/3")
        .expect_stdout("the webapp has never heard from")
        .expect_stdout("replacing unhealthy");
    assert_eq!(
        f.creates().len(),
        2,
        "make before break: its replacement starts at once"
    );
    f.health().expect_code(1).expect_stdout("failing 2/3");
    assert!(f.deletes().is_empty());
    assert_eq!(f.creates().len(), 2, "one replacement, not one per check");
    let run = f.health();
    run.expect_stdout("deleted droplet")
        .expect_stdout("unhealthy: 3 consecutive failed health checks");
    assert_eq!(f.deletes(), [first]);
    // Nothing here ever heartbeats: the replacement is failing too and gets its own; the
    // circuit breaker (which counts each of these creates) bounds the chain.
    assert_eq!(f.creates().len(), 3);
    assert_eq!(f.ids().len(), 2);
    let breaker: serde_json::Value =
        f.s.ops
            .sqlite()
            .query_row(
                "SELECT value FROM kv WHERE namespace = 'supervisor' AND key = 'breaker'",
                [],
                |r| r.get::<_, String>(0),
            )
            .map(|v| serde_json::from_str(&v).unwrap())
            .unwrap();
    assert_eq!(breaker["replacements"].as_array().unwrap().len(), 2);
}

#[test]
fn spec_drift_is_a_rolling_replace() {
    let mut f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let old = f.ids()[0];
    let _old_sup = f.serve(old, true);
    f.health().expect_code(0);
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("spec stale")
        .expect_stdout("rolling replace");
    assert_eq!(f.ids().len(), 2, "the new droplet comes first");
    assert!(
        f.deletes().is_empty(),
        "the old droplet stays until the new one is healthy"
    );
    let new = *f.ids().iter().find(|id| **id != old).unwrap();
    assert!(f.creates()[1]["user_data"]
        .as_str()
        .unwrap()
        .contains("supervisor:v4.6.0"));
    // New one not healthy yet (nothing listens): the old one stays.
    f.health().expect_code(0);
    assert!(f.deletes().is_empty());
    let _new_sup = f.serve(new, true);
    f.health().expect_code(0).expect_stdout(
        "spec drift (TRIGGER_VERSION v4.5.12 → v4.6.0): replaced by a healthy droplet",
    );
    assert_eq!(f.deletes(), [old]);
    assert_eq!(f.ids(), [new]);
    assert_eq!(f.creates().len(), 2);
}

#[test]
fn a_size_change_is_planned_field_by_field() {
    let mut f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.health().expect_code(0);
    f.s.ops.env("SUPERVISOR_SIZE", "s-4vcpu-8gb");
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would replace droplet trigger-supervisor-envabcde-")
        .expect_stdout("(size: s-2vcpu-2gb → s-4vcpu-8gb)")
        .expect_stdout("plan: create 1 droplet")
        .expect_stderr("health/supervisor: planned: 1/1 healthy, 0 waiting");
    assert_eq!(f.creates().len(), 1, "a dry run creates nothing");
}

#[test]
fn a_lost_state_database_creates_no_duplicate() {
    let f = fleet("boot_grace: 10m");
    f.api.with(|w| w.boot_after = Duration::from_secs(3600));
    f.health().expect_code(0);
    std::fs::remove_dir_all(f.s.ops.state_dir()).unwrap();
    f.run(&["run", "extract"]).expect_code(0);
    f.health().expect_code(0).expect_stdout("booting");
    assert_eq!(f.creates().len(), 1);
}

#[test]
fn a_foreign_droplet_is_never_touched() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 1");
    let foreign = f.api.insert("hand-made", &[TAG], Duration::from_secs(7200));
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("ignored droplet hand-made");
    f.health();
    f.health();
    assert!(!f.deletes().contains(&foreign.id));
    assert!(f.ids().contains(&foreign.id));
}

#[test]
fn too_many_tagged_droplets_is_a_refusal_without_mutation() {
    let f = fleet("boot_grace: 1ms");
    for i in 0..3 {
        f.api.insert(
            &format!("{TAG}-26010100000{i}"),
            &[TAG, "ops-managed", "ops-spec-0000000000000000"],
            Duration::from_secs(3600),
        );
    }
    let run = f.health();
    run.expect_code(1)
        .expect_stdout("refusing to act: 3 droplets")
        .expect_stdout(&format!("{TAG}-260101000000 (id"));
    assert_eq!(f.api.mutations(), 0);
}

#[test]
fn the_circuit_breaker_stops_replacements_until_reset() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 1, max_replacements: 1");
    f.health().expect_code(0);
    let _a = f.serve(f.ids()[0], false);
    f.health().expect_code(0).expect_stdout("deleted droplet");
    assert_eq!(f.deletes().len(), 1);
    let _b = f.serve(f.ids()[0], false);
    let run = f.health();
    run.expect_code(1)
        .expect_stdout("circuit breaker open")
        .expect_stdout("--reset-breaker");
    assert_eq!(f.deletes().len(), 1);
    assert_eq!(f.creates().len(), 2);
    f.run(&["run", "health", "--reset-breaker"])
        .expect_code(0)
        .expect_stdout("circuit breaker reset");
    assert_eq!(f.deletes().len(), 2);
}

#[test]
fn dry_run_makes_no_mutation() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 1");
    let run = f.run(&["run", "health", "--dry-run"]);
    run.expect_code(0)
        .expect_stdout("would create droplet")
        .expect_stdout("would create firewall");
    assert_eq!(f.api.mutations(), 0);
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], false);
    f.api.server.clear();
    let run = f.run(&["run", "health", "--dry-run"]);
    run.expect_stdout("would delete droplet")
        .expect_stdout("would create droplet");
    assert_eq!(f.api.mutations(), 0);
}

#[test]
fn two_pages_of_droplets_are_read() {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.api
        .insert("someone-elses", &[TAG], Duration::from_secs(60));
    f.api.with(|w| w.page_max = 1);
    f.health();
    f.api.server.clear();
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("ignored droplet someone-elses");
    let lists = f
        .api
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/droplets?"))
        .count();
    assert_eq!(lists, 2);
    assert_eq!(f.api.mutations(), 0);
}

#[test]
fn rate_limits_are_retried_and_api_errors_are_surfaced() {
    let f = fleet("boot_grace: 10m");
    f.api.with(|w| w.faults.push_back(DoFault::RateLimit));
    f.health().expect_code(0).expect_stderr("HTTP 429");
    assert_eq!(f.creates().len(), 1);

    let g = fleet("boot_grace: 10m");
    g.api.with(|w| {
        w.create_fault = Some(DoFault::Unprocessable(
            "creating this/these droplet(s) will exceed your droplet limit",
        ))
    });
    g.health()
        .expect_code(1)
        .expect_stdout("POST /v2/droplets answered HTTP 422 unprocessable_entity: creating this/these droplet(s) will exceed your droplet limit, request id");
    assert!(g.creates().is_empty());
}

#[test]
fn a_rejected_token_is_named() {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("DIGITALOCEAN_TOKEN", "dop_v1_wrongwrongwrong");
    let run = f.health();
    run.expect_code(1)
        .expect_stdout("DIGITALOCEAN_TOKEN was rejected: Unable to authenticate you.");
    assert!(!run.all().contains("wrongwrongwrong"));
}

#[test]
fn render_cloud_init_redacts_unless_asked() {
    let f = fleet("boot_grace: 10m");
    let run = f.run(&["render-cloud-init"]);
    run.expect_code(0)
        .expect_stdout("#cloud-config")
        .expect_stdout("TRIGGER_WORKER_TOKEN=***");
    assert!(!run.stdout.contains(LOG_TOKEN) && !run.stdout.contains(SECRET));
    let shown = f.run(&["render-cloud-init", "--show-secrets"]);
    shown.expect_code(0).expect_stdout(LOG_TOKEN);
    check_user_data(&shown.stdout, &format!("{TAG}-<created>"));
    let _ = ENVIRONMENT;
}

#[test]
fn doctor_checks_every_dependency_live() {
    if !crate::support::pg::available() {
        return;
    }
    let mut f = fleet("boot_grace: 10m");
    let cluster = crate::support::pg::Cluster::shared();
    let db = cluster.create_db();
    f.s.ops.env("DATABASE_URL", &cluster.url(&db));
    let run = f.run(&["doctor"]);
    // The fake registry host does not resolve here: a warning, as for any registry this host
    // cannot reach (the droplets pull, not this host), so no problem is found.
    run.expect_code(0)
        .expect_stdout("✓ Railway token valid (account ops@example.com)")
        .expect_stdout(
            "✓ Railway project proj-1234 visible: services trigger.dev, registry, Postgres",
        )
        .expect_stdout("✓ DigitalOcean token valid (account ops@example.com, droplet limit 25)")
        .expect_stdout("✓ SUPERVISOR_REGION=nyc1 takes new droplets")
        .expect_stdout("✓ SUPERVISOR_SIZE=s-2vcpu-2gb (2 vCPU, 2048 MB) is offered in nyc1")
        .expect_stdout("✓ SUPERVISOR_IMAGE=ubuntu-24-04-x64 exists")
        .expect_stdout("with the privileges the replication fix needs")
        .expect_stdout("! registry registry-prod.invalid: not checked, registry-prod.invalid cannot be reached from this host")
        .expect_stdout("/healthcheck: 200");
    f.s.ops.env("DIGITALOCEAN_TOKEN", "dop_v1_bad");
    f.run(&["doctor"])
        .expect_code(1)
        .expect_stdout("✗ DIGITALOCEAN_TOKEN was rejected");
}

/// The same observation gives the same plan: a dry run lists exactly the actions the real run
/// then takes (names carry the second they are made in, so that part is masked).
#[test]
fn dry_run_and_real_run_show_the_same_actions_from_one_plan() {
    let f = fleet("boot_grace: 10m");
    let actions = |run: &crate::support::Run| -> Vec<(String, String)> {
        let doc = run.json();
        doc["tasks"][0]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let text = a["action"].as_str().unwrap();
                let masked: String = text
                    .split(' ')
                    .map(|w| {
                        // `<tag>-<yymmddHHMMSS>-<12 random hex>`: the random part differs per run.
                        let twelve = |s: &str, ok: fn(&u8) -> bool| {
                            s.len() == 12 && s.bytes().all(|b| ok(&b))
                        };
                        match w
                            .rsplit_once('-')
                            .and_then(|(h, r)| Some((h.rsplit_once('-')?, r)))
                        {
                            Some(((head, stamp), random))
                                if twelve(stamp, u8::is_ascii_digit)
                                    && twelve(random, u8::is_ascii_hexdigit) =>
                            {
                                format!("{head}-<stamp>")
                            }
                            _ => w.to_string(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                (masked, a["result"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let planned = actions(&f.run(&["run", "health", "--dry-run", "--json"]));
    assert_eq!(f.api.mutations(), 0);
    let done = actions(&f.run(&["run", "health", "--json"]));
    assert_eq!(
        planned.len(),
        2,
        "the droplet and the firewall: {planned:?}"
    );
    assert!(planned[0]
        .0
        .starts_with("create droplet trigger-supervisor-envabcde-<stamp> ("));
    assert_eq!(planned[0].1, "planned (dry run)");
    assert_eq!(
        planned.iter().map(|a| &a.0).collect::<Vec<_>>(),
        done.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    assert!(
        done[0]
            .1
            .starts_with("created droplet trigger-supervisor-envabcde-"),
        "{:?}",
        done[0]
    );
}

/// A run that deletes a droplet and then has a call fail keeps the delete and its reason in its
/// report: the text, `--json` and the history (issue 33: the soak, like an operator, saw only
/// the later `POST /v2/droplets … HTTP 500` and could not tell why a droplet went).
#[test]
fn a_failed_call_after_a_delete_keeps_the_delete_and_its_reason_in_the_report() {
    // A dead droplet (2 failed checks) is deleted, then its replacement's create fails.
    let dead_then_a_failed_create = |args: &[&str]| {
        let f = fleet("boot_grace: 1ms, unhealthy_after: 2");
        f.health().expect_code(0);
        let first = f.ids()[0];
        let name = f.api.with(|w| w.droplets[0].name.clone());
        let sup = f.serve(first, false);
        f.health().expect_code(1).expect_stdout("failing 1/2");
        f.api.with(|w| w.create_fault = Some(DoFault::Status(500)));
        let run = f.run(args);
        assert_eq!(f.deletes(), [first], "{}", run.all());
        let deleted = format!(
            "deleted droplet {name} (id {first}): unhealthy: 2 consecutive failed health checks"
        );
        (f, sup, run, deleted, first)
    };
    let (f, _sup, run, deleted, _) = dead_then_a_failed_create(&["run", "health"]);
    run.expect_code(1)
        .expect_stdout("POST /v2/droplets answered HTTP 500")
        .expect_stdout(&deleted);
    let last: i64 =
        f.s.ops
            .sqlite()
            .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
            .unwrap();
    f.run(&["history", "show", &last.to_string()])
        .expect_stdout("POST /v2/droplets answered HTTP 500")
        .expect_stdout(&deleted);

    let (_f, _sup, run, deleted, first) = dead_then_a_failed_create(&["run", "health", "--json"]);
    let json = run.json();
    let task = &json["tasks"][0];
    assert_eq!(task["status"], "failed", "{json}");
    assert!(task["detail"].to_string().contains(&deleted), "{json}");
    let actions = task["actions"].as_array().unwrap();
    let delete = actions
        .iter()
        .find(|a| a["type"] == "delete")
        .unwrap_or_else(|| panic!("the delete is among the actions: {json}"));
    assert_eq!(delete["done"], true);
    assert_eq!(delete["id"], first.to_string());
    assert!(
        delete["reason"].as_str().unwrap().starts_with("unhealthy"),
        "{delete}"
    );
    let create = actions.iter().find(|a| a["type"] == "create").unwrap();
    assert_eq!(create["done"], false);
    assert!(
        create["result"].as_str().unwrap().contains("HTTP 500"),
        "{create}"
    );
}
