//! What extract keeps in the state (namespace `config`): the record with its secrets sealed
//! (each in its own field), the cached worker token, the pending make-default, and the readers
//! `ops status`, `ops check` and the supervisor use.

use serde::{Deserialize, Serialize};

use crate::clients::webapp_db::WorkerGroup;
use crate::record::ConfigRecord;
use crate::redact::Secret;
use crate::sealed::{fingerprint, Sealer};
use crate::settings::{is_worker_token, Settings};
use crate::state::State;

use super::plan;

pub const NAMESPACE: &str = "config";

pub(super) const RECORD_KEY: &str = "record";
/// The last extraction's refusal of the webapp's values ([`Refusal`]).
pub(super) const REFUSED_KEY: &str = "refused";

pub(super) const TOKEN_KEY: &str = "worker_token";

/// A group ops created whose making-default failed: retried at every run until it succeeds.
pub(super) const DEFAULT_PENDING_KEY: &str = "make_default_pending";

/// Set once every cached secret has been re-sealed in the current format: legacy values are
/// refused from then on.
pub(super) const LEGACY_DONE_KEY: &str = "legacy_resealed";

/// The key, refusing the legacy format once the migration is recorded as done.
pub(super) fn sealer(
    state: Option<&State>,
    dir: &std::path::Path,
    create: bool,
) -> anyhow::Result<Option<Sealer>> {
    let mut sealer = Sealer::load(dir, create)?;
    let done = state
        .and_then(|st| st.kv_get::<bool>(NAMESPACE, LEGACY_DONE_KEY).ok().flatten())
        .is_some_and(|(d, _)| d);
    if let (Some(se), true) = (sealer.as_mut(), done) {
        se.refuse_legacy();
    }
    Ok(sealer)
}

/// Associated data of each sealed field: a sealed value opens only in its own field.
pub(super) const FIELD_SECRET: &str = "config.record.managed_secret";

pub(super) const FIELD_REGISTRY: &str = "config.record.registry_password";

pub(super) const FIELD_TOKEN: &str = "config.worker_token";

/// What is stored: secrets sealed, the manual token never stored at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredRecord {
    pub(super) managed_secret: String,
    pub(super) api_origin: String,
    pub(super) otel_endpoint: String,
    pub(super) registry_host: Option<String>,
    pub(super) registry_username: Option<String>,
    pub(super) registry_password: Option<String>,
    pub(super) webapp_service: String,
    pub(super) webapp_service_id: String,
    pub(super) registry_service_id: Option<String>,
    pub(super) token_hash: String,
    pub(super) fingerprint: String,
    pub(super) extracted_at: i64,
    /// The worker group the webapp's database says the token belongs to (when DATABASE_URL is
    /// set and the tables exist).
    #[serde(default)]
    pub(super) worker_group: Option<WorkerGroup>,
    /// The webapp's release (`vX.Y.Z`) read from its Railway source; `None`: unknown.
    #[serde(default)]
    pub(super) webapp_version: Option<String>,
    /// Where that came from, or why it is unknown.
    #[serde(default)]
    pub(super) webapp_release: Option<String>,
    /// Its checks failed: the next run reads Railway again whatever its age, so a fix made
    /// there shows at once.
    #[serde(default)]
    pub(super) failed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredToken {
    pub(super) token: String,
    pub(super) source: String,
    pub(super) found_at: i64,
}

/// Status facts for `ops status`: where the token came from and when, never the token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub source: String,
    pub found_at: i64,
}

pub fn token_info(state: &State, settings: &Settings) -> Option<TokenInfo> {
    if settings.trigger_worker_token.is_some() {
        return Some(TokenInfo {
            source: "manual".into(),
            found_at: 0,
        });
    }
    let (t, _): (StoredToken, i64) = state.kv_get(NAMESPACE, TOKEN_KEY).ok()??;
    Some(TokenInfo {
        source: t.source,
        found_at: t.found_at,
    })
}

