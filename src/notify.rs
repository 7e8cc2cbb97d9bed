//! After a run: one alert digest per failure streak (Telegram and/or a webhook), a new one when
//! the failure changes, a reminder after `renotify_after`, one recovery message saying what ops
//! did; an information message for a run that changed something outside ops; a notice before a
//! disruptive change; heartbeat pings; `ops test-alert`. Each channel
//! gets the digest cut to its limit and in its shape (`digest`). Delivery problems are logged and
//! recorded, never a reason to fail the run.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::http::{Http, Request, Retry};
use crate::config::NotifyChanges;
use crate::digest::{self, Channel, Digest, Section};
use crate::redact::{line, redact};
use crate::settings::Settings;
use crate::state::{EventRecord, State};
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
    /// What the failure was when last announced (`signature`): a different one is announced
    /// at once, not at the next reminder.
    #[serde(default)]
    signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failing,
    /// Still failing, but differently (silent → breaker open, → refusing to act, ↔ webapp down).
    Escalated,
    Reminder,
    Recovered,
    /// Nothing failed newly, but ops changed something outside itself this run.
    Info,
    /// Routine changes held back (`notify_changes: important`), told once they are a day old.
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Failing => "failing",
            Kind::Escalated => "escalated",
            Kind::Reminder => "reminder",
            Kind::Recovered => "recovered",
            Kind::Info => "info",
            Kind::Summary => "summary",
        }
    }
}

