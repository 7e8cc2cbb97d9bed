//! Operator stories of `platform: kubernetes` on DigitalOcean Kubernetes, through the real
//! binary: the fake DigitalOcean with its DOKS endpoints, whose credentials name the fake
//! Kubernetes API server (TLS, its own CA) and whose tokens that server accepts while they
//! live; the webapp's real worker tables, extract against the fake Railway first.

use std::time::Duration;

use crate::support::digitalocean::DoFault;
use crate::support::platform::{KubeWorld, NS};

/// A DOKS deployment's world: nothing in DigitalOcean yet.
fn doks(options: &str) -> KubeWorld {
    KubeWorld::on_doks(&format!("pending_after: 10m, {options}"))
}

/// The cluster created and running, the supervisor applied and heartbeating, and one more
/// run done (the day's price list and upgrades are read by then).
fn up(c: &KubeWorld) {
    c.f.health()
        .expect_code(0)
        .expect_stdout("created cluster ");
    c.up();
    c.f.health().expect_code(0);
}

const RUNS_POOL: &str = "ops-runs-s-2vcpu-2gb";

#[test]
fn a_new_cluster_is_created_waited_for_then_runs_the_supervisor_at_one_do_request_two_api_requests_and_one_session(
) {
    let c = doks("scale_in_after: 15m");
    c.doks(|d| d.provision_after = Duration::from_millis(1500));
    let run = c.f.health();
    run.expect_code(0)
        .expect_stdout("created cluster trigger-supervisor-")
        .expect_stdout("with node pools ops-supervisor (s-2vcpu-2gb, 1 node) and ops-runs-s-2vcpu-2gb (s-2vcpu-2gb, 1..1 nodes, label nodetype=v4-worker, taint NoSchedule)")
        .expect_stdout("not ready yet");
    c.clean(&run.all());
    let body = c.doks(|d| d.creates[0].clone());
    assert_eq!(body["ha"], false, "{body}");
    assert_eq!(body["surge_upgrade"], true, "{body}");
    assert_eq!(body["maintenance_policy"]["day"], "sunday", "{body}");
    // Still provisioning: the run says so and stops, Ok; the cluster's API is not asked.
    c.f.health()
        .expect_code(0)
        .expect_stdout("DigitalOcean is still provisioning it")
        .expect_stdout("not ready yet");
    assert!(c.kube.calls().is_empty(), "{:?}", c.kube.calls());
    let status = c.f.run(&["status", "--json"]);
    let d = &status.expect_code(0).json()["supervisor"]["kubernetes"]["doks"];
    assert_eq!(d["state"], "provisioning", "{d}");
    std::thread::sleep(Duration::from_millis(1600));
    let run = c.f.health();
    run.expect_code(0)
        .expect_stdout("applied Deployment trigger/supervisor");
    c.clean(&run.all());
    let deployment = c.kube.object("deployments", NS, "supervisor").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["nodetype"], "ops-supervisor", "{pod}");
    c.wait_heartbeating();
    c.f.health().expect_code(0);

    let credentials = c.doks(|d| d.issued.len());
    let run = c.healthy_run(1);
    assert_eq!(
        c.doks(|d| d.issued.len()),
        credentials,
        "the kept credentials serve"
    );
    c.clean(&run.all());

    let status = c.f.run(&["status", "--json"]);
    let d = &status.expect_code(0).json()["supervisor"]["kubernetes"]["doks"];
    assert_eq!(d["cluster"], c.cluster_name().as_str(), "{d}");
    assert_eq!(d["state"], "running", "{d}");
    assert_eq!(d["version"], "1.34.1-do.1", "{d}");
    let runs = d["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == RUNS_POOL)
        .unwrap();
    assert_eq!(
        (&runs["nodes"], &runs["min"], &runs["max"]),
        (&1.into(), &1.into(), &1.into())
    );
    // Two s-2vcpu-2gb nodes (the supervisor's, one runs node) at $18, no HA.
    assert_eq!(d["monthly_cost_usd"], 36.0, "{d}");
    c.f.run(&["status"])
        .expect_code(0)
        .expect_stdout("cluster trigger-supervisor-")
        .expect_stdout("ops-runs-s-2vcpu-2gb 1 node (1..1, s-2vcpu-2gb); $36/month");
    let (_served, addr) = crate::operator::Served::start(&c.f.s.ops);
    let (code, metrics) = crate::operator::request(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    crate::monitoring::promtool_passes(&metrics);
    crate::monitoring::dashboard_kubernetes_metrics_in(&metrics);
    assert!(
        metrics.contains("ops_supervisor_doks_cost_monthly_dollars{cluster=\"trigger-supervisor-"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "ops_supervisor_doks_pool_max_nodes{{cluster=\"{}\",pool=\"{RUNS_POOL}\",size=\"s-2vcpu-2gb\"}} 1",
        c.cluster_name()
    )));
    c.clean(&status.all());
    c.clean(&metrics);
    c.clean(&c.f.run(&["events"]).all());
}

