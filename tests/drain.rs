//! Never kill a run (issue 25): a droplet leaving for a planned reason is drained first, on
//! Trigger.dev's production schema in a real PostgreSQL; the droplet side (the drain script
//! cloud-init installs) runs here too, against a stand-in `docker`.

use std::time::Duration;

use crate::supervisor::{fleet, Fleet};
use crate::support::webapp;

fn name_of(f: &Fleet, id: u64) -> String {
    f.api
        .with(|w| w.droplets.iter().find(|d| d.id == id).unwrap().name.clone())
}

fn tags_of(f: &Fleet, id: u64) -> Vec<String> {
    f.api
        .with(|w| {
            w.droplets
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.tags.clone())
        })
        .unwrap_or_default()
}

/// `seq_scan` of a table so far, once finished sessions have reported.
fn seq_scans(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1",
        &[&table],
    )
    .unwrap()
    .get(0)
}

/// One healthy droplet A with two long runs executing on it, and the planned change applied:
/// the new droplet B is created and serves. Returns (A, B) and B's supervisor.
fn busy_droplet_with_a_planned_change(
    f: &mut Fleet,
    change: (&str, &str),
) -> (u64, u64, Vec<crate::support::digitalocean::Supervisor>) {
    let (a, sup_a) = f.one_healthy();
    assert!(
        tags_of(f, a).iter().any(|t| t == "ops-drain:shutdown"),
        "a droplet running v4.5.12 can be drained: {:?}",
        tags_of(f, a)
    );
    let mut c = f.db();
    webapp::executing_run(&mut c, "long1", &name_of(f, a), "small-1x");
    webapp::executing_run(&mut c, "long2", &name_of(f, a), "small-2x");
    f.api.with(|w| w.hold_shutdown = true);
    f.s.ops.env(change.0, change.1);
    f.health().expect_code(0).expect_stdout("rolling replace");
    let b = *f.ids().iter().find(|id| **id != a).unwrap();
    let sup_b = f.serve(b, true);
    (a, b, vec![sup_a, sup_b])
}

#[test]
fn an_upgrade_drains_the_busy_droplet_deletes_it_once_its_runs_end_and_never_scans() {
    let mut f = fleet("boot_grace: 10m");
    let mut c = f.db();
    let t0 = std::time::Instant::now();
    webapp::history(&mut c, 1_000_000, 30);
    webapp::snapshot_history(&mut c, 1_000_000);
    eprintln!(
        "1,000,000 runs and 1,000,000 snapshots in {:?}",
        t0.elapsed()
    );
    let before = (
        seq_scans(&mut c, "TaskRun"),
        seq_scans(&mut c, "TaskRunExecutionSnapshot"),
    );
    let (a, b, _sups) = busy_droplet_with_a_planned_change(&mut f, ("TRIGGER_VERSION", "v4.6.0"));
    let drained = f.health();
    drained
        .expect_code(0)
        .expect_stdout(&format!("draining droplet {}", name_of(&f, a)))
        .expect_stdout("2 run(s) execute on it: run_long1, run_long2")
        .expect_stdout("told it to stop taking runs");
    assert!(
        f.deletes().is_empty(),
        "a droplet with runs on it is not deleted"
    );
    assert!(tags_of(&f, a).iter().any(|t| t == "ops-draining"));
    assert_eq!(
        f.api.with(|w| w.actions.clone()),
        [(a, "shutdown".to_string())]
    );
    // Status shows the runs per droplet; the draining droplet is not failing.
    let status = f.run(&["status", "--json"]).json();
    let droplets = status["supervisor"]["droplets"].as_array().unwrap().clone();
    let of = |id: u64| droplets.iter().find(|d| d["id"] == id).unwrap().clone();
    assert_eq!(of(a)["executing_runs"], 2, "{droplets:?}");
    assert_eq!(of(a)["health"], "draining");
    assert_eq!(of(b)["executing_runs"], 0);
    f.run(&["status"]).expect_stdout("RUNS");
    // Still running: still draining, nothing deleted, no second signal.
    f.health()
        .expect_code(0)
        .expect_stdout("2 run(s) still executing (run_long1, run_long2)");
    assert!(f.deletes().is_empty());
    assert_eq!(f.api.with(|w| w.actions.len()), 1);
    // The runs end; the drain service lets the shutdown finish: the droplet is off.
    webapp::finish_run(&mut c, "long1");
    webapp::finish_run(&mut c, "long2");
    f.api.with(|w| {
        w.droplets.iter_mut().find(|d| d.id == a).unwrap().off = true;
    });
    f.health()
        .expect_code(0)
        .expect_stdout("drained (spec drift");
    assert_eq!(f.deletes(), [a]);
    assert_eq!(f.ids(), [b]);
    f.health()
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat");
    std::thread::sleep(Duration::from_millis(500));
    let after = (
        seq_scans(&mut c, "TaskRun"),
        seq_scans(&mut c, "TaskRunExecutionSnapshot"),
    );
    assert_eq!(
        after, before,
        "sequential scans of (\"TaskRun\", \"TaskRunExecutionSnapshot\")"
    );
}

