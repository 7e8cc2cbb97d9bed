//! Supervisor health as the webapp sees it (issue 12): heartbeats in the webapp's own database,
//! the side-effect-free token check, the closed workload port, the queue's age. A real
//! PostgreSQL with Trigger.dev's worker tables; test supervisors heartbeat the way the webapp
//! records it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::extract::{scenario, MANUAL_TOKEN};
use crate::operator::{request, Served};
use crate::supervisor::{fleet, webapp_db};
use crate::support::digitalocean::Supervisor;
use crate::support::pg;
use crate::support::railway::{ADMIN_CREATED_TOKEN, ADMIN_TOKEN};
use crate::support::webapp;

#[test]
fn silent_after_being_healthy_is_replaced_after_unhealthy_after_checks_not_after_the_grace() {
    let f = fleet("boot_grace: 10m, stale_after: 1s, unhealthy_after: 2");
    f.run(&["run", "health"]).expect_code(0);
    let first = f.ids()[0];
    let sup = f.serve(first, true);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat");
    // The supervisor dies seconds after boot: no more heartbeats.
    sup.set(false);
    std::thread::sleep(Duration::from_millis(1600));
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("failing 1/2")
        .expect_stdout("silent to the webapp for")
        .expect_stdout("replacing unhealthy");
    assert!(f.api.with(|w| w.deletes.is_empty()));
    assert_eq!(
        f.api.with(|w| w.creates.len()),
        2,
        "its replacement starts at once"
    );
    // Still well inside the 10-minute grace, yet deleted: the grace ended when it was healthy.
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("deleted droplet")
        .expect_stdout("unhealthy: 2 consecutive failed health checks");
    assert_eq!(f.api.with(|w| w.creates.len()), 2, "no second replacement");
    assert_eq!(
        f.api
            .with(|w| w.deletes.iter().map(|d| d.0).collect::<Vec<_>>()),
        [first]
    );
}

#[test]
fn a_droplet_the_webapp_never_heard_from_is_named_with_the_fix() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 5");
    f.run(&["run", "health"]).expect_code(0);
    let name = f.api.with(|w| w.droplets[0].name.clone());
    f.run(&["run", "health"]).expect_code(1).expect_stdout(&format!(
        "the webapp has never heard from {name}: check its token, MANAGED_WORKER_SECRET and TRIGGER_API_URL"
    ));
}

#[test]
fn with_health_sources_a_droplet_that_answers_health_but_is_silent_is_reported_as_that() {
    let mut f = fleet("boot_grace: 1ms, unhealthy_after: 5");
    f.s.ops
        .env("SUPERVISOR_HEALTH_SOURCES", "127.0.0.0/8")
        .env("SUPERVISOR_SSH_SOURCES", "203.0.113.7/32");
    f.run(&["run", "health"]).expect_code(0);
    let id = f.ids()[0];
    // /health answers 200, but no heartbeat ever reaches the webapp (a wrong secret, say).
    let http_only = Supervisor::serve(&f.ip_of(id), f.port, true);
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("answers /health but the webapp has never heard from")
        .expect_stdout("health checks: 1, webapp checks: 1");
    assert_eq!(http_only.hits(), 1);
    // The firewall opens 8020 to exactly those sources and 22 to the ssh sources; the compose
    // publishes the port.
    let fw = f.api.with(|w| w.firewalls.clone());
    let mut inbound = fw[0]["inbound_rules"].as_array().unwrap().clone();
    inbound.sort_by_key(|r| r["ports"].to_string());
    assert_eq!(
        Value::Array(inbound),
        json!([
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["203.0.113.7/32"]}},
            {"protocol": "tcp", "ports": "8020", "sources": {"addresses": ["127.0.0.0/8"]}}
        ])
    );
    let user_data = f
        .api
        .with(|w| w.creates[0]["user_data"].as_str().unwrap().to_string());
    assert!(
        user_data.contains("- 8020:8020"),
        "port not published:\n{user_data}"
    );
}

