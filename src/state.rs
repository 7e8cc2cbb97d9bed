//! The state database `<state>/ops.db`: runs and task results, key/value state per namespace,
//! alerts. WAL, busy timeout, schema versioned with `PRAGMA user_version`. Every write is one
//! transaction, so kill -9 at any moment leaves a usable database.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::redact::redact;

pub const DB_FILE: &str = "ops.db";
const SCHEMA_VERSION: i64 = 2;
/// Runs older than this are pruned, alerts after three times as long (checked every 100th run).
const RETENTION_MS: i64 = 30 * 86_400_000;

const SCHEMA_V1: &str = "
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  profile TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  status TEXT NOT NULL,
  dry_run INTEGER NOT NULL DEFAULT 0,
  host TEXT NOT NULL DEFAULT '',
  pid INTEGER,
  summary TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_profile ON runs(profile, id);
CREATE INDEX runs_started ON runs(started_at);
CREATE TABLE task_results (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  task TEXT NOT NULL,
  kind TEXT NOT NULL,
  status TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX task_results_run ON task_results(run_id);
CREATE TABLE kv (
  namespace TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE alerts (
  id INTEGER PRIMARY KEY,
  profile TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  channel TEXT NOT NULL,
  message TEXT NOT NULL,
  delivered INTEGER NOT NULL,
  error TEXT
);
";

/// Version 2: what ops changed outside itself (`TaskCtx::changed`), and when it was announced.
const SCHEMA_V2: &str = "
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  profile TEXT NOT NULL,
  task TEXT NOT NULL,
  kind TEXT NOT NULL,
  message TEXT NOT NULL,
  announced_at INTEGER
);
CREATE INDEX events_at ON events(at);
CREATE INDEX events_pending ON events(profile) WHERE announced_at IS NULL;
";

pub struct State {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    /// The schema version found (a read-only open of an older database lacks newer tables).
    version: i64,
}

/// In JSON the same shape as a run's task (`name`, `detail` one line per element).
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    #[serde(rename = "name")]
    pub task: String,
    pub kind: String,
    pub status: String,
    pub duration_ms: u64,
    #[serde(serialize_with = "lines")]
    pub detail: String,
}

fn lines<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(text.lines().filter(|l| !l.is_empty()))
}

/// Times in Unix ms here; RFC 3339 in JSON (`timefmt`).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub profile: String,
    #[serde(serialize_with = "crate::timefmt::ser_ms")]
    pub started_at: i64,
    #[serde(serialize_with = "crate::timefmt::ser_opt_ms")]
    pub finished_at: Option<i64>,
    pub status: String,
    pub dry_run: bool,
    pub host: String,
    pub summary: String,
    pub tasks: Vec<TaskRecord>,
}

/// One change ops made outside itself (a droplet created, Postgres restarted, …).
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: i64,
    #[serde(serialize_with = "crate::timefmt::ser_ms")]
    pub at: i64,
    pub profile: String,
    pub task: String,
    /// `droplet.created`, `postgres.restarted`, … (`TaskCtx::changed`).
    pub kind: String,
    pub message: String,
    /// When it reached the alert channels (`None`: not yet).
    #[serde(serialize_with = "crate::timefmt::ser_opt_ms")]
    pub announced_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub profile: String,
    #[serde(serialize_with = "crate::timefmt::ser_ms")]
    pub created_at: i64,
    pub kind: String,
    pub channel: String,
    pub message: String,
    pub delivered: bool,
    pub error: Option<String>,
}

