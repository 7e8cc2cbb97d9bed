//! What the webapp's own database knows about its workers (`WorkerGroupToken`,
//! `WorkerInstanceGroup`, `WorkerInstance`, `"TaskRun"`): read-only, one statement per question.
//! A token is valid exactly when the lowercase hex SHA-256 of its plaintext is a `tokenHash`;
//! each supervisor has a `WorkerInstance` row named after its `TRIGGER_WORKER_INSTANCE_NAME`
//! whose `lastHeartbeatAt` the webapp bumps at every heartbeat (30 s by default). Timestamps are
//! UTC without zone, so every age is computed by the database against `timezone('UTC', now())`:
//! the ops host's clock never enters.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use postgres::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clients::postgres::describe;

/// The worker group a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerGroup {
    /// `WorkerInstanceGroup.id` (absent in records stored before ops read it).
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub master_queue: String,
}

/// The answer to "does the webapp know this token?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    Known(WorkerGroup),
    Unknown,
    /// The tables do not exist (an older Trigger.dev, or migrations not run yet).
    TablesMissing(String),
}

/// What the webapp knows of our supervisors.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetView {
    pub group: WorkerGroup,
    /// Instance name → seconds since its last heartbeat (`None`: registered, never heartbeated).
    /// Names the webapp has never heard of are absent.
    pub heartbeats: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fleet {
    Seen(FleetView),
    TokenUnknown,
    TablesMissing(String),
}

/// One worker group and the youngest heartbeat of any of its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub master_queue: String,
    /// `MANAGED` (served by supervisors) rather than `UNMANAGED`.
    pub managed: bool,
    /// Seconds since the youngest `lastHeartbeatAt` in the group; `None`: never.
    pub heartbeat_age_secs: Option<f64>,
}

/// A project whose `defaultWorkerGroupId` overrides the global default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRoute {
    pub name: String,
    pub slug: String,
    pub group_id: String,
}

/// Where deployed runs go: the global default (`"FeatureFlag"` `defaultWorkerInstanceGroupId`),
/// the projects that override it, and every worker group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Routing {
    pub default_group_id: Option<String>,
    pub projects: Vec<ProjectRoute>,
    pub groups: Vec<GroupRow>,
}

/// Runs waiting in one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub queue: String,
    /// `PENDING` runs seen (those in the scan window or remembered from earlier scans).
    pub pending: u64,
    /// Seconds the oldest of them has waited since it was queued.
    pub oldest_wait_secs: f64,
}

/// What one queue read found, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRead {
    pub depths: Vec<QueueDepth>,
    /// Runs still waiting (PENDING, DELAYED, PENDING_VERSION), to re-read by primary key next
    /// time: PENDING first, longest wait first, at most `track` of them.
    pub waiting_ids: Vec<String>,
    /// How many waiting runs were seen in all (more than `waiting_ids` when the bound cut).
    pub waiting_seen: u64,
    /// The database's clock at the read (Unix seconds): the next incremental scan starts here.
    pub db_now: f64,
}

/// Where the next queue read looks.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueScan<'a> {
    /// The managed groups' queues (and their `:scheduled` twins).
    pub queues: &'a [String],
    /// Runs created since this Unix time (database clock) are read through the BRIN index on
    /// `createdAt`; never earlier than `window` before now.
    pub since: f64,
    pub window: Duration,
    /// Runs seen waiting before, re-read by primary key wherever their `createdAt` lies.
    pub remembered: &'a [String],
    pub track: usize,
    /// The statement's own timeout (it never holds up the heartbeat decision).
    pub timeout: Duration,
}

/// Lowercase hex SHA-256, as the webapp stores `WorkerGroupToken.tokenHash`.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const TOKEN_SQL: &str = r#"SELECT g."id", g."name", g."masterQueue"
FROM "WorkerGroupToken" t JOIN "WorkerInstanceGroup" g ON g."tokenId" = t."id"
WHERE t."tokenHash" = $1"#;

