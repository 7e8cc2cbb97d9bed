//! Healing (issue 20): blame the right part, and bring a dead supervisor back sooner. A fake
//! DigitalOcean, a real PostgreSQL, test supervisors that heartbeat the way the webapp records
//! it, and the fake webapp's `/healthcheck`.

use std::time::Duration;

use crate::supervisor::{fleet, Fleet};

/// Two healthy supervisors, each heartbeating; returns them (dropping one stops it for good).
fn two_healthy(f: &mut Fleet) -> Vec<crate::support::digitalocean::Supervisor> {
    f.s.ops.env("SUPERVISOR_COUNT", "2");
    f.run(&["run", "health"]).expect_code(0);
    f.run(&["run", "health"]).expect_code(0);
    let ids = f.ids();
    assert_eq!(ids.len(), 2);
    let sups: Vec<_> = ids.iter().map(|id| f.serve(*id, true)).collect();
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat");
    sups
}

fn webapp_health(f: &Fleet, code: u16, body: &str) {
    *f.s.webapp.health.lock().unwrap() = (code, body.to_string());
}

#[test]
fn the_webapp_down_for_ten_checks_replaces_nothing_and_the_same_fleet_is_healthy_after() {
    let mut f = fleet("boot_grace: 10m, stale_after: 1s, unhealthy_after: 2");
    let sups = two_healthy(&mut f);
    let ids = f.ids();
    let mutations = f.api.mutations();
    // The webapp goes down: nobody records heartbeats, /healthcheck answers 500.
    webapp_health(&f, 500, "ERROR");
    for s in &sups {
        s.set(false);
    }
    // A run waits meanwhile: its queue is unserved, but the webapp is the one failure named.
    crate::support::webapp::pending_run(&mut f.db(), "stuck", Duration::from_secs(600));
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..10 {
        let run = f.run(&["run", "health"]);
        run.expect_code(1)
            .expect_stdout("the webapp is the likely cause, not the supervisors: the webapp is down or unreachable (GET ")
            .expect_stdout("/healthcheck answered HTTP 500 (the body is not shown))")
            .expect_stdout("held, not counted")
            .expect_stdout("while the webapp is down: orphaned queue: 1 run(s) wait in queue ops-test-queue");
        assert!(!run.stdout.contains("unhealthy ("), "{}", run.stdout);
    }
    assert_eq!(
        f.api.mutations(),
        mutations,
        "no DigitalOcean mutation while the webapp is down"
    );
    let doc = f.run(&["status", "--json"]).json();
    for d in doc["supervisor"]["droplets"].as_array().unwrap() {
        assert_eq!(
            (d["health"].as_str(), d["fails"].as_u64()),
            (Some("held"), Some(0)),
            "{d}"
        );
    }
    // It answers again but still records nothing (a bad deploy, say): every supervisor silent
    // at once is still the webapp.
    webapp_health(&f, 200, "OK");
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("all 2 supervisors went silent at once");
    assert_eq!(f.api.mutations(), mutations);
    // It is back: the same droplets are healthy.
    for s in &sups {
        s.set(true);
    }
    std::thread::sleep(Duration::from_millis(300));
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat");
    assert_eq!(f.ids(), ids);
    assert_eq!(f.api.mutations(), mutations);
}

#[test]
fn an_isolated_silent_supervisor_gets_its_replacement_at_the_first_failing_check() {
    let mut f = fleet("boot_grace: 10m, stale_after: 1s, unhealthy_after: 3");
    let sups = two_healthy(&mut f);
    let ids = f.ids();
    let creates = f.api.with(|w| w.creates.len());
    sups[0].set(false);
    std::thread::sleep(Duration::from_millis(1500));
    let run = f.run(&["run", "health"]);
    run.expect_code(1)
        .expect_stdout("unhealthy (1/3 before it is replaced; its replacement starts now")
        .expect_stdout("created droplet");
    assert!(!run.stdout.contains("likely cause"), "{}", run.stdout);
    assert_eq!(
        f.api.with(|w| w.creates.len()),
        creates + 1,
        "created at the first failing check"
    );
    assert!(
        f.api.with(|w| w.deletes.is_empty()),
        "nothing deleted before the replacement is healthy"
    );
    // The replacement heartbeats: the silent one goes, nothing else.
    let new = *f.ids().iter().find(|id| !ids.contains(id)).unwrap();
    let _new = f.serve(new, true);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("its replacement is healthy");
    assert_eq!(
        f.api
            .with(|w| w.deletes.iter().map(|d| d.0).collect::<Vec<_>>()),
        [ids[0]]
    );
    let mut left = f.ids();
    left.sort_unstable();
    let mut want = vec![ids[1], new];
    want.sort_unstable();
    assert_eq!(left, want);
}

#[test]
fn a_blip_costs_at_most_a_short_lived_droplet_never_a_healthy_one() {
    let mut f = fleet("boot_grace: 10m, stale_after: 1s, unhealthy_after: 3");
    let sups = two_healthy(&mut f);
    let ids = f.ids();
    sups[1].set(false);
    std::thread::sleep(Duration::from_millis(1500));
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("created droplet");
    // It comes back before its replacement boots: the replacement goes.
    sups[1].set(true);
    std::thread::sleep(Duration::from_millis(300));
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("more than SUPERVISOR_COUNT=2 droplets");
    let deleted: Vec<u64> = f.api.with(|w| w.deletes.iter().map(|d| d.0).collect());
    assert_eq!(deleted.len(), 1);
    assert!(!ids.contains(&deleted[0]), "a healthy droplet was deleted");
    let mut left = f.ids();
    left.sort_unstable();
    assert_eq!(left, ids);
}
