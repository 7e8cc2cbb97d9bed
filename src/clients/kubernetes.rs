//! The Kubernetes API, the dozen calls ops needs: server-side apply (`fieldManager=ops`), GET,
//! LIST with label and field selectors (paginated), DELETE, a node's cordon, the server's
//! version. Plain HTTPS through `clients::http` (retries, deadline, rate limits, the address
//! guard, redaction); the cluster's CA is the only trusted root; a bearer token or a client
//! certificate authenticates. Errors are the API's `Status` objects, typed as [`ApiError`].
//!
//! Credentials come from DigitalOcean (a DOKS cluster's `…/credentials`) or from a kubeconfig
//! file ([`Credentials::from_kubeconfig`]): token and client-certificate users only; an exec
//! plugin or an auth provider is refused (ops runs no outside program for a credential).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clients::http::{percent_encode, Http, Request, Response, Retry};
use crate::redact::{redact, Secret};

pub const SERVICE: &str = "Kubernetes API";
/// The field manager of every apply: ops owns exactly the fields it sets.
pub const FIELD_MANAGER: &str = "ops";
/// Items per LIST page (`limit`); `continue` fetches the next.
pub const PAGE: u32 = 500;
const MAX_PAGES: u32 = 200;

/// Where the API server is and who ops is there.
#[derive(Clone)]
pub struct Credentials {
    /// `https://host[:port]`, no trailing slash.
    pub server: String,
    /// The cluster's CA (PEM), the only root trusted for the server's certificate.
    pub ca_pem: Vec<u8>,
    pub user: User,
}

#[derive(Clone)]
pub enum User {
    Token(Secret),
    /// A client certificate (PEM) and its key (PEM, secret).
    Certificate {
        cert_pem: Vec<u8>,
        key_pem: Secret,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = match self.user {
            User::Token(_) => "token",
            User::Certificate { .. } => "client certificate",
        };
        write!(f, "Credentials({}, {user})", self.server)
    }
}

/// The kinds of object ops reads or writes, with where the API serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Secret,
    Service,
    Pod,
    Node,
    Role,
    RoleBinding,
    NetworkPolicy,
    Deployment,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::Service,
        Kind::Pod,
        Kind::Node,
        Kind::Role,
        Kind::RoleBinding,
        Kind::NetworkPolicy,
        Kind::Deployment,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::Role => "Role",
            Kind::RoleBinding => "RoleBinding",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Deployment => "Deployment",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Role | Kind::RoleBinding => "rbac.authorization.k8s.io/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::Deployment => "apps/v1",
            _ => "v1",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Secret => "secrets",
            Kind::Service => "services",
            Kind::Pod => "pods",
            Kind::Node => "nodes",
            Kind::Role => "roles",
            Kind::RoleBinding => "rolebindings",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Deployment => "deployments",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// The kind an object names in `kind` and `apiVersion`.
    pub fn of(object: &Value) -> Option<Kind> {
        let (kind, api) = (object["kind"].as_str()?, object["apiVersion"].as_str()?);
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.api_version() == api)
    }

    /// The collection's path (`name` None) or one object's, URL-encoded.
    pub fn path(self, namespace: Option<&str>, name: Option<&str>) -> String {
        let root = match self.api_version() {
            "v1" => "/api/v1".to_string(),
            group => format!("/apis/{group}"),
        };
        let ns = match (self.namespaced(), namespace) {
            (true, Some(ns)) => format!("/namespaces/{}", percent_encode(ns)),
            _ => String::new(),
        };
        let one = name
            .map(|n| format!("/{}", percent_encode(n)))
            .unwrap_or_default();
        format!("{root}{ns}/{}{one}", self.plural())
    }
}

/// A `Status` the API answers with an error (`kind: Status`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub code: u16,
}

