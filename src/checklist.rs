//! The lines of `ops check` and `ops doctor`: ✓ passed, ✗ failed, ! warning, · note. Printed as
//! they come (doctor's checks take seconds), or with `--json` gathered into one document:
//! `{"schema_version", "command", "ok", "exit_code", "checks": [{"status", "message"}]}`.

use serde::Serialize;

use crate::exit::ExitCode;
use crate::redact::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Ok,
    Failed,
    Warning,
    Note,
    /// A continuation of the line before (doctor's routing failures, say).
    Detail,
}

impl Mark {
    fn glyph(self) -> &'static str {
        match self {
            Mark::Ok => "✓ ",
            Mark::Failed => "✗ ",
            Mark::Warning => "! ",
            Mark::Note => "· ",
            Mark::Detail => "  ",
        }
    }
}

#[derive(Debug, Serialize)]
struct Item {
    status: Mark,
    message: String,
}

pub struct Checklist {
    json: bool,
    items: Vec<Item>,
}

impl Checklist {
    pub fn new(json: bool) -> Checklist {
        Checklist {
            json,
            items: Vec::new(),
        }
    }

    pub fn add(&mut self, mark: Mark, message: impl AsRef<str>) {
        let message = redact(message.as_ref());
        if !self.json {
            println!("{}{message}", mark.glyph());
        }
        self.items.push(Item {
            status: mark,
            message,
        });
    }

    pub fn ok(&mut self, message: impl AsRef<str>) {
        self.add(Mark::Ok, message);
    }

    pub fn fail(&mut self, message: impl AsRef<str>) {
        self.add(Mark::Failed, message);
    }

    pub fn warn(&mut self, message: impl AsRef<str>) {
        self.add(Mark::Warning, message);
    }

    pub fn note(&mut self, message: impl AsRef<str>) {
        self.add(Mark::Note, message);
    }

    /// ✓ on `Ok`, ✗ on `Err`.
    pub fn line(&mut self, result: Result<String, String>) {
        match result {
            Ok(m) => self.ok(m),
            Err(m) => self.fail(m),
        }
    }

    pub fn failures(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.status == Mark::Failed)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.status == Mark::Warning)
            .count()
    }

    /// Ends the list with `code`: with `--json` the document is printed now.
    pub fn finish(self, command: &str, code: ExitCode) -> anyhow::Result<ExitCode> {
        if self.json {
            let doc = serde_json::json!({
                "schema_version": crate::summary::SCHEMA_VERSION,
                "command": command,
                "ok": code == ExitCode::Success,
                "exit_code": i32::from(code),
                "checks": self.items,
            });
            println!("{}", redact(&serde_json::to_string_pretty(&doc)?));
        }
        Ok(code)
    }
}
