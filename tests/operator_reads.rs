//! What the operator reads (issue 34): human durations, status lines that keep their end, each
//! change said once, the summary naming every outside change, a disabled profile shown so, and
//! exit codes, checks and docs that agree.

use std::time::Duration;

use crate::supervisor::{fleet, Fleet};
use crate::support::webapp;

fn name_of(f: &Fleet, id: u64) -> String {
    f.api
        .with(|w| w.droplets.iter().find(|d| d.id == id).unwrap().name.clone())
}

/// Every text a person reads: stdout and stderr of each command.
#[derive(Default)]
struct Transcript(Vec<(String, String)>);

impl Transcript {
    fn keep(&mut self, label: &str, run: crate::support::Run) -> crate::support::Run {
        self.0.push((label.to_string(), run.all()));
        run
    }

    /// `3598192ms`: a duration a person has to decode (a millisecond count of a second or more).
    fn undecoded(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (label, text) in &self.0 {
            for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
                if let Some(n) = word.strip_suffix("ms") {
                    if n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()) {
                        found.push(format!("{label}: {word}"));
                    }
                }
            }
        }
        found
    }
}

/// One healthy droplet A with a run executing on it, then an upgrade: B comes up, A drains.
fn an_upgrade_draining_a_busy_droplet(f: &mut Fleet, t: &mut Transcript) -> (u64, u64) {
    t.keep("first run", f.health()).expect_code(0);
    let a = f.ids()[0];
    let sup_a = f.serve(a, true);
    t.keep("healthy run", f.health()).expect_code(0);
    webapp::executing_run(&mut f.db(), "long1", &name_of(f, a), "small-1x");
    f.api.with(|w| w.hold_shutdown = true);
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    t.keep("upgrade, dry run", f.run(&["run", "health", "--dry-run"]))
        .expect_code(0);
    t.keep("upgrade", f.health())
        .expect_code(0)
        .expect_stdout("rolling replace");
    let b = *f.ids().iter().find(|id| **id != a).unwrap();
    let sup_b = f.serve(b, true);
    t.keep("drain starts", f.health())
        .expect_code(0)
        .expect_stdout("told it to stop taking runs");
    std::mem::forget((sup_a, sup_b));
    (a, b)
}

#[test]
fn every_duration_a_person_reads_is_human() {
    let mut f = fleet("boot_grace: 10m");
    let mut t = Transcript::default();
    an_upgrade_draining_a_busy_droplet(&mut f, &mut t);
    std::thread::sleep(Duration::from_millis(1100));
    t.keep("drain waits", f.health())
        .expect_code(0)
        .expect_stdout("deleted once idle, or in 59m58s (drain_timeout 1h)");
    for args in [
        &["status"][..],
        &["events"],
        &["history"],
        &["history", "show", "3"],
        &["list"],
    ] {
        t.keep(&args.join(" "), f.run(args)).expect_code(0);
    }
    assert_eq!(t.undecoded(), Vec::<String>::new());
    // JSON keeps numbers, the unit in the key.
    let status = f.run(&["status", "--json"]).json();
    assert!(status["profiles"][1]["last_run"]["duration_ms"].is_i64());
}

