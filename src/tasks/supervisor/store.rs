//! Every state key of the supervisor task, in one place: what each holds, who writes it, and
//! the typed readers `ops status` and `/metrics` use (they never name a raw key).
//!
//! | key                  | holds                                            | written by |
//! |----------------------|--------------------------------------------------|------------|
//! | `breaker`            | [`Breaker`]: when replacements were counted      | apply      |
//! | `firewall`           | [`FirewallChecked`]: the firewall last compared  | firewall   |
//! | `last_seen`          | [`DropletStatus`] of each droplet, last run      | apply      |
//! | `queue`              | [`QueueStatus`]: routing and waiting runs        | apply      |
//! | `queue_scan`         | where the next read of waiting runs starts       | apply      |
//! | `sizes`              | DigitalOcean's sizes, kept a day                 | apply      |
//! | `auto_size`          | the size SUPERVISOR_SIZE=auto settled on         | apply      |
//! | `scale`              | [`ScaleStatus`]: the load's verdict and cost     | apply      |
//! | `catalog_checked`    | `catalog::Checked`: the values DigitalOcean's    | observe    |
//! |                      | lists passed, kept a day                         |            |
//! | `created`            | `owned::Record`: the droplets ops created      | owned      |
//! | `image`              | `image::Baked`: the baked image's record (read | image      |
//! |                      | through `image::stored`: image.rs keeps it)      |            |
//! | `droplet:{id}`       | `plan::Streak`: the droplet's health streak, and | apply      |
//! |                      | its drain ([`record_drain`], before the tag)     |            |
//! | `droplet:{id}:built` | `diff::Parts`: what it was created with        | apply      |
//! | `droplet:{id}:disk`  | `disk::Reading`: its last disk reading         | apply      |
//! | `kubernetes`         | [`KubernetesStatus`]: the workload, last run     | kubernetes |
//! | `kubernetes_leaving` | `leave_kubernetes::Stopped`: when ops stopped    | leave_     |
//! |                      | the Kubernetes supervisor's dequeue              | kubernetes |
//! | `doks`               | `kubernetes::cluster::Record`: the DOKS cluster  | kubernetes |
//! |                      | and node pools ops created or adopted            |            |
//! | `doks_credentials`   | the cluster's API credentials, sealed            | kubernetes |
//! | `doks_sizes`         | DOKS options and droplet sizes, kept a day       | kubernetes |
//! | `doks_upgrades`      | the cluster's available upgrades, kept a day     | kubernetes |

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::State;
use crate::task::TaskCtx;

pub use super::capacity::ScaleStatus;
pub use super::disk::DiskStatus;
pub use super::flow::QueueStatus;

/// The supervisor task's state namespace.
pub const NAMESPACE: &str = "supervisor";
pub const BREAKER_KEY: &str = "breaker";
pub const FIREWALL_KEY: &str = "firewall";
pub const LAST_SEEN_KEY: &str = "last_seen";
pub const QUEUE_KEY: &str = "queue";
pub const SCAN_KEY: &str = "queue_scan";
pub const SIZES_KEY: &str = "sizes";
pub const AUTO_SIZE_KEY: &str = "auto_size";
pub const SCALE_KEY: &str = "scale";
/// The size, region and image DigitalOcean's lists last passed (`catalog::Checked`).
pub const CATALOG_KEY: &str = "catalog_checked";
/// `platform: kubernetes`: the workload as the last run saw it ([`KubernetesStatus`]).
pub const KUBERNETES_KEY: &str = "kubernetes";
/// Moving back to droplets: when ops stopped the Kubernetes supervisor taking runs.
pub const KUBERNETES_LEAVING_KEY: &str = "kubernetes_leaving";
/// The ownership record (not under `droplet:`, which [`prune`] clears).
pub const CREATED_KEY: &str = "created";
pub const IMAGE_KEY: &str = "image";
/// DigitalOcean Kubernetes (`kubernetes/`): the record, the sealed credentials, the options
/// and sizes, the upgrades.
pub const DOKS_KEY: &str = "doks";
pub const DOKS_CREDENTIALS_KEY: &str = "doks_credentials";
pub const DOKS_SIZES_KEY: &str = "doks_sizes";
pub const DOKS_UPGRADES_KEY: &str = "doks_upgrades";
/// The counter of counted replacements, for `/metrics` (`ops_supervisor_replacements_total`).
pub const REPLACEMENTS_COUNTER: &str = "supervisor_replacements";

/// The droplet's health streak.
pub fn droplet_key(id: u64) -> String {
    format!("droplet:{id}")
}

/// What a droplet was created with, field by field (for the plan's diff once it is stale).
pub fn built_key(id: u64) -> String {
    format!("droplet:{id}:built")
}

/// The droplet's last disk reading.
pub fn disk_key(id: u64) -> String {
    format!("droplet:{id}:disk")
}

/// The circuit breaker: when replacements were counted (Unix ms).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Breaker {
    pub replacements: Vec<i64>,
}

impl Breaker {
    /// The replacements counted within `window` of `now` (Unix ms).
    pub fn recent(&self, now: i64, window: std::time::Duration) -> usize {
        let window = window.as_millis() as i64;
        self.replacements
            .iter()
            .filter(|t| now - **t < window)
            .count()
    }
}

/// The firewall as last compared with the wanted rules.
#[derive(Debug, Serialize, Deserialize)]
pub struct FirewallChecked {
    pub id: String,
    pub hash: String,
    pub checked_at: i64,
}

