//! The config record: what the supervisor is deployed with, as extract found it (secrets in
//! the clear, in memory only). Extract writes it (sealed, in the state); the supervisor task
//! and cloud-init read it. Its own module, below both, so neither imports the other's task.

use crate::redact::Secret;

/// The config the supervisor is deployed with.
#[derive(Debug, Clone)]
pub struct ConfigRecord {
    pub worker_token: Secret,
    pub token_source: String,
    pub token_found_at: i64,
    pub managed_secret: Secret,
    pub api_origin: String,
    pub otel_endpoint: String,
    pub registry_host: Option<String>,
    pub registry_username: Option<String>,
    pub registry_password: Option<Secret>,
    pub webapp_service: String,
    pub fingerprint: String,
    pub extracted_at: i64,
    /// The webapp's release, which the supervisor follows unless TRIGGER_VERSION pins one.
    pub webapp_version: Option<String>,
}