/// One statement: the token's group and the heartbeat ages of the named instances in it, through
/// the unique index on (`workerGroupId`, `resourceIdentifier`) (the webapp writes the instance
/// name into both columns): a group with thousands of old instances costs a few index pages.
/// `"TaskRun"` is not touched here: a slow queue read never takes the heartbeats away.
const FLEET_SQL: &str = r#"SELECT g."id", g."name", g."masterQueue",
  (SELECT json_agg(json_build_array(wi."name",
            EXTRACT(EPOCH FROM (timezone('UTC', now()) - wi."lastHeartbeatAt"))))::text
     FROM "WorkerInstance" wi
    WHERE wi."workerGroupId" = g."id" AND wi."resourceIdentifier" = ANY($2))
FROM "WorkerGroupToken" t JOIN "WorkerInstanceGroup" g ON g."tokenId" = t."id"
WHERE t."tokenHash" = $1"#;

/// Every group, the global default, the projects that override it: small tables (groups,
/// flags, projects). `"WorkerInstance"` is not read here: it grows by a row per supervisor start
/// when instance names are not stable, and no index covers `lastHeartbeatAt`.
const ROUTING_SQL: &str = r#"SELECT
  (SELECT json_agg(json_build_array(g."id", g."name", g."masterQueue", g."type"::text = 'MANAGED'))
     FROM "WorkerInstanceGroup" g)::text,
  (SELECT f."value" #>> '{}' FROM "FeatureFlag" f WHERE f."key" = 'defaultWorkerInstanceGroupId'),
  (SELECT json_agg(json_build_array(p."name", p."slug", p."defaultWorkerGroupId") ORDER BY p."slug")
     FROM "Project" p
    WHERE p."defaultWorkerGroupId" IS NOT NULL AND p."deletedAt" IS NULL)::text"#;

/// The waiting runs of the managed queues, without a sequential scan of `"TaskRun"` (no index
/// covers `status` or `masterQueue`): runs created since the last read, through the BRIN index
/// on `createdAt`, and the runs remembered waiting, through the primary key. Wait counts from
/// `queuedAt` (set when a delay ends), else `createdAt`.
const QUEUE_SQL: &str = r#"WITH seen AS (
  SELECT r."id", r."masterQueue" AS queue, r."status"::text AS status,
         EXTRACT(EPOCH FROM (timezone('UTC', now()) - COALESCE(r."queuedAt", r."createdAt")))::float8 AS wait
    FROM "TaskRun" r
   WHERE r."createdAt" >= GREATEST(timezone('UTC', to_timestamp($2)),
                                   timezone('UTC', now()) - make_interval(secs => $3))
     AND r."status"::text IN ('PENDING', 'DELAYED', 'PENDING_VERSION')
     AND r."masterQueue" = ANY($1)
  UNION
  SELECT r."id", r."masterQueue", r."status"::text,
         EXTRACT(EPOCH FROM (timezone('UTC', now()) - COALESCE(r."queuedAt", r."createdAt")))::float8
    FROM "TaskRun" r
   WHERE r."id" = ANY($4)
     AND r."status"::text IN ('PENDING', 'DELAYED', 'PENDING_VERSION')
     AND r."masterQueue" = ANY($1)
)
SELECT
  (SELECT json_agg(json_build_array(queue, n, oldest) ORDER BY queue)
     FROM (SELECT queue, count(*) AS n, max(wait) AS oldest
             FROM seen WHERE status = 'PENDING' GROUP BY queue) q)::text,
  (SELECT json_agg(id) FROM (SELECT id FROM seen
                              ORDER BY status = 'PENDING' DESC, wait DESC, id LIMIT $5) t)::text,
  (SELECT count(*) FROM seen),
  EXTRACT(EPOCH FROM now())::float8"#;

/// The named instances' heartbeats in groups other than `$2` (ours): one probe per group
/// through the unique index on (`workerGroupId`, `resourceIdentifier`), newest first. Asked only
/// for droplets our group has never heard from.
const ELSEWHERE_SQL: &str = r#"SELECT wi."resourceIdentifier", g."name",
  EXTRACT(EPOCH FROM (timezone('UTC', now()) - wi."lastHeartbeatAt"))::float8
