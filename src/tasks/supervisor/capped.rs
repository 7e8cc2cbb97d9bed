//! Runs that wait because the fleet cannot grow, pure: runs that could start (no concurrency
//! limit or pause holds them) have waited past `capped_alert_after` while the load needs more
//! droplets than `max`, or than the account's droplet limit allows. A problem in `ops status`,
//! a gauge in `/metrics`, and one warning per episode naming the fix.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// What the load and the bounds said this run.
pub struct Facts {
    /// Runs that could start now.
    pub startable: u64,
    /// Droplets the load needs, before the bounds.
    pub need: usize,
    pub max: usize,
    /// The droplets the account's limit leaves room for this run (`None`: not asked).
    pub room: Option<usize>,
    /// Droplets serving now.
    pub serving: usize,
    /// How long the oldest run waiting in our queues has waited.
    pub oldest_wait_secs: Option<f64>,
}

/// A standing capped episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capped {
    pub runs: u64,
    pub oldest_wait_secs: f64,
    /// What it is and the fix.
    pub text: String,
    /// When the episode began (Unix ms): the warning goes out at its start only.
    pub since_ms: i64,
}

/// The episode this run is in, if any; `prev` is the last run's (its start is kept).
pub fn judge(
    f: &Facts,
    after: Option<Duration>,
    prev: Option<&Capped>,
    now_ms: i64,
) -> Option<Capped> {
    let after = after?;
    let waited = f.oldest_wait_secs?;
    if f.startable == 0 || waited < after.as_secs_f64() {
        return None;
    }
    let wait = duration::format(Duration::from_secs(waited as u64));
    let head = format!(
        "{} run(s) that could start have waited up to {wait}",
        f.startable
    );
    let text = if f.need > f.max {
        format!(
            "{head} with the fleet at max {} ({} droplet(s) needed): raise max on the supervisor task in jobs.yaml (each droplet costs its size's price), or let fewer runs start at once",
            f.max, f.need
        )
    } else {
        match f.room {
            Some(room) if f.serving + room < f.need => format!(
                "{head}: the account's droplet limit leaves room for {room} more, {} needed: raise the droplet limit (DigitalOcean: Settings → Team → Droplet limit) or delete droplets you no longer use",
                f.need - f.serving
            ),
            _ => return None,
        }
    };
    Some(Capped {
        runs: f.startable,
        oldest_wait_secs: waited,
        text,
        since_ms: prev.map_or(now_ms, |p| p.since_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const AFTER: Option<Duration> = Some(Duration::from_secs(300));

    fn facts(need: usize, waited: f64) -> Facts {
        Facts {
            startable: 30,
            need,
            max: 2,
            room: None,
            serving: 2,
            oldest_wait_secs: Some(waited),
        }
    }

    #[test]
    fn runs_waiting_past_the_threshold_at_max_are_capped() {
        let c = judge(&facts(8, 600.0), AFTER, None, NOW).unwrap();
        assert_eq!(c.runs, 30);
        assert_eq!(c.since_ms, NOW);
        assert!(
            c.text.starts_with("30 run(s) that could start have waited up to 10m with the fleet at max 2 (8 droplet(s) needed): raise max"),
            "{}",
            c.text
        );
        assert_eq!(
            judge(&facts(8, 200.0), AFTER, None, NOW),
            None,
            "not long yet"
        );
        assert_eq!(
            judge(&facts(2, 600.0), AFTER, None, NOW),
            None,
            "max suffices"
        );
        assert_eq!(judge(&facts(8, 600.0), None, None, NOW), None, "off");
        let held = Facts {
            startable: 0,
            ..facts(8, 600.0)
        };
        assert_eq!(judge(&held, AFTER, None, NOW), None, "held back by a limit");
    }

    #[test]
    fn the_episode_keeps_its_start() {
        let first = judge(&facts(8, 600.0), AFTER, None, NOW).unwrap();
        let next = judge(&facts(8, 660.0), AFTER, Some(&first), NOW + 60_000).unwrap();
        assert_eq!(next.since_ms, NOW);
    }

    #[test]
    fn the_account_limit_names_its_own_fix() {
        let f = Facts {
            need: 5,
            max: 10,
            room: Some(1),
            ..facts(5, 600.0)
        };
        let c = judge(&f, AFTER, None, NOW).unwrap();
        assert!(
            c.text
                .contains("droplet limit leaves room for 1 more, 3 needed"),
            "{}",
            c.text
        );
    }
}
