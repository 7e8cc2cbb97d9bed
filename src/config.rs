//! `jobs.yaml`: raw YAML deserialized and validated once into a typed `JobsConfig`. Every
//! error is one line naming the file, line:column where known, and the fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::duration;
use crate::exit::config_error;
use crate::schedule::Cron;

pub const DEFAULT_PROFILE_TIMEOUT: Duration = Duration::from_secs(600);
pub const SUPPORTED_VERSION: u32 = 1;
pub const BUILTIN_KINDS: &[&str] = &["extract", "replication", "supervisor", "exec"];

/// The jobs.yaml shipped with `ops`, used when no config file exists.
pub const BUNDLED: &str = include_str!("../jobs.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Local,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Where it was read from; `None` for the bundled default.
    pub path: Option<PathBuf>,
    pub lock: LockMode,
    pub profiles: Vec<Profile>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub cron: Cron,
    pub description: String,
    pub timeout: Duration,
    pub enabled: bool,
    pub ping_url: Option<String>,
    /// The end-of-run ping carries the run's table (droplet addresses, the webapp's origin, SQL)
    /// to the third party: only when asked.
    pub ping_body: bool,
    /// While a profile keeps failing, a reminder goes out this often.
    pub renotify_after: Duration,
    /// Which changes ops made are told to the alert channels on their own.
    pub notify_changes: NotifyChanges,
    pub tasks: Vec<Task>,
}

/// `notify_changes`: every change a message (`all`), only those a person must know now
/// (`important`: the others ride along with the next message, or in one daily summary), or
/// none (events only). Failures, escalations and recoveries are told whatever it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyChanges {
    All,
    #[default]
    Important,
    None,
}

pub const DEFAULT_RENOTIFY_AFTER: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone)]
pub struct Task {
    /// Display name: `name:` or the kind.
    pub name: String,
    pub enabled: bool,
    pub timeout: Option<Duration>,
    pub spec: TaskSpec,
}

impl Task {
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }
}

// A few per configuration, read once: boxing the supervisor's options would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum TaskSpec {
    Exec(ExecOptions),
    Extract(ExtractOptions),
    Replication(ReplicationOptions),
    Supervisor(SupervisorOptions),
}

impl TaskSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSpec::Exec(_) => "exec",
            TaskSpec::Extract(_) => "extract",
            TaskSpec::Replication(_) => "replication",
            TaskSpec::Supervisor(_) => "supervisor",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    pub command: Command,
    #[serde(default)]
    pub shell: bool,
    #[serde(default)]
    pub env: ExecEnv,
    #[serde(default, alias = "working_dir")]
    pub cwd: Option<PathBuf>,
}

/// The variables an exec task passes to its command, on top of a plain base environment: `NAME:
/// value` as written, or ops' own value (process environment, then the env file) for a name
/// without a value (`NAME:`, `NAME: ~`) or in a list (`env: [DATABASE_URL]`). Nothing else of
/// the env file reaches the command: it holds every secret ops has.
#[derive(Debug, Clone, Default)]
pub struct ExecEnv(pub BTreeMap<String, Option<String>>);

