//! `ops simulate`: the operator's own last days of runs replayed through their supervisor
//! settings and a few alternatives, with the decisions the supervisor task makes
//! (`sim::replay`: the real `capacity::wanted` and `plan::plan`). What would these settings
//! have cost, and how long did the runs wait?
//!
//! The runs come from one read of `"TaskRun"` (per minute and preset, `webapp_db::arrivals`);
//! a minute's runs arrive evenly over it, the checks fall on the minute (the `health` profile's
//! cron), and each run lasts its minute's mean length. A **burst** is runs arriving with no
//! gap of `BURST_GAP` between them: its first run's wait is the cold start the fleet shows
//! people, its last run's wait how long the burst takes to drain.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::clients::digitalocean::{DigitalOcean, Size};
use crate::clients::http::Http;
use crate::clients::postgres::Target;
use crate::clients::webapp_db::{self, Arrivals, TokenLookup};
use crate::config::{SupervisorOptions, TaskSpec};
use crate::exit::{config_error, ExitCode};
use crate::state::State;
use crate::summary::SCHEMA_VERSION;
use crate::tasks::extract;
use crate::tasks::supervisor::capacity::Bounds;
use crate::tasks::supervisor::facts::Machine;
use crate::tasks::supervisor::presets;
use crate::tasks::supervisor::sim::replay::{self, Arrival, Replay, Sample, Settings};
use crate::tasks::supervisor::store::{self, SIZES_KEY};
use crate::tasks::supervisor::{inputs, observe};

/// Runs further apart than this belong to different bursts.
pub const BURST_GAP: u64 = 5 * 60;
/// The read's own statement timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A run whose length is unknown (and no run's is) lasts this long.
const UNKNOWN_LEN: u64 = 60;
const CHART_WIDTH: usize = 60;
const CHART_HEIGHT: u64 = 6;
/// The replays of the settings run side by side on at most this many threads (each holds a
/// week's waits: 24 bytes a run).
const REPLAY_THREADS: usize = 2;

/// What was replayed and under which settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub days: u32,
    /// Whose runs: our worker group's, or every run of the database.
    pub scope: String,
    pub runs: usize,
    pub bursts: usize,
    pub settings: Settings,
    pub rows: Vec<Row>,
    /// The fleet at each check under the operator's own settings.
    pub samples: Vec<Sample>,
    pub length: u64,
}

/// One setting's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub min: usize,
    pub max: usize,
    pub baked: bool,
    /// Median and p95 over the bursts, seconds.
    pub first_wait: (u64, u64),
    pub last_wait: (u64, u64),
    pub droplet_hours: f64,
    pub cost: f64,
    pub created: u32,
    pub peak: u64,
    pub killed: u32,
    pub unstarted: usize,
}

pub fn run(app: &App, days: u32, json_out: bool) -> anyhow::Result<ExitCode> {
    let opts = supervisor_options(app)?;
    let s = &app.settings;
    let url = s.database_url.as_ref().ok_or_else(|| {
        config_error(
            "DATABASE_URL is not set: ops simulate reads the webapp's runs from its database; set DATABASE_URL (the webapp's Postgres URL, as the supervisor task uses it) in the env file or the environment",
        )
    })?;
    let bounds = Bounds::new(s.supervisor_count, opts.min, opts.max).map_err(config_error)?;
    let state = State::open_read_only(&app.state_dir)?;
    let slug = inputs::size(state.as_ref(), s);
    let size = size_facts(app, state.as_ref(), &slug)?;
    let token = match (&s.trigger_worker_token, state.as_ref()) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(st)) => extract::load_record(st, &app.state_dir, s)?.map(|r| r.worker_token),
        (None, None) => None,
    };
    let mut client = Target::parse(url)?.connect(CONNECT_TIMEOUT)?;
    let (queues, scope) = match token {
        Some(t) => match webapp_db::lookup_token(&mut client, t.expose())? {
            TokenLookup::Known(g) => (
                vec![
                    g.master_queue.clone(),
                    format!("{}:scheduled", g.master_queue),
                ],
                // The webapp's names: escaped here, so the table, the chart and --json all
                // get them without control characters.
                format!(
                    "worker group {} (queue {})",
                    crate::redact::line(&g.name),
                    crate::redact::line(&g.master_queue)
                ),
            ),
            _ => (
                Vec::new(),
                "every run of the database (the webapp does not know the worker token)".into(),
            ),
        },
        None => (
            Vec::new(),
            "every run of the database (no worker token yet: ops run extract)".into(),
        ),
    };
    let read = webapp_db::arrivals(&mut client, days, &queues, READ_TIMEOUT)?;
    let yours = Settings {
        bounds,
        size,
        env_limit: read.env_limit,
        baked: opts.bake,
        scale_out_after: opts.scale_out_after,
        scale_in_after: opts.scale_in_after,
        drain_timeout: opts.drain_timeout,
    };
    let r = replay_all(&read, days, scope, &yours);
    if json_out {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
    } else {
        print!("{}", text(&r));
    }
    Ok(ExitCode::Success)
}

