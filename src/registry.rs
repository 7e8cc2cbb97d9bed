//! Docker image references and the anonymous check that one exists, as `ops doctor` runs it:
//! `HEAD /v2/<repository>/manifests/<tag or digest>` on the registry (Docker Hub and ghcr.io
//! both speak the Registry HTTP API v2), answering its `401` challenge with an anonymous token
//! from the realm it names (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`).

use std::time::{Duration, Instant};

use crate::clients::http::{Http, Request, Retry};

/// A parsed `[registry/]repository[:tag][@sha256:<64 hex>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (with port), `docker.io` when none is named.
    pub registry: String,
    /// The repository path; Docker Hub's single names get `library/`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| Err(format!("{reference:?} is not an image reference: {why}"));
        if reference.is_empty() || reference.len() > 512 || reference.contains(char::is_whitespace)
        {
            return bad("empty, too long, or with spaces");
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return bad("a digest is sha256: and 64 hex digits");
                }
                (r, Some(d.to_string()))
            }
            None => (reference, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return bad("a tag is letters, digits, '.', '_' and '-'");
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let ok_path = !path.is_empty()
            && path.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !ok_path {
            return bad("a repository is lowercase letters, digits, '.', '_', '-' and '/'");
        }
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What the manifest is fetched by: the digest when pinned, else the tag (`latest` when none).
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The registry's API base: Docker Hub's is `registry-1.docker.io`; a loopback registry is
    /// plain HTTP (as Docker itself allows), every other one HTTPS.
    pub fn api_base(&self) -> String {
        let host = if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        };
        let plain = host.starts_with("localhost") || host.starts_with("127.");
        format!("{}://{host}", if plain { "http" } else { "https" })
    }
}

/// The outcome of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Exists {
    Yes,
    /// The registry answered that the tag (or digest) does not exist.
    NotFound,
    /// The registry could not be asked (network, an unexpected answer): not a verdict.
    Unknown(String),
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Asks the registry anonymously whether `image` exists.
pub fn exists(http: &Http, image: &ImageRef, timeout: Duration) -> Exists {
    let deadline = Instant::now() + timeout;
    let url = format!(
        "{}/v2/{}/manifests/{}",
        image.api_base(),
        image.repository,
        image.reference()
    );
    let head = |token: Option<&str>| {
        let mut req = Request::new("registry", "HEAD", &url)
            .header("accept", ACCEPT)
            .retry(Retry::Never)
            .timeout(timeout);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        http.send(&req, deadline)
    };
    let mut resp = match head(None) {
        Ok(r) => r,
        Err(e) => return Exists::Unknown(format!("{e:#}")),
    };
    if resp.status == 401 {
        let Some(challenge) = resp.header("www-authenticate").map(str::to_string) else {
            return Exists::Unknown("HTTP 401 without a WWW-Authenticate challenge".into());
        };
        let token = match anonymous_token(http, &challenge, image, deadline, timeout) {
            Ok(t) => t,
            Err(e) => return Exists::Unknown(e),
        };
        resp = match head(Some(&token)) {
            Ok(r) => r,
            Err(e) => return Exists::Unknown(format!("{e:#}")),
        };
    }
    match resp.status {
        200 => Exists::Yes,
        404 => Exists::NotFound,
        // Without pull rights anonymously, registries answer 401/403 for missing repositories too.
        401 | 403 => Exists::NotFound,
        s => Exists::Unknown(format!("HEAD {url} answered HTTP {s}")),
    }
}

/// `Bearer realm="…",service="…",scope="…"` → GET realm?service=…&scope=… → `token`.
fn anonymous_token(
    http: &Http,
    challenge: &str,
    image: &ImageRef,
    deadline: Instant,
    timeout: Duration,
) -> Result<String, String> {
    let url = token_url(challenge, &image.repository)?;
    let req = Request::new("registry token", "GET", &url)
        .retry(Retry::Never)
        .timeout(timeout);
    let resp = http.send(&req, deadline).map_err(|e| format!("{e:#}"))?;
    if !resp.ok() {
        return Err(format!(
            "the registry's token endpoint answered HTTP {}",
            resp.status
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_str(&resp.body).map_err(|_| "the token endpoint's answer is not JSON")?;
    doc.get("token")
        .or_else(|| doc.get("access_token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| "the token endpoint's answer has no token".to_string())
}

/// The token endpoint a registry's `WWW-Authenticate` challenge names (any header value: an
/// error, never a panic).
pub fn token_url(challenge: &str, repository: &str) -> Result<String, String> {
    let params = challenge
        .strip_prefix("Bearer ")
        .or_else(|| challenge.strip_prefix("bearer "))
        .ok_or_else(|| format!("unsupported registry challenge {challenge:?}"))?;
    let field = |name: &str| -> Option<String> {
        params.split(',').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    let realm = field("realm").ok_or("the registry's challenge names no realm")?;
    let scope = field("scope").unwrap_or(format!("repository:{repository}:pull"));
    let mut url = format!(
        "{realm}?scope={}",
        crate::clients::http::percent_encode(&scope)
    );
    if let Some(service) = field("service") {
        url.push_str(&format!(
            "&service={}",
            crate::clients::http::percent_encode(&service)
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("tecnativa/docker-socket-proxy:v0.5.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "tecnativa/docker-socket-proxy", Some("v0.5.0"))
        );
        assert_eq!(r.api_base(), "https://registry-1.docker.io");
        let r = ImageRef::parse("ghcr.io/triggerdotdev/supervisor:v4.5.12").unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "triggerdotdev/supervisor");
        let pinned = format!(
            "tecnativa/docker-socket-proxy:v0.5.0@sha256:{}",
            "a".repeat(64)
        );
        let r = ImageRef::parse(&pinned).unwrap();
        assert_eq!(r.reference(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(r.tag.as_deref(), Some("v0.5.0"));
        let r = ImageRef::parse("127.0.0.1:5000/tecnativa/docker-socket-proxy").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.reference(), "latest");
        assert_eq!(r.api_base(), "http://127.0.0.1:5000");
        assert_eq!(
            ImageRef::parse("nginx").unwrap().repository,
            "library/nginx"
        );
        for bad in [
            "",
            "Tecnativa/Proxy:v1",
            "a:b c",
            "x@sha256:abc",
            "x:",
            "x:t@md5:00",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
