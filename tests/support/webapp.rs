//! The webapp's side of supervisor health, for tests: Trigger.dev's worker tables (the DDL in
//! shared/reference/trigger-dev.md, verbatim columns), a worker group for a token, and test
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

pub const TASK_RUN: &str = r#"CREATE TABLE IF NOT EXISTS "TaskRun" (id text PRIMARY KEY, "friendlyId" text NOT NULL, status text NOT NULL, "masterQueue" text NOT NULL DEFAULT 'main', "createdAt" timestamp(3) NOT NULL DEFAULT now(), "updatedAt" timestamp(3) NOT NULL)"#;

pub const GROUP: &str = "ops-test-group";
pub const QUEUE: &str = "ops-test-queue";

/// Creates the tables and a managed worker group whose token is `token`.
pub fn install(client: &mut postgres::Client, token: &str) {
    client.batch_execute(WORKER_DDL).unwrap();
    client.batch_execute(TASK_RUN).unwrap();
    add_group(client, token, GROUP, QUEUE);
}

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

/// A run waiting in the group's queue since `age` ago.
pub fn pending_run(client: &mut postgres::Client, id: &str, age: Duration) {
    client
        .execute(
            &format!(
                r#"INSERT INTO "TaskRun" (id, "friendlyId", status, "masterQueue", "createdAt", "updatedAt")
                   VALUES ($1, $1, 'PENDING', $2, timezone('UTC', now()) - interval '{} seconds', now())"#,
                age.as_secs()
            ),
            &[&id, &QUEUE],
        )
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
