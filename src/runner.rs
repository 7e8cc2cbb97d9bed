//! `ops run <profile>`: lock, record, run the tasks in order within the profile's deadline,
//! record the results, print the summary.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::{Profile, Task};
use crate::exit::ExitCode;
use crate::lock;
use crate::notify;
use crate::profiles::ProfileState;
use crate::redact::{line, redact};
use crate::report;
use crate::state::{self, State, TaskRecord};
use crate::task::{self, Outcome, Status, TaskCtx};
use crate::tasks;

/// How far past its deadline a run may go before the watchdog ends the process.
pub const WATCHDOG_GRACE: Duration = Duration::from_secs(3);

pub use crate::summary::{RunSummary, TaskSummary};

/// The flags of `ops run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub json: bool,
    pub reset_breaker: bool,
    /// Extract re-reads Railway even when its record is fresh.
    pub refresh: bool,
    /// A dry run that plans changes exits `ExitCode::Changes` (3), as terraform's
    /// `plan -detailed-exitcode` does (with 2, which ops already gives configuration errors).
    pub detailed_exitcode: bool,
    /// Extract may create a worker group even though other supervisors serve runs.
    pub allow_new_worker_group: bool,
}

/// The run's results into the history, in one transaction.
fn record_run(
    state: &mut State,
    run_id: i64,
    summary: &RunSummary,
    now: i64,
) -> anyhow::Result<()> {
    let records: Vec<TaskRecord> = summary
        .tasks
        .iter()
        .map(|t| TaskRecord {
            task: t.name.clone(),
            kind: t.kind.clone(),
            status: t.status.as_str().to_string(),
            duration_ms: t.duration_ms,
            detail: t.detail.join("\n"),
        })
        .collect();
    let failed: Vec<&str> = summary
        .tasks
        .iter()
        .filter(|t| t.status.is_failure())
        .map(|t| t.name.as_str())
        .collect();
    let brief = if failed.is_empty() {
        String::new()
    } else {
        format!("failed: {}", failed.join(", "))
    };
    state.finish_run(run_id, &summary.status, now, &brief, &records)
}

pub fn run(app: &App, name: &str, opts: &RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions { dry_run, json, .. } = *opts;
    let profile = app.config.profile(name)?;
    if !app.settings.is_active {
        log::info!("monitoring disabled (IS_ACTIVE=false): not running {name}");
        println!("monitoring disabled (IS_ACTIVE=false): {name} not run");
        return Ok(ExitCode::Success);
    }
    if !profile.enabled {
        log::warn!("profile {name} has enabled: false in jobs.yaml; running it because it was asked for by name");
    }
    if dry_run {
        return Ok(run_dry(app, profile, opts));
    }

    let started_ms = state::now_ms();
    let mut state = State::open(&app.state_dir)?;
    let host = hostname();
    let Some(_profile_lock) = lock::try_lock(&app.state_dir, &format!("profile-{name}"))? else {
        let why =
            format!("another `ops run {name}` is still running (lock held); this tick is skipped");
        return skipped(&state, name, started_ms, &host, &why, json);
    };
    // Cross-host lock: held for the whole run on a Postgres session of its own.
    let _host_lock = match host_lock(app, name)? {
        HostLock::Held(client) => Some(client),
        HostLock::NotUsed => None,
        HostLock::Busy => {
            let why = format!("another host is running {name} (Postgres advisory lock held); this tick is skipped");
            return skipped(&state, name, started_ms, &host, &why, json);
        }
    };
    if let Some(reason) = ProfileState::load(&state, name).disabled_reason(name) {
        crate::profiles::saw_disabled(&state);
        log::info!("{name}: {reason}");
        println!("{name}: {reason}");
        return Ok(ExitCode::Success);
    }
    let interrupted = state.mark_interrupted(name, started_ms)?;
    if interrupted > 0 {
        log::warn!(
            "{interrupted} earlier run(s) of {name} ended without finishing (killed or crashed)"
        );
    }
    let run_id = state.start_run(name, started_ms, &host)?;
    let watchdog = Watchdog::start(app, run_id, profile);
    if let Some(url) = &profile.ping_url {
        notify::ping(url, "/start", None);
    }
    let summary = {
        let announcer = notify::Announcer::new(&app.settings, &state, name, &host);
        execute(app, profile, Some(&state), Some(&announcer), opts)
    };
    let now = state::now_ms();
    record_run(&mut state, run_id, &summary, now)?;
    drop(watchdog);

    let ok = summary.status != "failed";
    // Counted on the record as it is now: an `ops disable` made during the run stays.
    let mut auto_disable = false;
    let ps = ProfileState::update(&state, name, now, |ps| {
        auto_disable = count_streak(app, ps, name, ok, now);
    })?;
    tell(app, &state, profile, &summary, &host, now);
    let code = finish_output(&summary, json, crate::logging::stdout_is_journal(&app.env));
    if auto_disable && !json {
        println!(
            "{name}: auto-disabled after {} healthy runs (ops enable {name} to resume)",
            ps.healthy_streak
        );
    }
    Ok(code)
}

