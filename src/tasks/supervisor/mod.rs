//! supervisor: keep `SUPERVISOR_COUNT` healthy supervisor droplets on DigitalOcean, reconciled
//! level-triggered from DigitalOcean's own tags every run, so a lost state database can never
//! cause duplicates. At most one create and one delete per run; never a droplet without both of
//! our tags, nor one ops has no record of creating (`owned`); a circuit breaker on replacements.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::digitalocean::{DigitalOcean, Droplet, Firewall, ImageRef, NewDroplet, Size};
use crate::clients::http::{refused_outright, Http, Request, Retry};
use crate::clients::postgres::Target;
use crate::clients::webapp_db::{
    self, Fleet, QueueRead, QueueScan, Routing, RunScan, WorkerGroup, WorkerRuns,
};
use crate::cloudinit;
use crate::config::SupervisorOptions;
use crate::record::ConfigRecord;
use crate::release;
use crate::sealed::fingerprint;
use crate::settings::Settings;
use crate::state::now_ms;
use crate::task::{ActionRecord, Outcome, Status, TaskCtx, Typed};
use crate::tasks::extract;

pub mod capacity;
pub mod diff;
pub mod disk;
pub mod drain;
pub mod flow;
pub mod image;
pub mod owned;
pub mod plan;
pub mod presets;
pub mod sim;
pub mod store;

use plan::{Action, Heartbeat, View};

pub use plan::{Streak, MANAGED_TAG};
use store::{
    built_key, disk_key, droplet_key, load, save, Breaker, DropletStatus, FirewallChecked,
    ScaleStatus, AUTO_SIZE_KEY, BREAKER_KEY, FIREWALL_KEY, LAST_SEEN_KEY, QUEUE_KEY,
    REPLACEMENTS_COUNTER, SCALE_KEY, SCAN_KEY, SIZES_KEY,
};

/// Where the next read of the waiting runs starts (database clock, Unix seconds), and the runs
/// seen waiting, re-read by primary key however old they get.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScanState {
    /// The last read: the next one reads runs created since then (less an overlap).
    mark: Option<f64>,
    /// The last read of the whole window.
    full_mark: Option<f64>,
    waiting: Vec<String>,
    /// Our group's runs seen on a worker or waiting, re-read by primary key.
    #[serde(default)]
    on_worker: Vec<String>,
}

/// A read of the whole `queue_window` this often catches what the incremental reads cannot
/// (a run requeued to PENDING long after its `createdAt`, untracked).
const FULL_SCAN_EVERY_SECS: f64 = 3600.0;
/// Incremental reads start this long before the last one: late commits, and runs made visible a
/// little after their `createdAt` are seen; the cost is a quarter hour of recent rows, which the
/// BRIN index finds in a few block ranges.
const SCAN_OVERLAP_SECS: f64 = 900.0;
/// At most this many waiting runs are remembered (and re-read by primary key).
const TRACK_WAITING: usize = 1000;

impl ScanState {
    /// Since when this read looks, and whether it is a full-window read.
    fn since(&self) -> (f64, bool) {
        match (self.mark, self.full_mark) {
            (Some(m), Some(f)) if m - f < FULL_SCAN_EVERY_SECS => (m - SCAN_OVERLAP_SECS, false),
            _ => (0.0, true),
        }
    }

    fn after(&self, read: &QueueRead, full: bool) -> ScanState {
        ScanState {
            mark: Some(read.db_now),
            full_mark: if full {
                Some(read.db_now)
            } else {
                self.full_mark
            },
            waiting: read.waiting_ids.clone(),
            on_worker: self.on_worker.clone(),
        }
    }
}

/// Where runs go and what waits, read in the same session as the heartbeats.
struct FlowRead {
    ours: WorkerGroup,
    routing: Result<Routing, String>,
    queues: Result<QueueRead, String>,
    scan: Option<ScanState>,
    full: bool,
    /// Our group's runs on workers and what its waiting runs need.
    runs: Result<WorkerRuns, String>,
}

/// Runs that ended in `SYSTEM_FAILURE` or `CRASHED` this recently count as needing their
/// preset (a run too big for the droplets bounces and then fails that way).
const FAILED_WITHIN: Duration = Duration::from_secs(3600);
/// DigitalOcean's sizes change rarely: asked again at most daily, and only when a run needs a
/// preset larger than small-1x (or SUPERVISOR_SIZE=auto).
const SIZES_RECHECK_MS: i64 = 24 * 3_600_000;
/// The size SUPERVISOR_SIZE=auto settled on (it only grows: a shrink would replace the fleet
/// whenever the large runs pause).
/// Where SUPERVISOR_SIZE=auto starts.
pub const AUTO_DEFAULT_SIZE: &str = "s-2vcpu-2gb";

/// How long a checked firewall is trusted before it is compared again.
const FIREWALL_RECHECK_MS: i64 = 3_600_000;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The webapp's view of our supervisors this run (one Postgres session: heartbeats, then where
/// runs go, then the waiting runs in their own read-only transaction), and each droplet's
/// heartbeat.
fn webapp_view(
    ctx: &TaskCtx,
    opts: &SupervisorOptions,
    record: &ConfigRecord,
    names: &[String],
    (stale, draining): (Duration, &[String]),
) -> (View, BTreeMap<String, Heartbeat>, Option<FlowRead>) {
    let Some(url) = &ctx.settings.database_url else {
        return (View::NotConfigured, BTreeMap::new(), None);
    };
    let mut client = None;
    let result = Target::parse(url).and_then(|t| {
        let c = client.insert(t.connect(ctx.connect_timeout())?);
        let seen = webapp_db::fleet(c, record.worker_token.expose(), names)?;
        confirm(ctx, c, record, names, (stale, draining), seen)
    });
    let unavailable = |why: String| (View::Unavailable(why), BTreeMap::new(), None);
    match result {
        Ok(Fleet::Seen(v)) => {
            let beats = heartbeats(client.as_mut(), names, &v);
            let flow = client.map(|mut c| {
                read_flow(ctx, opts, &mut c, v.group.clone(), &v.heartbeats, stale)
            });
            (
                View::Seen {
                    group: v.group.name,
                    queue: v.group.master_queue,
                },
                beats,
                flow,
            )
        }
        Ok(Fleet::TokenUnknown) => unavailable(format!(
            "the webapp does not know the worker token (from {}): no supervisor can authenticate; fix the token (ops run extract) before anything is replaced",
            record.token_source
        )),
        Ok(Fleet::TablesMissing(why)) => unavailable(format!(
            "the webapp's database has no worker tables ({why}): an older Trigger.dev, or migrations not run yet"
        )),
        Err(e) => unavailable(format!("{e:#}")),
    }
}

