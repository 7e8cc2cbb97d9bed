//! `platform: kubernetes` on DigitalOcean Kubernetes (no `kubeconfig:`): the cluster found,
//! adopted or created (`doks::tend_cluster`; provisioning: the run says so and stops, Ok; in
//! error, being deleted or unseen: the task fails, naming the cluster and the fix), its
//! credentials (sealed in ops' state while usable, else fetched: only their CA is trusted), the
//! Kubernetes client built from them, then the workload run of `mod.rs` with this side's part
//! ([`Side`]): fresh credentials once after a 401, the pools (`doks::tend_pools`, fed by the
//! namespace's pods and, only while a pool retires, the nodes), the cordons they ask, and the
//! cluster's status and cost. A healthy run makes one DigitalOcean request (the cluster).

use anyhow::Context;

use crate::clients::digitalocean::DigitalOcean;
use crate::clients::doks::Cluster;
use crate::clients::http::Http;
use crate::clients::kubernetes::{Kube, Node, Pod, Selector};
use crate::config::SupervisorOptions;
use crate::redact;
use crate::sealed::Sealer;
use crate::state::State;
use crate::task::{ActionRecord, ActionType, Outcome, Status, TaskCtx};
use crate::tasks::supervisor::capacity;
use crate::tasks::supervisor::inputs::{self, deployment_tag};
use crate::tasks::supervisor::plan::MANAGED_TAG;
use crate::tasks::supervisor::presets::{self, Preset};
use crate::tasks::supervisor::store;
use crate::tasks::supervisor::webapp::FlowRead;

use super::cluster::{self, ClusterSpec, DEFAULT_MAINTENANCE_DAY, DEFAULT_MAINTENANCE_START};
use super::credentials;
use super::doks::{self, Ctx, Found, KubeFacts, Report};
use super::pools::{self, PoolSpec, RunPods};

const NO_CLUSTER: &str = "platform: kubernetes needs a cluster: kubeconfig: PATH in the supervisor task (any cluster), or DIGITALOCEAN_TOKEN (DigitalOcean Kubernetes: ops creates or adopts the cluster)";

/// How the DigitalOcean side starts a run.
pub enum Start<'a> {
    /// The cluster is ready: its side of the run, and a client of its API.
    Ready(Box<Side<'a>>, Kube),
    /// Not ready, refused or not possible: the run's outcome, nothing more to do.
    Stop(Outcome),
}

/// What `ops status` shows while the cluster is not ready: its state, the supervisor starting,
/// and the API server a run before this one applied the objects at (the move back to droplets
/// removes them there; empty: nothing applied yet).
fn waiting_status(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    dctx: &Ctx,
    record: &crate::record::ConfigRecord,
    c: &Cluster,
) -> store::KubernetesStatus {
    let s = ctx.settings;
    let version = crate::release::supervisor_version(
        s.trigger_version.as_deref(),
        record.webapp_version.as_deref(),
    );
    let applied_at =
        store::load::<store::KubernetesStatus>(Some(dctx.state), store::KUBERNETES_KEY)
            .map(|k| k.server)
            .unwrap_or_default();
    store::KubernetesStatus {
        namespace: opts.namespace.clone(),
        server: applied_at,
        version: version.tag,
        health: "starting".into(),
        supervisors: Vec::new(),
        pending: Vec::new(),
        doks: Some(cluster_status(dctx, c)),
    }
}

