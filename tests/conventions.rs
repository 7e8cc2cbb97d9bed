//! Operator conventions (#29): plans that read like terraform's, one JSON and time format,
//! journald priorities, checks that catch what would fail at 3 am.

use std::process::Stdio;

use serde_json::Value;

use crate::extract::scenario;
use crate::support::digitalocean::{FakeDo, DO_TOKEN};
use crate::support::{exec_profile, Ops};

#[test]
fn a_dry_run_prints_the_plan_line_and_the_real_run_says_it_in_the_past_tense() {
    let s = scenario("extract");
    let dry = s.ops.run(&["run", "extract", "--dry-run"]);
    dry.expect_code(0)
        .expect_stdout("would cache the worker token")
        .expect_stdout("plan: cache worker token, store config record");
    let json = s.ops.run(&["run", "extract", "--dry-run", "--json"]).json();
    assert_eq!(json["schema_version"], 1);
    let actions = json["tasks"][0]["actions"].as_array().unwrap();
    assert_eq!(actions[0]["type"], "cache");
    assert_eq!(actions[0]["resource"], "worker token");
    assert_eq!(actions[1]["type"], "store");
    assert_eq!(actions[1]["resource"], "config record");
    // --detailed-exitcode: 3 while changes are planned, 0 once there are none.
    s.ops
        .run(&["run", "extract", "--dry-run", "--detailed-exitcode"])
        .expect_code(3);
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("cached the worker token")
        .expect_stdout("stored the config record")
        .expect_stdout("applied: cached worker token, stored config record");
    s.ops
        .run(&["run", "extract", "--dry-run", "--detailed-exitcode"])
        .expect_code(0)
        .expect_stdout("plan: no changes");
    // Only meaningful on a dry run.
    s.ops
        .run(&["run", "extract", "--detailed-exitcode"])
        .expect_code(2);
}

#[test]
fn under_journald_errors_carry_their_priority_and_the_table_is_not_repeated() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["false"], ""));
    let out = ops.path("stdout");
    let file = std::fs::File::create(&out).unwrap();
    let stream = {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().unwrap();
        format!("{}:{}", m.dev(), m.ino())
    };
    let run = ops
        .command(&["run", "p"])
        .env("JOURNAL_STREAM", &stream)
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<3>error: p/step: failed")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<3>error: profile p: failed in")),
        "{stderr}"
    );
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(
        !printed.contains("TASK"),
        "the table went to the journal: {printed}"
    );
    // An operator's terminal (stdout not the journal's stream) still gets the table.
    let mut ops = ops;
    ops.env("JOURNAL_STREAM", "1:2");
    let run = ops.run(&["run", "p"]);
    run.expect_code(1).expect_stdout("TASK");
    assert!(run.stderr.contains("<3>error:"), "{}", run.stderr);
}

fn with_digitalocean(api: &FakeDo) -> Ops {
    let mut ops = Ops::new();
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.env("DIGITALOCEAN_TOKEN", DO_TOKEN)
        .env("DIGITALOCEAN_API_URL", &api.server.url());
    ops
}

#[test]
fn doctor_names_the_droplet_setting_digitalocean_does_not_know() {
    let api = FakeDo::start();
    let mut ops = with_digitalocean(&api);
    ops.env("SUPERVISOR_SIZE", "s-2vcpu-3gb")
        .env("SUPERVISOR_REGION", "fra1")
        .env("SUPERVISOR_IMAGE", "docker-20-04")
        .env("SUPERVISOR_SSH_KEYS", "289794,aa:bb");
    ops.run(&["doctor"])
        .expect_code(1)
        .expect_stdout("✓ SUPERVISOR_REGION=fra1 takes new droplets")
        .expect_stdout("✗ SUPERVISOR_SIZE=s-2vcpu-3gb is not a DigitalOcean size: use one of ")
        .expect_stdout("s-1vcpu-1gb, s-2vcpu-2gb")
        .expect_stdout("✗ SUPERVISOR_IMAGE=docker-20-04 is not a DigitalOcean image")
        .expect_stdout("✗ SUPERVISOR_SSH_KEYS names aa:bb that the account does not have");
    let doc = ops.run(&["doctor", "--json"]).json();
    assert_eq!(
        (doc["schema_version"].as_u64(), doc["exit_code"].as_i64()),
        (Some(1), Some(1))
    );
    let checks = doc["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["status"] == "failed"
        && c["message"]
            .as_str()
            .unwrap()
            .starts_with("SUPERVISOR_SIZE=s-2vcpu-3gb")));
    let mut ops = with_digitalocean(&api);
    ops.env("SUPERVISOR_SIZE", "s-4vcpu-8gb")
        .env("SUPERVISOR_REGION", "ams3");
    let run = ops.run(&["doctor"]);
    run.expect_stdout("✓ SUPERVISOR_SIZE=s-4vcpu-8gb (4 vCPU, 8192 MB) is offered in ams3")
        .expect_stdout("✓ SUPERVISOR_IMAGE=ubuntu-24-04-x64 exists");
    assert!(!run.stdout.contains("✗ SUPERVISOR_"), "{}", run.stdout);
}

