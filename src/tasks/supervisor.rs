//! supervisor: keep the supervisor droplet(s) alive on DigitalOcean.

use crate::config::SupervisorOptions;
use crate::tasks::{Outcome, TaskCtx};

pub fn run(_opts: &SupervisorOptions, _ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    anyhow::bail!("the supervisor task is not implemented yet")
}
