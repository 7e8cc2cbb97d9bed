//! Human-readable tables for the terminal.

use crate::state::RunRecord;
use crate::summary::RunSummary;

pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

pub fn local_time(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
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
    let mut rows = vec![vec![
        "TASK".to_string(),
        "STATUS".into(),
        "DURATION".into(),
        "DETAIL".into(),
    ]];
    for t in &s.tasks {
        let mut lines = t.detail.iter();
        rows.push(vec![
            t.name.clone(),
            t.status.as_str().into(),
            fmt_ms(t.duration_ms),
            lines.next().cloned().unwrap_or_default(),
        ]);
        for more in lines {
            rows.push(vec![
                String::new(),
                String::new(),
                String::new(),
                format!("  {more}"),
            ]);
        }
    }
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
