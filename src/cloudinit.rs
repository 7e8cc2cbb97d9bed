//! The supervisor droplet's user-data: a `#cloud-config` that installs Docker from Ubuntu's
//! packages, writes `/opt/trigger/.env` (0600, every secret lives there and only there) and
//! `/opt/trigger/docker-compose.yml`, and starts the supervisor with a docker-socket-proxy.
//!
//! The user-data itself holds those secrets, and DigitalOcean serves it unauthenticated at
//! `http://169.254.169.254/metadata/v1/user-data` for the droplet's life. Task containers must
//! not reach it: a docker.service drop-in inserts a `DOCKER-USER` rule rejecting traffic to
//! 169.254.169.254 at every Docker start, and the compose starts only once the rule is in place.
//!
//! Draining (supervisor v4.5.0-rc.5 and later): the supervisor reads a dequeue-backpressure verdict
//! from a Redis key; a small Redis (`drain-signal`, on an internal network only the supervisor
//! joins) holds it. `ops-drain.service` does nothing at start; when the droplet shuts down (ops
//! sends DigitalOcean's `shutdown` action) its `ExecStop` runs `/opt/trigger/drain.sh` before
//! Docker, the network and DNS stop: it engages the brake (the supervisor stops taking runs, its
//! heartbeat and workload API stay up), waits until no `runner-` container is left, and lets the
//! shutdown go on. Task containers' scopes have no shutdown dependencies (runc sets
//! `DefaultDependencies=false`), so they run until Docker stops, after the drain.

use anyhow::bail;
use serde_json::{json, Value};

use crate::record::ConfigRecord;
use crate::settings::Settings;

/// DigitalOcean's limit on `user_data`.
pub const MAX_USER_DATA: usize = 64 * 1024;
pub const SUPERVISOR_IMAGE: &str = "ghcr.io/triggerdotdev/supervisor";
pub const HEALTH_PORT: u16 = 8020;
/// How often the supervisor heartbeats to the webapp (`TRIGGER_WORKER_HEARTBEAT_INTERVAL_SECONDS`,
/// apps/supervisor/src/env.ts, default 30). Its first heartbeat comes one interval after it
/// starts (no leading edge; `connect` writes no heartbeat), so 10 s brings a new droplet's first
/// heartbeat 20 s sooner, and `stale_after` (1m) spans six heartbeats instead of two. Costs the
/// webapp one small UPDATE per droplet every 10 s.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 10;
/// The tag on a droplet whose user-data sets that interval: the plan may judge its silence
/// sooner (`stale_after` 30s instead of 1m) only when it knows how often it beats.
pub const BEAT_TAG: &str = "ops-beat-10s";
/// DigitalOcean's metadata service (IPv4 only: it has no IPv6 address).
pub const METADATA_IP: &str = "169.254.169.254";
pub const METADATA_DROP_IN: &str =
    "/etc/systemd/system/docker.service.d/10-ops-block-metadata.conf";
pub const DRAIN_SCRIPT: &str = "/opt/trigger/drain.sh";
pub const DRAIN_UNIT: &str = "/etc/systemd/system/ops-drain.service";
pub const POWEROFF_DROP_IN: &str = "/etc/systemd/system/poweroff.target.d/10-ops-drain.conf";
/// A reboot runs the drain too (ops-drain.service stops on every shutdown), and `reboot.target`
/// has the same 30-minute `JobTimeoutSec` with `reboot-force` (systemd 252's units).
pub const REBOOT_DROP_IN: &str = "/etc/systemd/system/reboot.target.d/10-ops-drain.conf";
/// The Redis that holds the drain verdict (no persistence, internal network only).
pub const DRAIN_SIGNAL_IMAGE: &str = "redis:7.4.2-alpine";
pub const DRAIN_KEY: &str = "ops:drain";
/// The droplet's own bound on a drain: ops deletes it at `drain_timeout` anyway; this only
/// matters when ops never comes back (systemd's default for the whole shutdown is 30 minutes).
pub const DRAIN_MAX_SECS: u64 = 24 * 3600;

/// Whether droplets running this supervisor version can be drained (dequeue backpressure,
/// Trigger.dev v4.5.0-rc.5 and later).
pub fn drains(version: &str) -> bool {
    crate::release::at_least(version, crate::tasks::supervisor::drain::BACKPRESSURE_SINCE)
}

