//! `ops serve`: a read-only HTTP API on loopback, from the state database opened read-only per
//! request: `/healthz`, `/v1/runs?profile=&limit=`, `/v1/alerts?limit=`,
//! `/v1/events?since=&profile=&limit=`, `/v1/status`,
//! `/metrics` (Prometheus text). GET and HEAD only; `limit` capped; secrets never served.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::exit::{config_error, ExitCode};
use crate::redact::redact;
use crate::state::State;
use crate::tasks::supervisor::store;

pub const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 50;

/// Requests answered at once; more wait in a short queue, and beyond it get a quick 503.
const WORKERS: usize = 4;
const QUEUE: usize = 32;
/// Bounds on a request: its line, its headers, and the time to send them.
const MAX_REQUEST_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 16 * 1024;
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Connections still sending their request head, each read by a thread of its own (so idle
/// ones never hold a worker): at most this many in all, and per client address, where a new
/// connection over the bound closes that client's oldest idle one instead of being refused.
const MAX_READING: usize = 256;
const MAX_READING_PER_CLIENT: usize = 16;
/// The whole response must be taken by the client within this.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(5);
/// Responses being sent at once by their own threads; beyond, the worker sends itself.
const MAX_SENDING: usize = 32;
static SENDING: AtomicUsize = AtomicUsize::new(0);

pub fn run(app: &App, listen: &str) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(listen).map_err(|e| {
        config_error(format!(
            "cannot listen on {listen}: {e} (choose another --listen address)"
        ))
    })?;
    let bound = listener.local_addr()?;
    log::info!("serving the read-only API on http://{bound} ({WORKERS} workers)");
    if !bound.ip().is_loopback() {
        log::warn!("serve --listen {listen} is not a loopback address: anyone who can reach {bound} reads the run history, the droplets and the metrics (there is no authentication); listen on 127.0.0.1 and let the scraper or a reverse proxy reach it there");
    }
    let hosts = Hosts::new(listen);
    let (tx, rx) = mpsc::sync_channel::<(TcpStream, Result<Head, HeadError>)>(QUEUE);
    let rx = Mutex::new(rx);
    let reading = Reading::default();
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| loop {
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((stream, head)) = next else { break };
                if let Err(e) = handle(app, &hosts, stream, head) {
                    log::debug!("request failed: {e:#}");
                }
            });
        }
        for stream in listener.incoming() {
            let mut s = match stream {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    continue;
                }
            };
            let Some(ticket) = reading.admit(&s) else {
                busy(s);
                continue;
            };
            let (tx, reading) = (tx.clone(), &reading);
            scope.spawn(move || {
                let head = read_head(&mut s);
                reading.release(ticket);
                if head == Err(HeadError::Gone) {
                    return;
                }
                if let Err(mpsc::TrySendError::Full((s, _))) = tx.try_send((s, head)) {
                    busy(s);
                }
            });
        }
        drop(tx);
    });
    Ok(ExitCode::Success)
}

/// The connections whose request head is being read, by client address.
#[derive(Default)]
struct Reading {
    clients: Mutex<HashMap<IpAddr, VecDeque<(u64, TcpStream)>>>,
    next: AtomicU64,
}

/// One connection in `Reading`.
struct Ticket {
    client: IpAddr,
    id: u64,
}

impl Reading {
    /// Room for one more head, or `None` when `MAX_READING` are being read (then a 503). A
    /// client at its own bound loses its oldest connection: a flood of idle connections from
    /// one address only ever pushes out its own, and a new request still gets in.
    fn admit(&self, stream: &TcpStream) -> Option<Ticket> {
        let client = stream.peer_addr().ok()?.ip();
        let handle = stream.try_clone().ok()?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mine = clients.get(&client).map_or(0, VecDeque::len);
        let total: usize = clients.values().map(VecDeque::len).sum();
        if mine < MAX_READING_PER_CLIENT && total >= MAX_READING {
            return None;
        }
        let queue = clients.entry(client).or_default();
        if queue.len() >= MAX_READING_PER_CLIENT {
            if let Some((_, oldest)) = queue.pop_front() {
                let _ = oldest.shutdown(std::net::Shutdown::Both);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        queue.push_back((id, handle));
        Some(Ticket { client, id })
    }

    fn release(&self, t: Ticket) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = clients.get_mut(&t.client) {
            queue.retain(|(id, _)| *id != t.id);
            if queue.is_empty() {
                clients.remove(&t.client);
            }
        }
    }
}

/// The `Host` values served: loopback names and addresses, the `--listen` host, and the
/// address the client connected to. A DNS rebinding page sends its own name and is refused.
struct Hosts {
    listen: String,
}

impl Hosts {
    fn new(listen: &str) -> Hosts {
        Hosts {
            listen: host_only(listen).to_ascii_lowercase(),
        }
    }

