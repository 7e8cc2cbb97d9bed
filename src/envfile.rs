//! The env file (`/etc/ops/ops.env`): `KEY=VALUE` lines, `#` comments, optional `export `,
//! single or double quotes (in double quotes `\"`, `\\`, `\n` and `\$` are escapes). `ops` is
//! its only reader (the systemd units carry no `EnvironmentFile=`), so a timer run and a manual
//! run over SSH see the same values. Variables already set in the process environment win, so a
//! one-off override still works. Values whose names look secret are registered for redaction.

use std::collections::BTreeMap;
use std::path::Path;

use crate::exit::config_error;

/// The merged environment `ops` reads its settings from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Entries that came from the env file and not the process environment; exec children get
    /// them too, so a task sees the same variables under systemd and over SSH.
    from_file: BTreeMap<String, String>,
    /// Said once logging is up (the env file configures logging, so it is read first).
    warnings: Vec<String>,
}

impl Env {
    /// The process environment merged over the env file's entries (process wins).
    pub fn load(env_file: Option<&Path>) -> anyhow::Result<Env> {
        let mut from_file = BTreeMap::new();
        let mut warnings = Vec::new();
        if let Some(path) = env_file {
            use std::os::unix::fs::MetadataExt;
            if let Ok(meta) = std::fs::metadata(path) {
                // /dev/null (an explicit "no env file") holds nothing to protect.
                if meta.is_file() && meta.mode() & 0o004 != 0 {
                    warnings.push(format!(
                        "{} is readable by every user on this host (mode {:o}) and holds secrets: run chmod 640 {} (owner root, group ops)",
                        path.display(),
                        meta.mode() & 0o777,
                        path.display()
                    ));
                }
            }
            for (key, value) in parse_file(path)? {
                if looks_secret(&key) {
                    crate::redact::register(&value);
                }
                if let Some(password) = url_password(&value) {
                    crate::redact::register(password);
                }
                if std::env::var_os(&key).is_none() {
                    from_file.insert(key, value);
                }
            }
        }
        let mut vars = from_file.clone();
        for (key, value) in std::env::vars_os() {
            if let (Some(k), Some(v)) = (key.to_str(), value.to_str()) {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        Ok(Env {
            vars,
            from_file,
            warnings,
        })
    }

    /// Problems noticed while loading, for the log once it is set up.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            from_file: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    pub fn file_vars(&self) -> &BTreeMap<String, String> {
        &self.from_file
    }

    /// The value of `key` as it is (process environment, then the env file).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// The value of `key`, with empty or whitespace-only values treated as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

pub use crate::redact::looks_secret;

/// The password of a `scheme://user:password@host…` value.
fn url_password(value: &str) -> Option<&str> {
    let rest = value.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// Parses an env file. A line that is not `KEY=VALUE` is a config error naming file and line.
pub fn parse_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let bytes = std::fs::read(path).map_err(|e| {
        config_error(format!(
            "{}: cannot read env file: {e} (fix the path given by --env-file or OPS_ENV_FILE)",
            path.display()
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        config_error(format!(
            "{}: env file is not valid UTF-8 (save it as UTF-8)",
            path.display()
        ))
    })?;
    parse(&text).map_err(|(line, msg)| config_error(format!("{}:{line}: {msg}", path.display())))
}

/// Parses env-file text; errors carry the 1-based line number.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((
                lineno,
                "expected NAME=value (comment the line out with # if it is not a variable)".into(),
            ));
        };
        let key = key.trim();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err((
                lineno,
                format!("invalid variable name {key:?} (use letters, digits and _)"),
            ));
        }
        out.push((
            key.to_string(),
            unquote(value.trim()).map_err(|m| (lineno, m))?,
        ));
    }
    Ok(out)
}