/// `ops-drain.service`: stopped (so drained) before Docker, the network and DNS at shutdown;
/// no dependency on docker.service, so a Docker restart does not drain the droplet.
pub fn drain_unit() -> String {
    format!(
        "# Written by trigger-ops: at shutdown, stop taking runs and wait for the running ones.\n\
[Unit]\n\
Description=trigger-ops: drain the supervisor before shutdown\n\
After=docker.service network-online.target systemd-resolved.service systemd-networkd.service\n\
Wants=network-online.target\n\
\n\
[Service]\n\
Type=oneshot\n\
RemainAfterExit=yes\n\
ExecStart=/bin/true\n\
ExecStop={DRAIN_SCRIPT}\n\
TimeoutStopSec={}\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        DRAIN_MAX_SECS + 300
    )
}

/// How long the supervisor holds an engaged verdict (`TRIGGER_DEQUEUE_BACKPRESSURE_MAX_VERDICT_AGE_MS`):
/// set explicitly, because its default is 15 s from v4.5.0-rc.5 to v4.5.9 and 120 s only since
/// v4.5.10 (apps/supervisor/src/env.ts; #4444). An older verdict fails open.
pub const VERDICT_MAX_AGE_MS: u64 = 120_000;
/// drain.sh writes the verdict this often: well inside [`VERDICT_MAX_AGE_MS`].
pub const DRAIN_REFRESH_SECS: u64 = 5;
/// A pull logged longer ago than this is not waited for (Trigger.dev requeues a run whose
/// attempt did not start within `RUN_ENGINE_TIMEOUT_PENDING_EXECUTING`, 60 s by default).
pub const DRAIN_PULL_MAX_SECS: u64 = 300;

/// The drain: engage the backpressure verdict (rewritten every few seconds, well within the
/// verdict's maximum age, after which the supervisor fails open), then wait until no `runner-`
/// container is left and no run dequeued here is still waiting for its image (twice in a row,
/// after a settle for a run dequeued just before the brake).
///
/// A dequeued run has no container while its image is pulled: the supervisor's Docker workload
/// manager (apps/supervisor/src/workloadManager/docker.ts, v4.5.0 to v4.5.12) logs "Pulling
/// image" at info level, with the container's name (`containerCreateOpts.name`, `runner-…`),
/// then pulls, creates and starts the container; a failed pull or create is logged with the
/// same name. So a name in a "Pulling image" line within the last few minutes, with no
/// container created under it (Docker's events) and no failure logged for it, is a run still
/// on its way: the shutdown waits for it. The supervisor's metrics give no such signal (its
/// `workload_create_duration_seconds` is observed only once a create ends, and it listens on
/// the container's own 127.0.0.1).
pub fn drain_script() -> String {
    format!(
        r#"#!/bin/sh
# Written by trigger-ops. Run by ops-drain.service when the droplet shuts down.
set -u
max=${{OPS_DRAIN_MAX_SECS:-{DRAIN_MAX_SECS}}}
poll=${{OPS_DRAIN_POLL_SECS:-{DRAIN_REFRESH_SECS}}}
settle=${{OPS_DRAIN_SETTLE_SECS:-15}}
pull_max=${{OPS_DRAIN_PULL_MAX_SECS:-{DRAIN_PULL_MAX_SECS}}}
compose() {{
  docker compose --project-directory /opt/trigger "$@"
}}
engage() {{
  now_ms=$(($(date +%s) * 1000))
  compose exec -T drain-signal redis-cli SET {DRAIN_KEY} '{{"engaged":true,"ts":'"$now_ms"'}}' >/dev/null 2>&1
}}
runners() {{
  docker ps -q --filter name=^runner- 2>/dev/null | wc -l | tr -d ' '
}}
# Runs dequeued here still waiting for their image: named in a "Pulling image" line, with no
# container created under that name and no failed pull or create logged for it.
pulling() {{
  logs=$(compose logs --no-color --no-log-prefix --since "${{pull_max}}s" supervisor 2>/dev/null) || {{ echo 0; return; }}
  created=$(docker events --since "${{pull_max}}s" --until "$(date +%s)" --filter type=container --filter event=create --format '{{{{.Actor.Attributes.name}}}}' 2>/dev/null)
  failed=$(printf '%s\n' "$logs" | grep -e '"message":"Failed to pull image"' -e '"message":"failed to read image response"' -e '"message":"Failed to create container"')
  n=0
  for name in $(printf '%s\n' "$logs" | grep '"message":"Pulling image"' | grep -o '"name":"runner-[A-Za-z0-9_-]*"' | cut -d'"' -f4 | sort -u); do
    printf '%s\n' "$created" | grep -qx "$name" && continue
    printf '%s\n' "$failed" | grep -q "\"name\":\"$name\"" && continue
    n=$((n + 1))
  done
  echo "$n"
}}
start=$(date +%s)
engage || echo "ops-drain: could not set the backpressure key; waiting for the runs anyway"
echo "ops-drain: the supervisor stops taking runs; waiting for $(runners) run container(s) and $(pulling) image pull(s)"
idle=0
while :; do
  now=$(date +%s)
  if [ $((now - start)) -ge "$max" ]; then
    echo "ops-drain: giving up after ${{max}}s with $(runners) run container(s) left"
    exit 0
  fi
  engage
  n=$(runners)
  p=0
  [ "$n" = 0 ] && p=$(pulling)
  if [ "$n" = 0 ] && [ "$p" = 0 ] && [ $((now - start)) -ge "$settle" ]; then
    idle=$((idle + 1))
    if [ "$idle" -ge 2 ]; then
      echo "ops-drain: no run container left after $((now - start))s"
      exit 0
    fi
  else
    [ "$p" = 0 ] || echo "ops-drain: $p run(s) dequeued here still wait for their image"
    idle=0
  fi
  sleep "$poll"
done
"#
    )
}

