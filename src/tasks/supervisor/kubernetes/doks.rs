//! DigitalOcean Kubernetes' observe and apply around the pure decisions (`cluster`, `pools`):
//! one run's DigitalOcean requests and changes. A healthy run makes one request (the cluster by
//! id, its pools and nodes included); the credentials come from the sealed store. A dry run
//! reads but changes nothing, in DigitalOcean or in ops' state, and says what it would do.
//!
//! Two steps, because the pools' plan needs what only the cluster's API knows (the run pods on
//! each node, the nodes cordoned): `tend_cluster`, then the Kubernetes side reads the cluster,
//! then `tend_pools`, whose cordons the Kubernetes side performs.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::clients::digitalocean::{DigitalOcean, Size};
use crate::clients::doks::{Cluster, Options};
use crate::clients::http::refused_outright;
use crate::state::State;
use crate::tasks::supervisor::presets::Preset;
use crate::tasks::supervisor::store::{DOKS_SIZES_KEY, DOKS_UPGRADES_KEY, NAMESPACE};

use super::cluster::{self, ClusterSpec, Lookup, Record, Step};
use super::pools::{self, Action, PoolSpec, RunPods};

/// What the cluster step came to.
#[derive(Debug)]
pub enum Found {
    /// The cluster, ready (`running`, or `upgrading`/`degraded`: its API answers).
    Ready(Box<Cluster>),
    /// Not ready yet (provisioning, just created, or in error): nothing else this run. The
    /// cluster as DigitalOcean answered, when it did.
    Waiting(Option<Box<Cluster>>),
    /// A refusal with its fix (the task fails with it).
    Refused(String),
}

/// One run's DigitalOcean side: what it found, changed (each an event) and would change.
#[derive(Debug, Default)]
pub struct Report {
    /// Changes made in DigitalOcean (each one an event).
    pub changes: Vec<String>,
    /// What a dry run would change, and what the operator should know.
    pub lines: Vec<String>,
    /// Nodes the Kubernetes side must cordon: (pool, node names).
    pub cordon: Vec<(String, Vec<String>)>,
    /// Nodes the Kubernetes side must uncordon (a pool being retired the task wants again).
    pub uncordon: Vec<(String, Vec<String>)>,
}

/// One run's means: the DigitalOcean client, ops' state, the time, and whether it is a dry run
/// (which reads but writes nothing, in DigitalOcean or in the state).
pub struct Ctx<'a> {
    pub api: &'a DigitalOcean<'a>,
    pub state: &'a State,
    pub now: i64,
    pub dry_run: bool,
}

impl Ctx<'_> {
    fn record(&self) -> anyhow::Result<Record> {
        Ok(cluster::load(self.state)?.unwrap_or_default())
    }

    fn save(&self, record: &Record) -> anyhow::Result<()> {
        cluster::save(self.state, record, self.now)
    }
}

/// Finds, adopts or creates the cluster. Saves the record unless a dry run.
pub fn tend_cluster(
    ctx: &Ctx,
    spec: &ClusterSpec,
    pools: &PoolSpec,
    report: &mut Report,
) -> anyhow::Result<Found> {
    let prev = ctx.record()?;
    let found = match cluster::lookup(spec, &prev) {
        Lookup::Id(id) => ctx.api.cluster(&id)?,
        Lookup::Name(name) => ctx.api.cluster_by_key(&name)?,
    };
    let (step, mut record) = cluster::decide(spec, &prev, found, ctx.now);
    // A lost create's cluster recorded as ops' own: the create's event, even if refused.
    report.lines.extend(cluster::unheard_create(&prev, &record));
    let out = match step {
        Step::Use {
            cluster,
            ready,
            note,
        } => {
            if let Some(n) = note {
                report
                    .lines
                    .push(format!("cluster {} ({}): {n}", cluster.name, cluster.id));
            }
            if ready {
                Found::Ready(cluster)
            } else {
                Found::Waiting(Some(cluster))
            }
        }
        Step::Refuse(line) => Found::Refused(line),
        // `decide` forgot it, its pools and all kept about it.
        Step::Forget { name, id } => {
            report.lines.push(format!(
                "cluster {name} ({id}), which ops created, is gone from DigitalOcean: forgotten; the next run creates a new one"
            ));
            if !ctx.dry_run {
                report.changes.push(format!(
                    "forgot cluster {name} ({id}): gone from DigitalOcean"
                ));
            }
            Found::Waiting(None)
        }
        Step::Create => create(ctx, spec, pools, &mut record, report)?,
    };
    if !ctx.dry_run && record != prev {
        ctx.save(&record)?;
    }
    Ok(out)
}

