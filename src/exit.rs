//! Process exit codes: 0 every task ok or skipped, 1 a task failed, 2 usage or configuration,
//! 3 a dry run with `--detailed-exitcode` that plans changes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    TaskFailed,
    Config,
    /// `run --dry-run --detailed-exitcode`: changes are planned (terraform's 2, which ops
    /// gives configuration errors).
    Changes,
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        match code {
            ExitCode::Success => 0,
            ExitCode::TaskFailed => 1,
            ExitCode::Config => 2,
            ExitCode::Changes => 3,
        }
    }
}

/// An error that is the operator's input's fault (flags, jobs.yaml, env): exit 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Shorthand for returning a configuration error through anyhow.
pub fn config_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ConfigError(msg.into()))
}

/// A setting a task needs is unset: a configuration error (exit 2) like any other, whichever
/// setting it is. `what` says what to set (`set DATABASE_URL to …`).
pub fn not_configured(what: impl std::fmt::Display) -> anyhow::Error {
    config_error(format!("not configured: {what}"))
}

/// Exit 2 when the chain holds a ConfigError, else 1.
pub fn classify(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| e.is::<ConfigError>()) {
        ExitCode::Config
    } else {
        ExitCode::TaskFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(i32::from(ExitCode::Success), 0);
        assert_eq!(i32::from(ExitCode::TaskFailed), 1);
        assert_eq!(i32::from(ExitCode::Config), 2);
        assert_eq!(i32::from(ExitCode::Changes), 3);
    }

    #[test]
    fn config_errors_are_found_through_context() {
        use anyhow::Context;
        let err: anyhow::Result<()> = Err(config_error("bad"));
        let err = err.context("loading").unwrap_err();
        assert_eq!(classify(&err), ExitCode::Config);
        assert_eq!(classify(&anyhow::anyhow!("boom")), ExitCode::TaskFailed);
    }
}