/// After the run: the alert channels, and the dead man's switch.
fn tell(app: &App, state: &State, profile: &Profile, summary: &RunSummary, host: &str, now: i64) {
    let ok = summary.status != "failed";
    if let Err(e) = notify::after_run(
        &app.settings,
        state,
        summary,
        profile.renotify_after,
        profile.notify_changes,
        host,
        now,
    ) {
        log::warn!("{}: alerting failed: {e:#}", profile.name);
    }
    if let Some(url) = &profile.ping_url {
        // The summary rides along only with `ping_body: true`: it names droplet addresses, the
        // webapp's origin and SQL, and the ping goes to a third party.
        let body = profile.ping_body.then(|| report::run_table(summary));
        notify::ping(url, if ok { "" } else { "/fail" }, body.as_deref());
    }
}

/// The profile's healthy streak after this run, and whether AUTO_DISABLE disables it now.
fn count_streak(app: &App, ps: &mut ProfileState, name: &str, ok: bool, now: i64) -> bool {
    ps.skipped_streak = 0;
    ps.healthy_streak = if ok {
        ps.healthy_streak.saturating_add(1)
    } else {
        0
    };
    let auto_disable = app.settings.auto_disable
        && !ps.disabled
        && ps.healthy_streak >= app.settings.healthy_cycles_before_disable;
    if auto_disable {
        ps.disabled = true;
        ps.auto_disabled = true;
        ps.changed_at = now;
        log::warn!("{name}: {} healthy runs in a row with AUTO_DISABLE=true: the profile disables itself until `ops enable {name}`", ps.healthy_streak);
    }
    auto_disable
}

/// `--dry-run`: the state read-only (or none), nobody told, nothing written.
fn run_dry(app: &App, profile: &Profile, opts: &RunOptions) -> ExitCode {
    let state = match State::open_read_only(&app.state_dir) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("state database unreadable, dry run continues without it: {e:#}");
            None
        }
    };
    let summary = execute(app, profile, state.as_ref(), None, opts);
    let code = finish_output(
        &summary,
        opts.json,
        crate::logging::stdout_is_journal(&app.env),
    );
    if code == ExitCode::Success && opts.detailed_exitcode && summary.has_planned_changes() {
        return ExitCode::Changes;
    }
    code
}

/// A tick skipped because another run holds the profile (here or on another host): recorded,
/// counted in the skipped streak, said once.
fn skipped(
    state: &State,
    name: &str,
    started_ms: i64,
    host: &str,
    why: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    log::warn!("{why}");
    state.record_skipped(name, started_ms, host, why)?;
    ProfileState::update(state, name, started_ms, |ps| {
        ps.skipped_streak = ps.skipped_streak.saturating_add(1);
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({"schema_version": crate::summary::SCHEMA_VERSION, "profile": name, "status": "skipped", "reason": why})
        );
    } else {
        println!("{name}: skipped: {why}");
    }
    Ok(ExitCode::Success)
}

fn finish_output(summary: &RunSummary, json: bool, journal: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            redact(&serde_json::to_string_pretty(summary).unwrap_or_default())
        );
    } else if journal {
        // Each task logged its line already: the table every minute would only repeat them.
        let line = format!(
            "profile {}: {} in {}{}",
            summary.profile,
            summary.status,
            report::fmt_ms(summary.duration_ms),
            summary
                .changes
                .as_ref()
                .map(|c| format!("; {c}"))
                .unwrap_or_default()
        );
        if summary.status == "failed" {
            log::error!("{line}");
        } else {
            log::info!("{line}");
        }
    } else {
        print!("{}", redact(&report::run_table(summary)));
    }
    if summary.status == "failed" && summary.tasks.iter().any(|t| t.config_error) {
        ExitCode::Config
    } else if summary.status == "failed" {
        ExitCode::TaskFailed
    } else {
        ExitCode::Success
    }
}

