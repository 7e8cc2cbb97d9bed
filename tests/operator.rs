//! The operator surface: alerts, heartbeats, auto-disable, status, serve.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::fake::{loopback, FakeServer, Reply, Seen};
use crate::support::Ops;

const BOT_TOKEN: &str = "123456:telegram-bot-secret-token";

/// A profile whose one exec task passes while `flag` exists.
pub fn flaky(ops: &Ops, extra: &str) -> std::path::PathBuf {
    let flag = ops.path("healthy");
    ops.jobs(&format!(
        "version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    renotify_after: 1s\n{extra}    tasks:\n      - {{kind: exec, name: probe, command: [test, -f, {:?}]}}\n",
        flag.display().to_string()
    ));
    flag
}

pub fn server(status: u16) -> FakeServer {
    FakeServer::start(
        loopback(),
        Box::new(move |_req: &Seen| Reply::json(status, serde_json::json!({"ok": status == 200}))),
    )
}

fn bodies(s: &FakeServer) -> Vec<Value> {
    s.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
        .collect()
}

#[test]
fn one_digest_per_failure_streak_a_reminder_and_a_recovery() {
    let telegram = server(200);
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_TOPIC_ID", "7")
        .env("TELEGRAM_API_URL", &telegram.url());
    let flag = flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    let sent = bodies(&telegram);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        telegram.requests()[0].path,
        format!("/bot{BOT_TOKEN}/sendMessage")
    );
    assert_eq!(sent[0]["chat_id"], "-100123");
    assert_eq!(sent[0]["message_thread_id"], 7);
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.contains("profile p failed")
            && text.contains("• probe (exec)")
            && text.contains("exit 1"),
        "{text}"
    );
    // Still failing, inside renotify_after: nothing new.
    ops.run(&["run", "p"]).expect_code(1);
    assert_eq!(telegram.requests().len(), 1);
    // After renotify_after: one reminder.
    std::thread::sleep(Duration::from_millis(1100));
    ops.run(&["run", "p"]).expect_code(1);
    assert_eq!(telegram.requests().len(), 2);
    assert!(bodies(&telegram)[1]["text"]
        .as_str()
        .unwrap()
        .contains("still failing"));
    // Recovery: one message, then silence.
    std::fs::write(&flag, "").unwrap();
    ops.run(&["run", "p"]).expect_code(0);
    ops.run(&["run", "p"]).expect_code(0);
    let sent = bodies(&telegram);
    assert_eq!(sent.len(), 3);
    assert!(sent[2]["text"].as_str().unwrap().contains("recovered"));
    let json = ops.run(&["status", "--json"]).json();
    assert_eq!(json["last_alert"]["kind"], "recovered");
    assert_eq!(json["last_alert"]["delivered"], true);
}

#[test]
fn test_chat_routing_sends_everything_to_one_chat_with_a_prefix() {
    let telegram = server(200);
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_TOPIC_ID", "7")
        .env("TELEGRAM_TEST_CHAT_ID", "-999")
        .env("TELEGRAM_API_URL", &telegram.url());
    flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    let sent = bodies(&telegram);
    assert_eq!(sent[0]["chat_id"], "-999");
    assert!(sent[0].get("message_thread_id").is_none());
    assert!(sent[0]["text"].as_str().unwrap().starts_with("[p] "));
}

