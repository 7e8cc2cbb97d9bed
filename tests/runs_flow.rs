//! Runs flow (issue 18): do triggered runs reach a live supervisor? Where deployed runs are
//! routed, which managed queues nobody serves, how long runs have waited since they were queued,
//! read without a sequential scan of a production-shaped `"TaskRun"`. A real PostgreSQL with
//! Trigger.dev's tables and every index on `"TaskRun"`; the fake webapp's admin API writes to the
//! same database as the real one does.

use std::time::Duration;

use crate::operator::{request, Served};
use crate::supervisor::{cloud, fleet, webapp_db, Fleet};
use crate::support::railway::{ADMIN_CREATED_TOKEN, ADMIN_TOKEN};
use crate::support::webapp::{self, Webapp, GROUP, QUEUE};

/// The group the admin API creates (ops' default `WORKER_GROUP_NAME`); its queue is its name.
const NEW_GROUP: &str = "ops-supervisor";

/// A deployment whose logs no longer hold a token: extract creates a worker group through the
/// admin API. The bootstrap group (`ops-test-group`, the global default) still exists, and its
/// old supervisor last heartbeated two hours ago.
fn admin_fleet(extract: &str, options: &str) -> Fleet {
    let db = webapp_db();
    let (mut s, api, port) = cloud(&db.url);
    s.railway.with(|w| {
        w.deployment_logs.clear();
        w.environment_logs.clear();
    });
    s.webapp.share_database(&db.url);
    s.ops
        .env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TRIGGER_VERSION", "v4.5.12");
    let f = Fleet {
        s,
        api,
        port,
        webapp: Webapp {
            url: db.url.clone(),
            token: ADMIN_CREATED_TOKEN.into(),
        },
    };
    let mut c = f.db();
    old_heartbeat(&mut c, GROUP, "old-droplet", 7200);
    f.s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  extract:\n    cron: '*/15 * * * *'\n    tasks: [{extract}]\n  health:\n    cron: '* * * * *'\n    timeout: 1m\n    tasks:\n      - {{kind: supervisor, health_port: {}, {options}}}\n",
        f.port
    ));
    f
}

/// A supervisor of `group` that last heartbeated `secs` ago.
fn old_heartbeat(c: &mut postgres::Client, group: &str, name: &str, secs: u64) {
    c.execute(
        r#"INSERT INTO "WorkerInstance" (id, name, "resourceIdentifier", "workerGroupId", "updatedAt", "lastHeartbeatAt")
           VALUES ($1, $1, $1, $2, now(), timezone('UTC', now()) - make_interval(secs => $3))"#,
        &[&name, &webapp::group_id(group), &(secs as f64)],
    )
    .unwrap();
}

fn default_flag(c: &mut postgres::Client) -> String {
    c.query_one(
        r#"SELECT value #>> '{}' FROM "FeatureFlag" WHERE key = 'defaultWorkerInstanceGroupId'"#,
        &[],
    )
    .unwrap()
    .get(0)
}

fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} missing:\n{metrics}"))
}

