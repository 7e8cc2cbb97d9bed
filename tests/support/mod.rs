//! Test harness: the real `ops` binary in a temp directory with its own jobs.yaml, env file and
//! state dir, and a clean environment.

#![allow(dead_code)]

pub mod digitalocean;
pub mod doks;
pub mod fake;
pub mod kubernetes;
pub mod netns;
pub mod pg;
pub mod pgwire;
pub mod platform;
pub mod railway;
pub mod webapp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const OPS: &str = env!("CARGO_BIN_EXE_ops");

pub struct Ops {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (want {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        assert!(
            !self.stderr.contains("internal error"),
            "panic: {}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Ops {
    pub fn new() -> Ops {
        netns::ensure();
        let dir = tempfile::tempdir().expect("tempdir");
        let ops = Ops {
            dir,
            env: Vec::new(),
        };
        ops.env_file("");
        ops
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn db(&self) -> PathBuf {
        self.state_dir().join("ops.db")
    }

    pub fn jobs(&self, yaml: &str) -> &Self {
        std::fs::write(self.path("jobs.yaml"), yaml).unwrap();
        self
    }

    /// Writes the env file, private as install.sh makes it (a world-readable one is warned of).
    pub fn env_file(&self, text: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path("ops.env");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        self
    }

    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(OPS);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("LOG_LEVEL", "info")
            .arg("--config")
            .arg(self.path("jobs.yaml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--env-file")
            .arg(self.path("ops.env"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let start = Instant::now();
        let out = self.command(args).output().expect("spawn ops");
        finish(out, start.elapsed())
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ops")
    }

    pub fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db()).expect("open ops.db")
    }
}

pub fn finish(out: Output, elapsed: Duration) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}

/// Whether an external tool (systemd-analyze, cloud-init, shellcheck) is installed. Outside CI
/// a missing one is a visible skip; in CI it is a failure, never a silent pass.
pub fn tool(name: &str) -> bool {
    let ok = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "{name} is missing in CI: .ci/run installs it"
        );
        eprintln!("SKIP: {name} not installed");
    }
    ok
}

/// Waits for `path` to exist (a child's "I started" marker).
pub fn wait_for(path: &Path, limit: Duration) {
    let until = Instant::now() + limit;
    while !path.exists() {
        assert!(Instant::now() < until, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A one-profile jobs.yaml running `argv` as an exec task.
pub fn exec_profile(name: &str, argv: &[&str], extra: &str) -> String {
    let cmd = argv
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "version: 1\nprofiles:\n  {name}:\n    cron: \"* * * * *\"\n    {extra}\n    tasks:\n      - kind: exec\n        name: step\n        command: [{cmd}]\n"
    )
}

/// `exec_profile` whose task passes the variables `names` to its command (`env: [...]`).
pub fn exec_profile_env(name: &str, argv: &[&str], extra: &str, names: &[&str]) -> String {
    exec_profile(name, argv, extra).replace(
        "        name: step\n",
        &format!("        name: step\n        env: [{}]\n", names.join(", ")),
    )
}

/// The content of `path` in a `#cloud-config` document's `write_files`.
pub fn written(doc: &serde_yaml::Value, path: &str) -> String {
    doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|w| w["path"] == path)
        .unwrap_or_else(|| panic!("{path} is written"))["content"]
        .as_str()
        .unwrap()
        .to_string()
}