#[test]
fn a_webhook_that_is_down_changes_nothing_but_is_recorded() {
    let hook = server(503);
    let mut ops = Ops::new();
    ops.env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    let flag = flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    assert!(!hook.requests().is_empty());
    let payload = bodies(&hook)[0].clone();
    assert!(payload["text"]
        .as_str()
        .unwrap()
        .contains("profile p failed"));
    assert_eq!(payload["failed_tasks"][0]["task"], "probe");
    let delivered: i64 = ops
        .sqlite()
        .query_row(
            "SELECT delivered FROM alerts ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(delivered, 0);
    std::fs::write(&flag, "").unwrap();
    ops.run(&["run", "p"]).expect_code(0);
}

#[test]
fn heartbeats_hit_start_success_and_fail() {
    let hc = server(200);
    let ops = Ops::new();
    let flag = flaky(
        &ops,
        &format!("    ping_url: {}/ping/abc\n    ping_body: true\n", hc.url()),
    );
    ops.run(&["run", "p"]).expect_code(1);
    std::fs::write(&flag, "").unwrap();
    ops.run(&["run", "p"]).expect_code(0);
    let paths: Vec<String> = hc.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/ping/abc/start",
            "/ping/abc/fail",
            "/ping/abc/start",
            "/ping/abc"
        ]
    );
    // With `ping_body: true` the end of a run is a POST of its summary, which healthchecks.io
    // shows beside the ping.
    let reqs = hc.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[1].method, "POST");
    assert!(
        reqs[1].body.contains("profile p: failed in"),
        "{}",
        reqs[1].body
    );
    assert!(reqs[1].body.contains("probe  failed"), "{}", reqs[1].body);
    assert!(
        reqs[3].body.contains("profile p: ok in"),
        "{}",
        reqs[3].body
    );
    // A dead heartbeat endpoint never fails a run.
    let ops2 = Ops::new();
    let flag2 = flaky(&ops2, "    ping_url: http://127.0.0.1:9/ping\n");
    std::fs::write(&flag2, "").unwrap();
    ops2.run(&["run", "p"]).expect_code(0);
}

#[test]
fn dry_run_sends_nothing() {
    let telegram = server(200);
    let hc = server(200);
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "1")
        .env("TELEGRAM_API_URL", &telegram.url());
    flaky(&ops, &format!("    ping_url: {}/p\n", hc.url()));
    ops.jobs(
        &std::fs::read_to_string(ops.path("jobs.yaml"))
            .unwrap()
            .replace("[test, -f", "[sh, -c, 'exit 1', -f"),
    );
    ops.run(&["run", "p", "--dry-run"]);
    assert!(telegram.requests().is_empty() && hc.requests().is_empty());
}

#[test]
fn auto_disable_after_n_healthy_runs_and_enable_resumes() {
    let mut ops = Ops::new();
    ops.env("AUTO_DISABLE", "true")
        .env("HEALTHY_CYCLES_BEFORE_DISABLE", "2");
    let flag = flaky(&ops, "");
    std::fs::write(&flag, "").unwrap();
    ops.run(&["run", "p"]).expect_code(0);
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("auto-disabled after 2 healthy runs");
    let run = ops.run(&["run", "p"]);
    run.expect_code(0)
        .expect_stdout("auto-disabled after 2 healthy runs (ops enable p to resume)");
    let runs = ops.run(&["history", "--json"]).json();
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        2,
        "a disabled profile does not run"
    );
    assert_eq!(
        ops.run(&["status", "--json"]).json()["profiles"][0]["auto_disabled"],
        true
    );
    ops.run(&["enable", "p"]).expect_code(0);
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("profile p: ok");
    ops.run(&["disable", "p"]).expect_code(0);
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("disabled (ops enable p to resume)");
}

#[test]
fn status_json_has_every_field_and_the_table_fits_100_columns() {
    let ops = Ops::new();
    flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    let json = ops.run(&["status", "--json"]).json();
    for key in [
        "host",
        "profiles",
        "supervisor",
        "worker_token",
        "config_record",
        "replication",
        "last_alert",
    ] {
        assert!(json.get(key).is_some(), "status lacks {key}");
    }
    let p = &json["profiles"][0];
    for key in [
        "name",
        "cron",
        "next_run",
        "last_run",
        "healthy_streak",
        "skipped_streak",
        "disabled",
        "auto_disabled",
    ] {
        assert!(p.get(key).is_some(), "profile status lacks {key}");
    }
    assert_eq!(p["last_run"]["status"], "failed");
    assert_eq!(p["last_run"]["failed_tasks"][0], "probe");
    let human = ops.run(&["status"]);
    human.expect_code(0).expect_stdout("PROFILE");
    assert!(
        human.stdout.lines().all(|l| l.chars().count() <= 100),
        "{}",
        human.stdout
    );
}

pub fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub struct Served(pub std::process::Child);