#[test]
fn status_keeps_the_end_of_every_line_names_the_fleet_once_and_shows_its_cost() {
    let mut f = fleet("boot_grace: 10m, min: 1, max: 3");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.health().expect_code(0);
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    f.run(&["run", "extract"]).expect_code(0);
    let status = f.run(&["status"]);
    status.expect_code(0);
    let text = &status.stdout;
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    assert!(!text.contains('…'), "a line was cut:\n{text}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(flat.matches("wanted").count(), 1, "{text}");
    assert!(
        flat.contains("fleet: 1 wanted, 1 serving: 0 run(s) can start now"),
        "{text}"
    );
    assert!(flat.contains("/month ($"), "the cost: {text}");
    assert!(
        flat.contains("unset TRIGGER_VERSION to follow the webapp"),
        "{text}"
    );
}

#[test]
fn a_change_is_logged_once_and_a_droplet_line_names_its_droplet_once() {
    let mut f = fleet("boot_grace: 10m");
    let mut t = Transcript::default();
    let (a, _b) = an_upgrade_draining_a_busy_droplet(&mut f, &mut t);
    let name = name_of(&f, a);
    let waits = f.health();
    waits.expect_code(0);
    for line in waits.stdout.lines() {
        assert!(line.matches(&name).count() <= 1, "{line}");
    }
    f.api.with(|w| w.hold_shutdown = false);
    webapp::finish_run(&mut f.db(), "long1");
    let deleted = (0..15)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1000));
            f.health()
        })
        .find(|r| r.stdout.contains("deleted droplet"))
        .expect("the drained droplet is deleted");
    let logged = deleted
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("deleted droplet {name}")))
        .count();
    assert_eq!(logged, 1, "{}", deleted.stderr);
}

#[test]
fn a_disabled_profile_is_shown_disabled_in_status_check_and_list() {
    let ops = crate::support::Ops::new();
    crate::operator::flaky(&ops, "");
    std::fs::write(ops.path("healthy"), "").unwrap();
    ops.run(&["status"])
        .expect_code(0)
        .expect_stdout("nothing has run yet");
    ops.run(&["run", "p"]).expect_code(0);
    ops.run(&["status", "--check"])
        .expect_code(0)
        .expect_stdout("no problems");
    ops.run(&["disable", "p"]).expect_code(0);
    let status = ops.run(&["status", "--check"]);
    status
        .expect_code(1)
        .expect_stdout("PROBLEMS (1)")
        .expect_stdout("profile p does not run: disabled (ops enable p to resume)");
    assert!(!status.stdout.contains("no problems"), "{}", status.stdout);
    let row = |run: &crate::support::Run| {
        run.stdout
            .lines()
            .find(|l| l.starts_with("p "))
            .unwrap_or_else(|| panic!("no row for p:\n{}", run.stdout))
            .to_string()
    };
    let status_row = row(&status);
    assert!(status_row.contains("disabled"), "{status_row}");
    let list = ops.run(&["list"]);
    list.expect_code(0);
    let list_row = row(&list);
    assert!(
        list_row.contains("disabled (ops enable p to resume)") && !list_row.contains(" yes "),
        "{list_row}"
    );
    assert!(list_row.contains(" - "), "no next run: {list_row}");
    let json = ops.run(&["list", "--json"]).json();
    assert!(json["profiles"][0]["next_run"].is_null());
    ops.run(&["enable", "p"]).expect_code(0);
    assert!(row(&ops.run(&["list"])).contains(" yes "));
}

#[test]
fn status_under_a_broken_jobs_yaml_shows_the_droplets_and_the_last_runs_below_the_error() {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    f.health().expect_code(0);
    let name = name_of(&f, f.ids()[0]);
    let short = name.strip_prefix("trigger-supervisor-").unwrap();
    f.s.ops
        .jobs("version: 1\nprofiles:\n  health:\n    cron: [not a cron\n");
    let status = f.run(&["status"]);
    status
        .expect_code(2)
        .expect_stdout("configuration error")
        .expect_stdout("jobs.yaml:4")
        .expect_stdout(short)
        .expect_stdout("supervisor:ok");
    let error_at = status.stdout.find("configuration error").unwrap();
    assert!(error_at < status.stdout.find(short).unwrap());
    let json = f.run(&["status", "--json"]);
    json.expect_code(2);
    let doc = json.json();
    assert!(doc["config_error"].as_str().unwrap().contains("jobs.yaml"));
    assert_eq!(doc["supervisor"]["droplets"][0]["name"], name.as_str());
    assert_eq!(doc["last_runs"][0]["profile"], "health");
}

