//! Do triggered runs reach a live supervisor? Pure judgement over what the webapp's database
//! said this run: where deployed runs go (routing), and which managed queues hold waiting runs
//! that no supervisor serves. No IO, no clock.
//!
//! - **Routing.** A deployed run goes to its project's `defaultWorkerGroupId` when set, else to
//!   the global default (`"FeatureFlag"` `defaultWorkerInstanceGroupId`). A fleet whose group is
//!   neither the global default nor any project's default receives nothing: that fails the run.
//! - **Orphaned queues.** A managed group's queue with `PENDING` runs while no instance of the
//!   group heartbeated within `stale_after` is served by nobody. Past `orphan_alert_after` (the
//!   oldest run's wait since it was queued) that fails the run, naming the queue.
//! - **Our queue** keeps its own optional alert, `queue_alert_after` (a concurrency limit can hold
//!   runs too, so it is off unless set).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clients::webapp_db::{GroupRow, QueueDepth, Routing, WorkerGroup};
use crate::duration;

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub stale_after: Duration,
    pub orphan_alert_after: Option<Duration>,
    pub queue_alert_after: Option<Duration>,
}

/// Everything read this run; an `Err` carries why that read is missing.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The group our token belongs to (our supervisors serve its queue).
    pub ours: &'a WorkerGroup,
    pub routing: Result<&'a Routing, &'a str>,
    pub queues: Result<&'a [QueueDepth], &'a str>,
}

/// Where runs go, as kept for `ops status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStatus {
    /// The global default group's name and queue; `None` when the flag is unset.
    pub default_group: Option<String>,
    pub default_queue: Option<String>,
    pub default_is_ours: bool,
    /// Deployed runs reach our group (global default, or some project's default).
    pub ours_receives: bool,
    /// Projects whose own default is our group.
    pub projects_to_ours: Vec<String>,
    /// Projects whose own default is another group: (project slug, group name).
    pub projects_elsewhere: Vec<(String, String)>,
}

/// One queue with waiting runs (ours is always listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRow {
    pub queue: String,
    pub worker_group: String,
    pub ours: bool,
    pub pending: u64,
    /// Seconds the oldest PENDING run has waited since it was queued; `None`: none waits.
    pub oldest_pending_secs: Option<f64>,
    /// Some instance of the group heartbeated within `stale_after`.
    pub served: bool,
    pub last_heartbeat_secs: Option<f64>,
}

/// What this run found, kept in the state (key `queue`) for `ops status` and `/metrics`.
/// The first three fields are those of earlier versions (read back unchanged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub worker_group: String,
    pub master_queue: String,
    /// Our queue's oldest PENDING run; `None` when none waits (or the queues were not read).
    pub oldest_pending_secs: Option<f64>,
    #[serde(default)]
    pub routing: Option<RoutingStatus>,
    #[serde(default)]
    pub routing_error: Option<String>,
    #[serde(default)]
    pub queues: Vec<QueueRow>,
    #[serde(default)]
    pub queues_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
    pub status: QueueStatus,
    /// What was read (for the run's detail).
    pub detail: Option<String>,
}

/// The queues to read: every managed group's, and their `:scheduled` twins
/// (`TRIGGER_WORKER_QUEUE_SCHEDULED_SPLIT_ENABLED`). Ours alone when routing is unknown.
pub fn queues_to_read(ours: &WorkerGroup, routing: Option<&Routing>) -> Vec<String> {
    let mut bases: Vec<&str> = vec![ours.master_queue.as_str()];
    if let Some(r) = routing {
        bases.extend(
            r.groups
                .iter()
                .filter(|g| g.managed)
                .map(|g| g.master_queue.as_str()),
        );
    }
    bases.sort_unstable();
    bases.dedup();
    bases
        .iter()
        .flat_map(|q| [q.to_string(), format!("{q}:scheduled")])
        .collect()
}

fn ago(secs: f64) -> String {
    duration::format(Duration::from_secs(secs.max(1.0) as u64))
}

/// At most this many projects are named on a line; the rest are counted.
const NAMED: usize = 5;

fn named(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > NAMED {
        s.push_str(&format!(" and {} more", list.len() - NAMED));
    }
    s
}