/// The supervisor task's options as `ops run` reads them: the first supervisor task of an
/// enabled profile, else of any profile.
fn supervisor_options(app: &App) -> anyhow::Result<SupervisorOptions> {
    let tasks = || {
        app.config.profiles.iter().flat_map(|p| {
            p.tasks.iter().filter_map(move |t| match &t.spec {
                TaskSpec::Supervisor(o) => Some((p.enabled && t.enabled, o)),
                _ => None,
            })
        })
    };
    tasks()
        .find(|(on, _)| *on)
        .or_else(|| tasks().next())
        .map(|(_, o)| o.clone())
        .ok_or_else(|| {
            config_error(format!(
                "{} has no supervisor task: ops simulate replays its settings; add one (as the bundled jobs.yaml's health profile has)",
                app.config.shown_path()
            ))
        })
}

/// SUPERVISOR_SIZE's CPUs, memory and price: from the sizes the supervisor task saved, else
/// `GET /v2/sizes`.
fn size_facts(app: &App, state: Option<&State>, slug: &str) -> anyhow::Result<Machine> {
    let saved = store::load::<Vec<Size>>(state, SIZES_KEY);
    let sizes = match (saved, &app.settings.digitalocean_token) {
        (Some(v), _) if v.iter().any(|z| z.slug == slug) => v,
        (_, Some(token)) => {
            let http = Http::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            DigitalOcean::new(&http, &app.settings.digitalocean_api_url, token, deadline).sizes()?
        }
        (_, None) => {
            return Err(config_error(format!(
                "SUPERVISOR_SIZE={slug}: its CPUs, memory and price are not known yet; set DIGITALOCEAN_TOKEN (ops simulate reads GET /v2/sizes, nothing else) or run the supervisor task once"
            )))
        }
    };
    sizes
        .iter()
        .find(|z| z.slug == slug)
        .map(observe::machine)
        .ok_or_else(|| {
            config_error(format!(
                "SUPERVISOR_SIZE={slug} is not a DigitalOcean size (GET /v2/sizes): set one such as s-2vcpu-2gb"
            ))
        })
}

/// The runs of the window as the replay takes them, and its length: from the start of the
/// window's first minute to the end of the current one.
pub fn arrivals(read: &Arrivals, days: u32) -> (Vec<Arrival>, u64) {
    let now_min = read.now.div_euclid(60);
    let start_min = now_min - i64::from(days) * 1440;
    let (secs, timed) = read
        .minutes
        .iter()
        .fold((0.0, 0u64), |(s, n), m| (s + m.secs, n + m.timed));
    let fallback = if timed > 0 {
        (secs / timed as f64).round() as u64
    } else {
        UNKNOWN_LEN
    };
    let mut out: Vec<Arrival> = Vec::new();
    for m in read.minutes.iter().filter(|m| m.minute >= start_min) {
        let len = if m.timed > 0 {
            (m.secs / m.timed as f64).round() as u64
        } else {
            fallback
        };
        let preset = presets::resolve(Some(&m.preset));
        let base = (m.minute - start_min) as u64 * 60;
        out.extend((0..m.runs).map(|i| Arrival {
            at: base + i * 60 / m.runs,
            len: len.max(1),
            preset,
        }));
    }
    out.sort_by_key(|a| a.at);
    (out, (now_min + 1 - start_min) as u64 * 60)
}

