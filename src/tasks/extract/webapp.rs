//! Extract's calls to the webapp: its token table (read only), the origin's checks, its
//! `/healthcheck`, and its admin API (a worker group created, the runs it serves).

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clients::http::{self, Http, Request, Retry};
use crate::clients::postgres::Target;
use crate::clients::webapp_db::{self, TokenLookup};
use crate::redact::Secret;
use crate::task::TaskCtx;

use super::origin::{self, Reach, Resolution};
use super::plan::{self, is_public_url};
use crate::config::ExtractOptions;

/// Asks the webapp's database (when `DATABASE_URL` is set) whether it knows `token`.
pub(super) fn lookup(ctx: &TaskCtx, token: &str) -> anyhow::Result<Option<TokenLookup>> {
    let Some(url) = &ctx.settings.database_url else {
        return Ok(None);
    };
    let target = Target::parse(url)?;
    let mut client = target.connect(ctx.connect_timeout())?;
    webapp_db::lookup_token(&mut client, token).map(Some)
}

/// What ops found of the origin before sending anything there.
pub(super) struct OriginChecks {
    pub(super) origin: String,
    pub(super) failures: Vec<String>,
    /// The failures that are the values' own (an origin no droplet can reach, a published
    /// secret), not the webapp's state now: nothing is deployed from such values.
    pub(super) refused: Vec<String>,
    pub(super) lines: Vec<String>,
    /// Whether TRIGGER_ADMIN_TOKEN may go there; `Err` says why not.
    pub(super) admin: Result<(), String>,
}

/// The values' checks, the origin's addresses, then `GET <origin>/healthcheck` when the task
/// asks for it and the origin is public.
pub(super) fn origin_checks(
    ctx: &TaskCtx,
    opts: &ExtractOptions,
    secret: &str,
    api_origin: &str,
    webapp: &str,
) -> OriginChecks {
    let mut failures = plan::value_checks(secret, api_origin, webapp);
    let mut refused = failures.clone();
    let mut lines = Vec::new();
    // Only an origin a droplet can reach is resolved, asked, or handed a token.
    let observed = if is_public_url(api_origin) {
        observe_origin(api_origin, webapp)
            .map_err(|e| {
                refused.push(e.clone());
                failures.push(e)
            })
            .ok()
    } else {
        None
    };
    let admin = match observed {
        Some((parsed, res)) => {
            let sendable = match &res {
                Resolution::Reach(Reach::Loopback) => Err(format!(
                    "API origin {api_origin} resolves to a loopback address: not reachable from a droplet; set API_ORIGIN on {webapp:?} to its public https:// URL"
                )),
                Resolution::Forbidden(why) => Err(why.clone()),
                Resolution::Unresolved(why) => Err(format!("webapp health check failed: {why}")),
                Resolution::Reach(_) => Ok(()),
            };
            match sendable {
                Ok(()) if opts.check_webapp => {
                    failures.extend(webapp_health(ctx, api_origin, &mut lines))
                }
                Ok(()) => {}
                // Without the health check an unresolved host is only the admin API's concern.
                Err(_) if !opts.check_webapp && matches!(res, Resolution::Unresolved(_)) => {}
                Err(why) => {
                    if !matches!(res, Resolution::Unresolved(_)) {
                        refused.push(why.clone());
                    }
                    failures.push(why)
                }
            }
            origin::admin_token_allowed(api_origin, &parsed, &res, &failures)
        }
        None => Err(format!(
            "TRIGGER_ADMIN_TOKEN is not sent to {api_origin}: the checks above failed; fix them first"
        )),
    };
    OriginChecks {
        origin: api_origin.to_string(),
        failures,
        refused,
        lines,
        admin,
    }
}

/// An HTTP client for the webapp's origin: it connects only where `origin::connect_allowed` says.
pub(crate) fn webapp_client(admin_token: bool) -> Http {
    Http::guarded(std::sync::Arc::new(
        move |scheme: &str, ips: &[std::net::IpAddr]| {
            origin::connect_allowed(scheme, ips, admin_token)
        },
    ))
}

/// `GET <origin>/healthcheck`. The answer's body is never repeated: whoever sets `API_ORIGIN`
/// would read it in the alerts.
pub(super) fn webapp_health(
    ctx: &TaskCtx,
    api_origin: &str,
    lines: &mut Vec<String>,
) -> Option<String> {
    let url = format!("{api_origin}/healthcheck");
    let req = Request::new("webapp", "GET", &url)
        .retry(Retry::Never)
        .timeout(std::time::Duration::from_secs(5));
    match webapp_client(false).send(&req, ctx.deadline) {
        Ok(r) if r.status == 200 && r.body.trim() == "OK" => {
            lines.push(format!("webapp {url}: 200 OK"));
            None
        }
        Ok(r) => Some(format!(
            "webapp health check failed: GET {url} answered HTTP {} (not \"200 OK\"; the body is not shown)",
            r.status
        )),
        Err(e) => Some(format!("webapp health check failed: GET {url}: {e:#}")),
    }
}

/// Parses the origin and resolves its host with the system resolver (the HTTP client's).
pub(super) fn observe_origin(
    api_origin: &str,
    service: &str,
) -> Result<(origin::Origin, Resolution), String> {
    use std::net::ToSocketAddrs;
    let o = origin::parse(api_origin, service)?;
    let addrs = match o.ip {
        Some(ip) => Ok(vec![ip]),
        None => (o.host.as_str(), o.port)
            .to_socket_addrs()
            .map(|a| a.map(|sa| sa.ip()).collect())
            .map_err(|e| format!("cannot resolve {}: {e}", o.host)),
    };
    let res = origin::resolution(api_origin, addrs);
    Ok((o, res))
}

