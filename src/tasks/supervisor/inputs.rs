//! The run's inputs, resolved once: the token, the config record extract left, the fleet's
//! bounds and size, and the desired state (the [`Spec`]) they make.

use crate::config::SupervisorOptions;
use crate::record::ConfigRecord;
use crate::redact::Secret;
use crate::release;
use crate::sealed::fingerprint;
use crate::settings::Settings;
use crate::state::State;
use crate::task::TaskCtx;
use crate::tasks::extract;

use super::capacity;
use super::diff;
use super::plan::{self, Spec};
use super::store::{load, AUTO_SIZE_KEY};

/// Where SUPERVISOR_SIZE=auto starts (the size it settled on is kept: it only grows, a shrink
/// would replace the fleet whenever the large runs pause).
pub const AUTO_DEFAULT_SIZE: &str = "s-2vcpu-2gb";

/// `trigger-supervisor-<first 8 of the Railway environment id>` (`Settings::deployment_tag`:
/// extract needs it too).
pub fn deployment_tag(s: &Settings) -> String {
    s.deployment_tag()
}

/// `ops-spec-<hash>` over region, size, image, version, proxy image and the config record.
pub fn spec_tag(s: &Settings, record: &ConfigRecord, size: &str) -> String {
    let keys = s.supervisor_ssh_keys.join(",");
    format!(
        "ops-spec-{}",
        fingerprint(&[
            &s.supervisor_region,
            size,
            &s.supervisor_image,
            &crate::release::supervisor_version(
                s.trigger_version.as_deref(),
                record.webapp_version.as_deref(),
            )
            .tag,
            &s.docker_proxy_image,
            &keys,
            &record.fingerprint,
            // Whether the compose publishes the workload port (see cloudinit).
            if s.supervisor_health_sources.is_empty() {
                "8020-closed"
            } else {
                "8020-published"
            },
        ])
    )
}

/// The desired state for droplets of `size`, resolved from the task's options, the settings
/// and the config record (the count and the rules are this run's load verdict's to refine:
/// decide.rs).
pub fn spec(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    record: &ConfigRecord,
    size: &str,
    bounds: capacity::Bounds,
) -> Spec {
    let s = ctx.settings;
    let (pin, webapp) = (
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    Spec {
        count: s.supervisor_count as usize,
        tag: deployment_tag(s),
        spec_tag: spec_tag(s, record, size),
        version: release::supervisor_version(pin, webapp),
        version_line: release::describe(pin, webapp),
        rules: plan::Rules {
            boot_grace: opts.boot_grace,
            // Resolved by observe, which sees how often the droplets beat.
            stale_after: opts.stale_after(false),
        },
        unhealthy_after: opts.unhealthy_after,
        max_replacements: opts.max_replacements,
        replacement_window: opts.replacement_window,
        health_sources: !s.supervisor_health_sources.is_empty(),
        standby: true,
        blame_webapp: true,
        reset_breaker: ctx.reset_breaker,
        profile: ctx.profile.to_string(),
        size: size.to_string(),
        region: s.supervisor_region.clone(),
        image: s.supervisor_image.clone(),
        parts: {
            // The size this run builds with (SUPERVISOR_SIZE=auto resolves to one).
            let mut parts = diff::Parts::of(s, record);
            parts.0.insert("size".into(), size.to_string());
            parts
        },
        drain_timeout: opts.drain_timeout,
        max: bounds.max,
        scale_in_after: None,
        extra_creates: 0,
        scale_line: None,
    }
}

const NO_WAY_TO_SEE: &str = "no way to see the supervisor: set DATABASE_URL (the webapp's Postgres: ops reads the supervisors' heartbeats there) or SUPERVISOR_HEALTH_SOURCES (the addresses of this ops host, so it may GET :8020/health)";

/// Whether this configuration lets ops see the supervisors (for `ops check`).
pub fn visibility_problem(s: &Settings) -> Option<&'static str> {
    (s.database_url.is_none() && s.supervisor_health_sources.is_empty()).then_some(NO_WAY_TO_SEE)
}

/// The run's inputs, resolved once.
pub struct Inputs<'a> {
    pub token: &'a Secret,
    pub record: ConfigRecord,
    /// Extract read the record from Railway earlier in this run (a fresh reading itself).
    pub record_fresh: bool,
    pub bounds: capacity::Bounds,
    /// SUPERVISOR_SIZE=auto: the size grows to fit the runs.
    pub auto: bool,
    /// The size the fleet is built with (with auto: the one it settled on).
    pub size: String,
}