FROM "WorkerInstanceGroup" g
JOIN "WorkerInstance" wi ON wi."workerGroupId" = g."id" AND wi."resourceIdentifier" = ANY($1)
WHERE g."id" <> $2 AND wi."lastHeartbeatAt" IS NOT NULL
ORDER BY wi."lastHeartbeatAt" DESC"#;

/// An instance heartbeating into a group that is not ours.
#[derive(Debug, Clone, PartialEq)]
pub struct Elsewhere {
    pub group: String,
    /// Seconds since its last heartbeat there.
    pub age_secs: f64,
}

/// Where the read of our group's runs on workers looks (same bounds as [`QueueScan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunScan<'a> {
    /// Our group's queue and its `:scheduled` twin.
    pub queues: &'a [String],
    pub since: f64,
    pub window: Duration,
    /// Runs seen on a worker or waiting before, re-read by primary key.
    pub remembered: &'a [String],
    pub track: usize,
    /// Runs that ended in `SYSTEM_FAILURE` or `CRASHED` this recently count as needing a preset.
    pub failed_within: Duration,
    /// Runs waiting longer than this count as ready to start (for scaling out).
    pub ready_after: Duration,
    pub timeout: Duration,
}

/// One run on a worker (`DEQUEUED` or `EXECUTING`), attributed to the supervisor whose
/// `WorkerInstance` wrote its latest snapshot with a `workerId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOnWorker {
    pub id: String,
    pub friendly_id: String,
    /// The `WorkerInstance` name (our droplet's name); `None`: no snapshot names a worker yet.
    pub instance: Option<String>,
    pub status: String,
    /// `"TaskRun"."machinePreset"` (set at dequeue).
    pub preset: Option<String>,
}

/// Runs of one kind needing one preset: waiting, or recently failed by the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetNeed {
    /// `waiting` or `failed`.
    pub kind: String,
    /// The run's `machinePreset`, else the task's `machineConfig` (JSON text), else `None`
    /// (Trigger.dev's default, small-1x).
    pub preset: Option<String>,
    pub runs: u64,
}

/// Runs of one environment's queue waiting longer than `ready_after`, with the limits that
/// decide how many of them can start now (Trigger.dev moves a run to the worker queue only
/// when they allow it; the rest stay `PENDING` too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyGroup {
    pub environment: String,
    pub queue: String,
    pub waiting: u64,
    /// `floor(maximumConcurrencyLimit × concurrencyLimitBurstFactor)`; `None`: no row.
    pub env_limit: Option<u64>,
    pub env_paused: Option<bool>,
    /// `"TaskQueue"."concurrencyLimit"`; `None`: unlimited (or no row).
    pub queue_limit: Option<u64>,
    pub queue_paused: Option<bool>,
    /// Our group's runs on a worker in the environment, and in this queue.
    pub running_env: u64,
    pub running_queue: u64,
}

/// What runs on our workers and what the waiting runs need.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerRuns {
    pub on_workers: Vec<RunOnWorker>,
    pub needs: Vec<PresetNeed>,
    /// Runs to re-read by primary key next time (on a worker first, then waiting).
    pub track_ids: Vec<String>,
    pub ready: Vec<ReadyGroup>,
}

