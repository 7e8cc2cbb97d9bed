//! Secret hygiene: a `Secret` wrapper that never prints its value, and a process-wide list of
//! secret values scrubbed from every log line, error, summary and panic message.

use std::fmt;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Values shorter than this are not registered: redacting "1" or "true" would mangle output
/// without protecting anything.
const MIN_SECRET_LEN: usize = 6;

/// Known token shapes, scrubbed even when the value was never registered (e.g. a token found in
/// logs, or echoed back inside a library's error message).
const TOKEN_PREFIXES: &[&str] = &["tr_wgt_", "tr_pat_", "tr_dev_", "tr_prod_", "dop_v1_"];

pub const MASK: &str = "***";

/// Registers a secret value so that `redact` removes it from any text.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut list) = SECRETS.write() {
        if !list.iter().any(|s| s == value) {
            list.push(value.to_string());
            // Longest first so that a secret containing another is replaced whole.
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }
}

/// Redacts `text` whole, then cuts it to at most `max` bytes (on a character boundary) with a
/// `…`. In this order a secret cut in two can never leave its first part behind.
pub fn redact_and_cut(text: &str, max: usize) -> String {
    let mut out = redact(text);
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Returns `text` with every registered secret, known token shape and URL password masked.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(list) = SECRETS.read() {
        for secret in list.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
    }
    for prefix in TOKEN_PREFIXES {
        out = mask_after_prefix(&out, prefix);
    }
    mask_assignments(&mask_url_passwords(&out))
}

/// One line of output as every sink takes it (a log line, a task's report line, an event, an
/// alert, a metric's label): secrets masked, then every control character escaped. Whatever
/// ops read outside (DigitalOcean's names and tags, Railway's values, the webapp's rows, a
/// command's output) reaches the operator only through here, so none of it can start a line of
/// its own (`\n<0>` is an emergency in the journal), move a terminal's cursor or reorder text.
/// The one place that escapes; idempotent.
pub fn line(text: &str) -> String {
    escape_controls(&redact(text))
}

/// `\n`, `\r`, `\t` as such; any other control character, Unicode line or paragraph separator
/// or bidirectional override as `\u{…}`. A backslash stays as it is.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(unsafe_char) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether a variable's name says its value is a secret (`*TOKEN*`, `*SECRET*`, `*PASSWORD*`,
/// `*KEY*`). `SUPERVISOR_SSH_KEYS` holds public key ids, not secrets: masking those numbers
/// would only mangle droplet ids in output.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper != "SUPERVISOR_SSH_KEYS"
        && ["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY"]
            .iter()
            .any(|w| upper.contains(w))
}

/// `NAME=value` with an upper-case, secret-looking NAME (an env file's line, the supervisor's
/// `.env` in cloud-init, a command's output) → `NAME=***`, however short the value: registered
/// values shorter than `MIN_SECRET_LEN` are not scrubbed anywhere else. A placeholder in a
/// hint (`TRIGGER_WORKER_TOKEN=tr_wgt_…`) stays.
fn mask_assignments(text: &str) -> String {
    if !text.contains('=') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|p| p + i) {
        // The name: the upper-case run before `=` (ASCII, so byte arithmetic is safe).
        let start = eq
            - text[..eq]
                .bytes()
                .rev()
                .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
                .count();
        let name = &text[start..eq];
        let named = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && (start == 0 || !bytes[start - 1].is_ascii_alphanumeric())
            && looks_secret(name);
        let from = eq + 1 + usize::from(matches!(bytes.get(eq + 1), Some(b'"' | b'\'')));
        let end = value_end(text, from);
        let value = &text[from..end];
        if named && !value.is_empty() && value != MASK && !value.ends_with('…') {
            out.push_str(&text[copied..from]);
            out.push_str(MASK);
            copied = end;
        }
        i = end.max(eq + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a value ends: white space, a quote, or an escape of a quoted string (`\n`, `\"`).
fn value_end(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let mut j = from;
    while j < bytes.len() {
        match bytes[j] {
            b if b.is_ascii_whitespace() || b == b'"' || b == b'\'' => break,
            b'\\' if matches!(bytes.get(j + 1), Some(b'n' | b'r' | b't' | b'"' | b'\\')) => break,
            _ => j += 1,
        }
    }
    j
}

fn mask_after_prefix(text: &str, prefix: &str) -> String {
    if !text.contains(prefix) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(prefix) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + prefix.len()..];
        let len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        if len == 0 {
            out.push_str(prefix);
        } else {
            out.push_str(prefix);
            out.push_str(MASK);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn mask_url_passwords(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        out.push_str(&rest[..pos + 3]);
        let after = &rest[pos + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon + 1]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A secret value: Debug and Display print `***`; `expose` is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps and registers the value for redaction.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// A panic hook that redacts the message before printing it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        };
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "ops: internal error{location}: {} (please report this bug)",
            redact(&payload)
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_from_outside_never_breaks_into_two_and_escaping_twice_changes_nothing() {
        let evil = "drop\n<0>EMERGENCY\r\t\u{1b}[2J\u{202e}x\u{2028}y \\n kept";
        let once = line(evil);
        assert_eq!(
            once,
            "drop\\n<0>EMERGENCY\\r\\t\\u{1b}[2J\\u{202e}x\\u{2028}y \\n kept"
        );
        assert!(!once.chars().any(unsafe_char));
        assert_eq!(line(&once), once);
        assert_eq!(line("plain é ✓"), "plain é ✓");
    }

    #[test]
    fn secret_assignments_are_masked_by_name_whatever_their_length() {
        for (text, want) in [
            (
                "MANAGED_WORKER_SECRET=k9Zq2\nPORT=8020",
                "MANAGED_WORKER_SECRET=***\nPORT=8020",
            ),
            (
                "  DOCKER_REGISTRY_PASSWORD='ab'",
                "  DOCKER_REGISTRY_PASSWORD='***'",
            ),
            (
                "{\"content\": \"A_TOKEN=x1\\nB=2\"}",
                "{\"content\": \"A_TOKEN=***\\nB=2\"}",
            ),
            (
                "set TRIGGER_WORKER_TOKEN=tr_wgt_… there",
                "set TRIGGER_WORKER_TOKEN=tr_wgt_… there",
            ),
            ("SUPERVISOR_SSH_KEYS=123,456", "SUPERVISOR_SSH_KEYS=123,456"),
            ("token_hash=abc MY_KEY=", "token_hash=abc MY_KEY="),
            ("éMY_SECRET=é1 x=y", "éMY_SECRET=*** x=y"),
            ("a==b API_KEY==c", "a==b API_KEY=***"),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn registered_secrets_are_masked() {
        register("hunter2-very-secret");
        assert_eq!(redact("pw=hunter2-very-secret!"), "pw=***!");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("abc");
        assert_eq!(redact("abc"), "abc");
    }

    #[test]
    fn token_shapes_are_masked() {
        let t = "token tr_wgt_FakeDEF0123456789abcdef0123456789abcdef end";
        assert_eq!(redact(t), "token tr_wgt_*** end");
        assert_eq!(redact("Bearer dop_v1_abc123"), "Bearer dop_v1_***");
        assert_eq!(redact("prefix only tr_wgt_"), "prefix only tr_wgt_");
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            redact("postgresql://user:p4ss@db:5432/x?sslmode=require"),
            "postgresql://user:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact("http://host:80/path"), "http://host:80/path");
    }

    #[test]
    fn secret_debug_and_display_hide_value() {
        let s = Secret::new("abcdefgh-secret");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "abcdefgh-secret");
    }
}