/// One droplet as the last run saw it, for `ops status` and `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropletStatus {
    pub id: u64,
    pub name: String,
    pub ip: Option<String>,
    pub health: String,
    pub fails: u32,
    pub spec_current: bool,
    pub age_secs: i64,
    pub deleted: bool,
    /// Seconds since the webapp's last heartbeat from it (`None`: never, or no webapp view).
    #[serde(default)]
    pub heartbeat_age_secs: Option<f64>,
    /// Runs executing on it per the webapp's database (`None`: not known).
    #[serde(default)]
    pub executing_runs: Option<usize>,
    /// It is draining: told to stop taking runs, deleted once idle.
    #[serde(default)]
    pub draining: bool,
    /// Its root filesystem as last read (`None`: not read yet, e.g. younger than 5 minutes).
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

/// The supervisor on Kubernetes as the last run saw it, for `ops status` and `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubernetesStatus {
    pub namespace: String,
    pub server: String,
    pub version: String,
    /// `healthy`, `starting` or `failing`.
    pub health: String,
    pub supervisors: Vec<KubernetesPod>,
    /// Run pods waiting for a node longer than `pending_after`.
    pub pending: Vec<PendingPod>,
    /// DigitalOcean Kubernetes: the cluster, its pools and their cost (`None`: `kubeconfig:`).
    #[serde(default)]
    pub doks: Option<DoksStatus>,
}

/// A DOKS cluster as the last run saw it (its strings as DigitalOcean sent them: escape them
/// where shown).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DoksStatus {
    pub cluster: String,
    pub id: String,
    pub version: String,
    /// DigitalOcean's `status.state` (`running`, `provisioning`, …).
    pub state: String,
    pub ha: bool,
    pub pools: Vec<DoksPool>,
    /// Nodes now × the size's monthly price, plus the HA control plane (USD; `None`: no price
    /// list read yet).
    pub monthly_cost_usd: Option<f64>,
    /// Versions DigitalOcean offers to upgrade to (ops never starts one).
    #[serde(default)]
    pub upgrades: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DoksPool {
    pub name: String,
    pub size: String,
    pub nodes: u32,
    pub min: u32,
    pub max: u32,
    pub auto_scale: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubernetesPod {
    pub name: String,
    pub ready: bool,
    /// Seconds since the webapp's last heartbeat from it (`None`: never, or no webapp view).
    pub heartbeat_age_secs: Option<f64>,
    /// Why it is not up, when it is not.
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPod {
    pub pod: String,
    pub preset: Option<String>,
    pub waited_secs: i64,
    pub reason: String,
}

/// The Kubernetes workload as the last run saw it, and when (Unix ms).
pub fn kubernetes(state: &State) -> anyhow::Result<Option<(KubernetesStatus, i64)>> {
    state.kv_get(NAMESPACE, KUBERNETES_KEY)
}

/// A kept value; an unreadable one counts as none (the state's own rule).
pub fn load<T: DeserializeOwned>(state: Option<&State>, key: &str) -> Option<T> {
    state
        .and_then(|s| s.kv_get(NAMESPACE, key).ok().flatten())
        .map(|(v, _)| v)
}

/// A kept value and when it was written (Unix ms).
pub fn load_at<T: DeserializeOwned>(state: Option<&State>, key: &str) -> Option<(T, i64)> {
    state.and_then(|s| s.kv_get(NAMESPACE, key).ok().flatten())
}

pub fn save<T: Serialize>(ctx: &TaskCtx, key: &str, value: &T, now: i64) -> anyhow::Result<()> {
    ctx.writable_state()?.kv_set(NAMESPACE, key, value, now)
}

pub fn set<T: Serialize>(st: &State, key: &str, value: &T, now: i64) -> anyhow::Result<()> {
    st.kv_set(NAMESPACE, key, value, now)
}

pub fn delete(st: &State, key: &str) -> anyhow::Result<()> {
    st.kv_delete(NAMESPACE, key)
}

/// A drain ops starts, kept in the droplet's streak at once (before its tag and shutdown): only
/// a recorded drain is honoured, so a run that fails after them still knows it started it.
pub fn record_drain(ctx: &TaskCtx, id: u64, drain: super::drain::Drain) -> anyhow::Result<()> {
    let key = droplet_key(id);
    let mut streak: super::facts::Streak = load(ctx.state, &key).unwrap_or_default();
    streak.drain.get_or_insert(drain);
    save(ctx, &key, &streak, crate::state::now_ms())
}

/// Drops every `droplet:` key but those in `keep` (droplets gone or deleted) and those written
/// since `since` (the run began): a droplet this run created keeps its build record, which
/// names each field a later spec drift changes.
pub fn prune(st: &State, keep: &[String], since: i64) -> anyhow::Result<()> {
    for (key, _, at) in st.kv_list(NAMESPACE)? {
        if key.starts_with("droplet:") && !keep.contains(&key) && at < since {
            st.kv_delete(NAMESPACE, &key)?;
        }
    }
    Ok(())
}

/// The droplets the last run saw, and when it ran (Unix ms).
pub fn last_droplets(state: &State) -> anyhow::Result<Option<(Vec<DropletStatus>, i64)>> {
    state.kv_get(NAMESPACE, LAST_SEEN_KEY)
}

/// The load's verdict and the fleet's cost, as the last run saw them.
pub fn scale(state: &State) -> anyhow::Result<Option<(ScaleStatus, i64)>> {
    state.kv_get(NAMESPACE, SCALE_KEY)
}

/// Routing and the waiting runs, as the last run read them.
pub fn queue(state: &State) -> anyhow::Result<Option<(QueueStatus, i64)>> {
    state.kv_get(NAMESPACE, QUEUE_KEY)
}

/// The circuit breaker's counted replacements (none when nothing is kept).
pub fn breaker(state: &State) -> anyhow::Result<Breaker> {
    Ok(state
        .kv_get(NAMESPACE, BREAKER_KEY)?
        .map(|(b, _)| b)
        .unwrap_or_default())
}
