//! replication: check and fix Postgres logical replication for Trigger.dev's run store.
//!
//! One session, one catalog query on a healthy database. Fixes: `ALTER SYSTEM SET wal_level =
//! logical` (then a restart of the Postgres service through Railway), `REPLICA IDENTITY FULL`
//! on the table, the publication (created, given the table, given insert/update/delete). An
//! inactive slot retaining too much WAL is reported, never dropped.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use crate::clients::http::Http;
use crate::clients::postgres::{describe, Target};
use crate::clients::railway::{find_service, DeploymentStatus, Railway};
use crate::config::ReplicationOptions;
use crate::task::{ActionRecord, Outcome, Status, TaskCtx, Typed};

pub mod plan;

use plan::{Action, Facts, Plan, Step};

const DB_NAMES: &[&str] = &["Postgres", "postgres", "PostgreSQL", "Database", "DB"];

const CHECK: &str = "
WITH pub AS (
  SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = $3
), slot AS (
  SELECT active, CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL
                      ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END AS retained
  FROM pg_replication_slots WHERE slot_name = $4
)
SELECT current_setting('wal_level'),
       coalesce((SELECT pending_restart FROM pg_settings WHERE name = 'wal_level'), false),
       current_setting('max_replication_slots')::int,
       current_setting('max_wal_senders')::int,
       (SELECT c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')),
       EXISTS (SELECT 1 FROM pub),
       coalesce((SELECT pubinsert FROM pub), false),
       coalesce((SELECT pubupdate FROM pub), false),
       coalesce((SELECT pubdelete FROM pub), false),
       coalesce((SELECT pubtruncate FROM pub), false),
       coalesce((SELECT puballtables FROM pub), false)
         OR EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $3 AND schemaname = $1 AND tablename = $2),
       (SELECT active FROM slot),
       (SELECT retained FROM slot)";

const NAMESPACE: &str = "replication";
const SLOT_KEY: &str = "slot";

/// The slot as the last check saw it, for `/metrics`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlotSeen {
    pub slot: String,
    /// `None`: no such slot.
    pub active: Option<bool>,
    /// WAL bytes it retains (`None`: no slot, or a standby).
    pub retained: Option<i64>,
}

/// What the last replication check saw of the slot, and when (Unix ms).
pub fn saved_slot(state: &crate::state::State) -> Option<(SlotSeen, i64)> {
    state.kv_get(NAMESPACE, SLOT_KEY).ok().flatten()
}

struct Names {
    schema: String,
    table: String,
    qualified: String,
    publication: String,
}

pub fn run(opts: &ReplicationOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let url = ctx.settings.database_url.as_ref().ok_or_else(|| {
        crate::exit::not_configured("set DATABASE_URL to the webapp's Postgres (on Railway: the Postgres service's DATABASE_PUBLIC_URL, with ?sslmode=require)")
    })?;
    let target = Target::parse(url)?;
    let (schema, table) = parse_table(&opts.table)?;
    let names = Names {
        qualified: format!("{}.{}", quote_ident(&schema), quote_ident(&table)),
        publication: quote_ident(&opts.publication),
        schema,
        table,
    };
    let spec = plan::Spec {
        qualified: names.qualified.clone(),
        publication: names.publication.clone(),
        slot: opts.slot.clone(),
        slot_max_retained: opts.slot_max_retained,
    };
    // Observe: one session, one catalog query.
    let mut client = target.connect(ctx.connect_timeout())?;
    let facts = check(&mut client, &names, opts)?;
    if !ctx.dry_run {
        let seen = SlotSeen {
            slot: opts.slot.clone(),
            active: facts.slot_active,
            retained: facts.slot_retained,
        };
        ctx.writable_state()?
            .kv_set(NAMESPACE, SLOT_KEY, &seen, crate::state::now_ms())?;
    }
    let plan = plan::plan(&facts, &spec);
    apply(&plan, opts, ctx, &target, client, &names)
}