/// Our group's runs on workers and the presets its waiting (and recently system-failed) runs
/// need, without a sequential scan of `"TaskRun"` or `"TaskRunExecutionSnapshot"`: candidate
/// runs through the BRIN index on `createdAt` (since the last read) and the primary key (the
/// remembered ones); each run's latest snapshot naming a worker through the snapshots' only
/// index (`runId`, `isValid`, `createdAt` DESC); the instance by its primary key; the task's
/// preset through the current promotion, the deployment and (`workerId`, `slug`), all unique.
const WORKER_RUNS_SQL: &str = r#"WITH cand AS (
  SELECT r."id", r."friendlyId", r."status"::text AS status, r."machinePreset",
         r."lockedToVersionId", r."runtimeEnvironmentId", r."taskIdentifier", r."updatedAt",
         r."queue",
         EXTRACT(EPOCH FROM (timezone('UTC', now()) - COALESCE(r."queuedAt", r."createdAt")))::float8 AS wait
    FROM "TaskRun" r
   WHERE r."createdAt" >= GREATEST(timezone('UTC', to_timestamp($2)),
                                   timezone('UTC', now()) - make_interval(secs => $3))
     AND r."status"::text IN ('DEQUEUED', 'EXECUTING', 'PENDING', 'SYSTEM_FAILURE', 'CRASHED')
     AND r."masterQueue" = ANY($1)
  UNION
  SELECT r."id", r."friendlyId", r."status"::text, r."machinePreset", r."lockedToVersionId",
         r."runtimeEnvironmentId", r."taskIdentifier", r."updatedAt", r."queue",
         EXTRACT(EPOCH FROM (timezone('UTC', now()) - COALESCE(r."queuedAt", r."createdAt")))::float8
    FROM "TaskRun" r
   WHERE r."id" = ANY($4)
     AND r."status"::text IN ('DEQUEUED', 'EXECUTING', 'PENDING', 'SYSTEM_FAILURE', 'CRASHED')
     AND r."masterQueue" = ANY($1)
), on_worker AS (
  SELECT c."id", c."friendlyId", c.status, c."machinePreset"
    FROM cand c WHERE c.status IN ('DEQUEUED', 'EXECUTING')
   ORDER BY c."id" LIMIT $5
), attributed AS (
  SELECT o.*, wi."name" AS instance
    FROM on_worker o
    LEFT JOIN LATERAL (SELECT s."workerId" FROM "TaskRunExecutionSnapshot" s
                        WHERE s."runId" = o."id" AND s."isValid" AND s."workerId" IS NOT NULL
                        ORDER BY s."createdAt" DESC LIMIT 1) w ON true
    LEFT JOIN LATERAL (SELECT i."name" FROM "WorkerInstance" i WHERE i."id" = w."workerId") wi ON true
), needing AS (
  SELECT CASE WHEN c.status = 'PENDING' THEN 'waiting' ELSE 'failed' END AS kind,
         COALESCE(c."machinePreset",
           (SELECT t."machineConfig"::text FROM "BackgroundWorkerTask" t
             WHERE t."slug" = c."taskIdentifier"
               AND t."workerId" = COALESCE(c."lockedToVersionId",
                 (SELECT d."workerId" FROM "WorkerDeploymentPromotion" p
                    JOIN "WorkerDeployment" d ON d."id" = p."deploymentId"
                   WHERE p."environmentId" = c."runtimeEnvironmentId" AND p."label" = 'current'))))
           AS preset, c."id", c.wait
    FROM cand c
   WHERE c.status = 'PENDING'
      OR (c.status IN ('SYSTEM_FAILURE', 'CRASHED')
          AND c."updatedAt" >= timezone('UTC', now()) - make_interval(secs => $6))
), ready AS (
  SELECT c."runtimeEnvironmentId" AS env, c."queue" AS q, count(*) AS n
    FROM cand c WHERE c.status = 'PENDING' AND c.wait >= $7 GROUP BY 1, 2
), running AS (
  SELECT c."runtimeEnvironmentId" AS env, c."queue" AS q, count(*) AS n
    FROM cand c WHERE c.status IN ('DEQUEUED', 'EXECUTING') GROUP BY 1, 2
)
SELECT
  (SELECT json_agg(json_build_array(a."id", a."friendlyId", a.instance, a.status, a."machinePreset")
                   ORDER BY a."id") FROM attributed a)::text,
  (SELECT json_agg(json_build_array(kind, preset, n) ORDER BY kind, preset)
     FROM (SELECT kind, preset, count(*) AS n FROM needing GROUP BY kind, preset) g)::text,
  (SELECT json_agg(id) FROM (SELECT "id" FROM on_worker
                             UNION ALL
                             (SELECT "id" FROM needing WHERE kind = 'waiting'
                               ORDER BY wait DESC, "id" LIMIT $5)) t)::text,
  (SELECT json_agg(json_build_array(r.env, r.q, r.n, e.lim, e.paused, tq.lim, tq.paused, re.n, rq.n)
                   ORDER BY r.env, r.q)
     FROM ready r
     LEFT JOIN LATERAL (SELECT floor(x."maximumConcurrencyLimit" * x."concurrencyLimitBurstFactor")::bigint AS lim,
                               x."paused" FROM "RuntimeEnvironment" x WHERE x."id" = r.env) e ON true
     LEFT JOIN LATERAL (SELECT x."concurrencyLimit"::bigint AS lim, x."paused" FROM "TaskQueue" x
                         WHERE x."runtimeEnvironmentId" = r.env AND x."name" = r.q) tq ON true
     LEFT JOIN LATERAL (SELECT COALESCE(sum(x.n), 0)::bigint AS n FROM running x WHERE x.env = r.env) re ON true
     LEFT JOIN LATERAL (SELECT COALESCE(sum(x.n), 0)::bigint AS n FROM running x
                         WHERE x.env = r.env AND x.q = r.q) rq ON true)::text"#;