#[test]
fn a_drain_timeout_deletes_the_droplet_and_names_the_runs_that_will_be_retried() {
    let mut f = fleet("boot_grace: 10m, drain_timeout: 5s");
    let (a, _b, _sups) =
        busy_droplet_with_a_planned_change(&mut f, ("SUPERVISOR_SIZE", "s-2vcpu-4gb"));
    f.health()
        .expect_code(0)
        .expect_stdout("draining droplet")
        .expect_stdout("size: s-2vcpu-2gb → s-2vcpu-4gb");
    assert!(f.deletes().is_empty());
    std::thread::sleep(Duration::from_secs(5));
    f.health()
        .expect_code(0)
        .expect_stdout("drain timeout (5s) passed")
        .expect_stdout("2 run(s) still on it will be retried by Trigger.dev from the start: run_long1, run_long2");
    assert_eq!(f.deletes(), [a]);
}

#[test]
fn a_zero_drain_timeout_deletes_at_once_as_before() {
    let mut f = fleet("boot_grace: 10m, drain_timeout: 0s");
    let (a, _b, _sups) = busy_droplet_with_a_planned_change(&mut f, ("TRIGGER_VERSION", "v4.6.0"));
    f.health().expect_code(0).expect_stdout("spec drift");
    assert_eq!(f.deletes(), [a]);
    assert!(f.api.with(|w| w.actions.is_empty()));
}

#[test]
fn a_large_run_waiting_on_small_droplets_fails_naming_the_preset_and_a_size_that_fits() {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    let mut c = f.db();
    webapp::waiting_run_needing(&mut c, "big", "large-1x");
    f.health()
        .expect_code(1)
        .expect_stdout("1 waiting run(s) need machine preset large-1x (4 vCPU, 8 GB), more than the droplets' size s-2vcpu-2gb (2 vCPU, 2 GB)")
        .expect_stdout("set SUPERVISOR_SIZE=s-4vcpu-8gb");
    // The sizes are asked once and kept.
    f.health().expect_code(1);
    let sizes = f
        .api
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/sizes"))
        .count();
    assert_eq!(sizes, 1);
}

