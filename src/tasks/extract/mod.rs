//! extract: the worker token and the supervisor's config record from Railway, cached in SQLite.
//!
//! Token priority: `TRIGGER_WORKER_TOKEN` > the cached token > the newest bootstrap banner's
//! token in the webapp's logs the webapp knows (`banner`) > a worker group created through the
//! webapp's admin API, once the origin's checks pass (`origin`). A record younger than
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
use crate::record::ConfigRecord;
use crate::redact::Secret;
use crate::sealed::{ct_eq, fingerprint, Sealer};
use crate::settings::{is_worker_token, Settings};
use crate::state::{now_ms, State};
use crate::task::{ActionRecord, Outcome, Status, TaskCtx, Typed};

pub mod banner;
pub mod origin;
pub mod plan;

use origin::{Reach, Resolution};
pub use plan::{is_public_url, url_host};
use plan::{Action, Freshness, LogsToken, TokenChoice, Verdict};

pub const NAMESPACE: &str = "config";
const RECORD_KEY: &str = "record";
const TOKEN_KEY: &str = "worker_token";
/// A group ops created whose making-default failed: retried at every run until it succeeds.
const DEFAULT_PENDING_KEY: &str = "make_default_pending";
/// Set once every cached secret has been re-sealed in the current format: legacy values are
/// refused from then on.
const LEGACY_DONE_KEY: &str = "legacy_resealed";

/// The key, refusing the legacy format once the migration is recorded as done.
fn sealer(
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
const FIELD_SECRET: &str = "config.record.managed_secret";
const FIELD_REGISTRY: &str = "config.record.registry_password";
const FIELD_TOKEN: &str = "config.worker_token";
const WEBAPP_NAMES: &[&str] = &["trigger.dev", "webapp", "trigger"];
const REGISTRY_NAMES: &[&str] = &["registry", "docker-registry"];
/// Log lines fetched per query, and deployments searched.
const LOG_PAGE: u32 = 500;
const MAX_DEPLOYMENTS: u32 = 10;

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

/// What a run reports and does, gathered as it goes.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
    planned: bool,
    actions: Vec<ActionRecord>,
}

impl Report {
    /// A write: done now, or in a dry run listed as "would …". Returns whether to do it.
    fn act(&mut self, ctx: &TaskCtx, action: &Action) -> bool {
        if ctx.dry_run {
            let rec = ActionRecord::planned(action.typed(), action.describe());
            self.lines.push(rec.would());
            self.actions.push(rec);
            self.planned = true;
            return false;
        }
        let rec = ActionRecord::done(action.typed(), action.describe(), "done");
        self.lines.push(rec.did());
        self.actions.push(rec);
        true
    }

    fn finish(self) -> Outcome {
        let mut outcome = if self.failures.is_empty() {
            Outcome::lines(
                if self.planned {
                    Status::Planned
                } else {
                    Status::Ok
                },
                self.lines,
            )
        } else {
            let mut detail = self.failures;
            detail.extend(self.lines);
            Outcome::lines(Status::Failed, detail)
        };
        outcome.actions = self.actions;
        outcome
    }
}

/// A worker token and where it came from.
#[derive(Clone)]
struct Token {
    value: String,
    source: String,
    found_at: i64,
    /// The worker group ops has just created for it through the admin API.
    created: Option<Created>,
}

/// A worker group created through the admin API (`workerGroup` in the answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Created {
    id: String,
    name: String,
}

pub fn run(opts: &ExtractOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let http = Http::new();
    let sealer = sealer(ctx.state, ctx.state_dir, !ctx.dry_run)?;
    let now = now_ms();
    let mut report = Report::default();
    if let (Some(se), Some(st), false) = (&sealer, ctx.state, ctx.dry_run) {
        let done = match reseal_legacy(st, se, now) {
            Ok(true) => {
                report
                    .lines
                    .push("re-sealed the cached secrets with ChaCha20-Poly1305".into());
                true
            }
            Ok(false) => true,
            // Unreadable values are handled below as if absent (looked up again).
            Err(e) => {
                log::warn!("could not re-seal the cached secrets: {e:#}");
                false
            }
        };
        // The migration ends with the first pass that leaves nothing in the legacy format.
        if done && st.kv_get::<bool>(NAMESPACE, LEGACY_DONE_KEY)?.is_none() {
            st.kv_set(NAMESPACE, LEGACY_DONE_KEY, &true, now)?;
        }
    }
    // Observe what the state holds.
    let stored: Option<StoredRecord> = match ctx.state {
        Some(st) => st.kv_get(NAMESPACE, RECORD_KEY)?.map(|(r, _)| r),
        None => None,
    };
    let cached = match (ctx.state, &sealer) {
        (Some(st), Some(se)) => cached_token(st, se)?,
        _ => None,
    };
    let known = match (&ctx.settings.trigger_worker_token, &cached) {
        (Some(t), _) => Some(Token {
            value: t.expose().to_string(),
            source: "manual".into(),
            found_at: 0,
            created: None,
        }),
        (None, Some(c)) => Some(Token {
            value: c.token.clone(),
            source: c.source.clone(),
            found_at: c.found_at,
            created: None,
        }),
        (None, None) => None,
    };
    // Plan: the stored record as is, or Railway read again.
    let usable = stored
        .as_ref()
        .zip(known.as_ref())
        .filter(|_| sealer.is_some());
    let freshness = plan::freshness(
        usable.map(|(rec, _)| now - rec.extracted_at),
        usable.is_some_and(|(rec, t)| {
            ct_eq(rec.token_hash.as_bytes(), token_hash(&t.value).as_bytes())
        }),
        stored.as_ref().is_some_and(|r| r.failed),
        opts.refresh,
        ctx.refresh,
    );
    if let (Freshness::Fresh { age_ms }, Some((rec, token)), Some(se)) =
        (&freshness, usable, &sealer)
    {
        retry_make_default(opts, ctx, &mut report)?;
        return fresh(opts, ctx, rec, token, se, *age_ms, report);
    }
    if let Freshness::Stale { note } = freshness {
        report.lines.extend(note);
    }
    retry_make_default(opts, ctx, &mut report)?;
    let was_cached = cached.is_some();
    extract(opts, ctx, &http, stored, was_cached, known, sealer, report)
}

