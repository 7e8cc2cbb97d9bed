//! Hardening IV stories (issue 33, "Security (reproduced)"): each test here failed before its
//! fix.

use std::time::Duration;

use serde_json::{json, Value};

use crate::image::bake;
use crate::supervisor::{fleet, Fleet};
use crate::support::digitalocean::DoFault;
use crate::support::fake::{loopback, FakeServer, Reply, Seen};
use crate::support::{exec_profile, Ops};

const TAG: &str = "trigger-supervisor-envabcde";
const DROPLET_LIMIT: &str = "creating this/these droplet(s) will exceed your droplet limit";

/// The bodies of every droplet create ops sent, answered or not.
fn create_requests(f: &Fleet) -> Vec<Value> {
    f.api
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v2/droplets")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

fn last_create_name(f: &Fleet, bake: bool) -> String {
    create_requests(f)
        .iter()
        .rev()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .find(|n| n.contains("-bake-") == bake)
        .expect("a create of that kind")
}

/// The bake's retry time has come (the tests do not wait half an hour).
fn retry_now(f: &Fleet) {
    f.s.ops
        .sqlite()
        .execute(
            "UPDATE kv SET value = json_set(value, '$.retry_at', 0) WHERE namespace = 'supervisor' AND key = 'image'",
            [],
        )
        .unwrap();
}

fn snapshotted(f: &Fleet, id: u64) -> bool {
    f.api
        .with(|w| w.actions.iter().any(|(d, k)| *d == id && k == "snapshot"))
}

fn exists(f: &Fleet, id: u64) -> bool {
    f.api.with(|w| w.droplets.iter().any(|d| d.id == id))
}

/// A fleet that serves, then `bake: true`.
fn serving_then_bake() -> (Fleet, crate::support::digitalocean::Supervisor) {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let sup = f.serve(f.ids()[0], true);
    f.jobs("boot_grace: 10m, bake: true");
    (f, sup)
}

#[test]
fn a_bake_refused_outright_forgets_its_name_so_a_droplet_planted_under_it_is_never_snapshotted() {
    let (f, _sup) = serving_then_bake();
    // Someone fills the droplet limit: DigitalOcean refuses ops' bake create with a 422.
    f.api
        .with(|w| w.create_fault = Some(DoFault::Unprocessable(DROPLET_LIMIT)));
    f.health().expect_code(0).expect_stdout("HTTP 422");
    let name = last_create_name(&f, true);
    // They plant a powered-off droplet under that name with the bake tag.
    let planted = f
        .api
        .insert(&name, &[&format!("{TAG}-bake")], Duration::ZERO)
        .id;
    f.api
        .with(|w| w.droplets.iter_mut().find(|d| d.id == planted).unwrap().off = true);
    retry_now(&f);
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("carries our bake tag but ops did not create it: not touched");
    assert!(!snapshotted(&f, planted), "{}", run.all());
    assert!(exists(&f, planted), "never deleted either");
}

#[test]
fn bake_and_fleet_names_carry_a_random_suffix() {
    let f = fleet("boot_grace: 10m, bake: true");
    f.health().expect_code(0);
    let hex = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let fleet_name = last_create_name(&f, false);
    let rest = fleet_name.strip_prefix(&format!("{TAG}-")).unwrap();
    let (stamp, suffix) = rest.split_once('-').unwrap_or((rest, ""));
    assert!(
        stamp.len() == 12 && hex(suffix),
        "a fleet name is <tag>-<yymmddHHMMSS>-<12 random hex>: {fleet_name}"
    );
    let bake_name = last_create_name(&f, true);
    let rest = bake_name.strip_prefix(&format!("{TAG}-bake-")).unwrap();
    let (key, suffix) = rest.split_once('-').unwrap_or((rest, ""));
    assert!(
        key.len() == 16 && hex(suffix),
        "a bake name is <prefix><key>-<12 random hex>: {bake_name}"
    );
    assert!(bake_name.len() <= 63, "a hostname: {bake_name}");
    let again = fleet("boot_grace: 10m, bake: true");
    again.health().expect_code(0);
    assert_ne!(
        last_create_name(&again, true),
        bake_name,
        "the same settings never give the same name"
    );
}

#[test]
fn a_bake_droplet_whose_create_answer_was_lost_is_deleted_and_never_snapshotted() {
    let (f, _sup) = serving_then_bake();
    f.api.with(|w| w.create_fault = Some(DoFault::Lost));
    f.health().expect_code(0).expect_stdout("HTTP 504");
    let name = last_create_name(&f, true);
    let lost = f
        .api
        .with(|w| w.droplets.iter().find(|d| d.name == name).unwrap().id);
    retry_now(&f);
    let run = f.health();
    run.expect_code(0)
        .expect_stdout(&format!("deleted bake droplet {name} (id {lost})"))
        .expect_stdout("created bake droplet");
    assert!(!snapshotted(&f, lost), "{}", run.all());
    assert!(!exists(&f, lost));
    for _ in 0..4 {
        f.health().expect_code(0);
    }
    assert!(!snapshotted(&f, lost));
    f.run(&["status"]).expect_stdout("image: baked ");
}

#[test]
fn a_fleet_create_refused_outright_forgets_its_name_so_a_droplet_planted_under_it_is_not_adopted() {
    let f = fleet("boot_grace: 10m");
    f.api
        .with(|w| w.create_fault = Some(DoFault::Unprocessable(DROPLET_LIMIT)));
    f.health().expect_code(1).expect_stdout("HTTP 422");
    let name = last_create_name(&f, false);
    let planted = f
        .api
        .insert(&name, &[TAG, "ops-managed"], Duration::ZERO)
        .id;
    let run = f.health();
    run.expect_code(0).expect_stdout(&format!(
        "droplet {name} (id {planted}) carries our tags but ops did not create it"
    ));
    assert!(!run.stdout.contains("taken as ops' own"), "{}", run.all());
}

fn tag_droplet(f: &Fleet, id: u64, tag: &str) {
    f.api.with(|w| {
        w.droplets
            .iter_mut()
            .find(|d| d.id == id)
            .unwrap()
            .tags
            .push(tag.into())
    });
}

fn problems_of_kind(f: &Fleet, kind: &str) -> Vec<Value> {
    let doc = f.run(&["status", "--json"]).json();
    doc["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == kind)
        .cloned()
        .collect()
}

/// Anyone who can tag adds `ops-draining` to a healthy droplet of ours: ops never started that
/// drain, so the droplet serves on, untouched, and the tag is reported.
#[test]
fn a_draining_tag_ops_never_recorded_leaves_the_droplet_serving_and_is_reported() {
    let f = fleet("boot_grace: 10m");
    let (a, _sup) = f.one_healthy();
    tag_droplet(&f, a, "ops-draining");
    for _ in 0..3 {
        let run = f.health();
        run.expect_code(0)
            .expect_stdout("carries ops-draining but ops never started draining it")
            .expect_stdout("healthy (last heartbeat");
        assert!(
            run.stdout.contains("warnings") || run.all().contains("whoever tagged it"),
            "{}",
            run.all()
        );
    }
    assert!(f.deletes().is_empty(), "deleted: {:?}", f.deletes());
    assert_eq!(f.creates().len(), 1, "no replacement: it still serves");
    assert!(
        f.api.with(|w| w.actions.is_empty()),
        "no shutdown, no action at all"
    );
    let problems = problems_of_kind(&f, "unrecorded_drain");
    assert_eq!(problems.len(), 1, "{problems:?}");
}

/// The state database is lost while a droplet drains: the run fails naming the fix, the drain
/// goes on (it may be real), and its delete counts in the circuit breaker.
#[test]
fn a_lost_state_with_a_draining_droplet_fails_the_run_with_the_fix_and_the_delete_counts() {
    let f = fleet("boot_grace: 10m");
    let (a, _sup) = f.one_healthy();
    tag_droplet(&f, a, "ops-draining");
    f.s.ops
        .sqlite()
        .execute("DELETE FROM kv WHERE namespace = 'supervisor'", [])
        .unwrap();
    let run = f.health();
    run.expect_code(1)
        .expect_stdout("ops' state has no record of starting that drain")
        .expect_stdout("doctl compute droplet untag");
    f.api
        .with(|w| w.droplets.iter_mut().find(|d| d.id == a).unwrap().off = true);
    f.health().expect_code(0).expect_stdout("deleted droplet");
    assert_eq!(f.deletes(), [a]);
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(
        doc["breaker"]["replacements"].as_array().map(Vec::len),
        Some(1),
        "{}",
        doc["breaker"]
    );
}

/// The bake droplet of this fleet: (id, name).
fn baker(f: &Fleet) -> (u64, String) {
    f.api.with(|w| {
        w.droplets
            .iter()
            .find(|d| d.name.contains("-bake-"))
            .map(|d| (d.id, d.name.clone()))
            .expect("a bake droplet")
    })
}

/// A fleet whose bake droplet was just created and stays at work (until a test says).
fn baking() -> (Fleet, u64, String) {
    let f = fleet("boot_grace: 10m, bake: true");
    f.api
        .with(|w| w.bake_after = std::time::Duration::from_secs(3600));
    f.health()
        .expect_code(0)
        .expect_stdout("created bake droplet");
    let (id, name) = baker(&f);
    (f, id, name)
}

/// Someone takes a live snapshot of the bake droplet named as ops names its images (so it keeps
/// what the seal removes): only the snapshot ops requested becomes the image.
#[test]
fn only_the_snapshot_of_the_name_ops_requested_becomes_the_image() {
    let (f, id, name) = baking();
    let planted = f.api.with(|w| {
        let planted = w.add_image(&format!("{name}-live"), &[], "2026-01-01T00:00:00Z");
        w.images
            .iter_mut()
            .find(|i| i.id == planted)
            .unwrap()
            .droplet = id;
        // …and the droplet powers itself off as a bake does.
        w.droplets.iter_mut().find(|d| d.id == id).unwrap().off = true;
        planted
    });
    let steps = bake(&f);
    assert!(steps.contains("snapshotting bake droplet"), "{steps}");
    let doc = f.run(&["status", "--json"]).json();
    let image = doc["supervisor"]["image"]["image"].as_u64().unwrap();
    assert_ne!(image, planted, "{steps}");
}

/// Someone powers the bake droplet off (before its seal, say): its snapshot is never taken.
#[test]
fn a_bake_droplet_with_power_actions_ops_did_not_send_is_refused() {
    let (f, id, name) = baking();
    f.api.with(|w| {
        w.actions.push((id, "power_off".into()));
        w.droplets.iter_mut().find(|d| d.id == id).unwrap().off = true;
    });
    let run = f.health();
    run.expect_code(0)
        .expect_stdout(&format!(
            "bake droplet {name} (id {id}) had actions ops did not send (power_off"
        ))
        .expect_stdout(&format!("deleted bake droplet {name}"));
    assert!(!snapshotted(&f, id), "{}", run.all());
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn sent_strings(s: &FakeServer) -> Vec<String> {
    let mut out = Vec::new();
    for r in s.requests() {
        strings(
            &serde_json::from_str(&r.body).unwrap_or(Value::Null),
            &mut out,
        );
    }
    out
}

const EVIL: &str = "\n<0>EMERGENCY: ops was taken over @everyone\u{1b}[2J";

/// A name DigitalOcean answers with a line break in it (renamed behind ops' back) reaches no
/// sink as a line of its own: not the journal, not Telegram, not the webhook, not a metric.
#[test]
fn control_characters_from_outside_are_escaped_in_the_journal_messages_and_metrics() {
    let tg = FakeServer::start(
        loopback(),
        Box::new(|_req: &Seen| Reply::json(200, json!({"ok": true, "result": {"message_id": 1}}))),
    );
    let hook = FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(204, "")));
    let mut f = fleet("boot_grace: 10m");
    let (a, _sup) = f.one_healthy();
    f.api.with(|w| {
        let d = w.droplets.iter_mut().find(|d| d.id == a).unwrap();
        d.name.push_str(EVIL);
        d.created_at = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // A full disk: the failure line names the droplet, and a message goes out.
        w.disks.insert(a, (1 << 20, 50 << 30));
    });
    f.s.ops
        .env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()))
        .env("TELEGRAM_BOT_TOKEN", "123456:telegram-bot-secret-token")
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", &tg.url())
        .env("JOURNAL_STREAM", "1:2");
    let run = f.health();
    run.expect_code(1).expect_stdout("disk");
    assert!(
        !run.all().lines().any(|l| l.starts_with("<0>")),
        "a line of its own:\n{}",
        run.all()
    );
    assert!(run.stderr.contains("\\n<0>EMERGENCY"), "{}", run.stderr);
    for (channel, sent) in [
        ("telegram", sent_strings(&tg)),
        ("webhook", sent_strings(&hook)),
    ] {
        assert!(!sent.is_empty(), "nothing sent to {channel}");
        for s in &sent {
            assert!(
                !s.contains('\u{1b}') && !s.lines().any(|l| l.starts_with("<0>")),
                "{channel}: {s}"
            );
        }
        assert!(
            sent.iter().any(|s| s.contains("\\n<0>EMERGENCY")),
            "{channel} names the droplet, escaped: {sent:?}"
        );
    }
    // `ops status` prints the fleet's names: escaped there too (it printed the name's line
    // break and escape sequence as they came).
    let status = f.run(&["status"]);
    assert!(status.stdout.contains("EMERGENCY"), "{}", status.stdout);
    assert!(
        !status.stdout.lines().any(|l| l.starts_with("<0>")) && !status.stdout.contains('\u{1b}'),
        "{}",
        status.stdout
    );
    let (_served, addr) = crate::operator::Served::start(&f.s.ops);
    let (_, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert!(metrics.contains("EMERGENCY"), "{metrics}");
    assert!(
        !metrics.lines().any(|l| l.starts_with("<0>")) && !metrics.contains('\u{1b}'),
        "{metrics}"
    );
}

