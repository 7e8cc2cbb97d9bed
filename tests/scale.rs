//! Capacity follows load (issue 28): the fleet scales by the runs that can start now, on
//! Trigger.dev's production schema in a real PostgreSQL and a fake DigitalOcean.

use std::time::Duration;

use crate::supervisor::{fleet, Fleet};
use crate::support::digitalocean::Supervisor;
use crate::support::webapp;

fn waiting(f: &Fleet, n: usize) {
    let mut c = f.db();
    for i in 0..n {
        webapp::pending_run(&mut c, &format!("w{i}"), Duration::from_secs(90));
    }
}

fn serve_all(f: &Fleet, sups: &mut Vec<Supervisor>, served: &mut Vec<u64>) {
    for id in f.ids() {
        if !served.contains(&id) {
            sups.push(f.serve(id, true));
            served.push(id);
        }
    }
}

#[test]
fn thirty_runs_ready_to_start_bring_the_fleet_to_max_in_one_run() {
    let f = fleet("boot_grace: 10m, min: 1, max: 3");
    f.health().expect_code(0);
    assert_eq!(f.ids().len(), 1, "min: 1 with nothing waiting");
    let _sup = f.serve(f.ids()[0], true);
    f.health()
        .expect_code(0)
        .expect_stdout("fleet: 1 droplet(s) wanted (min 1, max 3)");
    waiting(&f, 30);
    f.health()
        .expect_code(0)
        .expect_stdout("scale out 1 → 3: 30 run(s) can start now, 0 executing, 4 per droplet");
    assert_eq!(f.ids().len(), 3, "two droplets created in one run");
    let status = f.run(&["status", "--json"]).json();
    assert_eq!(status["supervisor"]["scale"]["wanted"], 3);
    let (_child, addr) = crate::operator::Served::start(&f.s.ops);
    let (code, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ops_supervisor_droplets_wanted 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ops_supervisor_droplets_max 3"),
        "{metrics}"
    );
}

#[test]
fn runs_held_back_by_the_environment_limit_do_not_scale_out() {
    let f = fleet("boot_grace: 10m, min: 1, max: 3");
    f.health().expect_code(0);
    let a = f.ids()[0];
    let _sup = f.serve(a, true);
    f.health().expect_code(0);
    let name = f.api.with(|w| w.droplets[0].name.clone());
    let mut c = f.db();
    // The environment may run 2 at once, and 2 run: the 30 waiting ones cannot start.
    webapp::limits(&mut c, 2, None, false);
    webapp::executing_run(&mut c, "r1", &name, "small-1x");
    webapp::executing_run(&mut c, "r2", &name, "small-1x");
    waiting(&f, 30);
    f.health()
        .expect_code(0)
        .expect_stdout("0 run(s) can start now, 2 executing")
        .expect_stdout("30 more wait(s) behind a concurrency limit or a pause");
    assert_eq!(f.ids(), [a], "no scale out for runs a limit holds back");
}

#[test]
fn an_empty_queue_for_scale_in_after_brings_the_fleet_back_to_min_deleting_only_idle_droplets() {
    let f = fleet("boot_grace: 10m, min: 1, max: 3, scale_in_after: 1s");
    let (mut sups, mut served) = (Vec::new(), Vec::new());
    f.health().expect_code(0);
    serve_all(&f, &mut sups, &mut served);
    waiting(&f, 30);
    f.health().expect_code(0).expect_stdout("scale out 1 → 3");
    serve_all(&f, &mut sups, &mut served);
    f.health().expect_code(0);
    // The burst is over: the waiting runs were taken; one droplet still executes a run.
    let mut c = f.db();
    c.batch_execute(r#"UPDATE "TaskRun" SET status = 'COMPLETED_SUCCESSFULLY' WHERE id LIKE 'w%'"#)
        .unwrap();
    let busy = *f.ids().last().unwrap();
    let busy_name = f.api.with(|w| {
        w.droplets
            .iter()
            .find(|d| d.id == busy)
            .unwrap()
            .name
            .clone()
    });
    webapp::executing_run(&mut c, "long", &busy_name, "small-1x");
    for _ in 0..12 {
        if f.ids().len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1100));
        f.health().expect_code(0);
    }
    assert_eq!(
        f.ids(),
        [busy],
        "back to min: 1, and the busy droplet stays"
    );
    let deleted = f.deletes();
    assert_eq!(deleted.len(), 2);
    assert!(!deleted.contains(&busy));
    let drained = f
        .api
        .with(|w| w.actions.iter().filter(|(_, k)| k == "shutdown").count());
    assert_eq!(drained, 2, "each idle droplet drained before its delete");
}
