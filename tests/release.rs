//! The supervisor's version follows the webapp's release, read from the webapp service's source
//! on Railway, unless TRIGGER_VERSION pins it; an upgrade of the webapp rolls the droplets.

use serde_json::Value;

use crate::supervisor::{cloud, fleet, webapp_db, Fleet};
use crate::support::railway::World;

/// A fleet whose supervisor follows the webapp (no TRIGGER_VERSION), with extract reading
/// Railway on every run, a `health` and an `hourly` profile, and the webapp's source set by
/// `source`. Extract has run once.
fn following(source: impl FnOnce(&mut World)) -> Fleet {
    let mut f = fleet("boot_grace: 10m");
    f.s.ops.env("TRIGGER_VERSION", "");
    f.s.railway.with(source);
    let supervisor = format!(
        "{{kind: supervisor, health_port: {}, boot_grace: 10m}}",
        f.port
    );
    f.s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  extract:\n    cron: '*/15 * * * *'\n    tasks: [{{kind: extract, refresh: 1ms}}]\n  health:\n    cron: '* * * * *'\n    timeout: 1m\n    tasks: [{supervisor}]\n  hourly:\n    cron: '0 * * * *'\n    timeout: 1m\n    tasks: [{{kind: extract, refresh: 1ms}}, {supervisor}]\n"
    ));
    f
}

fn image(tag: &str) -> impl FnOnce(&mut World) + '_ {
    move |w: &mut World| {
        w.image_source(
            "svc-web",
            &format!("ghcr.io/triggerdotdev/trigger.dev:{tag}"),
        )
    }
}

fn user_data(f: &Fleet, i: usize) -> String {
    f.api
        .with(|w| w.creates[i]["user_data"].as_str().unwrap().to_string())
}

fn tags(f: &Fleet, i: usize) -> Vec<String> {
    f.api.with(|w| {
        w.creates[i]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    })
}

#[test]
fn an_image_source_with_a_release_tag_sets_the_supervisor_version() {
    let f = following(image("v4.5.10"));
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("webapp version: v4.5.10 (image ghcr.io/triggerdotdev/trigger.dev:v4.5.10)")
        .expect_stdout("supervisor version v4.5.10 (the webapp's)")
        .expect_stdout("changed since the last extraction: webapp version v4.5.12 → v4.5.10");
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("supervisor version v4.5.10 (the webapp's, read from Railway ");
    assert!(user_data(&f, 0).contains("image: ghcr.io/triggerdotdev/supervisor:v4.5.10"));
    assert!(tags(&f, 0).contains(&"ops-version:v4_5_10".to_string()));

    f.run(&["status"])
        .expect_code(0)
        .expect_stdout("supervisor version v4.5.10 (the webapp's)");
    let doc = f.run(&["status", "--json"]).json();
    let rec = &doc["config_record"];
    assert_eq!(rec["webapp_version"], "v4.5.10");
    assert_eq!(
        rec["webapp_release"],
        "image ghcr.io/triggerdotdev/trigger.dev:v4.5.10"
    );
    assert_eq!(rec["supervisor_version"]["tag"], "v4.5.10");
    assert_eq!(rec["supervisor_version"]["source"], "webapp");
}

#[test]
fn a_moving_image_tag_is_not_followed_and_the_bundled_default_is_used_with_a_warning() {
    let f = following(image("latest"));
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("webapp version: unknown (image ghcr.io/triggerdotdev/trigger.dev:latest: the tag \"latest\" is not a release (vX.Y.Z) and a moving tag cannot be followed safely)");
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("supervisor version v4.5.12: the bundled default, because the webapp's version is unknown (set TRIGGER_VERSION to pin one)");
    assert!(user_data(&f, 0).contains("image: ghcr.io/triggerdotdev/supervisor:v4.5.12"));
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(doc["config_record"]["webapp_version"], Value::Null);
    assert_eq!(
        doc["config_record"]["supervisor_version"]["source"],
        "default"
    );
}

#[test]
fn a_repo_source_gives_the_release_in_its_branch_name_or_none() {
    let f = following(|w| w.repo_source("svc-web", "acme/trigger-railway", "release/v4.5.11"));
    f.run(&["run", "extract"]).expect_code(0).expect_stdout(
        "webapp version: v4.5.11 (repo acme/trigger-railway, branch release/v4.5.11)",
    );
    f.run(&["run", "health"]).expect_code(0);
    assert!(user_data(&f, 0).contains("supervisor:v4.5.11"));

    f.s.railway
        .with(|w| w.repo_source("svc-web", "acme/trigger-railway", "main"));
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout(
            "webapp version: unknown (repo acme/trigger-railway, branch main names no release (vX.Y.Z))",
        )
        .expect_stdout("webapp version v4.5.11 → unknown")
        .expect_stdout("the bundled default");
}

