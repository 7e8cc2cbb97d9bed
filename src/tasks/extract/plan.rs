//! extract's decisions, pure: whether the stored record is fresh enough, where the worker token
//! comes from, what the webapp's variables say, what fails the checks, what changed, and what
//! the webapp's database said of the token. Reads happen before each decision (`mod.rs`
//! observes lazily: the logs are searched only when no token is known); writes after.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clients::webapp_db::{TokenLookup, WorkerGroup};

/// The values Trigger.dev has published for MANAGED_WORKER_SECRET (its examples and old
/// defaults): since v4.5.6 the webapp has no default and refuses all five unless
/// `ALLOW_INSECURE_DEFAULT_SECRETS=1` (apps/webapp/app/env.server.ts, `INSECURE_SECRET_VALUES`).
pub const INSECURE_SECRETS: &[&str] = &[
    "managed-secret",
    "2818143646516f6fffd707b36f334bbb",
    "44da78b7bbb0dfe709cf38931d25dcdd",
    "f686147ab967943ebbe9ed3b496e465a",
    "447c29678f9eaf289e9c4b70d3dd8a7f",
];

/// A write extract makes (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Seal and cache a newly found token (never a manual one, never one the webapp rejects).
    CacheToken { source: String },
    /// The cached token is unknown to the webapp: forget it so the next run finds a good one.
    DropCachedToken,
    /// No usable token anywhere: create a worker group through the webapp's admin API.
    CreateWorkerGroup { name: String, origin: String },
    /// Make the group ops created the global default, so that its supervisors receive runs.
    MakeDefault { name: String, origin: String },
    /// Store the record; the list says what changed (names, never values).
    StoreRecord { changed: Vec<String> },
}

impl crate::task::Typed for Action {
    fn typed(&self) -> crate::task::ActionType {
        use crate::task::ActionType;
        match self {
            Action::CacheToken { source } => {
                ActionType::named("cache", "worker token").reason(format!("found in {source}"))
            }
            Action::DropCachedToken => ActionType::named("drop", "cached worker token")
                .reason("the webapp does not know it"),
            Action::CreateWorkerGroup { name, .. } => {
                ActionType::counted("create", "worker group").name(name)
            }
            Action::MakeDefault { name, .. } => {
                ActionType::named("make", "default worker group").name(name)
            }
            Action::StoreRecord { changed } => {
                let t = ActionType::named("store", "config record");
                if changed.is_empty() {
                    t
                } else {
                    t.reason(format!("changed: {}", changed.join(", ")))
                }
            }
        }
    }
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::CacheToken { .. } => "cache the worker token in the state database".into(),
            Action::DropCachedToken => "drop the cached worker token".into(),
            Action::CreateWorkerGroup { name, origin } => format!(
                "create worker group {name:?} through {origin}/admin/api/v1/workers (no token in the logs)"
            ),
            Action::MakeDefault { name, origin } => format!(
                "make worker group {name:?} the global default through {origin}/admin/api/v1/feature-flags (so deployed runs reach its supervisors)"
            ),
            Action::StoreRecord { .. } => "store the config record".into(),
        }
    }
}

/// Whether the stored record is used as is (no Railway request) or read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    Fresh {
        age_ms: i64,
    },
    /// Read Railway; the note says why when it is not simply age.
    Stale {
        note: Option<String>,
    },
}

/// `age_ms`: the stored record's age, `None` when there is no record, no known token or no key.
pub fn freshness(
    age_ms: Option<i64>,
    same_token: bool,
    failed: bool,
    refresh: Duration,
    forced: bool,
) -> Freshness {
    if forced && age_ms.is_some() {
        return Freshness::Stale {
            note: Some("--refresh: reading Railway whatever the record's age".into()),
        };
    }
    if failed {
        return Freshness::Stale {
            note: Some("the last extraction's checks failed: reading Railway again (the refresh interval applies to good records only)".into()),
        };
    }
    let Some(age) = age_ms else {
        return Freshness::Stale { note: None };
    };
    if same_token && age >= 0 && (age as u128) < refresh.as_millis() {
        Freshness::Fresh { age_ms: age }
    } else {
        Freshness::Stale { note: None }
    }
}

/// What the webapp's database said of a token found in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsToken {
    Known,
    /// No way to check (no DATABASE_URL, tables missing).
    Unverified,
    Unknown,
}

