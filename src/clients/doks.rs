//! DigitalOcean Kubernetes (DOKS) through the DigitalOcean API v2, on the same plumbing as
//! the droplet calls (`clients/digitalocean.rs`: one token, its retries, deadline, rate-limit
//! handling and error bodies). The request bodies are checked against DigitalOcean's OpenAPI
//! (`specification/resources/kubernetes` in digitalocean/openapi) by the `do_openapi` tests.
//!
//! Scopes: `kubernetes:read` (options, clusters, pools, upgrades), `kubernetes:create` (a
//! cluster), `kubernetes:update` (pools), `kubernetes:access_cluster` (credentials).

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

use crate::clients::digitalocean::{DigitalOcean, PER_PAGE};
use crate::clients::http::{percent_encode, Refusal, Retry};
use crate::redact::Secret;

/// `GET /v2/kubernetes/options`: what a cluster may be made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    #[serde(default, deserialize_with = "null_as_default")]
    pub versions: Vec<Version>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub regions: Vec<OptionSlug>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub sizes: Vec<OptionSlug>,
}

/// A DOKS version: `slug` (`1.34.1-do.0`, what requests name) and the upstream
/// `kubernetes_version` (`1.34.1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub slug: String,
    #[serde(default)]
    pub kubernetes_version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub supported_features: Vec<String>,
}

impl Version {
    /// `(major, minor, patch, DigitalOcean revision)` read from the slug; `None` when the slug
    /// is not of the `1.34.1-do.0` form.
    pub fn key(&self) -> Option<(u32, u32, u32, u32)> {
        let (upstream, rev) = self.slug.split_once("-do.")?;
        let mut n = upstream.split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor, patch) = (n.next()??, n.next()??, n.next()??);
        if n.next().is_some() {
            return None;
        }
        Some((major, minor, patch, rev.parse().ok()?))
    }
}

/// A region or a node size in the options (`name`, `slug`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSlug {
    #[serde(default)]
    pub name: String,
    pub slug: String,
}

/// A cluster as `GET /v2/kubernetes/clusters[/{id}]` returns it (the spec's `cluster_read`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_pools: Vec<NodePool>,
    #[serde(default)]
    pub status: ClusterStatus,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub ha: Option<bool>,
    #[serde(default)]
    pub auto_upgrade: Option<bool>,
    #[serde(default)]
    pub surge_upgrade: Option<bool>,
    #[serde(default)]
    pub maintenance_policy: Option<MaintenancePolicy>,
    #[serde(default)]
    pub cluster_autoscaler_configuration: Option<AutoscalerConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    #[serde(default)]
    pub state: ClusterState,
    #[serde(default)]
    pub message: Option<String>,
}

/// `status.state` of a cluster; a state this version does not know is `Other`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    Running,
    Provisioning,
    Degraded,
    Error,
    Deleted,
    Upgrading,
    Deleting,
    #[default]
    #[serde(other)]
    Other,
}

/// A node pool as DigitalOcean returns it (the spec's `kubernetes_node_pool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePool {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub size: String,
    #[serde(default)]
    pub count: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub auto_scale: bool,
    #[serde(default)]
    pub min_nodes: u32,
    #[serde(default)]
    pub max_nodes: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<Node>,
}

/// A worker node (`name` is the Kubernetes Node's name once provisioned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: NodeStatus,
    #[serde(default)]
    pub droplet_id: String,
    #[serde(default)]
    pub created_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(default)]
    pub state: NodeState,
}

/// `provisioning`, `running`, `draining`, `deleting`; anything else is `Other`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Provisioning,
    Running,
    Draining,
    Deleting,
    #[default]
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// When disruptive maintenance may happen: `day` (`any`, `monday`…`sunday`) and `start_time`
/// (`HH:MM`, UTC). `duration` is read only (DigitalOcean sets it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenancePolicy {
    pub day: String,
    pub start_time: String,
    #[serde(default, skip_serializing)]
    pub duration: Option<String>,
}