#[test]
fn a_version_change_rolls_the_new_image_deletes_no_pool_nor_cluster_and_touches_no_run_pod() {
    let mut c = doks("scale_in_after: 15m");
    up(&c);
    let node = c.node_names(RUNS_POOL)[0].clone();
    c.kube
        .add_node(&node, &[("nodetype", "v4-worker")], "1900m", "1500Mi");
    c.kube
        .add_run_pod(NS, "runner-run_long", Some(&node), "small-1x");
    let run_pod = c.kube.object("pods", NS, "runner-run_long").unwrap();
    c.version("v4.5.12");
    c.kube.clear();
    let do_before = c.f.api.server.requests().len();
    c.f.health()
        .expect_code(0)
        .expect_stdout("applied Deployment trigger/supervisor");
    assert!(c.kube.wait_for(Duration::from_secs(20), |k| {
        let pods = k.supervisor_pods(NS);
        pods.len() == 1
            && pods[0]["spec"]["containers"][0]["image"]
                == "ghcr.io/triggerdotdev/supervisor:v4.5.12"
    }));
    c.wait_heartbeating();
    c.f.health()
        .expect_code(0)
        .expect_stdout("1/1 supervisor pods heartbeating");
    assert!(c.kube.calls().iter().all(|call| call.method != "DELETE"));
    let sent = c.f.api.server.requests();
    assert!(
        sent[do_before..].iter().all(|r| r.method == "GET"),
        "a DigitalOcean change: {:?}",
        sent[do_before..]
            .iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
    assert!(c.doks(|d| d.pool_deletes.is_empty()));
    assert_eq!(
        c.kube.object("pods", NS, "runner-run_long").unwrap(),
        run_pod
    );
}

/// A size change up to the run that cordons the old pool's nodes (the new pool made first).
fn cordon_the_old_pool(c: &mut KubeWorld, with_run: bool) -> Vec<String> {
    up(c);
    let old = c.node_names(RUNS_POOL);
    for n in &old {
        c.kube
            .add_node(n, &[("nodetype", "v4-worker")], "1900m", "1500Mi");
    }
    if with_run {
        c.kube
            .add_run_pod(NS, "runner-run_long", Some(&old[0]), "small-1x");
    }
    c.f.s.ops.env("SUPERVISOR_SIZE", "s-4vcpu-8gb");
    c.f.health()
        .expect_code(0)
        .expect_stdout("created node pool ops-runs-s-4vcpu-8gb")
        .expect_stdout("node pool ops-runs-s-2vcpu-2gb: retired once ops-runs-s-4vcpu-8gb exists");
    assert!(c
        .kube
        .calls()
        .iter()
        .all(|call| !call.path.contains("/nodes")));
    let run = c.f.health();
    run.expect_code(0).expect_stdout(&format!(
        "cordoned node {} of node pool {RUNS_POOL}",
        old[0]
    ));
    c.clean(&run.all());
    old
}

/// A run deletes the old runs pool, and only it.
fn the_old_pool_goes(c: &KubeWorld) {
    c.f.health()
        .expect_code(0)
        .expect_stdout(&format!("deleted node pool {RUNS_POOL}"));
    let deletes = c.doks(|d| d.pool_deletes.clone());
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].2, RUNS_POOL);
}

