//! One droplet's health, pure: facts observed this run (time included) in, a
//! verdict out. No IO, no clock. docs/supervisor.md has the same table in prose.
//!
//! | signal (first that applies)               | in boot grace¹ | otherwise |
//! |-------------------------------------------|----------------|-----------|
//! | not `active` or no public IPv4            | booting        | failing   |
//! | heartbeat younger than `stale_after`      | healthy        | healthy   |
//! | heartbeat older than `stale_after`        | (never²)       | failing: silent for N |
//! | webapp never heard of it                  | booting        | failing: never heard |
//! | no webapp view, `/health` 200             | healthy        | healthy   |
//! | no webapp view, `/health` failed          | booting        | failing   |
//! | no webapp view, no `/health`              | unknown        | unknown   |
//!
//! ¹ younger than `boot_grace` and never seen healthy: the grace ends at the first healthy
//! observation (a past `last_ok`, or any heartbeat at all). ² a heartbeat ends the grace.
//! Healthy resets the failure streak; failing adds one; booting and unknown leave it alone.

use std::collections::BTreeMap;
use std::time::Duration;

use super::facts::Power;
pub use super::facts::{Heartbeat, Streak};
use crate::duration;

/// The facts about one droplet, all observed before deciding.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub name: &'a str,
    /// Up, off, or the platform's other word for it (`new`, `archive`).
    pub power: &'a Power,
    pub has_ip: bool,
    pub age_secs: i64,
    pub heartbeat: Heartbeat,
    /// `GET /health` on port 8020, when SUPERVISOR_HEALTH_SOURCES lets ops in; `None`: not checked.
    pub http: Option<Result<(), String>>,
    /// The streak kept from earlier runs.
    pub prev: &'a Streak,
    /// Now, in Unix milliseconds (for the streak's `last_ok`).
    pub now_ms: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub boot_grace: Duration,
    pub stale_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Booting,
    Failing,
    /// Nothing can see it this run: never replaced on that account.
    Unknown,
    /// Silent, but the webapp is the likely cause (it is down, or stopped recording every
    /// heartbeat): not counted, never replaced on that account.
    Held,
    /// Leaving for a planned reason: told to stop taking runs, deleted once idle. Neither
    /// serving capacity nor failing.
    Draining,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub health: Health,
    pub note: String,
    pub streak: Streak,
}

pub(crate) fn ago(secs: f64) -> String {
    duration::format(Duration::from_secs(secs.max(1.0) as u64))
}

/// One droplet's health this run.
pub fn assess(f: &Facts, rules: &Rules) -> Verdict {
    let heard = matches!(f.heartbeat, Heartbeat::Age(_));
    let grace = rules.boot_grace.as_secs() as i64;
    let in_grace = f.age_secs < grace && f.prev.last_ok.is_none() && !heard;
    let (health, note) = if !f.power.up() || !f.has_ip {
        not_up(f, in_grace)
    } else {
        by_signal(f, rules, in_grace)
    };
    let streak = next_streak(f, health, &note);
    Verdict {
        health,
        note,
        streak,
    }
}

/// Not up, or without a public IPv4: booting in its grace, failing after.
fn not_up(f: &Facts, in_grace: bool) -> (Health, String) {
    if in_grace {
        (
            Health::Booting,
            format!(
                "booting (status {}, {} old)",
                f.power.word(),
                ago(f.age_secs as f64)
            ),
        )
    } else {
        (
            Health::Failing,
            format!(
                "still {} without a public IPv4 after {}",
                f.power.word(),
                ago(f.age_secs as f64)
            ),
        )
    }
}

/// Up: the heartbeat decides, else `/health`.
fn by_signal(f: &Facts, rules: &Rules, in_grace: bool) -> (Health, String) {
    let grace = rules.boot_grace.as_secs() as i64;
    let grace_left = || {
        format!(
            "{} left of the {} grace",
            duration::format(Duration::from_secs((grace - f.age_secs).max(1) as u64)),
            duration::format(rules.boot_grace)
        )
    };
    let http_ok = matches!(f.http, Some(Ok(())));
    match (&f.heartbeat, &f.http) {
        (Heartbeat::Age(a), http) if *a < rules.stale_after.as_secs_f64() => {
            let mut note = format!("healthy (last heartbeat {} ago)", ago(*a));
            if let Some(Err(e)) = http {
                note.push_str(&format!("; but /health failed: {e}"));
            }
            (Health::Healthy, note)
        }
        (Heartbeat::Age(a), _) => (
            Health::Failing,
            format!(
                "{}silent to the webapp for {} (stale after {}): check the droplet (docker compose logs supervisor) and that it still reaches TRIGGER_API_URL",
                if http_ok { "answers /health but is " } else { "" },
                ago(*a),
                duration::format(rules.stale_after)
            ),
        ),
        (Heartbeat::Elsewhere { group, age }, _) => (
            Health::Unknown,
            format!(
                "heartbeating into group {group} (last heartbeat {} ago), not ours: it holds that group's token, so ops neither counts nor replaces it",
                ago(*age)
            ),
        ),
        (Heartbeat::Never, _) if in_grace => (
            Health::Booting,
            format!("booting (the webapp has not heard from it yet; {})", grace_left()),
        ),
        (Heartbeat::Never, _) => (
            Health::Failing,
            format!(
                "{}the webapp has never heard from {}: check its token, MANAGED_WORKER_SECRET and TRIGGER_API_URL",
                if http_ok { "answers /health but " } else { "" },
                f.name
            ),
        ),
        (Heartbeat::NoView, Some(Ok(()))) => (Health::Healthy, "healthy (/health 200)".into()),
        (Heartbeat::NoView, Some(Err(e))) if in_grace => {
            (Health::Booting, format!("booting ({e}; {})", grace_left()))
        }
        (Heartbeat::NoView, Some(Err(e))) => (Health::Failing, e.clone()),
        (Heartbeat::NoView, None) => (
            Health::Unknown,
            "health unknown: no webapp view and no /health check this run".into(),
        ),
    }
}

