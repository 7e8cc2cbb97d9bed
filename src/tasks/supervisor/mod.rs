//! supervisor: keep `SUPERVISOR_COUNT` healthy supervisor droplets on DigitalOcean, reconciled
//! level-triggered from DigitalOcean's own tags every run, so a lost state database can never
//! cause duplicates. At most one create and one delete per run; never a droplet without both of
//! our tags; a circuit breaker on replacements.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::digitalocean::{DigitalOcean, Droplet, Firewall, NewDroplet};
use crate::clients::http::{Http, Request, Retry};
use crate::clients::postgres::Target;
use crate::clients::webapp_db::{self, Fleet, FleetView};
use crate::cloudinit;
use crate::config::SupervisorOptions;
use crate::duration;
use crate::release;
use crate::sealed::fingerprint;
use crate::settings::Settings;
use crate::state::{now_ms, State};
use crate::tasks::extract::{self, ConfigRecord};
use crate::tasks::{Outcome, Status, TaskCtx};

pub mod plan;

use plan::{Health, Heartbeat};

pub const MANAGED_TAG: &str = "ops-managed";
pub const NAMESPACE: &str = "supervisor";
const BREAKER_KEY: &str = "breaker";
const FIREWALL_KEY: &str = "firewall";
pub const LAST_SEEN_KEY: &str = "last_seen";
pub const QUEUE_KEY: &str = "queue";

/// What the last run saw, for `ops status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenDroplet {
    pub id: u64,
    pub name: String,
    pub ip: Option<String>,
    pub health: String,
    pub fails: u32,
    pub spec_current: bool,
    pub age_secs: i64,
    pub deleted: bool,
    /// Seconds since the webapp's last heartbeat from it (`None`: never, or no webapp view).
    #[serde(default)]
    pub heartbeat_age_secs: Option<f64>,
}

