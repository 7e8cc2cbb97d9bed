//! The crontab and systemd timers fire at the same minutes as the cron expressions: checked
//! against our cron parser always, and against `systemd-analyze calendar` where it exists.

use std::process::Command;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use trigger_ops::schedule::Cron;

use crate::support::Ops;

const EXPRESSIONS: &[&str] = &[
    "* * * * *",
    "*/5 * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "5,35 9-17 * * 1-5",
    "0 0 * * 0",
    "0 0 * * 7",
    "0 0 * * 5-7",
    "15 14 1 * *",
    "0 22 * * mon,wed,fri",
    "0 0 1 jan,jul *",
    "10-50/20 * * * *",
    "0 */6 * * *",
    "0 8-18/2 * * 1-5",
    "59 23 31 12 *",
    "0 0 29 2 *",
    "7 * * * sat,sun",
    "*/7 3 * * *",
    "0 12 1-7 * *",
];

fn jobs_for_all() -> String {
    let mut yaml = String::from("version: 1\nprofiles:\n");
    for (i, expr) in EXPRESSIONS.iter().enumerate() {
        yaml.push_str(&format!(
            "  p{i}:\n    cron: {expr:?}\n    tasks: [extract]\n"
        ));
    }
    yaml.push_str("  off:\n    cron: '* * * * *'\n    enabled: false\n    tasks: [extract]\n");
    yaml
}

