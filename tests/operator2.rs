//! Day thirty (issue 34), as an operator meets it: decisions taken only on fresh, accepted
//! input, and notifications an on-call team can live with. Fake Railway and DigitalOcean, a real
//! PostgreSQL with Trigger.dev's schema.

use std::time::Duration;

use serde_json::Value;

use crate::operator::{request, server, Served};
use crate::supervisor::{cloud, fleet, webapp_db, Fleet};
use crate::support::fake::FakeServer;
use crate::support::railway::Fault;
use crate::support::webapp;

const BOT_TOKEN: &str = "123456:telegram-bot-secret-token";

const WEBAPP_IMAGE: &str = "ghcr.io/triggerdotdev/trigger.dev";

fn webapp_at(f: &Fleet, version: &str) {
    f.s.railway
        .with(|w| w.image_source("svc-web", &format!("{WEBAPP_IMAGE}:{version}")));
}

#[test]
fn a_cached_webapp_version_never_rolls_the_fleet_backwards() {
    let mut f = fleet("boot_grace: 10m");
    // The record read the webapp at v4.5.10; the fleet runs the pinned v4.5.12.
    webapp_at(&f, "v4.5.10");
    f.run(&["run", "extract", "--refresh"]).expect_code(0);
    let (_id, _sup) = f.one_healthy();
    // The webapp moves to v4.5.13; the operator unsets the pin, as ops' warning advises.
    webapp_at(&f, "v4.5.13");
    f.s.ops.env("TRIGGER_VERSION", "");
    f.s.railway.clear();
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(0);
    assert!(!dry.stdout.contains("→ v4.5.10"), "{}", dry.stdout);
    dry.expect_stdout("would replace droplet")
        .expect_stdout("webapp upgraded v4.5.12 → v4.5.13")
        .expect_stdout("read from Railway just now");
    assert_eq!(
        f.s.railway.ops(),
        ["Webapp"],
        "one Railway call before a version change"
    );
    // Railway does not answer: the cached version decides nothing.
    f.s.railway.fault(Fault::GraphqlError("Not Authorized"));
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(0)
        .expect_stdout("stays at v4.5.12")
        .expect_stdout("config record");
    assert!(!dry.stdout.contains("would replace"), "{}", dry.stdout);
}

#[test]
fn an_origin_extract_refused_is_neither_stored_nor_deployed() {
    let webapp = webapp_db();
    let (s, api, port) = cloud(&webapp.url);
    let f = Fleet {
        s,
        api,
        port,
        webapp,
    };
    f.jobs("boot_grace: 10m");
    let good = f.s.webapp.origin();
    let set_origin = |origin: &str| {
        f.s.railway.with(|w| {
            w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = Value::from(origin);
        })
    };
    set_origin("http://localhost:3030");
    let run = f.run(&["run", "extract"]);
    run.expect_code(1)
        .expect_stdout("not reachable from a droplet");
    assert!(
        !run.stdout.contains("stored the config record"),
        "{}",
        run.stdout
    );
    let health = f.health();
    health
        .expect_code(1)
        .expect_stdout("refused by extract")
        .expect_stdout("API_ORIGIN");
    assert!(f.creates().is_empty(), "nothing deployed from it");
    // A good record, then the origin goes bad again: the supervisor still refuses it.
    set_origin(&good);
    f.run(&["run", "extract", "--refresh"]).expect_code(0);
    set_origin("http://localhost:3030");
    f.run(&["run", "extract", "--refresh"]).expect_code(1);
    f.health()
        .expect_code(1)
        .expect_stdout("refused by extract");
    assert!(f.creates().is_empty());
    // Fixed: the next extract accepts it and the fleet follows.
    set_origin(&good);
    f.run(&["run", "extract", "--refresh"]).expect_code(0);
    f.health().expect_code(0);
    assert_eq!(f.creates().len(), 1);
}

#[test]
fn an_unknown_size_region_or_image_stops_run_and_dry_run_with_exit_2() {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("SUPERVISOR_SIZE", "s-99vcpu-1gb");
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(2);
    let all = dry.all();
    assert!(all.contains("SUPERVISOR_SIZE=s-99vcpu-1gb"), "{all}");
    assert!(all.contains("s-1vcpu-1gb"), "the nearest size: {all}");
    f.health().expect_code(2);
    assert!(f.creates().is_empty(), "stopped before the create");
    f.s.ops
        .env("SUPERVISOR_SIZE", "s-2vcpu-2gb")
        .env("SUPERVISOR_REGION", "fra9");
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(2);
    let all = dry.all();
    assert!(all.contains("SUPERVISOR_REGION=fra9"), "{all}");
    assert!(all.contains("fra1"), "the nearest region: {all}");
    f.s.ops
        .env("SUPERVISOR_REGION", "nyc1")
        .env("SUPERVISOR_IMAGE", "ubuntu-99-04-x64");
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(2);
    assert!(dry.all().contains("SUPERVISOR_IMAGE=ubuntu-99-04-x64"));
    // The run names the nearest slugs from DigitalOcean's list, as doctor does.
    assert!(dry.all().contains("did you mean ubuntu-"), "{}", dry.all());
    // Fixed, and DigitalOcean's lists are kept a day: the next run asks them no more.
    f.s.ops.env("SUPERVISOR_IMAGE", "ubuntu-24-04-x64");
    f.health().expect_code(0);
    assert_eq!(f.creates().len(), 1);
    f.api.server.clear();
    f.health()
        .expect_code(0)
        .expect_stdout("DigitalOcean requests: 1,");
}

