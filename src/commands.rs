//! The small commands: list, render-*, history, check, completions.

use std::io::Write;

use chrono::Local;
use serde_json::json;

use crate::app::{self, App};
use crate::exit::ExitCode;
use crate::render::{self, Invocation};
use crate::report;
use crate::state::State;

pub fn list(app: &App, json_out: bool) -> anyhow::Result<ExitCode> {
    let now = Local::now().naive_local();
    let next = |p: &crate::config::Profile| {
        p.cron
            .next_after(now)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "never".into())
    };
    if json_out {
        let profiles: Vec<_> = app
            .config
            .profiles
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "cron": p.cron.as_str(),
                    "next_run": if p.enabled { Some(next(p)) } else { None },
                    "enabled": p.enabled,
                    "timeout": crate::duration::format(p.timeout),
                    "tasks": p.tasks.iter().map(|t| json!({"name": t.name, "kind": t.kind(), "enabled": t.enabled})).collect::<Vec<_>>(),
                    "description": p.description,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "config": app.config.shown_path(), "profiles": profiles })
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
            if p.enabled { next(p) } else { "-".into() },
            if p.enabled { "yes" } else { "no" }.into(),
            p.tasks.len().to_string(),
            p.description.clone(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", app.config.shown_path())?;
    write!(out, "{}", report::table(&rows))?;
    Ok(ExitCode::Success)
}

pub fn render_crontab(app: &App) -> anyhow::Result<ExitCode> {
    let inv = Invocation::current(&app.config, &app.state_dir);
    print!("{}", render::crontab(&app.config, &inv));
    Ok(ExitCode::Success)
}

pub fn render_systemd(app: &App, out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
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
        println!(
            "{}",
            crate::redact::redact(&serde_json::to_string_pretty(&runs)?)
        );
    } else if runs.is_empty() {
        println!("no runs recorded yet in {}", app.state_dir.display());
    } else {
        print!("{}", crate::redact::redact(&report::history_table(&runs)));
    }
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
            crate::redact::redact(&serde_json::to_string_pretty(&events)?)
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

/// Offline validation, fit for `ExecStartPre`: problems that would stop every run are errors
/// (exit 2, raised while loading); gaps that only some tasks need are warnings.
pub fn check(app: &App, strict: bool) -> anyhow::Result<ExitCode> {
    let s = &app.settings;
    println!(
        "✓ {}: {} profiles ({} enabled)",
        app.config.shown_path(),
        app.config.profiles.len(),
        app.config.profiles.iter().filter(|p| p.enabled).count()
    );
    let inv = Invocation::current(&app.config, &app.state_dir);
    render::systemd_units(&app.config, &inv)?;
    println!("✓ schedules render for supercronic and systemd timers");
    match &app.env_file {
        Some(p) => println!("✓ env file {}", p.display()),
        None => println!("· no env file (using the process environment only)"),
    }
    println!("✓ environment values are valid");
    if app::dir_is_usable(&app.state_dir) {
        println!("✓ state directory {} is writable", app.state_dir.display());
    } else {
        println!(
            "✗ state directory {} is not writable (create it for the ops user or set --state-dir / OPS_STATE_DIR)",
            app.state_dir.display()
        );
        return Ok(ExitCode::TaskFailed);
    }
    if s.check_interval.is_some() {
        println!("! CHECK_INTERVAL is set but superseded: the cadence comes from cron: in jobs.yaml (remove it)");
    }
    if !s.is_active {
        println!("! IS_ACTIVE=false: every run exits at once with \"monitoring disabled\"");
    }
    let kinds: Vec<&str> = app
        .config
        .profiles
        .iter()
        .filter(|p| p.enabled)
        .flat_map(|p| p.tasks.iter().filter(|t| t.enabled).map(|t| t.kind()))
        .collect();
    let uses = |k: &str| kinds.contains(&k);
    let missing = std::cell::Cell::new(0);
    let warn = |cond: bool, msg: &str| {
        if cond {
            println!("! {msg}");
            missing.set(missing.get() + 1);
        }
    };
    warn(
        (uses("extract") || uses("replication")) && s.railway_token.is_none(),
        "RAILWAY_API_TOKEN (or RAILWAY_TOKEN) is not set: extract and the Postgres restart need it",
    );
    warn(
        (uses("extract") || uses("replication"))
            && (s.railway_project_id.is_none() || s.railway_environment_id.is_none()),
        "RAILWAY_PROJECT_ID / RAILWAY_ENVIRONMENT_ID are not set: extract needs them",
    );
    warn(
        uses("replication") && s.database_url.is_none(),
        "DATABASE_URL is not set: the replication task needs it",
    );
    warn(
        uses("supervisor") && s.digitalocean_token.is_none(),
        "DIGITALOCEAN_TOKEN is not set: the supervisor task needs it",
    );
    if uses("supervisor") && s.digitalocean_token.is_some() {
        if let Some(problem) = crate::tasks::supervisor::visibility_problem(s) {
            println!("✗ {problem}");
            return Ok(ExitCode::Config);
        }
    }
    if strict && missing.get() > 0 {
        // The package enables its timers only when this passes: nothing that would fail every
        // minute starts before the env file is filled in.
        println!(
            "✗ --strict: {} setting(s) the enabled profiles need are missing",
            missing.get()
        );
        return Ok(ExitCode::Config);
    }
    Ok(ExitCode::Success)
}

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "ops", &mut std::io::stdout());
    Ok(ExitCode::Success)
}

/// `ops manpage`: ops(1) in roff, generated from the same definitions as `--help`.
pub fn manpage() -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    let cmd = crate::cli::Cli::command();
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
    let mut ps = crate::profiles::ProfileState::load(&state, profile);
    ps.disabled = !enabled;
    ps.auto_disabled = false;
    if enabled {
        ps.healthy_streak = 0;
    }
    ps.changed_at = crate::state::now_ms();
    ps.save(&state, profile, ps.changed_at)?;
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