/// Each burst's first and last run (indexes into `arrivals`).
pub fn bursts(arrivals: &[Arrival]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in 0..arrivals.len() {
        match out.last_mut() {
            Some(b) if arrivals[i].at - arrivals[b.1].at < BURST_GAP => b.1 = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// The median and the 95th percentile (nearest rank).
fn median_p95(mut v: Vec<u64>) -> (u64, u64) {
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.95))
}

/// The operator's settings and the alternatives: `min` 0 or 1, `max` halved and half again,
/// the baked image on or off.
pub fn alternatives(yours: &Settings) -> Vec<(String, Settings)> {
    let Bounds { min, max } = yours.bounds;
    let with = |bounds: Bounds, baked: bool| Settings {
        bounds,
        baked,
        ..yours.clone()
    };
    let mut out = vec![("yours".to_string(), yours.clone())];
    let other_min = if min == 0 { 1 } else { 0 };
    out.push((
        format!("min {other_min}"),
        with(
            Bounds {
                min: other_min,
                max,
            },
            yours.baked,
        ),
    ));
    let down = (max / 2).max(min).max(1);
    if down < max {
        out.push((
            format!("max {down}"),
            with(Bounds { min, max: down }, yours.baked),
        ));
    }
    let up = max + max.div_ceil(2);
    out.push((
        format!("max {up}"),
        with(Bounds { min, max: up }, yours.baked),
    ));
    out.push((
        if yours.baked {
            "Ubuntu image"
        } else {
            "baked image"
        }
        .to_string(),
        with(yours.bounds, !yours.baked),
    ));
    out
}

fn figures(label: String, s: &Settings, r: &Replay, bursts: &[(usize, usize)]) -> Row {
    Row {
        label,
        min: s.bounds.min,
        max: s.bounds.max,
        baked: s.baked,
        first_wait: median_p95(bursts.iter().map(|b| r.waits[b.0]).collect()),
        last_wait: median_p95(bursts.iter().map(|b| r.waits[b.1]).collect()),
        droplet_hours: r.droplet_hours,
        cost: r.cost(&s.size),
        created: r.created,
        peak: r.peak,
        killed: r.killed,
        unstarted: r.unstarted,
    }
}

/// Each setting's replay, in order, on up to `REPLAY_THREADS` threads: the replays share
/// nothing but the runs, and a week of them takes seconds each.
fn replay_each(runs: &[Arrival], length: u64, settings: &[(String, Settings)]) -> Vec<Replay> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, REPLAY_THREADS);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((_, s)) = settings.get(i) else {
                return done;
            };
            done.push((i, replay::run(runs, length, s, 0)));
        }
    };
    let mut done: Vec<(usize, Replay)> = std::thread::scope(|scope| {
        // A helper the system cannot start leaves its share to this thread.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            // A replay that panicked is a bug: let it end the command as a panic would.
            all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        all
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The window replayed under the operator's settings and each alternative.
pub fn replay_all(read: &Arrivals, days: u32, scope: String, yours: &Settings) -> Replayed {
    let (runs, length) = arrivals(read, days);
    let bursts = bursts(&runs);
    let settings = alternatives(yours);
    let replays = replay_each(&runs, length, &settings);
    let mut samples = Vec::new();
    let rows = settings
        .into_iter()
        .zip(replays)
        .enumerate()
        .map(|(i, ((label, s), r))| {
            if i == 0 {
                samples = r.samples.clone();
            }
            figures(label, &s, &r, &bursts)
        })
        .collect();
    Replayed {
        days,
        scope,
        runs: runs.len(),
        bursts: bursts.len(),
        settings: yours.clone(),
        rows,
        samples,
        length,
    }
}

fn human(secs: u64) -> String {
    crate::duration::format(Duration::from_secs(secs))
}

/// The settings of a row; the operator's own are marked.
fn describe(row: &Row) -> String {
    format!(
        "{}min {}, max {}, {}",
        if row.label == "yours" { "yours: " } else { "" },
        row.min,
        row.max,
        if row.baked { "baked" } else { "Ubuntu" }
    )
}

/// The table, then the chart of the operator's own settings.
pub fn text(r: &Replayed) -> String {
    let s = &r.settings;
    let mut out = format!(
        "The last {} replayed: {} in {}, {}.\nSUPERVISOR_SIZE {} (${:.2}/month), {}, scale_out_after {}, scale_in_after {}.\n\n",
        count(u64::from(r.days), "day").trim_start_matches("1 "),
        count(r.runs as u64, "run"),
        count(r.bursts as u64, "burst"),
        r.scope,
        s.size.slug,
        s.size.price_monthly,
        match s.env_limit {
            Some(l) => format!("environment limit {l}"),
            None => "no environment limit".into(),
        },
        human(s.scale_out_after.as_secs()),
        human(s.scale_in_after.as_secs()),
    );
    let mut rows = vec![vec![
        "SETTINGS".to_string(),
        "FIRST RUN WAITS (MEDIAN / P95)".into(),
        "LAST RUN WAITS (MEDIAN / P95)".into(),
        "DROPLET-HOURS".into(),
        "COST".into(),
        "CREATED".into(),
        "PEAK".into(),
        "RUNS KILLED BY OPS".into(),
    ]];
    for row in &r.rows {
        rows.push(vec![
            describe(row),
            format!("{} / {}", human(row.first_wait.0), human(row.first_wait.1)),
            format!("{} / {}", human(row.last_wait.0), human(row.last_wait.1)),
            format!("{:.1}", row.droplet_hours),
            format!("${:.2}", row.cost),
            row.created.to_string(),
            row.peak.to_string(),
            row.killed.to_string(),
        ]);
    }
    out.push_str(&crate::report::table(&rows));
    for row in r.rows.iter().filter(|row| row.unstarted > 0) {
        out.push_str(&format!(
            "{}: {} runs had not started by the end\n",
            row.label, row.unstarted
        ));
    }
    out.push_str(&chart(r));
    out
}

/// `1 run`, `200 runs`.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The largest value of each column of the window.
fn columns(r: &Replayed, f: fn(&Sample) -> u64) -> Vec<u64> {
    let width = CHART_WIDTH as u64;
    let mut cols = vec![0u64; CHART_WIDTH];
    for s in &r.samples {
        let c = ((s.at * width) / r.length.max(1)).min(width - 1) as usize;
        cols[c] = cols[c].max(f(s));
    }
    cols
}

/// Waiting runs and droplets over the window, one column per 1/60 of it, in plain text.
fn chart(r: &Replayed) -> String {
    let mut out = String::new();
    let axis = format!(
        "{:7}{:<w$}now\n",
        "",
        format!("-{}", human(u64::from(r.days) * 86_400)),
        w = CHART_WIDTH - 3
    );
    for (title, f) in [
        (
            "waiting runs",
            (|s: &Sample| s.waiting) as fn(&Sample) -> u64,
        ),
        ("droplets", |s: &Sample| s.droplets),
    ] {
        let cols = columns(r, f);
        let peak = cols.iter().copied().max().unwrap_or(0);
        out.push_str(&format!("\n{title} (yours, most in each column)\n"));
        for level in (1..=CHART_HEIGHT).rev() {
            let label = if level == CHART_HEIGHT {
                peak.to_string()
            } else {
                String::new()
            };
            let line: String = cols
                .iter()
                .map(|&v| {
                    // A column reaches the levels up to its share of the peak (any load shows).
                    let h = if peak == 0 {
                        0
                    } else {
                        (v * CHART_HEIGHT).div_ceil(peak)
                    };
                    if h >= level {
                        '#'
                    } else {
                        ' '
                    }
                })
                .collect();
            out.push_str(&format!("{label:>5} |{}\n", line.trim_end()));
        }
        out.push_str(&format!("{:>5} +{}\n", 0, "-".repeat(CHART_WIDTH)));
        out.push_str(&axis);
    }
    out
}

fn wait_json((median, p95): (u64, u64)) -> serde_json::Value {
    json!({"median_secs": median, "p95_secs": p95})
}

pub fn to_json(r: &Replayed) -> serde_json::Value {
    let s = &r.settings;
    let width = r.length.div_ceil(CHART_WIDTH as u64);
    let waiting = columns(r, |s| s.waiting);
    let droplets = columns(r, |s| s.droplets);
    json!({
        "schema_version": SCHEMA_VERSION,
        "days": r.days,
        "scope": r.scope,
        "runs": r.runs,
        "bursts": r.bursts,
        "burst_gap_secs": BURST_GAP,
        "size": {"slug": s.size.slug, "vcpus": s.size.vcpus, "memory_mb": s.size.memory, "price_monthly": s.size.price_monthly},
        "env_limit": s.env_limit,
        "scale_out_after_secs": s.scale_out_after.as_secs(),
        "scale_in_after_secs": s.scale_in_after.as_secs(),
        "settings": r.rows.iter().map(|row| json!({
            "label": row.label,
            "min": row.min,
            "max": row.max,
            "baked": row.baked,
            "first_run_wait": wait_json(row.first_wait),
            "last_run_wait": wait_json(row.last_wait),
            "droplet_hours": (row.droplet_hours * 100.0).round() / 100.0,
            "cost_usd": (row.cost * 100.0).round() / 100.0,
            "droplets_created": row.created,
            "peak_droplets": row.peak,
            "runs_killed_by_ops": row.killed,
            "runs_not_started": row.unstarted,
        })).collect::<Vec<_>>(),
        "timeline": (0..CHART_WIDTH).map(|c| json!({
            "from_secs": c as u64 * width,
            "waiting_runs": waiting[c],
            "droplets": droplets[c],
        })).collect::<Vec<_>>(),
    })
}

/// The minutes the database would return for these runs (`at` seconds after the window's
/// first minute), as `webapp_db::arrivals` groups them: for tests and the docs' scenarios.
pub fn as_read(runs: &[Arrival], days: u32) -> Arrivals {
    let now = (i64::from(days) * 1440) * 60 + 30;
    let mut minutes: BTreeMap<(i64, &str), (u64, f64)> = BTreeMap::new();
    for a in runs {
        let e = minutes
            .entry(((a.at / 60) as i64, a.preset.name))
            .or_default();
        e.0 += 1;
        e.1 += a.len as f64;
    }
    Arrivals {
        minutes: minutes
            .into_iter()
            .map(|((minute, preset), (n, secs))| webapp_db::MinuteRuns {
                minute,
                preset: preset.into(),
                runs: n,
                secs,
                timed: n,
            })
            .collect(),
        env_limit: None,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::supervisor::sim::load::{self, Traffic};

    fn read(traffic: Traffic) -> Arrivals {
        Arrivals {
            env_limit: Some(load::ENV_LIMIT),
            ..as_read(&traffic.runs(), 1)
        }
    }

    #[test]
    fn a_minutes_runs_arrive_evenly_over_it_as_the_docs_loads_do() {
        let (runs, length) = arrivals(&read(Traffic::Burst), 1);
        assert_eq!(runs, Traffic::Burst.runs());
        assert_eq!(length, (1440 + 1) * 60);
        assert_eq!(bursts(&runs), vec![(0, 199)]);
        let (night, _) = arrivals(&read(Traffic::QuietNight), 1);
        assert_eq!(bursts(&night).len(), 16);
    }

    #[test]
    fn the_replay_of_the_burst_waits_as_the_scaling_simulation_does() {
        for (min, baked) in [(0, false), (0, true), (1, false), (1, true)] {
            let r = replay_all(
                &read(Traffic::Burst),
                1,
                "test".into(),
                &load::settings(min, baked),
            );
            let o = load::run(Traffic::Burst, min, baked, 0);
            assert_eq!(
                (r.rows[0].first_wait.0, r.rows[0].last_wait.0),
                (o.first_wait, o.last_wait),
                "min {min}, baked {baked}"
            );
            assert_eq!(r.rows[0].killed, 0);
        }
    }

    #[test]
    fn the_alternatives_flip_min_and_the_image_and_move_max_both_ways() {
        let labels: Vec<String> = alternatives(&load::settings(0, true))
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(
            labels,
            ["yours", "min 1", "max 6", "max 20", "Ubuntu image"]
        );
        let one: Vec<String> = alternatives(&Settings {
            bounds: Bounds { min: 1, max: 1 },
            ..load::settings(1, false)
        })
        .into_iter()
        .map(|(l, _)| l)
        .collect();
        assert_eq!(one, ["yours", "min 0", "max 2", "baked image"]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(median_p95(vec![]), (0, 0));
        assert_eq!(median_p95(vec![5]), (5, 5));
        assert_eq!(median_p95((1..=20).collect()), (10, 19));
    }

    /// docs/supervisor.md carries `ops simulate --days 1` on the docs' loads; the integration
    /// test `simulate::the_docs_scenarios_replayed_from_postgres_equal_the_docs` runs the binary
    /// on a database holding them and compares its output with the same text.
    #[test]
    fn the_simulate_output_in_the_docs_is_the_replays() {
        for (traffic, marker) in [
            (Traffic::Burst, "simulate-burst"),
            (Traffic::QuietNight, "simulate-night"),
        ] {
            let r = replay_all(
                &read(traffic),
                1,
                "worker group ops-test-group (queue ops-test-queue)".into(),
                &load::settings(0, true),
            );
            crate::tasks::supervisor::sim::docs_carry(
                (
                    &format!("<!-- {marker}:begin -->\n```\n"),
                    &format!("```\n<!-- {marker}:end -->"),
                ),
                &text(&r),
            );
        }
    }
}