#[test]
fn a_size_change_makes_the_new_pool_first_cordons_the_old_and_deletes_it_once_its_run_pod_ends() {
    let mut c = doks("scale_in_after: 15m, drain_timeout: 1h");
    let old = cordon_the_old_pool(&mut c, true);
    let node = c.kube.object("nodes", "", &old[0]).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true, "{node}");
    assert!(c.doks(|d| d.pool_deletes.is_empty()), "deleted under a run");

    // The run ends: the old pool goes, nothing else does.
    c.kube.with(|w| w.calls.clear());
    assert!(c.kube.remove("pods", NS, "runner-run_long"));
    the_old_pool_goes(&c);
    let name = c.cluster_name();
    assert!(c.doks(|d| d.cluster(&name).unwrap().pool("ops-supervisor").is_some()));
    let events = c.f.run(&["events"]);
    events
        .expect_code(0)
        .expect_stdout("doks.pool_created")
        .expect_stdout("kubernetes.cordoned")
        .expect_stdout("doks.pool_deleted");
}

#[test]
fn an_idle_old_pool_is_cordoned_on_one_run_and_deleted_on_a_later_one() {
    let mut c = doks("scale_in_after: 15m, drain_timeout: 1h");
    let old = cordon_the_old_pool(&mut c, false);
    // The pod list that run took came before its cordon: a run may have landed since.
    assert!(
        c.doks(|d| d.pool_deletes.is_empty()),
        "deleted before its cordon"
    );
    let node = c.kube.object("nodes", "", &old[0]).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true, "{node}");
    the_old_pool_goes(&c);
}

/// DigitalOcean lists nodes of the old pool that the API server does not know (still
/// provisioning, or never registering): the run that cordons says so and goes on (its cordon's
/// 404 fails nothing), and a later run, which reads the nodes, counts them as nothing to cordon
/// or wait for: such a node can run no pod, so it never keeps the pool.
#[test]
fn a_node_kubernetes_does_not_know_is_not_waited_for_and_never_keeps_the_old_pool() {
    let mut c = doks("scale_in_after: 15m, drain_timeout: 1h");
    up(&c);
    let old = c.node_names(RUNS_POOL);
    c.f.s.ops.env("SUPERVISOR_SIZE", "s-4vcpu-8gb");
    c.f.health()
        .expect_code(0)
        .expect_stdout("created node pool ops-runs-s-4vcpu-8gb");
    c.f.health().expect_code(0).expect_stdout(&format!(
        "node {} of node pool {RUNS_POOL} is not registered with Kubernetes yet: cordoning it on a later run",
        old[0]
    ));
    assert!(
        c.doks(|d| d.pool_deletes.is_empty()),
        "deleted on the run that cordons"
    );
    let run = c.f.health();
    run.expect_code(0).expect_stdout(&format!(
        "node {} of node pool {RUNS_POOL} is not registered with Kubernetes: it can run no pod",
        old[0]
    ));
    run.expect_stdout(&format!("deleted node pool {RUNS_POOL}"));
}

/// A pool create whose answer was lost: the next run finds the pool, records it as ops' own
/// and makes it the event the create never was.
#[test]
fn a_pool_create_whose_answer_was_lost_is_recorded_next_run_and_is_an_event() {
    let mut c = doks("scale_in_after: 15m, drain_timeout: 1h");
    up(&c);
    c.f.s.ops.env("SUPERVISOR_SIZE", "s-4vcpu-8gb");
    c.f.api.with(|w| w.create_fault = Some(DoFault::Lost));
    c.f.health().expect_code(1).expect_stdout("HTTP 504");
    let name = c.cluster_name();
    assert!(
        c.doks(|d| d
            .cluster(&name)
            .unwrap()
            .pool("ops-runs-s-4vcpu-8gb")
            .is_some()),
        "made, its answer lost"
    );
    let events = c.f.run(&["events"]);
    assert!(
        !events.stdout.contains("doks.pool_created"),
        "an event before the pool was found"
    );
    c.f.health()
        .expect_code(0)
        .expect_stdout("created by ops' last create whose answer was lost; recorded");
    c.f.run(&["events"])
        .expect_code(0)
        .expect_stdout("doks.pool_created");
    assert_eq!(c.doks(|d| d.pool_creates.len()), 1, "never a second pool");
}

