//! The desired state of the fleet and the rules it is judged by, resolved from jobs.yaml and
//! the settings (inputs.rs) and refined by this run's load verdict (decide.rs); and the tags a
//! droplet made to it carries.

use std::time::Duration;

use super::diff;
use super::drain;
use super::health::Rules;
use crate::release;
use crate::settings::MANAGED_TAG;

/// The desired state and the rules, resolved from jobs.yaml and the settings.
#[derive(Debug, Clone)]
pub struct Spec {
    pub count: usize,
    /// The deployment tag.
    pub tag: String,
    /// The spec tag of a droplet built the way this run would build it.
    pub spec_tag: String,
    pub version: release::Chosen,
    /// `release::describe`: the version and where it comes from.
    pub version_line: String,
    pub rules: Rules,
    pub unhealthy_after: u32,
    pub max_replacements: u32,
    pub replacement_window: Duration,
    /// SUPERVISOR_HEALTH_SOURCES is set (the HTTP check runs).
    pub health_sources: bool,
    /// Make before break: a failing droplet gets its replacement at the first failing check and
    /// is deleted once the others carry the load. (Off only to simulate the older policy.)
    pub standby: bool,
    /// Tell "this supervisor stopped" from "the webapp stopped recording heartbeats" before
    /// counting a silence. (Off only to simulate the older policy.)
    pub blame_webapp: bool,
    pub reset_breaker: bool,
    pub profile: String,
    pub size: String,
    pub region: String,
    pub image: String,
    /// The parts of `spec_tag`, for the field diff of a stale droplet.
    pub parts: diff::Parts,
    /// How long a droplet leaving for a planned reason may drain; zero: deleted at once.
    pub drain_timeout: Duration,
    /// The most droplets (`count` is what the load wants now; the refusal is past `max + 1`).
    pub max: usize,
    /// Scaling by load: a surplus droplet goes only once it executed nothing this long
    /// (`None`: a fixed fleet, the newest surplus goes).
    pub scale_in_after: Option<Duration>,
    /// Creates allowed this run beyond the first (scaling out; the account's droplet limit).
    pub extra_creates: usize,
    /// Why the fleet wants `count` (for the report), when it scales by load.
    pub scale_line: Option<String>,
}

impl Spec {
    /// The tags a droplet made to this spec carries (what the create sends): the deployment's,
    /// ops', the spec's, the version's, the drain service's when its supervisor can drain, and
    /// the 10 s heartbeat's.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![
            self.tag.clone(),
            MANAGED_TAG.into(),
            self.spec_tag.clone(),
            release::version_tag(&self.version.tag),
        ];
        if crate::cloudinit::drains(&self.version.tag) {
            tags.push(drain::CAPABLE_TAG.into());
        }
        tags.push(crate::cloudinit::BEAT_TAG.into());
        tags
    }
}