/// The group's queue as the webapp's database showed it, for `ops status` and `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueSeen {
    pub worker_group: String,
    pub master_queue: String,
    /// Age of the oldest PENDING run; `None` when no run waits.
    pub oldest_pending_secs: Option<f64>,
}
/// How long a checked firewall is trusted before it is compared again.
const FIREWALL_RECHECK_MS: i64 = 3_600_000;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-droplet health streak, kept between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Streak {
    pub fails: u32,
    pub last_ok: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Breaker {
    replacements: Vec<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FirewallSeen {
    id: String,
    hash: String,
    checked_at: i64,
}

/// `trigger-supervisor-<first 8 of the Railway environment id>`.
pub fn deployment_tag(s: &Settings) -> String {
    let source = s
        .railway_environment_id
        .as_deref()
        .or(s.railway_project_id.as_deref())
        .unwrap_or("default");
    let short: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "trigger-supervisor-{}",
        if short.is_empty() {
            "default".into()
        } else {
            short
        }
    )
}

/// `ops-spec-<hash>` over region, size, image, version, proxy image and the config record.
pub fn spec_tag(s: &Settings, record: &ConfigRecord) -> String {
    let keys = s.supervisor_ssh_keys.join(",");
    format!(
        "ops-spec-{}",
        fingerprint(&[
            &s.supervisor_region,
            &s.supervisor_size,
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

struct Observed {
    droplet: Droplet,
    health: Health,
    streak: Streak,
    current: bool,
    age: i64,
    note: String,
    heartbeat_age: Option<f64>,
}

/// The webapp's view of our supervisors this run: one Postgres session, one statement.
enum WebappView {
    /// DATABASE_URL is not set.
    NotConfigured,
    Seen(FleetView),
    /// Why there is no view (token unknown, tables missing, database unreachable).
    Unavailable(String),
}

fn webapp_view(ctx: &TaskCtx, record: &ConfigRecord, names: &[String]) -> WebappView {
    let Some(url) = &ctx.settings.database_url else {
        return WebappView::NotConfigured;
    };
    let result = Target::parse(url).and_then(|t| {
        let mut client = t.connect(ctx.connect_timeout())?;
        webapp_db::fleet(&mut client, record.worker_token.expose(), names)
    });
    match result {
        Ok(Fleet::Seen(v)) => WebappView::Seen(v),
        Ok(Fleet::TokenUnknown) => WebappView::Unavailable(format!(
            "the webapp does not know the worker token (from {}): no supervisor can authenticate; fix the token (ops run extract) before anything is replaced",
            record.token_source
        )),
        Ok(Fleet::TablesMissing(why)) => WebappView::Unavailable(format!(
            "the webapp's database has no worker tables ({why}): an older Trigger.dev, or migrations not run yet"
        )),
        Err(e) => WebappView::Unavailable(format!("{e:#}")),
    }
}

pub fn run(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let s = ctx.settings;
    let token = s.digitalocean_token.as_ref().ok_or_else(|| {
        anyhow!("not configured: set DIGITALOCEAN_TOKEN (a read/write API token from cloud.digitalocean.com/account/api/tokens)")
    })?;
    // The record extract read earlier in this profile run (stored, or planned in a dry run),
    // else the stored one.
    let handed = ctx.handoff.record.borrow().clone();
    let record = match (handed, ctx.state) {
        (Some(r), _) => Some(r),
        (None, Some(st)) => extract::load_record(st, ctx.state_dir, s)?,
        (None, None) => None,
    }
    .ok_or_else(|| anyhow!("no config record yet: run the extract task first (put extract before supervisor in the profile, or `ops run extract`)"))?;
    if s.database_url.is_none() && s.supervisor_health_sources.is_empty() {
        return Err(crate::exit::config_error(NO_WAY_TO_SEE));
    }
    let tag = deployment_tag(s);
    let spec = spec_tag(s, &record);
    let version = release::supervisor_version(
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    let http = Http::new();
    let api = DigitalOcean::new(&http, &s.digitalocean_api_url, token, ctx.deadline);
    let now = now_ms();
    let now_utc = chrono::Utc::now();
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let mut planned = false;
    lines.push(release::describe(
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    ));

    let mut breaker: Breaker = load(ctx.state, BREAKER_KEY).unwrap_or_default();
    if ctx.reset_breaker {
        if ctx.dry_run {
            lines.push("would reset the circuit breaker".into());
        } else {
            breaker = Breaker::default();
            ctx.writable_state()?.kv_delete(NAMESPACE, BREAKER_KEY)?;
            lines.push("circuit breaker reset by --reset-breaker".into());
        }
    }
    let window = opts.replacement_window.as_millis() as i64;
    breaker.replacements.retain(|t| now - t < window);
    let breaker_open = breaker.replacements.len() as u32 >= opts.max_replacements;

    let all = api.droplets_by_tag(&tag)?;
    let (ours, foreign): (Vec<Droplet>, Vec<Droplet>) = all
        .into_iter()
        .partition(|d| d.has_tag(&tag) && d.has_tag(MANAGED_TAG));
    // Named one by one when few; a project with many hand-made droplets gets one more line.
    const NAMED: usize = 5;
    for d in foreign.iter().take(NAMED) {
        lines.push(format!(
            "ignored droplet {} (id {}): tagged {tag} but not {MANAGED_TAG}, so not ours to touch",
            d.name, d.id
        ));
    }
    if foreign.len() > NAMED {
        lines.push(format!(
            "ignored {} more droplets tagged {tag} without {MANAGED_TAG}",
            foreign.len() - NAMED
        ));
    }
    let count = s.supervisor_count as usize;
    if ours.len() > count + 1 {
        let list: Vec<String> = ours
            .iter()
            .map(|d| {
                format!(
                    "{} (id {}, {})",
                    d.name,
                    d.id,
                    d.public_ipv4().unwrap_or("no IP")
                )
            })
            .collect();
        bail!(
            "refusing to act: {} droplets carry {tag} and {MANAGED_TAG}, more than SUPERVISOR_COUNT + 1 = {}: {}. Delete the extras by hand (or raise SUPERVISOR_COUNT); ops changes nothing until then",
            ours.len(),
            count + 1,
            list.join(", ")
        );
    }

    // Observe: the webapp's view (one statement for all droplets), then /health when allowed.
    let names: Vec<String> = ours.iter().map(|d| d.name.clone()).collect();
    let view = webapp_view(ctx, &record, &names);
    let mut queue_failure = None;
    match &view {
        WebappView::NotConfigured => lines
            .push("webapp view: DATABASE_URL is not set, health comes from /health only".into()),
        WebappView::Unavailable(why) => {
            if s.supervisor_health_sources.is_empty() {
                failures.push(format!("cannot see the supervisors: {why}"));
            } else {
                lines.push(format!(
                    "webapp view unavailable ({why}): health comes from /health only"
                ));
            }
        }
        WebappView::Seen(v) => {
            lines.push(queue_line(v));
            queue_failure = queue_alert(v, opts);
        }
    }
    let rules = plan::Rules {
        boot_grace: opts.boot_grace,
        stale_after: opts.stale_after,
    };
    let mut observed: Vec<Observed> = Vec::with_capacity(ours.len());
    let mut health_checks = 0;
    for d in ours {
        let prev: Streak = load(ctx.state, &droplet_key(d.id)).unwrap_or_default();
        let heartbeat = match &view {
            WebappView::Seen(v) => match v.heartbeats.get(&d.name) {
                Some(Some(age)) => Heartbeat::Age(*age),
                _ => Heartbeat::Never,
            },
            _ => Heartbeat::NoView,
        };
        let http = match d.public_ipv4() {
            Some(ip) if d.status == "active" && !s.supervisor_health_sources.is_empty() => {
                health_checks += 1;
                Some(check_health(&http, ctx, ip, opts.health_port))
            }
            _ => None,
        };
        let age = d.age_secs(now_utc);
        let heartbeat_age = match heartbeat {
            Heartbeat::Age(a) => Some(a),
            _ => None,
        };
        let verdict = plan::assess(
            &plan::Facts {
                name: &d.name,
                status: &d.status,
                has_ip: d.public_ipv4().is_some(),
                age_secs: age,
                heartbeat,
                http,
                prev: &prev,
                now_ms: now,
            },
            &rules,
        );
        observed.push(Observed {
            current: d.has_tag(&spec),
            droplet: d,
            health: verdict.health,
            streak: verdict.streak,
            age,
            note: verdict.note,
            heartbeat_age,
        });
    }
    observed.sort_by_key(|o| std::cmp::Reverse(o.age));

    // Why a droplet without the current spec tag is stale: a version change names both versions.
    let drift_why = |d: &Droplet| {
        release::upgrade_reason(
            &version.source,
            release::version_of(&d.tags).as_deref(),
            &version.tag,
        )
        .unwrap_or_else(|| "spec changed".into())
    };

    // Decide: at most one delete and one create.
    let dead = |o: &Observed| o.health == Health::Failing && o.streak.fails >= opts.unhealthy_after;
    let mut delete: Option<(usize, String, bool)> = None;
    if let Some(i) = observed.iter().position(dead) {
        if breaker_open {
            failures.push(format!(
                "circuit breaker open: {} replacements within {}; droplet {} is unhealthy but will not be replaced. Investigate (ssh root@{} 'cloud-init status --long; docker compose -f /opt/trigger/docker-compose.yml logs --tail 100'), then run `ops run {} --reset-breaker`",
                breaker.replacements.len(),
                duration::format(opts.replacement_window),
                observed[i].droplet.name,
                observed[i].droplet.public_ipv4().unwrap_or("<ip>"),
                ctx.profile
            ));
        } else {
            let o = &observed[i];
            delete = Some((
                i,
                format!(
                    "unhealthy: {} consecutive failed health checks ({})",
                    o.streak.fails, o.note
                ),
                true,
            ));
        }
    }
    let healthy_without = |skip: usize| {
        observed
            .iter()
            .enumerate()
            .filter(|(j, o)| *j != skip && o.health == Health::Healthy)
            .count()
    };
    if delete.is_none() {
        // Rolling replace: drop the oldest stale droplet once the rest can carry the load.
        if let Some(i) = observed.iter().position(|o| !o.current) {
            if healthy_without(i) >= count
                && observed
                    .iter()
                    .any(|o| o.current && o.health == Health::Healthy)
            {
                delete = Some((
                    i,
                    format!(
                        "spec drift ({}): replaced by a healthy droplet with the current spec",
                        drift_why(&observed[i].droplet)
                    ),
                    false,
                ));
            }
        }
    }
    if delete.is_none() {
        let current: Vec<usize> = observed
            .iter()
            .enumerate()
            .filter(|(_, o)| o.current)
            .map(|(i, _)| i)
            .collect();
        if current.len() > count {
            let i = current[0];
            if healthy_without(i) >= count {
                delete = Some((
                    i,
                    format!("more than SUPERVISOR_COUNT={count} droplets with the current spec"),
                    false,
                ));
            }
        }
    }
    let remaining: Vec<&Observed> = observed
        .iter()
        .enumerate()
        .filter(|(i, _)| delete.as_ref().map(|d| d.0) != Some(*i))
        .map(|(_, o)| o)
        .collect();
    let live_current = remaining
        .iter()
        .filter(|o| o.current && (breaker_open || !dead(o)))
        .count();
    // What replaces a stale droplet, and why (a version change names both versions).
    let stale = remaining
        .iter()
        .find(|o| !o.current)
        .map(|o| (o.droplet.name.clone(), drift_why(&o.droplet)));
    let create_reason = if live_current < count && remaining.len() < count + 1 {
        Some(match (&delete, &stale) {
            (Some((i, _, true)), _) => format!("replacing unhealthy {}", observed[*i].droplet.name),
            (_, Some((old, why))) => format!(
                "spec drift ({why}): rolling replace of {old}, which stays until this one is healthy"
            ),
            _ => format!("{live_current} of {count} supervisor droplet(s) running"),
        })
    } else {
        None
    };

    for o in &observed {
        lines.push(format!(
            "droplet {} (id {}, {}, {} old, spec {}): {}{}",
            o.droplet.name,
            o.droplet.id,
            o.droplet.public_ipv4().unwrap_or("no IP"),
            duration::format(Duration::from_secs(o.age.max(1) as u64)),
            if o.current { "current" } else { "stale" },
            match o.health {
                Health::Failing => format!("failing {}/{}: ", o.streak.fails, opts.unhealthy_after),
                _ => String::new(),
            },
            o.note
        ));
    }
    if observed.is_empty() {
        lines.push(format!("no droplet tagged {tag} and {MANAGED_TAG}"));
    }

    // Act (or plan).
    let mut created: Option<Droplet> = None;
    if let Some((i, reason, replacement)) = &delete {
        let d = &observed[*i].droplet;
        if ctx.dry_run {
            lines.push(format!(
                "would delete droplet {} (id {}): {reason}",
                d.name, d.id
            ));
            planned = true;
        } else {
            // Re-read before deleting: act only on a droplet that still carries both our tags.
            let fresh = api.droplet(d.id)?;
            match fresh {
                Some(f) if f.has_tag(&tag) && f.has_tag(MANAGED_TAG) => {
                    api.delete_droplet(d.id)?;
                    log::warn!("deleted droplet {} (id {}): {reason}", d.name, d.id);
                    lines.push(format!(
                        "deleted droplet {} (id {}): {reason}",
                        d.name, d.id
                    ));
                    if *replacement {
                        breaker.replacements.push(now);
                        save(ctx, BREAKER_KEY, &breaker, now)?;
                    }
                }
                Some(_) => lines.push(format!(
                    "not deleting droplet {}: it lost our tags since it was listed",
                    d.name
                )),
                None => lines.push(format!("droplet {} is already gone", d.name)),
            }
        }
    }
    if let Some(reason) = &create_reason {
        let name = new_name(&tag, now_utc, &observed);
        if ctx.dry_run {
            if let (Some((old, why)), false) = (&stale, matches!(delete, Some((_, _, true)))) {
                lines.push(format!(
                    "would replace droplet {old} ({why}): {name} comes up first, {old} goes once it is healthy"
                ));
            }
            lines.push(format!("would create droplet {name} ({}, {}, {}, supervisor {}, tags {tag} {MANAGED_TAG} {spec}): {reason}", s.supervisor_size, s.supervisor_region, s.supervisor_image, version.tag));
            planned = true;
        } else {
            let user_data = cloudinit::render(&record, s, &name)?;
            let new = NewDroplet {
                name: name.clone(),
                region: s.supervisor_region.clone(),
                size: s.supervisor_size.clone(),
                image: s.supervisor_image.clone(),
                ssh_keys: s.supervisor_ssh_keys.clone(),
                tags: vec![
                    tag.clone(),
                    MANAGED_TAG.into(),
                    spec.clone(),
                    release::version_tag(&version.tag),
                ],
                user_data,
                monitoring: true,
            };
            let d = api.create_droplet(&new)?;
            log::warn!("created droplet {} (id {}): {reason}", d.name, d.id);
            lines.push(format!(
                "created droplet {} (id {}, {}, {}): {reason}",
                d.name, d.id, s.supervisor_size, s.supervisor_region
            ));
            created = Some(d);
        }
    }

    // Streaks: saved for the droplets that exist, dropped for those that are gone.
    if !ctx.dry_run {
        let st = ctx.writable_state()?;
        let keep: Vec<String> = observed.iter().map(|o| droplet_key(o.droplet.id)).collect();
        for (key, _, _) in st.kv_list(NAMESPACE)? {
            if key.starts_with("droplet:") && !keep.contains(&key) {
                st.kv_delete(NAMESPACE, &key)?;
            }
        }
        let deleted_index = delete.as_ref().map(|d| d.0);
        let seen: Vec<SeenDroplet> = observed
            .iter()
            .enumerate()
            .map(|(i, o)| SeenDroplet {
                id: o.droplet.id,
                name: o.droplet.name.clone(),
                ip: o.droplet.public_ipv4().map(str::to_string),
                health: format!("{:?}", o.health).to_ascii_lowercase(),
                fails: o.streak.fails,
                spec_current: o.current,
                age_secs: o.age,
                deleted: deleted_index == Some(i),
                heartbeat_age_secs: o.heartbeat_age,
            })
            .collect();
        st.kv_set(NAMESPACE, LAST_SEEN_KEY, &seen, now)?;
        match &view {
            WebappView::Seen(v) => st.kv_set(
                NAMESPACE,
                QUEUE_KEY,
                &QueueSeen {
                    worker_group: v.group.name.clone(),
                    master_queue: v.group.master_queue.clone(),
                    oldest_pending_secs: v.oldest_pending_secs,
                },
                now,
            )?,
            _ => st.kv_delete(NAMESPACE, QUEUE_KEY)?,
        }
        for (i, o) in observed.iter().enumerate() {
            if deleted_index == Some(i) {
                st.kv_delete(NAMESPACE, &droplet_key(o.droplet.id))?;
            } else {
                st.kv_set(NAMESPACE, &droplet_key(o.droplet.id), &o.streak, now)?;
            }
        }
    }

    if opts.firewall && (!observed.is_empty() || created.is_some() || planned) {
        if let Err(e) = ensure_firewall(&api, ctx, s, &tag, now, &mut lines, &mut planned) {
            failures.push(format!("firewall: {e:#}"));
        }
    }

    lines.push(format!(
        "DigitalOcean requests: {}, Postgres sessions: {}, health checks: {health_checks}",
        api.requests.get(),
        u8::from(!matches!(view, WebappView::NotConfigured))
    ));
    failures.extend(queue_failure);
    let failing_unreplaced: Vec<&Observed> = observed
        .iter()
        .enumerate()
        .filter(|(i, o)| o.health == Health::Failing && delete.as_ref().map(|d| d.0) != Some(*i))
        .map(|(_, o)| o)
        .collect();
    for o in failing_unreplaced {
        if o.streak.fails < opts.unhealthy_after {
            failures.push(format!(
                "droplet {} unhealthy ({}/{} before it is replaced): {}",
                o.droplet.name, o.streak.fails, opts.unhealthy_after, o.note
            ));
        }
    }
    if !failures.is_empty() {
        failures.append(&mut lines);
        return Ok(Outcome::lines(Status::Failed, failures));
    }
    Ok(Outcome::lines(
        if planned { Status::Planned } else { Status::Ok },
        lines,
    ))
}

const NO_WAY_TO_SEE: &str = "no way to see the supervisor: set DATABASE_URL (the webapp's Postgres: ops reads the supervisors' heartbeats there) or SUPERVISOR_HEALTH_SOURCES (the addresses of this ops host, so it may GET :8020/health)";

/// Whether this configuration lets ops see the supervisors (for `ops check`).
pub fn visibility_problem(s: &Settings) -> Option<&'static str> {
    (s.database_url.is_none() && s.supervisor_health_sources.is_empty()).then_some(NO_WAY_TO_SEE)
}

fn queue_line(v: &FleetView) -> String {
    format!(
        "worker group {:?} (queue {}): {}",
        v.group.name,
        v.group.master_queue,
        match v.oldest_pending_secs {
            Some(secs) => format!(
                "oldest PENDING run waits for {}",
                duration::format(Duration::from_secs(secs.max(0.0) as u64))
            ),
            None => "no PENDING run".into(),
        }
    )
}

/// A failure when the oldest PENDING run waits longer than `queue_alert_after`.
fn queue_alert(v: &FleetView, opts: &SupervisorOptions) -> Option<String> {
    let limit = opts.queue_alert_after?;
    let secs = v.oldest_pending_secs?;
    (secs >= limit.as_secs_f64()).then(|| {
        format!(
            "runs are waiting: the oldest PENDING run in queue {} has waited {} (alert after {}); a concurrency limit can hold runs too, but check that the supervisors dequeue (docker compose logs supervisor)",
            v.group.master_queue,
            duration::format(Duration::from_secs(secs as u64)),
            duration::format(limit)
        )
    })
}

/// `<tag>-<yymmddHHMMSS>`, made unique among the droplets seen this run: the name is the
/// supervisor's TRIGGER_WORKER_INSTANCE_NAME, so two droplets must never share one (a replacement
/// created in the same second as its predecessor would inherit its heartbeat row).
fn new_name(tag: &str, now: chrono::DateTime<chrono::Utc>, observed: &[Observed]) -> String {
    let base = format!("{tag}-{}", now.format("%y%m%d%H%M%S"));
    let taken = |n: &str| observed.iter().any(|o| o.droplet.name == n);
    let mut name = base.clone();
    let mut i = 2;
    while taken(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    name
}

fn droplet_key(id: u64) -> String {
    format!("droplet:{id}")
}

fn load<T: serde::de::DeserializeOwned>(state: Option<&State>, key: &str) -> Option<T> {
    state
        .and_then(|s| s.kv_get(NAMESPACE, key).ok().flatten())
        .map(|(v, _)| v)
}

fn save<T: Serialize>(ctx: &TaskCtx, key: &str, value: &T, now: i64) -> anyhow::Result<()> {
    ctx.writable_state()?.kv_set(NAMESPACE, key, value, now)
}

fn check_health(http: &Http, ctx: &TaskCtx, ip: &str, port: u16) -> Result<(), String> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let url = format!("http://{host}:{port}/health");
    let req = Request::new("supervisor health", "GET", &url)
        .retry(Retry::Never)
        .timeout(HEALTH_TIMEOUT);
    match http.send(&req, ctx.deadline) {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("GET {url} answered HTTP {}", r.status)),
        Err(e) => Err(format!("GET {url}: {e:#}")),
    }
}

fn firewall_spec(s: &Settings, tag: &str) -> Firewall {
    // Nothing inbound unless asked: the workload port only for the health checker's addresses,
    // ssh only from SUPERVISOR_SSH_SOURCES.
    let mut inbound = Vec::new();
    if !s.supervisor_health_sources.is_empty() {
        inbound.push(json!({"protocol": "tcp", "ports": cloudinit::HEALTH_PORT.to_string(), "sources": {"addresses": s.supervisor_health_sources}}));
    }
    if !s.supervisor_ssh_sources.is_empty() {
        inbound.push(json!({"protocol": "tcp", "ports": "22", "sources": {"addresses": s.supervisor_ssh_sources}}));
    }
    let everywhere = json!({"addresses": ["0.0.0.0/0", "::/0"]});
    Firewall {
        id: String::new(),
        name: format!("{tag}-fw"),
        inbound_rules: inbound,
        outbound_rules: vec![
            json!({"protocol": "tcp", "ports": "0", "destinations": everywhere}),
            json!({"protocol": "udp", "ports": "0", "destinations": everywhere}),
            json!({"protocol": "icmp", "destinations": everywhere}),
        ],
        tags: vec![tag.to_string()],
    }
}

/// Normalised rules, for comparing what DigitalOcean returns (extra fields, "all" ports) with
/// what we want.
fn rules_key(fw: &Firewall) -> String {
    let norm = |rules: &[serde_json::Value], side: &str| -> Vec<String> {
        let mut v: Vec<String> = rules
            .iter()
            .map(|r| {
                let ports = r["ports"].as_str().unwrap_or("0");
                let ports = if ports == "all" { "0" } else { ports };
                let mut addrs: Vec<String> = r[side]["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                addrs.sort();
                format!(
                    "{}:{}:{}",
                    r["protocol"].as_str().unwrap_or(""),
                    if r["protocol"] == "icmp" { "" } else { ports },
                    addrs.join(",")
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut tags = fw.tags.clone();
    tags.sort();
    format!(
        "{:?}|{:?}|{:?}",
        norm(&fw.inbound_rules, "sources"),
        norm(&fw.outbound_rules, "destinations"),
        tags
    )
}

fn ensure_firewall(
    api: &DigitalOcean,
    ctx: &TaskCtx,
    s: &Settings,
    tag: &str,
    now: i64,
    lines: &mut Vec<String>,
    planned: &mut bool,
) -> anyhow::Result<()> {
    let want = firewall_spec(s, tag);
    let hash = fingerprint(&[&rules_key(&want)]);
    if let Some(seen) = load::<FirewallSeen>(ctx.state, FIREWALL_KEY) {
        if seen.hash == hash && now - seen.checked_at < FIREWALL_RECHECK_MS {
            return Ok(());
        }
    }
    let id = match api.firewall_by_name(&want.name)? {
        Some(have) if rules_key(&have) == rules_key(&want) => {
            lines.push(format!("firewall {}: up to date", want.name));
            have.id
        }
        Some(have) => {
            if ctx.dry_run {
                lines.push(format!(
                    "would update firewall {} to the wanted rules",
                    want.name
                ));
                *planned = true;
                return Ok(());
            }
            api.update_firewall(&have.id, &want)?;
            lines.push(format!(
                "updated firewall {} (8020 from {}, ssh from {})",
                want.name,
                sources(&s.supervisor_health_sources),
                sources(&s.supervisor_ssh_sources)
            ));
            have.id
        }
        None => {
            if ctx.dry_run {
                lines.push(format!(
                    "would create firewall {} (8020 from {}, ssh from {})",
                    want.name,
                    sources(&s.supervisor_health_sources),
                    sources(&s.supervisor_ssh_sources)
                ));
                *planned = true;
                return Ok(());
            }
            api.create_tag(tag)?;
            api.create_firewall(&want)?;
            lines.push(format!(
                "created firewall {} (8020 from {}, ssh from {})",
                want.name,
                sources(&s.supervisor_health_sources),
                sources(&s.supervisor_ssh_sources)
            ));
            String::new()
        }
    };
    if !ctx.dry_run {
        save(
            ctx,
            FIREWALL_KEY,
            &FirewallSeen {
                id,
                hash,
                checked_at: now,
            },
            now,
        )?;
    }
    Ok(())
}

fn sources(list: &[String]) -> String {
    if list.is_empty() {
        "nowhere".into()
    } else {
        list.join(" ")
    }
}