/// One SQL action: run (`fix` and not a dry run), planned (a dry run), or drift reported.
fn run_sql(
    action: &Action,
    execute: bool,
    ctx: &TaskCtx,
    client: &mut postgres::Client,
    lines: &mut Vec<String>,
    planned: &mut bool,
) -> anyhow::Result<String> {
    let sql = action.sql().unwrap_or_default();
    Ok(if execute {
        client
            .batch_execute(&sql)
            .map_err(|e| privilege_error(&e, &sql, action.kind()))?;
        if *action == Action::SetWalLevel {
            // ALTER SYSTEM cannot share a transaction; the reload marks it pending.
            client
                .batch_execute("SELECT pg_reload_conf()")
                .map_err(|e| anyhow!("pg_reload_conf() failed: {}", describe(&e)))?;
        }
        lines.push(format!("fixed: {sql}"));
        ctx.changed(
            action.event_kind(),
            format!("ran on the webapp's Postgres: {sql}"),
        );
        "done".to_string()
    } else if ctx.dry_run {
        *planned = true;
        lines.push(format!("would run: {sql}"));
        "planned (dry run)".to_string()
    } else {
        lines.push(format!("drift, would run (fix: false): {sql}"));
        "not done (fix: false)".to_string()
    })
}

/// Runs the plan's steps in order: notes reported, SQL executed (or, in a dry run or with
/// `fix: false`, listed), the restart done through Railway.
fn apply(
    plan: &Plan,
    opts: &ReplicationOptions,
    ctx: &TaskCtx,
    target: &Target,
    mut client: postgres::Client,
    names: &Names,
) -> anyhow::Result<Outcome> {
    let execute = opts.fix && !ctx.dry_run;
    let mut lines = Vec::new();
    let mut failures = plan.failures.clone();
    let mut records = Vec::new();
    let mut planned = false;
    let mut deferred = false;
    for step in &plan.steps {
        let action = match step {
            Step::Note(text) => {
                lines.push(text.clone());
                continue;
            }
            Step::Act(a) => a,
        };
        let what = action.describe();
        let result = if *action == Action::RestartPostgres {
            match restart(opts, ctx, target, &mut lines)? {
                Restart::Done => {
                    client = target.connect(ctx.connect_timeout())?;
                    let after = check(&mut client, names, opts)?;
                    if after.wal_level != "logical" {
                        bail!("Postgres restarted but wal_level is still {}: check that nothing overrides it (postgresql.conf, the provider's settings)", after.wal_level);
                    }
                    lines.push("ok: wal_level = logical after the restart".into());
                    "done".to_string()
                }
                Restart::Planned => {
                    planned = true;
                    "planned (dry run)".to_string()
                }
                Restart::Impossible(why) => {
                    failures.push(why.clone());
                    format!("not done: {why}")
                }
                Restart::Deferred(why) => {
                    deferred = true;
                    lines.push(why.clone());
                    format!("not done yet: {why}")
                }
            }
        } else {
            run_sql(action, execute, ctx, &mut client, &mut lines, &mut planned)?
        };
        records.push(if result == "done" {
            ActionRecord::done(action.typed(), what, result)
        } else {
            ActionRecord::not_done(action.typed(), what, result)
        });
    }
    let drift = plan.actions().next().is_some();
    let mut outcome = finish(
        lines,
        failures,
        drift && !opts.fix && !ctx.dry_run,
        planned,
        plan.waiting || deferred,
    );
    outcome.actions = records;
    Ok(outcome)
}

fn finish(
    mut lines: Vec<String>,
    mut failures: Vec<String>,
    unfixed_drift: bool,
    planned: bool,
    waiting: bool,
) -> Outcome {
    if unfixed_drift {
        failures.insert(
            0,
            "drift found and fix: false: the SQL that would fix it is listed below".into(),
        );
    }
    if !failures.is_empty() {
        failures.append(&mut lines);
        return Outcome::lines(Status::Failed, failures);
    }
    let status = if waiting {
        Status::Waiting
    } else if planned {
        Status::Planned
    } else {
        Status::Ok
    };
    if lines.iter().all(|l| l.starts_with("ok:")) {
        lines.insert(0, "replication healthy, nothing changed".into());
    }
    Outcome::lines(status, lines)
}

