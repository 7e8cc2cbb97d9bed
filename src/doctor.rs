//! `ops doctor`: live checks, one line each, ✓ or ✗ with the fix. Exit 1 when anything is ✗.

use std::time::{Duration, Instant};

use crate::app::{self, App};
use crate::checklist::{Checklist, Mark};
use crate::clients::digitalocean::DigitalOcean;
use crate::clients::http::{Http, Request, Retry};
use crate::clients::postgres::{describe, Target};
use crate::clients::railway::Railway;
use crate::exit::ExitCode;
use crate::redact::redact;
use crate::registry::{self, Exists, ImageRef};
use crate::state::State;
use crate::tasks::replication::parse_table;

pub fn run(app: &App, json: bool) -> anyhow::Result<ExitCode> {
    let s = &app.settings;
    let http = Http::new();
    let deadline = || Instant::now() + Duration::from_secs(20);
    let mut r = Checklist::new(json);
    r.line(Ok(format!(
        "{}: {} profiles",
        app.config.shown_path(),
        app.config.profiles.len()
    )));
    r.line(if app::dir_is_usable(&app.state_dir) {
        Ok(format!(
            "state directory {} is writable",
            app.state_dir.display()
        ))
    } else {
        Err(format!(
            "state directory {} is not writable: create it for the ops user or set OPS_STATE_DIR",
            app.state_dir.display()
        ))
    });

    railway_check(&mut r, &http, s, deadline());

    match &s.digitalocean_token {
        None => r.line(Err("DigitalOcean: DIGITALOCEAN_TOKEN is not set: create a read/write token at cloud.digitalocean.com/account/api/tokens".into())),
        Some(token) => {
            let api = DigitalOcean::new(&http, &s.digitalocean_api_url, token, deadline());
            r.line(
                api.account()
                    .map(|v| format!("DigitalOcean token valid (account {}, droplet limit {})", v["account"]["email"].as_str().unwrap_or("?"), v["account"]["droplet_limit"]))
                    .map_err(|e| format!("{e:#}")),
            );
            droplet_spec(&mut r, &api, s);
        }
    }

    match &s.database_url {
        None => r.line(Err("Postgres: DATABASE_URL is not set (the webapp's database, with ?sslmode=require on Railway's public proxy)".into())),
        Some(url) => r.line(postgres_check(url, app)),
    }

    let state = State::open_read_only(&app.state_dir).ok().flatten();
    let record = state.as_ref().and_then(|st| {
        crate::tasks::extract::load_record(st, &app.state_dir, s)
            .ok()
            .flatten()
    });

    if let (Some(url), Some(rec)) = (&s.database_url, &record) {
        routing_check(&mut r, url, rec);
    }
    images(&mut r, app, &http, record.as_ref());
    if let Some(rec) = &record {
        record_checks(&mut r, app, &http, rec);
    } else {
        r.note("registry and webapp: no config record yet (run `ops run extract`), not checked");
    }
    alert_channels(&mut r, s);
    if r.failures() > 0 {
        let n = r.failures();
        r.note(format!("{n} problem(s) found"));
        return r.finish("doctor", ExitCode::TaskFailed);
    }
    r.finish("doctor", ExitCode::Success)
}

