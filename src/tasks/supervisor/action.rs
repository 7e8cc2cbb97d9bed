//! What the fleet's plan asks apply to do, and the words a dry run and `run --json` show for
//! each (`describe`: a create names every tag it sends).

use super::spec::Spec;
use crate::duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `--reset-breaker`: forget the counted replacements.
    ResetBreaker,
    /// Delete one of our droplets; `replacement` counts toward the circuit breaker.
    Delete {
        id: u64,
        name: String,
        reason: String,
        replacement: bool,
    },
    /// Create a droplet; `replaces` is the stale droplet it takes over from: (name, why);
    /// `standby_for` the failing droplet it will replace (counted by the circuit breaker).
    Create {
        name: String,
        reason: String,
        replaces: Option<(String, String)>,
        standby_for: Option<String>,
    },
    /// Tell a droplet to stop taking runs (tag it draining; `signal`: send the shutdown its
    /// drain service waits in); it is deleted once idle or after `drain_timeout`.
    Drain {
        id: u64,
        name: String,
        reason: String,
        replacement: bool,
        signal: bool,
        runs: Option<Vec<String>>,
    },
    /// Send a draining droplet's `shutdown` again (the first did not take).
    Resend {
        id: u64,
        name: String,
        reason: String,
    },
}

impl crate::task::Typed for Action {
    fn typed(&self) -> crate::task::ActionType {
        use crate::task::ActionType;
        match self {
            Action::ResetBreaker => ActionType::named("reset", "circuit breaker"),
            Action::Delete {
                id, name, reason, ..
            } => ActionType::counted("delete", "droplet")
                .id(id)
                .name(name)
                .reason(reason),
            Action::Create { name, reason, .. } => ActionType::counted("create", "droplet")
                .name(name)
                .reason(reason),
            Action::Drain {
                id, name, reason, ..
            } => ActionType::counted("drain", "droplet")
                .id(id)
                .name(name)
                .reason(reason),
            Action::Resend { id, name, reason } => ActionType::counted("resend", "shutdown")
                .id(id)
                .name(name)
                .reason(reason),
        }
    }
}

impl Action {
    /// What the action does, the same words in a dry run ("would …") and in `run --json`.
    pub fn describe(&self, spec: &Spec) -> String {
        match self {
            Action::ResetBreaker => "reset the circuit breaker".into(),
            Action::Delete { id, name, reason, .. } => {
                format!("delete droplet {name} (id {id}): {reason}")
            }
            Action::Create { name, reason, .. } => format!(
                "create droplet {name} ({}, {}, {}, supervisor {}, tags {}): {reason}",
                spec.size,
                spec.region,
                spec.image,
                spec.version.tag,
                spec.tags().join(" ")
            ),
            Action::Resend { id, name, reason } => {
                format!("resend the shutdown to draining droplet {name} (id {id}): {reason}")
            }
            Action::Drain {
                id,
                name,
                reason,
                runs,
                signal,
                ..
            } => format!(
                "drain droplet {name} (id {id}) before deleting it: {reason}; {}; {}, deleted once idle or after {}",
                runs_line(runs.as_deref()),
                if *signal {
                    "it is told to stop taking runs (DigitalOcean shutdown; its drain service waits for them)"
                } else {
                    "it predates ops' drain and cannot be told to stop taking runs: ops waits until it is idle"
                },
                duration::format(spec.drain_timeout)
            ),
        }
    }

    /// The droplet this action takes out of service (deleted, or drained first), and whether
    /// that counts as a replacement.
    pub fn leaving(&self) -> Option<(u64, bool)> {
        match self {
            Action::Delete {
                id, replacement, ..
            }
            | Action::Drain {
                id, replacement, ..
            } => Some((*id, *replacement)),
            _ => None,
        }
    }
}

/// `2 run(s) execute on it: run_a, run_b`.
pub fn runs_line(runs: Option<&[String]>) -> String {
    match runs {
        Some([]) => "no run executes on it".to_string(),
        Some(r) => format!("{} run(s) execute on it: {}", r.len(), r.join(", ")),
        None => "the runs on it are unknown".to_string(),
    }
}
