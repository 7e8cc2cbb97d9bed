//! What would page someone, from the status document: the breaker (and when it closes by
//! itself), a refusal to act, the webapp down, routing, droplets with our tags that ops did not
//! create, orphaned queues, failing profiles with their first failure line. Pure: the document and now in, problems out; `ops status` prints
//! them first, `status --json` has them as `problems`, `status --check` exits 1 on any.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// `breaker`, `refusing`, `webapp_down`, `routing`, `unowned_droplet`, `unrecorded_drain`,
    /// `other_group`, `capped`, `orphaned_queue`, `disabled_profile`, `failing_profile`.
    pub kind: &'static str,
    pub text: String,
    /// The profile it is about, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// When it was seen (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<String>,
}

/// An RFC 3339 value as Unix milliseconds.
pub fn ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `12m` ago, or `in 12m`, against `now`.
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    let d = |ms: i64| {
        crate::duration::format(std::time::Duration::from_secs((ms / 1000).max(1) as u64))
    };
    if at_ms <= now_ms {
        format!("{} ago", d(now_ms - at_ms))
    } else {
        format!("in {}", d(at_ms - now_ms))
    }
}

fn problem(kind: &'static str, text: String, profile: Option<&str>, at: &Value) -> Problem {
    Problem {
        kind,
        text,
        profile: profile.map(str::to_string),
        seen_at: at.as_str().map(str::to_string),
    }
}

/// The circuit breaker, when open: the supervisor's own line (`own_line`) names the droplet
/// and how to look at it.
fn breaker(doc: &Value, now_ms: i64, own_line: Option<&str>) -> Option<Problem> {
    let breaker = &doc["breaker"];
    if breaker["open"] != true {
        return None;
    }

    let closes = match ms(&breaker["closes_at"]) {
        Some(at) => format!("it closes by itself {}", relative(at, now_ms)),
        None => "it stays open".to_string(),
    };
    // The supervisor's own line names the droplet and how to look at it.
    let text = match own_line {
        Some(l) => format!("{l} ({closes})"),
        None => format!(
            "circuit breaker open: {} replacements within {}, so no unhealthy droplet is replaced; {closes}, or `ops run {} --reset-breaker` once the cause is fixed",
            breaker["replacements"].as_array().map_or(0, Vec::len),
            breaker["window"].as_str().unwrap_or("?"),
            breaker["profile"].as_str().unwrap_or("<profile>")
        ),
    };
    Some(problem(
        "breaker",
        text,
        breaker["profile"].as_str(),
        &Value::Null,
    ))
}

/// Every problem that stands, most urgent first.
pub fn find(doc: &Value, now_ms: i64) -> Vec<Problem> {
    let mut out = Vec::new();
    let sup = &doc["supervisor_run"];
    let lines: Vec<&str> = sup["detail"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let line = |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).copied();
    out.extend(breaker(doc, now_ms, line("circuit breaker open")));
    for (kind, prefix) in [
        ("refusing", "refusing to act"),
        ("webapp_down", "the webapp is the likely cause"),
        ("routing", "runs never reach these supervisors"),
    ] {
        if let Some(l) = line(prefix) {
            out.push(problem(
                kind,
                l.to_string(),
                sup["profile"].as_str(),
                &sup["at"],
            ));
        }
    }
    for (kind, words) in [
        ("unowned_droplet", crate::tasks::supervisor::owned::UNOWNED),
        (
            "unrecorded_drain",
            crate::tasks::supervisor::marks::DRAIN_UNRECORDED,
        ),
        ("other_group", " heartbeats into worker group "),
    ] {
        for l in lines
            .iter()
            .filter(|l| l.starts_with("droplet ") && l.contains(words))
        {
            out.push(problem(
                kind,
                l.to_string(),
                sup["profile"].as_str(),
                &sup["at"],
            ));
        }
    }
    if line("runs never reach these supervisors").is_none()
        && doc["routing"]["ours_receives"] == false
    {
        out.push(problem(
            "routing",
            "runs never reach our supervisors: no default and no project routes to their worker group".into(),
            sup["profile"].as_str(),
            &doc["queue"]["checked_at"],
        ));
    }
    out.extend(capped(doc));
    out.extend(orphans(doc, now_ms));
    out.extend(disabled(doc));
    for p in doc["profiles"].as_array().into_iter().flatten() {
        let last = &p["last_run"];
        if last["status"] != "failed" {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("");
        let first = last["first_failure"].as_str().unwrap_or("");
        if out.iter().any(|p| p.text.starts_with(first)) {
            continue;
        }
        out.push(problem(
            "failing_profile",
            format!(
                "profile {name} failed {}: {}",
                ms(&last["started_at"]).map_or(String::new(), |at| relative(at, now_ms)),
                last["first_failure"].as_str().unwrap_or("(no detail)")
            ),
            Some(name),
            &last["started_at"],
        ));
    }
    out
}

/// Runs waiting on a fleet that cannot grow (at `max`, or the account's droplet limit).
fn capped(doc: &Value) -> Option<Problem> {
    let text = doc["supervisor"]["scale"]["capped"]["text"].as_str()?;
    Some(problem(
        "capped",
        text.to_string(),
        doc["supervisor_run"]["profile"].as_str(),
        &doc["supervisor"]["checked_at"],
    ))
}

/// Profiles disabled by hand or automatically: a notice rather than a fault, but nothing watches
/// while one stands.
fn disabled(doc: &Value) -> Vec<Problem> {
    doc["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let why = p["disabled_reason"].as_str()?;
            let name = p["name"].as_str().unwrap_or("");
            Some(problem(
                "disabled_profile",
                format!("profile {name} does not run: {why}"),
                Some(name),
                &Value::Null,
            ))
        })
        .collect()
}

