//! `ops status`: what a person on call asks first, from local state only (no network).

use serde::Serialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::config::{SupervisorOptions, TaskSpec};
use crate::exit::ExitCode;
use crate::profiles::ProfileState;
use crate::report::{fmt_ms, local_time, table};
use crate::settings::DEPLOYMENT_TAG_PREFIX as NAME_PREFIX;
use crate::state::State;
use crate::tasks::{extract, supervisor};

fn rfc3339(ms: i64) -> Value {
    json!(crate::timefmt::rfc3339_ms(ms))
}

/// The changes `status` lists: the last week's, at most this many (`ops events` has them all).
const EVENTS_SHOWN_MS: i64 = 7 * 86_400_000;
const EVENTS_SHOWN: u32 = 20;

#[derive(Serialize)]
struct ProfileStatus {
    name: String,
    cron: String,
    scheduled: bool,
    next_run: Option<String>,
    last_run: Value,
    healthy_streak: u32,
    skipped_streak: u32,
    disabled: bool,
    auto_disabled: bool,
    /// Why it does not run (`ops disable`, or auto-disabled), with the way back.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
}

/// The status document, shared by `ops status --json` and `ops serve`'s `/v1/status`.
pub fn document(app: &App, state: Option<&State>) -> anyhow::Result<Value> {
    let now = chrono::Local::now().naive_local();
    let profiles = profile_docs(app, state, now)?;
    let events = match state {
        Some(s) => serde_json::to_value(s.events(
            Some(crate::state::now_ms() - EVENTS_SHOWN_MS),
            None,
            EVENTS_SHOWN,
        )?)?,
        None => json!([]),
    };
    let (droplets, token, record, replication, last_alert, queue) = match state {
        None => (
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ),
        Some(s) => {
            let droplets = supervisor_doc(s)?;
            let token = extract::token_info(s, &app.settings)
                .map(|t| json!({"source": t.source, "found_at": if t.found_at > 0 { rfc3339(t.found_at) } else { Value::Null }}))
                .unwrap_or(Value::Null);
            let record = record_doc(app, s)?;
            let replication = s
                .last_task_result("replication")?
                .map(|(at, status, detail)| json!({"at": rfc3339(at), "status": status, "summary": replication_summary(&status, &detail)}))
                .unwrap_or(Value::Null);
            let alert = s
                .alerts(None, 1)?
                .into_iter()
                .next()
                .map(|a| json!({"at": rfc3339(a.created_at), "profile": a.profile, "kind": a.kind, "channel": a.channel, "delivered": a.delivered}))
                .unwrap_or(Value::Null);
            let queue = supervisor::store::queue(s)?
                .map(|(q, at)| {
                    let mut v = serde_json::to_value(&q).unwrap_or(Value::Null);
                    v["checked_at"] = rfc3339(at);
                    v
                })
                .unwrap_or(Value::Null);
            (droplets, token, record, replication, alert, queue)
        }
    };
    let mut doc = json!({
        "schema_version": crate::summary::SCHEMA_VERSION,
        "host": crate::runner::hostname(),
        "state_dir": app.state_dir.display().to_string(),
        "is_active": app.settings.is_active,
        "profiles": profiles,
        "supervisor": droplets,
        "worker_token": token,
        "config_record": record,
        "routing": queue.get("routing").cloned().unwrap_or(Value::Null),
        "queue": queue,
        "replication": replication,
        "last_alert": last_alert,
        "events": events,
    });
    trust_facts(app, state, &mut doc)?;
    Ok(doc)
}

