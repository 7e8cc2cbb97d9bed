//! The cluster's node pools, pure. Two pools: a small fixed one for the supervisor, and the runs
//! pool, auto-scaled between the task's `min` and `max`, labelled `nodetype=<label>` (the
//! nodeSelector Trigger.dev gives every run pod: `KUBERNETES_WORKER_NODETYPE_LABEL`) and
//! tainted `nodetype=<label>:NoSchedule` (which the supervisor's
//! `KUBERNETES_RUNNER_TOLERATIONS` match), so only run pods land there. The values are the
//! ones the supervisor's objects use (`manifests.rs`).
//!
//! DigitalOcean cannot change a pool's size: a new `SUPERVISOR_SIZE` is a new pool first, then
//! the old pool's nodes cordoned and the pool no longer auto-scaled, then, on a later run, the
//! old pool deleted once no `app=task-run` pod remains on it or `drain_timeout` passes since its
//! last cordon (a node cordoned late restarts the clock; a node the Kubernetes API does not know
//! runs no pod and keeps nothing). A size the task wants again before its old pool went gets its
//! nodes uncordoned. Only pools ops created and recorded are ever cordoned or deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clients::digitalocean::Size;
use crate::clients::doks::{NewNodePool, NodePool, NodePoolUpdate, Options, Taint, TaintEffect};
use crate::tasks::supervisor::presets::Preset;

use super::cluster::{Record, Retiring};

/// The label key Trigger.dev's run pods select nodes by (`apps/supervisor/src/workloadManager/
/// kubernetes.ts`: `nodeSelector: {nodetype: KUBERNETES_WORKER_NODETYPE_LABEL}`), and that
/// variable's default (`v4-worker`): the supervisor's objects use the same (`manifests.rs`).
pub use crate::manifests::{DEFAULT_NODETYPE, NODETYPE_KEY};
/// The supervisor's pool: its name, label value and size (one node: the supervisor needs
/// little, and DOKS' own per-node pods need the rest).
pub const SUPERVISOR_POOL: &str = "ops-supervisor";
pub const SUPERVISOR_NODETYPE: &str = "ops-supervisor";
pub const SUPERVISOR_POOL_SIZE: &str = "s-2vcpu-2gb";
/// Runs pools are named `ops-runs-<size>`: a new size is a new name.
pub const RUNS_POOL_PREFIX: &str = "ops-runs-";
/// Trigger.dev's run pod requests: CPU × 0.75, memory × 1 (`KUBERNETES_CPU_REQUEST_RATIO`,
/// `KUBERNETES_MEMORY_REQUEST_RATIO` defaults).
pub const CPU_REQUEST_RATIO: f64 = 0.75;
pub const MEMORY_REQUEST_RATIO: f64 = 1.0;

/// A pool create whose answer was lost is found by a later run: a pool of the name ops sent is
/// ops' own when none of its nodes was made more than this before the create (clocks differ).
/// When it is first listed does not matter (the Kubernetes API or the host may be down for
/// hours after the create; the nodes' age proves whose pool it is).
pub const PENDING_POOL_MS: i64 = 3_600_000;
/// A pool name pending this long without a pool of that name listed is forgotten, so a pool of
/// that name someone makes much later is never taken for ops' own.
pub const PENDING_POOL_FORGET_MS: i64 = 24 * 3_600_000;
/// The line that says a pool whose create's answer was lost was found and recorded (the run
/// makes it the `doks.pool_created` event the create never was).
pub const UNHEARD_POOL_CREATE: &str = "created by ops' last create whose answer was lost; recorded";

/// What the task asks of the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    /// The deployment tag (each pool carries it).
    pub tag: String,
    /// The runs pool's size (`SUPERVISOR_SIZE`, `auto` already resolved by `auto_size`).
    pub runs_size: String,
    pub min: u32,
    pub max: u32,
    /// `KUBERNETES_WORKER_NODETYPE_LABEL`.
    pub nodetype: String,
    pub drain_timeout: Duration,
}

pub fn runs_pool_name(size: &str) -> String {
    format!("{RUNS_POOL_PREFIX}{size}")
}

/// The taint on the runs pool's nodes: `nodetype=<label>:NoSchedule`.
pub fn runs_taint(nodetype: &str) -> Taint {
    Taint {
        key: NODETYPE_KEY.into(),
        value: nodetype.into(),
        effect: TaintEffect::NoSchedule,
    }
}

/// `KUBERNETES_RUNNER_TOLERATIONS` for the supervisor: `key=value:Effect`, matching the taint.
pub fn runner_tolerations(nodetype: &str) -> String {
    format!("{NODETYPE_KEY}={nodetype}:NoSchedule")
}

pub fn supervisor_pool(spec: &PoolSpec) -> NewNodePool {
    NewNodePool {
        size: SUPERVISOR_POOL_SIZE.into(),
        pool: NodePoolUpdate {
            name: SUPERVISOR_POOL.into(),
            count: 1,
            tags: vec![spec.tag.clone()],
            labels: BTreeMap::from([(NODETYPE_KEY.into(), SUPERVISOR_NODETYPE.into())]),
            taints: vec![],
            auto_scale: false,
            min_nodes: None,
            max_nodes: None,
        },
    }
}

pub fn runs_pool(spec: &PoolSpec) -> NewNodePool {
    let max = spec.max.max(1);
    let min = spec.min.min(max);
    NewNodePool {
        size: spec.runs_size.clone(),
        pool: NodePoolUpdate {
            name: runs_pool_name(&spec.runs_size),
            count: min,
            tags: vec![spec.tag.clone()],
            labels: BTreeMap::from([(NODETYPE_KEY.into(), spec.nodetype.clone())]),
            taints: vec![runs_taint(&spec.nodetype)],
            auto_scale: true,
            min_nodes: Some(min),
            max_nodes: Some(max),
        },
    }
}

