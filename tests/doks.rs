//! DigitalOcean Kubernetes, as an operator lives it, against the fake DigitalOcean: the cluster
//! created and waited for, its pools, a size change, dry runs, credentials that expire, and no
//! secret in any output. Each run is one call of the DigitalOcean side (`kubernetes::doks`),
//! with the Kubernetes side's facts (run pods per node, cordoned nodes) given as the fake
//! Kubernetes API would report them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use trigger_ops::clients::digitalocean::DigitalOcean;
use trigger_ops::redact::Secret;
use trigger_ops::sealed::Sealer;
use trigger_ops::state::State;
use trigger_ops::tasks::supervisor::kubernetes::cluster::{self, ClusterSpec};
use trigger_ops::tasks::supervisor::kubernetes::credentials;
use trigger_ops::tasks::supervisor::kubernetes::doks::{self, Ctx, Found, KubeFacts, Report};
use trigger_ops::tasks::supervisor::kubernetes::pools::{PoolSpec, RunPods};

use crate::support::digitalocean::{DoFault, DO_TOKEN};
use crate::support::doks::Client;

const TAG: &str = "trigger-supervisor-abcd1234";

struct World {
    c: Client,
    dir: tempfile::TempDir,
    state: State,
    cluster: ClusterSpec,
    pools: PoolSpec,
}

/// What one run did.
struct Ran {
    found: Found,
    report: Report,
    requests: usize,
    mutations: usize,
}

impl Ran {
    /// Whether a line of the report starts with `start` (the lines are shown on failure).
    #[track_caller]
    fn says(&self, start: &str) {
        assert!(
            self.report.lines.iter().any(|l| l.starts_with(start)),
            "no line starts with {start:?}: {:?}",
            self.report.lines
        );
    }
}

/// Whether the run forgot cluster `name` (`id`): a change, so an event.
#[track_caller]
fn says_forgotten(report: &Report, name: &str, id: &str) {
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.starts_with(&format!("forgot cluster {name} ({id})"))),
        "{:?}",
        report.changes
    );
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        World {
            c: Client::start(),
            state,
            dir,
            cluster: ClusterSpec {
                adopt: None,
                name: TAG.into(),
                tags: vec![TAG.into(), "ops-managed".into()],
                region: "nyc1".into(),
                ha: false,
                maintenance: ("sunday".into(), "04:00".into()),
                scale_in_after: Duration::from_secs(600),
            },
            pools: PoolSpec {
                tag: TAG.into(),
                runs_size: "s-2vcpu-4gb".into(),
                min: 0,
                max: 3,
                nodetype: "v4-worker".into(),
                drain_timeout: Duration::from_secs(3600),
            },
        }
    }

    fn ctx<'a>(&'a self, api: &'a DigitalOcean<'a>, now: i64, dry_run: bool) -> Ctx<'a> {
        Ctx {
            api,
            state: &self.state,
            now,
            dry_run,
        }
    }

    /// One run: the cluster, then (when it is ready) the pools, with the Kubernetes facts.
    fn run(&self, pods: &RunPods, cordoned: &BTreeSet<String>, dry_run: bool) -> Ran {
        let api = self.c.api();
        let (before, muts) = (self.c.fake.server.requests().len(), self.c.fake.mutations());
        let now = trigger_ops::state::now_ms();
        let mut report = Report::default();
        let ctx = self.ctx(&api, now, dry_run);
        let found = doks::tend_cluster(&ctx, &self.cluster, &self.pools, &mut report).unwrap();
        if let Found::Ready(c) = &found {
            let facts = KubeFacts {
                pods: pods.clone(),
                cordoned: cordoned.clone(),
                known: None,
            };
            doks::tend_pools(&ctx, c, &self.pools, &facts, &mut report).unwrap();
        }
        Ran {
            found,
            report,
            requests: self.c.fake.server.requests().len() - before,
            mutations: self.c.fake.mutations() - muts,
        }
    }

    /// The cluster step alone at `now` (a run later than the clock says): what it found, and
    /// its report; `Err` as the run would fail.
    fn cluster_at(&self, now: i64) -> anyhow::Result<(Found, Report)> {
        let api = self.c.api();
        let mut report = Report::default();
        let found = doks::tend_cluster(
            &self.ctx(&api, now, false),
            &self.cluster,
            &self.pools,
            &mut report,
        )?;
        Ok((found, report))
    }

    fn record(&self) -> cluster::Record {
        cluster::load(&self.state).unwrap().unwrap_or_default()
    }

    fn cluster_id(&self) -> String {
        self.record().cluster.unwrap().id
    }

    /// Runs until the cluster is running and its pools settled.
    fn settle(&self) {
        for _ in 0..3 {
            if matches!(
                self.run(&RunPods::new(), &BTreeSet::new(), false).found,
                Found::Ready(_)
            ) {
                return;
            }
        }
        panic!("the cluster never became ready");
    }
}

