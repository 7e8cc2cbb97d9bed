//! A strict fake Kubernetes API server: TLS with its own CA (made with the openssl command,
//! which .ci/run installs: no certificate crate for the tests), bearer tokens that expire and
//! client certificates signed by that CA, `Status` bodies for every error, server-side apply
//! (`application/apply-patch+yaml`, `fieldManager` required; resourceVersion, generation and
//! managedFields kept as the API server does, a no-op apply changes nothing), GET, LIST with
//! label and field selectors and `limit`/`continue`, DELETE, a node's merge-patch, injected
//! 404/409/422/429 (with `Retry-After`) answers, and a toy Deployment controller: it starts the
//! supervisor pod (RollingUpdate, maxSurge 1, maxUnavailable 0: the old pod goes once the new
//! one is ready), and that pod heartbeats into the real Postgres only when the token and
//! managed secret its Secret held at its start would be accepted by the webapp.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::support::webapp::{Beating, Webapp};

/// An extracted record as ops keeps it, with a registry that needs credentials or not.
pub fn record(
    token: &str,
    managed_secret: &str,
    registry: bool,
) -> trigger_ops::record::ConfigRecord {
    use trigger_ops::redact::Secret;
    trigger_ops::record::ConfigRecord {
        worker_token: Secret::new(token),
        token_source: "test".into(),
        token_found_at: 0,
        managed_secret: Secret::new(managed_secret),
        api_origin: "https://trigger.example.com".into(),
        otel_endpoint: "https://trigger.example.com/otel".into(),
        registry_host: registry.then(|| "registry.example.com".into()),
        registry_username: registry.then(|| "deploy".into()),
        registry_password: registry.then(|| Secret::new("registry-password-kube")),
        webapp_service: "webapp".into(),
        fingerprint: "f".into(),
        extracted_at: 0,
        webapp_version: Some("v4.5.12".into()),
    }
}

/// The version the fake reports at `/version` (DOKS `1.34.1-do.0`).
pub const MAJOR: &str = "1";
pub const MINOR: &str = "34";
pub const GIT_VERSION: &str = "v1.34.1";

/// The CA, the server's certificate and a client certificate, made once per test process.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Vec<u8>,
    /// A CA the cluster does not use, with a server certificate it signed.
    pub other_ca_pem: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the fake Kubernetes API needs the openssl command (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_leaf(dir: &Path, ca: &str, name: &str, subject: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let server_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n";
        make_ca(&dir, "ca");
        make_leaf(&dir, "ca", "server", "/CN=kube-apiserver", server_ext);
        make_leaf(
            &dir,
            "ca",
            "client",
            "/O=trigger-ops/CN=ops",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        make_ca(&dir, "other");
        make_leaf(&dir, "other", "impostor", "/CN=kube-apiserver", server_ext);
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        Pki {
            ca_pem: read("ca.crt"),
            client_cert_pem: read("client.crt"),
            client_key_pem: read("client.key"),
            other_ca_pem: read("other.crt"),
            dir,
        }
    })
}

fn server_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let p = pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p.dir.join(cert))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(p.dir.join(key)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&p.ca_pem) {
        roots.add(ca.unwrap()).unwrap();
    }
    // Client certificates are optional (token users send none) but must be the CA's.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: String,
}

impl Call {
    pub fn mutates(&self) -> bool {
        self.method != "GET"
    }
}

/// A failure to answer instead of the real one: (method, path prefix, code, times).
struct Fault {
    method: String,
    path: String,
    code: u16,
    times: u32,
}

/// What the webapp accepts: a supervisor pod heartbeats only with these.
#[derive(Clone)]
pub struct Accepts {
    pub webapp: Webapp,
    pub managed_secret: String,
}

type Key = (String, String, String);

