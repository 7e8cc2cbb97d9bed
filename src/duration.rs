//! Human durations in jobs.yaml: `500ms`, `30s`, `5m`, `1h30m`, `2d`.

use std::fmt::Write;
use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || {
        format!("invalid duration {text:?}: use a number with a unit, e.g. 30s, 5m, 1h30m (units ms, s, m, h, d)")
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    if total == 0 {
        return Err(format!(
            "invalid duration {text:?}: must be greater than zero"
        ));
    }
    Ok(Duration::from_millis(total))
}

/// `--since`: a duration back from `now_ms` (`24h`, `7d`) or an RFC 3339 time
/// (`2026-12-01T00:00:00Z`), or a date (`2026-12-01`, UTC midnight); Unix milliseconds.
pub fn since(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(d) = parse(t) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.timestamp_millis());
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(day
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    Err(format!(
        "--since {text:?}: use a duration back from now (24h, 7d) or a time (2026-12-01T00:00:00Z, 2026-12-01)"
    ))
}

/// A duration as a person reads it: `120ms` under a second, `13.2s` under a minute, else whole
/// units down to the second (`59m58s`, `1h30m`, `2d`). Machines get numbers with the unit in the
/// key (`duration_ms`), never this.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 59_950 && ms % 1000 != 0 {
        let tenths = (ms + 50) / 100;
        return match tenths % 10 {
            0 => format!("{}s", tenths / 10),
            t => format!("{}.{t}s", tenths / 10),
        };
    }
    let mut secs = ms / 1000;
    // Written in place: a plan formats every droplet's age at every check (and a week's
    // simulation makes tens of thousands of checks).
    let mut out = String::with_capacity(16);
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            let _ = write!(out, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_a_time_or_a_date() {
        let now = 1_800_000_000_000;
        assert_eq!(since("24h", now), Ok(now - 86_400_000));
        assert_eq!(since("2026-12-01T00:00:00Z", now), Ok(1_796_083_200_000));
        assert_eq!(since("2026-12-01", now), Ok(1_796_083_200_000));
        assert!(since("yesterday", now).unwrap_err().contains("24h, 7d"));
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(13_189)), "13.2s");
        assert_eq!(format(Duration::from_millis(3_598_192)), "59m58s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(7_200_000)), "2h");
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "0s",
            "-1s",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