/// What to do to the pools, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `POST …/node_pools` (recorded as ops' own when DigitalOcean answers).
    Create(NewNodePool),
    /// `PUT …/node_pools/{id}`: the runs pool ops owns back to its bounds, label and taint
    /// (the task's `min`/`max` changed, or someone edited the pool).
    Update {
        id: String,
        name: String,
        body: NodePoolUpdate,
        why: String,
    },
    /// Cordon these Kubernetes nodes of a pool being retired (`spec.unschedulable: true`).
    Cordon { pool: String, nodes: Vec<String> },
    /// Uncordon these Kubernetes nodes of a pool ops had begun to retire and the task wants
    /// again (`spec.unschedulable: false`).
    Uncordon { pool: String, nodes: Vec<String> },
    /// `DELETE …/node_pools/{id}`: DigitalOcean drains and deletes its nodes.
    Delete {
        id: String,
        name: String,
        why: String,
    },
}

/// The pools' plan: actions, lines for the operator, and the record to keep.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub lines: Vec<String>,
    pub record: Record,
}

/// The run pods (`app=task-run`) on each node, by node name, as the Kubernetes API lists them.
pub type RunPods = BTreeMap<String, Vec<String>>;

/// Plans the pools from DigitalOcean's listing, the record, the run pods on each node, the
/// nodes already cordoned and the nodes the Kubernetes API knows (`None`: not read, as while no
/// pool retires).
pub fn plan(
    spec: &PoolSpec,
    pools: &[NodePool],
    prev: &Record,
    pods: &RunPods,
    cordoned: &BTreeSet<String>,
    known: Option<&BTreeSet<String>>,
    now: i64,
) -> Plan {
    let mut record = prev.clone();
    let mut out = Plan::default();
    // A pool ops sent a create for and never heard back about is its own when its nodes are
    // no older than the create; a pending name is decided once its pool is listed, and one
    // never listed is forgotten after a day.
    record
        .pending_pools
        .retain(|(_, at)| now.saturating_sub(*at) <= PENDING_POOL_FORGET_MS);
    for p in pools {
        let lost = record
            .pending_pools
            .iter()
            .any(|(n, at)| n == &p.name && unheard(p, *at));
        if lost && !record.owns_pool(&p.id) {
            record.pool_created(&p.id, &p.name, &p.size, now);
            out.lines.push(format!(
                "node pool {} ({}): {UNHEARD_POOL_CREATE}",
                p.name, p.id
            ));
        }
    }
    record
        .pending_pools
        .retain(|(n, _)| !pools.iter().any(|p| &p.name == n));
    // Recorded pools DigitalOcean no longer lists are gone.
    let listed: BTreeSet<&str> = pools.iter().map(|p| p.id.as_str()).collect();
    record.pools.retain(|e| listed.contains(e.id.as_str()));
    record.retiring.retain(|r| listed.contains(r.id.as_str()));

    if !pools.iter().any(|p| p.name == SUPERVISOR_POOL) {
        out.actions.push(Action::Create(supervisor_pool(spec)));
    }
    let wanted = runs_pool_name(&spec.runs_size);
    let new_pool = pools.iter().find(|p| p.name == wanted);
    match new_pool {
        None => out.actions.push(Action::Create(runs_pool(spec))),
        Some(p) if !record.owns_pool(&p.id) => out.lines.push(format!(
            "node pool {} ({}) is not ops' own (no record of creating it): it serves runs if its label and taint match, and ops never changes or deletes it",
            p.name, p.id
        )),
        Some(p) => out.actions.extend(drift(spec, p)),
    }
    if let Some(p) = new_pool {
        unretire(p, &mut record, cordoned, now, &mut out);
    }
    for old in pools
        .iter()
        .filter(|p| p.name.starts_with(RUNS_POOL_PREFIX) && p.name != wanted)
    {
        if !record.owns_pool(&old.id) {
            out.lines.push(format!(
                "node pool {} ({}) is not ops' own (no record of creating it): left as it is",
                old.name, old.id
            ));
        } else if new_pool.is_none() {
            // The new pool first: the old one is retired only once the new one exists.
            out.lines.push(format!(
                "node pool {}: retired once {wanted} exists",
                old.name
            ));
        } else {
            let old = registered(old, known, pods, &mut out);
            retire(spec, &old, &mut record, pods, cordoned, now, &mut out);
        }
    }
    out.record = record;
    out
}

