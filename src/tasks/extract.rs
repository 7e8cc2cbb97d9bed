//! extract: the worker token and the supervisor's config record from Railway, cached in SQLite.
//!
//! Token priority: `TRIGGER_WORKER_TOKEN` > the cached token > the newest `tr_wgt_` in the
//! webapp's logs > a worker group created through the webapp's admin API. A record younger than
//! `refresh` costs no Railway request; an older one costs the webapp's variables (+ the registry's
//! domains when the webapp does not name its registry).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::http::{self, Http, Request, Retry};
use crate::clients::postgres::Target;
use crate::clients::railway::{find_service, Railway};
use crate::clients::webapp_db::{self, TokenLookup, WorkerGroup};
use crate::config::ExtractOptions;
use crate::redact::Secret;
use crate::sealed::{fingerprint, Sealer};
use crate::settings::{is_worker_token, Settings};
use crate::state::{now_ms, State};
use crate::tasks::{Outcome, Status, TaskCtx};

pub const NAMESPACE: &str = "config";
const RECORD_KEY: &str = "record";
const TOKEN_KEY: &str = "worker_token";
/// Associated data of each sealed field: a sealed value opens only in its own field.
const FIELD_SECRET: &str = "config.record.managed_secret";
const FIELD_REGISTRY: &str = "config.record.registry_password";
const FIELD_TOKEN: &str = "config.worker_token";
const WEBAPP_NAMES: &[&str] = &["trigger.dev", "webapp", "trigger"];
const REGISTRY_NAMES: &[&str] = &["registry", "docker-registry"];
/// Log lines fetched per query, and deployments searched.
const LOG_PAGE: u32 = 500;
const MAX_DEPLOYMENTS: u32 = 10;
/// Trigger.dev's published default values of MANAGED_WORKER_SECRET.
const INSECURE_SECRETS: &[&str] = &["managed-secret", "447c29678f9eaf289e9c4b70d3dd8a7f"];

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

