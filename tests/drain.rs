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