fn check(
    client: &mut postgres::Client,
    names: &Names,
    opts: &ReplicationOptions,
) -> anyhow::Result<Facts> {
    let row = client
        .query_one(
            CHECK,
            &[&names.schema, &names.table, &opts.publication, &opts.slot],
        )
        .map_err(|e| anyhow!("checking replication settings failed: {}", describe(&e)))?;
    Ok(Facts {
        wal_level: row.get(0),
        wal_pending: row.get(1),
        max_slots: row.get(2),
        max_senders: row.get(3),
        replident: row.get(4),
        pub_exists: row.get(5),
        pub_insert: row.get(6),
        pub_update: row.get(7),
        pub_delete: row.get(8),
        pub_truncate: row.get(9),
        pub_has_table: row.get(10),
        slot_active: row.get(11),
        slot_retained: row.get(12),
    })
}

/// A refused statement, explained: what to do at a managed provider, or which role to use.
fn privilege_error(e: &postgres::Error, sql: &str, what: &str) -> anyhow::Error {
    let code = e
        .as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_default();
    let detail = describe(e);
    let fix = match (what, code.as_str()) {
        ("ALTER SYSTEM", _) => "the role needs superuser (or ALTER SYSTEM privilege); on a managed database that refuses ALTER SYSTEM, set wal_level=logical in the provider's settings (parameter group / flags) and restart it",
        ("ALTER TABLE", "42501") => "connect as the table's owner (the webapp's role), or run it by hand as that role",
        (_, "42501") => "the role needs CREATE on the database (and ownership of the table) to manage the publication; run it as the database owner",
        _ => "run it by hand to see the full error",
    };
    anyhow!("{sql} failed: {detail}: {fix}")
}

enum Restart {
    Done,
    Planned,
    Impossible(String),
    /// Outside `restart_window`: when it opens.
    Deferred(String),
}

/// Restarts the Postgres service through Railway, then waits for Postgres to accept
/// connections with `wal_level = logical`, within `restart_timeout`.
fn restart(
    opts: &ReplicationOptions,
    ctx: &TaskCtx,
    target: &Target,
    lines: &mut Vec<String>,
) -> anyhow::Result<Restart> {
    let s = ctx.settings;
    let manual = "restart Postgres to apply wal_level=logical";
    if !opts.restart {
        return Ok(Restart::Impossible(format!(
            "{manual} (restart: false on this task: restart it by hand)"
        )));
    }
    let (Some(auth), Ok((project, environment))) = (s.railway_token.as_ref(), s.railway_ids())
    else {
        return Ok(Restart::Impossible(format!(
            "{manual}: set RAILWAY_API_TOKEN (or RAILWAY_TOKEN), RAILWAY_PROJECT_ID and RAILWAY_ENVIRONMENT_ID so ops can restart the Postgres service, or restart it by hand"
        )));
    };
    let deadline = ctx.deadline.min(Instant::now() + opts.restart_timeout);
    let http = Http::new();
    let railway = Railway::new(&http, &s.railway_api_url, (auth.0, &auth.1), deadline);
    let services = railway.services(project)?;
    let db = find_service(
        &services,
        s.db_service_name.as_deref(),
        "DB_SERVICE_NAME",
        DB_NAMES,
    )?;
    let deployment = railway
        .deployments(project, environment, &db.id, 5)?
        .into_iter()
        .find(|d| d.status == DeploymentStatus::Success)
        .ok_or_else(|| {
            anyhow!(
                "the Railway service {:?} has no running (SUCCESS) deployment to restart",
                db.name
            )
        })?;
    if let Some(why) = outside_window(opts, chrono::Local::now().naive_local()) {
        return Ok(Restart::Deferred(why));
    }
    if ctx.dry_run || !opts.fix {
        lines.push(format!("would restart the Railway service {:?} (deployment {}) and wait for wal_level = logical", db.name, deployment.id));
        return Ok(if ctx.dry_run {
            Restart::Planned
        } else {
            Restart::Impossible(manual.into())
        });
    }
    ctx.announce(&format!(
        "restarting the Railway service {:?} (deployment {}) now to apply wal_level = logical: Postgres, and the webapp with it, is unavailable until it is back (ops waits up to {})",
        db.name, deployment.id, crate::duration::format(opts.restart_timeout)
    ));
    if !railway.restart_deployment(&deployment.id)? {
        bail!(
            "Railway refused to restart deployment {} of {:?}",
            deployment.id,
            db.name
        );
    }
    let done = format!(
        "restarted the Railway service {:?} (deployment {})",
        db.name, deployment.id
    );
    ctx.changed(
        "postgres.restarted",
        format!("{done} to apply wal_level = logical"),
    );
    lines.push(done);
    wait_until_back(opts, &railway, &deployment.id, target, deadline, lines)
}

