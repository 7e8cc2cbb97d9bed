//! The replication task against real PostgreSQL clusters.

use std::time::Duration;

use crate::support::pg::{self, Cluster};
use crate::support::railway::{FakeRailway, ENVIRONMENT, PROJECT, RAILWAY_TOKEN};
use crate::support::Ops;

const TASK_RUN: &str = r#"
CREATE TABLE "TaskRun" (
  id text PRIMARY KEY,
  "friendlyId" text NOT NULL UNIQUE,
  status text NOT NULL DEFAULT 'PENDING',
  "taskIdentifier" text NOT NULL,
  "runtimeEnvironmentId" text NOT NULL,
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "updatedAt" timestamp(3) NOT NULL,
  output text,
  "outputType" text NOT NULL DEFAULT 'application/json'
)"#;

struct Db {
    ops: Ops,
    name: String,
    cluster: &'static Cluster,
}

impl Db {
    fn client(&self) -> postgres::Client {
        self.cluster.client(&self.name)
    }

    fn replident(&self) -> String {
        self.client()
            .query_one(
                "SELECT relreplident::text FROM pg_class WHERE relname = 'TaskRun'",
                &[],
            )
            .unwrap()
            .get(0)
    }

    fn publication_tables(&self) -> Vec<String> {
        self.client()
            .query("SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'task_runs_to_clickhouse_v1_publication'", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// A fresh database on the shared cluster, with or without the TaskRun table.
fn db(with_table: bool, task: &str) -> Option<Db> {
    if !pg::available() {
        return None;
    }
    let cluster = Cluster::shared();
    let name = cluster.create_db();
    if with_table {
        cluster.client(&name).batch_execute(TASK_RUN).unwrap();
    }
    let mut ops = Ops::new();
    ops.env("DATABASE_URL", &cluster.url(&name));
    ops.jobs(&format!("version: 1\nprofiles:\n  replication:\n    cron: '*/5 * * * *'\n    timeout: 1m\n    tasks:\n      - {task}\n"));
    Some(Db { ops, name, cluster })
}

#[test]
fn fresh_database_is_fixed_in_one_run_and_the_second_changes_nothing() {
    let Some(d) = db(true, "replication") else {
        return;
    };
    assert_eq!(d.replident(), "d");
    let run = d.ops.run(&["run", "replication"]);
    run.expect_code(0)
        .expect_stdout("fixed: ALTER TABLE \"public\".\"TaskRun\" REPLICA IDENTITY FULL")
        .expect_stdout("fixed: CREATE PUBLICATION");
    assert_eq!(d.replident(), "f");
    assert_eq!(d.publication_tables(), ["TaskRun"]);
    let before: i64 = d
        .client()
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    let run = d.ops.run(&["run", "replication"]);
    run.expect_code(0).expect_stdout("nothing changed");
    assert!(!run.stdout.contains("fixed:"), "{}", run.stdout);
    let _ = before;
}

#[test]
fn fix_false_reports_drift_and_exits_1() {
    let Some(d) = db(true, "{kind: replication, fix: false}") else {
        return;
    };
    let run = d.ops.run(&["run", "replication"]);
    run.expect_code(1)
        .expect_stdout("fix: false")
        .expect_stdout("ALTER TABLE \"public\".\"TaskRun\" REPLICA IDENTITY FULL");
    assert_eq!(d.replident(), "d");
    assert!(d.publication_tables().is_empty());
}

#[test]
fn dry_run_leaves_the_catalog_unchanged() {
    let Some(d) = db(true, "replication") else {
        return;
    };
    let run = d.ops.run(&["run", "replication", "--dry-run"]);
    run.expect_code(0).expect_stdout("planned").expect_stdout("would run: CREATE PUBLICATION \"task_runs_to_clickhouse_v1_publication\" FOR TABLE \"public\".\"TaskRun\"");
    assert_eq!(d.replident(), "d");
    assert!(d.publication_tables().is_empty());
}

#[test]
fn publication_without_the_table_gets_it() {
    let Some(d) = db(true, "replication") else {
        return;
    };
    d.client().batch_execute("CREATE TABLE other (id int PRIMARY KEY); CREATE PUBLICATION task_runs_to_clickhouse_v1_publication FOR TABLE other").unwrap();
    d.ops
        .run(&["run", "replication"])
        .expect_code(0)
        .expect_stdout("does not include")
        .expect_stdout(
            "fixed: ALTER PUBLICATION \"task_runs_to_clickhouse_v1_publication\" ADD TABLE",
        );
    let mut tables = d.publication_tables();
    tables.sort();
    assert_eq!(tables, ["TaskRun", "other"]);
}

#[test]
fn publication_without_update_and_delete_is_fixed() {
    let Some(d) = db(true, "replication") else {
        return;
    };
    d.client().batch_execute(r#"CREATE PUBLICATION task_runs_to_clickhouse_v1_publication FOR TABLE "TaskRun" WITH (publish = 'insert')"#).unwrap();
    d.ops.run(&["run", "replication"]).expect_code(0).expect_stdout("fixed: ALTER PUBLICATION \"task_runs_to_clickhouse_v1_publication\" SET (publish = 'insert, update, delete')");
    let row = d.client().query_one("SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = 'task_runs_to_clickhouse_v1_publication'", &[]).unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, bool>(1),
            row.get::<_, bool>(2)
        ),
        (true, true, true)
    );
}

#[test]
fn inactive_slot_holding_wal_is_a_failure_and_is_never_dropped() {
    let Some(d) = db(true, "replication") else {
        return;
    };
    let slot = format!("slot_{}", d.name);
    d.ops.jobs(&format!(
        "version: 1\nprofiles:\n  replication:\n    cron: '* * * * *'\n    tasks:\n      - {{kind: replication, slot: {slot}, slot_max_retained: 1MB}}\n"
    ));
    let mut c = d.client();
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&slot],
    )
    .unwrap();
    c.batch_execute(
        "CREATE TABLE junk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 30000) g",
    )
    .unwrap();
    let run = d.ops.run(&["run", "replication"]);
    run.expect_code(1)
        .expect_stdout(&format!("slot {slot} is inactive and retains"))
        .expect_stdout("disk fills")
        .expect_stdout("pg_drop_replication_slot");
    // What it retains is a metric too, for a rule on growth.
    let (_served, addr) = crate::operator::Served::start(&d.ops);
    let (_, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    let retained: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "ops_replication_slot_retained_bytes{{slot=\"{slot}\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retained bytes for {slot}:\n{metrics}"));
    assert!(retained > 1_000_000.0, "{retained}");
    let still: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .unwrap()
        .get(0);
    assert_eq!(still, 1, "ops dropped the slot");
    c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .unwrap();
}