#[test]
fn a_new_deployment_gets_a_cluster_that_comes_up_running_with_its_two_pools() {
    let w = World::new();
    w.c.fake
        .with(|d| d.doks.provision_after = Duration::from_millis(1500));
    let first = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert!(matches!(first.found, Found::Waiting(_)));
    assert_eq!(first.mutations, 1, "one create");
    assert!(
        first.report.changes[0].starts_with(&format!(
            "created cluster {TAG} (nyc1, DOKS 1.34.1-do.1, ha false"
        )),
        "{:?}",
        first.report.changes
    );
    let body = w.c.fake.with(|d| d.doks.creates[0].clone());
    assert_eq!(body["ha"], false);
    assert_eq!(body["surge_upgrade"], true);
    assert_eq!(body["auto_upgrade"], false);
    assert_eq!(
        body["maintenance_policy"],
        serde_json::json!({"day": "sunday", "start_time": "04:00"})
    );
    assert_eq!(
        body["cluster_autoscaler_configuration"]["scale_down_unneeded_time"],
        "10m0s"
    );
    assert_eq!(body["tags"], serde_json::json!([TAG, "ops-managed"]));
    // Still provisioning: waited for, nothing created twice.
    let second = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert!(matches!(second.found, Found::Waiting(_)));
    assert_eq!(second.mutations, 0);
    assert!(
        second.report.lines[0].contains("still provisioning"),
        "{:?}",
        second.report.lines
    );
    std::thread::sleep(Duration::from_millis(1600));
    let third = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert!(matches!(third.found, Found::Ready(_)));
    assert_eq!(
        (third.requests, third.mutations),
        (1, 0),
        "a healthy run is one GET"
    );
    let id = w.cluster_id();
    let (sup, runs) = w.c.fake.with(|d| {
        let c = d.doks.clusters.iter().find(|c| c.id == id).unwrap().clone();
        (
            c.pool("ops-supervisor").unwrap().clone(),
            c.pool("ops-runs-s-2vcpu-4gb").unwrap().clone(),
        )
    });
    assert_eq!((sup.nodes.len(), sup.auto_scale), (1, false));
    assert_eq!(sup.labels["nodetype"], "ops-supervisor");
    assert!(runs.auto_scale && runs.min_nodes == 0 && runs.max_nodes == 3);
    assert_eq!(runs.labels["nodetype"], "v4-worker");
    assert_eq!(
        runs.taints,
        serde_json::json!([{"key": "nodetype", "value": "v4-worker", "effect": "NoSchedule"}])
    );
    assert_eq!(
        w.record().pools.len(),
        2,
        "both pools are recorded as ops' own"
    );
}

