//! Human-readable tables for the terminal.

use crate::state::{EventRecord, RunRecord};
use crate::summary::{RunSummary, TaskSummary};
use crate::task::{past, ActionRecord};

/// Milliseconds as a person reads them (`crate::duration::format`).
pub fn fmt_ms(ms: u64) -> String {
    crate::duration::format(std::time::Duration::from_millis(ms))
}

/// Local time with its offset (`2026-12-02 07:23:00 +01:00`).
pub fn local_time(ms: i64) -> String {
    crate::timefmt::human_ms(ms)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn run_table(s: &RunSummary) -> String {
    let mode = if s.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let mut out = format!(
        "profile {}: {} in {}{mode}\n",
        s.profile,
        s.status,
        fmt_ms(s.duration_ms)
    );
    let tasks = s.tasks.iter().map(|t| {
        (
            t.name.as_str(),
            t.status.as_str(),
            t.duration_ms,
            t.detail.iter().map(String::as_str),
        )
    });
    let rows = task_rows(tasks);
    out.push_str(&table(&rows));
    if let Some(line) = &s.changes {
        out.push_str(line);
        out.push('\n');
    }
    let warnings: Vec<String> = s
        .tasks
        .iter()
        .flat_map(|t| t.warnings.iter().map(move |w| format!("  {}: {w}", t.name)))
        .collect();
    if !warnings.is_empty() {
        out.push_str("warnings:\n");
        for w in warnings {
            out.push_str(&w);
            out.push('\n');
        }
    }
    out
}

/// The run's changes in one line, like terraform's plan summary: `plan: create 1 droplet,
/// drain and delete 1 droplet, restart Postgres` for a dry run (`plan: no changes` when there
/// are none), `applied: created 1 droplet` for a real run (`None` when it changed nothing).
/// Actions are counted per verb and resource in the order first met; consecutive verbs on the
/// same objects share one entry (`drain and delete`).
pub fn changes_line(tasks: &[TaskSummary], dry_run: bool) -> Option<String> {
    let counted: Vec<&ActionRecord> = tasks
        .iter()
        .flat_map(|t| &t.actions)
        .filter(|a| if dry_run { a.is_planned() } else { a.done })
        .collect();
    if counted.is_empty() {
        return dry_run.then(|| "plan: no changes".to_string());
    }
    struct Group<'a> {
        verbs: Vec<&'a str>,
        resource: &'a str,
        countable: bool,
        objects: Vec<(Option<&'a str>, Option<&'a str>)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for a in &counted {
        let t = &a.typed;
        let object = (t.id.as_deref(), t.name.as_deref());
        match groups
            .iter_mut()
            .find(|g| g.verbs == [t.kind] && g.resource == t.resource)
        {
            Some(g) => g.objects.push(object),
            None => groups.push(Group {
                verbs: vec![t.kind],
                resource: t.resource,
                countable: t.countable,
                objects: vec![object],
            }),
        }
    }
    let mut merged: Vec<Group> = Vec::new();
    for g in groups {
        match merged.last_mut() {
            Some(m) if m.resource == g.resource && m.objects == g.objects => {
                m.verbs.extend(g.verbs)
            }
            _ => merged.push(g),
        }
    }
    let entries: Vec<String> = merged
        .iter()
        .map(|g| {
            let (resource, n) = (g.resource, g.objects.len());
            let verbs: Vec<String> = g
                .verbs
                .iter()
                .map(|v| if dry_run { v.to_string() } else { past(v) })
                .collect();
            let what = if g.countable {
                format!("{n} {resource}{}", if n == 1 { "" } else { "s" })
            } else {
                resource.to_string()
            };
            format!("{} {what}", verbs.join(" and "))
        })
        .collect();
    Some(format!(
        "{}: {}",
        if dry_run { "plan" } else { "applied" },
        entries.join(", ")
    ))
}

/// The TASK table: a task's first detail line beside it, the others below, indented.
fn task_rows<'a, L: Iterator<Item = &'a str>>(
    tasks: impl Iterator<Item = (&'a str, &'a str, u64, L)>,
) -> Vec<Vec<String>> {
    let mut rows = vec![["TASK", "STATUS", "DURATION", "DETAIL"]
        .map(String::from)
        .to_vec()];
    for (name, status, ms, mut lines) in tasks {
        rows.push(vec![
            name.to_string(),
            status.to_string(),
            fmt_ms(ms),
            lines.next().unwrap_or_default().to_string(),
        ]);
        rows.extend(lines.map(|l| {
            vec![
                String::new(),
                String::new(),
                String::new(),
                format!("  {l}"),
            ]
        }));
    }
    rows
}

/// `ops history show`: the run's facts, then each task with its whole detail.
pub fn run_detail(r: &RunRecord) -> String {
    let took = r
        .finished_at
        .map(|f| fmt_ms((f - r.started_at).max(0) as u64))
        .unwrap_or_else(|| "unfinished".into());
    let mut out = format!(
        "run {}: profile {}, {}{}\nstarted {} on {}, took {took}\n",
        r.id,
        r.profile,
        r.status,
        if r.dry_run { " (dry run)" } else { "" },
        local_time(r.started_at),
        r.host,
    );
    if !r.summary.is_empty() {
        out.push_str(&format!("{}\n", r.summary));
    }
    let rows = task_rows(r.tasks.iter().map(|t| {
        (
            t.task.as_str(),
            t.status.as_str(),
            t.duration_ms,
            t.detail.lines(),
        )
    }));
    out.push_str(&table(&rows));
    out
}

pub fn history_table(runs: &[RunRecord]) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "PROFILE".into(),
        "STARTED".into(),
        "DURATION".into(),
        "STATUS".into(),
        "TASKS".into(),
    ]];
    for r in runs {
        let duration = r
            .finished_at
            .map(|f| fmt_ms((f - r.started_at).max(0) as u64))
            .unwrap_or_else(|| "-".into());
        let tasks = if r.tasks.is_empty() {
            r.summary.clone()
        } else {
            r.tasks
                .iter()
                .map(|t| format!("{}:{}", t.task, t.status))
                .collect::<Vec<_>>()
                .join(" ")
        };
        rows.push(vec![
            r.id.to_string(),
            r.profile.clone(),
            local_time(r.started_at),
            duration,
            r.status.clone(),
            tasks,
        ]);
    }
    table(&rows)
}

