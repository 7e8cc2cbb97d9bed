//! A fake DigitalOcean API v2 (droplets by tag with pagination, create/get/delete, firewalls,
//! tags, account) and fake supervisor `/health` servers on loopback addresses it assigns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fake::{loopback, FakeServer, Reply, Seen};

pub const DO_TOKEN: &str =
    "dop_v1_fa4e0000000000000000000000000000000000000000000000000000000000aa";

#[derive(Debug, Clone)]
pub enum DoFault {
    RateLimit,
    Slow(Duration),
    Truncated,
    Html,
    Status(u16),
    Unprocessable(&'static str),
    /// The create is made, and its answer lost: a 504 from the load balancer.
    Lost,
}

#[derive(Debug, Clone)]
pub struct FakeDroplet {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub ip: String,
    pub active_at: Instant,
    pub size: String,
    /// Shut down (DigitalOcean's status `off`).
    pub off: bool,
    /// Powers itself off then (a bake droplet, whose user-data ends in a poweroff).
    pub off_at: Option<Instant>,
    /// What `POST /v2/droplets` named as `image`: a slug (string) or a private image's id.
    pub image: Value,
}

impl FakeDroplet {
    fn json(&self) -> Value {
        let active = Instant::now() >= self.active_at;
        let v4 = if active {
            json!([{"ip_address": self.ip, "type": "public", "netmask": "255.255.255.0", "gateway": "127.0.0.1"}, {"ip_address": "10.10.0.5", "type": "private"}])
        } else {
            json!([])
        };
        let off = self.off || self.off_at.is_some_and(|t| Instant::now() >= t);
        let image = match &self.image {
            Value::Number(id) => {
                json!({"id": id, "slug": null, "distribution": "Ubuntu", "type": "snapshot"})
            }
            slug => {
                json!({"id": 129211873, "slug": slug, "distribution": "Ubuntu", "type": "base"})
            }
        };
        let status = match (off, active) {
            (true, _) => "off",
            (false, true) => "active",
            (false, false) => "new",
        };
        json!({
            "id": self.id, "name": self.name, "status": status,
            "created_at": self.created_at, "tags": self.tags, "size_slug": self.size,
            "region": {"slug": "nyc1", "name": "New York 1"}, "image": image,
            "networks": {"v4": v4, "v6": []}, "memory": 2048, "vcpus": 2
        })
    }
}

pub struct DoWorld {
    pub droplets: Vec<FakeDroplet>,
    pub next_id: u64,
    pub next_ip: u32,
    pub boot_after: Duration,
    pub page_max: usize,
    pub faults: VecDeque<DoFault>,
    /// Answers the next droplet creation instead of creating.
    pub create_fault: Option<DoFault>,
    pub creates: Vec<Value>,
    pub deletes: Vec<(u64, Vec<String>)>,
    /// The IP each deleted droplet had.
    pub deleted_ips: std::collections::HashMap<u64, String>,
    pub firewalls: Vec<Value>,
    pub tags: Vec<String>,
    /// Droplet actions taken: (droplet id, type).
    pub actions: Vec<(u64, String)>,
    /// A `shutdown` leaves the droplet running (its drain service waits for runs) until a test
    /// turns it `off`; otherwise it is `off` at once (nothing to wait for).
    pub hold_shutdown: bool,
    /// A `shutdown` completes (its action says so) but the droplet stays active: its guest
    /// ignored it.
    pub ignore_shutdown: bool,
    /// The next droplet action (`POST /v2/droplets/{id}/actions`) answers this status instead.
    pub action_fault: Option<u16>,
    /// Droplet actions other than snapshots, by action id: (action id, droplet id, type).
    pub action_log: Vec<(u64, u64, String)>,
    /// Private images (snapshots of droplets).
    pub images: Vec<FakeImage>,
    pub next_image_id: u64,
    /// Snapshot actions: each completes `snapshot_after` after it starts, and its image appears.
    pub snapshots: Vec<FakeSnapshot>,
    pub snapshot_after: Duration,
    /// How long after `active` a droplet with the bake user-data powers itself off.
    pub bake_after: Duration,
    pub image_deletes: Vec<u64>,
    /// `DELETE /v2/images/{id}` answers 403 (a token without `image:delete`).
    pub refuse_image_deletes: bool,
    /// A `snapshot` action answers 403 (a token without `image:create`).
    pub refuse_snapshots: bool,
    /// Each droplet's root filesystem as its monitoring agent reports it: (free, size) bytes.
    /// A droplet not here reports nothing (no agent): the metrics' result is empty.
    pub disks: std::collections::HashMap<u64, (u64, u64)>,
    /// DigitalOcean Kubernetes (`/v2/kubernetes/…`, tests/support/doks.rs).
    pub doks: super::doks::DoksWorld,
}

/// A private image as `GET /v2/images?private=true` returns it (the spec's Image model).
#[derive(Debug, Clone)]
pub struct FakeImage {
    pub id: u64,
    pub name: String,
    /// The droplet it is a snapshot of.
    pub droplet: u64,
    pub created_at: String,
    pub min_disk_size: u64,
    pub size_gigabytes: f64,
    pub tags: Vec<String>,
}

impl FakeImage {
    fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "type": "snapshot", "distribution": "Ubuntu",
               "slug": null, "public": false, "regions": ["nyc1"], "created_at": self.created_at,
               "min_disk_size": self.min_disk_size, "size_gigabytes": self.size_gigabytes,
               "description": "", "tags": self.tags, "status": "available", "error_message": ""})
    }

    /// As `GET /v2/droplets/{id}/snapshots` returns it (the spec's droplet_snapshot model).
    fn snapshot_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "type": "snapshot", "regions": ["nyc1"],
               "created_at": self.created_at, "min_disk_size": self.min_disk_size,
               "size_gigabytes": self.size_gigabytes})
    }
}

