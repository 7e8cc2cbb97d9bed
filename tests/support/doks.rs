//! The fake DigitalOcean's Kubernetes endpoints (DOKS), served by `FakeDo` under
//! `/v2/kubernetes/`: options, clusters (paginated, by id), create (strict about the body, as
//! the spec's `cluster` model), node pools (list, create, update without a size, delete),
//! credentials with tokens that
//! expire, and available upgrades. A new cluster is `provisioning` for `provision_after`, then
//! `running`; a pool's nodes are `provisioning` without a name for `node_after`, then
//! `running` with one. Answers follow digitalocean/openapi (the `do_openapi` test checks them).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fake::{Reply, Seen};

pub const VERSIONS: [&str; 3] = ["1.33.5-do.2", "1.34.1-do.0", "1.34.1-do.1"];
pub const REGIONS: [&str; 3] = ["nyc1", "fra1", "ams3"];
pub const SIZES: [&str; 6] = [
    "s-1vcpu-2gb",
    "s-2vcpu-2gb",
    "s-2vcpu-4gb",
    "s-4vcpu-8gb",
    "c-4",
    "s-8vcpu-16gb",
];

#[derive(Debug, Clone)]
pub struct FakeNode {
    pub id: String,
    pub name: String,
    pub droplet_id: u64,
    pub created_at: String,
    pub ready_at: Instant,
}

impl FakeNode {
    fn ready(&self) -> bool {
        Instant::now() >= self.ready_at
    }

    fn json(&self) -> Value {
        // As the spec's create answer shows: no name or droplet id until provisioned.
        let (name, droplet, state) = if self.ready() {
            (self.name.clone(), self.droplet_id.to_string(), "running")
        } else {
            (" ".to_string(), " ".to_string(), "provisioning")
        };
        json!({"id": self.id, "name": name, "status": {"state": state}, "droplet_id": droplet,
               "created_at": self.created_at, "updated_at": self.created_at})
    }
}

#[derive(Debug, Clone)]
pub struct FakePool {
    pub id: String,
    pub name: String,
    pub size: String,
    pub tags: Vec<String>,
    pub labels: Value,
    pub taints: Value,
    pub auto_scale: bool,
    pub min_nodes: u64,
    pub max_nodes: u64,
    pub nodes: Vec<FakeNode>,
}

impl FakePool {
    fn json(&self, cluster: &str) -> Value {
        let mut tags = self.tags.clone();
        tags.extend(["k8s".into(), format!("k8s:{cluster}"), "k8s:worker".into()]);
        let (min, max) = if self.auto_scale {
            (self.min_nodes, self.max_nodes)
        } else {
            (0, 0)
        };
        json!({"id": self.id, "name": self.name, "size": self.size, "count": self.nodes.len(),
               "tags": tags, "labels": self.labels, "taints": self.taints,
               "auto_scale": self.auto_scale, "min_nodes": min, "max_nodes": max,
               "nodes": self.nodes.iter().map(FakeNode::json).collect::<Vec<_>>()})
    }

    /// Node names once provisioned.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.ready())
            .map(|n| n.name.clone())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct FakeCluster {
    pub id: String,
    pub name: String,
    pub region: String,
    pub version: String,
    pub tags: Vec<String>,
    pub ha: bool,
    pub surge_upgrade: bool,
    pub auto_upgrade: bool,
    pub maintenance: Value,
    pub autoscaler: Value,
    pub created_at: String,
    pub running_at: Instant,
    pub pools: Vec<FakePool>,
    /// The `status.state` DigitalOcean reports instead of provisioning/running (`error`, …).
    pub state: Option<&'static str>,
}

impl FakeCluster {
    pub fn running(&self) -> bool {
        Instant::now() >= self.running_at
    }

    fn json(&self) -> Value {
        let mut tags = self.tags.clone();
        tags.extend(["k8s".into(), format!("k8s:{}", self.id)]);
        let running = self.running();
        let mut maintenance = self.maintenance.clone();
        maintenance["duration"] = json!("4h0m0s");
        json!({
            "id": self.id, "name": self.name, "region": self.region, "version": self.version,
            "cluster_subnet": "10.244.0.0/16", "service_subnet": "10.245.0.0/16",
            "vpc_uuid": "c33931f2-a26a-4e61-b85c-4e95a2ec431b",
            "ipv4": if running { "203.0.113.10" } else { "" },
            "endpoint": if running { format!("https://{}.k8s.ondigitalocean.com", self.id) } else { String::new() },
            "tags": tags,
            "node_pools": self.pools.iter().map(|p| p.json(&self.id)).collect::<Vec<_>>(),
            "maintenance_policy": maintenance,
            "auto_upgrade": self.auto_upgrade, "surge_upgrade": self.surge_upgrade,
            "registry_enabled": false, "ha": self.ha,
            "status": {"state": self.state.unwrap_or(if running { "running" } else { "provisioning" }),
                       "message": if running || self.state.is_some() { "" } else { "provisioning" }},
            "created_at": self.created_at, "updated_at": self.created_at,
            "cluster_autoscaler_configuration": self.autoscaler,
        })
    }