#[test]
fn a_group_made_through_the_admin_api_becomes_the_default_and_the_old_queue_is_reported() {
    let f = admin_fleet("extract", "boot_grace: 10m");
    // Runs that were waiting for the bootstrap group before ops took over.
    let mut c = f.db();
    for i in 0..3 {
        webapp::run_in(
            &mut c,
            &format!("old{i}"),
            QUEUE,
            "PENDING",
            Duration::from_secs(1200 - i * 60),
            Some(Duration::from_secs(1200 - i * 60)),
        );
    }
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("created worker group \"ops-supervisor\" through the admin API")
        .expect_stdout("made worker group \"ops-supervisor\" the global default")
        .expect_stdout("the previous default was \"ops-test-group\": runs already waiting in its queue stay there");
    assert_eq!(default_flag(&mut c), webapp::group_id(NEW_GROUP));
    assert_eq!(f.s.webapp.count("/admin/api/v1/feature-flags"), 1);
    // The fleet serves the new group, which now receives the runs; the old queue is orphaned.
    f.run(&["run", "health"]).expect_code(1);
    let _sup = f.serve(f.ids()[0], true);
    let run = f.run(&["run", "health"]);
    run.expect_code(1)
        .expect_stdout("runs go to worker group \"ops-supervisor\" (queue ops-supervisor, the global default): ours")
        // The ages are read a few runs after the runs were made: 20m and seconds on a busy host.
        .expect_stdout("orphaned queue: 3 run(s) wait in queue ops-test-queue (worker group \"ops-test-group\"), the oldest for 20m")
        .expect_stdout("and no supervisor serves it: its last heartbeat was 2h")
        .expect_stdout("healthy (last heartbeat");
    f.run(&["status"])
        .expect_stdout("runs go to: worker group ops-supervisor (queue ops-supervisor, the global default): ours")
        .expect_stdout("orphaned queue ops-test-queue (worker group ops-test-group): 3 PENDING, oldest waited 20m");
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(doc["routing"]["ours_receives"], true);
    let orphan = doc["queue"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == QUEUE)
        .unwrap()
        .clone();
    assert_eq!(
        (orphan["pending"].as_u64(), orphan["served"].as_bool()),
        (Some(3), Some(false))
    );
    let (_child, addr) = Served::start(&f.s.ops);
    let (_, metrics) = request(&addr, "GET", "/metrics");
    assert_eq!(
        metric(&metrics, "ops_queue_pending_runs{queue=\"ops-test-queue\"}"),
        3.0
    );
    assert!(
        metric(
            &metrics,
            "ops_queue_oldest_pending_seconds{queue=\"ops-test-queue\"}"
        ) >= 1200.0
    );
    assert_eq!(
        metric(&metrics, "ops_queue_served{queue=\"ops-test-queue\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ops_worker_group_receives_runs{worker_group=\"ops-supervisor\"}"
        ),
        1.0
    );
    // Someone starts a supervisor for the old group: the queue is served again.
    webapp::heartbeat(&mut c, crate::extract::LOG_TOKEN, "old-droplet").unwrap();
    let run = f.run(&["run", "health"]);
    run.expect_code(0).expect_stdout("served (last heartbeat");
    assert!(!run.stdout.contains("orphaned queue"), "{}", run.stdout);
}

#[test]
fn with_make_default_false_the_cycle_fails_saying_runs_go_elsewhere() {
    let f = admin_fleet("{kind: extract, make_default: false}", "boot_grace: 10m");
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("created worker group \"ops-supervisor\"")
        .expect_stdout("was not made the global default (make_default: false)");
    assert_eq!(f.s.webapp.count("/admin/api/v1/feature-flags"), 0);
    assert_eq!(default_flag(&mut f.db()), webapp::group_id(GROUP));
    f.run(&["run", "health"]).expect_code(1)
        .expect_stdout("runs go to worker group \"ops-test-group\" (queue ops-test-queue, the global default): not ours (ours is \"ops-supervisor\")")
        .expect_stdout("runs never reach these supervisors: they serve worker group \"ops-supervisor\" (queue ops-supervisor), but deployed runs go to \"ops-test-group\" (the global default) and no project routes to \"ops-supervisor\"")
        .expect_stdout("defaultWorkerInstanceGroupId\": \"ops-supervisor-group\"");
    // A project routed to our group is enough.
    webapp::project_default(&mut f.db(), "billing", &webapp::group_id(NEW_GROUP));
    let run = f.run(&["run", "health"]);
    run.expect_stdout("projects routed to ours by their own default: billing");
    assert!(!run.stdout.contains("runs never reach"), "{}", run.stdout);
}

#[test]
fn a_failed_make_default_keeps_the_token_and_is_retried_at_the_next_run() {
    let f = admin_fleet("{kind: extract, refresh: 1h}", "boot_grace: 10m");
    f.s.webapp.flag_faults.lock().unwrap().push_back(500);
    f.run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout(
            "created worker group \"ops-supervisor\" but could not make it the global default",
        )
        .expect_stdout("ops retries at the next run");
    assert_eq!(default_flag(&mut f.db()), webapp::group_id(GROUP));
    // The token was cached: the next run (fresh record, no Railway request) only retries.
    f.run(&["run", "extract", "--dry-run"])
        .expect_code(0)
        .expect_stdout("would make worker group \"ops-supervisor\" the global default");
    assert_eq!(default_flag(&mut f.db()), webapp::group_id(GROUP));
    f.run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("made worker group \"ops-supervisor\" the global default");
    assert_eq!(default_flag(&mut f.db()), webapp::group_id(NEW_GROUP));
    assert_eq!(
        f.s.webapp.count("/admin/api/v1/workers"),
        1,
        "one group, never two"
    );
    let again = f.run(&["run", "extract"]);
    again.expect_code(0);
    assert_eq!(
        f.s.webapp.count("/admin/api/v1/feature-flags"),
        2,
        "no retry once done"
    );
}

