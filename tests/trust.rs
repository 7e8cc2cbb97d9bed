//! Trust (issue 26): no silent change to production, no wrong move on a new host, and status
//! shows what pages. A fake Railway, webapp and DigitalOcean around a real PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::supervisor::fleet;
use crate::support::fake::{loopback, FakeServer, Reply, Seen};
use crate::support::pg::{self, Cluster};
use crate::support::railway::{FakeRailway, ADMIN_TOKEN, ENVIRONMENT, PROJECT, RAILWAY_TOKEN};
use crate::support::webapp;
use crate::support::Ops;

const TAG: &str = "trigger-supervisor-envabcde";
/// The token of the group the first host's droplets heartbeat into (not ops' token here).
const BOOTSTRAP_TOKEN: &str = "tr_wgt_BootstrapGroup0123456789abcdefghijklmno";

#[test]
fn a_droplet_heartbeating_into_another_group_is_named_so_and_not_replaced() {
    let f = fleet("boot_grace: 1ms, stale_after: 1m, unhealthy_after: 1");
    let mut db = f.db();
    webapp::add_group(&mut db, BOOTSTRAP_TOKEN, "bootstrap", "bootstrap-queue");
    let name = format!("{TAG}-260101000000");
    f.api.insert(
        &name,
        &[TAG, "ops-managed", "ops-spec-old"],
        Duration::from_secs(3600),
    );
    webapp::heartbeat(&mut db, BOOTSTRAP_TOKEN, &name).unwrap();
    for _ in 0..2 {
        let run = f.run(&["run", "health"]);
        run.expect_code(1)
            .expect_stdout(&format!("droplet {name} heartbeats into worker group bootstrap, not ours (ops-test-group): ops does not have that group's token. Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN"))
            .expect_stdout("heartbeating into group bootstrap (last heartbeat");
        assert!(!run.stdout.contains("booting"), "{}", run.stdout);
        assert!(!run.stdout.contains("never heard"), "{}", run.stdout);
    }
    assert_eq!(f.api.with(|w| w.creates.len()), 0, "nothing created");
    assert!(f.api.with(|w| w.deletes.is_empty()), "nothing deleted");
    let status = flat(&f.run(&["status", "--check"]).expect_code(1).stdout);
    assert!(
        status.contains(&format!(
            "✗ droplet {name} heartbeats into worker group bootstrap, not ours"
        )),
        "{status}"
    );
}

/// The `kind` of each item of a JSON list (events, problems).
fn kinds(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect()
}

/// Status text with its wrapped problem lines joined again.
fn flat(text: &str) -> String {
    text.replace("\n    ", " ")
}

/// A JSON webhook that answers 200 and keeps every body.
fn webhook() -> FakeServer {
    FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(200, "ok")))
}

