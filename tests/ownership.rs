//! Whose droplets ops may touch (issue 27, Low 1): our two tags are predictable and anyone who
//! may tag in the DigitalOcean team can put them on any droplet, so ops acts only on the
//! droplets it recorded creating. Each test here failed before the record existed.

use std::time::Duration;

use serde_json::Value;

use crate::supervisor::{fleet, Fleet};

const TAG: &str = "trigger-supervisor-envabcde";
const NOT_OURS: &str = "carries our tags but ops did not create it: not touched (remove our tags or delete it yourself)";

/// The tags of droplet `id` in the fake DigitalOcean, and the actions taken on it.
fn touched(f: &Fleet, id: u64) -> (Vec<String>, Vec<String>) {
    f.api.with(|w| {
        let tags = w.droplets.iter().find(|d| d.id == id).unwrap().tags.clone();
        let actions = w
            .actions
            .iter()
            .filter(|(on, _)| *on == id)
            .map(|(_, kind)| kind.clone())
            .collect();
        (tags, actions)
    })
}

/// The entries of a `--json` list (problems, events) of one kind.
fn of_kind<'a>(list: &'a Value, kind: &str) -> Vec<&'a Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// What `ops` recorded creating: the ids in `supervisor/created`.
fn recorded(f: &Fleet) -> Option<Vec<u64>> {
    let text: Option<String> =
        f.s.ops
            .sqlite()
            .query_row(
                "SELECT value FROM kv WHERE namespace = 'supervisor' AND key = 'created'",
                [],
                |r| r.get(0),
            )
            .ok();
    let v: Value = serde_json::from_str(&text?).unwrap();
    Some(
        v["droplets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect(),
    )
}

/// Someone who may tag in the team puts our two tags and a look-alike name on a droplet that
/// is stale, silent and surplus: everything that would get one of ops' own droplets drained
/// and deleted. ops names it in every run, in the warnings and in `status`, and never touches it.
#[test]
fn a_droplet_someone_else_tagged_like_ours_is_never_deleted_and_is_reported() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 1");
    let (ours, _sup) = f.one_healthy();
    let name = format!("{TAG}-260101000000");
    let planted = f.api.insert(
        &name,
        &[TAG, "ops-managed", "ops-spec-old"],
        Duration::from_secs(86_400),
    );
    let before = touched(&f, planted.id);
    for _ in 0..3 {
        let run = f.health();
        run.expect_code(0)
            .expect_stdout(&format!("droplet {name} (id {}) {NOT_OURS}", planted.id))
            .expect_stdout(&format!(
                "warnings:\n  supervisor: our tags are on droplets ops did not create: {name} (id {})",
                planted.id
            ));
    }
    f.run(&["run", "health", "--dry-run"])
        .expect_code(0)
        .expect_stdout(NOT_OURS);
    assert!(f.deletes().is_empty(), "{:?}", f.deletes());
    assert_eq!(touched(&f, planted.id), before, "drained or re-tagged");
    assert_eq!(f.ids(), [ours, planted.id]);
    assert_eq!(f.creates().len(), 1);
    let doc = f.run(&["status", "--json"]).json();
    let problems = of_kind(&doc["problems"], "unowned_droplet");
    assert_eq!(problems.len(), 1, "{}", doc["problems"]);
    assert!(
        problems[0]["text"].as_str().unwrap().contains(&name),
        "{}",
        problems[0]
    );
}