#[test]
fn a_token_from_the_logs_whose_group_is_not_the_default_is_reported_not_changed() {
    let mut f = fleet("boot_grace: 10m");
    let mut c = f.db();
    webapp::add_group(&mut c, "tr_wgt_SomebodyElse0123", "bootstrap-2", "queue-2");
    webapp::set_default(&mut c, &webapp::group_id("bootstrap-2"));
    webapp::project_default(&mut c, "legacy", &webapp::group_id("bootstrap-2"));
    f.s.ops.env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN);
    f.run(&["run", "extract", "--refresh"]).expect_code(0);
    f.run(&["run", "health"]).expect_code(1);
    let _sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("not ours (ours is \"ops-test-group\")")
        .expect_stdout("projects routed elsewhere by their own default: legacy → bootstrap-2")
        .expect_stdout("runs never reach these supervisors");
    // Routing is the operator's: never changed for a token ops did not create.
    assert_eq!(f.s.webapp.count("/admin/api/v1/feature-flags"), 0);
    assert_eq!(default_flag(&mut c), webapp::group_id("bootstrap-2"));
    f.run(&["status"])
        .expect_stdout(
            "runs go to: worker group bootstrap-2 (queue queue-2, the global default): not ours",
        )
        .expect_stdout("projects routed elsewhere: legacy → bootstrap-2")
        .expect_stdout("runs reach our supervisors: NO");
    let doc = f.run(&["status", "--json"]).json();
    assert_eq!(doc["routing"]["ours_receives"], false);
    assert_eq!(doc["routing"]["default_group"], "bootstrap-2");
    f.run(&["doctor"])
        .expect_stdout("✗ runs go to worker group \"bootstrap-2\"")
        .expect_stdout("runs never reach these supervisors");
}

#[test]
fn an_orphaned_queue_is_reported_with_its_count_and_oldest_wait_until_a_supervisor_serves_it() {
    let f = fleet("boot_grace: 10m");
    let mut c = f.db();
    webapp::add_group(&mut c, "tr_wgt_OtherGroup0123", "other", "other-q");
    old_heartbeat(&mut c, "other", "other-1", 7200);
    for (i, age) in [1200u64, 900, 60].iter().enumerate() {
        let age = Duration::from_secs(*age);
        webapp::run_in(
            &mut c,
            &format!("o{i}"),
            "other-q",
            "PENDING",
            age,
            Some(age),
        );
    }
    // Runs of other states and of an unmanaged group are not waiting for a supervisor.
    webapp::run_in(
        &mut c,
        "done",
        "other-q",
        "COMPLETED_SUCCESSFULLY",
        Duration::from_secs(1300),
        None,
    );
    webapp::run_in(
        &mut c,
        "exec",
        "other-q",
        "EXECUTING",
        Duration::from_secs(1300),
        None,
    );
    f.run(&["run", "health"]).expect_code(1);
    let _sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"])
        .expect_code(1)
        // The ages are read a few runs after the runs were made: 20m and seconds on a busy host.
        .expect_stdout("orphaned queue: 3 run(s) wait in queue other-q (worker group \"other\"), the oldest for 20m")
        .expect_stdout("and no supervisor serves it: its last heartbeat was 2h")
        .expect_stdout("worker group \"ops-test-group\" (queue ops-test-queue): no PENDING run");
    // Past the threshold only: with a longer one it is a line, not a failure.
    f.jobs("boot_grace: 10m, orphan_alert_after: 30m");
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("(alert after 30m)");
    f.jobs("boot_grace: 10m");
    webapp::heartbeat(&mut c, "tr_wgt_OtherGroup0123", "other-1").unwrap();
    let run = f.run(&["run", "health"]);
    run.expect_code(0)
        .expect_stdout("queue other-q (worker group \"other\"): 3 PENDING, oldest waits 20m")
        .expect_stdout("; served (last heartbeat");
    assert!(!run.stdout.contains("orphaned"), "{}", run.stdout);
}

