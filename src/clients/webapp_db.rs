//! What the webapp's own database knows about its workers (`WorkerGroupToken`,
//! `WorkerInstanceGroup`, `WorkerInstance`, `"TaskRun"`): read-only, one statement per question.
//! A token is valid exactly when the lowercase hex SHA-256 of its plaintext is a `tokenHash`;
//! each supervisor has a `WorkerInstance` row named after its `TRIGGER_WORKER_INSTANCE_NAME`
//! whose `lastHeartbeatAt` the webapp bumps at every heartbeat (30 s by default). Timestamps are
//! UTC without zone, so every age is computed by the database against `timezone('UTC', now())`:
//! the ops host's clock never enters.

use std::collections::BTreeMap;

use anyhow::anyhow;
use postgres::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clients::postgres::describe;

/// The worker group a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerGroup {
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

/// What the webapp knows of our supervisors and of the group's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetView {
    pub group: WorkerGroup,
    /// Instance name → seconds since its last heartbeat (`None`: registered, never heartbeated).
    /// Names the webapp has never heard of are absent.
    pub heartbeats: BTreeMap<String, Option<f64>>,
    /// Age in seconds of the oldest `PENDING` run in the group's queue; `None` when none waits.
    pub oldest_pending_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fleet {
    Seen(FleetView),
    TokenUnknown,
    TablesMissing(String),
}

/// Lowercase hex SHA-256, as the webapp stores `WorkerGroupToken.tokenHash`.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const TOKEN_SQL: &str = r#"SELECT g."name", g."masterQueue"
FROM "WorkerGroupToken" t JOIN "WorkerInstanceGroup" g ON g."tokenId" = t."id"
WHERE t."tokenHash" = $1"#;

/// One statement: every heartbeat age of the named instances in the token's group, and the age
/// of the oldest run waiting in the group's queue.
const FLEET_SQL: &str = r#"SELECT g."name", g."masterQueue",
  (SELECT json_agg(json_build_array(wi."name",
            EXTRACT(EPOCH FROM (timezone('UTC', now()) - wi."lastHeartbeatAt"))))::text
     FROM "WorkerInstance" wi
    WHERE wi."workerGroupId" = g."id" AND wi."name" = ANY($2)),
  (SELECT EXTRACT(EPOCH FROM (timezone('UTC', now()) - min(r."createdAt")))::float8
     FROM "TaskRun" r
    WHERE r."masterQueue" = g."masterQueue" AND r."status" = 'PENDING')
FROM "WorkerGroupToken" t JOIN "WorkerInstanceGroup" g ON g."tokenId" = t."id"
WHERE t."tokenHash" = $1"#;

/// SQLSTATEs that mean "this schema is not Trigger.dev v4's (yet)".
fn missing_schema(e: &postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    matches!(db.code().code(), "42P01" | "42703" | "42704").then(|| db.message().to_string())
}

pub fn lookup_token(client: &mut Client, token: &str) -> anyhow::Result<TokenLookup> {
    match client.query(TOKEN_SQL, &[&token_hash(token)]) {
        Ok(rows) => Ok(match rows.first() {
            Some(r) => TokenLookup::Known(WorkerGroup {
                name: r.get(0),
                master_queue: r.get(1),
            }),
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
    let agg: Option<String> = r.get(2);
    let pairs: Vec<(String, Option<f64>)> = match agg {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow!("unexpected heartbeat list from the webapp's database: {e}"))?,
        None => Vec::new(),
    };
    Ok(Fleet::Seen(FleetView {
        group: WorkerGroup {
            name: r.get(0),
            master_queue: r.get(1),
        },
        heartbeats: pairs.into_iter().collect(),
        oldest_pending_secs: r.get(3),
    }))
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
