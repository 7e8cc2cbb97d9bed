//! Command-line arguments (clap derive). Parsing only: resolution happens in `app`.

use std::path::PathBuf;

use clap::{Arg, ArgAction, CommandFactory, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  ops list                          profiles, schedules and next run times
  ops run hourly --dry-run          show what the hourly profile would do, change nothing
  ops run health                    run one profile now (what the timer does)
  ops history --profile health -n 5 the last five runs of a profile
  ops render-crontab > /etc/ops/crontab
  ops render-systemd --out /etc/systemd/system
  ops check                         validate jobs.yaml and the environment offline
  ops completions bash > /etc/bash_completion.d/ops

Exit status: 0 ok, 1 a task or check failed, 2 usage or configuration error, 3 changes planned
(run --dry-run --detailed-exitcode); each command's --help says what its codes mean.";

/// Exit codes every command shares; each command's help adds its own.
macro_rules! exit_codes {
    ($($line:literal),* $(,)?) => {
        concat!("Exit status:\n", $("  ", $line, "\n",)* "  2  usage or configuration error (the message names the file:line or variable and the fix)")
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "ops",
    version,
    about = "Keeps a self-hosted Trigger.dev v4 deployment healthy: one profile per run",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// jobs.yaml to read [default: $OPS_CONFIG, else /etc/ops/jobs.yaml, else ./jobs.yaml, else the bundled one]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Directory for ops.db and locks [default: $OPS_STATE_DIR, else /var/lib/ops when it exists, else $XDG_STATE_HOME/ops]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// KEY=VALUE file merged under the process environment [default: $OPS_ENV_FILE, else /etc/ops/ops.env when readable]
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// When run as root, keep root instead of becoming the state directory's owner [env: OPS_AS_ROOT=1]
    #[arg(long, global = true)]
    pub as_root: bool,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one profile's tasks in order (exit 0 ok/skipped, 1 a task failed, 2 config error)
    #[command(after_help = concat!(
        exit_codes!(
            "0  every task ok, waiting or skipped (or the profile is disabled, or locked by another run)",
            "1  a task failed",
        ),
        "\n  3  --dry-run --detailed-exitcode: changes are planned"
    ))]
    Run {
        /// The profile of jobs.yaml to run (ops list shows them)
        profile: String,
        /// Read everything, change nothing anywhere, print the plan
        #[arg(long)]
        dry_run: bool,
        /// Print the run summary as one JSON document (schema_version, typed actions, RFC 3339 times)
        #[arg(long)]
        json: bool,
        /// With --dry-run: exit 3 when changes are planned, 0 when none (1 and 2 as usual)
        #[arg(long, requires = "dry_run")]
        detailed_exitcode: bool,
        /// Close the supervisor's replacement circuit breaker before running
        #[arg(long)]
        reset_breaker: bool,
        /// Re-read the config from Railway even when the stored record is fresh
        #[arg(long)]
        refresh: bool,
        /// Let extract create a worker group (and make it the default) even though supervisors
        /// already serve runs in another group
        #[arg(long)]
        allow_new_worker_group: bool,
    },
    /// Profiles with cron, next run time, enabled, task count and description
    #[command(after_help = exit_codes!("0  listed"))]
    List {
        /// One JSON document: {"schema_version", "config", "profiles"}, next_run in RFC 3339
        #[arg(long)]
        json: bool,
    },
    /// The crontab for supercronic, one line per enabled profile
    #[command(after_help = exit_codes!("0  printed"))]
    RenderCrontab,
    /// A systemd service and timer per enabled profile (stdout, or files in --out)
    #[command(after_help = exit_codes!("0  printed or written", "1  a unit file could not be written"))]
    RenderSystemd {
        /// Write the units into this directory (e.g. /etc/systemd/system) instead of printing them
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Kubernetes manifests: a CronJob per enabled profile (concurrencyPolicy Forbid), PVC, ConfigMap
    #[command(after_help = exit_codes!("0  printed"))]
    RenderK8s {
        /// Container image with the ops binary
        #[arg(long, default_value = "registry.example.com/trigger-ops:0.1.0")]
        image: String,
        /// Namespace of every manifest
        #[arg(long, default_value = "trigger-ops")]
        namespace: String,
    },
    /// Past runs and task results, newest first (`ops history show <ID>` for one run)
    #[command(after_help = exit_codes!("0  listed (also when nothing is recorded yet)", "1  history show: no such run"))]
    History {
        #[command(subcommand)]
        show: Option<HistoryCmd>,
        /// Only this profile's runs (any name: a profile removed from jobs.yaml keeps its history)
        #[arg(long, short)]
        profile: Option<String>,
        /// How many runs, newest first (1 to 10000)
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u32,
        /// One JSON document: {"schema_version", "runs": [...]}, times in RFC 3339
        #[arg(long)]
        json: bool,
    },
    /// What ops changed outside itself (droplets, Postgres, worker groups, routing, firewall),
    /// oldest first
    #[command(after_help = exit_codes!("0  listed"))]
    Events {
        /// Only since then: a duration back (24h, 7d) or a time (2026-12-01T00:00:00Z)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only what this profile's runs changed
        #[arg(long, short)]
        profile: Option<String>,
        /// How many changes at most (1 to 10000)
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: u32,
        /// One JSON document: {"schema_version", "events": [...]}, times in RFC 3339
        #[arg(long)]
        json: bool,
    },
    /// Validate jobs.yaml, the environment and the state directory without touching the network
    #[command(after_help = exit_codes!(
        "0  nothing stops a run (warnings may remain)",
        "1  the state directory is not writable",
    ))]
    Check {
        /// Also fail (exit 2) when a setting an enabled profile needs is missing
        #[arg(long)]
        strict: bool,
        /// The checks as one JSON document ({"schema_version", "ok", "exit_code", "checks"})
        #[arg(long)]
        json: bool,
    },
    /// Live checks: Railway and DigitalOcean tokens and what SUPERVISOR_* names there, Postgres
    /// privileges, registry, webapp (exit 1 when one fails)
    #[command(after_help = exit_codes!("0  every check passed", "1  a check failed (✗)"))]
    Doctor {
        /// The checks as one JSON document ({"schema_version", "ok", "exit_code", "checks"})
        #[arg(long)]
        json: bool,
    },
    /// Send one labelled test message through every configured alert channel (exit 1 if one
    /// fails, 2 if none is configured); the alert state is left untouched
    #[command(after_help = exit_codes!("0  every channel took it", "1  a channel failed (2: none is configured)"))]
    TestAlert,
    /// Per profile: last run, next run, streaks; droplets; worker token; replication; last alert
    #[command(after_help = exit_codes!("0  shown", "1  --check: a problem stands"))]
    Status {
        /// One JSON document (schema_version, RFC 3339 times); the same as serve's /v1/status
        #[arg(long)]
        json: bool,
        /// Exit 1 while any problem stands (breaker open, refusal, webapp down, routing,
        /// orphaned queues, a failing profile)
        #[arg(long)]
        check: bool,
    },
    /// Resume a disabled or auto-disabled profile
    #[command(after_help = exit_codes!("0  enabled"))]
    Enable {
        /// The profile of jobs.yaml to resume (ops list shows them)
        profile: String,
    },
    /// Stop a profile from running (its timer still fires and exits at once)
    #[command(after_help = exit_codes!("0  disabled"))]
    Disable {
        /// The profile of jobs.yaml to stop (ops list shows them)
        profile: String,
    },
    /// Replay the last days of runs through the supervisor settings and a few alternatives:
    /// waits, droplet-hours and cost (reads the webapp's database, changes nothing)
    #[command(after_help = concat!(
        exit_codes!("0  replayed", "1  the webapp's database or DigitalOcean could not be read"),
        "\n\nNeeds DATABASE_URL (read only: one statement over the window of \"TaskRun\") and SUPERVISOR_SIZE's\nprice: the sizes the supervisor task saved, else DIGITALOCEAN_TOKEN (GET /v2/sizes)."
    ))]
    Simulate {
        /// How many days back to replay (1 to 31)
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=31))]
        days: u32,
        /// One JSON document: {"schema_version", "settings": [...], "timeline": [...]}, waits in seconds
        #[arg(long)]
        json: bool,
    },
    /// Read-only HTTP API: /healthz, /v1/runs, /v1/alerts, /v1/events, /v1/status, /metrics
    #[command(after_help = exit_codes!("(runs until stopped)"))]
    Serve {
        /// Address to listen on; anything but loopback is warned of (there is no authentication)
        #[arg(long, default_value = "127.0.0.1:8923")]
        listen: String,
    },
    /// The cloud-init user-data the supervisor task would send (secrets redacted)
    #[command(after_help = exit_codes!("0  printed", "1  no config record yet (run ops run extract)"))]
    RenderCloudInit {
        /// Print the secrets too (the output is then as sensitive as the tokens)
        #[arg(long)]
        show_secrets: bool,
    },
    /// Shell completions
    #[command(after_help = "Exit status:\n  0  printed\n  2  unknown shell")]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff), for packaging
    #[command(hide = true)]
    Manpage,
}