/// The cluster found, adopted or created, and its credentials, through `http`.
pub fn start<'a>(
    opts: &SupervisorOptions,
    ctx: &TaskCtx<'a>,
    http: &'a Http,
) -> anyhow::Result<Start<'a>> {
    let s = ctx.settings;
    let token = s
        .digitalocean_token
        .as_ref()
        .ok_or_else(|| crate::exit::not_configured(NO_CLUSTER))?;
    // The config record first: no cluster is made for a deployment extract has not read.
    let record = inputs::record(ctx)?;
    let state = ctx.state.ok_or_else(|| {
        anyhow::anyhow!("DigitalOcean Kubernetes needs ops' state (its record of the cluster), which is not open: run `ops run` once without --dry-run")
    })?;
    let bounds = capacity::Bounds::new(s.supervisor_count, opts.min, opts.max)
        .map_err(crate::exit::config_error)?;
    let api = DigitalOcean::new(http, &s.digitalocean_api_url, token, ctx.deadline);
    let (now, dry_run) = (crate::state::now_ms(), ctx.dry_run);
    let dctx = Ctx {
        api: &api,
        state,
        now,
        dry_run,
    };
    let pools = match pool_spec(opts, ctx, &dctx, bounds, &presets::largest(&[]))? {
        Ok(p) => p,
        Err(line) => return Ok(Start::Stop(Outcome::lines(Status::Failed, vec![line]))),
    };
    let mut report = Report::default();
    let found = doks::tend_cluster(&dctx, &cluster_spec(opts, ctx)?, &pools, &mut report)?;
    let changes = announce(ctx, &mut report);
    let cluster = match found {
        Found::Ready(c) => *c,
        Found::Waiting(c) => {
            let out = waiting(ctx, &dctx, &report, changes);
            if let (Some(c), false) = (c, dry_run) {
                let status = waiting_status(opts, ctx, &dctx, &record, &c);
                store::save(ctx, store::KUBERNETES_KEY, &status, now)?;
            }
            return Ok(Start::Stop(out));
        }
        Found::Refused(line) => {
            let mut out = Outcome::lines(Status::Failed, vec![redact::line(&line)]);
            out.detail.extend(changes);
            return Ok(Start::Stop(out));
        }
    };
    let sealer = Sealer::load(ctx.state_dir, !dry_run)?;
    let creds = credentials::get(&dctx, sealer.as_ref(), &cluster.id, false)
        .context("fetching the cluster's credentials")?;
    let kube = Kube::new(&creds.for_api()?, ctx.deadline)?;
    let side = Side {
        api,
        state,
        now,
        dry_run,
        sealer,
        cluster,
        pools,
        report,
        changes,
        kube_before: 0,
    };
    Ok(Start::Ready(Box::new(side), kube))
}

/// The cluster as the task asks it.
fn cluster_spec(opts: &SupervisorOptions, ctx: &TaskCtx) -> anyhow::Result<ClusterSpec> {
    let s = ctx.settings;
    let tag = deployment_tag(s);
    let maintenance = match &opts.maintenance {
        Some(m) => crate::config::maintenance_window(m).map_err(crate::exit::config_error)?,
        None => (
            DEFAULT_MAINTENANCE_DAY.to_string(),
            DEFAULT_MAINTENANCE_START.to_string(),
        ),
    };
    Ok(ClusterSpec {
        adopt: opts.cluster.clone(),
        name: tag.clone(),
        tags: vec![tag, MANAGED_TAG.to_string()],
        region: s.supervisor_region.clone(),
        ha: opts.ha,
        maintenance,
        scale_in_after: opts.scale_in_after,
    })
}

/// The pools as the task asks them, the runs pool's size resolved for the `largest` preset
/// waiting (`Err`: `auto` has no size that fits, one line with the fix).
fn pool_spec(
    opts: &SupervisorOptions,
    ctx: &TaskCtx,
    dctx: &Ctx,
    bounds: capacity::Bounds,
    largest: &Preset,
) -> anyhow::Result<Result<PoolSpec, String>> {
    let s = ctx.settings;
    let size = doks::runs_size(dctx, &s.supervisor_size, largest, &s.supervisor_region)?;
    Ok(size.map(|runs_size| PoolSpec {
        tag: deployment_tag(s),
        runs_size,
        min: u32::try_from(bounds.min).unwrap_or(u32::MAX),
        max: u32::try_from(bounds.max).unwrap_or(u32::MAX),
        nodetype: opts.node_label.clone(),
        drain_timeout: opts.drain_timeout,
    }))
}

