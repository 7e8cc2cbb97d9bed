//! A profile run's summary: what `ops run` prints, records, and alerts about. Below the
//! runner, the report formatting and the notifier, which all read it.

use serde::Serialize;

use crate::task::{ActionRecord, Status};

#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub profile: String,
    pub status: String,
    pub dry_run: bool,
    pub started_at: String,
    pub duration_ms: u64,
    pub tasks: Vec<TaskSummary>,
}

#[derive(Debug, Serialize)]
pub struct TaskSummary {
    pub name: String,
    pub kind: String,
    pub status: Status,
    pub duration_ms: u64,
    pub detail: Vec<String>,
    /// Failed because of the configuration (exit 2).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_error: bool,
    /// The plan's actions and what apply did with each (built-in tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
}