impl<'de> Deserialize<'de> for ExecEnv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Names(Vec<String>),
            Map(BTreeMap<String, Option<String>>),
        }
        let map = match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("env must be a list of variable names or a mapping NAME: value (NAME: with no value passes ops' own)")
        })? {
            Raw::Names(names) => names.into_iter().map(|n| (n, None)).collect(),
            Raw::Map(map) => map,
        };
        for name in map.keys() {
            let mut chars = name.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(de::Error::custom(format!(
                    "env: {name:?} is not a variable name (letters, digits and _, not starting with a digit)"
                )));
            }
        }
        Ok(ExecEnv(map))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Line(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractOptions {
    /// A stored record younger than this is used without asking Railway.
    #[serde(default = "default_refresh", deserialize_with = "de_duration")]
    pub refresh: Duration,
    /// Check the webapp's `/healthcheck`.
    #[serde(default = "yes")]
    pub check_webapp: bool,
    /// Make a worker group ops creates through the admin API the global default, so that its
    /// supervisors receive the runs.
    #[serde(default = "yes")]
    pub make_default: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationOptions {
    #[serde(default = "yes")]
    pub fix: bool,
    #[serde(default = "default_publication")]
    pub publication: String,
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default = "default_slot")]
    pub slot: String,
    #[serde(default = "default_slot_max", deserialize_with = "de_size")]
    pub slot_max_retained: u64,
    #[serde(default = "yes")]
    pub restart: bool,
    #[serde(default = "default_restart_timeout", deserialize_with = "de_duration")]
    pub restart_timeout: Duration,
    /// When set, the Postgres restart starts only inside it (`Sun 03:00-05:00`, host time).
    #[serde(default, deserialize_with = "de_window")]
    pub restart_window: Option<crate::window::Window>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorOptions {
    #[serde(default = "default_boot_grace", deserialize_with = "de_duration")]
    pub boot_grace: Duration,
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    #[serde(default = "default_max_replacements")]
    pub max_replacements: u32,
    #[serde(
        default = "default_replacement_window",
        deserialize_with = "de_duration"
    )]
    pub replacement_window: Duration,
    #[serde(default = "yes")]
    pub firewall: bool,
    #[serde(default = "default_health_port")]
    pub health_port: u16,
    /// A droplet whose `WorkerInstance.lastHeartbeatAt` is older than this is failing; unset:
    /// 30s when every droplet is known to heartbeat every 10 s (ops' user-data sets it, and tags
    /// the droplet), else 1m (see [`SupervisorOptions::stale_after`]).
    #[serde(default, rename = "stale_after", deserialize_with = "de_opt_duration")]
    pub stale_after_set: Option<Duration>,
    /// Alert (fail the task) when the oldest PENDING run of the group waits longer; off unless set.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub queue_alert_after: Option<Duration>,
    /// Fail when runs wait longer than this in a managed queue nobody serves; `off` disables.
    #[serde(
        default = "default_orphan_alert_after",
        deserialize_with = "de_duration_or_off"
    )]
    pub orphan_alert_after: Option<Duration>,
    /// How far back in `createdAt` the read of waiting runs may look (the BRIN index bounds it).
    #[serde(default = "default_queue_window", deserialize_with = "de_duration")]
    pub queue_window: Duration,
    /// The waiting-runs statement's own timeout (the heartbeats never wait for it).
    #[serde(default = "default_queue_timeout", deserialize_with = "de_duration")]
    pub queue_timeout: Duration,
    /// How long a droplet leaving for a planned reason may drain before it is deleted with its
    /// runs still on it (they are retried); `0s`: deleted at once.
    #[serde(
        default = "default_drain_timeout",
        deserialize_with = "de_duration_or_zero"
    )]
    pub drain_timeout: Duration,
    /// Fewest droplets (scaling by load); with neither `min` nor `max`, SUPERVISOR_COUNT is both.
    #[serde(default)]
    pub min: Option<u32>,
    /// Most droplets (scaling by load).
    #[serde(default)]
    pub max: Option<u32>,
    /// A run waiting longer than this and free to start (no concurrency limit or pause holds it)
    /// asks for capacity.
    #[serde(default = "default_scale_out_after", deserialize_with = "de_duration")]
    pub scale_out_after: Duration,
    /// A droplet that executed nothing for this long may go when the load no longer needs it.
    #[serde(default = "default_scale_in_after", deserialize_with = "de_duration")]
    pub scale_in_after: Duration,
    /// Runs that could start and have waited this long while the fleet is at `max` (or the
    /// account's droplet limit) are a problem, warned of once per episode; `off` disables.
    #[serde(
        default = "default_capped_alert_after",
        deserialize_with = "de_duration_or_off"
    )]
    pub capped_alert_after: Option<Duration>,
    /// Keep a baked image (Docker and this version's images pulled, no secret) that new
    /// droplets start from; off unless set (the bundled jobs.yaml sets it).
    #[serde(default)]
    pub bake: bool,
    /// Where the supervisor runs: `droplets` (ops' own fleet, the default) or `kubernetes`.
    #[serde(default)]
    pub platform: Platform,
    /// `platform: kubernetes` on a cluster ops does not manage: its kubeconfig (the current
    /// context; a token or client-certificate user). An absolute path is best: a relative one is read
    /// from ops' working directory.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// `platform: kubernetes` on DigitalOcean Kubernetes (no `kubeconfig:`): the cluster to
    /// adopt (its id or name); unset, ops creates one and records it as its own.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The cluster ops creates gets DigitalOcean's HA control plane (about $40 a month).
    #[serde(default)]
    pub ha: bool,
    /// The maintenance window of the cluster ops creates: `<day> HH:MM` (UTC, 4 hours long);
    /// unset: `sunday 04:00`.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// The namespace of the supervisor's objects and its run pods.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The `nodetype` label of the nodes meant for runs (`KUBERNETES_WORKER_NODETYPE_LABEL`).
    #[serde(default = "default_node_label")]
    pub node_label: String,
    /// A run pod waiting for a node longer than this fails the task, naming it and why.
    #[serde(default = "default_pending_after", deserialize_with = "de_duration")]
    pub pending_after: Duration,
}

