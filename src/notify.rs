//! After a run: one alert digest per failure streak (Telegram and/or a webhook), a reminder
//! after `renotify_after`, one recovery message; heartbeat pings; `ops test-alert`. Each channel
//! gets the digest cut to its limit and in its shape (`digest`). Delivery problems are logged and
//! recorded, never a reason to fail the run.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::http::{Http, Request, Retry};
use crate::digest::{self, Channel, Digest, Section};
use crate::redact::redact;
use crate::settings::Settings;
use crate::state::State;
use crate::summary::RunSummary;
use crate::task::Status;

const NAMESPACE: &str = "alerting";
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Detail lines per failed task in the JSON webhook's `failed_tasks` (the text has them all,
/// as many as fit).
const DIGEST_LINES: usize = 10;

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
    let d = digest(summary, kind, host, streak.since, now);
    if !deliver(settings, state, summary, kind, &d, host, now)? {
        // Every configured channel failed: nobody heard it, so the next run tries again.
        return Ok(());
    }
    streak.failing = failed;
    streak.last_sent = now;
    state.kv_set(NAMESPACE, key, &streak, now)
}

/// The run's digest, structured so each channel can cut it to its limit.
fn digest(summary: &RunSummary, kind: Kind, host: &str, since: i64, now: i64) -> Digest {
    let when = crate::report::local_time(now);
    let headline = match kind {
        Kind::Failing => format!(
            "🔴 ops: profile {} failed on {host} at {when}",
            summary.profile
        ),
        Kind::Reminder => format!(
            "🔴 ops: profile {} still failing on {host} (since {}, checked {when})",
            summary.profile,
            crate::report::local_time(since)
        ),
        Kind::Recovered => format!(
            "✅ ops: profile {} recovered on {host} at {when} (failing since {})",
            summary.profile,
            crate::report::local_time(since)
        ),
    };
    let sections = if kind == Kind::Recovered {
        Vec::new()
    } else {
        summary
            .tasks
            .iter()
            .filter(|t| t.status == Status::Failed)
            .map(|t| Section {
                title: format!("• {} ({})", t.name, t.kind),
                lines: t.detail.iter().map(|l| redact(l)).collect(),
            })
            .collect()
    };
    Digest {
        headline: redact(&headline),
        sections,
        profile: summary.profile.clone(),
    }
}

/// One message for every configured channel: Telegram, then the webhook.
pub struct Message<'a> {
    pub digest: &'a Digest,
    /// `kind` in the JSON webhook body (`failing`, `reminder`, `recovered`, `test`).
    pub kind: &'a str,
    pub status: &'a str,
    pub host: &'a str,
    /// The failed tasks, for the JSON webhook body.
    pub failed: serde_json::Value,
}

/// Sends through Telegram when configured: `None` when it is not.
pub fn send_telegram(
    settings: &Settings,
    http: &Http,
    msg: &Message,
    deadline: Instant,
) -> Option<(String, Result<(), String>)> {
    let token = settings.telegram_bot_token.as_ref()?;
    let (chat, prefix, topic) = match (&settings.telegram_test_chat_id, &settings.telegram_chat_id)
    {
        (Some(test), _) => (test.clone(), format!("[{}] ", msg.digest.profile), None),
        (None, Some(chat)) => (
            chat.clone(),
            String::new(),
            settings.telegram_topic_id.clone(),
        ),
        (None, None) => return Some((
            "telegram".into(),
            Err(
                "TELEGRAM_BOT_TOKEN is set but neither TELEGRAM_CHAT_ID nor TELEGRAM_TEST_CHAT_ID"
                    .into(),
            ),
        )),
    };
    // Task output mentions nobody.
    let mut defused = msg.digest.clone();
    for s in &mut defused.sections {
        for l in &mut s.lines {
            *l = digest::telegram_defuse(l);
        }
    }
    let body = format!(
        "{prefix}{}",
        defused.render(Channel::Telegram.limit() - digest::units(&prefix))
    );
    let mut payload = json!({"chat_id": chat, "text": body, "disable_web_page_preview": true});
    if let Some(topic) = topic {
        payload["message_thread_id"] = json!(topic.parse::<i64>().unwrap_or_default());
    }
    let url = format!(
        "{}/bot{}/sendMessage",
        settings.telegram_api_url,
        token.expose()
    );
    let req = Request::new("Telegram", "POST", url)
        .json(&payload)
        .retry(Retry::OnlyRateLimit)
        .timeout(SEND_TIMEOUT);
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
    Some((format!("telegram (chat {chat})"), result))
}