#[test]
fn a_size_change_makes_a_new_pool_cordons_the_old_and_deletes_it_after_its_last_run_pod() {
    let mut w = World::new();
    w.settle();
    let id = w.cluster_id();
    w.c.fake
        .with(|d| d.doks.scale(&id, "ops-runs-s-2vcpu-4gb", 2));
    let old_nodes = w.c.fake.with(|d| {
        d.doks.clusters[0]
            .pool("ops-runs-s-2vcpu-4gb")
            .unwrap()
            .node_names()
    });
    w.pools.runs_size = "s-4vcpu-8gb".into();
    let pods = RunPods::from([(
        old_nodes[1].clone(),
        vec!["runner-run_cm1a2b3c".to_string()],
    )]);
    // The new pool first.
    let r = w.run(&pods, &BTreeSet::new(), false);
    assert_eq!(r.mutations, 1);
    assert!(
        r.report.changes[0]
            .starts_with("created node pool ops-runs-s-4vcpu-8gb (s-4vcpu-8gb, 0..3 nodes"),
        "{:?}",
        r.report.changes
    );
    assert!(
        r.report.cordon.is_empty(),
        "nothing cordoned before the new pool exists"
    );
    // Then the old one's nodes cordoned and the pool stopped growing (no node the autoscaler
    // adds for runs to land on); a run pod still on it keeps it.
    let r = w.run(&pods, &BTreeSet::new(), false);
    assert_eq!(
        r.report.cordon,
        vec![("ops-runs-s-2vcpu-4gb".to_string(), old_nodes.clone())]
    );
    assert_eq!(r.mutations, 1);
    let updated = &r.report.changes[0];
    assert!(
        updated.starts_with("updated node pool ops-runs-s-2vcpu-4gb: being retired"),
        "{updated}"
    );
    assert!(
        updated.contains("no longer auto-scaled (2 nodes)"),
        "{updated}"
    );
    let old_pool = w.c.fake.with(|d| {
        let p = d.doks.clusters[0].pool("ops-runs-s-2vcpu-4gb").unwrap();
        (p.auto_scale, p.nodes.len())
    });
    assert_eq!(old_pool, (false, 2));
    assert!(
        r.report
            .lines
            .iter()
            .any(|l| l.contains("waiting for run pods runner-run_cm1a2b3c")),
        "{:?}",
        r.report.lines
    );
    let cordoned: BTreeSet<String> = old_nodes.iter().cloned().collect();
    let r = w.run(&pods, &cordoned, false);
    assert!(r.report.cordon.is_empty() && r.mutations == 0);
    // The run ended: the old pool goes, and nothing else.
    let r = w.run(&RunPods::new(), &cordoned, false);
    assert_eq!(r.mutations, 1);
    assert!(
        r.report.changes[0].contains("deleted node pool ops-runs-s-2vcpu-4gb")
            && r.report.changes[0].contains("no run pod is left"),
        "{:?}",
        r.report.changes
    );
    let (deletes, pools) = w.c.fake.with(|d| {
        (
            d.doks.pool_deletes.clone(),
            d.doks.clusters[0]
                .pools
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].2, "ops-runs-s-2vcpu-4gb");
    assert_eq!(pools, vec!["ops-supervisor", "ops-runs-s-4vcpu-8gb"]);
    assert!(
        !w.c.fake
            .server
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && !r.path.contains("/node_pools/")),
        "never a cluster delete"
    );
}

#[test]
fn a_dry_run_makes_no_digitalocean_change_and_writes_no_state() {
    let mut w = World::new();
    let r = w.run(&RunPods::new(), &BTreeSet::new(), true);
    assert_eq!(r.mutations, 0);
    assert!(r.report.lines[0].starts_with(&format!("would create cluster {TAG} (nyc1, DOKS 1.34.1-do.1, ha false, maintenance sunday 04:00 UTC, surge upgrades) with node pools ops-supervisor")), "{:?}", r.report.lines);
    assert!(r.report.changes.is_empty());
    assert!(
        cluster::load(&w.state).unwrap().is_none(),
        "no state written"
    );
    // A size change, dry: said, not done.
    w.settle();
    w.pools.runs_size = "s-4vcpu-8gb".into();
    let r = w.run(&RunPods::new(), &BTreeSet::new(), true);
    assert_eq!(r.mutations, 0);
    r.says("would create node pool ops-runs-s-4vcpu-8gb");
    let before = w.record();
    assert_eq!(w.run(&RunPods::new(), &BTreeSet::new(), true).mutations, 0);
    assert_eq!(w.record(), before);
}