impl State {
    /// Opens (creating when needed) the database for writing.
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        Self::open_rw(dir).map_err(|e| explain_denied(dir, e))
    }

    fn open_rw(dir: &Path) -> anyhow::Result<State> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        check_files(dir, true)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .with_context(|| format!("cannot open state database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut state = State {
            conn,
            path,
            read_only: false,
            version: SCHEMA_VERSION,
        };
        state.migrate()?;
        Ok(state)
    }

    /// Opens an existing database without the right to write; `None` when there is none yet.
    pub fn open_read_only(dir: &Path) -> anyhow::Result<Option<State>> {
        Self::open_ro(dir).map_err(|e| explain_denied(dir, e))
    }

    fn open_ro(dir: &Path) -> anyhow::Result<Option<State>> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        check_files(dir, false)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .with_context(|| format!("cannot open state database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "{} has schema version {version}, newer than this ops understands ({SCHEMA_VERSION}): upgrade ops",
                path.display()
            );
        }
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(State {
            conn,
            path,
            read_only: true,
            version,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "{} has schema version {version}, newer than this ops understands ({SCHEMA_VERSION}): upgrade ops",
                self.path.display()
            );
        }
        if version < SCHEMA_VERSION {
            let tx = self.conn.transaction()?;
            if version < 1 {
                tx.execute_batch(SCHEMA_V1)?;
            }
            if version < 2 {
                tx.execute_batch(SCHEMA_V2)?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Runs left `running` by a process that died (its profile lock is now ours) become
    /// `interrupted`.
    pub fn mark_interrupted(&self, profile: &str, now_ms: i64) -> anyhow::Result<usize> {
        Ok(self.conn.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?2, \
             summary = 'the process ended before the run finished (killed or crashed)' \
             WHERE profile = ?1 AND status = 'running'",
            params![profile, now_ms],
        )?)
    }

    pub fn start_run(&self, profile: &str, now_ms: i64, host: &str) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (profile, started_at, status, host, pid) VALUES (?1, ?2, 'running', ?3, ?4)",
            params![profile, now_ms, host, std::process::id()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &mut self,
        run_id: i64,
        status: &str,
        now_ms: i64,
        summary: &str,
        tasks: &[TaskRecord],
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
            params![run_id, status, now_ms, redact(summary)],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO task_results (run_id, position, task, kind, status, duration_ms, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            // A counter that only goes up (pruning the history never lowers it).
            let mut count = tx.prepare_cached(
                "INSERT INTO kv (namespace, key, value, updated_at) \
                 SELECT 'metrics', 'task_failures\t' || profile || '\t' || ?2, '1', ?3 FROM runs WHERE id = ?1 \
                 ON CONFLICT (namespace, key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT), updated_at = excluded.updated_at",
            )?;
            for (i, t) in tasks.iter().enumerate() {
                insert.execute(params![
                    run_id,
                    i as i64,
                    t.task,
                    t.kind,
                    t.status,
                    t.duration_ms as i64,
                    redact(&t.detail)
                ])?;
                if t.status == "failed" {
                    count.execute(params![run_id, t.task, now_ms])?;
                }
            }
        }
        if run_id % 100 == 0 {
            tx.execute(
                "DELETE FROM runs WHERE started_at < ?1",
                params![now_ms - RETENTION_MS],
            )?;
            tx.execute(
                "DELETE FROM alerts WHERE created_at < ?1",
                params![now_ms - 3 * RETENTION_MS],
            )?;
            tx.execute(
                "DELETE FROM events WHERE at < ?1 AND announced_at IS NOT NULL",
                params![now_ms - 3 * RETENTION_MS],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A run that did not happen because the profile lock was held.
    pub fn record_skipped(
        &self,
        profile: &str,
        now_ms: i64,
        host: &str,
        why: &str,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO runs (profile, started_at, finished_at, status, host, pid, summary) \
             VALUES (?1, ?2, ?2, 'skipped', ?3, ?4, ?5)",
            params![profile, now_ms, host, std::process::id(), why],
        )?;
        Ok(())
    }

    pub fn kv_get<T: serde::de::DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
    ) -> anyhow::Result<Option<(T, i64)>> {
        // Prepared once per connection: `ops list` reads a record per profile, and compiling
        // the statement cost more than running it (issue 35).
        let row: Option<(String, i64)> = self
            .conn
            .prepare_cached("SELECT value, updated_at FROM kv WHERE namespace = ?1 AND key = ?2")?
            .query_row(params![namespace, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(None),
            Some((text, at)) => match serde_json::from_str(&text) {
                Ok(v) => Ok(Some((v, at))),
                Err(e) => {
                    log::warn!("ignoring unreadable state {namespace}/{key}: {e}");
                    Ok(None)
                }
            },
        }
    }

    pub fn kv_set<T: Serialize>(
        &self,
        namespace: &str,
        key: &str,
        value: &T,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let text = serde_json::to_string(value)?;
        self.conn.execute(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![namespace, key, text, now_ms],
        )?;
        Ok(())
    }

    /// Reads, changes and writes one record in one write transaction (taken at once, so two
    /// processes' changes to the same record are applied one after the other, none lost).
    /// An unreadable record is changed from `None`, as `kv_get` reads it.
    pub fn kv_update<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
        now_ms: i64,
        change: impl FnOnce(Option<T>) -> T,
    ) -> anyhow::Result<T> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let old = self.kv_get(namespace, key)?.map(|(v, _)| v);
        let new = change(old);
        self.kv_set(namespace, key, &new, now_ms)?;
        tx.commit()?;
        Ok(new)
    }

    pub fn kv_delete(&self, namespace: &str, key: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
        )?;
        Ok(())
    }

    /// Keys and values of a namespace.
    pub fn kv_list(&self, namespace: &str) -> anyhow::Result<Vec<(String, String, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, value, updated_at FROM kv WHERE namespace = ?1 ORDER BY key")?;
        let rows = stmt.query_map(params![namespace], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record_alert(
        &self,
        profile: &str,
        now_ms: i64,
        kind: &str,
        channel: &str,
        message: &str,
        delivered: bool,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO alerts (profile, created_at, kind, channel, message, delivered, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![profile, now_ms, kind, channel, redact(message), delivered, error.map(redact)],
        )?;
        Ok(())
    }

    /// Newest first.
    pub fn alerts(&self, profile: Option<&str>, limit: u32) -> anyhow::Result<Vec<AlertRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, profile, created_at, kind, channel, message, delivered, error FROM alerts \
             WHERE (?1 IS NULL OR profile = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![profile, limit], |r| {
            Ok(AlertRecord {
                id: r.get(0)?,
                profile: r.get(1)?,
                created_at: r.get(2)?,
                kind: r.get(3)?,
                channel: r.get(4)?,
                message: r.get(5)?,
                delivered: r.get::<_, i64>(6)? != 0,
                error: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a change ops made outside itself; returns its id.
    pub fn record_event(
        &self,
        profile: &str,
        task: &str,
        kind: &str,
        message: &str,
        now_ms: i64,
    ) -> anyhow::Result<i64> {
        self.conn.execute(
            "INSERT INTO events (at, profile, task, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_ms, profile, task, kind, redact(message)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Events since `since_ms` (all when `None`), of one profile when given, oldest first, at
    /// most `limit` (the newest of them).
    pub fn events(
        &self,
        since_ms: Option<i64>,
        profile: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<EventRecord>> {
        if self.version < 2 {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, profile, task, kind, message, announced_at FROM events \
             WHERE at >= ?1 AND (?2 IS NULL OR profile = ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since_ms.unwrap_or(0), profile, limit], event_row)?;
        let mut out: Vec<EventRecord> = rows.collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// A profile's events not announced yet (this run's, and any a killed run left), oldest
    /// first.
    pub fn unannounced_events(&self, profile: &str) -> anyhow::Result<Vec<EventRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, profile, task, kind, message, announced_at FROM events \
             WHERE profile = ?1 AND announced_at IS NULL ORDER BY id LIMIT 1000",
        )?;
        let rows = stmt.query_map(params![profile], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn mark_announced(&self, ids: &[i64], now_ms: i64) -> anyhow::Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE events SET announced_at = ?2 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![id, now_ms])?;
        }
        Ok(())
    }

    /// The newest recorded result of a task kind: (run start, status, detail).
    pub fn last_task_result(&self, kind: &str) -> anyhow::Result<Option<(i64, String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT r.started_at, t.status, t.detail FROM task_results t JOIN runs r ON r.id = t.run_id \
                 WHERE t.kind = ?1 ORDER BY t.id DESC LIMIT 1",
                params![kind],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// Counts for metrics: (profile, task, failed results ever recorded); never lowered by
    /// pruning the history.
    pub fn task_failures(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT key, CAST(value AS INTEGER) FROM kv WHERE namespace = 'metrics' \
             AND key LIKE 'task_failures' || char(9) || '%' ORDER BY key",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, n) = row?;
            let mut parts = key.splitn(3, '\t').skip(1);
            if let (Some(profile), Some(task)) = (parts.next(), parts.next()) {
                out.push((profile.to_string(), task.to_string(), n));
            }
        }
        Ok(out)
    }

    /// Adds one to a counter kept for `/metrics` (never lowered).
    pub fn count(&self, key: &str, now_ms: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO kv (namespace, key, value, updated_at) VALUES ('metrics', ?1, '1', ?2) \
             ON CONFLICT (namespace, key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT), updated_at = excluded.updated_at",
            params![key, now_ms],
        )?;
        Ok(())
    }

    /// A counter kept for `/metrics`; 0 when never counted.
    pub fn counter(&self, key: &str) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM kv WHERE namespace = 'metrics' AND key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Newest first.
    pub fn history(&self, profile: Option<&str>, limit: u32) -> anyhow::Result<Vec<RunRecord>> {
        self.runs(profile, None, limit)
    }

    /// One run by its id (`ops history show`).
    pub fn run_by_id(&self, id: i64) -> anyhow::Result<Option<RunRecord>> {
        Ok(self.runs(None, Some(id), 1)?.into_iter().next())
    }

    fn runs(
        &self,
        profile: Option<&str>,
        id: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Vec<RunRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, profile, started_at, finished_at, status, dry_run, host, summary FROM runs \
             WHERE (?1 IS NULL OR profile = ?1) AND (?3 IS NULL OR id = ?3) ORDER BY id DESC LIMIT ?2",
        )?;
        let mut runs: Vec<RunRecord> = stmt
            .query_map(params![profile, limit, id], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    profile: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    status: r.get(4)?,
                    dry_run: r.get::<_, i64>(5)? != 0,
                    host: r.get(6)?,
                    summary: r.get(7)?,
                    tasks: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut tasks = self.conn.prepare_cached(
            "SELECT task, kind, status, duration_ms, detail FROM task_results WHERE run_id = ?1 ORDER BY position",
        )?;
        for run in &mut runs {
            run.tasks = tasks
                .query_map(params![run.id], |r| {
                    Ok(TaskRecord {
                        task: r.get(0)?,
                        kind: r.get(1)?,
                        status: r.get(2)?,
                        duration_ms: r.get::<_, i64>(3)? as u64,
                        detail: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(runs)
    }
}

/// An open that failed in a directory this user may not write is that, with the sudo hint
/// (reading a WAL database still takes its shared-memory file).
fn explain_denied(dir: &Path, e: anyhow::Error) -> anyhow::Error {
    if dir.is_dir() && !crate::privilege::may(dir, libc::W_OK) {
        return crate::privilege::denied(
            dir,
            "the state directory",
            "write",
            "--state-dir / OPS_STATE_DIR",
        );
    }
    e
}

fn event_row(r: &rusqlite::Row) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        at: r.get(1)?,
        profile: r.get(2)?,
        task: r.get(3)?,
        kind: r.get(4)?,
        message: r.get(5)?,
        announced_at: r.get(6)?,
    })
}

/// The database and its WAL files, checked before SQLite opens them: never a symlink or a hard
/// link (whoever owns the directory could plant one pointing at a file of root's), handed to the
/// owner by descriptor when ops kept root. The database is created 0600 when `create`.
fn check_files(dir: &Path, create: bool) -> anyhow::Result<()> {
    let d = crate::privilege::open_dir(dir)?;
    crate::privilege::open_at(&d, dir, DB_FILE, create)?;
    for suffix in ["-wal", "-shm"] {
        crate::privilege::open_at(&d, dir, &format!("{DB_FILE}{suffix}"), false)?;
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 for the last component.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {} (set --state-dir or OPS_STATE_DIR to a writable directory)", dir.display()))?;
        let d = crate::privilege::open_dir(dir)?;
        d.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        crate::privilege::hand_over_fd(&d)?;
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ops-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn runs_round_trip_and_kv() {
        let dir = tempdir("rt");
        let mut s = State::open(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = s.start_run("p", 1000, "h").unwrap();
        let t = TaskRecord {
            task: "x".into(),
            kind: "exec".into(),
            status: "ok".into(),
            duration_ms: 5,
            detail: "fine".into(),
        };
        s.finish_run(id, "ok", 2000, "", &[t]).unwrap();
        let h = s.history(Some("p"), 10).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].status, "ok");
        assert_eq!(h[0].tasks[0].detail, "fine");
        s.kv_set("ns", "k", &serde_json::json!({"a": 1}), 5)
            .unwrap();
        let (v, at): (serde_json::Value, i64) = s.kv_get("ns", "k").unwrap().unwrap();
        assert_eq!((v["a"].as_i64(), at), (Some(1), 5));
        drop(s);
        let ro = State::open_read_only(&dir).unwrap().unwrap();
        assert!(ro.kv_set("ns", "k", &1, 6).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_runs_and_alerts_are_pruned() {
        let dir = tempdir("prune");
        let mut s = State::open(&dir).unwrap();
        let now = 100 * RETENTION_MS;
        s.start_run("p", 1, "h").unwrap();
        s.record_alert("p", 1, "failing", "none", "old", false, None)
            .unwrap();
        s.record_alert("p", now, "failing", "none", "new", false, None)
            .unwrap();
        let mut last = 0;
        for _ in 0..99 {
            last = s.start_run("p", now, "h").unwrap();
        }
        assert_eq!(last % 100, 0);
        s.finish_run(last, "ok", now, "", &[]).unwrap();
        let runs = s.history(Some("p"), 1000).unwrap();
        assert_eq!(runs.len(), 99);
        assert!(runs.iter().all(|r| r.started_at == now));
        let alerts = s.alerts(None, 10).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].message, "new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn interrupted_runs_are_marked() {
        let dir = tempdir("int");
        let s = State::open(&dir).unwrap();
        s.start_run("p", 1, "h").unwrap();
        assert_eq!(s.mark_interrupted("p", 2).unwrap(), 1);
        assert_eq!(s.history(None, 5).unwrap()[0].status, "interrupted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
