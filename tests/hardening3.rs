//! Hardening III stories (issue 27): each test here failed before its fix.

use serde_json::json;

use crate::extract::{banner, scenario, LOG_TOKEN};
use crate::operator::Served;
use crate::supervisor::webapp_db;
use crate::support::fake::{loopback, private, public_looking, FakeServer, Reply, Seen};
use crate::support::pgwire::CleartextThief;
use crate::support::railway::{FakeWebapp, ADMIN_TOKEN};
use crate::support::{exec_profile, exec_profile_env, Ops};

const PLANTED: &str = "tr_wgt_Planted0123456789abcdefghijklmnopqrstu";

/// Any server can send `Retry-After: NaN`; here the heartbeat endpoint does, on the run's start
/// ping. The run goes on, fails as its task does, and the alert goes out.
#[test]
fn a_nan_retry_after_from_any_server_leaves_exit_1_and_the_alert_sent() {
    let ping = FakeServer::start(
        loopback(),
        Box::new(|_req: &Seen| Reply::text(429, "slow down").with_header("Retry-After", "NaN")),
    );
    let hook = FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(204, "")));
    let mut ops = Ops::new();
    ops.env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    ops.jobs(&exec_profile(
        "p",
        &["false"],
        &format!("ping_url: {}/ping", ping.url()),
    ));
    let run = ops.run(&["run", "p"]);
    run.expect_code(1);
    assert!(!ping.requests().is_empty(), "the heartbeat was never asked");
    let sent = hook.requests();
    assert_eq!(sent.len(), 1, "{}", run.all());
    assert!(sent[0].body.contains("step"), "{}", sent[0].body);
}

/// Whoever edits the webapp's Railway variables chooses API_ORIGIN: a plain-http webapp at a
/// public-looking address is asked for its health, never handed the admin token.
#[test]
fn the_admin_token_never_goes_over_plain_http_to_a_public_address() {
    let mut s = scenario("extract");
    let public = FakeWebapp::start_on(public_looking());
    s.railway.with(|w| {
        w.deployment_logs.clear();
        w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!(public.origin());
    });
    s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(1).expect_stdout(&format!(
        "TRIGGER_ADMIN_TOKEN is not sent to {}: plain http to a public address",
        public.origin()
    ));
    let asked = public.server.requests();
    assert!(
        asked
            .iter()
            .all(|r| r.header("authorization").is_none() && r.method == "GET"),
        "{asked:?}"
    );
    assert!(public.groups.lock().unwrap().is_empty());
}

/// A local service that must never be read through API_ORIGIN (a metadata service, say).
fn metadata_service() -> FakeServer {
    FakeServer::start(
        loopback(),
        Box::new(|_req: &Seen| Reply::text(500, "user-data: ROOT-PASSWORD-hunter2")),
    )
}

#[test]
fn ssrf_origins_are_refused_and_no_answer_reaches_an_alert() {
    let meta = metadata_service();
    let port = meta.addr.rsplit(':').next().unwrap().to_string();
    let hook = FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(204, "")));
    for (origin, why) in [
        (
            format!("http://[::ffff:127.0.0.1]:{port}/latest/meta-data?"),
            "has a path, query or fragment",
        ),
        (format!("http://[::ffff:127.0.0.1]:{port}"), "IPv4-mapped"),
        (format!("http://2130706433:{port}"), "numeric host"),
        ("http://169.254.169.254".to_string(), "a link-local address"),
    ] {
        let mut s = scenario("extract");
        s.ops
            .env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
        s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
        s.railway
            .with(|w| w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!(origin));
        let run = s.ops.run(&["run", "extract"]);
        run.expect_code(1);
        assert!(run.all().contains(why), "{origin}: {}", run.all());
        assert!(!run.all().contains("hunter2"), "{}", run.all());
        let history = s.ops.run(&["history", "--json"]);
        assert!(!history.all().contains("hunter2"), "{}", history.all());
    }
    assert!(meta.requests().is_empty(), "{:?}", meta.requests());
    let alerts = hook.requests();
    assert!(!alerts.is_empty());
    assert!(alerts.iter().all(|a| !a.body.contains("hunter2")));
}

/// The webapp's health check never repeats what an unexpected answer said.
#[test]
fn an_unexpected_health_answer_is_reported_without_its_body() {
    let s = scenario("extract");
    *s.webapp.health.lock().unwrap() = (500, "secret-ish page body 7f3a".into());
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(1)
        .expect_stdout("answered HTTP 500 (not \"200 OK\"; the body is not shown)");
    assert!(!run.all().contains("7f3a"), "{}", run.all());
}