#[test]
fn a_delayed_run_queued_seconds_ago_is_not_old_and_is_followed_while_delayed() {
    let f = fleet("boot_grace: 10m, queue_alert_after: 30m");
    let mut c = f.db();
    // Triggered three hours ago with a delay: DELAYED, not queued yet.
    webapp::run_in(
        &mut c,
        "delayed",
        QUEUE,
        "DELAYED",
        Duration::from_secs(3 * 3600),
        None,
    );
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("no PENDING run")
        .expect_stdout("(1 still waiting)");
    // The delay ends: the webapp queues it (queuedAt = now). Its createdAt is long before any
    // incremental read: it is followed by primary key.
    c.execute(
        r#"UPDATE "TaskRun" SET status = 'PENDING', "queuedAt" = timezone('UTC', now()) - interval '5 seconds' WHERE id = 'delayed'"#,
        &[],
    )
    .unwrap();
    let run = f.run(&["run", "health"]);
    run.expect_code(0)
        .expect_stdout("1 PENDING, oldest PENDING run waits for 5s");
    assert!(!run.stdout.contains("runs are waiting"), "{}", run.stdout);
    // A requeued run keeps its createdAt but waits from queuedAt too.
    c.execute(
        r#"UPDATE "TaskRun" SET "queuedAt" = timezone('UTC', now()) - interval '40 minutes' WHERE id = 'delayed'"#,
        &[],
    )
    .unwrap();
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("runs are waiting: the oldest PENDING run in queue ops-test-queue has waited 40m (alert after 30m)");
}

#[test]
fn a_run_that_waits_longer_than_the_scan_window_stays_in_view() {
    let f = fleet("boot_grace: 10m, queue_window: 2s, queue_alert_after: 3s");
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    webapp::pending_run(&mut f.db(), "stuck", Duration::from_secs(1));
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("1 PENDING");
    std::thread::sleep(Duration::from_millis(3500));
    // Its createdAt is now older than the 2 s window: only the remembered id finds it, and the
    // alert does not "recover" while it still waits.
    for _ in 0..2 {
        f.run(&["run", "health"]).expect_code(1).expect_stdout(
            "runs are waiting: the oldest PENDING run in queue ops-test-queue has waited",
        );
    }
    f.db()
        .execute(
            r#"UPDATE "TaskRun" SET status = 'DEQUEUED' WHERE id = 'stuck'"#,
            &[],
        )
        .unwrap();
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("no PENDING run")
        .expect_stdout("(0 still waiting)");
}

