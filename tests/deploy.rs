//! Deploy artefacts: install.sh, shipped and rendered units, crontab, Kubernetes, Railway.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use trigger_ops::schedule::Cron;

use crate::support::{tool, OPS};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn every_shell_script_passes_shellcheck() {
    if !tool("shellcheck") {
        return;
    }
    let scripts = [
        "deploy/install.sh",
        "scripts/bench.sh",
        "scripts/pg-test-cluster.sh",
        "scripts/test.sh",
        ".ci/run",
    ];
    let out = Command::new("shellcheck")
        .args(scripts)
        .current_dir(REPO)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// path → (mode, content hash) for every entry under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let content = if meta.is_file() {
                trigger_ops::sealed::fingerprint(&[&String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap(),
                )])
            } else {
                String::new()
            };
            out.insert(rel, (meta.permissions().mode() & 0o7777, content));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn install(root: &Path, extra: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(format!("{REPO}/deploy/install.sh"))
        .args(["--root", root.to_str().unwrap(), "--binary", OPS])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{text}");
    text
}

#[test]
fn install_twice_gives_the_same_tree_and_keeps_an_edited_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    install(&root, &[]);
    let first = snapshot(&root);
    for (path, mode) in [
        ("etc/ops", 0o750),
        ("etc/ops/ops.env", 0o640),
        ("etc/ops/jobs.yaml", 0o640),
        ("var/lib/ops", 0o700),
        ("usr/local/bin/ops", 0o755),
    ] {
        assert_eq!(first[path].0, mode, "{path} mode {:o}", first[path].0);
    }
    for unit in [
        "ops-health.service",
        "ops-health.timer",
        "ops-hourly.timer",
        "ops-serve.service",
    ] {
        assert!(
            first.contains_key(&format!("etc/systemd/system/{unit}")),
            "{unit} missing"
        );
    }
    let service =
        std::fs::read_to_string(root.join("etc/systemd/system/ops-health.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/ops --config /etc/ops/jobs.yaml --state-dir /var/lib/ops run health"), "{service}");
    assert!(!service.contains(root.to_str().unwrap()));
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(root.join("etc/ops/ops.env"))
                .unwrap()
                .uid(),
            0
        );
    }
    // Idempotent.
    let log = install(&root, &[]);
    assert_eq!(first, snapshot(&root));
    assert!(log.contains("ops.env exists: kept"));
    // An edited env file survives a re-install.
    let env = root.join("etc/ops/ops.env");
    std::fs::write(&env, "DIGITALOCEAN_TOKEN=edited-by-operator\n").unwrap();
    install(&root, &[]);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "DIGITALOCEAN_TOKEN=edited-by-operator\n"
    );
    // A profile removed from the edited jobs.yaml loses its units on re-install.
    let jobs = root.join("etc/ops/jobs.yaml");
    let edited = std::fs::read_to_string(&jobs).unwrap().replace(
        "  extract:\n    cron: \"*/15 * * * *\"",
        "  extract:\n    enabled: false\n    cron: \"*/15 * * * *\"",
    );
    assert!(edited.contains("enabled: false"));
    std::fs::write(&jobs, edited).unwrap();
    let log = install(&root, &[]);
    assert!(log.contains("removed ops-extract.timer"), "{log}");
    assert!(!root.join("etc/systemd/system/ops-extract.service").exists());
    assert!(root.join("etc/systemd/system/ops-health.timer").exists());
    assert!(root.join("etc/systemd/system/ops-serve.service").exists());
    // Dry run changes nothing.
    let before = snapshot(&root);
    let plan = install(&root, &["--dry-run", "--scheduler", "supercronic"]);
    assert!(
        plan.contains("+ install -m 0644") && plan.contains("ops.service"),
        "{plan}"
    );
    assert_eq!(before, snapshot(&root));
    // Switching to supercronic replaces the timers with ops.service; uninstall keeps config.
    install(&root, &["--scheduler", "supercronic"]);
    assert!(root.join("etc/systemd/system/ops.service").exists());
    assert!(!root.join("etc/systemd/system/ops-health.timer").exists());
    let out = Command::new("bash")
        .arg(format!("{REPO}/deploy/install.sh"))
        .args(["uninstall", "--root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!root.join("usr/local/bin/ops").exists());
    assert!(env.exists());
}

/// Copies a unit, pointing its executables at files that exist here, and verifies it.
fn verify_unit(src: &Path, dir: &Path) {
    let text = std::fs::read_to_string(src)
        .unwrap()
        .replace("/usr/local/bin/ops", OPS)
        .replace("/usr/local/bin/supercronic", "/bin/true");
    let dst: PathBuf = dir.join(src.file_name().unwrap());
    std::fs::write(&dst, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&dst)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let name = dst.file_name().unwrap().to_str().unwrap().to_string();
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&name) && !l.contains("User=") && !l.contains("Group="))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify {name}:\n{err}");
}