#[test]
fn missing_table_is_waiting_not_failed() {
    let Some(d) = db(false, "replication") else {
        return;
    };
    d.ops
        .run(&["run", "replication"])
        .expect_code(0)
        .expect_stdout("waiting")
        .expect_stdout("has not run its migrations");
}

#[test]
fn role_without_privileges_gets_a_clear_error() {
    let Some(d) = db(true, "replication") else {
        return;
    };
    let role = format!("weak_{}", d.name);
    d.client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'weak-password-77'"
        ))
        .unwrap();
    let mut ops = Ops::new();
    let url = format!(
        "postgresql://{role}:weak-password-77@127.0.0.1:{}/{}?sslmode=disable",
        d.cluster.port, d.name
    );
    ops.env("DATABASE_URL", &url);
    ops.jobs(
        "version: 1\nprofiles:\n  replication:\n    cron: '* * * * *'\n    tasks: [replication]\n",
    );
    let run = ops.run(&["run", "replication"]);
    run.expect_code(1)
        .expect_stdout("must be owner")
        .expect_stdout("connect as the table's owner");
    assert!(!run.all().contains("weak-password-77"));
}

#[test]
fn connection_refused_names_host_and_port_but_not_the_password() {
    let mut ops = Ops::new();
    let port = crate::support::digitalocean::free_port();
    ops.env(
        "DATABASE_URL",
        &format!("postgresql://app:hunter2-db-secret@127.0.0.1:{port}/app?sslmode=disable"),
    );
    ops.jobs(
        "version: 1\nprofiles:\n  replication:\n    cron: '* * * * *'\n    tasks: [replication]\n",
    );
    let run = ops.run(&["run", "replication"]);
    run.expect_code(1)
        .expect_stdout(&format!("cannot connect to Postgres at 127.0.0.1:{port}"));
    assert!(!run.all().contains("hunter2-db-secret"));
}