/// `ops history show`.
#[derive(Debug, Subcommand)]
pub enum HistoryCmd {
    /// One run in full: every task's status, duration and whole detail (exit 1 if no such run)
    Show {
        /// The run's ID, as `ops history` lists it
        id: i64,
        /// The run as one JSON document
        #[arg(long)]
        json: bool,
    },
}

/// The global flags a command ignores, hidden from its help: a command's own hidden argument
/// of the same name shadows the global one there (and is never read).
const IGNORED_GLOBALS: &[(&str, &[&str])] = &[
    ("list", &["state_dir", "as_root"]),
    ("render-crontab", &["as_root"]),
    ("render-systemd", &["as_root"]),
    ("render-k8s", &["state_dir", "as_root"]),
    ("check", &["as_root"]),
    ("test-alert", &["state_dir", "as_root"]),
    (
        "completions",
        &["config", "state_dir", "env_file", "as_root"],
    ),
];

/// The command line: the definitions above, the profiles of the jobs.yaml in effect named in
/// `<PROFILE>`'s help, and each command's help without the global flags it ignores.
pub fn command(profiles: &[String]) -> clap::Command {
    let mut cmd = Cli::command();
    if !profiles.is_empty() {
        let listed = format!(": {}", profiles.join(", "));
        for sub in ["run", "enable", "disable"] {
            cmd = cmd.mut_subcommand(sub, |s| {
                s.mut_arg("profile", |a| {
                    let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                    a.help(format!("{help}{listed}"))
                })
            });
        }
    }
    for (sub, ignored) in IGNORED_GLOBALS {
        cmd = cmd.mut_subcommand(*sub, |mut s| {
            for id in *ignored {
                let long = match *id {
                    "state_dir" => "state-dir",
                    "env_file" => "env-file",
                    "as_root" => "as-root",
                    other => other,
                };
                let arg = Arg::new(*id).long(long).hide(true);
                s = s.arg(if *id == "as_root" {
                    arg.action(ArgAction::SetTrue)
                } else {
                    arg.value_name("PATH")
                        .value_parser(clap::value_parser!(PathBuf))
                });
            }
            s
        });
    }
    cmd
}