impl Served {
    /// `ops serve` on a free loopback port, once it accepts connections; returns its address.
    pub fn start(ops: &Ops) -> (Served, String) {
        let addr = format!("127.0.0.1:{}", crate::support::digitalocean::free_port());
        let child = Served(
            ops.command(&["serve", "--listen", &addr])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < until, "serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_json_and_prometheus_text_rejects_post_and_caps_limit() {
    let ops = Ops::new();
    flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    {
        let conn = ops.sqlite();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..10_000 {
            conn.execute("INSERT INTO runs (profile, started_at, finished_at, status) VALUES ('p', ?1, ?1 + 5, 'ok')", [1_700_000_000_000i64 + i]).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    let (_child, addr) = Served::start(&ops);
    let (code, body) = request(&addr, "GET", "/healthz");
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ok"], true);
    let (code, body) = request(&addr, "GET", "/v1/runs?profile=p&limit=100000");
    assert_eq!(code, 200);
    let runs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1000);
    assert_eq!(runs["limit"], 1000);
    let (code, body) = request(&addr, "GET", "/v1/alerts?limit=5");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["alerts"][0]["kind"],
        "failing"
    );
    let (code, body) = request(&addr, "GET", "/v1/status");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["profiles"][0]["name"],
        "p"
    );
    let (code, body) = request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let samples = parse_prometheus(&body);
    assert!(
        samples
            .iter()
            .any(|(name, labels, _)| name == "ops_task_failures_total"
                && labels.contains("task=\"probe\"")),
        "{body}"
    );
    assert!(samples
        .iter()
        .any(|(name, _, v)| name == "ops_last_run_timestamp_seconds" && *v > 1.6e9));
    assert!(samples
        .iter()
        .any(|(name, _, _)| name == "ops_run_duration_seconds"));
    let (code, _) = request(&addr, "POST", "/v1/runs");
    assert_eq!(code, 405);
    let (code, _) = request(&addr, "GET", "/nope");
    assert_eq!(code, 404);
}

/// Every non-comment line is `name{labels} value`; returns (name, labels, value).
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "bad labels in {line}");
                (n.to_string(), l.to_string())
            }
            None => (series.to_string(), String::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name {name}"
        );
        out.push((name, labels, value));
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn secrets_stay_out_of_alerts_and_api() {
    let hook = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = Arc::clone(&hook);
    let server = FakeServer::start(
        loopback(),
        Box::new(move |req: &Seen| {
            h.lock().unwrap().push(req.body.clone());
            Reply::json(200, serde_json::json!({}))
        }),
    );
    let mut ops = Ops::new();
    ops.env("OPS_WEBHOOK_URL", &server.url())
        .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "1")
        .env("TELEGRAM_API_URL", "http://127.0.0.1:9");
    ops.env("DIGITALOCEAN_TOKEN", "dop_v1_plantedsecret0123456789");
    ops.jobs("version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks:\n      - {kind: exec, name: leak, command: [sh, -c, 'echo $DIGITALOCEAN_TOKEN; exit 1']}\n");
    let run = ops.run(&["run", "p"]);
    run.expect_code(1);
    let mut all = run.all();
    all.push_str(&hook.lock().unwrap().join("\n"));
    all.push_str(&ops.run(&["status", "--json"]).stdout);
    all.push_str(&String::from_utf8_lossy(&std::fs::read(ops.db()).unwrap()));
    for secret in ["plantedsecret0123456789", "telegram-bot-secret-token"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[test]
fn an_undelivered_alert_is_tried_again_on_the_next_run() {
    let status = Arc::new(Mutex::new(503u16));
    let st = Arc::clone(&status);
    let hook = FakeServer::start(
        loopback(),
        Box::new(move |_req: &Seen| Reply::json(*st.lock().unwrap(), serde_json::json!({}))),
    );
    let mut ops = Ops::new();
    ops.env("OPS_WEBHOOK_URL", &hook.url());
    flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    ops.run(&["run", "p"]).expect_code(1);
    assert_eq!(hook.requests().len(), 2, "the failed delivery is retried");
    *status.lock().unwrap() = 200;
    ops.run(&["run", "p"]).expect_code(1);
    ops.run(&["run", "p"]).expect_code(1);
    assert_eq!(
        hook.requests().len(),
        3,
        "once delivered, the streak is quiet"
    );
    let delivered: Vec<i64> = {
        let conn = ops.sqlite();
        let mut stmt = conn
            .prepare("SELECT delivered FROM alerts ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(delivered, [0, 0, 1]);
}
