//! All reads from DigitalOcean, turned into ops' own facts: the listing sorted by ownership,
//! each droplet's status and tags read once here into an [`Instance`] (up, draining, current,
//! capable, version), the webapp's view (webapp.rs), `/health` when allowed, the webapp's own
//! health when something is silent, and what the account offers ([`Cloud`]: sizes, room).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::clients::digitalocean::{DigitalOcean, Droplet, Size};
use crate::clients::http::{Http, Request, Retry};
use crate::cloudinit;
use crate::config::SupervisorOptions;
use crate::record::ConfigRecord;
use crate::release;
use crate::state::now_ms;
use crate::task::TaskCtx;
use crate::tasks::extract;

use super::decide::Cloud;
use super::facts::{Instance, Machine, Power};
use super::plan::{self, Heartbeat, Observation, Spec, View, MANAGED_TAG};
use super::store::{
    self, built_key, disk_key, droplet_key, load, Breaker, BREAKER_KEY, CATALOG_KEY, SIZES_KEY,
};
use super::webapp::{self, FlowRead};
use super::{catalog, diff, disk, drain, owned};

/// DigitalOcean's sizes change rarely: asked again at most daily, and only when a run needs a
/// preset larger than small-1x (or SUPERVISOR_SIZE=auto).
const SIZES_RECHECK_MS: i64 = 24 * 3_600_000;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What observe found this run: the plan's observation, the webapp's flow read, the health
/// GETs made, and when a heartbeat is stale (from how often the droplets beat).
pub struct World {
    pub obs: Observation,
    pub flow: Option<FlowRead>,
    pub health_checks: u32,
    pub stale_after: Duration,
}

/// All reads: DigitalOcean's listing, the webapp's view (one statement), `/health` when
/// allowed, and the streaks and breaker kept in the state.
pub fn observe(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    http: &Http,
    opts: &SupervisorOptions,
    spec: &Spec,
    record: &ConfigRecord,
) -> anyhow::Result<World> {
    let now_utc = chrono::Utc::now();
    let all = api.droplets_by_tag(&spec.tag)?;
    let (ours, foreign): (Vec<Droplet>, Vec<Droplet>) = all
        .into_iter()
        .partition(|d| d.has_tag(&spec.tag) && d.has_tag(MANAGED_TAG));
    // Our tags are not enough: only the droplets ops recorded creating are its own.
    let owned::Sorted {
        ours, seen: owned, ..
    } = owned::settle(ctx, ours, &spec.tag)?;
    // Judged sooner only when every droplet is known to beat every 10 s: while older ones
    // drain during a rollout, their 30 s heartbeats would look nearly stale against 30s.
    let stale = opts.stale_after(ours.iter().all(|d| d.has_tag(cloudinit::BEAT_TAG)));
    let mut spec = spec.clone();
    spec.rules.stale_after = stale;
    let mut droplets: Vec<Instance> = ours.iter().map(|d| instance(ctx, d, now_utc)).collect();
    // Past max + 1 serving droplets ops refuses to act, and asks nothing more about them.
    let too_many = plan::too_many(&droplets, &spec);
    let (view, heartbeats, flow) = if too_many {
        (View::Skipped, Default::default(), None)
    } else {
        let names: Vec<String> = droplets.iter().map(|d| d.name.clone()).collect();
        let draining: Vec<String> = droplets
            .iter()
            .filter(|d| d.draining())
            .map(|d| d.name.clone())
            .collect();
        webapp::view(ctx, opts, record, &names, (stale, &draining))
    };
    let mut health_checks = 0;
    for d in droplets.iter_mut() {
        d.http = match d.ip.as_deref() {
            Some(ip) if d.power.up() && spec.health_sources && !too_many => {
                health_checks += 1;
                Some(check_health(http, ctx, ip, opts.health_port))
            }
            _ => None,
        };
        d.heartbeat = match (&view, heartbeats.get(&d.name)) {
            (View::Seen { .. }, Some(beat)) => beat.clone(),
            (View::Seen { .. }, None) => Heartbeat::Never,
            _ => Heartbeat::NoView,
        };
        d.runs = webapp::runs_on(flow.as_ref(), &d.name);
    }
    let breaker: Breaker = load(ctx.state, BREAKER_KEY).unwrap_or_default();
    let mut obs = Observation {
        now_ms: now_ms(),
        // The second, and a part nobody can guess: a name is never known before ops sends it.
        stamp: format!(
            "{}-{}",
            now_utc.format("%y%m%d%H%M%S"),
            crate::sealed::nonce()?
        ),
        droplets: with_shutdowns(api, droplets),
        foreign: foreign.into_iter().map(|d| (d.name, d.id)).collect(),
        owned,
        view,
        replacements: breaker.replacements,
        webapp_check: None,
        other_groups: flow.as_ref().map(webapp::other_groups).unwrap_or_default(),
    };
    // Only when something is silent: is it the webapp?
    if plan::needs_webapp_check(&obs, &spec) {
        obs.webapp_check = Some(check_webapp(ctx, &record.api_origin));
    }
    Ok(World {
        obs,
        flow,
        health_checks,
        stale_after: stale,
    })
}