#[test]
fn an_expired_credential_is_replaced_by_a_fresh_one_and_a_kept_one_costs_no_request() {
    let w = World::new();
    w.settle();
    let id = w.cluster_id();
    let sealer = Sealer::load(w.dir.path(), true).unwrap().unwrap();
    let api = w.c.api();
    let now = trigger_ops::state::now_ms();
    let first = credentials::get(&w.ctx(&api, now, false), Some(&sealer), &id, false).unwrap();
    let token = first.token.clone().unwrap();
    assert!(w.c.fake.with(|d| d.doks.token_valid(&id, token.expose())));
    first.for_api().expect("usable by the Kubernetes client");
    let asked = w.c.fake.with(|d| d.doks.issued.len());
    // Kept: no request.
    let again =
        credentials::get(&w.ctx(&api, now + 60_000, false), Some(&sealer), &id, false).unwrap();
    assert_eq!(again.token.unwrap().expose(), token.expose());
    assert_eq!(w.c.fake.with(|d| d.doks.issued.len()), asked);
    // Near its expiry (4 h asked; fetched again in its last half hour): a fresh one.
    let later = now + (credentials::EXPIRY_SECS as i64) * 1000 - 20 * 60_000;
    let fresh = credentials::get(&w.ctx(&api, later, false), Some(&sealer), &id, false).unwrap();
    assert_ne!(fresh.token.clone().unwrap().expose(), token.expose());
    assert_eq!(w.c.fake.with(|d| d.doks.issued.len()), asked + 1);
    // The API server refused one (a 401): fetched again at once.
    w.c.fake
        .with(|d| d.doks.token_life = Some(Duration::from_millis(200)));
    let short = credentials::get(&w.ctx(&api, later, false), Some(&sealer), &id, true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !w.c.fake.with(|d| d
            .doks
            .token_valid(&id, short.token.as_ref().unwrap().expose())),
        "expired"
    );
    let renewed = credentials::get(&w.ctx(&api, later, false), Some(&sealer), &id, true).unwrap();
    assert_ne!(
        renewed.token.as_ref().unwrap().expose(),
        short.token.as_ref().unwrap().expose()
    );
    assert_eq!(w.c.fake.with(|d| d.doks.issued.len()), asked + 3);
    // A dry run may fetch (a read) but keeps nothing.
    credentials::forget(&w.state).unwrap();
    credentials::get(&w.ctx(&api, later, true), Some(&sealer), &id, false).unwrap();
    assert!(credentials::kept(&w.state, &sealer, &id, later).is_none());
}

#[test]
fn no_secret_reaches_a_report_an_error_or_the_state_database() {
    let w = World::new();
    w.settle();
    let id = w.cluster_id();
    let sealer = Sealer::load(w.dir.path(), true).unwrap().unwrap();
    let api = w.c.api();
    let creds = credentials::get(
        &w.ctx(&api, trigger_ops::state::now_ms(), false),
        Some(&sealer),
        &id,
        false,
    )
    .unwrap();
    let token = creds.token.clone().unwrap().expose().to_string();
    let r = w.run(&RunPods::new(), &BTreeSet::new(), false);
    let shown = format!(
        "{:?} {:?} {:?} {creds:?}",
        r.report.changes, r.report.lines, r.report.cordon
    );
    assert!(
        !shown.contains(&token) && !shown.contains(DO_TOKEN),
        "{shown}"
    );
    drop(w.state);
    let db = std::fs::read(w.dir.path().join("ops.db")).unwrap();
    let wal = std::fs::read(w.dir.path().join("ops.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&token),
            "the token is sealed at rest"
        );
    }
    // A refused DigitalOcean token: the error names the variable, not the value.
    let wrong =
        Secret::new("dop_v1_0000000000000000000000000000000000000000000000000000000000000bad");
    let bad = DigitalOcean::new(
        &w.c.http,
        &w.c.url,
        &wrong,
        Instant::now() + Duration::from_secs(10),
    );
    let e = format!("{:#}", bad.cluster(&id).unwrap_err());
    assert!(
        e.contains("DIGITALOCEAN_TOKEN was rejected") && !e.contains("0bad"),
        "{e}"
    );
}

