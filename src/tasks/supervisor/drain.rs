//! How a droplet leaves, pure: drained before every planned delete, never killed with runs on it
//! unless `drain_timeout` has passed.
//!
//! The supervisor has no drain of its own (no SIGTERM handler; `docker stop` ends it and its
//! workload API at once, and every run on the droplet restarts from scratch elsewhere minutes
//! later). So a droplet ops wants gone for a planned reason (a new version or spec, a surplus,
//! the silent one whose replacement already serves while runs still execute on it) is first
//! told to stop taking runs: ops tags it `ops-draining` and sends DigitalOcean's `shutdown`
//! action; the droplet's `ops-drain.service` engages the supervisor's dequeue backpressure
//! (nothing new is taken, heartbeats and the workload API stay up), waits until no `runner-`
//! container is left, and lets the shutdown go on (docs/supervisor.md, "Draining"). It is
//! deleted once it is `off`, or once the webapp's database shows no run on it, or when the
//! timeout passes (the runs still on it are named: Trigger.dev retries them). A droplet that
//! died (dead streak, or never came up) is deleted at once: there is nothing to save.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// The tag of a droplet being drained: the drain survives a lost state database.
pub const DRAINING_TAG: &str = "ops-draining";
/// Droplets created with the drain service (and a supervisor with dequeue backpressure,
/// Trigger.dev v4.5.0-rc.5 and later) carry this: a `shutdown` drains them.
pub const CAPABLE_TAG: &str = "ops-drain:shutdown";
/// The first Trigger.dev release whose supervisor reads the dequeue-backpressure key: v4.5.0-rc.5
/// (apps/supervisor/src/env.ts gains `TRIGGER_DEQUEUE_BACKPRESSURE_*` there, PR #3836; rc.0 to
/// rc.4 ignore the settings).
pub const BACKPRESSURE_SINCE: &str = "v4.5.0-rc.5";
/// A run dequeued just before the droplet stopped taking runs is in the database within
/// seconds (the dequeue writes it before answering); a read this long after the signal is
/// complete.
pub const SETTLE_SECS: i64 = 10;

/// Kept in the droplet's streak while it drains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    pub started_ms: i64,
    pub reason: String,
    /// Counts toward the circuit breaker when it is finally deleted.
    #[serde(default)]
    pub replacement: bool,
    /// The `shutdown` action DigitalOcean accepted for it; `None`: none yet (the call failed,
    /// or the drain was recorded by an ops that kept no id): sent again while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<u64>,
}

/// What DigitalOcean says of the shutdown ops sent a draining droplet, this run.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Shutdown {
    /// Not asked (the droplet is not active, cannot be told, or ops has no record of this
    /// drain), or its action could not be read this run.
    #[default]
    Unknown,
    /// Ops' record of the drain has no accepted shutdown.
    NotSent,
    InProgress,
    Completed,
    /// Errored, or DigitalOcean knows no such action: the reason.
    Failed(String),
}

/// What a draining droplet's shutdown needs, besides waiting.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Send it again, for this reason.
    Resend(String),
    /// DigitalOcean completed the shutdown but the droplet is still active (the guest ignored
    /// it): the line for the operator.
    Ignored(String),
}

/// What is known of one draining droplet this run.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub name: &'a str,
    /// It shut down (DigitalOcean `off`): the drain service let the shutdown finish.
    pub off: bool,
    /// Runs on it per the webapp's database (friendly ids); `None`: not known this run.
    pub runs: Option<&'a [String]>,
    pub drain: &'a Drain,
    pub now_ms: i64,
    pub timeout: Duration,
    /// It can be told to stop taking runs (see [`CAPABLE_TAG`]).
    pub capable: bool,
    pub shutdown: Shutdown,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Still draining: the line for the report.
    Wait(String),
    /// Delete it now, for this reason.
    Delete(String),
}

