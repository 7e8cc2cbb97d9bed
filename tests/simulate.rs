//! `ops simulate` (issue 35): the operator's own week of runs, read once from Trigger.dev's
//! production schema in a real PostgreSQL, replayed through their supervisor settings.

use std::time::Instant;

use crate::extract::LOG_TOKEN;
use crate::supervisor::webapp_db;
use crate::support::digitalocean::{FakeDo, DO_TOKEN};
use crate::support::webapp::{self, Webapp, QUEUE};
use crate::support::Ops;

const JOBS: &str = "version: 1\nprofiles:\n  health:\n    cron: '* * * * *'\n    tasks:\n      - {kind: supervisor, min: 0, max: 13, bake: true}\n";

pub fn operator(db: &Webapp, api: &FakeDo) -> Ops {
    let mut ops = Ops::new();
    ops.jobs(JOBS);
    ops.env("DATABASE_URL", &db.url)
        .env("TRIGGER_WORKER_TOKEN", LOG_TOKEN)
        .env("DIGITALOCEAN_TOKEN", DO_TOKEN)
        .env("DIGITALOCEAN_API_URL", &api.server.url());
    ops
}

/// `n` runs of our queue in environment `env1`, the i-th created `at(i)` (SQL over `i`, an
/// interval back from the start of the current minute), each `secs` long once started.
pub fn runs(c: &mut postgres::Client, n: i64, at: &str, secs: f64) {
    c.execute(
        &format!(
            r#"INSERT INTO "TaskRun" (id, "friendlyId", status, "masterQueue", "createdAt", "queuedAt",
                 "startedAt", "completedAt", "updatedAt", "machinePreset", payload,
                 "runtimeEnvironmentId", "projectId", "taskIdentifier", "spanId", "traceId", queue, engine)
               SELECT 's' || i, 'run_s' || i, 'COMPLETED_SUCCESSFULLY', $2, t, t, t + interval '1 second',
                      t + interval '1 second' + make_interval(secs => $3), t, 'small-1x', '{{}}',
                      'env1', 'p1', 'task', md5(i::text), md5((i * 7)::text), 'task/task', 'V2'
                 FROM generate_series(0, $1::bigint - 1) AS i,
                 LATERAL (SELECT date_trunc('minute', timezone('UTC', now())) - ({at}) AS t) AS x"#
        ),
        &[&n, &QUEUE, &secs],
    )
    .unwrap();
    c.batch_execute(r#"VACUUM ANALYZE "TaskRun""#).unwrap();
    webapp::settle_statistics(c);
}

fn seq_scans(c: &mut postgres::Client) -> i64 {
    c.query_one(
        r#"SELECT seq_scan FROM pg_stat_user_tables WHERE relid = '"TaskRun"'::regclass"#,
        &[],
    )
    .unwrap()
    .get(0)
}

/// The webapp's database (one environment of limit 50), a fake DigitalOcean, a client.
fn a_webapp_of_limit_50() -> (Webapp, FakeDo, postgres::Client) {
    let db = webapp_db();
    let api = FakeDo::start();
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    webapp::limits(&mut c, 50, None, false);
    (db, api, c)
}

#[test]
fn a_week_of_a_million_runs_is_replayed_through_the_created_at_index_without_a_sequential_scan() {
    let (db, api, mut c) = a_webapp_of_limit_50();
    // 1,000,000 runs evenly over the last week, 2 minutes each.
    runs(
        &mut c,
        1_000_000,
        "make_interval(secs => 604000 * (1 - i::float8 / 1000000)) - interval '1 minute'",
        120.0,
    );
    // The statement ops runs, planned as ops runs it (its read-only transaction's settings).
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET LOCAL statement_timeout = 60000; SET LOCAL enable_seqscan = off")
        .unwrap();
    let queues = vec![QUEUE.to_string(), format!("{QUEUE}:scheduled")];
    let plan: Vec<String> = tx
        .query(
            &format!("EXPLAIN {}", trigger_ops::clients::webapp_db::ARRIVALS_SQL),
            &[&7i32, &queues],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.rollback().unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Bitmap Index Scan on \"TaskRun_createdAt_idx\""),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan on \"TaskRun\""), "{plan}");
    let before = seq_scans(&mut c);
    let ops = operator(&db, &api);
    let t0 = Instant::now();
    let run = ops.run(&["simulate", "--days", "7", "--json"]);
    let took = t0.elapsed();
    run.expect_code(0);
    eprintln!(
        "ops simulate --days 7 on 1,000,000 runs: {:.2} s",
        took.as_secs_f64()
    );
    webapp::settle_statistics(&mut c);
    assert_eq!(seq_scans(&mut c), before, "ops scanned \"TaskRun\" whole");
    let doc = run.json();
    assert_eq!(doc["runs"], 1_000_000, "{doc}");
    assert_eq!(doc["env_limit"], 50);
    assert_eq!(
        doc["scope"],
        "worker group ops-test-group (queue ops-test-queue)"
    );
    let settings = doc["settings"].as_array().unwrap();
    assert_eq!(settings[0]["label"], "yours");
    assert_eq!(settings.len(), 5, "{doc}");
    for s in settings {
        assert_eq!(s["runs_killed_by_ops"], 0, "{s}");
    }
    // 100 runs a minute of 2 minutes each: 200 at once, held to the limit of 50.
    assert!(
        settings[0]["peak_droplets"].as_u64().unwrap() >= 13,
        "{doc}"
    );
    assert!(
        !run.all().contains(&db.url),
        "the database URL is never printed"
    );
}