/// Each profile: its schedule, its last run and its state.
fn profile_docs(
    app: &App,
    state: Option<&State>,
    now: chrono::NaiveDateTime,
) -> anyhow::Result<Vec<ProfileStatus>> {
    let mut profiles = Vec::new();
    for p in &app.config.profiles {
        let ps = state
            .map(|s| ProfileState::load(s, &p.name))
            .unwrap_or_default();
        let last = match state {
            Some(s) => s.history(Some(&p.name), 1)?.into_iter().next(),
            None => None,
        };
        profiles.push(ProfileStatus {
            name: p.name.clone(),
            cron: p.cron.as_str().to_string(),
            scheduled: p.enabled,
            next_run: (p.enabled && !ps.disabled).then(|| p.cron.next_after(now).and_then(crate::timefmt::local_naive_rfc3339)).flatten(),
            last_run: last
                .map(|r| {
                    json!({
                        "started_at": rfc3339(r.started_at),
                        "status": r.status,
                        "duration_ms": r.finished_at.map(|f| (f - r.started_at).max(0)),
                        "failed_tasks": r.tasks.iter().filter(|t| t.status == "failed").map(|t| t.task.clone()).collect::<Vec<_>>(),
                        "first_failure": (r.status == "failed").then(|| r.tasks.iter().find(|t| t.status == "failed").and_then(|t| t.detail.lines().next()).unwrap_or(&r.summary).to_string()),
                    })
                })
                .unwrap_or(Value::Null),
            healthy_streak: ps.healthy_streak,
            skipped_streak: ps.skipped_streak,
            disabled: ps.disabled,
            auto_disabled: ps.auto_disabled,
            disabled_reason: ps.disabled_reason(&p.name),
        });
    }
    Ok(profiles)
}

/// The config record extract keeps, and the supervisor version it makes.
fn record_doc(app: &App, s: &State) -> anyhow::Result<Value> {
    Ok(extract::record_info(s)?
        .map(|r| {
            let chosen = crate::release::supervisor_version(app.settings.trigger_version.as_deref(), r.webapp_version.as_deref());
            json!({
                "extracted_at": rfc3339(r.extracted_at), "api_origin": r.api_origin, "fingerprint": r.fingerprint,
                "worker_group": r.worker_group,
                "webapp_version": r.webapp_version, "webapp_release": r.webapp_release,
                "supervisor_version": {
                    "tag": chosen.tag,
                    "source": format!("{:?}", chosen.source).to_ascii_lowercase(),
                    "summary": crate::release::describe(app.settings.trigger_version.as_deref(), r.webapp_version.as_deref()),
                },
            })
        })
        .unwrap_or(Value::Null))
}

/// The first supervisor task of the enabled profiles (else any): its options, its profile.
fn supervisor_task(app: &App) -> Option<(&str, &SupervisorOptions)> {
    let all = app.config.profiles.iter().flat_map(|p| {
        p.tasks.iter().filter_map(move |t| match &t.spec {
            TaskSpec::Supervisor(o) => Some((p.enabled && t.enabled, p.name.as_str(), o)),
            _ => None,
        })
    });
    let mut list: Vec<_> = all.collect();
    list.sort_by_key(|(on, _, _)| !on);
    list.first().map(|(_, p, o)| (*p, *o))
}

/// What was read (state directory, env file, config), the breaker, the last supervisor
/// result, each heartbeat as a time, and the problems found in all of it.
fn trust_facts(app: &App, state: Option<&State>, doc: &mut Value) -> anyhow::Result<()> {
    let now = crate::state::now_ms();
    doc["sources"] = json!({
        "state_dir": app.state_dir.display().to_string(),
        "state_db": state.map(|s| s.path().display().to_string()),
        "env_file": app.env_file.as_ref().map(|p| p.display().to_string()),
        "config": app.config.shown_path(),
    });
    let sup = supervisor_task(app);
    if let (Some(s), Some((profile, opts))) = (state, sup) {
        let breaker = supervisor::store::breaker(s)?;
        let window = opts.replacement_window.as_millis() as i64;
        let mut within: Vec<i64> = breaker
            .replacements
            .into_iter()
            .filter(|t| now - t < window)
            .collect();
        within.sort_unstable();
        let max = opts.max_replacements as usize;
        let open = within.len() >= max;
        // It closes when enough of the counted replacements have left the window.
        let closes_at = open
            .then(|| within.get(within.len() - max).map(|t| rfc3339(t + window)))
            .flatten();
        doc["breaker"] = json!({
            "open": open,
            "replacements": within.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>(),
            "max_replacements": max,
            "window": crate::duration::format(opts.replacement_window),
            "closes_at": closes_at,
            "profile": profile,
        });
        doc["supervisor_run"] = s
            .last_task_result("supervisor")?
            .map(|(at, status, detail)| json!({"at": rfc3339(at), "status": status, "profile": profile, "detail": detail.lines().collect::<Vec<_>>()}))
            .unwrap_or(Value::Null);
    }
    let checked = doc["supervisor"]["checked_at"].clone();
    if let (Some(list), Some(at)) = (
        doc["supervisor"]["droplets"].as_array_mut(),
        checked
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
    ) {
        for d in list {
            if let Some(age) = d["heartbeat_age_secs"].as_f64() {
                d["last_heartbeat_at"] = rfc3339(at.timestamp_millis() - (age * 1000.0) as i64);
            }
        }
    }
    doc["problems"] = serde_json::to_value(crate::problems::find(doc, now))?;
    Ok(())
}

