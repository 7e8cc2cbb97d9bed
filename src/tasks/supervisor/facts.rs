//! The facts the decisions read, in ops' own words: what a platform's observe turns its raw
//! listing into (observe.rs for DigitalOcean), so no decision reads a platform's status or tag
//! string and a second platform can feed the same decisions.

use serde::{Deserialize, Serialize};

use super::diff;
use super::drain::{Drain, Shutdown};

/// A kind of machine a supervisor runs on (a DigitalOcean size): what one takes, what it costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub slug: String,
    pub vcpus: u32,
    /// Memory in MB.
    pub memory: u64,
    /// Disk in GB.
    pub disk: u64,
    pub price_monthly: f64,
    /// Where it can be made (empty: not said).
    pub regions: Vec<String>,
    pub available: bool,
}

/// Whether a machine is up, as its platform says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Power {
    /// Running (DigitalOcean `active`).
    Up,
    /// Shut down (DigitalOcean `off`): a drained droplet ends so.
    Off,
    /// Anything else (DigitalOcean `new`, `archive`): the platform's word, shown, never read.
    Other(String),
}

impl Power {
    /// The platform's word, for the report.
    pub fn word(&self) -> &str {
        match self {
            Power::Up => "active",
            Power::Off => "off",
            Power::Other(w) => w,
        }
    }

    pub fn up(&self) -> bool {
        *self == Power::Up
    }
}

/// One of our supervisor machines (a droplet) as observed this run.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: u64,
    pub name: String,
    pub power: Power,
    pub ip: Option<String>,
    pub age_secs: i64,
    /// Marked draining on the platform. The mark alone proves nothing (anyone who may tag can
    /// set it): only a drain the state recorded counts ([`Instance::draining`]); a mark without
    /// one is reported (plan.rs, `unrecorded_drains`).
    pub drain_marked: bool,
    /// The specs it says it was built to (`ops-spec-…`): current when one is this run's.
    pub specs: Vec<String>,
    /// The supervisor version it says it runs.
    pub version: Option<String>,
    /// It can be told to stop taking runs (created with the drain service).
    pub capable: bool,
    /// The streak kept from earlier runs.
    pub prev: Streak,
    /// What it was built with, as far as known (for the plan's field diff).
    pub built: diff::Parts,
    pub heartbeat: Heartbeat,
    /// `GET /health`, when SUPERVISOR_HEALTH_SOURCES lets ops in; `None`: not checked.
    pub http: Option<Result<(), String>>,
    /// The runs executing on it per the webapp's database (friendly ids); `None`: not known.
    pub runs: Option<Vec<String>>,
    /// What the platform says of the shutdown ops sent it, when it drains.
    pub shutdown: Shutdown,
}

impl Instance {
    /// On its way out: a drain ops' state recorded starting.
    pub fn draining(&self) -> bool {
        self.prev.drain.is_some()
    }

    /// Built to this run's spec.
    pub fn current(&self, spec_tag: &str) -> bool {
        self.specs.iter().any(|s| s == spec_tag)
    }
}

/// Per-droplet health streak, kept between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Streak {
    pub fails: u32,
    pub last_ok: Option<i64>,
    pub last_error: Option<String>,
    /// Set while the droplet drains (told to stop taking runs; deleted once idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
    /// Since when the webapp's database has shown no run on it (Unix ms); `None`: busy or
    /// not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<i64>,
}

/// What the webapp's database says of one droplet.
#[derive(Debug, Clone, PartialEq)]
pub enum Heartbeat {
    /// No webapp view this run (no DATABASE_URL, token unknown, tables missing): the reason.
    NoView,
    /// No `WorkerInstance` row with this name, or one that never heartbeated.
    Never,
    /// Seconds since `lastHeartbeatAt`, as the database's clock says.
    Age(f64),
    /// Never heard in our group, but heartbeating into another one (it holds that group's
    /// token: a host that lost ops' state, say): neither counted nor replaced.
    Elsewhere { group: String, age: f64 },
}