fn confirm(
    ctx: &TaskCtx,
    c: &mut postgres::Client,
    record: &ConfigRecord,
    names: &[String],
    (stale, draining): (Duration, &[String]),
    seen: Fleet,
) -> anyhow::Result<Fleet> {
    let Fleet::Seen(v) = &seen else {
        return Ok(seen);
    };
    // A draining droplet falls silent on purpose once its runs end: never waited for.
    let mut watched = v.heartbeats.clone();
    watched.retain(|name, _| !draining.contains(name));
    let Some(wait) = plan::confirm_wait(&watched, stale) else {
        return Ok(seen);
    };
    // Only with time to spare: the run's deadline is for acting, not for waiting.
    if ctx
        .deadline
        .saturating_duration_since(std::time::Instant::now())
        < wait * 4
    {
        return Ok(seen);
    }
    log::info!(
        "a heartbeat is nearly {} old: confirming in {:.0}s",
        crate::duration::format(stale),
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);
    webapp_db::fleet(c, record.worker_token.expose(), names)
}

/// Each droplet's heartbeat in our group; those our group never heard are looked for in the
/// others (one more statement, only then): a droplet heartbeating elsewhere holds another
/// group's token and is named so, not "booting".
fn heartbeats(
    client: Option<&mut postgres::Client>,
    names: &[String],
    v: &webapp_db::FleetView,
) -> BTreeMap<String, Heartbeat> {
    let mut out: BTreeMap<String, Heartbeat> = names
        .iter()
        .map(|n| {
            let beat = match v.heartbeats.get(n) {
                Some(Some(age)) => Heartbeat::Age(*age),
                _ => Heartbeat::Never,
            };
            (n.clone(), beat)
        })
        .collect();
    let unheard: Vec<String> = out
        .iter()
        .filter(|(_, b)| **b == Heartbeat::Never)
        .map(|(n, _)| n.clone())
        .collect();
    let Some(client) = client.filter(|_| !unheard.is_empty()) else {
        return out;
    };
    match webapp_db::heartbeats_elsewhere(client, &unheard, &v.group.id) {
        Ok(found) => {
            for (name, e) in found {
                out.insert(
                    name,
                    Heartbeat::Elsewhere {
                        group: e.group,
                        age: e.age_secs,
                    },
                );
            }
        }
        // Not knowing where it heartbeats leaves it "never heard": the grace still applies.
        Err(e) => log::warn!("{e:#}"),
    }
    out
}

/// Routing, then the waiting runs of every managed queue (incremental since the last read, the
/// whole window hourly, the remembered runs by primary key). Failures are kept, not raised: the
/// heartbeat decision stands without them.
fn read_flow(
    ctx: &TaskCtx,
    opts: &SupervisorOptions,
    client: &mut postgres::Client,
    ours: WorkerGroup,
    heartbeats: &BTreeMap<String, Option<f64>>,
    stale: Duration,
) -> FlowRead {
    let mut routing = webapp_db::routing(client).map_err(|e| format!("{e:#}"));
    let queues = flow::queues_to_read(&ours, routing.as_ref().ok());
    let prev: ScanState = load(ctx.state, SCAN_KEY).unwrap_or_default();
    let (since, full) = prev.since();
    let read = webapp_db::queues(
        client,
        &QueueScan {
            queues: &queues,
            since,
            window: opts.queue_window,
            remembered: &prev.waiting,
            track: TRACK_WAITING,
            timeout: opts.queue_timeout,
        },
    )
    .map_err(|e| format!("{e:#}"));
    if let Ok(r) = routing.as_mut() {
        let depths = read.as_ref().map(|q| q.depths.as_slice()).unwrap_or(&[]);
        if let Err(e) = group_ages(client, stale, r, &ours, heartbeats, depths) {
            routing = Err(e);
        }
    }
    let our_queues = vec![
        ours.master_queue.clone(),
        format!("{}:scheduled", ours.master_queue),
    ];
    let remembered: Vec<String> = prev
        .on_worker
        .iter()
        .chain(&prev.waiting)
        .cloned()
        .collect();
    let runs = webapp_db::worker_runs(
        client,
        &RunScan {
            queues: &our_queues,
            since,
            window: opts.queue_window,
            remembered: &remembered,
            track: TRACK_WAITING,
            failed_within: FAILED_WITHIN,
            ready_after: opts.scale_out_after,
            timeout: opts.queue_timeout,
        },
    )
    .map_err(|e| format!("{e:#}"));
    let mut scan = read.as_ref().ok().map(|r| prev.after(r, full));
    if let (Some(sc), Ok(r)) = (scan.as_mut(), runs.as_ref()) {
        sc.on_worker = r.track_ids.clone();
    }
    FlowRead {
        scan,
        ours,
        routing,
        queues: read,
        full,
        runs,
    }
}