/// A refused call: the HTTP status and the API's `Status` (reason and message), redacted.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub method: &'static str,
    pub path: String,
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl ApiError {
    /// The credentials were refused (wrong or expired): DOKS credentials are fetched anew, once.
    pub fn unauthorized(&self) -> bool {
        self.code == 401
    }

    /// The object is not there (a node DigitalOcean lists that has not registered yet).
    pub fn not_found(&self) -> bool {
        self.code == 404
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = if self.message.is_empty() {
            self.reason.clone()
        } else {
            format!("{}: {}", self.reason, self.message)
        };
        let fix = match self.code {
            401 => " (the credentials were refused: on DOKS even fresh ones from DigitalOcean, fetched once this run: check the cluster in DigitalOcean; for kubeconfig: renew the user's token or certificate)",
            403 => " (the user may not do this: grant it in the cluster's RBAC, or use a user that may)",
            _ => "",
        };
        write!(
            f,
            "{SERVICE}: {} {} answered HTTP {} {}{fix}",
            self.method,
            self.path,
            self.code,
            redact(&why)
        )
    }
}

impl std::error::Error for ApiError {}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub resource_version: String,
    #[serde(default)]
    pub generation: i64,
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub managed_fields: Vec<ManagedFields>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFields {
    #[serde(default)]
    pub manager: String,
    #[serde(default)]
    pub operation: String,
    #[serde(default, rename = "fieldsV1")]
    pub fields_v1: Value,
}

