//! A fake Railway GraphQL API speaking the reference's wire format, and a fake webapp
//! (`/healthcheck`, `/admin/api/v1/workers`, `/admin/api/v1/feature-flags`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake::{loopback, private, FakeServer, Reply, Seen};

pub const RAILWAY_TOKEN: &str = "railway-test-token-5f1c2e";
pub const PROJECT: &str = "proj-1234";
pub const ENVIRONMENT: &str = "env-abcdef12";

#[derive(Debug, Clone)]
pub enum Fault {
    RateLimit(u64),
    Status(u16),
    Html,
    GraphqlError(&'static str),
    Slow(Duration),
    Truncated,
}

pub type RestartHook = Box<dyn FnMut(&str) + Send>;

#[derive(Default)]
pub struct World {
    pub services: Vec<(String, String)>,
    pub variables: HashMap<String, Value>,
    pub domains: HashMap<String, Vec<String>>,
    /// service id → (deployment id, createdAt, status), any order
    pub deployments: HashMap<String, Vec<(String, String, String)>>,
    pub deployment_logs: HashMap<String, Vec<(String, String)>>,
    pub environment_logs: Vec<(String, String)>,
    pub faults: VecDeque<Fault>,
    /// Operation names in arrival order.
    pub ops: Vec<String>,
    pub restart_hook: Option<RestartHook>,
    pub restarts: Vec<String>,
    /// service id → `ServiceInstance { source { image repo } latestDeployment { meta } }`.
    pub instances: HashMap<String, Value>,
}

impl World {
    /// The service deploys a Docker image.
    pub fn image_source(&mut self, service: &str, image: &str) {
        self.instances.insert(
            service.into(),
            json!({"source": {"image": image, "repo": null}, "latestDeployment": {"meta": {"image": image}}}),
        );
    }