/// The cluster autoscaler's settings DigitalOcean lets a cluster change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscalerConfig {
    /// How long a node must be unneeded before it is removed (Go duration, `10m0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_unneeded_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_utilization_threshold: Option<f64>,
}

/// `POST /v2/kubernetes/clusters`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewCluster {
    pub name: String,
    pub region: String,
    pub version: String,
    pub tags: Vec<String>,
    pub node_pools: Vec<NewNodePool>,
    pub maintenance_policy: MaintenancePolicy,
    pub auto_upgrade: bool,
    pub surge_upgrade: bool,
    /// Always sent: omitted, DigitalOcean's default is version-dependent (true from 1.36), and
    /// once on it cannot be turned off.
    pub ha: bool,
    pub cluster_autoscaler_configuration: AutoscalerConfig,
}

/// A node pool to create, in a new cluster or in an existing one
/// (`POST /v2/kubernetes/clusters/{id}/node_pools`): a size and the rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewNodePool {
    pub size: String,
    #[serde(flatten)]
    pub pool: NodePoolUpdate,
}

impl std::ops::Deref for NewNodePool {
    type Target = NodePoolUpdate;

    fn deref(&self) -> &NodePoolUpdate {
        &self.pool
    }
}

/// `PUT /v2/kubernetes/clusters/{id}/node_pools/{pool}`: everything but the size (which
/// DigitalOcean cannot change).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePoolUpdate {
    pub name: String,
    pub count: u32,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub auto_scale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_nodes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<u32>,
}

/// `GET /v2/kubernetes/clusters/{id}/credentials`: the API server, the CA to trust (and only
/// it), and a token until `expires_at`. Never printed: its `Debug` shows no secret.
#[derive(Clone)]
pub struct Credentials {
    pub server: String,
    /// Base64 of the PEM CA certificate.
    pub certificate_authority_data: String,
    pub token: Option<Secret>,
    /// Older clusters only (certificate-based, deprecated by DigitalOcean).
    pub client_certificate_data: Option<String>,
    pub client_key_data: Option<Secret>,
    pub expires_at: Option<String>,
}

/// The answer as sent; its secrets are wrapped (and registered for redaction) at once.
#[derive(Deserialize)]
struct RawCredentials {
    server: String,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

impl From<RawCredentials> for Credentials {
    fn from(r: RawCredentials) -> Credentials {
        let secret = |v: Option<String>| v.filter(|v| !v.is_empty()).map(Secret::new);
        Credentials {
            server: r.server,
            certificate_authority_data: r.certificate_authority_data.unwrap_or_default(),
            token: secret(r.token),
            client_certificate_data: r.client_certificate_data.filter(|v| !v.is_empty()),
            client_key_data: secret(r.client_key_data),
            expires_at: r.expires_at,
        }
    }
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawCredentials::deserialize(d).map(Credentials::from)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// When the token expires (Unix ms); `None` when the answer has no readable time.
    pub fn expires_ms(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(self.expires_at.as_deref()?)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The Kubernetes client's credentials: the cluster's CA as the only root, the token (or,
    /// on older clusters, the client certificate and key).
    pub fn for_api(&self) -> anyhow::Result<crate::clients::kubernetes::Credentials> {
        crate::clients::kubernetes::Credentials::from_data(
            &self.server,
            &self.certificate_authority_data,
            self.token.as_ref(),
            self.client_certificate_data.as_deref(),
            self.client_key_data.as_ref(),
        )
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Whether `key` is a cluster id (a UUID) rather than a name.
pub fn is_cluster_id(key: &str) -> bool {
    let parts: Vec<&str> = key.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `{"node_pool": …}`: the answer to a pool's create or update.
#[derive(Deserialize)]
struct OnePool {
    node_pool: NodePool,
}

/// Whether DigitalOcean answered with this status (a 4xx, typed as [`Refusal`]). Never read
/// from the error's text: a 422 or a 500 whose message merely quotes "HTTP 404" must not make
/// ops forget a cluster or a node pool.
fn answered(e: &anyhow::Error, status: u16) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Refusal>()
            .is_some_and(|r| r.status == status)
    })
}

fn not_found(e: &anyhow::Error) -> bool {
    answered(e, 404)
}

/// A 403 names the scope the token lacks.
fn scoped<T>(r: anyhow::Result<T>, scope: &str) -> anyhow::Result<T> {
    r.map_err(|e| {
        if answered(&e, 403) {
            e.context(format!(
                "DIGITALOCEAN_TOKEN lacks the scope {scope}: give the token the kubernetes scopes (read, create, update, access_cluster)"
            ))
        } else {
            e
        }
    })
}

/// `/v2/kubernetes/clusters/{id}` followed by `rest`.
fn cluster_path(cluster: &str, rest: &str) -> String {
    format!("/v2/kubernetes/clusters/{}{rest}", percent_encode(cluster))
}

impl DigitalOcean<'_> {
    /// A GET whose answer is `T`; a 403 names `scope`.
    fn read<T: serde::de::DeserializeOwned>(&self, path: &str, scope: &str) -> anyhow::Result<T> {
        let resp = scoped(self.send("GET", path, None, Retry::Idempotent), scope)?;
        self.json(&resp)
    }

    /// A POST or PUT of `body` whose answer is `T`.
    fn write<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: &impl Serialize,
        retry: Retry,
        scope: &str,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_value(body)?;
        let resp = scoped(self.send(method, path, Some(&body), retry), scope)?;
        self.json(&resp)
    }