#[test]
fn cluster_adopts_a_cluster_by_name_across_pages_and_leaves_its_own_pools_alone() {
    let mut w = World::new();
    let theirs = w.c.fake.with(|d| {
        d.doks.page_max = 1;
        d.doks.add_cluster("alpha", &[]);
        d.doks.add_cluster("beta", &[]);
        d.doks.add_cluster("prod", &[("pool-a", "s-2vcpu-2gb", 2)])
    });
    w.cluster.adopt = Some("prod".into());
    let r = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert!(matches!(r.found, Found::Ready(_)));
    assert!(
        r.report.lines[0].contains("adopted"),
        "{:?}",
        r.report.lines
    );
    assert_eq!(
        r.mutations, 2,
        "the two pools ops needs, in the adopted cluster"
    );
    let rec = w.record();
    assert_eq!(
        rec.cluster.as_ref().map(|c| (c.id.as_str(), c.created)),
        Some((theirs.as_str(), false))
    );
    // From now on one GET by id; pool-a stays as it was.
    let r = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert_eq!((r.requests, r.mutations), (1, 0));
    assert!(w
        .c
        .fake
        .with(|d| d.doks.clusters[2].pool("pool-a").is_some()));
    // A name nobody has: one line with the fix.
    w.cluster.adopt = Some("nope".into());
    let Found::Refused(line) = w.run(&RunPods::new(), &BTreeSet::new(), false).found else {
        panic!()
    };
    assert!(
        line.contains("\"nope\"") && line.contains("doctl kubernetes cluster list"),
        "{line}"
    );
}

#[test]
fn a_cluster_of_our_name_made_by_someone_else_is_refused_never_duplicated() {
    let w = World::new();
    w.c.fake
        .with(|d| d.doks.add_cluster(TAG, &[("pool-a", "s-2vcpu-2gb", 1)]));
    let Found::Refused(line) = w.run(&RunPods::new(), &BTreeSet::new(), false).found else {
        panic!()
    };
    assert!(
        line.contains(&format!("adopt it with `cluster: {TAG}`")),
        "{line}"
    );
    assert_eq!(w.c.fake.mutations(), 0);
}

#[test]
fn an_error_whose_message_quotes_http_404_fails_the_run_and_never_forgets_the_cluster_or_its_pools()
{
    let w = World::new();
    w.settle();
    let before = w.record();
    assert_eq!(before.pools.len(), 2, "{before:?}");
    // DigitalOcean's own message echoes another service's 404; the answer itself is a 422.
    w.c.fake.with(|d| {
        d.faults.push_back(DoFault::Unprocessable(
            "upstream answered HTTP 404 Not Found",
        ))
    });
    let err = w.cluster_at(trigger_ops::state::now_ms()).unwrap_err();
    assert!(format!("{err:#}").contains("HTTP 422"), "{err:#}");
    assert_eq!(
        w.record(),
        before,
        "the cluster and its pools are still ops' own"
    );
    assert!(matches!(
        w.run(&RunPods::new(), &BTreeSet::new(), false).found,
        Found::Ready(_)
    ));
}