/// A snapshot action in flight or done.
#[derive(Debug, Clone)]
pub struct FakeSnapshot {
    pub action: u64,
    pub droplet: u64,
    pub name: String,
    pub started_at: String,
    pub done_at: Instant,
    pub done: bool,
}

/// The disk (GB) of a size in the fake's catalog.
fn disk_of(size: &str) -> u64 {
    sizes()
        .as_array()
        .and_then(|all| all.iter().find(|z| z["slug"] == size))
        .and_then(|z| z["disk"].as_u64())
        .unwrap_or(25)
}

impl DoWorld {
    /// Snapshot actions whose time has come complete, and their images appear.
    fn settle(&mut self) {
        let now = Instant::now();
        let mut made = Vec::new();
        for sn in self
            .snapshots
            .iter_mut()
            .filter(|s| !s.done && now >= s.done_at)
        {
            sn.done = true;
            made.push(sn.clone());
        }
        for sn in made {
            let disk = self
                .droplets
                .iter()
                .find(|d| d.id == sn.droplet)
                .map_or(25, |d| disk_of(&d.size));
            let id = self.next_image_id;
            self.next_image_id += 1;
            self.images.push(FakeImage {
                id,
                name: sn.name,
                droplet: sn.droplet,
                created_at: sn.started_at,
                min_disk_size: disk,
                size_gigabytes: 2.36,
                tags: Vec::new(),
            });
        }
    }

    /// A private image made earlier (outside this run).
    pub fn add_image(&mut self, name: &str, tags: &[&str], created_at: &str) -> u64 {
        let id = self.next_image_id;
        self.next_image_id += 1;
        self.images.push(FakeImage {
            id,
            name: name.into(),
            droplet: 0,
            created_at: created_at.into(),
            min_disk_size: 25,
            size_gigabytes: 2.36,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
        id
    }
}

/// A few of DigitalOcean's sizes as `GET /v2/sizes` returns them (memory in MB).
/// `GET /v2/images?type=distribution`: a few of DigitalOcean's distribution images.
const DISTRIBUTIONS: [(&str, &str); 3] = [
    ("ubuntu-24-04-x64", "24.04 (LTS) x64"),
    ("ubuntu-22-04-x64", "22.04 (LTS) x64"),
    ("debian-12-x64", "12 x64"),
];

pub fn sizes() -> Value {
    let size = |slug: &str, vcpus: u32, memory: u32, disk: u32, price: f64| {
        json!({"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": 2.0,
               "price_monthly": price, "price_hourly": price / 730.0,
               "regions": CATALOG_REGIONS, "available": true,
               "description": "Basic"})
    };
    json!([
        size("s-1vcpu-1gb", 1, 1024, 25, 6.0),
        size("s-2vcpu-2gb", 2, 2048, 60, 18.0),
        size("s-2vcpu-4gb", 2, 4096, 80, 24.0),
        size("s-4vcpu-8gb", 4, 8192, 160, 48.0),
        size("c-4", 4, 8192, 50, 84.0),
        size("s-8vcpu-16gb", 8, 16384, 320, 96.0),
    ])
}

/// The sizes the fake offers (slug, vCPUs, MB), in every region of `CATALOG_REGIONS`.
pub const CATALOG_SIZES: [(&str, u32, u64); 4] = [
    ("s-1vcpu-1gb", 1, 1024),
    ("s-2vcpu-2gb", 2, 2048),
    ("s-2vcpu-4gb", 2, 4096),
    ("s-4vcpu-8gb", 4, 8192),
];
pub const CATALOG_REGIONS: [&str; 3] = ["nyc1", "fra1", "ams3"];

pub struct FakeDo {
    pub server: FakeServer,
    pub world: Arc<Mutex<DoWorld>>,
}

fn query(path: &str, key: &str) -> Option<String> {
    path.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn error(status: u16, id: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"id": id, "message": message, "request_id": "4f2d0e9c-7d4e-4c57-9d1a-5f3f2f1d0c11"}),
    )
}

