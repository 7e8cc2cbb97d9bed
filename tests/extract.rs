//! The extract task against a fake Railway API and a fake webapp.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::railway::*;
use crate::support::Ops;

pub const SECRET: &str = "managed-secret-9f8e7d6c5b4a";
pub const LOG_TOKEN: &str = "tr_wgt_LogToken0123456789abcdefghijklmnopqrstuv";
pub const MANUAL_TOKEN: &str = "tr_wgt_ManualToken0123456789abcdefghijklmnopq";
pub const REGISTRY_PASSWORD: &str = "registry-password-31337";

pub struct Scenario {
    pub ops: Ops,
    pub railway: FakeRailway,
    pub webapp: FakeWebapp,
}

pub fn banner(token: &str) -> String {
    format!("==========================\nTrigger.dev Bootstrap - Worker Token\nWARNING: This will only be shown once. Save it now!\nWorker group:\nbootstrap\nToken:\n{token}\nIf using docker compose, set:\nTRIGGER_WORKER_TOKEN={token}\n==========================")
}

pub fn scenario(task: &str) -> Scenario {
    let railway = FakeRailway::start();
    let webapp = FakeWebapp::start();
    railway.with(|w| {
        w.services = vec![
            ("svc-web".into(), "trigger.dev".into()),
            ("svc-reg".into(), "registry".into()),
            ("svc-pg".into(), "Postgres".into()),
        ];
        w.variables.insert(
            "svc-web".into(),
            json!({"MANAGED_WORKER_SECRET": SECRET, "API_ORIGIN": webapp.origin(), "PORT": "3000",
                   "DEPLOY_REGISTRY_USERNAME": "registry-user", "DEPLOY_REGISTRY_PASSWORD": REGISTRY_PASSWORD}),
        );
        w.domains.insert("svc-reg".into(), vec!["registry-prod.invalid".into()]);
        w.image_source("svc-web", "ghcr.io/triggerdotdev/trigger.dev:v4.5.12");
        w.deployments.insert(
            "svc-web".into(),
            vec![
                ("dep-1".into(), "2026-10-01T10:00:00.000Z".into(), "REMOVED".into()),
                ("dep-3".into(), "2026-11-20T10:00:00.000Z".into(), "SUCCESS".into()),
                ("dep-2".into(), "2026-11-01T10:00:00.000Z".into(), "REMOVED".into()),
            ],
        );
        w.deployment_logs.insert("dep-1".into(), vec![("2026-10-01T10:00:05.123456789Z".into(), banner(LOG_TOKEN))]);
        w.deployment_logs.insert("dep-3".into(), vec![("2026-11-20T10:00:05Z".into(), "[bootstrap] Worker group bootstrap already exists".into())]);
    });
    let mut ops = Ops::new();
    ops.env("RAILWAY_API_TOKEN", RAILWAY_TOKEN)
        .env("RAILWAY_PROJECT_ID", PROJECT)
        .env("RAILWAY_ENVIRONMENT_ID", ENVIRONMENT)
        .env("RAILWAY_API_URL", &railway.url());
    ops.jobs(&format!("version: 1\nprofiles:\n  extract:\n    cron: '*/15 * * * *'\n    timeout: 30s\n    tasks:\n      - {task}\n"));
    Scenario {
        ops,
        railway,
        webapp,
    }
}

const REFRESH_ALWAYS: &str = "{kind: extract, refresh: 1ms}";

fn log_queries(ops: &[String]) -> usize {
    ops.iter().filter(|o| o.contains("Logs")).count()
}

#[test]
fn token_found_in_an_older_deployment_is_cached_and_the_next_run_asks_nothing() {
    let s = scenario("extract");
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(0)
        .expect_stdout("found in the webapp's logs (deployment dep-1")
        .expect_stdout("registry-prod.invalid");
    let ops = s.railway.ops();
    assert_eq!(
        ops.iter().filter(|o| *o == "DeploymentLogs").count(),
        3,
        "{ops:?}"
    );
    assert_eq!(s.webapp.count("/healthcheck"), 1);
    // Fresh record: zero Railway requests, one health GET.
    s.railway.clear();
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("no Railway request");
    assert!(s.railway.ops().is_empty(), "{:?}", s.railway.ops());
    assert_eq!(s.webapp.count("/healthcheck"), 2);
}

#[test]
fn cached_token_means_no_log_query_and_at_most_two_requests() {
    let s = scenario(REFRESH_ALWAYS);
    s.ops.run(&["run", "extract"]).expect_code(0);
    s.railway.with(|w| w.deployment_logs.clear());
    s.railway.clear();
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("cached (from logs");
    let ops = s.railway.ops();
    assert_eq!(log_queries(&ops), 0, "{ops:?}");
    assert_eq!(ops, ["Webapp", "Domains"]);
}