/// Runs created in the last `$1` days, per minute, preset and environment, for `ops simulate`:
/// one pass over the window through the BRIN index on `createdAt`, aggregated as it is read
/// (nothing materialized, no per-row numeric: a minute is `date_trunc`, a length an interval
/// summed per group), never the whole table. A run's preset is its `machinePreset` (written at
/// every dequeue), else small-1x (Trigger.dev's default); its length `completedAt - startedAt`
/// (`startedAt` is set at dequeue) where both are known, summed in microseconds. `$2` names our
/// group's queues (empty: every run). The limit is the sum of
/// `floor(maximumConcurrencyLimit × concurrencyLimitBurstFactor)` over the environments those
/// runs belong to (`NULL`: no such row). The rows come ordered by minute and preset, so
/// [`arrivals`] adds a minute's environments up as they pass.
pub const ARRIVALS_SQL: &str = r#"SELECT x.runs::text,
  (SELECT sum(floor(e."maximumConcurrencyLimit" * e."concurrencyLimitBurstFactor"))::bigint
     FROM "RuntimeEnvironment" e WHERE e."id" = ANY(x.envs)),
  floor(EXTRACT(EPOCH FROM timezone('UTC', now())))::bigint
FROM (
  SELECT json_agg(json_build_array(floor(EXTRACT(EPOCH FROM g.minute) / 60)::bigint, g.preset, g.n,
                                   COALESCE(EXTRACT(EPOCH FROM g.secs) * 1000000, 0)::bigint, g.timed)
                  ORDER BY g.minute, g.preset) AS runs,
         array_agg(DISTINCT g.env) AS envs
    FROM (
      SELECT date_trunc('minute', r."createdAt") AS minute,
             COALESCE(r."machinePreset", 'small-1x') AS preset, r."runtimeEnvironmentId" AS env,
             count(*) AS n,
             sum(r."completedAt" - r."startedAt") FILTER (WHERE r."completedAt" >= r."startedAt") AS secs,
             count(*) FILTER (WHERE r."completedAt" >= r."startedAt") AS timed
        FROM "TaskRun" r
       WHERE r."createdAt" >= timezone('UTC', now()) - make_interval(days => $1)
         AND (cardinality($2::text[]) = 0 OR r."masterQueue" = ANY($2))
       GROUP BY 1, 2, 3
    ) g
) x"#;

/// The runs of one minute (Unix minutes, the database's clock) and one preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteRuns {
    pub minute: i64,
    pub preset: String,
    pub runs: u64,
    /// Seconds run in all by the `timed` runs whose start and end are known.
    pub secs: f64,
    pub timed: u64,
}