/// Creates the cluster with both pools (a dry run says it would); the create is recorded
/// before it is sent, so an answer lost on the way still finds it as ops' own.
fn create(
    ctx: &Ctx,
    spec: &ClusterSpec,
    pools: &PoolSpec,
    record: &mut Record,
    report: &mut Report,
) -> anyhow::Result<Found> {
    let options = ctx.api.kubernetes_options()?;
    let body = cluster::new_cluster(
        spec,
        &options,
        vec![pools::supervisor_pool(pools), pools::runs_pool(pools)],
    );
    let body = match body {
        Ok(b) => b,
        Err(line) => return Ok(Found::Refused(line)),
    };
    let what = format!(
        "cluster {} ({}, DOKS {}, ha {}, maintenance {} {} UTC, surge upgrades) with node pools {}",
        body.name,
        body.region,
        body.version,
        body.ha,
        body.maintenance_policy.day,
        body.maintenance_policy.start_time,
        body.node_pools
            .iter()
            .map(describe_pool)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    if ctx.dry_run {
        report.lines.push(format!("would create {what}"));
        return Ok(Found::Waiting(None));
    }
    record.pending = Some((body.name.clone(), ctx.now));
    ctx.save(record)?;
    let made = ctx
        .api
        .create_cluster(&body)
        .with_context(|| format!("creating {what}"))?;
    record.cluster_created(&made, ctx.now);
    report
        .changes
        .push(format!("created {what} as {}", made.id));
    Ok(Found::Waiting(Some(Box::new(made))))
}

fn describe_pool(p: &crate::clients::doks::NewNodePool) -> String {
    if p.auto_scale {
        format!(
            "{} ({}, {}..{} nodes, label nodetype={}, taint NoSchedule)",
            p.name,
            p.size,
            p.min_nodes.unwrap_or(0),
            p.max_nodes.unwrap_or(0),
            p.labels.get(pools::NODETYPE_KEY).map_or("", String::as_str)
        )
    } else {
        format!("{} ({}, {} node)", p.name, p.size, p.count)
    }
}

/// What the Kubernetes side read of a ready cluster: the run pods on each node, the nodes
/// already cordoned, and the names of all the nodes it knows (`None`: the nodes were not read,
/// as while no pool retires).
#[derive(Debug, Clone, Default)]
pub struct KubeFacts {
    pub pods: RunPods,
    pub cordoned: BTreeSet<String>,
    pub known: Option<BTreeSet<String>>,
}

/// Plans and applies the pools of a ready cluster: creates, updates and deletes in
/// DigitalOcean (each recorded as it succeeds; the first failure ends the run's changes),
/// cordons and uncordons handed to the Kubernetes side in `report.cordon` and
/// `report.uncordon`.
pub fn tend_pools(
    ctx: &Ctx,
    cluster: &Cluster,
    spec: &PoolSpec,
    facts: &KubeFacts,
    report: &mut Report,
) -> anyhow::Result<()> {
    let prev = ctx.record()?;
    let plan = pools::plan(
        spec,
        &cluster.node_pools,
        &prev,
        &facts.pods,
        &facts.cordoned,
        facts.known.as_ref(),
        ctx.now,
    );
    report.lines.extend(plan.lines);
    let mut record = plan.record;
    let mut result = Ok(());
    for action in plan.actions {
        result = apply(ctx, &cluster.id, action, &mut record, report);
        if result.is_err() {
            break;
        }
    }
    if !ctx.dry_run && record != prev {
        ctx.save(&record)?;
    }
    result
}

/// One pool action (a dry run says what it would do).
fn apply(
    ctx: &Ctx,
    cluster: &str,
    action: Action,
    record: &mut Record,
    report: &mut Report,
) -> anyhow::Result<()> {
    let would = match action {
        Action::Cordon { pool, nodes } => {
            hand_over(ctx.dry_run, report, true, pool, nodes);
            return Ok(());
        }
        Action::Uncordon { pool, nodes } => {
            hand_over(ctx.dry_run, report, false, pool, nodes);
            return Ok(());
        }
        // Only a pool in the record: the plan never names another, and this holds it.
        Action::Delete { id, .. } if !record.owns_pool(&id) => return Ok(()),
        Action::Create(p) => {
            let what = format!("node pool {}", describe_pool(&p));
            if !ctx.dry_run {
                record.pending_pools.retain(|(n, _)| n != &p.name);
                record.pending_pools.push((p.name.clone(), ctx.now));
                ctx.save(record)?;
                let made = match ctx.api.create_node_pool(cluster, &p) {
                    Ok(made) => made,
                    Err(e) => {
                        // Refused outright: nothing was made, the name vouches for nothing.
                        if refused_outright(&e) {
                            record.pending_pools.retain(|(n, _)| n != &p.name);
                            ctx.save(record)?;
                        }
                        return Err(e.context(format!("creating {what}")));
                    }
                };
                record.pool_created(&made.id, &made.name, &made.size, ctx.now);
                report
                    .changes
                    .push(format!("created {what} as {}", made.id));
            }
            format!("would create {what}")
        }
        Action::Update {
            id,
            name,
            body,
            why,
        } => {
            if !ctx.dry_run {
                ctx.api
                    .update_node_pool(cluster, &id, &body)
                    .with_context(|| format!("updating node pool {name}"))?;
                report
                    .changes
                    .push(format!("updated node pool {name}: {why}"));
            }
            format!("would update node pool {name}: {why}")
        }
        Action::Delete { id, name, why } => {
            if !ctx.dry_run {
                ctx.api
                    .delete_node_pool(cluster, &id)
                    .with_context(|| format!("deleting node pool {name}"))?;
                record.pool_gone(&id);
                report
                    .changes
                    .push(format!("deleted node pool {name} ({id}): {why}"));
            }
            format!("would delete node pool {name} ({id}): {why}")
        }
    };
    if ctx.dry_run {
        report.lines.push(would);
    }
    Ok(())
}

/// Hands a cordon (or an uncordon) to the Kubernetes side; a dry run says it would.
fn hand_over(dry_run: bool, report: &mut Report, cordon: bool, pool: String, nodes: Vec<String>) {
    if dry_run {
        report.lines.push(if cordon {
            format!("would cordon {} of node pool {pool}", nodes.join(", "))
        } else {
            format!(
                "would uncordon {} of node pool {pool} (SUPERVISOR_SIZE wants it again)",
                nodes.join(", ")
            )
        });
    }
    let to = if cordon {
        &mut report.cordon
    } else {
        &mut report.uncordon
    };
    to.push((pool, nodes));
}

/// An answer DigitalOcean changes rarely, kept a day under `key` for `scope` (a cluster id, or
/// empty): read again once older, or kept for another scope.
#[derive(Serialize, Deserialize)]
struct Daily<T> {
    scope: String,
    value: T,
    at: i64,
}

const DAY_MS: i64 = 24 * 3_600_000;

fn daily<T: Serialize + serde::de::DeserializeOwned>(
    ctx: &Ctx,
    key: &str,
    scope: &str,
    fetch: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if let Some((kept, _)) = ctx.state.kv_get::<Daily<T>>(NAMESPACE, key)? {
        if kept.scope == scope && ctx.now - kept.at < DAY_MS {
            return Ok(kept.value);
        }
    }
    let value = fetch()?;
    let kept = Daily {
        scope: scope.into(),
        value,
        at: ctx.now,
    };
    if !ctx.dry_run {
        ctx.state.kv_set(NAMESPACE, key, &kept, ctx.now)?;
    }
    Ok(kept.value)
}

/// DigitalOcean's Kubernetes options and its sizes with their prices, asked at most daily.
pub fn catalog(ctx: &Ctx) -> anyhow::Result<(Options, Vec<Size>)> {
    daily(ctx, DOKS_SIZES_KEY, "", || {
        Ok((ctx.api.kubernetes_options()?, ctx.api.sizes()?))
    })
}

/// The runs pool's size: `SUPERVISOR_SIZE`, or for `auto` the cheapest offered size whose
/// allocatable fits `largest` (asked of DigitalOcean at most daily; it only grows from the runs
/// pool ops made last). `Err`: one line with the fix.
pub fn runs_size(
    ctx: &Ctx,
    setting: &str,
    largest: &Preset,
    region: &str,
) -> anyhow::Result<Result<String, String>> {
    if setting != "auto" {
        return Ok(Ok(setting.to_string()));
    }
    let current = current_runs_size(ctx)?;
    let (options, catalog) = catalog(ctx)?;
    Ok(
        pools::auto_size(largest, &options, &catalog, region, current.as_deref()).ok_or_else(|| {
            format!(
                "SUPERVISOR_SIZE=auto: no size DigitalOcean offers for Kubernetes in {region} fits a {} run ({} CPU, {} GB): set SUPERVISOR_SIZE to a larger size, or move those runs to a smaller machine",
                largest.name, largest.cpu, largest.memory_gb
            )
        }),
    )
}

/// The runs pool's size ops created last (for `auto`, which only grows).
fn current_runs_size(ctx: &Ctx) -> anyhow::Result<Option<String>> {
    Ok(ctx
        .record()?
        .pools
        .iter()
        .filter(|p| p.name.starts_with(pools::RUNS_POOL_PREFIX))
        .max_by_key(|p| p.at)
        .map(|p| p.size.clone()))
}

/// The versions DigitalOcean offers to upgrade `cluster` to (newest last), asked at most daily
/// (so a healthy run stays at one DigitalOcean request on all but one run a day). ops never
/// starts an upgrade: it drains every node (docs/kubernetes.md).
pub fn upgrades(ctx: &Ctx, cluster: &str) -> anyhow::Result<Vec<String>> {
    daily(ctx, DOKS_UPGRADES_KEY, cluster, || {
        let mut versions = ctx.api.available_upgrades(cluster)?;
        versions.sort_by_key(|v| v.key());
        Ok(versions.into_iter().map(|v| v.slug).collect())
    })
}