/// The supervisor asks the webapp's health when a droplet goes silent: an unexpected answer is
/// named by its status only, in the run and in the alert.
#[test]
fn the_supervisors_webapp_check_never_repeats_an_unexpected_answer() {
    let mut f = crate::supervisor::fleet("boot_grace: 1ms, stale_after: 1s, unhealthy_after: 2");
    let hook = FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(204, "")));
    f.s.ops
        .env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    let (_, sup) = f.one_healthy();
    *f.s.webapp.health.lock().unwrap() = (500, "secret-ish page body 7f3a".into());
    sup.set(false);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let run = f.run(&["run", "health"]);
    run.expect_code(1)
        .expect_stdout("/healthcheck answered HTTP 500 (the body is not shown)");
    assert!(!run.all().contains("7f3a"), "{}", run.all());
    let alerts = hook.requests();
    assert!(!alerts.is_empty(), "no alert sent");
    assert!(
        alerts.iter().all(|a| !a.body.contains("7f3a")),
        "{alerts:?}"
    );
}

/// A `tr_wgt_` line planted in the webapp's logs after the real bootstrap banner: skipped for
/// the banner's token the webapp knows; no group is created, no default changed.
#[test]
fn a_planted_newer_log_token_is_skipped_for_the_known_banner_token() {
    let db = webapp_db();
    let mut s = scenario("extract");
    s.ops
        .env("DATABASE_URL", &db.url)
        .env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    s.railway.with(|w| {
        w.environment_logs = vec![
            ("2026-11-20T10:00:05Z".into(), banner(LOG_TOKEN)),
            (
                "2026-11-21T09:00:00Z".into(),
                format!("TRIGGER_WORKER_TOKEN={PLANTED}"),
            ),
            ("2026-11-21T10:00:00Z".into(), banner(PLANTED)),
        ]
    });
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(0)
        .expect_stdout(
            "skipped a worker token in the webapp's logs (environment logs): unknown to the webapp",
        )
        .expect_stdout("worker token: found in the webapp's logs (environment logs)")
        .expect_stdout("known to the webapp (worker group \"ops-test-group\"");
    assert_eq!(s.webapp.count("/admin/api/v1/workers"), 0);
    assert_eq!(s.webapp.count("/admin/api/v1/feature-flags"), 0);
    assert!(!run.all().contains(PLANTED));
}