/// The stored record's facts without secrets, for `ops status`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordInfo {
    pub extracted_at: i64,
    pub api_origin: String,
    pub fingerprint: String,
    pub worker_group: Option<WorkerGroup>,
    pub webapp_version: Option<String>,
    pub webapp_release: Option<String>,
}

pub fn record_info(state: &State) -> anyhow::Result<Option<RecordInfo>> {
    Ok(state
        .kv_get::<StoredRecord>(NAMESPACE, RECORD_KEY)?
        .map(|(r, _)| RecordInfo {
            extracted_at: r.extracted_at,
            api_origin: r.api_origin,
            fingerprint: r.fingerprint,
            worker_group: r.worker_group,
            webapp_version: r.webapp_version,
            webapp_release: r.webapp_release,
        }))
}

/// The stored record with secrets unsealed and the manual token applied; `None` when
/// nothing has been extracted yet.
pub fn load_record(
    state: &State,
    state_dir: &std::path::Path,
    settings: &Settings,
) -> anyhow::Result<Option<ConfigRecord>> {
    let Some((rec, _)) = state.kv_get::<StoredRecord>(NAMESPACE, RECORD_KEY)? else {
        return Ok(None);
    };
    let Some(sealer) = sealer(Some(state), state_dir, false)? else {
        return Ok(None);
    };
    let (token, source, found_at) = match (
        &settings.trigger_worker_token,
        cached_token(state, &sealer)?,
    ) {
        (Some(t), _) => (t.clone(), "manual".to_string(), 0),
        (None, Some(t)) => (Secret::new(t.token), t.source, t.found_at),
        (None, None) => return Ok(None),
    };
    Ok(Some(ConfigRecord {
        worker_token: token,
        token_source: source,
        token_found_at: found_at,
        managed_secret: Secret::new(sealer.open(FIELD_SECRET, &rec.managed_secret)?),
        api_origin: rec.api_origin,
        otel_endpoint: rec.otel_endpoint,
        registry_host: rec.registry_host,
        registry_username: rec.registry_username,
        registry_password: rec
            .registry_password
            .map(|p| sealer.open(FIELD_REGISTRY, &p).map(Secret::new))
            .transpose()?,
        webapp_service: rec.webapp_service,
        fingerprint: rec.fingerprint,
        extracted_at: rec.extracted_at,
        webapp_version: rec.webapp_version,
    }))
}

pub(super) fn cached_token(state: &State, sealer: &Sealer) -> anyhow::Result<Option<StoredToken>> {
    let Some((mut t, _)) = state.kv_get::<StoredToken>(NAMESPACE, TOKEN_KEY)? else {
        return Ok(None);
    };
    match sealer.open(FIELD_TOKEN, &t.token) {
        Ok(plain) if is_worker_token(&plain) => {
            t.token = Secret::new(plain).expose().to_string();
            Ok(Some(t))
        }
        Ok(_) | Err(_) => {
            log::warn!("the cached worker token is unreadable; looking for it again");
            Ok(None)
        }
    }
}

/// Re-seals, once, values stored in the legacy sealed format; true when something changed.
pub(super) fn reseal_legacy(state: &State, se: &Sealer, now: i64) -> anyhow::Result<bool> {
    let mut changed = false;
    if let Some((mut rec, _)) = state.kv_get::<StoredRecord>(NAMESPACE, RECORD_KEY)? {
        let legacy = crate::sealed::is_legacy(&rec.managed_secret)
            || rec
                .registry_password
                .as_deref()
                .is_some_and(crate::sealed::is_legacy);
        if legacy {
            rec.managed_secret =
                se.seal(FIELD_SECRET, &se.open(FIELD_SECRET, &rec.managed_secret)?)?;
            if let Some(p) = &rec.registry_password {
                rec.registry_password =
                    Some(se.seal(FIELD_REGISTRY, &se.open(FIELD_REGISTRY, p)?)?);
            }
            state.kv_set(NAMESPACE, RECORD_KEY, &rec, now)?;
            changed = true;
        }
    }
    if let Some((mut t, _)) = state.kv_get::<StoredToken>(NAMESPACE, TOKEN_KEY)? {
        if crate::sealed::is_legacy(&t.token) {
            t.token = se.seal(FIELD_TOKEN, &se.open(FIELD_TOKEN, &t.token)?)?;
            state.kv_set(NAMESPACE, TOKEN_KEY, &t, now)?;
            changed = true;
        }
    }
    if changed {
        log::info!("re-sealed the cached secrets in the current format");
    }
    Ok(changed)
}

