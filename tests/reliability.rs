//! Crash safety, secret hygiene, the cross-host lock and the bad-input corpus.

use std::time::Duration;

use crate::support::pg::{self, Cluster};
use crate::support::{exec_profile, finish, wait_for, Ops};

#[test]
fn two_hosts_with_the_postgres_lock_never_run_a_profile_at_once() {
    if !pg::available() {
        return;
    }
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let shared = tempfile::tempdir().unwrap();
    let started = shared.path().join("started");
    let script = format!("touch {}; sleep 2; echo host-done", started.display());
    let jobs = exec_profile("p", &["sh", "-c", &script], "")
        .replace("version: 1\n", "version: 1\nlock: postgres\n");
    let mut a = Ops::new();
    let mut b = Ops::new();
    for ops in [&mut a, &mut b] {
        ops.env("DATABASE_URL", &cluster.url(&db));
        ops.jobs(&jobs);
    }
    let first = a.spawn(&["run", "p"]);
    wait_for(&started, Duration::from_secs(10));
    let second = b.run(&["run", "p"]);
    second
        .expect_code(0)
        .expect_stdout("another host is running p");
    let first = finish(first.wait_with_output().unwrap(), Duration::ZERO);
    first.expect_code(0).expect_stdout("host-done");
    // Once released, the other host runs.
    std::fs::remove_file(&started).unwrap();
    b.run(&["run", "p"])
        .expect_code(0)
        .expect_stdout("host-done");
}

#[test]
fn the_postgres_lock_unreachable_fails_instead_of_acting_alone() {
    let mut ops = Ops::new();
    let marker = ops.path("acted");
    ops.env("OPS_LOCK", "postgres");
    ops.env(
        "DATABASE_URL",
        "postgresql://ops:lock-secret-pw@127.0.0.1:9/x?sslmode=disable",
    );
    ops.jobs(&exec_profile("p", &["touch", marker.to_str().unwrap()], ""));
    let run = ops.run(&["run", "p"]);
    run.expect_code(1).expect_stderr("cross-host lock");
    assert!(!marker.exists());
    assert!(!run.all().contains("lock-secret-pw"));
}

/// Every file in tests/corpus/bad-jobs: exit 2, one line naming the file, the expected words,
/// no panic, for every command that reads the config.
#[test]
fn bad_jobs_corpus_exits_2_with_one_clear_line() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad-jobs");
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap();
        let ops = Ops::new();
        std::fs::copy(&path, ops.path("jobs.yaml")).unwrap();
        for args in [
            &["run", "p"][..],
            &["list"],
            &["check"],
            &["render-crontab"],
            &["run", "p", "--dry-run"],
        ] {
            let run = ops.run(args);
            let name = path.file_name().unwrap().to_string_lossy();
            assert_eq!(
                run.code,
                2,
                "{name} {args:?}: exit {}\n{}",
                run.code,
                run.all()
            );
            let line = run.stderr.trim();
            assert_eq!(line.lines().count(), 1, "{name}: not one line:\n{line}");
            assert!(
                line.contains("jobs.yaml") && line.contains(expect.trim()),
                "{name}: {line:?} lacks {:?}",
                expect.trim()
            );
            assert!(run.stdout.is_empty(), "{name}: stdout {}", run.stdout);
        }
        count += 1;
    }
    assert!(count >= 40, "only {count} corpus files");
}

