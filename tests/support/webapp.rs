//! The webapp's side of supervisor health, for tests: Trigger.dev's worker tables (the DDL in
//! Trigger.dev's schema.prisma, verbatim columns), a worker group for a token, and test
//! supervisors that heartbeat the way the webapp records them (`lastHeartbeatAt` = now, UTC).
//! The token hash is computed by Postgres's own `sha256()`, not by ops' code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Trigger.dev's worker tables, and a `"TaskRun"` with the columns ops reads.
pub const WORKER_DDL: &str = r#"
CREATE TYPE "WorkerInstanceGroupType" AS ENUM ('MANAGED', 'UNMANAGED');
CREATE TABLE "WorkerGroupToken" ("id" TEXT PRIMARY KEY, "tokenHash" TEXT NOT NULL UNIQUE,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE "WorkerInstanceGroup" ("id" TEXT PRIMARY KEY, "type" "WorkerInstanceGroupType" NOT NULL,
  "name" TEXT NOT NULL, "masterQueue" TEXT NOT NULL UNIQUE, "description" TEXT,
  "hidden" BOOLEAN NOT NULL DEFAULT false, "tokenId" TEXT NOT NULL UNIQUE REFERENCES "WorkerGroupToken"("id"),
  "organizationId" TEXT, "projectId" TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE "WorkerInstance" ("id" TEXT PRIMARY KEY, "name" TEXT NOT NULL,
  "resourceIdentifier" TEXT NOT NULL, "metadata" JSONB,
  "workerGroupId" TEXT NOT NULL REFERENCES "WorkerInstanceGroup"("id"),
  "organizationId" TEXT, "projectId" TEXT, "environmentId" TEXT, "deploymentId" TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  "lastDequeueAt" TIMESTAMP(3), "lastHeartbeatAt" TIMESTAMP(3),
  UNIQUE ("workerGroupId", "resourceIdentifier"));
"#;

/// `"TaskRun"` shaped as in production: the columns of Trigger.dev's Prisma model (status an
/// enum, `masterQueue` the Prisma field `workerQueue`, `queuedAt`), no foreign keys, and every
/// index the table has today (Trigger.dev's schema.prisma, checked against the migrations up
/// to 20260525083555, which dropped the last index on `status`). None covers `status` or
/// `masterQueue`: only the BRIN index on `createdAt` and the primary key can answer ops cheaply.
/// Also `"FeatureFlag"` and `"Project"` (routing), `"TaskRunExecutionSnapshot"` (which
/// supervisor runs a run; its only secondary index is (`runId`, `isValid`, `createdAt` DESC)),
/// and the tables a task's preset is found through (`"WorkerDeploymentPromotion"`,
/// `"WorkerDeployment"`, `"BackgroundWorkerTask"`), and the concurrency limits
/// (`"RuntimeEnvironment"`, `"TaskQueue"`), with their real columns and indexes
/// (schema.prisma and migrations up to 20250919123905, which dropped the snapshots' foreign keys).
pub const TASK_RUN: &str = r#"
CREATE TYPE "TaskRunStatus" AS ENUM ('DELAYED', 'PENDING', 'PENDING_VERSION', 'WAITING_FOR_DEPLOY',
  'DEQUEUED', 'EXECUTING', 'WAITING_TO_RESUME', 'RETRYING_AFTER_FAILURE', 'PAUSED', 'CANCELED',
  'INTERRUPTED', 'COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'SYSTEM_FAILURE', 'CRASHED',
  'EXPIRED', 'TIMED_OUT');
CREATE TYPE "RunEngineVersion" AS ENUM ('V1', 'V2');
CREATE TYPE "RuntimeEnvironmentType" AS ENUM ('PRODUCTION', 'STAGING', 'DEVELOPMENT', 'PREVIEW');
CREATE TABLE "TaskRun" (
  "id" TEXT NOT NULL, "number" INTEGER NOT NULL DEFAULT 0, "friendlyId" TEXT NOT NULL,
  "engine" "RunEngineVersion" NOT NULL DEFAULT 'V1',
  "status" "TaskRunStatus" NOT NULL DEFAULT 'PENDING', "statusReason" TEXT,
  "idempotencyKey" TEXT, "idempotencyKeyExpiresAt" TIMESTAMP(3), "idempotencyKeyOptions" JSONB,
  "debounce" JSONB, "taskIdentifier" TEXT NOT NULL, "isTest" BOOLEAN NOT NULL DEFAULT false,
  "payload" TEXT NOT NULL, "payloadType" TEXT NOT NULL DEFAULT 'application/json',
  "context" JSONB, "traceContext" JSONB, "traceId" TEXT NOT NULL, "spanId" TEXT NOT NULL,
  "runtimeEnvironmentId" TEXT NOT NULL, "environmentType" "RuntimeEnvironmentType",
  "projectId" TEXT NOT NULL, "organizationId" TEXT, "queue" TEXT NOT NULL, "lockedQueueId" TEXT,
  "masterQueue" TEXT NOT NULL DEFAULT 'main', "region" TEXT, "secondaryMasterQueue" TEXT,
  "attemptNumber" INTEGER,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  "runTags" TEXT[], "taskVersion" TEXT, "sdkVersion" TEXT, "cliVersion" TEXT,
  "startedAt" TIMESTAMP(3), "executedAt" TIMESTAMP(3), "completedAt" TIMESTAMP(3),
  "machinePreset" TEXT, "usageDurationMs" INTEGER NOT NULL DEFAULT 0,
  "costInCents" DOUBLE PRECISION NOT NULL DEFAULT 0, "baseCostInCents" DOUBLE PRECISION NOT NULL DEFAULT 0,
  "lockedAt" TIMESTAMP(3), "lockedById" TEXT, "lockedToVersionId" TEXT,
  "priorityMs" INTEGER NOT NULL DEFAULT 0, "concurrencyKey" TEXT,
  "delayUntil" TIMESTAMP(3), "queuedAt" TIMESTAMP(3), "ttl" TEXT, "expiredAt" TIMESTAMP(3),
  "maxAttempts" INTEGER, "lockedRetryConfig" JSONB, "oneTimeUseToken" TEXT,
  "taskEventStore" TEXT NOT NULL DEFAULT 'taskEvent', "queueTimestamp" TIMESTAMP(3),
  "scheduleInstanceId" TEXT, "scheduleId" TEXT, "bulkActionGroupIds" TEXT[] DEFAULT ARRAY[]::TEXT[],
  "logsDeletedAt" TIMESTAMP(3), "replayedFromTaskRunFriendlyId" TEXT, "rootTaskRunId" TEXT,
  "parentTaskRunId" TEXT, "parentTaskRunAttemptId" TEXT, "batchId" TEXT,
  "resumeParentOnCompletion" BOOLEAN NOT NULL DEFAULT false, "depth" INTEGER NOT NULL DEFAULT 0,
  "parentSpanId" TEXT, "runChainState" JSONB, "seedMetadata" TEXT,
  "seedMetadataType" TEXT NOT NULL DEFAULT 'application/json', "metadata" TEXT,
  "metadataType" TEXT NOT NULL DEFAULT 'application/json', "metadataVersion" INTEGER NOT NULL DEFAULT 1,
  "annotations" JSONB, "isWarmStart" BOOLEAN, "output" TEXT,
  "outputType" TEXT NOT NULL DEFAULT 'application/json', "error" JSONB, "planType" TEXT,
  "maxDurationInSeconds" INTEGER, "realtimeStreamsVersion" TEXT NOT NULL DEFAULT 'v1',
  "realtimeStreams" TEXT[] DEFAULT ARRAY[]::TEXT[], "streamBasinName" TEXT,
  CONSTRAINT "TaskRun_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "TaskRun_friendlyId_key" ON "TaskRun"("friendlyId");
CREATE UNIQUE INDEX "TaskRun_runtimeEnvironmentId_taskIdentifier_idempotencyKey_key"
  ON "TaskRun"("runtimeEnvironmentId", "taskIdentifier", "idempotencyKey");
CREATE INDEX "TaskRun_spanId_idx" ON "TaskRun"("spanId");
CREATE INDEX "TaskRun_parentTaskRunId_idx" ON "TaskRun"("parentTaskRunId");
CREATE INDEX "TaskRun_parentSpanId_idx" ON "TaskRun"("parentSpanId");
CREATE INDEX "TaskRun_runtimeEnvironmentId_batchId_idx" ON "TaskRun"("runtimeEnvironmentId", "batchId");
CREATE UNIQUE INDEX "TaskRun_oneTimeUseToken_key" ON "TaskRun"("oneTimeUseToken");
CREATE INDEX "TaskRun_runTags_idx" ON "TaskRun" USING GIN ("runTags" array_ops);
CREATE INDEX "TaskRun_runtimeEnvironmentId_createdAt_idx" ON "TaskRun"("runtimeEnvironmentId", "createdAt" DESC)
  INCLUDE ("id") WITH (fillfactor = 90);
CREATE INDEX "TaskRun_createdAt_idx" ON "TaskRun" USING BRIN ("createdAt");
CREATE TABLE "FeatureFlag" ("id" TEXT PRIMARY KEY, "key" TEXT NOT NULL UNIQUE, "value" JSONB,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL);
CREATE TYPE "ProjectVersion" AS ENUM ('V2', 'V3');
CREATE TABLE "Project" ("id" TEXT PRIMARY KEY, "slug" TEXT NOT NULL UNIQUE, "name" TEXT NOT NULL,
  "externalRef" TEXT NOT NULL UNIQUE, "organizationId" TEXT NOT NULL,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  "deletedAt" TIMESTAMP(3), "initializedAt" TIMESTAMP(3), "defaultRuntime" TEXT,
  "version" "ProjectVersion" NOT NULL DEFAULT 'V2', "engine" "RunEngineVersion" NOT NULL DEFAULT 'V1',
  "builderProjectId" TEXT,
  "defaultWorkerGroupId" TEXT REFERENCES "WorkerInstanceGroup"("id"),
  "buildSettings" JSONB, "onboardingData" JSONB);
CREATE TYPE "TaskRunExecutionStatus" AS ENUM ('RUN_CREATED', 'DELAYED', 'QUEUED', 'QUEUED_EXECUTING',
  'PENDING_EXECUTING', 'EXECUTING', 'EXECUTING_WITH_WAITPOINTS', 'SUSPENDED', 'PENDING_CANCEL', 'FINISHED');
CREATE TABLE "TaskRunExecutionSnapshot" (
  "id" TEXT NOT NULL, "engine" "RunEngineVersion" NOT NULL DEFAULT 'V2',
  "executionStatus" "TaskRunExecutionStatus" NOT NULL, "description" TEXT NOT NULL,
  "isValid" BOOLEAN NOT NULL DEFAULT true, "error" TEXT, "previousSnapshotId" TEXT,
  "runId" TEXT NOT NULL, "runStatus" "TaskRunStatus" NOT NULL, "batchId" TEXT,
  "attemptNumber" INTEGER, "environmentId" TEXT NOT NULL,
  "environmentType" "RuntimeEnvironmentType" NOT NULL, "projectId" TEXT NOT NULL,
  "organizationId" TEXT NOT NULL, "completedWaitpointOrder" TEXT[], "checkpointId" TEXT,
  "workerId" TEXT, "runnerId" TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  "lastHeartbeatAt" TIMESTAMP(3), "metadata" JSONB,
  CONSTRAINT "TaskRunExecutionSnapshot_pkey" PRIMARY KEY ("id"));
CREATE INDEX "TaskRunExecutionSnapshot_runId_isValid_createdAt_idx"
  ON "TaskRunExecutionSnapshot"("runId", "isValid", "createdAt" DESC);
CREATE TYPE "TaskTriggerSource" AS ENUM ('STANDARD', 'SCHEDULED', 'AGENT', 'WEBHOOK');
CREATE TABLE "BackgroundWorkerTask" (
  "id" TEXT NOT NULL, "slug" TEXT NOT NULL, "description" TEXT, "friendlyId" TEXT NOT NULL,
  "filePath" TEXT NOT NULL, "exportName" TEXT, "workerId" TEXT NOT NULL, "projectId" TEXT NOT NULL,
  "fileId" TEXT, "runtimeEnvironmentId" TEXT NOT NULL,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  "queueConfig" JSONB, "retryConfig" JSONB, "machineConfig" JSONB, "queueId" TEXT,
  "maxDurationInSeconds" INTEGER, "ttl" TEXT,
  "triggerSource" "TaskTriggerSource" NOT NULL DEFAULT 'STANDARD', "config" JSONB, "payloadSchema" JSONB,
  CONSTRAINT "BackgroundWorkerTask_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "BackgroundWorkerTask_workerId_slug_key" ON "BackgroundWorkerTask"("workerId", "slug");
CREATE UNIQUE INDEX "BackgroundWorkerTask_friendlyId_key" ON "BackgroundWorkerTask"("friendlyId");
CREATE INDEX "BackgroundWorkerTask_projectId_slug_idx" ON "BackgroundWorkerTask"("projectId", "slug");
CREATE INDEX "BackgroundWorkerTask_projectId_slug_createdAt_idx" ON "BackgroundWorkerTask"("projectId", "slug", "createdAt");
CREATE INDEX "BackgroundWorkerTask_runtimeEnvironmentId_projectId_idx" ON "BackgroundWorkerTask"("runtimeEnvironmentId", "projectId");
CREATE TYPE "WorkerDeploymentStatus" AS ENUM ('PENDING', 'INSTALLING', 'BUILDING', 'DEPLOYING',
  'DEPLOYED', 'FAILED', 'CANCELED', 'TIMED_OUT');
CREATE TYPE "WorkerDeploymentType" AS ENUM ('MANAGED', 'UNMANAGED', 'V1');
CREATE TABLE "WorkerDeployment" (
  "id" TEXT PRIMARY KEY, "contentHash" TEXT NOT NULL, "friendlyId" TEXT NOT NULL UNIQUE,
  "shortCode" TEXT NOT NULL, "version" TEXT NOT NULL, "runtime" TEXT, "runtimeVersion" TEXT,
  "imageReference" TEXT, "imagePlatform" TEXT NOT NULL DEFAULT 'linux/amd64',
  "externalBuildData" JSONB, "buildServerMetadata" JSONB,
  "status" "WorkerDeploymentStatus" NOT NULL DEFAULT 'PENDING',
  "type" "WorkerDeploymentType" NOT NULL DEFAULT 'V1', "projectId" TEXT NOT NULL,
  "environmentId" TEXT NOT NULL, "workerId" TEXT UNIQUE, "triggeredById" TEXT, "triggeredVia" TEXT,
  "commitSHA" TEXT, "externalId" TEXT, "startedAt" TIMESTAMP(3), "installedAt" TIMESTAMP(3),
  "builtAt" TIMESTAMP(3), "deployedAt" TIMESTAMP(3), "failedAt" TIMESTAMP(3), "errorData" JSONB,
  "canceledAt" TIMESTAMP(3), "canceledReason" TEXT, "git" JSONB,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  UNIQUE ("projectId", "shortCode"), UNIQUE ("environmentId", "version"));
CREATE TABLE "WorkerDeploymentPromotion" ("id" TEXT PRIMARY KEY, "label" TEXT NOT NULL,
  "deploymentId" TEXT NOT NULL, "environmentId" TEXT NOT NULL);
CREATE UNIQUE INDEX "WorkerDeploymentPromotion_environmentId_label_key"
  ON "WorkerDeploymentPromotion"("environmentId", "label");
CREATE TYPE "EnvironmentPauseSource" AS ENUM ('BILLING_LIMIT');
CREATE TABLE "RuntimeEnvironment" (
  "id" TEXT NOT NULL, "slug" TEXT NOT NULL, "apiKey" TEXT NOT NULL, "pkApiKey" TEXT NOT NULL,
  "type" "RuntimeEnvironmentType" NOT NULL DEFAULT 'DEVELOPMENT',
  "isBranchableEnvironment" BOOLEAN NOT NULL DEFAULT false, "branchName" TEXT,
  "parentEnvironmentId" TEXT, "git" JSONB, "archivedAt" TIMESTAMP(3), "shortcode" TEXT NOT NULL,
  "maximumConcurrencyLimit" INTEGER NOT NULL DEFAULT 5,
  "concurrencyLimitBurstFactor" DECIMAL(4,2) NOT NULL DEFAULT 2.00,
  "paused" BOOLEAN NOT NULL DEFAULT false, "pauseSource" "EnvironmentPauseSource",
  "autoEnableInternalSources" BOOLEAN NOT NULL DEFAULT true, "organizationId" TEXT NOT NULL,
  "projectId" TEXT NOT NULL, "orgMemberId" TEXT,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  "builtInEnvironmentVariableOverrides" JSONB, "tunnelId" TEXT, "currentSessionId" TEXT,
  CONSTRAINT "RuntimeEnvironment_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "RuntimeEnvironment_apiKey_key" ON "RuntimeEnvironment"("apiKey");
CREATE UNIQUE INDEX "RuntimeEnvironment_pkApiKey_key" ON "RuntimeEnvironment"("pkApiKey");
CREATE UNIQUE INDEX "RuntimeEnvironment_projectId_slug_orgMemberId_key"
  ON "RuntimeEnvironment"("projectId", "slug", "orgMemberId");
CREATE UNIQUE INDEX "RuntimeEnvironment_projectId_shortcode_key" ON "RuntimeEnvironment"("projectId", "shortcode");
CREATE INDEX "RuntimeEnvironment_parentEnvironmentId_idx" ON "RuntimeEnvironment"("parentEnvironmentId");
CREATE INDEX "RuntimeEnvironment_projectId_idx" ON "RuntimeEnvironment"("projectId");
CREATE INDEX "RuntimeEnvironment_organizationId_idx" ON "RuntimeEnvironment"("organizationId");
CREATE TYPE "TaskQueueType" AS ENUM ('VIRTUAL', 'NAMED');
CREATE TYPE "TaskQueueVersion" AS ENUM ('V1', 'V2');
CREATE TABLE "TaskQueue" (
  "id" TEXT NOT NULL, "friendlyId" TEXT NOT NULL, "name" TEXT NOT NULL,
  "type" "TaskQueueType" NOT NULL DEFAULT 'VIRTUAL', "version" "TaskQueueVersion" NOT NULL DEFAULT 'V1',
  "orderableName" TEXT, "projectId" TEXT NOT NULL, "runtimeEnvironmentId" TEXT NOT NULL,
  "concurrencyLimit" INTEGER, "concurrencyLimitOverriddenAt" TIMESTAMP(3),
  "concurrencyLimitOverriddenBy" TEXT, "concurrencyLimitBase" INTEGER,
  "concurrencyLimitOverridePercent" DECIMAL(5,2), "rateLimit" JSONB,
  "paused" BOOLEAN NOT NULL DEFAULT false,
  "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" TIMESTAMP(3) NOT NULL,
  CONSTRAINT "TaskQueue_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "TaskQueue_friendlyId_key" ON "TaskQueue"("friendlyId");
CREATE UNIQUE INDEX "TaskQueue_runtimeEnvironmentId_name_key" ON "TaskQueue"("runtimeEnvironmentId", "name");
"#;

pub const GROUP: &str = "ops-test-group";
pub const QUEUE: &str = "ops-test-queue";

/// Creates the tables and a managed worker group whose token is `token` (the global default, as
/// the webapp makes the first group it creates).
pub fn install(client: &mut postgres::Client, token: &str) {
    client.batch_execute(WORKER_DDL).unwrap();
    client.batch_execute(TASK_RUN).unwrap();
    add_group(client, token, GROUP, QUEUE);
}

/// A managed group for `token`; it becomes the global default when there is none yet (what
/// Trigger.dev's `createWorkerGroup` does).
pub fn add_group(client: &mut postgres::Client, token: &str, name: &str, queue: &str) {
    client
        .execute(
            r#"INSERT INTO "WorkerGroupToken" (id, "tokenHash", "updatedAt")
               VALUES ($2 || '-token', encode(sha256(convert_to($1, 'UTF8')), 'hex'), now())"#,
            &[&token, &name],
        )
        .unwrap();
    client
        .execute(
            r#"INSERT INTO "WorkerInstanceGroup" (id, type, name, "masterQueue", "tokenId", "updatedAt")
               VALUES ($1 || '-group', 'MANAGED', $1, $2, $1 || '-token', now())"#,
            &[&name, &queue],
        )
        .unwrap();
    client
        .execute(
            r#"INSERT INTO "FeatureFlag" (id, key, value, "updatedAt")
               VALUES ('ff-default', 'defaultWorkerInstanceGroupId', to_jsonb($1 || '-group'), now())
               ON CONFLICT (key) DO NOTHING"#,
            &[&name],
        )
        .unwrap();
}

/// The group id `add_group` gives `name`.
pub fn group_id(name: &str) -> String {
    format!("{name}-group")
}

/// The global default group, as the admin feature-flags API sets it.
pub fn set_default(client: &mut postgres::Client, group_id: &str) {
    client
        .execute(
            r#"INSERT INTO "FeatureFlag" (id, key, value, "updatedAt")
               VALUES ('ff-default', 'defaultWorkerInstanceGroupId', to_jsonb($1::text), now())
               ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "updatedAt" = now()"#,
            &[&group_id],
        )
        .unwrap();
}

/// A project whose own default worker group is `group_id`.
pub fn project_default(client: &mut postgres::Client, slug: &str, group_id: &str) {
    client
        .execute(
            r#"INSERT INTO "Project" (id, slug, name, "externalRef", "organizationId", "updatedAt", "defaultWorkerGroupId")
               VALUES ('p-' || $1, $1, $1, 'proj_' || $1, 'org1', now(), $2)"#,
            &[&slug, &group_id],
        )
        .unwrap();
}

/// A run in `queue` with `status`, created `created_ago` and queued `queued_ago` ago (`None`:
/// `queuedAt` unset).
pub fn run_in(
    client: &mut postgres::Client,
    id: &str,
    queue: &str,
    status: &str,
    created_ago: Duration,
    queued_ago: Option<Duration>,
) {
    client
        .execute(
            r#"INSERT INTO "TaskRun" (id, "friendlyId", status, "masterQueue", "createdAt", "queuedAt",
                 "updatedAt", payload, "runtimeEnvironmentId", "projectId", "taskIdentifier",
                 "spanId", "traceId", queue)
               VALUES ($1, 'run_' || $1, $3::text::"TaskRunStatus", $2,
                 timezone('UTC', now()) - make_interval(secs => $4),
                 timezone('UTC', now()) - make_interval(secs => $5), now(), '{}', 'env1', 'p1',
                 'my-task', 's-' || $1, 't-' || $1, 'task/my-task')"#,
            &[
                &id,
                &queue,
                &status,
                &created_ago.as_secs_f64(),
                &queued_ago.map(|d| d.as_secs_f64()),
            ],
        )
        .unwrap();
}

/// A run waiting in the test group's queue since `age` ago.
pub fn pending_run(client: &mut postgres::Client, id: &str, age: Duration) {
    run_in(client, id, QUEUE, "PENDING", age, Some(age));
}

/// `n` finished runs spread over the last `days` days, in `createdAt` order (as the webapp
/// appends them), with payloads of a realistic size: a table a sequential scan shows on.
pub fn history(client: &mut postgres::Client, n: u64, days: u64) {
    client
        .execute(
            r#"INSERT INTO "TaskRun" (id, "friendlyId", status, "masterQueue", "createdAt", "queuedAt",
                 "updatedAt", "completedAt", payload, "runtimeEnvironmentId", "projectId",
                 "taskIdentifier", "spanId", "traceId", queue, "runTags", "engine")
               SELECT 'h' || i, 'run_h' || i, 'COMPLETED_SUCCESSFULLY', $3,
                 t, t, t, t, repeat('x', 200), 'env' || (i % 7), 'p1', 'task-' || (i % 20),
                 md5(i::text), md5((i * 7)::text), 'task/task-' || (i % 20),
                 ARRAY['tag' || (i % 50)], 'V2'
                 FROM generate_series(1, $1::bigint) AS i,
                 LATERAL (SELECT timezone('UTC', now()) - make_interval(secs => ($2::float8 * 86400)
                          * (1 - i::float8 / $1::float8)) - interval '2 minutes' AS t) AS x"#,
            &[&(n as i64), &(days as f64), &QUEUE],
        )
        .unwrap();
    // What autovacuum does on a live webapp: statistics, and the BRIN index summarized (ranges
    // filled since the last vacuum are unsummarized, and every bitmap scan reads them).
    client.batch_execute(r#"VACUUM ANALYZE "TaskRun""#).unwrap();
    settle_statistics(client);
}

/// This session's own counters (the inserts, the vacuum) reach the shared statistics late; a
/// test that counts scans from here on must not see them arrive during the run it measures.
pub fn settle_statistics(client: &mut postgres::Client) {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .unwrap();
    client.batch_execute("SELECT 1").unwrap();
}

/// Deletes a worker group and its token, as an operator would in the webapp's admin.
pub fn delete_group(client: &mut postgres::Client, name: &str) {
    client
        .batch_execute(&format!(
            r#"DELETE FROM "WorkerInstance" WHERE "workerGroupId" = '{name}-group';
               DELETE FROM "WorkerInstanceGroup" WHERE id = '{name}-group';
               DELETE FROM "WorkerGroupToken" WHERE id = '{name}-token';"#
        ))
        .unwrap();
}

/// What the webapp does when a supervisor heartbeats: upsert its `WorkerInstance` row (created on
/// first contact, named after TRIGGER_WORKER_INSTANCE_NAME) with `lastHeartbeatAt` = now (UTC).
pub fn heartbeat(
    client: &mut postgres::Client,
    token: &str,
    name: &str,
) -> Result<u64, postgres::Error> {
    client.execute(
        r#"INSERT INTO "WorkerInstance" (id, name, "resourceIdentifier", "workerGroupId", "updatedAt", "lastHeartbeatAt")
           SELECT $2 || '-' || g.id, $2, $2, g.id, now(), timezone('UTC', now())
             FROM "WorkerInstanceGroup" g JOIN "WorkerGroupToken" t ON t.id = g."tokenId"
            WHERE t."tokenHash" = encode(sha256(convert_to($1, 'UTF8')), 'hex')
           ON CONFLICT ("workerGroupId", "resourceIdentifier")
           DO UPDATE SET "lastHeartbeatAt" = EXCLUDED."lastHeartbeatAt", "updatedAt" = now()"#,
        &[&token, &name],
    )
}

/// Where a test supervisor heartbeats to.
#[derive(Clone)]
pub struct Webapp {
    pub url: String,
    pub token: String,
}

/// A background heartbeat every 100 ms while `alive` is true, until dropped. Reconnects after
/// errors (the soak restarts Postgres under it).
pub struct Beating {
    stop: Arc<AtomicBool>,
}

impl Beating {
    pub fn start(webapp: Webapp, name: String, alive: Arc<AtomicBool>) -> Beating {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let (first, wait) = std::sync::mpsc::channel::<()>();
        let waits = alive.load(Ordering::SeqCst);
        std::thread::spawn(move || {
            let mut client = None;
            while !s.load(Ordering::SeqCst) {
                if alive.load(Ordering::SeqCst) {
                    if client.is_none() {
                        client = postgres::Client::connect(&webapp.url, postgres::NoTls).ok();
                    }
                    if let Some(c) = client.as_mut() {
                        match heartbeat(c, &webapp.token, &name) {
                            Ok(_) => {
                                let _ = first.send(());
                            }
                            Err(_) => client = None,
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // A live supervisor has heartbeated once before the test goes on.
        if waits {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
        Beating { stop }
    }
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A run of the test group executing on the supervisor named `instance` (status EXECUTING,
/// preset set as at dequeue), with the snapshots the run engine writes: PENDING_EXECUTING and
/// EXECUTING by the supervisor (its `WorkerInstance.id` in `workerId`), then, like `wait.for`
/// does, a newer one the webapp makes itself (`workerId` NULL).
pub fn executing_run(client: &mut postgres::Client, id: &str, instance: &str, preset: &str) {
    run_in(
        client,
        id,
        QUEUE,
        "EXECUTING",
        Duration::from_secs(120),
        Some(Duration::from_secs(110)),
    );
    client
        .execute(
            r#"UPDATE "TaskRun" SET "machinePreset" = $2 WHERE id = $1"#,
            &[&id, &preset],
        )
        .unwrap();
    client
        .execute(
            r#"INSERT INTO "TaskRunExecutionSnapshot" (id, "executionStatus", description, "runId",
                 "runStatus", "environmentId", "environmentType", "projectId", "organizationId",
                 "workerId", "createdAt", "updatedAt")
               SELECT $1 || '-s' || n, st::"TaskRunExecutionStatus", 'test', $1, 'EXECUTING', 'env1',
                      'PRODUCTION', 'p1', 'org1', w, timezone('UTC', now()) - make_interval(secs => 100 - n),
                      now()
                 FROM (VALUES (1, 'PENDING_EXECUTING', (SELECT wi.id FROM "WorkerInstance" wi WHERE wi.name = $2 LIMIT 1)),
                              (2, 'EXECUTING', (SELECT wi.id FROM "WorkerInstance" wi WHERE wi.name = $2 LIMIT 1)),
                              (3, 'EXECUTING_WITH_WAITPOINTS', NULL)) AS v(n, st, w)"#,
            &[&id, &instance],
        )
        .unwrap();
}

/// The run finished: what the engine writes at completion.
pub fn finish_run(client: &mut postgres::Client, id: &str) {
    client
        .execute(
            r#"UPDATE "TaskRun" SET status = 'COMPLETED_SUCCESSFULLY', "completedAt" = now(),
                 "updatedAt" = now() WHERE id = $1"#,
            &[&id],
        )
        .unwrap();
}

/// `n` snapshots of the history runs (as many as `history` made), in the order the engine
/// writes them: a table a sequential scan shows on.
pub fn snapshot_history(client: &mut postgres::Client, n: u64) {
    client
        .execute(
            r#"INSERT INTO "TaskRunExecutionSnapshot" (id, "executionStatus", description, "runId",
                 "runStatus", "environmentId", "environmentType", "projectId", "organizationId",
                 "workerId", "createdAt", "updatedAt")
               SELECT 'hs' || i, 'FINISHED', 'Run completed', 'h' || i, 'COMPLETED_SUCCESSFULLY',
                      'env' || (i % 7), 'PRODUCTION', 'p1', 'org1', 'old-worker-' || (i % 13), r."createdAt",
                      r."createdAt"
                 FROM generate_series(1, $1::bigint) AS i JOIN "TaskRun" r ON r.id = 'h' || i"#,
            &[&(n as i64)],
        )
        .unwrap();
    client
        .batch_execute(r#"VACUUM ANALYZE "TaskRunExecutionSnapshot""#)
        .unwrap();
    settle_statistics(client);
}

/// A waiting run of the test group whose task asks for `preset` (its `machineConfig` in the
/// current deployment of its environment, as the CLI writes it).
pub fn waiting_run_needing(client: &mut postgres::Client, id: &str, preset: &str) {
    pending_run(client, id, Duration::from_secs(60));
    client
        .batch_execute(&format!(
            r#"INSERT INTO "WorkerDeployment" (id, "contentHash", "friendlyId", "shortCode", version,
                 status, "projectId", "environmentId", "workerId", "updatedAt")
               VALUES ('dep1', 'h', 'deployment_1', 'abc', '20261202.1', 'DEPLOYED', 'p1', 'env1', 'bw1', now())
               ON CONFLICT DO NOTHING;
               INSERT INTO "WorkerDeploymentPromotion" (id, label, "deploymentId", "environmentId")
               VALUES ('promo1', 'current', 'dep1', 'env1') ON CONFLICT DO NOTHING;
               INSERT INTO "BackgroundWorkerTask" (id, slug, "friendlyId", "filePath", "workerId",
                 "projectId", "runtimeEnvironmentId", "updatedAt", "machineConfig")
               VALUES ('bwt1', 'my-task', 'task_1', 'src/trigger/my-task.ts', 'bw1', 'p1', 'env1', now(),
                 '{{"preset": "{preset}"}}') ON CONFLICT DO NOTHING;"#
        ))
        .unwrap();
}

/// The environment `env1` with this concurrency limit (burst factor 1: the limit is the limit)
/// and its queue `task/my-task` with `queue_limit`, as the webapp keeps them.
pub fn limits(
    client: &mut postgres::Client,
    env_limit: i32,
    queue_limit: Option<i32>,
    paused: bool,
) {
    client
        .execute(
            r#"INSERT INTO "RuntimeEnvironment" (id, slug, "apiKey", "pkApiKey", type, shortcode,
                 "maximumConcurrencyLimit", "concurrencyLimitBurstFactor", paused, "organizationId",
                 "projectId", "updatedAt")
               VALUES ('env1', 'prod', 'tr_prod_x', 'pk_prod_x', 'PRODUCTION', 'p1', $1, 1.00, $2,
                 'org1', 'p1', now())
               ON CONFLICT (id) DO UPDATE SET "maximumConcurrencyLimit" = $1, paused = $2"#,
            &[&env_limit, &paused],
        )
        .unwrap();
    client
        .execute(
            r#"INSERT INTO "TaskQueue" (id, "friendlyId", name, "projectId", "runtimeEnvironmentId",
                 "concurrencyLimit", "updatedAt")
               VALUES ('q1', 'queue_1', 'task/my-task', 'p1', 'env1', $1, now())
               ON CONFLICT (id) DO UPDATE SET "concurrencyLimit" = $1"#,
            &[&queue_limit],
        )
        .unwrap();
}