    /// The service deploys a GitHub repo; its latest deployment came from `branch`.
    pub fn repo_source(&mut self, service: &str, repo: &str, branch: &str) {
        self.instances.insert(
            service.into(),
            json!({"source": {"image": null, "repo": repo},
                   "latestDeployment": {"meta": {"branch": branch, "repo": repo, "commitHash": "0f1e2d3c"}}}),
        );
    }
}

pub struct FakeRailway {
    pub server: FakeServer,
    pub world: Arc<Mutex<World>>,
}

fn op_name(query: &str) -> String {
    let q = query.trim_start();
    let rest = q
        .strip_prefix("query")
        .or_else(|| q.strip_prefix("mutation"))
        .unwrap_or(q);
    rest.trim_start()
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

fn logs(list: &[(String, String)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(ts, m)| json!({"timestamp": ts, "message": m, "severity": "info"}))
            .collect(),
    )
}

impl FakeRailway {
    pub fn start() -> FakeRailway {
        let world = Arc::new(Mutex::new(World::default()));
        let w = Arc::clone(&world);
        let server = FakeServer::start(
            loopback(),
            Box::new(move |req: &Seen| {
                let fault = w.lock().unwrap().faults.pop_front();
                match fault {
                    Some(Fault::RateLimit(secs)) => {
                        return Reply::json(429, json!({"errors": [{"message": "rate limited"}]}))
                            .with_header("Retry-After", &secs.to_string())
                            .with_header("X-RateLimit-Limit", "1000")
                            .with_header("X-RateLimit-Remaining", "0")
                    }
                    Some(Fault::Status(code)) => return Reply::text(code, "upstream error"),
                    Some(Fault::Html) => {
                        return Reply::text(503, "<html><body>Bad gateway</body></html>")
                    }
                    Some(Fault::GraphqlError(m)) => {
                        return Reply::json(200, json!({"data": null, "errors": [{"message": m}]}))
                    }
                    Some(Fault::Slow(d)) => std::thread::sleep(d),
                    Some(Fault::Truncated) => {
                        return Reply::json(200, json!({})).with_body("{\"data\": {\"variab")
                    }
                    None => {}
                }
                let authed = req.header("authorization")
                    == Some(&format!("Bearer {RAILWAY_TOKEN}"))
                    || req.header("project-access-token") == Some(RAILWAY_TOKEN);
                if !authed {
                    return Reply::json(
                        200,
                        json!({"data": null, "errors": [{"message": "Not Authorized"}]}),
                    );
                }
                let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                let query = body["query"].as_str().unwrap_or_default();
                let vars = &body["variables"];
                let op = op_name(query);
                let mut world = w.lock().unwrap();
                world.ops.push(op.clone());
                let data = match op.as_str() {
                    "Project" => {
                        if vars["id"] != PROJECT {
                            return Reply::json(
                                200,
                                json!({"data": null, "errors": [{"message": "Project not found"}]}),
                            );
                        }
                        let edges: Vec<Value> = world
                            .services
                            .iter()
                            .map(|(id, name)| json!({"node": {"id": id, "name": name}}))
                            .collect();
                        json!({"project": {"id": PROJECT, "name": "trigger", "services": {"edges": edges}}})
                    }
                    "Me" => json!({"me": {"id": "user-1", "email": "ops@example.com"}}),
                    "Webapp" => {
                        let sid = vars["serviceId"].as_str().unwrap_or_default();
                        let instance = world
                            .instances
                            .get(sid)
                            .cloned()
                            .unwrap_or(json!({"source": null, "latestDeployment": null}));
                        json!({"variables": world.variables.get(sid).cloned().unwrap_or(json!({})),
                               "serviceInstance": instance})
                    }
                    "Domains" => {
                        let sid = vars["serviceId"].as_str().unwrap_or_default();
                        let list: Vec<Value> = world
                            .domains
                            .get(sid)
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|d| json!({"domain": d}))
                            .collect();
                        json!({"domains": {"serviceDomains": list, "customDomains": []}})
                    }
                    "Deployments" => {
                        let sid = vars["input"]["serviceId"].as_str().unwrap_or_default();
                        let first = vars["first"].as_u64().unwrap_or(100) as usize;
                        let mut list = world.deployments.get(sid).cloned().unwrap_or_default();
                        list.sort_by(|a, b| b.1.cmp(&a.1));
                        let edges: Vec<Value> = list.into_iter().take(first).map(|(id, at, st)| json!({"node": {"id": id, "createdAt": at, "status": st}})).collect();
                        json!({"deployments": {"edges": edges}})
                    }
                    "Deployment" => {
                        let id = vars["id"].as_str().unwrap_or_default();
                        let found = world
                            .deployments
                            .values()
                            .flatten()
                            .find(|d| d.0 == id)
                            .cloned();
                        match found {
                            Some((id, at, st)) => {
                                json!({"deployment": {"id": id, "createdAt": at, "status": st}})
                            }
                            None => {
                                return Reply::json(
                                    200,
                                    json!({"data": null, "errors": [{"message": "Deployment not found"}]}),
                                )
                            }
                        }
                    }
                    "DeploymentLogs" => {
                        let id = vars["deploymentId"].as_str().unwrap_or_default();
                        let filter = vars["filter"].as_str().unwrap_or_default();
                        let list: Vec<(String, String)> = world
                            .deployment_logs
                            .get(id)
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(_, m)| m.contains(filter))
                            .collect();
                        json!({"deploymentLogs": logs(&list)})
                    }
                    "EnvironmentLogs" => json!({"environmentLogs": logs(&world.environment_logs)}),
                    "DeploymentRestart" => {
                        let id = vars["id"].as_str().unwrap_or_default().to_string();
                        world.restarts.push(id.clone());
                        if let Some(hook) = world.restart_hook.as_mut() {
                            hook(&id);
                        }
                        json!({"deploymentRestart": true})
                    }
                    other => {
                        return Reply::json(
                            400,
                            json!({"errors": [{"message": format!("unknown operation {other}")}]}),
                        )
                    }
                };
                Reply::json(200, json!({ "data": data }))
            }),
        );
        FakeRailway { server, world }
    }

    pub fn url(&self) -> String {
        format!("{}/graphql/v2", self.server.url())
    }

    pub fn ops(&self) -> Vec<String> {
        self.world.lock().unwrap().ops.clone()
    }

    pub fn clear(&self) {
        self.world.lock().unwrap().ops.clear();
        self.server.clear();
    }

    pub fn fault(&self, f: Fault) {
        self.world.lock().unwrap().faults.push_back(f);
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world.lock().unwrap())
    }
}

pub struct FakeWebapp {
    pub server: FakeServer,
    pub health: Arc<Mutex<(u16, String)>>,
    pub groups: Arc<Mutex<Vec<String>>>,
    /// The webapp's database: when set, the admin API writes there as the real webapp does
    /// (a new group, its token hash, the default flag).
    pub database: Arc<Mutex<Option<String>>>,
    /// Answers to `POST /admin/api/v1/feature-flags`, first to last (200 once empty).
    pub flag_faults: Arc<Mutex<VecDeque<u16>>>,
}

