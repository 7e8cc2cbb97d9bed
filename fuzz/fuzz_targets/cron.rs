#![no_main]
//! Cron parsing, next-run computation and OnCalendar rendering never panic; a rendered
//! OnCalendar only exists when day-of-month and day-of-week are not both restricted.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cron) = trigger_ops::schedule::Cron::parse(text) {
            let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
            if let Some(next) = cron.next_after(base) {
                assert!(next > base);
            }
            let _ = cron.on_calendar();
        }
    }
});