/// A bake droplet renamed with a line break in its name: the event of its snapshot, and the log
/// line that announces it, hold the name escaped.
#[test]
fn control_characters_from_outside_are_escaped_in_events() {
    let mut f = fleet("boot_grace: 10m, bake: true");
    f.api
        .with(|w| w.bake_after = std::time::Duration::from_secs(3600));
    f.health()
        .expect_code(0)
        .expect_stdout("created bake droplet");
    let (id, _) = baker(&f);
    f.api.with(|w| {
        let d = w.droplets.iter_mut().find(|d| d.id == id).unwrap();
        d.name.push_str(EVIL);
        d.off = true;
    });
    f.s.ops.env("JOURNAL_STREAM", "1:2");
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("snapshotting bake droplet");
    assert!(
        !run.all().lines().any(|l| l.starts_with("<0>")),
        "{}",
        run.all()
    );
    let events = f.run(&["events", "--json"]).json();
    let mut all = Vec::new();
    strings(&events, &mut all);
    assert!(
        all.iter().any(|s| s.contains("\\n<0>EMERGENCY")),
        "{events}"
    );
    assert!(
        all.iter()
            .all(|s| !s.contains('\n') && !s.contains('\u{1b}')),
        "{events}"
    );
}

/// Someone removes our tags from ops' current image: ops finds it by its recorded id, tags it
/// again, and bakes nothing (images are listed by tag; an untagged recorded one was neither
/// current nor pruned, and a new one was baked every day).
#[test]
fn an_untagged_current_image_is_tagged_again_not_baked_again() {
    let f = fleet("boot_grace: 10m, bake: true");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    bake(&f);
    let image = f.api.with(|w| {
        let i = &mut w.images[0];
        let tags = std::mem::take(&mut i.tags);
        (i.id, tags)
    });
    // The daily listing is due.
    f.s.ops
        .sqlite()
        .execute(
            "UPDATE kv SET value = json_set(value, '$.checked_at', 0) WHERE namespace = 'supervisor' AND key = 'image'",
            [],
        )
        .unwrap();
    let bakes = || {
        create_requests(&f)
            .iter()
            .filter(|c| c["name"].as_str().unwrap_or("").contains("-bake-"))
            .count()
    };
    let before = bakes();
    let run = f.health();
    run.expect_code(0).expect_stdout("tagged it again");
    for _ in 0..2 {
        f.health().expect_code(0);
    }
    assert_eq!(bakes(), before, "no bake again");
    let now = f.api.with(|w| {
        w.images
            .iter()
            .find(|i| i.id == image.0)
            .unwrap()
            .tags
            .clone()
    });
    for t in &image.1 {
        assert!(now.contains(t), "{t} back on the image: {now:?}");
    }
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(doc["supervisor"]["image"]["image"], json!(image.0));
}