#[test]
fn a_misspelt_setting_fails_check_strict_is_warned_once_by_run_and_noticed_in_the_process_environment(
) {
    let mut ops = crate::support::Ops::new();
    crate::operator::flaky(&ops, "");
    std::fs::write(ops.path("healthy"), "").unwrap();
    ops.env_file("SUPERVISR_COUNT=2\n");
    ops.run(&["check"])
        .expect_code(0)
        .expect_stdout("did you mean SUPERVISOR_COUNT?");
    ops.run(&["check", "--strict"])
        .expect_code(2)
        .expect_stdout("SUPERVISR_COUNT");
    let run = ops.run(&["run", "p"]);
    run.expect_code(0);
    assert_eq!(
        run.stderr.matches("SUPERVISR_COUNT").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("did you mean SUPERVISOR_COUNT?"));
    ops.env_file("");
    ops.env("SUPERVISOR_SIZ", "s-4vcpu-8gb")
        .env("OPS_STATEDIR", "/tmp/x");
    let check = ops.run(&["check", "--strict"]);
    check
        .expect_code(2)
        .expect_stdout("SUPERVISOR_SIZ in the process environment")
        .expect_stdout("did you mean SUPERVISOR_SIZE?")
        .expect_stdout("OPS_STATEDIR");
}

#[test]
fn an_env_file_error_reads_as_written() {
    let ops = crate::support::Ops::new();
    crate::operator::flaky(&ops, "");
    ops.env_file("SUPERVISOR_COUNT=2\nthis line is not a variable\n");
    let check = ops.run(&["check"]);
    check
        .expect_code(2)
        .expect_stderr("ops.env:2")
        .expect_stderr("expected NAME=value (comment the line out with #");
    assert!(!check.stderr.contains("***"), "{}", check.stderr);
}

#[test]
fn the_summary_names_every_outside_change_the_firewall_the_bake_and_the_drain() {
    let mut f = fleet("boot_grace: 10m, bake: true");
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("plan: create 1 droplet, create firewall, create 1 bake droplet\n");
    f.health()
        .expect_code(0)
        .expect_stdout("applied: created 1 droplet, created firewall, created 1 bake droplet\n");
    let a = f.ids()[0];
    let _sup = f.serve(a, true);
    f.health()
        .expect_code(0)
        .expect_stdout("applied: snapshotted bake droplet\n");
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout("plan: create 1 droplet, drain 1 droplet");
}

/// One rule everywhere: the operator's input is at fault → 2; a task that failed → 1.
#[test]
fn a_bad_database_url_is_exit_2_from_check_run_and_the_dry_run_and_a_failed_task_is_1() {
    let mut ops = crate::support::Ops::new();
    ops.jobs("version: 1\nprofiles:\n  db:\n    cron: '* * * * *'\n    tasks: [replication]\n  p:\n    cron: '* * * * *'\n    tasks:\n      - {kind: exec, name: probe, command: ['false']}\n");
    ops.env("DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/app?bogus=1")
        .env("RAILWAY_API_TOKEN", "railway-token-for-the-test")
        .env("RAILWAY_PROJECT_ID", "p")
        .env("RAILWAY_ENVIRONMENT_ID", "e");
    for args in [&["check"][..], &["run", "db"], &["run", "db", "--dry-run"]] {
        let run = ops.run(args);
        run.expect_code(2);
        assert!(
            run.all().contains("unknown parameter \"bogus\""),
            "{args:?}: {}",
            run.all()
        );
    }
    ops.run(&["run", "p"]).expect_code(1);
}

#[test]
fn render_systemd_warns_of_a_state_directory_its_units_cannot_see() {
    let ops = crate::support::Ops::new();
    crate::operator::flaky(&ops, "");
    assert!(ops.state_dir().starts_with(std::env::temp_dir()));
    let run = ops.run(&["render-systemd"]);
    run.expect_code(0)
        .expect_stdout("PrivateTmp=yes")
        .expect_stderr("PrivateTmp=yes gives each run a /tmp of its own")
        .expect_stderr("--state-dir / OPS_STATE_DIR");
}
