//! The supervisor droplet's user-data: a `#cloud-config` that installs Docker from Ubuntu's
//! packages, writes `/opt/trigger/.env` (0600, every secret lives there and only there) and
//! `/opt/trigger/docker-compose.yml`, and starts the supervisor with a docker-socket-proxy.

use anyhow::bail;
use serde_json::{json, Value};

use crate::settings::Settings;
use crate::tasks::extract::ConfigRecord;

/// DigitalOcean's limit on `user_data`.
pub const MAX_USER_DATA: usize = 64 * 1024;
pub const SUPERVISOR_IMAGE: &str = "ghcr.io/triggerdotdev/supervisor";
pub const HEALTH_PORT: u16 = 8020;

/// The supervisor's environment, in a stable order.
pub fn supervisor_env(record: &ConfigRecord, droplet_name: &str) -> Vec<(&'static str, String)> {
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
    doc
}

/// The user-data for a droplet named `droplet_name`.
pub fn render(
    record: &ConfigRecord,
    settings: &Settings,
    droplet_name: &str,
) -> anyhow::Result<String> {
    let mut env_file =
        String::from("# Written by cloud-init from trigger-ops; secrets: keep this file 0600.\n");
    for (k, v) in supervisor_env(record, droplet_name) {
        if v.contains(['\n', '\r']) {
            bail!("{k} contains a line break and cannot go into the supervisor's .env");
        }
        env_file.push_str(&format!("{k}={v}\n"));
    }
    let compose_yaml = serde_yaml::to_string(&compose(settings, record))?;
    let config = json!({
        "package_update": true,
        "packages": ["docker.io", "docker-compose-v2"],
        "write_files": [
            {"path": "/opt/trigger/.env", "permissions": "0600", "owner": "root:root", "content": env_file},
            {"path": "/opt/trigger/docker-compose.yml", "permissions": "0644", "owner": "root:root", "content": compose_yaml}
        ],
        "runcmd": [
            ["systemctl", "enable", "--now", "docker"],
            ["docker", "compose", "--project-directory", "/opt/trigger", "-f", "/opt/trigger/docker-compose.yml", "up", "-d"]
        ]
    });
    let text = format!("#cloud-config\n{}", serde_yaml::to_string(&config)?);
    if text.len() > MAX_USER_DATA {
        bail!(
            "the rendered user-data is {} bytes, over DigitalOcean's 64 KiB limit",
            text.len()
        );
    }
    Ok(text)
}