fn waiting(f: &Fleet, n: usize, age: Duration) {
    let mut c = f.db();
    for i in 0..n {
        webapp::pending_run(&mut c, &format!("w{i}"), age);
    }
}

fn serve_new(
    f: &Fleet,
    sups: &mut Vec<crate::support::digitalocean::Supervisor>,
    served: &mut Vec<u64>,
) {
    for id in f.ids() {
        if !served.contains(&id) {
            sups.push(f.serve(id, true));
            served.push(id);
        }
    }
}

/// Sets `notify_changes` on the fleet's health profile.
pub fn notify_changes(f: &Fleet, setting: &str) {
    let yaml = std::fs::read_to_string(f.s.ops.path("jobs.yaml")).unwrap();
    f.s.ops.jobs(&yaml.replace(
        "  health:\n",
        &format!("  health:\n    notify_changes: {setting}\n"),
    ));
}

/// A fleet scaling 1 → 3 → 1 with Telegram configured; `notify` goes in the health profile.
/// Returns the fleet and the Telegram messages it sent.
fn burst(notify: Option<&str>) -> (Fleet, FakeServer) {
    let telegram = server(200);
    let mut f = fleet("boot_grace: 10m, min: 1, max: 3, scale_in_after: 1s");
    if let Some(n) = notify {
        notify_changes(&f, n);
    }
    f.s.ops
        .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", &telegram.url());
    let (mut sups, mut served) = (Vec::new(), Vec::new());
    f.health().expect_code(0);
    serve_new(&f, &mut sups, &mut served);
    waiting(&f, 30, Duration::from_secs(90));
    f.health().expect_code(0).expect_stdout("scale out 1 → 3");
    serve_new(&f, &mut sups, &mut served);
    f.health().expect_code(0);
    let mut c = f.db();
    c.batch_execute(r#"UPDATE "TaskRun" SET status = 'COMPLETED_SUCCESSFULLY' WHERE id LIKE 'w%'"#)
        .unwrap();
    for _ in 0..12 {
        if f.ids().len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1100));
        f.health().expect_code(0);
    }
    assert_eq!(f.ids().len(), 1, "back to min");
    (f, telegram)
}

/// Runs of the health profile that recorded at least one change.
fn runs_with_changes(f: &Fleet) -> i64 {
    f.s.ops
        .sqlite()
        .query_row(
            "SELECT count(*) FROM runs r WHERE r.profile = 'health' AND EXISTS \
             (SELECT 1 FROM events e WHERE e.profile = 'health' AND e.at BETWEEN r.started_at AND r.finished_at)",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_burst_to_max_and_back_is_routine_work_that_pages_nobody() {
    let (f, telegram) = burst(None);
    let sent = telegram.requests().len();
    assert!(sent <= 1, "{sent} messages for routine scaling");
    // Every change is still an event.
    let events = f.run(&["events", "--json"]).json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "droplet.created").count(),
        3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"droplet.deleted"), "{kinds:?}");
}

#[test]
fn notify_changes_all_tells_every_run_that_changed_something() {
    let (f, telegram) = burst(Some("all"));
    let sent = telegram.requests().len() as i64;
    let changed = runs_with_changes(&f);
    assert!(changed >= 3, "create, scale out, scale in: {changed}");
    assert_eq!(sent, changed, "one message per run that changed something");
}
#[test]
fn runs_waiting_on_a_fleet_capped_at_max_are_a_problem_told_once() {
    let f = fleet("boot_grace: 10m, min: 1, max: 2");
    let mut sups = Vec::new();
    let mut served = Vec::new();
    f.health().expect_code(0);
    serve_new(&f, &mut sups, &mut served);
    // 30 runs that could start have waited 10 minutes: two droplets cannot take them.
    waiting(&f, 30, Duration::from_secs(600));
    let run = f.health();
    run.expect_code(0).expect_stdout("scale out 1 → 2");
    let warned = run.stdout.matches("raise max").count();
    serve_new(&f, &mut sups, &mut served);
    let again = f.health();
    again.expect_code(0);
    assert_eq!(
        warned + again.stdout.matches("raise max").count(),
        1,
        "one warning per episode:\n{}\n{}",
        run.stdout,
        again.stdout
    );
    let status = f.run(&["status", "--json"]).json();
    let problems = status["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["kind"] == "capped"),
        "{problems:?}"
    );
    f.run(&["status"]).expect_stdout("raise max");
    let (_child, addr) = Served::start(&f.s.ops);
    let (code, metrics) = request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ops_supervisor_capped_runs 30"),
        "{metrics}"
    );
}