/// What a failure is, for telling a new one from the same one: each failed task and its first
/// line with the digits dropped (counts, ages and droplet stamps change every run).
fn signature(summary: &RunSummary) -> String {
    summary
        .tasks
        .iter()
        .filter(|t| t.status == Status::Failed)
        .map(|t| {
            let first = t.detail.first().map(String::as_str).unwrap_or("");
            let kept: String = first.chars().filter(|c| !c.is_ascii_digit()).collect();
            format!("{}: {kept}", t.name)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decides whether this run's result deserves a message, sends it, records it. The changes ops
/// made outside itself ride along (or, when nothing else is said, make an information message
/// of their own): one message per run at most. When every configured channel fails, nothing
/// is marked sent, so the next run tries again.
pub fn after_run(
    settings: &Settings,
    state: &State,
    summary: &RunSummary,
    renotify_after: Duration,
    notify_changes: NotifyChanges,
    host: &str,
    now: i64,
) -> anyhow::Result<()> {
    let key = summary.profile.as_str();
    let mut streak: Streak = state
        .kv_get(NAMESPACE, key)?
        .map(|(s, _)| s)
        .unwrap_or_default();
    let failed = summary.status == "failed";
    let sig = signature(summary);
    let kind = match (failed, streak.failing) {
        (true, false) => Some(Kind::Failing),
        (true, true) if !streak.signature.is_empty() && streak.signature != sig => {
            Some(Kind::Escalated)
        }
        (true, true) if now - streak.last_sent >= renotify_after.as_millis() as i64 => {
            Some(Kind::Reminder)
        }
        (false, true) => Some(Kind::Recovered),
        _ => None,
    };
    let pending = state.unannounced_events(key)?;
    let Some(kind) = kind.or(told(notify_changes, &pending, now)) else {
        if notify_changes == NotifyChanges::None {
            // Events only: nothing is kept back for a later message.
            let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
            state.mark_announced(&ids, now)?;
        }
        if failed && streak.failing && streak.signature.is_empty() {
            // A streak from before signatures: learn this one, so the next change is told.
            streak.signature = sig;
            state.kv_set(NAMESPACE, key, &streak, now)?;
        }
        return Ok(());
    };
    if kind == Kind::Failing {
        // From the start of the run that failed: what it changed belongs to the streak.
        streak.since = now - summary.duration_ms as i64;
    }
    // A recovery says what ops did while it failed; any other message, what it did this run.
    let changes = if kind == Kind::Recovered {
        let mut all = state.events(Some(streak.since), Some(key), 50)?;
        all.extend(pending.iter().filter(|p| p.at < streak.since).cloned());
        all
    } else {
        pending.clone()
    };
    let d = digest(summary, kind, host, streak.since, now, &changes);
    if !deliver(settings, state, summary, kind, &d, &changes, host, now)? {
        // Every configured channel failed: nobody heard it, so the next run tries again.
        return Ok(());
    }
    let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
    state.mark_announced(&ids, now)?;
    if matches!(kind, Kind::Info | Kind::Summary) {
        return Ok(());
    }
    streak.last_sent = now;
    streak.failing = failed;
    streak.signature = if failed { sig } else { String::new() };
    state.kv_set(NAMESPACE, key, &streak, now)
}

/// Routine changes held back this long are told in one summary.
const SUMMARY_AFTER_MS: i64 = 24 * 3_600_000;

/// Whether the changes not told yet make a message of their own, and which (docs/what-ops-changes.md).
fn told(setting: NotifyChanges, pending: &[EventRecord], now: i64) -> Option<Kind> {
    match setting {
        _ if pending.is_empty() => None,
        NotifyChanges::All => Some(Kind::Info),
        NotifyChanges::Important if pending.iter().any(|e| important(&e.kind)) => Some(Kind::Info),
        NotifyChanges::Important if pending.iter().any(|e| now - e.at >= SUMMARY_AFTER_MS) => {
            Some(Kind::Summary)
        }
        NotifyChanges::Important | NotifyChanges::None => None,
    }
}

/// The changes a person must know now: anything done to the webapp's Postgres, where runs go
/// (a worker group, the default), a droplet taken over or replaced because it died, a drain cut
/// short with runs on it. The rest (scaling between min and max, drained deletes, bake steps, a
/// planned version roll, the firewall) is routine work inside the operator's own bounds.
pub fn important(kind: &str) -> bool {
    kind.starts_with("postgres.")
        || matches!(
            kind,
            "routing.default_changed"
                | "worker_group.created"
                | "droplet.adopted"
                | "droplet.replaced"
                | "droplet.replacement_created"
                | "droplet.drain_timed_out"
        )
}

/// Lines of task output that only count things (`DigitalOcean requests: 5, Postgres sessions:
/// 1`): in `ops history`, not in an alert, where they would take the place of the fix.
fn is_counter(kind: &str, line: &str) -> bool {
    // A command's own output is the operator's: kept whatever it looks like.
    if kind == "exec" {
        return false;
    }
    let parts: Vec<&str> = line.split(", ").collect();
    parts.iter().all(|p| {
        p.rsplit_once(": ").is_some_and(|(name, n)| {
            !name.is_empty() && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
        })
    })
}

/// The first failure line, as the headline a phone shows.
fn cause(summary: &RunSummary) -> Option<String> {
    let t = summary.tasks.iter().find(|t| t.status == Status::Failed)?;
    let first = t.detail.first()?;
    Some(digest::cut(&line(first), 300).to_string())
}

/// Each failed task's lines (none when the run recovered or only changed things).
fn failed_sections(summary: &RunSummary, kind: Kind) -> Vec<Section> {
    if matches!(kind, Kind::Recovered | Kind::Info | Kind::Summary) {
        Vec::new()
    } else {
        summary
            .tasks
            .iter()
            .filter(|t| t.status == Status::Failed)
            .map(|t| Section {
                title: format!("• {} ({})", t.name, t.kind),
                lines: t
                    .detail
                    .iter()
                    .filter(|l| !is_counter(&t.kind, l))
                    .map(|l| line(l))
                    .collect(),
            })
            .collect()
    }
}

/// The run's digest, structured so each channel can cut it to its limit.
fn digest(
    summary: &RunSummary,
    kind: Kind,
    host: &str,
    since: i64,
    now: i64,
    changes: &[EventRecord],
) -> Digest {
    let when = crate::report::local_time(now);
    let p = &summary.profile;
    let cause = cause(summary).unwrap_or_else(|| "failed".into());
    let headline = match kind {
        Kind::Failing => format!("🔴 {p}: {cause}\nops: profile {p} failed on {host} at {when}"),
        Kind::Escalated => format!(
            "🔴 {p}, now: {cause}\nops: profile {p} still failing on {host}, differently (since {}, checked {when})",
            crate::report::local_time(since)
        ),
        Kind::Reminder => format!(
            "🔴 {p}, still: {cause}\nops: profile {p} still failing on {host} (since {}, checked {when})",
            crate::report::local_time(since)
        ),
        Kind::Recovered => format!(
            "✅ ops: profile {p} recovered on {host} at {when} (failing since {})",
            crate::report::local_time(since)
        ),
        Kind::Info => format!(
            "ℹ️ ops: profile {p} changed {} on {host} at {when}",
            match changes.len() {
                1 => "one thing".to_string(),
                n => format!("{n} things"),
            }
        ),
        Kind::Summary => format!(
            "ℹ️ ops: profile {p}: {} routine change(s) on {host} since {} (told once a day; notify_changes: all tells each)",
            changes.len(),
            changes
                .first()
                .map_or_else(|| when.clone(), |e| crate::report::local_time(e.at))
        ),
    };
    let mut sections = failed_sections(summary, kind);
    if !changes.is_empty() {
        let title = match kind {
            Kind::Recovered => "• what ops did while it failed",
            _ => "• what ops changed",
        };
        // Changes first: they are what nobody else would tell.
        sections.insert(
            0,
            Section {
                title: title.into(),
                lines: changes
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}: {}",
                            crate::report::local_time(e.at).get(11..16).unwrap_or(""),
                            e.task,
                            line(&e.message)
                        )
                    })
                    .collect(),
            },
        );
    }
    Digest {
        headline: redact(&headline),
        sections,
        profile: summary.profile.clone(),
    }
}