/// Inserts the rule unless present (idempotent across Docker restarts).
fn block_metadata_command() -> String {
    let rule = format!("DOCKER-USER -d {METADATA_IP} -j REJECT");
    format!("iptables -C {rule} 2>/dev/null || iptables -I {rule}")
}

/// The supervisor's environment, in a stable order.
pub fn supervisor_env(
    record: &ConfigRecord,
    droplet_name: &str,
    version: &str,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TRIGGER_API_URL", record.api_origin.clone()),
        (
            "TRIGGER_WORKER_TOKEN",
            record.worker_token.expose().to_string(),
        ),
        (
            "MANAGED_WORKER_SECRET",
            record.managed_secret.expose().to_string(),
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", record.otel_endpoint.clone()),
        // Stable per droplet: a restart must not register a new worker instance.
        ("TRIGGER_WORKER_INSTANCE_NAME", droplet_name.to_string()),
        (
            "TRIGGER_WORKER_HEARTBEAT_INTERVAL_SECONDS",
            HEARTBEAT_INTERVAL_SECS.to_string(),
        ),
        ("TRIGGER_WORKLOAD_API_DOMAIN", "supervisor".into()),
        (
            "TRIGGER_WORKLOAD_API_PORT_INTERNAL",
            HEALTH_PORT.to_string(),
        ),
        (
            "TRIGGER_WORKLOAD_API_PORT_EXTERNAL",
            HEALTH_PORT.to_string(),
        ),
        ("DOCKER_HOST", "tcp://docker-proxy:2375".into()),
        ("DOCKER_RUNNER_NETWORKS", "supervisor".into()),
        ("DOCKER_ENFORCE_MACHINE_PRESETS", "true".into()),
        ("DOCKER_AUTOREMOVE_EXITED_CONTAINERS", "true".into()),
    ];
    if drains(version) {
        // The drain switch: a verdict in the droplet's own Redis (see the module doc).
        env.extend([
            ("TRIGGER_DEQUEUE_BACKPRESSURE_ENABLED", "true".to_string()),
            ("TRIGGER_DEQUEUE_BACKPRESSURE_DRY_RUN", "false".into()),
            (
                "TRIGGER_DEQUEUE_BACKPRESSURE_REDIS_HOST",
                "drain-signal".into(),
            ),
            ("TRIGGER_DEQUEUE_BACKPRESSURE_REDIS_PORT", "6379".into()),
            (
                "TRIGGER_DEQUEUE_BACKPRESSURE_REDIS_TLS_DISABLED",
                "true".into(),
            ),
            ("TRIGGER_DEQUEUE_BACKPRESSURE_REDIS_KEY", DRAIN_KEY.into()),
            (
                "TRIGGER_DEQUEUE_BACKPRESSURE_MAX_VERDICT_AGE_MS",
                VERDICT_MAX_AGE_MS.to_string(),
            ),
        ]);
        // A full droplet stops dequeuing instead of over-committing its host.
        env.push(("RESOURCE_MONITOR_ENABLED", "true".into()));
    }
    if let Some(host) = &record.registry_host {
        env.push(("DOCKER_REGISTRY_URL", host.clone()));
    }
    if let (Some(user), Some(pass)) = (&record.registry_username, &record.registry_password) {
        env.push(("DOCKER_REGISTRY_USERNAME", user.clone()));
        env.push(("DOCKER_REGISTRY_PASSWORD", pass.expose().to_string()));
    }
    env
}

