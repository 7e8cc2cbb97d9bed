//! The cluster's API credentials from DigitalOcean (`GET …/credentials`): asked for a short
//! life, kept sealed in ops' state (`sealed.rs`) and used until shortly before they expire, so
//! a healthy run makes no DigitalOcean request for them. The CA that comes with them is the
//! only one the Kubernetes client trusts.

use serde::{Deserialize, Serialize};

use crate::clients::doks::Credentials;
use crate::redact::Secret;
use crate::sealed::Sealer;
use crate::state::State;
use crate::tasks::supervisor::store::{DOKS_CREDENTIALS_KEY as KEY, NAMESPACE};

use super::doks::Ctx;

/// The token's life as asked of DigitalOcean (its default is 7 days: too long for a secret
/// kept on disk, even sealed).
pub const EXPIRY_SECS: u64 = 4 * 3600;
/// Fetched again this long before expiry: longer than any run, so a token never expires mid-run.
pub const REFRESH_BEFORE_MS: i64 = 30 * 60_000;
/// The sealed field (bound into the seal: the value cannot be moved to another field).
const FIELD: &str = "supervisor.doks_credentials";

/// What is kept, sealed whole.
#[derive(Serialize, Deserialize)]
struct Stored {
    cluster: String,
    server: String,
    ca: String,
    token: Option<String>,
    client_certificate: Option<String>,
    client_key: Option<String>,
    expires_ms: i64,
}

/// Whether credentials expiring at `expires_ms` (for `cluster`) may still be used at `now`.
pub fn usable(stored_cluster: &str, cluster: &str, expires_ms: Option<i64>, now: i64) -> bool {
    stored_cluster == cluster && expires_ms.is_some_and(|e| e - REFRESH_BEFORE_MS > now)
}

/// The kept credentials when still usable for `cluster` (`None`: absent, expiring, for another
/// cluster, or unreadable: fetched again).
pub fn kept(state: &State, sealer: &Sealer, cluster: &str, now: i64) -> Option<Credentials> {
    let (sealed, _): (String, i64) = state.kv_get(NAMESPACE, KEY).ok()??;
    let plain = sealer.open(FIELD, &sealed).ok()?;
    let s: Stored = serde_json::from_str(&plain).ok()?;
    if !usable(&s.cluster, cluster, Some(s.expires_ms), now) {
        return None;
    }
    Some(Credentials {
        server: s.server,
        certificate_authority_data: s.ca,
        token: s.token.map(Secret::new),
        client_certificate_data: s.client_certificate,
        client_key_data: s.client_key.map(Secret::new),
        expires_at: chrono::DateTime::from_timestamp_millis(s.expires_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    })
}

fn keep(
    state: &State,
    sealer: &Sealer,
    cluster: &str,
    c: &Credentials,
    now: i64,
) -> anyhow::Result<()> {
    let Some(expires_ms) = c.expires_ms() else {
        // No readable expiry: used for this run only.
        return Ok(());
    };
    let stored = Stored {
        cluster: cluster.into(),
        server: c.server.clone(),
        ca: c.certificate_authority_data.clone(),
        token: c.token.as_ref().map(|t| t.expose().to_string()),
        client_certificate: c.client_certificate_data.clone(),
        client_key: c.client_key_data.as_ref().map(|k| k.expose().to_string()),
        expires_ms,
    };
    let sealed = sealer.seal(FIELD, &serde_json::to_string(&stored)?)?;
    state.kv_set(NAMESPACE, KEY, &sealed, now)
}

/// Forgets the kept credentials (the API server refused them: a 401).
pub fn forget(state: &State) -> anyhow::Result<()> {
    state.kv_delete(NAMESPACE, KEY)
}

/// The credentials for `cluster`: the kept ones while usable, else fresh from DigitalOcean
/// (kept sealed unless a dry run, which writes nothing). `fresh`: skip the kept ones (after a
/// 401 from the API server).
pub fn get(
    ctx: &Ctx,
    sealer: Option<&Sealer>,
    cluster: &str,
    fresh: bool,
) -> anyhow::Result<Credentials> {
    if !fresh {
        if let Some(c) = sealer.and_then(|s| kept(ctx.state, s, cluster, ctx.now)) {
            return Ok(c);
        }
    }
    let c = ctx.api.credentials(cluster, EXPIRY_SECS)?;
    if !ctx.dry_run {
        if let Some(s) = sealer {
            keep(ctx.state, s, cluster, &c, ctx.now)?;
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_used_until_half_an_hour_before_they_expire_and_only_for_their_cluster() {
        let exp = 10 * 3_600_000;
        assert!(usable("c1", "c1", Some(exp), exp - REFRESH_BEFORE_MS - 1));
        assert!(!usable("c1", "c1", Some(exp), exp - REFRESH_BEFORE_MS));
        assert!(!usable("c1", "c1", Some(exp), exp + 1));
        assert!(!usable("c1", "c2", Some(exp), 0));
        assert!(!usable("c1", "c1", None, 0));
    }

    #[test]
    fn kept_credentials_are_sealed_and_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let sealer = Sealer::load(dir.path(), true).unwrap().unwrap();
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "server": "https://c1.k8s.ondigitalocean.com", "certificate_authority_data": "Q0E=",
            "token": "dok8s-kept-token-0123456789", "expires_at": "2030-01-01T00:00:00Z"
        }))
        .unwrap();
        keep(&state, &sealer, "c1", &c, 0).unwrap();
        let (raw, _): (String, i64) = state.kv_get(NAMESPACE, KEY).unwrap().unwrap();
        assert!(raw.starts_with("sealed2:") && !raw.contains("dok8s-kept"));
        let back = kept(&state, &sealer, "c1", 0).unwrap();
        assert_eq!(back.token.unwrap().expose(), "dok8s-kept-token-0123456789");
        assert_eq!(back.server, c.server);
        assert_eq!(back.certificate_authority_data, "Q0E=");
        assert!(kept(&state, &sealer, "c2", 0).is_none());
        forget(&state).unwrap();
        assert!(kept(&state, &sealer, "c1", 0).is_none());
    }
}