/// The bake droplet carries only `<tag>-bake`: the cloud firewall covers that tag too, so its
/// SSH is never open to the internet while it bakes.
#[test]
fn the_cloud_firewall_covers_the_bake_droplet() {
    let f = fleet("boot_grace: 10m, bake: true");
    f.health()
        .expect_code(0)
        .expect_stdout("created bake droplet");
    let fw = f.api.with(|w| w.firewalls.clone());
    assert_eq!(fw.len(), 1, "{fw:?}");
    let tags: Vec<&str> = fw[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let bake_tag = format!("{TAG}-bake");
    assert!(
        tags.contains(&TAG) && tags.contains(&bake_tag.as_str()),
        "{tags:?}"
    );
}

/// `ping_url` sends the run's table (droplet addresses, the origin, SQL) to a third party only
/// when the profile says `ping_body: true`.
#[test]
fn ping_url_sends_no_body_unless_asked() {
    let hc = FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(200, "OK")));
    let ops = Ops::new();
    ops.jobs(&exec_profile(
        "p",
        &["echo", "10.0.0.5 secret-ish detail"],
        &format!("ping_url: {}/ping/abc", hc.url()),
    ));
    ops.run(&["run", "p"]).expect_code(0);
    let reqs = hc.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs.iter().all(|r| r.method == "GET" && r.body.is_empty()),
        "{reqs:?}"
    );
    ops.jobs(&exec_profile(
        "p",
        &["echo", "10.0.0.5 secret-ish detail"],
        &format!("ping_url: {}/ping/abc\n    ping_body: true", hc.url()),
    ));
    ops.run(&["run", "p"]).expect_code(0);
    let last = hc.requests().pop().unwrap();
    assert_eq!(last.method, "POST");
    assert!(last.body.contains("profile p: ok in"), "{}", last.body);
}

