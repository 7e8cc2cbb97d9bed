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

/// `ops list` skips the database while the state directory says that no profile is disabled
/// (issue 35: on a host, SQLite's parse of the schema was a third of its cost). A database
/// restored from a host where p was disabled finds that file stale: p's next tick says it is
/// disabled and removes the file, and `list` asks the database again.
#[test]
fn a_database_restored_with_a_disabled_profile_is_listed_disabled_after_its_next_tick() {
    let ops = crate::support::Ops::new();
    crate::operator::flaky(&ops, "");
    std::fs::write(ops.path("healthy"), "").unwrap();
    let marker = ops.state_dir().join("profiles-none-disabled");
    ops.run(&["run", "p"]).expect_code(0);
    assert!(
        marker.is_file(),
        "a run with nothing disabled leaves the marker"
    );
    let elsewhere = crate::support::Ops::new();
    crate::operator::flaky(&elsewhere, "");
    elsewhere.run(&["disable", "p"]).expect_code(0);
    assert!(!elsewhere
        .state_dir()
        .join("profiles-none-disabled")
        .exists());
    for file in ["ops.db", "ops.db-wal"] {
        let _ = std::fs::remove_file(ops.state_dir().join(file));
        if elsewhere.state_dir().join(file).exists() {
            std::fs::copy(elsewhere.state_dir().join(file), ops.state_dir().join(file)).unwrap();
        }
    }
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("disabled (ops enable p to resume)");
    assert!(
        !marker.exists(),
        "the run that found p disabled removed the stale marker"
    );
    let list = ops.run(&["list"]);
    list.expect_code(0)
        .expect_stdout("disabled (ops enable p to resume)");
    ops.run(&["enable", "p"]).expect_code(0);
    assert!(marker.is_file(), "enabled again: nothing is disabled");
    assert!(!ops.run(&["list"]).stdout.contains("disabled"));
}

