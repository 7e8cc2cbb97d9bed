//! One synchronous HTTP layer for every API: a timeout on every call, and retries with
//! exponential backoff and jitter for 429, 5xx and transport errors, honouring `Retry-After` and
//! `ratelimit-reset`, bounded by the caller's deadline. Errors name the service and are redacted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use ureq::http;

use crate::redact::redact;

/// Longest single call.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MAX_ATTEMPTS: u32 = 5;
/// Bodies larger than this are refused (no API we call sends more).
const BODY_LIMIT: u64 = 16 << 20;

pub struct Http {
    agent: ureq::Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, and writes that are safe to repeat: retry 429, 5xx and transport errors.
    Idempotent,
    /// A write that may have taken effect even when the answer was lost (e.g. creating a
    /// droplet): retry only a 429, which means the request was refused.
    OnlyRateLimit,
    /// Exactly one attempt.
    Never,
}

pub struct Request<'a> {
    pub service: &'a str,
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    pub retry: Retry,
    /// Per-call timeout cap (also bounded by the deadline).
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    pub fn new(service: &'a str, method: &'static str, url: impl Into<String>) -> Request<'a> {
        Request {
            service,
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            retry: Retry::Idempotent,
            timeout: MAX_CALL_TIMEOUT,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string());
        self.headers
            .push(("content-type", "application/json".into()));
        self
    }

    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// Case-insensitive header lookup.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first bytes of the body, redacted, for error messages.
    pub fn snippet(&self) -> String {
        snippet(&self.body)
    }
}

pub fn snippet(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::redact::redact_and_cut(&flat, 120)
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

/// Which addresses a request may connect to, given the URL's scheme and what its host resolved
/// to; `Err` says why not.
pub type AddressPolicy = Arc<dyn Fn(&str, &[IpAddr]) -> Result<(), String> + Send + Sync>;

/// The system resolver, whose answer must pass the policy: the check is made on the very
/// addresses the connection then uses, so a DNS answer that changes after an earlier check
/// cannot slip through. (ureq's resolver API is `unversioned`: Cargo.lock pins ureq.)
struct Guarded {
    policy: AddressPolicy,
    inner: ureq::unversioned::resolver::DefaultResolver,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guarded")
    }
}

impl ureq::unversioned::resolver::Resolver for Guarded {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        (self.policy)(uri.scheme_str().unwrap_or(""), &ips)
            .map_err(|why| ureq::Error::Other(why.into()))?;
        Ok(addrs)
    }
}

impl Http {
    pub fn new() -> Http {
        Http {
            agent: Self::config().into(),
        }
    }

    /// An agent that connects only where `policy` allows.
    pub fn guarded(policy: AddressPolicy) -> Http {
        let resolver = Guarded {
            policy,
            inner: Default::default(),
        };
        Http {
            agent: ureq::Agent::with_parts(
                Self::config(),
                ureq::unversioned::transport::DefaultConnector::new(),
                resolver,
            ),
        }
    }