#[test]
fn wal_level_replica_is_set_then_postgres_is_restarted_through_railway_and_verified() {
    if !pg::available() {
        return;
    }
    let cluster = std::sync::Arc::new(Cluster::start(&["wal_level = replica"]));
    let name = cluster.create_db();
    cluster.client(&name).batch_execute(TASK_RUN).unwrap();
    let mut ops = Ops::new();
    ops.env("DATABASE_URL", &cluster.url(&name));
    ops.jobs("version: 1\nprofiles:\n  replication:\n    cron: '*/5 * * * *'\n    timeout: 2m\n    tasks:\n      - {kind: replication, restart_timeout: 60s}\n");

    // Without Railway credentials: wal_level is set, and the restart is asked for by name.
    let run = ops.run(&["run", "replication"]);
    run.expect_code(1)
        .expect_stdout("fixed: ALTER SYSTEM SET wal_level = logical")
        .expect_stdout("restart Postgres to apply wal_level=logical")
        .expect_stdout("RAILWAY_API_TOKEN");
    let pending: bool = cluster
        .client(&name)
        .query_one(
            "SELECT pending_restart FROM pg_settings WHERE name = 'wal_level'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(pending);

    // With Railway: the fake's restart mutation really restarts the cluster.
    let railway = FakeRailway::start();
    let c = std::sync::Arc::clone(&cluster);
    railway.with(|w| {
        w.services = vec![
            ("svc-web".into(), "trigger.dev".into()),
            ("svc-pg".into(), "Postgres".into()),
        ];
        w.deployments.insert(
            "svc-pg".into(),
            vec![(
                "pg-dep-1".into(),
                "2026-11-01T00:00:00Z".into(),
                "SUCCESS".into(),
            )],
        );
        w.restart_hook = Some(Box::new(move |_| c.ctl("restart")));
    });
    ops.env("RAILWAY_API_TOKEN", RAILWAY_TOKEN)
        .env("RAILWAY_PROJECT_ID", PROJECT)
        .env("RAILWAY_ENVIRONMENT_ID", ENVIRONMENT)
        .env("RAILWAY_API_URL", &railway.url());
    let run = ops.run(&["run", "replication"]);
    run.expect_code(0)
        .expect_stdout("restarted the Railway service \"Postgres\" (deployment pg-dep-1)")
        .expect_stdout("ok: wal_level = logical after the restart");
    assert_eq!(railway.with(|w| w.restarts.clone()), ["pg-dep-1"]);
    let level: String = cluster
        .client(&name)
        .query_one("SHOW wal_level", &[])
        .unwrap()
        .get(0);
    assert_eq!(level, "logical");
    // And now it is healthy: no restart, nothing changed.
    let run = ops.run(&["run", "replication"]);
    run.expect_code(0).expect_stdout("nothing changed");
    assert_eq!(railway.with(|w| w.restarts.len()), 1);
    let _ = Duration::ZERO;
}

/// A CA and a server certificate for `localhost`, readable by the cluster.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ops test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if unsafe { libc::geteuid() } == 0 {
        std::process::Command::new("chown")
            .args(["postgres:postgres", "server.key", "server.pem"])
            .current_dir(dir)
            .status()
            .unwrap();
    }
}

#[test]
fn sslmodes_are_honoured_over_tls() {
    if !pg::available() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    make_certs(certs.path());
    let dir = certs.path().display().to_string();
    let cluster = Cluster::start(&[
        "wal_level = logical",
        "ssl = on",
        &format!("ssl_cert_file = '{dir}/server.pem'"),
        &format!("ssl_key_file = '{dir}/server.key'"),
    ]);
    let name = cluster.create_db();
    cluster.client(&name).batch_execute(TASK_RUN).unwrap();
    // From here on, this database only accepts TLS connections.
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("hostnossl {name} all all reject\n{rules}")).unwrap();
    cluster
        .client("postgres")
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let plain = postgres::Client::connect(&cluster.url(&name), postgres::NoTls);
    assert!(plain.is_err(), "plain connections should now be rejected");
    let ca = format!("{dir}/ca.pem");
    let url = |host: &str, mode: &str| {
        format!(
            "postgresql://postgres@{host}:{}/{name}?sslmode={mode}&sslrootcert={ca}",
            cluster.port
        )
    };
    for (host, mode, ok) in [
        ("127.0.0.1", "require", true),
        ("127.0.0.1", "prefer", true),
        ("127.0.0.1", "verify-ca", true),
        ("localhost", "verify-full", true),
        ("127.0.0.1", "verify-full", false),
    ] {
        let mut ops = Ops::new();
        ops.env("DATABASE_URL", &url(host, mode));
        ops.jobs("version: 1\nprofiles:\n  replication:\n    cron: '* * * * *'\n    tasks: [replication]\n");
        let run = ops.run(&["run", "replication"]);
        if ok {
            run.expect_code(0);
        } else {
            run.expect_code(1)
                .expect_stdout("cannot connect to Postgres");
        }
    }
    // sslmode=disable is refused by the server: proof that the others really used TLS.
    let mut ops = Ops::new();
    ops.env("DATABASE_URL", &url("127.0.0.1", "disable"));
    ops.jobs(
        "version: 1\nprofiles:\n  replication:\n    cron: '* * * * *'\n    tasks: [replication]\n",
    );
    ops.run(&["run", "replication"])
        .expect_code(1)
        .expect_stdout("no encryption");
}