#[test]
fn check_refuses_a_database_url_every_run_would_refuse_and_suggests_near_names() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.env_file("DATABASE_URL=postgres://u:pw@db.example.com:5432/railway?sslmode=require&statement_timout=5s\nSUPERVISR_COUNT=2\nMY_OWN_SETTING=1\n");
    let run = ops.run(&["check"]);
    run.expect_code(2)
        .expect_stdout("✗ DATABASE_URL: DATABASE_URL has an unknown parameter \"statement_timout\"")
        .expect_stdout("! SUPERVISR_COUNT in the env file is not a setting ops reads, so it is ignored: did you mean SUPERVISOR_COUNT?");
    assert!(!run.stdout.contains("MY_OWN_SETTING"), "{}", run.stdout);
    assert!(!run.all().contains(":pw@"), "{}", run.all());
    let doc = ops.run(&["check", "--json"]).json();
    assert_eq!(doc["exit_code"], 2);
    assert_eq!(doc["ok"], false);
    ops.env_file("DATABASE_URL=postgres://u:pw@db.example.com:5432/railway?sslmode=require\n");
    ops.run(&["check"])
        .expect_code(0)
        .expect_stdout("✓ DATABASE_URL parses (db.example.com:5432)");
}

#[test]
fn not_configured_is_a_configuration_error_whatever_is_missing() {
    let ops = Ops::new();
    ops.jobs("version: 1\nprofiles:\n  health:\n    cron: '* * * * *'\n    tasks: [supervisor]\n  replication:\n    cron: '* * * * *'\n    tasks: [replication]\n");
    ops.run(&["run", "replication"])
        .expect_code(2)
        .expect_stdout("not configured: set DATABASE_URL");
    ops.run(&["run", "health"])
        .expect_code(2)
        .expect_stdout("not configured: set DIGITALOCEAN_TOKEN");
}