/// What the runs of a window were.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Arrivals {
    pub minutes: Vec<MinuteRuns>,
    pub env_limit: Option<u64>,
    /// The database's clock (Unix seconds).
    pub now: i64,
}

/// The runs of the last `days` of `queues` (empty: all), per minute and preset, in a read-only
/// transaction with its own statement timeout and sequential scans priced out.
pub fn arrivals(
    client: &mut Client,
    days: u32,
    queues: &[String],
    timeout: Duration,
) -> anyhow::Result<Arrivals> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let r = bounded(client, timeout, |tx| {
        tx.query_one(ARRIVALS_SQL, &[&days, &queues])
    })
    .map_err(|e| anyhow!("reading the runs' arrivals (\"TaskRun\"): {}", describe(&e)))?;
    let rows: Vec<(i64, String, u64, i64, u64)> = json_list(r.get(0), "arrivals")?;
    Ok(Arrivals {
        minutes: per_minute(rows),
        env_limit: r.get::<_, Option<i64>>(1).map(|l| l.max(0) as u64),
        now: r.get(2),
    })
}

/// The rows of one minute and preset (one per environment, adjacent) added up; a length in
/// microseconds, summed exactly, becomes seconds once.
fn per_minute(rows: Vec<(i64, String, u64, i64, u64)>) -> Vec<MinuteRuns> {
    let mut out: Vec<(MinuteRuns, i64)> = Vec::with_capacity(rows.len());
    for (minute, preset, runs, micros, timed) in rows {
        match out.last_mut() {
            Some((m, sum)) if m.minute == minute && m.preset == preset => {
                m.runs += runs;
                m.timed += timed;
                *sum += micros;
            }
            _ => out.push((
                MinuteRuns {
                    minute,
                    preset,
                    runs,
                    secs: 0.0,
                    timed,
                },
                micros,
            )),
        }
    }
    out.into_iter()
        .map(|(m, micros)| MinuteRuns {
            secs: micros as f64 / 1e6,
            ..m
        })
        .collect()
}

/// SQLSTATEs that mean "this schema is not Trigger.dev v4's (yet)".
fn missing_schema(e: &postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    matches!(db.code().code(), "42P01" | "42703" | "42704").then(|| db.message().to_string())
}

fn group_of(r: &postgres::Row) -> WorkerGroup {
    WorkerGroup {
        id: r.get(0),
        name: r.get(1),
        master_queue: r.get(2),
    }
}

pub fn lookup_token(client: &mut Client, token: &str) -> anyhow::Result<TokenLookup> {
    match client.query(TOKEN_SQL, &[&token_hash(token)]) {
        Ok(rows) => Ok(match rows.first() {
            Some(r) => TokenLookup::Known(group_of(r)),
            None => TokenLookup::Unknown,
        }),
        Err(e) => match missing_schema(&e) {
            Some(m) => Ok(TokenLookup::TablesMissing(m)),
            None => Err(anyhow!(
                "looking the worker token up in the webapp's database: {}",
                describe(&e)
            )),
        },
    }
}

pub fn fleet(client: &mut Client, token: &str, names: &[String]) -> anyhow::Result<Fleet> {
    let rows = match client.query(FLEET_SQL, &[&token_hash(token), &names]) {
        Ok(rows) => rows,
        Err(e) => {
            return match missing_schema(&e) {
                Some(m) => Ok(Fleet::TablesMissing(m)),
                None => Err(anyhow!(
                    "reading supervisor heartbeats from the webapp's database: {}",
                    describe(&e)
                )),
            }
        }
    };
    let Some(r) = rows.first() else {
        return Ok(Fleet::TokenUnknown);
    };
    let pairs: Vec<(String, Option<f64>)> = json_list(r.get(3), "heartbeat list")?;
    Ok(Fleet::Seen(FleetView {
        group: group_of(r),
        heartbeats: pairs.into_iter().collect(),
    }))
}

