//! Alerts that always arrive (issue 22): every channel gets the digest cut to its limit and in
//! its shape, mentions ping nobody, and `ops test-alert` shows whether alerts reach the team.
//! The fakes refuse what the real channels refuse: Telegram a text over 4096 UTF-16 units,
//! Discord a body without `content` or with more than 2000.

use serde_json::{json, Value};

use crate::support::fake::{loopback, FakeServer, Reply, Seen};
use crate::support::Ops;

const BOT_TOKEN: &str = "123456:telegram-bot-secret-token";

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Telegram's sendMessage: 400 "message is too long" past 4096 UTF-16 units.
fn telegram() -> FakeServer {
    FakeServer::start(
        loopback(),
        Box::new(|req: &Seen| {
            let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            match body["text"].as_str() {
                Some(t) if units(t) <= 4096 && !t.is_empty() => {
                    Reply::json(200, json!({"ok": true, "result": {"message_id": 1}}))
                }
                Some(t) if units(t) > 4096 => Reply::json(
                    400,
                    json!({"ok": false, "error_code": 400, "description": "Bad Request: message is too long"}),
                ),
                _ => Reply::json(
                    400,
                    json!({"ok": false, "error_code": 400, "description": "Bad Request: message text is empty"}),
                ),
            }
        }),
    )
}

/// A Discord webhook: `content` required, at most 2000; 204 on success.
fn discord() -> FakeServer {
    FakeServer::start(
        loopback(),
        Box::new(|req: &Seen| {
            let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
            match body["content"].as_str() {
                Some(c) if units(c) <= 2000 => Reply::text(204, ""),
                Some(_) => Reply::json(
                    400,
                    json!({"content": ["Must be 2000 or fewer in length."]}),
                ),
                None => Reply::json(
                    400,
                    json!({"message": "Cannot send an empty message", "code": 50006}),
                ),
            }
        }),
    )
}

fn ok_server(status: u16) -> FakeServer {
    FakeServer::start(
        loopback(),
        Box::new(move |_req: &Seen| Reply::text(status, if status == 200 { "ok" } else { "down" })),
    )
}

fn bodies(s: &FakeServer) -> Vec<Value> {
    s.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// A profile of `tasks` exec tasks, each printing ten lines of `line` and failing.
fn failing_profile(ops: &Ops, tasks: usize, line: &str) {
    let script = ops.path("noisy.sh");
    std::fs::write(
        &script,
        format!("for i in 1 2 3 4 5 6 7 8 9 10; do echo \"$i {line}\"; done\nexit 1\n"),
    )
    .unwrap();
    let mut yaml = String::from("version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks:\n");
    for t in 0..tasks {
        yaml.push_str(&format!(
            "      - {{kind: exec, name: noisy{t}, command: [sh, {:?}]}}\n",
            script.display().to_string()
        ));
    }
    ops.jobs(&yaml);
}

#[test]
fn a_long_digest_reaches_telegram_cut_with_a_pointer_to_history() {
    let tg = telegram();
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", &tg.url());
    // Six failing tasks of ten lines of 700 UTF-16 units, in emoji (two units each) and CJK.
    failing_profile(
        &ops,
        6,
        &format!("{}{}", "😀".repeat(300), "漢".repeat(100)),
    );
    ops.run(&["run", "p"]).expect_code(1);
    let sent = bodies(&tg);
    assert_eq!(sent.len(), 1);
    let text = sent[0]["text"].as_str().unwrap();
    assert!(units(text) <= 4096, "{}", units(text));
    // The cause leads (the first failure line), then which profile on which host.
    assert!(text.starts_with("🔴 p: "), "{text}");
    assert!(text.contains("\nops: profile p failed on"), "{text}");
    for t in 0..6 {
        assert!(
            text.contains(&format!("• noisy{t} (exec)")),
            "task {t} lost:\n{text}"
        );
    }
    assert!(
        text.ends_with("more lines: `ops history --profile p`"),
        "{text}"
    );
    let doc = ops.run(&["status", "--json"]).json();
    assert_eq!(doc["last_alert"]["channel"], "telegram");
    assert_eq!(doc["last_alert"]["delivered"], true, "{doc}");
}

#[test]
fn a_discord_webhook_gets_content_within_2000_and_mentions_ping_nobody() {
    let dc = discord();
    let tg = telegram();
    let mut ops = Ops::new();
    ops.env(
        "OPS_WEBHOOK_URL",
        &format!("{}/api/webhooks/123/secret-part", dc.url()),
    )
    .env("OPS_WEBHOOK_FORMAT", "discord")
    .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    .env("TELEGRAM_CHAT_ID", "-100123")
    .env("TELEGRAM_API_URL", &tg.url());
    failing_profile(
        &ops,
        6,
        &format!("@everyone @here look {}", "x".repeat(650)),
    );
    ops.run(&["run", "p"]).expect_code(1);
    let sent = bodies(&dc);
    assert_eq!(sent.len(), 1);
    let content = sent[0]["content"].as_str().unwrap();
    assert!(units(content) <= 2000, "{}", units(content));
    assert!(content.contains("more lines: `ops history --profile p`"));
    assert_eq!(sent[0]["allowed_mentions"], json!({"parse": []}));
    assert!(sent[0].get("text").is_none(), "Discord wants content");
    // Telegram got the same digest, with its mentions defused.
    let text = bodies(&tg)[0]["text"].as_str().unwrap().to_string();
    assert!(
        !text.contains("@everyone") && text.contains("@\u{2060}everyone"),
        "{text}"
    );
    let doc = ops.run(&["status", "--json"]).json();
    assert_eq!(doc["last_alert"]["delivered"], true);
}

#[test]
fn a_slack_webhook_gets_escaped_text() {
    let slack = ok_server(200);
    let mut ops = Ops::new();
    ops.env(
        "OPS_WEBHOOK_URL",
        &format!("{}/services/T0/B0/secret", slack.url()),
    )
    .env("OPS_WEBHOOK_FORMAT", "slack");
    failing_profile(&ops, 1, "<!channel> disk & <http://x|link> full");
    ops.run(&["run", "p"]).expect_code(1);
    let sent = bodies(&slack);
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.contains("&lt;!channel&gt; disk &amp; &lt;http://x|link&gt; full"),
        "{text}"
    );
    assert!(!text.contains("<!channel>"));
    assert_eq!(
        sent[0].as_object().unwrap().len(),
        1,
        "Slack gets text only: {}",
        sent[0]
    );
    // A bad format is a configuration error naming the variable.
    ops.env("OPS_WEBHOOK_FORMAT", "teams");
    ops.run(&["check"])
        .expect_code(2)
        .expect_stderr("OPS_WEBHOOK_FORMAT=\"teams\": use json, slack or discord");
}