#[test]
fn without_database_url_or_health_sources_there_is_no_way_to_see_the_supervisor() {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("DATABASE_URL", "");
    f.run(&["check"])
        .expect_code(2)
        .expect_stdout("no way to see the supervisor: set DATABASE_URL");
    f.run(&["run", "health"])
        .expect_code(2)
        .expect_stdout("no way to see the supervisor");
    assert_eq!(f.api.mutations(), 0);
    // /health alone is a way (and the only one then).
    f.s.ops.env("SUPERVISOR_HEALTH_SOURCES", "127.0.0.0/8");
    f.run(&["check"]).expect_code(0);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("DATABASE_URL is not set, health comes from /health only")
        .expect_stdout("Postgres sessions: 0");
}

#[test]
fn queue_age_shows_in_status_and_metrics_and_alerts_past_the_threshold() {
    let f = fleet("boot_grace: 10m, queue_alert_after: 5m");
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("no PENDING run");
    f.run(&["status"])
        .expect_stdout("worker group: ops-test-group (queue ops-test-queue)")
        .expect_stdout("queue: no PENDING run");
    let mut db = f.db();
    webapp::pending_run(&mut db, "run_old", Duration::from_secs(600));
    webapp::pending_run(&mut db, "run_new", Duration::from_secs(30));
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("oldest PENDING run waits for 10m")
        .expect_stdout(
            "runs are waiting: the oldest PENDING run in queue ops-test-queue has waited 10m (alert after 5m)",
        );
    let doc = f.run(&["status", "--json"]).json();
    let age = doc["queue"]["oldest_pending_secs"].as_f64().unwrap();
    assert!((600.0..660.0).contains(&age), "{age}");
    let hb = doc["supervisor"]["droplets"][0]["heartbeat_age_secs"]
        .as_f64()
        .unwrap();
    assert!((0.0..30.0).contains(&hb), "{hb}");

    let (_child, addr) = Served::start(&f.s.ops);
    let (code, metrics) = request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"))
    };
    let queue = value("ops_queue_oldest_pending_seconds{queue=\"ops-test-queue\"}");
    assert!((600.0..660.0).contains(&queue), "{queue}");
    let name = f.api.with(|w| w.droplets[0].name.clone());
    // A time (which keeps aging in Prometheus when the checks stop), not an age.
    let beat = value(&format!(
        "ops_supervisor_last_heartbeat_timestamp_seconds{{droplet=\"{name}\"}}"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..now + 1.0).contains(&beat),
        "{beat} vs now {now}"
    );
    assert!(metrics.contains(&format!(
        "ops_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn dry_run_reads_the_same_webapp_view_and_writes_nothing() {
    let f = fleet("boot_grace: 10m");
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"]).expect_code(0);
    // The database and the key, by content (printing names and sizes on a difference).
    let files = |dir: &std::path::Path| -> Vec<(String, usize, u64)> {
        ["ops.db", "ops.db-wal", "secret.key"]
            .iter()
            .map(|n| {
                let bytes = std::fs::read(dir.join(n)).unwrap_or_default();
                let sum = bytes.iter().fold(0u64, |h, b| {
                    h.wrapping_mul(1_099_511_628_211) ^ u64::from(*b)
                });
                (n.to_string(), bytes.len(), sum)
            })
            .collect()
    };
    let before = files(&f.s.ops.state_dir());
    let rows = |db: &mut postgres::Client| -> i64 {
        db.query_one(r#"SELECT count(*) FROM "WorkerInstance""#, &[])
            .unwrap()
            .get(0)
    };
    let instances = rows(&mut f.db());
    let mutations = f.api.mutations();
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat")
        .expect_stdout("Postgres sessions: 1")
        .expect_stdout("no PENDING run");
    assert_eq!(f.api.mutations(), mutations);
    assert_eq!(
        before,
        files(&f.s.ops.state_dir()),
        "the state dir changed in a dry run"
    );
    assert_eq!(instances, rows(&mut f.db()));
}

fn extract_with_db(url: &str) -> crate::extract::Scenario {
    let mut s = scenario("extract");
    s.ops.env("DATABASE_URL", url);
    s
}

#[test]
fn a_known_token_records_its_worker_group_for_status() {
    let db = webapp_db();
    let s = extract_with_db(&db.url);
    s.ops.run(&["run", "extract"]).expect_code(0).expect_stdout(
        "token check: known to the webapp (worker group \"ops-test-group\", queue ops-test-queue)",
    );
    s.ops
        .run(&["status"])
        .expect_stdout("worker group: ops-test-group (queue ops-test-queue)");
    // The fresh-record path checks too (one statement, no Railway request).
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("no Railway request")
        .expect_stdout("known to the webapp");
}

#[test]
fn a_manual_token_the_webapp_does_not_know_fails_extract_naming_its_source() {
    let db = webapp_db();
    let mut s = extract_with_db(&db.url);
    s.ops.env("TRIGGER_WORKER_TOKEN", MANUAL_TOKEN);
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(1)
        .expect_stdout(
            "the webapp does not know this worker token (from TRIGGER_WORKER_TOKEN (manual))",
        )
        .expect_stdout("fix or unset TRIGGER_WORKER_TOKEN");
    assert!(!run.all().contains(MANUAL_TOKEN));
}

#[test]
fn a_cached_token_whose_group_was_deleted_is_dropped_and_the_next_run_finds_a_good_one() {
    let db = webapp_db();
    // The group the admin API will create (the fake webapp does not share the database).
    webapp::add_group(
        &mut postgres::Client::connect(&db.url, postgres::NoTls).unwrap(),
        ADMIN_CREATED_TOKEN,
        "admin-group",
        "admin-queue",
    );
    let mut s = extract_with_db(&db.url);
    s.ops.jobs("version: 1\nprofiles:\n  extract:\n    cron: '*/15 * * * *'\n    tasks: [{kind: extract, refresh: 1ms}]\n");
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("found in the webapp's logs");
    webapp::delete_group(
        &mut postgres::Client::connect(&db.url, postgres::NoTls).unwrap(),
        webapp::GROUP,
    );
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("the webapp does not know this worker token (from cached (from logs")
        .expect_stdout("dropped the cached worker token");
    s.ops
        .run(&["status"])
        .expect_stdout("worker token: none yet");
    // Next run: the logs still hold only the dead token, so the admin API makes a new group.
    s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("is known to the webapp (newest: ")
        .expect_stdout("created worker group")
        .expect_stdout("known to the webapp (worker group \"admin-group\"");
}

#[test]
fn missing_worker_tables_are_a_note_not_a_failure() {
    assert!(pg::available());
    let cluster = pg::Cluster::shared();
    let empty = cluster.create_db();
    let s = extract_with_db(&cluster.url(&empty));
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("token check: skipped, the webapp's database has no worker tables");
}

#[test]
fn a_heartbeat_nearly_stale_is_confirmed_in_the_same_run_and_the_replacement_starts_at_once() {
    // The droplet beats every 10 s (ops' user-data sets it and tags the droplet): stale after 30s.
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let a = f.ids()[0];
    let created = f.creates()[0].clone();
    assert!(
        created["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "ops-beat-10s"),
        "{created}"
    );
    let user_data = created["user_data"].as_str().unwrap();
    assert!(user_data.contains("TRIGGER_WORKER_HEARTBEAT_INTERVAL_SECONDS=10"));
    let sup = f.serve(a, true);
    f.health()
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat");
    // It dies; its last heartbeat is 20 s old when the next check starts.
    sup.set(false);
    std::thread::sleep(Duration::from_millis(300));
    let name = f.api.with(|w| w.droplets[0].name.clone());
    f.db()
        .execute(
            r#"UPDATE "WorkerInstance" SET "lastHeartbeatAt" = timezone('UTC', now()) - interval '20 seconds' WHERE name = $1"#,
            &[&name],
        )
        .unwrap();
    let t0 = std::time::Instant::now();
    let run = f.health();
    run.expect_code(1)
        .expect_stdout("(stale after 30s)")
        .expect_stdout("created droplet");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(10),
        "confirmed after waiting, not judged on a 20 s heartbeat: {waited:?}"
    );
    assert_eq!(f.ids().len(), 2, "its replacement is created in this run");
}
