#![no_main]
//! The jobs.yaml loader never panics, whatever the bytes; errors are one line.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = trigger_ops::config::JobsConfig::parse(text, "jobs.yaml") {
            let msg = format!("{e:#}");
            assert!(msg.starts_with("jobs.yaml"), "error without the file name: {msg}");
        }
    }
});