/// Each draining droplet's shutdown, as DigitalOcean says (see [`shutdown_of`]).
pub(crate) fn with_shutdowns(api: &DigitalOcean, mut droplets: Vec<Instance>) -> Vec<Instance> {
    for d in droplets.iter_mut() {
        d.shutdown = shutdown_of(api, d);
    }
    droplets
}

/// What DigitalOcean says of the shutdown ops sent a draining droplet that is still up and can
/// be told: asked only when ops' own record of the drain exists (a droplet tagged draining by
/// someone else is never sent one).
fn shutdown_of(api: &DigitalOcean, i: &Instance) -> drain::Shutdown {
    let Some(record) = &i.prev.drain else {
        return drain::Shutdown::Unknown;
    };
    if !i.power.up() || !i.capable {
        return drain::Shutdown::Unknown;
    }
    let Some(action) = record.shutdown else {
        return drain::Shutdown::NotSent;
    };
    match api.action(action) {
        Ok(Some(a)) if a.status == "completed" => drain::Shutdown::Completed,
        Ok(Some(a)) if a.status == "in-progress" => drain::Shutdown::InProgress,
        Ok(Some(a)) => drain::Shutdown::Failed(format!(
            "(action {action}) is {}",
            crate::redact::redact(&a.status)
        )),
        Ok(None) => {
            drain::Shutdown::Failed(format!("(action {action}) is unknown to DigitalOcean"))
        }
        Err(e) => {
            log::warn!(
                "droplet {}: its shutdown action {action} could not be read: {e:#}",
                i.name
            );
            drain::Shutdown::Unknown
        }
    }
}

/// One droplet in ops' words, with its streak and what it was built with from the state.
pub(crate) fn instance(ctx: &TaskCtx, d: &Droplet, now: chrono::DateTime<chrono::Utc>) -> Instance {
    let mut i = listed(d, now);
    i.prev = load(ctx.state, &droplet_key(d.id)).unwrap_or_default();
    i.built = load::<diff::Parts>(ctx.state, &built_key(d.id))
        .unwrap_or_default()
        .or(i.built);
    i
}

/// One droplet as DigitalOcean lists it, in ops' words: its status and tags are read here,
/// once. The state's streak, the webapp's heartbeat, the runs on it and `/health` come later.
pub fn listed(d: &Droplet, now: chrono::DateTime<chrono::Utc>) -> Instance {
    Instance {
        id: d.id,
        name: d.name.clone(),
        power: match d.status.as_str() {
            "active" => Power::Up,
            "off" => Power::Off,
            other => Power::Other(other.to_string()),
        },
        ip: d.public_ipv4().map(str::to_string),
        age_secs: d.age_secs(now),
        drain_marked: d.has_tag(drain::DRAINING_TAG),
        specs: d
            .tags
            .iter()
            .filter(|t| t.starts_with("ops-spec-"))
            .cloned()
            .collect(),
        version: release::version_of(&d.tags),
        capable: d.has_tag(drain::CAPABLE_TAG),
        prev: Default::default(),
        built: diff::Parts::listed(&d.size_slug, d.region.as_ref().map(|r| r.slug.as_str())),
        heartbeat: Heartbeat::NoView,
        http: None,
        runs: None,
        shutdown: Default::default(),
    }
}