/// Whether a bearer token is valid now, as its issuer says.
pub type Issuer = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct World {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    uid: u64,
    /// Valid bearer tokens and when they expire.
    pub tokens: BTreeMap<String, Instant>,
    /// Who else issues valid tokens (DigitalOcean, for a DOKS cluster): asked of a token not
    /// in `tokens`.
    pub issuer: Option<Issuer>,
    faults: Vec<Fault>,
    pub calls: Vec<Call>,
    accepts: Option<Accepts>,
    /// Pods that heartbeat, by name.
    beating: BTreeMap<String, Beating>,
    /// How long a new supervisor pod takes to become ready.
    pub start_delay: Duration,
    started: BTreeMap<String, (Instant, bool)>,
}

pub struct FakeKube {
    pub url: String,
    world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
}

/// Kinds the fake serves: (group/version path, plural, kind, namespaced).
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("/api/v1", "namespaces", "Namespace", false),
    ("/api/v1", "nodes", "Node", false),
    ("/api/v1", "serviceaccounts", "ServiceAccount", true),
    ("/api/v1", "secrets", "Secret", true),
    ("/api/v1", "services", "Service", true),
    ("/api/v1", "pods", "Pod", true),
    ("/apis/rbac.authorization.k8s.io/v1", "roles", "Role", true),
    (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    (
        "/apis/networking.k8s.io/v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
    ),
    ("/apis/apps/v1", "deployments", "Deployment", true),
];

