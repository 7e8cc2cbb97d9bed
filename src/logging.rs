//! Logs go to stderr through `log`, redacted. Under systemd (`JOURNAL_STREAM` set) lines carry
//! no timestamp of their own (the journal adds one) and start with the kernel-style priority
//! prefix `sd-daemon(3)` describes (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), so
//! `journalctl -p err` finds the errors.

use std::io::Write;

use crate::envfile::Env;
use crate::redact::line;

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
        let msg = line(&record.args().to_string());
        let level = record.level().as_str().to_ascii_lowercase();
        if journal {
            writeln!(buf, "{}{level}: {msg}", priority(record.level()))
        } else {
            let now = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
            writeln!(buf, "{now} {level}: {msg}")
        }
    });
    let _ = builder.try_init();
}

/// The syslog priority prefix journald reads from a stream line (`SyslogLevelPrefix=`).
fn priority(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

/// Whether stdout is the journal: `JOURNAL_STREAM` names the `device:inode` of the stream
/// systemd connected (systemd.exec(5)); a terminal or a pipe the operator opened does not
/// match. Then `ops run` logs its summary instead of printing the table every minute.
pub fn stdout_is_journal(env: &Env) -> bool {
    let Some((dev, ino)) = env.get("JOURNAL_STREAM").and_then(|v| v.split_once(':')) else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
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
    fn journal_priorities() {
        assert_eq!(priority(log::Level::Error), "<3>");
        assert_eq!(priority(log::Level::Warn), "<4>");
        assert_eq!(priority(log::Level::Info), "<6>");
        assert!(!stdout_is_journal(&Env::from_pairs([(
            "JOURNAL_STREAM",
            "1:1"
        )])));
        assert!(!stdout_is_journal(&Env::from_pairs([("A", "b")])));
    }

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