/// The size new droplets get: SUPERVISOR_SIZE, or for `auto` the size it settled on.
pub fn size(state: Option<&State>, s: &Settings) -> String {
    if s.supervisor_size == "auto" {
        load::<String>(state, AUTO_SIZE_KEY).unwrap_or_else(|| AUTO_DEFAULT_SIZE.into())
    } else {
        s.supervisor_size.clone()
    }
}

/// The config record, as the droplets get it: only one extract accepted ([`accepted_record`]).
pub fn record(ctx: &TaskCtx) -> anyhow::Result<ConfigRecord> {
    accepted_record(ctx).map(|(r, _)| r)
}

/// The token, the config record (the one extract read earlier in this profile run, stored or
/// planned in a dry run, else the stored one), the bounds and the size; a configuration that
/// lets ops see nothing is refused.
pub fn resolve<'a>(opts: &SupervisorOptions, ctx: &TaskCtx<'a>) -> anyhow::Result<Inputs<'a>> {
    let s = ctx.settings;
    let token = s.digitalocean_token.as_ref().ok_or_else(|| {
        crate::exit::not_configured("set DIGITALOCEAN_TOKEN (a read/write API token from cloud.digitalocean.com/account/api/tokens)")
    })?;
    let (record, record_fresh) = accepted_record(ctx)?;
    if let Some(why) = visibility_problem(s) {
        return Err(crate::exit::config_error(why));
    }
    // An unusable URL is a configuration error here as in `ops check`, not a blind run.
    if let Some(url) = &s.database_url {
        crate::clients::postgres::Target::parse(url)?;
    }
    let auto = s.supervisor_size == "auto";
    let size = size(ctx.state, s);
    let bounds = capacity::Bounds::new(s.supervisor_count, opts.min, opts.max)
        .map_err(crate::exit::config_error)?;
    Ok(Inputs {
        token,
        record,
        record_fresh,
        bounds,
        auto,
        size,
    })
}

/// The record extract read earlier in this profile run (stored, or planned in a dry run), else
/// the stored one; never values extract refused (this run, or the last extraction). True when
/// extract read it from Railway in this run.
fn accepted_record(ctx: &TaskCtx) -> anyhow::Result<(ConfigRecord, bool)> {
    let handed = ctx.handoff.record.borrow().clone();
    if handed.is_none() {
        let refused = ctx
            .handoff
            .refused
            .borrow()
            .clone()
            .or_else(|| ctx.state.and_then(extract::refusal_of).map(|r| r.reasons));
        if let Some(r) = refused {
            anyhow::bail!(
                "the webapp's config was refused by extract, so nothing is deployed from it: {}; then `ops run extract` (the fleet is left as it is)",
                r.join("; ")
            );
        }
    }
    match (handed, ctx.state) {
        (Some(r), _) => Some((r, true)),
        (None, Some(st)) => {
            extract::load_record(st, ctx.state_dir, ctx.settings)?.map(|r| (r, false))
        }
        (None, None) => None,
    }
    .ok_or_else(|| anyhow::anyhow!("no config record yet: run the extract task first (put extract before supervisor in the profile, or `ops run extract`)"))
}

/// The webapp version this run goes by: the record's, unless that would change the fleet's
/// version, when Railway is asked once ([`super::version`]); a fresh reading is kept in the
/// record. Returns the line saying where the version came from, when the usual one does not.
pub fn settle_version(
    ctx: &TaskCtx,
    input: &mut Inputs,
    obs: &plan::Observation,
) -> Option<String> {
    use super::version;
    let running: Vec<String> = obs
        .droplets
        .iter()
        .filter(|d| !d.draining())
        .filter_map(|d| d.version.clone())
        .collect();
    let facts = version::Facts {
        pin: ctx.settings.trigger_version.as_deref(),
        recorded: input.record.webapp_version.as_deref(),
        record_age_ms: crate::state::now_ms() - input.record.extracted_at,
        record_fresh: input.record_fresh,
        running: &running,
    };
    let reading = version::needs_reading(&facts)
        .then(|| extract::webapp_release_now(ctx).map_err(|e| format!("{e:#}")));
    if let (Some(Ok(r)), false) = (&reading, ctx.dry_run) {
        if r.version.is_some() {
            if let Err(e) = extract::note_webapp_release(ctx, r) {
                log::warn!("the webapp's version read now was not kept: {e:#}");
            }
        }
    }
    let (v, line) = version::settle(&facts, reading);
    input.record.webapp_version = v;
    line
}