impl FakeDo {
    pub fn start() -> FakeDo {
        let world = Arc::new(Mutex::new(DoWorld {
            droplets: Vec::new(),
            next_id: 5000,
            next_ip: 10,
            boot_after: Duration::ZERO,
            page_max: 200,
            faults: VecDeque::new(),
            create_fault: None,
            creates: Vec::new(),
            deletes: Vec::new(),
            deleted_ips: Default::default(),
            firewalls: Vec::new(),
            tags: Vec::new(),
            actions: Vec::new(),
            hold_shutdown: false,
            ignore_shutdown: false,
            action_fault: None,
            action_log: Vec::new(),
            images: Vec::new(),
            next_image_id: 170_000_000,
            snapshots: Vec::new(),
            snapshot_after: Duration::ZERO,
            bake_after: Duration::ZERO,
            image_deletes: Vec::new(),
            refuse_image_deletes: false,
            refuse_snapshots: false,
            disks: Default::default(),
            doks: Default::default(),
        }));
        let w = Arc::clone(&world);
        let addr_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let addr_for_handler = Arc::clone(&addr_cell);
        let server = FakeServer::start(
            loopback(),
            Box::new(move |req: &Seen| {
                if req.header("authorization") != Some(&format!("Bearer {DO_TOKEN}")) {
                    return error(401, "unauthorized", "Unable to authenticate you.");
                }
                let mut world = w.lock().unwrap();
                world.settle();
                let creating = req.method == "POST"
                    && (req.path == "/v2/droplets"
                        || req.path == "/v2/kubernetes/clusters"
                        || req.path.ends_with("/node_pools"));
                let fault = match world.create_fault.take() {
                    Some(f) if creating => Some(f),
                    other => {
                        world.create_fault = other;
                        world.faults.pop_front()
                    }
                };
                let lost = matches!(fault, Some(DoFault::Lost));
                if let Some(f) = fault.filter(|_| !lost) {
                    return match f {
                        DoFault::RateLimit => {
                            error(429, "too_many_requests", "API rate limit exceeded.")
                                .with_header("ratelimit-limit", "5000")
                                .with_header("ratelimit-remaining", "0")
                                .with_header("retry-after", "1")
                        }
                        DoFault::Slow(d) => {
                            drop(world);
                            std::thread::sleep(d);
                            return error(503, "service_unavailable", "slow and then gave up");
                        }
                        DoFault::Truncated => Reply::json(200, json!({}))
                            .with_body("{\"droplets\": [{\"id\": 1, \"na"),
                        DoFault::Html => Reply::text(
                            502,
                            "<html><head><title>502 Bad Gateway</title></head></html>",
                        ),
                        DoFault::Status(code) => error(
                            code,
                            "server_error",
                            "Server was unable to give you a response.",
                        ),
                        DoFault::Unprocessable(m) => error(422, "unprocessable_entity", m),
                        DoFault::Lost => unreachable!(),
                    };
                }
                let path = req.path.clone();
                let route = path.split('?').next().unwrap_or("").to_string();
                let base = addr_for_handler.lock().unwrap().clone();
                match (req.method.as_str(), route.as_str()) {
                    (_, r) if r.starts_with("/v2/kubernetes/") => {
                        let reply = super::doks::route(&mut world.doks, req, &base);
                        if lost {
                            return error(504, "gateway_timeout", "The gateway timed out.");
                        }
                        reply
                    }
                    ("GET", "/v2/account") => Reply::json(
                        200,
                        json!({"account": {"uuid": "u1", "email": "ops@example.com", "status": "active", "droplet_limit": 25}}),
                    ),
                    ("GET", "/v2/droplets") => {
                        let tag = query(&path, "tag_name").unwrap_or_default();
                        let page: usize = query(&path, "page")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(1);
                        let per_page: usize = query(&path, "per_page")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(20)
                            .clamp(1, 200)
                            .min(world.page_max);
                        let matching: Vec<Value> = world
                            .droplets
                            .iter()
                            .filter(|d| tag.is_empty() || d.tags.contains(&tag))
                            .map(FakeDroplet::json)
                            .collect();
                        let total = matching.len();
                        let slice: Vec<Value> = matching
                            .into_iter()
                            .skip((page - 1) * per_page)
                            .take(per_page)
                            .collect();
                        let mut links = json!({});
                        if page * per_page < total {
                            links = json!({"pages": {"next": format!("http://{base}/v2/droplets?page={}&per_page={per_page}&tag_name={tag}", page + 1), "last": format!("http://{base}/v2/droplets?page={}", total.div_ceil(per_page))}});
                        }
                        Reply::json(
                            200,
                            json!({"droplets": slice, "links": links, "meta": {"total": total}}),
                        )
                        .with_header("ratelimit-limit", "5000")
                        .with_header("ratelimit-remaining", "4999")
                    }
                    ("POST", "/v2/droplets") => {
                        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        // `image` is a slug or a private image's numeric id (oneOf string|integer).
                        let image = body["image"].clone();
                        if let Some(id) = image.as_u64() {
                            let disk = disk_of(body["size"].as_str().unwrap_or_default());
                            match world.images.iter().find(|i| i.id == id) {
                                None => {
                                    return error(
                                        422,
                                        "unprocessable_entity",
                                        "You specified an invalid image for Droplet creation.",
                                    )
                                }
                                Some(i) if i.min_disk_size > disk => {
                                    return error(
                                        422,
                                        "unprocessable_entity",
                                        "This size is not available because it has a smaller disk than the image.",
                                    )
                                }
                                Some(_) => {}
                            }
                        } else if image.as_str().unwrap_or("").is_empty() {
                            return error(422, "unprocessable_entity", "image is required");
                        }
                        for field in ["name", "region", "size"] {
                            if body[field].as_str().unwrap_or("").is_empty() {
                                return error(
                                    422,
                                    "unprocessable_entity",
                                    &format!("{field} is required"),
                                );
                            }
                        }
                        if body["user_data"].as_str().map(str::len).unwrap_or(0) > 64 * 1024 {
                            return error(422, "unprocessable_entity", "user_data is too long");
                        }
                        world.creates.push(body.clone());
                        let id = world.next_id;
                        world.next_id += 1;
                        let ip = loopback_ip(world.next_ip);
                        world.next_ip += 1;
                        let d = FakeDroplet {
                            id,
                            name: body["name"].as_str().unwrap().to_string(),
                            tags: body["tags"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|t| t.as_str().map(str::to_string))
                                        .collect()
                                })
                                .unwrap_or_default(),
                            created_at: chrono::Utc::now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            ip,
                            active_at: Instant::now() + world.boot_after,
                            size: body["size"].as_str().unwrap_or_default().to_string(),
                            off: false,
                            off_at: body["user_data"]
                                .as_str()
                                .is_some_and(|u| u.contains("ops-bake-seal"))
                                .then(|| Instant::now() + world.boot_after + world.bake_after),
                            image,
                        };
                        let mut new = d.json();
                        new["status"] = json!("new");
                        new["networks"] = json!({"v4": [], "v6": []});
                        world.droplets.push(d);
                        if lost {
                            return error(504, "gateway_timeout", "The gateway timed out.");
                        }
                        Reply::json(
                            202,
                            json!({"droplet": new, "links": {"actions": [{"id": 1, "rel": "create", "href": format!("http://{base}/v2/actions/1")}]}}),
                        )
                    }
                    ("GET", "/v2/sizes") => {
                        let all = sizes();
                        Reply::json(
                            200,
                            json!({"sizes": all, "links": {}, "meta": {"total": all.as_array().map_or(0, Vec::len)}}),
                        )
                    }
                    ("POST", r) if r.starts_with("/v2/droplets/") && r.ends_with("/actions") => {
                        let id: u64 = r
                            .trim_start_matches("/v2/droplets/")
                            .trim_end_matches("/actions")
                            .parse()
                            .unwrap_or(0);
                        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        let kind = body["type"].as_str().unwrap_or_default().to_string();
                        if !["shutdown", "power_off", "power_on", "snapshot", "reboot"]
                            .contains(&kind.as_str())
                        {
                            return error(
                                422,
                                "unprocessable_entity",
                                "type is not a valid action",
                            );
                        }
                        if kind == "snapshot" && world.refuse_snapshots {
                            return error(
                                403,
                                "forbidden",
                                "You are not authorized to perform this operation",
                            );
                        }
                        if let Some(code) = world.action_fault.take() {
                            return error(
                                code,
                                "server_error",
                                "Server was unable to give you a response.",
                            );
                        }
                        let hold = world.hold_shutdown || world.ignore_shutdown;
                        let Some(d) = world.droplets.iter_mut().find(|d| d.id == id) else {
                            return error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            );
                        };
                        if kind == "power_off" || (kind == "shutdown" && !hold) {
                            d.off = true;
                        }
                        world.actions.push((id, kind.clone()));
                        let started_at =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        let mut action = 36804636 + world.action_log.len() as u64;
                        if kind != "snapshot" {
                            world.action_log.push((action, id, kind.clone()));
                        }
                        if kind == "snapshot" {
                            action = 40000000 + world.snapshots.len() as u64;
                            let done_at = Instant::now() + world.snapshot_after;
                            world.snapshots.push(FakeSnapshot {
                                action,
                                droplet: id,
                                name: body["name"].as_str().unwrap_or("snapshot").to_string(),
                                started_at: started_at.clone(),
                                done_at,
                                done: false,
                            });
                        }
                        Reply::json(
                            201,
                            json!({"action": {"id": action, "status": "in-progress", "type": kind,
                                   "started_at": started_at,
                                   "completed_at": null, "resource_id": id, "resource_type": "droplet",
                                   "region": {"slug": "nyc1"}, "region_slug": "nyc1"}}),
                        )
                    }
                    ("POST", r) if r.starts_with("/v2/tags/") && r.ends_with("/resources") => {
                        let tag = r
                            .trim_start_matches("/v2/tags/")
                            .trim_end_matches("/resources")
                            .to_string();
                        if !world.tags.contains(&tag) {
                            return error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            );
                        }
                        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        let Some(list) = body["resources"].as_array() else {
                            return error(422, "unprocessable_entity", "resources is required");
                        };
                        for res in list {
                            // The spec's resource_id is a string.
                            let Some(rid) = res["resource_id"].as_str() else {
                                return error(
                                    422,
                                    "unprocessable_entity",
                                    "resource_id must be a string",
                                );
                            };
                            let rid: u64 = rid.parse().unwrap_or(0);
                            let tags = match res["resource_type"].as_str() {
                                Some("droplet") => world
                                    .droplets
                                    .iter_mut()
                                    .find(|d| d.id == rid)
                                    .map(|d| &mut d.tags),
                                Some("image") => world
                                    .images
                                    .iter_mut()
                                    .find(|i| i.id == rid)
                                    .map(|i| &mut i.tags),
                                _ => {
                                    return error(
                                        422,
                                        "unprocessable_entity",
                                        "resource_type is not valid",
                                    )
                                }
                            };
                            if let Some(tags) = tags.filter(|t| !t.contains(&tag)) {
                                tags.push(tag.clone());
                            }
                        }
                        Reply::text(204, "")
                    }
                    ("GET", "/v2/regions") => {
                        let sizes: Vec<&str> = CATALOG_SIZES.iter().map(|s| s.0).collect();
                        let regions: Vec<Value> = CATALOG_REGIONS
                            .iter()
                            .map(|slug| json!({"name": slug.to_uppercase(), "slug": slug, "features": ["backups", "ipv6", "metadata"], "available": true, "sizes": sizes}))
                            .collect();
                        Reply::json(
                            200,
                            json!({"regions": regions, "links": {}, "meta": {"total": CATALOG_REGIONS.len()}}),
                        )
                    }
                    ("GET", "/v2/images")
                        if query(&path, "type").as_deref() == Some("distribution") =>
                    {
                        let list: Vec<Value> = DISTRIBUTIONS
                            .iter()
                            .enumerate()
                            .map(|(i, (slug, name))| json!({"id": 129211873 + i, "name": name, "distribution": "Ubuntu", "slug": slug, "public": true, "regions": CATALOG_REGIONS, "created_at": "2024-04-24T18:25:31Z", "type": "base", "min_disk_size": 7, "size_gigabytes": 2.23, "description": name, "tags": [], "status": "available", "error_message": ""}))
                            .collect();
                        Reply::json(
                            200,
                            json!({"images": list, "links": {}, "meta": {"total": list.len()}}),
                        )
                    }
                    ("GET", "/v2/images") => {
                        let tag = query(&path, "tag_name").unwrap_or_default();
                        if query(&path, "private").as_deref() != Some("true") {
                            return error(
                                400,
                                "bad_request",
                                "the fake serves private images only",
                            );
                        }
                        let list: Vec<Value> = world
                            .images
                            .iter()
                            .filter(|i| tag.is_empty() || i.tags.contains(&tag))
                            .map(FakeImage::json)
                            .collect();
                        Reply::json(
                            200,
                            json!({"images": list, "links": {}, "meta": {"total": list.len()}}),
                        )
                    }
                    ("DELETE", r) if r.starts_with("/v2/images/") && world.refuse_image_deletes => {
                        error(
                            403,
                            "forbidden",
                            "You are not authorized to perform this operation",
                        )
                    }
                    ("DELETE", r) if r.starts_with("/v2/images/") => {
                        let id: u64 = r.trim_start_matches("/v2/images/").parse().unwrap_or(0);
                        match world.images.iter().position(|i| i.id == id) {
                            Some(n) => {
                                world.images.remove(n);
                                world.image_deletes.push(id);
                                Reply::text(204, "")
                            }
                            None => error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            ),
                        }
                    }
                    ("GET", r) if r.starts_with("/v2/actions/") => {
                        let id: u64 = r.trim_start_matches("/v2/actions/").parse().unwrap_or(0);
                        // A shutdown is in progress until the droplet is off (or gone), unless
                        // the guest ignored it: then it completed and the droplet is active.
                        if let Some((_, droplet, kind)) =
                            world.action_log.iter().find(|a| a.0 == id).cloned()
                        {
                            let on = world.droplets.iter().any(|d| d.id == droplet && !d.off);
                            let done = kind != "shutdown" || !on || world.ignore_shutdown;
                            return Reply::json(
                                200,
                                json!({"action": {"id": id, "status": if done { "completed" } else { "in-progress" },
                                       "type": kind, "resource_id": droplet, "resource_type": "droplet",
                                       "region_slug": "nyc1"}}),
                            );
                        }
                        match world.snapshots.iter().find(|s| s.action == id) {
                            Some(sn) => Reply::json(
                                200,
                                json!({"action": {"id": id, "status": if sn.done { "completed" } else { "in-progress" },
                                       "type": "snapshot", "started_at": sn.started_at,
                                       "resource_id": sn.droplet, "resource_type": "droplet", "region_slug": "nyc1"}}),
                            ),
                            None => error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            ),
                        }
                    }
                    ("GET", r) if r.starts_with("/v2/droplets/") && r.ends_with("/actions") => {
                        let id: u64 = r
                            .trim_start_matches("/v2/droplets/")
                            .trim_end_matches("/actions")
                            .parse()
                            .unwrap_or(0);
                        let Some(d) = world.droplets.iter().find(|d| d.id == id) else {
                            return error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            );
                        };
                        let action = |id: u64, kind: &str, at: &str| {
                            json!({"id": id, "status": "completed", "type": kind, "started_at": at,
                                   "completed_at": at, "resource_id": d.id, "resource_type": "droplet",
                                   "region": {"slug": "nyc1", "name": "New York 1"}, "region_slug": "nyc1"})
                        };
                        let mut all = vec![action(36804600 + id, "create", &d.created_at)];
                        let mut snaps = world.snapshots.iter().filter(|s| s.droplet == id);
                        for (i, (_, kind)) in
                            world.actions.iter().filter(|(on, _)| *on == id).enumerate()
                        {
                            let n = match kind.as_str() {
                                "snapshot" => snaps.next().map_or(0, |s| s.action),
                                _ => 36900000 + i as u64,
                            };
                            all.push(action(n, kind, &d.created_at));
                        }
                        let total = all.len();
                        Reply::json(
                            200,
                            json!({"actions": all, "links": {}, "meta": {"total": total}}),
                        )
                    }
                    ("GET", r) if r.starts_with("/v2/droplets/") && r.ends_with("/snapshots") => {
                        let id: u64 = r
                            .trim_start_matches("/v2/droplets/")
                            .trim_end_matches("/snapshots")
                            .parse()
                            .unwrap_or(0);
                        let list: Vec<Value> = world
                            .images
                            .iter()
                            .filter(|i| i.droplet == id)
                            .map(FakeImage::snapshot_json)
                            .collect();
                        Reply::json(
                            200,
                            json!({"snapshots": list, "links": {}, "meta": {"total": list.len()}}),
                        )
                    }
                    ("GET", r) if r.starts_with("/v2/images/") => {
                        let key = r.trim_start_matches("/v2/images/");
                        if let Some(i) = key
                            .parse::<u64>()
                            .ok()
                            .and_then(|id| world.images.iter().find(|i| i.id == id))
                        {
                            return Reply::json(200, json!({"image": i.json()}));
                        }
                        match key {
                            "ubuntu-24-04-x64" => Reply::json(
                                200,
                                json!({"image": {"id": 129211873, "name": "24.04 (LTS) x64", "distribution": "Ubuntu", "slug": "ubuntu-24-04-x64", "public": true, "regions": CATALOG_REGIONS, "created_at": "2024-04-24T18:25:31Z", "type": "base", "min_disk_size": 7, "size_gigabytes": 2.23, "description": "Ubuntu 24.04 (LTS) x64", "tags": [], "status": "available", "error_message": ""}}),
                            ),
                            _ => error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            ),
                        }
                    }
                    ("GET", "/v2/account/keys") => Reply::json(
                        200,
                        json!({"ssh_keys": [{"id": 289794, "fingerprint": "3b:16:e4:bf:8b:00:8b:b8:59:8c:a9:d3:f0:19:fa:45", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example", "name": "ops laptop"}], "links": {}, "meta": {"total": 1}}),
                    ),
                    ("GET", r) if r.starts_with("/v2/droplets/") => {
                        let id: u64 = r.trim_start_matches("/v2/droplets/").parse().unwrap_or(0);
                        match world.droplets.iter().find(|d| d.id == id) {
                            Some(d) => Reply::json(200, json!({"droplet": d.json()})),
                            None => error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            ),
                        }
                    }
                    ("DELETE", r) if r.starts_with("/v2/droplets/") => {
                        let id: u64 = r.trim_start_matches("/v2/droplets/").parse().unwrap_or(0);
                        match world.droplets.iter().position(|d| d.id == id) {
                            Some(i) => {
                                let d = world.droplets.remove(i);
                                world.deleted_ips.insert(d.id, d.ip.clone());
                                world.deletes.push((d.id, d.tags));
                                Reply::text(204, "")
                            }
                            None => error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            ),
                        }
                    }
                    ("POST", "/v2/tags") => {
                        let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        world
                            .tags
                            .push(body["name"].as_str().unwrap_or_default().to_string());
                        Reply::json(201, json!({"tag": {"name": body["name"]}}))
                    }
                    ("GET", "/v2/firewalls") => Reply::json(
                        200,
                        json!({"firewalls": world.firewalls, "links": {}, "meta": {"total": world.firewalls.len()}}),
                    ),
                    ("POST", "/v2/firewalls") => {
                        let mut body: Value =
                            serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        body["id"] = json!(format!("fw-{}", world.firewalls.len() + 1));
                        body["status"] = json!("waiting");
                        world.firewalls.push(body.clone());
                        Reply::json(202, json!({"firewall": body}))
                    }
                    ("PUT", r) if r.starts_with("/v2/firewalls/") => {
                        let id = r.trim_start_matches("/v2/firewalls/").to_string();
                        let mut body: Value =
                            serde_json::from_str(&req.body).unwrap_or(Value::Null);
                        body["id"] = json!(id);
                        match world.firewalls.iter_mut().find(|f| f["id"] == json!(id)) {
                            Some(f) => {
                                *f = body.clone();
                                Reply::json(200, json!({"firewall": body}))
                            }
                            None => error(
                                404,
                                "not_found",
                                "The resource you requested could not be found.",
                            ),
                        }
                    }
                    ("GET", r) if r.starts_with("/v2/monitoring/metrics/droplet/") => {
                        filesystem_metric(&world, r, &path)
                    }
                    _ => error(
                        404,
                        "not_found",
                        "The resource you requested could not be found.",
                    ),
                }
            }),
        );
        *addr_cell.lock().unwrap() = server.addr.clone();
        FakeDo { server, world }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut DoWorld) -> R) -> R {
        f(&mut self.world.lock().unwrap())
    }

    pub fn mutations(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    /// Requests for monitoring metrics (`/v2/monitoring/...`).
    pub fn metric_requests(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v2/monitoring/"))
            .count()
    }

    pub fn gets(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }

    /// A droplet created earlier (outside this run), active with an IP.
    pub fn insert(&self, name: &str, tags: &[&str], age: Duration) -> FakeDroplet {
        self.with(|w| {
            let d = FakeDroplet {
                id: w.next_id,
                name: name.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                created_at: (chrono::Utc::now() - chrono::Duration::from_std(age).unwrap())
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ip: loopback_ip(w.next_ip),
                active_at: Instant::now(),
                size: "s-2vcpu-2gb".into(),
                off: false,
                off_at: None,
                image: json!("ubuntu-24-04-x64"),
            };
            w.next_id += 1;
            w.next_ip += 1;
            w.droplets.push(d.clone());
            d
        })
    }
}