/// `ops disable` while a run of the profile is under way: the run's own save at its end counts
/// its streak on the record as it is then, so the disable stays (before, the run wrote back the
/// copy it read at its start, and the profile ran again at the next tick as if never disabled).
#[test]
fn a_profile_disabled_while_its_run_is_under_way_stays_disabled_after_the_run() {
    let ops = crate::support::Ops::new();
    let (started, go) = (ops.path("started"), ops.path("go"));
    ops.jobs(&format!(
        "version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks:\n      - {{kind: exec, name: wait, command: [sh, -c, 'touch {}; while [ ! -f {} ]; do sleep 0.05; done']}}\n",
        started.display(),
        go.display()
    ));
    let mut run = ops.spawn(&["run", "p"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run's task never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ops.run(&["disable", "p"]).expect_code(0);
    std::fs::write(&go, "").unwrap();
    assert!(run.wait().unwrap().success());
    let status = ops.run(&["status", "--json"]).json();
    assert_eq!(status["profiles"][0]["disabled"], true, "{status}");
    ops.run(&["list"])
        .expect_code(0)
        .expect_stdout("disabled (ops enable p to resume)");
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("p: disabled (ops enable p to resume)");
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

#[test]
fn doctor_suggests_the_nearest_image_from_digitaloceans_own_list() {
    let api = crate::support::digitalocean::FakeDo::start();
    let mut ops = crate::support::Ops::new();
    ops.env("DIGITALOCEAN_TOKEN", crate::support::digitalocean::DO_TOKEN)
        .env("DIGITALOCEAN_API_URL", &api.server.url())
        .env("SUPERVISOR_IMAGE", "ubuntu-22-04-x46");
    crate::operator::flaky(&ops, "");
    let run = ops.run(&["doctor"]);
    run.expect_code(1).expect_stdout(
        "✗ SUPERVISOR_IMAGE=ubuntu-22-04-x46 is not a DigitalOcean image: did you mean ubuntu-22-04-x64?",
    );
    ops.env("SUPERVISOR_IMAGE", "windows-2022");
    let run = ops.run(&["doctor"]);
    run.expect_code(1)
        .expect_stdout("✗ SUPERVISOR_IMAGE=windows-2022 is not a DigitalOcean image: use a slug from doctl compute image list-distribution");
    assert!(
        !run.stdout.contains("such as ubuntu-24-04-x64"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_upgrade_is_not_a_scale_in_and_never_reads_more_healthy_than_wanted() {
    let mut f = fleet("boot_grace: 10m, min: 1, max: 3");
    let (a, _sup_a) = f.one_healthy();
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    let mut runs = vec![f.health()];
    runs[0].expect_code(0).expect_stdout("rolling replace");
    let b = *f.ids().iter().find(|id| **id != a).unwrap();
    let _sup_b = f.serve(b, true);
    for _ in 0..3 {
        runs.push(f.health());
    }
    for run in &runs {
        run.expect_code(0);
        assert!(!run.stdout.contains("scale in"), "{}", run.stdout);
        for line in run.stderr.lines().filter(|l| l.contains(" healthy")) {
            let Some((n, rest)) = line.split_once("ok: ").and_then(|(_, r)| r.split_once('/'))
            else {
                continue;
            };
            let m: String = rest.chars().take_while(char::is_ascii_digit).collect();
            assert!(
                n.parse::<u32>().unwrap() <= m.parse::<u32>().unwrap(),
                "{line}"
            );
        }
    }
}

/// The docs' promises that a test can check: the README's first dry run, and that
/// docs/what-ops-changes.md lists exactly the events ops records.
#[test]
fn the_docs_promises_hold() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |file: &str| std::fs::read_to_string(format!("{root}/{file}")).unwrap();
    // README: "With nothing configured, the dry run above prints one line per task saying what
    // is missing … and exits 2, a configuration error; nothing is created, not even the state
    // directory."
    let readme = read("README.md");
    assert!(
        readme.contains("run hourly --dry-run"),
        "the README's dry run"
    );
    assert!(readme.contains(
        "exits 2, a configuration error; nothing is\ncreated, not even the state directory"
    ));
    let ops = crate::support::Ops::new();
    ops.jobs(&read("jobs.yaml"));
    let dry = ops.run(&["run", "hourly", "--dry-run"]);
    dry.expect_code(2).expect_stdout("not configured: set ");
    assert!(
        !ops.state_dir().exists(),
        "the dry run created the state directory"
    );
    // what-ops-changes.md: every event kind it names is one ops records, and every kind ops
    // records is on the page.
    let page = read("docs/what-ops-changes.md");
    let documented: std::collections::BTreeSet<String> = page
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.trim_end_matches('|').rsplit('|').next())
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|k| {
            k.contains('.')
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
        })
        .collect();
    assert!(documented.len() > 10, "{documented:?}");
    let prefixes: std::collections::BTreeSet<String> = documented
        .iter()
        .filter_map(|k| k.split_once('.'))
        .map(|(p, _)| p.to_string())
        .collect();
    // The prose below the table names some too (`droplet.adopted`).
    let documented: std::collections::BTreeSet<String> = page
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| {
            k.split_once('.').is_some_and(|(p, v)| {
                prefixes.contains(p)
                    && !v.is_empty()
                    && v.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .map(str::to_string)
        .collect();
    let mut recorded = std::collections::BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(format!("{root}/src"))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Each `"<prefix>.<verb>"` string literal.
            for prefix in &prefixes {
                let open = format!("\"{prefix}.");
                for (at, _) in text.match_indices(&open) {
                    let rest = &text[at + open.len()..];
                    let verb: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !verb.is_empty() && rest[verb.len()..].starts_with('"') {
                        recorded.insert(format!("{prefix}.{verb}"));
                    }
                }
            }
        }
    }
    assert_eq!(
        recorded.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "recorded by ops but not on docs/what-ops-changes.md"
    );
    assert_eq!(
        documented.difference(&recorded).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "on docs/what-ops-changes.md but never recorded"
    );
}

#[test]
fn an_origin_change_names_the_field_that_changed() {
    let f = fleet("boot_grace: 10m");
    let (_a, _sup) = f.one_healthy();
    let other = crate::support::railway::FakeWebapp::start();
    f.s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = serde_json::json!(other.origin());
    });
    f.run(&["run", "extract", "--refresh"])
        .expect_code(0)
        .expect_stdout("changed since the last extraction: API origin");
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(0)
        .expect_stdout("spec drift (OTEL_EXPORTER_OTLP_ENDPOINT changed, TRIGGER_API_URL changed)");
    assert!(!dry.stdout.contains("spec changed"), "{}", dry.stdout);
}

/// One rule when a registry cannot be reached from this host (here: no DNS at all): the same
/// mark for the Railway registry and the public ones.
#[test]
fn every_registry_this_host_cannot_reach_gets_the_same_mark() {
    let f = fleet("boot_grace: 10m");
    let run = f.run(&["doctor"]);
    let marks: Vec<char> = run
        .stdout
        .lines()
        .filter(|l| l.contains("cannot be reached") || l.contains("registry-prod.invalid"))
        .filter_map(|l| l.chars().next())
        .collect();
    assert!(marks.len() >= 3, "{}", run.stdout);
    assert!(marks.iter().all(|m| *m == marks[0]), "{}", run.stdout);
}
