//! Prometheus and Grafana (issue 21): `/metrics` passes `promtool check metrics`, the rules
//! pass `promtool check rules` and their unit tests, every metric the rules and the dashboard
//! name is one `/metrics` exports, and a `_total` counter never goes down.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::operator::{request, Served};
use crate::supervisor::fleet;
use crate::support::webapp;

fn promtool() -> bool {
    let ok = crate::support::tool("promtool");
    assert!(
        ok || std::env::var("CI").is_err(),
        "CI installs promtool (Debian's prometheus package): it is missing"
    );
    ok
}

fn monitoring(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(name)
}

/// `/metrics` of a deployment with a heartbeating supervisor, a waiting run, and a profile
/// whose exec task fails.
fn rich_metrics() -> (crate::supervisor::Fleet, String) {
    let f = fleet("boot_grace: 10m");
    f.s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  extract:\n    cron: '*/15 * * * *'\n    tasks: [extract]\n  health:\n    cron: '* * * * *'\n    tasks:\n      - {{kind: supervisor, health_port: {}, boot_grace: 10m}}\n  nightly:\n    cron: '0 3 * * 1-5'\n    tasks:\n      - {{kind: exec, name: backup, command: ['false']}}\n",
        f.port
    ));
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    // An hour old, with DigitalOcean's monitoring reporting its disk (40% free).
    f.api.with(|w| {
        let d = &mut w.droplets[0];
        d.created_at = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let id = d.id;
        w.disks.insert(id, (16 << 30, 40 << 30));
    });
    webapp::pending_run(&mut f.db(), "waiting", std::time::Duration::from_secs(40));
    f.run(&["run", "health"]).expect_code(0);
    f.run(&["run", "nightly"]).expect_code(1);
    let (_child, addr) = Served::start(&f.s.ops);
    let (code, metrics) = request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    (f, metrics)
}

/// A metric only a `platform: kubernetes` run exports.
fn on_kubernetes(metric: &str) -> bool {
    metric.starts_with("ops_supervisor_kubernetes_") || metric.starts_with("ops_supervisor_doks_")
}

/// Every Kubernetes metric the dashboard names is in `metrics` (a DOKS run's /metrics).
#[track_caller]
pub fn dashboard_kubernetes_metrics_in(metrics: &str) {
    let have = exported(metrics);
    let text = std::fs::read_to_string(monitoring("ops-dashboard.json")).unwrap();
    let used: Vec<String> = named_in(&text)
        .into_iter()
        .filter(|m| on_kubernetes(m))
        .collect();
    assert!(
        used.len() >= 4,
        "the dashboard's Kubernetes panels: {used:?}"
    );
    let missing: Vec<&String> = used.iter().filter(|m| !have.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names Kubernetes metrics /metrics does not export: {missing:?}\n{metrics}"
    );
}

fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn named_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ops_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn metrics_pass_promtool_and_cover_every_metric_the_rules_and_dashboard_use() {
    let (_f, metrics) = rich_metrics();
    let have = exported(&metrics);
    for file in ["ops-rules.yml", "ops-dashboard.json"] {
        let text = std::fs::read_to_string(monitoring(file)).unwrap();
        let used = named_in(&text);
        assert!(used.len() >= 8, "{file}: {used:?}");
        // The Kubernetes panels' metrics: a DOKS world's (doks_platform's first story checks).
        let missing: Vec<&String> = used
            .iter()
            .filter(|m| !have.contains(*m) && !on_kubernetes(m))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics /metrics does not export: {missing:?}\n{metrics}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring("ops-dashboard.json")).unwrap())
            .unwrap();
    assert_eq!(
        dashboard["templating"]["list"][0]["type"], "datasource",
        "datasource as a variable"
    );
    promtool_passes(&metrics);
}

/// `promtool check metrics` finds nothing to say about `metrics` (when promtool is here).
pub fn promtool_passes(metrics: &str) {
    if !promtool() {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics reported: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    if !promtool() {
        return;
    }
    for args in [
        vec!["check", "rules", "ops-rules.yml"],
        vec!["test", "rules", "ops-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(monitoring(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_total_counter_never_goes_down_when_history_is_pruned() {
    let ops = crate::support::Ops::new();
    ops.jobs(&crate::support::exec_profile("p", &["false"], ""));
    for _ in 0..3 {
        ops.run(&["run", "p"]).expect_code(1);
    }
    let value = |ops: &crate::support::Ops| -> f64 {
        let (_child, addr) = Served::start(ops);
        let (_, metrics) = request(&addr, "GET", "/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("ops_task_failures_total{profile=\"p\",task=\"step\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no counter:\n{metrics}"))
    };
    assert_eq!(value(&ops), 3.0);
    // Retention prunes old runs (and their task results) from the history.
    ops.sqlite().execute("DELETE FROM runs", []).unwrap();
    assert_eq!(value(&ops), 3.0, "pruning lowered a _total counter");
    ops.run(&["run", "p"]).expect_code(1);
    assert_eq!(value(&ops), 4.0);
}
