//! Which release a version roll goes to, pure: a roll is decided only on a fresh reading of the
//! webapp's running version (one Railway request, made only when the fleet would change),
//! never on the config record's copy, which may be older than the fleet itself. Without a
//! fresh reading the fleet stays at the newest version it runs.

use crate::duration;
use crate::release::{self, WebappRelease};

/// What the record says of the webapp, and what the fleet runs.
pub struct Facts<'a> {
    pub pin: Option<&'a str>,
    pub recorded: Option<&'a str>,
    pub record_age_ms: i64,
    /// Extract read the record from Railway earlier in this run: a fresh reading itself.
    pub record_fresh: bool,
    /// The versions in the serving droplets' tags.
    pub running: &'a [String],
}

/// Whether the plan needs the webapp's version read again before it may change the fleet's.
pub fn needs_reading(f: &Facts) -> bool {
    let wanted = release::supervisor_version(f.pin, f.recorded).tag;
    f.pin.is_none() && !f.record_fresh && f.running.iter().any(|v| *v != wanted)
}

/// The webapp version the plan goes by, and the line saying where it came from and how old
/// the reading is (`None` for the line: the pin decides, or the usual line says it all).
pub fn settle(
    f: &Facts,
    reading: Option<Result<WebappRelease, String>>,
) -> (Option<String>, Option<String>) {
    let recorded = f.recorded.map(str::to_string);
    if f.pin.is_some() {
        return (recorded, None);
    }
    let age = duration::format(std::time::Duration::from_millis(
        f.record_age_ms.max(1000) as u64
    ));
    let said = match f.recorded {
        Some(v) => format!("the config record ({age} old) says {v}"),
        None => format!("the config record ({age} old) has no version"),
    };
    let why = match reading {
        None => {
            let v = release::supervisor_version(None, f.recorded).tag;
            return match f.recorded {
                Some(_) if !f.record_fresh => (
                    recorded,
                    Some(format!(
                        "supervisor version {v} (the webapp's, read from Railway {age} ago)"
                    )),
                ),
                _ => (recorded, None),
            };
        }
        Some(Ok(WebappRelease {
            version: Some(v),
            origin,
        })) => {
            let old = if f.recorded == Some(v.as_str()) {
                String::new()
            } else {
                format!("; {said}")
            };
            let line = format!(
                "supervisor version {v} (the webapp's, read from Railway just now: {origin}{old})"
            );
            return (Some(v), Some(line));
        }
        Some(Ok(r)) => r.origin,
        Some(Err(e)) => e,
    };
    match newest(f.running) {
        Some(v) => (
            Some(v.clone()),
            Some(format!(
                "supervisor version stays at {v}: the webapp's version could not be read again ({why}); {said}, and the fleet's version changes only on a fresh reading"
            )),
        ),
        None => (recorded, None),
    }
}

/// The highest release among `versions` (by number, not text).
fn newest(versions: &[String]) -> Option<&String> {
    versions.iter().max_by_key(|v| release::numbers(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(recorded: Option<&'a str>, age: i64, running: &'a [String]) -> Facts<'a> {
        Facts {
            pin: None,
            recorded,
            record_age_ms: age,
            record_fresh: age < 1000,
            running,
        }
    }

    fn read(v: &str) -> Option<Result<WebappRelease, String>> {
        Some(Ok(WebappRelease {
            version: Some(v.into()),
            origin: format!("image ghcr.io/triggerdotdev/trigger.dev:{v}"),
        }))
    }

    #[test]
    fn a_reading_is_needed_only_when_an_old_record_would_change_the_fleet() {
        let running = vec!["v4.5.12".to_string()];
        assert!(needs_reading(&facts(Some("v4.5.10"), 120_000, &running)));
        assert!(!needs_reading(&facts(Some("v4.5.12"), 120_000, &running)));
        assert!(
            !needs_reading(&facts(Some("v4.5.10"), 500, &running)),
            "read from Railway this run"
        );
        assert!(!needs_reading(&facts(Some("v4.5.10"), 120_000, &[])));
        let pinned = Facts {
            pin: Some("v4.5.12"),
            ..facts(Some("v4.5.10"), 120_000, &running)
        };
        assert!(!needs_reading(&pinned));
    }

    #[test]
    fn the_fresh_reading_decides_and_says_where_it_came_from() {
        let running = vec!["v4.5.12".to_string()];
        let f = facts(Some("v4.5.10"), 120_000, &running);
        let (v, line) = settle(&f, read("v4.5.13"));
        assert_eq!(v.as_deref(), Some("v4.5.13"));
        let line = line.unwrap();
        assert!(
            line.starts_with(
                "supervisor version v4.5.13 (the webapp's, read from Railway just now: image"
            ),
            "{line}"
        );
        assert!(
            line.contains("the config record (2m old) says v4.5.10"),
            "{line}"
        );
    }

    #[test]
    fn without_a_fresh_reading_the_fleet_never_goes_backwards() {
        let running = vec!["v4.5.9".to_string(), "v4.5.12".to_string()];
        let f = facts(Some("v4.5.10"), 120_000, &running);
        for failed in [
            Some(Err("Railway: HTTP 503".to_string())),
            Some(Ok(WebappRelease {
                version: None,
                origin: "image …:latest is a moving tag".into(),
            })),
        ] {
            let (v, line) = settle(&f, failed);
            assert_eq!(v.as_deref(), Some("v4.5.12"), "the newest it runs");
            let line = line.unwrap();
            assert!(
                line.starts_with("supervisor version stays at v4.5.12"),
                "{line}"
            );
            assert!(line.contains("says v4.5.10"), "{line}");
        }
    }

    #[test]
    fn a_kept_record_says_how_old_its_reading_is() {
        let running = vec!["v4.5.12".to_string()];
        let (v, line) = settle(&facts(Some("v4.5.12"), 600_000, &running), None);
        assert_eq!(v.as_deref(), Some("v4.5.12"));
        assert_eq!(
            line.as_deref(),
            Some("supervisor version v4.5.12 (the webapp's, read from Railway 10m ago)")
        );
        let pinned = Facts {
            pin: Some("v4.5.11"),
            ..facts(Some("v4.5.12"), 600_000, &running)
        };
        assert_eq!(settle(&pinned, None), (Some("v4.5.12".into()), None));
    }
}
