#![no_main]
//! The log-token extractor, the banner reader and the redactor never panic, and redaction
//! removes every token they find.

use libfuzzer_sys::fuzz_target;
use trigger_ops::clients::railway::LogLine;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tokens = trigger_ops::tasks::extract::tokens_in(&text);
    let redacted = trigger_ops::redact::redact(&text);
    for t in tokens {
        assert!(t.starts_with("tr_wgt_") && t.len() > 7);
        assert!(!redacted.contains(t), "token survived redaction");
    }
    // Each line an entry (a split banner), and the whole text one entry.
    let mut logs: Vec<LogLine> = text
        .lines()
        .enumerate()
        .map(|(i, l)| LogLine {
            timestamp: format!("{i:08}"),
            message: l.to_string(),
        })
        .collect();
    logs.push(LogLine {
        timestamp: String::new(),
        message: text.to_string(),
    });
    for t in trigger_ops::tasks::extract::banner::tokens(&logs) {
        assert!(text.contains(&t) && !redacted.contains(&t));
    }
});
