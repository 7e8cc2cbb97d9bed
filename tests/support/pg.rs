//! Throwaway PostgreSQL clusters for tests: initdb in a temp dir (as the `postgres` user when
//! running as root), on a free loopback port, stopped when dropped. In CI (`CI=true`) missing
//! binaries are a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static DB_SEQ: AtomicU32 = AtomicU32::new(0);

fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("OPS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (v >= 15 && bin.join("initdb").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// The binaries, or `None` (a skip) outside CI; in CI a missing server fails the test.
pub fn available() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("PostgreSQL ≥ 15 binaries not found (CI=true): .ci/run must install postgresql");
    }
    eprintln!("SKIP: PostgreSQL binaries not found (set OPS_PG_BIN or run .ci/run)");
    false
}

/// Below the ephemeral range, as the fakes' (a restarted cluster binds its port again).
fn free_port() -> u16 {
    super::digitalocean::free_port()
}

impl Cluster {
    /// A new cluster with extra `postgresql.conf` lines.
    pub fn start(conf: &[&str]) -> Cluster {
        let bin = bin_dir().expect("postgres binaries (check available() first)");
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = std::env::temp_dir().join(format!(
            "ops-pg-{}-{}",
            std::process::id(),
            DB_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = dir.join("data");
        let mut c = Cluster {
            dir: dir.clone(),
            port: free_port(),
            bin,
            as_postgres,
        };
        c.pg(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let mut lines = vec![
            format!("port = {}", c.port),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", dir.display()),
            "fsync = off".into(),
            "max_connections = 50".into(),
        ];
        lines.extend(conf.iter().map(|s| s.to_string()));
        let conf_path = data.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap_or_default();
        text.push_str(&lines.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).unwrap();
        if as_postgres {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&conf_path)
                .status()
                .unwrap();
        }
        // The port was free when picked, but another test may bind it before the server does
        // (the fakes listen on ephemeral loopback ports too): then start on another one.
        for _ in 0..3 {
            let out = c.ctl_command("start").output().expect("run pg_ctl");
            if out.status.success() {
                return c;
            }
            let log = std::fs::read_to_string(c.dir.join("server.log")).unwrap_or_default();
            assert!(
                log.contains("could not bind") || log.contains("already in use"),
                "pg_ctl start failed: {}{log}",
                String::from_utf8_lossy(&out.stderr)
            );
            c.port = free_port();
            let mut text = std::fs::read_to_string(&conf_path).unwrap_or_default();
            text.push_str(&format!("port = {}\n", c.port));
            std::fs::write(&conf_path, text).unwrap();
        }
        c.ctl("start");
        c
    }

    /// One cluster per test process with `wal_level = logical`.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| {
            let c = Cluster::start(&["wal_level = logical"]);
            extern "C" fn stop_shared() {
                if let Some(c) = SHARED.get() {
                    c.stop();
                }
            }
            unsafe {
                libc::atexit(stop_shared);
            }
            c
        })
    }

    /// A PostgreSQL tool, run as `postgres` when we are root.
    fn tool_command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    fn pg(&self, args: &[&str]) {
        let out = self
            .tool_command(args[0])
            .args(&args[1..])
            .output()
            .expect("run postgres tool");
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl_command(&self, action: &str) -> Command {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let mut cmd = self.tool_command("pg_ctl");
        cmd.args([
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-m",
            "fast",
            action,
        ]);
        cmd
    }

    pub fn ctl(&self, action: &str) {
        let out = self.ctl_command(action).output().expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A restart that may race another one (the soak's Postgres faults): failure is tolerated.
    pub fn restart_quietly(&self) -> bool {
        static BUSY: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = BUSY.lock();
        self.ctl_command("restart")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn stop(&self) {
        let data = self.dir.join("data");
        let _ = self
            .tool_command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).expect("connect to test postgres")
    }

    /// A fresh database on this cluster.
    pub fn create_db(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DB_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
