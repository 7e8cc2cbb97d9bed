//! Logs go to stderr through `log`, redacted. Under systemd (`JOURNAL_STREAM` set) lines carry
//! no timestamp of their own: the journal adds one.

use std::io::Write;

use crate::envfile::Env;
use crate::redact::redact;

pub fn init(env: &Env) {
    let filter = env
        .get("LOG_LEVEL")
        .or_else(|| env.get("RUST_LOG"))
        .unwrap_or("info")
        .to_ascii_lowercase();
    let journal = env.get("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter);
    builder.format(move |buf, record| {
        let msg = redact(&record.args().to_string());
        let level = record.level().as_str().to_ascii_lowercase();
        if journal {
            writeln!(buf, "{level}: {msg}")
        } else {
            let now = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
            writeln!(buf, "{now} {level}: {msg}")
        }
    });
    let _ = builder.try_init();
}