pub fn judge(f: &Facts, rules: &Rules) -> Findings {
    let mut out = Findings {
        status: QueueStatus {
            worker_group: f.ours.name.clone(),
            master_queue: f.ours.master_queue.clone(),
            ..QueueStatus::default()
        },
        ..Findings::default()
    };
    match f.routing {
        Ok(r) => routing(f.ours, r, &mut out),
        Err(why) => {
            out.lines
                .push(format!("where runs go: unknown this run ({why})"));
            out.status.routing_error = Some(why.to_string());
        }
    }
    match f.queues {
        Ok(depths) => queues(f, depths, rules, &mut out),
        Err(why) => {
            out.lines.push(format!(
                "waiting runs: unknown this run ({why}); the heartbeat decision stands"
            ));
            out.status.queues_error = Some(why.to_string());
        }
    }
    out
}

/// Routing alone (for `ops doctor`): the lines, and the failure when runs never reach `ours`.
pub fn judge_routing(ours: &WorkerGroup, r: &Routing) -> Findings {
    let mut out = Findings::default();
    routing(ours, r, &mut out);
    out
}

fn group_by_id<'a>(r: &'a Routing, id: &str) -> Option<&'a GroupRow> {
    r.groups.iter().find(|g| g.id == id)
}

fn routing(ours: &WorkerGroup, r: &Routing, out: &mut Findings) {
    let default = r.default_group_id.as_deref();
    let default_row = default.and_then(|id| group_by_id(r, id));
    let is_ours = |id: &str| !ours.id.is_empty() && id == ours.id;
    let default_is_ours = default.is_some_and(is_ours);
    let to_ours: Vec<String> = r
        .projects
        .iter()
        .filter(|p| is_ours(&p.group_id))
        .map(|p| p.slug.clone())
        .collect();
    let elsewhere: Vec<(String, String)> = r
        .projects
        .iter()
        .filter(|p| !is_ours(&p.group_id))
        .map(|p| {
            let group = group_by_id(r, &p.group_id)
                .map_or_else(|| format!("{} (missing)", p.group_id), |g| g.name.clone());
            (p.slug.clone(), group)
        })
        .collect();
    let ours_receives = default_is_ours || !to_ours.is_empty();
    out.lines.push(match (default, default_row) {
        (Some(_), Some(g)) if default_is_ours => format!(
            "runs go to worker group {:?} (queue {}, the global default): ours",
            g.name, g.master_queue
        ),
        (Some(_), Some(g)) => format!(
            "runs go to worker group {:?} (queue {}, the global default): not ours (ours is {:?})",
            g.name, g.master_queue, ours.name
        ),
        (Some(id), None) => format!(
            "the global default worker group {id} does not exist: deployed runs of projects without their own default cannot be routed"
        ),
        (None, _) => "no global default worker group (FeatureFlag defaultWorkerInstanceGroupId is unset): deployed runs of projects without their own default cannot be routed".into(),
    });
    if !to_ours.is_empty() {
        out.lines.push(format!(
            "projects routed to ours by their own default: {}",
            named(&to_ours)
        ));
    }
    if !elsewhere.is_empty() {
        let list: Vec<String> = elsewhere
            .iter()
            .map(|(p, g)| format!("{p} → {g}"))
            .collect();
        out.lines.push(format!(
            "projects routed elsewhere by their own default: {}",
            named(&list)
        ));
    }
    if !ours_receives {
        let goes = match default_row {
            Some(g) => format!("deployed runs go to {:?} (the global default)", g.name),
            None => "there is no usable global default".into(),
        };
        out.failures.push(format!(
            "runs never reach these supervisors: they serve worker group {:?} (queue {}), but {goes} and no project routes to {:?}. Make {:?} the global default (POST /admin/api/v1/feature-flags {{\"defaultWorkerInstanceGroupId\": \"{}\"}} with an admin token; ops does it itself for a group it creates), or give the supervisors the default group's token (TRIGGER_WORKER_TOKEN)",
            ours.name, ours.master_queue, ours.name, ours.name, ours.id
        ));
    }
    out.status.routing = Some(RoutingStatus {
        default_group: default_row.map(|g| g.name.clone()),
        default_queue: default_row.map(|g| g.master_queue.clone()),
        default_is_ours,
        ours_receives,
        projects_to_ours: to_ours,
        projects_elsewhere: elsewhere,
    });
}

