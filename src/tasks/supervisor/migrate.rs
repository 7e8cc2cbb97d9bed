//! Moving a deployment off droplets (`platform: kubernetes` while ops' droplets remain). The
//! droplets stay, untouched, until a supervisor pod of ops' Deployment heartbeats into the
//! webapp within `stale_after`: before that they are the only supervisors serving the worker
//! group. Then every droplet ops recorded creating leaves through the droplet path's own drain
//! (`drain::step`, apply.rs's `act`): told to stop taking runs, deleted once idle, off, or at
//! `drain_timeout`, with the same events. A droplet ops did not create is never touched.
//!
//! DigitalOcean is asked only while ops' record of its droplets (`owned`) names one: a droplet
//! ops deletes leaves the record at once, so a run after the migration makes no request there.
//! `leave` decides (pure); `droplets_leave` observes and acts.

use std::time::Duration;

use crate::clients::digitalocean::{DigitalOcean, Droplet};
use crate::clients::http::Http;
use crate::config::SupervisorOptions;
use crate::record::ConfigRecord;
use crate::state::now_ms;
use crate::task::{Outcome, Status, TaskCtx};

use super::drain;
use super::facts::{Instance, Power};
use super::kubernetes::workload::Judged;
use super::plan::{self, Action, MANAGED_TAG};
use super::store::{self, Breaker, BREAKER_KEY};
use super::webapp::{self, FlowRead};
use super::{apply, capacity, inputs, observe, owned};

/// What `leave` knows this run.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Ops' own droplets (the record's), as DigitalOcean lists them, with their streaks, the
    /// runs on them and their shutdowns.
    pub droplets: &'a [Instance],
    /// The supervisor pods that heartbeat within `stale_after` (their names).
    pub beating: &'a [String],
    pub now_ms: i64,
    pub drain_timeout: Duration,
    /// The circuit breaker is open: no new drain starts (the ones under way go on).
    pub breaker_open: bool,
}

/// What the droplets get this run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leave {
    pub actions: Vec<Action>,
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

/// Why a droplet leaves (its drain's reason, in the events and `run --json`).
fn reason(beating: &[String]) -> String {
    format!(
        "moved to Kubernetes: supervisor pod {} heartbeats into the same worker group",
        beating.join(", ")
    )
}

/// Each droplet: a drain under way goes on (deleted once drained, or at its timeout); the others
/// start draining once a supervisor pod heartbeats, never before.
pub fn leave(f: &Facts) -> Leave {
    let mut out = Leave::default();
    for d in f.droplets {
        match &d.prev.drain {
            Some(record) => under_way(d, record, f, &mut out),
            None if f.beating.is_empty() => out.lines.push(format!(
                "droplet {} stays (no drain, no delete) until a supervisor pod of ops' Deployment heartbeats",
                d.name
            )),
            None if f.breaker_open => out.lines.push(format!(
                "droplet {} stays: the circuit breaker is open (too many replacements lately); look at the fleet, then `ops run <profile> --reset-breaker`",
                d.name
            )),
            None if f.drain_timeout.is_zero() => out.actions.push(Action::Delete {
                id: d.id,
                name: d.name.clone(),
                reason: format!("{}; drain_timeout is 0: not drained", reason(f.beating)),
                replacement: false,
            }),
            None => out.actions.push(Action::Drain {
                id: d.id,
                name: d.name.clone(),
                reason: reason(f.beating),
                replacement: false,
                signal: d.capable,
                runs: d.runs.clone(),
            }),
        }
    }
    out
}

/// A drain ops recorded: the droplet path's own next step.
fn under_way(d: &Instance, record: &drain::Drain, f: &Facts, out: &mut Leave) {
    let facts = drain::Facts {
        name: &d.name,
        off: d.power == Power::Off,
        runs: d.runs.as_deref(),
        drain: record,
        now_ms: f.now_ms,
        timeout: f.drain_timeout,
        capable: d.capable,
        shutdown: d.shutdown.clone(),
    };
    if let Some(line) = plan::drain_next(d.id, &facts, &mut out.actions, &mut out.failures) {
        out.lines.push(format!("droplet {}: {line}", d.name));
    }
}