#[test]
fn going_back_to_the_old_size_before_its_pool_went_uncordons_it_and_keeps_its_run() {
    let mut c = doks("scale_in_after: 15m, drain_timeout: 1h");
    let old = cordon_the_old_pool(&mut c, true);
    for n in c.node_names("ops-runs-s-4vcpu-8gb") {
        c.kube
            .add_node(&n, &[("nodetype", "v4-worker")], "3900m", "7000Mi");
    }
    c.f.s.ops.env("SUPERVISOR_SIZE", "s-2vcpu-2gb");
    let dry = c.f.run(&["run", "health", "--dry-run"]);
    dry.expect_code(0).expect_stdout(&format!(
        "would uncordon {} of node pool {RUNS_POOL}",
        old.join(", ")
    ));
    let node = c.kube.object("nodes", "", &old[0]).unwrap();
    assert_eq!(
        node["spec"]["unschedulable"], true,
        "the dry run uncordoned"
    );

    let run = c.f.health();
    run.expect_code(0).expect_stdout(&format!(
        "uncordoned node {} of node pool {RUNS_POOL}",
        old[0]
    ));
    for n in &old {
        let node = c.kube.object("nodes", "", n).unwrap();
        assert_eq!(node["spec"]["unschedulable"], false, "{node}");
    }
    c.clean(&run.all());
    c.f.health().expect_code(0);
    assert!(c.kube.object("pods", NS, "runner-run_long").is_some());
    let deletes = c.doks(|d| d.pool_deletes.clone());
    assert!(
        deletes.iter().all(|d| d.2 == "ops-runs-s-4vcpu-8gb"),
        "{deletes:?}"
    );
    c.f.run(&["events"])
        .expect_code(0)
        .expect_stdout("kubernetes.uncordoned");
}

#[test]
fn a_dry_run_reads_digitalocean_and_kubernetes_and_changes_nothing_in_either_nor_in_the_state() {
    let mut c = doks("scale_in_after: 15m");
    let kept = c.kept();
    let run = c.f.run(&["run", "health", "--dry-run"]);
    run.expect_code(0)
        .expect_stdout("would create cluster trigger-supervisor-")
        .expect_stdout("a dry run cannot read its Kubernetes API")
        .expect_stdout("plan: create 1 DOKS cluster");
    assert_eq!(c.f.api.mutations(), 0);
    assert!(c.doks(|d| d.clusters.is_empty()));
    assert_eq!(c.kept(), kept, "the dry run wrote ops' state");

    up(&c);
    c.version("v4.5.12");
    c.f.s.ops.env("SUPERVISOR_SIZE", "s-4vcpu-8gb");
    let (kept, muts) = (c.kept(), c.f.api.mutations());
    c.kube.clear();
    let run = c.f.run(&["run", "health", "--dry-run"]);
    run.expect_code(0)
        .expect_stdout("would apply Deployment trigger/supervisor: spec.template.spec.containers[supervisor].image: ghcr.io/triggerdotdev/supervisor:v4.5.11 -> ghcr.io/triggerdotdev/supervisor:v4.5.12")
        .expect_stdout("would create node pool ops-runs-s-4vcpu-8gb")
        .expect_stdout("plan: apply 1 Kubernetes object, create 1 node pool");
    assert_eq!(c.f.api.mutations(), muts, "a DigitalOcean change");
    assert_eq!(c.kube.mutations(), 0, "{:?}", c.kube.calls());
    assert_eq!(c.kept(), kept, "the dry run wrote ops' state");
    c.clean(&run.all());
}

#[test]
fn an_expired_token_is_refused_once_then_a_fresh_one_is_fetched_and_kept() {
    let c = doks("scale_in_after: 15m");
    up(&c);
    let issued = c.doks(|d| d.issued.len());
    // DigitalOcean's token dies early (revoked, or the cluster's clock).
    c.doks(|d| {
        for i in &mut d.issued {
            i.expires = std::time::Instant::now();
        }
    });
    let run = c.f.health();
    run.expect_code(0)
        .expect_stdout("refused the kept credentials (HTTP 401): fresh ones fetched")
        .expect_stdout("1/1 supervisor pods heartbeating");
    assert_eq!(c.doks(|d| d.issued.len()), issued + 1);
    c.clean(&run.all());
    c.f.health().expect_code(0);
    assert_eq!(
        c.doks(|d| d.issued.len()),
        issued + 1,
        "the fresh ones are kept"
    );
}