/// Which of `names` heartbeat into a group other than `ours` (`""`: any group), and where:
/// the youngest heartbeat per name.
pub fn heartbeats_elsewhere(
    client: &mut Client,
    names: &[String],
    ours: &str,
) -> anyhow::Result<BTreeMap<String, Elsewhere>> {
    let rows = client.query(ELSEWHERE_SQL, &[&names, &ours]).map_err(|e| {
        anyhow!(
            "reading which worker group the droplets heartbeat into: {}",
            describe(&e)
        )
    })?;
    let mut out = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_insert(Elsewhere {
            group: r.get(1),
            age_secs: r.get(2),
        });
    }
    Ok(out)
}

/// Where deployed runs go (read-only; three small lookups in one statement).
pub fn routing(client: &mut Client) -> anyhow::Result<Routing> {
    let r = client.query_one(ROUTING_SQL, &[]).map_err(|e| {
        anyhow!(
            "reading where runs go (\"FeatureFlag\", \"Project\", \"WorkerInstanceGroup\"): {}",
            describe(&e)
        )
    })?;
    type Raw = (String, String, String, bool);
    let groups: Vec<Raw> = json_list(r.get(0), "worker group list")?;
    let projects: Vec<(String, String, String)> = json_list(r.get(2), "project list")?;
    Ok(Routing {
        default_group_id: r.get(1),
        projects: projects
            .into_iter()
            .map(|(name, slug, group_id)| ProjectRoute {
                name,
                slug,
                group_id,
            })
            .collect(),
        groups: groups
            .into_iter()
            .map(|(id, name, master_queue, managed)| GroupRow {
                id,
                name,
                master_queue,
                managed,
                heartbeat_age_secs: None,
            })
            .collect(),
    })
}