#[test]
fn shipped_and_rendered_units_pass_systemd_analyze_verify() {
    if !tool("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in ["ops.service", "ops-serve.service"] {
        let text = std::fs::read_to_string(format!("{REPO}/deploy/{unit}")).unwrap();
        let unit_section = text.split("[Service]").next().unwrap();
        assert!(
            unit_section.contains("StartLimitIntervalSec=")
                && unit_section.contains("StartLimitBurst="),
            "start limits belong in [Unit]: {unit}"
        );
        for needle in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "StateDirectory=ops",
            "RestrictAddressFamilies=",
            "Restart=on-failure",
        ] {
            assert!(text.contains(needle), "{unit} lacks {needle}");
        }
        verify_unit(Path::new(&format!("{REPO}/deploy/{unit}")), dir.path());
    }
    let root = dir.path().join("root");
    install(&root, &[]);
    for entry in std::fs::read_dir(root.join("etc/systemd/system")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            verify_unit(&path, dir.path());
        }
    }
}

#[test]
fn the_installed_crontab_parses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    install(&root, &["--scheduler", "supercronic"]);
    let out = Command::new(root.join("usr/local/bin/ops"))
        .args([
            "--config",
            root.join("etc/ops/jobs.yaml").to_str().unwrap(),
            "--state-dir",
            "/var/lib/ops",
            "--env-file",
            "/dev/null",
            "render-crontab",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 4);
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        Cron::parse(&fields[..5].join(" ")).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            fields[5].starts_with('/'),
            "binary path not absolute: {line}"
        );
    }
}

#[test]
fn kubernetes_manifests_parse_forbid_overlap_and_match_the_renderer() {
    let shipped =
        std::fs::read_to_string(format!("{REPO}/deploy/kubernetes/cronjob.yaml")).unwrap();
    let out = Command::new(OPS)
        .args([
            "--config",
            &format!("{REPO}/jobs.yaml"),
            "--env-file",
            "/dev/null",
            "render-k8s",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success());
    let rendered = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&format!("from {REPO}/jobs.yaml"), "from jobs.yaml");
    assert_eq!(
        shipped, rendered,
        "deploy/kubernetes/cronjob.yaml is stale: re-render it with ops render-k8s"
    );
    let mut cronjobs = 0;
    for doc in serde_yaml::Deserializer::from_str(&shipped) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if v["kind"] == "CronJob" {
            cronjobs += 1;
            assert_eq!(v["spec"]["concurrencyPolicy"], "Forbid");
            Cron::parse(v["spec"]["schedule"].as_str().unwrap()).unwrap();
            let c = &v["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(c["envFrom"][0]["secretRef"]["name"], "ops-env");
            assert_eq!(c["volumeMounts"][0]["mountPath"], "/var/lib/ops");
        }
    }
    assert_eq!(cronjobs, 4);
}

use serde::Deserialize as _;

