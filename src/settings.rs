//! Typed settings resolved once from the environment (process env over the env file). Invalid
//! values are configuration errors naming the variable and the valid range; values a task needs
//! but that are unset are reported by that task, so a dry run lists everything not configured.

use std::str::FromStr;

use crate::envfile::Env;
use crate::exit::config_error;
use crate::redact::Secret;

pub const DEFAULT_RAILWAY_API_URL: &str = "https://backboard.railway.com/graphql/v2";
pub const DEFAULT_DIGITALOCEAN_API_URL: &str = "https://api.digitalocean.com";
pub const DEFAULT_TELEGRAM_API_URL: &str = "https://api.telegram.org";
pub const DEFAULT_TRIGGER_VERSION: &str = "v4.5.12";
/// Tecnativa's tags carry a leading `v` from v0.4 on (0.1.x-0.3.0 had none).
pub const DEFAULT_DOCKER_PROXY_IMAGE: &str = "tecnativa/docker-socket-proxy:v0.5.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RailwayAuth {
    /// Account or workspace token: `Authorization: Bearer`.
    Account,
    /// Project token: `Project-Access-Token`.
    Project,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub is_active: bool,
    pub auto_disable: bool,
    pub healthy_cycles_before_disable: u32,
    pub check_interval: Option<String>,

    pub railway_token: Option<(RailwayAuth, Secret)>,
    pub railway_project_id: Option<String>,
    pub railway_environment_id: Option<String>,
    pub railway_api_url: String,
    pub webapp_service_name: Option<String>,
    pub registry_service_name: Option<String>,
    pub db_service_name: Option<String>,

    pub database_url: Option<Secret>,

    /// `TRIGGER_VERSION`: pins the supervisor image tag; unset, the supervisor follows the
    /// webapp's release (see `release`).
    pub trigger_version: Option<String>,
    pub trigger_worker_token: Option<Secret>,
    pub trigger_admin_token: Option<Secret>,
    pub worker_group_name: String,

    pub digitalocean_token: Option<Secret>,
    pub digitalocean_api_url: String,
    pub supervisor_region: String,
    pub supervisor_size: String,
    pub supervisor_count: u32,
    pub supervisor_image: String,
    pub supervisor_ssh_keys: Vec<String>,
    pub supervisor_ssh_sources: Vec<String>,
    pub supervisor_health_sources: Vec<String>,
    pub docker_proxy_image: String,

    pub telegram_bot_token: Option<Secret>,
    pub telegram_chat_id: Option<String>,
    pub telegram_topic_id: Option<String>,
    pub telegram_test_chat_id: Option<String>,
    pub telegram_api_url: String,
    pub webhook_url: Option<Secret>,
    /// The webhook's shape: `OPS_WEBHOOK_FORMAT`, else from the URL's host.
    pub webhook_format: crate::digest::Channel,

    pub ops_lock: Option<String>,
    pub ops_lock_database_url: Option<Secret>,
}

/// Droplets ops creates carry this tag (and the deployment tag); nothing else is ever touched.
pub const MANAGED_TAG: &str = "ops-managed";

/// What every deployment tag, and so every droplet name, starts with.
pub const DEPLOYMENT_TAG_PREFIX: &str = "trigger-supervisor-";

impl Settings {
    /// `trigger-supervisor-<first 8 of the Railway environment id>`: the tag of this
    /// deployment's droplets.
    pub fn deployment_tag(&self) -> String {
        let source = self
            .railway_environment_id
            .as_deref()
            .or(self.railway_project_id.as_deref())
            .unwrap_or("default");
        let short: String = source
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        format!(
            "{DEPLOYMENT_TAG_PREFIX}{}",
            if short.is_empty() {
                "default".into()
            } else {
                short
            }
        )
    }

