//! The replication decision, pure: the catalog facts read in one query in, the steps out (notes
//! to report and typed actions to apply, in order) plus the findings that fail the task. The
//! same plan is printed by a dry run and applied by a real one.

/// What the catalog query saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub wal_level: String,
    /// `ALTER SYSTEM` already set it; a restart applies it.
    pub wal_pending: bool,
    pub max_slots: i32,
    pub max_senders: i32,
    /// `relreplident` of the table (`d`, `n`, `i`, `f`); `None`: no such table.
    pub replident: Option<String>,
    pub pub_exists: bool,
    pub pub_insert: bool,
    pub pub_update: bool,
    pub pub_delete: bool,
    pub pub_truncate: bool,
    pub pub_has_table: bool,
    /// `None`: no slot.
    pub slot_active: Option<bool>,
    pub slot_retained: Option<i64>,
}

/// What the task is asked to keep true, resolved from its options.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `"schema"."table"`, quoted.
    pub qualified: String,
    /// The publication's name, quoted.
    pub publication: String,
    pub slot: String,
    pub slot_max_retained: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ALTER SYSTEM SET wal_level = logical`, then `pg_reload_conf()`.
    SetWalLevel,
    /// Restart the Postgres service through Railway and wait for `wal_level = logical`.
    RestartPostgres,
    AlterReplicaIdentity {
        table: String,
    },
    CreatePublication {
        publication: String,
        table: String,
    },
    AddTable {
        publication: String,
        table: String,
    },
    SetPublish {
        publication: String,
        publish: String,
    },
}

impl Action {
    /// The SQL it runs; `None` for the restart.
    pub fn sql(&self) -> Option<String> {
        Some(match self {
            Action::SetWalLevel => "ALTER SYSTEM SET wal_level = logical".into(),
            Action::RestartPostgres => return None,
            Action::AlterReplicaIdentity { table } => {
                format!("ALTER TABLE {table} REPLICA IDENTITY FULL")
            }
            Action::CreatePublication { publication, table } => {
                format!("CREATE PUBLICATION {publication} FOR TABLE {table}")
            }
            Action::AddTable { publication, table } => {
                format!("ALTER PUBLICATION {publication} ADD TABLE {table}")
            }
            Action::SetPublish {
                publication,
                publish,
            } => format!("ALTER PUBLICATION {publication} SET (publish = '{publish}')"),
        })
    }

    pub fn describe(&self) -> String {
        self.sql().unwrap_or_else(|| {
            "restart the Postgres service through Railway and wait for wal_level = logical".into()
        })
    }

    /// The event kind recorded when it is done (`TaskCtx::changed`).
    pub fn event_kind(&self) -> &'static str {
        match self {
            Action::SetWalLevel => "postgres.setting",
            Action::RestartPostgres => "postgres.restarted",
            Action::AlterReplicaIdentity { .. } => "postgres.replica_identity",
            Action::CreatePublication { .. }
            | Action::AddTable { .. }
            | Action::SetPublish { .. } => "postgres.publication",
        }
    }

    /// The statement kind, for a privilege error's advice.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::SetWalLevel => "ALTER SYSTEM",
            Action::RestartPostgres => "restart",
            Action::AlterReplicaIdentity { .. } => "ALTER TABLE",
            Action::CreatePublication { .. } => "CREATE PUBLICATION",
            Action::AddTable { .. } | Action::SetPublish { .. } => "ALTER PUBLICATION",
        }
    }
}

impl crate::task::Typed for Action {
    fn typed(&self) -> crate::task::ActionType {
        use crate::task::ActionType;
        match self {
            Action::SetWalLevel => ActionType::named("set", "wal_level")
                .reason("logical replication needs wal_level = logical"),
            Action::RestartPostgres => ActionType::named("restart", "Postgres")
                .reason("wal_level = logical takes effect at a restart"),
            Action::AlterReplicaIdentity { table } => {
                ActionType::counted("alter", "table").name(table)
            }
            Action::CreatePublication { publication, .. } => {
                ActionType::counted("create", "publication").name(publication)
            }
            Action::AddTable { publication, .. } | Action::SetPublish { publication, .. } => {
                ActionType::counted("alter", "publication").name(publication)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A fact to report.
    Note(String),
    Act(Action),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub failures: Vec<String>,
    /// The table does not exist yet: nothing more to check.
    pub waiting: bool,
}

impl Plan {
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.steps.iter().filter_map(|s| match s {
            Step::Act(a) => Some(a),
            Step::Note(_) => None,
        })
    }

    fn note(&mut self, text: impl Into<String>) {
        self.steps.push(Step::Note(text.into()));
    }

    fn act(&mut self, action: Action) {
        self.steps.push(Step::Act(action));
    }
}

pub fn plan(f: &Facts, spec: &Spec) -> Plan {
    let mut p = Plan::default();
    if f.wal_level == "logical" {
        p.note("ok: wal_level = logical");
    } else if f.wal_pending {
        p.note(format!(
            "wal_level is {} live, logical once Postgres restarts",
            f.wal_level
        ));
        p.act(Action::RestartPostgres);
    } else {
        p.note(format!("wal_level is {} (needs logical)", f.wal_level));
        p.act(Action::SetWalLevel);
        p.act(Action::RestartPostgres);
    }
    for (name, value) in [
        ("max_replication_slots", f.max_slots),
        ("max_wal_senders", f.max_senders),
    ] {
        if value < 1 {
            p.failures.push(format!("{name} = {value}: logical replication needs at least 1 (ALTER SYSTEM SET {name} = 10 and restart, or set it at the provider)"));
        }
    }
    let Some(replident) = &f.replident else {
        p.steps.insert(
            0,
            Step::Note(format!(
                "waiting: table {} does not exist yet (the webapp has not run its migrations)",
                spec.qualified
            )),
        );
        p.waiting = true;
        return p;
    };
    identity(&mut p, replident, spec);
    publication(&mut p, f, spec);
    p.steps.extend(slot(f, spec, &mut p.failures));
    p
}

fn identity(p: &mut Plan, replident: &str, spec: &Spec) {
    if replident == "f" {
        p.note(format!("ok: {} has REPLICA IDENTITY FULL", spec.qualified));
        return;
    }
    p.note(format!(
        "replica identity of {} is {} (needs FULL)",
        spec.qualified,
        identity_name(replident)
    ));
    p.act(Action::AlterReplicaIdentity {
        table: spec.qualified.clone(),
    });
}

fn publication(p: &mut Plan, f: &Facts, spec: &Spec) {
    let (publication, table) = (spec.publication.clone(), spec.qualified.clone());
    if !f.pub_exists {
        p.note(format!("publication {publication} does not exist"));
        p.act(Action::CreatePublication { publication, table });
        return;
    }
    if f.pub_has_table {
        p.note(format!("ok: publication {publication} includes {table}"));
    } else {
        p.note(format!(
            "publication {publication} does not include {table} (replication silently loses runs)"
        ));
        p.act(Action::AddTable {
            publication: publication.clone(),
            table,
        });
    }
    if f.pub_insert && f.pub_update && f.pub_delete {
        p.note("ok: publication publishes insert, update, delete");
    } else {
        let mut publish = vec!["insert", "update", "delete"];
        if f.pub_truncate {
            publish.push("truncate");
        }
        p.note(format!(
            "publication {publication} misses some of insert/update/delete"
        ));
        p.act(Action::SetPublish {
            publication,
            publish: publish.join(", "),
        });
    }
}

/// The slot is reported, never dropped: an inactive one over the limit fails the task.
fn slot(f: &Facts, spec: &Spec, failures: &mut Vec<String>) -> Option<Step> {
    let retained = |r: Option<i64>| {
        r.map(|b| format!(", {} retained", bytes(b)))
            .unwrap_or_default()
    };
    let slot = &spec.slot;
    let text = match (f.slot_active, f.slot_retained) {
        (None, _) => {
            format!("ok: slot {slot} absent (the webapp creates it when replication starts)")
        }
        (Some(true), r) => format!("ok: slot {slot} active{}", retained(r)),
        (Some(false), Some(r)) if r as u64 > spec.slot_max_retained => {
            failures.push(format!(
                "slot {slot} is inactive and retains {} of WAL (limit {}): the disk fills until it is consumed or dropped. If the webapp no longer replicates (RUN_REPLICATION_ENABLED off), drop it by hand: SELECT pg_drop_replication_slot('{}'); ops never drops a slot",
                bytes(r), bytes(spec.slot_max_retained as i64), slot.replace('\'', "''")
            ));
            return None;
        }
        (Some(false), r) => format!(
            "slot {slot} inactive{} (under the {} limit)",
            retained(r),
            bytes(spec.slot_max_retained as i64)
        ),
    };
    Some(Step::Note(text))
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

pub fn bytes(n: i64) -> String {
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

    const TABLE: &str = "\"public\".\"TaskRun\"";
    const PUB: &str = "\"task_runs_to_clickhouse_v1_publication\"";

    fn healthy() -> Facts {
        Facts {
            wal_level: "logical".into(),
            wal_pending: false,
            max_slots: 10,
            max_senders: 10,
            replident: Some("f".into()),
            pub_exists: true,
            pub_insert: true,
            pub_update: true,
            pub_delete: true,
            pub_truncate: false,
            pub_has_table: true,
            slot_active: Some(true),
            slot_retained: Some(4096),
        }
    }

    fn spec() -> Spec {
        Spec {
            qualified: TABLE.into(),
            publication: PUB.into(),
            slot: "task_runs_to_clickhouse_v1".into(),
            slot_max_retained: 1 << 30,
        }
    }

    fn sql(p: &Plan) -> Vec<String> {
        p.actions().map(Action::describe).collect()
    }

    fn notes(p: &Plan) -> Vec<&str> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Note(n) => Some(n.as_str()),
                Step::Act(_) => None,
            })
            .collect()
    }

    #[test]
    fn healthy_database_plans_nothing() {
        let p = plan(&healthy(), &spec());
        assert_eq!(p.actions().count(), 0);
        assert!(p.failures.is_empty());
        assert!(
            notes(&p).iter().all(|n| n.starts_with("ok:")),
            "{:?}",
            notes(&p)
        );
    }

    #[test]
    fn wal_level_replica_is_set_then_restarted() {
        let f = Facts {
            wal_level: "replica".into(),
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert_eq!(
            p.actions().cloned().collect::<Vec<_>>(),
            [Action::SetWalLevel, Action::RestartPostgres]
        );
        assert_eq!(notes(&p)[0], "wal_level is replica (needs logical)");
    }

    #[test]
    fn wal_level_pending_only_needs_the_restart() {
        let f = Facts {
            wal_level: "replica".into(),
            wal_pending: true,
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert_eq!(
            p.actions().cloned().collect::<Vec<_>>(),
            [Action::RestartPostgres]
        );
        assert_eq!(
            notes(&p)[0],
            "wal_level is replica live, logical once Postgres restarts"
        );
    }

    #[test]
    fn every_identity_but_full_is_altered() {
        for (code, name) in [("d", "DEFAULT"), ("n", "NOTHING"), ("i", "USING INDEX")] {
            let f = Facts {
                replident: Some(code.into()),
                ..healthy()
            };
            let p = plan(&f, &spec());
            assert_eq!(
                sql(&p),
                [format!("ALTER TABLE {TABLE} REPLICA IDENTITY FULL")]
            );
            assert!(notes(&p)
                .contains(&format!("replica identity of {TABLE} is {name} (needs FULL)").as_str()));
        }
    }

    #[test]
    fn missing_table_waits_and_plans_nothing_on_it() {
        let f = Facts {
            replident: None,
            pub_exists: false,
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert!(p.waiting);
        assert_eq!(p.actions().count(), 0);
        assert!(notes(&p)[0].starts_with("waiting: table"));
    }

    #[test]
    fn missing_table_still_fixes_wal_level_first() {
        let f = Facts {
            replident: None,
            wal_level: "replica".into(),
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert!(p.waiting);
        assert_eq!(p.actions().count(), 2);
    }

    #[test]
    fn missing_publication_is_created_for_the_table_only() {
        let f = Facts {
            pub_exists: false,
            pub_has_table: false,
            pub_insert: false,
            pub_update: false,
            pub_delete: false,
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert_eq!(
            sql(&p),
            [format!("CREATE PUBLICATION {PUB} FOR TABLE {TABLE}")]
        );
    }

    #[test]
    fn publication_without_the_table_gets_it_added() {
        let f = Facts {
            pub_has_table: false,
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert_eq!(
            sql(&p),
            [format!("ALTER PUBLICATION {PUB} ADD TABLE {TABLE}")]
        );
        assert!(notes(&p)
            .iter()
            .any(|n| n.contains("replication silently loses runs")));
    }

    #[test]
    fn publication_missing_actions_keeps_truncate_when_it_had_it() {
        let f = Facts {
            pub_delete: false,
            ..healthy()
        };
        assert_eq!(
            sql(&plan(&f, &spec())),
            [format!(
                "ALTER PUBLICATION {PUB} SET (publish = 'insert, update, delete')"
            )]
        );
        let f = Facts {
            pub_update: false,
            pub_truncate: true,
            ..healthy()
        };
        assert_eq!(
            sql(&plan(&f, &spec())),
            [format!(
                "ALTER PUBLICATION {PUB} SET (publish = 'insert, update, delete, truncate')"
            )]
        );
    }

    #[test]
    fn no_slots_or_senders_fails_without_an_action() {
        let f = Facts {
            max_slots: 0,
            max_senders: 0,
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert_eq!(p.actions().count(), 0);
        assert_eq!(p.failures.len(), 2);
        assert!(p.failures[0].starts_with("max_replication_slots = 0"));
    }

    #[test]
    fn inactive_slot_over_the_limit_fails_and_is_never_dropped() {
        let f = Facts {
            slot_active: Some(false),
            slot_retained: Some(2 << 30),
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert_eq!(p.actions().count(), 0);
        assert!(p.failures[0].starts_with("slot task_runs_to_clickhouse_v1 is inactive and retains 2.0 GiB of WAL (limit 1.0 GiB)"));
    }

    #[test]
    fn inactive_slot_under_the_limit_and_absent_slot_are_notes() {
        let f = Facts {
            slot_active: Some(false),
            slot_retained: Some(1 << 20),
            ..healthy()
        };
        let p = plan(&f, &spec());
        assert!(p.failures.is_empty());
        assert!(notes(&p)
            .iter()
            .any(|n| n.starts_with("slot task_runs_to_clickhouse_v1 inactive, 1.0 MiB retained")));
        let f = Facts {
            slot_active: None,
            slot_retained: None,
            ..healthy()
        };
        assert!(notes(&plan(&f, &spec()))
            .iter()
            .any(|n| n.contains("absent")));
    }

    #[test]
    fn everything_wrong_at_once_is_planned_in_order() {
        let f = Facts {
            wal_level: "replica".into(),
            replident: Some("d".into()),
            pub_has_table: false,
            pub_delete: false,
            ..healthy()
        };
        let kinds: Vec<&str> = plan(&f, &spec()).actions().map(Action::kind).collect();
        assert_eq!(
            kinds,
            [
                "ALTER SYSTEM",
                "restart",
                "ALTER TABLE",
                "ALTER PUBLICATION",
                "ALTER PUBLICATION"
            ]
        );
    }
}