/// The first failure line leads the Telegram message: its `@mentions` are defused like the
/// sections' are.
#[test]
fn the_telegram_headline_mentions_nobody() {
    let tg = FakeServer::start(
        loopback(),
        Box::new(|_req: &Seen| Reply::json(200, json!({"ok": true, "result": {"message_id": 1}}))),
    );
    let mut ops = Ops::new();
    ops.env("TELEGRAM_BOT_TOKEN", "123456:telegram-bot-secret-token")
        .env("TELEGRAM_CHAT_ID", "-100123")
        .env("TELEGRAM_API_URL", &tg.url());
    ops.jobs(&exec_profile(
        "p",
        &["sh", "-c", "echo '@everyone @ops_admins look'; exit 1"],
        "",
    ));
    ops.run(&["run", "p"]).expect_code(1);
    let sent = sent_strings(&tg);
    let text = sent.iter().find(|s| s.contains("look")).expect("sent");
    let headline = text.lines().next().unwrap();
    assert!(headline.contains("look"), "the output leads: {text}");
    assert!(
        !text.contains("@everyone") && !text.contains("@ops_admins"),
        "{text}"
    );
}

/// `/v1/events` is readable by any local user, as `/v1/status` is: deploy.md says so beside
/// serve's listen address.
#[test]
fn deploy_md_says_who_can_read_serve() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploy.md")).unwrap();
    let at = doc.find("127.0.0.1:8923").expect("serve's listen address");
    let near = &doc[at.saturating_sub(1500)..(at + 1500).min(doc.len())];
    assert!(
        near.contains("/v1/events") && near.contains("any local user"),
        "{near}"
    );
}