fn bodies(s: &FakeServer) -> Vec<Value> {
    s.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// A weekday name three days from now (host time): a window on it never contains now.
fn another_day() -> String {
    (chrono::Local::now() + chrono::Duration::days(3))
        .format("%a")
        .to_string()
}

#[test]
fn a_postgres_restart_waits_for_its_window_is_announced_before_it_starts_and_is_recorded() {
    assert!(pg::available(), "this story needs PostgreSQL");
    let cluster = Arc::new(Cluster::start(&["wal_level = replica"]));
    let name = cluster.create_db();
    cluster
        .client(&name)
        .batch_execute(r#"CREATE TABLE "TaskRun" (id text PRIMARY KEY, status text)"#)
        .unwrap();
    let hook = webhook();
    let railway = FakeRailway::start();
    let (c, seen) = (Arc::clone(&cluster), Arc::clone(&hook.seen));
    let told_before = Arc::new(Mutex::new(Vec::new()));
    let told = Arc::clone(&told_before);
    railway.with(|w| {
        w.services = vec![("svc-pg".into(), "Postgres".into())];
        w.deployments.insert(
            "svc-pg".into(),
            vec![(
                "pg-dep-1".into(),
                "2026-11-01T00:00:00Z".into(),
                "SUCCESS".into(),
            )],
        );
        w.restart_hook = Some(Box::new(move |_| {
            // What the channels had heard when the restart began.
            told.lock()
                .unwrap()
                .extend(seen.lock().unwrap().iter().map(|s| s.body.clone()));
            c.ctl("restart")
        }));
    });
    let mut ops = Ops::new();
    ops.env("DATABASE_URL", &cluster.url(&name))
        .env("RAILWAY_API_TOKEN", RAILWAY_TOKEN)
        .env("RAILWAY_PROJECT_ID", PROJECT)
        .env("RAILWAY_ENVIRONMENT_ID", ENVIRONMENT)
        .env("RAILWAY_API_URL", &railway.url())
        .env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    let jobs = |window: &str| {
        format!("version: 1\nprofiles:\n  hourly:\n    cron: '0 * * * *'\n    timeout: 2m\n    tasks:\n      - {{kind: replication, restart_timeout: 60s, restart_window: '{window}'}}\n")
    };

    // Outside the window: wal_level is set, the restart waits, the run says until when.
    let window = format!("{} 03:00-05:00", another_day());
    ops.jobs(&jobs(&window));
    ops.run(&["run", "hourly"])
        .expect_code(0)
        .expect_stdout("fixed: ALTER SYSTEM SET wal_level = logical")
        .expect_stdout(&format!("Postgres restart deferred: wal_level = logical is set and waits for a restart, which restart_window {window} allows next at "));
    assert!(
        railway.with(|w| w.restarts.is_empty()),
        "restarted outside its window"
    );
    // The change it made is told, though the run is ok.
    let sent = bodies(&hook);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["kind"], "info");
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("ℹ️ ops: profile hourly changed 3 things on"),
        "{text}"
    );
    assert!(
        text.contains("ran on the webapp's Postgres: ALTER SYSTEM SET wal_level = logical"),
        "{text}"
    );

    // Inside it: announced before it starts, done, recorded, told after.
    ops.jobs(&jobs("00:00-24:00"));
    ops.run(&["run", "hourly"])
        .expect_code(0)
        .expect_stdout("restarted the Railway service \"Postgres\" (deployment pg-dep-1)");
    assert_eq!(railway.with(|w| w.restarts.clone()), ["pg-dep-1"]);
    let before: Vec<Value> = told_before
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before[1]["kind"], "notice");
    assert!(before[1]["text"]
        .as_str()
        .unwrap()
        .contains("restarting the Railway service \"Postgres\" (deployment pg-dep-1) now to apply wal_level = logical"));
    let sent = bodies(&hook);
    assert_eq!(
        sent.len(),
        3,
        "one notice before, one message after: {sent:?}"
    );
    assert_eq!(sent[2]["kind"], "info");
    assert!(sent[2]["text"]
        .as_str()
        .unwrap()
        .contains("restarted the Railway service \"Postgres\" (deployment pg-dep-1) to apply wal_level = logical"));
    let doc = ops.run(&["events", "--json"]).expect_code(0).json();
    let events = &doc["events"];
    assert_eq!(
        kinds(events),
        [
            "postgres.setting",
            "postgres.replica_identity",
            "postgres.publication",
            "postgres.restarted"
        ]
    );
    assert!(events[3]["announced_at"].as_str().unwrap().ends_with('Z'));
    let status = ops.run(&["status", "--json"]).json();
    assert_eq!(status["events"][3]["kind"], "postgres.restarted");
    ops.run(&["events", "--since", "1h"])
        .expect_code(0)
        .expect_stdout("postgres.restarted");
    // Healthy now: nothing changes, nothing is sent.
    ops.run(&["run", "hourly"]).expect_code(0);
    assert_eq!(bodies(&hook).len(), 3);
}

#[test]
fn a_dry_run_records_no_event_and_tells_nobody() {
    let f = fleet("boot_grace: 10m");
    // Every change told: the first create and the firewall are routine otherwise.
    crate::operator2::notify_changes(&f, "all");
    let hook = webhook();
    let mut f = f;
    f.s.ops
        .env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would create droplet");
    assert!(hook.requests().is_empty());
    f.run(&["events"])
        .expect_code(0)
        .expect_stdout("no change recorded");
    // The real run: the create and the firewall, in one message.
    f.run(&["run", "health"]).expect_code(0);
    let sent = bodies(&hook);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let text = sent[0]["text"].as_str().unwrap();
    assert!(text.contains("changed 2 things"), "{text}");
    assert!(
        text.contains("created droplet trigger-supervisor-envabcde-"),
        "{text}"
    );
    assert!(text.contains("created firewall"), "{text}");
    // Status shows the droplet it just made, though no check has seen it yet.
    f.run(&["status"])
        .expect_stdout("supervisor: no droplet seen by a check yet")
        .expect_stdout("since: created droplet trigger-supervisor-envabcde-");
    // And the API serves the events.
    let (_child, addr) = crate::operator::Served::start(&f.s.ops);
    let (code, body) = crate::operator::request(&addr, "GET", "/v1/events?since=1h");
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        kinds(&doc["events"]),
        ["droplet.created", "firewall.created"]
    );
}