/// The groups' youngest heartbeats, read only where they matter (reading them is a pass over
/// every instance row of a group): ours from our droplets' own rows, already read; the groups
/// whose queues hold waiting runs (is anyone serving them?); and every group when one of our
/// supervisors is silent (did the others go silent too? then the webapp is the likely cause).
fn group_ages(
    client: &mut postgres::Client,
    stale: Duration,
    routing: &mut Routing,
    ours: &WorkerGroup,
    heartbeats: &BTreeMap<String, Option<f64>>,
    depths: &[webapp_db::QueueDepth],
) -> Result<(), String> {
    let stale = stale.as_secs_f64();
    let ours_silent = heartbeats.values().flatten().any(|a| *a >= stale);
    let waiting = |g: &webapp_db::GroupRow| {
        depths.iter().any(|d| {
            d.pending > 0
                && (d.queue == g.master_queue
                    || d.queue.strip_suffix(":scheduled") == Some(g.master_queue.as_str()))
        })
    };
    let wanted: Vec<String> = routing
        .groups
        .iter()
        .filter(|g| g.id != ours.id && (ours_silent || waiting(g)))
        .map(|g| g.id.clone())
        .collect();
    let ages = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        webapp_db::group_heartbeats(client, &wanted).map_err(|e| format!("{e:#}"))?
    };
    for g in routing.groups.iter_mut() {
        g.heartbeat_age_secs = if g.id == ours.id {
            heartbeats.values().flatten().copied().reduce(f64::min)
        } else {
            ages.get(&g.id).copied()
        };
    }
    Ok(())
}

fn judge_flow(opts: &SupervisorOptions, f: &FlowRead) -> flow::Findings {
    let mut found = flow::judge(
        &flow::Facts {
            ours: &f.ours,
            routing: f.routing.as_ref().map_err(String::as_str),
            queues: f
                .queues
                .as_ref()
                .map(|q| q.depths.as_slice())
                .map_err(String::as_str),
        },
        &flow::Rules {
            // Other groups' supervisors beat at intervals ops does not know.
            stale_after: opts.stale_after(false),
            orphan_alert_after: opts.orphan_alert_after,
            queue_alert_after: opts.queue_alert_after,
        },
    );
    if let Ok(q) = &f.queues {
        let bound = if q.waiting_seen as usize > q.waiting_ids.len() {
            format!(
                " (remembering the {} longest-waiting of {})",
                q.waiting_ids.len(),
                q.waiting_seen
            )
        } else {
            String::new()
        };
        found.detail = Some(format!(
            "waiting runs read {} ({} still waiting{bound})",
            if f.full {
                format!(
                    "over the last {}",
                    crate::duration::format(opts.queue_window)
                )
            } else {
                "since the last check".to_string()
            },
            q.waiting_ids.len()
        ));
    }
    found
}

