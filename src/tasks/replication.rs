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
use crate::tasks::{Outcome, Status, TaskCtx};

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

#[derive(Debug)]
struct Facts {
    wal_level: String,
    wal_pending: bool,
    max_slots: i32,
    max_senders: i32,
    replident: Option<String>,
    pub_exists: bool,
    pub_insert: bool,
    pub_update: bool,
    pub_delete: bool,
    pub_truncate: bool,
    pub_has_table: bool,
    slot_active: Option<bool>,
    slot_retained: Option<i64>,
}

struct Names {
    schema: String,
    table: String,
    qualified: String,
    publication: String,
}

pub fn run(opts: &ReplicationOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let url = ctx.settings.database_url.as_ref().ok_or_else(|| {
        anyhow!("not configured: set DATABASE_URL to the webapp's Postgres (on Railway: the Postgres service's DATABASE_PUBLIC_URL, with ?sslmode=require)")
    })?;
    let target = Target::parse(url)?;
    let (schema, table) = parse_table(&opts.table)?;
    let names = Names {
        qualified: format!("{}.{}", quote_ident(&schema), quote_ident(&table)),
        publication: quote_ident(&opts.publication),
        schema,
        table,
    };
    let mut lines = Vec::new();
    let mut client = target.connect(ctx.connect_timeout())?;
    let mut facts = check(&mut client, &names, opts)?;
    let apply = opts.fix && !ctx.dry_run;
    let mut drift = false;
    let mut planned = false;
    let mut failures = Vec::new();
    let run_sql = |client: &mut postgres::Client,
                   sql: &str,
                   lines: &mut Vec<String>,
                   what: &str|
     -> anyhow::Result<bool> {
        if !apply {
            lines.push(format!(
                "{} {sql}",
                if ctx.dry_run {
                    "would run:"
                } else {
                    "drift, would run (fix: false):"
                }
            ));
            return Ok(false);
        }
        client
            .batch_execute(sql)
            .map_err(|e| privilege_error(&e, sql, what))?;
        lines.push(format!("fixed: {sql}"));
        Ok(true)
    };

    // wal_level, which needs a restart to take effect.
    if facts.wal_level == "logical" {
        lines.push("ok: wal_level = logical".into());
    } else {
        drift = true;
        if !facts.wal_pending {
            lines.push(format!("wal_level is {} (needs logical)", facts.wal_level));
            planned |= ctx.dry_run;
            if run_sql(
                &mut client,
                "ALTER SYSTEM SET wal_level = logical",
                &mut lines,
                "ALTER SYSTEM",
            )? {
                // ALTER SYSTEM cannot share a transaction; the reload makes pending_restart true.
                client
                    .batch_execute("SELECT pg_reload_conf()")
                    .map_err(|e| anyhow!("pg_reload_conf() failed: {}", describe(&e)))?;
                facts.wal_pending = true;
            }
        } else {
            lines.push(format!(
                "wal_level is {} live, logical once Postgres restarts",
                facts.wal_level
            ));
        }
        if facts.wal_pending || !apply {
            match restart(opts, ctx, &target, &mut lines)? {
                Restart::Done => {
                    client = target.connect(ctx.connect_timeout())?;
                    facts = check(&mut client, &names, opts)?;
                    if facts.wal_level != "logical" {
                        bail!("Postgres restarted but wal_level is still {}: check that nothing overrides it (postgresql.conf, the provider's settings)", facts.wal_level);
                    }
                    lines.push("ok: wal_level = logical after the restart".into());
                }
                Restart::Planned => planned = true,
                Restart::Impossible(why) => failures.push(why),
            }
        }
    }

    for (name, value, min) in [
        ("max_replication_slots", facts.max_slots, 1),
        ("max_wal_senders", facts.max_senders, 1),
    ] {
        if value < min {
            failures.push(format!("{name} = {value}: logical replication needs at least 1 (ALTER SYSTEM SET {name} = 10 and restart, or set it at the provider)"));
        }
    }

    let Some(replident) = facts.replident.clone() else {
        lines.insert(
            0,
            format!(
                "waiting: table {} does not exist yet (the webapp has not run its migrations)",
                names.qualified
            ),
        );
        return Ok(finish(lines, failures, drift && !opts.fix, planned, true));
    };

    if replident == "f" {
        lines.push(format!("ok: {} has REPLICA IDENTITY FULL", names.qualified));
    } else {
        drift = true;
        lines.push(format!(
            "replica identity of {} is {} (needs FULL)",
            names.qualified,
            identity_name(&replident)
        ));
        planned |= ctx.dry_run;
        run_sql(
            &mut client,
            &format!("ALTER TABLE {} REPLICA IDENTITY FULL", names.qualified),
            &mut lines,
            "ALTER TABLE",
        )?;
    }

    if !facts.pub_exists {
        drift = true;
        lines.push(format!("publication {} does not exist", names.publication));
        planned |= ctx.dry_run;
        run_sql(
            &mut client,
            &format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                names.publication, names.qualified
            ),
            &mut lines,
            "CREATE PUBLICATION",
        )?;
    } else {
        if facts.pub_has_table {
            lines.push(format!(
                "ok: publication {} includes {}",
                names.publication, names.qualified
            ));
        } else {
            drift = true;
            lines.push(format!(
                "publication {} does not include {} (replication silently loses runs)",
                names.publication, names.qualified
            ));
            planned |= ctx.dry_run;
            run_sql(
                &mut client,
                &format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    names.publication, names.qualified
                ),
                &mut lines,
                "ALTER PUBLICATION",
            )?;
        }
        if facts.pub_insert && facts.pub_update && facts.pub_delete {
            lines.push("ok: publication publishes insert, update, delete".into());
        } else {
            drift = true;
            let mut actions = vec!["insert", "update", "delete"];
            if facts.pub_truncate {
                actions.push("truncate");
            }
            lines.push(format!(
                "publication {} misses some of insert/update/delete",
                names.publication
            ));
            planned |= ctx.dry_run;
            run_sql(
                &mut client,
                &format!(
                    "ALTER PUBLICATION {} SET (publish = '{}')",
                    names.publication,
                    actions.join(", ")
                ),
                &mut lines,
                "ALTER PUBLICATION",
            )?;
        }
    }

    match (facts.slot_active, facts.slot_retained) {
        (None, _) => lines.push(format!("ok: slot {} absent (the webapp creates it when replication starts)", opts.slot)),
        (Some(true), r) => lines.push(format!("ok: slot {} active{}", opts.slot, r.map(|b| format!(", {} retained", bytes(b))).unwrap_or_default())),
        (Some(false), Some(r)) if r as u64 > opts.slot_max_retained => failures.push(format!(
            "slot {} is inactive and retains {} of WAL (limit {}): the disk fills until it is consumed or dropped. If the webapp no longer replicates (RUN_REPLICATION_ENABLED off), drop it by hand: SELECT pg_drop_replication_slot('{}'); ops never drops a slot",
            opts.slot, bytes(r), bytes(opts.slot_max_retained as i64), opts.slot.replace('\'', "''")
        )),
        (Some(false), r) => lines.push(format!("slot {} inactive{} (under the {} limit)", opts.slot, r.map(|b| format!(", {} retained", bytes(b))).unwrap_or_default(), bytes(opts.slot_max_retained as i64))),
    }
    Ok(finish(
        lines,
        failures,
        drift && !opts.fix && !ctx.dry_run,
        planned,
        false,
    ))
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
    if ctx.dry_run || !opts.fix {
        lines.push(format!("would restart the Railway service {:?} (deployment {}) and wait for wal_level = logical", db.name, deployment.id));
        return Ok(if ctx.dry_run {
            Restart::Planned
        } else {
            Restart::Impossible(manual.into())
        });
    }
    log::warn!(
        "restarting the Railway service {:?} (deployment {}) to apply wal_level = logical",
        db.name,
        deployment.id
    );
    if !railway.restart_deployment(&deployment.id)? {
        bail!(
            "Railway refused to restart deployment {} of {:?}",
            deployment.id,
            db.name
        );
    }
    lines.push(format!(
        "restarted the Railway service {:?} (deployment {})",
        db.name, deployment.id
    ));
    let started = Instant::now();
    let mut wait = Duration::from_millis(500);
    let mut last = String::from("not checked yet");
    while Instant::now() < deadline {
        std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
        wait = (wait * 2).min(Duration::from_secs(5));
        match railway.deployment(&deployment.id) {
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

fn identity_name(code: &str) -> &'static str {
    match code {
        "d" => "DEFAULT",
        "n" => "NOTHING",
        "i" => "USING INDEX",
        "f" => "FULL",
        _ => "unknown",
    }
}

fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
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
