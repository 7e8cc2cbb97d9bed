//! A droplet's free disk, pure: when to read it, and what a reading means.
//!
//! Every deployment adds its image to every droplet that ran one of its runs; the daily prune
//! (`ops-prune.timer`) removes the old unused ones, and a full disk fails every run on the
//! droplet. DigitalOcean's monitoring agent (installed by `monitoring: true` at create) reports
//! the root filesystem's `filesystem_free` and `filesystem_size`; ops reads both through
//! `GET /v2/monitoring/metrics/droplet/{metric}`, at most every [`REREAD_MS`] per droplet (a
//! disk fills over days, not minutes: a healthy run asks nothing), and fails naming the droplet
//! below [`LOW_BELOW`]. No samples (an agent not installed or not reporting) is unknown, never
//! a failure.

use serde::{Deserialize, Serialize};

/// Below this share of the root filesystem free, the task fails naming the droplet.
pub const LOW_BELOW: f64 = 0.10;
/// A reading is kept this long before the droplet is asked again.
pub const REREAD_MS: i64 = 20 * 60_000;
/// A low disk is read again sooner: freeing space clears the failure within minutes.
pub const REREAD_LOW_MS: i64 = 5 * 60_000;
/// A droplet younger than this is not read: its agent has not reported yet.
pub const READ_AFTER_AGE_SECS: i64 = 5 * 60;
/// The samples asked for end now and start this long before (the agent reports every minute
/// or two; the latest one counts).
pub const WINDOW_SECS: i64 = 15 * 60;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One reading of a droplet's root filesystem, kept in the state (`droplet:{id}:disk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Bytes free (`filesystem_free`); `None`: no sample in the window.
    pub free_bytes: Option<f64>,
    /// Bytes in all (`filesystem_size`); `None`: no sample in the window.
    pub size_bytes: Option<f64>,
    pub read_at_ms: i64,
    /// Why it could not be read (DigitalOcean's answer), when it could not.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok { ratio: f64 },
    Low { ratio: f64 },
    Unknown(String),
}

/// What `ops status` and `/metrics` show of a droplet's disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// `ok`, `low` or `unknown`.
    pub verdict: String,
    pub free_ratio: Option<f64>,
    pub free_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
    /// RFC 3339.
    pub read_at: String,
    /// Why it is unknown.
    #[serde(default)]
    pub why: Option<String>,
}

impl Reading {
    pub fn verdict(&self) -> Verdict {
        if let Some(e) = &self.error {
            return Verdict::Unknown(format!("DigitalOcean's monitoring answered: {e}"));
        }
        match (self.free_bytes, self.size_bytes) {
            (Some(free), Some(size)) if size > 0.0 && (0.0..=size).contains(&free) => {
                let ratio = free / size;
                if ratio < LOW_BELOW {
                    Verdict::Low { ratio }
                } else {
                    Verdict::Ok { ratio }
                }
            }
            (Some(_), Some(_)) => Verdict::Unknown(
                "the samples do not add up (free beyond the size, or no size)".into(),
            ),
            _ => Verdict::Unknown(format!(
                "no filesystem sample in the last {} min: DigitalOcean's monitoring agent (do-agent) is not installed or not reporting on it",
                WINDOW_SECS / 60
            )),
        }
    }

    /// Whether a droplet with this last reading (or none) is read this run.
    pub fn due(prev: Option<&Reading>, up: bool, age_secs: i64, now_ms: i64) -> bool {
        if !up || age_secs < READ_AFTER_AGE_SECS {
            return false;
        }
        let Some(prev) = prev else {
            return true;
        };
        let every = match prev.verdict() {
            Verdict::Low { .. } => REREAD_LOW_MS,
            _ => REREAD_MS,
        };
        now_ms - prev.read_at_ms >= every
    }

    /// `2.0 of 40.0 GiB free (5%)`, or why not known.
    pub fn describe(&self) -> String {
        match (self.verdict(), self.free_bytes, self.size_bytes) {
            (Verdict::Ok { ratio } | Verdict::Low { ratio }, Some(free), Some(size)) => format!(
                "{:.1} of {:.1} GiB free ({})",
                free / GIB,
                size / GIB,
                percent(ratio)
            ),
            (Verdict::Unknown(why), ..) => format!("unknown ({why})"),
            _ => "unknown".into(),
        }
    }

    /// The task's failure for a low disk, naming the droplet; `None` when it is not low.
    pub fn failure(&self, name: &str, id: u64) -> Option<String> {
        matches!(self.verdict(), Verdict::Low { .. }).then(|| {
            format!(
                "droplet {name} (id {id}): disk {}, below {}: a full disk fails every run on it; the daily prune keeps only images in use or of current deployments (`journalctl -u ops-prune` on the droplet says what it removed), so the images in use outgrow the disk: set a larger SUPERVISOR_SIZE (a bigger disk; the droplets are replaced one by one, drained) or free space on it",
                self.describe(),
                percent(LOW_BELOW)
            )
        })
    }