#[test]
fn manual_token_wins_without_any_log_query() {
    let mut s = scenario("extract");
    s.ops.env("TRIGGER_WORKER_TOKEN", MANUAL_TOKEN);
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("TRIGGER_WORKER_TOKEN (manual)");
    assert_eq!(log_queries(&s.railway.ops()), 0);
}

#[test]
fn webapp_under_a_configured_name_is_found() {
    let mut s = scenario("extract");
    s.railway
        .with(|w| w.services[0].1 = "my-trigger-app".into());
    s.ops.env("WEBAPP_SERVICE_NAME", "My-Trigger-App");
    s.ops.run(&["run", "extract"]).expect_code(0);
}

#[test]
fn unknown_service_lists_the_project_services() {
    let s = scenario("extract");
    s.railway.with(|w| w.services[0].1 = "frontend".into());
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("its services: frontend, registry, Postgres")
        .expect_stdout("WEBAPP_SERVICE_NAME");
}

#[test]
fn changed_secret_updates_the_record_and_names_what_changed() {
    let s = scenario(REFRESH_ALWAYS);
    s.ops.run(&["run", "extract"]).expect_code(0);
    s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["MANAGED_WORKER_SECRET"] =
            json!("rotated-secret-0000aaaa")
    });
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(0)
        .expect_stdout("changed since the last extraction: MANAGED_WORKER_SECRET");
    assert!(!run.all().contains("rotated-secret-0000aaaa"));
    // The next run sees no change.
    let run = s.ops.run(&["run", "extract"]);
    assert!(!run.stdout.contains("changed since"), "{}", run.stdout);
}

#[test]
fn admin_token_creates_a_worker_group_once_when_logs_hold_nothing() {
    let mut s = scenario("extract");
    s.railway.with(|w| w.deployment_logs.clear());
    s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("created worker group \"ops-supervisor\"");
    assert_eq!(s.webapp.count("/admin/api/v1/workers"), 1);
    assert_eq!(*s.webapp.groups.lock().unwrap(), ["ops-supervisor"]);
    // Next run (even after refresh) uses the cached admin token: no admin call.
    s.ops.jobs("version: 1\nprofiles:\n  extract:\n    cron: '* * * * *'\n    tasks:\n      - {kind: extract, refresh: 1ms}\n");
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("cached (from admin");
    assert_eq!(s.webapp.count("/admin/api/v1/workers"), 1);
}

#[test]
fn existing_worker_group_explains_the_lost_token() {
    let mut s = scenario("extract");
    s.railway.with(|w| w.deployment_logs.clear());
    s.webapp
        .groups
        .lock()
        .unwrap()
        .push("ops-supervisor".into());
    s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("already exists")
        .expect_stdout("WORKER_GROUP_NAME");
}

#[test]
fn no_token_anywhere_explains_every_way_to_provide_one() {
    let s = scenario("extract");
    s.railway.with(|w| w.deployment_logs.clear());
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("TRIGGER_WORKER_TOKEN=tr_wgt_")
        .expect_stdout("TRIGGER_ADMIN_TOKEN");
}

#[test]
fn insecure_default_secret_is_flagged() {
    let s = scenario("extract");
    s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["MANAGED_WORKER_SECRET"] = json!("managed-secret")
    });
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("insecure default secret");
}

#[test]
fn private_api_origins_are_flagged() {
    for origin in [
        "http://localhost:3030",
        "http://trigger.railway.internal:3000",
    ] {
        let s = scenario("extract");
        s.railway
            .with(|w| w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!(origin));
        s.ops
            .run(&["run", "extract"])
            .expect_code(1)
            .expect_stdout("not reachable from a droplet");
    }
}

#[test]
fn webapp_healthcheck_500_is_a_clear_failure() {
    let s = scenario("extract");
    *s.webapp.health.lock().unwrap() = (500, "ERROR".into());
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("webapp health check failed")
        .expect_stdout("/healthcheck answered HTTP 500");
}

#[test]
fn rate_limit_is_retried_once_after_the_advertised_delay() {
    let mut s = scenario("extract");
    s.ops.env("TRIGGER_WORKER_TOKEN", MANUAL_TOKEN);
    s.railway.fault(Fault::RateLimit(1));
    let t0 = Instant::now();
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(0).expect_stderr("HTTP 429");
    assert!(t0.elapsed() >= Duration::from_secs(1));
    // The refused request plus the real ones.
    let requests = s.railway.server.requests().len();
    assert_eq!(requests, 1 + s.railway.ops().len());
}

