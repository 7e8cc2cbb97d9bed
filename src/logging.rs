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
    // The HTTP, TLS and Postgres libraries dump raw bytes at trace (request heads as 16-byte
    // rows): a token split across rows escapes redaction. They never log below debug here,
    // whatever LOG_LEVEL or RUST_LOG say.
    for target in CAPPED {
        if level_for(&filter, target) > log::LevelFilter::Debug {
            builder.filter_module(target, log::LevelFilter::Debug);
        }
    }
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

/// Libraries whose trace output is raw protocol bytes.
const CAPPED: [&str; 7] = [
    "ureq",
    "ureq_proto",
    "rustls",
    "tokio_postgres",
    "postgres",
    "tokio_postgres_rustls",
    "tiny_http",
];

/// The level an env_logger filter string gives `target`: the directive for its longest
/// matching module prefix, else the bare level, else `error` (env_logger's default).
fn level_for(filter: &str, target: &str) -> log::LevelFilter {
    let mut best: Option<(usize, log::LevelFilter)> = None;
    let mut default = None;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let directive = directive.split('/').next().unwrap_or(directive);
        match directive.split_once('=') {
            Some((module, level)) => {
                let matches = target == module || target.starts_with(&format!("{module}::"));
                if matches && best.is_none_or(|(len, _)| module.len() > len) {
                    best = Some((
                        module.len(),
                        level.parse().unwrap_or(log::LevelFilter::Trace),
                    ));
                }
            }
            None => match directive.parse::<log::LevelFilter>() {
                Ok(level) => default = Some(level),
                // A bare module name means "everything" for it.
                Err(_) => {
                    if target == directive || target.starts_with(&format!("{directive}::")) {
                        best = Some((directive.len(), log::LevelFilter::Trace));
                    }
                }
            },
        }
    }
    best.map(|(_, l)| l)
        .or(default)
        .unwrap_or(log::LevelFilter::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::LevelFilter::*;

    #[test]
    fn the_level_a_filter_gives_a_target() {
        assert_eq!(level_for("trace", "ureq"), Trace);
        assert_eq!(level_for("info", "ureq"), Info);
        assert_eq!(level_for("info,ureq=trace", "ureq_proto"), Info);
        assert_eq!(level_for("info,ureq=trace", "ureq"), Trace);
        assert_eq!(level_for("debug,rustls", "rustls"), Trace);
        assert_eq!(
            level_for("warn,tokio_postgres=info", "tokio_postgres"),
            Info
        );
        assert_eq!(level_for("", "ureq"), Error);
    }
}