fn execute(
    app: &App,
    profile: &Profile,
    state: Option<&State>,
    announcer: Option<&dyn task::Announce>,
    opts: &RunOptions,
) -> RunSummary {
    let started = Instant::now();
    let started_at = crate::timefmt::now_rfc3339();
    let deadline = started + profile.timeout;
    let mut results = Vec::with_capacity(profile.tasks.len());
    let run = ProfileRun {
        state,
        dry_run: opts.dry_run,
        reset_breaker: opts.reset_breaker,
        refresh: opts.refresh,
        allow_new_worker_group: opts.allow_new_worker_group,
        announcer,
        deadline,
        handoff: task::Handoff::default(),
    };
    for task in &profile.tasks {
        let t0 = Instant::now();
        let outcome = run_task(app, profile, task, &run);
        let elapsed = t0.elapsed().as_millis() as u64;
        // Each line escaped here: the report, history, `--json`, alerts and the ping read these.
        let detail: Vec<String> = outcome.detail.iter().map(|l| line(l)).collect();
        let actions: Vec<task::ActionRecord> = outcome
            .actions
            .iter()
            .map(|a| task::ActionRecord {
                action: line(&a.action),
                result: line(&a.result),
                ..a.clone()
            })
            .collect();
        let summary = task_summary(&outcome, &detail, &actions, opts.dry_run);
        let warnings: Vec<String> = outcome.warnings.iter().map(|w| line(w)).collect();
        match outcome.status {
            Status::Failed => log::error!("{}/{}: failed: {summary}", profile.name, task.name),
            status => log::info!(
                "{}/{}: {}: {summary}",
                profile.name,
                task.name,
                status.as_str()
            ),
        }
        for w in &warnings {
            log::warn!("{}/{}: {w}", profile.name, task.name);
        }
        results.push(TaskSummary {
            name: task.name.clone(),
            kind: task.kind().to_string(),
            status: outcome.status,
            duration_ms: elapsed,
            summary,
            detail,
            warnings,
            config_error: outcome.config_error,
            actions,
        });
    }
    let status = if results.iter().any(|t| t.status.is_failure()) {
        "failed"
    } else {
        "ok"
    };
    RunSummary {
        schema_version: crate::summary::SCHEMA_VERSION,
        profile: profile.name.clone(),
        status: status.to_string(),
        dry_run: opts.dry_run,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        changes: report::changes_line(&results, opts.dry_run),
        tasks: results,
    }
}

/// A task's line for the journal: its own summary; a failure's first line; its changes; else
/// its headline.
fn task_summary(
    outcome: &Outcome,
    detail: &[String],
    actions: &[task::ActionRecord],
    dry_run: bool,
) -> String {
    let headline = detail.first().cloned().unwrap_or_default();
    if outcome.status == Status::Failed {
        return headline;
    }
    if let Some(s) = &outcome.summary {
        return line(s);
    }
    let one = TaskSummary {
        name: String::new(),
        kind: String::new(),
        status: outcome.status,
        duration_ms: 0,
        summary: String::new(),
        detail: Vec::new(),
        warnings: Vec::new(),
        config_error: false,
        actions: actions.to_vec(),
    };
    match report::changes_line(std::slice::from_ref(&one), dry_run) {
        Some(line) if !actions.is_empty() => line,
        _ => headline,
    }
}

/// What the tasks of one profile run share.
struct ProfileRun<'a> {
    state: Option<&'a State>,
    dry_run: bool,
    reset_breaker: bool,
    refresh: bool,
    allow_new_worker_group: bool,
    announcer: Option<&'a dyn task::Announce>,
    deadline: Instant,
    handoff: task::Handoff,
}