fn api_version_of(root: &str) -> String {
    root.trim_start_matches("/apis/")
        .trim_start_matches("/api/")
        .to_string()
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        _ => "InternalError",
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl FakeKube {
    /// A server on 127.0.0.1 that accepts `token` (for an hour) and the PKI's client certificate.
    pub fn start(token: &str) -> FakeKube {
        Self::start_with(token, "server.crt", "server.key")
    }

    /// A server whose certificate another CA signed (the impostor of a test).
    pub fn impostor(token: &str) -> FakeKube {
        Self::start_with(token, "impostor.crt", "impostor.key")
    }

    fn start_with(token: &str, cert: &str, key: &str) -> FakeKube {
        super::netns::ensure();
        let config = server_config(cert, key);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let mut tokens = BTreeMap::new();
        tokens.insert(
            token.to_string(),
            Instant::now() + Duration::from_secs(3600),
        );
        let world = Arc::new(Mutex::new(World {
            objects: BTreeMap::new(),
            revision: 100,
            uid: 0,
            tokens,
            faults: Vec::new(),
            calls: Vec::new(),
            accepts: None,
            beating: BTreeMap::new(),
            issuer: None,
            start_delay: Duration::from_millis(200),
            started: BTreeMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let world = Arc::clone(&world);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (world, config) = (Arc::clone(&world), Arc::clone(&config));
                    std::thread::spawn(move || serve(stream, config, world));
                }
            });
        }
        {
            let world = Arc::clone(&world);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    control(&world);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        FakeKube { url, world, stop }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world.lock().unwrap())
    }

    /// Supervisor pods heartbeat to this webapp when their Secret holds what it accepts.
    pub fn accepts(&self, accepts: Accepts) {
        self.with(|w| w.accepts = Some(accepts));
    }

    pub fn add_token(&self, token: &str, valid_for: Duration) {
        self.with(|w| {
            w.tokens
                .insert(token.to_string(), Instant::now() + valid_for)
        });
    }

    /// Answers the next `times` calls of `method` to paths starting with `path` with `code`
    /// (429 carries `Retry-After: 1`).
    pub fn fail(&self, method: &str, path: &str, code: u16, times: u32) {
        self.with(|w| {
            w.faults.push(Fault {
                method: method.into(),
                path: path.into(),
                code,
                times,
            })
        });
    }

    pub fn calls(&self) -> Vec<Call> {
        self.with(|w| w.calls.clone())
    }

    pub fn mutations(&self) -> usize {
        self.calls().iter().filter(|c| c.mutates()).count()
    }

    pub fn clear(&self) {
        self.with(|w| w.calls.clear());
    }

    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.with(|w| w.objects.get(&key(plural, ns, name)).cloned())
    }

    /// An object gone (a run pod whose run ended and the supervisor cleaned up).
    pub fn remove(&self, plural: &str, ns: &str, name: &str) -> bool {
        self.with(|w| w.objects.remove(&key(plural, ns, name)).is_some())
    }

    pub fn names(&self, plural: &str, ns: &str) -> Vec<String> {
        self.with(|w| {
            w.objects
                .keys()
                .filter(|(p, n, _)| p == plural && n == ns)
                .map(|(_, _, name)| name.clone())
                .collect()
        })
    }

    /// A node with the given labels and allocatable CPU and memory.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)], cpu: &str, memory: &str) {
        let labels: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        self.with(|w| w.store("nodes", "", name, node));
    }

    /// A bare run pod as the supervisor creates it: Running on `node`, or Pending with the
    /// scheduler's message when `node` is None.
    pub fn add_run_pod(&self, ns: &str, name: &str, node: Option<&str>, preset: &str) {
        let (phase, spec, conditions) = match node {
            Some(n) => (
                "Running",
                json!({"nodeName": n}),
                json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]),
            ),
            None => (
                "Pending",
                json!({}),
                json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."}]),
            ),
        };
        let mut spec = spec;
        spec["restartPolicy"] = json!("Never");
        spec["containers"] =
            json!([{"name": "run-controller", "image": "registry.example.com/task:1"}]);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "task-run", "machine": preset},
                         "creationTimestamp": now_rfc3339()},
            "spec": spec,
            "status": {"phase": phase, "conditions": conditions},
        });
        self.with(|w| w.store("pods", ns, name, pod));
    }

    /// The supervisor pods (those the toy controller made), by name.
    pub fn supervisor_pods(&self, ns: &str) -> Vec<Value> {
        self.with(|w| {
            supervisor_pod_keys(w, ns)
                .iter()
                .map(|k| w.objects[k].clone())
                .collect()
        })
    }

    /// A run pod ends and the supervisor cleans it up.
    pub fn end_pod(&self, ns: &str, name: &str) {
        self.with(|w| w.objects.remove(&key("pods", ns, name)));
    }

    /// The supervisor pods end (a crash loop's restart, an eviction): the toy controller starts
    /// new ones, which heartbeat when the webapp accepts them now.
    pub fn restart_supervisor_pods(&self, ns: &str) {
        self.with(|w| {
            for k in supervisor_pod_keys(w, ns) {
                w.beating.remove(&k.2);
                w.started.remove(&k.2);
                w.objects.remove(&k);
            }
        });
    }

    /// Waits until `f` holds (checked every 50 ms), at most `max`.
    pub fn wait_for(&self, max: Duration, f: impl Fn(&FakeKube) -> bool) -> bool {
        let end = Instant::now() + max;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        f(self)
    }

    /// A kubeconfig naming this server, its CA and `user` (YAML lines under `user:`).
    pub fn kubeconfig(&self, dir: &Path, user: &str) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(&pki().ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ops\n    namespace: trigger\nusers:\n- name: ops\n  user:\n{user}",
            self.url
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The `user:` lines of a client-certificate user.
    pub fn certificate_user() -> String {
        let b = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b(&pki().client_cert_pem),
            b(&pki().client_key_pem)
        )
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("https://"));
        if let Ok(mut w) = self.world.lock() {
            w.beating.clear();
        }
    }
}

fn key(plural: &str, ns: &str, name: &str) -> Key {
    (plural.to_string(), ns.to_string(), name.to_string())
}

impl World {
    fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Stores an object as the server would: uid, creation time, resourceVersion.
    fn store(&mut self, plural: &str, ns: &str, name: &str, mut object: Value) {
        let k = key(plural, ns, name);
        let old = self.objects.get(&k);
        let uid = old
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                self.uid += 1;
                format!("00000000-0000-4000-8000-{:012}", self.uid)
            });
        let created = old
            .and_then(|o| {
                o["metadata"]["creationTimestamp"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(now_rfc3339);
        object["metadata"]["uid"] = json!(uid);
        object["metadata"]["creationTimestamp"] = json!(created);
        object["metadata"]["resourceVersion"] = json!(self.next_revision());
        self.objects.insert(k, object);
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.starts_with(&f.path))?;
        f.times -= 1;
        Some(f.code)
    }
}