/// The worker token extract cached, opened with the state directory's key.
fn cached_token(ops: &Ops) -> String {
    let sealed: String = ops
        .sqlite()
        .query_row(
            "SELECT json_extract(value, '$.token') FROM kv WHERE namespace = 'config' AND key = 'worker_token'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let sealer = trigger_ops::sealed::Sealer::load(&ops.state_dir(), false)
        .unwrap()
        .unwrap();
    sealer.open("config.worker_token", &sealed).unwrap()
}

/// Without the database only a banner's token counts, and two banners cannot be told apart.
#[test]
fn without_the_database_only_one_banner_token_is_taken() {
    let s = scenario("extract");
    s.railway.with(|w| {
        w.environment_logs = vec![
            ("2026-11-20T10:00:05Z".into(), banner(LOG_TOKEN)),
            (
                "2026-11-21T10:00:00Z".into(),
                format!("retrying with Bearer {PLANTED}"),
            ),
        ]
    });
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("worker token: found in the webapp's logs (environment logs)");
    assert_eq!(cached_token(&s.ops), LOG_TOKEN);

    let two = scenario("extract");
    two.railway.with(|w| {
        w.environment_logs = vec![
            ("2026-11-20T10:00:05Z".into(), banner(LOG_TOKEN)),
            ("2026-11-22T10:00:00Z".into(), banner(PLANTED)),
        ]
    });
    two.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("the webapp's logs hold 2 different worker tokens in bootstrap banners");
}

/// An active man in the middle refuses TLS and asks for the password in clear: under the
/// default DATABASE_URL (no sslmode) to another machine, it never receives it.
#[test]
fn a_server_refusing_tls_never_gets_the_password_under_the_default_sslmode() {
    let thief = CleartextThief::start(private());
    let mut ops = Ops::new();
    ops.env(
        "DATABASE_URL",
        &thief.url("postgres", "pg-secret-pw-6e1d", ""),
    );
    ops.jobs(&exec_profile("p", &["true"], ""));
    let run = ops.run(&["doctor"]);
    assert!(
        thief.passwords.lock().unwrap().is_empty(),
        "the password went in clear"
    );
    assert!(
        run.all()
            .contains("ops treats that as sslmode=require, so the password was not sent"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("pg-secret-pw-6e1d"));
    assert_eq!(*thief.tls_asked.lock().unwrap(), 1);
    // Written out, clear text is the operator's choice (and the thief's prize).
    ops.env(
        "DATABASE_URL",
        &thief.url("postgres", "pg-secret-pw-6e1d", "?sslmode=disable"),
    );
    ops.run(&["doctor"]);
    assert_eq!(*thief.passwords.lock().unwrap(), ["pg-secret-pw-6e1d"]);
}

/// `ops serve` over the state of one good run.
fn serving() -> (Ops, Served, String) {
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.run(&["run", "p"]).expect_code(0);
    let (served, addr) = Served::start(&ops);
    (ops, served, addr)
}

/// `GET path` with the given Host header; the status code.
fn get_as(addr: &str, host: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A page on a rebinding name (evil.example → 127.0.0.1) sends its own Host: refused; the
/// loopback names and the listen address are served.
#[test]
fn serve_answers_only_loopback_names_and_its_listen_address() {
    let (_ops, _served, addr) = serving();
    let port = addr.rsplit(':').next().unwrap();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "10.0.0.1".into(),
    ] {
        assert_eq!(get_as(&addr, &host, "/v1/status"), 421, "{host}");
    }
    for host in [
        addr.clone(),
        format!("localhost:{port}"),
        "LOCALHOST".into(),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get_as(&addr, &host, "/v1/status"), 200, "{host}");
    }
}

/// Forty connections that never send a request do not starve /healthz or /metrics.
#[test]
fn idle_connections_do_not_starve_serve() {
    let (_ops, _served, addr) = serving();
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(get_as(&addr, "localhost", "/healthz"), 200);
    assert_eq!(get_as(&addr, "localhost", "/metrics"), 200);
    drop(idle);
}

/// An exec task's command sees a plain base environment and the variables it names: none of
/// the env file's other secrets, none of ops' own environment's.
#[test]
fn exec_tasks_get_only_the_variables_they_name() {
    let mut ops = Ops::new();
    ops.env_file("DIGITALOCEAN_TOKEN=dop-secret-1\nNAMED_IN_FILE=from-file\n");
    ops.env("EXPORTED_SECRET", "process-secret-2");
    let names = [
        "sh",
        "-c",
        "env | cut -d= -f1 | sort | tr '\\n' ' '; echo \"[$NAMED_IN_FILE]\"",
    ];
    ops.jobs(&exec_profile("p", &names, ""));
    let bare = ops.run(&["run", "p"]);
    bare.expect_code(0).expect_stdout("[]");
    ops.jobs(&exec_profile_env("p", &names, "", &["NAMED_IN_FILE"]));
    let named = ops.run(&["run", "p"]);
    named.expect_code(0).expect_stdout("[from-file]");
    for run in [&bare, &named] {
        for hidden in ["DIGITALOCEAN_TOKEN", "EXPORTED_SECRET"] {
            assert!(
                !run.stdout.contains(hidden),
                "{hidden} reached the command:\n{}",
                run.stdout
            );
        }
        assert!(run.stdout.contains("PATH"), "{}", run.stdout);
    }
    // A value written in jobs.yaml, and a mapping with a pass-through entry.
    ops.jobs(
        &exec_profile(
            "p",
            &["sh", "-c", "echo \"[$GREETING/$NAMED_IN_FILE]\""],
            "",
        )
        .replace(
            "        name: step\n",
            "        name: step\n        env: {GREETING: hello, NAMED_IN_FILE: }\n",
        ),
    );
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("[hello/from-file]");
}

/// A secret shorter than the redactor's minimum is still masked where ops prints it by name.
#[test]
fn a_short_secret_is_masked_by_its_name() {
    let s = scenario("extract");
    s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["MANAGED_WORKER_SECRET"] = json!("k9Zq2")
    });
    s.ops.run(&["run", "extract"]).expect_code(0);
    let run = s.ops.run(&["render-cloud-init"]);
    run.expect_code(0)
        .expect_stdout("MANAGED_WORKER_SECRET=***");
    assert!(!run.stdout.contains("k9Zq2"), "{}", run.stdout);
}
