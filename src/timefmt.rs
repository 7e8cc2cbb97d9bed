//! One time convention. JSON: RFC 3339 with the zone, UTC (`2026-12-02T06:23:00Z`), for every
//! timestamp of every command and endpoint. People: local time with its offset
//! (`2026-12-02 07:23:00 +01:00`), so a time is never read in the wrong zone.

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::Serializer;

/// Unix milliseconds as RFC 3339 (UTC); the number itself when out of range.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Now, as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A local wall-clock time (cron's next run) as RFC 3339 (UTC); `None` when it does not exist
/// locally (skipped by a DST change).
pub fn local_naive_rfc3339(t: NaiveDateTime) -> Option<String> {
    Local.from_local_datetime(&t).earliest().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    })
}

/// Unix milliseconds for people: local time with its offset.
pub fn human_ms(ms: i64) -> String {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A local wall-clock time for people, with its offset.
pub fn human_naive(t: NaiveDateTime) -> String {
    Local
        .from_local_datetime(&t)
        .earliest()
        .map(|t| t.format("%Y-%m-%d %H:%M %:z").to_string())
        .unwrap_or_else(|| t.format("%Y-%m-%d %H:%M").to_string())
}

/// `#[serde(serialize_with = "timefmt::ser_ms")]` for a Unix-milliseconds field.
pub fn ser_ms<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

/// `ser_ms` for an optional field (`null` when absent).
pub fn ser_opt_ms<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => ser_ms(ms, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_ms(1_800_000_000_000), "2027-01-15T08:00:00Z");
        assert!(DateTime::parse_from_rfc3339(&now_rfc3339()).is_ok());
        let t = NaiveDateTime::parse_from_str("2026-12-02 06:23", "%Y-%m-%d %H:%M").unwrap();
        let s = local_naive_rfc3339(t).unwrap();
        assert!(DateTime::parse_from_rfc3339(&s).is_ok(), "{s}");
        assert!(
            human_ms(0).contains(':') && human_ms(0).len() == "1970-01-01 00:00:00 +00:00".len()
        );
    }
}