    pub fn status(&self) -> DiskStatus {
        let verdict = self.verdict();
        let (name, ratio, why) = match &verdict {
            Verdict::Ok { ratio } => ("ok", Some(*ratio), None),
            Verdict::Low { ratio } => ("low", Some(*ratio), None),
            Verdict::Unknown(why) => ("unknown", None, Some(why.clone())),
        };
        DiskStatus {
            verdict: name.into(),
            free_ratio: ratio.map(|r| (r * 10_000.0).round() / 10_000.0),
            free_bytes: self.free_bytes.map(|b| b as u64),
            size_bytes: self.size_bytes.map(|b| b as u64),
            read_at: chrono::DateTime::from_timestamp_millis(self.read_at_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            why,
        }
    }
}

/// `5%`, `0.4%` below one percent.
fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p > 0.0 && p < 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn reading(free_gib: Option<f64>, size_gib: Option<f64>, ago_ms: i64) -> Reading {
        Reading {
            free_bytes: free_gib.map(|g| g * GIB),
            size_bytes: size_gib.map(|g| g * GIB),
            read_at_ms: NOW - ago_ms,
            error: None,
        }
    }

    #[test]
    fn below_ten_percent_free_is_low_and_fails_naming_the_droplet() {
        let r = reading(Some(2.0), Some(40.0), 0);
        assert_eq!(r.verdict(), Verdict::Low { ratio: 0.05 });
        let line = r.failure("sup-a", 7).unwrap();
        assert!(
            line.starts_with("droplet sup-a (id 7): disk 2.0 of 40.0 GiB free (5%), below 10%"),
            "{line}"
        );
        assert!(line.contains("journalctl -u ops-prune"), "{line}");
        assert!(line.contains("SUPERVISOR_SIZE"), "{line}");
    }

    #[test]
    fn ten_percent_and_more_is_ok() {
        for (free, size) in [(4.0, 40.0), (16.0, 40.0), (40.0, 40.0)] {
            let r = reading(Some(free), Some(size), 0);
            assert!(
                matches!(r.verdict(), Verdict::Ok { .. }),
                "{free}/{size}: {:?}",
                r.verdict()
            );
            assert_eq!(r.failure("sup-a", 7), None);
        }
        assert_eq!(
            reading(Some(16.0), Some(40.0), 0).describe(),
            "16.0 of 40.0 GiB free (40%)"
        );
    }

    #[test]
    fn no_samples_an_error_or_nonsense_is_unknown_and_never_fails() {
        let cases = [
            reading(None, None, 0),
            reading(Some(1.0), None, 0),
            reading(Some(50.0), Some(40.0), 0),
            reading(Some(0.0), Some(0.0), 0),
            Reading {
                error: Some("HTTP 403: missing scope monitoring:read".into()),
                ..reading(None, None, 0)
            },
        ];
        for r in cases {
            assert!(matches!(r.verdict(), Verdict::Unknown(_)), "{r:?}");
            assert_eq!(r.failure("sup-a", 7), None);
            assert_eq!(r.status().verdict, "unknown");
            assert!(r.describe().starts_with("unknown ("), "{}", r.describe());
        }
        assert!(reading(None, None, 0).describe().contains("do-agent"));
    }

    #[test]
    fn a_reading_is_kept_twenty_minutes_a_low_one_five_and_young_or_inactive_droplets_wait() {
        let old = READ_AFTER_AGE_SECS;
        assert!(Reading::due(None, true, old, NOW));
        assert!(!Reading::due(None, true, old - 1, NOW), "too young");
        assert!(!Reading::due(None, false, old, NOW));
        assert!(!Reading::due(None, false, old, NOW));
        let fine = reading(Some(16.0), Some(40.0), REREAD_MS - 1);
        assert!(!Reading::due(Some(&fine), true, old, NOW));
        let fine = reading(Some(16.0), Some(40.0), REREAD_MS);
        assert!(Reading::due(Some(&fine), true, old, NOW));
        let low = reading(Some(1.0), Some(40.0), REREAD_LOW_MS);
        assert!(Reading::due(Some(&low), true, old, NOW));
        let unknown = reading(None, None, REREAD_LOW_MS);
        assert!(!Reading::due(Some(&unknown), true, old, NOW));
    }

    #[test]
    fn what_status_shows_carries_the_bytes_the_ratio_and_an_rfc3339_time() {
        let s = reading(Some(16.0), Some(40.0), 0).status();
        assert_eq!(s.verdict, "ok");
        assert_eq!(s.free_ratio, Some(0.4));
        assert_eq!(s.size_bytes, Some(40 * 1024 * 1024 * 1024));
        assert!(
            s.read_at.ends_with('Z') && s.read_at.contains('T'),
            "{}",
            s.read_at
        );
        assert_eq!(percent(0.004), "0.4%");
    }
}