    /// An agent with its own TLS settings (a cluster's CA as the only root, a client
    /// certificate) that connects only where `policy` allows.
    pub fn with_tls(tls: ureq::tls::TlsConfig, policy: AddressPolicy) -> Http {
        let resolver = Guarded {
            policy,
            inner: Default::default(),
        };
        let config = Self::builder().tls_config(tls).build();
        Http {
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                resolver,
            ),
        }
    }

    fn config() -> ureq::config::Config {
        Self::builder().build()
    }

    fn builder() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(MAX_CALL_TIMEOUT))
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(concat!("trigger-ops/", env!("CARGO_PKG_VERSION")))
            .max_redirects(0)
    }

    /// Sends `req`, retrying as its policy allows until `deadline`. A non-2xx answer that is
    /// not retried is returned as a `Response` for the caller to interpret.
    pub fn send(&self, req: &Request, deadline: Instant) -> anyhow::Result<Response> {
        let mut attempt = 0u32;
        let mut backoff = FIRST_BACKOFF;
        // The last answer, reported as it was when the deadline ends the retries.
        let mut last: Option<anyhow::Result<Response>> = None;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return match last {
                    Some(Ok(r)) if r.status == 429 => Err(rate_limited(req.service, &r, None)),
                    Some(other) => other,
                    None => Err(anyhow!(
                        "{}: no time left before the task deadline",
                        req.service
                    )),
                };
            }
            let timeout = req.timeout.min(remaining);
            let result = self.once(req, timeout);
            let retryable = match (&result, req.retry) {
                (_, Retry::Never) => false,
                (Ok(r), _) if r.status == 429 => true,
                (_, Retry::OnlyRateLimit) => false,
                (Ok(r), Retry::Idempotent) => r.status >= 500 && r.status != 501,
                (Err(_), Retry::Idempotent) => true,
            };
            if !retryable || attempt >= MAX_ATTEMPTS {
                return match result {
                    Ok(r) if r.status == 429 => Err(rate_limited(req.service, &r, None)),
                    other => other,
                };
            }
            let advised = result.as_ref().ok().and_then(Response::advised_wait);
            let wait = advised.unwrap_or_else(|| jitter(backoff));
            let remaining = deadline.saturating_duration_since(Instant::now());
            if wait >= remaining {
                return match result {
                    Ok(r) if r.status == 429 => Err(rate_limited(req.service, &r, Some(wait))),
                    other => other,
                };
            }
            match &result {
                Ok(r) => log::warn!(
                    "{}: HTTP {} from {} {}; retrying in {:.1}s",
                    req.service,
                    r.status,
                    req.method,
                    shown(&req.url),
                    wait.as_secs_f64()
                ),
                Err(e) => log::warn!(
                    "{}: {e:#}; retrying in {:.1}s",
                    req.service,
                    wait.as_secs_f64()
                ),
            }
            last = Some(result);
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn once(&self, req: &Request, timeout: Duration) -> anyhow::Result<Response> {
        let mut builder = http::Request::builder().method(req.method).uri(&req.url);
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        let body = req.body.clone().unwrap_or_default();
        let request = builder.body(body).map_err(|e| {
            anyhow!(
                "{}: invalid request to {}: {e}",
                req.service,
                shown(&req.url)
            )
        })?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build();
        let mut response = self.agent.run(request).map_err(|e| {
            let what = match &e {
                ureq::Error::Timeout(_) => format!("timed out after {:.1}s", timeout.as_secs_f64()),
                ureq::Error::HostNotFound => "host not found".into(),
                ureq::Error::ConnectionFailed => "connection refused".into(),
                other => other.to_string(),
            };
            anyhow!(
                "cannot reach {} at {}: {}",
                req.service,
                redact(&origin(&req.url)),
                redact(&what)
            )
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| {
                anyhow!(
                    "{}: reading the answer from {} failed: {}",
                    req.service,
                    redact(&origin(&req.url)),
                    redact(&e.to_string())
                )
            })?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The longest wait a server can ask for; longer requests end the retries at the deadline.
const MAX_ADVISED_WAIT: Duration = Duration::from_secs(3600);

impl Response {
    /// `Retry-After` (seconds) or `ratelimit-reset` (epoch seconds) on a 429 or 503. Whatever a
    /// header says (`NaN`, `inf`, `-1`, 20 digits), the answer is a wait within an hour or none.
    pub fn advised_wait(&self) -> Option<Duration> {
        if self.status != 429 && self.status != 503 {
            return None;
        }
        if let Some(secs) = self
            .header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite())
        {
            return Duration::try_from_secs_f64(secs.max(0.0))
                .ok()
                .map(|d| d.min(MAX_ADVISED_WAIT));
        }
        let reset = self
            .header("ratelimit-reset")
            .or_else(|| self.header("x-ratelimit-reset"))?;
        let reset: u64 = reset.trim().parse().ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        // Small values are a delay in seconds, large ones an epoch time.
        let secs = if reset > 1_000_000_000 {
            reset.saturating_sub(now).max(1)
        } else {
            reset
        };
        Some(Duration::from_secs(secs).min(MAX_ADVISED_WAIT))
    }
}

/// A server refused the request outright: a 4xx other than 408 (a timeout proves nothing).
/// Nothing was made, so a name sent in it vouches for nothing afterwards; only a timeout, a
/// transport error or a 5xx can hide a create that happened.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The error for an answer with this status: a [`Refusal`] when the status refuses.
    pub fn or_error(status: u16, message: String) -> anyhow::Error {
        if (400..500).contains(&status) && status != 408 {
            anyhow::Error::new(Refusal { status, message })
        } else {
            anyhow!(message)
        }
    }
}