    /// `GET /v2/kubernetes/options`.
    pub fn kubernetes_options(&self) -> anyhow::Result<Options> {
        #[derive(Deserialize)]
        struct Body {
            options: Options,
        }
        Ok(self
            .read::<Body>("/v2/kubernetes/options", "kubernetes:read")?
            .options)
    }

    /// Every cluster of the account (`GET /v2/kubernetes/clusters`, paginated).
    pub fn clusters(&self) -> anyhow::Result<Vec<Cluster>> {
        scoped(
            self.list_all(
                &format!("/v2/kubernetes/clusters?page=1&per_page={PER_PAGE}"),
                "kubernetes_clusters",
            ),
            "kubernetes:read",
        )
    }

    /// `GET /v2/kubernetes/clusters/{id}` (its node pools and their nodes included); `None`
    /// when DigitalOcean knows no such cluster.
    pub fn cluster(&self, id: &str) -> anyhow::Result<Option<Cluster>> {
        #[derive(Deserialize)]
        struct One {
            kubernetes_cluster: Cluster,
        }
        match self.read::<One>(&cluster_path(id, ""), "kubernetes:read") {
            Ok(one) => Ok(Some(one.kubernetes_cluster)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A cluster by id (one request) or by name (the listing); `None` when there is none.
    pub fn cluster_by_key(&self, key: &str) -> anyhow::Result<Option<Cluster>> {
        if is_cluster_id(key) {
            return self.cluster(key);
        }
        Ok(self.clusters()?.into_iter().find(|c| c.name == key))
    }

    /// `POST /v2/kubernetes/clusters` → 201 with the cluster, `provisioning`. Never retried
    /// after a timeout or 5xx: the cluster may exist anyway (the caller looks it up by name).
    pub fn create_cluster(&self, new: &NewCluster) -> anyhow::Result<Cluster> {
        #[derive(Deserialize)]
        struct One {
            kubernetes_cluster: Cluster,
        }
        let one: One = self.write(
            "POST",
            "/v2/kubernetes/clusters",
            new,
            Retry::OnlyRateLimit,
            "kubernetes:create",
        )?;
        Ok(one.kubernetes_cluster)
    }

    /// `GET /v2/kubernetes/clusters/{id}/node_pools`.
    pub fn node_pools(&self, cluster: &str) -> anyhow::Result<Vec<NodePool>> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "null_as_default")]
            node_pools: Vec<NodePool>,
        }
        let body: Body = self.read(&cluster_path(cluster, "/node_pools"), "kubernetes:read")?;
        Ok(body.node_pools)
    }