#[test]
fn railway_json_is_a_cron_service() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/deploy/railway/railway.json")).unwrap(),
    )
    .unwrap();
    let schedule = v["deploy"]["cronSchedule"].as_str().unwrap();
    Cron::parse(schedule).unwrap();
    assert!(v["deploy"]["startCommand"]
        .as_str()
        .unwrap()
        .starts_with("ops run "));
    assert_eq!(v["deploy"]["restartPolicyType"], "NEVER");
    assert!(Path::new(&format!(
        "{REPO}/{}",
        v["build"]["dockerfilePath"].as_str().unwrap()
    ))
    .exists());
}

#[test]
fn env_example_documents_every_variable_the_settings_read() {
    let example = std::fs::read_to_string(format!("{REPO}/deploy/ops.env.example")).unwrap();
    let source = std::fs::read_to_string(format!("{REPO}/src/settings.rs")).unwrap();
    let mut missing = Vec::new();
    for chunk in source.split('"').skip(1).step_by(2) {
        let is_var = chunk.len() > 3
            && chunk.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && chunk.contains('_');
        if is_var && !example.contains(&format!("{chunk}=")) && chunk != "CHECK_INTERVAL" {
            missing.push(chunk.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/ops.env.example lacks {missing:?}"
    );
    let parsed = trigger_ops::envfile::parse(&example).unwrap();
    assert!(parsed.len() > 30);
}

/// The release pipeline builds what ships: every action pinned by commit SHA (with its tag in a
/// comment), every installed tool by version (Python wheels by hash too), a published release
/// never overwritten, and a provenance attestation published with the checksums.
#[test]
fn the_release_pipeline_pins_what_it_runs_and_never_replaces_a_release() {
    let workflow =
        std::fs::read_to_string(format!("{REPO}/.github/workflows/release.yml")).unwrap();
    let ci = std::fs::read_to_string(format!("{REPO}/.ci/run")).unwrap();
    let mut actions = 0;
    for line in workflow.lines().map(str::trim) {
        let Some(used) = line
            .strip_prefix("- uses: ")
            .or_else(|| line.strip_prefix("uses: "))
        else {
            continue;
        };
        actions += 1;
        let (_, pin) = used.split_once('@').unwrap_or((used, ""));
        let (sha, tag) = pin.split_once(" # ").unwrap_or((pin, ""));
        assert!(
            sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) && tag.starts_with('v'),
            "not pinned by SHA with its tag: {line}"
        );
    }
    assert!(actions >= 5, "{actions} actions");
    for text in [&workflow, &ci] {
        for line in text.lines().filter(|l| l.contains("cargo install ")) {
            assert!(
                line.contains("--version ") && line.contains("--locked"),
                "{line}"
            );
        }
        for line in text.lines().filter(|l| l.contains("pip install")) {
            assert!(line.contains("--require-hashes"), "{line}");
        }
    }
    assert!(
        !workflow.contains("--clobber"),
        "a re-pushed tag replaces assets"
    );
    assert!(workflow.contains("never replaced"));
    assert!(workflow.contains("subject-checksums: dist/SHA256SUMS"));
}

/// scripts/test.sh runs the tests where only loopback and the two test addresses exist: nothing
/// outside can be reached (no route), so no test calls a real API by mistake.
#[test]
fn the_tests_run_in_a_network_namespace_of_their_own() {
    crate::support::netns::ensure();
    for outside in [
        "1.1.1.1:443",
        "[2606:4700:4700::1111]:443",
        "169.254.169.254:80",
    ] {
        let addr: std::net::SocketAddr = outside.parse().unwrap();
        let err = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
            .expect_err(outside);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::NetworkUnreachable,
            "{outside}: {err}"
        );
    }
    let ci = std::fs::read_to_string(format!("{REPO}/.ci/run")).unwrap();
    assert!(
        ci.contains("bash scripts/test.sh"),
        "CI runs the tests through the namespace"
    );
    assert!(!ci.contains("\ncargo test"), "no test run outside it");
}