/// `GET /v2/monitoring/metrics/droplet/filesystem_{free,size}?host_id&start&end`: the spec's
/// Prometheus matrix (values are strings), one series per mounted filesystem as the agent
/// labels them (the EFI partition too), two samples a minute apart ending at `end`.
fn filesystem_metric(world: &DoWorld, route: &str, path: &str) -> Reply {
    let metric = route.trim_start_matches("/v2/monitoring/metrics/droplet/");
    if !["filesystem_free", "filesystem_size"].contains(&metric) {
        return error(
            404,
            "not_found",
            "The resource you requested could not be found.",
        );
    }
    let num = |k: &str| query(path, k).and_then(|v| v.parse::<i64>().ok());
    let (Some(host), Some(start), Some(end)) = (num("host_id"), num("start"), num("end")) else {
        return error(400, "bad_request", "host_id, start and end are required");
    };
    if start > end {
        return error(400, "bad_request", "start must be before end");
    }
    let result = match world.disks.get(&(host as u64)) {
        Some(&(free, size)) => {
            let root = if metric == "filesystem_free" {
                free
            } else {
                size
            };
            let efi = if metric == "filesystem_free" {
                99_000_000
            } else {
                109_000_000
            };
            let series = |device: &str, fstype: &str, mount: &str, v: u64| {
                json!({"metric": {"host_id": host.to_string(), "device": device, "fstype": fstype, "mountpoint": mount},
                       "values": [[end - 60, format!("{v}")], [end, format!("{v}")]]})
            };
            json!([
                series("/dev/vda15", "vfat", "/boot/efi", efi),
                series("/dev/vda1", "ext4", "/", root)
            ])
        }
        None => json!([]),
    };
    Reply::json(
        200,
        json!({"status": "success", "data": {"resultType": "matrix", "result": result}}),
    )
}