#[test]
fn test_alert_reaches_every_channel_reports_each_and_leaves_the_alert_state_alone() {
    let tg = telegram();
    let hook = ok_server(200);
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", &tg.url())
        .env(
            "OPS_WEBHOOK_URL",
            &format!("{}/hook/secret-part-xyz", hook.url()),
        );
    failing_profile(&ops, 1, "boom");
    let run = ops.run(&["test-alert"]);
    run.expect_code(0)
        .expect_stdout("✓ telegram (chat -100123): delivered")
        .expect_stdout("✓ webhook (json, http://");
    assert!(!run.all().contains(BOT_TOKEN) && !run.all().contains("secret-part-xyz"));
    let text = bodies(&tg)[0]["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("🧪 ops test alert from ") && text.contains(env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    assert_eq!(bodies(&hook)[0]["kind"], "test");
    // Nothing recorded: the next real failure still alerts as the first of its streak.
    let doc = ops.run(&["status", "--json"]).json();
    assert!(doc["last_alert"].is_null(), "{doc}");
    ops.run(&["run", "p"]).expect_code(1);
    assert_eq!(tg.requests().len(), 2, "the real failure was sent");
    // A channel that is down fails the command and is named.
    let down = ok_server(503);
    ops.env(
        "OPS_WEBHOOK_URL",
        &format!("{}/hook/secret-part-xyz", down.url()),
    );
    let run = ops.run(&["test-alert"]);
    run.expect_code(1)
        .expect_stdout("✓ telegram (chat -100123): delivered")
        .expect_stdout("✗ webhook (json, http://")
        .expect_stdout("webhook answered HTTP 503");
    assert!(!run.all().contains("secret-part-xyz"));
    // No channel at all: a configuration error.
    let bare = Ops::new();
    failing_profile(&bare, 1, "boom");
    bare.run(&["test-alert"])
        .expect_code(2)
        .expect_stderr("no alert channel configured");
    ops.run(&["doctor"])
        .expect_stdout("alerts: telegram (chat -100123), webhook (json, http://")
        .expect_stdout("ops test-alert");
}

#[test]
fn a_webhook_url_with_a_query_is_never_logged_with_its_secret() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = std::sync::Arc::clone(&calls);
    // Rate limited once (so the send is retried and logged), then accepted.
    let hook = FakeServer::start(
        loopback(),
        Box::new(move |_req: &Seen| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::json(429, json!({"retry_after": 0.1})).with_header("Retry-After", "1")
            } else {
                Reply::text(204, "")
            }
        }),
    );
    let mut ops = Ops::new();
    ops.env(
        "OPS_WEBHOOK_URL",
        &format!(
            "{}/api/webhooks/112233445566778899/TopSecretWebhookPart?wait=true",
            hook.url()
        ),
    )
    .env("OPS_WEBHOOK_FORMAT", "discord");
    failing_profile(&ops, 1, "boom");
    let run = ops.run(&["run", "p"]);
    run.expect_code(1).expect_stderr("retrying");
    assert!(!run.all().contains("TopSecretWebhookPart"), "{}", run.all());
    assert!(!run.all().contains("112233445566778899"), "{}", run.all());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