#[test]
fn the_breaker_opening_is_a_new_message_before_renotify_after_and_recovery_says_what_ops_did() {
    let mut f = fleet("boot_grace: 10m, stale_after: 1s, unhealthy_after: 2, max_replacements: 1");
    crate::operator2::notify_changes(&f, "all");
    let hook = webhook();
    f.s.ops
        .env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    f.run(&["run", "health"]).expect_code(0);
    let sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"]).expect_code(0);
    let first = bodies(&hook);
    assert_eq!(first.len(), 1, "the create, told once: {first:?}");
    assert_eq!(first[0]["kind"], "info");
    // It goes silent: the first alert, with its replacement's create.
    sup.set(false);
    std::thread::sleep(Duration::from_millis(1500));
    f.run(&["run", "health"]).expect_code(1);
    let sent = bodies(&hook);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["kind"], "failing");
    let text = sent[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("🔴 health: droplet trigger-supervisor-envabcde-"),
        "{text}"
    );
    assert!(
        text.contains("unhealthy (1/2 before it is replaced"),
        "{text}"
    );
    assert!(text.contains("• what ops changed"), "{text}");
    assert!(
        !text.contains("DigitalOcean requests:"),
        "counters in the alert: {text}"
    );
    // The breaker opens a moment later: a second message at once (renotify_after is 6h).
    f.run(&["run", "health"]).expect_code(1);
    let sent = bodies(&hook);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2]["kind"], "escalated");
    assert!(sent[2]["text"]
        .as_str()
        .unwrap()
        .starts_with("🔴 health, now: circuit breaker open: 1 replacements within"));
    // The same failure again: nothing new.
    f.run(&["run", "health"]).expect_code(1);
    assert_eq!(bodies(&hook).len(), 3);
    // Status leads with it, says when it closes by itself, and --check fails.
    let status = flat(&f.run(&["status"]).expect_code(0).stdout);
    assert!(
        status.starts_with(
            "PROBLEMS (1):\n  ✗ circuit breaker open: 1 replacements within 6h; droplet"
        ),
        "{status}"
    );
    assert!(
        status.contains("then run `ops run health --reset-breaker` (it closes by itself in 5h59m"),
        "{status}"
    );
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(doc["breaker"]["open"], true, "{doc}");
    assert!(doc["breaker"]["closes_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc["problems"][0]["kind"], "breaker");
    f.run(&["status", "--check"]).expect_code(1);
    // It heartbeats again: the spare goes, and the recovery says what ops did meanwhile.
    sup.set(true);
    std::thread::sleep(Duration::from_millis(300));
    f.run(&["run", "health"]).expect_code(0);
    let sent = bodies(&hook);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[3]["kind"], "recovered");
    let text = sent[3]["text"].as_str().unwrap();
    assert!(text.contains("• what ops did while it failed"), "{text}");
    assert!(
        text.contains("created droplet trigger-supervisor-envabcde-"),
        "{text}"
    );
    assert!(
        text.contains("deleted droplet trigger-supervisor-envabcde-"),
        "{text}"
    );
}