/// Where the supervisor runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[default]
    Droplets,
    Kubernetes,
}

fn default_namespace() -> String {
    crate::manifests::DEFAULT_NAMESPACE.into()
}
fn default_node_label() -> String {
    crate::manifests::DEFAULT_NODETYPE.into()
}
fn default_pending_after() -> Duration {
    Duration::from_secs(600)
}

/// A Kubernetes name or label value as ops' options take it: 1 to 63 lowercase letters, digits
/// and `-`, starting and ending alphanumeric.
fn dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `maintenance: "<day> HH:MM"`: the day (DigitalOcean's: a weekday, or `any`) and the UTC
/// start time of a DOKS cluster's 4-hour maintenance window.
pub fn maintenance_window(m: &str) -> Result<(String, String), String> {
    let bad = || {
        format!("supervisor task: maintenance {m:?} is not \"<day> HH:MM\" (a weekday or any, then the UTC start: \"sunday 04:00\")")
    };
    let (day, time) = m.trim().split_once(' ').ok_or_else(bad)?;
    let day = if day.eq_ignore_ascii_case("any") {
        "any"
    } else {
        crate::window::weekday(day).ok_or_else(bad)?
    };
    let (h, min) = time.trim().split_once(':').ok_or_else(bad)?;
    let ok = |v: &str, max: u32| v.len() == 2 && v.parse::<u32>().is_ok_and(|n| n <= max);
    if !ok(h, 23) || !ok(min, 59) {
        return Err(bad());
    }
    Ok((day.to_string(), format!("{h}:{min}")))
}

fn yes() -> bool {
    true
}
fn default_refresh() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_publication() -> String {
    "task_runs_to_clickhouse_v1_publication".into()
}
fn default_table() -> String {
    "public.\"TaskRun\"".into()
}
fn default_slot() -> String {
    "task_runs_to_clickhouse_v1".into()
}
fn default_slot_max() -> u64 {
    1 << 30
}
fn default_restart_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_boot_grace() -> Duration {
    Duration::from_secs(600)
}
fn default_unhealthy_after() -> u32 {
    3
}
fn default_max_replacements() -> u32 {
    3
}
fn default_replacement_window() -> Duration {
    Duration::from_secs(6 * 3600)
}
/// Three missed heartbeats of a droplet that beats every 10 s (ops' user-data sets it): early,
/// because a silence starts a replacement without deleting anything (make before break) and the
/// webapp's own outages are told apart.
pub const STALE_AFTER_FAST: Duration = Duration::from_secs(30);
/// Two missed heartbeats at Trigger.dev's default of 30 s (droplets made before ops set the
/// interval), and what the other worker groups' supervisors are judged by.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

impl SupervisorOptions {
    /// The silence after which a droplet is failing: the operator's `stale_after`, else
    /// `STALE_AFTER_FAST` when every droplet is known to heartbeat every 10 s, else `STALE_AFTER`.
    pub fn stale_after(&self, all_fast: bool) -> Duration {
        self.stale_after_set.unwrap_or(if all_fast {
            STALE_AFTER_FAST
        } else {
            STALE_AFTER
        })
    }
}
fn default_capped_alert_after() -> Option<Duration> {
    Some(Duration::from_secs(300))
}
fn default_orphan_alert_after() -> Option<Duration> {
    Some(Duration::from_secs(300))
}
fn default_queue_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_scale_out_after() -> Duration {
    Duration::from_secs(30)
}
fn default_scale_in_after() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_health_port() -> u16 {
    8020
}

impl Default for ExtractOptions {
    fn default() -> Self {
        from_empty()
    }
}
impl Default for ReplicationOptions {
    fn default() -> Self {
        from_empty()
    }
}
impl Default for SupervisorOptions {
    fn default() -> Self {
        from_empty()
    }
}

fn from_empty<T: de::DeserializeOwned>() -> T {
    serde_yaml::from_value(serde_yaml::Value::Mapping(Default::default()))
        .expect("every option has a default")
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    duration::parse(&s).map_err(de::Error::custom)
}

fn de_window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::window::Window>, D::Error> {
    let s = String::deserialize(d)?;
    crate::window::Window::parse(&s)
        .map(Some)
        .map_err(de::Error::custom)
}

/// A duration where zero means "not at all" (`0s`, `0`).
fn de_duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    duration::parse(t).map_err(de::Error::custom)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s,
        _ => return Err(de::Error::custom("expected a size such as 512MB or 1GB")),
    };
    parse_size(&s).map_err(de::Error::custom)
}