/// A look-alike that even heartbeats like a healthy supervisor is no capacity: when ops' own
/// droplet fails it is replaced and deleted as usual, and the look-alike stays as it was.
#[test]
fn a_droplet_ops_created_is_still_replaced_and_a_healthy_look_alike_is_no_capacity() {
    let f = fleet("boot_grace: 1ms, stale_after: 1s, unhealthy_after: 1");
    let (ours, sup) = f.one_healthy();
    let tags: Vec<String> = f.api.with(|w| {
        w.droplets
            .iter()
            .find(|d| d.id == ours)
            .unwrap()
            .tags
            .clone()
    });
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let planted = f.api.insert(
        &format!("{TAG}-260101000000"),
        &tags,
        Duration::from_secs(3600),
    );
    let _planted_sup = f.serve(planted.id, true);
    let before = touched(&f, planted.id);
    sup.set(false);
    std::thread::sleep(Duration::from_millis(1500));
    let run = f.health();
    run.expect_stdout("deleted droplet")
        .expect_stdout("created droplet")
        .expect_stdout(NOT_OURS);
    assert_eq!(f.deletes(), [ours]);
    assert_eq!(f.creates().len(), 2, "the look-alike replaced nothing");
    assert_eq!(touched(&f, planted.id), before);
    let ids = f.ids();
    assert!(ids.contains(&planted.id) && ids.len() == 2, "{ids:?}");
    let rec = recorded(&f).unwrap();
    assert!(!rec.contains(&planted.id), "{rec:?}");
}

/// A state written before ops kept its record: the droplets named as ops names them are
/// adopted (announced once; a dry run only says so), a hand-tagged one named otherwise is not,
/// and the adopted droplet is rolled as usual when its spec changes.
#[test]
fn an_upgrade_from_a_state_without_the_record_adopts_the_droplets_named_like_ops_ones() {
    let mut f = fleet("boot_grace: 1ms, unhealthy_after: 1");
    let (ours, _sup) = f.one_healthy();
    let db = f.api.insert(
        "hand-tagged-db-1",
        &[TAG, "ops-managed"],
        Duration::from_secs(86_400),
    );
    f.forget_created();
    let dry = f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(0)
        .expect_stdout(&format!(
            "(id {ours}) taken as ops' own: no record of ops' droplets existed yet"
        ))
        .expect_stdout(&format!(
            "droplet hand-tagged-db-1 (id {}) {NOT_OURS}",
            db.id
        ));
    assert_eq!(recorded(&f), None, "a dry run writes no record");
    let run = f.health();
    run.expect_code(0)
        .expect_stderr(&format!("changed: adopted droplet {TAG}-"))
        .expect_stdout(&format!(
            "droplet hand-tagged-db-1 (id {}) {NOT_OURS}",
            db.id
        ));
    assert_eq!(recorded(&f), Some(vec![ours]));
    let events = f.run(&["events", "--json"]).json();
    let adopted = of_kind(&events["events"], "droplet.adopted");
    assert_eq!(adopted.len(), 1, "{}", events["events"]);
    // Adopted for good: the next run adopts nothing, and a spec change rolls it.
    assert!(!f.health().stderr.contains("adopted droplet"));
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    f.health().expect_code(0).expect_stdout("rolling replace");
    let new = *f
        .ids()
        .iter()
        .find(|id| ![ours, db.id].contains(id))
        .unwrap();
    let _new_sup = f.serve(new, true);
    f.health()
        .expect_code(0)
        .expect_stdout("replaced by a healthy droplet");
    assert_eq!(f.deletes(), [ours]);
    assert!(f.ids().contains(&db.id));
}

/// The state database is lost: ops re-adopts its own droplet by its name (no duplicate) and
/// still never deletes a hand-tagged droplet named otherwise, however surplus and silent.
#[test]
fn a_lost_state_database_never_makes_ops_delete_a_foreign_named_droplet() {
    let f = fleet("boot_grace: 1ms, unhealthy_after: 1");
    let (ours, _sup) = f.one_healthy();
    let db = f.api.insert(
        "hand-tagged-db-1",
        &[TAG, "ops-managed", "ops-spec-old"],
        Duration::from_secs(86_400),
    );
    let before = touched(&f, db.id);
    std::fs::remove_dir_all(f.s.ops.state_dir()).unwrap();
    f.run(&["run", "extract"]).expect_code(0);
    for _ in 0..3 {
        f.health().expect_code(0).expect_stdout(&format!(
            "droplet hand-tagged-db-1 (id {}) {NOT_OURS}",
            db.id
        ));
    }
    assert!(f.deletes().is_empty(), "{:?}", f.deletes());
    assert_eq!(touched(&f, db.id), before);
    assert_eq!(
        f.creates().len(),
        1,
        "its own droplet was re-adopted, not duplicated"
    );
    assert_eq!(recorded(&f), Some(vec![ours]));
}