    /// `POST /v2/kubernetes/clusters/{id}/node_pools` → 201 with the pool. Not retried after a
    /// timeout (the pool may exist: the caller lists the pools by name before trying again).
    pub fn create_node_pool(&self, cluster: &str, new: &NewNodePool) -> anyhow::Result<NodePool> {
        let one: OnePool = self.write(
            "POST",
            &cluster_path(cluster, "/node_pools"),
            new,
            Retry::OnlyRateLimit,
            "kubernetes:update",
        )?;
        Ok(one.node_pool)
    }

    /// `PUT /v2/kubernetes/clusters/{id}/node_pools/{pool}` → 202 with the pool (a replace of
    /// the same values is harmless: retried).
    pub fn update_node_pool(
        &self,
        cluster: &str,
        pool: &str,
        update: &NodePoolUpdate,
    ) -> anyhow::Result<NodePool> {
        let path = cluster_path(cluster, &format!("/node_pools/{}", percent_encode(pool)));
        let one: OnePool =
            self.write("PUT", &path, update, Retry::Idempotent, "kubernetes:update")?;
        Ok(one.node_pool)
    }

    /// `DELETE /v2/kubernetes/clusters/{id}/node_pools/{pool}` → 204; DigitalOcean then drains
    /// and deletes its nodes. A pool already gone is fine. (There is deliberately no call that
    /// deletes a cluster.)
    pub fn delete_node_pool(&self, cluster: &str, pool: &str) -> anyhow::Result<()> {
        let path = cluster_path(cluster, &format!("/node_pools/{}", percent_encode(pool)));
        match scoped(
            self.send("DELETE", &path, None, Retry::Idempotent),
            "kubernetes:update",
        ) {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/kubernetes/clusters/{id}/credentials?expiry_seconds=N`: a token valid for
    /// `expiry_seconds` (DigitalOcean's default, for 0, is 7 days).
    pub fn credentials(&self, cluster: &str, expiry_seconds: u64) -> anyhow::Result<Credentials> {
        let path = cluster_path(
            cluster,
            &format!("/credentials?expiry_seconds={expiry_seconds}"),
        );
        let creds: Credentials = self.read(&path, "kubernetes:access_cluster")?;
        if creds.server.is_empty() {
            return Err(anyhow!(
                "DigitalOcean API: the credentials of cluster {cluster} name no API server (is it still provisioning?)"
            ));
        }
        Ok(creds)
    }

    /// `GET /v2/kubernetes/clusters/{id}/upgrades`: the versions the cluster may be upgraded to
    /// (`null` from DigitalOcean when it is up to date).
    pub fn available_upgrades(&self, cluster: &str) -> anyhow::Result<Vec<Version>> {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "null_as_default")]
            available_upgrade_versions: Vec<Version>,
        }
        let body: Body = self.read(&cluster_path(cluster, "/upgrades"), "kubernetes:read")?;
        Ok(body.available_upgrade_versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn not_found_is_the_answer_s_status_never_a_message_that_quotes_one() {
        let refused = |status, message: &str| Refusal::or_error(status, message.into());
        assert!(not_found(&refused(
            404,
            "DigitalOcean: GET … answered HTTP 404 not_found"
        )));
        assert!(not_found(
            &refused(404, "gone").context("reading the cluster")
        ));
        assert!(!not_found(&refused(
            422,
            "DigitalOcean: GET … answered HTTP 422 unprocessable_entity: upstream answered HTTP 404"
        )));
        assert!(!not_found(&refused(500, "a 500 that says HTTP 404")));
        assert!(!not_found(&anyhow!("connection reset after HTTP 404")));
    }

    #[test]
    fn version_slugs_order_by_upstream_version_then_revision() {
        let v = |s: &str| Version {
            slug: s.into(),
            kubernetes_version: String::new(),
            supported_features: vec![],
        };
        assert_eq!(v("1.34.1-do.0").key(), Some((1, 34, 1, 0)));
        assert!(v("1.34.10-do.0").key() > v("1.34.9-do.3").key());
        assert!(v("1.34.1-do.2").key() > v("1.34.1-do.1").key());
        assert_eq!(v("latest").key(), None);
        assert_eq!(v("1.34-do.0").key(), None);
    }

    #[test]
    fn a_cluster_reads_as_the_spec_shows_it_and_unknown_states_are_other() {
        let c: Cluster = serde_json::from_value(json!({
            "id": "bd5f5959-5e1e-4205-a714-a914373942af", "name": "prod", "region": "nyc1",
            "version": "1.34.1-do.0", "tags": null, "node_pools": [{
                "id": "cdda885e-7663-40c8-bc74-3a036c66545d", "name": "p", "size": "s-1vcpu-2gb",
                "count": 1, "labels": null, "taints": [], "auto_scale": false, "min_nodes": 0,
                "max_nodes": 0, "nodes": [{"id": "n", "name": "p-abc", "status": {"state": "running"},
                "droplet_id": "1", "created_at": "2018-11-15T16:00:11Z"}]}],
            "status": {"state": "hibernating"}, "maintenance_policy": null, "ha": false
        }))
        .unwrap();
        assert_eq!(c.status.state, ClusterState::Other);
        assert!(c.tags.is_empty() && c.node_pools[0].labels.is_empty());
        assert_eq!(c.node_pools[0].nodes[0].status.state, NodeState::Running);
    }

    #[test]
    fn credentials_never_show_their_token() {
        let c: Credentials = serde_json::from_value(json!({
            "server": "https://x.k8s.ondigitalocean.com", "certificate_authority_data": "",
            "token": "dok8s-secret-token-value", "expires_at": "2026-11-09T11:50:28.889080521Z"
        }))
        .unwrap();
        assert!(!format!("{c:?}").contains("dok8s-secret"));
        assert_eq!(
            c.expires_ms(),
            Some(
                chrono::DateTime::parse_from_rfc3339("2026-11-09T11:50:28.889Z")
                    .unwrap()
                    .timestamp_millis()
            )
        );
    }

    #[test]
    fn ids_are_uuids_and_anything_else_is_a_name() {
        assert!(is_cluster_id("bd5f5959-5e1e-4205-a714-a914373942af"));
        assert!(!is_cluster_id("prod-cluster-01"));
        assert!(!is_cluster_id("bd5f5959-5e1e-4205-a714-a914373942ag"));
    }

    #[test]
    fn ha_is_always_sent_and_pool_bounds_only_when_autoscaled() {
        let pool = NewNodePool {
            size: "s-2vcpu-2gb".into(),
            pool: NodePoolUpdate {
                name: "fixed".into(),
                count: 1,
                tags: vec![],
                labels: BTreeMap::new(),
                taints: vec![],
                auto_scale: false,
                min_nodes: None,
                max_nodes: None,
            },
        };
        let body = serde_json::to_value(NewCluster {
            name: "c".into(),
            region: "nyc1".into(),
            version: "1.34.1-do.0".into(),
            tags: vec![],
            node_pools: vec![pool],
            maintenance_policy: MaintenancePolicy {
                day: "sunday".into(),
                start_time: "04:00".into(),
                duration: Some("4h0m0s".into()),
            },
            auto_upgrade: false,
            surge_upgrade: true,
            ha: false,
            cluster_autoscaler_configuration: AutoscalerConfig {
                scale_down_unneeded_time: Some("10m0s".into()),
                scale_down_utilization_threshold: None,
            },
        })
        .unwrap();
        assert_eq!(body["ha"], json!(false));
        assert!(body["node_pools"][0].get("min_nodes").is_none());
        assert!(body["maintenance_policy"].get("duration").is_none());
    }
}