/// Each change DigitalOcean made this run is an event and a line of the run; so is a cluster or
/// a node pool whose create's answer was lost, found and recorded as ops' own now (the create
/// was never an event: as far as ops heard, it failed).
fn announce(ctx: &TaskCtx, report: &mut Report) -> Vec<String> {
    if !ctx.dry_run {
        let (unheard, rest) = std::mem::take(&mut report.lines)
            .into_iter()
            .partition(|l| {
                l.contains(cluster::UNHEARD_CREATE) || l.contains(pools::UNHEARD_POOL_CREATE)
            });
        report.lines = rest;
        report.changes.extend(unheard);
    }
    let mut lines = Vec::new();
    for change in std::mem::take(&mut report.changes) {
        let line = redact::line(&change);
        let kind =
            if change.starts_with("created cluster") || change.contains(cluster::UNHEARD_CREATE) {
                "doks.cluster_created"
            } else if change.starts_with("forgot cluster") {
                "doks.cluster_forgotten"
            } else if change.starts_with("created node pool")
                || change.contains(pools::UNHEARD_POOL_CREATE)
            {
                "doks.pool_created"
            } else if change.starts_with("updated node pool") {
                "doks.pool_updated"
            } else {
                "doks.pool_deleted"
            };
        ctx.changed(kind, line.clone());
        lines.push(line);
    }
    lines
}

/// The cluster is not ready (being created or provisioned, or just forgotten): the run says so
/// and stops, Ok; the next run goes on. (In error, being deleted, in an unknown state, unseen
/// with this token or provisioning far too long, it is refused instead: the task fails.)
fn waiting(ctx: &TaskCtx, dctx: &Ctx, report: &Report, changes: Vec<String>) -> Outcome {
    let mut detail = changes;
    detail.extend(report.lines.iter().map(|l| redact::line(l)));
    let planned_any = ctx.dry_run && report.lines.iter().any(|l| l.starts_with("would "));
    let recorded = cluster::load(dctx.state).ok().flatten().unwrap_or_default();
    let name = recorded
        .cluster
        .as_ref()
        .map(|c| c.name.clone())
        .or(recorded.pending.map(|(n, _)| n));
    let headline = match &name {
        _ if planned_any => "the cluster does not exist yet: a dry run cannot read its Kubernetes API, so the supervisor's objects are not shown".to_string(),
        Some(n) => format!("cluster {}: not ready yet; the supervisor's objects are applied once it is (the next run goes on)", redact::line(n)),
        None => "the cluster is not ready yet; the next run goes on".to_string(),
    };
    detail.push(headline.clone());
    let actions = planned(&detail);
    let mut out = Outcome::lines(
        if planned_any {
            Status::Planned
        } else {
            Status::Ok
        },
        detail,
    );
    out.actions = actions;
    out.summary = Some(headline);
    out.detail.push(format!(
        "DigitalOcean requests: {}, Kubernetes API requests: 0, Postgres sessions: 0",
        dctx.api.requests.get()
    ));
    out
}

/// Nodes to mark, by pool: (pool, node names).
type Marks = Vec<(String, Vec<String>)>;

/// Uncordons, then cordons, the nodes the pools' plan asks (each an event, its line added to
/// `changes`); the first failure ends them. A node DigitalOcean lists that the API server does
/// not know yet is left for a later run (a line in `lines`), whose node list decides it: known
/// by then, it is cordoned; still unknown, it can run no pod and keeps no pool.
fn mark_nodes(
    ctx: &TaskCtx,
    kube: &Kube,
    (uncordon, cordon): (Marks, Marks),
    changes: &mut Vec<String>,
    lines: &mut Vec<String>,
) -> anyhow::Result<()> {
    let marks = uncordon
        .into_iter()
        .map(|m| (false, m))
        .chain(cordon.into_iter().map(|m| (true, m)));
    for (cordon, (pool, nodes)) in marks {
        for node in &nodes {
            let (done, kind, line) = if cordon {
                (kube.cordon(node).map(drop), "kubernetes.cordoned", format!(
                    "cordoned node {node} of node pool {pool} (the pool is being replaced: no new run lands there)"
                ))
            } else {
                (kube.uncordon(node).map(drop), "kubernetes.uncordoned", format!(
                    "uncordoned node {node} of node pool {pool} (SUPERVISOR_SIZE wants the pool again: runs land there again)"
                ))
            };
            let verb = if cordon { "cordoning" } else { "uncordoning" };
            if done.as_ref().is_err_and(|e| {
                e.downcast_ref::<crate::clients::kubernetes::ApiError>()
                    .is_some_and(|a| a.not_found())
            }) {
                lines.push(redact::line(&format!(
                    "node {node} of node pool {pool} is not registered with Kubernetes yet: {verb} it on a later run"
                )));
                continue;
            }
            done.with_context(|| redact::line(&format!("{verb} node {node} of node pool {pool}")))?;
            let line = redact::line(&line);
            ctx.changed(kind, line.clone());
            changes.push(line);
        }
    }
    Ok(())
}