#[test]
fn the_queue_statement_timing_out_leaves_heartbeat_health_intact() {
    let f = fleet("boot_grace: 10m, queue_timeout: 300ms, orphan_alert_after: 1s");
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    // Another session holds a lock on "TaskRun" (a migration, say): the queue read waits, and
    // its own timeout ends it.
    let mut locker = f.db();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute(r#"LOCK TABLE "TaskRun" IN ACCESS EXCLUSIVE MODE"#)
        .unwrap();
    let run = f.run(&["run", "health"]);
    run.expect_code(0)
        .expect_stdout("healthy (last heartbeat")
        .expect_stdout("waiting runs: unknown this run (reading the waiting runs (\"TaskRun\"): canceling statement due to statement timeout");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    f.run(&["status"])
        .expect_stdout("waiting runs: unknown at the last check");
    tx.rollback().unwrap();
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("no PENDING run");
}

#[test]
fn a_prisma_style_database_url_works_and_its_schema_is_the_search_path() {
    let mut f = fleet("boot_grace: 10m");
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    let url = f.webapp.url.clone();
    let sep = if url.contains('?') { '&' } else { '?' };
    f.s.ops.env(
        "DATABASE_URL",
        &format!("{url}{sep}schema=public&connection_limit=5&pool_timeout=10&pgbouncer=true"),
    );
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("healthy (last heartbeat")
        .expect_stdout("the global default): ours");
    // The schema is where the tables are looked for.
    f.s.ops
        .env("DATABASE_URL", &format!("{url}{sep}schema=elsewhere"));
    f.run(&["run", "health"])
        .expect_code(1)
        .expect_stdout("no worker tables");
    f.s.ops.env(
        "DATABASE_URL",
        &format!("{url}{sep}schema=public&conection_limit=5"),
    );
    // The operator's input: a configuration error (exit 2), as `ops check` says it.
    f.run(&["run", "health"])
        .expect_code(2)
        .expect_stdout("unknown parameter \"conection_limit\"");
}

#[test]
fn a_dry_run_writes_nothing_and_lists_the_routing_action() {
    let f = admin_fleet("extract", "boot_grace: 10m");
    let before = default_flag(&mut f.db());
    let run = f.run(&["run", "extract", "--dry-run"]);
    run.expect_code(0)
        .expect_stdout("would create worker group \"ops-supervisor\"")
        .expect_stdout("would make worker group \"ops-supervisor\" the global default");
    assert_eq!(f.s.webapp.count("/admin/api/v1/workers"), 0);
    assert_eq!(f.s.webapp.count("/admin/api/v1/feature-flags"), 0);
    assert_eq!(default_flag(&mut f.db()), before);
    assert!(
        !f.s.ops.db().exists(),
        "a dry run created the state database"
    );
    let doc = f.run(&["run", "extract", "--dry-run", "--json"]).json();
    let actions = doc["tasks"][0]["actions"].to_string();
    assert!(actions.contains("the global default"), "{actions}");
}

/// `seq_scan`, `idx_scan` and heap blocks touched (hit + read) of `"TaskRun"`.
pub(crate) fn scans(c: &mut postgres::Client) -> (i64, i64, i64) {
    let row = c
        .query_one(
            r#"SELECT t.seq_scan, COALESCE(t.idx_scan, 0), COALESCE(io.heap_blks_hit + io.heap_blks_read, 0)
                 FROM pg_stat_user_tables t JOIN pg_statio_user_tables io USING (relid)
                WHERE t.relname = 'TaskRun'"#,
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The counters once the statistics of the finished ops sessions show (they are flushed when a
/// session ends).
fn scans_after(c: &mut postgres::Client, before: (i64, i64, i64)) -> (i64, i64, i64) {
    // A session's counters reach the shared statistics when it ends; allow a moment.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = scans(c);
        if now.1 > before.1 || std::time::Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_a_million_runs_a_healthy_cycle_adds_no_sequential_scan_of_taskrun() {
    // Scaling by load on: the runs on workers, the ready runs and their limits are read too.
    let f = fleet("boot_grace: 10m, min: 1, max: 3");
    let mut c = f.db();
    let t0 = std::time::Instant::now();
    webapp::history(&mut c, 1_000_000, 30);
    eprintln!("1,000,000 runs inserted in {:?}", t0.elapsed());
    webapp::pending_run(&mut c, "waiting", Duration::from_secs(30));
    // The table is big enough that a sequential scan is what the planner would pick for a
    // question on status and queue alone (no index covers them).
    let plan: String = c
        .query(
            r#"EXPLAIN SELECT id FROM "TaskRun" WHERE status = 'PENDING' AND "masterQueue" = 'ops-test-queue'"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("Seq Scan on \"TaskRun\""), "{plan}");
    let table_blocks: i64 = c
        .query_one(
            r#"SELECT relpages::bigint FROM pg_class WHERE relname = 'TaskRun'"#,
            &[],
        )
        .unwrap()
        .get(0);
    // The first cycle reads the whole window (a day of runs, a thirtieth of the table).
    let before = scans(&mut c);
    f.run(&["run", "health"])
        .expect_code(0)
        .expect_stdout("waiting runs read over the last 1d");
    let first = scans_after(&mut c, before);
    assert_eq!(first.0 - before.0, 0, "sequential scans of \"TaskRun\"");
    let window_blocks = first.2 - before.2;
    assert!(
        window_blocks < table_blocks / 10,
        "the whole-window read touched {window_blocks} of {table_blocks} blocks"
    );
    // The healthy cycles after it read only what is new, and the runs they follow.
    let _sup = f.serve(f.ids()[0], true);
    for _ in 0..2 {
        f.run(&["run", "health"])
            .expect_code(0)
            .expect_stdout("healthy (last heartbeat")
            .expect_stdout("1 PENDING, oldest PENDING run waits for")
            .expect_stdout("waiting runs read since the last check")
            .expect_stdout("fleet: 1 droplet(s) wanted (min 1, max 3): 1 run(s) can start now");
    }
    let per_cycle = two_cycles_read_little(&mut c, first, table_blocks);
    eprintln!(
        "TaskRun: {table_blocks} blocks; whole-window read {window_blocks}; healthy cycle {per_cycle}"
    );
}

/// Two healthy cycles since `first` (the counters then): no sequential scan of `"TaskRun"`, its
/// indexes used, and under 1,000 of its blocks a cycle. Returns the blocks a cycle touched.
#[track_caller]
pub(crate) fn two_cycles_read_little(
    c: &mut postgres::Client,
    first: (i64, i64, i64),
    table_blocks: i64,
) -> i64 {
    let after = scans_after(c, first);
    assert_eq!(after.0 - first.0, 0, "sequential scans of \"TaskRun\"");
    assert!(after.1 - first.1 >= 2, "index scans: {first:?} → {after:?}");
    let per_cycle = (after.2 - first.2) / 2;
    assert!(
        per_cycle < 1_000,
        "a healthy cycle touched {per_cycle} of {table_blocks} blocks of \"TaskRun\""
    );
    per_cycle
}

/// Heap blocks of `table` touched so far (hit + read), once finished sessions have reported.
fn blocks_of(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(
        "SELECT COALESCE(heap_blks_hit + heap_blks_read, 0) FROM pg_statio_user_tables WHERE relname = $1",
        &[&table],
    )
    .unwrap()
    .get(0)
}

#[test]
fn with_a_hundred_thousand_worker_instances_a_healthy_cycle_reads_a_handful_of_their_blocks() {
    let f = fleet("boot_grace: 10m");
    let mut c = f.db();
    // Supervisors started without a stable TRIGGER_WORKER_INSTANCE_NAME leave a row per start:
    // 100,000 old instances spread over twenty groups, ours included.
    for g in 0..19 {
        webapp::add_group(
            &mut c,
            &format!("tr_wgt_Other{g}"),
            &format!("other{g}"),
            &format!("oq{g}"),
        );
    }
    c.batch_execute(
        r#"INSERT INTO "WorkerInstance" (id, name, "resourceIdentifier", "workerGroupId", "updatedAt", "lastHeartbeatAt")
           SELECT 'old' || i, md5(i::text), md5(i::text),
                  CASE WHEN i % 20 = 0 THEN 'ops-test-group-group' ELSE 'other' || (i % 19) || '-group' END,
                  now(), timezone('UTC', now()) - make_interval(secs => 86400 + i)
             FROM generate_series(1, 100000) AS i"#,
    )
    .unwrap();
    c.batch_execute(r#"VACUUM ANALYZE "WorkerInstance""#)
        .unwrap();
    let table: i64 = c
        .query_one(
            r#"SELECT relpages::bigint FROM pg_class WHERE relname = 'WorkerInstance'"#,
            &[],
        )
        .unwrap()
        .get(0);
    f.run(&["run", "health"]).expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.run(&["run", "health"]).expect_code(0);
    // The earlier runs' counters reach the statistics when their sessions end, later on a loaded
    // machine, so the fewest blocks of two healthy cycles is a cycle's own cost (a scan of the
    // table would show in both).
    let mut touched = i64::MAX;
    for _ in 0..2 {
        let mut before = blocks_of(&mut c, "WorkerInstance");
        for _ in 0..30 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let now = blocks_of(&mut c, "WorkerInstance");
            let settled = now - before < 100;
            before = now;
            if settled {
                break;
            }
        }
        f.run(&["run", "health"])
            .expect_code(0)
            .expect_stdout("healthy (last heartbeat")
            .expect_stdout("the global default): ours");
        std::thread::sleep(std::time::Duration::from_millis(300));
        // (the test supervisor's own heartbeats, ten a second, are in the count too)
        touched = touched.min(blocks_of(&mut c, "WorkerInstance") - before);
    }
    assert!(
        touched < 300 && touched < table / 5,
        "a healthy cycle touched {touched} of {table} blocks of \"WorkerInstance\""
    );
    eprintln!("WorkerInstance: {table} blocks; a healthy cycle touched {touched}");
}
