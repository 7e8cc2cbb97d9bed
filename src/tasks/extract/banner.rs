//! The worker token as the webapp's bootstrap prints it, once, at the boot that creates the
//! worker group: the line right after `Token:` in its banner. Any other `tr_wgt_` string in
//! the logs (an error that echoes a header, a line anyone can make the webapp log) is not a
//! candidate. The banner is one `console.log`: a log backend keeps it as one message or splits
//! it into one entry per line, and a search for `tr_wgt_` (deployment logs) drops the `Token:`
//! entry, leaving the token's entry followed by the banner's `TRIGGER_WORKER_TOKEN=` line.

use crate::clients::railway::LogLine;
use crate::settings::is_worker_token;

const LABEL: &str = "Token:";
const COMPOSE: &str = "TRIGGER_WORKER_TOKEN=";

/// The banner tokens of `logs` (any order), newest first, each once.
pub fn tokens(logs: &[LogLine]) -> Vec<String> {
    let mut sorted: Vec<&LogLine> = logs.iter().collect();
    // Stable: equal timestamps keep their arrival order.
    sorted.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    let entries: Vec<&str> = sorted.iter().map(|l| l.message.as_str()).collect();
    let mut hits: Vec<&str> = Vec::new();
    for (i, message) in entries.iter().enumerate() {
        let lines: Vec<&str> = message.lines().map(str::trim).collect();
        for (j, line) in lines.iter().enumerate() {
            if !is_worker_token(line) {
                continue;
            }
            let before = match j {
                0 => i.checked_sub(1).and_then(|k| entries[k].lines().last()),
                _ => Some(lines[j - 1]),
            };
            let after_entry = (j + 1 == lines.len())
                .then(|| entries.get(i + 1).and_then(|m| m.lines().next()))
                .flatten();
            let after = lines.get(j + 1).copied().or(after_entry);
            let labelled = before.is_some_and(|b| b.trim() == LABEL);
            // A split banner searched for `tr_wgt_`: the token alone, then its compose line.
            let split = lines.len() == 1
                && after.is_some_and(|a| a.trim().strip_prefix(COMPOSE) == Some(line));
            if labelled || split {
                hits.push(line);
            }
        }
    }
    let mut newest_first: Vec<String> = Vec::new();
    for t in hits.into_iter().rev() {
        if !newest_first.iter().any(|f| f == t) {
            newest_first.push(t.to_string());
        }
    }
    newest_first
}

/// Every `tr_wgt_…` token in `text`, in order.
pub fn tokens_in(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find("tr_wgt_") {
        let start = from + pos;
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let body = start + "tr_wgt_".len();
        let end = text[body..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map(|e| body + e)
            .unwrap_or(text.len());
        if before_ok && end > body {
            out.push(&text[start..end]);
        }
        from = end.max(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(ts: &str, m: &str) -> LogLine {
        LogLine {
            timestamp: ts.into(),
            message: m.into(),
        }
    }

    const REAL: &str = "tr_wgt_Real0123456789";
    const PLANTED: &str = "tr_wgt_Planted0123456789";

    fn banner(token: &str) -> String {
        format!("==========================\nTrigger.dev Bootstrap - Worker Token\nWARNING: This will only be shown once. Save it now!\nWorker group:\nbootstrap\nToken:\n{token}\nIf using docker compose, set:\nTRIGGER_WORKER_TOKEN={token}\n==========================")
    }

    #[test]
    fn only_the_line_after_token_counts() {
        let logs = [
            log("2026-10-01T10:00:05Z", &banner(REAL)),
            log(
                "2026-10-02T10:00:00Z",
                &format!("auth failed for Bearer {PLANTED}"),
            ),
            log(
                "2026-10-03T10:00:00Z",
                &format!("TRIGGER_WORKER_TOKEN={PLANTED}"),
            ),
            log("2026-10-04T10:00:00Z", PLANTED),
        ];
        assert_eq!(tokens(&logs), [REAL]);
    }

    #[test]
    fn a_banner_split_into_entries_counts_with_or_without_its_label() {
        let lines: Vec<String> = banner(REAL).lines().map(str::to_string).collect();
        let split: Vec<LogLine> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| log(&format!("2026-10-01T10:00:{i:02}Z"), l))
            .collect();
        assert_eq!(tokens(&split), [REAL]);
        // What a search for `tr_wgt_` returns of it.
        let searched: Vec<LogLine> = split
            .into_iter()
            .filter(|l| l.message.contains("tr_wgt_"))
            .collect();
        assert_eq!(searched.len(), 2);
        assert_eq!(tokens(&searched), [REAL]);
    }

    #[test]
    fn newest_banner_first_each_token_once() {
        let logs = [
            log("2026-11-01T00:00:00Z", &banner(PLANTED)),
            log("2026-10-01T00:00:00Z", &banner(REAL)),
            log("2026-09-01T00:00:00Z", &banner(REAL)),
        ];
        assert_eq!(tokens(&logs), [PLANTED, REAL]);
        assert!(tokens(&[]).is_empty());
    }
}