    fn allows(&self, host: &str, local: Option<IpAddr>) -> bool {
        let h = host_only(host).trim_end_matches('.').to_ascii_lowercase();
        if h == "localhost" || h.ends_with(".localhost") || h == self.listen {
            return true;
        }
        match h.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || Some(ip) == local,
            Err(_) => false,
        }
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_only(hostport: &str) -> &str {
    let hp = hostport.trim();
    if let Some(rest) = hp.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hp.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hp,
    }
}

/// Every worker is busy and the queue is full: say so at once instead of waiting.
fn busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq)]
enum HeadError {
    LineTooLong,
    HeadersTooLarge,
    /// Slow, closed or broken: nothing worth answering.
    Gone,
}

/// A request's line and its `Host` headers.
#[derive(Debug, PartialEq)]
struct Head {
    line: String,
    hosts: Vec<String>,
}

/// Reads the request head (line and headers) within `REQUEST_DEADLINE` in all, never more than
/// `MAX_REQUEST_LINE` + `MAX_HEADERS` bytes.
fn read_head(stream: &mut TcpStream) -> Result<Head, HeadError> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            break;
        }
        if head.ends_with(b"\n\n") {
            break;
        }
        let line_end = head.iter().position(|b| *b == b'\n');
        if line_end.map_or(head.len(), |i| i) > MAX_REQUEST_LINE {
            return Err(HeadError::LineTooLong);
        }
        if head.len() > MAX_REQUEST_LINE + MAX_HEADERS {
            return Err(HeadError::HeadersTooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Gone);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Gone)?;
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(HeadError::Gone),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let line = lines.next().unwrap_or_default();
    if line.len() > MAX_REQUEST_LINE {
        return Err(HeadError::LineTooLong);
    }
    let hosts = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim().to_string())
        .collect();
    Ok(Head {
        line: line.trim_end().to_string(),
        hosts,
    })
}

fn handle(
    app: &App,
    hosts: &Hosts,
    mut stream: TcpStream,
    head: Result<Head, HeadError>,
) -> anyhow::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let local = stream.local_addr().ok().map(|a| a.ip());
    let (request_line, refused) = match head {
        Ok(h) if h.hosts.iter().all(|v| hosts.allows(v, local)) => (h.line, None),
        Ok(_) => (String::new(), Some("421 Misdirected Request")),
        Err(HeadError::LineTooLong) => (String::new(), Some("414 URI Too Long")),
        Err(HeadError::HeadersTooLarge) => {
            (String::new(), Some("431 Request Header Fields Too Large"))
        }
        Err(HeadError::Gone) => return Ok(()),
    };
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let reply = if let Some(status) = refused {
        let error = if status.starts_with("421") {
            "unknown Host: ops serve answers only loopback names and its --listen address"
        } else {
            "request too large"
        };
        Reply {
            status,
            content_type: "application/json",
            body: json!({ "error": error }).to_string(),
        }
    } else if method != "GET" && method != "HEAD" {
        Reply {
            status: "405 Method Not Allowed",
            content_type: "application/json",
            body: json!({"error": "read-only API: GET and HEAD only"}).to_string(),
        }
    } else {
        route(app, target).unwrap_or_else(|e| Reply {
            status: "500 Internal Server Error",
            content_type: "application/json",
            body: json!({"error": redact(&format!("{e:#}"))}).to_string(),
        })
    };
    let body = redact(&reply.body);
    let extra = if method != "GET" && method != "HEAD" && refused.is_none() {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    // HEAD: the GET's head (its length included), no body (RFC 9110 §9.3.2).
    let shown = if method == "HEAD" { "" } else { body.as_str() };
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n{shown}",
        reply.status,
        reply.content_type,
        body.len()
    );
    // The sending is handed to a thread of its own (at most MAX_SENDING at once), so a client
    // that reads slowly holds a sender, never one of the workers that answer requests.
    if SENDING.fetch_add(1, Ordering::SeqCst) < MAX_SENDING {
        std::thread::spawn(move || {
            if let Err(e) = send_within(&mut stream, response.as_bytes(), RESPONSE_DEADLINE) {
                log::debug!("response not delivered: {e:#}");
            }
            SENDING.fetch_sub(1, Ordering::SeqCst);
        });
        return Ok(());
    }
    SENDING.fetch_sub(1, Ordering::SeqCst);
    send_within(&mut stream, response.as_bytes(), RESPONSE_DEADLINE)
}