/// Every timestamp in every JSON document ops prints or serves: a string, RFC 3339 with its zone.
/// A field is a timestamp when its name says so (`*_at`, `at`, `next_run`, `time`) or when its
/// value looks like a date.
fn timestamps(doc: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                let named = k.ends_with("_at") || k == "at" || k == "next_run" || k == "time";
                if named && !v.is_null() {
                    out.push((format!("{path}.{k}"), v.clone()));
                }
                timestamps(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                timestamps(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => {
            let looks = s.len() >= 10
                && s.as_bytes()[4] == b'-'
                && s.as_bytes()[7] == b'-'
                && s[..4].bytes().all(|b| b.is_ascii_digit());
            if looks && !out.iter().any(|(p, _)| p == path) {
                out.push((path.to_string(), doc.clone()));
            }
        }
        _ => {}
    }
}

#[test]
fn every_json_timestamp_of_every_command_is_rfc3339_with_its_zone() {
    let telegram = crate::operator::server(200);
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", "123456:telegram-bot-secret-token")
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", &telegram.url());
    crate::operator::flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    ops.run(&["status"])
        .expect_code(0)
        .expect_stdout("times are local (UTC");
    let (_served, addr) = crate::operator::Served::start(&ops);
    let mut docs: Vec<(String, Value)> = [
        vec!["run", "p", "--json"],
        vec!["run", "p", "--dry-run", "--json"],
        vec!["list", "--json"],
        vec!["history", "--json"],
        vec!["history", "show", "1", "--json"],
        vec!["events", "--json"],
        vec!["status", "--json"],
        vec!["check", "--json"],
        vec!["doctor", "--json"],
    ]
    .iter()
    .map(|args| (args.join(" "), ops.run(args).json()))
    .collect();
    for path in [
        "/healthz",
        "/v1/runs",
        "/v1/alerts",
        "/v1/events",
        "/v1/status",
    ] {
        let (code, body) = crate::operator::request(&addr, "GET", path);
        assert_eq!(code, 200, "{path}");
        docs.push((path.to_string(), serde_json::from_str(&body).unwrap()));
    }
    let mut seen = 0;
    for (command, doc) in &docs {
        assert_eq!(doc["schema_version"], 1, "{command}: no schema_version");
        let mut found = Vec::new();
        timestamps(doc, "", &mut found);
        for (path, v) in &found {
            let text = v
                .as_str()
                .unwrap_or_else(|| panic!("{command}: {path} is {v}, not an RFC 3339 string"));
            assert!(
                chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                "{command}: {path} = {text:?} is not RFC 3339 with a zone"
            );
        }
        seen += found.len();
    }
    // The run, the history, the status and the alerts carry times: the walk found them.
    assert!(seen >= 10, "only {seen} timestamps seen");
    // One shape for a task's detail, in a run and in the history.
    let run = &docs[0].1["tasks"][0];
    let recorded = &docs[4].1["run"]["tasks"][0];
    assert_eq!(run["name"], recorded["name"]);
    assert!(run["detail"].is_array() && recorded["detail"].is_array());
}

#[test]
fn history_show_prints_one_run_in_full_with_its_zone() {
    let ops = Ops::new();
    ops.jobs(&exec_profile(
        "p",
        &["sh", "-c", "echo first; echo second; exit 3"],
        "",
    ));
    ops.run(&["run", "p"]).expect_code(1);
    let run = ops.run(&["history", "show", "1"]);
    run.expect_code(0)
        .expect_stdout("run 1: profile p, failed")
        .expect_stdout("second");
    let started = run.stdout.lines().nth(1).unwrap();
    assert!(
        started.starts_with("started 2") && (started.contains(" +") || started.contains(" -")),
        "{started}"
    );
    ops.run(&["history", "show", "99"]).expect_code(1);
}

/// The whole HTTP answer (head and body) to one request.
fn raw(addr: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_count_undelivered_alerts_and_serve_answers_head() {
    let hook = crate::operator::server(503);
    let mut ops = Ops::new();
    ops.env("OPS_WEBHOOK_URL", &hook.url());
    crate::operator::flaky(&ops, "");
    ops.run(&["run", "p"]).expect_code(1);
    let (_served, addr) = crate::operator::Served::start(&ops);
    let (_, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert!(
        metrics.contains("ops_alert_delivery_failures_total{channel=\"webhook\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ops_alert_delivery_failures_total{channel=\"telegram\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE ops_build_info gauge\n"),
        "{metrics}"
    );
    let head = raw(&addr, "HEAD", "/metrics");
    let (top, body) = head.split_once("\r\n\r\n").unwrap();
    assert!(top.starts_with("HTTP/1.1 200"), "{top}");
    let length: usize = top
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(length > 100 && body.is_empty(), "{top}\n{body:?}");
    assert!(raw(&addr, "DELETE", "/metrics").contains("Allow: GET, HEAD"));
}

#[test]
fn serve_warns_when_it_listens_beyond_loopback() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["true"], ""));
    let port = crate::support::digitalocean::free_port();
    let mut child = ops
        .command(&["serve", "--listen", &format!("0.0.0.0:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) => {
                assert!(std::time::Instant::now() < until, "serve did not start");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    // An answer means serve is past its start (the warning comes between bind and accept; a
    // kill at the first connect could land before it was written).
    {
        use std::io::{Read, Write};
        write!(stream, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warn: serve --listen 0.0.0.0:"), "{stderr}");
    assert!(stderr.contains("is not a loopback address"), "{stderr}");
}

#[test]
fn run_help_names_the_profiles_of_the_jobs_file_in_effect() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("nightly-backup", &["true"], ""));
    ops.run(&["run", "--help"])
        .expect_code(0)
        .expect_stdout("(ops list shows them): nightly-backup")
        .expect_stdout("Exit status:");
}