    pub fn pool(&self, name: &str) -> Option<&FakePool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// A token the fake issued, and until when the cluster's API accepts it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cluster: String,
    pub token: String,
    pub expires: Instant,
}

pub struct DoksWorld {
    pub clusters: Vec<FakeCluster>,
    pub provision_after: Duration,
    pub node_after: Duration,
    /// Clusters listed per page at most (to exercise pagination).
    pub page_max: usize,
    /// Bodies of `POST /v2/kubernetes/clusters` that created a cluster.
    pub creates: Vec<Value>,
    /// (cluster id, body) of node pool creates.
    pub pool_creates: Vec<(String, Value)>,
    /// (cluster id, body) of node pool updates.
    pub pool_updates: Vec<(String, Value)>,
    /// (cluster id, pool id, pool name) of node pool deletes.
    pub pool_deletes: Vec<(String, String, String)>,
    pub issued: Vec<Issued>,
    /// Tokens live this long whatever `expiry_seconds` asks (a test of expiry).
    pub token_life: Option<Duration>,
    /// The API server URL and CA PEM the credentials name (the fake Kubernetes API's, when a
    /// test runs one).
    pub server: Option<String>,
    pub ca_pem: String,
    next: u64,
}

impl Default for DoksWorld {
    fn default() -> Self {
        DoksWorld {
            clusters: Vec::new(),
            provision_after: Duration::ZERO,
            node_after: Duration::ZERO,
            page_max: 200,
            creates: Vec::new(),
            pool_creates: Vec::new(),
            pool_updates: Vec::new(),
            pool_deletes: Vec::new(),
            issued: Vec::new(),
            token_life: None,
            server: None,
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n".into(),
            next: 1,
        }
    }
}

impl DoksWorld {
    fn uuid(&mut self, kind: u8) -> String {
        self.next += 1;
        format!(
            "{:08x}-{kind:04x}-4000-8000-{:012x}",
            0x5eed_0000 + self.next,
            self.next
        )
    }

    pub fn cluster(&self, name: &str) -> Option<&FakeCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Whether the cluster's API would take this bearer token now.
    pub fn token_valid(&self, cluster: &str, token: &str) -> bool {
        self.issued
            .iter()
            .any(|i| i.cluster == cluster && i.token == token && Instant::now() < i.expires)
    }

    /// Whether any cluster's API would take this bearer token now.
    pub fn issued_valid(&self, token: &str) -> bool {
        self.issued
            .iter()
            .any(|i| i.token == token && Instant::now() < i.expires)
    }

    /// A cluster made outside ops (by hand, or by an earlier tool), running.
    pub fn add_cluster(&mut self, name: &str, pools: &[(&str, &str, usize)]) -> String {
        let id = self.uuid(1);
        let mut c = FakeCluster {
            id: id.clone(),
            name: name.into(),
            region: "nyc1".into(),
            version: VERSIONS[1].into(),
            tags: vec![],
            ha: false,
            surge_upgrade: false,
            auto_upgrade: false,
            maintenance: json!({"day": "any", "start_time": "00:00"}),
            autoscaler: json!({"scale_down_utilization_threshold": 0.5, "scale_down_unneeded_time": "10m0s"}),
            created_at: now_text(),
            running_at: Instant::now(),
            state: None,
            pools: vec![],
        };
        for (pool, size, count) in pools {
            let p = self.new_pool(
                &json!({"name": pool, "size": size, "count": count, "auto_scale": false}),
                Duration::ZERO,
            );
            c.pools.push(p);
        }
        self.clusters.push(c);
        id
    }

    /// The autoscaler (or a person) sets a pool's node count.
    pub fn scale(&mut self, cluster: &str, pool: &str, count: usize) {
        let after = self.node_after;
        let Some(ci) = self.clusters.iter().position(|c| c.id == cluster) else {
            panic!("no cluster {cluster}")
        };
        let Some(pi) = self.clusters[ci].pools.iter().position(|p| p.name == pool) else {
            panic!("no pool {pool}")
        };
        while self.clusters[ci].pools[pi].nodes.len() < count {
            let n = self.node(pool, after);
            self.clusters[ci].pools[pi].nodes.push(n);
        }
        self.clusters[ci].pools[pi].nodes.truncate(count);
    }