#[test]
fn our_cluster_unseen_with_this_token_fails_each_run_and_is_forgotten_only_after_a_day_unseen() {
    let w = World::new();
    w.settle();
    let before = w.record();
    let (name, id) = before.cluster.clone().map(|c| (c.name, c.id)).unwrap();
    // DIGITALOCEAN_TOKEN now belongs to another team: the recorded cluster answers 404.
    let hidden = w.c.fake.with(|d| d.doks.clusters.remove(0));
    let t0 = trigger_ops::state::now_ms();
    let (found, report) = w.cluster_at(t0).unwrap();
    let Found::Refused(line) = found else {
        panic!("{found:?}")
    };
    assert!(
        line.starts_with(&format!(
            "cluster {name} ({id}), which ops created, is not visible with this DIGITALOCEAN_TOKEN"
        )),
        "{line}"
    );
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert_eq!(w.record().cluster, before.cluster);
    assert_eq!(w.record().pools, before.pools);
    assert_eq!(
        w.c.fake.with(|d| d.doks.creates.len()),
        1,
        "no second cluster"
    );
    // The right token back: the cluster is used as before, and the day starts again.
    w.c.fake.with(|d| d.doks.clusters.push(hidden));
    assert!(matches!(
        w.cluster_at(t0 + 3_600_000).unwrap().0,
        Found::Ready(_)
    ));
    // Really deleted: refused for a day unseen, then forgotten (an event); then a new one.
    w.c.fake.with(|d| d.doks.clusters.clear());
    let t1 = t0 + 7_200_000;
    for later in [0, 23 * 3_600_000] {
        assert!(matches!(
            w.cluster_at(t1 + later).unwrap().0,
            Found::Refused(_)
        ));
    }
    let (found, report) = w.cluster_at(t1 + 24 * 3_600_000).unwrap();
    assert!(matches!(found, Found::Waiting(None)), "{found:?}");
    says_forgotten(&report, &name, &id);
    assert_eq!(w.record().cluster, None);
    assert_eq!(w.record().pools, vec![]);
    w.settle();
    assert_eq!(w.c.fake.with(|d| d.doks.creates.len()), 2);
}

#[test]
fn our_cluster_the_operator_deletes_is_forgotten_once_gone_and_a_new_one_created() {
    let w = World::new();
    w.settle();
    let (name, id) = w.record().cluster.map(|c| (c.name, c.id)).unwrap();
    // The operator deletes it in the control panel: DigitalOcean shows it `deleting`.
    w.c.fake
        .with(|d| d.doks.clusters[0].state = Some("deleting"));
    let t0 = trigger_ops::state::now_ms();
    let (found, _) = w.cluster_at(t0).unwrap();
    let Found::Refused(line) = found else {
        panic!("{found:?}")
    };
    assert!(
        line.contains("DigitalOcean is deleting it") && line.contains("no longer finds it"),
        "{line}"
    );
    // The deletion done, DigitalOcean answers 404: forgotten on this run, not a day later.
    w.c.fake.with(|d| d.doks.clusters.clear());
    let (found, report) = w.cluster_at(t0 + 600_000).unwrap();
    assert!(matches!(found, Found::Waiting(None)), "{found:?}");
    says_forgotten(&report, &name, &id);
    assert_eq!(w.record(), cluster::Record::default());
    w.settle();
    assert_eq!(w.c.fake.with(|d| d.doks.creates.len()), 2);
}

#[test]
fn a_pool_create_digitalocean_refuses_leaves_no_name_that_could_claim_someone_elses_pool() {
    let w = World::new();
    w.settle();
    let mut spec = w.pools.clone();
    spec.runs_size = "s-3vcpu-5gb".into();
    let api = w.c.api();
    let ctx = w.ctx(&api, trigger_ops::state::now_ms(), false);
    let mut report = Report::default();
    let Found::Ready(c) = doks::tend_cluster(&ctx, &w.cluster, &spec, &mut report).unwrap() else {
        panic!("{:?}", report.lines)
    };
    let err = doks::tend_pools(&ctx, &c, &spec, &KubeFacts::default(), &mut report).unwrap_err();
    assert!(format!("{err:#}").contains("422"), "{err:#}");
    assert!(
        w.record().pending_pools.is_empty(),
        "a refused create still pending: {:?}",
        w.record().pending_pools
    );
}

