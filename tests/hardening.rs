//! Hardening stories (issue 13): each test here failed before its fix.

use serde_json::{json, Value};
use trigger_ops::sealed::Sealer;

use crate::extract::{scenario, LOG_TOKEN, SECRET};

fn kv(db: &rusqlite::Connection, key: &str) -> Value {
    let text: String = db
        .query_row(
            "SELECT value FROM kv WHERE namespace = 'config' AND key = ?1",
            [key],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn set_kv(db: &rusqlite::Connection, key: &str, value: &Value) {
    db.execute(
        "UPDATE kv SET value = ?2 WHERE namespace = 'config' AND key = ?1",
        rusqlite::params![key, value.to_string()],
    )
    .unwrap();
}

#[test]
fn secrets_sealed_by_the_old_format_are_opened_once_and_resealed() {
    let s = scenario("{kind: extract, refresh: 1ms}");
    s.ops.run(&["run", "extract"]).expect_code(0);
    let db = s.ops.sqlite();
    assert!(kv(&db, "worker_token")["token"]
        .as_str()
        .unwrap()
        .starts_with("sealed2:"));
    // The state as an earlier ops left it: the old home-made construction.
    let sealer = Sealer::load(&s.ops.state_dir(), false).unwrap().unwrap();
    let mut token = kv(&db, "worker_token");
    token["token"] = json!(sealer.seal_legacy(LOG_TOKEN).unwrap());
    set_kv(&db, "worker_token", &token);
    let mut record = kv(&db, "record");
    record["managed_secret"] = json!(sealer.seal_legacy(SECRET).unwrap());
    set_kv(&db, "record", &record);

    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("re-sealed the cached secrets with ChaCha20-Poly1305")
        .expect_stdout("worker token: cached (from logs");
    for (key, field) in [("worker_token", "token"), ("record", "managed_secret")] {
        let v = kv(&db, key)[field].as_str().unwrap().to_string();
        assert!(v.starts_with("sealed2:"), "{key}.{field} is still legacy");
    }
    let again = s.ops.run(&["run", "extract"]);
    again.expect_code(0);
    assert!(!again.stdout.contains("re-sealed"), "{}", again.stdout);

    // A sealed value moved to another field does not open there.
    let mut record = kv(&db, "record");
    record["managed_secret"] = kv(&db, "worker_token")["token"].clone();
    set_kv(&db, "record", &record);
    let run = s.ops.run(&["render-cloud-init"]);
    assert_ne!(run.code, 0);
    assert!(
        run.all().contains("belongs to another field"),
        "{}",
        run.all()
    );
}

#[test]
fn a_failed_extraction_is_read_again_on_the_next_run_and_refresh_forces_it() {
    // The default refresh (15m): a good record is trusted, a failed one is not.
    let s = scenario("extract");
    s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!("http://localhost:3030")
    });
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("not reachable from a droplet");
    // The operator fixes the variable on Railway and reruns at once.
    let origin = s.webapp.origin();
    s.railway
        .with(|w| w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!(origin));
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("the last extraction's checks failed: reading Railway again");
    // Good now: the next run trusts the record...
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("no Railway request");
    // ...unless the operator asks for a fresh read.
    s.railway.clear();
    s.ops
        .run(&["run", "extract", "--refresh"])
        .expect_code(0)
        .expect_stdout("--refresh: reading Railway whatever the record's age");
    assert!(s.railway.ops().contains(&"Webapp".to_string()));
}
