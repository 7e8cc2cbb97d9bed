//! What every task kind shares: the context it runs in (`TaskCtx`), what it returns
//! (`Outcome`, with its `Status` and the actions it planned or took), and what one task of a
//! profile run hands to the next (`Handoff`). Below every task kind, so none imports another's
//! dispatcher.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::envfile::Env;
use crate::record::ConfigRecord;
use crate::settings::Settings;
use crate::state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Skipped,
    /// Nothing to do yet and nothing wrong (e.g. the webapp has not run its migrations).
    Waiting,
    /// Dry run: the task would change something.
    Planned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Waiting => "waiting",
            Status::Planned => "planned",
        }
    }

    pub fn is_failure(self) -> bool {
        self == Status::Failed
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// One fact per line; the first line is the headline.
    pub detail: Vec<String>,
    /// The failure is the operator's configuration's fault: the run exits 2, not 1.
    pub config_error: bool,
    /// The plan's actions and what became of each (`run --json`).
    pub actions: Vec<ActionRecord>,
}

/// One planned action: its description (the same words in a dry run and a real one) and what
/// apply did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    pub action: String,
    pub result: String,
}

impl ActionRecord {
    pub fn new(action: impl Into<String>, result: impl Into<String>) -> ActionRecord {
        ActionRecord {
            action: action.into(),
            result: result.into(),
        }
    }
}

impl Outcome {
    pub fn new(status: Status, detail: impl Into<String>) -> Outcome {
        Outcome {
            status,
            detail: vec![detail.into()],
            config_error: false,
            actions: Vec::new(),
        }
    }

    pub fn lines(status: Status, detail: Vec<String>) -> Outcome {
        Outcome {
            status,
            detail,
            config_error: false,
            actions: Vec::new(),
        }
    }
}

/// Everything a task may read. In a dry run `state` is opened read-only (or absent), so a task
/// cannot write even by mistake.
pub struct TaskCtx<'a> {
    pub settings: &'a Settings,
    pub env: &'a Env,
    pub state: Option<&'a State>,
    pub state_dir: &'a Path,
    pub profile: &'a str,
    pub dry_run: bool,
    pub deadline: Instant,
    /// The time this task was given (its timeout, or what was left of the profile's).
    pub budget: Duration,
    /// `ops run --reset-breaker`: close the supervisor's circuit breaker first.
    pub reset_breaker: bool,
    /// `ops run --refresh`: extract re-reads Railway even when its record is fresh.
    pub refresh: bool,
    /// Results handed from one task of the profile to the next, in memory.
    pub handoff: &'a Handoff,
}

/// What a task of this profile run learnt that a later one needs: the config record extract
/// read (stored or, in a dry run, only planned), so `hourly --dry-run` plans the droplets with
/// the record it would store.
#[derive(Default)]
pub struct Handoff {
    pub record: std::cell::RefCell<Option<ConfigRecord>>,
}

impl TaskCtx<'_> {
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long a Postgres connect may take: 10 s, or what is left of the deadline.
    pub fn connect_timeout(&self) -> Duration {
        self.remaining().min(Duration::from_secs(10))
    }

    /// The state database for writing; errors in a dry run (which never writes).
    pub fn writable_state(&self) -> anyhow::Result<&State> {
        match self.state {
            Some(s) if !s.is_read_only() && !self.dry_run => Ok(s),
            _ => anyhow::bail!("internal: state write attempted in a dry run"),
        }
    }
}