#[test]
fn supervisor_size_auto_replaces_drained_with_the_size_that_fits() {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("SUPERVISOR_SIZE", "auto");
    f.health().expect_code(0);
    let a = f.ids()[0];
    assert_eq!(f.creates()[0]["size"], "s-2vcpu-2gb", "auto starts small");
    let _sup_a = f.serve(a, true);
    f.health().expect_code(0);
    let mut c = f.db();
    webapp::executing_run(&mut c, "small", &name_of(&f, a), "small-1x");
    webapp::waiting_run_needing(&mut c, "big", "large-1x");
    f.api.with(|w| w.hold_shutdown = true);
    f.health()
        .expect_code(0)
        .expect_stdout("SUPERVISOR_SIZE=auto: the droplets become s-4vcpu-8gb");
    assert_eq!(f.creates().len(), 2);
    assert_eq!(f.creates()[1]["size"], "s-4vcpu-8gb");
    let b = *f.ids().iter().find(|id| **id != a).unwrap();
    let _sup_b = f.serve(b, true);
    f.health()
        .expect_code(0)
        .expect_stdout("draining droplet")
        .expect_stdout("run_small");
    assert!(
        f.deletes().is_empty(),
        "drained, not deleted, while its run executes"
    );
    webapp::finish_run(&mut c, "small");
    std::thread::sleep(Duration::from_secs(10));
    f.health()
        .expect_code(0)
        .expect_stdout("no run executes on it");
    assert_eq!(f.deletes(), [a]);
}

/// The drain script from the rendered user-data, run with a stand-in `docker` that records what
/// it is asked and lists `runner-` containers from a file the test empties.
#[test]
fn the_droplet_side_drain_engages_the_brake_and_waits_for_the_run_containers() {
    let f = fleet("boot_grace: 10m");
    let ud = f.run(&["render-cloud-init", "--show-secrets"]).all();
    let start = ud.find("#cloud-config").expect("user-data");
    let doc: serde_yaml::Value = serde_yaml::from_str(&ud[start..]).unwrap();
    let file = |path: &str| crate::support::written(&doc, path);
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&file("/opt/trigger/docker-compose.yml")).unwrap();
    assert_eq!(compose["networks"]["drain"]["internal"], true);
    let env = file("/opt/trigger/.env");
    for line in [
        "TRIGGER_DEQUEUE_BACKPRESSURE_ENABLED=true",
        "TRIGGER_DEQUEUE_BACKPRESSURE_DRY_RUN=false",
        "TRIGGER_DEQUEUE_BACKPRESSURE_REDIS_HOST=drain-signal",
        "TRIGGER_DEQUEUE_BACKPRESSURE_REDIS_TLS_DISABLED=true",
        "RESOURCE_MONITOR_ENABLED=true",
    ] {
        assert!(env.contains(line), "{line} in .env");
    }
    let unit = file("/etc/systemd/system/ops-drain.service");
    assert!(unit.contains("ExecStop=/opt/trigger/drain.sh"), "{unit}");
    assert!(
        file("/etc/systemd/system/poweroff.target.d/10-ops-drain.conf").contains("JobTimeoutSec="),
        "the shutdown waits longer than systemd's 30 minutes"
    );
    if crate::support::tool("systemd-analyze") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ops-drain.service");
        std::fs::write(&path, unit.replace("/opt/trigger/drain.sh", "/bin/true")).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("ops-drain.service:"),
            "systemd-analyze verify: {err}"
        );
    }
    // Run it.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("docker.log");
    let runners = dir.path().join("runners");
    std::fs::write(&runners, "runner-abc\nrunner-def\n").unwrap();
    let docker = format!(
        "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$1\" in ps) cat {runners};; esac\nexit 0\n",
        log = log.display(),
        runners = runners.display()
    );
    std::fs::write(bin.join("docker"), docker).unwrap();
    let script = dir.path().join("drain.sh");
    std::fs::write(&script, file("/opt/trigger/drain.sh")).unwrap();
    for p in [bin.join("docker"), script.clone()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut child = std::process::Command::new("sh")
        .arg(&script)
        .env("PATH", &path)
        .env("OPS_DRAIN_POLL_SECS", "1")
        .env("OPS_DRAIN_SETTLE_SECS", "0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits while runs execute"
    );
    std::fs::write(&runners, "").unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("exec -T drain-signal redis-cli SET ops:drain {\"engaged\":true,\"ts\":"),
        "{calls}"
    );
    assert!(calls.contains("ps -q --filter name=^runner-"), "{calls}");
    // Bounded: with runs that never end it gives up at its maximum.
    std::fs::write(&runners, "runner-stuck\n").unwrap();
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env("PATH", &path)
        .env("OPS_DRAIN_POLL_SECS", "1")
        .env("OPS_DRAIN_MAX_SECS", "2")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("giving up after 2s"));
}