pub fn events_table(events: &[EventRecord]) -> String {
    let mut rows = vec![vec![
        "TIME".to_string(),
        "PROFILE".into(),
        "TASK".into(),
        "KIND".into(),
        "WHAT".into(),
    ]];
    for e in events {
        rows.push(vec![
            local_time(e.at),
            e.profile.clone(),
            e.task.clone(),
            e.kind.clone(),
            format!(
                "{}{}",
                e.message,
                if e.announced_at.is_some() {
                    ""
                } else {
                    " (not announced yet)"
                }
            ),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{ActionType, Status};

    fn task(actions: Vec<ActionRecord>) -> TaskSummary {
        TaskSummary {
            name: "t".into(),
            kind: "supervisor".into(),
            status: Status::Planned,
            duration_ms: 1,
            summary: String::new(),
            detail: vec![],
            warnings: vec![],
            config_error: false,
            actions,
        }
    }

    #[test]
    fn the_changes_line() {
        let droplet = |verb| ActionType::counted(verb, "droplet").id(1);
        let planned = |t: ActionType| ActionRecord::planned(t, "x");
        let tasks = [
            task(vec![planned(
                ActionType::counted("create", "droplet").name("new"),
            )]),
            task(vec![
                planned(droplet("drain")),
                planned(droplet("delete")),
                planned(ActionType::named("restart", "Postgres")),
            ]),
        ];
        assert_eq!(
            changes_line(&tasks, true).unwrap(),
            "plan: create 1 droplet, drain and delete 1 droplet, restart Postgres"
        );
        let two = [task(vec![
            planned(droplet("create")),
            planned(droplet("create")),
        ])];
        assert_eq!(changes_line(&two, true).unwrap(), "plan: create 2 droplets");
        assert_eq!(changes_line(&[], true).unwrap(), "plan: no changes");
        assert_eq!(changes_line(&[], false), None);
        let done = [task(vec![
            ActionRecord::done(droplet("create"), "x", "done"),
            ActionRecord::not_done(droplet("delete"), "x", "already gone"),
            ActionRecord::done(ActionType::named("cache", "worker token"), "x", "done"),
        ])];
        assert_eq!(
            changes_line(&done, false).unwrap(),
            "applied: created 1 droplet, cached worker token"
        );
    }
}
