//! Schedules rendered from jobs.yaml: the supercronic crontab and systemd service/timer pairs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{JobsConfig, Profile};
use crate::exit::config_error;
use crate::schedule::shell_quote;

/// The words that start `ops` with the same config and state dir as this invocation.
pub struct Invocation {
    pub binary: PathBuf,
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
}

impl Invocation {
    pub fn current(config: &JobsConfig, state_dir: &Path) -> Invocation {
        let binary = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/ops"));
        Invocation {
            binary,
            config: config.path.as_ref().map(|p| absolute(p)),
            state_dir: absolute(state_dir),
        }
    }

    pub fn command(&self, profile: &str) -> String {
        let mut words = vec![shell_quote(&self.binary.to_string_lossy())];
        if let Some(config) = &self.config {
            words.push("--config".into());
            words.push(shell_quote(&config.to_string_lossy()));
        }
        words.push("--state-dir".into());
        words.push(shell_quote(&self.state_dir.to_string_lossy()));
        words.push("run".into());
        words.push(profile.to_string());
        words.join(" ")
    }
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.to_path_buf())
        }
    })
}

fn enabled(config: &JobsConfig) -> impl Iterator<Item = &Profile> {
    config.profiles.iter().filter(|p| p.enabled)
}

pub fn crontab(config: &JobsConfig, inv: &Invocation) -> String {
    let mut out = format!(
        "# Rendered by ops {} from {}; do not edit by hand.\n\
         # Re-render with `ops render-crontab` after changing a cron: and restart the scheduler.\n\
         # Each run takes its own lock, so an overlapping tick is skipped, never queued.\n",
        env!("CARGO_PKG_VERSION"),
        config.shown_path()
    );
    for p in enabled(config) {
        if !p.description.is_empty() {
            let _ = writeln!(out, "# {}: {}", p.name, p.description.replace('\n', " "));
        }
        let _ = writeln!(out, "{} {}", p.cron.as_str(), inv.command(&p.name));
    }
    out
}

/// Why a unit cannot reach `state_dir`: its `PrivateTmp=yes` gives it a /tmp of its own, and
/// `ProtectHome=yes` hides the home directories, so `ReadWritePaths=` there names a path the
/// service never sees (each timer run would start with an empty state).
pub fn hidden_from_units(state_dir: &std::path::Path) -> Option<String> {
    let hidden = |roots: &[&str]| roots.iter().any(|r| state_dir.starts_with(r));
    let why = if hidden(&["/tmp", "/var/tmp"]) {
        "PrivateTmp=yes gives each run a /tmp of its own"
    } else if hidden(&["/home", "/root", "/run/user"]) {
        "ProtectHome=yes hides the home directories from them"
    } else {
        return None;
    };
    Some(format!(
        "the state directory {} is not one the rendered units can use: {why}, so every timer run would start from an empty state; choose one outside /tmp and the home directories (--state-dir / OPS_STATE_DIR, e.g. /var/lib/ops) and render again",
        state_dir.display()
    ))
}