fn named(runs: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = runs
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if runs.len() > SHOWN {
        s.push_str(&format!(" and {} more", runs.len() - SHOWN));
    }
    s
}

/// How the delete of a droplet whose drain ran out of time begins.
pub const TIMED_OUT: &str = "drain timeout";
/// In that reason, what says runs were still on it.
pub const RUNS_LEFT: &str = "still on it will be retried";

/// The next step for a draining droplet.
pub fn step(f: &Facts) -> Step {
    let elapsed_ms = (f.now_ms - f.drain.started_ms).max(0);
    let elapsed = Duration::from_millis(elapsed_ms as u64);
    if f.off {
        return Step::Delete(format!(
            "drained ({}): it stopped taking runs and shut down once none was left, after {}",
            f.drain.reason,
            duration::format(elapsed.max(Duration::from_secs(1)))
        ));
    }
    match f.runs {
        Some([]) if elapsed_ms >= SETTLE_SECS * 1000 || !f.capable => {
            return Step::Delete(format!(
                "drained ({}): no run executes on it (after {})",
                f.drain.reason,
                duration::format(elapsed.max(Duration::from_secs(1)))
            ))
        }
        _ => {}
    }
    if elapsed >= f.timeout {
        let runs = match f.runs {
            Some([]) => "no run is known to execute on it".to_string(),
            Some(r) => format!(
                "{} run(s) {RUNS_LEFT} by Trigger.dev from the start: {}",
                r.len(),
                named(r)
            ),
            None => "the runs on it are unknown this run (no webapp view)".to_string(),
        };
        return Step::Delete(format!(
            "{TIMED_OUT} ({}) passed ({}): {runs}",
            duration::format(f.timeout),
            f.drain.reason
        ));
    }
    let left = duration::format((f.timeout - elapsed).max(Duration::from_secs(1)));
    let how = if f.capable {
        "told to stop taking runs"
    } else {
        "it predates ops' drain and still takes runs: waiting until it is idle"
    };
    let runs = match f.runs {
        Some([]) => "no run left; it goes at the next check".to_string(),
        Some(r) => format!("{} run(s) still executing ({})", r.len(), named(r)),
        None => "runs on it unknown this run".to_string(),
    };
    Step::Wait(format!(
        "draining ({}; {how}): {runs}; deleted once idle, or in {left} (drain_timeout {})",
        f.drain.reason,
        duration::format(f.timeout)
    ))
}