    pub fn from_env(env: &Env) -> anyhow::Result<Settings> {
        let railway_token = railway_token(env)?;
        let trigger_worker_token = worker_token(env)?;
        let trigger_version = trigger_version(env)?;
        let docker_proxy_image = env
            .get("SUPERVISOR_DOCKER_PROXY_IMAGE")
            .unwrap_or(DEFAULT_DOCKER_PROXY_IMAGE)
            .to_string();
        if let Err(e) = crate::registry::ImageRef::parse(&docker_proxy_image) {
            return Err(config_error(format!(
                "SUPERVISOR_DOCKER_PROXY_IMAGE: {e} (e.g. {DEFAULT_DOCKER_PROXY_IMAGE}, optionally with @sha256:<digest>)"
            )));
        }
        let ops_lock = ops_lock(env)?;
        Ok(Settings {
            is_active: parse_bool(env, "IS_ACTIVE", true)?,
            auto_disable: parse_bool(env, "AUTO_DISABLE", false)?,
            healthy_cycles_before_disable: parse_range(
                env,
                "HEALTHY_CYCLES_BEFORE_DISABLE",
                3,
                1,
                100,
            )?,
            check_interval: env.get("CHECK_INTERVAL").map(str::to_string),
            railway_token,
            railway_project_id: string(env, "RAILWAY_PROJECT_ID"),
            railway_environment_id: string(env, "RAILWAY_ENVIRONMENT_ID"),
            railway_api_url: url(env, "RAILWAY_API_URL", DEFAULT_RAILWAY_API_URL)?,
            webapp_service_name: string(env, "WEBAPP_SERVICE_NAME"),
            registry_service_name: string(env, "REGISTRY_SERVICE_NAME"),
            db_service_name: string(env, "DB_SERVICE_NAME"),
            database_url: env.get("DATABASE_URL").map(Secret::new),
            trigger_version,
            trigger_worker_token,
            trigger_admin_token: env.get("TRIGGER_ADMIN_TOKEN").map(Secret::new),
            worker_group_name: env
                .get("WORKER_GROUP_NAME")
                .unwrap_or("ops-supervisor")
                .to_string(),
            digitalocean_token: env.get("DIGITALOCEAN_TOKEN").map(Secret::new),
            digitalocean_api_url: url(env, "DIGITALOCEAN_API_URL", DEFAULT_DIGITALOCEAN_API_URL)?,
            supervisor_region: env.get("SUPERVISOR_REGION").unwrap_or("nyc1").to_string(),
            supervisor_size: env
                .get("SUPERVISOR_SIZE")
                .unwrap_or("s-2vcpu-2gb")
                .to_string(),
            supervisor_count: parse_range(env, "SUPERVISOR_COUNT", 1, 1, 20)?,
            supervisor_image: env
                .get("SUPERVISOR_IMAGE")
                .unwrap_or("ubuntu-24-04-x64")
                .to_string(),
            supervisor_ssh_keys: list(env, "SUPERVISOR_SSH_KEYS"),
            supervisor_ssh_sources: list(env, "SUPERVISOR_SSH_SOURCES"),
            // Empty (the default): port 8020 stays closed and health comes from the webapp's
            // database only.
            supervisor_health_sources: list(env, "SUPERVISOR_HEALTH_SOURCES"),
            docker_proxy_image,
            telegram_bot_token: env.get("TELEGRAM_BOT_TOKEN").map(Secret::new),
            telegram_chat_id: string(env, "TELEGRAM_CHAT_ID"),
            telegram_topic_id: string(env, "TELEGRAM_TOPIC_ID"),
            telegram_test_chat_id: string(env, "TELEGRAM_TEST_CHAT_ID"),
            telegram_api_url: url(env, "TELEGRAM_API_URL", DEFAULT_TELEGRAM_API_URL)?,
            webhook_url: env.get("OPS_WEBHOOK_URL").map(Secret::new),
            webhook_format: crate::digest::Channel::for_webhook(
                env.get("OPS_WEBHOOK_FORMAT"),
                env.get("OPS_WEBHOOK_URL").unwrap_or(""),
            )
            .map_err(config_error)?,
            ops_lock,
            ops_lock_database_url: env.get("OPS_LOCK_DATABASE_URL").map(Secret::new),
        })
    }

    /// Railway project and environment ids, or the error naming what to set.
    pub fn railway_ids(&self) -> anyhow::Result<(&str, &str)> {
        match (&self.railway_project_id, &self.railway_environment_id) {
            (Some(p), Some(e)) => Ok((p, e)),
            _ => Err(crate::exit::not_configured(
                "set RAILWAY_PROJECT_ID and RAILWAY_ENVIRONMENT_ID (Railway \
                 dashboard → project settings, or `railway status --json`)",
            )),
        }
    }
}

/// The Railway token, and whether it is an account/workspace or a project token.
fn railway_token(env: &Env) -> anyhow::Result<Option<(RailwayAuth, Secret)>> {
    Ok(
        match (env.get("RAILWAY_API_TOKEN"), env.get("RAILWAY_TOKEN")) {
            (Some(_), Some(_)) => return Err(config_error(
                "RAILWAY_API_TOKEN and RAILWAY_TOKEN are both set: keep one (RAILWAY_API_TOKEN \
                 for an account/workspace token, RAILWAY_TOKEN for a project token)",
            )),
            (Some(t), None) => Some((RailwayAuth::Account, Secret::new(t))),
            (None, Some(t)) => Some((RailwayAuth::Project, Secret::new(t))),
            (None, None) => None,
        },
    )
}

