//! The small commands: list, render-*, history, check, completions.

use std::io::Write;

use chrono::Local;
use serde_json::json;

use crate::app::{self, App};
use crate::checklist::Checklist;
use crate::exit::ExitCode;
use crate::render::{self, Invocation};
use crate::report;
use crate::state::State;
use crate::summary::SCHEMA_VERSION;

pub fn list(app: &App, json_out: bool) -> anyhow::Result<ExitCode> {
    let now = Local::now().naive_local();
    let next = |p: &crate::config::Profile| {
        p.cron
            .next_after(now)
            .map(crate::timefmt::human_naive)
            .unwrap_or_else(|| "never".into())
    };
    let state = state_for_list(app);
    let held = |p: &crate::config::Profile| {
        state
            .as_ref()
            .and_then(|s| crate::profiles::ProfileState::load(s, &p.name).disabled_reason(&p.name))
    };
    let runs = |p: &crate::config::Profile| p.enabled && held(p).is_none();
    if json_out {
        let profiles: Vec<_> = app
            .config
            .profiles
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "cron": p.cron.as_str(),
                    "next_run": if runs(p) { p.cron.next_after(now).and_then(crate::timefmt::local_naive_rfc3339) } else { None },
                    "enabled": p.enabled,
                    "disabled_reason": held(p),
                    "timeout": crate::duration::format(p.timeout),
                    "tasks": p.tasks.iter().map(|t| json!({"name": t.name, "kind": t.kind(), "enabled": t.enabled})).collect::<Vec<_>>(),
                    "description": p.description,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "schema_version": SCHEMA_VERSION, "config": app.config.shown_path(), "profiles": profiles })
            )?
        );
        return Ok(ExitCode::Success);
    }
    let mut rows = vec![vec![
        "PROFILE".to_string(),
        "CRON".into(),
        "NEXT RUN".into(),
        "ENABLED".into(),
        "TASKS".into(),
        "DESCRIPTION".into(),
    ]];
    for p in &app.config.profiles {
        rows.push(vec![
            p.name.clone(),
            p.cron.as_str().to_string(),
            if runs(p) { next(p) } else { "-".into() },
            match (p.enabled, held(p)) {
                (false, _) => "no (jobs.yaml)".into(),
                (true, Some(why)) => why,
                (true, None) => "yes".into(),
            },
            p.tasks.len().to_string(),
            p.description.clone(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", app.config.shown_path())?;
    write!(out, "{}", report::table(&rows))?;
    Ok(ExitCode::Success)
}

/// Disabled by `ops disable` or auto-disabled: kept in the state, not in jobs.yaml. The
/// database is opened only when its directory does not say that none is; one that cannot be
/// read is said on stderr (the list itself comes from jobs.yaml).
fn state_for_list(app: &App) -> Option<State> {
    if crate::profiles::none_disabled(&app.state_dir) {
        return None;
    }
    let opened = crate::app::check_state_dir(&app.state_dir)
        .and_then(|()| State::open_read_only(&app.state_dir));
    match opened {
        Ok(state) => state,
        Err(e) => {
            eprintln!("ops: {e:#} (the list shows no profile as disabled)");
            None
        }
    }
}

pub fn render_crontab(app: &App) -> anyhow::Result<ExitCode> {
    let inv = Invocation::current(&app.config, &app.state_dir);
    print!("{}", render::crontab(&app.config, &inv));
    Ok(ExitCode::Success)
}

pub fn render_systemd(app: &App, out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    if let Some(why) = render::hidden_from_units(&app.state_dir) {
        log::warn!("{why}");
    }
    let inv = Invocation::current(&app.config, &app.state_dir);
    let units = render::systemd_units(&app.config, &inv)?;
    match out {
        None => {
            for (name, text) in &units {
                println!("### {name}\n{text}");
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            for (name, text) in &units {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
            println!(
                "next: systemctl daemon-reload && systemctl enable --now {}",
                units
                    .iter()
                    .filter(|(n, _)| n.ends_with(".timer"))
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    Ok(ExitCode::Success)
}

pub fn history(
    app: &App,
    profile: Option<&str>,
    limit: u32,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    // Any name: a profile removed from jobs.yaml keeps its history.
    let runs = match State::open_read_only(&app.state_dir)? {
        Some(state) => state.history(profile, limit.clamp(1, 10_000))?,
        None => Vec::new(),
    };
    if json_out {
        let doc = json!({"schema_version": SCHEMA_VERSION, "runs": runs});
        println!(
            "{}",
            crate::redact::redact(&serde_json::to_string_pretty(&doc)?)
        );
    } else if runs.is_empty() {
        println!("no runs recorded yet in {}", app.state_dir.display());
    } else {
        print!("{}", crate::redact::redact(&report::history_table(&runs)));
    }
    Ok(ExitCode::Success)
}

/// `ops history show <id>`: one run in full.
pub fn history_show(app: &App, id: i64, json_out: bool) -> anyhow::Result<ExitCode> {
    let run = match State::open_read_only(&app.state_dir)? {
        Some(state) => state.run_by_id(id)?,
        None => None,
    };
    let Some(run) = run else {
        eprintln!(
            "ops: no run {id} in {} (ops history lists the IDs)",
            app.state_dir.display()
        );
        return Ok(ExitCode::TaskFailed);
    };
    let text = if json_out {
        serde_json::to_string_pretty(&json!({"schema_version": SCHEMA_VERSION, "run": run}))?
    } else {
        report::run_detail(&run)
    };
    println!("{}", crate::redact::redact(text.trim_end()));
    Ok(ExitCode::Success)
}

/// `ops events`: what ops changed outside itself, oldest first.
pub fn events(
    app: &App,
    since: Option<&str>,
    profile: Option<&str>,
    limit: u32,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let from = since
        .map(|s| crate::duration::since(s, crate::state::now_ms()))
        .transpose()
        .map_err(crate::exit::config_error)?;
    let events = match State::open_read_only(&app.state_dir)? {
        Some(state) => state.events(from, profile, limit.clamp(1, 10_000))?,
        None => Vec::new(),
    };
    if json_out {
        println!(
            "{}",
            crate::redact::redact(&serde_json::to_string_pretty(
                &json!({"schema_version": SCHEMA_VERSION, "events": events})
            )?)
        );
    } else if events.is_empty() {
        println!(
            "no change recorded{} in {}",
            since.map(|s| format!(" since {s}")).unwrap_or_default(),
            app.state_dir.display()
        );
    } else {
        print!("{}", crate::redact::redact(&report::events_table(&events)));
    }
    Ok(ExitCode::Success)
}

/// Offline validation (the supercronic unit's `ExecStartPre`; the package runs it with
/// `--strict` before enabling the timers): problems that would stop every run are errors
/// (exit 2, raised while loading or listed ✗); gaps that only some tasks need are warnings.
pub fn check(app: &App, strict: bool, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = &app.settings;
    let mut c = Checklist::new(json_out);
    c.ok(format!(
        "{}: {} profiles ({} enabled)",
        app.config.shown_path(),
        app.config.profiles.len(),
        app.config.profiles.iter().filter(|p| p.enabled).count()
    ));
    let inv = Invocation::current(&app.config, &app.state_dir);
    render::systemd_units(&app.config, &inv)?;
    c.ok("schedules render for supercronic and systemd timers");
    match &app.env_file {
        Some(p) => c.ok(format!("env file {}", p.display())),
        None => c.note("no env file (using the process environment only)"),
    }
    c.ok("environment values are valid");
    let unknown = crate::envfile::unknown_names(&app.env);
    for u in &unknown {
        c.warn(u.message());
    }
    let typos = unknown.iter().filter(|u| u.suggestion.is_some()).count();
    // Parsed as every run will: an unknown parameter would fail each of them.
    for (var, url) in [
        ("DATABASE_URL", &s.database_url),
        ("OPS_LOCK_DATABASE_URL", &s.ops_lock_database_url),
    ] {
        if let Some(url) = url {
            match crate::clients::postgres::Target::parse(url) {
                Ok(t) => c.ok(format!("{var} parses ({})", t.shown)),
                Err(e) => c.fail(format!("{var}: {e:#}")),
            }
        }
    }
    if c.failures() > 0 {
        return c.finish("check", ExitCode::Config);
    }
    if app::dir_is_usable(&app.state_dir) {
        c.ok(format!(
            "state directory {} is writable",
            app.state_dir.display()
        ));
    } else {
        c.fail(format!(
            "state directory {} is not writable (create it for the ops user or set --state-dir / OPS_STATE_DIR)",
            app.state_dir.display()
        ));
        return c.finish("check", ExitCode::TaskFailed);
    }
    if s.check_interval.is_some() {
        c.warn("CHECK_INTERVAL is set but superseded: the cadence comes from cron: in jobs.yaml (remove it)");
    }
    if !s.is_active {
        c.warn("IS_ACTIVE=false: every run exits at once with \"monitoring disabled\"");
    }
    let (missing, uses_supervisor) = missing_settings(app, &mut c);
    if uses_supervisor && s.digitalocean_token.is_some() {
        if let Some(problem) = crate::tasks::supervisor::visibility_problem(s) {
            c.fail(problem);
            return c.finish("check", ExitCode::Config);
        }
    }
    if strict && typos > 0 {
        // A misspelt setting is one ops runs without: the package must not start on it.
        c.fail(format!(
            "--strict: {typos} setting name(s) misspelt (fix them as suggested above)"
        ));
        return c.finish("check", ExitCode::Config);
    }
    if strict && missing > 0 {
        // The package enables its timers only when this passes: nothing that would fail every
        // minute starts before the env file is filled in.
        c.fail(format!(
            "--strict: {missing} setting(s) the enabled profiles need are missing"
        ));
        return c.finish("check", ExitCode::Config);
    }
    c.finish("check", ExitCode::Success)
}

/// The settings the enabled profiles' tasks need and lack, each a warning: how many, and
/// whether a supervisor task is enabled.
fn missing_settings(app: &App, c: &mut Checklist) -> (usize, bool) {
    let s = &app.settings;
    let kinds: Vec<&str> = app
        .config
        .profiles
        .iter()
        .filter(|p| p.enabled)
        .flat_map(|p| p.tasks.iter().filter(|t| t.enabled).map(|t| t.kind()))
        .collect();
    let uses = |k: &str| kinds.contains(&k);
    let mut missing = 0;
    let gaps = [
        (
            (uses("extract") || uses("replication")) && s.railway_token.is_none(),
            "RAILWAY_API_TOKEN (or RAILWAY_TOKEN) is not set: extract and the Postgres restart need it",
        ),
        (
            (uses("extract") || uses("replication"))
                && (s.railway_project_id.is_none() || s.railway_environment_id.is_none()),
            "RAILWAY_PROJECT_ID / RAILWAY_ENVIRONMENT_ID are not set: extract needs them",
        ),
        (
            uses("replication") && s.database_url.is_none(),
            "DATABASE_URL is not set: the replication task needs it",
        ),
        (
            uses("supervisor") && s.digitalocean_token.is_none(),
            "DIGITALOCEAN_TOKEN is not set: the supervisor task needs it",
        ),
    ];
    for (_, msg) in gaps.iter().filter(|(gap, _)| *gap) {
        c.warn(msg);
        missing += 1;
    }
    (missing, uses("supervisor"))
}

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::cli::command(&[]);
    clap_complete::generate(shell, &mut cmd, "ops", &mut std::io::stdout());
    Ok(ExitCode::Success)
}

/// `ops manpage`: ops(1) in roff, generated from the same definitions as `--help`.
pub fn manpage() -> anyhow::Result<ExitCode> {
    let cmd = crate::cli::command(&[]);
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
    Ok(ExitCode::Success)
}

pub fn render_cloud_init(app: &App, show_secrets: bool) -> anyhow::Result<ExitCode> {
    let state = State::open_read_only(&app.state_dir)?;
    let record = match &state {
        Some(st) => crate::tasks::extract::load_record(st, &app.state_dir, &app.settings)?,
        None => None,
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "no config record yet in {}: run `ops run extract` first",
            app.state_dir.display()
        )
    })?;
    let name = format!(
        "{}-<created>",
        crate::tasks::supervisor::deployment_tag(&app.settings)
    );
    let text = crate::cloudinit::render(&record, &app.settings, &name)?;
    if show_secrets {
        print!("{text}");
    } else {
        print!("{}", crate::redact::redact(&text));
    }
    Ok(ExitCode::Success)
}

pub fn set_enabled(app: &App, profile: &str, enabled: bool) -> anyhow::Result<ExitCode> {
    app.config.profile(profile)?;
    let state = State::open(&app.state_dir)?;
    let now = crate::state::now_ms();
    crate::profiles::ProfileState::update(&state, profile, now, |ps| {
        ps.disabled = !enabled;
        ps.auto_disabled = false;
        if enabled {
            ps.healthy_streak = 0;
        }
        ps.changed_at = now;
    })?;
    if enabled {
        println!("{profile}: enabled (its schedule runs it again)");
    } else {
        println!("{profile}: disabled (runs exit at once until `ops enable {profile}`)");
    }
    Ok(ExitCode::Success)
}

/// `ops test-alert`: every configured channel, one line each.
pub fn test_alert(app: &App) -> anyhow::Result<ExitCode> {
    let (configured, failed) = crate::notify::test_alert(&app.settings, &crate::runner::hostname());
    if configured == 0 {
        return Err(crate::exit::config_error(
            "no alert channel configured: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID, or OPS_WEBHOOK_URL (docs/configuration.md, \"Alerts\")",
        ));
    }
    Ok(if failed > 0 {
        ExitCode::TaskFailed
    } else {
        ExitCode::Success
    })
}