/// The stored record is fresh: no Railway request, only the token check and the webapp's
/// health; the record is marked failed (re-read next run) when a check fails.
fn fresh(
    opts: &ExtractOptions,
    ctx: &TaskCtx,
    rec: &StoredRecord,
    token: &Token,
    se: &Sealer,
    age_ms: i64,
    mut report: Report,
) -> anyhow::Result<Outcome> {
    let now = now_ms();
    report.lines.push(format!(
        "worker token: {}",
        describe_source(&token.source, token.found_at, now)
    ));
    report.lines.push(format!(
        "config record is {} old (refresh {}): no Railway request",
        crate::report::fmt_ms(age_ms as u64),
        crate::duration::format(opts.refresh)
    ));
    let secret = se.open(FIELD_SECRET, &rec.managed_secret)?;
    let verdict = check_token(ctx, token, now, &mut report)?;
    let checks = origin_checks(ctx, opts, &secret, &rec.api_origin, &rec.webapp_service);
    report.lines.extend(checks.lines);
    let mut failures = checks.failures;
    failures.extend(verdict.failure.clone());
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
    report.failures.extend(failures);
    Ok(report.finish())
}

/// What Railway says of the webapp service.
struct Webapp {
    name: String,
    id: String,
    registry_id: Option<String>,
    services: Option<Vec<crate::clients::railway::Service>>,
    vars: BTreeMap<String, String>,
    instance: crate::clients::railway::ServiceInstance,
}

/// Reads Railway: the webapp's variables and source (one request by the ids of the last
/// record; the project's services only when those no longer answer).
fn observe_webapp(
    ctx: &TaskCtx,
    railway: &Railway,
    stored: Option<&StoredRecord>,
) -> anyhow::Result<Webapp> {
    let s = ctx.settings;
    let (project, environment) = s.railway_ids()?;
    let cached_ids = stored.filter(|rec| {
        name_matches(
            &rec.webapp_service,
            s.webapp_service_name.as_deref(),
            WEBAPP_NAMES,
        )
    });
    if let Some(rec) = cached_ids {
        match railway.webapp(project, environment, &rec.webapp_service_id) {
            Ok((vars, instance))
                if vars.contains_key("MANAGED_WORKER_SECRET")
                    || vars.contains_key("APP_ORIGIN") =>
            {
                return Ok(Webapp {
                    name: rec.webapp_service.clone(),
                    id: rec.webapp_service_id.clone(),
                    registry_id: rec.registry_service_id.clone(),
                    services: None,
                    vars,
                    instance,
                });
            }
            Ok(_) => log::info!(
                "the cached webapp service id no longer answers; finding the service again"
            ),
            Err(e) => {
                log::info!("the cached webapp service id failed ({e:#}); finding the service again")
            }
        }
    }
    let list = railway.services(project)?;
    let web = find_service(
        &list,
        s.webapp_service_name.as_deref(),
        "WEBAPP_SERVICE_NAME",
        WEBAPP_NAMES,
    )?;
    let (name, id) = (web.name.clone(), web.id.clone());
    let (vars, instance) = railway.webapp(project, environment, &id)?;
    Ok(Webapp {
        name,
        id,
        registry_id: None,
        services: Some(list),
        vars,
        instance,
    })
}

/// The record's values from the webapp's variables, asking Railway for domains only when the
/// variables do not name them.
struct Resolved {
    secret: String,
    origin: String,
    otel: String,
    registry_host: Option<String>,
    registry_user: Option<String>,
    registry_password: Option<String>,
}