fn run_task(app: &App, profile: &Profile, task: &Task, run: &ProfileRun) -> Outcome {
    let (state, dry_run, reset_breaker, profile_deadline) =
        (run.state, run.dry_run, run.reset_breaker, run.deadline);
    if !task.enabled {
        return Outcome::new(Status::Skipped, "disabled in jobs.yaml (enabled: false)");
    }
    let now = Instant::now();
    if now >= profile_deadline {
        return Outcome::new(
            Status::Failed,
            format!(
                "not started: the profile's timeout ({}) was reached",
                crate::duration::format(profile.timeout)
            ),
        );
    }
    let deadline = task
        .timeout
        .map(|t| (now + t).min(profile_deadline))
        .unwrap_or(profile_deadline);
    let budget = match task.timeout {
        Some(t) if now + t <= profile_deadline => t,
        _ => profile_deadline - now,
    };
    // Built-in kinds act on shared resources: two profiles never act on them at once.
    let _resource_lock = if task.kind() != "exec" && !dry_run {
        match lock::try_lock(&app.state_dir, &format!("task-{}", task.kind())) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                return Outcome::new(
                    Status::Skipped,
                    format!(
                        "another profile is running the {} task right now",
                        task.kind()
                    ),
                )
            }
            Err(e) => return Outcome::new(Status::Failed, format!("{e:#}")),
        }
    } else {
        None
    };
    let ctx = TaskCtx {
        settings: &app.settings,
        env: &app.env,
        state,
        state_dir: &app.state_dir,
        profile: &profile.name,
        task: &task.name,
        announcer: run.announcer,
        allow_new_worker_group: run.allow_new_worker_group,
        dry_run,
        deadline,
        budget,
        reset_breaker,
        refresh: run.refresh,
        handoff: &run.handoff,
        changes: Default::default(),
    };
    match tasks::run(task, &ctx) {
        Ok(outcome) => outcome,
        // The error, then what the task changed before it (the report keeps every action).
        Err(e) => {
            let mut detail = vec![format!("{e:#}")];
            detail.extend(
                ctx.changes
                    .take()
                    .into_iter()
                    .map(|c| format!("before the failure: {c}")),
            );
            Outcome {
                config_error: crate::exit::classify(&e) == crate::exit::ExitCode::Config,
                ..Outcome::lines(Status::Failed, detail)
            }
        }
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Ends the process when a run overstays its profile timeout: a blocked built-in task cannot
/// hold the profile lock forever. It kills an exec child's process group and records the run
/// as failed on a connection of its own first.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    fn start(app: &App, run_id: i64, profile: &Profile) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let dir = app.state_dir.clone();
        let limit = profile.timeout + WATCHDOG_GRACE;
        let name = profile.name.clone();
        let timeout = profile.timeout;
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                tasks::exec::kill_child_group(libc::SIGKILL);
                let msg = format!(
                    "run exceeded the profile timeout ({}) and was stopped",
                    crate::duration::format(timeout)
                );
                log::error!("{name}: {msg}");
                if let Ok(conn) = rusqlite::Connection::open_with_flags(
                    dir.join(state::DB_FILE),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
                ) {
                    let _ = conn.busy_timeout(Duration::from_secs(1));
                    let _ = conn.execute(
                        "UPDATE runs SET status = 'failed', finished_at = ?2, summary = ?3 WHERE id = ?1",
                        rusqlite::params![run_id, state::now_ms(), msg],
                    );
                }
                println!("{name}: failed: {msg}");
                std::process::exit(1);
            }
        });
        Watchdog { cancel: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
    }
}

enum HostLock {
    NotUsed,
    Held(Box<postgres::Client>),
    Busy,
}

/// `lock: postgres` (or `OPS_LOCK=postgres`): `pg_try_advisory_lock` per profile on
/// `OPS_LOCK_DATABASE_URL` or `DATABASE_URL`. Released when the session ends, so a crash never
/// leaves it behind. When Postgres cannot be reached the run fails: acting without the lock
/// could mean two hosts acting at once.
fn host_lock(app: &App, profile: &str) -> anyhow::Result<HostLock> {
    let mode = match app.settings.ops_lock.as_deref() {
        Some("postgres") => crate::config::LockMode::Postgres,
        Some(_) => crate::config::LockMode::Local,
        None => app.config.lock,
    };
    if mode != crate::config::LockMode::Postgres {
        return Ok(HostLock::NotUsed);
    }
    let url = app
        .settings
        .ops_lock_database_url
        .as_ref()
        .or(app.settings.database_url.as_ref())
        .ok_or_else(|| {
            crate::exit::config_error("lock: postgres needs OPS_LOCK_DATABASE_URL or DATABASE_URL")
        })?;
    let target = crate::clients::postgres::Target::parse(url)?;
    let mut client = target
        .connect(Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("cross-host lock: {e:#}; not running {profile} without it"))?;
    let digest = crate::sealed::fingerprint(&["trigger-ops-profile-lock", profile]);
    let key = i64::from_str_radix(&digest[..15], 16).unwrap_or(0);
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .map_err(|e| {
            anyhow::anyhow!(
                "cross-host lock: {}",
                crate::clients::postgres::describe(&e)
            )
        })?
        .get(0);
    Ok(if got {
        HostLock::Held(Box::new(client))
    } else {
        HostLock::Busy
    })
}