fn rendered_calendars(ops: &Ops) -> Vec<String> {
    let out = ops.path("units");
    ops.run(&["render-systemd", "--out", out.to_str().unwrap()])
        .expect_code(0);
    (0..EXPRESSIONS.len())
        .map(|i| {
            let timer = std::fs::read_to_string(out.join(format!("ops-p{i}.timer"))).unwrap();
            assert!(timer.contains("Persistent=true"));
            timer
                .lines()
                .find_map(|l| l.strip_prefix("OnCalendar="))
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Evaluates the OnCalendar subset `ops` emits: `[DOW ]*-MONTH-DAY HOUR:MINUTE:00`, each field
/// `*`, `start/step`, or a list of values and `a..b` ranges.
struct Calendar {
    dow: Option<Vec<u32>>,
    month: Vec<u32>,
    day: Vec<u32>,
    hour: Vec<u32>,
    minute: Vec<u32>,
}

fn field(text: &str, min: u32, max: u32) -> Vec<u32> {
    if text == "*" {
        return (min..=max).collect();
    }
    if let Some((start, step)) = text.split_once('/') {
        let (start, step): (u32, u32) = (start.parse().unwrap(), step.parse().unwrap());
        return (start..=max).step_by(step as usize).collect();
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once("..") {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

fn dow_index(name: &str) -> u32 {
    ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        .iter()
        .position(|d| *d == name)
        .unwrap() as u32
}

impl Calendar {
    fn parse(text: &str) -> Calendar {
        let parts: Vec<&str> = text.split(' ').collect();
        let (dow, date, time) = match parts.len() {
            3 => (Some(parts[0]), parts[1], parts[2]),
            2 => (None, parts[0], parts[1]),
            _ => panic!("unexpected OnCalendar {text}"),
        };
        let dow = dow.map(|d| {
            let mut out = Vec::new();
            for part in d.split(',') {
                match part.split_once("..") {
                    Some((a, b)) => {
                        let (a, b) = ((dow_index(a) + 6) % 7, (dow_index(b) + 6) % 7);
                        out.extend((a..=b).map(|i| (i + 1) % 7));
                    }
                    None => out.push(dow_index(part)),
                }
            }
            out
        });
        let date: Vec<&str> = date.split('-').collect();
        assert_eq!(date[0], "*");
        let time: Vec<&str> = time.split(':').collect();
        assert_eq!(time[2], "00");
        Calendar {
            dow,
            month: field(date[1], 1, 12),
            day: field(date[2], 1, 31),
            hour: field(time[0], 0, 23),
            minute: field(time[1], 0, 59),
        }
    }

    fn matches(&self, t: NaiveDateTime) -> bool {
        self.dow
            .as_ref()
            .is_none_or(|d| d.contains(&t.weekday().num_days_from_sunday()))
            && self.month.contains(&t.month())
            && self.day.contains(&t.day())
            && self.hour.contains(&t.hour())
            && self.minute.contains(&t.minute())
    }

    fn next_after(&self, after: NaiveDateTime) -> NaiveDateTime {
        let mut t = after + chrono::Duration::minutes(1);
        loop {
            if !(self.month.contains(&t.month())
                && self.day.contains(&t.day())
                && self
                    .dow
                    .as_ref()
                    .is_none_or(|d| d.contains(&t.weekday().num_days_from_sunday())))
            {
                t = t.date().succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap();
                continue;
            }
            if self.matches(t) {
                return t;
            }
            t += chrono::Duration::minutes(1);
        }
    }
}

fn base() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

#[test]
fn on_calendar_matches_cron_next_times() {
    let ops = Ops::new();
    ops.jobs(&jobs_for_all());
    let calendars = rendered_calendars(&ops);
    assert!(!std::fs::read_dir(ops.path("units"))
        .unwrap()
        .any(|e| e.unwrap().file_name() == "ops-off.timer"));
    for (expr, cal) in EXPRESSIONS.iter().zip(&calendars) {
        let cron = Cron::parse(expr).unwrap();
        let parsed = Calendar::parse(cal);
        let (mut a, mut b) = (base(), base());
        for i in 0..60 {
            a = cron.next_after(a).unwrap();
            b = parsed.next_after(b);
            assert_eq!(a, b, "{expr} vs OnCalendar={cal}: iteration {i}");
        }
    }
}

#[test]
fn on_calendar_matches_systemd_analyze() {
    if !crate::support::tool("systemd-analyze") {
        return;
    }
    let ops = Ops::new();
    ops.jobs(&jobs_for_all());
    let calendars = rendered_calendars(&ops);
    let n = 25;
    for (expr, cal) in EXPRESSIONS.iter().zip(&calendars) {
        let out = Command::new("systemd-analyze")
            .env("TZ", "UTC")
            .args([
                "calendar",
                "--base-time=2026-01-01 00:00:00 UTC",
                &format!("--iterations={n}"),
                cal,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze rejected {cal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let times: Vec<NaiveDateTime> = text
            .lines()
            .filter(|l| l.contains("Next elapse:") || l.contains("Iter. #"))
            .map(|l| {
                let v = l.split_once(": ").unwrap().1.trim();
                // "Thu 2026-01-01 00:05:00 UTC"
                let v = v.split(' ').skip(1).take(2).collect::<Vec<_>>().join(" ");
                NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S").unwrap()
            })
            .collect();
        assert_eq!(times.len(), n, "{cal}: {text}");
        let cron = Cron::parse(expr).unwrap();
        let mut t = base();
        for (i, want) in times.iter().enumerate() {
            t = cron.next_after(t).unwrap();
            assert_eq!(&t, want, "{expr} (OnCalendar={cal}) iteration {i}");
        }
    }
}

#[test]
fn dom_and_dow_together_cannot_be_a_timer() {
    let ops = Ops::new();
    ops.jobs("version: 1\nprofiles:\n  both:\n    cron: '0 0 1 * 1'\n    tasks: [extract]\n");
    ops.run(&["render-systemd"])
        .expect_code(2)
        .expect_stderr("profile \"both\"");
    // supercronic understands it, so the crontab renders.
    ops.run(&["render-crontab"])
        .expect_code(0)
        .expect_stdout("0 0 1 * 1 ");
}

#[test]
fn crontab_has_one_line_per_enabled_profile_with_absolute_paths() {
    let ops = Ops::new();
    ops.jobs(&jobs_for_all());
    let run = ops.run(&["render-crontab"]);
    run.expect_code(0);
    assert!(run.stdout.starts_with("# Rendered by ops"));
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), EXPRESSIONS.len());
    for (line, expr) in lines.iter().zip(EXPRESSIONS) {
        assert!(line.starts_with(&format!("{expr} /")), "{line}");
        assert!(line.contains(&format!(
            "--config {}",
            ops.path("jobs.yaml").canonicalize().unwrap().display()
        )));
        assert!(line.contains("--state-dir /"));
        // Every line parses back as a cron expression.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let n = if expr.starts_with('@') { 1 } else { 5 };
        Cron::parse(&fields[..n].join(" ")).unwrap();
    }
    assert!(!run.stdout.contains("run off"));
}

#[test]
fn systemd_units_are_hardened_oneshots() {
    let ops = Ops::new();
    ops.jobs("version: 1\nprofiles:\n  health:\n    cron: '* * * * *'\n    timeout: 2m\n    tasks: [supervisor]\n");
    let out = ops.path("units");
    ops.run(&["render-systemd", "--out", out.to_str().unwrap()])
        .expect_code(0);
    let service = std::fs::read_to_string(out.join("ops-health.service")).unwrap();
    for needle in [
        "Type=oneshot",
        "ProtectSystem=strict",
        "StateDirectory=ops",
        "NoNewPrivileges=yes",
        "TimeoutStartSec=150",
        " run health",
    ] {
        assert!(
            service.contains(needle),
            "service lacks {needle}:\n{service}"
        );
    }
    let verify = Command::new("systemd-analyze").arg("--version").output();
    if verify.is_ok_and(|o| o.status.success()) {
        // Rendered ExecStart points at the test binary, which exists, so verify can resolve it.
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(out.join("ops-health.timer"))
            .arg(out.join("ops-health.service"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let relevant: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("ops-health") && !l.contains("User=") && !l.contains("Group="))
            .collect();
        assert!(relevant.is_empty(), "systemd-analyze verify: {err}");
    }
}