/// The youngest heartbeat of each of `group_ids` (absent: never). Reads every instance row of
/// those groups (no index covers `lastHeartbeatAt`), so it is asked only for the groups that
/// matter this run: those with waiting runs, or all when our supervisors are silent.
pub fn group_heartbeats(
    client: &mut Client,
    group_ids: &[String],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let rows = client
        .query(
            r#"SELECT wi."workerGroupId",
                      EXTRACT(EPOCH FROM (timezone('UTC', now()) - max(wi."lastHeartbeatAt")))::float8
                 FROM "WorkerInstance" wi
                WHERE wi."workerGroupId" = ANY($1) AND wi."lastHeartbeatAt" IS NOT NULL
                GROUP BY 1"#,
            &[&group_ids],
        )
        .map_err(|e| anyhow!("reading the worker groups' heartbeats: {}", describe(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The waiting runs of `scan.queues`, in a read-only transaction with its own statement timeout
/// and sequential scans priced out (only the BRIN index and the primary key may answer).
pub fn queues(client: &mut Client, scan: &QueueScan) -> anyhow::Result<QueueRead> {
    let r = bounded(client, scan.timeout, |tx| {
        tx.query_one(
            QUEUE_SQL,
            &[
                &scan.queues,
                &scan.since,
                &scan.window.as_secs_f64(),
                &scan.remembered,
                &(scan.track as i64),
            ],
        )
    })
    .map_err(|e| anyhow!("reading the waiting runs (\"TaskRun\"): {}", describe(&e)))?;
    let depths: Vec<(String, u64, f64)> = json_list(r.get(0), "queue depths")?;
    Ok(QueueRead {
        depths: depths
            .into_iter()
            .map(|(queue, pending, oldest)| QueueDepth {
                queue,
                pending,
                oldest_wait_secs: oldest,
            })
            .collect(),
        waiting_ids: json_list(r.get(1), "waiting runs")?,
        waiting_seen: r.get::<_, i64>(2).max(0) as u64,
        db_now: r.get(3),
    })
}

/// Our group's runs on workers and what its waiting runs need (read-only transaction, its own
/// statement timeout, sequential scans priced out).
pub fn worker_runs(client: &mut Client, scan: &RunScan) -> anyhow::Result<WorkerRuns> {
    let r = bounded(client, scan.timeout, |tx| {
        tx.query_one(
            WORKER_RUNS_SQL,
            &[
                &scan.queues,
                &scan.since,
                &scan.window.as_secs_f64(),
                &scan.remembered,
                &(scan.track as i64),
                &scan.failed_within.as_secs_f64(),
                &scan.ready_after.as_secs_f64(),
            ],
        )
    })
    .map_err(|e| {
        anyhow!(
            "reading the runs on our supervisors (\"TaskRun\", \"TaskRunExecutionSnapshot\"): {}",
            describe(&e)
        )
    })?;
    type RunRow = (String, String, Option<String>, String, Option<String>);
    let runs: Vec<RunRow> = json_list(r.get(0), "runs on workers")?;
    let needs: Vec<(String, Option<String>, u64)> = json_list(r.get(1), "preset needs")?;
    Ok(WorkerRuns {
        on_workers: runs
            .into_iter()
            .map(|(id, friendly_id, instance, status, preset)| RunOnWorker {
                id,
                friendly_id,
                instance,
                status,
                preset,
            })
            .collect(),
        needs: needs
            .into_iter()
            .map(|(kind, preset, runs)| PresetNeed { kind, preset, runs })
            .collect(),
        track_ids: json_list(r.get(2), "tracked runs")?,
        ready: {
            type Raw = (
                String,
                String,
                u64,
                Option<u64>,
                Option<bool>,
                Option<u64>,
                Option<bool>,
                u64,
                u64,
            );
            let raw: Vec<Raw> = json_list(r.get(3), "ready runs")?;
            raw.into_iter()
                .map(
                    |(environment, queue, waiting, el, ep, ql, qp, re, rq)| ReadyGroup {
                        environment,
                        queue,
                        waiting,
                        env_limit: el,
                        env_paused: ep,
                        queue_limit: ql,
                        queue_paused: qp,
                        running_env: re,
                        running_queue: rq,
                    },
                )
                .collect()
        },
    })
}

/// One statement in its own read-only transaction with a statement timeout and sequential
/// scans priced out: only indexes may answer.
fn bounded(
    client: &mut Client,
    timeout: Duration,
    query: impl FnOnce(&mut postgres::Transaction) -> Result<postgres::Row, postgres::Error>,
) -> Result<postgres::Row, postgres::Error> {
    let mut tx = client.build_transaction().read_only(true).start()?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL enable_seqscan = off",
        timeout.as_millis().max(1)
    ))?;
    let row = query(&mut tx)?;
    tx.commit()?;
    Ok(row)
}

/// When `"TaskRun"` was last vacuumed (its BRIN index is summarized then: rows added since are
/// read in full by the waiting-runs read), as a line for `ops doctor`.
pub fn vacuum_age(client: &mut Client) -> anyhow::Result<Option<String>> {
    let row = client.query_opt(
        r#"SELECT EXTRACT(EPOCH FROM (now() - GREATEST(last_vacuum, last_autovacuum)))::float8, n_tup_ins
             FROM pg_stat_user_tables WHERE relid = to_regclass('"TaskRun"')"#,
        &[],
    )?;
    Ok(row.map(|r| {
        let age: Option<f64> = r.get(0);
        match age {
            Some(a) => format!(
                "\"TaskRun\" last vacuumed {} ago (the waiting-runs read skips only what vacuum has summarized)",
                crate::duration::format(Duration::from_secs(a.max(1.0) as u64))
            ),
            None => "\"TaskRun\" not vacuumed since the statistics were reset: the waiting-runs read costs more until autovacuum runs".into(),
        }
    }))
}

/// A `json_agg` result (NULL when empty) as a list.
fn json_list<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &str,
) -> anyhow::Result<Vec<T>> {
    match text {
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| anyhow!("unexpected {what} from the webapp's database: {e}")),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_lowercase_hex_sha256() {
        // The FIPS 180-2 test vector for "abc".
        assert_eq!(token_hash("abc").len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