/// A draining droplet that is still `active` while ops' record has no completed shutdown
/// action is sent the shutdown again: DigitalOcean's `shutdown` "guarantees that the command is
/// issued, not that it succeeds", and until it succeeds the droplet keeps taking runs while
/// counted as draining. A completed one that left it active needs a person: no forced
/// power-off is documented that would let its runs finish.
pub fn signal(f: &Facts) -> Option<Signal> {
    if !f.capable || f.off {
        return None;
    }
    match &f.shutdown {
        Shutdown::NotSent => Some(Signal::Resend(
            "its shutdown was not sent (the call failed)".into(),
        )),
        Shutdown::Failed(why) => Some(Signal::Resend(format!("its shutdown {why}"))),
        Shutdown::Completed => Some(Signal::Ignored(format!(
            "droplet {} is still active although DigitalOcean completed its shutdown ({}): it may take runs again while counted as draining, and goes at drain_timeout with the runs on it. Look at it (journalctl -u ops-drain.service; systemctl status poweroff.target)",
            f.name, f.drain.reason
        ))),
        Shutdown::Unknown | Shutdown::InProgress => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn drain(ago_secs: i64) -> Drain {
        Drain {
            started_ms: NOW - ago_secs * 1000,
            reason: "spec drift".into(),
            replacement: false,
            shutdown: Some(7),
        }
    }

    fn facts<'a>(
        status: &'a str,
        runs: Option<&'a [String]>,
        d: &'a Drain,
        capable: bool,
    ) -> Facts<'a> {
        Facts {
            name: "sup-a",
            off: status == "off",
            runs,
            drain: d,
            now_ms: NOW,
            timeout: Duration::from_secs(3600),
            capable,
            shutdown: Shutdown::InProgress,
        }
    }

    #[test]
    fn a_shutdown_not_sent_or_failed_is_sent_again_while_active_and_a_completed_one_is_reported() {
        let d = drain(60);
        let runs = two();
        let with = |status: &'static str, shutdown: Shutdown, capable: bool| {
            let mut f = facts(status, Some(&runs), &d, capable);
            f.shutdown = shutdown;
            signal(&f)
        };
        assert!(matches!(
            with("active", Shutdown::NotSent, true),
            Some(Signal::Resend(r)) if r.contains("not sent")
        ));
        assert!(matches!(
            with("active", Shutdown::Failed("action 7 errored".into()), true),
            Some(Signal::Resend(r)) if r.contains("action 7 errored")
        ));
        assert!(matches!(
            with("active", Shutdown::Completed, true),
            Some(Signal::Ignored(l)) if l.contains("sup-a is still active")
        ));
        for quiet in [Shutdown::InProgress, Shutdown::Unknown] {
            assert_eq!(with("active", quiet, true), None);
        }
        // Off, or never able to drain: nothing to send.
        assert_eq!(with("off", Shutdown::NotSent, true), None);
        assert_eq!(with("active", Shutdown::NotSent, false), None);
    }

    fn two() -> Vec<String> {
        vec!["run_a".into(), "run_b".into()]
    }

    #[test]
    fn a_droplet_with_runs_waits_and_says_which() {
        let d = drain(120);
        let runs = two();
        match step(&facts("active", Some(&runs), &d, true)) {
            Step::Wait(l) => {
                assert!(l.contains("2 run(s) still executing (run_a, run_b)"), "{l}");
                assert!(l.contains("in 58m"), "{l}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn off_means_drained() {
        let d = drain(300);
        let runs = two();
        assert!(
            matches!(step(&facts("off", Some(&runs), &d, true)), Step::Delete(r) if r.starts_with("drained"))
        );
    }

    #[test]
    fn no_run_left_deletes_once_the_signal_had_time_to_act() {
        let runs: Vec<String> = vec![];
        let fresh = drain(3);
        assert!(matches!(
            step(&facts("active", Some(&runs), &fresh, true)),
            Step::Wait(_)
        ));
        let settled = drain(SETTLE_SECS);
        assert!(matches!(
            step(&facts("active", Some(&runs), &settled, true)),
            Step::Delete(_)
        ));
        // A droplet that cannot be told goes the moment it is idle.
        assert!(matches!(
            step(&facts("active", Some(&runs), &fresh, false)),
            Step::Delete(_)
        ));
    }

    #[test]
    fn past_the_timeout_it_goes_naming_the_runs_that_will_be_retried() {
        let d = drain(3600);
        let runs = two();
        match step(&facts("active", Some(&runs), &d, true)) {
            Step::Delete(r) => assert!(r.contains("2 run(s) still on it will be retried by Trigger.dev from the start: run_a, run_b"), "{r}"),
            other => panic!("{other:?}"),
        }
        // Without a webapp view: the runs are unknown, and only the timeout ends the drain.
        let early = drain(60);
        assert!(matches!(
            step(&facts("active", None, &early, true)),
            Step::Wait(_)
        ));
        assert!(
            matches!(step(&facts("active", None, &d, true)), Step::Delete(r) if r.contains("unknown"))
        );
    }

    #[test]
    fn a_zero_timeout_deletes_at_once() {
        let d = drain(0);
        let runs = two();
        let mut f = facts("active", Some(&runs), &d, true);
        f.timeout = Duration::ZERO;
        assert!(matches!(step(&f), Step::Delete(r) if r.contains("run_a")));
    }
}
