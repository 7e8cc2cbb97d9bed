#![no_main]
//! The env-file parser never panics; every variable it returns has a valid name.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(vars) = trigger_ops::envfile::parse(text) {
            for (k, _) in vars {
                assert!(!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            }
        }
    }
});