/// The user-data of a fleet pinned to `version`, parsed.
fn user_data(f: &Fleet) -> serde_yaml::Value {
    let ud = f.run(&["render-cloud-init", "--show-secrets"]).all();
    let start = ud.find("#cloud-config").expect("user-data");
    serde_yaml::from_str(&ud[start..]).unwrap()
}

/// A stand-in `docker` for drain.sh: records its calls, lists `runner-` containers from a
/// file, prints the supervisor's log from a file for `compose logs`, and Docker's container
/// creations from a file for `events`.
struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new(script: &str) -> StandIn {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for f in ["runners", "logs", "created", "docker.log"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let docker = format!(
            "#!/bin/sh\necho \"$(date +%s) $*\" >> {log}\ncase \"$1 $2\" in\n  ps*) cat {runners};;\n  \"compose --project-directory\") case \"$4\" in logs) cat {logs};; esac;;\n  events*) cat {created};;\nesac\nexit 0\n",
            log = p("docker.log"),
            runners = p("runners"),
            logs = p("logs"),
            created = p("created"),
        );
        std::fs::write(dir.path().join("bin/docker"), docker).unwrap();
        std::fs::write(dir.path().join("drain.sh"), script).unwrap();
        for f in ["bin/docker", "drain.sh"] {
            std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        StandIn { dir }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("docker.log")).unwrap()
    }

    fn spawn(&self, envs: &[(&str, &str)]) -> std::process::Child {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        std::process::Command::new("sh")
            .arg(self.dir.path().join("drain.sh"))
            .env("PATH", path)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Waits for `child` up to `limit`; true when it ended (successfully).
fn ended(child: &mut std::process::Child, limit: Duration) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Issue 33: from v4.5.0-rc.5 to v4.5.9 the supervisor treats an engaged verdict older than
/// 15 s as released (`TRIGGER_DEQUEUE_BACKPRESSURE_MAX_VERDICT_AGE_MS` default 15000 there; 120000
/// only since v4.5.10), and drain.sh rewrote it every 20 to 25 s: the brake leaked for seconds of
/// every cycle. A v4.5.5 droplet gets the age set, and drain.sh rewrites it inside it.
#[test]
fn a_v4_5_5_droplet_holds_the_brake_the_verdict_set_explicitly_and_refreshed_well_inside_it() {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("TRIGGER_VERSION", "v4.5.5");
    let doc = user_data(&f);
    let env = crate::support::written(&doc, "/opt/trigger/.env");
    let age: u64 = env
        .lines()
        .find_map(|l| l.strip_prefix("TRIGGER_DEQUEUE_BACKPRESSURE_MAX_VERDICT_AGE_MS="))
        .unwrap_or_else(|| panic!("the verdict's age is set for v4.5.5: {env}"))
        .parse()
        .unwrap();
    assert!(age >= 60_000, "{age}");
    // With the default poll, the verdict is written every few seconds: count the writes over
    // 12 s (a 1 s poll here, as in the script's own loop, with the default written out).
    let script = crate::support::written(&doc, "/opt/trigger/drain.sh");
    let poll: u64 = script
        .lines()
        .find_map(|l| l.strip_prefix("poll=${OPS_DRAIN_POLL_SECS:-"))
        .and_then(|l| l.strip_suffix('}'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        poll * 1000 * 4 <= age,
        "written every {poll} s: well inside {age} ms"
    );
    let d = StandIn::new(&script);
    d.write("runners", "runner-abc\n");
    let mut child = d.spawn(&[("OPS_DRAIN_POLL_SECS", "1"), ("OPS_DRAIN_SETTLE_SECS", "0")]);
    std::thread::sleep(Duration::from_millis(3500));
    d.write("runners", "");
    assert!(ended(&mut child, Duration::from_secs(10)));
    let writes: Vec<u64> = d
        .calls()
        .lines()
        .filter(|l| l.contains("redis-cli SET ops:drain"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        writes.len() >= 3,
        "the verdict is written every poll: {writes:?}"
    );
    assert!(
        writes.windows(2).all(|w| w[1] - w[0] <= 2),
        "no gap between writes: {writes:?}"
    );
}

/// Issue 33: a run dequeued on the droplet has no container while the supervisor pulls its
/// image (workloadManager/docker.ts: "Pulling image", then create, then start), and the
/// shutdown went on mid-pull once no `runner-` container had been seen twice. It now waits
/// while the supervisor's log names a pull whose container Docker has not created.
#[test]
fn the_shutdown_waits_while_a_dequeued_run_still_pulls_its_image() {
    let f = fleet("boot_grace: 10m");
    let script = crate::support::written(&user_data(&f), "/opt/trigger/drain.sh");
    let d = StandIn::new(&script);
    // The supervisor's own line (SimpleStructuredLogger's JSON, the child logger's fields).
    d.write(
        "logs",
        r#"{"timestamp":"2026-12-07T04:00:00.000Z","message":"Pulling image","$name":"docker-workload-manager","$level":"info","opts":{"runFriendlyId":"run_abc123","image":"registry.example.com/proj:20261207.1","machine":{"name":"small-1x","cpu":0.5,"memory":0.5}},"containerCreateOpts":{"name":"runner-abc123","Hostname":"runner-abc123","Image":"registry.example.com/proj:20261207.1"},"image":"registry.example.com/proj:20261207.1"}
"#,
    );
    let mut child = d.spawn(&[("OPS_DRAIN_POLL_SECS", "1"), ("OPS_DRAIN_SETTLE_SECS", "0")]);
    assert!(
        !ended(&mut child, Duration::from_secs(5)),
        "the shutdown waits while the run's image is pulled"
    );
    // Docker creates the run's container (then it runs, and ends).
    d.write("created", "runner-abc123\n");
    d.write("runners", "runner-abc123\n");
    assert!(
        !ended(&mut child, Duration::from_secs(3)),
        "its run executes"
    );
    d.write("runners", "");
    assert!(
        ended(&mut child, Duration::from_secs(10)),
        "then it goes on"
    );
    let calls = d.calls();
    assert!(
        calls.contains("compose --project-directory /opt/trigger logs --no-color --no-log-prefix --since 300s supervisor"),
        "{calls}"
    );
    assert!(calls.contains("events --since 300s"), "{calls}");
    // A pull the supervisor gave up on is not waited for.
    d.write("created", "");
    d.write(
        "logs",
        concat!(
            r#"{"message":"Pulling image","$name":"docker-workload-manager","containerCreateOpts":{"name":"runner-def456"}}"#,
            "\n",
            r#"{"message":"Failed to pull image","$name":"docker-workload-manager","containerCreateOpts":{"name":"runner-def456"},"error":{}}"#,
            "\n"
        ),
    );
    let mut child = d.spawn(&[("OPS_DRAIN_POLL_SECS", "1"), ("OPS_DRAIN_SETTLE_SECS", "0")]);
    assert!(ended(&mut child, Duration::from_secs(10)));
}

/// Issue 33: a reboot runs the drain too, and `reboot.target` kept its 30-minute forced
/// timeout (`JobTimeoutSec=30min`, `JobTimeoutAction=reboot-force` in systemd 252's unit).
#[test]
fn a_reboot_waits_for_the_drain_as_long_as_a_poweroff() {
    let f = fleet("boot_grace: 10m");
    let doc = user_data(&f);
    let poweroff = crate::support::written(
        &doc,
        "/etc/systemd/system/poweroff.target.d/10-ops-drain.conf",
    );
    let reboot = crate::support::written(
        &doc,
        "/etc/systemd/system/reboot.target.d/10-ops-drain.conf",
    );
    assert!(reboot.contains("JobTimeoutSec="), "{reboot}");
    assert_eq!(reboot, poweroff);
}

/// Issue 33: the backpressure settings first ship in v4.5.0-rc.5 (apps/supervisor/src/env.ts
/// has none at v4.5.0-rc.4); `release::at_least` counted rc.0 to rc.4 as v4.5.0.
#[test]
fn a_supervisor_before_v4_5_0_rc_5_gets_no_drain_service_and_no_drain_tag() {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("TRIGGER_VERSION", "v4.5.0-rc.4");
    let ud = f.run(&["render-cloud-init", "--show-secrets"]).all();
    assert!(!ud.contains("ops-drain.service"), "{ud}");
    assert!(!ud.contains("TRIGGER_DEQUEUE_BACKPRESSURE"), "{ud}");
    f.health().expect_code(0);
    let tags = f.creates()[0]["tags"].clone();
    assert!(
        !tags
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "ops-drain:shutdown"),
        "{tags}"
    );
    f.s.ops.env("TRIGGER_VERSION", "v4.5.0-rc.5");
    let ud = f.run(&["render-cloud-init", "--show-secrets"]).all();
    assert!(ud.contains("ops-drain.service"));
}

/// Issue 33: the `shutdown` was sent once and never again: when its call failed, the droplet
/// kept taking runs while counted as draining, and went at `drain_timeout` with runs on it. It
/// is sent again at the next run while the droplet is active and no shutdown of it is known
/// to DigitalOcean; once one is in progress, not again.
#[test]
fn a_failed_shutdown_is_sent_again_at_the_next_run() {
    let mut f = fleet("boot_grace: 10m");
    let (a, _b, _sups) = busy_droplet_with_a_planned_change(&mut f, ("TRIGGER_VERSION", "v4.6.0"));
    f.api.with(|w| w.action_fault = Some(500));
    let first = f.health();
    first.expect_stdout(&format!("draining droplet {}", name_of(&f, a)));
    assert!(tags_of(&f, a).iter().any(|t| t == "ops-draining"));
    assert!(f.api.with(|w| w.actions.is_empty()), "{}", first.all());
    f.health()
        .expect_stdout("its shutdown was not sent (the call failed)");
    assert_eq!(
        f.api.with(|w| w.actions.clone()),
        [(a, "shutdown".to_string())],
        "sent again"
    );
    // In progress (its drain service waits for the runs): not sent a third time.
    f.health()
        .expect_code(0)
        .expect_stdout("2 run(s) still executing");
    assert_eq!(f.api.with(|w| w.actions.len()), 1);
    assert!(f.deletes().is_empty());
}

/// Issue 33: a shutdown DigitalOcean completed while the droplet stays active (its guest
/// ignored it) is told to a person: the droplet may take runs again while counted as
/// draining. Not sent again, not deleted before its drain ends.
#[test]
fn a_completed_shutdown_that_left_the_droplet_active_is_alerted() {
    let mut f = fleet("boot_grace: 10m");
    let (a, _b, _sups) = busy_droplet_with_a_planned_change(&mut f, ("TRIGGER_VERSION", "v4.6.0"));
    f.api.with(|w| w.ignore_shutdown = true);
    f.health()
        .expect_code(0)
        .expect_stdout("told it to stop taking runs");
    f.health().expect_code(1).expect_stdout(&format!(
        "droplet {} is still active although DigitalOcean completed its shutdown",
        name_of(&f, a)
    ));
    assert_eq!(f.api.with(|w| w.actions.len()), 1, "not sent again");
    assert!(f.deletes().is_empty());
}
