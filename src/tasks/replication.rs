//! replication: check and fix Postgres logical replication.

use crate::config::ReplicationOptions;
use crate::tasks::{Outcome, TaskCtx};

pub fn run(_opts: &ReplicationOptions, _ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    anyhow::bail!("the replication task is not implemented yet")
}