fn resolve(ctx: &TaskCtx, railway: &Railway, web: &mut Webapp) -> anyhow::Result<Resolved> {
    let s = ctx.settings;
    let (project, environment) = s.railway_ids()?;
    let name = web.name.clone();
    let secret = web.vars.get("MANAGED_WORKER_SECRET").filter(|v| !v.trim().is_empty()).cloned().ok_or_else(|| {
        anyhow!("MANAGED_WORKER_SECRET is not set on the Railway service {name:?}: since v4.5.6 the webapp has no default and refuses to boot without it (set a random value, e.g. openssl rand -hex 16, on the webapp and redeploy it)")
    })?;
    crate::redact::register(&secret);
    let origin = match plan::api_origin(&web.vars) {
        Some(o) => o,
        None => match railway.domains(project, environment, &web.id)?.public() {
            Some(d) => format!("https://{d}"),
            None => bail!("API_ORIGIN (or APP_ORIGIN, or a public domain) is not set on the Railway service {name:?} (set it there; the supervisor needs it)"),
        },
    };
    origin::parse(&origin, &name).map_err(|e| anyhow!(e))?;
    let otel = plan::otel_endpoint(&web.vars, &origin);
    let (host, registry_user, registry_password) = plan::registry(&web.vars);
    if let Some(p) = &registry_password {
        crate::redact::register(p);
    }
    let registry_host = match host {
        Some(h) => Some(h),
        None => {
            if web.registry_id.is_none() {
                let list = match web.services.take() {
                    Some(l) => l,
                    None => railway.services(project)?,
                };
                let reg = find_service(
                    &list,
                    s.registry_service_name.as_deref(),
                    "REGISTRY_SERVICE_NAME",
                    REGISTRY_NAMES,
                )?;
                web.registry_id = Some(reg.id.clone());
            }
            let id = web.registry_id.as_deref().unwrap_or_default();
            match railway.domains(project, environment, id)?.public() {
                Some(d) => Some(d.to_string()),
                None => bail!("the registry service has no public domain: generate one in Railway (Settings → Networking) or set DEPLOY_REGISTRY_HOST on {name:?}"),
            }
        }
    };
    Ok(Resolved {
        secret,
        origin,
        otel,
        registry_host,
        registry_user,
        registry_password,
    })
}

/// No manual or cached token: the newest in the webapp's logs (when the webapp knows it), else
/// a worker group created through the admin API. `None`: planned in a dry run.
fn find_token(
    ctx: &TaskCtx,
    http: &Http,
    railway: &Railway,
    web: &Webapp,
    checks: &OriginChecks,
    make_default: bool,
    report: &mut Report,
) -> anyhow::Result<Option<Token>> {
    let origin = checks.origin.as_str();
    let s = ctx.settings;
    let now = now_ms();
    let (project, environment) = s.railway_ids()?;
    let mut judge = |t: &str| -> anyhow::Result<LogsToken> {
        Ok(match lookup(ctx, t)? {
            Some(TokenLookup::Known(_)) => LogsToken::Known,
            Some(TokenLookup::Unknown) => LogsToken::Unknown,
            Some(TokenLookup::TablesMissing(_)) | None => LogsToken::Unverified,
        })
    };
    let mut found = search_logs(railway, project, environment, &web.id, &mut judge)?;
    let judged: Vec<(&str, LogsToken)> = found
        .iter()
        .map(|(_, where_, j)| (where_.as_str(), *j))
        .collect();
    let (choice, notes) = plan::after_logs(
        &judged,
        s.trigger_admin_token.is_some(),
        &s.worker_group_name,
    );
    report.lines.extend(notes);
    match (choice, &s.trigger_admin_token) {
        (TokenChoice::Logs(i), _) if i < found.len() => {
            let (value, where_, _) = found.swap_remove(i);
            report.lines.push(format!(
                "worker token: found in the webapp's logs ({where_})"
            ));
            Ok(Some(Token {
                value,
                source: "logs".into(),
                found_at: now,
                created: None,
            }))
        }
        (TokenChoice::CreateGroup, Some(admin)) => {
            if let Err(why) = &checks.admin {
                bail!("no worker token in the webapp's logs, and {why}");
            }
            if !ctx.allow_new_worker_group {
                let seen = serving(ctx, http)?;
                if let Some(why) = plan::new_group_guard(&seen, &s.worker_group_name, ctx.profile) {
                    bail!("{why}");
                }
            }
            let action = Action::CreateWorkerGroup {
                name: s.worker_group_name.clone(),
                origin: origin.to_string(),
            };
            if !report.act(ctx, &action) {
                if make_default {
                    report.act(
                        ctx,
                        &Action::MakeDefault {
                            name: s.worker_group_name.clone(),
                            origin: origin.to_string(),
                        },
                    );
                }
                return Ok(None);
            }
            let (value, created) = create_worker_group(ctx, origin, admin, &s.worker_group_name)?;
            ctx.changed(
                "worker_group.created",
                format!(
                    "created worker group {:?} through the webapp's admin API ({})",
                    s.worker_group_name,
                    http::origin(origin)
                ),
            );
            report.lines.push(format!(
                "worker token: created worker group {:?} through the admin API",
                s.worker_group_name
            ));
            Ok(Some(Token {
                value,
                source: "admin".into(),
                found_at: now,
                created,
            }))
        }
        (TokenChoice::None(why), _) => bail!("{why}"),
        _ => bail!("internal: no token source"),
    }
}

