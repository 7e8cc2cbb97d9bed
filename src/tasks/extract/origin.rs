//! The webapp's API origin as ops accepts it, and where ops may send a request or the admin
//! token, decided on the addresses the origin resolves to (pure: `mod.rs` resolves).
//!
//! Whoever can edit the webapp's Railway variables chooses `API_ORIGIN`; ops sends a health
//! check there and, when it creates a worker group, an instance-wide admin token. So the origin
//! is `http(s)://host[:port]` and nothing more (no path, query, fragment or credentials, no
//! ambiguous numeric host such as `2130706433`); it never resolves to a link-local (cloud
//! metadata), unspecified or IPv4-mapped address; and the admin token goes over https, or over
//! plain http only to loopback or private addresses (Railway's private network included).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A parsed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// Lowercase, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// The host when it is an address literal.
    pub ip: Option<IpAddr>,
}

/// How far an address reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    Loopback,
    /// RFC 1918, shared (100.64/10) and unique-local IPv6 (Railway's private network).
    Private,
    Public,
}

/// What resolving the origin's host gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The least public of the addresses.
    Reach(Reach),
    /// An address ops never sends to; the line says which and why.
    Forbidden(String),
    /// The host did not resolve (the line says so).
    Unresolved(String),
}

/// The host and the port's text of an authority (`[v6]:port`, `host:port`, `host`), or why
/// it is malformed.
fn host_and_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    let Some(v6) = authority.strip_prefix('[') else {
        return Ok(match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        });
    };
    let (addr, after) = v6.split_once(']').ok_or("has an unclosed IPv6 address")?;
    let port = match after {
        "" => None,
        p => Some(
            p.strip_prefix(':')
                .ok_or("has text after its IPv6 address")?,
        ),
    };
    Ok((addr, port))
}

/// `http(s)://host[:port]`, or the line that says what is wrong and how to fix it.
pub fn parse(origin: &str, service: &str) -> Result<Origin, String> {
    let refuse = |why: &str| {
        format!("API origin {origin:?} from {service:?} {why}: set API_ORIGIN (or APP_ORIGIN) there to scheme://host[:port] only, e.g. https://trigger.example.com")
    };
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| refuse("is not an http(s) URL"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(refuse("is not an http(s) URL")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !tail.is_empty() {
        return Err(refuse("has a path, query or fragment"));
    }
    if authority.contains('@') {
        return Err(refuse("carries credentials"));
    }
    let (host, port) = host_and_port(authority).map_err(refuse)?;
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0 && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| refuse("has an invalid port"))?,
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty() {
        return Err(refuse("has no host"));
    }
    let ip = if authority.starts_with('[') {
        Some(IpAddr::V6(
            host.parse::<Ipv6Addr>()
                .map_err(|_| refuse("has an invalid IPv6 address"))?,
        ))
    } else if host
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(refuse("has a host that is not a DNS name"));
    } else if looks_numeric(&host) {
        // The URL standard reads a host whose last label is a number as IPv4 (`2130706433`,
        // `0x7f.1`, `127.1`): only the plain dotted quad is accepted, so what ops checks is
        // what the resolver connects to.
        Some(IpAddr::V4(host.parse::<Ipv4Addr>().map_err(|_| {
            refuse("has a numeric host that is not a dotted-quad IPv4 address")
        })?))
    } else {
        None
    };
    Ok(Origin {
        https,
        host,
        port,
        ip,
    })
}

fn looks_numeric(host: &str) -> bool {
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    !last.is_empty()
        && (last.chars().all(|c| c.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit())))
}

/// The class of one address; `Err` names why ops never sends there.
pub fn classify(ip: IpAddr) -> Result<Reach, &'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                Err("an unspecified address")
            } else if v6.is_loopback() {
                Ok(Reach::Loopback)
            } else if v6.to_ipv4_mapped().is_some() || (s[..6] == [0; 6]) {
                Err("an IPv4-mapped or -compatible IPv6 address")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                Err("a NAT64 address (an IPv4 address in disguise)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Err("a link-local address")
            } else if v6.is_multicast() {
                Err("a multicast address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Ok(Reach::Private)
            } else {
                Ok(Reach::Public)
            }
        }
    }
}

