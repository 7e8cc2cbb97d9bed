//! DigitalOcean API v2: droplets by tag (paginated), create, delete, get; firewalls and tags;
//! the account (token check). Errors carry DigitalOcean's `id`, `message` and `request_id`.

use std::time::Instant;

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clients::http::{Http, Refusal, Request, Response, Retry};
use crate::redact::Secret;

const SERVICE: &str = "DigitalOcean API";
pub const PER_PAGE: u32 = 200;

#[derive(Debug, Clone, Deserialize)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub size_slug: String,
    #[serde(default)]
    pub networks: Networks,
    #[serde(default)]
    pub region: Option<Slug>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Networks {
    #[serde(default)]
    pub v4: Vec<Address>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Address {
    pub ip_address: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Slug {
    #[serde(default)]
    pub slug: String,
}

impl Droplet {
    pub fn public_ipv4(&self) -> Option<&str> {
        self.networks
            .v4
            .iter()
            .find(|a| a.kind == "public")
            .map(|a| a.ip_address.as_str())
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Seconds since creation (0 when the timestamp is unreadable).
    pub fn age_secs(&self, now: chrono::DateTime<chrono::Utc>) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.created_at)
            .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0))
            .unwrap_or(0)
    }
}

/// One entry of `GET /v2/sizes` (memory in MB, disk in GB, price in USD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Size {
    pub slug: String,
    pub vcpus: u32,
    pub memory: u64,
    #[serde(default)]
    pub disk: u64,
    #[serde(default)]
    pub price_monthly: f64,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default = "available")]
    pub available: bool,
}

fn available() -> bool {
    true
}

/// A region (`GET /v2/regions`).
#[derive(Debug, Clone, Deserialize)]
pub struct Region {
    pub slug: String,
    #[serde(default)]
    pub available: bool,
    #[serde(default)]
    pub sizes: Vec<String>,
}

/// An image (`GET /v2/images/{id}`, `GET /v2/images?private=true`); `slug` is null for
/// snapshots and custom images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: u64,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub regions: Vec<String>,
    /// `NEW`, `available`, `pending`, `deleted`, `retired`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: String,
    /// The smallest droplet disk (GB) it can be made on.
    #[serde(default)]
    pub min_disk_size: Option<u64>,
    #[serde(default)]
    pub size_gigabytes: Option<f64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
}

/// A snapshot of one droplet (`GET /v2/droplets/{id}/snapshots`: the id is an integer there).
#[derive(Debug, Clone, Deserialize)]
pub struct DropletSnapshot {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub created_at: String,
}

/// A droplet action (`POST /v2/droplets/{id}/actions`, `GET /v2/actions/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    pub id: u64,
    /// `in-progress`, `completed`, `errored`.
    pub status: String,
    #[serde(default)]
    pub started_at: String,
    /// `create`, `snapshot`, `power_off`, `shutdown`, `power_on`, `reboot`, `rebuild` …
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// The image a droplet is made from: a public image's slug, or a private image's id.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ImageRef {
    Slug(String),
    Id(u64),
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Slug(s) => f.write_str(s),
            ImageRef::Id(id) => write!(f, "image {id}"),
        }
    }
}