/// Reads Railway and builds the record; stores it (with what changed) unless dry run.
#[allow(clippy::too_many_arguments)]
fn extract(
    opts: &ExtractOptions,
    ctx: &TaskCtx,
    http: &Http,
    stored: Option<StoredRecord>,
    was_cached: bool,
    known: Option<Token>,
    sealer: Option<Sealer>,
    mut report: Report,
) -> anyhow::Result<Outcome> {
    let s = ctx.settings;
    let Some(auth) = s.railway_token.as_ref() else {
        return Err(crate::exit::not_configured("set RAILWAY_API_TOKEN (account or workspace token) or RAILWAY_TOKEN (project token) so ops can read the webapp's config from Railway"));
    };
    s.railway_ids()?;
    let railway = Railway::new(http, &s.railway_api_url, (auth.0, &auth.1), ctx.deadline);
    let mut web = observe_webapp(ctx, &railway, stored.as_ref())?;
    let values = resolve(ctx, &railway, &mut web)?;
    // The origin is checked before any token goes there.
    let checks = origin_checks(ctx, opts, &values.secret, &values.origin, &web.name);
    let token = match known {
        Some(t) => Some(t),
        None => find_token(
            ctx,
            http,
            &railway,
            &web,
            &checks,
            opts.make_default,
            &mut report,
        )?,
    };
    let now = now_ms();
    let verdict = match &token {
        Some(t) => use_token(ctx, t, was_cached, sealer.as_ref(), &mut report)?,
        None => Verdict::default(),
    };
    if let Some(created) = token.as_ref().and_then(|t| t.created.clone()) {
        if opts.make_default && verdict.failure.is_none() {
            // The token is cached by now: a failure here loses nothing and is retried.
            let pending = Pending {
                group: created,
                origin: values.origin.clone(),
            };
            if let Err(e) = make_default(ctx, &pending, &mut report) {
                report.failures.push(format!("{e:#}"));
                ctx.writable_state()?
                    .kv_set(NAMESPACE, DEFAULT_PENDING_KEY, &pending, now)?;
            }
        } else if !opts.make_default {
            report.lines.push(format!(
                "worker group {:?} was not made the global default (make_default: false): its supervisors receive only the runs of projects routed to it",
                created.name
            ));
        }
    }
    let token_value = token.as_ref().map(|t| t.value.clone()).unwrap_or_default();
    let release = web.instance.release();
    describe_values(&web.name, &values, &release, s, &mut report.lines);
    report
        .lines
        .push(format!("Railway requests: {}", railway.requests.get()));
    report.lines.extend(checks.lines);
    let mut failures = checks.failures;
    failures.extend(verdict.failure.clone());
    let fp = record_fingerprint(
        &token_value,
        &values.secret,
        &values.origin,
        &values.otel,
        &values.registry_host,
        &values.registry_user,
        &values.registry_password,
    );
    let draft = Draft {
        token,
        values,
        web,
        release,
        fingerprint: fp,
        group: verdict.group.clone(),
        failed: !failures.is_empty(),
        now,
    };
    if verdict.failure.is_none() {
        handoff(ctx, &draft);
    }
    store(ctx, &draft, stored.as_ref(), sealer.as_ref(), &mut report)?;
    report.failures.extend(failures);
    Ok(report.finish())
}

/// Checks the token with the webapp, and caches a newly found one at once (the logs may not
/// hold it next time); a token the webapp does not know is never cached.
fn use_token(
    ctx: &TaskCtx,
    t: &Token,
    was_cached: bool,
    sealer: Option<&Sealer>,
    report: &mut Report,
) -> anyhow::Result<Verdict> {
    let now = now_ms();
    crate::redact::register(&t.value);
    if !is_worker_token(&t.value) {
        bail!(
            "the worker token from {} is not tr_wgt_ followed by letters and digits",
            t.source
        );
    }
    let verdict = check_token(ctx, t, now, report)?;
    let new = t.source != "manual" && !was_cached && verdict.failure.is_none();
    let action = Action::CacheToken {
        source: t.source.clone(),
    };
    if new && report.act(ctx, &action) {
        if let Some(se) = sealer {
            let cached = StoredToken {
                token: se.seal(FIELD_TOKEN, &t.value)?,
                source: t.source.clone(),
                found_at: t.found_at,
            };
            ctx.writable_state()?
                .kv_set(NAMESPACE, TOKEN_KEY, &cached, now)?;
        }
    }
    if report.lines.iter().all(|l| !l.starts_with("worker token")) {
        report.lines.push(format!(
            "worker token: {}",
            describe_source(&t.source, t.found_at, now)
        ));
    }
    Ok(verdict)
}

/// Everything one extraction found, before it is handed on and stored.
struct Draft {
    token: Option<Token>,
    values: Resolved,
    web: Webapp,
    release: crate::release::WebappRelease,
    fingerprint: String,
    group: Option<WorkerGroup>,
    failed: bool,
    now: i64,
}

