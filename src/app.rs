//! Resolution of the global inputs, once: config path, state dir, env file, then the typed
//! jobs config and settings every command works from.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cli::Cli;
use crate::config::{JobsConfig, BUNDLED};
use crate::envfile::Env;
use crate::exit::config_error;
use crate::settings::Settings;

pub struct App {
    pub config: JobsConfig,
    pub env: Env,
    pub settings: Settings,
    pub state_dir: PathBuf,
    pub env_file: Option<PathBuf>,
}

impl App {
    pub fn load(cli: &Cli, env: Env, env_file: Option<PathBuf>) -> anyhow::Result<App> {
        let (app, broken) = App::load_despite_jobs(cli, env, env_file)?;
        match broken {
            Some(e) => Err(e),
            None => Ok(app),
        }
    }

    /// As `load`, but a jobs.yaml that cannot be read or parsed leaves the app without
    /// profiles and is handed back beside it: `ops status` still shows what the state holds
    /// while the file is fixed.
    pub fn load_despite_jobs(
        cli: &Cli,
        env: Env,
        env_file: Option<PathBuf>,
    ) -> anyhow::Result<(App, Option<anyhow::Error>)> {
        let path = config_path(cli.config.as_deref());
        let loaded = match &path {
            Some(path) => JobsConfig::load(path),
            None => {
                log::debug!("no jobs.yaml found: using the bundled one");
                JobsConfig::parse(BUNDLED, "bundled jobs.yaml")
            }
        };
        let (config, broken) = match loaded {
            Ok(c) => (c, None),
            Err(e) => (
                JobsConfig {
                    path,
                    lock: crate::config::LockMode::Local,
                    profiles: Vec::new(),
                },
                Some(e),
            ),
        };
        let settings = Settings::from_env(&env)?;
        let app = App {
            config,
            settings,
            env,
            state_dir: state_dir(cli.state_dir.as_deref()),
            env_file,
        };
        Ok((app, broken))
    }
}

/// `--env-file`, else `$OPS_ENV_FILE`, else `/etc/ops/ops.env` when readable. An explicitly
/// named file that cannot be read is an error; the default is optional.
pub fn env_file(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let explicit = flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("OPS_ENV_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(config_error(format!(
                "env file {} does not exist (fix --env-file / OPS_ENV_FILE, or create it from deploy/ops.env.example)",
                path.display()
            )));
        }
        if path.is_file() && !readable(&path) {
            return Err(unreadable(
                &path,
                "the env file",
                "--env-file / OPS_ENV_FILE",
            ));
        }
        return Ok(Some(path));
    }
    let default = PathBuf::from("/etc/ops/ops.env");
    if default.exists() && !readable(&default) {
        // Skipping it would run with every token "not set" and say nothing.
        return Err(unreadable(
            &default,
            "the env file",
            "--env-file / OPS_ENV_FILE",
        ));
    }
    Ok(readable(&default).then_some(default))
}

/// A path that exists but this user cannot read: who owns it, and the fix.
pub fn unreadable(path: &Path, what: &str, flag: &str) -> anyhow::Error {
    crate::privilege::denied(path, what, "read", flag)
}

/// The state directory, when it exists, must be readable: falling back, or reading nothing,
/// would show every profile as never run.
pub fn check_state_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() && !access(dir, libc::R_OK | libc::X_OK) {
        return Err(unreadable(
            dir,
            "the state directory",
            "--state-dir / OPS_STATE_DIR",
        ));
    }
    Ok(())
}

/// The profiles of the jobs.yaml these arguments would read, for `--help`; empty when it cannot
/// be read (the command itself then says why).
pub fn profiles_for_help(args: &[std::ffi::OsString]) -> Vec<String> {
    let mut flag = None;
    for (i, a) in args.iter().enumerate() {
        let a = a.to_string_lossy();
        if a == "--config" {
            flag = args.get(i + 1).map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--config=") {
            flag = Some(PathBuf::from(v));
        }
    }
    let config = match config_path(flag.as_deref()) {
        Some(path) => JobsConfig::load(&path),
        None => JobsConfig::parse(BUNDLED, "bundled jobs.yaml"),
    };
    config
        .map(|c| c.profiles.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default()
}

/// `--config`, else `$OPS_CONFIG`, else `/etc/ops/jobs.yaml`, else `./jobs.yaml`; `None` means
/// the bundled default.
fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("OPS_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    ["/etc/ops/jobs.yaml", "jobs.yaml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `--state-dir`, else `$OPS_STATE_DIR`, else `/var/lib/ops` when it exists, else
/// `$XDG_STATE_HOME/ops` (`~/.local/state/ops`).
fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("OPS_STATE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // Once installed, /var/lib/ops is the state whoever runs ops: one that cannot be read is
    // said so (`check_state_dir`), never swapped for an empty one under $HOME.
    let system = PathBuf::from("/var/lib/ops");
    if system.is_dir() {
        return system;
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("ops");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/ops")
}

fn access(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads a NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

pub fn readable(path: &Path) -> bool {
    path.is_file() && access(path, libc::R_OK)
}

pub fn writable(path: &Path) -> bool {
    access(path, libc::W_OK)
}

/// Whether `dir` exists and is writable, or could be created under a writable ancestor.
pub fn dir_is_usable(dir: &Path) -> bool {
    let mut probe = Some(dir);
    while let Some(p) = probe {
        if p.exists() {
            return p.is_dir() && writable(p);
        }
        probe = p.parent();
    }
    false
}