/// Whether `p` can be the pool of a create ops sent at `at` and never heard back about: no node
/// of it made more than `PENDING_POOL_MS` before it.
fn unheard(p: &NodePool, at: i64) -> bool {
    let made = |n: &crate::clients::doks::Node| {
        chrono::DateTime::parse_from_rfc3339(&n.created_at)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    p.nodes
        .iter()
        .filter_map(made)
        .all(|t| t >= at.saturating_sub(PENDING_POOL_MS))
}

/// The runs pool ops owns, brought back to what the task says when it differs.
fn drift(spec: &PoolSpec, p: &NodePool) -> Option<Action> {
    let want = runs_pool(spec).pool;
    let (min, max) = (want.min_nodes.unwrap_or(0), want.max_nodes.unwrap_or(1));
    let mut why = Vec::new();
    if !p.auto_scale || p.min_nodes != min || p.max_nodes != max {
        why.push(format!(
            "nodes {}..{} (auto-scaled: {}) should be {min}..{max} (the task's min and max)",
            p.min_nodes, p.max_nodes, p.auto_scale
        ));
    }
    if p.labels.get(NODETYPE_KEY) != want.labels.get(NODETYPE_KEY) {
        why.push(format!(
            "its label {NODETYPE_KEY} should be {}",
            spec.nodetype
        ));
    }
    let taint = runs_taint(&spec.nodetype);
    if !p.taints.contains(&taint) {
        why.push(format!(
            "its taint should be {}",
            runner_tolerations(&spec.nodetype)
        ));
    }
    if why.is_empty() {
        return None;
    }
    let mut labels = p.labels.clone();
    labels.extend(want.labels);
    let mut taints: Vec<Taint> = p
        .taints
        .iter()
        .filter(|t| t.key != NODETYPE_KEY)
        .cloned()
        .collect();
    taints.push(taint);
    Some(Action::Update {
        id: p.id.clone(),
        name: p.name.clone(),
        body: NodePoolUpdate {
            name: p.name.clone(),
            count: p.count.clamp(min, max),
            tags: want.tags,
            labels,
            taints,
            auto_scale: true,
            min_nodes: Some(min),
            max_nodes: Some(max),
        },
        why: why.join("; "),
    })
}

/// One step of retiring an old runs pool ops owns: stop it growing (no longer auto-scaled),
/// cordon its nodes, then, on a later run (the cordon applied, so the pod list the run took
/// first is one no new run pod can follow), delete it once no run pod is left on it or
/// `drain_timeout` has passed since its last cordon (a node cordoned late, one the autoscaler
/// added or one that registered late, gets a drain of its own).
fn retire(
    spec: &PoolSpec,
    old: &NodePool,
    record: &mut Record,
    pods: &RunPods,
    cordoned: &BTreeSet<String>,
    now: i64,
    out: &mut Plan,
) {
    let nodes = node_names(old);
    let uncordoned: Vec<String> = nodes
        .iter()
        .filter(|n| !cordoned.contains(*n))
        .cloned()
        .collect();
    let running: Vec<&str> = nodes
        .iter()
        .filter_map(|n| pods.get(n))
        .flatten()
        .map(String::as_str)
        .collect();
    let (cordoning, since) = drain_clock(record, &old.id, !uncordoned.is_empty(), now);
    if !uncordoned.is_empty() {
        out.actions.push(Action::Cordon {
            pool: old.name.clone(),
            nodes: uncordoned,
        });
    }
    let waited = Duration::from_millis(now.saturating_sub(since).max(0) as u64);
    let left = spec.drain_timeout.saturating_sub(waited).as_secs();
    let size = &spec.runs_size;
    let why = if cordoning {
        None
    } else if running.is_empty() {
        Some(format!(
            "SUPERVISOR_SIZE is now {size}: no run pod is left on it"
        ))
    } else if waited >= spec.drain_timeout {
        Some(format!(
            "SUPERVISOR_SIZE is now {size}: drain_timeout ({}s) passed since its last cordon with run pods still on it: {} (DigitalOcean's drain evicts them; Trigger.dev retries them)",
            spec.drain_timeout.as_secs(),
            running.join(", ")
        ))
    } else {
        None
    };
    if let Some(why) = why {
        out.actions.push(Action::Delete {
            id: old.id.clone(),
            name: old.name.clone(),
            why,
        });
        return;
    }
    out.lines.push(if running.is_empty() {
        format!(
            "node pool {} (being cordoned): deleted on a later run once every node is seen cordoned and no run pod is left on it, or in {left}s at the latest (drain_timeout)",
            old.name
        )
    } else {
        format!(
            "node pool {} (cordoned): waiting for run pods {} to end; deleted then, or in {left}s at the latest (drain_timeout)",
            old.name,
            running.join(", ")
        )
    });
    out.actions.extend(stop_growing(spec, old));
}

/// The retiring pool's drain clock, and whether it is cordoned this run (first retired, or a
/// node of it found schedulable): then the run pods read before the cordon say nothing of a
/// run landing since, and the clock starts (again) now; otherwise it is kept.
fn drain_clock(record: &mut Record, id: &str, uncordoned: bool, now: i64) -> (bool, i64) {
    match record.retiring.iter_mut().find(|r| r.id == id) {
        Some(r) if uncordoned => r.since = now,
        Some(r) => return (false, r.since),
        None => record.retiring.push(Retiring {
            id: id.to_string(),
            since: now,
        }),
    }
    (true, now)
}

/// A pool being retired that still auto-scales: fixed at the nodes it has, so the autoscaler
/// adds no schedulable node to it for runs to land on (`auto_scale: false`, `count` as listed).
fn stop_growing(spec: &PoolSpec, old: &NodePool) -> Option<Action> {
    old.auto_scale.then(|| Action::Update {
        id: old.id.clone(),
        name: old.name.clone(),
        body: NodePoolUpdate {
            name: old.name.clone(),
            count: old.count,
            tags: vec![spec.tag.clone()],
            labels: old.labels.clone(),
            taints: old.taints.clone(),
            auto_scale: false,
            min_nodes: None,
            max_nodes: None,
        },
        why: format!(
            "being retired (SUPERVISOR_SIZE is now {}): no longer auto-scaled ({} nodes), so no new node joins it",
            spec.runs_size, old.count
        ),
    })
}

/// The pool with only the nodes the Kubernetes API knows (all of them when the nodes were not
/// read; a node a run pod names is known): a node DigitalOcean lists that never registered
/// (still provisioning, or in error) can run no pod, so there is nothing to cordon or wait for
/// on it.
fn registered(
    p: &NodePool,
    known: Option<&BTreeSet<String>>,
    pods: &RunPods,
    out: &mut Plan,
) -> NodePool {
    let mut p = p.clone();
    if let Some(known) = known {
        let pool = p.name.clone();
        p.nodes.retain(|n| {
            let name = n.name.trim();
            let ok = name.is_empty() || known.contains(name) || pods.contains_key(name);
            if !ok {
                out.lines.push(format!(
                    "node {name} of node pool {pool} is not registered with Kubernetes: it can run no pod, so there is nothing to cordon or wait for on it"
                ));
            }
            ok
        });
    }
    p
}

/// A pool ops had begun to retire that the task wants again (a size change undone before the
/// old pool went): its cordoned nodes are uncordoned, and its retirement forgotten once none
/// is, so a later size change cordons it afresh and waits `drain_timeout` from then.
fn unretire(
    p: &NodePool,
    record: &mut Record,
    cordoned: &BTreeSet<String>,
    now: i64,
    out: &mut Plan,
) {
    let still: Vec<String> = node_names(p)
        .into_iter()
        .filter(|n| cordoned.contains(n))
        .collect();
    if still.is_empty() {
        record.retiring.retain(|r| r.id != p.id);
        return;
    }
    let Some(entry) = record.retiring.iter_mut().find(|r| r.id == p.id) else {
        return;
    };
    // Kept (so the nodes are read again) until they are seen uncordoned; its clock restarts.
    entry.since = now;
    out.actions.push(Action::Uncordon {
        pool: p.name.clone(),
        nodes: still,
    });
}

/// A pool's Kubernetes node names, as DigitalOcean lists them.
fn node_names(p: &NodePool) -> Vec<String> {
    p.nodes
        .iter()
        .map(|n| n.name.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// What a node of this size leaves for pods: (CPUs, GiB). DigitalOcean publishes no
/// allocatable figures in its API, so this is ops' conservative estimate: the kubelet's
/// reservation on the usual ladder (memory: 25 % of the first 4 GiB, 20 % of the next 4, 10 %
/// of the next 8, 6 % above; CPU: 6 % of the first core, 1 % of the second, 0.5 % of the next
/// two, 0.25 % above) plus 0.5 GiB and 0.3 CPU for DOKS' own pods on every node.
pub fn allocatable(s: &Size) -> (f64, f64) {
    let ladder = |total: f64, steps: &[(f64, f64)], rest: f64| {
        let (mut left, mut reserved) = (total, 0.0);
        for &(width, share) in steps {
            let part = left.min(width);
            reserved += part * share;
            left -= part;
        }
        reserved + left.max(0.0) * rest
    };
    let mem = s.memory as f64 / 1024.0;
    let cpu = f64::from(s.vcpus);
    let mem_reserved = ladder(mem, &[(4.0, 0.25), (4.0, 0.20), (8.0, 0.10)], 0.06) + 0.5;
    let cpu_reserved = ladder(cpu, &[(1.0, 0.06), (1.0, 0.01), (2.0, 0.005)], 0.0025) + 0.3;
    ((cpu - cpu_reserved).max(0.0), (mem - mem_reserved).max(0.0))
}

/// Whether a run pod of this preset can be scheduled on an empty node of this size (its
/// requests against the node's allocatable).
pub fn fits_node(p: &Preset, s: &Size) -> bool {
    let (cpu, mem) = allocatable(s);
    p.cpu * CPU_REQUEST_RATIO <= cpu && p.memory_gb * MEMORY_REQUEST_RATIO <= mem
}

/// `SUPERVISOR_SIZE=auto`: the runs pool's size, the cheapest DigitalOcean offers for
/// Kubernetes in `region` whose allocatable fits the largest preset waiting. It only grows: the
/// current size is kept while it fits (a shrink would replace the pool whenever the large
/// runs pause). `None`: no offered size fits.
pub fn auto_size(
    largest: &Preset,
    options: &Options,
    catalog: &[Size],
    region: &str,
    current: Option<&str>,
) -> Option<String> {
    let offered = |s: &&Size| {
        options.sizes.iter().any(|o| o.slug == s.slug)
            && s.available
            && (s.regions.is_empty() || s.regions.iter().any(|r| r == region))
    };
    if let Some(cur) = current.and_then(|c| catalog.iter().find(|s| s.slug == c)) {
        if fits_node(largest, cur) {
            return Some(cur.slug.clone());
        }
    }
    catalog
        .iter()
        .filter(offered)
        .filter(|s| fits_node(largest, s))
        .min_by(|a, b| {
            a.price_monthly
                .total_cmp(&b.price_monthly)
                .then(a.vcpus.cmp(&b.vcpus))
                .then(a.memory.cmp(&b.memory))
        })
        .map(|s| s.slug.clone())
}

/// The HA control plane's price (DigitalOcean's pricing: about $40 a month; the control plane
/// itself is free).
pub const HA_MONTHLY_USD: f64 = 40.0;

/// What the cluster costs a month: every node at its size's price, plus the HA control plane.
/// Sizes the catalog does not know count as 0 and are named in the second value.
pub fn monthly_cost(pools: &[NodePool], catalog: &[Size], ha: bool) -> (f64, Vec<String>) {
    let mut unknown = Vec::new();
    let mut total = if ha { HA_MONTHLY_USD } else { 0.0 };
    for p in pools {
        match catalog.iter().find(|s| s.slug == p.size) {
            Some(s) => total += s.price_monthly * p.nodes.len() as f64,
            None => unknown.push(p.size.clone()),
        }
    }
    (total, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::doks::{Node, NodeState, NodeStatus, OptionSlug};
    use crate::tasks::supervisor::presets::resolve;

    fn spec(size: &str) -> PoolSpec {
        PoolSpec {
            tag: "trigger-supervisor-abcd1234".into(),
            runs_size: size.into(),
            min: 0,
            max: 5,
            nodetype: DEFAULT_NODETYPE.into(),
            drain_timeout: Duration::from_secs(3600),
        }
    }

    /// A pool as DigitalOcean lists it; a runs pool as ops made it (label, taint, 0..5).
    fn pool(id: &str, name: &str, size: &str, nodes: &[&str]) -> NodePool {
        let runs = name.starts_with(RUNS_POOL_PREFIX);
        NodePool {
            id: id.into(),
            name: name.into(),
            size: size.into(),
            count: nodes.len() as u32,
            tags: vec![],
            labels: if runs {
                BTreeMap::from([(NODETYPE_KEY.to_string(), DEFAULT_NODETYPE.to_string())])
            } else {
                BTreeMap::new()
            },
            taints: if runs {
                vec![runs_taint(DEFAULT_NODETYPE)]
            } else {
                vec![]
            },
            auto_scale: true,
            min_nodes: 0,
            max_nodes: 5,
            nodes: nodes
                .iter()
                .map(|n| Node {
                    id: format!("id-{n}"),
                    name: n.to_string(),
                    status: NodeStatus {
                        state: NodeState::Running,
                    },
                    droplet_id: "1".into(),
                    created_at: String::new(),
                })
                .collect(),
        }
    }

    /// The record of ops having created these of `pools`.
    fn owning(pools: &[NodePool], ids: &[&str]) -> Record {
        let mut r = Record::default();
        for p in pools.iter().filter(|p| ids.contains(&p.id.as_str())) {
            r.pool_created(&p.id, &p.name, &p.size, 0);
        }
        r
    }

    /// A size change under way: the supervisor's pool, the old runs pool `b` (node `old-1`)
    /// and the new one `c`.
    fn replacing() -> [NodePool; 3] {
        [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool("b", "ops-runs-s-2vcpu-4gb", "s-2vcpu-4gb", &["old-1"]),
            pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &[]),
        ]
    }

    /// A size change whose old pool `b`, with these nodes, no longer auto-scales and has been
    /// retiring since 0.
    fn retiring_since_0(old: &[&str]) -> ([NodePool; 3], Record) {
        let mut pools = replacing();
        pools[1] = pool("b", "ops-runs-s-2vcpu-4gb", "s-2vcpu-4gb", old);
        pools[1].auto_scale = false;
        let mut rec = owning(&pools, &["a", "b", "c"]);
        rec.retiring.push(Retiring {
            id: "b".into(),
            since: 0,
        });
        (pools, rec)
    }

    /// The plan with no run pod anywhere and nothing cordoned.
    fn quiet(spec: &PoolSpec, pools: &[NodePool], rec: &Record) -> Plan {
        quiet_at(spec, pools, rec, 0)
    }

    fn quiet_at(spec: &PoolSpec, pools: &[NodePool], rec: &Record, now: i64) -> Plan {
        plan(
            spec,
            pools,
            rec,
            &RunPods::new(),
            &BTreeSet::new(),
            None,
            now,
        )
    }

    fn size(slug: &str, vcpus: u32, memory: u64, price: f64) -> Size {
        serde_json::from_value(
            serde_json::json!({"slug": slug, "vcpus": vcpus, "memory": memory,
            "price_monthly": price, "regions": ["nyc1"]}),
        )
        .unwrap()
    }

    fn catalog() -> Vec<Size> {
        vec![
            size("s-1vcpu-2gb", 1, 2048, 12.0),
            size("s-2vcpu-2gb", 2, 2048, 18.0),
            size("s-2vcpu-4gb", 2, 4096, 24.0),
            size("s-4vcpu-8gb", 4, 8192, 48.0),
            size("c-4", 4, 8192, 84.0),
            size("s-8vcpu-16gb", 8, 16384, 96.0),
        ]
    }

    fn options(slugs: &[&str]) -> Options {
        Options {
            versions: vec![],
            regions: vec![],
            sizes: slugs
                .iter()
                .map(|s| OptionSlug {
                    name: s.to_string(),
                    slug: s.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn an_empty_cluster_gets_the_supervisor_pool_and_a_tainted_autoscaled_runs_pool() {
        let p = quiet(&spec("s-4vcpu-8gb"), &[], &Record::default());
        let [Action::Create(sup), Action::Create(runs)] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(
            (sup.name.as_str(), sup.count, sup.auto_scale),
            ("ops-supervisor", 1, false)
        );
        assert!(sup.taints.is_empty());
        assert_eq!(runs.name, "ops-runs-s-4vcpu-8gb");
        assert_eq!(
            (runs.auto_scale, runs.min_nodes, runs.max_nodes),
            (true, Some(0), Some(5))
        );
        assert_eq!(
            runs.labels.get("nodetype").map(String::as_str),
            Some("v4-worker")
        );
        assert_eq!(runs.taints, vec![runs_taint("v4-worker")]);
        assert_eq!(
            runner_tolerations("v4-worker"),
            "nodetype=v4-worker:NoSchedule"
        );
    }

    #[test]
    fn a_steady_cluster_needs_nothing() {
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool("b", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &["runs-1"]),
        ];
        let rec = owning(&pools, &["a", "b"]);
        let p = quiet(&spec("s-4vcpu-8gb"), &pools, &rec);
        assert!(p.actions.is_empty() && p.lines.is_empty(), "{p:?}");
        assert_eq!(p.record, rec);
    }

    #[test]
    fn the_runs_pool_follows_the_tasks_min_and_max_and_gets_its_label_and_taint_back() {
        let runs = pool("b", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &["r1", "r2"]);
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            runs.clone(),
        ];
        let rec = owning(&pools, &["a", "b"]);
        let mut s = spec("s-4vcpu-8gb");
        s.nodetype = DEFAULT_NODETYPE.into();
        assert!(quiet(&s, &pools, &rec).actions.is_empty());
        s.min = 1;
        s.max = 8;
        let p = quiet(&s, &pools, &rec);
        let [Action::Update { id, body, why, .. }] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(id, "b");
        assert_eq!(
            (body.min_nodes, body.max_nodes, body.count),
            (Some(1), Some(8), 2)
        );
        assert!(why.contains("0..5") && why.contains("1..8"), "{why}");
        // Someone removed the taint from the pool ops owns: put back, other taints kept.
        let mut edited = runs;
        edited.taints = vec![Taint {
            key: "team".into(),
            value: "a".into(),
            effect: TaintEffect::PreferNoSchedule,
        }];
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            edited,
        ];
        let p = quiet(&spec("s-4vcpu-8gb"), &pools, &rec);
        let [Action::Update { body, why, .. }] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(body.taints.len(), 2);
        assert!(why.contains("taint"), "{why}");
        // A pool ops does not own is never updated.
        let p = quiet(&s, &pools, &Record::default());
        assert!(!p.actions.iter().any(|a| matches!(a, Action::Update { .. })));
    }

    #[test]
    fn a_size_change_creates_the_new_pool_first_and_leaves_the_old_alone_until_it_exists() {
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool("b", "ops-runs-s-2vcpu-4gb", "s-2vcpu-4gb", &["old-1"]),
        ];
        let rec = owning(&pools, &["a", "b"]);
        let p = quiet(&spec("s-4vcpu-8gb"), &pools, &rec);
        assert!(matches!(p.actions.as_slice(), [Action::Create(n)] if n.size == "s-4vcpu-8gb"));
        assert!(p.record.retiring.is_empty());
    }

    #[test]
    fn the_old_pool_is_cordoned_then_deleted_after_its_last_run_pod() {
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool(
                "b",
                "ops-runs-s-2vcpu-4gb",
                "s-2vcpu-4gb",
                &["old-1", "old-2"],
            ),
            pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &[]),
        ];
        let rec = owning(&pools, &["a", "b", "c"]);
        let pods = RunPods::from([("old-2".to_string(), vec!["runner-run_abc".to_string()])]);
        let p = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &rec,
            &pods,
            &BTreeSet::new(),
            None,
            1000,
        );
        let [Action::Cordon { pool, nodes }, Action::Update { id, body, why, .. }] =
            p.actions.as_slice()
        else {
            panic!("{:?}", p.actions)
        };
        assert_eq!((pool.as_str(), nodes.len()), ("ops-runs-s-2vcpu-4gb", 2));
        // The old pool stops growing: no node the autoscaler adds for runs to land on.
        assert_eq!(id, "b");
        assert_eq!(
            (body.auto_scale, body.count, body.min_nodes, body.max_nodes),
            (false, 2, None, None)
        );
        assert_eq!(body.taints, vec![runs_taint(DEFAULT_NODETYPE)]);
        assert!(why.contains("no longer auto-scaled"), "{why}");
        assert!(p.lines[0].contains("runner-run_abc"), "{:?}", p.lines);
        assert_eq!(
            p.record.retiring,
            vec![Retiring {
                id: "b".into(),
                since: 1000
            }]
        );
        // Next run: cordoned, the run ended: deleted.
        let cordoned = BTreeSet::from(["old-1".to_string(), "old-2".to_string()]);
        let p = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &p.record,
            &RunPods::new(),
            &cordoned,
            None,
            2000,
        );
        let [Action::Delete { id, why, .. }] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(id, "b");
        assert!(why.contains("no run pod is left"), "{why}");
    }

    #[test]
    fn an_idle_old_pool_is_cordoned_on_one_run_and_deleted_on_a_later_one() {
        let mut pools = replacing();
        pools[1].auto_scale = false;
        let rec = owning(&pools, &["a", "b", "c"]);
        // No run pod in the pod list taken before the cordon: one may land there since.
        let p = quiet_at(&spec("s-4vcpu-8gb"), &pools, &rec, 0);
        assert_eq!(
            p.actions,
            vec![Action::Cordon {
                pool: "ops-runs-s-2vcpu-4gb".into(),
                nodes: vec!["old-1".into()]
            }]
        );
        assert!(
            p.lines[0].contains("deleted on a later run"),
            "{:?}",
            p.lines
        );
        // The cordon did not take (the next run still sees the node schedulable): cordoned
        // again, still not deleted.
        let again = quiet_at(&spec("s-4vcpu-8gb"), &pools, &p.record, 1000);
        assert!(
            matches!(again.actions.as_slice(), [Action::Cordon { .. }]),
            "{:?}",
            again.actions
        );
        // A later run sees it cordoned and a fresh pod list with no run pod on it: deleted.
        let cordoned = BTreeSet::from(["old-1".to_string()]);
        let later = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &again.record,
            &RunPods::new(),
            &cordoned,
            None,
            2000,
        );
        assert!(
            matches!(later.actions.as_slice(), [Action::Delete { id, .. }] if id == "b"),
            "{:?}",
            later.actions
        );
    }

    #[test]
    fn going_back_to_a_size_being_retired_uncordons_its_pool_and_forgets_its_retirement() {
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool("b", "ops-runs-s-2vcpu-4gb", "s-2vcpu-4gb", &["old-1"]),
        ];
        let mut rec = owning(&pools, &["a", "b"]);
        rec.retiring.push(Retiring {
            id: "b".into(),
            since: 0,
        });
        // Its nodes are no longer cordoned: the retirement is simply forgotten.
        let p = quiet(&spec("s-2vcpu-4gb"), &pools, &rec);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.record.retiring.is_empty(), "{:?}", p.record.retiring);
        // Its nodes are still cordoned: uncordoned, and the clock restarts until they are not.
        let cordoned = BTreeSet::from(["old-1".to_string()]);
        let p = plan(
            &spec("s-2vcpu-4gb"),
            &pools,
            &rec,
            &RunPods::new(),
            &cordoned,
            None,
            5000,
        );
        assert_eq!(
            p.actions,
            vec![Action::Uncordon {
                pool: "ops-runs-s-2vcpu-4gb".into(),
                nodes: vec!["old-1".into()]
            }]
        );
        assert_eq!(
            p.record.retiring,
            vec![Retiring {
                id: "b".into(),
                since: 5000
            }]
        );
        // Later another size: the pool busy with a run waits drain_timeout from then, not
        // from the first retirement.
        let pods = RunPods::from([("old-1".to_string(), vec!["runner-run_abc".to_string()])]);
        let pools = replacing();
        let mut rec = owning(&pools, &["a", "b", "c"]);
        rec.retiring = quiet(&spec("s-2vcpu-4gb"), &pools[..2], &p.record)
            .record
            .retiring;
        let later = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &rec,
            &pods,
            &BTreeSet::new(),
            None,
            7_200_000,
        );
        assert!(
            !later
                .actions
                .iter()
                .any(|a| matches!(a, Action::Delete { .. })),
            "{:?}",
            later.actions
        );
    }

    #[test]
    fn drain_timeout_deletes_the_old_pool_naming_the_runs_still_on_it() {
        let mut pools = replacing();
        pools[1].auto_scale = false;
        let mut rec = owning(&pools, &["a", "b", "c"]);
        rec.retiring.push(Retiring {
            id: "b".into(),
            since: 0,
        });
        let pods = RunPods::from([("old-1".to_string(), vec!["runner-run_long".to_string()])]);
        let cordoned = BTreeSet::from(["old-1".to_string()]);
        let early = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &rec,
            &pods,
            &cordoned,
            None,
            3_599_000,
        );
        assert!(
            early.actions.is_empty() && early.lines[0].contains("in 1s"),
            "{early:?}"
        );
        let late = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &rec,
            &pods,
            &cordoned,
            None,
            3_600_000,
        );
        let [Action::Delete { why, .. }] = late.actions.as_slice() else {
            panic!("{:?}", late.actions)
        };
        assert!(
            why.contains("drain_timeout (3600s)") && why.contains("runner-run_long"),
            "{why}"
        );
    }

    #[test]
    fn pools_ops_did_not_create_are_never_cordoned_or_deleted() {
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool("x", "ops-runs-s-2vcpu-4gb", "s-2vcpu-4gb", &["theirs-1"]),
            pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &[]),
        ];
        let rec = owning(&pools, &["a", "c"]);
        let p = quiet(&spec("s-4vcpu-8gb"), &pools, &rec);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.lines[0].contains("not ops' own"), "{:?}", p.lines);
    }

    #[test]
    fn a_pool_create_whose_answer_was_lost_is_recorded_when_listed_and_a_gone_pool_forgotten() {
        let mut rec = Record::default();
        rec.pool_created("gone", "ops-runs-s-1vcpu-2gb", "s-1vcpu-2gb", 0);
        rec.pending_pools.push(("ops-runs-s-4vcpu-8gb".into(), 0));
        rec.retiring.push(Retiring {
            id: "gone".into(),
            since: 0,
        });
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &[]),
            pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &[]),
        ];
        let p = quiet(&spec("s-4vcpu-8gb"), &pools, &rec);
        assert!(p.record.owns_pool("c") && !p.record.owns_pool("gone"));
        assert!(p.record.pending_pools.is_empty() && p.record.retiring.is_empty());
    }

    #[test]
    fn a_pool_named_like_a_lost_create_is_not_ops_own_when_its_nodes_predate_it_or_it_came_a_day_after(
    ) {
        const HOUR: i64 = 3_600_000;
        let mut rec = Record::default();
        rec.pending_pools.push(("ops-runs-s-4vcpu-8gb".into(), 0));
        let sup = pool("a", "ops-supervisor", "s-2vcpu-2gb", &[]);
        let empty = pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &[]);
        // Not listed for two hours (the API down): the name is still pending.
        let p = quiet_at(
            &spec("s-4vcpu-8gb"),
            std::slice::from_ref(&sup),
            &rec,
            2 * HOUR,
        );
        assert_eq!(p.record.pending_pools, rec.pending_pools);
        // First listed more than a day after the create: someone else's, the name forgotten.
        let p = quiet_at(
            &spec("s-4vcpu-8gb"),
            &[sup.clone(), empty],
            &rec,
            24 * HOUR + 1,
        );
        assert!(!p.record.owns_pool("c"), "{:?}", p.record);
        assert!(p.record.pending_pools.is_empty(), "{:?}", p.record);
        // Listed at once, but its nodes older than the create: it was there before, and the
        // name is decided (forgotten).
        let mut older = pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &["n1"]);
        older.nodes[0].created_at = "1969-12-31T22:59:59Z".into();
        let p = quiet(&spec("s-4vcpu-8gb"), &[sup.clone(), older.clone()], &rec);
        assert!(!p.record.owns_pool("c"), "{:?}", p.record);
        assert!(p.record.pending_pools.is_empty(), "{:?}", p.record);
        // Its nodes made since the create: ops' own.
        older.nodes[0].created_at = "1970-01-01T00:00:05Z".into();
        let p = quiet(&spec("s-4vcpu-8gb"), &[sup, older], &rec);
        assert!(p.record.owns_pool("c"), "{:?}", p.record);
    }

    #[test]
    fn ops_own_pool_first_listed_two_hours_after_its_lost_create_is_still_ops_own() {
        let mut rec = Record::default();
        rec.pending_pools.push(("ops-runs-s-4vcpu-8gb".into(), 0));
        let mut c = pool("c", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &["n1"]);
        c.nodes[0].created_at = "1970-01-01T00:05:00Z".into(); // made by ops' create
        let pools = [pool("a", "ops-supervisor", "s-2vcpu-2gb", &[]), c];
        let p = quiet_at(&spec("s-4vcpu-8gb"), &pools, &rec, 2 * 3_600_000);
        assert!(p.record.owns_pool("c"), "{:?}", p.record);
        assert!(p.record.pending_pools.is_empty(), "{:?}", p.record);
        assert!(
            p.lines.iter().any(|l| l.contains(UNHEARD_POOL_CREATE)),
            "{:?}",
            p.lines
        );
    }

    #[test]
    fn a_node_first_cordoned_late_gets_its_own_drain_timeout() {
        const HOUR: i64 = 3_600_000;
        let (pools, rec) = retiring_since_0(&["old-1", "new-2"]);
        let all = BTreeSet::from(["old-1".to_string(), "new-2".to_string()]);
        // Two hours into the retirement, new-2 (added before the pool stopped growing) is
        // still schedulable: cordoned now, and its drain starts now.
        let old1 = BTreeSet::from(["old-1".to_string()]);
        let k = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &rec,
            &RunPods::new(),
            &old1,
            Some(&all),
            2 * HOUR,
        );
        assert_eq!(
            k.actions,
            vec![Action::Cordon {
                pool: "ops-runs-s-2vcpu-4gb".into(),
                nodes: vec!["new-2".into()]
            }]
        );
        assert_eq!(k.record.retiring[0].since, 2 * HOUR);
        // A minute later a run that landed on new-2 before its cordon is still running: kept.
        let pods = RunPods::from([("new-2".to_string(), vec!["runner-run_x".to_string()])]);
        let later = |at| {
            plan(
                &spec("s-4vcpu-8gb"),
                &pools,
                &k.record,
                &pods,
                &all,
                Some(&all),
                at,
            )
        };
        let k1 = later(2 * HOUR + 60_000);
        assert!(k1.actions.is_empty(), "{:?}", k1.actions);
        assert!(k1.lines[0].contains("in 3540s"), "{:?}", k1.lines);
        // drain_timeout after new-2's own cordon: deleted.
        let k2 = later(3 * HOUR);
        assert!(
            matches!(k2.actions.as_slice(), [Action::Delete { why, .. }] if why.contains("runner-run_x")),
            "{:?}",
            k2.actions
        );
    }

    #[test]
    fn a_node_that_never_registers_with_kubernetes_does_not_keep_the_old_pool_forever() {
        const HOUR: i64 = 3_600_000;
        let (pools, rec) = retiring_since_0(&["old-1", "ghost"]);
        let cordoned = BTreeSet::from(["old-1".to_string()]);
        let known = BTreeSet::from(["sup-1".to_string(), "old-1".to_string()]);
        let at = |pods: &RunPods, now| {
            plan(
                &spec("s-4vcpu-8gb"),
                &pools,
                &rec,
                pods,
                &cordoned,
                Some(&known),
                now,
            )
        };
        // The ghost is not cordoned (it cannot be) and not waited for: the pool goes.
        let p = at(&RunPods::new(), 100 * HOUR);
        assert!(
            matches!(p.actions.as_slice(), [Action::Delete { id, .. }] if id == "b"),
            "{:?}",
            p.actions
        );
        assert!(
            p.lines
                .iter()
                .any(|l| l.contains("node ghost") && l.contains("not registered")),
            "{:?}",
            p.lines
        );
        // A run still on old-1 before drain_timeout keeps it, and the line names no 0s.
        let pods = RunPods::from([("old-1".to_string(), vec!["runner-run_y".to_string()])]);
        let p = at(&pods, HOUR / 2);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(
            p.lines
                .iter()
                .any(|l| l.contains("runner-run_y") && l.contains("in 1800s")),
            "{:?}",
            p.lines
        );
        // Without the node list (not read), every node DigitalOcean lists is cordoned.
        let p = plan(
            &spec("s-4vcpu-8gb"),
            &pools,
            &rec,
            &RunPods::new(),
            &cordoned,
            None,
            100 * HOUR,
        );
        assert!(
            matches!(p.actions.as_slice(), [Action::Cordon { nodes, .. }] if nodes == &["ghost".to_string()]),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn auto_takes_the_cheapest_offered_size_whose_allocatable_fits_the_largest_preset() {
        let slugs: Vec<String> = catalog().into_iter().map(|s| s.slug).collect();
        let all = options(&slugs.iter().map(String::as_str).collect::<Vec<_>>());
        let small = resolve(Some("small-1x"));
        assert_eq!(
            auto_size(&small, &all, &catalog(), "nyc1", None).as_deref(),
            Some("s-1vcpu-2gb")
        );
        // medium-2x requests 1.5 CPU and 4 GiB: a 4 GB node leaves too little memory.
        let medium = resolve(Some("medium-2x"));
        assert!(!fits_node(&medium, &catalog()[2]));
        assert_eq!(
            auto_size(&medium, &all, &catalog(), "nyc1", None).as_deref(),
            Some("s-4vcpu-8gb")
        );
        let large2 = resolve(Some("large-2x"));
        assert_eq!(auto_size(&large2, &all, &catalog(), "nyc1", None), None);
        // Only sizes the options offer, only in the region.
        let few = options(&["s-8vcpu-16gb"]);
        assert_eq!(
            auto_size(&medium, &few, &catalog(), "nyc1", None).as_deref(),
            Some("s-8vcpu-16gb")
        );
        assert_eq!(auto_size(&medium, &all, &catalog(), "sfo3", None), None);
        // It only grows: a larger current size that fits is kept.
        assert_eq!(
            auto_size(&small, &all, &catalog(), "nyc1", Some("s-4vcpu-8gb")).as_deref(),
            Some("s-4vcpu-8gb")
        );
    }

    #[test]
    fn the_monthly_cost_is_nodes_times_price_plus_ha() {
        let pools = [
            pool("a", "ops-supervisor", "s-2vcpu-2gb", &["sup-1"]),
            pool("b", "ops-runs-s-4vcpu-8gb", "s-4vcpu-8gb", &["r1", "r2"]),
            pool("z", "other", "gpu-h100x1-80gb", &["g"]),
        ];
        let (cost, unknown) = monthly_cost(&pools, &catalog(), false);
        assert_eq!(cost, 18.0 + 2.0 * 48.0);
        assert_eq!(unknown, vec!["gpu-h100x1-80gb".to_string()]);
        assert_eq!(monthly_cost(&pools[..1], &catalog(), true).0, 58.0);
    }
}
