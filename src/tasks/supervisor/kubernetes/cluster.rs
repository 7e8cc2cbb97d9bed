//! Which DigitalOcean Kubernetes cluster the supervisor runs on, pure. `cluster: <id or name>`
//! adopts one; without it ops creates one (named after the deployment tag, tagged, in
//! `SUPERVISOR_REGION`, the newest version DigitalOcean offers, `ha` sent explicitly, a
//! maintenance window and surge upgrades) and records it as its own. **No step ever deletes a
//! cluster**, ops' own included: there is no such step, nor a client call for it.
//!
//! The record (`supervisor/doks`, beside the droplet record) is what ops created: the cluster
//! (or the one adopted), the node pools (only these may ever be deleted), and the create sent
//! whose answer was not heard, so a lost answer never makes a second cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clients::doks::{
    AutoscalerConfig, Cluster, ClusterState, MaintenancePolicy, NewCluster, NewNodePool, Options,
    Version,
};
use crate::state::State;

use crate::tasks::supervisor::store::{DOKS_KEY as KEY, NAMESPACE};
/// A create whose answer was lost: a cluster of that name is ops' own when DigitalOcean says it
/// was created no earlier than this before the call (clocks differ).
const PENDING_SKEW_MS: i64 = 3_600_000;
/// The cluster ops created, answered 404 for, is forgotten (and a new one created) only once it
/// has been unseen this long, every run in between failing: a token of another team gets a 404
/// as well, and forgetting on the first would create a second cluster in that team.
const UNSEEN_BEFORE_FORGET_MS: i64 = 24 * 3_600_000;
/// A cluster still provisioning this long after its create fails the run (DigitalOcean's usual
/// is 5-10 minutes, an HA one's a little more); ops goes on waiting, and never deletes it.
const PROVISIONING_LIMIT_MS: i64 = 3_600_000;
/// The note of a cluster whose create's answer was lost, found since and recorded as ops' own:
/// the create's change, never heard, becomes an event then (`on_doks`).
pub const UNHEARD_CREATE: &str = "ops sent its create and never heard DigitalOcean's answer; the cluster was created since: recorded as ops' own";
/// The maintenance window when `maintenance:` is not set: Sunday 04:00 UTC, the quietest hour
/// of most teams' week (DOKS windows last 4 hours).
pub const DEFAULT_MAINTENANCE_DAY: &str = "sunday";
pub const DEFAULT_MAINTENANCE_START: &str = "04:00";

/// What the task asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// `cluster: <id or name>`: adopt that cluster instead of creating one.
    pub adopt: Option<String>,
    /// The name of a cluster ops creates (the deployment tag).
    pub name: String,
    /// Its tags (the deployment tag and ops' managed tag).
    pub tags: Vec<String>,
    pub region: String,
    /// `ha: true`; sent as false otherwise (it cannot be turned off once on).
    pub ha: bool,
    /// `day` and `HH:MM` UTC.
    pub maintenance: (String, String),
    /// `scale_in_after`: how long a node must be unneeded before the autoscaler removes it.
    pub scale_in_after: Duration,
}