/// Reads HTTP/1.1 requests off one TLS connection and answers each (keep-alive).
fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>, world: Arc<Mutex<World>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(end) = read_until_headers(&mut tls, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, target) = (
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
        );
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..end + 4);
        while buf.len() < length {
            let mut chunk = [0u8; 8192];
            match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[..length]).to_string();
        buf.drain(..length);
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let call = Call {
            method,
            path: path.to_string(),
            query: query.to_string(),
            content_type: header("content-type").unwrap_or_default(),
            body,
        };
        let client_cert = tls.conn.peer_certificates().is_some_and(|c| !c.is_empty());
        let (code, answer, extra) = {
            let mut w = world.lock().unwrap();
            w.calls.push(call.clone());
            handle(
                &mut w,
                &call,
                header("authorization").as_deref(),
                client_cert,
            )
        };
        let text = answer.to_string();
        let mut out = format!(
            "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reason_of(code),
            text.len()
        );
        for (k, v) in extra {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&text);
        if tls.write_all(out.as_bytes()).is_err() || tls.flush().is_err() {
            return;
        }
    }
}

fn read_until_headers(tls: &mut impl Read, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        let mut chunk = [0u8; 8192];
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

type Answer = (u16, Value, Vec<(String, String)>);

fn handle(w: &mut World, call: &Call, authorization: Option<&str>, client_cert: bool) -> Answer {
    let plain = |(code, body): (u16, Value)| (code, body, Vec::new());
    let bearer = authorization.and_then(|a| a.strip_prefix("Bearer "));
    let token_ok = bearer
        .and_then(|t| w.tokens.get(t))
        .is_some_and(|expires| *expires > Instant::now())
        || bearer.is_some_and(|t| w.issuer.as_ref().is_some_and(|valid| valid(t)));
    if !token_ok && !client_cert {
        return plain(status(401, "Unauthorized", "Unauthorized"));
    }
    if let Some(code) = w.take_fault(&call.method, &call.path) {
        let (code, body) = status(code, reason_of(code), &format!("injected {code}"));
        let extra = if code == 429 {
            vec![("retry-after".to_string(), "1".to_string())]
        } else {
            Vec::new()
        };
        return (code, body, extra);
    }
    if call.path == "/version" && call.method == "GET" {
        return plain((
            200,
            json!({"major": MAJOR, "minor": MINOR, "gitVersion": GIT_VERSION, "platform": "linux/amd64"}),
        ));
    }
    let Some(route) = route(&call.path) else {
        return plain(status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    plain(match (call.method.as_str(), route.name.as_deref()) {
        ("GET", Some(name)) => get(w, &route, name),
        ("GET", None) => list(w, &route, &call.query),
        ("PATCH", Some(name)) if call.content_type == "application/apply-patch+yaml" => {
            apply(w, &route, name, call)
        }
        ("PATCH", Some(name)) if route.plural == "nodes" => patch_node(w, name, call),
        ("PATCH", Some(_)) => status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {})", call.content_type)),
        ("DELETE", Some(name)) => delete(w, &route, name),
        _ => status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
    })
}

struct Route {
    root: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespace: String,
    name: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    for &(root, plural, kind, namespaced) in KINDS {
        let Some(rest) = path.strip_prefix(root) else {
            continue;
        };
        let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let (namespace, tail) = match (namespaced, segs.as_slice()) {
            (true, ["namespaces", ns, tail @ ..]) => (ns.to_string(), tail),
            (false, tail) => (String::new(), tail),
            _ => continue,
        };
        match tail {
            [p] if *p == plural => {
                return Some(Route {
                    root,
                    plural,
                    kind,
                    namespace,
                    name: None,
                });
            }
            [p, name] if *p == plural => {
                return Some(Route {
                    root,
                    plural,
                    kind,
                    namespace,
                    name: Some(name.to_string()),
                });
            }
            _ => continue,
        }
    }
    None
}

fn not_found(route: &Route, name: &str) -> (u16, Value) {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", route.plural),
    )
}

fn get(w: &World, route: &Route, name: &str) -> (u16, Value) {
    match w.objects.get(&key(route.plural, &route.namespace, name)) {
        Some(o) => (200, o.clone()),
        None => not_found(route, name),
    }
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex: Vec<u8> = bytes.by_ref().take(2).collect();
        match std::str::from_utf8(&hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(v) if hex.len() == 2 => out.push(v),
            _ => {
                out.push(b'%');
                out.extend(hex);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value`, `key==value`, `key!=value`, `key` (exists), comma-joined.
fn matches_labels(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &object["metadata"]["labels"];
        if let Some((k, v)) = term.split_once("!=") {
            labels[k].as_str() != Some(v)
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k].as_str() == Some(v.trim_start_matches('='))
        } else {
            labels[term].is_string()
        }
    })
}

/// The field selectors the API server supports for the kinds ops lists.
fn field_value(object: &Value, field: &str) -> Option<Option<String>> {
    let v = match field {
        "metadata.name" => object["metadata"]["name"].as_str().map(str::to_string),
        "metadata.namespace" => object["metadata"]["namespace"].as_str().map(str::to_string),
        "status.phase" if object["kind"] == "Pod" => {
            object["status"]["phase"].as_str().map(str::to_string)
        }
        "spec.nodeName" if object["kind"] == "Pod" => Some(
            object["spec"]["nodeName"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ),
        "spec.unschedulable" if object["kind"] == "Node" => Some(
            object["spec"]["unschedulable"]
                .as_bool()
                .unwrap_or(false)
                .to_string(),
        ),
        _ => return None,
    };
    Some(v)
}

fn list(w: &World, route: &Route, query: &str) -> (u16, Value) {
    let labels = param(query, "labelSelector").unwrap_or_default();
    let fields = param(query, "fieldSelector").unwrap_or_default();
    let limit: usize = param(query, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let start: usize = match param(query, "continue") {
        Some(c) => match c
            .strip_prefix("fake-continue-")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => n,
            None => return status(410, "Expired", "The provided continue parameter is too old"),
        },
        None => 0,
    };
    let mut items = Vec::new();
    for ((plural, ns, _), object) in &w.objects {
        if plural != route.plural || (!route.namespace.is_empty() && *ns != route.namespace) {
            continue;
        }
        if !matches_labels(object, &labels) {
            continue;
        }
        let mut ok = true;
        for term in fields.split(',').filter(|s| !s.is_empty()) {
            let (k, v, negate) = match term.split_once("!=") {
                Some((k, v)) => (k, v, true),
                None => match term.split_once('=') {
                    Some((k, v)) => (k, v.trim_start_matches('='), false),
                    None => {
                        return status(
                            400,
                            "BadRequest",
                            &format!("invalid field selector: {term}"),
                        )
                    }
                },
            };
            match field_value(object, k) {
                None => {
                    return status(
                        400,
                        "BadRequest",
                        &format!("field label not supported: {k}"),
                    )
                }
                Some(have) => ok &= (have.as_deref() == Some(v)) != negate,
            }
        }
        if ok {
            items.push(object.clone());
        }
    }
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let mut meta = json!({"resourceVersion": w.revision.to_string()});
    if start + page.len() < total {
        meta["continue"] = json!(format!("fake-continue-{}", start + page.len()));
        meta["remainingItemCount"] = json!(total - start - page.len());
    }
    (
        200,
        json!({"kind": format!("{}List", route.kind), "apiVersion": api_version_of(route.root), "metadata": meta, "items": page}),
    )
}

/// Deep merge: maps by key, everything else replaced.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The `fieldsV1` of an applied configuration: `f:<field>` for every field set.
fn fields_v1(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (format!("f:{k}"), fields_v1(v)))
                .collect(),
        ),
        _ => json!({}),
    }
}

fn apply(w: &mut World, route: &Route, name: &str, call: &Call) -> (u16, Value) {
    if param(&call.query, "fieldManager")
        .unwrap_or_default()
        .is_empty()
    {
        return status(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
    }
    let desired: Value = match serde_yaml::from_str(&call.body) {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", &format!("error decoding YAML: {e}")),
    };
    let api_version = api_version_of(route.root);
    if desired["kind"] != route.kind || desired["apiVersion"] != api_version.as_str() {
        return status(400, "BadRequest", &format!("the apiVersion and kind in the body ({} {}) do not match the URL ({api_version} {})", desired["apiVersion"], desired["kind"], route.kind));
    }
    if desired["metadata"]["name"] != name {
        return status(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    let ns_in_body = desired["metadata"]["namespace"].as_str().unwrap_or("");
    if !route.namespace.is_empty() {
        if ns_in_body != route.namespace {
            return status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
        }
        if !w
            .objects
            .contains_key(&key("namespaces", "", &route.namespace))
        {
            return status(
                404,
                "NotFound",
                &format!("namespaces \"{}\" not found", route.namespace),
            );
        }
    }
    if let Some(e) = invalid(&desired) {
        return status(
            422,
            "Invalid",
            &format!("{} \"{name}\" is invalid: {e}", route.kind),
        );
    }
    let force = param(&call.query, "force").as_deref() == Some("true");
    let manager = param(&call.query, "fieldManager").unwrap_or_default();
    let k = key(route.plural, &route.namespace, name);
    let old = w.objects.get(&k).cloned();
    if let Some(old) = &old {
        let others = old["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["manager"] != manager.as_str() && m["operation"] == "Update");
        if others && !force {
            return status(409, "Conflict", &format!("Apply failed with 1 conflict: conflict with \"kubectl-edit\" using {api_version}"));
        }
    }
    let mut merged = old.clone().unwrap_or_else(|| json!({}));
    merge(&mut merged, &desired);
    if let Some(old) = &old {
        let mut same = old.clone();
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            if let Some(m) = same["metadata"].as_object_mut() {
                m.remove(f);
            }
        }
        let mut comparable = merged.clone();
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            if let Some(m) = comparable["metadata"].as_object_mut() {
                m.remove(f);
            }
        }
        if same == comparable {
            // A no-op apply changes nothing, not even the resourceVersion.
            return (200, old.clone());
        }
    }
    let spec_changed = old.as_ref().is_none_or(|o| o["spec"] != merged["spec"]);
    let generation = old
        .as_ref()
        .and_then(|o| o["metadata"]["generation"].as_i64())
        .unwrap_or(0);
    if merged.get("spec").is_some() {
        merged["metadata"]["generation"] = json!(if spec_changed {
            generation + 1
        } else {
            generation
        });
    }
    merged["metadata"]["managedFields"] = json!([{
        "manager": manager, "operation": "Apply", "apiVersion": api_version,
        "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&desired),
    }]);
    w.store(route.plural, &route.namespace, name, merged);
    (if old.is_some() { 200 } else { 201 }, w.objects[&k].clone())
}

/// What the API server's validation would refuse in the objects ops sends.
fn invalid(o: &Value) -> Option<String> {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !dns(name) {
        return Some(format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain"
        ));
    }
    if o["kind"] == "Secret" {
        for (k, v) in o["data"].as_object().into_iter().flatten() {
            let ok = v
                .as_str()
                .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
            if !ok {
                return Some(format!("data[{k}]: Invalid value: illegal base64 data"));
            }
        }
    }
    if o["kind"] == "Deployment" {
        let selector = &o["spec"]["selector"]["matchLabels"];
        let labels = &o["spec"]["template"]["metadata"]["labels"];
        for (k, v) in selector.as_object().into_iter().flatten() {
            if &labels[k] != v {
                return Some("spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`".into());
            }
        }
        if o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            return Some("spec.template.spec.containers: Required value".into());
        }
    }
    None
}