fn classify_v4(v4: Ipv4Addr) -> Result<Reach, &'static str> {
    let o = v4.octets();
    if v4.is_unspecified() || o[0] == 0 {
        Err("an unspecified address")
    } else if v4.is_link_local() {
        Err("a link-local address (the cloud metadata service lives there)")
    } else if v4.is_multicast() || v4.is_broadcast() {
        Err("a multicast or broadcast address")
    } else if v4.is_loopback() {
        Ok(Reach::Loopback)
    } else if v4.is_private() || (o[0] == 100 && o[1] & 0xc0 == 64) {
        Ok(Reach::Private)
    } else {
        Ok(Reach::Public)
    }
}

/// Every address must be allowed (the client may connect to any of them); the least public wins.
pub fn resolution(origin: &str, addrs: Result<Vec<IpAddr>, String>) -> Resolution {
    let addrs = match addrs {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => return Resolution::Unresolved(format!("{origin}: its host has no address")),
        Err(why) => return Resolution::Unresolved(format!("{origin}: {why}")),
    };
    let mut least = Reach::Public;
    for ip in addrs {
        match classify(ip) {
            Ok(r) => least = least.min(r),
            Err(why) => {
                return Resolution::Forbidden(format!(
                    "API origin {origin} resolves to {ip}, {why}: ops sends nothing there (set API_ORIGIN to the webapp's public https:// URL)"
                ))
            }
        }
    }
    Resolution::Reach(least)
}

/// Whether TRIGGER_ADMIN_TOKEN may go to `origin`, after its checks (`failures`) ran.
pub fn admin_token_allowed(
    shown: &str,
    origin: &Origin,
    res: &Resolution,
    failures: &[String],
) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("TRIGGER_ADMIN_TOKEN is not sent to {shown}: {why}"));
    if !failures.is_empty() {
        return refuse("the origin's checks failed (above); fix them first");
    }
    match res {
        Resolution::Forbidden(why) | Resolution::Unresolved(why) => refuse(why),
        Resolution::Reach(Reach::Public) if !origin.https => refuse(
            "plain http to a public address would hand an instance-wide admin token to anyone on the path; set API_ORIGIN to the webapp's https:// URL (plain http is accepted only to loopback or private addresses, e.g. *.railway.internal)",
        ),
        Resolution::Reach(_) => Ok(()),
    }
}