/// The token when neither a manual nor a cached one exists: the logs', else a new worker group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenChoice {
    /// The candidate at this index.
    Logs(usize),
    CreateGroup,
    /// No way to a token: the task fails with this.
    None(String),
}

/// `found`: the bootstrap banners' tokens, newest first, where each was found and what the
/// webapp says of it. The first known one wins, unknown ones are skipped (a line anyone could
/// have made the webapp log must not re-route runs), and a group is created only when every
/// candidate is unknown. Unverifiable candidates are taken only when there is one.
pub fn after_logs(
    found: &[(&str, LogsToken)],
    admin: bool,
    group: &str,
) -> (TokenChoice, Vec<String>) {
    let skipped = |upto: usize| -> Vec<String> {
        found[..upto]
            .iter()
            .filter(|(_, j)| *j == LogsToken::Unknown)
            .map(|(where_, _)| {
                format!(
                    "skipped a worker token in the webapp's logs ({where_}): unknown to the webapp"
                )
            })
            .collect()
    };
    if let Some(i) = found.iter().position(|(_, j)| *j == LogsToken::Known) {
        return (TokenChoice::Logs(i), skipped(i));
    }
    let unverified = found
        .iter()
        .filter(|(_, j)| *j == LogsToken::Unverified)
        .count();
    match (found.first(), unverified, admin) {
        (Some(_), 1, _) => (TokenChoice::Logs(0), Vec::new()),
        (Some(_), n, _) if n > 1 => (
            TokenChoice::None(format!("the webapp's logs hold {n} different worker tokens in bootstrap banners and ops cannot tell which one the webapp knows: set DATABASE_URL (ops then takes the one the webapp knows) or TRIGGER_WORKER_TOKEN")),
            Vec::new(),
        ),
        (Some((where_, _)), _, true) => {
            let mut notes = skipped(found.len());
            notes.push(format!("no worker token in the webapp's logs is known to the webapp (newest: {where_}): their worker groups were deleted"));
            (TokenChoice::CreateGroup, notes)
        }
        (Some((where_, _)), _, false) => (
            TokenChoice::None(format!("no worker token in the webapp's logs is known to the webapp (newest: {where_}; their worker groups were deleted): set TRIGGER_ADMIN_TOKEN to an admin personal access token (tr_pat_…) so ops creates worker group {group:?}, or set TRIGGER_WORKER_TOKEN")),
            skipped(found.len()),
        ),
        (None, _, true) => (TokenChoice::CreateGroup, Vec::new()),
        (None, _, false) => (
            TokenChoice::None(format!(
                "no worker token: TRIGGER_WORKER_TOKEN is unset, none is cached, and the webapp's logs on Railway hold no bootstrap banner with one \
                 (Trigger.dev prints it once, at the first boot that creates the worker group, and Railway keeps logs 7-90 days). \
                 Provide one: set TRIGGER_WORKER_TOKEN=tr_wgt_… (from the first boot's logs or your notes), or set TRIGGER_ADMIN_TOKEN \
                 to an admin personal access token (tr_pat_…) so ops creates worker group {group:?}"
            )),
            Vec::new(),
        ),
    }
}

/// Who serves runs already, seen before ops creates a worker group of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Serving {
    /// Droplets ops manages that heartbeat into a group: (droplet, group, seconds since).
    pub droplets: Vec<(String, String, f64)>,
    /// The global default group and its youngest heartbeat, when it has one.
    pub default_group: Option<(String, f64)>,
}

/// A default group heard from this recently serves runs.
pub const SERVING_SECS: f64 = 600.0;

/// Whether creating worker group `group` (and making it the default) would re-route a working
/// deployment: droplets ops manages heartbeat into another group (a new host, or lost state:
/// ops lacks that group's token), or the global default group's supervisors are alive. `None`:
/// nobody serves runs, create it. Creating one anyway is `--allow-new-worker-group`.
pub fn new_group_guard(seen: &Serving, group: &str, profile: &str) -> Option<String> {
    let anyway = format!(
        "or run `ops run {profile} --allow-new-worker-group` to create {group:?} and make it the default anyway"
    );
    if let Some((droplet, other, age)) = seen.droplets.first() {
        return Some(format!(
            "not creating worker group {group:?}: droplet {droplet}, which ops manages, heartbeats into worker group {other:?} (last {} ago), whose token ops does not have (a new host, or lost state). Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN to that group's token; {anyway}",
            crate::duration::format(std::time::Duration::from_secs(age.max(1.0) as u64))
        ));
    }
    match &seen.default_group {
        Some((other, age)) if *age < SERVING_SECS => Some(format!(
            "not creating worker group {group:?}: the global default, worker group {other:?}, has supervisors heartbeating (last {} ago), and making a new group the default would take its runs away. Set TRIGGER_WORKER_TOKEN to that group's token; {anyway}",
            crate::duration::format(std::time::Duration::from_secs(age.max(1.0) as u64))
        )),
        _ => None,
    }
}