/// The group a queue belongs to (its own queue or its `:scheduled` twin).
fn owner<'a>(groups: &'a [GroupRow], queue: &str) -> Option<&'a GroupRow> {
    groups.iter().find(|g| {
        queue == g.master_queue || queue.strip_suffix(":scheduled") == Some(g.master_queue.as_str())
    })
}

/// Our group's queue: its line, its row and its optional alert.
fn our_queue(
    f: &Facts,
    depths: &[QueueDepth],
    rules: &Rules,
    groups: &[GroupRow],
    out: &mut Findings,
) {
    let stale = rules.stale_after.as_secs_f64();
    let is_ours_queue = |q: &str| {
        q == f.ours.master_queue
            || q.strip_suffix(":scheduled") == Some(f.ours.master_queue.as_str())
    };
    let ours_depths: Vec<&QueueDepth> = depths.iter().filter(|d| is_ours_queue(&d.queue)).collect();
    let ours_oldest = ours_depths
        .iter()
        .map(|d| d.oldest_wait_secs)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let ours_pending: u64 = ours_depths.iter().map(|d| d.pending).sum();
    let ours_row = owner(groups, &f.ours.master_queue);
    out.status.oldest_pending_secs = ours_oldest;
    out.lines.push(format!(
        "worker group {:?} (queue {}): {}",
        f.ours.name,
        f.ours.master_queue,
        match ours_oldest {
            Some(secs) => format!(
                "{ours_pending} PENDING, oldest PENDING run waits for {}",
                duration::format(Duration::from_secs(secs.max(0.0) as u64))
            ),
            None => "no PENDING run".into(),
        }
    ));
    out.status.queues.push(QueueRow {
        queue: f.ours.master_queue.clone(),
        worker_group: f.ours.name.clone(),
        ours: true,
        pending: ours_pending,
        oldest_pending_secs: ours_oldest,
        served: ours_row.is_some_and(|g| g.heartbeat_age_secs.is_some_and(|a| a < stale)),
        last_heartbeat_secs: ours_row.and_then(|g| g.heartbeat_age_secs),
    });
    if let (Some(limit), Some(secs)) = (rules.queue_alert_after, ours_oldest) {
        if secs >= limit.as_secs_f64() {
            out.failures.push(format!(
                "runs are waiting: the oldest PENDING run in queue {} has waited {} (alert after {}); a concurrency limit can hold runs too, but check that the supervisors dequeue (docker compose logs supervisor)",
                f.ours.master_queue,
                duration::format(Duration::from_secs(secs as u64)),
                duration::format(limit)
            ));
        }
    }
}

