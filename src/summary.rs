//! A profile run's summary: what `ops run` prints, records, and alerts about. Below the
//! runner, the report formatting and the notifier, which all read it.

use serde::Serialize;

use crate::task::{ActionRecord, Status};

/// The version of every `--json` document's shape: raised when a field changes meaning or
/// goes; new fields do not raise it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub schema_version: u32,
    pub profile: String,
    pub status: String,
    pub dry_run: bool,
    /// RFC 3339 with the zone.
    pub started_at: String,
    pub duration_ms: u64,
    /// `plan: create 1 droplet, restart Postgres` (a dry run), `applied: created 1 droplet`
    /// (a real run that changed something); `None` when a real run changed nothing.
    pub changes: Option<String>,
    pub tasks: Vec<TaskSummary>,
}

impl RunSummary {
    /// A dry run that would change something (`--detailed-exitcode`).
    pub fn has_planned_changes(&self) -> bool {
        self.dry_run
            && self
                .tasks
                .iter()
                .flat_map(|t| &t.actions)
                .any(|a| a.is_planned())
    }
}

#[derive(Debug, Serialize)]
pub struct TaskSummary {
    pub name: String,
    pub kind: String,
    pub status: Status,
    pub duration_ms: u64,
    /// The task's state in a few words (the journal's line for it).
    pub summary: String,
    pub detail: Vec<String>,
    /// What to change that fails nothing (a version pin, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Failed because of the configuration (exit 2).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_error: bool,
    /// The plan's actions and what apply did with each (built-in tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
}
