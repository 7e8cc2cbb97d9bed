//! extract: worker token and supervisor config from Railway.

use crate::config::ExtractOptions;
use crate::tasks::{Outcome, TaskCtx};

pub fn run(_opts: &ExtractOptions, _ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    anyhow::bail!("the extract task is not implemented yet")
}
