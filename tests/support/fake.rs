//! A tiny in-process HTTP server for fakes: each request is handed to a closure that returns
//! (status, headers, body); every request is logged for assertions.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.into(),
        }
    }

    pub fn with_body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub type Handler = Box<dyn FnMut(&Seen) -> Reply + Send>;

pub struct FakeServer {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
}

impl FakeServer {
    pub fn start(ip: IpAddr, handler: Handler) -> FakeServer {
        Self::start_on(ip, 0, handler)
    }

    pub fn start_on(ip: IpAddr, port: u16, mut handler: Handler) -> FakeServer {
        super::netns::ensure();
        let server = Arc::new(tiny_http::Server::http((ip, port)).expect("bind fake server"));
        let addr = match server.server_addr().to_ip() {
            Some(a) => a.to_string(),
            None => panic!("fake server has no IP address"),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (srv, log) = (Arc::clone(&server), Arc::clone(&seen));
        thread::spawn(move || {
            for mut req in srv.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let s = Seen {
                    method: req.method().to_string(),
                    path: req.url().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                };
                log.lock().unwrap().push(s.clone());
                let reply = handler(&s);
                let mut resp =
                    tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
                for (k, v) in reply.headers {
                    if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                        resp.add_header(h);
                    }
                }
                let _ = req.respond(resp);
            }
        });
        FakeServer { addr, seen, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

pub fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A private (RFC 1918) local address, for a fake webapp ops may send its admin token to over
/// plain http: 10.77.0.2, on the test namespace's `lo` (scripts/test.sh adds it).
pub fn private() -> IpAddr {
    super::netns::address(super::netns::PRIVATE)
}

/// A public-looking local address (TEST-NET-1, not private), for a fake webapp on plain http
/// that must never receive a token: 192.0.2.77, on the test namespace's `lo`.
pub fn public_looking() -> IpAddr {
    super::netns::address(super::netns::PUBLIC_LOOKING)
}