#[test]
fn a_pin_wins_and_status_and_doctor_show_the_mismatch() {
    let mut f = following(image("v4.5.10"));
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    let mismatch = "supervisor pinned to v4.6.0 (TRIGGER_VERSION), webapp runs v4.5.10";
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout(mismatch);
    let run = f.run(&["run", "health"]);
    run.expect_code(0)
        .expect_stdout(&format!("warnings:\n  supervisor: {mismatch}"));
    // In its own section, not among the facts of the run.
    let table = run.stdout.split("warnings:").next().unwrap();
    assert!(!table.contains(mismatch), "{}", run.stdout);
    assert!(user_data(&f, 0).contains("supervisor:v4.6.0"));
    assert!(tags(&f, 0).contains(&"ops-version:v4_6_0".to_string()));
    f.run(&["status"]).expect_code(0).expect_stdout(mismatch);
    f.run(&["doctor"]).expect_stdout(&format!("! {mismatch}"));

    // The same pin as the webapp's release: no mismatch reported.
    f.s.ops.env("TRIGGER_VERSION", "v4.5.10");
    let status = f.run(&["status"]);
    status
        .expect_code(0)
        .expect_stdout("supervisor version v4.5.10 (pinned by TRIGGER_VERSION)");
    assert!(!status.stdout.contains("webapp runs"), "{}", status.stdout);

    f.s.ops.env("TRIGGER_VERSION", "v4.6.0; rm -rf /");
    f.run(&["run", "health"])
        .expect_code(2)
        .expect_stderr("TRIGGER_VERSION=\"v4.6.0; rm -rf /\" is not an image tag");
}

#[test]
fn a_webapp_upgrade_rolls_the_supervisor_new_droplet_first() {
    let f = following(image("v4.5.10"));
    f.run(&["run", "hourly"]).expect_code(0);
    let old = f.ids()[0];
    let _old_sup = f.serve(old, true);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("healthy");
    assert_eq!(f.api.with(|w| w.creates.len()), 1);

    // The operator upgrades the webapp on Railway.
    f.s.railway.with(image("v4.5.12"));
    let mutations = f.api.mutations();
    let plan = f.run(&["run", "hourly", "--dry-run"]);
    plan.expect_code(0)
        .expect_stdout("changed since the last extraction: webapp version v4.5.10 → v4.5.12")
        .expect_stdout(&format!(
            "would replace droplet {} (webapp upgraded v4.5.10 → v4.5.12)",
            f.api.with(|w| w.droplets[0].name.clone())
        ))
        .expect_stdout("supervisor v4.5.12");
    assert_eq!(f.api.mutations(), mutations, "a dry run changes nothing");
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(doc["config_record"]["webapp_version"], "v4.5.10");

    f.run(&["run", "hourly"])
        .expect_code(0)
        .expect_stdout("spec drift (webapp upgraded v4.5.10 → v4.5.12): rolling replace of");
    assert_eq!(f.ids().len(), 2, "the new droplet comes up first");
    assert!(user_data(&f, 1).contains("image: ghcr.io/triggerdotdev/supervisor:v4.5.12"));
    assert!(tags(&f, 1).contains(&"ops-version:v4_5_12".to_string()));
    let new = *f.ids().iter().find(|id| **id != old).unwrap();

    // Until the new one is healthy, the old one stays.
    f.run(&["run", "health"]).expect_code(0);
    assert!(f.api.with(|w| w.deletes.is_empty()));
    let _new_sup = f.serve(new, true);
    f.run(&["run", "health"]).expect_code(0).expect_stdout(
        "spec drift (webapp upgraded v4.5.10 → v4.5.12): replaced by a healthy droplet",
    );
    assert_eq!(f.ids(), [new]);
    assert_eq!(f.api.with(|w| w.creates.len()), 2);
}

#[test]
fn a_dry_run_of_the_main_profile_on_a_fresh_host_plans_the_droplet() {
    // Nothing extracted yet: extract's planned record is handed to the supervisor in memory.
    let webapp = webapp_db();
    let (mut s, api, port) = cloud(&webapp.url);
    s.ops.env("TRIGGER_VERSION", "");
    s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  hourly:\n    cron: '0 * * * *'\n    tasks: [extract, {{kind: supervisor, health_port: {port}}}]\n"
    ));
    s.ops
        .run(&["run", "hourly", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would store the config record")
        .expect_stdout("supervisor version v4.5.12 (the webapp's)")
        .expect_stdout("would create droplet trigger-supervisor-envabcde-");
    assert_eq!(api.mutations(), 0, "a dry run changes nothing");
    assert!(
        !s.ops.db().exists(),
        "a dry run on a fresh host creates no state database"
    );
}
