#![no_main]
//! The log-token extractor and the redactor never panic, and redaction removes every token the
//! extractor finds.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tokens = trigger_ops::tasks::extract::tokens_in(&text);
    let redacted = trigger_ops::redact::redact(&text);
    for t in tokens {
        assert!(t.starts_with("tr_wgt_") && t.len() > 7);
        assert!(!redacted.contains(t), "token survived redaction");
    }
});
