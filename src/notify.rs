//! After a run: one alert digest per failure streak (Telegram and/or a webhook), a reminder
//! after `renotify_after`, one recovery message; heartbeat pings. Delivery problems are logged
//! and recorded, never a reason to fail the run.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::http::{Http, Request, Retry};
use crate::redact::redact;
use crate::settings::Settings;
use crate::state::State;
use crate::summary::RunSummary;
use crate::task::Status;

const NAMESPACE: &str = "alerting";
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Detail lines per failed task in a digest.
const DIGEST_LINES: usize = 4;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Streak {
    failing: bool,
    since: i64,
    last_sent: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failing,
    Reminder,
    Recovered,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Failing => "failing",
            Kind::Reminder => "reminder",
            Kind::Recovered => "recovered",
        }
    }
}

/// Decides whether this run's result deserves a message, sends it, records it. When every
/// configured channel fails, the streak is not advanced, so the next run tries again.
pub fn after_run(
    settings: &Settings,
    state: &State,
    summary: &RunSummary,
    renotify_after: Duration,
    host: &str,
    now: i64,
) -> anyhow::Result<()> {
    let key = summary.profile.as_str();
    let mut streak: Streak = state
        .kv_get(NAMESPACE, key)?
        .map(|(s, _)| s)
        .unwrap_or_default();
    let failed = summary.status == "failed";
    let kind = match (failed, streak.failing) {
        (true, false) => Some(Kind::Failing),
        (true, true) if now - streak.last_sent >= renotify_after.as_millis() as i64 => {
            Some(Kind::Reminder)
        }
        (false, true) => Some(Kind::Recovered),
        _ => None,
    };
    let Some(kind) = kind else {
        return Ok(());
    };
    if kind == Kind::Failing {
        streak.since = now;
    }
    let text = digest(summary, kind, host, streak.since, now);
    if !deliver(settings, state, summary, kind, &text, host, now)? {
        // Every configured channel failed: nobody heard it, so the next run tries again.
        return Ok(());
    }
    streak.failing = failed;
    streak.last_sent = now;
    state.kv_set(NAMESPACE, key, &streak, now)
}

fn digest(summary: &RunSummary, kind: Kind, host: &str, since: i64, now: i64) -> String {
    let when = crate::report::local_time(now);
    let mut text = match kind {
        Kind::Failing => format!(
            "🔴 ops: profile {} failed on {host} at {when}\n",
            summary.profile
        ),
        Kind::Reminder => format!(
            "🔴 ops: profile {} still failing on {host} (since {}, checked {when})\n",
            summary.profile,
            crate::report::local_time(since)
        ),
        Kind::Recovered => format!(
            "✅ ops: profile {} recovered on {host} at {when} (failing since {})\n",
            summary.profile,
            crate::report::local_time(since)
        ),
    };
    if kind != Kind::Recovered {
        for t in summary.tasks.iter().filter(|t| t.status == Status::Failed) {
            text.push_str(&format!("• {} ({})\n", t.name, t.kind));
            for line in t.detail.iter().take(DIGEST_LINES) {
                text.push_str(&format!("    {line}\n"));
            }
        }
    }
    redact(text.trim_end())
}

