//! trigger-ops: keeps a self-hosted Trigger.dev v4 deployment healthy. `main` calls [`main`];
//! everything else lives here so tests can reach it.

pub mod app;
pub mod checklist;
pub mod cli;
pub mod clients;
pub mod cloudinit;
pub mod commands;
pub mod config;
pub mod digest;
pub mod doctor;
pub mod duration;
pub mod envfile;
pub mod exit;
pub mod lock;
pub mod logging;
pub mod manifests;
pub mod notify;
pub mod privilege;
pub mod problems;
pub mod profiles;
pub mod prune;
pub mod record;
pub mod redact;
pub mod registry;
pub mod release;
pub mod render;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod sealed;
pub mod serve;
pub mod settings;
pub mod simulate;
pub mod state;
pub mod status;
pub mod summary;
pub mod task;
pub mod tasks;
pub mod timefmt;
pub mod window;

use crate::cli::{Cli, Cmd};
use crate::exit::ExitCode;

/// Parses the process's arguments, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    main_with(std::env::args_os().collect())
}

/// Parses `args` (the program's name first), runs the command, and returns the exit code.
pub fn main_with(args: Vec<std::ffi::OsString>) -> i32 {
    // Behave like a Unix filter: `ops list | head` ends quietly instead of panicking.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    redact::install_panic_hook();
    // Only a help request reads jobs.yaml this early, to name its profiles.
    let wants_help = args
        .iter()
        .any(|a| a == "--help" || a == "-h" || a == "help");
    // The command line as help shows it (profiles named, ignored globals hidden) only when
    // help is asked for: building it costs more than the rest of `ops list` (issue 35).
    let command = if wants_help {
        cli::command(&app::profiles_for_help(&args))
    } else {
        <Cli as clap::CommandFactory>::command()
    };
    let parsed = cli::parse(command, &args);
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let code = exit::classify(&e);
            eprintln!("ops: {}", redact::line(&format!("{e:#}")));
            code.into()
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Cmd::Completions { shell } = cli.command {
        return commands::completions(shell);
    }
    if let Cmd::Manpage = cli.command {
        return commands::manpage();
    }
    let (app, broken_jobs) = open(&cli)?;
    dispatch(&cli, &app, broken_jobs)
}

/// The env file, logging, the configuration (kept despite a broken jobs.yaml for `status`), and
/// for commands that open the state directory, its owner's privileges and its check.
fn open(cli: &Cli) -> anyhow::Result<(app::App, Option<anyhow::Error>)> {
    let env_file = app::env_file(cli.env_file.as_deref())?;
    let env = envfile::Env::load(env_file.as_deref())?;
    logging::init(&env);
    for warning in env.warnings() {
        log::warn!("{warning}");
    }
    // `ops status` shows the droplets and the last runs under a broken jobs.yaml's error.
    let (app, broken_jobs) = if matches!(cli.command, Cmd::Status { .. }) {
        app::App::load_despite_jobs(cli, env, env_file)?
    } else {
        (app::App::load(cli, env, env_file)?, None)
    };
    // Commands that open the state directory run as its owner (see `privilege`).
    if matches!(
        cli.command,
        Cmd::Run { .. }
            | Cmd::History { .. }
            | Cmd::Events { .. }
            | Cmd::Status { .. }
            | Cmd::Enable { .. }
            | Cmd::Disable { .. }
            | Cmd::Serve { .. }
            | Cmd::Doctor { .. }
            | Cmd::RenderCloudInit { .. }
            | Cmd::Simulate { .. }
    ) {
        // Only the command line or the process environment may keep root: never the env file,
        // which the state directory's owner may be able to write.
        let as_root =
            cli.as_root || std::env::var("OPS_AS_ROOT").is_ok_and(|v| v == "1" || v == "true");
        if app.env.file_vars().contains_key("OPS_AS_ROOT") {
            log::warn!("OPS_AS_ROOT in the env file is ignored: keep root with --as-root or OPS_AS_ROOT=1 in the process environment");
        }
        privilege::switch(&app.state_dir, as_root)?;
        app::check_state_dir(&app.state_dir)?;
    }
    if matches!(cli.command, Cmd::Run { .. }) {
        // Once per run: `ops check` lists them too.
        for u in crate::envfile::unknown_names(&app.env) {
            log::warn!("{}", u.message());
        }
    }
    Ok((app, broken_jobs))
}

/// Runs the parsed command.
fn dispatch(
    cli: &Cli,
    app: &app::App,
    broken_jobs: Option<anyhow::Error>,
) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Cmd::Run {
            profile,
            dry_run,
            json,
            reset_breaker,
            refresh,
            detailed_exitcode,
            allow_new_worker_group,
        } => runner::run(
            app,
            profile,
            &runner::RunOptions {
                dry_run: *dry_run,
                json: *json,
                reset_breaker: *reset_breaker,
                refresh: *refresh,
                detailed_exitcode: *detailed_exitcode,
                allow_new_worker_group: *allow_new_worker_group,
            },
        ),
        Cmd::RenderCloudInit { show_secrets } => commands::render_cloud_init(app, *show_secrets),
        Cmd::List { json } => commands::list(app, *json),
        Cmd::RenderCrontab => commands::render_crontab(app),
        Cmd::RenderK8s { image, namespace } => {
            print!("{}", render::kubernetes(&app.config, image, namespace)?);
            Ok(ExitCode::Success)
        }
        Cmd::RenderSystemd { out } => commands::render_systemd(app, out.as_deref()),
        Cmd::History {
            show: Some(cli::HistoryCmd::Show { id, json }),
            ..
        } => commands::history_show(app, *id, *json),
        Cmd::History {
            show: None,
            profile,
            limit,
            json,
        } => commands::history(app, profile.as_deref(), *limit, *json),
        Cmd::Events {
            since,
            profile,
            limit,
            json,
        } => commands::events(app, since.as_deref(), profile.as_deref(), *limit, *json),
        Cmd::Check { strict, json } => commands::check(app, *strict, *json),
        Cmd::Doctor { json } => doctor::run(app, *json),
        Cmd::TestAlert => commands::test_alert(app),
        Cmd::Status { json, check } => status::run(app, *json, *check, broken_jobs),
        Cmd::Enable { profile } => commands::set_enabled(app, profile, true),
        Cmd::Disable { profile } => commands::set_enabled(app, profile, false),
        Cmd::Serve { listen } => serve::run(app, listen),
        Cmd::Simulate { days, json } => simulate::run(app, *days, *json),
        Cmd::Completions { .. } | Cmd::Manpage => unreachable!("handled above"),
    }
}