/// A DigitalOcean size in ops' words.
pub fn machine(z: &Size) -> Machine {
    Machine {
        slug: z.slug.clone(),
        vcpus: z.vcpus,
        memory: z.memory,
        disk: z.disk,
        price_monthly: z.price_monthly,
        regions: z.regions.clone(),
        available: z.available,
    }
}

/// What decide may ask DigitalOcean: its sizes (kept a day in the state; those fetched this
/// run are handed back to keep) and the account's room.
pub struct Account<'a> {
    ctx: &'a TaskCtx<'a>,
    api: &'a DigitalOcean<'a>,
    fetched: RefCell<Option<Vec<Size>>>,
}

impl<'a> Account<'a> {
    pub fn new(ctx: &'a TaskCtx<'a>, api: &'a DigitalOcean<'a>) -> Account<'a> {
        Account {
            ctx,
            api,
            fetched: RefCell::new(None),
        }
    }

    /// The sizes asked of DigitalOcean this run (to keep).
    pub fn fetched(self) -> Option<Vec<Size>> {
        self.fetched.into_inner()
    }
}

impl Cloud for Account<'_> {
    fn machines(&self) -> Result<Vec<Machine>, String> {
        let sizes = known_sizes(self.ctx, self.api, &mut self.fetched.borrow_mut())?;
        Ok(sizes.iter().map(machine).collect())
    }

    fn known_machines(&self) -> Option<Vec<Machine>> {
        let sizes = self
            .fetched
            .borrow()
            .clone()
            .or_else(|| load::<Vec<Size>>(self.ctx.state, SIZES_KEY))?;
        Some(sizes.iter().map(machine).collect())
    }

    fn room(&self) -> Result<usize, String> {
        self.api.droplet_room().map_err(|e| format!("{e:#}"))
    }
}

/// DigitalOcean's sizes: kept a day in the state, else asked (and handed back in `fetched`
/// to keep).
fn known_sizes(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    fetched: &mut Option<Vec<Size>>,
) -> Result<Vec<Size>, String> {
    if let Some(v) = fetched {
        return Ok(v.clone());
    }
    let cached = store::load_at::<Vec<Size>>(ctx.state, SIZES_KEY)
        .filter(|(_, at)| now_ms() - at < SIZES_RECHECK_MS)
        .map(|(v, _)| v);
    match cached {
        Some(v) => Ok(v),
        None => {
            let v = api.sizes().map_err(|e| format!("{e:#}"))?;
            *fetched = Some(v.clone());
            Ok(v)
        }
    }
}

/// Each droplet's free disk: the reading kept in the state, read again only when due
/// ([`disk::Reading::due`]: active, older than a few minutes, the last reading 20 minutes old).
/// A low disk fails the task naming the droplet (not one on its way out).
pub fn disks(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    plan: &mut plan::Plan,
) -> BTreeMap<u64, disk::Reading> {
    let mut out = BTreeMap::new();
    if plan.refused.is_some() {
        return out;
    }
    let now = now_ms();
    let leaving: Vec<u64> = plan.deletes().collect();
    for a in plan.assessed.iter().filter(|a| !leaving.contains(&a.id)) {
        let prev = load::<disk::Reading>(ctx.state, &disk_key(a.id));
        let reading = match prev {
            p if disk::Reading::due(p.as_ref(), a.power.up(), a.age_secs, now) => {
                let r = read_disk(api, a.id, now);
                plan.lines
                    .push(format!("disk of droplet {}: {}", a.name, r.describe()));
                r
            }
            Some(p) => p,
            None => continue,
        };
        if a.streak.drain.is_none() {
            plan.failures.extend(reading.failure(&a.name, a.id));
        }
        out.insert(a.id, reading);
    }
    out
}