fn deliver(
    settings: &Settings,
    state: &State,
    summary: &RunSummary,
    kind: Kind,
    text: &str,
    host: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let http = Http::new();
    let deadline = Instant::now() + SEND_TIMEOUT * 2;
    let mut channels = 0;
    let mut delivered = false;
    if let Some(token) = &settings.telegram_bot_token {
        let target = match (&settings.telegram_test_chat_id, &settings.telegram_chat_id) {
            (Some(test), _) => Some((test.clone(), format!("[{}] {text}", summary.profile), None)),
            (None, Some(chat)) => Some((
                chat.clone(),
                text.to_string(),
                settings.telegram_topic_id.clone(),
            )),
            (None, None) => None,
        };
        match target {
            Some((chat, body, topic)) => {
                channels += 1;
                let mut payload = json!({"chat_id": chat, "text": body, "disable_web_page_preview": true});
                if let Some(topic) = topic {
                    payload["message_thread_id"] = json!(topic.parse::<i64>().unwrap_or_default());
                }
                let url = format!("{}/bot{}/sendMessage", settings.telegram_api_url, token.expose());
                let req = Request::new("Telegram", "POST", url).json(&payload).retry(Retry::OnlyRateLimit).timeout(SEND_TIMEOUT);
                let result = match http.send(&req, deadline) {
                    Ok(r) if r.ok() => Ok(()),
                    Ok(r) => {
                        let why = serde_json::from_str::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["description"].as_str().map(str::to_string))
                            .unwrap_or_else(|| r.snippet());
                        Err(format!("Telegram answered HTTP {}: {why}", r.status))
                    }
                    Err(e) => Err(format!("{e:#}")),
                };
                delivered |= result.is_ok();
                record(state, summary, kind, "telegram", text, result, now)?;
            }
            None => log::warn!("TELEGRAM_BOT_TOKEN is set but neither TELEGRAM_CHAT_ID nor TELEGRAM_TEST_CHAT_ID: no Telegram alert"),
        }
    }
    if let Some(url) = &settings.webhook_url {
        channels += 1;
        let failed: Vec<_> = summary
            .tasks
            .iter()
            .filter(|t| t.status == Status::Failed)
            .map(|t| json!({"task": t.name, "kind": t.kind, "detail": t.detail.iter().take(DIGEST_LINES).map(|l| redact(l)).collect::<Vec<_>>()}))
            .collect();
        let payload = json!({
            "text": text,
            "kind": kind.as_str(),
            "profile": summary.profile,
            "status": summary.status,
            "host": host,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "failed_tasks": failed,
        });
        let req = Request::new("alert webhook", "POST", url.expose())
            .json(&payload)
            .retry(Retry::OnlyRateLimit)
            .timeout(SEND_TIMEOUT);
        let result = match http.send(&req, deadline) {
            Ok(r) if r.ok() => Ok(()),
            Ok(r) => Err(format!(
                "webhook answered HTTP {}: {}",
                r.status,
                r.snippet()
            )),
            Err(e) => Err(format!("{e:#}")),
        };
        delivered |= result.is_ok();
        record(state, summary, kind, "webhook", text, result, now)?;
    }
    if channels == 0 {
        log::warn!("{}: no alert channel configured (set TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID, or OPS_WEBHOOK_URL)", summary.profile);
        state.record_alert(
            &summary.profile,
            now,
            kind.as_str(),
            "none",
            text,
            false,
            Some("no alert channel configured"),
        )?;
        // Recorded once per streak; retrying would change nothing.
        return Ok(true);
    }
    Ok(delivered)
}

fn record(
    state: &State,
    summary: &RunSummary,
    kind: Kind,
    channel: &str,
    text: &str,
    result: Result<(), String>,
    now: i64,
) -> anyhow::Result<()> {
    match &result {
        Ok(()) => log::info!(
            "{}: {} alert sent via {channel}",
            summary.profile,
            kind.as_str()
        ),
        Err(e) => log::warn!(
            "{}: {} alert via {channel} not delivered: {}",
            summary.profile,
            kind.as_str(),
            redact(e)
        ),
    }
    state.record_alert(
        &summary.profile,
        now,
        kind.as_str(),
        channel,
        text,
        result.is_ok(),
        result.err().as_deref(),
    )
}

/// healthchecks.io-style heartbeat: `<url>/start`, `<url>`, `<url>/fail`. Never fails the run.
pub fn ping(url: &str, suffix: &str) {
    let full = format!("{}{suffix}", url.trim_end_matches('/'));
    let req = Request::new("heartbeat", "GET", &full)
        .retry(Retry::Never)
        .timeout(SEND_TIMEOUT);
    // The path of a ping URL is its secret (healthchecks.io's check UUID): log the host only.
    let shown = format!(
        "{} ({})",
        redact(&crate::clients::http::origin(url)),
        if suffix.is_empty() { "/" } else { suffix }
    );
    match Http::new().send(&req, Instant::now() + SEND_TIMEOUT) {
        Ok(r) if r.ok() => log::debug!("heartbeat to {shown} sent"),
        Ok(r) => log::warn!("heartbeat to {shown} answered HTTP {}", r.status),
        Err(e) => log::warn!("heartbeat to {shown} failed: {e:#}"),
    }
}