/// Sends through the webhook in its format when configured: `None` when it is not.
pub fn send_webhook(
    settings: &Settings,
    http: &Http,
    msg: &Message,
    deadline: Instant,
) -> Option<(String, Result<(), String>)> {
    let url = settings.webhook_url.as_ref()?;
    let channel = settings.webhook_format;
    let text = msg.digest.render(channel.limit());
    let payload = match channel {
        Channel::Slack => json!({ "text": digest::slack_escape(&text) }),
        Channel::Discord => json!({ "content": text, "allowed_mentions": { "parse": [] } }),
        Channel::Telegram | Channel::Json => json!({
            "text": text,
            "kind": msg.kind,
            "profile": msg.digest.profile,
            "status": msg.status,
            "host": msg.host,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "failed_tasks": msg.failed,
        }),
    };
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
    let shown = format!(
        "webhook ({}, {})",
        channel.name(),
        crate::clients::http::origin(url.expose())
    );
    Some((redact(&shown), result))
}

fn deliver(
    settings: &Settings,
    state: &State,
    summary: &RunSummary,
    kind: Kind,
    digest: &Digest,
    host: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let http = Http::new();
    let deadline = Instant::now() + SEND_TIMEOUT * 2;
    let failed: Vec<_> = summary
        .tasks
        .iter()
        .filter(|t| t.status == Status::Failed)
        .map(|t| json!({"task": t.name, "kind": t.kind, "detail": t.detail.iter().take(DIGEST_LINES).map(|l| digest::shorten(&redact(l))).collect::<Vec<_>>()}))
        .collect();
    let msg = Message {
        digest,
        kind: kind.as_str(),
        status: &summary.status,
        host,
        failed: json!(failed),
    };
    // What the alerts table keeps: the digest as the roomiest channel gets it.
    let text = digest.render(Channel::Json.limit());
    let mut channels = 0;
    let mut delivered = false;
    for (channel, sent) in [
        ("telegram", send_telegram(settings, &http, &msg, deadline)),
        ("webhook", send_webhook(settings, &http, &msg, deadline)),
    ] {
        let Some((_, result)) = sent else { continue };
        channels += 1;
        delivered |= result.is_ok();
        record(state, summary, kind, channel, &text, result, now)?;
    }
    if channels == 0 {
        log::warn!("{}: no alert channel configured (set TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID, or OPS_WEBHOOK_URL)", summary.profile);
        state.record_alert(
            &summary.profile,
            now,
            kind.as_str(),
            "none",
            &text,
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

/// `ops test-alert`: one clearly labelled message through every configured channel, each
/// channel's result on its own line; the alert state (dedupe, reminders, history) is untouched.
/// Returns (channels configured, channels that failed).
pub fn test_alert(settings: &Settings, host: &str) -> (usize, usize) {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S %Z");
    let d = Digest {
        headline: format!(
            "🧪 ops test alert from {host}: ops {} at {now}. If you read this, alerts reach this channel; nothing is wrong.",
            env!("CARGO_PKG_VERSION")
        ),
        sections: Vec::new(),
        profile: "test-alert".into(),
    };
    let msg = Message {
        digest: &d,
        kind: "test",
        status: "test",
        host,
        failed: json!([]),
    };
    let http = Http::new();
    let mut configured = 0;
    let mut failed = 0;
    let sends = [
        send_telegram(settings, &http, &msg, Instant::now() + SEND_TIMEOUT * 2),
        send_webhook(settings, &http, &msg, Instant::now() + SEND_TIMEOUT * 2),
    ];
    for (channel, result) in sends.into_iter().flatten() {
        configured += 1;
        match result {
            Ok(()) => println!("✓ {channel}: delivered"),
            Err(e) => {
                failed += 1;
                println!("✗ {channel}: {}", redact(&e));
            }
        }
    }
    (configured, failed)
}