/// After the restart: polls the deployment, then Postgres, until `wal_level` reads `logical`
/// (or the deadline passes).
fn wait_until_back(
    opts: &ReplicationOptions,
    railway: &Railway,
    deployment: &str,
    target: &Target,
    deadline: Instant,
    lines: &mut Vec<String>,
) -> anyhow::Result<Restart> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(500);
    let mut last = String::from("not checked yet");
    while Instant::now() < deadline {
        std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
        wait = (wait * 2).min(Duration::from_secs(5));
        match railway.deployment(deployment) {
            Ok(d)
                if matches!(
                    d.status,
                    DeploymentStatus::Failed | DeploymentStatus::Crashed
                ) =>
            {
                bail!("the Postgres deployment {} is {:?} after the restart: look at its logs in Railway", d.id, d.status)
            }
            Ok(d) if d.status != DeploymentStatus::Success => {
                last = format!("deployment {:?}", d.status);
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        }
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        match target.connect(remaining).and_then(|mut c| {
            c.query_one("SELECT current_setting('wal_level')", &[])
                .map(|r| r.get::<_, String>(0))
                .map_err(|e| anyhow!(describe(&e)))
        }) {
            Ok(level) if level == "logical" => {
                lines.push(format!(
                    "Postgres back after {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(Restart::Done);
            }
            Ok(level) => last = format!("wal_level still {level}"),
            Err(e) => last = format!("{e:#}"),
        }
    }
    bail!(
        "Postgres did not come back with wal_level = logical within {} after the restart (last: {last})",
        crate::duration::format(opts.restart_timeout)
    )
}

/// Why the restart waits: `restart_window` is set and `now` (host time) is outside it.
fn outside_window(opts: &ReplicationOptions, now: chrono::NaiveDateTime) -> Option<String> {
    let w = opts.restart_window.as_ref()?;
    if w.contains(now) {
        return None;
    }
    let next = w.next_open(now);
    let wait = (next - now).to_std().unwrap_or_default();
    Some(format!(
        "Postgres restart deferred: wal_level = logical is set and waits for a restart, which restart_window {w} allows next at {} (in {}); or restart the Postgres service by hand",
        next.format("%Y-%m-%d %H:%M"),
        crate::duration::format(std::time::Duration::from_secs(wait.as_secs() / 60 * 60))
    ))
}

/// `public."TaskRun"` → ("public", "TaskRun"); unquoted names fold to lower case as in SQL.
pub fn parse_table(text: &str) -> anyhow::Result<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => bail!("table {text:?}: unterminated quote"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            bail!("table {text:?} is not schema.table (e.g. public.\"TaskRun\")");
        }
        parts.push(part);
        match chars.next() {
            Some('.') | None => {}
            Some(c) => bail!("table {text:?}: unexpected {c:?}"),
        }
    }
    match parts.len() {
        1 => Ok(("public".into(), parts.remove(0))),
        2 => Ok((parts.remove(0), parts.remove(0))),
        _ => bail!("table {text:?} is not schema.table (e.g. public.\"TaskRun\")"),
    }
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(
            parse_table("public.\"TaskRun\"").unwrap(),
            ("public".into(), "TaskRun".into())
        );
        assert_eq!(
            parse_table("TaskRun").unwrap(),
            ("public".into(), "taskrun".into())
        );
        assert_eq!(
            parse_table("\"My\"\"Schema\".t").unwrap(),
            ("My\"Schema".into(), "t".into())
        );
        assert!(parse_table("a.b.c").is_err());
        assert!(parse_table("\"open").is_err());
        assert_eq!(quote_ident("Task\"Run"), "\"Task\"\"Run\"");
    }
}