#[test]
fn a_new_host_never_reroutes_a_working_deployment() {
    // The old host's deployment: droplet ops made heartbeats into group "bootstrap", the
    // global default. This host has fresh state, logs older than Railway keeps, an admin token.
    let db = crate::supervisor::webapp_db();
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    webapp::add_group(&mut c, BOOTSTRAP_TOKEN, "bootstrap", "bootstrap-queue");
    webapp::set_default(&mut c, &webapp::group_id("bootstrap"));
    let (mut s, api, port) = crate::supervisor::cloud(&db.url);
    s.railway.with(|w| w.deployment_logs.clear());
    s.webapp.share_database(&db.url);
    s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    s.ops.jobs(&format!("version: 1\nprofiles:\n  hourly:\n    cron: '0 * * * *'\n    timeout: 1m\n    tasks:\n      - extract\n      - {{kind: supervisor, health_port: {port}, boot_grace: 1ms}}\n"));
    let name = format!("{TAG}-260101000000");
    api.insert(
        &name,
        &[TAG, "ops-managed", "ops-spec-old"],
        Duration::from_secs(86_400),
    );
    webapp::heartbeat(&mut c, BOOTSTRAP_TOKEN, &name).unwrap();
    let default_before = |c: &mut postgres::Client| -> String {
        c.query_one(r#"SELECT value #>> '{}' FROM "FeatureFlag" WHERE key = 'defaultWorkerInstanceGroupId'"#, &[])
            .unwrap()
            .get(0)
    };
    for args in [&["run", "hourly", "--dry-run"][..], &["run", "hourly"]] {
        let run = s.ops.run(args);
        run.expect_code(1).expect_stdout(&format!(
            "not creating worker group \"ops-supervisor\": droplet {name}, which ops manages, heartbeats into worker group \"bootstrap\""
        ))
        .expect_stdout("Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN to that group's token; or run `ops run hourly --allow-new-worker-group`");
    }
    assert_eq!(
        s.webapp.count("/admin/api/v1/workers"),
        0,
        "no admin API call"
    );
    assert_eq!(
        s.webapp.count("/admin/api/v1/feature-flags"),
        0,
        "no routing change"
    );
    assert_eq!(default_before(&mut c), webapp::group_id("bootstrap"));
    assert_eq!(api.mutations(), 0, "no DigitalOcean mutation");
    s.ops.run(&["events"]).expect_stdout("no change recorded");

    // The fix the line names: the old group's token. The droplet is ours again, nothing moves.
    s.ops.env("TRIGGER_WORKER_TOKEN", BOOTSTRAP_TOKEN);
    let run = s.ops.run(&["run", "hourly"]);
    assert!(
        !run.stdout.contains("not creating worker group"),
        "{}",
        run.stdout
    );
    assert_eq!(s.webapp.count("/admin/api/v1/workers"), 0);
    assert_eq!(default_before(&mut c), webapp::group_id("bootstrap"));
}

#[test]
fn allow_new_worker_group_creates_it_and_says_so() {
    let db = crate::supervisor::webapp_db();
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    // The default group's supervisors are alive (someone else's host).
    webapp::heartbeat(&mut c, crate::extract::LOG_TOKEN, "elsewhere-1").unwrap();
    let (mut s, _api, _port) = crate::supervisor::cloud(&db.url);
    s.railway.with(|w| w.deployment_logs.clear());
    s.webapp.share_database(&db.url);
    s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    s.ops.run(&["run", "extract"]).expect_code(1).expect_stdout(
        "the global default, worker group \"ops-test-group\", has supervisors heartbeating",
    );
    assert_eq!(s.webapp.count("/admin/api/v1/workers"), 0);
    s.ops
        .run(&["run", "extract", "--allow-new-worker-group"])
        .expect_code(0)
        .expect_stdout("created worker group");
    assert_eq!(s.webapp.count("/admin/api/v1/workers"), 1);
    let events = s.ops.run(&["events", "--json"]).json();
    assert_eq!(
        kinds(&events["events"]),
        ["worker_group.created", "routing.default_changed"]
    );
}

#[test]
fn status_shows_the_webapp_outage_and_a_refusal_and_check_fails_on_them() {
    let mut f = fleet("boot_grace: 10m, stale_after: 1s, unhealthy_after: 2");
    f.s.ops.env("SUPERVISOR_COUNT", "2");
    f.run(&["run", "health"]).expect_code(0);
    f.run(&["run", "health"]).expect_code(0);
    let sups: Vec<_> = f.ids().iter().map(|id| f.serve(*id, true)).collect();
    f.run(&["run", "health"]).expect_code(0);
    let ok = f.run(&["status", "--check"]);
    ok.expect_code(0).expect_stdout("no problems");
    assert!(
        ok.stdout
            .contains(&format!("read: state {}", f.s.ops.state_dir().display())),
        "{}",
        ok.stdout
    );
    // The webapp goes down: nobody records heartbeats, /healthcheck answers 500.
    *f.s.webapp.health.lock().unwrap() = (500, "ERROR".into());
    for s in &sups {
        s.set(false);
    }
    std::thread::sleep(Duration::from_millis(1500));
    f.run(&["run", "health"]).expect_code(1);
    let run = f.run(&["status", "--check"]);
    run.expect_code(1).expect_stdout("held (webapp)");
    assert!(flat(&run.stdout).contains("✗ the webapp is the likely cause, not the supervisors: the webapp is down or unreachable (GET "), "{}", run.stdout);
    let doc = f.run(&["status", "--json"]).json();
    let problems = kinds(&doc["problems"]);
    assert_eq!(problems[0], "webapp_down", "{problems:?}");
    assert!(
        !problems.contains(&"failing_profile"),
        "the same failure twice: {problems:?}"
    );
    // The heartbeat ages count from now, not from the check.
    let before = f.run(&["status"]).stdout;
    std::thread::sleep(Duration::from_millis(2100));
    let after = f.run(&["status"]).stdout;
    assert_ne!(before, after, "heartbeat ages frozen at the check");
    // Too many droplets: ops refuses to act, and status says so over the old picture. (Taken
    // as ops' own by their names, as after an upgrade from a version without the record.)
    *f.s.webapp.health.lock().unwrap() = (200, "OK".into());
    for n in 0..2 {
        f.api.insert(
            &format!("{TAG}-26010100000{n}"),
            &[TAG, "ops-managed"],
            Duration::from_secs(60),
        );
    }
    f.forget_created();
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("refusing to act");
    let run = f.run(&["status", "--check"]);
    run.expect_code(1)
        .expect_stdout("the last supervisor run (")
        .expect_stdout("did not update this: refusing to act");
    assert!(
        flat(&run.stdout).contains("✗ refusing to act: 4 droplets carry"),
        "{}",
        run.stdout
    );
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(
        doc["problems"][0]["kind"], "refusing",
        "{}",
        doc["problems"]
    );
}

#[test]
fn an_unreadable_state_directory_stops_status_with_the_sudo_hint() {
    use std::os::unix::fs::PermissionsExt;
    let ops = Ops::new();
    ops.jobs(&crate::support::exec_profile("p", &["true"], ""));
    ops.run(&["run", "p"]).expect_code(0);
    // As the package leaves it: the service user's, private; and the test's files readable.
    std::fs::set_permissions(ops.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The env file first: skipped, it would report every token "not set".
    std::fs::set_permissions(ops.path("ops.env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    for args in [&["status"][..], &["doctor"]] {
        crate::hardening::run_as(&ops, "nobody", args)
            .expect_code(2)
            .expect_stderr(&format!(
                "the env file {} exists but uid 65534 cannot read it",
                ops.path("ops.env").display()
            ))
            .expect_stderr("run as root or a member of group ops: sudo ops ");
    }
    std::fs::set_permissions(ops.path("ops.env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        ops.path("jobs.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(ops.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // `list` still lists jobs.yaml's profiles, and says what it cannot show.
    crate::hardening::run_as(&ops, "nobody", &["list"])
        .expect_code(0)
        .expect_stdout("p ")
        .expect_stderr(&format!(
            "the state directory {} exists but uid 65534 cannot read it",
            ops.state_dir().display()
        ))
        .expect_stderr("(the list shows no profile as disabled)");
    for args in [&["status"][..], &["history"], &["run", "p"]] {
        let run = crate::hardening::run_as(&ops, "nobody", args);
        run.expect_code(2)
            .expect_stderr(&format!(
                "the state directory {} exists but uid 65534 cannot read it",
                ops.state_dir().display()
            ))
            .expect_stderr("run as root or a member of group ops: sudo ops ");
        assert!(
            !run.stdout.contains("never"),
            "an empty world: {}",
            run.stdout
        );
    }
    // Readable but not writable (a WAL database needs its shared-memory file): the same hint.
    std::fs::set_permissions(ops.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in std::fs::read_dir(ops.state_dir()).unwrap() {
        let path = f.unwrap().path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    for args in [&["status"][..], &["run", "p"]] {
        crate::hardening::run_as(&ops, "nobody", args)
            .expect_code(2)
            .expect_stderr("exists but uid 65534 cannot write it")
            .expect_stderr("run as root or a member of group ops: sudo ops ");
    }
}
