//! The webapp's view of our supervisors, read in one Postgres session: their heartbeats (one
//! statement, confirmed once when one is close to stale), then where runs go, then the waiting
//! runs and the runs on our workers in their own read-only transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clients::postgres::Target;
use crate::clients::webapp_db::{
    self, Fleet, QueueRead, QueueScan, Routing, RunScan, WorkerGroup, WorkerRuns,
};
use crate::config::SupervisorOptions;
use crate::record::ConfigRecord;
use crate::task::TaskCtx;

use super::flow;
use super::plan::{self, Heartbeat, View};
use super::store::{self, SCAN_KEY};

/// Where the next read of the waiting runs starts (database clock, Unix seconds), and the runs
/// seen waiting, re-read by primary key however old they get.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScanState {
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
pub struct FlowRead {
    pub ours: WorkerGroup,
    pub routing: Result<Routing, String>,
    pub queues: Result<QueueRead, String>,
    pub scan: Option<ScanState>,
    pub full: bool,
    /// Our group's runs on workers and what its waiting runs need.
    pub runs: Result<WorkerRuns, String>,
}

/// Runs that ended in `SYSTEM_FAILURE` or `CRASHED` this recently count as needing their
/// preset (a run too big for the droplets bounces and then fails that way).
const FAILED_WITHIN: Duration = Duration::from_secs(3600);

/// The webapp's view of our supervisors this run (one Postgres session: heartbeats, then where
/// runs go, then the waiting runs in their own read-only transaction), and each droplet's
/// heartbeat.
pub fn view(
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
    let left = ctx
        .deadline
        .saturating_duration_since(std::time::Instant::now());
    if !worth_waiting(left, wait) {
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
    let prev: ScanState = store::load(ctx.state, SCAN_KEY).unwrap_or_default();
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

pub fn judge_flow(opts: &SupervisorOptions, f: &FlowRead) -> flow::Findings {
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

/// The runs executing on the droplet named `name`, per the webapp's database (`None`: no read
/// this run).
pub fn runs_on(flow: Option<&FlowRead>, name: &str) -> Option<Vec<String>> {
    let runs = flow?.runs.as_ref().ok()?;
    Some(
        runs.on_workers
            .iter()
            .filter(|r| r.instance.as_deref() == Some(name))
            .map(|r| r.friendly_id.clone())
            .collect(),
    )
}

/// Other worker groups: (name, seconds since the youngest heartbeat of any of their
/// instances), when routing was read.
pub fn other_groups(f: &FlowRead) -> Vec<(String, f64)> {
    let Ok(r) = &f.routing else {
        return Vec::new();
    };
    r.groups
        .iter()
        .filter(|g| g.id != f.ours.id)
        .filter_map(|g| g.heartbeat_age_secs.map(|a| (g.name.clone(), a)))
        .collect()
}

/// Whether a confirming wait fits what is left of the run's deadline: only with time to spare
/// (four times the wait), as the deadline is for acting, not for waiting.
pub fn worth_waiting(left: Duration, wait: Duration) -> bool {
    left >= wait * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_confirmed_only_with_four_times_the_wait_left_before_the_deadline() {
        let wait = Duration::from_secs(10);
        assert!(worth_waiting(Duration::from_secs(40), wait));
        assert!(worth_waiting(Duration::from_secs(300), wait));
        assert!(!worth_waiting(Duration::from_secs(39), wait));
        assert!(!worth_waiting(Duration::ZERO, wait));
    }
}