fn compose(settings: &Settings, record: &ConfigRecord) -> Value {
    let version = crate::release::supervisor_version(
        settings.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    // The workload API is for task containers on the `supervisor` network; the host publishes it
    // only when an outside health checker is allowed in (SUPERVISOR_HEALTH_SOURCES).
    let ports: Vec<String> = if settings.supervisor_health_sources.is_empty() {
        Vec::new()
    } else {
        vec![format!("{HEALTH_PORT}:{HEALTH_PORT}")]
    };
    let healthcheck = "node -e \"http.get('http://localhost:8020/health', res => process.exit(res.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))\"";
    let mut doc = json!({
        "name": "trigger-supervisor",
        "services": {
            "supervisor": {
                "image": format!("{SUPERVISOR_IMAGE}:{}", version.tag),
                "restart": "unless-stopped",
                "env_file": [".env"],
                "depends_on": ["docker-proxy"],
                "networks": ["supervisor", "docker-proxy"],
                "logging": {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}},
                "healthcheck": {
                    "test": ["CMD-SHELL", healthcheck],
                    "interval": "30s", "timeout": "10s", "retries": 5, "start_period": "10s"
                }
            },
            "docker-proxy": {
                "image": settings.docker_proxy_image,
                "restart": "unless-stopped",
                "volumes": ["/var/run/docker.sock:/var/run/docker.sock:ro"],
                "environment": {"LOG_LEVEL": "info", "POST": "1", "CONTAINERS": "1", "IMAGES": "1", "INFO": "1", "NETWORKS": "1"},
                "networks": ["docker-proxy"],
                "logging": {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}},
                "healthcheck": {
                    "test": ["CMD-SHELL", "nc -z 127.0.0.1 2375 || exit 1"],
                    "interval": "30s", "timeout": "5s", "retries": 5, "start_period": "5s"
                }
            }
        },
        "networks": {
            "supervisor": {"name": "supervisor"},
            "docker-proxy": {"name": "docker-proxy"}
        }
    });
    if !ports.is_empty() {
        doc["services"]["supervisor"]["ports"] = json!(ports);
    }
    if drains(&version.tag) {
        doc["services"]["drain-signal"] = json!({
            "image": DRAIN_SIGNAL_IMAGE,
            "restart": "unless-stopped",
            "command": ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            "networks": ["drain"],
            "logging": {"driver": "json-file", "options": {"max-size": "5m", "max-file": "2"}}
        });
        doc["services"]["supervisor"]["networks"] = json!(["supervisor", "docker-proxy", "drain"]);
        doc["services"]["supervisor"]["depends_on"] = json!(["docker-proxy", "drain-signal"]);
        doc["networks"]["drain"] = json!({"name": "drain", "internal": true});
    }
    doc
}

/// Docker and its compose plugin from Ubuntu's packages, unless present (the baked image has
/// them: a droplet made from it skips apt entirely).
pub const INSTALL_DOCKER: &str = "command -v docker >/dev/null && docker compose version >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io docker-compose-v2; }";

/// The images the compose runs for this supervisor version (what the baked image pulls, and
/// what pruning always keeps).
pub fn images(settings: &Settings, version: &str) -> Vec<String> {
    let mut out = vec![
        format!("{SUPERVISOR_IMAGE}:{version}"),
        settings.docker_proxy_image.clone(),
    ];
    if drains(version) {
        out.push(DRAIN_SIGNAL_IMAGE.to_string());
    }
    out
}