/// Queues with waiting runs that no supervisor serves.
fn orphans(doc: &Value, now_ms: i64) -> Vec<Problem> {
    let queue = &doc["queue"];
    let checked = ms(&queue["checked_at"]);
    queue["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["served"] != true && q["pending"].as_u64().unwrap_or(0) > 0)
        .map(|q| {
            problem(
                "orphaned_queue",
                format!(
                    "orphaned queue {} (worker group {}): {} runs waiting, the oldest {} at the check {}; no supervisor serves it",
                    q["queue"].as_str().unwrap_or("?"),
                    q["worker_group"].as_str().unwrap_or("?"),
                    q["pending"],
                    crate::duration::format(std::time::Duration::from_secs(
                        q["oldest_pending_secs"].as_f64().unwrap_or(0.0).max(1.0) as u64
                    )),
                    checked.map_or("-".into(), |c| relative(c, now_ms)),
                ),
                None,
                &queue["checked_at"],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

    #[test]
    fn a_healthy_document_has_no_problem() {
        let doc = json!({"profiles": [{"name": "health", "last_run": {"status": "ok"}}],
                         "routing": {"ours_receives": true}, "breaker": {"open": false}});
        assert!(find(&doc, NOW).is_empty());
    }

    #[test]
    fn a_droplet_with_our_tags_that_ops_did_not_create_is_a_problem() {
        let line = "droplet x (id 9) carries our tags but ops did not create it: not touched (remove our tags or delete it yourself)";
        let doc = json!({"supervisor_run": {"profile": "health", "at": "2026-11-30T23:59:00Z",
                                            "detail": ["droplet y (id 1, …): healthy", line]}});
        let p = find(&doc, NOW);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].kind, p[0].text.as_str()), ("unowned_droplet", line));
    }

    #[test]
    fn breaker_refusal_webapp_and_failing_profiles_are_named() {
        let doc = json!({
            "breaker": {"open": true, "replacements": ["a", "b", "c"], "window": "1h", "profile": "health",
                        "closes_at": "2026-12-01T00:20:00Z"},
            "supervisor_run": {"profile": "health", "at": "2026-11-30T23:59:00Z",
                               "detail": ["the webapp is the likely cause, not the supervisors: the webapp is down (GET /healthcheck answered HTTP 500)"]},
            "profiles": [{"name": "health", "last_run": {"status": "failed", "started_at": "2026-11-30T23:59:00Z",
                          "first_failure": "the webapp is the likely cause"}},
                         {"name": "hourly", "last_run": {"status": "failed", "started_at": "2026-11-30T23:59:00Z",
                          "first_failure": "wal_level is replica"}}],
            "queue": {"checked_at": "2026-11-30T23:59:00Z", "queues": [
                {"queue": "bootstrap", "worker_group": "bootstrap", "pending": 3, "served": false, "oldest_pending_secs": 600.0}]},
        });
        let p = find(&doc, NOW);
        let kinds: Vec<&str> = p.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                "breaker",
                "webapp_down",
                "orphaned_queue",
                "failing_profile"
            ]
        );
        assert!(
            p[0].text.contains("3 replacements within 1h"),
            "{}",
            p[0].text
        );
        assert!(
            p[0].text.contains("it closes by itself in 20m"),
            "{}",
            p[0].text
        );
        assert!(
            p[2].text.contains("the oldest 10m at the check 1m ago"),
            "{}",
            p[2].text
        );
        // The health profile's failure is the webapp problem already listed: not twice.
        assert_eq!(
            p[3].text,
            "profile hourly failed 1m ago: wal_level is replica"
        );
    }
}