/// An active on-path attacker's server: its own certificate, and it asks for the password in
/// clear (`password` in pg_hba). With TLS unverified and a password in the URL, ops requires
/// channel binding, so the password is never sent: the login fails although the password is
/// right, and succeeds only when channel binding is explicitly given up.
#[test]
fn the_password_never_goes_to_a_server_that_will_not_bind_the_login_to_tls() {
    if !pg::available() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    make_certs(certs.path());
    let dir = certs.path().display().to_string();
    let cluster = Cluster::start(&[
        "ssl = on",
        &format!("ssl_cert_file = '{dir}/server.pem'"),
        &format!("ssl_key_file = '{dir}/server.key'"),
    ]);
    let name = cluster.create_db();
    cluster
        .client("postgres")
        .batch_execute("CREATE ROLE opsuser LOGIN PASSWORD 'pw-cleartext-2718'")
        .unwrap();
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl {name} opsuser 127.0.0.1/32 password\nhostnossl {name} opsuser all reject\n{rules}"),
    )
    .unwrap();
    cluster
        .client("postgres")
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let url = |query: &str| {
        format!(
            "postgresql://opsuser:pw-cleartext-2718@127.0.0.1:{}/{name}?{query}",
            cluster.port
        )
    };
    let run = |database_url: &str| {
        let mut ops = Ops::new();
        ops.env("DATABASE_URL", database_url);
        ops.jobs("version: 1\nprofiles:\n  replication:\n    cron: '* * * * *'\n    tasks: [{kind: replication, fix: false}]\n");
        ops.run(&["run", "replication"])
    };
    for query in ["sslmode=require", "sslmode=require&channel_binding=require"] {
        let r = run(&url(query));
        r.expect_code(1)
            .expect_stdout("cannot connect to Postgres")
            .expect_stdout("channel binding")
            .expect_stdout("the password was not sent");
        assert!(!r.all().contains("pw-cleartext-2718"));
        assert!(
            !r.all().contains("password authentication failed"),
            "{}",
            r.all()
        );
    }
    // The same URL with channel binding given up logs in: the password was right all along.
    let r = run(&url("sslmode=require&channel_binding=prefer"));
    assert!(!r.stdout.contains("cannot connect"), "{}", r.all());
    // A server that speaks SCRAM (as Railway's Postgres does) binds the login to TLS: the
    // default connects.
    std::fs::write(
        &hba,
        format!("hostssl {name} opsuser 127.0.0.1/32 scram-sha-256\nhostnossl {name} opsuser all reject\n{rules}"),
    )
    .unwrap();
    cluster
        .client("postgres")
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = run(&url("sslmode=require"));
    assert!(!r.stdout.contains("cannot connect"), "{}", r.all());
    // The key=value form means the same: sslmode=require against a server without TLS fails.
    let shared = pg::Cluster::shared();
    let db = shared.create_db();
    let kv = format!(
        "host=127.0.0.1 port={} dbname={db} user=postgres sslmode=require",
        shared.port
    );
    run(&kv)
        .expect_code(1)
        .expect_stdout("cannot connect to Postgres");
    let kv_plain = format!(
        "host=127.0.0.1 port={} dbname={db} user=postgres sslmode=disable",
        shared.port
    );
    assert!(!run(&kv_plain).stdout.contains("cannot connect"));
}