/// TRIGGER_WORKER_TOKEN, refused unless it looks like a worker token.
fn worker_token(env: &Env) -> anyhow::Result<Option<Secret>> {
    Ok(match env.get("TRIGGER_WORKER_TOKEN") {
        Some(t) if !is_worker_token(t) => {
            crate::redact::register(t);
            return Err(config_error(
                "TRIGGER_WORKER_TOKEN does not look like a worker token: expected tr_wgt_ \
                 followed by letters and digits (unset it to let ops find the token)",
            ));
        }
        t => t.map(Secret::new),
    })
}

/// OPS_LOCK, when set: `local` or `postgres`.
fn ops_lock(env: &Env) -> anyhow::Result<Option<String>> {
    match env.get("OPS_LOCK") {
        None => Ok(None),
        Some(v @ ("local" | "postgres")) => Ok(Some(v.to_string())),
        Some(v) => Err(config_error(format!(
            "OPS_LOCK={v:?} is invalid: use local or postgres"
        ))),
    }
}

/// TRIGGER_VERSION, refused unless it is an image tag.
fn trigger_version(env: &Env) -> anyhow::Result<Option<String>> {
    Ok(match env.get("TRIGGER_VERSION") {
        Some(v)
            if v.len() > 128
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            return Err(config_error(format!(
                "TRIGGER_VERSION={v:?} is not an image tag (letters, digits, '.', '_', '-'): use a release such as {DEFAULT_TRIGGER_VERSION}, or unset it to follow the webapp's version"
            )))
        }
        v => v.map(str::to_string),
    })
}

/// `tr_wgt_` followed by at least one ASCII letter or digit, and nothing else.
pub fn is_worker_token(t: &str) -> bool {
    t.strip_prefix("tr_wgt_")
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn string(env: &Env, key: &str) -> Option<String> {
    env.get(key).map(str::to_string)
}

fn list(env: &Env, key: &str) -> Vec<String> {
    env.get(key)
        .map(|v| {
            v.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_bool(env: &Env, key: &str, default: bool) -> anyhow::Result<bool> {
    match env.get(key).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(v) => Err(config_error(format!(
            "{key}={v:?} is invalid: use true or false"
        ))),
    }
}

fn parse_range<T>(env: &Env, key: &str, default: T, min: T, max: T) -> anyhow::Result<T>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let Some(raw) = env.get(key) else {
        return Ok(default);
    };
    match raw.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(config_error(format!(
            "{key}={raw:?} is invalid: use a whole number from {min} to {max} (default {default})"
        ))),
    }
}

fn url(env: &Env, key: &str, default: &str) -> anyhow::Result<String> {
    let Some(raw) = env.get(key) else {
        return Ok(default.to_string());
    };
    if !(raw.starts_with("http://") || raw.starts_with("https://")) || raw.len() < 10 {
        return Err(config_error(format!(
            "{key}={raw:?} is invalid: use an http:// or https:// URL (default {default})"
        )));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        Settings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert!(s.is_active);
        assert!(!s.auto_disable);
        assert_eq!(s.healthy_cycles_before_disable, 3);
        assert_eq!(s.supervisor_region, "nyc1");
        assert_eq!(s.supervisor_size, "s-2vcpu-2gb");
        assert_eq!(s.supervisor_count, 1);
        assert_eq!(s.railway_api_url, DEFAULT_RAILWAY_API_URL);
        assert!(s.supervisor_health_sources.is_empty());
    }

    #[test]
    fn invalid_values_name_variable_and_range() {
        let e = settings(&[("HEALTHY_CYCLES_BEFORE_DISABLE", "0")]).unwrap_err();
        assert!(
            e.to_string().contains("HEALTHY_CYCLES_BEFORE_DISABLE"),
            "{e}"
        );
        assert!(e.to_string().contains("1 to 100"), "{e}");
        let e = settings(&[("IS_ACTIVE", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("IS_ACTIVE"));
        let e = settings(&[("RAILWAY_API_URL", "ftp://x")]).unwrap_err();
        assert!(e.to_string().contains("RAILWAY_API_URL"));
    }

    #[test]
    fn both_railway_tokens_is_an_error() {
        let e = settings(&[
            ("RAILWAY_API_TOKEN", "aaaaaaaa"),
            ("RAILWAY_TOKEN", "bbbbbbbb"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("both set"));
        let s = settings(&[("RAILWAY_TOKEN", "bbbbbbbb")]).unwrap();
        assert_eq!(s.railway_token.unwrap().0, RailwayAuth::Project);
    }

    #[test]
    fn worker_token_format() {
        assert!(is_worker_token("tr_wgt_abc123"));
        assert!(!is_worker_token("tr_wgt_"));
        assert!(!is_worker_token("tr_wgt_abc-123"));
        let e = settings(&[("TRIGGER_WORKER_TOKEN", "nope-not-a-token")]).unwrap_err();
        assert!(!e.to_string().contains("nope-not-a-token"));
    }
}
