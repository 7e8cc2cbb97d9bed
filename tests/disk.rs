//! Keep disks free and boot from a baked image (issue 28): what cloud-init puts on a droplet
//! validates and does what it says, the pruning against a stand-in `docker`.

use std::os::unix::fs::PermissionsExt;

use crate::supervisor::{cloud_init_schema, fleet};
use crate::support::written;

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