pub fn run(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let s = ctx.settings;
    let token = s.digitalocean_token.as_ref().ok_or_else(|| {
        crate::exit::not_configured("set DIGITALOCEAN_TOKEN (a read/write API token from cloud.digitalocean.com/account/api/tokens)")
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
    let auto = s.supervisor_size == "auto";
    let mut size = if auto {
        load::<String>(ctx.state, AUTO_SIZE_KEY).unwrap_or_else(|| AUTO_DEFAULT_SIZE.into())
    } else {
        s.supervisor_size.clone()
    };
    let http = Http::new();
    let api = DigitalOcean::new(&http, &s.digitalocean_api_url, token, ctx.deadline);
    let bounds = capacity::Bounds::new(s.supervisor_count, opts.min, opts.max)
        .map_err(crate::exit::config_error)?;
    let mut spec = desired(opts, ctx, &record, &size);
    spec.max = bounds.max;
    let (obs, health_checks, flow_read, stale) = observe(ctx, &api, &http, opts, &spec, &record)?;
    let fit = fit_presets(ctx, &api, flow_read.as_ref(), &size, auto);
    let mut auto_grown = None;
    if let Some(bigger) = fit.auto_size.clone() {
        auto_grown = Some(bigger.clone());
        size = bigger;
    }
    let mut spec = desired(opts, ctx, &record, &size);
    spec.rules.stale_after = stale;
    let mut fetched = fit.fetched.clone();
    let (scale_seen, extra) = scale(
        ctx,
        &api,
        opts,
        bounds,
        &obs,
        flow_read.as_ref(),
        &size,
        &mut fetched,
    );
    spec.count = scale_seen.wanted;
    spec.max = bounds.max;
    if bounds.scales() {
        spec.scale_in_after = Some(opts.scale_in_after);
        spec.extra_creates = extra;
        spec.scale_line = Some(scale_seen.why.clone());
    }
    let mut plan = plan::plan(&obs, &spec);
    let disks = disks(ctx, &api, &mut plan);
    plan.lines.extend(fit.lines);
    plan.failures.extend(fit.failures);
    let sessions = u8::from(!matches!(obs.view, View::NotConfigured | View::Skipped));
    let webapp_checked = obs.webapp_check.is_some();
    let mut found = flow_read.as_ref().map(|f| judge_flow(opts, f));
    if let Some(f) = found.as_mut() {
        plan.lines.append(&mut f.lines);
        if plan.webapp_blamed {
            // One failure names the webapp; what its outage does to the queues is detail.
            plan.lines.extend(
                f.failures
                    .drain(..)
                    .map(|l| format!("while the webapp is down: {l}")),
            );
        } else {
            plan.failures.append(&mut f.failures);
        }
    }
    let waiting = flow_read
        .as_ref()
        .and_then(|f| f.queues.as_ref().ok())
        .map(|q| format!(", {} waiting", q.waiting_seen))
        .unwrap_or_default();
    let seen = Observed {
        flow: found.as_ref().map(|f| f.status.clone()),
        scan: flow_read.and_then(|f| f.scan),
        sizes: fetched,
        auto_size: auto_grown,
        scale: scale_seen,
        disks,
    };
    let healthy = plan
        .assessed
        .iter()
        .filter(|a| a.health == plan::Health::Healthy)
        .count();
    let warning = release::warning(
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    let mut outcome = apply(plan, &spec, ctx, &api, &record, opts, seen)?;
    outcome.warnings.extend(owned::warning(&obs.owned));
    outcome.summary = Some(format!("{healthy}/{} healthy{waiting}", spec.count));
    if let Some(w) = warning {
        outcome.detail.retain(|l| *l != w);
        outcome.warnings.push(w);
    }
    if let Some(detail) = found.and_then(|f| f.detail) {
        outcome.detail.push(detail);
    }
    outcome.detail.push(format!(
        "DigitalOcean requests: {}, Postgres sessions: {sessions}, health checks: {health_checks}{}",
        api.requests.get(),
        if webapp_checked {
            ", webapp checks: 1"
        } else {
            ""
        }
    ));
    Ok(outcome)
}

/// The baked image new droplets start from this run, if there is one for what is wanted.
fn baked(ctx: &TaskCtx, want: &Option<image::Want>) -> Option<u64> {
    let want = want.as_ref()?;
    image::stored(ctx.state)?.usable(want)
}

/// One step of the baked image; its trouble is a warning, never the fleet's failure.
fn tend_image(ctx: &TaskCtx, api: &DigitalOcean, want: &image::Want, outcome: &mut Outcome) {
    let t = image::tend(ctx, api, want);
    outcome.detail.extend(t.lines);
    outcome.warnings.extend(t.warnings);
    if t.planned && outcome.status == Status::Ok {
        outcome.status = Status::Planned;
    }
}

/// The desired state, resolved from the task's options, the settings and the config record.
fn desired(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    record: &ConfigRecord,
    size: &str,
) -> plan::Spec {
    let s = ctx.settings;
    let (pin, webapp) = (
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    plan::Spec {
        count: s.supervisor_count as usize,
        tag: deployment_tag(s),
        spec_tag: spec_tag(s, record, size),
        version: release::supervisor_version(pin, webapp),
        version_line: release::describe(pin, webapp),
        rules: plan::Rules {
            boot_grace: opts.boot_grace,
            // Resolved by observe(), which sees how often the droplets beat.
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
        max: s.supervisor_count as usize,
        scale_in_after: None,
        extra_creates: 0,
        scale_line: None,
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

/// The load's verdict on the fleet's size, and what it costs.
#[allow(clippy::too_many_arguments)]
fn scale(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    opts: &SupervisorOptions,
    bounds: capacity::Bounds,
    obs: &plan::Observation,
    flow: Option<&FlowRead>,
    size: &str,
    fetched: &mut Option<Vec<Size>>,
) -> (ScaleStatus, usize) {
    let serving: Vec<&plan::Seen> = obs
        .droplets
        .iter()
        .filter(|d| d.prev.drain.is_none() && !d.tags.iter().any(|t| t == drain::DRAINING_TAG))
        .collect();
    let actual = serving.len();
    let mut seen = ScaleStatus {
        wanted: actual.clamp(bounds.min, bounds.max),
        actual,
        min: bounds.min,
        max: bounds.max,
        scales: bounds.scales(),
        ..ScaleStatus::default()
    };
    // A fixed fleet's cost comes from sizes already known: a healthy cycle asks nothing more.
    let sizes = if bounds.scales() {
        known_sizes(ctx, api, fetched).ok()
    } else {
        fetched
            .clone()
            .or_else(|| load::<Vec<Size>>(ctx.state, SIZES_KEY))
    };
    let price = |slug: &str| {
        sizes
            .as_ref()
            .and_then(|all| all.iter().find(|z| z.slug == slug))
            .map(|z| z.price_monthly)
    };
    seen.cost_monthly = serving
        .iter()
        .map(|d| price(d.built.0.get("size").map_or(size, String::as_str)))
        .sum::<Option<f64>>();
    seen.cost_monthly_at_max = price(size).map(|p| p * bounds.max as f64);
    if !bounds.scales() {
        seen.wanted = bounds.max;
        seen.why = format!("SUPERVISOR_COUNT={}", bounds.max);
        return (seen, 0);
    }
    let current = sizes
        .as_ref()
        .and_then(|all| all.iter().find(|z| z.slug == size).cloned());
    let (Some(Ok(runs)), Some(current)) = (flow.map(|f| &f.runs), current) else {
        seen.why = "the load is unknown this run (no runs read, or no size from DigitalOcean): the fleet stays as it is".into();
        return (seen, 0);
    };
    let executing: Vec<Option<String>> = runs.on_workers.iter().map(|r| r.preset.clone()).collect();
    let w = capacity::wanted(
        bounds,
        actual,
        &current,
        &executing,
        &runs.ready,
        &runs.needs,
    );
    seen.wanted = w.count;
    seen.why = match w.count.cmp(&actual) {
        std::cmp::Ordering::Greater => format!("scale out {actual} → {}: {}", w.count, w.why),
        std::cmp::Ordering::Less => format!(
            "scale in {actual} → {}: {} (a droplet goes once it executed nothing for {}, drained)",
            w.count,
            w.why,
            crate::duration::format(opts.scale_in_after)
        ),
        std::cmp::Ordering::Equal => format!(
            "fleet: {} droplet(s) wanted (min {}, max {}): {}",
            w.count, bounds.min, bounds.max, w.why
        ),
    };
    // More than one create: within the account's droplet limit (DigitalOcean: at most 10 at a time).
    let mut extra = w.count.saturating_sub(actual + 1).min(9);
    if extra > 0 {
        match api.droplet_room() {
            Ok(room) => {
                if room < extra + 1 {
                    seen.why.push_str(&format!(
                        "; the account's droplet limit leaves room for {room}: raise it in DigitalOcean's settings"
                    ));
                }
                extra = extra.min(room.saturating_sub(1));
            }
            Err(e) => {
                seen.why.push_str(&format!(
                    "; one create this run (droplet limit unknown: {e:#})"
                ));
                extra = 0;
            }
        }
    }
    (seen, extra)
}

/// What the preset check found: lines, failures, a bigger size for SUPERVISOR_SIZE=auto, and
/// sizes fetched from DigitalOcean this run (to keep).
#[derive(Default)]
struct Fit {
    lines: Vec<String>,
    failures: Vec<String>,
    auto_size: Option<String>,
    fetched: Option<Vec<Size>>,
}

/// Do our group's waiting (and recently system-failed) runs fit the droplets' size? Asks
/// DigitalOcean's sizes only when some run needs more than small-1x (kept a day).
fn fit_presets(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    flow: Option<&FlowRead>,
    size: &str,
    auto: bool,
) -> Fit {
    let mut fit = Fit::default();
    let Some(Ok(runs)) = flow.map(|f| &f.runs) else {
        return fit;
    };
    let largest = presets::largest(&runs.needs);
    if largest.cpu <= presets::DEFAULT.cpu && largest.memory_gb <= presets::DEFAULT.memory_gb {
        return fit;
    }
    let sizes = match known_sizes(ctx, api, &mut fit.fetched) {
        Ok(v) => v,
        Err(e) => {
            fit.lines
                .push(format!("machine presets not checked this run: {e}"));
            return fit;
        }
    };
    let Some(current) = sizes.iter().find(|z| z.slug == size) else {
        fit.failures.push(format!(
            "SUPERVISOR_SIZE={size} is not a DigitalOcean size (GET /v2/sizes): set one such as s-2vcpu-2gb"
        ));
        return fit;
    };
    let misfits = presets::misfits(&runs.needs, current);
    let region = &ctx.settings.supervisor_region;
    for m in &misfits {
        let better = presets::smallest_fitting(&m.preset, &sizes, region);
        let counts = match (m.waiting, m.failed) {
            (w, 0) => format!("{w} waiting run(s)"),
            (0, f) => format!("{f} run(s) failed by the system in the last hour"),
            (w, f) => format!("{w} waiting run(s) and {f} failed by the system in the last hour"),
        };
        let head = format!(
            "{counts} need machine preset {} ({} vCPU, {} GB), more than the droplets' size {size} ({}): Docker refuses such a container, so these runs bounce between supervisors and end in SYSTEM_FAILURE",
            m.preset.name,
            presets::gb(m.preset.cpu),
            presets::gb(m.preset.memory_gb),
            presets::describe_size(current)
        );
        match better {
            Some(b) if auto => {
                if fit.auto_size.is_none() {
                    fit.lines.push(format!(
                        "{head}; SUPERVISOR_SIZE=auto: the droplets become {} ({}, ${}/month), drained and replaced one by one",
                        b.slug,
                        presets::describe_size(b),
                        b.price_monthly
                    ));
                    fit.auto_size = Some(b.slug.clone());
                }
            }
            Some(b) => fit.failures.push(format!(
                "{head}: set SUPERVISOR_SIZE={} (the smallest size that fits, {}, ${}/month) or SUPERVISOR_SIZE=auto",
                b.slug,
                presets::describe_size(b),
                b.price_monthly
            )),
            None => fit.failures.push(format!(
                "{head}: no size available in {region} fits it; use a smaller preset or another SUPERVISOR_REGION"
            )),
        }
    }
    fit
}

/// All reads: DigitalOcean's listing, the webapp's view (one statement), `/health` when
/// allowed, and the streaks and breaker kept in the state. Returns the health GETs made.
fn observe(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    http: &Http,
    opts: &SupervisorOptions,
    spec: &plan::Spec,
    record: &ConfigRecord,
) -> anyhow::Result<(plan::Observation, u32, Option<FlowRead>, Duration)> {
    let now_utc = chrono::Utc::now();
    let all = api.droplets_by_tag(&spec.tag)?;
    let (ours, foreign): (Vec<Droplet>, Vec<Droplet>) = all
        .into_iter()
        .partition(|d| d.has_tag(&spec.tag) && d.has_tag(MANAGED_TAG));
    // Our tags are not enough: only the droplets ops recorded creating are its own.
    let owned::Sorted {
        ours, seen: owned, ..
    } = owned::settle(ctx, ours, &spec.tag)?;
    // Draining droplets are on their way out; past max + 1 serving ones ops refuses to act.
    let serving = ours
        .iter()
        .filter(|d| !d.has_tag(drain::DRAINING_TAG))
        .count();
    let too_many = serving > spec.count.max(spec.max) + 1;
    // Judged sooner only when every droplet is known to beat every 10 s: while older ones
    // drain during a rollout, their 30 s heartbeats would look nearly stale against 30s.
    let stale = opts.stale_after(ours.iter().all(|d| d.has_tag(cloudinit::BEAT_TAG)));
    let mut spec = spec.clone();
    spec.rules.stale_after = stale;
    let spec = &spec;
    let names: Vec<String> = ours.iter().map(|d| d.name.clone()).collect();
    let draining: Vec<String> = ours
        .iter()
        .filter(|d| d.has_tag(drain::DRAINING_TAG))
        .map(|d| d.name.clone())
        .collect();
    let (view, heartbeats, flow) = if too_many {
        (View::Skipped, Default::default(), None)
    } else {
        webapp_view(ctx, opts, record, &names, (stale, &draining))
    };
    let mut health_checks = 0;
    let mut droplets = Vec::with_capacity(ours.len());
    for d in ours {
        let http_result = match d.public_ipv4() {
            Some(ip) if d.status == "active" && spec.health_sources && !too_many => {
                health_checks += 1;
                Some(check_health(http, ctx, ip, opts.health_port))
            }
            _ => None,
        };
        let heartbeat = match (&view, heartbeats.get(&d.name)) {
            (View::Seen { .. }, Some(beat)) => beat.clone(),
            (View::Seen { .. }, None) => Heartbeat::Never,
            _ => Heartbeat::NoView,
        };
        let runs = runs_on(flow.as_ref(), &d.name);
        droplets.push(plan::Seen {
            id: d.id,
            prev: load(ctx.state, &droplet_key(d.id)).unwrap_or_default(),
            built: load::<diff::Parts>(ctx.state, &built_key(d.id))
                .unwrap_or_default()
                .or(diff::Parts::listed(
                    &d.size_slug,
                    d.region.as_ref().map(|r| r.slug.as_str()),
                )),
            age_secs: d.age_secs(now_utc),
            ip: d.public_ipv4().map(str::to_string),
            name: d.name,
            status: d.status,
            tags: d.tags,
            runs,
            heartbeat,
            http: http_result,
        });
    }
    let breaker: Breaker = load(ctx.state, BREAKER_KEY).unwrap_or_default();
    let other_groups = flow
        .as_ref()
        .and_then(|f| {
            let ours = f.ours.id.clone();
            f.routing.as_ref().ok().map(|r| {
                r.groups
                    .iter()
                    .filter(|g| g.id != ours)
                    .filter_map(|g| g.heartbeat_age_secs.map(|a| (g.name.clone(), a)))
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut obs = plan::Observation {
        now_ms: now_ms(),
        // The second, and a part nobody can guess: a name is never known before ops sends it.
        stamp: format!(
            "{}-{}",
            now_utc.format("%y%m%d%H%M%S"),
            crate::sealed::nonce()?
        ),
        droplets,
        foreign: foreign.into_iter().map(|d| (d.name, d.id)).collect(),
        owned,
        view,
        replacements: breaker.replacements,
        webapp_check: None,
        other_groups,
    };
    // Only when something is silent: is it the webapp?
    if plan::needs_webapp_check(&obs, spec) {
        obs.webapp_check = Some(check_webapp(ctx, &record.api_origin));
    }
    Ok((obs, health_checks, flow, stale))
}

/// The runs executing on the droplet named `name`, per the webapp's database (`None`: no read
/// this run).
fn runs_on(flow: Option<&FlowRead>, name: &str) -> Option<Vec<String>> {
    let runs = flow?.runs.as_ref().ok()?;
    Some(
        runs.on_workers
            .iter()
            .filter(|r| r.instance.as_deref() == Some(name))
            .map(|r| r.friendly_id.clone())
            .collect(),
    )
}

/// What `apply` keeps for `ops status`, `/metrics` and the next read, besides the droplets.
struct Observed {
    flow: Option<flow::QueueStatus>,
    scan: Option<ScanState>,
    sizes: Option<Vec<Size>>,
    auto_size: Option<String>,
    scale: ScaleStatus,
    /// Each droplet's disk reading (kept or read this run).
    disks: BTreeMap<u64, disk::Reading>,
}

/// What a dry run says of one action.
fn would(
    action: &Action,
    what: String,
    baked: Option<u64>,
    lines: &mut Vec<String>,
) -> ActionRecord {
    if let Action::Create {
        name,
        replaces: Some((old, why)),
        ..
    } = action
    {
        lines.push(format!(
            "would replace droplet {old} ({why}): {name} comes up first, {old} goes once it is healthy"
        ));
    }
    let what = match (action, baked) {
        (Action::Create { .. }, Some(id)) => format!("{what}, from the baked image {id}"),
        _ => what,
    };
    let rec = ActionRecord::planned(action.typed(), what);
    lines.push(rec.would());
    rec
}

/// All writes, in the plan's order (or, in a dry run, what they would be), then the state, then
/// one step of the baked image.
fn apply(
    plan: plan::Plan,
    spec: &plan::Spec,
    ctx: &TaskCtx,
    api: &DigitalOcean,
    record: &ConfigRecord,
    opts: &SupervisorOptions,
    seen: Observed,
) -> anyhow::Result<Outcome> {
    if let Some(why) = &plan.refused {
        bail!("{why}");
    }
    let bake = opts
        .bake
        .then(|| image::Want::of(ctx.settings, &spec.tag, &spec.version.tag));
    let baked = baked(ctx, &bake);
    let s = ctx.settings;
    let now = now_ms();
    let mut lines = plan.lines.clone();
    let mut records = Vec::new();
    let mut planned = false;
    let mut created = false;
    let mut replacements = plan.replacements.clone();
    for action in &plan.actions {
        let what = action.describe(spec);
        if ctx.dry_run {
            records.push(would(action, what, baked, &mut lines));
            planned = true;
            continue;
        }
        let (done, applied) = match action {
            Action::ResetBreaker => {
                store::delete(ctx.writable_state()?, BREAKER_KEY)?;
                ("circuit breaker reset by --reset-breaker".to_string(), true)
            }
            Action::Delete {
                id,
                name,
                reason,
                replacement,
            } => {
                let (done, applied, counted) =
                    delete(ctx, api, spec, *id, name, reason, *replacement)?;
                if applied {
                    ctx.changed("droplet.deleted", done.clone());
                }
                if counted {
                    count_replacement(ctx, &mut replacements, now)?;
                }
                (done, applied)
            }
            Action::Drain {
                id,
                name,
                reason,
                signal,
                runs,
                ..
            } => start_drain(ctx, api, spec, *id, name, reason, *signal, runs.as_deref())?,
            Action::Create {
                name,
                reason,
                standby_for,
                ..
            } => {
                created = true;
                let counted = standby_for.is_some();
                let done = create(
                    ctx,
                    api,
                    spec,
                    record,
                    &Made {
                        name,
                        reason,
                        counted,
                        baked,
                    },
                    &mut replacements,
                )?;
                (done, true)
            }
        };
        lines.push(done.clone());
        records.push(if applied {
            ActionRecord::done(action.typed(), what, done)
        } else {
            ActionRecord::not_done(action.typed(), what, done)
        });
    }
    if !ctx.dry_run {
        save_observed(ctx, &plan.assessed, plan.deletes().collect(), seen, now)?;
    }
    let mut failures = plan.failures.clone();
    if opts.firewall && (!plan.assessed.is_empty() || created || planned) {
        if let Err(e) = ensure_firewall(api, ctx, s, &spec.tag, now, &mut lines, &mut planned) {
            failures.push(format!("firewall: {e:#}"));
        }
    }
    let mut outcome = if failures.is_empty() {
        Outcome::lines(if planned { Status::Planned } else { Status::Ok }, lines)
    } else {
        failures.append(&mut lines);
        Outcome::lines(Status::Failed, failures)
    };
    outcome.actions = records;
    if let Some(want) = &bake {
        // After the fleet's own actions: the fleet never waits for the image.
        tend_image(ctx, api, want, &mut outcome);
    }
    Ok(outcome)
}

/// Re-reads before deleting: acts only on a droplet that still carries both tags and that ops
/// recorded creating. Returns the line, whether it was deleted, and whether that counts as a
/// replacement.
fn delete(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    spec: &plan::Spec,
    id: u64,
    name: &str,
    reason: &str,
    replacement: bool,
) -> anyhow::Result<(String, bool, bool)> {
    Ok(match api.droplet(id)? {
        Some(_) if !owned::recorded(ctx.state, id) => {
            (owned::refused("deleting", name, id), false, false)
        }
        Some(f) if f.has_tag(&spec.tag) && f.has_tag(MANAGED_TAG) => {
            api.delete_droplet(id)?;
            log::warn!("deleted droplet {name} (id {id}): {reason}");
            (
                format!("deleted droplet {name} (id {id}): {reason}"),
                true,
                replacement,
            )
        }
        Some(_) => (
            format!("not deleting droplet {name}: it lost our tags since it was listed"),
            false,
            false,
        ),
        None => (format!("droplet {name} is already gone"), false, false),
    })
}

/// Tags the droplet draining (the tag survives a lost state) and, when it can be told, sends
/// the shutdown its drain service waits in; only a droplet ops recorded creating. Returns the
/// line and whether it drains.
#[allow(clippy::too_many_arguments)]
fn start_drain(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    spec: &plan::Spec,
    id: u64,
    name: &str,
    reason: &str,
    signal: bool,
    runs: Option<&[String]>,
) -> anyhow::Result<(String, bool)> {
    if !owned::recorded(ctx.state, id) {
        return Ok((owned::refused("draining", name, id), false));
    }
    api.create_tag(drain::DRAINING_TAG)?;
    api.tag_droplet(drain::DRAINING_TAG, id)?;
    if signal {
        api.droplet_action(id, "shutdown")?;
    }
    let done = format!(
        "draining droplet {name} (id {id}): {reason}; {}; {}; deleted once idle or after {}",
        plan::runs_line(runs),
        if signal {
            "told it to stop taking runs (DigitalOcean shutdown: its drain service waits for the runs on it)"
        } else {
            "it predates ops' drain: waiting until it is idle"
        },
        crate::duration::format(spec.drain_timeout)
    );
    log::warn!("draining droplet {name} (id {id}): {reason}");
    ctx.changed("droplet.draining", done.clone());
    Ok((done, true))
}

/// One replacement for the circuit breaker (kept at once, so a crash cannot forget it) and for
/// `ops_supervisor_replacements_total`.
fn count_replacement(ctx: &TaskCtx, replacements: &mut Vec<i64>, now: i64) -> anyhow::Result<()> {
    ctx.writable_state()?.count(REPLACEMENTS_COUNTER, now)?;
    replacements.push(now);
    save(
        ctx,
        BREAKER_KEY,
        &Breaker {
            replacements: replacements.clone(),
        },
        now,
    )
}

/// What a create is for: the droplet's name, why, whether the breaker counts it, and the baked
/// image to start from (`None`: `SUPERVISOR_IMAGE`).
struct Made<'a> {
    name: &'a str,
    reason: &'a str,
    counted: bool,
    baked: Option<u64>,
}

/// Creates one droplet with our tags and the user-data; a replacement made before its droplet
/// goes (make before break) is counted by the circuit breaker now. From the baked image when
/// there is one; when DigitalOcean refuses it (gone, or a disk too small: a 4xx, so no droplet
/// was made), from `SUPERVISOR_IMAGE` in the same run.
fn create(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    spec: &plan::Spec,
    record: &ConfigRecord,
    made: &Made,
    replacements: &mut Vec<i64>,
) -> anyhow::Result<String> {
    let s = ctx.settings;
    let name = made.name;
    let mut tags = vec![
        spec.tag.clone(),
        MANAGED_TAG.into(),
        spec.spec_tag.clone(),
        release::version_tag(&spec.version.tag),
    ];
    if cloudinit::drains(&spec.version.tag) {
        tags.push(drain::CAPABLE_TAG.into());
    }
    tags.push(cloudinit::BEAT_TAG.into());
    let mut new = NewDroplet {
        name: name.to_string(),
        region: s.supervisor_region.clone(),
        size: spec.size.clone(),
        image: ImageRef::Slug(s.supervisor_image.clone()),
        ssh_keys: s.supervisor_ssh_keys.clone(),
        tags,
        user_data: cloudinit::render(record, s, name)?,
        monitoring: true,
    };
    let mut from = String::new();
    owned::intend(ctx, name)?;
    let mut send = || -> anyhow::Result<Droplet> {
        Ok(match made.baked {
            Some(id) => {
                new.image = ImageRef::Id(id);
                match api.create_droplet(&new) {
                    Ok(d) => {
                        from = format!(", from the baked image {id}");
                        d
                    }
                    Err(e) if refused(&e) => {
                        log::warn!(
                            "the baked image {id} was refused ({e:#}): creating {name} from {}",
                            s.supervisor_image
                        );
                        from = format!(
                            ", from {} (DigitalOcean refused the baked image {id}: {e:#})",
                            s.supervisor_image
                        );
                        new.image = ImageRef::Slug(s.supervisor_image.clone());
                        image::forget(ctx)?;
                        api.create_droplet(&new)?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => api.create_droplet(&new)?,
        })
    };
    let d = match send() {
        Ok(d) => d,
        Err(e) => {
            if refused_outright(&e) {
                owned::refused_create(ctx, name)?;
            }
            return Err(e);
        }
    };
    owned::created(ctx, d.id, &d.name)?;
    ctx.changed(
        "droplet.created",
        format!(
            "created droplet {} (id {}{from}): {}",
            d.name, d.id, made.reason
        ),
    );
    save(ctx, &built_key(d.id), &spec.parts, now_ms())?;
    if made.counted {
        count_replacement(ctx, replacements, now_ms())?;
    }
    Ok(format!(
        "created droplet {} (id {}, {}, {}{from}): {}",
        d.name, d.id, spec.size, s.supervisor_region, made.reason
    ))
}

/// DigitalOcean refused the image itself (no droplet was made): a 400, 404 or 422 that names
/// the image (not, say, the droplet limit).
fn refused(e: &anyhow::Error) -> bool {
    let m = e.to_string();
    ["HTTP 400", "HTTP 404", "HTTP 422"]
        .iter()
        .any(|c| m.contains(c))
        && m.to_ascii_lowercase().contains("image")
}

/// Streaks for the droplets that exist (dropped for those gone or deleted), what was seen for
/// `ops status`, and the queue.
fn save_observed(
    ctx: &TaskCtx,
    assessed: &[plan::Assessed],
    deleted: Vec<u64>,
    observed: Observed,
    now: i64,
) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    let keep: Vec<String> = assessed
        .iter()
        .filter(|a| !deleted.contains(&a.id))
        .flat_map(|a| [droplet_key(a.id), built_key(a.id), disk_key(a.id)])
        .collect();
    store::prune(st, &keep)?;
    let seen: Vec<DropletStatus> = assessed
        .iter()
        .map(|a| DropletStatus {
            id: a.id,
            name: a.name.clone(),
            ip: a.ip.clone(),
            health: format!("{:?}", a.health).to_ascii_lowercase(),
            fails: a.streak.fails,
            spec_current: a.current,
            age_secs: a.age_secs,
            deleted: deleted.contains(&a.id),
            heartbeat_age_secs: a.heartbeat_age,
            executing_runs: a.runs.as_ref().map(Vec::len),
            draining: a.streak.drain.is_some(),
            disk: observed.disks.get(&a.id).map(disk::Reading::status),
        })
        .collect();
    store::set(st, LAST_SEEN_KEY, &seen, now)?;
    match observed.flow {
        Some(q) => store::set(st, QUEUE_KEY, &q, now)?,
        None => store::delete(st, QUEUE_KEY)?,
    }
    if let Some(scan) = observed.scan {
        store::set(st, SCAN_KEY, &scan, now)?;
    }
    if let Some(sizes) = observed.sizes {
        store::set(st, SIZES_KEY, &sizes, now)?;
    }
    if let Some(size) = observed.auto_size {
        store::set(st, AUTO_SIZE_KEY, &size, now)?;
    }
    store::set(st, SCALE_KEY, &observed.scale, now)?;
    for a in assessed.iter().filter(|a| !deleted.contains(&a.id)) {
        store::set(st, &droplet_key(a.id), &a.streak, now)?;
    }
    for (id, reading) in &observed.disks {
        store::set(st, &disk_key(*id), reading, now)?;
    }
    Ok(())
}

const NO_WAY_TO_SEE: &str = "no way to see the supervisor: set DATABASE_URL (the webapp's Postgres: ops reads the supervisors' heartbeats there) or SUPERVISOR_HEALTH_SOURCES (the addresses of this ops host, so it may GET :8020/health)";

/// Whether this configuration lets ops see the supervisors (for `ops check`).
pub fn visibility_problem(s: &Settings) -> Option<&'static str> {
    (s.database_url.is_none() && s.supervisor_health_sources.is_empty()).then_some(NO_WAY_TO_SEE)
}

/// Each droplet's free disk: the reading kept in the state, read again only when due
/// ([`disk::Reading::due`]: active, older than a few minutes, the last reading 20 minutes old).
/// A low disk fails the task naming the droplet (not one on its way out).
fn disks(ctx: &TaskCtx, api: &DigitalOcean, plan: &mut plan::Plan) -> BTreeMap<u64, disk::Reading> {
    let mut out = BTreeMap::new();
    if plan.refused.is_some() {
        return out;
    }
    let now = now_ms();
    let leaving: Vec<u64> = plan.deletes().collect();
    for a in plan.assessed.iter().filter(|a| !leaving.contains(&a.id)) {
        let prev = load::<disk::Reading>(ctx.state, &disk_key(a.id));
        let reading = match prev {
            p if disk::Reading::due(p.as_ref(), &a.status, a.age_secs, now) => {
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
    if let Some(seen) = load::<FirewallChecked>(ctx.state, FIREWALL_KEY) {
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
            let done = format!(
                "updated firewall {} (8020 from {}, ssh from {})",
                want.name,
                sources(&s.supervisor_health_sources),
                sources(&s.supervisor_ssh_sources)
            );
            ctx.changed("firewall.updated", &done);
            lines.push(done);
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
            let done = format!(
                "created firewall {} (8020 from {}, ssh from {})",
                want.name,
                sources(&s.supervisor_health_sources),
                sources(&s.supervisor_ssh_sources)
            );
            ctx.changed("firewall.created", &done);
            lines.push(done);
            String::new()
        }
    };
    if !ctx.dry_run {
        save(
            ctx,
            FIREWALL_KEY,
            &FirewallChecked {
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