/// The token check's outcome: a line, the group, a failure, and whether to drop the cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub line: Option<String>,
    pub group: Option<WorkerGroup>,
    pub failure: Option<String>,
    pub drop_cached: bool,
}

/// `lookup`: `None` when DATABASE_URL is not set. `from` names the token's source.
pub fn verdict(lookup: Option<&TokenLookup>, manual: bool, from: &str) -> Verdict {
    match lookup {
        None => Verdict {
            line: Some("token check: skipped (DATABASE_URL is not set)".into()),
            ..Verdict::default()
        },
        Some(TokenLookup::TablesMissing(why)) => Verdict {
            line: Some(format!("token check: skipped, the webapp's database has no worker tables ({why}): an older Trigger.dev, or migrations not run yet")),
            ..Verdict::default()
        },
        Some(TokenLookup::Known(g)) => Verdict {
            line: Some(format!(
                "token check: known to the webapp (worker group {:?}, queue {})",
                g.name, g.master_queue
            )),
            group: Some(g.clone()),
            ..Verdict::default()
        },
        Some(TokenLookup::Unknown) => {
            let fix = if manual {
                "fix or unset TRIGGER_WORKER_TOKEN (a token of a worker group that exists)"
            } else {
                "it is dropped from the cache so the next run looks for a good one (logs, then the admin API)"
            };
            Verdict {
                failure: Some(format!("the webapp does not know this worker token (from {from}): no WorkerGroupToken has its hash, so its worker group was deleted or it belongs to another deployment; {fix}")),
                drop_cached: !manual,
                ..Verdict::default()
            }
        }
    }
}

fn non_empty<'v>(vars: &'v BTreeMap<String, String>, key: &str) -> Option<&'v str> {
    vars.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The API origin from the webapp's variables: `API_ORIGIN`, else `APP_ORIGIN`, else its
/// Railway public domain; `None`: ask Railway for the service's domains.
pub fn api_origin(vars: &BTreeMap<String, String>) -> Option<String> {
    match non_empty(vars, "API_ORIGIN").or_else(|| non_empty(vars, "APP_ORIGIN")) {
        Some(o) => Some(o.trim_end_matches('/').to_string()),
        None => non_empty(vars, "RAILWAY_PUBLIC_DOMAIN").map(|d| format!("https://{d}")),
    }
}

/// The webapp's OTLP endpoint when public, else `<origin>/otel`.
pub fn otel_endpoint(vars: &BTreeMap<String, String>, origin: &str) -> String {
    match non_empty(vars, "OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(e) if is_public_url(e) => e.to_string(),
        _ => format!("{origin}/otel"),
    }
}

/// The registry values the webapp sets: (host, user, password); a `None` host means "ask
/// Railway for the registry service's domain".
pub fn registry(
    vars: &BTreeMap<String, String>,
) -> (Option<String>, Option<String>, Option<String>) {
    let get = |k: &str| non_empty(vars, k).map(str::to_string);
    (
        get("DEPLOY_REGISTRY_HOST"),
        get("DEPLOY_REGISTRY_USERNAME"),
        get("DEPLOY_REGISTRY_PASSWORD"),
    )
}

/// The checks on the values themselves; each failure is one line. (The webapp's
/// `/healthcheck` is asked separately, when the origin is public.)
pub fn value_checks(secret: &str, origin: &str, webapp: &str) -> Vec<String> {
    let mut failures = Vec::new();
    if INSECURE_SECRETS.contains(&secret.trim()) {
        failures.push(format!(
            "insecure default secret: MANAGED_WORKER_SECRET on {webapp:?} is one of the five values Trigger.dev has published (since v4.5.6 the webapp refuses them unless ALLOW_INSECURE_DEFAULT_SECRETS=1); set a random value (openssl rand -hex 16) on the webapp and redeploy it"
        ));
    }
    if !is_public_url(origin) {
        failures.push(format!(
            "API origin {origin} is not reachable from a droplet (localhost or Railway's private network): set API_ORIGIN on {webapp:?} to its public https:// URL"
        ));
    }
    failures
}