impl Draft {
    fn token_value(&self) -> &str {
        self.token.as_ref().map_or("", |t| t.value.as_str())
    }
}

/// Later tasks of this profile (the supervisor) see the record even in a dry run.
fn handoff(ctx: &TaskCtx, d: &Draft) {
    let Some(t) = &d.token else { return };
    let v = &d.values;
    *ctx.handoff.record.borrow_mut() = Some(ConfigRecord {
        worker_token: Secret::new(t.value.clone()),
        token_source: t.source.clone(),
        token_found_at: t.found_at,
        managed_secret: Secret::new(v.secret.clone()),
        api_origin: v.origin.clone(),
        otel_endpoint: v.otel.clone(),
        registry_host: v.registry_host.clone(),
        registry_username: v.registry_user.clone(),
        registry_password: v.registry_password.clone().map(Secret::new),
        webapp_service: d.web.name.clone(),
        fingerprint: d.fingerprint.clone(),
        extracted_at: d.now,
        webapp_version: d.release.version.clone(),
    });
}

/// Says what changed and stores the record: always in a real run (its timestamp is the
/// freshness), in a dry run listed only when something changed.
fn store(
    ctx: &TaskCtx,
    d: &Draft,
    stored: Option<&StoredRecord>,
    sealer: Option<&Sealer>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let v = &d.values;
    let new_values = plan::Values {
        token_hash: token_hash(d.token_value()),
        secret: Some(v.secret.clone()),
        origin: v.origin.clone(),
        otel: v.otel.clone(),
        registry_host: v.registry_host.clone(),
        registry_user: v.registry_user.clone(),
        registry_password: v.registry_password.clone(),
        version: d.release.version.clone(),
    };
    let old_values = stored.map(|old| stored_values(old, sealer));
    let changed = plan::changes(
        old_values.as_ref(),
        &new_values,
        stored.is_some_and(|o| o.fingerprint == d.fingerprint),
    );
    if !changed.is_empty() && stored.is_some() {
        log::info!("config record changed: {}", changed.join(", "));
        report.lines.push(format!(
            "changed since the last extraction: {}",
            changed.join(", ")
        ));
    }
    let action = Action::StoreRecord {
        changed: changed.clone(),
    };
    let write = if ctx.dry_run {
        !changed.is_empty() && report.act(ctx, &action)
    } else {
        true
    };
    let (true, Some(se)) = (write, sealer) else {
        return Ok(());
    };
    let rec = StoredRecord {
        managed_secret: se.seal(FIELD_SECRET, &v.secret)?,
        api_origin: v.origin.clone(),
        otel_endpoint: v.otel.clone(),
        registry_host: v.registry_host.clone(),
        registry_username: v.registry_user.clone(),
        registry_password: v
            .registry_password
            .as_ref()
            .map(|p| se.seal(FIELD_REGISTRY, p))
            .transpose()?,
        webapp_service: d.web.name.clone(),
        webapp_service_id: d.web.id.clone(),
        registry_service_id: d.web.registry_id.clone(),
        token_hash: token_hash(d.token_value()),
        fingerprint: d.fingerprint.clone(),
        extracted_at: d.now,
        worker_group: d.group.clone(),
        webapp_version: d.release.version.clone(),
        webapp_release: Some(d.release.origin.clone()),
        failed: d.failed,
    };
    ctx.writable_state()?
        .kv_set(NAMESPACE, RECORD_KEY, &rec, d.now)?;
    if !changed.is_empty() {
        let rec = ActionRecord::done(action.typed(), action.describe(), "done");
        report.lines.push(rec.did());
        report.actions.push(rec);
    }
    Ok(())
}