/// `1GB`, `512MB`, `1048576` (bytes); binary multiples.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 512MB or 1GB"))?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("invalid size {s:?}: use e.g. 512MB or 1GB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    #[serde(default)]
    lock: Option<RawLock>,
    profiles: RawProfiles,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawLock {
    Local,
    Postgres,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    cron: CronValue,
    #[serde(default)]
    description: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    timeout: Option<Duration>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    ping_url: Option<String>,
    #[serde(default)]
    ping_body: bool,
    #[serde(default, deserialize_with = "de_opt_duration")]
    renotify_after: Option<Duration>,
    #[serde(default)]
    notify_changes: NotifyChanges,
    tasks: Vec<Task>,
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_duration_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    duration::parse(&s).map(Some).map_err(de::Error::custom)
}

struct CronValue(Cron);

impl<'de> Deserialize<'de> for CronValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cron::parse(&s).map(CronValue).map_err(de::Error::custom)
    }
}

/// Profiles in file order, duplicates kept so they can be reported (serde would keep the last).
struct RawProfiles(Vec<(String, RawProfile)>);

impl<'de> Deserialize<'de> for RawProfiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawProfiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of profile names to profiles")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawProfiles, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let profile = map.next_value::<RawProfile>()?;
                    out.push((name, profile));
                }
                Ok(RawProfiles(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Task;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a task kind name (extract, replication, supervisor) or a mapping with `kind:`",
                )
            }
            fn visit_str<E: de::Error>(self, kind: &str) -> Result<Task, E> {
                let spec = match kind {
                    "extract" => TaskSpec::Extract(ExtractOptions::default()),
                    "replication" => TaskSpec::Replication(ReplicationOptions::default()),
                    "supervisor" => TaskSpec::Supervisor(SupervisorOptions::default()),
                    "exec" => {
                        return Err(E::custom(
                            "an exec task needs options: write it as a mapping with kind: exec and command: [...]",
                        ))
                    }
                    other => return Err(E::custom(unknown_kind(other))),
                };
                Ok(Task {
                    name: kind.to_string(),
                    enabled: true,
                    timeout: None,
                    spec,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Task, A::Error> {
                let mut kind: Option<String> = None;
                let mut name: Option<String> = None;
                let mut enabled = true;
                let mut timeout = None;
                let mut rest = serde_yaml::Mapping::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "kind" => kind = Some(map.next_value()?),
                        "name" => name = Some(map.next_value()?),
                        "enabled" => enabled = map.next_value()?,
                        "timeout" => {
                            let s: String = map.next_value()?;
                            timeout = Some(duration::parse(&s).map_err(de::Error::custom)?);
                        }
                        _ => {
                            let value: serde_yaml::Value = map.next_value()?;
                            if rest.insert(key.clone().into(), value).is_some() {
                                return Err(de::Error::custom(format!("duplicate key `{key}`")));
                            }
                        }
                    }
                }
                let kind = kind.ok_or_else(|| {
                    de::Error::custom(
                        "task has no `kind:` (one of extract, replication, supervisor, exec)",
                    )
                })?;
                let spec = task_spec(&kind, rest).map_err(de::Error::custom)?;
                Ok(Task {
                    name: name.unwrap_or_else(|| kind.clone()),
                    enabled,
                    timeout,
                    spec,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Task, A::Error> {
                Err(de::Error::custom(
                    "a task is a kind name or a mapping, not a list (did you mean command: [...]?)",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// One profile's name, tasks, description and ping URL, each refused with its place in the
/// file.
fn check_profile(text: &str, shown: &str, name: &str, p: &RawProfile) -> anyhow::Result<()> {
    let at = |needle: &str, nth: usize| -> String {
        find_key(text, needle, nth)
            .map(|(l, c)| format!(":{l}:{c}"))
            .unwrap_or_default()
    };
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(config_error(format!(
            "{shown}{}: invalid profile name {name:?} (use 1-64 characters from a-z, 0-9 and -)",
            at(name, 1)
        )));
    }
    if p.tasks.is_empty() {
        return Err(config_error(format!(
            "{shown}{}: profile {name:?} has no tasks (add tasks: [supervisor] or similar, or set enabled: false)",
            at(name, 1)
        )));
    }
    // The description goes into systemd units that run as root: a line break there
    // would be a directive of its own.
    if p.description.chars().any(char::is_control) {
        let profile_line = find_key(text, name, 1).map_or(0, |(l, _)| l);
        let at = find_key_after(text, "description", profile_line, 1)
            .map(|(l, c)| format!(":{l}:{c}"))
            .unwrap_or_default();
        return Err(config_error(format!(
            "{shown}{at}: profile {name:?}: the description contains a control character (a line break, carriage return or tab): write it on one line"
        )));
    }
    if let Some(url) = &p.ping_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(config_error(format!(
                "{shown}{}: profile {name:?}: ping_url {url:?} is not an http(s) URL",
                at("ping_url", 1)
            )));
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for task in &p.tasks {
        if seen.contains(&task.name.as_str()) {
            return Err(config_error(format!(
                "{shown}{}: profile {name:?} has two tasks named {:?} (give one a distinct name:)",
                at(name, 1),
                task.name
            )));
        }
        seen.push(&task.name);
    }
    Ok(())
}

/// A task's options, parsed for its kind and validated (exec's command, supervisor's bounds).
fn task_spec(kind: &str, rest: serde_yaml::Mapping) -> Result<TaskSpec, String> {
    let options = serde_yaml::Value::Mapping(rest);
    let fail = |e: serde_yaml::Error| format!("{kind} task: {}", strip_location(&e.to_string()));
    let spec = match kind {
        "exec" => TaskSpec::Exec(serde_yaml::from_value(options).map_err(fail)?),
        "extract" => TaskSpec::Extract(serde_yaml::from_value(options).map_err(fail)?),
        "replication" => TaskSpec::Replication(serde_yaml::from_value(options).map_err(fail)?),
        "supervisor" => TaskSpec::Supervisor(serde_yaml::from_value(options).map_err(fail)?),
        other => return Err(unknown_kind(other)),
    };
    if let TaskSpec::Exec(exec) = &spec {
        validate_exec(exec)?;
    }
    if let TaskSpec::Supervisor(sup) = &spec {
        for (option, value) in [
            ("namespace", &sup.namespace),
            ("node_label", &sup.node_label),
        ] {
            if !dns_label(value) {
                return Err(format!(
                    "supervisor task: {option} {value:?} is not a Kubernetes name (1-63 lowercase letters, digits and '-', starting and ending alphanumeric)"
                ));
            }
        }
        if let Some(m) = &sup.maintenance {
            maintenance_window(m)?;
        }
        if let (Some(lo), Some(hi)) = (sup.min, sup.max) {
            if lo > hi || hi == 0 {
                return Err(format!(
                    "supervisor task: min {lo} and max {hi} must satisfy min ≤ max and max ≥ 1"
                ));
            }
        }
    }
    Ok(spec)
}

fn unknown_kind(kind: &str) -> String {
    format!(
        "unknown task kind {kind:?} (built-in kinds: {}; use kind: exec with command: [...] for anything else)",
        BUILTIN_KINDS.join(", ")
    )
}

fn validate_exec(exec: &ExecOptions) -> Result<(), String> {
    match (&exec.command, exec.shell) {
        (Command::Argv(argv), _) if argv.is_empty() || argv[0].trim().is_empty() => {
            Err("exec task: command is empty (give [program, args...])".into())
        }
        (Command::Line(line), true) if line.trim().is_empty() => {
            Err("exec task: command is empty".into())
        }
        (Command::Line(_), false) => Err(
            "exec task: command is a string but shell is false: give a list [program, args...] or set shell: true"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// serde_yaml appends " at line L column C"; we print the location up front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(pos) => msg[..pos].to_string(),
        None => msg.to_string(),
    }
}

impl JobsConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> anyhow::Result<JobsConfig> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            config_error(format!(
                "{shown}: cannot read jobs file: {e} (create it, or point --config / OPS_CONFIG at it)"
            ))
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
                let col = valid.iter().rev().take_while(|b| **b != b'\n').count() + 1;
                return Err(config_error(format!(
                    "{shown}:{line}:{col}: the file is not valid UTF-8 (save it as UTF-8)"
                )));
            }
        };
        let mut config = Self::parse(&text, &shown)?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses jobs.yaml text; `shown` is the name used in errors.
    pub fn parse(text: &str, shown: &str) -> anyhow::Result<JobsConfig> {
        if text.trim().is_empty() {
            return Err(config_error(format!(
                "{shown}: the file is empty (start with `version: 1` and a `profiles:` mapping; see docs/configuration.md)"
            )));
        }
        let raw: RawFile = serde_yaml::from_str(text).map_err(|e| {
            let msg = strip_location(&e.to_string());
            let at = e
                .location()
                .map(|l| {
                    let (line, col) = refine_location(text, l.line(), l.column(), &msg);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            config_error(format!("{shown}{at}: {}", hint(&msg)))
        })?;
        let at = |needle: &str, nth: usize| -> String {
            find_key(text, needle, nth)
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default()
        };
        if raw.version != SUPPORTED_VERSION {
            return Err(config_error(format!(
                "{shown}{}: unsupported version {} (this ops reads version {SUPPORTED_VERSION}; set version: 1)",
                at("version", 1),
                raw.version
            )));
        }
        if raw.profiles.0.is_empty() {
            return Err(config_error(format!(
                "{shown}{}: no profiles defined (add at least one under profiles:)",
                at("profiles", 1)
            )));
        }
        let mut profiles: Vec<Profile> = Vec::with_capacity(raw.profiles.0.len());
        for (name, p) in raw.profiles.0 {
            if profiles.iter().any(|q| q.name == name) {
                return Err(config_error(format!(
                    "{shown}{}: duplicate profile name {name:?} (each profile name must be unique; rename or merge one)",
                    at(&name, 2)
                )));
            }
            check_profile(text, shown, &name, &p)?;
            profiles.push(Profile {
                name,
                cron: p.cron.0,
                description: p.description,
                timeout: p.timeout.unwrap_or(DEFAULT_PROFILE_TIMEOUT),
                enabled: p.enabled,
                ping_url: p.ping_url,
                ping_body: p.ping_body,
                renotify_after: p.renotify_after.unwrap_or(DEFAULT_RENOTIFY_AFTER),
                notify_changes: p.notify_changes,
                tasks: p.tasks,
            });
        }
        Ok(JobsConfig {
            path: None,
            lock: match raw.lock {
                Some(RawLock::Postgres) => LockMode::Postgres,
                _ => LockMode::Local,
            },
            profiles,
        })
    }

    pub fn profile(&self, name: &str) -> anyhow::Result<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.profiles.iter().map(|p| p.name.as_str()).collect();
                config_error(format!(
                    "no profile named {name:?} in {} (profiles: {}; see `ops list`)",
                    self.shown_path(),
                    names.join(", ")
                ))
            })
    }

    pub fn shown_path(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the bundled jobs.yaml".into())
    }
}

/// serde_yaml places errors raised while converting a scalar (a bad cron, a bad duration) at
/// the start of the enclosing mapping; point at the offending value instead when the message
/// quotes it, or at the second occurrence of a duplicated field.
fn refine_location(text: &str, line: usize, col: usize, msg: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let from = line.saturating_sub(1);
    if let Some(field) = msg
        .split_once("duplicate field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(f, _)| format!("{f}:"))
    {
        let hits = lines
            .iter()
            .enumerate()
            .skip(from)
            .filter_map(|(i, l)| l.trim_start().starts_with(&field).then_some((i, l)))
            .nth(1);
        if let Some((i, l)) = hits {
            return (i + 1, l.len() - l.trim_start().len() + 1);
        }
        return (line, col);
    }
    let quoted = msg
        .split_once('"')
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v)
        .filter(|v| !v.is_empty());
    if let Some(value) = quoted {
        for (i, l) in lines.iter().enumerate().skip(from) {
            if let Some(pos) = l.find(value) {
                return (i + 1, pos + 1);
            }
        }
    }
    (line, col)
}

/// Adds the fix to serde_yaml's messages that lack one.
fn hint(msg: &str) -> String {
    if msg.contains("unknown field") {
        format!("{msg} (remove or rename the key; see docs/configuration.md)")
    } else if msg.contains("missing field `version`") {
        format!("{msg} (add `version: 1` at the top)")
    } else if msg.contains("missing field") {
        format!("{msg} (add the key)")
    } else if msg.contains("invalid type") {
        format!("{msg} (check the value's type)")
    } else {
        msg.to_string()
    }
}

/// The 1-based line and column of the `nth` line whose first word is `key:`.
fn find_key(text: &str, key: &str, nth: usize) -> Option<(usize, usize)> {
    find_key_after(text, key, 0, nth)
}

/// `find_key` counting from the line after `after` (1-based; 0: the whole text).
fn find_key_after(text: &str, key: &str, after: usize, nth: usize) -> Option<(usize, usize)> {
    let want = format!("{key}:");
    let quoted = format!("\"{key}\":");
    text.lines()
        .enumerate()
        .skip(after)
        .filter_map(|(i, line)| {
            let trimmed = line.trim_start();
            (trimmed.starts_with(&want) || trimmed.starts_with(&quoted))
                .then(|| (i + 1, line.len() - trimmed.len() + 1))
        })
        .nth(nth - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<JobsConfig> {
        JobsConfig::parse(text, "jobs.yaml")
    }

    #[test]
    fn a_maintenance_window_is_a_day_or_any_and_a_utc_start() {
        let w = |m: &str| maintenance_window(m);
        assert_eq!(w("sunday 04:00"), Ok(("sunday".into(), "04:00".into())));
        assert_eq!(w("Sat 23:30"), Ok(("saturday".into(), "23:30".into())));
        assert_eq!(w("any 00:00"), Ok(("any".into(), "00:00".into())));
        for bad in [
            "sunday",
            "sunday 4:00",
            "sunday 24:00",
            "someday 04:00",
            "04:00",
        ] {
            assert!(w(bad).is_err(), "{bad}");
        }
        let task = |m: &str| {
            parse(&format!(
                "version: 1\nprofiles:\n  a:\n    cron: '* * * * *'\n    tasks:\n      - {{kind: supervisor, platform: kubernetes, maintenance: '{m}'}}\n"
            ))
        };
        assert!(task("tuesday 02:00").is_ok());
        let e = task("tuesday 2am").unwrap_err().to_string();
        assert!(
            e.contains("maintenance \"tuesday 2am\" is not \"<day> HH:MM\""),
            "{e}"
        );
    }

    #[test]
    fn bundled_config_is_valid() {
        let c = parse(BUNDLED).unwrap();
        assert!(c.profiles.iter().any(|p| p.name == "hourly"));
    }

    #[test]
    fn bare_and_mapped_tasks() {
        let c = parse(
            "version: 1\nprofiles:\n  a:\n    cron: '* * * * *'\n    tasks:\n      - extract\n      - kind: replication\n        fix: false\n      - kind: exec\n        name: t\n        command: [\"true\"]\n        timeout: 2m\n",
        )
        .unwrap();
        let p = &c.profiles[0];
        assert_eq!(p.tasks.len(), 3);
        assert!(matches!(&p.tasks[1].spec, TaskSpec::Replication(r) if !r.fix));
        assert_eq!(p.tasks[2].timeout, Some(Duration::from_secs(120)));
        assert_eq!(p.timeout, DEFAULT_PROFILE_TIMEOUT);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e =
            parse("version: 1\nprofiles:\n  a:\n    cron: '61 * * * *'\n    tasks: [extract]\n")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("jobs.yaml:4:"), "{e}");
        let e = parse("version: 1\nprofiles:\n  a:\n    cron: '* * * * *'\n    tasks: [extract]\n  a:\n    cron: '* * * * *'\n    tasks: [extract]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("jobs.yaml:6:3: duplicate profile"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512mb").unwrap(), 512 << 20);
        assert!(parse_size("lots").is_err());
    }
}