/// Checked again by the HTTP client on the addresses it connects to (so a DNS answer that
/// changed since the checks above changes nothing): never a forbidden or loopback address, and
/// with the admin token plain http only to private ones.
pub fn connect_allowed(scheme: &str, ips: &[IpAddr], admin_token: bool) -> Result<(), String> {
    let https = scheme.eq_ignore_ascii_case("https");
    match resolution("the webapp's host", Ok(ips.to_vec())) {
        Resolution::Forbidden(why) | Resolution::Unresolved(why) => Err(why),
        Resolution::Reach(Reach::Loopback) => Err(
            "the webapp's host resolves to a loopback address: ops asks no service on its own host".into(),
        ),
        Resolution::Reach(Reach::Public) if admin_token && !https => Err(
            "the webapp's host resolves to a public address and the URL is plain http: TRIGGER_ADMIN_TOKEN is not sent".into(),
        ),
        Resolution::Reach(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let o = parse("https://Trigger.Example.com", "w").unwrap();
        assert_eq!(
            (o.https, o.host.as_str(), o.port, o.ip),
            (true, "trigger.example.com", 443, None)
        );
        let o = parse("http://10.0.0.5:3000", "w").unwrap();
        assert_eq!((o.port, o.ip), (3000, Some("10.0.0.5".parse().unwrap())));
        let o = parse("http://[fd12::1]:3000", "w").unwrap();
        assert_eq!(o.ip, Some("fd12::1".parse().unwrap()));
        for (bad, why) in [
            (
                "http://[::ffff:127.0.0.1]:18005/latest/meta-data?",
                "path, query or fragment",
            ),
            ("http://a.example.com?", "path, query or fragment"),
            ("http://a.example.com#x", "path, query or fragment"),
            ("https://a.example.com/api", "path, query or fragment"),
            ("http://2130706433:18005", "numeric host"),
            ("http://0x7f.1", "numeric host"),
            ("http://127.1", "numeric host"),
            ("http://0177.0.0.1", "numeric host"),
            ("http://user:pw@a.example.com", "credentials"),
            ("http://a.example.com:0", "invalid port"),
            ("http://a.example.com:99999", "invalid port"),
            ("http://a.example.com:", "invalid port"),
            ("http://[::1", "unclosed"),
            ("http://[::1]x", "after its IPv6"),
            ("http://a%2eexample.com", "not a DNS name"),
            ("ftp://a.example.com", "not an http(s) URL"),
            ("a.example.com", "not an http(s) URL"),
            ("https://", "no host"),
        ] {
            let e = parse(bad, "w").unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("set API_ORIGIN"), "{e}");
        }
    }

    #[test]
    fn addresses_ops_never_sends_to() {
        for ip in [
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert!(classify(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for (ip, reach) in [
            ("127.0.0.1", Reach::Loopback),
            ("::1", Reach::Loopback),
            ("10.1.2.3", Reach::Private),
            ("172.16.0.1", Reach::Private),
            ("192.168.1.1", Reach::Private),
            ("100.64.0.1", Reach::Private),
            ("fd12:3456::1", Reach::Private),
            ("192.0.2.77", Reach::Public),
            ("203.0.113.9", Reach::Public),
            ("2606:4700::1", Reach::Public),
        ] {
            assert_eq!(classify(ip.parse().unwrap()), Ok(reach), "{ip}");
        }
    }

    #[test]
    fn one_forbidden_address_forbids_the_origin() {
        let ips = |v: &[&str]| Ok(v.iter().map(|s| s.parse().unwrap()).collect());
        assert_eq!(
            resolution("o", ips(&["10.0.0.1", "203.0.113.1"])),
            Resolution::Reach(Reach::Private)
        );
        assert!(matches!(
            resolution("o", ips(&["203.0.113.1", "169.254.169.254"])),
            Resolution::Forbidden(m) if m.contains("169.254.169.254, a link-local")
        ));
        assert!(matches!(
            resolution("o", ips(&[])),
            Resolution::Unresolved(_)
        ));
        assert!(matches!(
            resolution("o", Err("host not found".into())),
            Resolution::Unresolved(m) if m.contains("host not found")
        ));
    }

    #[test]
    fn connections_are_checked_on_the_addresses_the_client_resolved() {
        let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|s| s.parse().unwrap()).collect() };
        assert!(connect_allowed("http", &ips(&["10.0.0.1"]), true).is_ok());
        assert!(connect_allowed("https", &ips(&["203.0.113.1"]), true).is_ok());
        assert!(connect_allowed("http", &ips(&["203.0.113.1"]), false).is_ok());
        for (scheme, addrs, token) in [
            ("http", &["203.0.113.1"][..], true),
            ("https", &["169.254.169.254"][..], false),
            ("https", &["203.0.113.1", "127.0.0.1"][..], false),
            ("https", &["::ffff:10.0.0.1"][..], true),
        ] {
            assert!(
                connect_allowed(scheme, &ips(addrs), token).is_err(),
                "{scheme} {addrs:?}"
            );
        }
    }

    #[test]
    fn the_admin_token_goes_over_https_or_to_private_addresses_only() {
        let http = parse("http://trigger.example.com", "w").unwrap();
        let https = parse("https://trigger.example.com", "w").unwrap();
        let ok = |o: &Origin, r: Reach| admin_token_allowed("o", o, &Resolution::Reach(r), &[]);
        assert!(ok(&https, Reach::Public).is_ok());
        assert!(ok(&http, Reach::Private).is_ok());
        assert!(ok(&http, Reach::Loopback).is_ok());
        let e = ok(&http, Reach::Public).unwrap_err();
        assert!(
            e.starts_with("TRIGGER_ADMIN_TOKEN is not sent to o: plain http"),
            "{e}"
        );
        let failed = admin_token_allowed(
            "o",
            &https,
            &Resolution::Reach(Reach::Public),
            &["x".into()],
        );
        assert!(failed.unwrap_err().contains("checks failed"));
        for res in [
            Resolution::Forbidden("link-local".into()),
            Resolution::Unresolved("host not found".into()),
        ] {
            assert!(admin_token_allowed("o", &https, &res, &[]).is_err());
        }
    }
}