pub(super) fn token_hash(token: &str) -> String {
    fingerprint(&["worker-token", token])
}

pub(super) fn record_fingerprint(
    token: &str,
    secret: &str,
    origin: &str,
    otel: &str,
    reg: &Option<String>,
    user: &Option<String>,
    pass: &Option<String>,
) -> String {
    fingerprint(&[
        token,
        secret,
        origin,
        otel,
        reg.as_deref().unwrap_or(""),
        user.as_deref().unwrap_or(""),
        pass.as_deref().unwrap_or(""),
    ])
}

/// The stored record's values, secrets opened where the key allows.
pub(super) fn stored_values(old: &StoredRecord, sealer: Option<&Sealer>) -> plan::Values {
    let open = |field: &str, v: &str| sealer.and_then(|se| se.open(field, v).ok());
    plan::Values {
        token_hash: old.token_hash.clone(),
        secret: open(FIELD_SECRET, &old.managed_secret),
        origin: old.api_origin.clone(),
        otel: old.otel_endpoint.clone(),
        registry_host: old.registry_host.clone(),
        registry_user: old.registry_username.clone(),
        registry_password: old
            .registry_password
            .as_deref()
            .and_then(|p| open(FIELD_REGISTRY, p)),
        version: old.webapp_version.clone(),
    }
}

/// Why extract refused the webapp's values (an origin no droplet can reach, a published
/// secret): the supervisor deploys nothing until an extraction accepts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub at: i64,
    pub reasons: Vec<String>,
}

/// The standing refusal, if the last extraction refused the webapp's values.
pub fn refusal_of(state: &State) -> Option<Refusal> {
    state
        .kv_get::<Refusal>(NAMESPACE, REFUSED_KEY)
        .ok()
        .flatten()
        .map(|(r, _)| r)
}

/// Keeps a fresh reading of the webapp's release in the stored record (a real run), so the next
/// runs need not ask again.
pub fn note_webapp_release(
    ctx: &crate::task::TaskCtx,
    release: &crate::release::WebappRelease,
) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    if let Some((mut rec, _)) = st.kv_get::<StoredRecord>(NAMESPACE, RECORD_KEY)? {
        if rec.webapp_version != release.version {
            rec.webapp_version = release.version.clone();
            rec.webapp_release = Some(release.origin.clone());
            st.kv_set(NAMESPACE, RECORD_KEY, &rec, crate::state::now_ms())?;
        }
    }
    Ok(())
}

/// Keeps this extraction's verdict on the values: a refusal (stored, or in a dry run handed to
/// the supervisor) and the line saying so, or, when they pass, the end of one.
pub(super) fn refusal(
    ctx: &crate::task::TaskCtx,
    refused: &[String],
) -> anyhow::Result<Option<String>> {
    if refused.is_empty() {
        if !ctx.dry_run {
            ctx.writable_state()?.kv_delete(NAMESPACE, REFUSED_KEY)?;
        }
        return Ok(None);
    }
    *ctx.handoff.refused.borrow_mut() = Some(refused.to_vec());
    if !ctx.dry_run {
        let r = Refusal {
            at: crate::state::now_ms(),
            reasons: refused.to_vec(),
        };
        ctx.writable_state()?
            .kv_set(NAMESPACE, REFUSED_KEY, &r, r.at)?;
    }
    Ok(Some("config record refused (not stored): the webapp's values failed the checks above; no supervisor is deployed from them until an extraction accepts them".into()))
}