/// `(file name, contents)` pairs: `ops-<profile>.service` and `ops-<profile>.timer`.
pub fn systemd_units(
    config: &JobsConfig,
    inv: &Invocation,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut units = Vec::new();
    for p in enabled(config) {
        let calendar = p
            .cron
            .on_calendar()
            .map_err(|e| config_error(format!("profile {:?}: {e}", p.name)))?;
        let state_dir = inv.state_dir.to_string_lossy();
        let writable = if state_dir == "/var/lib/ops" {
            String::new()
        } else {
            format!("ReadWritePaths={state_dir}\n")
        };
        let description = if p.description.is_empty() {
            String::new()
        } else {
            format!(": {}", p.description.replace('\n', " "))
        };
        let service = format!(
            "# Rendered by ops {version}; re-render with `ops render-systemd`.\n\
             [Unit]\n\
             Description=ops profile {name}{description}\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             User=ops\n\
             Group=ops\n\
             ExecStart={command}\n\
             TimeoutStartSec={timeout}\n\
             StateDirectory=ops\n\
             StateDirectoryMode=0700\n\
             {writable}\
             UMask=0077\n\
             NoNewPrivileges=yes\n\
             ProtectSystem=strict\n\
             ProtectHome=yes\n\
             PrivateTmp=yes\n\
             PrivateDevices=yes\n\
             ProtectKernelTunables=yes\n\
             ProtectKernelModules=yes\n\
             ProtectControlGroups=yes\n\
             RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
             RestrictNamespaces=yes\n\
             RestrictRealtime=yes\n\
             LockPersonality=yes\n\
             SystemCallArchitectures=native\n",
            version = env!("CARGO_PKG_VERSION"),
            name = p.name,
            command = inv.command(&p.name),
            // ops stops itself a few seconds after the profile timeout; systemd is the backstop.
            timeout = p.timeout.as_secs() + 30,
        );
        let timer = format!(
            "# Rendered by ops {version}; re-render with `ops render-systemd`.\n\
             [Unit]\n\
             Description=Schedule of ops profile {name} (cron: {cron})\n\
             \n\
             [Timer]\n\
             OnCalendar={calendar}\n\
             Persistent=true\n\
             AccuracySec=1s\n\
             Unit=ops-{name}.service\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            version = env!("CARGO_PKG_VERSION"),
            name = p.name,
            cron = p.cron.as_str(),
        );
        units.push((format!("ops-{}.service", p.name), service));
        units.push((format!("ops-{}.timer", p.name), timer));
    }
    Ok(units)
}

/// Kubernetes manifests: namespace-scoped PVC for state, a ConfigMap with jobs.yaml, and one
/// CronJob per enabled profile that never overlaps itself (`concurrencyPolicy: Forbid`).
pub fn kubernetes(config: &JobsConfig, image: &str, namespace: &str) -> anyhow::Result<String> {
    use serde_json::json;
    let labels = |profile: Option<&str>| {
        let mut l =
            json!({"app.kubernetes.io/name": "ops", "app.kubernetes.io/part-of": "trigger-ops"});
        if let Some(p) = profile {
            l["trigger-ops/profile"] = json!(p);
        }
        l
    };
    let jobs_text = match &config.path {
        Some(p) => std::fs::read_to_string(p)?,
        None => crate::config::BUNDLED.to_string(),
    };
    let mut docs = vec![
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "ops-state", "namespace": namespace, "labels": labels(None)},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ops-jobs", "namespace": namespace, "labels": labels(None)},
            "data": {"jobs.yaml": jobs_text}
        }),
    ];
    for p in enabled(config) {
        docs.push(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": format!("ops-{}", p.name), "namespace": namespace, "labels": labels(Some(&p.name))},
            "spec": {
                "schedule": p.cron.as_str(),
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 120,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {"spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": p.timeout.as_secs() + 60,
                    "template": {
                        "metadata": {"labels": labels(Some(&p.name))},
                        "spec": {
                            "restartPolicy": "Never",
                            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
                            "containers": [{
                                "name": "ops",
                                "image": image,
                                "args": ["--config", "/etc/ops/jobs.yaml", "--state-dir", "/var/lib/ops", "--env-file", "/dev/null", "run", p.name],
                                "envFrom": [{"secretRef": {"name": "ops-env"}}],
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                                "volumeMounts": [
                                    {"name": "state", "mountPath": "/var/lib/ops"},
                                    {"name": "jobs", "mountPath": "/etc/ops/jobs.yaml", "subPath": "jobs.yaml", "readOnly": true}
                                ]
                            }],
                            "volumes": [
                                {"name": "state", "persistentVolumeClaim": {"claimName": "ops-state"}},
                                {"name": "jobs", "configMap": {"name": "ops-jobs"}}
                            ]
                        }
                    }
                }}
            }
        }));
    }
    let mut out = format!(
        "# Rendered by ops {} (`ops render-k8s`) from {}.\n# Secrets: kubectl -n {namespace} create secret generic ops-env --from-env-file=/etc/ops/ops.env\n",
        env!("CARGO_PKG_VERSION"),
        config.shown_path()
    );
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc)?);
    }
    Ok(out)
}