fn queues(f: &Facts, depths: &[QueueDepth], rules: &Rules, out: &mut Findings) {
    let groups: &[GroupRow] = match f.routing {
        Ok(r) => &r.groups,
        Err(_) => &[],
    };
    let stale = rules.stale_after.as_secs_f64();
    let is_ours_queue = |q: &str| {
        q == f.ours.master_queue
            || q.strip_suffix(":scheduled") == Some(f.ours.master_queue.as_str())
    };
    // Ours first, always (a line and a metric even when nothing waits).
    our_queue(f, depths, rules, groups, out);
    for d in depths.iter().filter(|d| d.pending > 0) {
        let group = owner(groups, &d.queue);
        let age = group.and_then(|g| g.heartbeat_age_secs);
        let served = age.is_some_and(|a| a < stale);
        let ours = is_ours_queue(&d.queue);
        if !ours {
            out.status.queues.push(QueueRow {
                queue: d.queue.clone(),
                worker_group: group.map_or_else(|| "?".into(), |g| g.name.clone()),
                ours,
                pending: d.pending,
                oldest_pending_secs: Some(d.oldest_wait_secs),
                served,
                last_heartbeat_secs: age,
            });
        }
        if served {
            if !ours {
                out.lines.push(format!(
                    "queue {} (worker group {:?}): {} PENDING, oldest waits {}; served (last heartbeat {} ago)",
                    d.queue,
                    group.map_or("?", |g| g.name.as_str()),
                    d.pending,
                    ago(d.oldest_wait_secs),
                    ago(age.unwrap_or(0.0))
                ));
            }
            continue;
        }
        let heard = match age {
            Some(a) => format!("its last heartbeat was {} ago", ago(a)),
            None => "no supervisor ever heartbeated for it".into(),
        };
        let what = format!(
            "{} run(s) wait in queue {} (worker group {:?}), the oldest for {}, and no supervisor serves it: {heard}",
            d.pending,
            d.queue,
            group.map_or("?", |g| g.name.as_str()),
            ago(d.oldest_wait_secs)
        );
        match rules.orphan_alert_after {
            Some(limit) if d.oldest_wait_secs >= limit.as_secs_f64() => out.failures.push(format!(
                "orphaned queue: {what}. Runs already there stay there (Trigger.dev does not move them): serve it (a supervisor with that group's token) or cancel and replay them from the dashboard; see docs/runbook.md \"Supervisors healthy but runs wait\""
            )),
            Some(limit) => out.lines.push(format!(
                "orphaned queue: {what} (alert after {})",
                duration::format(limit)
            )),
            None => out.lines.push(format!("orphaned queue: {what}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::webapp_db::ProjectRoute;

    fn ours() -> WorkerGroup {
        WorkerGroup {
            id: "g-ours".into(),
            name: "ops".into(),
            master_queue: "ops-q".into(),
        }
    }

    fn group(id: &str, name: &str, queue: &str, age: Option<f64>) -> GroupRow {
        GroupRow {
            id: id.into(),
            name: name.into(),
            master_queue: queue.into(),
            managed: true,
            heartbeat_age_secs: age,
        }
    }

    fn routing(default: Option<&str>, projects: &[(&str, &str)]) -> Routing {
        Routing {
            default_group_id: default.map(str::to_string),
            projects: projects
                .iter()
                .map(|(slug, g)| ProjectRoute {
                    name: slug.to_string(),
                    slug: slug.to_string(),
                    group_id: g.to_string(),
                })
                .collect(),
            groups: vec![
                group("g-ours", "ops", "ops-q", Some(10.0)),
                group("g-boot", "bootstrap", "main", Some(7200.0)),
            ],
        }
    }

    const RULES: Rules = Rules {
        stale_after: Duration::from_secs(120),
        orphan_alert_after: Some(Duration::from_secs(300)),
        queue_alert_after: None,
    };

    fn depth(queue: &str, pending: u64, oldest: f64) -> QueueDepth {
        QueueDepth {
            queue: queue.into(),
            pending,
            oldest_wait_secs: oldest,
        }
    }

    fn run(r: &Routing, depths: &[QueueDepth]) -> Findings {
        let o = ours();
        judge(
            &Facts {
                ours: &o,
                routing: Ok(r),
                queues: Ok(depths),
            },
            &RULES,
        )
    }

    #[test]
    fn routing_table() {
        // (global default, project overrides) → does our group receive runs?
        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            (Some("g-ours"), &[], true),
            (Some("g-boot"), &[], false),
            (Some("g-boot"), &[("billing", "g-ours")], true),
            (Some("g-ours"), &[("legacy", "g-boot")], true),
            (None, &[], false),
            (Some("g-gone"), &[], false),
        ];
        for (default, projects, receives) in cases {
            let f = run(&routing(*default, projects), &[]);
            let seen = f.status.routing.clone().unwrap();
            assert_eq!(seen.ours_receives, *receives, "{default:?} {projects:?}");
            assert_eq!(
                f.failures
                    .iter()
                    .any(|l| l.starts_with("runs never reach these supervisors")),
                !receives,
                "{:?}",
                f.failures
            );
        }
        let f = run(&routing(Some("g-boot"), &[]), &[]);
        assert!(f.failures[0].contains("deployed runs go to \"bootstrap\" (the global default)"));
        assert!(f.failures[0].contains("{\"defaultWorkerInstanceGroupId\": \"g-ours\"}"));
        let f = run(&routing(Some("g-ours"), &[("legacy", "g-boot")]), &[]);
        assert!(f
            .lines
            .iter()
            .any(|l| l == "projects routed elsewhere by their own default: legacy → bootstrap"));
        assert_eq!(
            f.status.routing.unwrap().projects_elsewhere,
            [("legacy".to_string(), "bootstrap".to_string())]
        );
    }

    #[test]
    fn an_orphaned_queue_fails_past_the_threshold_and_names_count_wait_and_heartbeat() {
        let r = routing(Some("g-ours"), &[]);
        let f = run(&r, &[depth("main", 12, 1200.0)]);
        assert_eq!(f.failures.len(), 1, "{:?}", f.failures);
        assert!(f.failures[0].starts_with(
            "orphaned queue: 12 run(s) wait in queue main (worker group \"bootstrap\"), the oldest for 20m, and no supervisor serves it: its last heartbeat was 2h ago"
        ), "{}", f.failures[0]);
        let row = f.status.queues.iter().find(|q| q.queue == "main").unwrap();
        assert_eq!((row.pending, row.served), (12, false));
        // Younger than the threshold: a line, not a failure.
        let f = run(&r, &[depth("main", 1, 60.0)]);
        assert!(f.failures.is_empty());
        assert!(f.lines.iter().any(|l| l.contains("(alert after 5m)")));
        // Off: never a failure.
        let o = ours();
        let f = judge(
            &Facts {
                ours: &o,
                routing: Ok(&r),
                queues: Ok(&[depth("main", 3, 9000.0)]),
            },
            &Rules {
                orphan_alert_after: None,
                ..RULES
            },
        );
        assert!(f.failures.is_empty());
        // A served queue (a heartbeat within stale_after) is not orphaned; nor a scheduled twin.
        let mut served = r.clone();
        served.groups[1].heartbeat_age_secs = Some(20.0);
        let f = run(
            &served,
            &[depth("main", 3, 9000.0), depth("main:scheduled", 1, 9000.0)],
        );
        assert!(f.failures.is_empty(), "{:?}", f.failures);
        // A group whose supervisors never heartbeated.
        let mut never = r.clone();
        never.groups[1].heartbeat_age_secs = None;
        let f = run(&never, &[depth("main", 1, 600.0)]);
        assert!(f.failures[0].contains("no supervisor ever heartbeated for it"));
    }

    #[test]
    fn our_queue_is_always_listed_and_alerts_only_when_asked() {
        let r = routing(Some("g-ours"), &[]);
        let f = run(&r, &[]);
        assert_eq!(f.status.queues.len(), 1);
        assert_eq!(f.status.queues[0].pending, 0);
        assert!(f
            .lines
            .iter()
            .any(|l| l == "worker group \"ops\" (queue ops-q): no PENDING run"));
        let o = ours();
        let depths = [
            depth("ops-q", 2, 900.0),
            depth("ops-q:scheduled", 1, 1000.0),
        ];
        let f = judge(
            &Facts {
                ours: &o,
                routing: Ok(&r),
                queues: Ok(&depths),
            },
            &Rules {
                queue_alert_after: Some(Duration::from_secs(600)),
                ..RULES
            },
        );
        assert_eq!(f.status.oldest_pending_secs, Some(1000.0));
        assert_eq!(f.status.queues[0].pending, 3);
        assert!(f.failures[0]
            .starts_with("runs are waiting: the oldest PENDING run in queue ops-q has waited 16m"));
    }

    #[test]
    fn unknown_reads_are_lines_not_failures() {
        let o = ours();
        let f = judge(
            &Facts {
                ours: &o,
                routing: Err("no FeatureFlag table"),
                queues: Err("statement timeout"),
            },
            &RULES,
        );
        assert!(f.failures.is_empty());
        assert_eq!(f.status.queues_error.as_deref(), Some("statement timeout"));
        assert!(f
            .lines
            .iter()
            .any(|l| l.starts_with("waiting runs: unknown this run (statement timeout)")));
    }

    #[test]
    fn the_queues_read_are_every_managed_groups_and_their_scheduled_twins() {
        let mut r = routing(None, &[]);
        r.groups.push(GroupRow {
            managed: false,
            ..group("g-x", "dev", "dev-q", None)
        });
        assert_eq!(
            queues_to_read(&ours(), Some(&r)),
            ["main", "main:scheduled", "ops-q", "ops-q:scheduled"]
        );
        assert_eq!(queues_to_read(&ours(), None), ["ops-q", "ops-q:scheduled"]);
    }
}