/// The bake droplet's sealing unit: started without waiting from cloud-init's last step, it
/// runs once cloud-init has finished (ordered after cloud-final), removes the SSH keys this
/// droplet was given and its host keys (a droplet made from the image gets its own of both
/// through cloud-init: a key removed from SUPERVISOR_SSH_KEYS must not live on in the image),
/// forgets this instance (`cloud-init clean`: droplets made from the image run cloud-init anew,
/// with a new machine id) and powers off, which tells ops the droplet is ready to be
/// snapshotted.
pub const BAKE_SEAL_UNIT: &str = "/etc/systemd/system/ops-bake-seal.service";

pub fn bake_seal_unit() -> String {
    "# Written by trigger-ops: seal the image once cloud-init is done.\n\
[Unit]\n\
Description=trigger-ops: clean cloud-init and power off the bake droplet\n\
After=cloud-final.service\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart=/bin/sh -c 'apt-get clean; rm -rf /var/lib/apt/lists/*; rm -f /root/.ssh/authorized_keys /etc/ssh/ssh_host_*; cloud-init clean --logs --machine-id && systemctl poweroff'\n"
        .to_string()
}

/// The bake droplet's user-data: no secret at all (no token, no registry credential, no .env):
/// Docker installed, the compose's images pulled, then sealed and powered off. A pull that
/// fails leaves the droplet running: ops deletes it at the bake timeout.
pub fn render_bake(settings: &Settings, version: &str) -> anyhow::Result<String> {
    let images = images(settings, version);
    let mut steps = vec![
        json!(["sh", "-c", INSTALL_DOCKER]),
        json!(["systemctl", "enable", "--now", "docker"]),
    ];
    steps.extend(images.iter().map(|i| json!(["docker", "pull", i])));
    steps.push(json!(["systemctl", "daemon-reload"]));
    steps.push(json!([
        "sh",
        "-c",
        format!(
            "docker image inspect {} >/dev/null && systemctl start --no-block ops-bake-seal.service",
            images.join(" ")
        )
    ]));
    let config = json!({
        "write_files": [
            {"path": BAKE_SEAL_UNIT, "permissions": "0644", "owner": "root:root", "content": bake_seal_unit()}
        ],
        "runcmd": steps
    });
    Ok(format!(
        "#cloud-config\n{}",
        serde_yaml::to_string(&config)?
    ))
}