pub const ADMIN_TOKEN: &str = "tr_pat_admintoken0123456789";
pub const ADMIN_CREATED_TOKEN: &str = "tr_wgt_AdminCreated0123456789abcdefghijklmnopqr";

/// What the webapp's `createWorkerGroup` writes: the token's hash, a MANAGED group whose
/// `masterQueue` is its name, and the global default flag only when there is none yet.
fn create_group_in(url: &str, name: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("webapp database");
    crate::support::webapp::add_group(&mut c, ADMIN_CREATED_TOKEN, name, name);
}

fn set_flags_in(url: &str, body: &Value) -> Result<usize, String> {
    let Some(obj) = body.as_object() else {
        return Err("not an object".into());
    };
    let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    for (k, v) in obj {
        c.execute(
            r#"INSERT INTO "FeatureFlag" (id, key, value, "updatedAt") VALUES ('ff-' || $1, $1, $2::text::jsonb, now())
               ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "updatedAt" = now()"#,
            &[k, &v.to_string()],
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(obj.len())
}

impl FakeWebapp {
    /// On a private address: ops sends its admin token over plain http only to such addresses.
    pub fn start() -> FakeWebapp {
        Self::start_on(private())
    }

    pub fn start_on(ip: std::net::IpAddr) -> FakeWebapp {
        let health = Arc::new(Mutex::new((200u16, "OK".to_string())));
        let groups = Arc::new(Mutex::new(Vec::new()));
        let database: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let flag_faults = Arc::new(Mutex::new(VecDeque::new()));
        let (h, g, db, ff) = (
            Arc::clone(&health),
            Arc::clone(&groups),
            Arc::clone(&database),
            Arc::clone(&flag_faults),
        );
        let server = FakeServer::start(
            ip,
            Box::new(move |req: &Seen| {
                let admin = req.header("authorization") == Some(&format!("Bearer {ADMIN_TOKEN}"));
                match (req.method.as_str(), req.path.as_str()) {
                    ("GET", "/healthcheck") => {
                        let (code, body) = h.lock().unwrap().clone();
                        Reply::text(code, &body)
                    }
                    ("POST", "/admin/api/v1/workers") => {
                        if !admin {
                            return Reply::json(401, json!({"error": "Unauthorized"}));
                        }
                        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        let name = body["name"].as_str().unwrap_or_default().to_string();
                        let mut groups = g.lock().unwrap();
                        if groups.contains(&name) {
                            return Reply::json(
                                400,
                                json!({"error": "worker group already exists"}),
                            );
                        }
                        groups.push(name.clone());
                        if let Some(url) = db.lock().unwrap().as_deref() {
                            create_group_in(url, &name);
                        }
                        Reply::json(
                            200,
                            json!({"outcome": "created new worker group", "token": {"id": "tok1", "tokenHash": "x", "plaintext": ADMIN_CREATED_TOKEN},
                                   "workerGroup": {"id": crate::support::webapp::group_id(&name), "name": name, "masterQueue": name, "type": "MANAGED"}}),
                        )
                    }
                    ("POST", "/admin/api/v1/feature-flags") => {
                        if !admin {
                            return Reply::json(401, json!({"error": "Unauthorized"}));
                        }
                        if let Some(code) = ff.lock().unwrap().pop_front() {
                            return Reply::json(code, json!({"error": "Internal error"}));
                        }
                        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        if !body["defaultWorkerInstanceGroupId"].is_string() {
                            return Reply::json(
                                400,
                                json!({"error": "Invalid feature flags data", "details": []}),
                            );
                        }
                        let n = match db.lock().unwrap().as_deref() {
                            Some(url) => match set_flags_in(url, &body) {
                                Ok(n) => n,
                                Err(e) => return Reply::json(400, json!({"error": e})),
                            },
                            None => 1,
                        };
                        Reply::json(
                            200,
                            json!({"success": true, "updatedFlags": ["defaultWorkerInstanceGroupId"], "message": format!("Updated {n} feature flag(s)")}),
                        )
                    }
                    _ => Reply::text(404, "not found"),
                }
            }),
        );
        FakeWebapp {
            server,
            health,
            groups,
            database,
            flag_faults,
        }
    }

    /// The admin API writes to this database from now on.
    pub fn share_database(&self, url: &str) {
        *self.database.lock().unwrap() = Some(url.to_string());
    }

    pub fn origin(&self) -> String {
        self.server.url()
    }

    pub fn count(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}
