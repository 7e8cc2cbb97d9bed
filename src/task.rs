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
    /// What the operator should change but that fails nothing (a version pin, say): shown in a
    /// section of their own, not among the facts of every run.
    pub warnings: Vec<String>,
    /// The task's state in a few words (`1/1 healthy, 0 waiting`): the journal's line for it.
    /// `None`: the first failure, else the headline.
    pub summary: Option<String>,
}

/// What an action is, whatever task planned it: `{"type": "delete", "resource": "droplet",
/// "id", "name", "reason"}` in `run --json`, and one entry of the plan's summary line
/// (`plan: create 1 droplet, restart Postgres`). An action type implements [`Typed`] to get
/// both, and the dry run's "would …" and the real run's past tense from [`ActionRecord`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionType {
    /// The verb: `create`, `delete`, `drain`, `restart`, `cache`, `store`, `alter`, `reset` …
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What it acts on: `droplet`, `Postgres`, `worker token`, `publication` …
    pub resource: &'static str,
    /// Counted in the summary line (`2 droplets`) rather than named (`restart Postgres`).
    #[serde(skip)]
    pub countable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ActionType {
    /// An action on a resource counted in the summary line (`create 1 droplet`).
    pub fn counted(kind: &'static str, resource: &'static str) -> ActionType {
        ActionType {
            kind,
            resource,
            countable: true,
            ..ActionType::default()
        }
    }

    /// An action on a resource named in the summary line (`restart Postgres`).
    pub fn named(kind: &'static str, resource: &'static str) -> ActionType {
        ActionType {
            kind,
            resource,
            ..ActionType::default()
        }
    }

    pub fn id(mut self, id: impl ToString) -> ActionType {
        self.id = Some(id.to_string());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> ActionType {
        self.name = Some(name.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> ActionType {
        self.reason = Some(reason.into());
        self
    }
}

/// The one method a task's action type implements for typed JSON and the summary line.
pub trait Typed {
    fn typed(&self) -> ActionType;
}

/// One planned action: its type, its description (the same words in a dry run and a real
/// one, starting with its verb) and what apply did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    #[serde(flatten)]
    pub typed: ActionType,
    pub action: String,
    pub result: String,
    /// Applied (a real run that did it); false when planned, refused or not done.
    pub done: bool,
}

impl ActionRecord {
    /// Planned in a dry run.
    pub fn planned(typed: ActionType, action: impl Into<String>) -> ActionRecord {
        ActionRecord {
            typed,
            action: action.into(),
            result: PLANNED.into(),
            done: false,
        }
    }

    /// Done by a real run; `result` says how it went.
    pub fn done(
        typed: ActionType,
        action: impl Into<String>,
        result: impl Into<String>,
    ) -> ActionRecord {
        ActionRecord {
            typed,
            action: action.into(),
            result: result.into(),
            done: true,
        }
    }

    /// Decided but not done (not allowed, or nothing left to do): `result` says why.
    pub fn not_done(
        typed: ActionType,
        action: impl Into<String>,
        result: impl Into<String>,
    ) -> ActionRecord {
        ActionRecord {
            done: false,
            ..ActionRecord::done(typed, action, result)
        }
    }

    /// Planned by a dry run (to be done by a real one).
    pub fn is_planned(&self) -> bool {
        !self.done && self.result == PLANNED
    }

    /// The dry run's line for it: `would create droplet …`.
    pub fn would(&self) -> String {
        format!("would {}", self.action)
    }

    /// The real run's line for it: `created droplet …`.
    pub fn did(&self) -> String {
        past_tense(&self.action)
    }
}

const PLANNED: &str = "planned (dry run)";

/// A verb in the past tense (`create` → `created`, `drop` → `dropped`, `reset` → `reset`).
pub fn past(verb: &str) -> String {
    match verb {
        "reset" | "set" | "put" => verb.to_string(),
        "make" => "made".into(),
        "send" => "sent".into(),
        "resend" => "resent".into(),
        "run" => "ran".into(),
        "drop" | "stop" => format!("{verb}ped"),
        "snapshot" => "snapshotted".into(),
        v if v.ends_with('e') => format!("{v}d"),
        v if v.ends_with('y') && !v.ends_with("ay") => format!("{}ied", &v[..v.len() - 1]),
        v => format!("{v}ed"),
    }
}

/// A description starting with its verb, in the past tense: `cache the worker token …` →
/// `cached the worker token …`.
pub fn past_tense(action: &str) -> String {
    match action.split_once(' ') {
        Some((verb, rest)) => format!("{} {rest}", past(verb)),
        None => past(action),
    }
}

impl Outcome {
    pub fn new(status: Status, detail: impl Into<String>) -> Outcome {
        Outcome::lines(status, vec![detail.into()])
    }

    pub fn lines(status: Status, detail: Vec<String>) -> Outcome {
        Outcome {
            status,
            detail,
            config_error: false,
            actions: Vec::new(),
            warnings: Vec::new(),
            summary: None,
        }
    }
}

/// Sends an information message to the alert channels at once, so that a disruptive change (a
/// Postgres restart) is announced before it starts. The runner's notifier; none in a dry run.
pub trait Announce {
    fn announce(&self, text: &str);
}

/// Everything a task may read. In a dry run `state` is opened read-only (or absent), so a task
/// cannot write even by mistake.
pub struct TaskCtx<'a> {
    pub settings: &'a Settings,
    pub env: &'a Env,
    pub state: Option<&'a State>,
    pub state_dir: &'a Path,
    pub profile: &'a str,
    /// The task's name in the profile (events name it).
    pub task: &'a str,
    /// `None` in a dry run.
    pub announcer: Option<&'a dyn Announce>,
    /// `ops run --allow-new-worker-group`: extract may create a worker group even though other
    /// supervisors already serve runs.
    pub allow_new_worker_group: bool,
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
    /// Every change this task reported (see [`TaskCtx::changed`]): kept in the report when the
    /// task then fails with an error, so no action taken is lost from it.
    pub changes: std::cell::RefCell<Vec<String>>,
}

/// What a task of this profile run learnt that a later one needs: the config record extract
/// read (stored or, in a dry run, only planned), so `hourly --dry-run` plans the droplets with
/// the record it would store.
#[derive(Default)]
pub struct Handoff {
    pub record: std::cell::RefCell<Option<ConfigRecord>>,
    /// Why extract refused the webapp's values this run (a dry run stores no refusal either).
    pub refused: std::cell::RefCell<Option<Vec<String>>>,
}

impl TaskCtx<'_> {
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long a Postgres connect may take: 10 s, or what is left of the deadline.
    pub fn connect_timeout(&self) -> Duration {
        self.remaining().min(Duration::from_secs(10))
    }

    /// Call right after every action that changed something outside ops (a droplet created,
    /// deleted or drained, Postgres settings or restart, a publication, a worker group, routing,
    /// a firewall, …), with a kind (`droplet.created`) and one line saying what: it is recorded
    /// at once as an event (`ops events`, `status --json`, `/v1/events`), so a run killed later
    /// loses none, and announced to the alert channels after the run, one message per run.
    /// A dry run changes nothing, so it records nothing.
    pub fn changed(&self, kind: &str, message: impl Into<String>) {
        let message = crate::redact::line(&message.into());
        log::warn!("{}/{}: changed: {message}", self.profile, self.task);
        self.changes.borrow_mut().push(message.clone());
        let Ok(state) = self.writable_state() else {
            log::error!("internal: change {kind:?} reported in a dry run: {message}");
            return;
        };
        if let Err(e) = state.record_event(
            self.profile,
            self.task,
            kind,
            &message,
            crate::state::now_ms(),
        ) {
            log::error!("could not record the event {kind:?} ({message}): {e:#}");
        }
    }

    /// Tells the alert channels now, before a disruptive change starts (nothing in a dry run).
    pub fn announce(&self, text: &str) {
        if let (Some(a), false) = (self.announcer, self.dry_run) {
            a.announce(text);
        }
    }

    /// The state database for writing; errors in a dry run (which never writes).
    pub fn writable_state(&self) -> anyhow::Result<&State> {
        match self.state {
            Some(s) if !s.is_read_only() && !self.dry_run => Ok(s),
            _ => anyhow::bail!("internal: state write attempted in a dry run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_tenses() {
        for (verb, want) in [
            ("create", "created"),
            ("delete", "deleted"),
            ("drain", "drained"),
            ("restart", "restarted"),
            ("cache", "cached"),
            ("store", "stored"),
            ("drop", "dropped"),
            ("snapshot", "snapshotted"),
            ("reset", "reset"),
            ("make", "made"),
            ("alter", "altered"),
            ("apply", "applied"),
        ] {
            assert_eq!(past(verb), want);
        }
        assert_eq!(
            past_tense("cache the worker token in the state database"),
            "cached the worker token in the state database"
        );
    }

    #[test]
    fn typed_actions_in_json() {
        let r = ActionRecord::planned(
            ActionType::counted("delete", "droplet")
                .id(7)
                .name("sup-7")
                .reason("unhealthy"),
            "delete droplet sup-7 (id 7): unhealthy",
        );
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"type": "delete", "resource": "droplet", "id": "7", "name": "sup-7",
                "reason": "unhealthy", "action": "delete droplet sup-7 (id 7): unhealthy",
                "result": "planned (dry run)", "done": false})
        );
        assert_eq!(r.would(), "would delete droplet sup-7 (id 7): unhealthy");
        assert_eq!(r.did(), "deleted droplet sup-7 (id 7): unhealthy");
    }
}