/// The docs' loads in the database, replayed by the binary: the output is the docs' text.
#[test]
fn the_docs_scenarios_replayed_from_postgres_equal_the_docs() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/supervisor.md"))
        .unwrap();
    let api = FakeDo::start();
    // 10 minutes into the day's window: 200 runs of 3 minutes within one minute, and a
    // 2-minute run every 30 minutes for 8 hours.
    for (marker, n, at, secs) in [
        (
            "simulate-burst",
            200,
            "interval '1430 minutes' - make_interval(secs => i * 0.3)",
            180.0,
        ),
        (
            "simulate-night",
            16,
            "interval '1430 minutes' - make_interval(mins => i::int * 30)",
            120.0,
        ),
    ] {
        let db = webapp_db();
        let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
        webapp::limits(&mut c, 50, None, false);
        runs(&mut c, n, at, secs);
        let run = operator(&db, &api).run(&["simulate", "--days", "1"]);
        run.expect_code(0);
        let begin = format!("<!-- {marker}:begin -->\n```\n");
        let start = doc.find(&begin).expect("begin marker") + begin.len();
        let stop = doc.find(&format!("```\n<!-- {marker}:end -->")).unwrap();
        assert_eq!(run.stdout, doc[start..stop], "{marker}");
    }
}

/// The read groups by environment too (one pass, no second read of the window for the
/// environments' limits); ops adds a minute's environments up, and a run without a preset is
/// small-1x's, as Trigger.dev's default.
#[test]
fn a_minutes_runs_in_two_environments_are_one_minute_of_the_replay_under_both_limits() {
    let db = webapp_db();
    let mut c = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    webapp::limits(&mut c, 50, None, false);
    c.batch_execute(
        r#"INSERT INTO "RuntimeEnvironment" (id, slug, "apiKey", "pkApiKey", type, shortcode,
             "maximumConcurrencyLimit", "concurrencyLimitBurstFactor", "organizationId",
             "projectId", "updatedAt")
           VALUES ('env2', 'staging', 'tr_stg_x', 'pk_stg_x', 'STAGING', 'p2', 10, 2.00, 'org1',
             'p1', now())"#,
    )
    .unwrap();
    // Four runs created in one minute, ten minutes ago: 60 s in env1 and 30.5 s in env2 on
    // small-1x, one in env2 with no preset and no end yet, one on medium-1x.
    c.execute(
        r#"INSERT INTO "TaskRun" (id, "friendlyId", status, "masterQueue", "createdAt",
             "startedAt", "completedAt", "updatedAt", "machinePreset", payload,
             "runtimeEnvironmentId", "projectId", "taskIdentifier", "spanId", "traceId", queue)
           SELECT id, 'run_' || id, 'COMPLETED_SUCCESSFULLY', $1, t + make_interval(secs => at),
                  t + make_interval(secs => at), t + make_interval(secs => at + len), t, preset,
                  '{}', env, 'p1', 'task', md5(id), md5(id || 'x'), 'task/task'
             FROM (VALUES ('a', 'env1', 'small-1x', 1, 60.0), ('b', 'env2', 'small-1x', 20, 30.5),
                          ('c', 'env2', NULL, 40, NULL), ('d', 'env1', 'medium-1x', 50, 10.0))
                  AS v(id, env, preset, at, len),
                  LATERAL (SELECT date_trunc('minute', timezone('UTC', now())) - interval '10 minutes' AS t) AS x"#,
        &[&QUEUE],
    )
    .unwrap();
    let queues = vec![QUEUE.to_string(), format!("{QUEUE}:scheduled")];
    let read = trigger_ops::clients::webapp_db::arrivals(
        &mut c,
        1,
        &queues,
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let minute = read.now.div_euclid(60) - 10;
    let rows: Vec<_> = read
        .minutes
        .iter()
        .map(|m| (m.minute, m.preset.as_str(), m.runs, m.secs, m.timed))
        .collect();
    assert_eq!(
        rows,
        vec![
            (minute, "medium-1x", 1, 10.0, 1),
            (minute, "small-1x", 3, 90.5, 2)
        ]
    );
    assert_eq!(read.env_limit, Some(50 + 20), "both environments' limits");
}

#[test]
fn without_database_url_simulate_is_a_configuration_error_naming_the_fix() {
    let ops = Ops::new();
    ops.jobs(JOBS);
    ops.run(&["simulate"])
        .expect_code(2)
        .expect_stderr("DATABASE_URL is not set")
        .expect_stderr("set DATABASE_URL");
}

/// The worker group's name comes from the webapp's database: `ops simulate` escapes it in the
/// table and in `--json` (before, an ESC sequence or a newline in it reached the terminal).
#[test]
fn a_worker_group_named_with_control_characters_is_printed_escaped() {
    let (db, api, mut c) = a_webapp_of_limit_50();
    runs(
        &mut c,
        10,
        "i * interval '1 minute' + interval '1 minute'",
        60.0,
    );
    c.execute(
        r#"UPDATE "WorkerInstanceGroup" SET name = $1"#,
        &[&"evil\u{1b}[2J\u{202e}\nFAKE LINE"],
    )
    .unwrap();
    let ops = operator(&db, &api);
    for args in [
        &["simulate", "--days", "1"][..],
        &["simulate", "--days", "1", "--json"],
    ] {
        let run = ops.run(args);
        run.expect_code(0);
        assert!(
            !run.stdout.contains('\u{1b}') && !run.stdout.contains('\u{202e}'),
            "{:?}",
            run.stdout
        );
        assert!(
            !run.stdout.lines().any(|l| l.starts_with("FAKE LINE")),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("evil"), "{}", run.stdout);
    }
}