/// Writes `bytes` with one deadline for the whole response, not per system call: a client that
/// reads slowly is cut off when it passes, and the worker is free again.
fn send_within(stream: &mut TcpStream, bytes: &[u8], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut sent = 0;
    while sent < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            anyhow::bail!(
                "client too slow: {sent} of {} bytes in {within:?}",
                bytes.len()
            );
        }
        stream.set_write_timeout(Some(left))?;
        let end = (sent + 16 * 1024).min(bytes.len());
        match stream.write(&bytes[sent..end]) {
            Ok(0) => anyhow::bail!("client closed the connection"),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Err(e.into());
            }
        }
    }
    stream.flush()?;
    Ok(())
}

fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn limit(target: &str) -> u32 {
    query(target, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT)
}

fn json_reply(v: serde_json::Value) -> Reply {
    Reply {
        status: "200 OK",
        content_type: "application/json",
        body: v.to_string(),
    }
}

fn route(app: &App, target: &str) -> anyhow::Result<Reply> {
    let path = target.split('?').next().unwrap_or("/");
    let state = State::open_read_only(&app.state_dir)?;
    Ok(match path {
        "/healthz" => json_reply(json!({"schema_version": crate::summary::SCHEMA_VERSION, "ok": true, "state": state.is_some()})),
        "/v1/runs" => {
            let profile = query(target, "profile").filter(|p| !p.is_empty());
            let runs = match &state {
                Some(s) => s.history(profile, limit(target))?,
                None => Vec::new(),
            };
            json_reply(json!({"schema_version": crate::summary::SCHEMA_VERSION, "runs": runs, "limit": limit(target)}))
        }
        "/v1/alerts" => {
            let alerts = match &state {
                Some(s) => s.alerts(None, limit(target))?,
                None => Vec::new(),
            };
            json_reply(json!({"schema_version": crate::summary::SCHEMA_VERSION, "alerts": alerts, "limit": limit(target)}))
        }
        "/v1/events" => {
            let since = match query(target, "since").filter(|s| !s.is_empty()) {
                Some(s) => match crate::duration::since(s, crate::state::now_ms()) {
                    Ok(ms) => Some(ms),
                    Err(e) => return Ok(Reply { status: "400 Bad Request", content_type: "application/json", body: json!({"error": e}).to_string() }),
                },
                None => None,
            };
            let profile = query(target, "profile").filter(|p| !p.is_empty());
            let events = match &state {
                Some(s) => s.events(since, profile, limit(target))?,
                None => Vec::new(),
            };
            json_reply(json!({"schema_version": crate::summary::SCHEMA_VERSION, "events": events, "limit": limit(target)}))
        }
        "/v1/status" => json_reply(crate::status::document(app, state.as_ref())?),
        "/metrics" => Reply { status: "200 OK", content_type: "text/plain; version=0.0.4", body: metrics(app, state.as_ref())? },
        _ => Reply { status: "404 Not Found", content_type: "application/json", body: json!({"error": "not found", "endpoints": ["/healthz", "/v1/runs", "/v1/alerts", "/v1/events", "/v1/status", "/metrics"]}).to_string() },
    })
}