/// What the last replication run did, in a line: a failure's first line; a deferred restart;
/// what it fixed; else its first line.
fn replication_summary(status: &str, detail: &str) -> String {
    let lines: Vec<&str> = detail.lines().collect();
    if status == "failed" {
        return lines.first().copied().unwrap_or("").to_string();
    }
    if let Some(l) = lines
        .iter()
        .find(|l| l.starts_with("Postgres restart deferred"))
    {
        return l.to_string();
    }
    let fixed: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("fixed: ") || l.starts_with("restarted "))
        .copied()
        .collect();
    if fixed.is_empty() {
        lines.first().copied().unwrap_or("").to_string()
    } else {
        format!("healthy after this run's changes: {}", fixed.join("; "))
    }
}

/// The last runs shown under a jobs.yaml error (its profiles are unknown then).
const RUNS_SHOWN_BROKEN: u32 = 10;

/// `ops status [--json] [--check]`: `--check` exits 1 while any problem stands. With a jobs.yaml
/// that cannot be read (`broken_jobs`), its error comes first, then what the state holds (the
/// droplets, the last runs), and the exit is 2.
pub fn run(
    app: &App,
    json_out: bool,
    check: bool,
    broken_jobs: Option<anyhow::Error>,
) -> anyhow::Result<ExitCode> {
    let state = State::open_read_only(&app.state_dir)?;
    let mut doc = document(app, state.as_ref())?;
    let broken = broken_jobs.map(|e| format!("{e:#}"));
    let runs = match (&broken, &state) {
        (Some(_), Some(s)) => s.history(None, RUNS_SHOWN_BROKEN)?,
        _ => Vec::new(),
    };
    if let Some(e) = &broken {
        doc["config_error"] = json!(e);
        doc["last_runs"] = serde_json::to_value(&runs)?;
    }
    if json_out {
        println!(
            "{}",
            crate::redact::redact(&serde_json::to_string_pretty(&doc)?)
        );
    } else {
        let mut text = String::new();
        if let Some(e) = &broken {
            text.push_str(&fold(
                &format!("ops: configuration error: {e}"),
                100,
                "    ",
            ));
            text.push_str("what the state directory holds, while the file is fixed:\n");
            text.push_str("last runs:\n");
            text.push_str(&crate::report::history_table(&runs));
            text.push('\n');
        }
        // Every string in the document may come from outside (droplet names, tags, rows):
        // escaped once here, so none can start a line of its own in the text.
        text.push_str(&human(&escaped(doc.clone())));
        print!("{}", crate::redact::redact(&text));
    }
    if broken.is_some() {
        return Ok(ExitCode::Config);
    }
    let problems = doc["problems"].as_array().map_or(0, Vec::len);
    Ok(if check && problems > 0 {
        ExitCode::TaskFailed
    } else {
        ExitCode::Success
    })
}

