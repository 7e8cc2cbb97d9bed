//! Built-in task kinds and the dispatcher. A task returns an `Outcome`; an `Err` is a failure
//! whose message (redacted) becomes the task's detail. The shared types live in `crate::task`.

pub mod exec;
pub mod extract;
pub mod replication;
pub mod supervisor;

use crate::config::{Task, TaskSpec};
use crate::task::{Outcome, TaskCtx};

/// Runs one task to completion (or its deadline).
pub fn run(task: &Task, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    match &task.spec {
        TaskSpec::Exec(opts) => exec::run(opts, ctx),
        TaskSpec::Extract(opts) => extract::run(opts, ctx),
        TaskSpec::Replication(opts) => replication::run(opts, ctx),
        TaskSpec::Supervisor(opts) => supervisor::run(opts, ctx),
    }
}