/// The Railway token, and the project it should see.
fn railway_check(r: &mut Checklist, http: &Http, s: &crate::settings::Settings, deadline: Instant) {
    match &s.railway_token {
        None => r.line(Err("Railway: RAILWAY_API_TOKEN (or RAILWAY_TOKEN) is not set: create a token at railway.com/account/tokens".into())),
        Some((auth, token)) => {
            let railway = Railway::new(http, &s.railway_api_url, (*auth, token), deadline);
            r.line(railway.whoami().map(|who| format!("Railway token valid ({who})")).map_err(|e| format!("Railway: {e:#}")));
            match s.railway_ids() {
                Ok((project, _)) => r.line(
                    railway
                        .services(project)
                        .map(|list| format!("Railway project {project} visible: services {}", list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")))
                        .map_err(|e| format!("Railway project {project}: {e:#} (check RAILWAY_PROJECT_ID and the token's scope)")),
                ),
                Err(e) => r.line(Err(format!("Railway: {e:#}"))),
            }
        }
    }
}

/// What a droplet is created with, checked against DigitalOcean's own lists: a size, region,
/// image or SSH key it does not know passes every offline check and fails only at create,
/// with an HTTP 422 that names no variable.
fn droplet_spec(r: &mut Checklist, api: &DigitalOcean, s: &crate::settings::Settings) {
    let (size, region, image) = (
        &s.supervisor_size,
        &s.supervisor_region,
        &s.supervisor_image,
    );
    let some = |list: Vec<&str>| {
        let mut list = list;
        list.sort_unstable();
        let shown: Vec<&str> = list.iter().take(8).copied().collect();
        format!(
            "{}{}",
            shown.join(", "),
            if list.len() > 8 { ", …" } else { "" }
        )
    };
    match api.regions() {
        Ok(regions) => {
            match regions.iter().find(|x| x.slug == *region) {
                Some(x) if x.available => r.ok(format!("SUPERVISOR_REGION={region} takes new droplets")),
                Some(_) => r.fail(format!("SUPERVISOR_REGION={region} takes no new droplets now: pick another region ({})", some(regions.iter().filter(|x| x.available).map(|x| x.slug.as_str()).collect()))),
                None => r.fail(format!("SUPERVISOR_REGION={region} is not a DigitalOcean region: use one of {} (doctl compute region list)", some(regions.iter().filter(|x| x.available).map(|x| x.slug.as_str()).collect()))),
            }
        }
        Err(e) => r.fail(format!("SUPERVISOR_REGION: regions not readable: {e:#}")),
    }
    match api.sizes() {
        Ok(sizes) => match sizes.iter().find(|x| x.slug == *size) {
            None => r.fail(format!("SUPERVISOR_SIZE={size} is not a DigitalOcean size: use one of {} (doctl compute size list)", some(sizes.iter().filter(|x| x.available && x.regions.contains(region)).map(|x| x.slug.as_str()).collect()))),
            Some(x) if !x.available || !x.regions.contains(region) => r.fail(format!(
                "SUPERVISOR_SIZE={size} is not offered in SUPERVISOR_REGION={region}: pick a size offered there ({}) or a region that offers it ({})",
                some(sizes.iter().filter(|x| x.available && x.regions.contains(region)).map(|x| x.slug.as_str()).collect()),
                some(x.regions.iter().map(String::as_str).collect())
            )),
            Some(x) => r.ok(format!("SUPERVISOR_SIZE={size} ({} vCPU, {} MB) is offered in {region}", x.vcpus, x.memory)),
        },
        Err(e) => r.fail(format!("SUPERVISOR_SIZE: sizes not readable: {e:#}")),
    }
    match api.image(image) {
        Ok(None) => r.fail(unknown_image(api, image)),
        Ok(Some(img)) if !img.regions.is_empty() && !img.regions.contains(region) => r.fail(format!(
            "SUPERVISOR_IMAGE={image} is not available in SUPERVISOR_REGION={region} (only {}): transfer it there or pick another region",
            some(img.regions.iter().map(String::as_str).collect())
        )),
        Ok(Some(img)) => r.ok(format!("SUPERVISOR_IMAGE={image} exists (id {}{})", img.id, if img.name.is_empty() { String::new() } else { format!(", {}", img.name) })),
        Err(e) => r.fail(format!("SUPERVISOR_IMAGE: {e:#}")),
    }
    if s.supervisor_ssh_keys.is_empty() {
        return;
    }
    match api.ssh_keys() {
        Ok(keys) => {
            let unknown: Vec<&str> = s
                .supervisor_ssh_keys
                .iter()
                .filter(|k| {
                    !keys
                        .iter()
                        .any(|x| x.id.to_string() == **k || x.fingerprint == **k)
                })
                .map(String::as_str)
                .collect();
            if unknown.is_empty() {
                r.ok(format!(
                    "SUPERVISOR_SSH_KEYS: all {} known to the account",
                    s.supervisor_ssh_keys.len()
                ));
            } else {
                r.fail(format!(
                    "SUPERVISOR_SSH_KEYS names {} that the account does not have: use ids or fingerprints from doctl compute ssh-key list ({})",
                    unknown.join(", "),
                    some(keys.iter().map(|k| k.name.as_str()).collect())
                ));
            }
        }
        Err(e) => r.fail(format!("SUPERVISOR_SSH_KEYS: keys not readable: {e:#}")),
    }
}

/// The nearest slugs from DigitalOcean's own list of distribution images (as `ops run` says).
fn unknown_image(api: &DigitalOcean, image: &str) -> String {
    let images = api.distribution_images().unwrap_or_default();
    let slugs: Vec<&str> = images.iter().filter_map(|i| i.slug.as_deref()).collect();
    crate::tasks::supervisor::catalog::unknown_image(image, &slugs)
}

/// Which alert channels are configured (nothing is sent: `ops test-alert` does that).
fn alert_channels(r: &mut Checklist, s: &crate::settings::Settings) {
    let mut channels = Vec::new();
    if s.telegram_bot_token.is_some() {
        channels.push(match (&s.telegram_test_chat_id, &s.telegram_chat_id) {
            (Some(test), _) => format!("telegram (test chat {test})"),
            (None, Some(chat)) => format!("telegram (chat {chat})"),
            (None, None) => "telegram (no TELEGRAM_CHAT_ID: nothing will be sent)".into(),
        });
    }
    if let Some(url) = &s.webhook_url {
        channels.push(format!(
            "webhook ({}, {})",
            s.webhook_format.name(),
            crate::clients::http::origin(url.expose())
        ));
    }
    if channels.is_empty() {
        r.warn("alerts: no channel configured (TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID, or OPS_WEBHOOK_URL): failures are only logged");
    } else {
        r.note(format!(
            "alerts: {}; check that they arrive with `ops test-alert`",
            redact(&channels.join(", "))
        ));
    }
}

/// The images a new droplet pulls must exist, or `docker compose up` fails on every droplet.
fn images(r: &mut Checklist, app: &App, http: &Http, record: Option<&crate::record::ConfigRecord>) {
    let s = &app.settings;
    let version = crate::release::supervisor_version(
        s.trigger_version.as_deref(),
        record.and_then(|r| r.webapp_version.as_deref()),
    );
    let supervisor_image = format!("{}:{}", crate::cloudinit::SUPERVISOR_IMAGE, version.tag);
    for (image, var) in [
        (supervisor_image.as_str(), "TRIGGER_VERSION"),
        (
            s.docker_proxy_image.as_str(),
            "SUPERVISOR_DOCKER_PROXY_IMAGE",
        ),
    ] {
        let Ok(parsed) = ImageRef::parse(image) else {
            r.line(Err(format!(
                "image {image} is not a valid reference: fix {var}"
            )));
            continue;
        };
        match registry::exists(http, &parsed, Duration::from_secs(5)) {
            Exists::Yes => r.line(Ok(format!("image {image} exists on {}", parsed.registry))),
            Exists::NotFound => r.line(Err(format!(
                "image {image}: tag not found on {} (or not public): new droplets would fail to start; pick a tag that exists and set {var}",
                parsed.registry
            ))),
            Exists::Unknown(why) => r.warn(unreachable(
                &format!("image {image}"),
                &parsed.registry,
                &redact(&why),
            )),
        }
    }
}

/// One rule for a registry this host cannot reach (DNS, connection): the droplets, not this
/// host, pull from it, so it is no verdict, but it is worth a look: a warning, whichever
/// registry it is.
fn unreachable(what: &str, registry: &str, why: &str) -> String {
    format!(
        "{what}: not checked, {registry} cannot be reached from this host ({why}): the droplets pull from it, so check this host's DNS and network, then run ops doctor again"
    )
}

/// With a config record: the supervisor version, the registry and the webapp answer.
fn record_checks(r: &mut Checklist, app: &App, http: &Http, rec: &crate::record::ConfigRecord) {
    let s = &app.settings;
    let deadline = || Instant::now() + Duration::from_secs(20);
    let version =
        crate::release::describe(s.trigger_version.as_deref(), rec.webapp_version.as_deref());
    // A deliberate pin or an unknown webapp version is worth seeing, not a failure.
    let agreed = s.trigger_version.is_none() && rec.webapp_version.is_some();
    r.add(if agreed { Mark::Ok } else { Mark::Warning }, &version);
    if let Some(host) = &rec.registry_host {
        let url = format!("https://{host}/v2/");
        let req = Request::new("registry", "GET", &url)
            .retry(Retry::Never)
            .timeout(Duration::from_secs(5));
        match http.send(&req, deadline()) {
            Ok(resp) if resp.status == 200 || resp.status == 401 => {
                r.ok(format!("registry {host} reachable (HTTP {})", resp.status))
            }
            Ok(resp) => r.fail(format!(
                "registry {host}: GET {url} answered HTTP {} (is the registry service running?)",
                resp.status
            )),
            Err(e) => r.warn(unreachable(
                &format!("registry {host}"),
                host,
                &redact(&format!("{e:#}")),
            )),
        }
    }
    let url = format!("{}/healthcheck", rec.api_origin);
    let req = Request::new("webapp", "GET", &url)
        .retry(Retry::Never)
        .timeout(Duration::from_secs(5));
    // The same origin checks as extract's (issue 27, Medium 2): a record from an older ops
    // could still name a link-local or mapped address.
    let checked = crate::tasks::extract::origin::parse(&rec.api_origin, "the config record")
        .map_err(|e| format!("webapp {url}: {e}"))
        .and_then(|_| {
            crate::tasks::extract::webapp_client(false)
                .send(&req, deadline())
                .map_err(|e| format!("webapp {url}: {e:#}"))
        });
    r.line(match checked {
        Ok(resp) if resp.status == 200 => Ok(format!("webapp {url}: 200")),
        // Whoever sets API_ORIGIN must not read answers through ops: status only.
        Ok(resp) => Err(format!("webapp {url} answered HTTP {}", resp.status)),
        Err(e) => Err(e),
    });
}

/// Where deployed runs go, and whether they reach the group our token belongs to.
fn routing_check(
    r: &mut Checklist,
    url: &crate::redact::Secret,
    rec: &crate::record::ConfigRecord,
) {
    use crate::clients::webapp_db::{self, TokenLookup};
    let result = Target::parse(url)
        .and_then(|t| t.connect(Duration::from_secs(10)))
        .and_then(|mut c| {
            let ours = webapp_db::lookup_token(&mut c, rec.worker_token.expose())?;
            if let Ok(Some(line)) = webapp_db::vacuum_age(&mut c) {
                r.note(line);
            }
            Ok((ours, webapp_db::routing(&mut c)))
        });
    match result {
        Err(e) => r.note(format!(
            "where runs go: not checked ({})",
            redact(&format!("{e:#}"))
        )),
        Ok((TokenLookup::Known(ours), Ok(routing))) => {
            let found = crate::tasks::supervisor::flow::judge_routing(&ours, &routing);
            let mut lines = found.lines.into_iter();
            if let Some(first) = lines.next() {
                r.line(if found.failures.is_empty() {
                    Ok(first)
                } else {
                    Err(first)
                });
            }
            for l in lines {
                r.note(&l);
            }
            for f in found.failures {
                r.add(Mark::Detail, &f);
            }
        }
        Ok((TokenLookup::Known(_), Err(e))) => r.note(format!(
            "where runs go: not checked ({})",
            redact(&format!("{e:#}"))
        )),
        Ok((TokenLookup::Unknown, _)) => r.line(Err(format!(
            "the webapp does not know the worker token (from {}): run `ops run extract`",
            rec.token_source
        ))),
        Ok((TokenLookup::TablesMissing(why), _)) => r.note(format!(
            "where runs go: the webapp's database has no worker tables ({why})"
        )),
    }
}

/// Reachable, and with the privileges the replication fix needs.
fn postgres_check(url: &crate::redact::Secret, app: &App) -> Result<String, String> {
    let target = Target::parse(url).map_err(|e| format!("{e:#}"))?;
    let mut client = target
        .connect(Duration::from_secs(10))
        .map_err(|e| format!("{e:#}"))?;
    let table = app
        .config
        .profiles
        .iter()
        .flat_map(|p| &p.tasks)
        .find_map(|t| match &t.spec {
            crate::config::TaskSpec::Replication(o) => Some(o.table.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "public.\"TaskRun\"".into());
    let (schema, name) = parse_table(&table).map_err(|e| format!("{e:#}"))?;
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper, r.rolreplication, has_database_privilege(current_database(), 'CREATE'),
                    (SELECT pg_get_userbyid(c.relowner) = current_user FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = $1 AND c.relname = $2)
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&schema, &name],
        )
        .map_err(|e| format!("Postgres at {}: {}", target.shown, describe(&e)))?;
    let (user, superuser, replication, create, owner): (String, bool, bool, bool, Option<bool>) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let mut missing = Vec::new();
    if !superuser {
        missing.push("superuser (for ALTER SYSTEM SET wal_level; or set it at the provider)");
        if !replication {
            missing.push("REPLICATION (for the webapp's replication client)");
        }
        if !create {
            missing.push("CREATE on the database (for CREATE PUBLICATION)");
        }
        if owner == Some(false) {
            missing.push("ownership of the table (for REPLICA IDENTITY FULL)");
        }
    }
    if missing.is_empty() {
        Ok(format!(
            "Postgres at {} reachable as {user} ({}) with the privileges the replication fix needs{}",
            target.shown,
            target.protection(),
            if owner.is_none() {
                " (table not created yet)"
            } else {
                ""
            }
        ))
    } else {
        Err(format!(
            "Postgres at {} reachable as {user} ({}), but it lacks: {}",
            target.shown,
            target.protection(),
            missing.join("; ")
        ))
    }
}