/// A label's value: escaped as every output line is (no control character), then as the
/// exposition format asks (backslash and quote).
fn label(v: &str) -> String {
    crate::redact::line(v)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

fn metrics(app: &App, state: Option<&State>) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str("# HELP ops_build_info The ops binary serving these metrics (always 1).\n# TYPE ops_build_info gauge\n");
    let _ = writeln!(
        out,
        "ops_build_info{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
    let Some(state) = state else {
        out.push_str("# no state database yet\n");
        return Ok(out);
    };
    profile_metrics(app, state, &mut out)?;
    out.push_str("# HELP ops_task_failures_total Failed task results recorded since the state database was created (pruning never lowers it).\n# TYPE ops_task_failures_total counter\n");
    for (profile, task, n) in state.task_failures()? {
        let _ = writeln!(
            out,
            "ops_task_failures_total{{profile=\"{}\",task=\"{}\"}} {n}",
            label(&profile),
            label(&task)
        );
    }
    breaker_metrics(app, state, &mut out)?;
    alert_and_slot_metrics(state, &mut out)?;
    supervisor_metrics(state, &mut out)?;
    Ok(out)
}

/// Each profile's last run, its tasks and its state (streak, disabled, period).
fn profile_metrics(app: &App, state: &State, out: &mut String) -> anyhow::Result<()> {
    out.push_str("# HELP ops_last_run_timestamp_seconds Start of the last run of a profile, by its status.\n# TYPE ops_last_run_timestamp_seconds gauge\n");
    let mut durations = String::new();
    let mut streaks = String::new();
    let mut disabled = String::new();
    let mut auto = String::new();
    let mut periods = String::new();
    let mut task_ok = String::new();
    let now = chrono::Local::now().naive_local();
    for p in &app.config.profiles {
        let name = label(&p.name);
        if let Some(r) = state.history(Some(&p.name), 1)?.into_iter().next() {
            let _ = writeln!(
                out,
                "ops_last_run_timestamp_seconds{{profile=\"{name}\",status=\"{}\"}} {:.3}",
                label(&r.status),
                r.started_at as f64 / 1000.0
            );
            if let Some(f) = r.finished_at {
                let _ = writeln!(
                    durations,
                    "ops_run_duration_seconds{{profile=\"{name}\"}} {:.3}",
                    (f - r.started_at).max(0) as f64 / 1000.0
                );
            }
            for t in &r.tasks {
                let _ = writeln!(
                    task_ok,
                    "ops_task_last_ok{{profile=\"{name}\",task=\"{}\",kind=\"{}\"}} {}",
                    label(&t.task),
                    label(&t.kind),
                    u8::from(t.status != "failed")
                );
            }
        }
        let ps = crate::profiles::ProfileState::load(state, &p.name);
        let _ = writeln!(
            streaks,
            "ops_profile_healthy_streak{{profile=\"{name}\"}} {}",
            ps.healthy_streak
        );
        let _ = writeln!(
            disabled,
            "ops_profile_disabled{{profile=\"{name}\"}} {}",
            u8::from(ps.disabled)
        );
        let _ = writeln!(
            auto,
            "ops_profile_auto_disabled{{profile=\"{name}\"}} {}",
            u8::from(ps.auto_disabled)
        );
        if p.enabled {
            let _ = writeln!(
                periods,
                "ops_profile_period_seconds{{profile=\"{name}\"}} {}",
                longest_gap(&p.cron, now)
            );
        }
    }
    for (metric, help, kind, body) in [
        ("ops_run_duration_seconds", "Duration of the last run of a profile.", "gauge", &durations),
        ("ops_profile_healthy_streak", "Consecutive ok runs of a profile.", "gauge", &streaks),
        ("ops_profile_disabled", "1 when a profile is disabled in state (by hand or automatically).", "gauge", &disabled),
        ("ops_profile_auto_disabled", "1 when a profile disabled itself (AUTO_DISABLE) until ops enable.", "gauge", &auto),
        ("ops_profile_period_seconds", "The longest gap between two scheduled runs of an enabled profile (its cron), over the next week.", "gauge", &periods),
        ("ops_task_last_ok", "1 when the task did not fail in the profile's last run.", "gauge", &task_ok),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        out.push_str(body);
    }
    Ok(())
}

/// Undelivered alerts per channel, and what the replication slot retains.
fn alert_and_slot_metrics(state: &State, out: &mut String) -> anyhow::Result<()> {
    out.push_str("# HELP ops_alert_delivery_failures_total Alerts a channel did not accept (each attempt counted once).\n# TYPE ops_alert_delivery_failures_total counter\n");
    for channel in crate::notify::CHANNELS {
        let _ = writeln!(
            out,
            "ops_alert_delivery_failures_total{{channel=\"{channel}\"}} {}",
            state.counter(&crate::notify::delivery_failures_key(channel))?
        );
    }
    if let Some((slot, _)) = crate::tasks::replication::saved_slot(state) {
        if let Some(bytes) = slot.retained {
            out.push_str("# HELP ops_replication_slot_retained_bytes WAL the replication slot keeps from being recycled, as of the last replication check.\n# TYPE ops_replication_slot_retained_bytes gauge\n");
            let _ = writeln!(
                out,
                "ops_replication_slot_retained_bytes{{slot=\"{}\"}} {bytes}",
                label(&slot.slot)
            );
        }
    }
    Ok(())
}

/// The droplets' health and last heartbeats, and the queues, as the last health run saw them.
fn supervisor_metrics(state: &State, out: &mut String) -> anyhow::Result<()> {
    out.push_str("# HELP ops_supervisor_healthy 1 when the droplet passed its last health check.\n# TYPE ops_supervisor_healthy gauge\n");
    if let Some((droplets, checked_at)) = store::last_droplets(state)? {
        for d in droplets.iter().filter(|d| !d.deleted) {
            let _ = writeln!(
                out,
                "ops_supervisor_healthy{{droplet=\"{}\"}} {}",
                label(&d.name),
                u8::from(d.health == "healthy")
            );
        }
        // A time, not an age: an age is frozen at the check, `time() - ts` keeps growing
        // when the checks stop.
        out.push_str("# HELP ops_supervisor_last_heartbeat_timestamp_seconds When the webapp last heard the droplet's supervisor, as of ops's last check.\n# TYPE ops_supervisor_last_heartbeat_timestamp_seconds gauge\n");
        for d in droplets.iter().filter(|d| !d.deleted) {
            if let Some(age) = d.heartbeat_age_secs {
                let _ = writeln!(
                    out,
                    "ops_supervisor_last_heartbeat_timestamp_seconds{{droplet=\"{}\"}} {:.3}",
                    label(&d.name),
                    checked_at as f64 / 1000.0 - age
                );
            }
        }
        drain_metrics(out, &droplets);
        disk_metrics(out, &droplets);
    }
    if let Some((sc, _)) = store::scale(state)? {
        scale_metrics(out, &sc);
    }
    if let Some(b) = crate::tasks::supervisor::image::stored(Some(state)) {
        image_metrics(out, &b);
    }
    if let Some((q, _)) = store::queue(state)? {
        queue_metrics(out, &q);
    }
    if let Some((k, checked_at)) = store::kubernetes(state)? {
        kubernetes_metrics(out, &k, checked_at);
    }
    Ok(())
}

/// The supervisor pods' heartbeats and the run pods waiting for a node (`platform: kubernetes`).
fn kubernetes_metrics(out: &mut String, k: &store::KubernetesStatus, checked_at: i64) {
    out.push_str("# HELP ops_supervisor_kubernetes_healthy 1 when the supervisor on Kubernetes heartbeats and its rollout is done.\n# TYPE ops_supervisor_kubernetes_healthy gauge\n");
    let _ = writeln!(
        out,
        "ops_supervisor_kubernetes_healthy{{namespace=\"{}\"}} {}",
        label(&k.namespace),
        u8::from(k.health == "healthy")
    );
    out.push_str("# HELP ops_supervisor_kubernetes_pod_heartbeat_timestamp_seconds When the webapp last heard each supervisor pod, as of ops's last check.\n# TYPE ops_supervisor_kubernetes_pod_heartbeat_timestamp_seconds gauge\n");
    for p in &k.supervisors {
        if let Some(age) = p.heartbeat_age_secs {
            let _ = writeln!(
                out,
                "ops_supervisor_kubernetes_pod_heartbeat_timestamp_seconds{{pod=\"{}\"}} {:.3}",
                label(&p.name),
                checked_at as f64 / 1000.0 - age
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ops_supervisor_kubernetes_run_pods_pending Run pods waiting for a node longer than pending_after.\n# TYPE ops_supervisor_kubernetes_run_pods_pending gauge\nops_supervisor_kubernetes_run_pods_pending {}",
        k.pending.len()
    );
    if let Some(d) = &k.doks {
        doks_metrics(out, d);
    }
}

/// The DOKS cluster's node pools (nodes now, min, max) and what it costs a month.
fn doks_metrics(out: &mut String, d: &store::DoksStatus) {
    let cluster = label(&d.cluster);
    let _ = writeln!(
        out,
        "# HELP ops_supervisor_doks_cluster_running 1 when DigitalOcean reports the cluster running.\n# TYPE ops_supervisor_doks_cluster_running gauge\nops_supervisor_doks_cluster_running{{cluster=\"{cluster}\",version=\"{}\"}} {}",
        label(&d.version),
        u8::from(d.state == "running")
    );
    for (name, help, value) in [
        ("nodes", "Nodes in each node pool now.", 0),
        (
            "min_nodes",
            "The fewest nodes the autoscaler keeps in each node pool.",
            1,
        ),
        (
            "max_nodes",
            "The most nodes the autoscaler may run in each node pool.",
            2,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP ops_supervisor_doks_pool_{name} {help}\n# TYPE ops_supervisor_doks_pool_{name} gauge"
        );
        for p in &d.pools {
            let v = [p.nodes, p.min, p.max][value];
            let _ = writeln!(
                out,
                "ops_supervisor_doks_pool_{name}{{cluster=\"{cluster}\",pool=\"{}\",size=\"{}\"}} {v}",
                label(&p.name),
                label(&p.size)
            );
        }
    }
    if let Some(cost) = d.monthly_cost_usd {
        let _ = writeln!(
            out,
            "# HELP ops_supervisor_doks_cost_monthly_dollars The cluster's nodes at their sizes' monthly prices, plus the HA control plane.\n# TYPE ops_supervisor_doks_cost_monthly_dollars gauge\nops_supervisor_doks_cost_monthly_dollars{{cluster=\"{cluster}\"}} {cost:.2}"
        );
    }
}

/// Whether new droplets start from a baked image, and what our images cost.
fn image_metrics(out: &mut String, b: &crate::tasks::supervisor::image::Baked) {
    let _ = writeln!(
        out,
        "# HELP ops_supervisor_baked_image_ready 1 when new droplets start from a baked image of the wanted version.\n# TYPE ops_supervisor_baked_image_ready gauge\nops_supervisor_baked_image_ready {}",
        u8::from(b.image.is_some())
    );
    let _ = writeln!(
        out,
        "# HELP ops_supervisor_images_cost_monthly_dollars The storage cost of ops' baked images per month.\n# TYPE ops_supervisor_images_cost_monthly_dollars gauge\nops_supervisor_images_cost_monthly_dollars {:.2}",
        b.cost_monthly()
    );
}

/// The fleet's wanted and actual size, its bounds and its cost.
fn scale_metrics(out: &mut String, sc: &store::ScaleStatus) {
    let _ = write!(
        out,
        "# HELP ops_supervisor_droplets_wanted Droplets the load wants (clamped to min and max).\n# TYPE ops_supervisor_droplets_wanted gauge\nops_supervisor_droplets_wanted {}\n# HELP ops_supervisor_droplets_serving Droplets serving (not draining).\n# TYPE ops_supervisor_droplets_serving gauge\nops_supervisor_droplets_serving {}\n# HELP ops_supervisor_droplets_min The fleet's lower bound.\n# TYPE ops_supervisor_droplets_min gauge\nops_supervisor_droplets_min {}\n# HELP ops_supervisor_droplets_max The fleet's upper bound.\n# TYPE ops_supervisor_droplets_max gauge\nops_supervisor_droplets_max {}\n",
        sc.wanted, sc.actual, sc.min, sc.max
    );
    let _ = write!(
        out,
        "# HELP ops_supervisor_capped_runs Runs that could start and waited past capped_alert_after while the fleet was at max or the account's droplet limit (0: none).\n# TYPE ops_supervisor_capped_runs gauge\nops_supervisor_capped_runs {}\n",
        sc.capped.as_ref().map_or(0, |c| c.runs)
    );
    if let Some(c) = sc.cost_monthly {
        let _ = write!(
            out,
            "# HELP ops_supervisor_cost_monthly_dollars The serving droplets' price per month (DigitalOcean's price_monthly).\n# TYPE ops_supervisor_cost_monthly_dollars gauge\nops_supervisor_cost_monthly_dollars {c}\n"
        );
    }
}

/// Runs per droplet and which droplets drain.
fn drain_metrics(out: &mut String, droplets: &[store::DropletStatus]) {
    out.push_str("# HELP ops_supervisor_executing_runs Runs executing on the droplet per the webapp's database.\n# TYPE ops_supervisor_executing_runs gauge\n");
    for d in droplets.iter().filter(|d| !d.deleted) {
        if let Some(n) = d.executing_runs {
            let _ = writeln!(
                out,
                "ops_supervisor_executing_runs{{droplet=\"{}\"}} {n}",
                label(&d.name)
            );
        }
    }
    out.push_str("# HELP ops_supervisor_draining 1 while the droplet drains (told to stop taking runs; deleted once idle).\n# TYPE ops_supervisor_draining gauge\n");
    for d in droplets.iter().filter(|d| !d.deleted) {
        let _ = writeln!(
            out,
            "ops_supervisor_draining{{droplet=\"{}\"}} {}",
            label(&d.name),
            u8::from(d.draining)
        );
    }
}

/// Each droplet's free share of its root filesystem, and the bytes, as last read (droplets
/// not read yet, or with no samples, have none).
fn disk_metrics(out: &mut String, droplets: &[store::DropletStatus]) {
    use store::DiskStatus;
    let read: Vec<(&str, &DiskStatus)> = droplets
        .iter()
        .filter(|d| !d.deleted)
        .filter_map(|d| Some((d.name.as_str(), d.disk.as_ref()?)))
        .filter(|(_, k)| k.free_ratio.is_some())
        .collect();
    type Gauge = (
        &'static str,
        &'static str,
        fn(&DiskStatus) -> Option<String>,
    );
    let gauges: [Gauge; 3] = [
        (
            "ops_supervisor_disk_free_ratio",
            "Free share of the droplet's root filesystem (DigitalOcean's monitoring, read at most every 20 minutes; the task fails below 0.1).",
            |k| k.free_ratio.map(|r| r.to_string()),
        ),
        (
            "ops_supervisor_disk_free_bytes",
            "Bytes free on the droplet's root filesystem.",
            |k| k.free_bytes.map(|b| b.to_string()),
        ),
        (
            "ops_supervisor_disk_size_bytes",
            "Size of the droplet's root filesystem in bytes.",
            |k| k.size_bytes.map(|b| b.to_string()),
        ),
    ];
    for (metric, help, value) in gauges {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for (name, k) in &read {
            if let Some(v) = value(k) {
                let _ = writeln!(out, "{metric}{{droplet=\"{}\"}} {v}", label(name));
            }
        }
    }
}

/// Every managed queue with waiting runs (ours always), and whether runs reach our group.
fn queue_metrics(out: &mut String, q: &store::QueueStatus) {
    // Earlier versions kept only our queue's age: show it the same way.
    let rows: Vec<(String, u64, f64, bool)> = if q.queues.is_empty() {
        vec![(
            q.master_queue.clone(),
            0,
            q.oldest_pending_secs.unwrap_or(0.0),
            true,
        )]
    } else {
        q.queues
            .iter()
            .map(|r| {
                (
                    r.queue.clone(),
                    r.pending,
                    r.oldest_pending_secs.unwrap_or(0.0),
                    r.served,
                )
            })
            .collect()
    };
    out.push_str("# HELP ops_queue_oldest_pending_seconds Wait since queueing of the oldest PENDING run in a managed worker group's queue (0 when none waits).\n# TYPE ops_queue_oldest_pending_seconds gauge\n");
    for (queue, _, oldest, _) in &rows {
        let _ = writeln!(
            out,
            "ops_queue_oldest_pending_seconds{{queue=\"{}\"}} {:.3}",
            label(queue),
            oldest.max(0.0)
        );
    }
    out.push_str("# HELP ops_queue_pending_runs PENDING runs seen in a managed worker group's queue.\n# TYPE ops_queue_pending_runs gauge\n");
    for (queue, pending, _, _) in &rows {
        let _ = writeln!(
            out,
            "ops_queue_pending_runs{{queue=\"{}\"}} {pending}",
            label(queue)
        );
    }
    out.push_str("# HELP ops_queue_served 1 when some supervisor of the queue's group heartbeated within stale_after.\n# TYPE ops_queue_served gauge\n");
    for (queue, _, _, served) in &rows {
        let _ = writeln!(
            out,
            "ops_queue_served{{queue=\"{}\"}} {}",
            label(queue),
            u8::from(*served)
        );
    }
    if let Some(r) = &q.routing {
        out.push_str("# HELP ops_worker_group_receives_runs 1 when deployed runs are routed to the group our supervisors serve.\n# TYPE ops_worker_group_receives_runs gauge\n");
        let _ = writeln!(
            out,
            "ops_worker_group_receives_runs{{worker_group=\"{}\"}} {}",
            label(&q.worker_group),
            u8::from(r.ours_receives)
        );
    }
}

/// The longest gap between two consecutive scheduled times over the next week (at least one
/// run apart): what "twice its period" means for an alert on a profile that stopped running.
fn longest_gap(cron: &crate::schedule::Cron, from: chrono::NaiveDateTime) -> i64 {
    let end = from + chrono::Duration::days(8);
    let mut t = from;
    let mut prev: Option<chrono::NaiveDateTime> = None;
    let mut longest = 0;
    for _ in 0..20_000 {
        let Some(next) = cron.next_after(t) else {
            break;
        };
        if let Some(p) = prev {
            longest = longest.max((next - p).num_seconds());
        }
        if next > end {
            break;
        }
        prev = Some(next);
        t = next;
    }
    longest.max(60)
}

/// The supervisor's circuit breaker: open or not, replacements in its window, all counted.
fn breaker_metrics(app: &App, state: &State, out: &mut String) -> anyhow::Result<()> {
    use store::REPLACEMENTS_COUNTER;
    let opts = app
        .config
        .profiles
        .iter()
        .flat_map(|p| &p.tasks)
        .find_map(|t| match &t.spec {
            crate::config::TaskSpec::Supervisor(o) => Some(o.clone()),
            _ => None,
        });
    out.push_str("# HELP ops_supervisor_replacements_total Supervisor droplets replaced (each counted once, as the circuit breaker counts them).\n# TYPE ops_supervisor_replacements_total counter\n");
    let _ = writeln!(
        out,
        "ops_supervisor_replacements_total {}",
        state.counter(REPLACEMENTS_COUNTER)?
    );
    let Some(opts) = opts else { return Ok(()) };
    let breaker = store::breaker(state)?;
    let recent = breaker.recent(crate::state::now_ms(), opts.replacement_window);
    out.push_str("# HELP ops_supervisor_replacements_in_window Replacements the circuit breaker counts now (within replacement_window).\n# TYPE ops_supervisor_replacements_in_window gauge\n");
    let _ = writeln!(out, "ops_supervisor_replacements_in_window {recent}");
    out.push_str("# HELP ops_supervisor_breaker_open 1 when the circuit breaker stops replacements (max_replacements reached).\n# TYPE ops_supervisor_breaker_open gauge\n");
    let _ = writeln!(
        out,
        "ops_supervisor_breaker_open {}",
        u8::from(recent as u32 >= opts.max_replacements)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_served_are_loopback_the_listen_address_and_the_one_connected_to() {
        let hosts = Hosts::new("0.0.0.0:9464");
        let local: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
        for ok in [
            "localhost",
            "localhost:9464",
            "grafana.localhost",
            "127.0.0.1:9464",
            "127.9.9.9",
            "[::1]:9464",
            "10.1.2.3:9464",
            "0.0.0.0:9464",
        ] {
            assert!(hosts.allows(ok, local), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9464",
            "10.1.2.4",
            "localhost.evil.example",
            "",
        ] {
            assert!(!hosts.allows(refused, local), "{refused}");
        }
        let named = Hosts::new("ops.internal:9464");
        assert!(named.allows("OPS.internal:9464", None));
        assert_eq!(host_only("[fd00::1]:80"), "fd00::1");
        assert_eq!(host_only("fd00::1"), "fd00::1");
    }
}
