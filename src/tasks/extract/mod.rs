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
use crate::sealed::{ct_eq, Sealer};
use crate::settings::{is_worker_token, Settings};
use crate::state::now_ms;
use crate::task::{ActionRecord, Outcome, Status, TaskCtx, Typed};

pub mod banner;
pub mod origin;
pub mod plan;
pub mod store;
pub mod webapp;

pub use banner::tokens_in;
pub use plan::{is_public_url, url_host};
use plan::{Action, Freshness, LogsToken, TokenChoice, Verdict};
use store::{
    cached_token, record_fingerprint, reseal_legacy, sealer, stored_values, token_hash,
    StoredRecord, StoredToken, DEFAULT_PENDING_KEY, FIELD_REGISTRY, FIELD_SECRET, FIELD_TOKEN,
    LEGACY_DONE_KEY, RECORD_KEY, TOKEN_KEY,
};
pub use store::{
    load_record, note_webapp_release, record_info, refusal_of, token_info, RecordInfo, Refusal,
    TokenInfo, NAMESPACE,
};
pub(crate) use webapp::webapp_client;
pub use webapp::webapp_release_now;
use webapp::{
    create_worker_group, lookup, observe_origin, origin_checks, serving, Created, OriginChecks,
};

const WEBAPP_NAMES: &[&str] = &["trigger.dev", "webapp", "trigger"];
const REGISTRY_NAMES: &[&str] = &["registry", "docker-registry"];
/// Log lines fetched per query, and deployments searched.
const LOG_PAGE: u32 = 500;
const MAX_DEPLOYMENTS: u32 = 10;

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
        stored.as_ref().is_some_and(|r| r.failed) || ctx.state.and_then(refusal_of).is_some(),
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
    report.lines.extend(store::refusal(ctx, &checks.refused)?);
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

/// No token in the logs, and an admin token: a worker group created through the webapp's
/// admin API (a dry run says it would, and would make it the default).
fn create_group(
    ctx: &TaskCtx,
    http: &Http,
    checks: &OriginChecks,
    admin: &Secret,
    make_default: bool,
    report: &mut Report,
) -> anyhow::Result<Option<Token>> {
    let origin = checks.origin.as_str();
    let s = ctx.settings;
    let now = now_ms();
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
            create_group(ctx, http, checks, admin, make_default, report)
        }
        (TokenChoice::None(why), _) => bail!("{why}"),
        _ => bail!("internal: no token source"),
    }
}

/// A worker group created this run becomes the global default (unless `make_default: false`,
/// or the token failed its checks); a failure is kept and retried at the next run.
fn made_default(
    ctx: &TaskCtx,
    opts: &ExtractOptions,
    pending: Pending,
    token_ok: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    if opts.make_default && token_ok {
        // The token is cached by now: a failure here loses nothing and is retried.
        if let Err(e) = make_default(ctx, &pending, report) {
            report.failures.push(format!("{e:#}"));
            ctx.writable_state()?
                .kv_set(NAMESPACE, DEFAULT_PENDING_KEY, &pending, now_ms())?;
        }
    } else if !opts.make_default {
        report.lines.push(format!(
            "worker group {:?} was not made the global default (make_default: false): its supervisors receive only the runs of projects routed to it",
            pending.group.name
        ));
    }
    Ok(())
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
        let pending = Pending {
            group: created,
            origin: values.origin.clone(),
        };
        made_default(ctx, opts, pending, verdict.failure.is_none(), &mut report)?;
    }
    let token_value = token.as_ref().map(|t| t.value.clone()).unwrap_or_default();
    let release = web.instance.release();
    describe_values(&web.name, &values, &release, s, &mut report.lines);
    report
        .lines
        .push(format!("Railway requests: {}", railway.requests.get()));
    report.lines.extend(checks.lines);
    let refused = checks.refused;
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
    if verdict.failure.is_none() && refused.is_empty() {
        handoff(ctx, &draft);
    }
    keep(ctx, &draft, stored, sealer.as_ref(), &refused, &mut report)?;
    report.failures.extend(failures);
    Ok(report.finish())
}

/// Stores the record, or, when its values are refused, keeps the refusal instead: the accepted
/// record stays as it was, marked so the next run reads Railway again.
fn keep(
    ctx: &TaskCtx,
    draft: &Draft,
    stored: Option<StoredRecord>,
    sealer: Option<&Sealer>,
    refused: &[String],
    report: &mut Report,
) -> anyhow::Result<()> {
    report.lines.extend(store::refusal(ctx, refused)?);
    if refused.is_empty() {
        return store(ctx, draft, stored.as_ref(), sealer, report);
    }
    if let (Some(mut old), false) = (stored, ctx.dry_run) {
        old.failed = true;
        ctx.writable_state()?
            .kv_set(NAMESPACE, RECORD_KEY, &old, draft.now)?;
    }
    Ok(())
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