/// The user-data for a droplet named `droplet_name`.
pub fn render(
    record: &ConfigRecord,
    settings: &Settings,
    droplet_name: &str,
) -> anyhow::Result<String> {
    let version = crate::release::supervisor_version(
        settings.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    let mut env_file =
        String::from("# Written by cloud-init from trigger-ops; secrets: keep this file 0600.\n");
    for (k, v) in supervisor_env(record, droplet_name, &version.tag) {
        if v.contains(['\n', '\r']) {
            bail!("{k} contains a line break and cannot go into the supervisor's .env");
        }
        env_file.push_str(&format!("{k}={v}\n"));
    }
    let compose_yaml = serde_yaml::to_string(&compose(settings, record))?;
    let drain = drains(&version.tag);
    let images = images(settings, &version.tag);
    let keep: Vec<&str> = images.iter().map(String::as_str).collect();
    let mut config = json!({
        "write_files": [
            {"path": METADATA_DROP_IN, "permissions": "0644", "owner": "root:root",
             "content": format!("# Written by trigger-ops: containers must not read this droplet's user-data (it holds secrets).\n[Service]\nExecStartPost=/bin/sh -c '{}'\n", block_metadata_command())},
            {"path": "/opt/trigger/.env", "permissions": "0600", "owner": "root:root", "content": env_file},
            {"path": "/opt/trigger/docker-compose.yml", "permissions": "0644", "owner": "root:root", "content": compose_yaml},
            {"path": crate::prune::SCRIPT, "permissions": "0755", "owner": "root:root", "content": crate::prune::script(&keep)},
            {"path": crate::prune::SERVICE, "permissions": "0644", "owner": "root:root", "content": crate::prune::service()},
            {"path": crate::prune::TIMER, "permissions": "0644", "owner": "root:root", "content": crate::prune::timer()}
        ],
        "runcmd": [
            // Docker is in the baked image: installed only when missing (from the Ubuntu image).
            ["sh", "-c", INSTALL_DOCKER],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "docker"],
            // Docker may have started before the drop-in was read: insert the rule now too.
            ["sh", "-c", block_metadata_command()],
            // No container starts unless the rule is in place.
            ["sh", "-c", format!("iptables -C DOCKER-USER -d {METADATA_IP} -j REJECT && docker compose --project-directory /opt/trigger -f /opt/trigger/docker-compose.yml up -d")],
            ["systemctl", "enable", "--now", "ops-prune.timer"]
        ]
    });
    if drain {
        let files = config["write_files"].as_array_mut().expect("a list");
        files.push(json!({"path": DRAIN_SCRIPT, "permissions": "0755", "owner": "root:root", "content": drain_script()}));
        files.push(json!({"path": DRAIN_UNIT, "permissions": "0644", "owner": "root:root", "content": drain_unit()}));
        for path in [POWEROFF_DROP_IN, REBOOT_DROP_IN] {
            files.push(json!({"path": path, "permissions": "0644", "owner": "root:root",
                "content": format!("# Written by trigger-ops: the shutdown waits for the drain (systemd's default is 30 minutes).\n[Unit]\nJobTimeoutSec={}\n", DRAIN_MAX_SECS + 600)}));
        }
        let steps = config["runcmd"].as_array_mut().expect("a list");
        steps.push(json!(["systemctl", "daemon-reload"]));
        steps.push(json!(["systemctl", "enable", "--now", "ops-drain.service"]));
    }
    let text = format!("#cloud-config\n{}", serde_yaml::to_string(&config)?);
    if text.len() > MAX_USER_DATA {
        bail!(
            "the rendered user-data is {} bytes, over DigitalOcean's 64 KiB limit",
            text.len()
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envfile::Env;
    use crate::redact::Secret;

    fn record() -> ConfigRecord {
        ConfigRecord {
            worker_token: Secret::new("tr_wgt_FakeFakeFakeFakeFake"),
            token_source: "manual".into(),
            token_found_at: 0,
            managed_secret: Secret::new("fake-managed-secret"),
            api_origin: "https://trigger.example.com".into(),
            otel_endpoint: "https://trigger.example.com/otel".into(),
            registry_host: None,
            registry_username: None,
            registry_password: None,
            webapp_service: "trigger.dev".into(),
            fingerprint: "f".into(),
            extracted_at: 0,
            webapp_version: Some("v4.5.12".into()),
        }
    }

    #[test]
    fn the_metadata_service_is_blocked_before_any_container_starts() {
        let settings = Settings::from_env(&Env::from_pairs([("X", "")])).unwrap();
        let text = render(&record(), &settings, "sup-1").unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let drop_in = doc["write_files"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|f| f["path"] == METADATA_DROP_IN)
            .expect("the docker.service drop-in is written");
        let content = drop_in["content"].as_str().unwrap();
        assert!(content.contains("[Service]\nExecStartPost=/bin/sh -c 'iptables -C DOCKER-USER -d 169.254.169.254 -j REJECT 2>/dev/null || iptables -I DOCKER-USER -d 169.254.169.254 -j REJECT'"), "{content}");
        let steps: Vec<String> = doc["runcmd"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|step| {
                step.as_sequence()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let insert = steps
            .iter()
            .position(|s| s.contains("iptables -I DOCKER-USER -d 169.254.169.254 -j REJECT"))
            .expect("the rule is inserted by runcmd");
        let up = steps
            .iter()
            .position(|s| s.contains("docker compose --project-directory"))
            .expect("compose up");
        assert!(insert < up, "{steps:?}");
        assert!(
            steps[up].starts_with(
                "sh -c iptables -C DOCKER-USER -d 169.254.169.254 -j REJECT && docker compose"
            ),
            "compose starts only with the rule in place: {}",
            steps[up]
        );
        // The drop-in is read by the Docker that runcmd starts.
        let reload = steps
            .iter()
            .position(|s| s == "systemctl daemon-reload")
            .unwrap();
        let start = steps
            .iter()
            .position(|s| s.contains("enable --now docker"))
            .unwrap();
        assert!(reload < start);
    }
}