#[test]
fn rejected_token_is_a_clear_error() {
    let mut s = scenario("extract");
    s.ops.env("RAILWAY_API_TOKEN", "wrong-token-value-123");
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(1)
        .expect_stdout("RAILWAY_API_TOKEN was rejected: Not Authorized");
    assert!(!run.all().contains("wrong-token-value-123"));
}

#[test]
fn html_error_pages_are_reported_by_status_and_first_bytes_within_the_deadline() {
    let mut s = scenario("extract");
    s.ops.jobs("version: 1\nprofiles:\n  extract:\n    cron: '* * * * *'\n    timeout: 3s\n    tasks: [extract]\n");
    s.ops.env("TRIGGER_WORKER_TOKEN", MANUAL_TOKEN);
    for _ in 0..10 {
        s.railway.fault(Fault::Html);
    }
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(1)
        .expect_stdout("HTTP 503 with a body that is not JSON: <html>");
    assert!(run.elapsed < Duration::from_secs(8), "{:?}", run.elapsed);
}

#[test]
fn graphql_errors_are_surfaced() {
    let s = scenario("extract");
    s.railway.fault(Fault::GraphqlError("Project not found"));
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("Railway API: Project not found");
}

#[test]
fn slow_answers_time_out_within_the_task_deadline() {
    let mut s = scenario("extract");
    s.ops.jobs("version: 1\nprofiles:\n  extract:\n    cron: '* * * * *'\n    timeout: 2s\n    tasks: [extract]\n");
    s.ops.env("TRIGGER_WORKER_TOKEN", MANUAL_TOKEN);
    s.railway.fault(Fault::Slow(Duration::from_secs(4)));
    let run = s.ops.run(&["run", "extract"]);
    run.expect_code(1).expect_stdout("timed out");
    assert!(run.elapsed < Duration::from_secs(6), "{:?}", run.elapsed);
}

#[test]
fn missing_railway_credentials_say_what_to_set() {
    let s = scenario("extract");
    let ops = Ops::new();
    ops.jobs("version: 1\nprofiles:\n  extract:\n    cron: '* * * * *'\n    tasks: [extract]\n");
    drop(s);
    ops.run(&["run", "extract"])
        .expect_code(2)
        .expect_stdout("not configured: set RAILWAY_API_TOKEN");
}

#[test]
fn dry_run_reads_but_writes_nothing() {
    let s = scenario("extract");
    let run = s.ops.run(&["run", "extract", "--dry-run"]);
    run.expect_code(0)
        .expect_stdout("planned")
        .expect_stdout("would cache the worker token");
    assert!(!s.ops.state_dir().exists());
    // With state: still byte-identical.
    s.ops.run(&["run", "extract"]).expect_code(0);
    s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["MANAGED_WORKER_SECRET"] =
            json!("rotated-secret-0000bbbb")
    });
    s.ops.jobs("version: 1\nprofiles:\n  extract:\n    cron: '* * * * *'\n    tasks:\n      - {kind: extract, refresh: 1ms}\n");
    let before = std::fs::read(s.ops.db()).unwrap();
    s.ops
        .run(&["run", "extract", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would store the config record");
    assert_eq!(before, std::fs::read(s.ops.db()).unwrap());
}

#[test]
fn no_secret_reaches_output_or_the_database() {
    let s = scenario("extract");
    let mut all = String::new();
    for args in [
        &["run", "extract"][..],
        &["run", "extract", "--json"],
        &["run", "extract", "--dry-run"],
        &["history", "--json"],
    ] {
        all.push_str(&s.ops.run(args).all());
    }
    all.push_str(&String::from_utf8_lossy(
        &std::fs::read(s.ops.db()).unwrap(),
    ));
    for secret in [LOG_TOKEN, SECRET, RAILWAY_TOKEN, REGISTRY_PASSWORD] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    assert!(
        all.contains("tr_wgt_***") || all.contains("worker token"),
        "{all}"
    );
}

#[test]
fn a_recreated_webapp_service_is_found_again() {
    let s = scenario(REFRESH_ALWAYS);
    s.ops.run(&["run", "extract"]).expect_code(0);
    s.railway.with(|w| {
        w.services[0].0 = "svc-web-new".into();
        let vars = w.variables.remove("svc-web").unwrap();
        w.variables.insert("svc-web-new".into(), vars);
    });
    s.railway.clear();
    s.ops.run(&["run", "extract"]).expect_code(0);
    let ops = s.railway.ops();
    assert!(ops.contains(&"Project".to_string()), "{ops:?}");
    // And the new id is cached: back to two requests.
    s.railway.clear();
    s.ops.run(&["run", "extract"]).expect_code(0);
    assert_eq!(s.railway.ops(), ["Webapp", "Domains"]);
}