/// The supervisor pods heartbeating within `stale`, their names escaped (they come from the
/// cluster).
fn beating(judged: &Judged, stale: Duration) -> Vec<String> {
    judged
        .supervisors
        .iter()
        .filter(|p| p.heartbeat.is_some_and(|a| a <= stale.as_secs_f64()))
        .map(|p| crate::redact::line(&p.name))
        .collect()
}

/// `platform: kubernetes`: ops' droplets from `platform: droplets` leave once the Deployment
/// heartbeats (see the module's comment). Nothing at all while ops' record names no droplet. Its
/// trouble fails the task with its line, the Kubernetes report kept.
pub fn droplets_leave(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    record: &ConfigRecord,
    seen: (&Judged, Option<&FlowRead>),
    outcome: &mut Outcome,
) {
    if let Err(e) = leave_droplets(opts, ctx, record, seen, outcome) {
        failed(outcome, "moving off droplets", &e);
    }
}

fn leave_droplets(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    record: &ConfigRecord,
    (judged, flow): (&Judged, Option<&FlowRead>),
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let Some(kept) = owned::load(ctx.state).filter(|r| !r.droplets.is_empty()) else {
        return Ok(());
    };
    let beating = beating(judged, opts.stale_after(true));
    if beating.is_empty() {
        let names: Vec<&str> = kept.droplets.iter().map(|e| e.name.as_str()).collect();
        outcome.detail.push(format!(
            "moving off droplets: {} droplet(s) of ops stay (no drain, no delete) until a supervisor pod of ops' Deployment heartbeats: {}",
            names.len(),
            crate::redact::line(&names.join(", "))
        ));
        return Ok(());
    }
    let Some(token) = ctx.settings.digitalocean_token.as_ref() else {
        outcome.config_error = true;
        fail(outcome, format!(
            "moving off droplets: ops' record names {} droplet(s) still to drain away, and DIGITALOCEAN_TOKEN is not set: set it in the environment until they are gone",
            kept.droplets.len()
        ));
        return Ok(());
    };
    let http = Http::new();
    let s = ctx.settings;
    let api = DigitalOcean::new(&http, &s.digitalocean_api_url, token, ctx.deadline);
    let droplets = observed(ctx, &api, flow)?;
    let breaker: Breaker = store::load(ctx.state, BREAKER_KEY).unwrap_or_default();
    let now = now_ms();
    let recent = breaker.recent(now, opts.replacement_window);
    let decided = leave(&Facts {
        droplets: &droplets,
        beating: &beating,
        now_ms: now,
        drain_timeout: opts.drain_timeout,
        breaker_open: !ctx.reset_breaker && recent as u32 >= opts.max_replacements,
    });
    let bounds = capacity::Bounds::new(s.supervisor_count, opts.min, opts.max)
        .unwrap_or(capacity::Bounds { min: 1, max: 1 });
    let spec = inputs::spec(opts, ctx, record, &inputs::size(ctx.state, s), bounds);
    let done = apply::perform(ctx, &api, &spec, record, &decided.actions)?;
    outcome.detail.extend(decided.lines);
    outcome.detail.extend(done.lines);
    outcome.actions.extend(done.records);
    if ctx.dry_run && !decided.actions.is_empty() && outcome.status == Status::Ok {
        outcome.status = Status::Planned;
    }
    for f in decided.failures.into_iter().chain(done.failure) {
        fail(outcome, f);
    }
    // Ops' record after this run's deletes (a dry run deleted nothing).
    let left = owned::load(ctx.state).map_or(0, |r| r.droplets.len());
    outcome.detail.push(format!(
        "moving off droplets: {left} droplet(s) of ops left, DigitalOcean requests: {}",
        api.requests.get()
    ));
    if !ctx.dry_run && left == 0 {
        // `ops status` and /metrics stop showing the droplets the last droplet run saw.
        store::delete(ctx.writable_state()?, store::LAST_SEEN_KEY)?;
    }
    Ok(())
}

/// Ops' own droplets as DigitalOcean lists them (both our tags, and in ops' record), with their
/// streaks, the runs on them (the webapp's read of the worker group) and their shutdowns.
fn observed(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    flow: Option<&FlowRead>,
) -> anyhow::Result<Vec<Instance>> {
    let tag = inputs::deployment_tag(ctx.settings);
    let listed: Vec<Droplet> = api
        .droplets_by_tag(&tag)?
        .into_iter()
        .filter(|d| d.has_tag(&tag) && d.has_tag(MANAGED_TAG))
        .collect();
    let sorted = owned::settle(ctx, listed, &tag)?;
    let now = chrono::Utc::now();
    let droplets = sorted
        .ours
        .iter()
        .map(|d| {
            let mut i = observe::instance(ctx, d, now);
            i.runs = webapp::runs_on(flow, &d.name);
            i
        })
        .collect();
    Ok(observe::with_shutdowns(api, droplets))
}

