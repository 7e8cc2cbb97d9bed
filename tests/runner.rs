//! Operator stories for `ops run`, locks, state, dry runs, env files and secrets.

use std::time::Duration;

use crate::support::{exec_profile, exec_profile_env, finish, wait_for, Ops};

#[test]
fn list_shows_profiles_with_next_run() {
    let ops = Ops::new();
    ops.jobs(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs.yaml")).unwrap());
    let run = ops.run(&["list"]);
    run.expect_code(0)
        .expect_stdout("health")
        .expect_stdout("*/5 * * * *")
        .expect_stdout("NEXT RUN");
    let json = ops.run(&["list", "--json"]).json();
    let profiles = json["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 4);
    let hourly = profiles.iter().find(|p| p["name"] == "hourly").unwrap();
    assert_eq!(hourly["tasks"].as_array().unwrap().len(), 3);
    let next = hourly["next_run"].as_str().unwrap();
    assert!(next.ends_with(":00Z"), "{next}");
    assert!(chrono::DateTime::parse_from_rfc3339(next).is_ok(), "{next}");
}

#[test]
fn run_ok_records_history() {
    let ops = Ops::new();
    ops.jobs(&exec_profile(
        "p",
        &["sh", "-c", "echo hello-from-task"],
        "",
    ));
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("ok")
        .expect_stdout("hello-from-task");
    let json = ops.run(&["history", "--json"]).json();
    let runs = &json["runs"];
    assert_eq!(runs[0]["status"], "ok");
    assert_eq!(runs[0]["tasks"][0]["name"], "step");
    assert!(runs[0]["tasks"][0]["detail"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("hello-from-task")));
    let mode = std::fs::metadata(ops.db()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn failed_task_exits_1_and_later_tasks_still_run() {
    let ops = Ops::new();
    ops.jobs(
        "version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks:\n      - {kind: exec, name: bad, command: [sh, -c, 'echo boom >&2; exit 3']}\n      - {kind: exec, name: good, command: ['true']}\n",
    );
    let run = ops.run(&["run", "p", "--json"]);
    run.expect_code(1);
    let json = run.json();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["tasks"][0]["status"], "failed");
    assert!(json["tasks"][0]["detail"][0]
        .as_str()
        .unwrap()
        .contains("exit 3"));
    assert!(json["tasks"][0]["detail"].to_string().contains("boom"));
    assert_eq!(json["tasks"][1]["status"], "ok");
}

#[test]
fn exec_timeout_kills_a_process_group_that_ignores_sigterm() {
    let ops = Ops::new();
    let pidfile = ops.path("grandchild.pid");
    let script = format!(
        "trap '' TERM; (trap '' TERM; sleep 30) & echo $! > {}; sleep 30",
        pidfile.display()
    );
    ops.jobs(&format!(
        "version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks:\n      - kind: exec\n        name: stubborn\n        command: [sh, -c, {script:?}]\n        timeout: 1s\n"
    ));
    let run = ops.run(&["run", "p"]);
    run.expect_code(1).expect_stdout("timed out after 1s");
    assert!(
        run.elapsed < Duration::from_secs(8),
        "took {:?}",
        run.elapsed
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild, which also ignored SIGTERM, is gone too.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!running(pid), "grandchild {pid} survived the timeout");
}

#[test]
fn dry_run_executes_nothing_and_leaves_the_db_byte_identical() {
    let ops = Ops::new();
    let marker = ops.path("touched");
    ops.jobs(&exec_profile("p", &["touch", marker.to_str().unwrap()], ""));
    // No state yet: a dry run creates none.
    ops.run(&["run", "p", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would run: touch");
    assert!(!marker.exists());
    assert!(!ops.state_dir().exists(), "dry run created the state dir");
    // With state: byte-identical afterwards.
    ops.run(&["run", "p"]).expect_code(0);
    std::fs::remove_file(&marker).unwrap();
    let before = std::fs::read(ops.db()).unwrap();
    ops.run(&["run", "p", "--dry-run", "--json"]).expect_code(0);
    assert!(!marker.exists());
    assert_eq!(
        before,
        std::fs::read(ops.db()).unwrap(),
        "ops.db changed in a dry run"
    );
    let json = ops.run(&["history", "--json"]).json();
    assert_eq!(
        json["runs"].as_array().unwrap().len(),
        1,
        "dry run was recorded"
    );
}

#[test]
fn concurrent_run_of_the_same_profile_is_skipped_fast() {
    let ops = Ops::new();
    let started = ops.path("started");
    let script = format!("touch {}; sleep 2; echo first-done", started.display());
    ops.jobs(&exec_profile("p", &["sh", "-c", &script], ""));
    let first = ops.spawn(&["run", "p"]);
    wait_for(&started, Duration::from_secs(10));
    let second = ops.run(&["run", "p"]);
    second.expect_code(0).expect_stdout("skipped");
    assert!(
        second.elapsed < Duration::from_millis(500),
        "second run took {:?}",
        second.elapsed
    );
    let first = finish(first.wait_with_output().unwrap(), Duration::ZERO);
    first.expect_code(0).expect_stdout("first-done");
    let json = ops.run(&["history", "--json"]).json();
    let statuses: Vec<&str> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["skipped", "ok"]);
}

#[test]
fn kill_9_mid_run_leaves_a_usable_database() {
    let ops = Ops::new();
    let started = ops.path("started");
    let script = format!("touch {}; sleep 30", started.display());
    ops.jobs(&exec_profile("p", &["sh", "-c", &script], ""));
    let mut child = ops.spawn(&["run", "p"]);
    wait_for(&started, Duration::from_secs(10));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    std::fs::remove_file(&started).unwrap();
    let ok: String = ops
        .sqlite()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // The lock died with the process: the next run proceeds and marks the killed one.
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.run(&["run", "p"]).expect_code(0);
    let json = ops.run(&["history", "--json"]).json();
    let statuses: Vec<&str> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ok", "interrupted"]);
    let ok: String = ops
        .sqlite()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn profile_timeout_stops_remaining_tasks() {
    let ops = Ops::new();
    ops.jobs(
        "version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    timeout: 1s\n    tasks:\n      - {kind: exec, name: slow, command: [sleep, '5']}\n      - {kind: exec, name: after, command: ['true']}\n",
    );
    let run = ops.run(&["run", "p", "--json"]);
    run.expect_code(1);
    let json = run.json();
    assert!(json["tasks"][0]["detail"][0]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert!(json["tasks"][1]["detail"][0]
        .as_str()
        .unwrap()
        .contains("not started"));
}

#[test]
fn env_file_fills_in_but_process_env_wins() {
    let mut ops = Ops::new();
    ops.env_file("# comment\nexport FROM_FILE=file-value\nBOTH='from-file'\n");
    ops.env("BOTH", "from-process");
    ops.jobs(&exec_profile_env(
        "p",
        &["sh", "-c", "echo \"$FROM_FILE/$BOTH\""],
        "",
        &["FROM_FILE", "BOTH"],
    ));
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("file-value/from-process");
}

#[test]
fn missing_explicit_env_file_is_a_config_error() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["true"], ""));
    let run = ops
        .command(&["run", "p"])
        .args(["--env-file", "/nonexistent/ops.env"])
        .output()
        .unwrap();
    let run = finish(run, Duration::ZERO);
    run.expect_code(2).expect_stderr("/nonexistent/ops.env");
}

#[test]
fn is_active_false_does_nothing() {
    let mut ops = Ops::new();
    let marker = ops.path("touched");
    ops.env("IS_ACTIVE", "false");
    ops.jobs(&exec_profile("p", &["touch", marker.to_str().unwrap()], ""));
    ops.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("monitoring disabled");
    assert!(!marker.exists());
}

#[test]
fn invalid_env_values_exit_2_naming_the_variable() {
    for (key, value, needle) in [
        ("HEALTHY_CYCLES_BEFORE_DISABLE", "0", "1 to 100"),
        ("SUPERVISOR_COUNT", "many", "SUPERVISOR_COUNT"),
        ("AUTO_DISABLE", "perhaps", "AUTO_DISABLE"),
        (
            "DIGITALOCEAN_API_URL",
            "api.example",
            "DIGITALOCEAN_API_URL",
        ),
        ("OPS_LOCK", "zookeeper", "OPS_LOCK"),
    ] {
        let mut ops = Ops::new();
        ops.env(key, value);
        ops.jobs(&exec_profile("p", &["true"], ""));
        ops.run(&["run", "p"]).expect_code(2).expect_stderr(needle);
    }
}

#[test]
fn secrets_never_appear_in_output_or_state() {
    let mut ops = Ops::new();
    let secrets = [
        "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "railway-secret-token-value",
        "tr_wgt_SecretWorkerToken0123456789abcdefghijklmn",
        "telegram-bot-secret-42",
    ];
    ops.env_file(&format!(
        "DIGITALOCEAN_TOKEN={}\nRAILWAY_API_TOKEN={}\nTRIGGER_WORKER_TOKEN={}\nTELEGRAM_BOT_TOKEN={}\nDATABASE_URL=postgresql://u:db-password-xyz@localhost/x\n",
        secrets[0], secrets[1], secrets[2], secrets[3]
    ));
    ops.env("LOG_LEVEL", "debug");
    // A task that prints the secrets it can see.
    ops.jobs(&exec_profile_env(
        "p",
        &["sh", "-c", "echo $DIGITALOCEAN_TOKEN $RAILWAY_API_TOKEN $TRIGGER_WORKER_TOKEN; echo $TELEGRAM_BOT_TOKEN $DATABASE_URL >&2; exit 1"],
        "",
        &["DIGITALOCEAN_TOKEN", "RAILWAY_API_TOKEN", "TRIGGER_WORKER_TOKEN", "TELEGRAM_BOT_TOKEN", "DATABASE_URL"],
    ));
    let mut seen = String::new();
    for args in [
        &["run", "p"][..],
        &["run", "p", "--json"],
        &["run", "p", "--dry-run"],
        &["history", "--json"],
        &["history"],
        &["check"],
    ] {
        let run = ops.run(args);
        seen.push_str(&run.all());
    }
    seen.push_str(&String::from_utf8_lossy(&std::fs::read(ops.db()).unwrap()));
    assert!(seen.contains("***"), "nothing was redacted?\n{seen}");
    for s in secrets.iter().chain(&["db-password-xyz"]) {
        assert!(!seen.contains(s), "secret {s} leaked:\n{seen}");
    }
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("alpha", &["true"], ""));
    ops.run(&["run", "beta"])
        .expect_code(2)
        .expect_stderr("profiles: alpha");
}

#[test]
fn completions_and_help() {
    let ops = Ops::new();
    ops.run(&["completions", "bash"])
        .expect_code(0)
        .expect_stdout("ops");
    ops.run(&["--help"])
        .expect_code(0)
        .expect_stdout("Examples:");
    ops.run(&["--version"])
        .expect_code(0)
        .expect_stdout(env!("CARGO_PKG_VERSION"));
    ops.run(&["frobnicate"]).expect_code(2);
}

#[test]
fn bundled_default_dry_run_reports_what_is_not_configured() {
    let ops = Ops::new();
    // No jobs.yaml at all: the bundled one is used.
    let out = std::process::Command::new(crate::support::OPS)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", ops.dir.path())
        // Not this host's /etc/ops/ops.env (a package test may have installed one meanwhile).
        .env("OPS_ENV_FILE", "/dev/null")
        .args([
            "--state-dir",
            ops.state_dir().to_str().unwrap(),
            "run",
            "hourly",
            "--dry-run",
        ])
        .current_dir(ops.dir.path())
        .output()
        .unwrap();
    let run = finish(out, Duration::ZERO);
    // Nothing is configured: a configuration error (exit 2), each task saying what to set.
    assert_eq!(run.code, 2, "{}", run.all());
    run.expect_stdout("extract")
        .expect_stdout("replication")
        .expect_stdout("supervisor");
    assert!(!ops.state_dir().exists());
}

/// Whether `pid` is a live process (zombies, whose reaper may be slow, count as dead).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn check_reports_an_unusable_state_dir_and_superseded_variables() {
    let mut ops = Ops::new();
    ops.env("CHECK_INTERVAL", "5");
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.run(&["check"])
        .expect_code(0)
        .expect_stdout("✓ state directory")
        .expect_stdout("CHECK_INTERVAL is set but superseded");
    std::fs::write(ops.path("a-file"), "").unwrap();
    let blocked = ops.path("a-file").join("state");
    let out = ops
        .command(&["check"])
        .args(["--state-dir", blocked.to_str().unwrap()])
        .output()
        .unwrap();
    let run = finish(out, Duration::ZERO);
    run.expect_code(1).expect_stdout("✗ state directory");
}