pub(super) fn create_worker_group(
    ctx: &TaskCtx,
    origin: &str,
    admin: &Secret,
    name: &str,
) -> anyhow::Result<(String, Option<Created>)> {
    let url = format!("{origin}/admin/api/v1/workers");
    let req = Request::new("webapp admin API", "POST", &url)
        .header("authorization", format!("Bearer {}", admin.expose()))
        .json(&json!({ "name": name }))
        .retry(Retry::OnlyRateLimit);
    let resp = webapp_client(true).send(&req, ctx.deadline)?;
    if resp.status == 400 && resp.body.to_ascii_lowercase().contains("already exists") {
        bail!(
            "worker group {name:?} already exists, and its token is shown only once: set WORKER_GROUP_NAME to a new name (e.g. {name}-2) so ops creates a fresh group, or set TRIGGER_WORKER_TOKEN"
        );
    }
    if resp.status == 401 || resp.status == 403 {
        bail!("TRIGGER_ADMIN_TOKEN was rejected by {} (HTTP {}): it must be a personal access token of an admin user", http::origin(&url), resp.status);
    }
    if !resp.ok() {
        bail!(
            "creating worker group {name:?}: POST {url} answered HTTP {} (the body is not shown)",
            resp.status
        );
    }
    #[derive(Deserialize)]
    struct Answer {
        token: Plain,
        #[serde(rename = "workerGroup")]
        worker_group: Option<Group>,
    }
    #[derive(Deserialize)]
    struct Plain {
        plaintext: String,
    }
    #[derive(Deserialize)]
    struct Group {
        id: Option<String>,
    }
    let answer: Answer = serde_json::from_str(&resp.body).map_err(|_| {
        anyhow!("creating worker group {name:?}: POST {url} answered HTTP {} with no token in it (the body is not shown)", resp.status)
    })?;
    crate::redact::register(&answer.token.plaintext);
    let created = answer.worker_group.and_then(|g| g.id).map(|id| Created {
        id,
        name: name.to_string(),
    });
    Ok((answer.token.plaintext, created))
}

/// Who serves runs before ops creates a group (reads only): the droplets ops manages (by
/// DigitalOcean's tags) and which group each heartbeats into, and the global default group's
/// youngest heartbeat. Nothing to see without DATABASE_URL; a read that fails stops the create
/// (not knowing is no reason to re-route).
pub(super) fn serving(ctx: &TaskCtx, http: &Http) -> anyhow::Result<plan::Serving> {
    let s = ctx.settings;
    let Some(url) = &s.database_url else {
        return Ok(plan::Serving::default());
    };
    let cannot = |e: anyhow::Error| {
        anyhow!("cannot tell whether other supervisors serve runs before creating a worker group: {e:#}")
    };
    let names: Vec<String> = match &s.digitalocean_token {
        Some(token) => {
            let api = crate::clients::digitalocean::DigitalOcean::new(
                http,
                &s.digitalocean_api_url,
                token,
                ctx.deadline,
            );
            let tag = s.deployment_tag();
            api.droplets_by_tag(&tag)
                .map_err(cannot)?
                .into_iter()
                .filter(|d| d.has_tag(&tag) && d.has_tag(crate::settings::MANAGED_TAG))
                .map(|d| d.name)
                .collect()
        }
        None => Vec::new(),
    };
    let mut client = Target::parse(url)?
        .connect(ctx.connect_timeout())
        .map_err(cannot)?;
    let droplets = webapp_db::heartbeats_elsewhere(&mut client, &names, "")
        .map_err(cannot)?
        .into_iter()
        .map(|(name, e)| (name, e.group, e.age_secs))
        .collect();
    let routing = webapp_db::routing(&mut client).map_err(cannot)?;
    let default_group = match routing.default_group_id {
        Some(id) => {
            let ages = webapp_db::group_heartbeats(&mut client, std::slice::from_ref(&id))
                .map_err(cannot)?;
            let name = routing
                .groups
                .iter()
                .find(|g| g.id == id)
                .map_or(id.clone(), |g| g.name.clone());
            ages.get(&id).map(|a| (name, *a))
        }
        None => None,
    };
    Ok(plan::Serving {
        droplets,
        default_group,
    })
}

/// A worker group created through the admin API (`workerGroup` in the answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Created {
    pub(super) id: String,
    pub(super) name: String,
}

/// The webapp's release as Railway says it now: one request, by the stored record's service id.
/// A version change is decided only on such a reading, never on the record's copy.
pub fn webapp_release_now(ctx: &TaskCtx) -> anyhow::Result<crate::release::WebappRelease> {
    let s = ctx.settings;
    let Some(auth) = s.railway_token.as_ref() else {
        bail!("no Railway token (RAILWAY_API_TOKEN or RAILWAY_TOKEN) to read it with");
    };
    let (project, environment) = s.railway_ids()?;
    let (rec, _) = ctx
        .state
        .map(|st| {
            st.kv_get::<super::store::StoredRecord>(
                super::store::NAMESPACE,
                super::store::RECORD_KEY,
            )
        })
        .transpose()?
        .flatten()
        .ok_or_else(|| anyhow!("no stored config record names the webapp's service"))?;
    let http = Http::new();
    let railway = crate::clients::railway::Railway::new(
        &http,
        &s.railway_api_url,
        (auth.0, &auth.1),
        ctx.deadline,
    );
    // The variables come along in the same request; none is kept or shown.
    let (_, instance) = railway.webapp(project, environment, &rec.webapp_service_id)?;
    Ok(instance.release())
}