    fn node(&mut self, pool: &str, after: Duration) -> FakeNode {
        let id = self.uuid(3);
        FakeNode {
            name: format!("{pool}-{}", &id[id.len() - 5..]),
            droplet_id: 400_000_000 + self.next,
            id,
            created_at: now_text(),
            ready_at: Instant::now() + after,
        }
    }

    fn new_pool(&mut self, body: &Value, after: Duration) -> FakePool {
        let name = body["name"].as_str().unwrap_or_default().to_string();
        let count = body["count"].as_u64().unwrap_or(0);
        let nodes = (0..count).map(|_| self.node(&name, after)).collect();
        FakePool {
            id: self.uuid(2),
            size: body["size"].as_str().unwrap_or_default().into(),
            tags: strings(&body["tags"]),
            labels: if body["labels"].is_object() {
                body["labels"].clone()
            } else {
                Value::Null
            },
            taints: body.get("taints").cloned().unwrap_or(json!([])),
            auto_scale: body["auto_scale"].as_bool().unwrap_or(false),
            min_nodes: body["min_nodes"].as_u64().unwrap_or(0),
            max_nodes: body["max_nodes"].as_u64().unwrap_or(0),
            nodes,
            name,
        }
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn error(status: u16, id: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"id": id, "message": message, "request_id": "7a1c5e55-2f0e-4c7b-9a55-1d0d6f1b2c3d"}),
    )
}

fn not_found() -> Reply {
    error(
        404,
        "not_found",
        "The resource you requested could not be found.",
    )
}

fn unprocessable(message: &str) -> Reply {
    error(422, "unprocessable_entity", message)
}

