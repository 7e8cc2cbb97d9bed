//! Keep disks free and boot from a baked image (issue 28): what cloud-init puts on a droplet
//! validates and does what it says, the pruning against a stand-in `docker`; each droplet's free
//! disk read from DigitalOcean's monitoring (cached), shown, and a droplet below 10% failing the
//! task by name.

use std::os::unix::fs::PermissionsExt;

use crate::supervisor::{cloud_init_schema, fleet, Fleet};
use crate::support::digitalocean::Supervisor;
use crate::support::written;

const GIB: u64 = 1024 * 1024 * 1024;

/// One healthy droplet, an hour old (its monitoring agent reports), with `free` of 40 GiB
/// free on its root filesystem (`None`: no agent, nothing reported).
fn an_hour_old_droplet(free_gib: Option<f64>) -> (Fleet, Supervisor, u64, String) {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let id = f.ids()[0];
    let sup = f.serve(id, true);
    f.health().expect_code(0);
    assert_eq!(
        f.api.metric_requests(),
        0,
        "a droplet minutes old is not read"
    );
    let name = f.api.with(|w| {
        let d = w.droplets.iter_mut().find(|d| d.id == id).unwrap();
        d.created_at = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some(g) = free_gib {
            w.disks.insert(id, ((g * GIB as f64) as u64, 40 * GIB));
        }
        w.droplets[0].name.clone()
    });
    (f, sup, id, name)
}

fn verify(units: &[(&str, String)]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in units {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units.iter().map(|(n, _)| dir.path().join(n)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for (name, _) in units.iter().filter(|(n, _)| n.starts_with("ops-")) {
        assert!(
            !err.contains(&format!("{name}:")),
            "systemd-analyze verify: {err}"
        );
    }
}

#[test]
fn the_supervisor_and_bake_user_data_validate_and_install_pruning_and_no_secret_is_baked() {
    let f = fleet("boot_grace: 10m");
    let ud = f.run(&["render-cloud-init", "--show-secrets"]).all();
    let ud = &ud[ud.find("#cloud-config").expect("user-data")..];
    let doc: serde_yaml::Value = serde_yaml::from_str(ud).unwrap();
    assert!(doc["packages"].is_null(), "apt only when Docker is missing");
    let steps = serde_yaml::to_string(&doc["runcmd"]).unwrap();
    assert!(steps.contains("command -v docker"), "{steps}");
    assert!(steps.contains("ops-prune.timer"), "{steps}");
    let script = written(&doc, trigger_ops::prune::SCRIPT);
    for image in [
        "ghcr.io/triggerdotdev/supervisor:v4.5.12",
        "tecnativa/docker-socket-proxy:v0.5.0",
        "redis:7.4.2-alpine",
    ] {
        assert!(script.contains(image), "{image} is kept: {script}");
    }
    let settings = trigger_ops::settings::Settings::from_env(
        &trigger_ops::envfile::Env::from_pairs([("TRIGGER_VERSION", "v4.5.12")]),
    )
    .unwrap();
    let bake = trigger_ops::cloudinit::render_bake(&settings, "v4.5.12").unwrap();
    for secret in [
        crate::extract::LOG_TOKEN,
        crate::extract::SECRET,
        "TRIGGER_",
        ".env",
    ] {
        assert!(
            !bake.contains(secret),
            "{secret} in the bake user-data:\n{bake}"
        );
    }
    assert!(
        bake.contains("docker pull ghcr.io/triggerdotdev/supervisor:v4.5.12")
            || bake.contains("- ghcr.io/triggerdotdev/supervisor:v4.5.12"),
        "{bake}"
    );
    let bake_doc: serde_yaml::Value = serde_yaml::from_str(&bake).unwrap();
    let seal = written(&bake_doc, trigger_ops::cloudinit::BAKE_SEAL_UNIT);
    assert!(seal.contains("cloud-init clean --logs --machine-id && systemctl poweroff"));
    if crate::support::tool("cloud-init") {
        cloud_init_schema(ud);
        cloud_init_schema(&bake);
    }
    if crate::support::tool("systemd-analyze") {
        verify(&[
            (
                "ops-prune.service",
                written(&doc, trigger_ops::prune::SERVICE)
                    .replace(trigger_ops::prune::SCRIPT, "/bin/true"),
            ),
            ("ops-prune.timer", written(&doc, trigger_ops::prune::TIMER)),
            ("ops-bake-seal.service", seal),
            // This machine has no Docker unit: a stand-in for the one the package installs.
            (
                "docker.service",
                "[Service]\nExecStart=/bin/true\n".to_string(),
            ),
        ]);
    }
}

/// A stand-in `docker` with five images: the compose's supervisor (unused, old), an old and the
/// current production deployment of one project, a run's image in use, and a fresh one.
#[test]
fn pruning_removes_only_old_unused_images_that_are_no_current_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("docker.log");
    let old = "2020-01-01T00:00:00.000000000Z";
    let older = "2019-06-01T00:00:00.000000000Z";
    let fresh = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let images = format!(
        "sha256:sup {older} ghcr.io/triggerdotdev/supervisor:v4.5.12\n\
sha256:d1 {older} reg.example/ns/proj_a:20200101.1.production.aaaa\n\
sha256:d2 {old} reg.example/ns/proj_a:20200102.1.production.bbbb\n\
sha256:used {older} reg.example/ns/proj_b:20190601.1.production.cccc,reg.example/ns/proj_b:extra\n\
sha256:d0 2019-05-01T00:00:00.000000000Z reg.example/ns/proj_b:20190501.1.production.dddd\n\
sha256:new {fresh} reg.example/ns/proj_a:20200101.2.staging.eeee\n\
sha256:none {older} \n"
    );
    std::fs::write(dir.path().join("images"), images).unwrap();
    let docker = format!(
        r#"#!/bin/sh
echo "$*" >> {log}
case "$1 $2" in
  "ps -aq") echo c1;;
  "inspect --format") echo sha256:used;;
  "image inspect")
    case "$4" in
      ghcr.io/triggerdotdev/supervisor:v4.5.12) echo sha256:sup;;
      *"{{{{.Created}}}}"*) cat {images};;
      *) exit 1;;
    esac;;
  "image ls") cut -d' ' -f1 {images};;
  "image rm") exit 0;;