fn unquote(value: &str) -> Result<String, String> {
    if let Some(inner) = value.strip_prefix('"') {
        // Double quotes: backslash escapes, closed by the first unescaped quote.
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    let tail = inner[i + 1..].trim();
                    if !tail.is_empty() && !tail.starts_with('#') {
                        return Err("unexpected text after the closing quote".into());
                    }
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated \" quote (close the quote)".into());
    }
    if let Some(inner) = value.strip_prefix('\'') {
        let Some(end) = inner.find('\'') else {
            return Err("unterminated ' quote (close the quote)".into());
        };
        let tail = inner[end + 1..].trim();
        if !tail.is_empty() && !tail.starts_with('#') {
            return Err("unexpected text after the closing quote".into());
        }
        return Ok(inner[..end].to_string());
    }
    // Unquoted: a ` #` starts an inline comment.
    let value = match value.find(" #") {
        Some(pos) => value[..pos].trim_end(),
        None => value,
    };
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let text =
            "# comment\nA=1\nexport B=two\nC=\"quoted # not comment\"\nD='single'\nE=x # c\nF=\n";
        let got = parse(text).unwrap();
        let want = [
            ("A", "1"),
            ("B", "two"),
            ("C", "quoted # not comment"),
            ("D", "single"),
            ("E", "x"),
            ("F", ""),
        ];
        assert_eq!(got.len(), want.len());
        for ((k, v), (wk, wv)) in got.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_str()), (wk, wv));
        }
    }

    #[test]
    fn escaped_quotes_and_backslashes_in_double_quotes() {
        let got = parse("A=\"x\\\"y\"\nB=\"a\\\\b\" # c\nC=\"p\\$q\"\nD='x\\\"y'\n").unwrap();
        let values: Vec<&str> = got.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["x\"y", "a\\b", "p$q", "x\\\"y"]);
        assert!(
            parse("A=\"x\\\"").is_err(),
            "an escaped quote does not close"
        );
    }

    #[test]
    fn secret_looking_names_and_url_passwords() {
        for name in ["RAILWAY_API_TOKEN", "MY_SECRET", "PGPASSWORD", "API_KEY"] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["SUPERVISOR_SSH_KEYS", "RUST_LOG", "TRIGGER_VERSION"] {
            assert!(!looks_secret(name), "{name}");
        }
        assert_eq!(
            url_password("postgres://u:s3cr3t-pw@db:5432/x"),
            Some("s3cr3t-pw")
        );
        assert_eq!(url_password("https://example.com/a:b@c"), None);
        assert_eq!(url_password("plain"), None);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("A=1\nnot a var\n").unwrap_err().0, 2);
        assert_eq!(parse("A=\"open\n").unwrap_err().0, 1);
        assert_eq!(parse("1A=x").unwrap_err().0, 1);
    }

    #[test]
    fn empty_values_are_unset() {
        let env = Env::from_pairs([("A", " "), ("B", "x")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("x"));
    }
}

/// Every variable ops itself reads (the env file may hold others, for exec tasks).
pub const KNOWN_VARS: &[&str] = &[
    "AUTO_DISABLE",
    "CHECK_INTERVAL",
    "DATABASE_URL",
    "DB_SERVICE_NAME",
    "DIGITALOCEAN_API_URL",
    "DIGITALOCEAN_TOKEN",
    "HEALTHY_CYCLES_BEFORE_DISABLE",
    "IS_ACTIVE",
    "LOG_LEVEL",
    "OPS_AS_ROOT",
    "OPS_CONFIG",
    "OPS_ENV_FILE",
    "OPS_LOCK",
    "OPS_LOCK_DATABASE_URL",
    "OPS_STATE_DIR",
    "OPS_WEBHOOK_FORMAT",
    "OPS_WEBHOOK_URL",
    "RAILWAY_API_TOKEN",
    "RAILWAY_API_URL",
    "RAILWAY_ENVIRONMENT_ID",
    "RAILWAY_PROJECT_ID",
    "RAILWAY_TOKEN",
    "REGISTRY_SERVICE_NAME",
    "RUST_LOG",
    "SUPERVISOR_COUNT",
    "SUPERVISOR_DOCKER_PROXY_IMAGE",
    "SUPERVISOR_HEALTH_SOURCES",
    "SUPERVISOR_IMAGE",
    "SUPERVISOR_REGION",
    "SUPERVISOR_SIZE",
    "SUPERVISOR_SSH_KEYS",
    "SUPERVISOR_SSH_SOURCES",
    "TELEGRAM_API_URL",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "TELEGRAM_TEST_CHAT_ID",
    "TELEGRAM_TOPIC_ID",
    "TRIGGER_ADMIN_TOKEN",
    "TRIGGER_VERSION",
    "TRIGGER_WORKER_TOKEN",
    "WEBAPP_SERVICE_NAME",
    "WORKER_GROUP_NAME",
];

/// Names that are not ops's but within two edits of one (`SUPERVISR_COUNT` →
/// `SUPERVISOR_COUNT`): a typo ops would otherwise ignore without a word. Other names are
/// left alone (exec tasks read their own).
pub fn near_misses<'a>(
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<(&'a str, &'static str)> {
    names
        .into_iter()
        .filter(|n| !KNOWN_VARS.contains(&n.as_str()))
        .filter_map(|n| {
            KNOWN_VARS
                .iter()
                .map(|k| (edits(&n.to_ascii_uppercase(), k), *k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| (n.as_str(), k))
        })
        .collect()
}

/// A name set for ops that it does not read: a typo of one of its settings (`suggestion`), or a
/// name with one of its prefixes that no setting has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    /// `the env file` or `the process environment`.
    pub source: &'static str,
    pub suggestion: Option<&'static str>,
}