fn query(path: &str, key: &str) -> Option<String> {
    path.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// A pool body as DigitalOcean checks it (`kubernetes_node_pool`: name, size, count required).
fn check_pool(p: &Value) -> Result<(), String> {
    let name = p["name"].as_str().unwrap_or("");
    if name.is_empty() {
        return Err("node pool name is required".into());
    }
    let size = p["size"].as_str().unwrap_or("");
    if !SIZES.contains(&size) {
        return Err(format!("invalid node pool size {size:?}"));
    }
    let Some(count) = p["count"].as_u64() else {
        return Err("node pool count is required".into());
    };
    if p["auto_scale"].as_bool() == Some(true) {
        let (min, max) = (p["min_nodes"].as_u64(), p["max_nodes"].as_u64());
        match (min, max) {
            (Some(min), Some(max)) if min <= max && max >= 1 && (min..=max).contains(&count) => {}
            _ => {
                return Err(
                    "autoscaled node pool needs min_nodes <= count <= max_nodes, max_nodes >= 1"
                        .into(),
                )
            }
        }
    }
    for t in p["taints"].as_array().into_iter().flatten() {
        let effect = t["effect"].as_str().unwrap_or("");
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
            || t["key"].as_str().is_none()
        {
            return Err(format!("invalid taint {t}"));
        }
    }
    if !(p["labels"].is_null() || p["labels"].is_object()) {
        return Err("labels must be an object".into());
    }
    Ok(())
}

/// Answers a request under `/v2/kubernetes/`.
pub fn route(w: &mut DoksWorld, req: &Seen, base: &str) -> Reply {
    let path = req.path.as_str();
    let route = path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = route
        .trim_start_matches("/v2/kubernetes/")
        .split('/')
        .collect();
    let body = || serde_json::from_str::<Value>(&req.body);
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["options"]) => Reply::json(
            200,
            json!({"options": {
                "regions": REGIONS.iter().map(|r| json!({"name": r.to_uppercase(), "slug": r})).collect::<Vec<_>>(),
                "versions": VERSIONS.iter().map(|v| json!({"slug": v, "kubernetes_version": v.split('-').next().unwrap(),
                    "supported_features": ["cluster-autoscaler", "docr-integration", "ha-control-plane", "token-authentication"]})).collect::<Vec<_>>(),
                "sizes": SIZES.iter().map(|s| json!({"name": s, "slug": s})).collect::<Vec<_>>(),
            }}),
        ),
        ("GET", ["clusters"]) => {
            let page: usize = query(path, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1);
            let per_page: usize = query(path, "per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(20)
                .clamp(1, 200)
                .min(w.page_max);
            let total = w.clusters.len();
            let slice: Vec<Value> = w
                .clusters
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(FakeCluster::json)
                .collect();
            let mut links = json!({});
            if page * per_page < total {
                links = json!({"pages": {
                    "next": format!("http://{base}/v2/kubernetes/clusters?page={}&per_page={per_page}", page + 1),
                    "last": format!("http://{base}/v2/kubernetes/clusters?page={}&per_page={per_page}", total.div_ceil(per_page))}});
            }
            Reply::json(
                200,
                json!({"kubernetes_clusters": slice, "links": links, "meta": {"total": total}}),
            )
            .with_header("ratelimit-limit", "5000")
            .with_header("ratelimit-remaining", "4990")
        }
        ("POST", ["clusters"]) => {
            let Ok(b) = body() else {
                return error(400, "bad_request", "invalid JSON body");
            };
            for field in ["name", "region", "version"] {
                if b[field].as_str().unwrap_or("").is_empty() {
                    return unprocessable(&format!("{field} is required"));
                }
            }
            if !REGIONS.contains(&b["region"].as_str().unwrap_or("")) {
                return unprocessable("region is not available for Kubernetes");
            }
            if !VERSIONS.contains(&b["version"].as_str().unwrap_or("")) {
                return unprocessable("version is not a supported version");
            }
            let Some(pools) = b["node_pools"].as_array().filter(|p| !p.is_empty()) else {
                return unprocessable("a cluster needs at least one node pool");
            };
            for p in pools {
                if let Err(m) = check_pool(p) {
                    return unprocessable(&m);
                }
            }
            if pools
                .iter()
                .map(|p| p["count"].as_u64().unwrap_or(0))
                .sum::<u64>()
                == 0
            {
                return unprocessable("a cluster needs at least one worker node");
            }
            if !b["ha"].is_boolean() && !b["ha"].is_null() {
                return unprocessable("ha must be a boolean");
            }
            let name = b["name"].as_str().unwrap_or_default().to_string();
            if w.clusters.iter().any(|c| c.name == name) {
                return unprocessable("a cluster with this name already exists");
            }
            let id = w.uuid(1);
            let after = w.provision_after + w.node_after;
            let made: Vec<FakePool> = pools.iter().map(|p| w.new_pool(p, after)).collect();
            let c = FakeCluster {
                id,
                name,
                region: b["region"].as_str().unwrap_or_default().into(),
                version: b["version"].as_str().unwrap_or_default().into(),
                tags: strings(&b["tags"]),
                ha: b["ha"].as_bool().unwrap_or(false),
                surge_upgrade: b["surge_upgrade"].as_bool().unwrap_or(false),
                auto_upgrade: b["auto_upgrade"].as_bool().unwrap_or(false),
                maintenance: b
                    .get("maintenance_policy")
                    .filter(|m| m.is_object())
                    .cloned()
                    .unwrap_or(json!({"day": "any", "start_time": "00:00"})),
                autoscaler: b
                    .get("cluster_autoscaler_configuration")
                    .cloned()
                    .unwrap_or(Value::Null),
                created_at: now_text(),
                running_at: Instant::now() + w.provision_after,
                pools: made,
                state: None,
            };
            w.creates.push(b.clone());
            let answer = c.json();
            w.clusters.push(c);
            Reply::json(201, json!({"kubernetes_cluster": answer}))
        }
        (method, ["clusters", id, rest @ ..]) => {
            let id = id.to_string();
            let Some(ci) = w.clusters.iter().position(|c| c.id == id) else {
                return not_found();
            };
            match (method, rest) {
                ("GET", []) => {
                    Reply::json(200, json!({"kubernetes_cluster": w.clusters[ci].json()}))
                }
                ("GET", ["node_pools"]) => {
                    let c = &w.clusters[ci];
                    Reply::json(
                        200,
                        json!({"node_pools": c.pools.iter().map(|p| p.json(&c.id)).collect::<Vec<_>>()}),
                    )
                }
                ("POST", ["node_pools"]) => {
                    let Ok(b) = body() else {
                        return error(400, "bad_request", "invalid JSON body");
                    };
                    if let Err(m) = check_pool(&b) {
                        return unprocessable(&m);
                    }
                    if w.clusters[ci]
                        .pool(b["name"].as_str().unwrap_or(""))
                        .is_some()
                    {
                        return unprocessable("a node pool with this name already exists");
                    }
                    let after = w.node_after;
                    let p = w.new_pool(&b, after);
                    w.pool_creates.push((id.clone(), b));
                    let answer = p.json(&id);
                    w.clusters[ci].pools.push(p);
                    Reply::json(201, json!({"node_pool": answer}))
                }
                ("PUT", ["node_pools", pool]) => {
                    let Ok(b) = body() else {
                        return error(400, "bad_request", "invalid JSON body");
                    };
                    if b.get("size").is_some() {
                        return unprocessable("a node pool's size cannot be changed");
                    }
                    let mut check = b.clone();
                    check["size"] = json!(SIZES[0]);
                    if let Err(m) = check_pool(&check) {
                        return unprocessable(&m);
                    }
                    let after = w.node_after;
                    let Some(pi) = w.clusters[ci].pools.iter().position(|p| p.id == *pool) else {
                        return not_found();
                    };
                    let count = b["count"].as_u64().unwrap_or(0) as usize;
                    let name = w.clusters[ci].pools[pi].name.clone();
                    while w.clusters[ci].pools[pi].nodes.len() < count {
                        let n = w.node(&name, after);
                        w.clusters[ci].pools[pi].nodes.push(n);
                    }
                    let p = &mut w.clusters[ci].pools[pi];
                    p.nodes.truncate(count);
                    p.name = b["name"].as_str().unwrap_or_default().into();
                    p.tags = strings(&b["tags"]);
                    p.labels = if b["labels"].is_object() {
                        b["labels"].clone()
                    } else {
                        Value::Null
                    };
                    p.taints = b.get("taints").cloned().unwrap_or(json!([]));
                    p.auto_scale = b["auto_scale"].as_bool().unwrap_or(false);
                    p.min_nodes = b["min_nodes"].as_u64().unwrap_or(0);
                    p.max_nodes = b["max_nodes"].as_u64().unwrap_or(0);
                    let answer = p.json(&id);
                    w.pool_updates.push((id.clone(), b));
                    Reply::json(202, json!({"node_pool": answer}))
                }
                ("DELETE", ["node_pools", pool]) => {
                    match w.clusters[ci].pools.iter().position(|p| p.id == *pool) {
                        Some(pi) => {
                            let p = w.clusters[ci].pools.remove(pi);
                            w.pool_deletes.push((id.clone(), p.id, p.name));
                            Reply::text(204, "")
                        }
                        None => not_found(),
                    }
                }
                ("GET", ["credentials"]) => {
                    if !w.clusters[ci].running() {
                        return not_found();
                    }
                    let asked = query(path, "expiry_seconds")
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|s| *s > 0)
                        .unwrap_or(7 * 24 * 3600);
                    let life = w.token_life.unwrap_or(Duration::from_secs(asked));
                    w.next += 1;
                    let token = format!("dok8s-fake{:06}{}", w.next, &id[..8]);
                    w.issued.push(Issued {
                        cluster: id.clone(),
                        token: token.clone(),
                        expires: Instant::now() + life,
                    });
                    let expires_at = (chrono::Utc::now()
                        + chrono::Duration::from_std(life).unwrap())
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                    let server = w
                        .server
                        .clone()
                        .unwrap_or_else(|| format!("https://{id}.k8s.ondigitalocean.com"));
                    Reply::json(
                        200,
                        json!({"server": server, "certificate_authority_data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &w.ca_pem),
                               "client_certificate_data": null, "client_key_data": null,
                               "token": token, "expires_at": expires_at}),
                    )
                }
                ("GET", ["upgrades"]) => {
                    let current = w.clusters[ci].version.clone();
                    let newer: Vec<Value> = VERSIONS
                        .iter()
                        .skip_while(|v| **v != current)
                        .skip(1)
                        .map(|v| json!({"slug": v, "kubernetes_version": v.split('-').next().unwrap(), "supported_features": []}))
                        .collect();
                    let list = if newer.is_empty() {
                        Value::Null
                    } else {
                        json!(newer)
                    };
                    Reply::json(200, json!({"available_upgrade_versions": list}))
                }
                ("DELETE", []) => error(
                    403,
                    "forbidden",
                    "the fake refuses cluster deletes: ops must never send one",
                ),
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// The fake DigitalOcean and a client of it, as ops would make one.
pub struct Client {
    pub fake: super::digitalocean::FakeDo,
    pub http: trigger_ops::clients::http::Http,
    pub token: trigger_ops::redact::Secret,
    pub url: String,
}

impl Client {
    pub fn start() -> Client {
        let fake = super::digitalocean::FakeDo::start();
        let url = fake.server.url();
        Client {
            fake,
            http: trigger_ops::clients::http::Http::new(),
            token: trigger_ops::redact::Secret::new(super::digitalocean::DO_TOKEN),
            url,
        }
    }

    pub fn api(&self) -> trigger_ops::clients::digitalocean::DigitalOcean<'_> {
        trigger_ops::clients::digitalocean::DigitalOcean::new(
            &self.http,
            &self.url,
            &self.token,
            Instant::now() + Duration::from_secs(30),
        )
    }
}