/// A droplet's latest sample of a monitoring metric (`filesystem_free`, `filesystem_size`),
/// the root filesystem's when several are reported; `None`: no sample in the window.
pub fn latest_root_sample(body: &Value) -> Option<f64> {
    let series = body.pointer("/data/result")?.as_array()?;
    let root = series
        .iter()
        .find(|s| s.pointer("/metric/mountpoint").and_then(Value::as_str) == Some("/"))
        .or_else(|| series.first())?;
    let last = root["values"].as_array()?.last()?;
    last.get(1)?.as_str()?.parse().ok()
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// An SSH key of the account (`GET /v2/account/keys`).
#[derive(Debug, Clone, Deserialize)]
pub struct SshKey {
    pub id: u64,
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewDroplet {
    pub name: String,
    pub region: String,
    pub size: String,
    pub image: ImageRef,
    pub ssh_keys: Vec<String>,
    pub tags: Vec<String>,
    pub user_data: String,
    pub monitoring: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Firewall {
    #[serde(default, skip_serializing)]
    pub id: String,
    pub name: String,
    pub inbound_rules: Vec<Value>,
    pub outbound_rules: Vec<Value>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    id: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    request_id: Option<String>,
}

pub struct DigitalOcean<'a> {
    http: &'a Http,
    base: &'a str,
    token: &'a Secret,
    pub deadline: Instant,
    pub requests: std::cell::Cell<u32>,
}

impl<'a> DigitalOcean<'a> {
    pub fn new(http: &'a Http, base: &'a str, token: &'a Secret, deadline: Instant) -> Self {
        DigitalOcean {
            http,
            base,
            token,
            deadline,
            requests: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn send(
        &self,
        method: &'static str,
        path_and_query: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> anyhow::Result<Response> {
        let mut req = Request::new(SERVICE, method, format!("{}{path_and_query}", self.base))
            .header("authorization", format!("Bearer {}", self.token.expose()))
            .retry(retry);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.requests.set(self.requests.get() + 1);
        let resp = self.http.send(&req, self.deadline)?;
        if resp.ok() {
            return Ok(resp);
        }
        Err(self.error(method, path_and_query, &resp))
    }

    fn error(&self, method: &str, path: &str, resp: &Response) -> anyhow::Error {
        let path = path.split('?').next().unwrap_or(path);
        let parsed: Option<ErrorBody> = serde_json::from_str(&resp.body).ok();
        let request_id = parsed
            .as_ref()
            .and_then(|b| b.request_id.clone())
            .or_else(|| resp.header("x-request-id").map(str::to_string))
            .map(|r| format!(", request id {r}"))
            .unwrap_or_default();
        let message = match (resp.status, parsed) {
            (401, b) => format!(
                "DIGITALOCEAN_TOKEN was rejected: {} (create a token with read/write scope at cloud.digitalocean.com/account/api/tokens)",
                b.map(|b| b.message).unwrap_or_else(|| "unauthorized".into())
            ),
            (status, Some(b)) if !b.message.is_empty() => {
                format!("{SERVICE}: {method} {path} answered HTTP {status} {}: {}{request_id}", b.id, b.message)
            }
            (status, _) => format!("{SERVICE}: {method} {path} answered HTTP {status}: {}{request_id}", resp.snippet()),
        };
        Refusal::or_error(resp.status, message)
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, resp: &Response) -> anyhow::Result<T> {
        serde_json::from_str(&resp.body)
            .map_err(|e| anyhow!("{SERVICE}: unexpected answer ({e}): {}", resp.snippet()))
    }

    /// Every droplet carrying `tag`, following `links.pages.next` (one request per page).
    pub fn droplets_by_tag(&self, tag: &str) -> anyhow::Result<Vec<Droplet>> {
        #[derive(Deserialize)]
        struct Page {
            droplets: Vec<Droplet>,
            #[serde(default)]
            links: Option<Value>,
        }
        let mut out = Vec::new();
        let mut path = format!("/v2/droplets?tag_name={tag}&page=1&per_page={PER_PAGE}");
        for _ in 0..1000 {
            let page: Page = self.json(&self.send("GET", &path, None, Retry::Idempotent)?)?;
            out.extend(page.droplets);
            let next = page
                .links
                .as_ref()
                .and_then(|l| l.pointer("/pages/next"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            match next {
                // Follow the path and query only: the token never goes to another host.
                Some(url) => {
                    path = path_of(url)
                        .ok_or_else(|| anyhow!("{SERVICE}: unusable next-page link {url:?}"))?
                }
                None => return Ok(out),
            }
        }
        bail!("{SERVICE}: more than 1000 pages of droplets for tag {tag}")
    }

    pub fn droplet(&self, id: u64) -> anyhow::Result<Option<Droplet>> {
        #[derive(Deserialize)]
        struct One {
            droplet: Droplet,
        }
        match self.send(
            "GET",
            &format!("/v2/droplets/{id}"),
            None,
            Retry::Idempotent,
        ) {
            Ok(r) => Ok(Some(self.json::<One>(&r)?.droplet)),
            Err(e) if e.to_string().contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Never retried after a timeout or 5xx: the droplet may exist anyway; the next run lists
    /// by tag before creating again.
    pub fn create_droplet(&self, new: &NewDroplet) -> anyhow::Result<Droplet> {
        #[derive(Deserialize)]
        struct One {
            droplet: Droplet,
        }
        let body = serde_json::to_value(new)?;
        let resp = self.send("POST", "/v2/droplets", Some(&body), Retry::OnlyRateLimit)?;
        Ok(self.json::<One>(&resp)?.droplet)
    }

    pub fn delete_droplet(&self, id: u64) -> anyhow::Result<()> {
        match self.send(
            "DELETE",
            &format!("/v2/droplets/{id}"),
            None,
            Retry::Idempotent,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("HTTP 404") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn account(&self) -> anyhow::Result<Value> {
        let resp = self.send("GET", "/v2/account", None, Retry::Idempotent)?;
        self.json(&resp)
    }

    pub fn firewall_by_name(&self, name: &str) -> anyhow::Result<Option<Firewall>> {
        #[derive(Deserialize)]
        struct Page {
            firewalls: Vec<Firewall>,
            #[serde(default)]
            links: Option<Value>,
        }
        let mut path = format!("/v2/firewalls?page=1&per_page={PER_PAGE}");
        for _ in 0..100 {
            let page: Page = self.json(&self.send("GET", &path, None, Retry::Idempotent)?)?;
            if let Some(f) = page.firewalls.into_iter().find(|f| f.name == name) {
                return Ok(Some(f));
            }
            match page
                .links
                .as_ref()
                .and_then(|l| l.pointer("/pages/next"))
                .and_then(Value::as_str)
                .and_then(path_of)
            {
                Some(p) => path = p,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    pub fn create_firewall(&self, fw: &Firewall) -> anyhow::Result<()> {
        self.send(
            "POST",
            "/v2/firewalls",
            Some(&serde_json::to_value(fw)?),
            Retry::OnlyRateLimit,
        )
        .map(|_| ())
    }

    pub fn update_firewall(&self, id: &str, fw: &Firewall) -> anyhow::Result<()> {
        self.send(
            "PUT",
            &format!("/v2/firewalls/{id}"),
            Some(&serde_json::to_value(fw)?),
            Retry::Idempotent,
        )
        .map(|_| ())
    }

    pub fn create_tag(&self, name: &str) -> anyhow::Result<()> {
        match self.send(
            "POST",
            "/v2/tags",
            Some(&json!({ "name": name })),
            Retry::Idempotent,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("HTTP 422") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every item under `key` of a paginated listing, following `links.pages.next`.
    pub(crate) fn list_all<T: DeserializeOwned>(
        &self,
        first: &str,
        key: &str,
    ) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        let mut path = first.to_string();
        for _ in 0..100 {
            let mut page: Value =
                self.json(&self.send("GET", &path, None, Retry::Idempotent)?)?;
            let items: Vec<T> = serde_json::from_value(page[key].take())
                .map_err(|e| anyhow!("{SERVICE}: unexpected answer to GET {first} ({e})"))?;
            out.extend(items);
            match page
                .pointer("/links/pages/next")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .and_then(path_of)
            {
                Some(p) => path = p,
                None => return Ok(out),
            }
        }
        bail!("{SERVICE}: more than 100 pages from GET {first}")
    }

    /// `GET /v2/sizes`: every droplet size, with the regions that offer it.
    pub fn sizes(&self) -> anyhow::Result<Vec<Size>> {
        self.list_all(&format!("/v2/sizes?page=1&per_page={PER_PAGE}"), "sizes")
    }

    /// `GET /v2/regions`: every region, whether it takes new droplets, and its sizes.
    pub fn regions(&self) -> anyhow::Result<Vec<Region>> {
        self.list_all(
            &format!("/v2/regions?page=1&per_page={PER_PAGE}"),
            "regions",
        )
    }

    /// `GET /v2/images/{slug or id}`; `None` when DigitalOcean knows no such image.
    pub fn image(&self, slug_or_id: &str) -> anyhow::Result<Option<Image>> {
        #[derive(Deserialize)]
        struct One {
            image: Image,
        }
        let path = format!(
            "/v2/images/{}",
            crate::clients::http::percent_encode(slug_or_id)
        );
        match self.send("GET", &path, None, Retry::Idempotent) {
            Ok(r) => Ok(Some(self.json::<One>(&r)?.image)),
            Err(e) if e.to_string().contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/images?type=distribution`: the public distribution images (their slugs are what
    /// `SUPERVISOR_IMAGE` names).
    pub fn distribution_images(&self) -> anyhow::Result<Vec<Image>> {
        self.list_all(
            &format!("/v2/images?type=distribution&page=1&per_page={PER_PAGE}"),
            "images",
        )
    }

    /// `GET /v2/account/keys`: the SSH keys a droplet may be created with (10 requests a
    /// minute at most: doctor asks once).
    pub fn ssh_keys(&self) -> anyhow::Result<Vec<SshKey>> {
        self.list_all(
            &format!("/v2/account/keys?page=1&per_page={PER_PAGE}"),
            "ssh_keys",
        )
    }

    /// How many more droplets the account may have: `GET /v2/account`'s `droplet_limit` less
    /// the droplets it has (`GET /v2/droplets?per_page=1`, `meta.total`). Asked only to scale
    /// out by more than one.
    pub fn droplet_room(&self) -> anyhow::Result<usize> {
        let limit = self.account()?["account"]["droplet_limit"]
            .as_u64()
            .ok_or_else(|| anyhow!("{SERVICE}: GET /v2/account has no droplet_limit"))?;
        let page: Value = self.json(&self.send(
            "GET",
            "/v2/droplets?page=1&per_page=1",
            None,
            Retry::Idempotent,
        )?)?;
        let total = page["meta"]["total"].as_u64().unwrap_or(0);
        Ok(limit.saturating_sub(total) as usize)
    }

    /// `POST /v2/droplets/{id}/actions` with `{"type": kind}` (`shutdown`, `power_off`, …):
    /// 201 with the action. Not retried after a timeout (the action may have been taken).
    pub fn droplet_action(&self, id: u64, kind: &str) -> anyhow::Result<Action> {
        #[derive(Deserialize)]
        struct One {
            action: Action,
        }
        let resp = self.send(
            "POST",
            &format!("/v2/droplets/{id}/actions"),
            Some(&json!({ "type": kind })),
            Retry::OnlyRateLimit,
        )?;
        Ok(self.json::<One>(&resp)?.action)
    }

    /// Tags a droplet (`POST /v2/tags/{tag}/resources`, 204); the tag must exist.
    pub fn tag_droplet(&self, tag: &str, id: u64) -> anyhow::Result<()> {
        self.tag_resource(tag, id, "droplet")
    }

    /// Tags a private image (a droplet snapshot is an image: `resource_type` `image`).
    pub fn tag_image(&self, tag: &str, id: u64) -> anyhow::Result<()> {
        self.tag_resource(tag, id, "image")
    }

    fn tag_resource(&self, tag: &str, id: u64, kind: &str) -> anyhow::Result<()> {
        self.send(
            "POST",
            &format!("/v2/tags/{tag}/resources"),
            Some(&json!({"resources": [{"resource_id": id.to_string(), "resource_type": kind}]})),
            Retry::Idempotent,
        )
        .map(|_| ())
    }

    /// `POST /v2/droplets/{id}/actions` `{"type":"snapshot","name":…}`: the action (its
    /// `resource_id` is the droplet; the image is found by listing the droplet's snapshots).
    pub fn snapshot_droplet(&self, id: u64, name: &str) -> anyhow::Result<Action> {
        #[derive(Deserialize)]
        struct One {
            action: Action,
        }
        let resp = self.send(
            "POST",
            &format!("/v2/droplets/{id}/actions"),
            Some(&json!({"type": "snapshot", "name": name})),
            Retry::OnlyRateLimit,
        )?;
        Ok(self.json::<One>(&resp)?.action)
    }

    /// `GET /v2/actions/{id}`; `None` when DigitalOcean knows no such action.
    pub fn action(&self, id: u64) -> anyhow::Result<Option<Action>> {
        #[derive(Deserialize)]
        struct One {
            action: Action,
        }
        match self.send("GET", &format!("/v2/actions/{id}"), None, Retry::Idempotent) {
            Ok(r) => Ok(Some(self.json::<One>(&r)?.action)),
            Err(e) if e.to_string().contains("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/droplets/{id}/actions`: every action taken on one droplet, by anyone.
    pub fn droplet_actions(&self, id: u64) -> anyhow::Result<Vec<Action>> {
        self.list_all(
            &format!("/v2/droplets/{id}/actions?page=1&per_page={PER_PAGE}"),
            "actions",
        )
    }

    /// `GET /v2/droplets/{id}/snapshots`: the snapshots taken of one droplet.
    pub fn droplet_snapshots(&self, id: u64) -> anyhow::Result<Vec<DropletSnapshot>> {
        self.list_all(
            &format!("/v2/droplets/{id}/snapshots?page=1&per_page={PER_PAGE}"),
            "snapshots",
        )
    }

    /// `GET /v2/images?private=true&tag_name=…`: our private images carrying `tag`.
    pub fn private_images(&self, tag: &str) -> anyhow::Result<Vec<Image>> {
        self.list_all(
            &format!("/v2/images?private=true&tag_name={tag}&page=1&per_page={PER_PAGE}"),
            "images",
        )
    }

    /// `DELETE /v2/images/{id}` (204); an image already gone is fine.
    pub fn delete_image(&self, id: u64) -> anyhow::Result<()> {
        match self.send(
            "DELETE",
            &format!("/v2/images/{id}"),
            None,
            Retry::Idempotent,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("HTTP 404") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/monitoring/metrics/droplet/{metric}?host_id&start&end` (Unix seconds): the
    /// latest sample of the root filesystem (see [`latest_root_sample`]).
    pub fn droplet_metric(
        &self,
        metric: &str,
        id: u64,
        start: i64,
        end: i64,
    ) -> anyhow::Result<Option<f64>> {
        let resp = self.send(
            "GET",
            &format!(
                "/v2/monitoring/metrics/droplet/{metric}?host_id={id}&start={start}&end={end}"
            ),
            None,
            Retry::Idempotent,
        )?;
        Ok(latest_root_sample(&self.json::<Value>(&resp)?))
    }
}

/// `/v2/droplets?page=2…` from an absolute or relative link.
fn path_of(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, r)) => &r[r.find('/')?..],
        None => url,
    };
    rest.starts_with("/v2/").then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_filesystems_latest_sample_is_read_from_the_matrix() {
        let body = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"host_id": "1", "device": "/dev/vdb", "mountpoint": "/data"}, "values": [[1, "5"]]},
            {"metric": {"host_id": "1", "device": "/dev/vda1", "mountpoint": "/"}, "values": [[1, "100.5"], [2, "90"]]}
        ]}});
        assert_eq!(latest_root_sample(&body), Some(90.0));
        let empty = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert_eq!(latest_root_sample(&empty), None);
    }

    #[test]
    fn next_links_keep_path_and_query_only() {
        assert_eq!(
            path_of("https://evil.example.com/v2/droplets?page=2&per_page=200").as_deref(),
            Some("/v2/droplets?page=2&per_page=200")
        );
        assert_eq!(
            path_of("/v2/droplets?page=3").as_deref(),
            Some("/v2/droplets?page=3")
        );
        assert_eq!(path_of("https://x/other"), None);
    }
}