/// The stored record's values, secrets opened where the key allows.
fn stored_values(old: &StoredRecord, sealer: Option<&Sealer>) -> plan::Values {
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

fn describe_values(
    webapp: &str,
    v: &Resolved,
    release: &crate::release::WebappRelease,
    s: &Settings,
    lines: &mut Vec<String>,
) {
    lines.push(format!("MANAGED_WORKER_SECRET: set on {webapp:?}"));
    lines.push(format!("API origin: {}", v.origin));
    lines.push(format!("OTEL endpoint: {}", v.otel));
    lines.push(format!(
        "registry: {} (credentials: {})",
        v.registry_host.as_deref().unwrap_or("-"),
        if v.registry_user.is_some() && v.registry_password.is_some() {
            "yes"
        } else {
            "no"
        }
    ));
    lines.push(format!(
        "webapp version: {} ({})",
        release.version.as_deref().unwrap_or("unknown"),
        release.origin
    ));
    lines.push(crate::release::describe(
        s.trigger_version.as_deref(),
        release.version.as_deref(),
    ));
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

/// The side-effect-free token check (observe), its verdict (plan), and dropping a cached token
/// the webapp does not know (apply).
fn check_token(
    ctx: &TaskCtx,
    token: &Token,
    now: i64,
    report: &mut Report,
) -> anyhow::Result<Verdict> {
    let found = lookup(ctx, &token.value)?;
    let from = describe_source(&token.source, token.found_at, now);
    let verdict = plan::verdict(found.as_ref(), token.source == "manual", &from);
    report.lines.extend(verdict.line.clone());
    if verdict.drop_cached && report.act(ctx, &Action::DropCachedToken) {
        ctx.writable_state()?.kv_delete(NAMESPACE, TOKEN_KEY)?;
        report.lines.push(
            "dropped the cached worker token: the next run looks for a good one (logs, then the admin API)"
                .into(),
        );
    }
    Ok(verdict)
}

/// What ops found of the origin before sending anything there.
struct OriginChecks {
    origin: String,
    failures: Vec<String>,
    lines: Vec<String>,
    /// Whether TRIGGER_ADMIN_TOKEN may go there; `Err` says why not.
    admin: Result<(), String>,
}

/// The values' checks, the origin's addresses, then `GET <origin>/healthcheck` when the task
/// asks for it and the origin is public.
fn origin_checks(
    ctx: &TaskCtx,
    opts: &ExtractOptions,
    secret: &str,
    api_origin: &str,
    webapp: &str,
) -> OriginChecks {
    let mut failures = plan::value_checks(secret, api_origin, webapp);
    let mut lines = Vec::new();
    // Only an origin a droplet can reach is resolved, asked, or handed a token.
    let observed = if is_public_url(api_origin) {
        observe_origin(api_origin, webapp)
            .map_err(|e| failures.push(e))
            .ok()
    } else {
        None
    };
    let admin = match observed {
        Some((parsed, res)) => {
            let sendable = match &res {
                Resolution::Reach(Reach::Loopback) => Err(format!(
                    "API origin {api_origin} resolves to a loopback address: not reachable from a droplet; set API_ORIGIN on {webapp:?} to its public https:// URL"
                )),
                Resolution::Forbidden(why) => Err(why.clone()),
                Resolution::Unresolved(why) => Err(format!("webapp health check failed: {why}")),
                Resolution::Reach(_) => Ok(()),
            };
            match sendable {
                Ok(()) if opts.check_webapp => {
                    failures.extend(webapp_health(ctx, api_origin, &mut lines))
                }
                Ok(()) => {}
                // Without the health check an unresolved host is only the admin API's concern.
                Err(_) if !opts.check_webapp && matches!(res, Resolution::Unresolved(_)) => {}
                Err(why) => failures.push(why),
            }
            origin::admin_token_allowed(api_origin, &parsed, &res, &failures)
        }
        None => Err(format!(
            "TRIGGER_ADMIN_TOKEN is not sent to {api_origin}: the checks above failed; fix them first"
        )),
    };
    OriginChecks {
        origin: api_origin.to_string(),
        failures,
        lines,
        admin,
    }
}

/// An HTTP client for the webapp's origin: it connects only where `origin::connect_allowed` says.
pub(crate) fn webapp_client(admin_token: bool) -> Http {
    Http::guarded(std::sync::Arc::new(
        move |scheme: &str, ips: &[std::net::IpAddr]| {
            origin::connect_allowed(scheme, ips, admin_token)
        },
    ))
}

/// `GET <origin>/healthcheck`. The answer's body is never repeated: whoever sets `API_ORIGIN`
/// would read it in the alerts.
fn webapp_health(ctx: &TaskCtx, api_origin: &str, lines: &mut Vec<String>) -> Option<String> {
    let url = format!("{api_origin}/healthcheck");
    let req = Request::new("webapp", "GET", &url)
        .retry(Retry::Never)
        .timeout(std::time::Duration::from_secs(5));
    match webapp_client(false).send(&req, ctx.deadline) {
        Ok(r) if r.status == 200 && r.body.trim() == "OK" => {
            lines.push(format!("webapp {url}: 200 OK"));
            None
        }
        Ok(r) => Some(format!(
            "webapp health check failed: GET {url} answered HTTP {} (not \"200 OK\"; the body is not shown)",
            r.status
        )),
        Err(e) => Some(format!("webapp health check failed: GET {url}: {e:#}")),
    }
}

/// Parses the origin and resolves its host with the system resolver (the HTTP client's).
fn observe_origin(api_origin: &str, service: &str) -> Result<(origin::Origin, Resolution), String> {
    use std::net::ToSocketAddrs;
    let o = origin::parse(api_origin, service)?;
    let addrs = match o.ip {
        Some(ip) => Ok(vec![ip]),
        None => (o.host.as_str(), o.port)
            .to_socket_addrs()
            .map(|a| a.map(|sa| sa.ip()).collect())
            .map_err(|e| format!("cannot resolve {}: {e}", o.host)),
    };
    let res = origin::resolution(api_origin, addrs);
    Ok((o, res))
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

fn name_matches(stored: &str, configured: Option<&str>, common: &[&str]) -> bool {
    match configured {
        Some(c) => c.eq_ignore_ascii_case(stored),
        None => common.iter().any(|c| c.eq_ignore_ascii_case(stored)),
    }
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

/// A bootstrap banner's token, where it was found, and what the webapp says of it.
type Candidate = (String, String, LogsToken);

/// The bootstrap banners' tokens, newest first: the environment's logs for the webapp, then the
/// latest deployments'. Each is judged as it is found (the webapp's database, when set); the
/// search stops at a known one, or at the first logs that hold any when none can be checked.
fn search_logs(
    railway: &Railway,
    project: &str,
    environment: &str,
    webapp_id: &str,
    judge: &mut dyn FnMut(&str) -> anyhow::Result<LogsToken>,
) -> anyhow::Result<Vec<Candidate>> {
    let mut found: Vec<Candidate> = Vec::new();
    let mut settled = |logs: &[crate::clients::railway::LogLine],
                       where_: String,
                       found: &mut Vec<Candidate>|
     -> anyhow::Result<bool> {
        for t in banner::tokens(logs) {
            if found.iter().any(|(f, _, _)| *f == t) {
                continue;
            }
            crate::redact::register(&t);
            let judged = judge(&t)?;
            found.push((t, where_.clone(), judged));
            if judged == LogsToken::Known {
                return Ok(true);
            }
        }
        Ok(found.iter().any(|(_, _, j)| *j == LogsToken::Unverified))
    };
    let env_logs =
        railway.environment_logs(environment, &format!("@service:{webapp_id}"), LOG_PAGE)?;
    if settled(&env_logs, "environment logs".into(), &mut found)? {
        return Ok(found);
    }
    for d in railway.deployments(project, environment, webapp_id, MAX_DEPLOYMENTS)? {
        let logs = railway.deployment_logs(&d.id, LOG_PAGE, "tr_wgt_")?;
        let where_ = format!("deployment {} of {}", d.id, d.created_at);
        if settled(&logs, where_, &mut found)? {
            break;
        }
    }
    Ok(found)
}

fn create_worker_group(
    ctx: &TaskCtx,
    origin: &str,
    admin: &Secret,
    name: &str,
) -> anyhow::Result<(String, Option<Created>)> {
    let url = format!("{origin}/admin/api/v1/workers");
    let req = Request::new("webapp admin API", "POST", &url)
        .header("authorization", format!("Bearer {}", admin.expose()))
        .json(&json!({ "name": name }))
        .retry(Retry::OnlyRateLimit);
    let resp = webapp_client(true).send(&req, ctx.deadline)?;
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
            "creating worker group {name:?}: POST {url} answered HTTP {} (the body is not shown)",
            resp.status
        );
    }
    #[derive(Deserialize)]
    struct Answer {
        token: Plain,
        #[serde(rename = "workerGroup")]
        worker_group: Option<Group>,
    }
    #[derive(Deserialize)]
    struct Plain {
        plaintext: String,
    }
    #[derive(Deserialize)]
    struct Group {
        id: Option<String>,
    }
    let answer: Answer = serde_json::from_str(&resp.body).map_err(|_| {
        anyhow!("creating worker group {name:?}: POST {url} answered HTTP {} with no token in it (the body is not shown)", resp.status)
    })?;
    crate::redact::register(&answer.token.plaintext);
    let created = answer.worker_group.and_then(|g| g.id).map(|id| Created {
        id,
        name: name.to_string(),
    });
    Ok((answer.token.plaintext, created))
}

/// Who serves runs before ops creates a group (reads only): the droplets ops manages (by
/// DigitalOcean's tags) and which group each heartbeats into, and the global default group's
/// youngest heartbeat. Nothing to see without DATABASE_URL; a read that fails stops the create
/// (not knowing is no reason to re-route).
fn serving(ctx: &TaskCtx, http: &Http) -> anyhow::Result<plan::Serving> {
    let s = ctx.settings;
    let Some(url) = &s.database_url else {
        return Ok(plan::Serving::default());
    };
    let cannot = |e: anyhow::Error| {
        anyhow!("cannot tell whether other supervisors serve runs before creating a worker group: {e:#}")
    };
    let names: Vec<String> = match &s.digitalocean_token {
        Some(token) => {
            let api = crate::clients::digitalocean::DigitalOcean::new(
                http,
                &s.digitalocean_api_url,
                token,
                ctx.deadline,
            );
            let tag = s.deployment_tag();
            api.droplets_by_tag(&tag)
                .map_err(cannot)?
                .into_iter()
                .filter(|d| d.has_tag(&tag) && d.has_tag(crate::settings::MANAGED_TAG))
                .map(|d| d.name)
                .collect()
        }
        None => Vec::new(),
    };
    let mut client = Target::parse(url)?
        .connect(ctx.connect_timeout())
        .map_err(cannot)?;
    let droplets = webapp_db::heartbeats_elsewhere(&mut client, &names, "")
        .map_err(cannot)?
        .into_iter()
        .map(|(name, e)| (name, e.group, e.age_secs))
        .collect();
    let routing = webapp_db::routing(&mut client).map_err(cannot)?;
    let default_group = match routing.default_group_id {
        Some(id) => {
            let ages = webapp_db::group_heartbeats(&mut client, std::slice::from_ref(&id))
                .map_err(cannot)?;
            let name = routing
                .groups
                .iter()
                .find(|g| g.id == id)
                .map_or(id.clone(), |g| g.name.clone());
            ages.get(&id).map(|a| (name, *a))
        }
        None => None,
    };
    Ok(plan::Serving {
        droplets,
        default_group,
    })
}

/// A group to make the global default, and the webapp origin to ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    group: Created,
    origin: String,
}

/// Makes the group the global default (`POST /admin/api/v1/feature-flags`), says what happened
/// to the previous default, and forgets a pending retry. Runs already waiting in the previous
/// default's queue stay there: Trigger.dev does not move them.
fn make_default(ctx: &TaskCtx, p: &Pending, report: &mut Report) -> anyhow::Result<()> {
    let action = Action::MakeDefault {
        name: p.group.name.clone(),
        origin: p.origin.clone(),
    };
    if !report.act(ctx, &action) {
        return Ok(());
    }
    let Some(admin) = &ctx.settings.trigger_admin_token else {
        bail!("worker group {:?} is not the global default yet, and TRIGGER_ADMIN_TOKEN is no longer set: set it again (ops retries), or make it the default by hand (POST {}/admin/api/v1/feature-flags {{\"defaultWorkerInstanceGroupId\": \"{}\"}})", p.group.name, p.origin, p.group.id);
    };
    // A pending retry's origin is checked again: its addresses may have changed.
    observe_origin(&p.origin, "the webapp")
        .and_then(|(o, res)| origin::admin_token_allowed(&p.origin, &o, &res, &[]))
        .map_err(|why| {
            anyhow!(
                "worker group {:?} is not the global default yet: {why}",
                p.group.name
            )
        })?;
    // The previous default, read before it changes (only with DATABASE_URL).
    let previous = previous_default(ctx);
    let url = format!("{}/admin/api/v1/feature-flags", p.origin);
    let req = Request::new("webapp admin API", "POST", &url)
        .header("authorization", format!("Bearer {}", admin.expose()))
        .json(&json!({ "defaultWorkerInstanceGroupId": p.group.id }))
        .retry(Retry::OnlyRateLimit);
    let resp = webapp_client(true).send(&req, ctx.deadline);
    let failed = |why: String| {
        anyhow!(
            "created worker group {:?} but could not make it the global default ({why}): deployed runs still go to the old default, which ops' supervisors no longer serve. ops retries at the next run; or POST {url} {{\"defaultWorkerInstanceGroupId\": \"{}\"}} with an admin token",
            p.group.name,
            p.group.id
        )
    };
    match resp {
        Ok(r) if r.ok() => {}
        Ok(r) => return Err(failed(format!("POST {url} answered HTTP {}", r.status))),
        Err(e) => return Err(failed(format!("{e:#}"))),
    }
    let done = format!(
        "made worker group {:?} the global default: deployed runs of projects without their own default now go to its queue",
        p.group.name
    );
    ctx.changed(
        "routing.default_changed",
        match &previous {
            Some(Some(prev)) => format!("{done} (it was {prev:?})"),
            _ => done.clone(),
        },
    );
    report.lines.push(done);
    report.lines.push(match previous {
        Some(Some(prev)) if prev != p.group.name => format!(
            "the previous default was {prev:?}: runs already waiting in its queue stay there (Trigger.dev does not move them); the supervisor task reports them while nobody serves that queue"
        ),
        Some(_) => "there was no other global default before".into(),
        None => "the previous default is unknown (set DATABASE_URL to see it): runs already waiting in its queue stay there (Trigger.dev does not move them)".into(),
    });
    if let Some(st) = ctx.state {
        if !st.is_read_only() {
            st.kv_delete(NAMESPACE, DEFAULT_PENDING_KEY)?;
        }
    }
    Ok(())
}

/// The global default group's name before ops changes it: `None` without a database view,
/// `Some(None)` when there is no default.
fn previous_default(ctx: &TaskCtx) -> Option<Option<String>> {
    let url = ctx.settings.database_url.as_ref()?;
    let mut client = Target::parse(url)
        .ok()?
        .connect(ctx.connect_timeout())
        .ok()?;
    let routing = webapp_db::routing(&mut client).ok()?;
    Some(routing.default_group_id.map(|id| {
        routing
            .groups
            .iter()
            .find(|g| g.id == id)
            .map_or(id, |g| g.name.clone())
    }))
}

/// A group ops created earlier whose making-default failed: try again (or list it in a dry run).
fn retry_make_default(
    opts: &ExtractOptions,
    ctx: &TaskCtx,
    report: &mut Report,
) -> anyhow::Result<()> {
    let Some(st) = ctx.state else { return Ok(()) };
    let Some((pending, _)) = st.kv_get::<Pending>(NAMESPACE, DEFAULT_PENDING_KEY)? else {
        return Ok(());
    };
    if !opts.make_default {
        return Ok(());
    }
    if let Err(e) = make_default(ctx, &pending, report) {
        report.failures.push(format!("{e:#}"));
    }
    Ok(())
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