/// Tells the alert channels at once (a restart about to start), recorded as a `notice` alert.
pub struct Announcer<'a> {
    pub settings: &'a Settings,
    pub state: &'a State,
    pub profile: &'a str,
    pub host: &'a str,
}

impl<'a> Announcer<'a> {
    pub fn new(
        settings: &'a Settings,
        state: &'a State,
        profile: &'a str,
        host: &'a str,
    ) -> Announcer<'a> {
        Announcer {
            settings,
            state,
            profile,
            host,
        }
    }
}

impl crate::task::Announce for Announcer<'_> {
    fn announce(&self, text: &str) {
        let d = Digest {
            headline: line(&format!("⚠️ ops ({}, {}): {text}", self.profile, self.host)),
            sections: Vec::new(),
            profile: self.profile.to_string(),
        };
        let msg = Message {
            digest: &d,
            kind: "notice",
            status: "running",
            host: self.host,
            failed: json!([]),
            changes: json!([]),
        };
        let http = Http::new();
        let deadline = Instant::now() + SEND_TIMEOUT * 2;
        let now = crate::state::now_ms();
        let text = d.render(Channel::Json.limit());
        let sends = [
            (
                "telegram",
                send_telegram(self.settings, &http, &msg, deadline),
            ),
            (
                "webhook",
                send_webhook(self.settings, &http, &msg, deadline),
            ),
        ];
        for (channel, sent) in sends {
            let Some((_, result)) = sent else { continue };
            if let Err(e) = &result {
                log::warn!(
                    "{}: notice via {channel} not delivered: {}",
                    self.profile,
                    redact(e)
                );
            }
            let _ = self.state.record_alert(
                self.profile,
                now,
                "notice",
                channel,
                &text,
                result.is_ok(),
                result.err().as_deref(),
            );
        }
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
    /// What ops changed, for the JSON webhook body.
    pub changes: serde_json::Value,
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
    // Task output mentions nobody, in the headline (the first failure line) as in the sections.
    let mut defused = msg.digest.clone();
    defused.headline = digest::telegram_defuse(&defused.headline);
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
            "changes": msg.changes,
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

#[allow(clippy::too_many_arguments)]
fn deliver(
    settings: &Settings,
    state: &State,
    summary: &RunSummary,
    kind: Kind,
    digest: &Digest,
    changes: &[EventRecord],
    host: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let http = Http::new();
    let deadline = Instant::now() + SEND_TIMEOUT * 2;
    let failed: Vec<_> = summary
        .tasks
        .iter()
        .filter(|t| t.status == Status::Failed)
        .map(|t| json!({"task": t.name, "kind": t.kind, "detail": t.detail.iter().filter(|l| !is_counter(&t.kind, l)).take(DIGEST_LINES).map(|l| digest::shorten(&line(l))).collect::<Vec<_>>()}))
        .collect();
    let msg = Message {
        digest,
        kind: kind.as_str(),
        status: &summary.status,
        host,
        failed: json!(failed),
        changes: serde_json::to_value(changes).unwrap_or_default(),
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

/// The channels an alert may go through (for `ops_alert_delivery_failures_total`).
pub const CHANNELS: [&str; 2] = ["telegram", "webhook"];

/// The counter of a channel's undelivered alerts.
pub fn delivery_failures_key(channel: &str) -> String {
    format!("alert_delivery_failures\t{channel}")
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
        Err(e) => {
            log::warn!(
                "{}: {} alert via {channel} not delivered: {}",
                summary.profile,
                kind.as_str(),
                redact(e)
            );
            state.count(&delivery_failures_key(channel), now)?;
        }
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
/// With a `body` (the run's summary) it is a POST: healthchecks.io keeps the first 100 kB of
/// it (healthchecks.io/docs/attaching_logs) and shows it beside the ping.
pub fn ping(url: &str, suffix: &str, body: Option<&str>) {
    let full = format!("{}{suffix}", url.trim_end_matches('/'));
    let mut req = Request::new(
        "heartbeat",
        if body.is_some() { "POST" } else { "GET" },
        &full,
    )
    .retry(Retry::Never)
    .timeout(SEND_TIMEOUT);
    if let Some(text) = body {
        req.body = Some(cut_bytes(&redact(text), PING_BODY_MAX).to_string());
        req.headers
            .push(("content-type", "text/plain; charset=utf-8".into()));
    }
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

/// What healthchecks.io stores of a ping's body.
const PING_BODY_MAX: usize = 100_000;

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
        changes: json!([]),
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

#[cfg(test)]
mod tests {
    fn event(kind: &str, at: i64) -> EventRecord {
        EventRecord {
            id: at,
            at,
            profile: "p".into(),
            task: "supervisor".into(),
            kind: kind.into(),
            message: "m".into(),
            announced_at: None,
        }
    }

    #[test]
    fn routine_changes_wait_for_an_important_one_or_the_daily_summary() {
        use NotifyChanges::{All, Important};
        let now = 10 * SUMMARY_AFTER_MS;
        let routine = [event("droplet.created", now - 60_000)];
        assert_eq!(told(All, &routine, now), Some(Kind::Info));
        assert_eq!(told(Important, &routine, now), None);
        assert_eq!(told(NotifyChanges::None, &routine, now), None);
        let with_important = [routine[0].clone(), event("droplet.replaced", now)];
        assert_eq!(told(Important, &with_important, now), Some(Kind::Info));
        let a_day_old = [event("droplet.deleted", now - SUMMARY_AFTER_MS)];
        assert_eq!(told(Important, &a_day_old, now), Some(Kind::Summary));
        assert_eq!(told(Important, &[], now), None);
    }

    #[test]
    fn the_docs_say_which_change_is_which() {
        let doc = include_str!("../docs/what-ops-changes.md");
        for kind in [
            "postgres.setting",
            "postgres.restarted",
            "postgres.replica_identity",
            "postgres.publication",
            "worker_group.created",
            "routing.default_changed",
            "droplet.adopted",
            "droplet.replaced",
            "droplet.replacement_created",
            "droplet.drain_timed_out",
        ] {
            assert!(important(kind), "{kind}");
            assert!(
                doc.contains(&format!("**`{kind}`**")),
                "{kind} is not bold in the docs"
            );
        }
        for kind in [
            "droplet.created",
            "droplet.deleted",
            "firewall.created",
            "firewall.updated",
            "image.baking",
            "image.baked",
        ] {
            assert!(!important(kind), "{kind}");
            assert!(
                doc.contains(&format!("`{kind}`")),
                "{kind} is not in the docs"
            );
            assert!(
                !doc.contains(&format!("**`{kind}`**")),
                "{kind} is bold in the docs"
            );
        }
    }

    use super::*;
    use crate::summary::TaskSummary;

    fn summary(lines: &[&[&str]]) -> RunSummary {
        RunSummary {
            schema_version: 1,
            changes: None,
            profile: "health".into(),
            status: "failed".into(),
            dry_run: false,
            started_at: String::new(),
            duration_ms: 1,
            tasks: lines
                .iter()
                .enumerate()
                .map(|(i, detail)| TaskSummary {
                    name: format!("t{i}"),
                    kind: "supervisor".into(),
                    status: Status::Failed,
                    duration_ms: 1,
                    summary: String::new(),
                    warnings: Vec::new(),
                    detail: detail.iter().map(|l| l.to_string()).collect(),
                    config_error: false,
                    actions: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_signature_ignores_counts_and_stamps_but_not_a_new_cause() {
        let one = summary(&[&[
            "droplet sup-260101 unhealthy (1/3 before it is replaced): silent for 2m",
        ]]);
        let two = summary(&[&[
            "droplet sup-260102 unhealthy (2/3 before it is replaced): silent for 3m",
        ]]);
        let breaker = summary(&[&["circuit breaker open: 3 replacements within 1h"]]);
        assert_eq!(signature(&one), signature(&two));
        assert_ne!(signature(&one), signature(&breaker));
    }

    #[test]
    fn counters_are_dropped_and_the_cause_leads() {
        assert!(is_counter(
            "supervisor",
            "DigitalOcean requests: 5, Postgres sessions: 1, health checks: 0"
        ));
        assert!(is_counter("extract", "Railway requests: 2"));
        assert!(
            !is_counter("exec", "failed jobs: 3"),
            "a command's output is kept"
        );
        assert!(!is_counter(
            "supervisor",
            "runs never reach these supervisors: set TRIGGER_WORKER_TOKEN"
        ));
        assert!(!is_counter("supervisor", "webapp down: /healthcheck 500"));
        let s = summary(&[&[
            "the webapp is the likely cause: /healthcheck 500",
            "DigitalOcean requests: 1, Postgres sessions: 1",
        ]]);
        let d = digest(&s, Kind::Failing, "h", 0, 0, &[]);
        assert!(d.headline.starts_with("🔴 health: the webapp is the likely cause: /healthcheck 500\nops: profile health failed on h at "), "{}", d.headline);
        assert_eq!(
            d.sections[0].lines,
            ["the webapp is the likely cause: /healthcheck 500"]
        );
    }
}
