//! Benchmarks of whole runs against loopback fakes and a real Postgres. Not tests: they are
//! `#[ignore]`d and run by `scripts/bench.sh` (release build), which turns the `BENCH|` lines
//! into docs/performance.md. `OPS_BENCH_RUNS` sets the iterations (default 30).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::extract::LOG_TOKEN;
use crate::support::digitalocean::Supervisor;
use crate::support::pg::{self, Cluster};
use crate::support::webapp::{self, Webapp};

fn iterations() -> usize {
    std::env::var("OPS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn format_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Peak RSS in KiB of one run of `cmd`, from `/usr/bin/time -v`.
fn peak_rss(cmd: Command) -> Option<u64> {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(program).args(args);
    timed.env_clear();
    for (k, v) in envs {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = timed.output().ok()?;
    String::from_utf8_lossy(&out.stderr).lines().find_map(|l| {
        l.trim()
            .strip_prefix("Maximum resident set size (kbytes): ")?
            .parse()
            .ok()
    })
}

#[test]
#[ignore = "benchmark: run by scripts/bench.sh"]
fn bench_healthy_cycle() {
    assert!(pg::available(), "the benchmark needs PostgreSQL");
    let n = iterations();
    let cluster = Cluster::start(&[
        "wal_level = logical",
        "shared_preload_libraries = 'pg_stat_statements'",
        "pg_stat_statements.track = 'all'",
    ]);
    let db = cluster.create_db();
    webapp::install(&mut cluster.client(&db), LOG_TOKEN);
    let webapp = Webapp {
        url: cluster.url(&db),
        token: LOG_TOKEN.into(),
    };
    cluster
        .client("postgres")
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .unwrap();
    let (mut s, api, port) = crate::supervisor::cloud(&cluster.url(&db));
    s.ops.env("LOG_LEVEL", "warn");
    s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  hourly:\n    cron: '0 * * * *'\n    tasks:\n      - extract\n      - replication\n      - {{kind: supervisor, health_port: {port}}}\n  health:\n    cron: '* * * * *'\n    tasks:\n      - {{kind: supervisor, health_port: {port}}}\n"
    ));
    // Reach the steady state: record extracted, database fixed, one healthy droplet, firewall known.
    s.ops.run(&["run", "hourly"]).expect_code(0);
    let (ip, name) = api.with(|w| (w.droplets[0].ip.clone(), w.droplets[0].name.clone()));
    let sup = Supervisor::serve(&ip, port, true).beating(&webapp, &name);
    s.ops.run(&["run", "hourly"]).expect_code(0);
    s.ops
        .run(&["run", "hourly"])
        .expect_code(0)
        .expect_stdout("DigitalOcean requests: 1, Postgres sessions: 1, health checks: 0");

    let mut admin = cluster.client("postgres");
    let oid: u32 = admin
        .query_one("SELECT oid FROM pg_database WHERE datname = $1", &[&db])
        .unwrap()
        .get(0);
    let sessions = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .unwrap()
        .get(0)
    };
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    let sessions_before = sessions(&mut admin);
    s.railway.clear();
    s.webapp.server.clear();
    api.server.clear();
    let health_before = sup.hits();

    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let out = s.ops.command(&["run", "hourly"]).output().unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    std::thread::sleep(Duration::from_millis(600)); // pg_stat_database is updated asynchronously
    let per = |x: usize| x as f64 / n as f64;
    let railway = per(s.railway.server.requests().len());
    let webapp = per(s.webapp.server.requests().len());
    let digitalocean = per(api.server.requests().len());
    let health = per(sup.hits() - health_before);
    let pg_sessions = (sessions(&mut admin) - sessions_before) as f64 / n as f64;
    let statements: Vec<(String, i64)> = admin
        .query(
            "SELECT query, calls FROM pg_stat_statements WHERE dbid = $1 ORDER BY calls DESC",
            &[&oid],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let pg_statements = statements.iter().map(|(_, c)| *c).sum::<i64>() as f64 / n as f64;
    let (median, min, max) = stats(times);
    println!("BENCH|cycle|healthy `hourly` cycle (extract + replication + supervisor), {n} runs|{median:.1}|{min:.1}|{max:.1}");
    println!("BENCH|requests|Railway API|{railway:.2}");
    println!("BENCH|requests|DigitalOcean API|{digitalocean:.2}");
    println!("BENCH|requests|supervisor health GET|{health:.2}");
    println!("BENCH|requests|webapp /healthcheck GET|{webapp:.2}");
    println!("BENCH|requests|Postgres sessions|{pg_sessions:.2}");
    println!("BENCH|requests|Postgres statements (pg_stat_statements)|{pg_statements:.2}");
    for (q, c) in &statements {
        println!(
            "BENCH|statement|{}|{}",
            q.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(90)
                .collect::<String>(),
            c
        );
    }
    // The every-minute `health` profile (supervisor only): what issue 12 promises.
    let sessions_before = sessions(&mut admin);
    api.server.clear();
    s.webapp.server.clear();
    s.railway.clear();
    let health_before = sup.hits();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        s.ops.run(&["run", "health"]).expect_code(0);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    std::thread::sleep(Duration::from_millis(600));
    let (median, min, max) = stats(times);
    println!("BENCH|cycle|healthy `health` cycle (supervisor only), {n} runs|{median:.1}|{min:.1}|{max:.1}");
    println!(
        "BENCH|requests|`health`: DigitalOcean API|{:.2}",
        per(api.server.requests().len())
    );
    println!(
        "BENCH|requests|`health`: Postgres sessions|{:.2}",
        (sessions(&mut admin) - sessions_before) as f64 / n as f64
    );
    println!(
        "BENCH|requests|`health`: supervisor health GET|{:.2}",
        per(sup.hits() - health_before)
    );
    println!(
        "BENCH|requests|`health`: Railway API + webapp HTTP|{:.2}",
        per(s.railway.server.requests().len() + s.webapp.server.requests().len())
    );

    let health_at_zero = median;

    // The same `health` cycle with 1,000,000 runs in "TaskRun" (30 days of history, as the
    // webapp appends them): the queue read goes through the BRIN index and the primary key.
    // (`bench.sh --quick`, in CI, uses 100,000: the 1,000,000-run test is in the suite.)
    let history: u64 = std::env::var("OPS_BENCH_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    webapp::history(&mut cluster.client(&db), history, 30);
    webapp::pending_run(
        &mut cluster.client(&db),
        "bench-waiting",
        Duration::from_secs(30),
    );
    s.ops.run(&["run", "health"]).expect_code(0); // the first read after the insert
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        s.ops
            .run(&["run", "health"])
            .expect_code(0)
            .expect_stdout("1 PENDING");
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let (median, min, max) = stats(times);
    let rows = format_thousands(history);
    println!("BENCH|cycle|healthy `health` cycle, {rows} runs in \"TaskRun\", {n} runs|{median:.1}|{min:.1}|{max:.1}");
    println!(
        "BENCH|ratio|`health` median at {rows} runs ÷ at 0|{:.2}",
        median / health_at_zero
    );
    let queue_buffers = |admin: &mut postgres::Client| -> (f64, f64, f64) {
        let r = admin
            .query_one(
                "SELECT COALESCE(sum(calls), 0)::float8, COALESCE(sum(shared_blks_hit + shared_blks_read), 0)::float8, COALESCE(sum(total_exec_time), 0)::float8
                   FROM pg_stat_statements WHERE dbid = $1 AND query LIKE 'WITH seen AS%'",
                &[&oid],
            )
            .unwrap();
        let calls: f64 = r.get(0);
        (
            calls,
            r.get::<_, f64>(1) / calls.max(1.0),
            r.get::<_, f64>(2) / calls.max(1.0),
        )
    };
    let (calls, blocks, ms) = queue_buffers(&mut admin);
    println!("BENCH|buffers|waiting-runs read since the last check (every cycle), {calls:.0} calls|{blocks:.0}|{ms:.2}");
    // The whole-window read (the first run, then hourly): a day of runs through the BRIN index.
    admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    for _ in 0..5 {
        s.ops
            .sqlite()
            .execute(
                "DELETE FROM kv WHERE namespace = 'supervisor' AND key = 'queue_scan'",
                [],
            )
            .unwrap();
        s.ops.run(&["run", "health"]).expect_code(0);
    }
    let (calls, blocks, ms) = queue_buffers(&mut admin);
    println!("BENCH|buffers|waiting-runs read over the whole 24h window (first run, then hourly), {calls:.0} calls|{blocks:.0}|{ms:.2}");
    // What the same question costs without the time bound: every block of the table.
    let mut probe = cluster.client(&db);
    let plan: Vec<String> = probe
        .query(
            r#"EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM "TaskRun" WHERE status = 'PENDING' AND "masterQueue" = ANY('{ops-test-queue}')"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let blocks: u64 = plan
        .iter()
        .filter_map(|l| l.trim().strip_prefix("Buffers: shared "))
        .next()
        .map(|b| {
            b.split_whitespace()
                .filter_map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0);
    let time = plan
        .iter()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
        .unwrap_or(0.0);
    println!("BENCH|buffers|the same question by status and queue alone (sequential scan; what ops no longer asks)|{blocks}|{time:.2}");

    if let Some(kib) = peak_rss(s.ops.command(&["run", "hourly"])) {
        println!("BENCH|rss|`ops run hourly` (healthy cycle)|{kib}");
    }
    if let Some(kib) = peak_rss(s.ops.command(&["list"])) {
        println!("BENCH|rss|`ops list`|{kib}");
    }

    // Scaling: 1,000 droplets carrying the deployment tag (5 pages of 200).
    for i in 0..999 {
        api.insert(
            &format!("other-{i}"),
            &["trigger-supervisor-envabcde"],
            Duration::from_secs(3600),
        );
    }
    api.server.clear();
    let mut times = Vec::new();
    for _ in 0..n.min(10) {
        let t0 = Instant::now();
        s.ops.run(&["run", "hourly"]).expect_code(0);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let lists = api
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/droplets?"))
        .count() as f64
        / times.len() as f64;
    let (median, min, max) = stats(times);
    println!("BENCH|cycle|`hourly` cycle with 1,000 tagged droplets (5 pages)|{median:.1}|{min:.1}|{max:.1}");
    println!("BENCH|requests|DigitalOcean list requests with 1,000 droplets|{lists:.2}");

    // Scaling: a jobs.yaml with 200 profiles.
    let mut yaml = String::from("version: 1\nprofiles:\n");
    for i in 0..200 {
        yaml.push_str(&format!("  p{i}:\n    cron: '{} */2 * * 1-5'\n    description: profile {i}\n    tasks:\n      - {{kind: exec, command: ['true']}}\n      - supervisor\n", i % 60));
    }
    s.ops.jobs(&yaml);
    let mut times = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        s.ops.run(&["list"]).expect_code(0);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let (median, min, max) = stats(times);
    println!("BENCH|cycle|`ops list` with 200 profiles|{median:.1}|{min:.1}|{max:.1}");

    // `ops simulate --days 7` on a week of as many runs as the history (issue 35: under 10 s
    // at 1,000,000), 2 minutes each, as the simulate test builds it.
    let week = cluster.create_db();
    let mut c = cluster.client(&week);
    webapp::install(&mut c, LOG_TOKEN);
    webapp::limits(&mut c, 50, None, false);
    crate::simulate::runs(
        &mut c,
        history as i64,
        &format!(
            "make_interval(secs => 604000 * (1 - i::float8 / {history})) - interval '1 minute'"
        ),
        120.0,
    );
    let week = Webapp {
        url: cluster.url(&week),
        token: LOG_TOKEN.into(),
    };
    let ops = crate::simulate::operator(&week, &api);
    let mut times = Vec::new();
    for _ in 0..n.min(5) {
        let t0 = Instant::now();
        ops.run(&["simulate", "--days", "7", "--json"])
            .expect_code(0);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let (median, min, max) = stats(times);
    println!("BENCH|cycle|`ops simulate --days 7` on a week of {rows} runs|{median:.1}|{min:.1}|{max:.1}");
}