/// The arguments parsed by `command`. The command is not dropped: freeing every subcommand's
/// definitions one by one costs a one-shot process more than its whole parse, and the process
/// exits soon after.
pub fn parse(command: clap::Command, args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
    let mut command = std::mem::ManuallyDrop::new(command);
    command
        .try_get_matches_from_mut(args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(profiles: &[String], args: &[&str]) -> String {
        command(profiles)
            .try_get_matches_from(args)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn help_names_the_profiles_and_the_exit_codes_and_hides_ignored_flags() {
        let profiles = ["health".to_string(), "hourly".to_string()];
        let run = help(&profiles, &["ops", "run", "--help"]);
        assert!(
            run.contains("ops list shows them): health, hourly"),
            "{run}"
        );
        assert!(run.contains("3  --dry-run --detailed-exitcode"), "{run}");
        assert!(
            run.contains("--as-root") && run.contains("--state-dir"),
            "{run}"
        );
        let list = help(&profiles, &["ops", "list", "--help"]);
        assert!(
            !list.contains("--as-root") && !list.contains("--state-dir"),
            "{list}"
        );
        assert!(
            list.contains("--config") && list.contains("Exit status:"),
            "{list}"
        );
        let completions = help(&[], &["ops", "completions", "--help"]);
        assert!(!completions.contains("--config"), "{completions}");
        // Every argument says what it is.
        fn undocumented(cmd: &clap::Command, out: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none()
                    && !a.is_hide_set()
                    && a.get_id() != "help"
                    && a.get_id() != "version"
                {
                    out.push(format!("{} {}", cmd.get_name(), a.get_id()));
                }
            }
            for s in cmd.get_subcommands() {
                undocumented(s, out);
            }
        }
        let mut missing = Vec::new();
        undocumented(&command(&[]), &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        // The global flags still work where they mean nothing.
        let m = command(&[])
            .try_get_matches_from(["ops", "list", "--as-root", "--state-dir", "/tmp/x"])
            .unwrap();
        assert!(<Cli as clap::FromArgMatches>::from_arg_matches(&m).is_ok());
    }
}
