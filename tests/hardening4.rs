//! Hardening IV stories (issue 33, "Security (reproduced)"): each test here failed before its
//! fix.

use std::time::Duration;

use serde_json::Value;

use crate::supervisor::{fleet, Fleet};
use crate::support::digitalocean::DoFault;

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