/// Healthy resets the failure streak; failing adds one; booting and unknown leave it alone.
fn next_streak(f: &Facts, health: Health, note: &str) -> Streak {
    let mut streak = f.prev.clone();
    match health {
        Health::Healthy => {
            streak.fails = 0;
            streak.last_ok = Some(f.now_ms);
            streak.last_error = None;
        }
        Health::Failing => {
            streak.fails = streak.fails.saturating_add(1);
            streak.last_error = Some(note.to_string());
        }
        Health::Booting | Health::Unknown | Health::Held | Health::Draining => {}
    }
    streak
}

/// A heartbeat this close to `stale` is confirmed in the same run: ops waits until it would be
/// stale and reads the heartbeats again (one short statement), instead of leaving the silence to
/// the next check a minute later. Healthy heartbeats (every 10 s, or 30 s for older droplets)
/// never come this close, so a healthy cycle never waits.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(15);

/// How long to wait before reading the heartbeats again, if a heartbeat is within
/// `CONFIRM_WITHIN` of `stale` (the wait ends just past it).
pub fn confirm_wait(ages: &BTreeMap<String, Option<f64>>, stale: Duration) -> Option<Duration> {
    let stale = stale.as_secs_f64();
    // Never more than half of `stale_after`: a short one set by the operator (20s) must not
    // make healthy 10 s heartbeats wait.
    let window = CONFIRM_WITHIN.as_secs_f64().min(stale / 2.0);
    ages.values()
        .flatten()
        .filter(|a| **a < stale && **a >= stale - window)
        .map(|a| stale - a)
        .reduce(f64::max)
        .map(|w| Duration::from_secs_f64(w + 0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_heartbeat_close_to_stale_is_confirmed_and_the_wait_ends_just_past_it() {
        let ages = |v: &[f64]| -> BTreeMap<String, Option<f64>> {
            v.iter()
                .enumerate()
                .map(|(i, a)| (format!("d{i}"), Some(*a)))
                .chain([("never".to_string(), None)])
                .collect()
        };
        let stale = Duration::from_secs(30);
        // Healthy 10 s heartbeats never wait; nor one already stale (it is failing now).
        assert_eq!(confirm_wait(&ages(&[0.5, 9.9, 14.9]), stale), None);
        assert_eq!(confirm_wait(&ages(&[31.0]), stale), None);
        assert_eq!(
            confirm_wait(&ages(&[3.0, 20.0, 16.0]), stale),
            Some(Duration::from_secs_f64(14.5))
        );
        // A short stale_after set by the operator: the window is its second half.
        let short = Duration::from_secs(20);
        assert_eq!(confirm_wait(&ages(&[9.0]), short), None);
        assert_eq!(
            confirm_wait(&ages(&[12.0]), short),
            Some(Duration::from_secs_f64(8.5))
        );
        // Droplets beating every 30 s (stale after 1m): only past 45 s.
        let stale = Duration::from_secs(60);
        assert_eq!(confirm_wait(&ages(&[30.4, 44.0]), stale), None);
        assert_eq!(
            confirm_wait(&ages(&[50.0]), stale),
            Some(Duration::from_secs_f64(10.5))
        );
    }

    const NOW: i64 = 1_800_000_000_000;
    const RULES: Rules = Rules {
        boot_grace: Duration::from_secs(600),
        stale_after: Duration::from_secs(120),
    };

    struct Case {
        status: &'static str,
        has_ip: bool,
        age: i64,
        heartbeat: Heartbeat,
        http: Option<Result<(), String>>,
        seen_ok: bool,
        fails: u32,
    }

    impl Default for Case {
        fn default() -> Case {
            Case {
                status: "active",
                has_ip: true,
                age: 3600,
                heartbeat: Heartbeat::Age(10.0),
                http: None,
                seen_ok: true,
                fails: 0,
            }
        }
    }

    fn run(c: Case) -> Verdict {
        let prev = Streak {
            fails: c.fails,
            last_ok: c.seen_ok.then_some(NOW - 60_000),
            last_error: None,
            drain: None,
            idle_since: None,
        };
        assess(
            &Facts {
                name: "sup-1",
                power: &match c.status {
                    "active" => Power::Up,
                    "off" => Power::Off,
                    w => Power::Other(w.into()),
                },
                has_ip: c.has_ip,
                age_secs: c.age,
                heartbeat: c.heartbeat,
                http: c.http,
                prev: &prev,
                now_ms: NOW,
            },
            &RULES,
        )
    }

    fn check(c: Case, health: Health, note: &str, fails: u32) {
        let v = run(c);
        assert_eq!(v.health, health, "{}", v.note);
        assert!(v.note.contains(note), "{:?} lacks {note:?}", v.note);
        assert_eq!(v.streak.fails, fails, "{}", v.note);
    }

    #[test]
    fn fresh_heartbeat_is_healthy_and_resets_the_streak() {
        let v = run(Case {
            fails: 2,
            ..Case::default()
        });
        assert_eq!(v.health, Health::Healthy);
        assert_eq!((v.streak.fails, v.streak.last_ok), (0, Some(NOW)));
        assert!(v.note.contains("last heartbeat 10s ago"), "{}", v.note);
    }

    #[test]
    fn stale_heartbeat_is_failing_with_the_silence_named() {
        let c = Case {
            heartbeat: Heartbeat::Age(600.0),
            fails: 1,
            ..Case::default()
        };
        check(c, Health::Failing, "silent to the webapp for 10m", 2);
    }

    #[test]
    fn answers_health_but_silent_says_exactly_that() {
        let c = Case {
            heartbeat: Heartbeat::Age(600.0),
            http: Some(Ok(())),
            ..Case::default()
        };
        check(
            c,
            Health::Failing,
            "answers /health but is silent to the webapp",
            1,
        );
        let never = Case {
            heartbeat: Heartbeat::Never,
            http: Some(Ok(())),
            ..Case::default()
        };
        check(
            never,
            Health::Failing,
            "answers /health but the webapp has never heard",
            1,
        );
    }

    #[test]
    fn never_heard_after_the_grace_is_failing_with_the_fix() {
        let c = Case {
            heartbeat: Heartbeat::Never,
            seen_ok: false,
            ..Case::default()
        };
        check(
            c,
            Health::Failing,
            "never heard from sup-1: check its token, MANAGED_WORKER_SECRET and TRIGGER_API_URL",
            1,
        );
    }

    #[test]
    fn never_heard_within_the_grace_is_booting() {
        let c = Case {
            heartbeat: Heartbeat::Never,
            seen_ok: false,
            age: 60,
            ..Case::default()
        };
        check(c, Health::Booting, "9m left of the 10m grace", 0);
    }

    #[test]
    fn grace_ends_at_the_first_healthy_observation() {
        // Seen healthy once (by either signal), then silent at 1 minute old: failing at once.
        let c = Case {
            heartbeat: Heartbeat::Never,
            age: 60,
            ..Case::default()
        };
        check(c, Health::Failing, "never heard", 1);
        let by_heartbeat = Case {
            heartbeat: Heartbeat::Age(200.0),
            age: 300,
            seen_ok: false,
            ..Case::default()
        };
        check(by_heartbeat, Health::Failing, "silent", 1);
        let by_http = Case {
            heartbeat: Heartbeat::NoView,
            http: Some(Err("GET refused".into())),
            age: 30,
            ..Case::default()
        };
        check(by_http, Health::Failing, "GET refused", 1);
    }

    #[test]
    fn not_active_is_booting_in_grace_and_failing_after() {
        let c = Case {
            status: "new",
            has_ip: false,
            age: 40,
            seen_ok: false,
            heartbeat: Heartbeat::Never,
            ..Case::default()
        };
        check(c, Health::Booting, "booting (status new, 40s old)", 0);
        let late = Case {
            status: "new",
            has_ip: false,
            age: 900,
            seen_ok: false,
            heartbeat: Heartbeat::Never,
            ..Case::default()
        };
        check(
            late,
            Health::Failing,
            "still new without a public IPv4 after 15m",
            1,
        );
    }

    #[test]
    fn http_alone_decides_without_a_webapp_view() {
        let ok = Case {
            heartbeat: Heartbeat::NoView,
            http: Some(Ok(())),
            ..Case::default()
        };
        check(ok, Health::Healthy, "/health 200", 0);
        let booting = Case {
            heartbeat: Heartbeat::NoView,
            http: Some(Err("refused".into())),
            seen_ok: false,
            age: 10,
            ..Case::default()
        };
        check(booting, Health::Booting, "booting (refused", 0);
    }

    #[test]
    fn healthy_heartbeat_notes_a_failed_health_get() {
        let c = Case {
            http: Some(Err("timed out".into())),
            ..Case::default()
        };
        check(c, Health::Healthy, "but /health failed: timed out", 0);
    }

    #[test]
    fn no_signal_at_all_is_unknown_and_keeps_the_streak() {
        let c = Case {
            heartbeat: Heartbeat::NoView,
            http: None,
            fails: 2,
            ..Case::default()
        };
        check(c, Health::Unknown, "health unknown", 2);
    }
}