/// Fake supervisors: `/health` on `ip:port`, healthy or not, switchable; with `beating`, also
/// heartbeats to the webapp's database while healthy.
pub struct Supervisor {
    pub server: FakeServer,
    pub healthy: Arc<AtomicBool>,
    beat: Option<crate::support::webapp::Beating>,
}

impl Supervisor {
    pub fn serve(ip: &str, port: u16, healthy: bool) -> Supervisor {
        let flag = Arc::new(AtomicBool::new(healthy));
        let f = Arc::clone(&flag);
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let server = FakeServer::start_on(
            ip,
            port,
            Box::new(move |req: &Seen| {
                if req.path != "/health" {
                    return Reply::text(404, "Not found");
                }
                if f.load(Ordering::SeqCst) {
                    Reply::text(200, "OK")
                } else {
                    Reply::text(500, "unhealthy")
                }
            }),
        );
        Supervisor {
            server,
            healthy: flag,
            beat: None,
        }
    }

    /// Also heartbeat as `name` (its TRIGGER_WORKER_INSTANCE_NAME) while healthy.
    pub fn beating(mut self, webapp: &crate::support::webapp::Webapp, name: &str) -> Supervisor {
        self.beat = Some(crate::support::webapp::Beating::start(
            webapp.clone(),
            name.to_string(),
            Arc::clone(&self.healthy),
        ));
        self
    }

    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.server.requests().len()
    }
}

/// A port for a fake server the test binds later (a supervisor's health port is written into
/// jobs.yaml first). Taken below the kernel's ephemeral range (32768–60999 by default), where
/// every server bound to port 0 and every outgoing connection get theirs: a port handed out by
/// the kernel and let go could be taken by another test's connection before it was bound again
/// ("Address already in use", seen once in a full run). Each port is handed out once per test
/// process, and only if it binds now.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = u16::try_from(LOW + n).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The n-th address in 127/8 (n ≥ 1).
fn loopback_ip(n: u32) -> String {
    format!("127.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}