fn fail(outcome: &mut Outcome, line: String) {
    outcome.status = Status::Failed;
    outcome.detail.insert(0, line);
}

/// A move's error as the task's first line (a configuration error still exits 2).
pub(crate) fn failed(outcome: &mut Outcome, what: &str, e: &anyhow::Error) {
    outcome.config_error |= crate::exit::classify(e) == crate::exit::ExitCode::Config;
    fail(outcome, format!("{what}: {e:#}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::supervisor::observe::listed;

    const NOW: i64 = 1_800_000_000_000;

    fn droplet(id: u64, status: &str, runs: &[&str]) -> Instance {
        let d: Droplet = serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("sup-{id}"), "status": status,
            "created_at": "2026-01-01T00:00:00Z", "size_slug": "s-2vcpu-2gb",
            "tags": ["t", MANAGED_TAG, drain::CAPABLE_TAG],
            "networks": {"v4": []}
        }))
        .unwrap();
        let mut i = listed(&d, chrono::Utc::now());
        i.runs = Some(runs.iter().map(|r| r.to_string()).collect());
        i
    }

    fn facts<'a>(droplets: &'a [Instance], beating: &'a [String]) -> Facts<'a> {
        Facts {
            droplets,
            beating,
            now_ms: NOW,
            drain_timeout: Duration::from_secs(3600),
            breaker_open: false,
        }
    }

    #[test]
    fn no_droplet_is_drained_or_deleted_before_a_supervisor_pod_heartbeats() {
        let ds = [droplet(1, "active", &["run_a"]), droplet(2, "off", &[])];
        let out = leave(&facts(&ds, &[]));
        assert_eq!(out.actions, []);
        assert!(
            out.lines[0].contains("sup-1 stays (no drain, no delete)"),
            "{out:?}"
        );
    }

    #[test]
    fn once_a_pod_heartbeats_every_droplet_drains_first_even_an_idle_one() {
        let ds = [droplet(1, "active", &["run_a"]), droplet(2, "active", &[])];
        let pods = ["supervisor-abc".to_string()];
        let out = leave(&facts(&ds, &pods));
        assert_eq!(out.actions.len(), 2);
        for a in &out.actions {
            assert!(
                matches!(a, Action::Drain { signal: true, reason, .. } if reason.contains("supervisor-abc heartbeats")),
                "{a:?}"
            );
        }
    }

    #[test]
    fn a_draining_droplet_goes_once_drained_and_waits_while_its_runs_execute() {
        let mut busy = droplet(1, "active", &["run_a"]);
        let mut off = droplet(2, "off", &["run_b"]);
        for d in [&mut busy, &mut off] {
            d.prev.drain = Some(drain::Drain {
                started_ms: NOW - 60_000,
                reason: "moved".into(),
                replacement: false,
                shutdown: Some(7),
            });
        }
        let ds = [busy, off];
        let pods = ["supervisor-abc".to_string()];
        let out = leave(&facts(&ds, &pods));
        assert!(
            matches!(&out.actions[..], [Action::Delete { id: 2, reason, .. }] if reason.starts_with("drained")),
            "{out:?}"
        );
        assert!(
            out.lines[0].contains("1 run(s) still executing (run_a)"),
            "{out:?}"
        );
    }

    #[test]
    fn an_open_breaker_starts_no_drain_and_a_zero_timeout_deletes_at_once() {
        let ds = [droplet(1, "active", &[])];
        let pods = ["supervisor-abc".to_string()];
        let mut f = facts(&ds, &pods);
        f.breaker_open = true;
        let held = leave(&f);
        assert_eq!(held.actions, []);
        assert!(held.lines[0].contains("circuit breaker is open"));
        f.breaker_open = false;
        f.drain_timeout = Duration::ZERO;
        assert!(matches!(
            &leave(&f).actions[..],
            [Action::Delete { id: 1, .. }]
        ));
    }
}