impl Unknown {
    pub fn message(&self) -> String {
        match self.suggestion {
            Some(known) => format!(
                "{} in {} is not a setting ops reads, so it is ignored: did you mean {known}?",
                self.name, self.source
            ),
            None => format!(
                "{} in {} is not a setting ops reads, so it is ignored (see docs/configuration.md)",
                self.name, self.source
            ),
        }
    }
}

/// The prefixes of ops' own settings: another name with one of them is a mistake, wherever it
/// is set.
const OWN_PREFIXES: [&str; 3] = ["SUPERVISOR_", "OPS_", "TRIGGER_"];

/// Names in the env file or the process environment that look meant for ops but that it does
/// not read: typos of its settings (both sources) and unknown names with its prefixes. Other
/// names are left alone (exec tasks read their own).
pub fn unknown_names(env: &Env) -> Vec<Unknown> {
    let suggest: BTreeMap<&str, &'static str> = near_misses(env.vars.keys()).into_iter().collect();
    env.vars
        .keys()
        .filter(|n| !KNOWN_VARS.contains(&n.as_str()))
        .filter_map(|n| {
            let suggestion = suggest.get(n.as_str()).copied();
            let own = OWN_PREFIXES.iter().any(|p| n.starts_with(p));
            (suggestion.is_some() || own).then(|| Unknown {
                name: n.clone(),
                source: if env.from_file.contains_key(n) {
                    "the env file"
                } else {
                    "the process environment"
                },
                suggestion,
            })
        })
        .collect()
}

/// The candidate nearest to `want` (at most a third of its length away, and never `want`
/// itself): DigitalOcean's slug for a mistyped `SUPERVISOR_IMAGE`, say.
pub fn nearest<'a>(want: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != want)
        .map(|c| (edits(want, c), c))
        .filter(|(d, _)| *d <= (want.chars().count() / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions).
pub(crate) fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod known_names_tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_other_names_none() {
        let names: Vec<String> = [
            "SUPERVISR_COUNT",
            "supervisor_size",
            "MY_APP_SETTING",
            "SUPERVISOR_COUNT",
            "DATABSE_URL",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            near_misses(&names),
            [
                ("SUPERVISR_COUNT", "SUPERVISOR_COUNT"),
                ("supervisor_size", "SUPERVISOR_SIZE"),
                ("DATABSE_URL", "DATABASE_URL")
            ]
        );
        assert_eq!(edits("kitten", "sitting"), 3);
        let slugs = ["ubuntu-24-04-x64", "ubuntu-22-04-x64", "debian-12-x64"];
        assert_eq!(nearest("ubuntu-24-04-x46", slugs), Some("ubuntu-24-04-x64"));
        assert_eq!(nearest("ubuntu-24-04-x64", ["ubuntu-24-04-x64"]), None);
        assert_eq!(nearest("windows", slugs), None);
    }

    #[test]
    fn unknown_names_in_the_file_and_the_process_environment() {
        let mut env = Env::from_pairs([
            ("SUPERVISOR_FLAVOUR", "x"),
            ("TRIGGER_VERSION", "v4.5.12"),
            ("MY_APP_SETTING", "x"),
            ("PATH", "/bin"),
        ]);
        env.from_file.insert("SUPERVISR_COUNT".into(), "2".into());
        env.vars.insert("SUPERVISR_COUNT".into(), "2".into());
        let found = unknown_names(&env);
        assert_eq!(
            found,
            [
                Unknown {
                    name: "SUPERVISOR_FLAVOUR".into(),
                    source: "the process environment",
                    suggestion: None,
                },
                Unknown {
                    name: "SUPERVISR_COUNT".into(),
                    source: "the env file",
                    suggestion: Some("SUPERVISOR_COUNT"),
                },
            ]
        );
        assert!(found[1]
            .message()
            .contains("did you mean SUPERVISOR_COUNT?"));
    }

    /// Every variable the example env file and the configuration reference name is known.
    #[test]
    fn the_documented_variables_are_known() {
        let root = env!("CARGO_MANIFEST_DIR");
        for file in ["deploy/ops.env.example", "docs/configuration.md"] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            for line in text.lines() {
                let line = line.trim_start_matches(['#', ' ', '|', '`']);
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let rest = &line[name.len()..];
                let is_var = name.len() > 3
                    && name.contains('_')
                    && (rest.starts_with('=') || (file.ends_with(".md") && rest.starts_with('`')));
                if is_var {
                    assert!(
                        KNOWN_VARS.contains(&name.as_str()),
                        "{file} names {name}, which envfile::KNOWN_VARS lacks"
                    );
                }
            }
        }
    }
}