esac
"#,
        log = log.display(),
        images = dir.path().join("images").display()
    );
    std::fs::write(bin.join("docker"), docker).unwrap();
    let script = dir.path().join("prune.sh");
    std::fs::write(
        &script,
        trigger_ops::prune::script(&[
            "ghcr.io/triggerdotdev/supervisor:v4.5.12",
            "redis:7.4.2-alpine",
        ]),
    )
    .unwrap();
    for p in [bin.join("docker"), script.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let removed: Vec<&str> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("image rm "))
        .collect();
    assert_eq!(
        removed,
        [
            "reg.example/ns/proj_a:20200101.1.production.aaaa",
            "sha256:none",
            "reg.example/ns/proj_b:20190501.1.production.dddd",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("removed 3 image(s)"), "{stdout}");
}

/// The DISK cell of the droplet's row in `ops status` (the table's last column).
fn disk_cell(f: &Fleet, name: &str) -> String {
    let out = f.run(&["status"]).expect_code(0).stdout.clone();
    let header = out.lines().find(|l| l.starts_with("DROPLET")).unwrap();
    let at = header.find("DISK").expect("a DISK column");
    let short = name.strip_prefix("trigger-supervisor-").unwrap();
    let row = out.lines().find(|l| l.starts_with(short)).unwrap();
    row.get(at..).unwrap_or("").trim().to_string()
}

#[test]
fn a_droplet_at_five_percent_free_fails_the_task_naming_it_and_what_to_do() {
    let (f, _sup, id, name) = an_hour_old_droplet(Some(2.0));
    let run = f.health();
    run.expect_code(1).expect_stdout(&format!(
        "droplet {name} (id {id}): disk 2.0 of 40.0 GiB free (5%), below 10%"
    ));
    run.expect_stdout("journalctl -u ops-prune")
        .expect_stdout("SUPERVISOR_SIZE");
    assert!(f.deletes().is_empty(), "a full disk deletes nothing");
    assert_eq!(disk_cell(&f, &name), "5% LOW");
    // Still low at the next run, from the kept reading: it fails again without asking.
    let asked = f.api.metric_requests();
    f.health().expect_code(1).expect_stdout(&name);
    assert_eq!(f.api.metric_requests(), asked);
}

#[test]
fn a_droplet_at_forty_percent_is_fine_shown_and_read_once_per_window_and_a_dry_run_keeps_nothing() {
    let (f, _sup, _id, name) = an_hour_old_droplet(Some(16.0));
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout(&format!(
            "disk of droplet {name}: 16.0 of 40.0 GiB free (40%)"
        ));
    assert_eq!(
        f.api.metric_requests(),
        2,
        "filesystem_free and filesystem_size"
    );
    f.health().expect_code(0).expect_stdout(&format!(
        "disk of droplet {name}: 16.0 of 40.0 GiB free (40%)"
    ));
    assert_eq!(
        f.api.metric_requests(),
        4,
        "the dry run kept no reading: the real run reads again"
    );
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("DigitalOcean requests: 1,");
    assert!(!run.stdout.contains("disk of droplet"), "{}", run.stdout);
    assert_eq!(
        f.api.metric_requests(),
        4,
        "kept: no request within the window"
    );
    let requests = f.api.server.requests();
    let asked = requests
        .iter()
        .find(|r| {
            r.path
                .starts_with("/v2/monitoring/metrics/droplet/filesystem_free")
        })
        .unwrap();
    assert!(
        asked.path.contains("host_id=")
            && asked.path.contains("&start=")
            && asked.path.contains("&end="),
        "{}",
        asked.path
    );

    assert_eq!(disk_cell(&f, &name), "40%");
    let doc = f.run(&["status", "--json"]).json();
    let disk = &doc["supervisor"]["droplets"][0]["disk"];
    assert_eq!(disk["verdict"], "ok", "{doc}");
    assert_eq!(disk["free_ratio"], 0.4);
    assert_eq!(disk["free_bytes"], 16 * GIB);
    assert_eq!(disk["size_bytes"], 40 * GIB);
    let (_child, addr) = crate::operator::Served::start(&f.s.ops);
    let (code, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "ops_supervisor_disk_free_ratio{{droplet=\"{name}\"}} 0.4\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "ops_supervisor_disk_size_bytes{{droplet=\"{name}\"}} {}\n",
            40 * GIB
        )),
        "{metrics}"
    );
}

#[test]
fn a_droplet_whose_agent_reports_nothing_is_unknown_not_a_failure() {
    let (f, _sup, _id, name) = an_hour_old_droplet(None);
    f.health()
        .expect_code(0)
        .expect_stdout(&format!(
            "disk of droplet {name}: unknown (no filesystem sample"
        ))
        .expect_stdout("do-agent");
    assert_eq!(
        f.api.metric_requests(),
        1,
        "no free sample: the size is not asked"
    );
    assert_eq!(disk_cell(&f, &name), "unknown");
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(
        doc["supervisor"]["droplets"][0]["disk"]["verdict"],
        "unknown"
    );
    let (_child, addr) = crate::operator::Served::start(&f.s.ops);
    let (_, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert!(
        !metrics.contains("ops_supervisor_disk_free_ratio{"),
        "{metrics}"
    );
}