/// What is stored: secrets sealed, the manual token never stored at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRecord {
    managed_secret: String,
    api_origin: String,
    otel_endpoint: String,
    registry_host: Option<String>,
    registry_username: Option<String>,
    registry_password: Option<String>,
    webapp_service: String,
    webapp_service_id: String,
    registry_service_id: Option<String>,
    token_hash: String,
    fingerprint: String,
    extracted_at: i64,
    /// The worker group the webapp's database says the token belongs to (when DATABASE_URL is
    /// set and the tables exist).
    #[serde(default)]
    worker_group: Option<WorkerGroup>,
    /// The webapp's release (`vX.Y.Z`) read from its Railway source; `None`: unknown.
    #[serde(default)]
    webapp_version: Option<String>,
    /// Where that came from, or why it is unknown.
    #[serde(default)]
    webapp_release: Option<String>,
    /// Its checks failed: the next run reads Railway again whatever its age, so a fix made
    /// there shows at once.
    #[serde(default)]
    failed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    token: String,
    source: String,
    found_at: i64,
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
    let Some(sealer) = Sealer::load(state_dir, false)? else {
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

fn cached_token(state: &State, sealer: &Sealer) -> anyhow::Result<Option<StoredToken>> {
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
fn reseal_legacy(state: &State, se: &Sealer, now: i64) -> anyhow::Result<bool> {
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

fn token_hash(token: &str) -> String {
    fingerprint(&["worker-token", token])
}

fn record_fingerprint(
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

pub fn run(opts: &ExtractOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let s = ctx.settings;
    let http = Http::new();
    let sealer = Sealer::load(ctx.state_dir, !ctx.dry_run)?;
    let now = now_ms();
    let mut lines = Vec::new();
    if let (Some(se), false) = (&sealer, ctx.dry_run) {
        if let Some(st) = ctx.state {
            match reseal_legacy(st, se, now) {
                Ok(true) => {
                    lines.push("re-sealed the cached secrets with ChaCha20-Poly1305".into())
                }
                Ok(false) => {}
                // Unreadable values are handled below as if absent (looked up again).
                Err(e) => log::warn!("could not re-seal the cached secrets: {e:#}"),
            }
        }
    }
    let mut planned = false;

    let stored: Option<StoredRecord> = ctx
        .state
        .map(|st| st.kv_get(NAMESPACE, RECORD_KEY))
        .transpose()?
        .flatten()
        .map(|(r, _)| r);
    let cached = match (ctx.state, &sealer) {
        (Some(st), Some(se)) => cached_token(st, se)?,
        _ => None,
    };
    let known_token: Option<(String, String, i64)> = match (&s.trigger_worker_token, &cached) {
        (Some(t), _) => Some((t.expose().to_string(), "manual".into(), 0)),
        (None, Some(c)) => Some((c.token.clone(), c.source.clone(), c.found_at)),
        (None, None) => None,
    };

    // A fresh record: no Railway request at all.
    if let (Some(rec), Some((token, source, found_at)), Some(se)) = (&stored, &known_token, &sealer)
    {
        let age = now - rec.extracted_at;
        if age >= 0
            && (age as u128) < opts.refresh.as_millis()
            && rec.token_hash == token_hash(token)
            && !rec.failed
            && !ctx.refresh
        {
            lines.push(format!(
                "worker token: {}",
                describe_source(source, *found_at, now)
            ));
            lines.push(format!(
                "config record is {} old (refresh {}): no Railway request",
                crate::report::fmt_ms(age as u64),
                crate::duration::format(opts.refresh)
            ));
            let secret = se.open(FIELD_SECRET, &rec.managed_secret)?;
            let mut verdict = Verdict::default();
            verify_token(ctx, token, source, *found_at, now, &mut verdict, &mut lines)?;
            let mut failures = checks(
                &http,
                ctx,
                opts,
                &secret,
                &rec.api_origin,
                &rec.webapp_service,
                &mut lines,
            );
            failures.extend(verdict.failure);
            let group_changed = verdict.group.is_some() && verdict.group != rec.worker_group;
            if (group_changed || !failures.is_empty()) && !ctx.dry_run {
                let mut updated = rec.clone();
                if group_changed {
                    updated.worker_group = verdict.group.clone();
                }
                updated.failed = !failures.is_empty();
                ctx.writable_state()?
                    .kv_set(NAMESPACE, RECORD_KEY, &updated, now)?;
            }
            return Ok(finish(lines, failures, verdict.planned));
        }
        if ctx.refresh {
            lines.push("--refresh: reading Railway whatever the record's age".into());
        } else if rec.failed {
            lines.push(
                "the last extraction's checks failed: reading Railway again (the refresh interval applies to good records only)"
                    .into(),
            );
        }
    }

    let Some(auth) = s.railway_token.as_ref() else {
        bail!("not configured: set RAILWAY_API_TOKEN (account or workspace token) or RAILWAY_TOKEN (project token) so ops can read the webapp's config from Railway");
    };
    let (project, environment) = s.railway_ids()?;
    let railway = Railway::new(&http, &s.railway_api_url, (auth.0, &auth.1), ctx.deadline);

    // Service ids from the last record save the project query; a cached id that no longer
    // answers (service recreated) falls back to discovery once.
    let discover = || -> anyhow::Result<(String, String, Vec<crate::clients::railway::Service>)> {
        let list = railway.services(project)?;
        let web = find_service(
            &list,
            s.webapp_service_name.as_deref(),
            "WEBAPP_SERVICE_NAME",
            WEBAPP_NAMES,
        )?;
        Ok((web.name.clone(), web.id.clone(), list))
    };
    let cached_ids = stored.as_ref().filter(|rec| {
        name_matches(
            &rec.webapp_service,
            s.webapp_service_name.as_deref(),
            WEBAPP_NAMES,
        )
    });
    let mut cached_vars = None;
    if let Some(rec) = cached_ids {
        match railway.webapp(project, environment, &rec.webapp_service_id) {
            Ok(v)
                if v.0.contains_key("MANAGED_WORKER_SECRET") || v.0.contains_key("APP_ORIGIN") =>
            {
                cached_vars = Some(v)
            }
            Ok(_) => log::info!(
                "the cached webapp service id no longer answers; finding the service again"
            ),
            Err(e) => {
                log::info!("the cached webapp service id failed ({e:#}); finding the service again")
            }
        }
    }
    let (webapp_name, webapp_id, mut registry_id, mut services, (vars, instance)) =
        match (cached_ids, cached_vars) {
            (Some(rec), Some(vars)) => (
                rec.webapp_service.clone(),
                rec.webapp_service_id.clone(),
                rec.registry_service_id.clone(),
                None,
                vars,
            ),
            _ => {
                let (name, id, list) = discover()?;
                let found = railway.webapp(project, environment, &id)?;
                (name, id, None, Some(list), found)
            }
        };
    let missing = |var: &str| {
        anyhow!("{var} is not set on the Railway service {webapp_name:?} (set it there; the supervisor needs it)")
    };

    let managed_secret = vars.get("MANAGED_WORKER_SECRET").filter(|v| !v.trim().is_empty()).cloned().ok_or_else(|| {
        anyhow!("MANAGED_WORKER_SECRET is not set on the Railway service {webapp_name:?}: the webapp then uses the published default, which is insecure (set a random value, e.g. openssl rand -hex 16, and redeploy)")
    })?;
    crate::redact::register(&managed_secret);
    let api_origin = match non_empty(&vars, "API_ORIGIN").or_else(|| non_empty(&vars, "APP_ORIGIN"))
    {
        Some(o) => o.trim_end_matches('/').to_string(),
        None => match non_empty(&vars, "RAILWAY_PUBLIC_DOMAIN") {
            Some(d) => format!("https://{d}"),
            None => match railway.domains(project, environment, &webapp_id)?.public() {
                Some(d) => format!("https://{d}"),
                None => return Err(missing("API_ORIGIN (or APP_ORIGIN, or a public domain)")),
            },
        },
    };
    validate_url("API origin", &api_origin, &webapp_name)?;
    let otel_endpoint = match non_empty(&vars, "OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(e) if is_public_url(e) => e.to_string(),
        _ => format!("{api_origin}/otel"),
    };
    let registry_username = non_empty(&vars, "DEPLOY_REGISTRY_USERNAME").map(str::to_string);
    let registry_password = non_empty(&vars, "DEPLOY_REGISTRY_PASSWORD").map(str::to_string);
    if let Some(p) = &registry_password {
        crate::redact::register(p);
    }
    let registry_host = match non_empty(&vars, "DEPLOY_REGISTRY_HOST") {
        Some(h) => Some(h.to_string()),
        None => {
            if registry_id.is_none() {
                let list = match services.take() {
                    Some(l) => l,
                    None => railway.services(project)?,
                };
                registry_id = Some(
                    find_service(
                        &list,
                        s.registry_service_name.as_deref(),
                        "REGISTRY_SERVICE_NAME",
                        REGISTRY_NAMES,
                    )?
                    .id
                    .clone(),
                );
            }
            let id = registry_id.as_deref().unwrap_or_default();
            match railway.domains(project, environment, id)?.public() {
                Some(d) => Some(d.to_string()),
                None => bail!("the registry service has no public domain: generate one in Railway (Settings → Networking) or set DEPLOY_REGISTRY_HOST on {webapp_name:?}"),
            }
        }
    };

    // The worker token.
    let (token, source, found_at) = match known_token {
        Some(t) => t,
        None => {
            let mut found = search_logs(&railway, project, environment, &webapp_id)?;
            if let Some((t, where_)) = &found {
                crate::redact::register(t);
                if let Some(TokenLookup::Unknown) = lookup(ctx, t)? {
                    lines.push(format!("the worker token in the webapp's logs ({where_}) is unknown to the webapp: its worker group was deleted"));
                    if s.trigger_admin_token.is_none() {
                        bail!("the only worker token in the webapp's logs ({where_}) is unknown to the webapp (its worker group was deleted): set TRIGGER_ADMIN_TOKEN to an admin personal access token (tr_pat_…) so ops creates worker group {:?}, or set TRIGGER_WORKER_TOKEN", s.worker_group_name);
                    }
                    found = None;
                }
            }
            match found {
                Some((token, where_)) => {
                    lines.push(format!("worker token: found in the webapp's logs ({where_})"));
                    (token, "logs".to_string(), now)
                }
                None => match &s.trigger_admin_token {
                    Some(admin) if ctx.dry_run => {
                        lines.push(format!(
                            "would create worker group {:?} through {api_origin}/admin/api/v1/workers (no token in the logs)",
                            s.worker_group_name
                        ));
                        let _ = admin;
                        planned = true;
                        (String::new(), "admin".into(), now)
                    }
                    Some(admin) => {
                        let t = create_worker_group(&http, ctx, &api_origin, admin, &s.worker_group_name)?;
                        lines.push(format!("worker token: created worker group {:?} through the admin API", s.worker_group_name));
                        (t, "admin".to_string(), now)
                    }
                    None => bail!(
                        "no worker token: TRIGGER_WORKER_TOKEN is unset, none is cached, and the webapp's logs on Railway hold none \
                         (Trigger.dev prints it once, at the first boot that creates the worker group, and Railway keeps logs 7-90 days). \
                         Provide one: set TRIGGER_WORKER_TOKEN=tr_wgt_… (from the first boot's logs or your notes), or set TRIGGER_ADMIN_TOKEN \
                         to an admin personal access token (tr_pat_…) so ops creates worker group {:?}",
                        s.worker_group_name
                    ),
                },
            }
        }
    };
    let mut verdict = Verdict::default();
    if !token.is_empty() {
        crate::redact::register(&token);
        if !is_worker_token(&token) {
            bail!("the worker token from {source} is not tr_wgt_ followed by letters and digits");
        }
        verify_token(
            ctx,
            &token,
            &source,
            found_at,
            now,
            &mut verdict,
            &mut lines,
        )?;
        planned |= verdict.planned;
        // Cache a newly found token at once: the logs may not hold it next time. A token the
        // webapp does not know is never cached.
        if source != "manual" && cached.is_none() && verdict.failure.is_none() {
            if ctx.dry_run {
                lines.push("would cache the worker token in the state database".into());
                planned = true;
            } else if let Some(se) = &sealer {
                let stored = StoredToken {
                    token: se.seal(FIELD_TOKEN, &token)?,
                    source: source.clone(),
                    found_at,
                };
                ctx.writable_state()?
                    .kv_set(NAMESPACE, TOKEN_KEY, &stored, now)?;
            }
        }
        if lines.iter().all(|l| !l.starts_with("worker token")) {
            lines.push(format!(
                "worker token: {}",
                describe_source(&source, found_at, now)
            ));
        }
    }

    let fp = record_fingerprint(
        &token,
        &managed_secret,
        &api_origin,
        &otel_endpoint,
        &registry_host,
        &registry_username,
        &registry_password,
    );
    lines.push(format!("MANAGED_WORKER_SECRET: set on {webapp_name:?}"));
    lines.push(format!("API origin: {api_origin}"));
    lines.push(format!("OTEL endpoint: {otel_endpoint}"));
    lines.push(format!(
        "registry: {} (credentials: {})",
        registry_host.as_deref().unwrap_or("-"),
        if registry_username.is_some() && registry_password.is_some() {
            "yes"
        } else {
            "no"
        }
    ));

    let release = instance.release();
    lines.push(format!(
        "webapp version: {} ({})",
        release.version.as_deref().unwrap_or("unknown"),
        release.origin
    ));
    lines.push(crate::release::describe(
        s.trigger_version.as_deref(),
        release.version.as_deref(),
    ));

    lines.push(format!("Railway requests: {}", railway.requests.get()));
    let mut failures = checks(
        &http,
        ctx,
        opts,
        &managed_secret,
        &api_origin,
        &webapp_name,
        &mut lines,
    );
    failures.extend(verdict.failure.clone());

    // Later tasks of this profile (the supervisor) see this record even in a dry run.
    if !token.is_empty() && verdict.failure.is_none() {
        *ctx.handoff.record.borrow_mut() = Some(ConfigRecord {
            worker_token: Secret::new(token.clone()),
            token_source: source.clone(),
            token_found_at: found_at,
            managed_secret: Secret::new(managed_secret.clone()),
            api_origin: api_origin.clone(),
            otel_endpoint: otel_endpoint.clone(),
            registry_host: registry_host.clone(),
            registry_username: registry_username.clone(),
            registry_password: registry_password.clone().map(Secret::new),
            webapp_service: webapp_name.clone(),
            fingerprint: fp.clone(),
            extracted_at: now,
            webapp_version: release.version.clone(),
        });
    }

    // Store the record, saying what changed (names, never values).
    let mut changed = match &stored {
        None => vec!["new record".to_string()],
        Some(old) if old.fingerprint == fp => Vec::new(),
        Some(old) => {
            let old_secret = sealer
                .as_ref()
                .and_then(|se| se.open(FIELD_SECRET, &old.managed_secret).ok());
            let old_pass = old.registry_password.as_ref().and_then(|p| {
                sealer
                    .as_ref()
                    .and_then(|se| se.open(FIELD_REGISTRY, p).ok())
            });
            let mut c = Vec::new();
            if old.token_hash != token_hash(&token) {
                c.push("worker token".to_string());
            }
            if old_secret.as_deref() != Some(managed_secret.as_str()) {
                c.push("MANAGED_WORKER_SECRET".into());
            }
            if old.api_origin != api_origin {
                c.push("API origin".into());
            }
            if old.otel_endpoint != otel_endpoint {
                c.push("OTEL endpoint".into());
            }
            if old.registry_host != registry_host {
                c.push("registry host".into());
            }
            if old.registry_username != registry_username || old_pass != registry_password {
                c.push("registry credentials".into());
            }
            c
        }
    };
    if let Some(old) = stored
        .as_ref()
        .filter(|o| o.webapp_version != release.version)
    {
        changed.push(format!(
            "webapp version {} → {}",
            old.webapp_version.as_deref().unwrap_or("unknown"),
            release.version.as_deref().unwrap_or("unknown")
        ));
    }
    if !changed.is_empty() && stored.is_some() {
        log::info!("config record changed: {}", changed.join(", "));
        lines.push(format!(
            "changed since the last extraction: {}",
            changed.join(", ")
        ));
    }
    if ctx.dry_run {
        if !changed.is_empty() {
            lines.push("would store the config record".into());
            planned = true;
        }
    } else if let Some(se) = &sealer {
        let rec = StoredRecord {
            managed_secret: se.seal(FIELD_SECRET, &managed_secret)?,
            api_origin: api_origin.clone(),
            otel_endpoint,
            registry_host,
            registry_username,
            registry_password: registry_password
                .map(|p| se.seal(FIELD_REGISTRY, &p))
                .transpose()?,
            webapp_service: webapp_name.clone(),
            webapp_service_id: webapp_id,
            registry_service_id: registry_id,
            token_hash: token_hash(&token),
            fingerprint: fp,
            extracted_at: now,
            worker_group: verdict.group.clone(),
            webapp_version: release.version.clone(),
            webapp_release: Some(release.origin.clone()),
            failed: !failures.is_empty(),
        };
        ctx.writable_state()?
            .kv_set(NAMESPACE, RECORD_KEY, &rec, now)?;
    }
    Ok(finish(lines, failures, planned))
}

/// What the webapp's database said of the token this run.
#[derive(Debug, Default)]
struct Verdict {
    group: Option<WorkerGroup>,
    failure: Option<String>,
    planned: bool,
}

/// Asks the webapp's database (when `DATABASE_URL` is set) whether it knows `token`.
fn lookup(ctx: &TaskCtx, token: &str) -> anyhow::Result<Option<TokenLookup>> {
    let Some(url) = &ctx.settings.database_url else {
        return Ok(None);
    };
    let target = Target::parse(url)?;
    let mut client = target.connect(ctx.connect_timeout())?;
    webapp_db::lookup_token(&mut client, token).map(Some)
}

/// The side-effect-free token check: known → the worker group; unknown → a failure naming the
/// token's source, and a cached token is dropped so the next run looks for a good one.
fn verify_token(
    ctx: &TaskCtx,
    token: &str,
    source: &str,
    found_at: i64,
    now: i64,
    verdict: &mut Verdict,
    lines: &mut Vec<String>,
) -> anyhow::Result<()> {
    match lookup(ctx, token)? {
        None => lines.push("token check: skipped (DATABASE_URL is not set)".into()),
        Some(TokenLookup::TablesMissing(why)) => lines.push(format!(
            "token check: skipped, the webapp's database has no worker tables ({why}): an older Trigger.dev, or migrations not run yet"
        )),
        Some(TokenLookup::Known(g)) => {
            lines.push(format!(
                "token check: known to the webapp (worker group {:?}, queue {})",
                g.name, g.master_queue
            ));
            verdict.group = Some(g);
        }
        Some(TokenLookup::Unknown) => {
            let from = describe_source(source, found_at, now);
            let fix = match source {
                "manual" => "fix or unset TRIGGER_WORKER_TOKEN (a token of a worker group that exists)".to_string(),
                _ if ctx.dry_run => "a real run drops it from the cache so the next run looks for a good one".into(),
                _ => {
                    ctx.writable_state()?.kv_delete(NAMESPACE, TOKEN_KEY)?;
                    "dropped it from the cache: the next run looks for a good one (logs, then the admin API)".into()
                }
            };
            if source != "manual" && ctx.dry_run {
                lines.push("would drop the cached worker token".into());
                verdict.planned = true;
            }
            verdict.failure = Some(format!(
                "the webapp does not know this worker token (from {from}): no WorkerGroupToken has its hash, so its worker group was deleted or it belongs to another deployment; {fix}"
            ));
        }
    }
    Ok(())
}

fn finish(mut lines: Vec<String>, failures: Vec<String>, planned: bool) -> Outcome {
    if failures.is_empty() {
        Outcome::lines(if planned { Status::Planned } else { Status::Ok }, lines)
    } else {
        let mut detail = failures;
        detail.append(&mut lines);
        Outcome::lines(Status::Failed, detail)
    }
}

fn describe_source(source: &str, found_at: i64, now: i64) -> String {
    match source {
        "manual" => "TRIGGER_WORKER_TOKEN (manual)".into(),
        other => format!(
            "cached (from {other}, {} ago)",
            crate::report::fmt_ms((now - found_at).max(0) as u64)
        ),
    }
}

/// The checks on what was extracted; each failure is one line.
fn checks(
    http: &Http,
    ctx: &TaskCtx,
    opts: &ExtractOptions,
    secret: &str,
    origin: &str,
    webapp: &str,
    lines: &mut Vec<String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if INSECURE_SECRETS.contains(&secret.trim()) {
        failures.push(format!(
            "insecure default secret: MANAGED_WORKER_SECRET on {webapp:?} is one of Trigger.dev's published defaults; set a random value (openssl rand -hex 16) on the webapp and redeploy it"
        ));
    }
    if !is_public_url(origin) {
        failures.push(format!(
            "API origin {origin} is not reachable from a droplet (localhost or Railway's private network): set API_ORIGIN on {webapp:?} to its public https:// URL"
        ));
    } else if opts.check_webapp {
        let url = format!("{origin}/healthcheck");
        let req = Request::new("webapp", "GET", &url)
            .retry(Retry::Never)
            .timeout(std::time::Duration::from_secs(5));
        match http.send(&req, ctx.deadline) {
            Ok(r) if r.status == 200 && r.body.trim() == "OK" => {
                lines.push(format!("webapp {url}: 200 OK"))
            }
            Ok(r) => failures.push(format!(
                "webapp health check failed: GET {url} answered HTTP {}: {}",
                r.status,
                r.snippet()
            )),
            Err(e) => failures.push(format!("webapp health check failed: GET {url}: {e:#}")),
        }
    }
    failures
}

fn non_empty<'v>(vars: &'v BTreeMap<String, String>, key: &str) -> Option<&'v str> {
    vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn name_matches(stored: &str, configured: Option<&str>, common: &[&str]) -> bool {
    match configured {
        Some(c) => c.eq_ignore_ascii_case(stored),
        None => common.iter().any(|c| c.eq_ignore_ascii_case(stored)),
    }
}

fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| h.trim_start_matches('['))?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

fn validate_url(what: &str, url: &str, service: &str) -> anyhow::Result<()> {
    if url_host(url).is_none() {
        bail!("{what} {url:?} from {service:?} is not an http(s) URL (fix API_ORIGIN / APP_ORIGIN on that service)");
    }
    Ok(())
}

/// Public: not localhost, loopback, unspecified, or Railway's private network.
pub fn is_public_url(url: &str) -> bool {
    let Some(host) = url_host(url) else {
        return false;
    };
    let h = host.to_ascii_lowercase();
    !(h == "localhost"
        || h.ends_with(".localhost")
        || h.starts_with("127.")
        || h == "0.0.0.0"
        || h == "::1"
        || h == "::"
        || h.ends_with(".railway.internal")
        || h.ends_with(".internal"))
}

/// Every `tr_wgt_…` token in `text`, in order.
pub fn tokens_in(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find("tr_wgt_") {
        let start = from + pos;
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let body = start + "tr_wgt_".len();
        let end = text[body..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map(|e| body + e)
            .unwrap_or(text.len());
        if before_ok && end > body {
            out.push(&text[start..end]);
        }
        from = end.max(body);
    }
    out
}

/// Newest token first: the environment's logs for the webapp, then the latest deployments'.
fn search_logs(
    railway: &Railway,
    project: &str,
    environment: &str,
    webapp_id: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let newest = |mut logs: Vec<crate::clients::railway::LogLine>| -> Option<String> {
        // Stable sort keeps arrival order among equal timestamps; scan from the end.
        logs.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        logs.iter()
            .rev()
            .find_map(|l| tokens_in(&l.message).last().map(|t| t.to_string()))
    };
    let env_logs =
        railway.environment_logs(environment, &format!("@service:{webapp_id}"), LOG_PAGE)?;
    if let Some(t) = newest(env_logs) {
        return Ok(Some((t, "environment logs".into())));
    }
    for d in railway.deployments(project, environment, webapp_id, MAX_DEPLOYMENTS)? {
        let logs = railway.deployment_logs(&d.id, LOG_PAGE, "tr_wgt_")?;
        if let Some(t) = newest(logs) {
            return Ok(Some((
                t,
                format!("deployment {} of {}", d.id, d.created_at),
            )));
        }
    }
    Ok(None)
}

fn create_worker_group(
    http: &Http,
    ctx: &TaskCtx,
    origin: &str,
    admin: &Secret,
    name: &str,
) -> anyhow::Result<String> {
    let url = format!("{origin}/admin/api/v1/workers");
    let req = Request::new("webapp admin API", "POST", &url)
        .header("authorization", format!("Bearer {}", admin.expose()))
        .json(&json!({ "name": name }))
        .retry(Retry::OnlyRateLimit);
    let resp = http.send(&req, ctx.deadline)?;
    if resp.status == 400 && resp.body.to_ascii_lowercase().contains("already exists") {
        bail!(
            "worker group {name:?} already exists, and its token is shown only once: set WORKER_GROUP_NAME to a new name (e.g. {name}-2) so ops creates a fresh group, or set TRIGGER_WORKER_TOKEN"
        );
    }
    if resp.status == 401 || resp.status == 403 {
        bail!("TRIGGER_ADMIN_TOKEN was rejected by {} (HTTP {}): it must be a personal access token of an admin user", http::origin(&url), resp.status);
    }
    if !resp.ok() {
        bail!(
            "creating worker group {name:?}: POST {url} answered HTTP {}: {}",
            resp.status,
            resp.snippet()
        );
    }
    #[derive(Deserialize)]
    struct Created {
        token: Plain,
    }
    #[derive(Deserialize)]
    struct Plain {
        plaintext: String,
    }
    let created: Created = serde_json::from_str(&resp.body).map_err(|_| {
        anyhow!(
            "creating worker group {name:?}: unexpected answer: {}",
            resp.snippet()
        )
    })?;
    crate::redact::register(&created.token.plaintext);
    Ok(created.token.plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_with_boundaries() {
        let text = "Token:\ntr_wgt_abc123\nTRIGGER_WORKER_TOKEN=tr_wgt_abc123 xtr_wgt_nope tr_wgt_";
        assert_eq!(tokens_in(text), ["tr_wgt_abc123", "tr_wgt_abc123"]);
    }

    #[test]
    fn public_urls() {
        assert!(is_public_url("https://trigger.example.com"));
        assert!(!is_public_url("http://localhost:3030"));
        assert!(!is_public_url("http://webapp.railway.internal:3000"));
        assert!(!is_public_url("http://127.0.0.1"));
        assert!(!is_public_url("not a url"));
    }
}