#[test]
fn rate_limited_reads_wait_as_digitalocean_asks_and_then_go_on() {
    let w = World::new();
    w.settle();
    w.c.fake.with(|d| d.faults.push_back(DoFault::RateLimit));
    let r = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert!(matches!(r.found, Found::Ready(_)));
    assert_eq!(r.requests, 2, "the 429, then the read again");
}

#[test]
fn the_task_min_and_max_reach_the_runs_pool_and_upgrades_are_read_once_a_day() {
    let mut w = World::new();
    w.settle();
    w.pools.min = 1;
    w.pools.max = 6;
    let r = w.run(&RunPods::new(), &BTreeSet::new(), true);
    assert_eq!(r.mutations, 0);
    r.says("would update node pool ops-runs-s-2vcpu-4gb: nodes 0..3");
    let r = w.run(&RunPods::new(), &BTreeSet::new(), false);
    assert_eq!(r.mutations, 1);
    let runs = w.c.fake.with(|d| {
        d.doks.clusters[0]
            .pool("ops-runs-s-2vcpu-4gb")
            .unwrap()
            .clone()
    });
    assert_eq!(
        (runs.min_nodes, runs.max_nodes, runs.nodes.len()),
        (1, 6, 1)
    );
    assert_eq!(w.run(&RunPods::new(), &BTreeSet::new(), false).mutations, 0);
    // Upgrades: the fake's cluster is on the newest version; an older one has two.
    let id = w.cluster_id();
    let api = w.c.api();
    let now = trigger_ops::state::now_ms();
    assert!(doks::upgrades(&w.ctx(&api, now, false), &id)
        .unwrap()
        .is_empty());
    let old = w.c.fake.with(|d| {
        let id = d.doks.add_cluster("older", &[]);
        d.doks.clusters.last_mut().unwrap().version = "1.33.5-do.2".into();
        id
    });
    let asked = w.c.fake.gets();
    assert_eq!(
        doks::upgrades(&w.ctx(&api, now, false), &old).unwrap(),
        vec!["1.34.1-do.0", "1.34.1-do.1"]
    );
    assert_eq!(
        doks::upgrades(&w.ctx(&api, now + 3_600_000, false), &old)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(w.c.fake.gets(), asked + 1, "asked once a day");
}

#[test]
fn supervisor_size_auto_picks_the_cheapest_node_that_fits_the_largest_preset_waiting() {
    let w = World::new();
    let api = w.c.api();
    let now = trigger_ops::state::now_ms();
    let medium = trigger_ops::tasks::supervisor::presets::resolve(Some("medium-2x"));
    let size = doks::runs_size(&w.ctx(&api, now, false), "auto", &medium, "nyc1").unwrap();
    assert_eq!(size.as_deref(), Ok("s-4vcpu-8gb"));
    let asked = w.c.fake.gets();
    let large2 = trigger_ops::tasks::supervisor::presets::resolve(Some("large-2x"));
    let none = doks::runs_size(&w.ctx(&api, now, false), "auto", &large2, "nyc1").unwrap();
    assert!(none
        .unwrap_err()
        .contains("no size DigitalOcean offers for Kubernetes in nyc1 fits a large-2x run"));
    assert_eq!(w.c.fake.gets(), asked, "options and sizes kept a day");
    let fixed = doks::runs_size(&w.ctx(&api, now, false), "s-2vcpu-4gb", &large2, "nyc1").unwrap();
    assert_eq!(fixed.as_deref(), Ok("s-2vcpu-4gb"));
}