/// What ops keeps about DigitalOcean Kubernetes between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub cluster: Option<Recorded>,
    /// A cluster create sent whose answer was not heard: (name, Unix ms).
    #[serde(default)]
    pub pending: Option<(String, i64)>,
    /// Node pools ops created (by id): the only ones it ever cordons or deletes.
    #[serde(default)]
    pub pools: Vec<PoolEntry>,
    /// Node pool creates sent whose answer was not heard: (name, Unix ms).
    #[serde(default)]
    pub pending_pools: Vec<(String, i64)>,
    /// Pools ops is retiring (a size change): when their nodes were first cordoned.
    #[serde(default)]
    pub retiring: Vec<Retiring>,
    /// Since when DigitalOcean has answered 404 for the cluster ops created, run after run:
    /// (its id, Unix ms); `None` while it is seen. Kept for that cluster only: another
    /// recorded since starts its own day.
    #[serde(default)]
    pub unseen: Option<(String, i64)>,
    /// The cluster ops created (its id) that DigitalOcean showed `deleting` when last seen: a
    /// 404 for it now is its deletion finished, and it is forgotten at once.
    #[serde(default)]
    pub deleting: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub id: String,
    pub name: String,
    /// ops created it (false: adopted through `cluster:`).
    pub created: bool,
    /// When it was recorded (Unix ms).
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolEntry {
    pub id: String,
    pub name: String,
    pub size: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retiring {
    pub id: String,
    /// When its nodes were first cordoned (Unix ms): `drain_timeout` counts from here.
    pub since: i64,
}

impl Record {
    pub fn owns_pool(&self, id: &str) -> bool {
        self.pools.iter().any(|p| p.id == id)
    }

    /// A pool DigitalOcean answered for: recorded as ops' own.
    pub fn pool_created(&mut self, id: &str, name: &str, size: &str, now: i64) {
        self.pending_pools.retain(|(n, _)| n != name);
        if !self.owns_pool(id) {
            self.pools.push(PoolEntry {
                id: id.into(),
                name: name.into(),
                size: size.into(),
                at: now,
            });
        }
    }

    /// The cluster recorded now (created or adopted). What was kept about another one goes
    /// with it: its 404s, its deletion, and the pool creates sent to it, whose names must not
    /// claim a pool of this one.
    fn record_cluster(&mut self, r: Recorded) {
        if self.cluster.as_ref().is_none_or(|c| c.id != r.id) {
            self.forget_cluster();
        }
        self.cluster = Some(r);
    }

    /// The cluster forgotten (gone from DigitalOcean), with its pools and all kept about it. A
    /// create sent whose answer is unheard stays: it is not of this cluster (one is only ever
    /// sent while no cluster of ops' own is recorded, and its answer clears it).
    pub fn forget_cluster(&mut self) {
        self.cluster = None;
        self.pools.clear();
        self.retiring.clear();
        self.pending_pools.clear();
        self.unseen = None;
        self.deleting = None;
    }

    /// A pool deleted (or found gone): forgotten.
    pub fn pool_gone(&mut self, id: &str) {
        self.pools.retain(|p| p.id != id);
        self.retiring.retain(|r| r.id != id);
    }

    /// The cluster DigitalOcean answered for: recorded as ops' own.
    pub fn cluster_created(&mut self, c: &Cluster, now: i64) {
        self.pending = None;
        self.record_cluster(Recorded {
            id: c.id.clone(),
            name: c.name.clone(),
            created: true,
            at: now,
        });
        for p in &c.node_pools {
            self.pool_created(&p.id, &p.name, &p.size, now);
        }
    }
}

/// The record as last saved (`None`: none yet, or unreadable). Losing it is safe: the cluster
/// is then found by name and refused rather than duplicated, and no pool is ops' own.
pub fn load(state: &State) -> anyhow::Result<Option<Record>> {
    Ok(state.kv_get(NAMESPACE, KEY)?.map(|(r, _)| r))
}

pub fn save(state: &State, record: &Record, now: i64) -> anyhow::Result<()> {
    state.kv_set(NAMESPACE, KEY, record, now)
}

/// How to find the cluster this run: one request in the steady state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `GET /v2/kubernetes/clusters/{id}`.
    Id(String),
    /// The listing, matched by name.
    Name(String),
}

pub fn lookup(spec: &ClusterSpec, record: &Record) -> Lookup {
    match (&spec.adopt, &record.cluster) {
        (Some(key), Some(r)) if &r.id == key || &r.name == key => Lookup::Id(r.id.clone()),
        (Some(key), _) if crate::clients::doks::is_cluster_id(key) => Lookup::Id(key.clone()),
        (Some(key), _) => Lookup::Name(key.clone()),
        (None, Some(r)) if r.created => Lookup::Id(r.id.clone()),
        (None, _) => Lookup::Name(spec.name.clone()),
    }
}

/// What to do about the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Work on this cluster; `ready` once DigitalOcean says `running` (or `upgrading` /
    /// `degraded`: its API answers), not yet while `provisioning`. `note`: what to tell the
    /// operator.
    Use {
        cluster: Box<Cluster>,
        ready: bool,
        note: Option<String>,
    },
    /// Create one (`new_cluster` makes the body from the options).
    Create,
    /// The cluster ops created is gone from DigitalOcean (reported `deleted`, unseen for a
    /// day, or unseen once last seen `deleting`): the record returned has forgotten it, its
    /// pools and all kept about it (the next run creates one).
    Forget { name: String, id: String },
    /// Stop, with one line saying why and the fix (the task fails): a cluster in error, being
    /// deleted, in an unknown state, provisioning far too long, or unseen with this token.
    Refuse(String),
}

