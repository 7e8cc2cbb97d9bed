//! Command-line arguments (clap derive). Parsing only: resolution happens in `app`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  ops list                          profiles, schedules and next run times
  ops run hourly --dry-run          show what the hourly profile would do, change nothing
  ops run health                    run one profile now (what the timer does)
  ops history --profile health -n 5 the last five runs of a profile
  ops render-crontab > /etc/ops/crontab
  ops render-systemd --out /etc/systemd/system
  ops check                         validate jobs.yaml and the environment offline
  ops completions bash > /etc/bash_completion.d/ops";

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
    Run {
        profile: String,
        /// Read everything, change nothing anywhere, print the plan
        #[arg(long)]
        dry_run: bool,
        /// Print the run summary as one JSON document
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
    List {
        #[arg(long)]
        json: bool,
    },
    /// The crontab for supercronic, one line per enabled profile
    RenderCrontab,
    /// A systemd service and timer per enabled profile (stdout, or files in --out)
    RenderSystemd {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Kubernetes manifests: a CronJob per enabled profile (concurrencyPolicy Forbid), PVC, ConfigMap
    RenderK8s {
        /// Container image with the ops binary
        #[arg(long, default_value = "registry.example.com/trigger-ops:0.1.0")]
        image: String,
        #[arg(long, default_value = "trigger-ops")]
        namespace: String,
    },
    /// Past runs and task results, newest first (`ops history show <ID>` for one run)
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
    Events {
        /// Only since then: a duration back (24h, 7d) or a time (2026-12-01T00:00:00Z)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long, short)]
        profile: Option<String>,
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Validate jobs.yaml, the environment and the state directory without touching the network
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
    Doctor {
        /// The checks as one JSON document ({"schema_version", "ok", "exit_code", "checks"})
        #[arg(long)]
        json: bool,
    },
    /// Send one labelled test message through every configured alert channel (exit 1 if one
    /// fails, 2 if none is configured); the alert state is left untouched
    TestAlert,
    /// Per profile: last run, next run, streaks; droplets; worker token; replication; last alert
    Status {
        #[arg(long)]
        json: bool,
        /// Exit 1 while any problem stands (breaker open, refusal, webapp down, routing,
        /// orphaned queues, a failing profile)
        #[arg(long)]
        check: bool,
    },
    /// Resume a disabled or auto-disabled profile
    Enable { profile: String },
    /// Stop a profile from running (its timer still fires and exits at once)
    Disable { profile: String },
    /// Read-only HTTP API: /healthz, /v1/runs, /v1/alerts, /v1/status, /metrics
    Serve {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8923")]
        listen: String,
    },
    /// The cloud-init user-data the supervisor task would send (secrets redacted)
    RenderCloudInit {
        /// Print the secrets too (the output is then as sensitive as the tokens)
        #[arg(long)]
        show_secrets: bool,
    },
    /// Shell completions
    Completions {
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