/// `first` then `text` in lines of at most `width` characters, the later ones indented.
fn wrap(first: &str, text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut fresh = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !fresh && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `line` in pieces of at most `width` characters, broken at a space (inside a word only when
/// it has none), the later pieces indented; the spacing inside a piece (a table's) is kept.
fn fold(line: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut rest: Vec<char> = line.chars().collect();
    let mut room = width;
    while rest.len() > room {
        let cut = rest[..=room]
            .iter()
            .rposition(|c| *c == ' ')
            .filter(|&i| i > 0)
            .unwrap_or(room);
        out.push_str(rest[..cut].iter().collect::<String>().trim_end());
        out.push('\n');
        out.push_str(indent);
        let skip = rest[cut..].iter().take_while(|c| **c == ' ').count();
        rest.drain(..cut + skip);
        room = width - indent.chars().count();
    }
    out.extend(rest);
    out.push('\n');
    out
}

/// The problems first (wrapped, never cut: the fix is at the end), then what was read.
fn problems_block(doc: &Value) -> String {
    let mut out = String::new();
    match doc["problems"].as_array() {
        Some(list) if !list.is_empty() => {
            out.push_str(&format!("PROBLEMS ({}):\n", list.len()));
            for p in list {
                out.push_str(&wrap("  ✗ ", p["text"].as_str().unwrap_or(""), 100, "    "));
            }
        }
        _ if never_ran(doc) => out.push_str(
            "nothing has run yet: no problem can be known (`ops run <profile>`, or wait for the timers)\n",
        ),
        _ => out.push_str("no problems\n"),
    }
    let src = &doc["sources"];
    out.push_str(&format!(
        "read: state {} ({})\n      env {}\n      config {}\n\n",
        src["state_dir"].as_str().unwrap_or("?"),
        if src["state_db"].is_string() {
            "ops.db"
        } else {
            "no database yet: nothing has run with this state directory"
        },
        src["env_file"]
            .as_str()
            .unwrap_or("none (process environment only)"),
        src["config"].as_str().unwrap_or("?"),
    ));
    out
}

/// No profile has a run on record (a new install, or another state directory).
fn never_ran(doc: &Value) -> bool {
    doc["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|p| p["last_run"].is_null())
}

fn short_time(v: &Value) -> String {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| {
            local_time(t.timestamp_millis())
                .get(5..16)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "-".into())
}

/// What the last supervisor run saw: its droplets and the fleet's scale.
fn supervisor_doc(s: &crate::state::State) -> anyhow::Result<Value> {
    let scale = supervisor::store::scale(s)
        .ok()
        .flatten()
        .map(|(v, _)| json!(v))
        .unwrap_or(Value::Null);
    let image = supervisor::image::stored(Some(s))
        .map(|b| image_doc(&b))
        .unwrap_or(Value::Null);
    let kubernetes = supervisor::store::kubernetes(s)
        .ok()
        .flatten()
        .map(|(k, at)| json!({"checked_at": rfc3339(at), "namespace": k.namespace, "server": k.server,
            "version": k.version, "health": k.health, "supervisors": k.supervisors, "pending": k.pending,
            "doks": k.doks}));
    let doc = supervisor::store::last_droplets(s)?.map(
        |(d, at)| json!({"checked_at": rfc3339(at), "droplets": d, "scale": scale, "image": image}),
    );
    Ok(match (doc, kubernetes) {
        (Some(mut d), k) => {
            d["kubernetes"] = k.unwrap_or(Value::Null);
            d
        }
        (None, Some(k)) => json!({"kubernetes": k}),
        (None, None) => Value::Null,
    })
}

/// `cluster trigger-supervisor-… (DOKS 1.34.1-do.1, running): ops-supervisor 1 node
/// (s-2vcpu-2gb), ops-runs-s-4vcpu-8gb 2 nodes (1..5, s-4vcpu-8gb); $114/month`, escaped (the
/// names are DigitalOcean's).
fn doks_line(d: &Value) -> String {
    if !d.is_object() {
        return String::new();
    }
    let text = |v: &Value| crate::redact::line(v.as_str().unwrap_or("?"));
    let pools: Vec<String> = d["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let n = p["nodes"].as_u64().unwrap_or(0);
            let bounds = if p["auto_scale"].as_bool().unwrap_or(false) {
                format!("{}..{}, ", p["min"], p["max"])
            } else {
                String::new()
            };
            format!(
                "{} {n} node{} ({bounds}{})",
                text(&p["name"]),
                if n == 1 { "" } else { "s" },
                text(&p["size"])
            )
        })
        .collect();
    let cost = d["monthly_cost_usd"]
        .as_f64()
        .map(|c| format!("; ${c:.0}/month"))
        .unwrap_or_default();
    let upgrades: Vec<String> = d["upgrades"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let upgrades = if upgrades.is_empty() {
        String::new()
    } else {
        format!("; upgrades available: {}", upgrades.join(", "))
    };
    format!(
        "cluster {} (DOKS {}, {}{}): {}{cost}{upgrades}\n",
        text(&d["cluster"]),
        text(&d["version"]),
        text(&d["state"]),
        if d["ha"].as_bool().unwrap_or(false) {
            ", HA"
        } else {
            ""
        },
        pools.join(", ")
    )
}

/// `kubernetes trigger: healthy, supervisor v4.5.12; supervisor-7d9-x beat 4s ago; 1 run pod
/// waiting for a node`.
fn kubernetes_line(k: &Value) -> String {
    if !k.is_object() {
        return String::new();
    }
    let pods: Vec<String> = k["supervisors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("?");
            match p["heartbeat_age_secs"].as_f64() {
                Some(age) => format!("{name} beat {age:.0}s ago"),
                None => format!("{name} never beat"),
            }
        })
        .collect();
    let pending = k["pending"].as_array().map_or(0, Vec::len);
    format!(
        "kubernetes {}: {}, supervisor {}; {}; {pending} run pod(s) waiting for a node\n",
        k["namespace"].as_str().unwrap_or("?"),
        k["health"].as_str().unwrap_or("?"),
        k["version"].as_str().unwrap_or("?"),
        if pods.is_empty() {
            "no supervisor pod".to_string()
        } else {
            pods.join(", ")
        }
    )
}

/// The baked image as `status --json` shows it.
fn image_doc(b: &supervisor::image::Baked) -> Value {
    json!({
        "image": b.image,
        "name": b.image_name,
        "version": b.version,
        "size_gigabytes": b.size_gb,
        "images": b.images,
        "cost_monthly": b.cost_monthly(),
        "baking": b.baker.is_some(),
        "bake_droplet": b.baker,
        "last_failure": b.failed.as_ref().map(|(at, why)| json!({"at": rfc3339(*at), "why": why})),
    })
}

/// `image: baked 170000000 (supervisor v4.5.12, 2.4 GB); 2 kept, $0.28/month`.
fn image_line(image: &Value) -> String {
    if !image.is_object() {
        return String::new();
    }
    let cost = image["cost_monthly"].as_f64().unwrap_or(0.0);
    let version = image["version"].as_str().unwrap_or("");
    if let Some(id) = image["image"].as_u64() {
        return format!(
            "image: baked {id} (supervisor {version}); {} kept, ${cost:.2}/month\n",
            image["images"]
        );
    }
    let why = if image["baking"] == true {
        "baking one now".to_string()
    } else if let Some(w) = image["last_failure"]["why"].as_str() {
        format!("the last bake failed: {w}")
    } else {
        "none yet".to_string()
    };
    format!(
        "image: none for supervisor {version} ({why}): new droplets start from the base image\n"
    )
}

fn human(doc: &Value) -> String {
    let mut out = String::new();
    if doc["is_active"] == false {
        out.push_str("IS_ACTIVE=false: monitoring disabled, every run exits at once\n");
    }
    out.push_str(&profiles_table(doc));
    out.push_str(&droplets_table(doc));
    out.push_str(&scale_line(&doc["supervisor"]["scale"]));
    out.push_str(&image_line(&doc["supervisor"]["image"]));
    out.push_str(&kubernetes_line(&doc["supervisor"]["kubernetes"]));
    out.push_str(&doks_line(&doc["supervisor"]["kubernetes"]["doks"]));
    out.push_str(&facts_lines(doc));
    // The short times above carry no zone of their own: say it once.
    out.push_str(&format!(
        "times are local (UTC{})\n",
        chrono::Local::now().format("%:z")
    ));
    // Keep every line inside 100 columns: a long one wraps, its end (the reason, the fix) kept.
    let rest: String = out
        .lines()
        .map(|l| {
            if l.chars().count() > 100 {
                fold(l, 100, "    ")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    format!("{}{rest}", problems_block(doc))
}

fn profiles_table(doc: &Value) -> String {
    let mut out = String::new();
    let mut rows = vec![[
        "PROFILE", "LAST RUN", "RESULT", "TOOK", "NEXT RUN", "OK×", "SKIP×", "STATE",
    ]
    .map(String::from)
    .to_vec()];
    for p in doc["profiles"].as_array().into_iter().flatten() {
        let last = &p["last_run"];
        let state = if p["auto_disabled"] == true {
            "auto-disabled"
        } else if p["disabled"] == true {
            "disabled"
        } else if p["scheduled"] == false {
            "unscheduled"
        } else {
            "active"
        };
        rows.push(vec![
            p["name"].as_str().unwrap_or("").to_string(),
            short_time(&last["started_at"]),
            last["status"].as_str().unwrap_or("never").to_string(),
            last["duration_ms"]
                .as_i64()
                .map(|d| fmt_ms(d as u64))
                .unwrap_or_else(|| "-".into()),
            short_time(&p["next_run"]),
            p["healthy_streak"].to_string(),
            p["skipped_streak"].to_string(),
            state.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    out.push('\n');
    out
}

/// `fleet: 3 wanted, 2 serving (min 1, max 3): …; $36/month ($54 at max)`.
fn scale_line(scale: &Value) -> String {
    if !scale.is_object() {
        return String::new();
    }
    let cost = match (
        scale["cost_monthly"].as_f64(),
        scale["cost_monthly_at_max"].as_f64(),
    ) {
        (Some(c), Some(m)) if scale["scales"] == true => {
            format!("; ${c:.0}/month (${m:.0} for a fixed fleet of max)")
        }
        (Some(c), _) => format!("; ${c:.0}/month"),
        _ => String::new(),
    };
    let why = scale["why"].as_str().unwrap_or("");
    // The run's own line repeats the counts this line starts with.
    let repeated = format!(
        "fleet: {} droplet(s) wanted (min {}, max {}): ",
        scale["wanted"], scale["min"], scale["max"]
    );
    format!(
        "fleet: {} wanted, {} serving: {}{cost}\n",
        scale["wanted"],
        scale["actual"],
        why.strip_prefix(&repeated).unwrap_or(why)
    )
}

fn droplets_table(doc: &Value) -> String {
    let now = crate::state::now_ms();
    let mut out = String::new();
    match doc["supervisor"]["droplets"].as_array() {
        Some(list) if !list.is_empty() => {
            let mut rows = vec![[
                "DROPLET",
                "IP",
                "HEALTH",
                "RUNS",
                "HEARTBEAT",
                "FAILS",
                "SPEC",
                // Last: the one cell a long row may cut (the 100 columns).
                "DISK",
            ]
            .map(String::from)
            .to_vec()];
            for d in list {
                rows.push(vec![
                    // Every name starts so (the deployment tag): the room goes to the columns.
                    d["name"].as_str().map_or("", short_name).to_string(),
                    d["ip"].as_str().unwrap_or("-").to_string(),
                    match (d["deleted"] == true, d["health"].as_str().unwrap_or("")) {
                        (true, _) => "deleted".into(),
                        // Why it is held is the webapp problem above.
                        (false, "held") => "held (webapp)".into(),
                        (false, h) => h.to_string(),
                    },
                    d["executing_runs"]
                        .as_u64()
                        .map_or_else(|| "-".into(), |n| n.to_string()),
                    // Against now, not the check: a heartbeat ages between runs.
                    crate::problems::ms(&d["last_heartbeat_at"])
                        .map(|at| crate::problems::relative(at, now))
                        .unwrap_or_else(|| "-".into()),
                    d["fails"].to_string(),
                    if d["spec_current"] == true {
                        "current"
                    } else {
                        "stale"
                    }
                    .into(),
                    disk_cell(&d["disk"]),
                ]);
            }
            out.push_str(&table(&rows));
            out.push_str(&format!(
                "(checked {}, {}; names without their {NAME_PREFIX} prefix)\n",
                short_time(&doc["supervisor"]["checked_at"]),
                crate::problems::ms(&doc["supervisor"]["checked_at"])
                    .map_or("-".into(), |at| crate::problems::relative(at, now))
            ));
        }
        _ => out.push_str("supervisor: no droplet seen by a check yet\n"),
    }
    out.push_str(&since_the_check(doc, now));
    out
}

/// The document with control characters escaped in every string (JSON keeps them as escapes
/// already; the text would print them).
fn escaped(doc: Value) -> Value {
    match doc {
        Value::String(s) => Value::String(crate::redact::escape_controls(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(escaped).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, escaped(v))).collect())
        }
        other => other,
    }
}

fn short_name(name: &str) -> &str {
    name.strip_prefix(NAME_PREFIX).unwrap_or(name)
}

/// The root filesystem's free share: `40%`, `5% LOW` (below 10%: the task fails), `unknown` (no
/// samples: the monitoring agent), `-` (not read yet).
fn disk_cell(disk: &Value) -> String {
    match (disk["verdict"].as_str(), disk["free_ratio"].as_f64()) {
        (Some("low"), Some(r)) => format!("{:.0}% LOW", r * 100.0),
        (Some(_), Some(r)) => format!("{:.0}%", r * 100.0),
        (Some(_), None) => "unknown".into(),
        _ => "-".into(),
    }
}

/// What the droplet table cannot show: a later run that did not update it (it refused, or
/// failed before looking), and droplets created since.
fn since_the_check(doc: &Value, now: i64) -> String {
    let mut out = String::new();
    let checked = crate::problems::ms(&doc["supervisor"]["checked_at"]).unwrap_or(0);
    let run = &doc["supervisor_run"];
    if let Some(at) = crate::problems::ms(&run["at"]) {
        if at > checked + 1000 && run["status"] == "failed" {
            out.push_str(&format!(
                "the last supervisor run ({}) did not update this: {}\n",
                crate::problems::relative(at, now),
                run["detail"][0].as_str().unwrap_or("")
            ));
        }
    }
    // The table is what its run saw before acting: that run's creates are not in it.
    let seen_before = match crate::problems::ms(&run["at"]) {
        Some(started) if started <= checked => started,
        _ => checked,
    };
    for e in doc["events"].as_array().into_iter().flatten() {
        let at = crate::problems::ms(&e["at"]).unwrap_or(0);
        if e["kind"] == "droplet.created" && at >= seen_before {
            out.push_str(&format!(
                "since: {} ({})\n",
                e["message"].as_str().unwrap_or(""),
                crate::problems::relative(at, now)
            ));
        }
    }
    out
}

/// Where deployed runs go, whether that is our group, and the projects that go elsewhere.
fn routing_lines(routing: &Value, error: &Value) -> String {
    if let Some(e) = error.as_str() {
        return format!("runs go to: unknown ({e})\n");
    }
    if !routing.is_object() {
        return String::new();
    }
    let mut out = match routing["default_group"].as_str() {
        Some(g) => format!(
            "runs go to: worker group {g} (queue {}, the global default): {}\n",
            routing["default_queue"].as_str().unwrap_or("-"),
            if routing["default_is_ours"] == true {
                "ours"
            } else {
                "not ours"
            }
        ),
        None => "runs go to: no global default worker group\n".into(),
    };
    let list = |key: &str| -> Vec<String> {
        routing[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| match p {
                        Value::Array(pair) => format!(
                            "{} → {}",
                            pair[0].as_str().unwrap_or(""),
                            pair[1].as_str().unwrap_or("")
                        ),
                        other => other.as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let to_ours = list("projects_to_ours");
    if !to_ours.is_empty() {
        out.push_str(&format!(
            "projects routed to ours: {}\n",
            to_ours.join(", ")
        ));
    }
    let elsewhere = list("projects_elsewhere");
    if !elsewhere.is_empty() {
        out.push_str(&format!(
            "projects routed elsewhere: {}\n",
            elsewhere.join(", ")
        ));
    }
    if routing["ours_receives"] == false {
        out.push_str("runs reach our supervisors: NO (the fix is under PROBLEMS above)\n");
    }
    out
}

/// Queues with waiting runs that no supervisor serves.
fn orphan_lines(queue: &Value) -> String {
    let mut out = String::new();
    if let Some(e) = queue["queues_error"].as_str() {
        out.push_str(&format!("waiting runs: unknown at the last check ({e})\n"));
    }
    for q in queue["queues"].as_array().into_iter().flatten() {
        if q["served"] == true || q["pending"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        out.push_str(&format!(
            "orphaned queue {} (worker group {}): {} PENDING, oldest waited {}, {}\n",
            q["queue"].as_str().unwrap_or("?"),
            q["worker_group"].as_str().unwrap_or("?"),
            q["pending"],
            fmt_ms((q["oldest_pending_secs"].as_f64().unwrap_or(0.0).max(0.0) * 1000.0) as u64),
            match q["last_heartbeat_secs"].as_f64() {
                Some(a) => format!(
                    "last heartbeat {} ago",
                    fmt_ms((a.max(0.0) * 1000.0) as u64)
                ),
                None => "never a heartbeat".into(),
            }
        ));
    }
    out
}

/// Token, version, worker group, queue, replication, last alert: one line each.
fn facts_lines(doc: &Value) -> String {
    let mut out = String::new();
    let token = &doc["worker_token"];
    out.push_str(&match token["source"].as_str() {
        Some(src) => format!(
            "worker token: {src}{}\n",
            token["found_at"]
                .as_str()
                .map(|_| format!(", since {}", short_time(&token["found_at"])))
                .unwrap_or_default()
        ),
        None => "worker token: none yet (run the extract task)\n".into(),
    });
    if let Some(summary) = doc["config_record"]["supervisor_version"]["summary"].as_str() {
        out.push_str(summary);
        out.push('\n');
    }
    let group = &doc["config_record"]["worker_group"];
    if let Some(name) = group["name"].as_str() {
        out.push_str(&format!(
            "worker group: {name} (queue {})\n",
            group["master_queue"].as_str().unwrap_or("-")
        ));
    }
    let queue = &doc["queue"];
    out.push_str(&routing_lines(&doc["routing"], &queue["routing_error"]));
    if queue.is_object() {
        out.push_str(&match queue["oldest_pending_secs"].as_f64() {
            Some(secs) => format!(
                "queue: oldest PENDING run waited {} (at {})\n",
                fmt_ms((secs.max(0.0) * 1000.0) as u64),
                short_time(&queue["checked_at"])
            ),
            None => format!(
                "queue: no PENDING run (at {})\n",
                short_time(&queue["checked_at"])
            ),
        });
    }
    out.push_str(&orphan_lines(queue));
    let rep = &doc["replication"];
    out.push_str(&match rep["status"].as_str() {
        Some(st) => format!(
            "replication: {st} at {}: {}\n",
            short_time(&rep["at"]),
            rep["summary"].as_str().unwrap_or("")
        ),
        None => "replication: not checked yet\n".into(),
    });
    let alert = &doc["last_alert"];
    out.push_str(&match alert["kind"].as_str() {
        Some(kind) => format!(
            "last alert: {kind} for {} at {} via {} ({})\n",
            alert["profile"].as_str().unwrap_or(""),
            short_time(&alert["at"]),
            alert["channel"].as_str().unwrap_or(""),
            if alert["delivered"] == true {
                "delivered"
            } else {
                "NOT delivered"
            }
        ),
        None => "last alert: none\n".into(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_folds_at_spaces_and_keeps_its_end() {
        let line = format!("{}  b {}", "a".repeat(60), "c ".repeat(40));
        let folded = fold(&line, 100, "    ");
        assert!(folded.lines().all(|l| l.chars().count() <= 100), "{folded}");
        assert_eq!(
            folded.split_whitespace().collect::<Vec<_>>(),
            line.split_whitespace().collect::<Vec<_>>()
        );
        assert!(folded.starts_with(&format!("{}  b c", "a".repeat(60))));
        assert_eq!(fold(&"x".repeat(150), 100, "  ").lines().count(), 2);
    }
}