/// Decides from the record and what the lookup found, and returns the record to keep.
pub fn decide(
    spec: &ClusterSpec,
    prev: &Record,
    found: Option<Cluster>,
    now: i64,
) -> (Step, Record) {
    let mut record = prev.clone();
    if let Some(key) = &spec.adopt {
        let Some(c) = found else {
            return (
                Step::Refuse(format!(
                    "cluster {key:?} (jobs.yaml `cluster:`) is not in this DigitalOcean account: give the id or name `doctl kubernetes cluster list` shows, or remove `cluster:` to let ops create one"
                )),
                record,
            );
        };
        let adopted = record.cluster.as_ref().is_none_or(|r| r.id != c.id);
        if adopted {
            record.record_cluster(Recorded {
                id: c.id.clone(),
                name: c.name.clone(),
                created: false,
                at: now,
            });
        }
        return (
            use_step(
                c,
                adopted.then(|| "adopted (jobs.yaml `cluster:`); ops never deletes it".to_string()),
                now,
            ),
            record,
        );
    }
    match (prev.cluster.as_ref().filter(|r| r.created), found) {
        // DigitalOcean itself says so, to this very token: gone.
        (Some(_), Some(c)) if c.status.state == ClusterState::Deleted => {
            record.forget_cluster();
            (
                Step::Forget {
                    name: c.name,
                    id: c.id,
                },
                record,
            )
        }
        (Some(_), Some(c)) => {
            record.unseen = None;
            record.deleting = (c.status.state == ClusterState::Deleting).then(|| c.id.clone());
            (use_step(c, None, now), record)
        }
        (Some(r), None) => (unseen(r, &mut record, now), record),
        (None, Some(c)) => {
            let unheard = prev.pending.as_ref().is_some_and(|(name, at)| {
                name == &c.name && created_ms(&c).is_some_and(|t| t >= at - PENDING_SKEW_MS)
            });
            if unheard {
                // Told apart by `unheard_create` whatever the step: refused in error, it is
                // still ops' own from now on, and its create an event.
                record.cluster_created(&c, now);
                return (use_step(c, None, now), record);
            }
            (
                Step::Refuse(format!(
                    "a cluster named {:?} ({}) exists that ops has no record of creating: adopt it with `cluster: {}` in jobs.yaml, or rename it in DigitalOcean",
                    c.name, c.id, c.name
                )),
                record,
            )
        }
        (None, None) => (Step::Create, record),
    }
}