/// Whether the request was refused outright (see [`Refusal`]).
pub fn refused_outright(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Refusal>().is_some())
}

/// The error for a 429 that ends the retries.
pub fn rate_limited(service: &str, r: &Response, wait: Option<Duration>) -> anyhow::Error {
    let when = wait
        .or_else(|| r.advised_wait())
        .map(|w| {
            format!(
                "; it asks to wait {}s, past this task's deadline",
                w.as_secs()
            )
        })
        .unwrap_or_default();
    Refusal::or_error(429, format!("{service}: rate limited (HTTP 429){when} (lower the cadence in jobs.yaml or raise the plan's limit)"))
}

/// ±25 % jitter without a random-number crate: the clock's nanoseconds are noise enough.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(factor)
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `scheme://host[:port]` of a URL, for messages.
pub fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or(rest);
            let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
            format!("{scheme}://{host}")
        }
        None => url.to_string(),
    }
}

/// A URL as logs show it: the origin and the path, with every path segment that could be a
/// secret (longer than 12 characters: tokens, webhook secrets, check UUIDs, Telegram's
/// `bot<token>`) masked, and no query. Whatever the query, nothing of a secret path shows.
pub fn shown(url: &str) -> String {
    let base = origin(url);
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    let masked: Vec<&str> = path
        .split('/')
        .map(|seg| if seg.chars().count() > 12 { "***" } else { seg })
        .collect();
    redact(&format!("{base}{}", masked.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_mask_secret_segments_whatever_the_query() {
        assert_eq!(
            shown("https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOp?wait=true"),
            "https://discord.com/api/webhooks/***/***"
        );
        assert_eq!(
            shown("https://api.telegram.org/bot123456:ABCdefGHI/sendMessage"),
            "https://api.telegram.org/***/sendMessage"
        );
        assert_eq!(
            shown("https://api.digitalocean.com/v2/droplets?tag_name=x"),
            "https://api.digitalocean.com/v2/droplets"
        );
    }

    #[test]
    fn origin_drops_path_and_credentials() {
        assert_eq!(
            origin("https://u:p@api.example.com:8443/v2/x?y=1"),
            "https://api.example.com:8443"
        );
    }

    #[test]
    fn advised_wait_reads_headers() {
        let r = Response {
            status: 429,
            headers: vec![("Retry-After".into(), "3".into())],
            body: String::new(),
        };
        assert_eq!(r.advised_wait(), Some(Duration::from_secs(3)));
        let r = Response {
            status: 200,
            headers: vec![("Retry-After".into(), "3".into())],
            body: String::new(),
        };
        assert_eq!(r.advised_wait(), None);
    }

    #[test]
    fn no_retry_header_value_panics() {
        for (name, value) in [
            ("Retry-After", "NaN"),
            ("Retry-After", "-nan"),
            ("Retry-After", "inf"),
            ("Retry-After", "-inf"),
            ("Retry-After", "-5"),
            ("Retry-After", "1e308"),
            ("Retry-After", "18446744073709551616"),
            ("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("ratelimit-reset", "18446744073709551615"),
            ("x-ratelimit-reset", "999999999"),
        ] {
            let r = Response {
                status: 429,
                headers: vec![(name.into(), value.into())],
                body: String::new(),
            };
            let wait = r.advised_wait();
            assert!(
                wait.is_none_or(|w| w <= MAX_ADVISED_WAIT),
                "{name}: {value}"
            );
            assert!(rate_limited("api", &r, None)
                .to_string()
                .contains("HTTP 429"));
        }
    }

    #[test]
    fn a_guarded_agent_never_connects_where_its_policy_refuses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let refuse: AddressPolicy =
            Arc::new(|scheme: &str, ips: &[IpAddr]| Err(format!("{scheme} to {ips:?} refused")));
        let req = Request::new("webapp", "GET", &url).retry(Retry::Never);
        let e = Http::guarded(refuse)
            .send(&req, Instant::now() + Duration::from_secs(5))
            .unwrap_err();
        assert!(
            e.to_string().contains("http to [127.0.0.1] refused"),
            "{e:#}"
        );
        assert!(listener.accept().is_err(), "a connection was made");
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let d = jitter(Duration::from_secs(4));
        assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(5));
    }
}