#[test]
fn a_cluster_named_like_ours_is_refused_with_the_fix_until_adopted_and_its_own_pool_is_left_alone()
{
    const NAME: &str = "trigger-supervisor-envabcde";
    let c = doks("scale_in_after: 15m");
    c.doks(|d| d.add_cluster(NAME, &[("someones-pool", "s-2vcpu-4gb", 1)]));
    let run = c.f.health();
    run.expect_code(1).expect_stdout(&format!(
        "a cluster named \"{NAME}\" ({}) exists that ops has no record of creating: adopt it with `cluster: {NAME}` in jobs.yaml",
        c.doks(|d| d.cluster(NAME).unwrap().id.clone())
    ));
    assert_eq!(c.f.api.mutations(), 0);
    assert!(c.kube.calls().is_empty());

    c.jobs(&format!("pending_after: 10m, cluster: {NAME}"));
    c.f.health()
        .expect_code(0)
        .expect_stdout("adopted (jobs.yaml `cluster:`); ops never deletes it")
        .expect_stdout("created node pool ops-supervisor")
        .expect_stdout("applied Deployment trigger/supervisor");
    c.wait_heartbeating();
    c.f.health().expect_code(0);
    let pools: Vec<String> = c.doks(|d| {
        d.cluster(NAME)
            .unwrap()
            .pools
            .iter()
            .map(|p| p.name.clone())
            .collect()
    });
    assert_eq!(pools, ["someones-pool", "ops-supervisor", RUNS_POOL]);
    assert!(c.doks(|d| d.pool_deletes.is_empty() && d.pool_updates.is_empty()));
}

#[test]
fn a_cluster_in_error_fails_the_run_with_its_name_and_the_fix_until_digitalocean_mends_it() {
    let c = doks("scale_in_after: 15m");
    c.doks(|d| d.provision_after = Duration::from_secs(3600));
    c.f.health()
        .expect_code(0)
        .expect_stdout("created cluster ");
    let (name, id) = c.doks(|d| {
        let x = &mut d.clusters[0];
        x.state = Some("error");
        (x.name.clone(), x.id.clone())
    });
    let run = c.f.health();
    run.expect_code(1).expect_stdout(&format!(
        "cluster {name} ({id}): DigitalOcean reports it in error"
    ));
    c.clean(&run.all());
    assert!(c.kube.calls().is_empty());
    assert_eq!(c.doks(|d| d.creates.len()), 1, "never a second cluster");
    c.doks(|d| {
        d.clusters[0].state = None;
        d.clusters[0].running_at = std::time::Instant::now();
    });
    c.f.health()
        .expect_code(0)
        .expect_stdout("applied Deployment trigger/supervisor");
}

#[test]
fn a_lost_cluster_create_found_in_error_fails_the_run_and_is_still_an_event() {
    let c = doks("scale_in_after: 15m");
    c.f.api.with(|w| w.create_fault = Some(DoFault::Lost));
    c.f.health().expect_code(1).expect_stdout("HTTP 504");
    c.doks(|d| d.clusters[0].state = Some("error"));
    c.f.health()
        .expect_code(1)
        .expect_stdout("DigitalOcean reports it in error");
    c.f.health().expect_code(1);
    let events = c.f.run(&["events"]);
    events.expect_code(0).expect_stdout("doks.cluster_created");
    assert_eq!(
        events.stdout.matches("doks.cluster_created").count(),
        1,
        "announced once"
    );
    assert_eq!(c.doks(|d| d.creates.len()), 1, "never a second cluster");
}

#[test]
fn a_cluster_create_whose_answer_was_lost_is_found_next_run_recorded_as_ops_own_and_is_an_event() {
    let c = doks("scale_in_after: 15m");
    c.f.api.with(|w| w.create_fault = Some(DoFault::Lost));
    c.f.health().expect_code(1).expect_stdout("HTTP 504");
    assert_eq!(c.doks(|d| d.clusters.len()), 1, "made, its answer lost");
    c.f.health()
        .expect_code(0)
        .expect_stdout("never heard DigitalOcean's answer")
        .expect_stdout("applied Deployment trigger/supervisor");
    c.f.run(&["events"])
        .expect_code(0)
        .expect_stdout("doks.cluster_created");
    assert_eq!(c.doks(|d| d.creates.len()), 1, "never a second cluster");
}