/// The record's values, secrets in the clear, to compare two extractions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub token_hash: String,
    /// `None` when the old one could not be opened.
    pub secret: Option<String>,
    pub origin: String,
    pub otel: String,
    pub registry_host: Option<String>,
    pub registry_user: Option<String>,
    pub registry_password: Option<String>,
    pub version: Option<String>,
}

/// Secrets are compared in constant time.
fn same_secret(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => crate::sealed::ct_eq(a.as_bytes(), b.as_bytes()),
        (None, None) => true,
        _ => false,
    }
}

/// What changed, by name (never values); `old` is `None` for a first extraction.
pub fn changes(old: Option<&Values>, new: &Values, fingerprint_same: bool) -> Vec<String> {
    let Some(old) = old else {
        return vec!["new record".into()];
    };
    let mut c = Vec::new();
    if !fingerprint_same {
        let fields: [(&str, bool); 6] = [
            ("worker token", old.token_hash != new.token_hash),
            (
                "MANAGED_WORKER_SECRET",
                !same_secret(&old.secret, &new.secret),
            ),
            ("API origin", old.origin != new.origin),
            ("OTEL endpoint", old.otel != new.otel),
            ("registry host", old.registry_host != new.registry_host),
            (
                "registry credentials",
                old.registry_user != new.registry_user
                    || !same_secret(&old.registry_password, &new.registry_password),
            ),
        ];
        c.extend(fields.iter().filter(|f| f.1).map(|f| f.0.to_string()));
    }
    if old.version != new.version {
        c.push(format!(
            "webapp version {} → {}",
            old.version.as_deref().unwrap_or("unknown"),
            new.version.as_deref().unwrap_or("unknown")
        ));
    }
    c
}

pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| h.trim_start_matches('['))?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// Public: not localhost, loopback, unspecified, or Railway's private network.
pub fn is_public_url(url: &str) -> bool {
    let Some(host) = url_host(url) else {
        return false;
    };
    let h = host.to_ascii_lowercase();
    !(h == "localhost"
        || h.ends_with(".localhost")
        || h.starts_with("127.")
        || h == "0.0.0.0"
        || h == "::1"
        || h == "::"
        || h.ends_with(".railway.internal")
        || h.ends_with(".internal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFRESH: Duration = Duration::from_secs(900);

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_young_good_record_with_the_same_token_is_fresh() {
        assert_eq!(
            freshness(Some(60_000), true, false, REFRESH, false),
            Freshness::Fresh { age_ms: 60_000 }
        );
    }

    #[test]
    fn age_a_new_token_or_nothing_stored_means_read_again_silently() {
        for (age, same) in [
            (Some(900_000), true),
            (Some(1), false),
            (None, true),
            (Some(-5), true),
        ] {
            assert_eq!(
                freshness(age, same, false, REFRESH, false),
                Freshness::Stale { note: None },
                "{age:?} {same}"
            );
        }
    }

    #[test]
    fn a_failed_record_or_refresh_is_read_again_and_says_why() {
        let Freshness::Stale { note: Some(n) } = freshness(Some(1), true, true, REFRESH, false)
        else {
            panic!("a failed record is not fresh")
        };
        assert!(n.starts_with("the last extraction's checks failed"));
        let Freshness::Stale { note: Some(n) } = freshness(Some(1), true, false, REFRESH, true)
        else {
            panic!("--refresh forces a read")
        };
        assert!(n.starts_with("--refresh"));
    }

    #[test]
    fn token_order_after_the_logs() {
        use LogsToken::*;
        let group = "ops-supervisor";
        type Case<'a> = (&'a [(&'a str, LogsToken)], bool, TokenChoice);
        let cases: &[Case] = &[
            (&[("d1", Known)], false, TokenChoice::Logs(0)),
            (&[("d1", Known)], true, TokenChoice::Logs(0)),
            (&[("d1", Unverified)], true, TokenChoice::Logs(0)),
            (&[("d1", Unknown)], true, TokenChoice::CreateGroup),
            // A planted newer token is skipped for the older known one: no group is created.
            (
                &[("new", Unknown), ("old", Known)],
                true,
                TokenChoice::Logs(1),
            ),
            (
                &[("new", Unknown), ("old", Unknown)],
                true,
                TokenChoice::CreateGroup,
            ),
            (&[], true, TokenChoice::CreateGroup),
        ];
        for (found, admin, want) in cases {
            assert_eq!(
                &after_logs(found, *admin, group).0,
                want,
                "{found:?} {admin}"
            );
        }
        let (_, notes) = after_logs(&[("new", Unknown), ("old", Known)], true, group);
        assert_eq!(
            notes,
            ["skipped a worker token in the webapp's logs (new): unknown to the webapp"]
        );
        let (choice, _) = after_logs(&[("d1", Unverified), ("d0", Unverified)], true, group);
        assert!(
            matches!(choice, TokenChoice::None(m) if m.starts_with("the webapp's logs hold 2 different worker tokens") && m.contains("set DATABASE_URL"))
        );
        let (choice, _) = after_logs(&[("d1", Unknown)], false, group);
        assert!(
            matches!(choice, TokenChoice::None(m) if m.starts_with("no worker token in the webapp's logs is known to the webapp (newest: d1"))
        );
        let (choice, _) = after_logs(&[], false, group);
        assert!(
            matches!(choice, TokenChoice::None(m) if m.starts_with("no worker token: TRIGGER_WORKER_TOKEN is unset"))
        );
        let (_, notes) = after_logs(&[("d1", Unknown)], true, group);
        assert!(notes
            .last()
            .unwrap()
            .contains("their worker groups were deleted"));
    }

    #[test]
    fn token_verdicts() {
        let g = WorkerGroup {
            id: "g1".into(),
            name: "g".into(),
            master_queue: "q".into(),
        };
        let known = verdict(Some(&TokenLookup::Known(g.clone())), false, "logs");
        assert_eq!(
            (known.group, known.failure, known.drop_cached),
            (Some(g), None, false)
        );
        let skipped = verdict(None, true, "manual");
        assert_eq!(
            skipped.line.as_deref(),
            Some("token check: skipped (DATABASE_URL is not set)")
        );
        let old = verdict(
            Some(&TokenLookup::TablesMissing("42P01".into())),
            false,
            "x",
        );
        assert!(old.failure.is_none() && old.line.unwrap().contains("no worker tables (42P01)"));
    }

    #[test]
    fn an_unknown_token_fails_naming_its_source_and_only_a_cached_one_is_dropped() {
        let manual = verdict(
            Some(&TokenLookup::Unknown),
            true,
            "TRIGGER_WORKER_TOKEN (manual)",
        );
        assert!(!manual.drop_cached);
        assert!(manual
            .failure
            .unwrap()
            .contains("(from TRIGGER_WORKER_TOKEN (manual))"));
        let cached = verdict(
            Some(&TokenLookup::Unknown),
            false,
            "cached (from logs, 1m ago)",
        );
        assert!(cached.drop_cached);
        assert!(cached.failure.unwrap().contains("dropped from the cache"));
    }

    #[test]
    fn api_origin_falls_back_in_order() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[
                    ("API_ORIGIN", "https://api.example.com/"),
                    ("APP_ORIGIN", "https://app"),
                ],
                Some("https://api.example.com"),
            ),
            (
                &[
                    ("API_ORIGIN", " "),
                    ("APP_ORIGIN", "https://app.example.com"),
                ],
                Some("https://app.example.com"),
            ),
            (
                &[("RAILWAY_PUBLIC_DOMAIN", "web.up.railway.app")],
                Some("https://web.up.railway.app"),
            ),
            (&[("PORT", "3000")], None),
        ];
        for (pairs, want) in cases {
            assert_eq!(api_origin(&vars(pairs)).as_deref(), *want, "{pairs:?}");
        }
    }

    #[test]
    fn otel_endpoint_only_when_public() {
        let origin = "https://api.example.com";
        assert_eq!(
            otel_endpoint(&vars(&[]), origin),
            "https://api.example.com/otel"
        );
        let private = vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel.railway.internal:4318",
        )]);
        assert_eq!(
            otel_endpoint(&private, origin),
            "https://api.example.com/otel"
        );
        let public = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com")]);
        assert_eq!(otel_endpoint(&public, origin), "https://otel.example.com");
    }

    #[test]
    fn value_checks_catch_the_default_secret_and_a_private_origin() {
        assert!(value_checks("a-random-secret", "https://api.example.com", "w").is_empty());
        for published in INSECURE_SECRETS {
            let f = value_checks(published, "https://trigger.example.com", "w");
            assert_eq!(f.len(), 1, "{published}");
        }
        let f = value_checks("managed-secret", "http://localhost:3030", "w");
        assert_eq!(f.len(), 2);
        assert!(f[0].starts_with("insecure default secret"));
        assert!(f[1].contains("not reachable from a droplet"));
        for private in [
            "http://trigger.railway.internal:3000",
            "http://127.0.0.1",
            "http://[::1]:3000",
            "ftp://x",
        ] {
            assert_eq!(
                value_checks("s3cret-value", private, "w").len(),
                1,
                "{private}"
            );
        }
    }

    #[test]
    fn changes_name_fields_never_values() {
        let old = Values {
            token_hash: "a".into(),
            secret: Some("sekrit-one".into()),
            origin: "https://a".into(),
            otel: "https://a/otel".into(),
            version: Some("v4.5.10".into()),
            ..Values::default()
        };
        assert_eq!(changes(None, &old, false), ["new record"]);
        assert!(changes(Some(&old), &old, true).is_empty());
        let new = Values {
            secret: Some("sekrit-two".into()),
            registry_password: Some("sekrit-pass".into()),
            version: Some("v4.5.12".into()),
            ..old.clone()
        };
        assert_eq!(
            changes(Some(&old), &new, false),
            [
                "MANAGED_WORKER_SECRET",
                "registry credentials",
                "webapp version v4.5.10 → v4.5.12"
            ]
        );
        let text = changes(Some(&old), &new, false).join(" ");
        assert!(!text.contains("sekrit"), "values never appear: {text}");
    }

    #[test]
    fn registry_values_come_from_the_webapp() {
        let (host, user, pass) = registry(&vars(&[
            ("DEPLOY_REGISTRY_HOST", "reg.example.com"),
            ("DEPLOY_REGISTRY_USERNAME", "u"),
        ]));
        assert_eq!(
            (host.as_deref(), user.as_deref(), pass),
            (Some("reg.example.com"), Some("u"), None)
        );
        assert_eq!(
            registry(&vars(&[])).0,
            None,
            "no host: ask Railway for the registry's domain"
        );
    }

    #[test]
    fn actions_describe_themselves_the_same_in_every_mode() {
        let create = Action::CreateWorkerGroup {
            name: "g".into(),
            origin: "https://a".into(),
        };
        assert_eq!(create.describe(), "create worker group \"g\" through https://a/admin/api/v1/workers (no token in the logs)");
        assert_eq!(
            Action::DropCachedToken.describe(),
            "drop the cached worker token"
        );
        assert_eq!(
            Action::CacheToken {
                source: "logs".into()
            }
            .describe(),
            "cache the worker token in the state database"
        );
        assert_eq!(
            Action::StoreRecord { changed: vec![] }.describe(),
            "store the config record"
        );
    }

    #[test]
    fn a_new_group_is_created_only_when_nobody_serves_runs() {
        assert_eq!(
            new_group_guard(&Serving::default(), "ops-supervisor", "hourly"),
            None
        );
        let quiet = Serving {
            default_group: Some(("bootstrap".into(), 7200.0)),
            ..Serving::default()
        };
        assert_eq!(new_group_guard(&quiet, "ops-supervisor", "hourly"), None);
        let ours = Serving {
            droplets: vec![("sup-1".into(), "bootstrap".into(), 4000.0)],
            ..quiet.clone()
        };
        let why = new_group_guard(&ours, "ops-supervisor", "hourly").unwrap();
        assert!(why.starts_with("not creating worker group \"ops-supervisor\": droplet sup-1, which ops manages, heartbeats into worker group \"bootstrap\" (last 1h6m40s ago)"), "{why}");
        assert!(
            why.contains("Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN"),
            "{why}"
        );
        assert!(why.ends_with("`ops run hourly --allow-new-worker-group` to create \"ops-supervisor\" and make it the default anyway"), "{why}");
        let alive = Serving {
            default_group: Some(("bootstrap".into(), 20.0)),
            ..Serving::default()
        };
        let why = new_group_guard(&alive, "ops-supervisor", "hourly").unwrap();
        assert!(why.contains("the global default, worker group \"bootstrap\", has supervisors heartbeating (last 20s ago)"), "{why}");
    }
}