fn created_ms(c: &Cluster) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(&c.created_at)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The line saying a lost create's cluster was recorded as ops' own by this decision (`prev`
/// to `next`), whatever its step (used, waited for or refused): `on_doks` makes it the
/// create's event.
pub fn unheard_create(prev: &Record, next: &Record) -> Option<String> {
    let r = next.cluster.as_ref().filter(|r| r.created)?;
    let recorded = prev.pending.is_some()
        && next.pending.is_none()
        && prev.cluster.as_ref().is_none_or(|p| p.id != r.id);
    recorded.then(|| format!("cluster {} ({}): {UNHEARD_CREATE}", r.name, r.id))
}

/// The cluster ops created answered 404: the run fails, saying so, until it has been unseen
/// for [`UNSEEN_BEFORE_FORGET_MS`]; then it is forgotten. Last seen `deleting`, the 404 is its
/// deletion finished: forgotten at once.
fn unseen(r: &Recorded, record: &mut Record, now: i64) -> Step {
    let since = match &record.unseen {
        Some((id, since)) if id == &r.id => *since,
        _ => now,
    };
    record.unseen = Some((r.id.clone(), since));
    if now - since >= UNSEEN_BEFORE_FORGET_MS || record.deleting.as_deref() == Some(&r.id) {
        record.forget_cluster();
        return Step::Forget {
            name: r.name.clone(),
            id: r.id.clone(),
        };
    }
    let hours = UNSEEN_BEFORE_FORGET_MS / 3_600_000;
    Step::Refuse(format!(
        "cluster {} ({}), which ops created, is not visible with this DIGITALOCEAN_TOKEN (HTTP 404 for {} minutes): if the token changed, give ops the token of the team that owns the cluster; if the cluster was deleted, ops forgets it once it has been unseen for {hours} hours and then creates a new one (or adopt another at once with `cluster:` in jobs.yaml)",
        r.name,
        r.id,
        (now - since) / 60_000
    ))
}

/// The cluster found: used once its API answers, waited for while DigitalOcean provisions it,
/// refused (the run fails, naming it) in error, being deleted, in a state ops does not know,
/// or provisioning far longer than usual.
fn use_step(c: Cluster, note: Option<String>, now: i64) -> Step {
    let fix = format!(
        "see `doctl kubernetes cluster get {}` or the control panel",
        c.id
    );
    let refuse = |why: String| Step::Refuse(format!("cluster {} ({}): {why}", c.name, c.id));
    let (ready, why) = match c.status.state {
        ClusterState::Running => (true, None),
        ClusterState::Upgrading => (true, Some("DigitalOcean is upgrading it".to_string())),
        ClusterState::Degraded => (
            true,
            Some(format!("DigitalOcean reports it degraded{}", message(&c))),
        ),
        ClusterState::Provisioning => match created_ms(&c).map(|t| now - t) {
            Some(ms) if ms > PROVISIONING_LIMIT_MS => {
                return refuse(format!(
                    "DigitalOcean is still provisioning it {} minutes after its create (usually 5-10){}: {fix}, or ask DigitalOcean support; ops goes on waiting and never deletes it",
                    ms / 60_000,
                    message(&c)
                ))
            }
            _ => (
                false,
                Some("DigitalOcean is still provisioning it (usually 5-10 minutes)".into()),
            ),
        },
        ClusterState::Error => {
            return refuse(format!(
                "DigitalOcean reports it in error{}, so no supervisor runs: {fix}; ops applies the supervisor once it runs again and never deletes it",
                message(&c)
            ))
        }
        ClusterState::Deleting | ClusterState::Deleted => {
            let what = if c.status.state == ClusterState::Deleting {
                "DigitalOcean is deleting it"
            } else {
                "DigitalOcean reports it deleted"
            };
            return refuse(format!(
                "{what}, so no supervisor can run on it: if jobs.yaml `cluster:` names it, name another or remove `cluster:` (ops then creates its own); if ops created it, ops forgets it once the deletion is done (DigitalOcean reports it deleted, or no longer finds it) and then creates a new one ({fix})"
            ));
        }
        ClusterState::Other => {
            return refuse(format!(
                "DigitalOcean reports a state this ops does not know{}: {fix}; a newer ops may know it",
                message(&c)
            ))
        }
    };
    let note = match (note, why) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    Step::Use {
        cluster: Box::new(c),
        ready,
        note,
    }
}

/// ` (DigitalOcean's message)`, as it came: every sink escapes it (`redact::line`).
fn message(c: &Cluster) -> String {
    c.status
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

/// The newest version DigitalOcean offers (by upstream version, then its revision).
pub fn newest_version(options: &Options) -> Option<&Version> {
    options
        .versions
        .iter()
        .filter_map(|v| v.key().map(|k| (k, v)))
        .max_by_key(|(k, _)| *k)
        .map(|(_, v)| v)
}

/// The body of the create: both pools in it (a cluster needs one node at least). `Err`: one
/// line saying why not and the fix.
pub fn new_cluster(
    spec: &ClusterSpec,
    options: &Options,
    pools: Vec<NewNodePool>,
) -> Result<NewCluster, String> {
    if !options.regions.iter().any(|r| r.slug == spec.region) {
        let offered: Vec<&str> = options.regions.iter().map(|r| r.slug.as_str()).collect();
        return Err(format!(
            "SUPERVISOR_REGION={} has no DigitalOcean Kubernetes; regions that do: {}",
            spec.region,
            offered.join(", ")
        ));
    }
    let version = newest_version(options).ok_or(
        "DigitalOcean offers no Kubernetes version (GET /v2/kubernetes/options): try again later",
    )?;
    for p in &pools {
        if !options.sizes.iter().any(|s| s.slug == p.size) {
            return Err(format!(
                "size {} (node pool {}) is not offered for DigitalOcean Kubernetes: set SUPERVISOR_SIZE to one `doctl kubernetes options sizes` lists",
                p.size, p.name
            ));
        }
    }
    Ok(NewCluster {
        name: spec.name.clone(),
        region: spec.region.clone(),
        version: version.slug.clone(),
        tags: spec.tags.clone(),
        node_pools: pools,
        maintenance_policy: MaintenancePolicy {
            day: spec.maintenance.0.clone(),
            start_time: spec.maintenance.1.clone(),
            duration: None,
        },
        // Patch upgrades drain every node, evicting the runs on it: ops reports the upgrades
        // available and the operator picks the hour (docs/kubernetes.md).
        auto_upgrade: false,
        surge_upgrade: true,
        ha: spec.ha,
        cluster_autoscaler_configuration: AutoscalerConfig {
            scale_down_unneeded_time: Some(go_duration(spec.scale_in_after)),
            scale_down_utilization_threshold: None,
        },
    })
}

/// A duration as Go prints it (`10m0s`, `1h30m0s`, `45s`): what the autoscaler's
/// `scale_down_unneeded_time` takes.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// The `day HH:MM` of `maintenance:`, checked; `Err` names the valid values.
pub fn parse_maintenance(text: &str) -> Result<(String, String), String> {
    let mut words = text.split_whitespace();
    let (Some(day), Some(time), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!(
            "maintenance {text:?}: expected a day and a UTC time, e.g. \"sunday 04:00\""
        ));
    };
    let day = day.to_ascii_lowercase();
    let known = day == "any"
        || (day.len() > 3 && day.parse::<chrono::Weekday>().is_ok() && day.ends_with("day"));
    if !known {
        return Err(format!(
            "maintenance day {day:?}: use any, or a day of the week in full (monday … sunday)"
        ));
    }
    let ok = chrono::NaiveTime::parse_from_str(time, "%H:%M").is_ok() && time.len() == 5;
    if !ok {
        return Err(format!(
            "maintenance time {time:?}: use HH:MM in UTC, e.g. 04:00"
        ));
    }
    Ok((day, time.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::doks::{ClusterStatus, OptionSlug};

    const ID: &str = "bd5f5959-5e1e-4205-a714-a914373942af";

    fn spec() -> ClusterSpec {
        ClusterSpec {
            adopt: None,
            name: "trigger-supervisor-abcd1234".into(),
            tags: vec!["trigger-supervisor-abcd1234".into(), "ops-managed".into()],
            region: "nyc1".into(),
            ha: false,
            maintenance: ("sunday".into(), "04:00".into()),
            scale_in_after: Duration::from_secs(600),
        }
    }

    fn cluster(name: &str, state: ClusterState, created_at: &str) -> Cluster {
        Cluster {
            id: ID.into(),
            name: name.into(),
            region: "nyc1".into(),
            version: "1.34.1-do.0".into(),
            endpoint: String::new(),
            tags: vec![],
            node_pools: vec![],
            status: ClusterStatus {
                state,
                message: None,
            },
            created_at: created_at.into(),
            ha: Some(false),
            auto_upgrade: None,
            surge_upgrade: None,
            maintenance_policy: None,
            cluster_autoscaler_configuration: None,
        }
    }

    fn own(created: bool) -> Record {
        Record {
            cluster: Some(Recorded {
                id: ID.into(),
                name: "trigger-supervisor-abcd1234".into(),
                created,
                at: 0,
            }),
            ..Record::default()
        }
    }

    /// `cluster: prod`, and prod (running; not the cluster `own` records).
    fn adopting_prod() -> (ClusterSpec, Cluster) {
        let adopt = ClusterSpec {
            adopt: Some("prod".into()),
            ..spec()
        };
        let mut prod = cluster("prod", ClusterState::Running, "");
        prod.id = "0a7e1ee5-0000-4000-8000-000000000001".into();
        (adopt, prod)
    }

    fn options() -> Options {
        let v = |s: &str| Version {
            slug: s.into(),
            kubernetes_version: s.split('-').next().unwrap().into(),
            supported_features: vec![],
        };
        let slug = |s: &str| OptionSlug {
            name: s.into(),
            slug: s.into(),
        };
        Options {
            versions: vec![
                v("1.33.5-do.2"),
                v("1.34.1-do.0"),
                v("1.34.1-do.1"),
                v("latest"),
            ],
            regions: vec![slug("nyc1"), slug("fra1")],
            sizes: vec![slug("s-2vcpu-2gb"), slug("s-4vcpu-8gb")],
        }
    }

    #[test]
    fn the_lookup_is_one_get_by_id_once_the_cluster_is_recorded() {
        let s = spec();
        assert_eq!(lookup(&s, &Record::default()), Lookup::Name(s.name.clone()));
        assert_eq!(lookup(&s, &own(true)), Lookup::Id(ID.into()));
        let adopt = ClusterSpec {
            adopt: Some("prod".into()),
            ..spec()
        };
        assert_eq!(
            lookup(&adopt, &Record::default()),
            Lookup::Name("prod".into())
        );
        let by_id = ClusterSpec {
            adopt: Some(ID.into()),
            ..spec()
        };
        assert_eq!(lookup(&by_id, &Record::default()), Lookup::Id(ID.into()));
        // Adopted by name once, then read by its id.
        let mut adopted = own(false);
        adopted.cluster.as_mut().unwrap().name = "prod".into();
        assert_eq!(lookup(&adopt, &adopted), Lookup::Id(ID.into()));
    }

    #[test]
    fn no_cluster_and_no_record_creates_one() {
        let (step, record) = decide(&spec(), &Record::default(), None, 1000);
        assert_eq!(step, Step::Create);
        assert_eq!(record, Record::default());
    }

    #[test]
    fn a_cluster_of_our_name_ops_did_not_create_is_refused_not_taken() {
        let c = cluster(
            "trigger-supervisor-abcd1234",
            ClusterState::Running,
            "2026-01-01T00:00:00Z",
        );
        let (step, record) = decide(&spec(), &Record::default(), Some(c), 1000);
        let Step::Refuse(line) = step else {
            panic!("{step:?}")
        };
        assert!(
            line.contains("adopt it with `cluster: trigger-supervisor-abcd1234`"),
            "{line}"
        );
        assert!(record.cluster.is_none());
    }

    #[test]
    fn a_create_whose_answer_was_lost_is_found_by_name_and_recorded() {
        let sent = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
            .unwrap()
            .timestamp_millis();
        let prev = Record {
            pending: Some(("trigger-supervisor-abcd1234".into(), sent)),
            ..Record::default()
        };
        let c = cluster(
            "trigger-supervisor-abcd1234",
            ClusterState::Provisioning,
            "2026-05-01T10:00:05Z",
        );
        let (step, record) = decide(&spec(), &prev, Some(c.clone()), sent + 60_000);
        assert!(matches!(step, Step::Use { ready: false, .. }), "{step:?}");
        assert_eq!(
            record.cluster.as_ref().map(|r| (r.id.as_str(), r.created)),
            Some((ID, true))
        );
        assert_eq!(record.pending, None);
        // One made long before the create was sent is someone else's.
        let old = cluster(
            "trigger-supervisor-abcd1234",
            ClusterState::Running,
            "2026-04-01T00:00:00Z",
        );
        assert!(matches!(
            decide(&spec(), &prev, Some(old), sent).0,
            Step::Refuse(_)
        ));
    }

    #[test]
    fn our_cluster_is_used_when_running_and_waited_for_while_provisioning() {
        let running = cluster("x", ClusterState::Running, "");
        assert!(matches!(
            decide(&spec(), &own(true), Some(running), 0).0,
            Step::Use {
                ready: true,
                note: None,
                ..
            }
        ));
        let provisioning = cluster("x", ClusterState::Provisioning, "");
        let (step, _) = decide(&spec(), &own(true), Some(provisioning), 0);
        let Step::Use { ready, note, .. } = step else {
            panic!()
        };
        assert!(!ready && note.unwrap().contains("provisioning"));
    }

    #[test]
    fn a_cluster_in_error_being_deleted_or_in_an_unknown_state_is_refused_with_its_name_and_the_fix(
    ) {
        let adopt = ClusterSpec {
            adopt: Some(ID.into()),
            ..spec()
        };
        for (state, says) in [
            (
                ClusterState::Error,
                "DigitalOcean reports it in error (etcd down)",
            ),
            (ClusterState::Deleting, "DigitalOcean is deleting it"),
            (
                ClusterState::Other,
                "DigitalOcean reports a state this ops does not know (etcd down)",
            ),
        ] {
            let mut c = cluster("prod", state, "");
            c.status.message = Some("etcd down".into());
            for (spec, prev) in [(spec(), own(true)), (adopt.clone(), Record::default())] {
                let (step, _) = decide(&spec, &prev, Some(c.clone()), 0);
                let Step::Refuse(line) = step else {
                    panic!("{state:?}: {step:?}")
                };
                assert!(
                    line.starts_with(&format!("cluster prod ({ID}): {says}")),
                    "{line}"
                );
                assert!(line.contains("doctl kubernetes cluster get"), "{line}");
            }
        }
        // Deleted: ops' own is forgotten (DigitalOcean says so with this very token); one
        // adopted is refused.
        let deleted = cluster("x", ClusterState::Deleted, "");
        assert!(matches!(
            decide(&spec(), &own(true), Some(deleted.clone()), 0).0,
            Step::Forget { .. }
        ));
        let (step, _) = decide(&adopt, &Record::default(), Some(deleted), 0);
        let Step::Refuse(line) = step else {
            panic!("{step:?}")
        };
        assert!(
            line.contains("deleted") && line.contains("remove `cluster:`"),
            "{line}"
        );
    }

    #[test]
    fn a_cluster_provisioning_far_longer_than_usual_fails_the_run_and_ops_goes_on_waiting() {
        let created = "2026-05-01T10:00:00Z";
        let t0 = chrono::DateTime::parse_from_rfc3339(created)
            .unwrap()
            .timestamp_millis();
        let c = cluster("x", ClusterState::Provisioning, created);
        let (step, _) = decide(&spec(), &own(true), Some(c.clone()), t0 + 59 * 60_000);
        assert!(matches!(step, Step::Use { ready: false, .. }), "{step:?}");
        let (step, record) = decide(&spec(), &own(true), Some(c), t0 + 61 * 60_000);
        let Step::Refuse(line) = step else {
            panic!("{step:?}")
        };
        assert!(
            line.contains("still provisioning it 61 minutes after its create")
                && line.contains("DigitalOcean support"),
            "{line}"
        );
        assert_eq!(record, own(true), "kept: ops waits on");
    }

    #[test]
    fn our_cluster_not_found_fails_each_run_and_is_forgotten_only_after_a_day_unseen() {
        let (step, once) = decide(&spec(), &own(true), None, 1000);
        let Step::Refuse(line) = step else {
            panic!("{step:?}")
        };
        assert!(
            line.starts_with(&format!(
                "cluster trigger-supervisor-abcd1234 ({ID}), which ops created, is not visible with this DIGITALOCEAN_TOKEN"
            )) && line.contains("give ops the token of the team"),
            "{line}"
        );
        assert_eq!(once.cluster, own(true).cluster);
        let day = 24 * 3_600_000;
        let (step, twice) = decide(&spec(), &once, None, 1000 + day - 1);
        assert!(matches!(step, Step::Refuse(_)), "{step:?}");
        let (step, _) = decide(&spec(), &twice, None, 1000 + day);
        assert_eq!(
            step,
            Step::Forget {
                name: "trigger-supervisor-abcd1234".into(),
                id: ID.into()
            }
        );
        // Seen again in between: the day starts over.
        let seen = cluster("x", ClusterState::Running, "");
        let (_, back) = decide(&spec(), &twice, Some(seen), 2000);
        let (step, _) = decide(&spec(), &back, None, 1000 + day);
        assert!(matches!(step, Step::Refuse(_)), "{step:?}");
    }

    #[test]
    fn a_404_kept_from_one_cluster_never_shortens_the_day_of_the_next() {
        let day = 24 * 3_600_000;
        // Ops' own cluster answered 404 once; the operator then adopted another.
        let (_, missed) = decide(&spec(), &own(true), None, 0);
        assert!(missed.unseen.is_some());
        let (adopt, prod) = adopting_prod();
        let (_, adopted) = decide(&adopt, &missed, Some(prod), 1000);
        assert_eq!(adopted.unseen, None, "adopting clears it");
        // `cluster:` removed later: ops creates its own again, Z, days after.
        let mut z = cluster("x", ClusterState::Running, "");
        z.id = "0a7e1ee5-0000-4000-8000-00000000000z".into();
        let mut created = missed.clone();
        created.cluster_created(&z, 3 * day);
        assert_eq!(created.unseen, None, "a new create starts fresh");
        // Even a 404 kept from before (an old record) counts only for its own cluster.
        created.unseen = missed.unseen.clone();
        let (step, _) = decide(&spec(), &created, None, 5 * day);
        assert!(
            matches!(step, Step::Refuse(_)),
            "Z forgotten on its first 404: {step:?}"
        );
    }

    #[test]
    fn a_forgotten_cluster_takes_its_pool_creates_with_it() {
        let mut prev = own(true);
        prev.pools.push(PoolEntry {
            id: "p1".into(),
            name: "ops-supervisor".into(),
            size: "s-2vcpu-2gb".into(),
            at: 0,
        });
        prev.pending_pools.push(("ops-runs-s-4vcpu-8gb".into(), 0));
        prev.retiring.push(Retiring {
            id: "p1".into(),
            since: 0,
        });
        let deleted = cluster("x", ClusterState::Deleted, "");
        let (step, record) = decide(&spec(), &prev, Some(deleted), 0);
        assert!(matches!(step, Step::Forget { .. }), "{step:?}");
        assert_eq!(
            record,
            Record::default(),
            "nothing of it may claim a pool later"
        );
        // Adopting another drops them as well: their names must not claim its pools.
        let (adopt, prod) = adopting_prod();
        let (_, record) = decide(&adopt, &prev, Some(prod), 0);
        assert!(record.pending_pools.is_empty(), "{record:?}");
    }

    #[test]
    fn a_lost_create_found_in_error_is_recorded_and_still_announced() {
        let prev = Record {
            pending: Some(("trigger-supervisor-abcd1234".into(), 0)),
            ..Record::default()
        };
        let c = cluster(
            "trigger-supervisor-abcd1234",
            ClusterState::Error,
            "1970-01-01T00:00:01Z",
        );
        let (step, record) = decide(&spec(), &prev, Some(c), 60_000);
        assert!(matches!(step, Step::Refuse(_)), "{step:?}");
        assert!(record.cluster.as_ref().is_some_and(|r| r.created));
        let line = unheard_create(&prev, &record).expect("the create's event");
        assert!(
            line.starts_with(&format!("cluster trigger-supervisor-abcd1234 ({ID}): "))
                && line.contains(UNHEARD_CREATE),
            "{line}"
        );
        // Once only: the next run starts from the saved record.
        assert_eq!(unheard_create(&record, &record), None);
        assert_eq!(unheard_create(&own(true), &own(true)), None);
    }

    #[test]
    fn our_cluster_seen_deleting_then_not_found_is_forgotten_at_once() {
        let deleting = cluster("x", ClusterState::Deleting, "");
        let (step, record) = decide(&spec(), &own(true), Some(deleting), 0);
        let Step::Refuse(line) = step else {
            panic!("{step:?}")
        };
        assert!(line.contains("no longer finds it"), "{line}");
        assert_eq!(record.deleting.as_deref(), Some(ID));
        let (step, record) = decide(&spec(), &record, None, 60_000);
        assert!(matches!(step, Step::Forget { .. }), "{step:?}");
        assert_eq!(record, Record::default());
        // Seen running again in between: a 404 then waits its day.
        let (_, deleting) = decide(
            &spec(),
            &own(true),
            Some(cluster("x", ClusterState::Deleting, "")),
            0,
        );
        let (_, back) = decide(
            &spec(),
            &deleting,
            Some(cluster("x", ClusterState::Running, "")),
            1,
        );
        assert_eq!(back.deleting, None);
        assert!(matches!(decide(&spec(), &back, None, 2).0, Step::Refuse(_)));
    }

    #[test]
    fn cluster_adopts_by_id_or_name_and_a_missing_one_is_a_clear_refusal() {
        let adopt = ClusterSpec {
            adopt: Some("prod".into()),
            ..spec()
        };
        let c = cluster("prod", ClusterState::Running, "");
        let (step, record) = decide(&adopt, &Record::default(), Some(c), 5);
        let Step::Use { note, ready, .. } = step else {
            panic!()
        };
        assert!(ready && note.unwrap().contains("adopted"));
        let r = record.cluster.unwrap();
        assert_eq!((r.id.as_str(), r.created), (ID, false));
        let (step, _) = decide(&adopt, &Record::default(), None, 5);
        let Step::Refuse(line) = step else { panic!() };
        assert!(
            line.contains("\"prod\"") && line.contains("remove `cluster:`"),
            "{line}"
        );
    }

    #[test]
    fn the_create_takes_the_newest_version_sends_ha_and_maps_scale_in_after() {
        let body = new_cluster(&spec(), &options(), vec![]).unwrap();
        assert_eq!(body.version, "1.34.1-do.1");
        assert!(!body.ha && body.surge_upgrade && !body.auto_upgrade);
        assert_eq!(
            body.cluster_autoscaler_configuration
                .scale_down_unneeded_time
                .as_deref(),
            Some("10m0s")
        );
        assert_eq!(body.maintenance_policy.day, "sunday");
        let ha = ClusterSpec { ha: true, ..spec() };
        assert!(new_cluster(&ha, &options(), vec![]).unwrap().ha);
        let sfo = ClusterSpec {
            region: "sfo9".into(),
            ..spec()
        };
        let e = new_cluster(&sfo, &options(), vec![]).unwrap_err();
        assert!(
            e.contains("SUPERVISOR_REGION=sfo9") && e.contains("nyc1, fra1"),
            "{e}"
        );
    }

    #[test]
    fn go_durations_read_as_the_autoscaler_expects() {
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(go_duration(Duration::from_secs(5400)), "1h30m0s");
    }

    #[test]
    fn maintenance_windows_are_a_day_and_a_utc_time() {
        assert_eq!(
            parse_maintenance("Sunday 04:00").unwrap(),
            ("sunday".to_string(), "04:00".to_string())
        );
        assert!(parse_maintenance("someday 04:00")
            .unwrap_err()
            .contains("use any, or a day"));
        assert!(parse_maintenance("mon 04:00").is_err());
        assert!(parse_maintenance("sunday 4pm")
            .unwrap_err()
            .contains("HH:MM"));
        assert!(parse_maintenance("sunday").is_err());
    }
}