/// The DigitalOcean side of a run on a ready cluster, which `mod.rs`'s run calls into.
pub struct Side<'a> {
    api: DigitalOcean<'a>,
    state: &'a State,
    now: i64,
    dry_run: bool,
    sealer: Option<Sealer>,
    cluster: Cluster,
    pools: PoolSpec,
    report: Report,
    /// The changes made so far (already events), as lines of the run.
    changes: Vec<String>,
    /// Kubernetes API requests of clients replaced after a 401.
    kube_before: u32,
}

impl Side<'_> {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            api: &self.api,
            state: self.state,
            now: self.now,
            dry_run: self.dry_run,
        }
    }

    /// The API server refused the credentials (a 401): forgets them, fetches fresh ones once
    /// and returns a client built from them.
    pub fn renew(&mut self, ctx: &TaskCtx, old: &Kube) -> anyhow::Result<Kube> {
        self.kube_before += old.requests.get();
        if !ctx.dry_run {
            credentials::forget(self.state)?;
        }
        let c = credentials::get(&self.ctx(), self.sealer.as_ref(), &self.cluster.id, true)
            .context("fetching the cluster's credentials again after a 401")?;
        self.report.lines.push(
            "the cluster's API server refused the kept credentials (HTTP 401): fresh ones fetched from DigitalOcean".into(),
        );
        Kube::new(&c.for_api()?, ctx.deadline)
    }

    /// The pools: the runs pool's size for the largest preset waiting, the plan and its
    /// DigitalOcean changes, and the cordons it asks (nodes are read only while a pool
    /// retires).
    pub fn pools(
        &mut self,
        ctx: &TaskCtx,
        kube: &Kube,
        run_pods: RunPods,
        flow: Option<&FlowRead>,
    ) -> anyhow::Result<()> {
        let s = ctx.settings;
        if s.supervisor_size == "auto" {
            let largest = &flow
                .and_then(|f| f.runs.as_ref().ok())
                .map_or(presets::DEFAULT, |r| presets::largest(&r.needs));
            let size = doks::runs_size(
                &self.ctx(),
                &s.supervisor_size,
                largest,
                &s.supervisor_region,
            )?;
            self.pools.runs_size = size.map_err(|line| anyhow::anyhow!(line))?;
        }
        let retiring = cluster::load(self.state)?.is_some_and(|r| !r.retiring.is_empty());
        let nodes: Option<Vec<Node>> = if retiring {
            Some(
                kube.nodes(&Selector::default())
                    .context("listing the nodes (a node pool is being retired)")?,
            )
        } else {
            None
        };
        let facts = KubeFacts {
            pods: run_pods,
            cordoned: nodes
                .iter()
                .flatten()
                .filter(|n| n.spec.unschedulable)
                .map(|n| n.metadata.name.clone())
                .collect(),
            known: nodes.map(|ns| ns.into_iter().map(|n| n.metadata.name).collect()),
        };
        let mut report = std::mem::take(&mut self.report);
        let tended = doks::tend_pools(&self.ctx(), &self.cluster, &self.pools, &facts, &mut report);
        self.report = report;
        let changes = announce(ctx, &mut self.report);
        self.changes.extend(changes);
        // The cordons handed over are made even when a later DigitalOcean change failed.
        let marked = if ctx.dry_run {
            Ok(())
        } else {
            let uncordon = std::mem::take(&mut self.report.uncordon);
            let cordon = std::mem::take(&mut self.report.cordon);
            mark_nodes(
                ctx,
                kube,
                (uncordon, cordon),
                &mut self.changes,
                &mut self.report.lines,
            )
        };
        tended?;
        marked
    }

    /// The run's lines of this side: the changes made, then what a dry run would do and what
    /// the operator should know.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = self.changes.clone();
        lines.extend(self.report.lines.iter().map(|l| redact::line(l)));
        lines
    }

    /// The cluster, its pools and their monthly cost, for `ops status` and `/metrics`.
    pub fn status(&self) -> store::DoksStatus {
        cluster_status(&self.ctx(), &self.cluster)
    }

    /// DigitalOcean requests this run, and Kubernetes API requests of replaced clients.
    pub fn requests(&self) -> (u32, u32) {
        (self.api.requests.get(), self.kube_before)
    }
}