/// The root filesystem's latest `filesystem_free` and `filesystem_size` (the size only when
/// there is a free sample: no agent, no second request).
fn read_disk(api: &DigitalOcean, id: u64, now: i64) -> disk::Reading {
    let end = now / 1000;
    let read = |metric| api.droplet_metric(metric, id, end - disk::WINDOW_SECS, end);
    let both = read("filesystem_free").and_then(|free| match free {
        Some(_) => Ok((free, read("filesystem_size")?)),
        None => Ok((None, None)),
    });
    let (free_bytes, size_bytes, error) = match both {
        Ok((free, size)) => (free, size, None),
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    disk::Reading {
        free_bytes,
        size_bytes,
        read_at_ms: now,
        error,
    }
}

/// `GET <origin>/healthcheck`: 200 `OK`, or why not (500 `ERROR` when the webapp's database
/// check fails). The origin passes extract's checks again (whoever edits the webapp's Railway
/// variables chooses it), the connection goes only where they allow, and an unexpected
/// answer's body is never repeated: it would reach the alerts.
fn check_webapp(ctx: &TaskCtx, origin: &str) -> Result<(), String> {
    extract::origin::parse(origin, "the config record")?;
    let url = format!("{origin}/healthcheck");
    let req = Request::new("webapp", "GET", &url)
        .retry(Retry::Never)
        .timeout(HEALTH_TIMEOUT);
    match extract::webapp_client(false).send(&req, ctx.deadline) {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!(
            "GET {url} answered HTTP {} (the body is not shown)",
            r.status
        )),
        Err(e) => Err(format!("GET {url}: {e:#}")),
    }
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

/// What the run asked of the outside: DigitalOcean requests, Postgres sessions, health and
/// webapp checks.
pub fn counts(w: &World, api: &DigitalOcean) -> String {
    let sessions = u8::from(!matches!(w.obs.view, View::NotConfigured | View::Skipped));
    format!(
        "DigitalOcean requests: {}, Postgres sessions: {sessions}, health checks: {}{}",
        api.requests.get(),
        w.health_checks,
        if w.obs.webapp_check.is_some() {
            ", webapp checks: 1"
        } else {
            ""
        }
    )
}

/// SUPERVISOR_SIZE (as resolved), SUPERVISOR_REGION and SUPERVISOR_IMAGE against DigitalOcean's
/// lists before anything is planned ([`catalog`]): a wrong one is a configuration error (exit
/// 2). A passed combination is kept a day; lists that cannot be read leave it to the next run.
pub fn check_catalog(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    account: &Account,
    size: &str,
) -> anyhow::Result<()> {
    let s = ctx.settings;
    let now = now_ms();
    let want = catalog::Checked {
        size: size.to_string(),
        region: s.supervisor_region.clone(),
        image: s.supervisor_image.clone(),
        at_ms: now,
    };
    if load::<catalog::Checked>(ctx.state, CATALOG_KEY).is_some_and(|c| c.covers(&want, now)) {
        return Ok(());
    }
    let read = known_sizes(ctx, api, &mut account.fetched.borrow_mut())
        .map_err(|e| anyhow::anyhow!(e))
        .and_then(|sizes| Ok((sizes, api.regions()?, api.image(&want.image)?)));
    let (sizes, regions, image) = match read {
        Ok(r) => r,
        Err(e) => {
            log::warn!("SUPERVISOR_SIZE, SUPERVISOR_REGION and SUPERVISOR_IMAGE not checked this run: {e:#}");
            return Ok(());
        }
    };
    // Only an unknown image costs the list of distribution images (to name the nearest).
    let distributions = match image {
        Some(_) => Vec::new(),
        None => api.distribution_images().unwrap_or_default(),
    };
    let slugs: Vec<&str> = distributions
        .iter()
        .filter_map(|i| i.slug.as_deref())
        .collect();
    let lists = catalog::Lists {
        sizes: &sizes,
        regions: &regions,
        image: image.as_ref(),
        distributions: &slugs,
    };
    let problems = catalog::problems(&want, &lists);
    if !problems.is_empty() {
        return Err(crate::exit::config_error(problems.join("; ")));
    }
    if !ctx.dry_run {
        store::save(ctx, CATALOG_KEY, &want, now)?;
    }
    Ok(())
}

/// How long the oldest run waiting in our group's queues has waited (`None`: none, or no read).
pub fn oldest_wait(f: &FlowRead) -> Option<f64> {
    let ours = &f.ours.master_queue;
    f.queues
        .as_ref()
        .ok()?
        .depths
        .iter()
        .filter(|d| {
            d.pending > 0
                && (&d.queue == ours || d.queue.strip_suffix(":scheduled") == Some(ours.as_str()))
        })
        .map(|d| d.oldest_wait_secs)
        .reduce(f64::max)
}