fn patch_node(w: &mut World, name: &str, call: &Call) -> (u16, Value) {
    if !matches!(
        call.content_type.as_str(),
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return status(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format",
        );
    }
    let patch: Value = match serde_json::from_str(&call.body) {
        Ok(p) => p,
        Err(e) => return status(400, "BadRequest", &format!("error decoding patch: {e}")),
    };
    let k = key("nodes", "", name);
    let Some(mut node) = w.objects.get(&k).cloned() else {
        return status(404, "NotFound", &format!("nodes \"{name}\" not found"));
    };
    merge(&mut node, &patch);
    w.store("nodes", "", name, node);
    (200, w.objects[&k].clone())
}

fn delete(w: &mut World, route: &Route, name: &str) -> (u16, Value) {
    match w.objects.remove(&key(route.plural, &route.namespace, name)) {
        Some(o) => {
            w.beating.remove(name);
            w.started.remove(name);
            (200, o)
        }
        None => not_found(route, name),
    }
}

fn template_hash(template: &Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(template.to_string().as_bytes());
    digest[..5].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a supervisor pod would find in its env at start: the token and managed secret its
/// Secret held then, and whether the webapp accepts them.
fn accepted(w: &World, ns: &str, template: &Value) -> Option<(String, bool)> {
    let accepts = w.accepts.as_ref()?;
    let container = &template["spec"]["containers"][0];
    let env = container["env"].as_array()?;
    let from_secret = |var: &str| -> Option<String> {
        let e = env.iter().find(|e| e["name"] == var)?;
        let r = &e["valueFrom"]["secretKeyRef"];
        let secret = w.objects.get(&key("secrets", ns, r["name"].as_str()?))?;
        let data = secret["data"][r["key"].as_str()?].as_str()?;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?,
        )
        .ok()
    };
    let token = from_secret("TRIGGER_WORKER_TOKEN")?;
    let secret_ok =
        from_secret("MANAGED_WORKER_SECRET").as_deref() == Some(accepts.managed_secret.as_str());
    let sa = template["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let sa_ok = w.objects.contains_key(&key("serviceaccounts", ns, sa));
    let image_ok = container["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("ghcr.io/triggerdotdev/supervisor:"));
    Some((
        token.clone(),
        secret_ok && sa_ok && image_ok && token_known(&accepts.webapp.url, &token),
    ))
}

/// Whether the webapp knows the token (its hash is a worker group's), as it checks at connect.
fn token_known(url: &str, token: &str) -> bool {
    let Ok(mut c) = postgres::Client::connect(url, postgres::NoTls) else {
        return false;
    };
    c.query_opt(
        r#"SELECT 1 FROM "WorkerGroupToken" WHERE "tokenHash" = encode(sha256(convert_to($1, 'UTF8')), 'hex')"#,
        &[&token],
    )
    .is_ok_and(|row| row.is_some())
}

/// The supervisor pods' keys (the pods the toy controller made).
fn supervisor_pod_keys(w: &World, ns: &str) -> Vec<Key> {
    w.objects
        .iter()
        .filter(|((p, n, _), o)| {
            p == "pods" && n == ns && o["metadata"]["labels"]["pod-template-hash"].is_string()
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The toy Deployment controller, run every 50 ms.
fn control(world: &Arc<Mutex<World>>) {
    let mut start_beats: Vec<(String, Webapp)> = Vec::new();
    {
        let mut w = world.lock().unwrap();
        let deployments: Vec<(String, String, Value)> = w
            .objects
            .iter()
            .filter(|((p, _, _), _)| p == "deployments")
            .map(|((_, ns, name), d)| (ns.clone(), name.clone(), d.clone()))
            .collect();
        for (ns, name, d) in deployments {
            reconcile(&mut w, &ns, &name, &d, &mut start_beats);
        }
    }
    for (pod, webapp) in start_beats {
        let beat = Beating::start(webapp, pod.clone(), Arc::new(AtomicBool::new(true)));
        let mut w = world.lock().unwrap();
        if w.started.contains_key(&pod) {
            w.beating.insert(pod, beat);
        }
    }
}

fn reconcile(
    w: &mut World,
    ns: &str,
    name: &str,
    d: &Value,
    start_beats: &mut Vec<(String, Webapp)>,
) {
    let template = &d["spec"]["template"];
    let hash = template_hash(template);
    let owned: Vec<(String, Value)> = w
        .objects
        .iter()
        .filter(|((p, n, _), o)| {
            p == "pods"
                && n == ns
                && o["metadata"]["ownerReferences"][0]["name"]
                    .as_str()
                    .is_some_and(|rs| rs.starts_with(&format!("{name}-")))
        })
        .map(|((_, _, pod), o)| (pod.clone(), o.clone()))
        .collect();
    let (current, old): (Vec<_>, Vec<_>) = owned
        .into_iter()
        .partition(|(_, o)| o["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
    if current.is_empty() {
        w.uid += 1;
        let pod_name = format!("{name}-{hash}-{:05x}", w.uid);
        let mut labels = template["metadata"]["labels"].clone();
        labels["pod-template-hash"] = json!(hash);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                         "annotations": template["metadata"]["annotations"].clone(),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"), "uid": "rs", "controller": true}]},
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        });
        let ok = match accepted(w, ns, template) {
            Some((token, true)) => {
                let accepts = w.accepts.clone().unwrap();
                Some(Webapp {
                    url: accepts.webapp.url,
                    token,
                })
            }
            _ => None,
        };
        w.started
            .insert(pod_name.clone(), (Instant::now(), ok.is_some()));
        if let Some(webapp) = ok {
            start_beats.push((pod_name.clone(), webapp));
        }
        w.store("pods", ns, &pod_name, pod);
    }
    // Pods come up after the start delay: ready when accepted, else crash-looping.
    let delay = w.start_delay;
    let mut ready_new = 0;
    let all: Vec<String> = w
        .objects
        .iter()
        .filter(|((p, n, _), o)| {
            p == "pods"
                && n == ns
                && o["metadata"]["ownerReferences"][0]["name"]
                    .as_str()
                    .is_some_and(|rs| rs.starts_with(&format!("{name}-")))
        })
        .map(|((_, _, pod), _)| pod.clone())
        .collect();
    for pod in &all {
        let Some(&(at, ok)) = w.started.get(pod) else {
            continue;
        };
        if at.elapsed() < delay {
            continue;
        }
        let k = key("pods", ns, pod);
        let mut o = w.objects[&k].clone();
        if ok && o["metadata"]["labels"]["pod-template-hash"] == hash.as_str() {
            ready_new += 1;
        }
        if o["status"]["phase"] != "Pending" {
            continue;
        }
        let image = o["spec"]["containers"][0]["image"].clone();
        o["spec"]["nodeName"] = json!("node-supervisor-1");
        o["status"] = if ok {
            json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "supervisor", "ready": true, "restartCount": 0, "image": image, "state": {"running": {}}}]})
        } else {
            json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                   "containerStatuses": [{"name": "supervisor", "ready": false, "restartCount": 3, "image": image,
                                          "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                                          "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]})
        };
        w.store("pods", ns, pod, o);
    }
    // maxUnavailable 0: the old pods go only once the new one is ready.
    if ready_new > 0 {
        for (pod, _) in &old {
            w.objects.remove(&key("pods", ns, pod));
            w.beating.remove(pod);
            w.started.remove(pod);
        }
    }
    let pods_left = w
        .objects
        .keys()
        .filter(|(p, n, pod)| p == "pods" && n == ns && all.contains(pod))
        .count() as i64;
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let unavailable = (pods_left - ready_new).max(0);
    let status = json!({
        "observedGeneration": generation, "replicas": pods_left, "updatedReplicas": 1,
        "readyReplicas": ready_new, "availableReplicas": ready_new,
        "unavailableReplicas": unavailable,
        "conditions": [{"type": "Available", "status": if ready_new > 0 { "True" } else { "False" }}],
    });
    let k = key("deployments", ns, name);
    if w.objects[&k]["status"] != status {
        // Status writes bump resourceVersion but not generation, as the status subresource.
        let mut d = w.objects[&k].clone();
        d["status"] = status;
        w.store("deployments", ns, name, d);
    }
}