/// The run pods (`app=task-run`) on each node, from the namespace's pods.
pub fn run_pods(pods: &[Pod]) -> RunPods {
    let mut out = RunPods::new();
    for p in pods {
        let run = p.metadata.labels.get("app").map(String::as_str) == Some("task-run");
        if let (true, Some(node)) = (run, &p.spec.node_name) {
            out.entry(node.clone())
                .or_default()
                .push(p.metadata.name.clone());
        }
    }
    out
}

/// `cluster trigger-supervisor-… (DOKS 1.34.1-do.1, running): pools ops-supervisor 1 node, …`
pub fn line(d: &store::DoksStatus) -> String {
    let pools: Vec<String> = d
        .pools
        .iter()
        .map(|p| {
            if p.auto_scale {
                format!(
                    "{} {} of {}..{} nodes {}",
                    p.name, p.nodes, p.min, p.max, p.size
                )
            } else {
                let s = if p.nodes == 1 { "" } else { "s" };
                format!("{} {} node{s} {}", p.name, p.nodes, p.size)
            }
        })
        .collect();
    let cost = d
        .monthly_cost_usd
        .map(|c| format!(", ${c:.0} a month"))
        .unwrap_or_default();
    let upgrades = match d.upgrades.last() {
        Some(v) => format!("; DOKS {v} is available (ops never starts an upgrade: `doctl kubernetes cluster upgrade`)"),
        None => String::new(),
    };
    crate::redact::line(&format!(
        "cluster {} (DOKS {}, {}{}): node pools {}{cost}{upgrades}",
        d.cluster,
        d.version,
        d.state,
        if d.ha { ", HA" } else { "" },
        pools.join(", ")
    ))
}

/// The cluster, its pools and their monthly cost, for `ops status` and `/metrics` (the
/// price list and the upgrades are asked of DigitalOcean at most daily; when they cannot
/// be read, the status goes without them).
pub fn cluster_status(ctx: &Ctx, c: &Cluster) -> store::DoksStatus {
    let ha = c.ha.unwrap_or(false);
    let cost = doks::catalog(ctx)
        .ok()
        .map(|(_, sizes)| pools::monthly_cost(&c.node_pools, &sizes, ha).0);
    let upgrades = doks::upgrades(ctx, &c.id).unwrap_or_default();
    store::DoksStatus {
        cluster: c.name.clone(),
        id: c.id.clone(),
        version: c.version.clone(),
        state: serde_json::to_value(c.status.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        ha,
        pools: c
            .node_pools
            .iter()
            .map(|p| store::DoksPool {
                name: p.name.clone(),
                size: p.size.clone(),
                nodes: u32::try_from(p.nodes.len()).unwrap_or(u32::MAX),
                min: p.min_nodes,
                max: p.max_nodes,
                auto_scale: p.auto_scale,
            })
            .collect(),
        monthly_cost_usd: cost,
        upgrades,
    }
}

/// What a dry run's lines say it would do, as the plan's actions (`plan: create 1 node pool`).
pub fn planned(lines: &[String]) -> Vec<ActionRecord> {
    lines
        .iter()
        .filter_map(|l| {
            let what = l.strip_prefix("would ")?;
            let (kind, resource) = [
                ("create cluster", ("create", "DOKS cluster")),
                ("create node pool", ("create", "node pool")),
                ("update node pool", ("update", "node pool")),
                ("delete node pool", ("delete", "node pool")),
                ("cordon", ("cordon", "node")),
                ("uncordon", ("uncordon", "node")),
            ]
            .into_iter()
            .find(|(start, _)| what.starts_with(start))?
            .1;
            Some(ActionRecord::planned(
                ActionType::counted(kind, resource),
                what.to_string(),
            ))
        })
        .collect()
}