/// A condition of a pod, node or deployment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub state: ContainerState,
    #[serde(default)]
    pub last_state: ContainerState,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerState {
    #[serde(default)]
    pub waiting: Option<StateDetail>,
    #[serde(default)]
    pub running: Option<Value>,
    #[serde(default)]
    pub terminated: Option<StateDetail>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDetail {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

impl Pod {
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }

    /// The scheduler's reason a pod waits for a node (`0/3 nodes are available: 3 Insufficient
    /// memory.`), when it said one.
    pub fn unschedulable(&self) -> Option<&str> {
        self.condition("PodScheduled")
            .filter(|c| c.status == "False")
            .and_then(|c| c.message.as_deref().or(c.reason.as_deref()))
    }

    pub fn ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Node {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeSpec {
    #[serde(default)]
    pub unschedulable: bool,
    #[serde(default)]
    pub taints: Vec<Taint>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeStatus {
    /// `cpu`, `memory`, `pods` as quantities (`3900m`, `6577Mi`).
    #[serde(default)]
    pub allocatable: BTreeMap<String, String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Node {
    pub fn ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deployment {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DeploymentSpec,
    #[serde(default)]
    pub status: DeploymentStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeploymentSpec {
    #[serde(default)]
    pub replicas: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub unavailable_replicas: i32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Deployment {
    /// The controller has seen the latest spec and every replica runs it and is available.
    pub fn rolled_out(&self) -> bool {
        let want = self.spec.replicas.unwrap_or(1);
        let s = &self.status;
        s.observed_generation >= self.metadata.generation
            && s.updated_replicas == want
            && s.available_replicas == want
            && s.replicas == want
            && s.unavailable_replicas == 0
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    #[serde(default)]
    pub major: String,
    #[serde(default)]
    pub minor: String,
    #[serde(default)]
    pub git_version: String,
}

/// Which objects a LIST returns: equality selectors (`app=task-run`,
/// `status.phase=Pending`), comma-joined as the API takes them.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub labels: Vec<(String, String)>,
    pub fields: Vec<(String, String)>,
}

impl Selector {
    pub fn label(mut self, key: &str, value: &str) -> Selector {
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn field(mut self, key: &str, value: &str) -> Selector {
        self.fields.push((key.into(), value.into()));
        self
    }

    fn query(&self) -> String {
        let join = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut q = String::new();
        if !self.labels.is_empty() {
            q.push_str(&format!(
                "&labelSelector={}",
                percent_encode(&join(&self.labels))
            ));
        }
        if !self.fields.is_empty() {
            q.push_str(&format!(
                "&fieldSelector={}",
                percent_encode(&join(&self.fields))
            ));
        }
        q
    }
}

/// A client for one cluster, bounded by the task's deadline; `requests` counts the calls made.
pub struct Kube {
    http: Http,
    server: String,
    bearer: Option<Secret>,
    pub deadline: Instant,
    pub requests: Cell<u32>,
}

impl Kube {
    pub fn new(creds: &Credentials, deadline: Instant) -> anyhow::Result<Kube> {
        let server = check_server(&creds.server)?;
        let ca = ureq::tls::Certificate::from_pem(&creds.ca_pem)
            .map_err(|e| anyhow!("{SERVICE}: the cluster's CA is not a PEM certificate ({e})"))?;
        let mut tls =
            ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]));
        let bearer = match &creds.user {
            User::Token(t) => Some(t.clone()),
            User::Certificate { cert_pem, key_pem } => {
                let chain: Vec<_> = ureq::tls::parse_pem(cert_pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if chain.is_empty() {
                    bail!("{SERVICE}: the client certificate is not a PEM certificate");
                }
                let key = ureq::tls::PrivateKey::from_pem(key_pem.expose().as_bytes())
                    .map_err(|_| anyhow!("{SERVICE}: the client key is not a PEM private key"))?;
                tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
                None
            }
        };
        Ok(Kube {
            http: Http::with_tls(tls.build(), Arc::new(connect_allowed)),
            server,
            bearer,
            deadline,
            requests: Cell::new(0),
        })
    }

    fn send(
        &self,
        method: &'static str,
        path_and_query: &str,
        body: Option<(&'static str, String)>,
        retry: Retry,
    ) -> anyhow::Result<Response> {
        let mut req = Request::new(SERVICE, method, format!("{}{path_and_query}", self.server))
            .header("accept", "application/json")
            .retry(retry);
        if let Some(token) = &self.bearer {
            req = req.header("authorization", format!("Bearer {}", token.expose()));
        }
        if let Some((content_type, body)) = body {
            req = req.header("content-type", content_type);
            req.body = Some(body);
        }
        self.requests.set(self.requests.get() + 1);
        let resp = self.http.send(&req, self.deadline)?;
        if resp.ok() {
            return Ok(resp);
        }
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        Err(api_error(method, path, &resp).into())
    }

    fn json<T: DeserializeOwned>(resp: &Response) -> anyhow::Result<T> {
        serde_json::from_str(&resp.body)
            .map_err(|e| anyhow!("{SERVICE}: unexpected answer ({e}): {}", resp.snippet()))
    }

    /// The API server's address (`https://host:port`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET /version`: the server's Kubernetes version (also a cheap credentials check).
    pub fn version(&self) -> anyhow::Result<Version> {
        Self::json(&self.send("GET", "/version", None, Retry::Idempotent)?)
    }

    /// Server-side apply: the object as ops wants it, merged by field ownership
    /// (`fieldManager=ops`, `force=true`: ops takes back the fields it sets). Returns the
    /// object as stored.
    pub fn apply(&self, object: &Value) -> anyhow::Result<Value> {
        let kind = Kind::of(object).ok_or_else(|| {
            anyhow!(
                "{SERVICE}: cannot apply an object of kind {} {}",
                object["apiVersion"],
                object["kind"]
            )
        })?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let ns = object["metadata"]["namespace"].as_str();
        if name.is_empty() || (kind.namespaced() && ns.is_none()) {
            bail!(
                "{SERVICE}: a {} to apply needs a name{}",
                kind.name(),
                if kind.namespaced() {
                    " and a namespace"
                } else {
                    ""
                }
            );
        }
        let path = format!(
            "{}?fieldManager={FIELD_MANAGER}&force=true",
            kind.path(ns, Some(name))
        );
        let body = ("application/apply-patch+yaml", object.to_string());
        // Applying the same object twice is the same as once: safe to retry.
        Self::json(&self.send("PATCH", &path, Some(body), Retry::Idempotent)?)
    }

    /// One object, `None` when it does not exist.
    pub fn get<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<Option<T>> {
        match self.send(
            "GET",
            &kind.path(namespace, Some(name)),
            None,
            Retry::Idempotent,
        ) {
            Ok(resp) => Self::json(&resp).map(Some),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of `kind` the selector picks (in `namespace`, or cluster-wide), following
    /// `metadata.continue` a page of [`PAGE`] at a time.
    pub fn list<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> anyhow::Result<Vec<T>> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(default, rename = "continue")]
            next: Option<String>,
        }
        #[derive(Deserialize)]
        struct List<T> {
            #[serde(default = "Vec::new")]
            items: Vec<T>,
            #[serde(default)]
            metadata: Option<ListMeta>,
        }
        let base = format!(
            "{}?limit={PAGE}{}",
            kind.path(namespace, None),
            selector.query()
        );
        let mut out = Vec::new();
        let mut path = base.clone();
        for _ in 0..MAX_PAGES {
            let page: List<T> = Self::json(&self.send("GET", &path, None, Retry::Idempotent)?)?;
            out.extend(page.items);
            match page.metadata.and_then(|m| m.next).filter(|c| !c.is_empty()) {
                Some(next) => path = format!("{base}&continue={}", percent_encode(&next)),
                None => return Ok(out),
            }
        }
        bail!(
            "{SERVICE}: more than {MAX_PAGES} pages of {}",
            kind.plural()
        )
    }

    /// Deletes one object (its dependents in the background). `false` when it was gone.
    pub fn delete(&self, kind: Kind, namespace: Option<&str>, name: &str) -> anyhow::Result<bool> {
        let body =
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"});
        let call = self.send(
            "DELETE",
            &kind.path(namespace, Some(name)),
            Some(("application/json", body.to_string())),
            Retry::Idempotent,
        );
        match call {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Marks a node unschedulable (`kubectl cordon`): no new pod lands there; running pods stay.
    pub fn cordon(&self, node: &str) -> anyhow::Result<Node> {
        self.schedulable(node, false)
    }

    /// Marks a node schedulable again (`kubectl uncordon`).
    pub fn uncordon(&self, node: &str) -> anyhow::Result<Node> {
        self.schedulable(node, true)
    }

    fn schedulable(&self, node: &str, yes: bool) -> anyhow::Result<Node> {
        let body = json!({"spec": {"unschedulable": !yes}}).to_string();
        let path = Kind::Node.path(None, Some(node));
        let resp = self.send(
            "PATCH",
            &path,
            Some(("application/merge-patch+json", body)),
            Retry::Idempotent,
        )?;
        Self::json(&resp)
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Deployment>> {
        self.get(Kind::Deployment, Some(namespace), name)
    }

    pub fn pods(&self, namespace: &str, selector: &Selector) -> anyhow::Result<Vec<Pod>> {
        self.list(Kind::Pod, Some(namespace), selector)
    }

    pub fn nodes(&self, selector: &Selector) -> anyhow::Result<Vec<Node>> {
        self.list(Kind::Node, None, selector)
    }
}

fn not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>().is_some_and(|a| a.code == 404)
}

/// The error for a non-2xx answer: the `Status` body when there is one.
pub fn api_error(method: &'static str, path: &str, resp: &Response) -> ApiError {
    let status: Option<Status> = serde_json::from_str(&resp.body).ok();
    let (reason, message) = match status {
        Some(s) if !s.reason.is_empty() || !s.message.is_empty() => (s.reason, s.message),
        _ => (String::new(), resp.snippet()),
    };
    ApiError {
        method,
        path: path.to_string(),
        code: resp.status,
        reason,
        message: crate::redact::redact_and_cut(&message, 300),
    }
}

/// The API server's URL as ops calls it: https only, no path, query or credentials.
fn check_server(server: &str) -> anyhow::Result<String> {
    let server = server.trim().trim_end_matches('/');
    let Some(rest) = server.strip_prefix("https://") else {
        bail!("{SERVICE}: the server {server:?} is not an https:// URL (ops talks to the API server over TLS only)");
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        bail!("{SERVICE}: the server {server:?} must be https://host[:port], without a path or credentials");
    }
    Ok(server.to_string())
}

/// Where the API server may be: anywhere but the link-local range (the metadata service,
/// 169.254.169.254) and addresses no server has. Private and loopback addresses are allowed:
/// a cluster's API server is often on one.
pub fn connect_allowed(scheme: &str, ips: &[IpAddr]) -> Result<(), String> {
    if scheme != "https" {
        return Err(format!("{SERVICE}: only https is allowed, not {scheme}"));
    }
    for ip in ips {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
            v4 => *v4,
        };
        let refused = match ip {
            IpAddr::V4(v4) => {
                v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.is_unspecified() || v6.is_multicast()
            }
        };
        if refused {
            return Err(format!(
                "{SERVICE}: the server resolves to {ip}, a link-local or unroutable address; ops never connects there"
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default, rename = "current-context")]
    current_context: String,
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: T,
}

#[derive(Deserialize)]
struct ClusterEntry {
    #[serde(default)]
    server: String,
    #[serde(default, rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(default, rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
    #[serde(default, rename = "insecure-skip-tls-verify")]
    insecure: bool,
}

#[derive(Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(default, rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(default, rename = "client-certificate")]
    cert_file: Option<PathBuf>,
    #[serde(default, rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(default, rename = "client-key")]
    key_file: Option<PathBuf>,
    #[serde(default)]
    exec: Option<Value>,
    #[serde(default, rename = "auth-provider")]
    auth_provider: Option<Value>,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

impl Credentials {
    /// The current context's cluster and user of a kubeconfig file. Relative file paths are
    /// relative to the file, as kubectl reads them.
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("kubeconfig {}: cannot read it", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse_kubeconfig(&text, dir)
            .map_err(|e| anyhow!("kubeconfig {}: {e}", path.display()))
    }

    /// Credentials given as a kubeconfig's `*-data` fields are (base64 of PEM), as DigitalOcean's
    /// `GET /v2/kubernetes/clusters/{id}/credentials` gives them: a token when there is one, else
    /// the client certificate and key.
    pub fn from_data(
        server: &str,
        ca_data: &str,
        token: Option<&Secret>,
        cert_data: Option<&str>,
        key_data: Option<&Secret>,
    ) -> anyhow::Result<Credentials> {
        let ca_pem = decode(ca_data, "certificate_authority_data")?;
        let user = match (token, cert_data, key_data) {
            (Some(t), _, _) if !t.expose().trim().is_empty() => User::Token(t.clone()),
            (_, Some(cert), Some(key)) => User::Certificate {
                cert_pem: decode(cert, "client_certificate_data")?,
                key_pem: Secret::new(
                    String::from_utf8(decode(key.expose(), "client_key_data")?)
                        .map_err(|_| anyhow!("client_key_data is not PEM text"))?,
                ),
            },
            _ => bail!(
                "{SERVICE}: the credentials have neither a token nor a client certificate and key"
            ),
        };
        Ok(Credentials {
            server: check_server(server)?,
            ca_pem,
            user,
        })
    }

    fn parse_kubeconfig(text: &str, dir: &Path) -> anyhow::Result<Credentials> {
        let config: Kubeconfig =
            serde_yaml::from_str(text).map_err(|e| anyhow!("not a kubeconfig ({e})"))?;
        let want = &config.current_context;
        if want.is_empty() {
            bail!("no current-context (set one with kubectl config use-context NAME)");
        }
        let context = find(&config.contexts, want, "context")?;
        let cluster = find(&config.clusters, &context.cluster, "cluster")?;
        let user = find(&config.users, &context.user, "user")?;
        if cluster.insecure {
            bail!("cluster {:?} sets insecure-skip-tls-verify; ops trusts only the cluster's CA: give certificate-authority-data instead", context.cluster);
        }
        let ca_pem = match (&cluster.ca_data, &cluster.ca_file) {
            (Some(data), _) => decode(data, "certificate-authority-data")?,
            (None, Some(file)) => read(dir, file)?,
            (None, None) => bail!("cluster {:?} has no certificate-authority-data: ops trusts only the cluster's CA, never the system's roots", context.cluster),
        };
        let who = &context.user;
        if user.exec.is_some() {
            bail!("user {who:?} gets its credential from an exec plugin, which ops does not run: give ops a user with a token (e.g. a ServiceAccount's, kubectl create token) or a client certificate");
        }
        if user.auth_provider.is_some() {
            bail!("user {who:?} uses an auth-provider, which ops does not support: give ops a user with a token or a client certificate");
        }
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(file)) => Some(
                String::from_utf8_lossy(&read(dir, file)?)
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let cert = match (&user.cert_data, &user.cert_file) {
            (Some(d), _) => Some(decode(d, "client-certificate-data")?),
            (None, Some(f)) => Some(read(dir, f)?),
            (None, None) => None,
        };
        let key = match (&user.key_data, &user.key_file) {
            (Some(d), _) => Some(decode(d, "client-key-data")?),
            (None, Some(f)) => Some(read(dir, f)?),
            (None, None) => None,
        };
        let user = match (token, cert, key) {
            (Some(t), _, _) if !t.is_empty() => User::Token(Secret::new(t)),
            (_, Some(cert_pem), Some(key)) => User::Certificate {
                cert_pem,
                key_pem: Secret::new(
                    String::from_utf8(key)
                        .map_err(|_| anyhow!("user {who:?}: the client key is not PEM text"))?,
                ),
            },
            (_, Some(_), None) => {
                bail!("user {who:?} has a client certificate but no client-key-data")
            }
            _ => bail!(
                "user {who:?} has neither a token nor a client certificate: ops needs one of them"
            ),
        };
        Ok(Credentials {
            server: check_server(&cluster.server)?,
            ca_pem,
            user,
        })
    }
}

fn find<'a, T>(list: &'a [Named<T>], name: &str, what: &str) -> anyhow::Result<&'a T> {
    list.iter()
        .find(|n| n.name == name)
        .map(|n| &n.item)
        .ok_or_else(|| anyhow!("the {what} {name:?} is not defined"))
}

fn decode(data: &str, field: &str) -> anyhow::Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| anyhow!("{field} is not base64"))
}

fn read(dir: &Path, file: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn config(user: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(CA);
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {ca}\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n{user}"
        )
    }

    #[test]
    fn a_token_user_is_read_with_its_cluster_ca() {
        let c =
            Credentials::parse_kubeconfig(&config("    token: abcdefgh-token\n"), Path::new("."))
                .unwrap();
        assert_eq!(c.server, "https://10.0.0.1:6443");
        assert_eq!(c.ca_pem, CA.as_bytes());
        assert!(matches!(c.user, User::Token(ref t) if t.expose() == "abcdefgh-token"));
        assert!(!format!("{c:?}").contains("abcdefgh"));
    }

    #[test]
    fn a_client_certificate_user_is_read() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b("CERT"),
            b("KEYKEYKEY")
        );
        let c = Credentials::parse_kubeconfig(&config(&user), Path::new(".")).unwrap();
        assert!(
            matches!(c.user, User::Certificate { ref cert_pem, ref key_pem } if cert_pem == b"CERT" && key_pem.expose() == "KEYKEYKEY")
        );
    }

    #[test]
    fn credentials_given_as_data_fields_prefer_the_token() {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let token = Secret::new("doks-token-abcdef");
        let c = Credentials::from_data(
            "https://x.k8s.example.com",
            &b(CA),
            Some(&token),
            None,
            None,
        )
        .unwrap();
        assert!(matches!(c.user, User::Token(_)));
        let key = Secret::new(b("KEYKEYKEY"));
        let c = Credentials::from_data(
            "https://x.k8s.example.com/",
            &b(CA),
            None,
            Some(&b("CERT")),
            Some(&key),
        )
        .unwrap();
        assert_eq!(c.server, "https://x.k8s.example.com");
        assert!(
            matches!(c.user, User::Certificate { ref key_pem, .. } if key_pem.expose() == "KEYKEYKEY")
        );
        assert!(Credentials::from_data("https://x", "%%", Some(&token), None, None).is_err());
        assert!(Credentials::from_data("https://x", &b(CA), None, None, None).is_err());
    }

    #[test]
    fn an_exec_plugin_user_is_refused_in_one_line() {
        let user = "    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: doctl\n";
        let e = Credentials::parse_kubeconfig(&config(user), Path::new("."))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("exec plugin, which ops does not run"), "{e}");
        assert!(e.contains("token") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn insecure_clusters_and_plain_http_are_refused() {
        let text = config("    token: abcdefgh\n").replace(
            "    server:",
            "    insecure-skip-tls-verify: true\n    server:",
        );
        let e = Credentials::parse_kubeconfig(&text, Path::new("."))
            .err()
            .unwrap();
        assert!(e.to_string().contains("insecure-skip-tls-verify"), "{e}");
        let text = config("    token: abcdefgh\n").replace("https://", "http://");
        let e = Credentials::parse_kubeconfig(&text, Path::new("."))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not an https:// URL"), "{e}");
    }

    #[test]
    fn paths_name_the_api_group_namespace_and_object() {
        assert_eq!(
            Kind::Deployment.path(Some("trigger"), Some("supervisor")),
            "/apis/apps/v1/namespaces/trigger/deployments/supervisor"
        );
        assert_eq!(Kind::Node.path(Some("x"), Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(
            Kind::Pod.path(Some("trigger"), None),
            "/api/v1/namespaces/trigger/pods"
        );
        assert_eq!(
            Kind::RoleBinding.path(Some("t"), Some("s")),
            "/apis/rbac.authorization.k8s.io/v1/namespaces/t/rolebindings/s"
        );
        let s = Selector::default()
            .label("app", "task-run")
            .field("status.phase", "Pending");
        assert_eq!(
            s.query(),
            "&labelSelector=app%3Dtask-run&fieldSelector=status.phase%3DPending"
        );
    }

    #[test]
    fn the_metadata_address_is_never_connected_to() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(connect_allowed("https", &[ip("169.254.169.254")]).is_err());
        assert!(connect_allowed("https", &[ip("::ffff:169.254.169.254")]).is_err());
        assert!(connect_allowed("https", &[ip("fe80::1")]).is_err());
        assert!(connect_allowed("http", &[ip("10.0.0.1")]).is_err());
        assert!(connect_allowed("https", &[ip("10.0.0.1"), ip("127.0.0.1")]).is_ok());
    }

    #[test]
    fn a_status_body_becomes_the_error() {
        let resp = Response {
            status: 422,
            headers: vec![],
            body: r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Deployment.apps \"supervisor\" is invalid","reason":"Invalid","code":422}"#.into(),
        };
        let e = api_error(
            "PATCH",
            "/apis/apps/v1/namespaces/t/deployments/supervisor",
            &resp,
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.to_string(),
            "Kubernetes API: PATCH /apis/apps/v1/namespaces/t/deployments/supervisor answered HTTP 422 Invalid: Deployment.apps \"supervisor\" is invalid"
        );
    }

    #[test]
    fn a_rollout_is_done_when_every_replica_is_updated_and_available() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "supervisor", "generation": 2},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1}
        }))
        .unwrap();
        assert!(!d.rolled_out());
        d.status.replicas = 1;
        d.status.unavailable_replicas = 0;
        assert!(d.rolled_out());
        d.metadata.generation = 3;
        assert!(!d.rolled_out());
    }
}