#[test]
fn bad_env_values_exit_2_naming_the_variable() {
    let cases = [
        ("IS_ACTIVE", "yes please"),
        ("IS_ACTIVE", "2"),
        ("AUTO_DISABLE", "sometimes"),
        ("HEALTHY_CYCLES_BEFORE_DISABLE", "0"),
        ("HEALTHY_CYCLES_BEFORE_DISABLE", "101"),
        ("HEALTHY_CYCLES_BEFORE_DISABLE", "-3"),
        ("HEALTHY_CYCLES_BEFORE_DISABLE", "three"),
        ("SUPERVISOR_COUNT", "0"),
        ("SUPERVISOR_COUNT", "21"),
        ("SUPERVISOR_COUNT", "1.5"),
        ("RAILWAY_API_URL", "backboard.railway.com"),
        ("DIGITALOCEAN_API_URL", "ftp://api"),
        ("TELEGRAM_API_URL", "telegram"),
        ("TRIGGER_WORKER_TOKEN", "not-a-token"),
        ("TRIGGER_WORKER_TOKEN", "tr_wgt_has-dash"),
        ("OPS_LOCK", "redis"),
    ];
    for (key, value) in cases {
        let mut ops = Ops::new();
        ops.env(key, value);
        ops.jobs(&exec_profile("p", &["true"], ""));
        let run = ops.run(&["run", "p"]);
        assert_eq!(run.code, 2, "{key}={value}: {}", run.all());
        assert!(run.stderr.contains(key), "{key}={value}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1);
    }
    // Both Railway tokens at once, and a broken env file line.
    let mut ops = Ops::new();
    ops.env("RAILWAY_API_TOKEN", "aaaaaaaaaa")
        .env("RAILWAY_TOKEN", "bbbbbbbbbb");
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.run(&["run", "p"])
        .expect_code(2)
        .expect_stderr("both set");
    let ops = Ops::new();
    ops.env_file("GOOD=1\nthis line is wrong\n");
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.run(&["run", "p"])
        .expect_code(2)
        .expect_stderr("ops.env:2:");
}

/// Every byte ops writes, across scenarios that touch every secret, holds none of them.
#[test]
fn secret_hygiene_across_every_output() {
    use crate::extract::{LOG_TOKEN, REGISTRY_PASSWORD, SECRET};
    use crate::support::digitalocean::DO_TOKEN;
    use crate::support::fake::{loopback, FakeServer, Reply, Seen};
    use crate::support::railway::RAILWAY_TOKEN;
    use std::sync::{Arc, Mutex};

    if !pg::available() {
        return;
    }
    const DB_PASSWORD: &str = "db-password-planted-4711";
    const TELEGRAM: &str = "987654:telegram-planted-secret";
    let captured = Arc::new(Mutex::new(Vec::<String>::new()));
    let c = Arc::clone(&captured);
    let sink = FakeServer::start(
        loopback(),
        Box::new(move |req: &Seen| {
            c.lock()
                .unwrap()
                .push(format!("{} {}\n{}", req.method, req.path, req.body));
            Reply::json(200, serde_json::json!({"ok": true}))
        }),
    );

    let mut f = crate::supervisor::fleet("boot_grace: 1ms, unhealthy_after: 1");
    let cluster = Cluster::shared();
    let db = cluster.create_db();
    let db_url = format!(
        "postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
        cluster.port
    );
    f.s.ops
        .env("DATABASE_URL", &db_url)
        .env("TELEGRAM_BOT_TOKEN", TELEGRAM)
        .env("TELEGRAM_CHAT_ID", "-1001")
        .env("TELEGRAM_API_URL", &sink.url())
        .env("OPS_WEBHOOK_URL", &format!("{}/hook", sink.url()))
        .env("LOG_LEVEL", "debug");
    f.s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  hourly:\n    cron: '0 * * * *'\n    tasks:\n      - {{kind: extract, refresh: 1ms}}\n      - replication\n      - {{kind: supervisor, health_port: {}, boot_grace: 1ms, unhealthy_after: 1}}\n",
        f.port
    ));
    let mut out = String::new();
    let mut record = |r: crate::support::Run| out.push_str(&r.all());
    // A healthy-ish cycle, failures with alerts, error paths with secrets in URLs.
    record(f.run(&["run", "hourly"]));
    record(f.run(&["run", "hourly", "--json"]));
    record(f.run(&["run", "hourly", "--dry-run"]));
    let mut rejected = f.s.ops.command(&["run", "hourly"]);
    rejected
        .env("DIGITALOCEAN_TOKEN", "dop_v1_wrong0000")
        .env("RAILWAY_API_TOKEN", "railway-wrong-token-x");
    record(finish(rejected.output().unwrap(), Duration::ZERO));
    let mut broken = f.s.ops.command(&["run", "hourly"]);
    broken
        .env(
            "DATABASE_URL",
            format!("postgresql://postgres:{DB_PASSWORD}@127.0.0.1:9/{db}?sslmode=require"),
        )
        .env("TELEGRAM_API_URL", "http://127.0.0.1:9")
        .env("DIGITALOCEAN_API_URL", "http://127.0.0.1:9");
    record(finish(broken.output().unwrap(), Duration::ZERO));
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["history", "--json"],
        &["history"],
        &["render-cloud-init"],
        &["check"],
        &["doctor"],
        &["list"],
    ] {
        record(f.run(args));
    }
    // The read-only API.
    let port = crate::support::digitalocean::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child =
        f.s.ops
            .command(&["serve", "--listen", &addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in [
        "/v1/runs?limit=1000",
        "/v1/alerts",
        "/v1/status",
        "/metrics",
        "/healthz",
    ] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
        s.read_to_string(&mut out).unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    out.push('\n');
    out.push_str(&captured.lock().unwrap().join("\n"));
    for entry in std::fs::read_dir(f.s.ops.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "secret.key" {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        out.contains("sendMessage") && out.contains("\"text\""),
        "no alert was captured"
    );
    assert!(out.contains("#cloud-config"));
    // The planted Telegram token is part of the URL the fake saw (that is the API); the fake's
    // own capture of the request line is excluded from the check by construction: it is the
    // request path, not something ops wrote out.
    let written: String = out
        .lines()
        .filter(|l| !l.starts_with("POST /bot"))
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        DO_TOKEN,
        RAILWAY_TOKEN,
        LOG_TOKEN,
        SECRET,
        DB_PASSWORD,
        TELEGRAM,
        REGISTRY_PASSWORD,
        "dop_v1_wrong0000",
        "railway-wrong-token-x",
    ] {
        if let Some(pos) = written.find(secret) {
            panic!(
                "secret {secret} leaked: ...{}...",
                &written[pos.saturating_sub(300)..(pos + 100).min(written.len())]
            );
        }
    }
}
