//! An alert's text, cut to fit each channel and shaped the way each channel expects. Pure: no IO.
//!
//! Limits are counted the way the channels count them: Telegram's 4096 and Discord's 2000 are
//! UTF-16 code units (an emoji outside the BMP is two), Slack's `text` 40,000 characters (counted
//! here in UTF-16 units too, which is never fewer). A digest that does not fit keeps its headline
//! and the first lines of every failed task, and ends with a pointer to `ops history`.

/// Where an alert goes, and what that channel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Telegram,
    /// `OPS_WEBHOOK_FORMAT=json`: today's body, `text` plus structured fields.
    Json,
    /// Slack (and Mattermost) incoming webhooks: `text`, with `&`, `<`, `>` escaped.
    Slack,
    /// Discord webhooks: `content` of at most 2000, mentions never parsed.
    Discord,
}

impl Channel {
    /// The most text one message may carry, in UTF-16 code units.
    pub fn limit(self) -> usize {
        match self {
            Channel::Telegram => 4096,
            Channel::Discord => 2000,
            Channel::Slack | Channel::Json => 40_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Channel::Telegram => "telegram",
            Channel::Json => "json",
            Channel::Slack => "slack",
            Channel::Discord => "discord",
        }
    }

    /// `OPS_WEBHOOK_FORMAT` when set, else from the URL's host.
    pub fn for_webhook(format: Option<&str>, url: &str) -> Result<Channel, String> {
        match format.map(|f| f.trim().to_ascii_lowercase()).as_deref() {
            Some("json") => Ok(Channel::Json),
            Some("slack") => Ok(Channel::Slack),
            Some("discord") => Ok(Channel::Discord),
            Some(other) => Err(format!(
                "OPS_WEBHOOK_FORMAT={other:?}: use json, slack or discord (or leave it unset to choose by the URL's host)"
            )),
            None => Ok(match host(url).as_deref() {
                Some("hooks.slack.com") => Channel::Slack,
                Some(h)
                    if ["discord.com", "discordapp.com"]
                        .iter()
                        .any(|d| h == *d || h.ends_with(&format!(".{d}"))) =>
                {
                    Channel::Discord
                }
                _ => Channel::Json,
            }),
        }
    }
}

fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    Some(host.to_ascii_lowercase())
}

/// Text length as Telegram and Discord count it.
pub fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The longest prefix of `s` within `max` UTF-16 units, never splitting a character.
pub fn cut(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > max {
            return &s[..i];
        }
    }
    s
}

/// One failed task's part of a digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    pub lines: Vec<String>,
}

/// An alert before it is fitted to a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub headline: String,
    pub sections: Vec<Section>,
    /// The profile, for the pointer to `ops history`.
    pub profile: String,
}

/// A line of task output longer than this is cut (the whole line is in `ops history`).
const LINE_MAX: usize = 400;

impl Digest {
    /// The whole digest when it fits in `limit`; else the headline and, round by round, the
    /// next line of every task while they fit, then "… N more lines: `ops history --profile P`".
    pub fn render(&self, limit: usize) -> String {
        let lines: Vec<Vec<String>> = self
            .sections
            .iter()
            .map(|s| s.lines.iter().map(|l| shorten(l)).collect())
            .collect();
        let total: usize = lines.iter().map(Vec::len).sum();
        let footer = |n: usize| {
            format!(
                "… {n} more line{}: `ops history --profile {}`",
                if n == 1 { "" } else { "s" },
                self.profile
            )
        };
        let line_cost = |l: &str| units(l) + 5; // "    " + "\n"
        let mut used = units(&self.headline) + 1;
        // Titles first, as many as fit with room for the footer.
        let reserve = units(&footer(total.max(1))) + 1;
        let mut shown_sections = 0;
        for s in &self.sections {
            let cost = units(&s.title) + 1;
            if used + cost + reserve > limit {
                break;
            }
            used += cost;
            shown_sections += 1;
        }
        let mut counts = vec![0usize; shown_sections];
        let mut room = true;
        while room {
            room = false;
            for (i, n) in counts.iter_mut().enumerate() {
                let Some(l) = lines[i].get(*n) else { continue };
                let cost = line_cost(l);
                if used + cost + reserve <= limit {
                    used += cost;
                    *n += 1;
                    room = true;
                }
            }
        }
        let shown: usize = counts.iter().sum();
        let mut out = self.headline.clone();
        out.push('\n');
        for (i, s) in self.sections.iter().take(shown_sections).enumerate() {
            out.push_str(&s.title);
            out.push('\n');
            for l in &lines[i][..counts[i]] {
                out.push_str("    ");
                out.push_str(l);
                out.push('\n');
            }
        }
        let hidden_sections = self.sections.len() - shown_sections;
        if shown < total || hidden_sections > 0 {
            if hidden_sections > 0 {
                out.push_str(&format!("… and {hidden_sections} more failed task(s)\n"));
            }
            out.push_str(&footer(total - shown));
        }
        let out = out.trim_end().to_string();
        // Whatever happened above, never more than the channel takes.
        cut(&out, limit).to_string()
    }
}

/// A line cut to `LINE_MAX` UTF-16 units, marked with "…" where cut. Lines say the problem,
/// then the fix in their last sentence: a long line keeps that last sentence whole (when it is
/// not most of the line) and cuts the middle.
pub fn shorten(line: &str) -> String {
    if units(line) <= LINE_MAX {
        return line.to_string();
    }
    if let Some(at) = line.rfind(". ") {
        let fix = &line[at + 2..];
        let room = LINE_MAX.saturating_sub(units(fix) + 2);
        if room >= LINE_MAX / 4 {
            return format!("{}… {fix}", cut(&line[..at + 1], room));
        }
    }
    format!("{}…", cut(line, LINE_MAX - 1))
}

/// Slack's three control characters, escaped as its API asks; `<!channel>` and friends can
/// then never appear, so task output mentions nobody.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Telegram turns `@name` into a mention: a word joiner after `@` keeps the text readable and
/// mentions nobody.
pub fn telegram_defuse(s: &str) -> String {
    s.replace('@', "@\u{2060}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(tasks: usize, lines: usize, line: &str) -> Digest {
        Digest {
            headline: "🔴 ops: profile p failed on host at 12:00".into(),
            sections: (0..tasks)
                .map(|t| Section {
                    title: format!("• task{t} (exec)"),
                    lines: (0..lines).map(|l| format!("{t}.{l} {line}")).collect(),
                })
                .collect(),
            profile: "p".into(),
        }
    }

    #[test]
    fn a_digest_that_fits_is_whole() {
        let d = digest(2, 3, "short");
        let text = d.render(4096);
        assert!(!text.contains("more line"));
        assert_eq!(text.lines().count(), 1 + 2 * 4);
    }

    #[test]
    fn six_tasks_of_ten_long_lines_fit_each_limit_with_every_task_and_the_pointer() {
        let d = digest(6, 10, &"x".repeat(700));
        for channel in [Channel::Telegram, Channel::Discord, Channel::Slack] {
            let text = d.render(channel.limit());
            assert!(
                units(&text) <= channel.limit(),
                "{channel:?}: {}",
                units(&text)
            );
            if channel != Channel::Slack {
                assert!(
                    text.ends_with("more lines: `ops history --profile p`"),
                    "{text}"
                );
            }
            for t in 0..6 {
                assert!(
                    text.contains(&format!("• task{t} (exec)")),
                    "{channel:?} lost task{t}"
                );
            }
        }
        // Telegram gets the first line of every task before any second line.
        let text = d.render(Channel::Telegram.limit());
        for t in 0..6 {
            assert!(text.contains(&format!("{t}.0 x")), "{text}");
        }
    }

    #[test]
    fn multi_byte_text_at_the_edge_never_passes_the_limit() {
        // Emoji are two UTF-16 units each, CJK one: both straddle every limit.
        for unit in ["😀", "漢", "é", "😀漢"] {
            for channel in [Channel::Telegram, Channel::Discord, Channel::Slack] {
                let limit = channel.limit();
                for n in [limit / 4 - 1, limit / 2, limit / 2 + 1, limit] {
                    let d = digest(3, 12, &unit.repeat(n / 10 + 1));
                    let text = d.render(limit);
                    assert!(
                        units(&text) <= limit,
                        "{unit} {channel:?} {n}: {}",
                        units(&text)
                    );
                    assert!(!text.contains('\u{FFFD}'));
                }
                let huge = Digest {
                    headline: unit.repeat(limit),
                    sections: vec![],
                    profile: "p".into(),
                };
                assert!(units(&huge.render(limit)) <= limit);
            }
        }
        assert_eq!(cut("😀😀", 3), "😀", "never half a surrogate pair");
    }

    #[test]
    fn webhook_formats_follow_the_setting_then_the_host() {
        let f = |format: Option<&str>, url: &str| Channel::for_webhook(format, url).unwrap();
        assert_eq!(
            f(None, "https://hooks.slack.com/services/T/B/x"),
            Channel::Slack
        );
        assert_eq!(
            f(None, "https://discord.com/api/webhooks/1/abc?wait=true"),
            Channel::Discord
        );
        assert_eq!(
            f(None, "https://discordapp.com/api/webhooks/1/abc"),
            Channel::Discord
        );
        assert_eq!(
            f(None, "https://ptb.discord.com/api/webhooks/1/abc"),
            Channel::Discord
        );
        assert_eq!(f(None, "https://chat.example.com/hooks/abc"), Channel::Json);
        assert_eq!(f(None, "https://notdiscord.com/x"), Channel::Json);
        assert_eq!(
            f(Some("slack"), "https://mattermost.example.com/hooks/x"),
            Channel::Slack
        );
        assert_eq!(f(Some("JSON"), "https://hooks.slack.com/x"), Channel::Json);
        assert!(Channel::for_webhook(Some("teams"), "https://x").is_err());
    }

    #[test]
    fn a_long_line_keeps_its_fix() {
        let line = format!(
            "runs never reach these supervisors: {}. Make \"ops\" the global default (POST /admin/api/v1/feature-flags), or set TRIGGER_WORKER_TOKEN",
            "they serve worker group x ".repeat(20)
        );
        let short = shorten(&line);
        assert!(units(&short) <= LINE_MAX, "{}", units(&short));
        assert!(short.starts_with("runs never reach these supervisors: they serve"));
        assert!(
            short.ends_with("… Make \"ops\" the global default (POST /admin/api/v1/feature-flags), or set TRIGGER_WORKER_TOKEN"),
            "{short}"
        );
        // No sentence to keep: the head, cut.
        let plain = "x".repeat(900);
        assert_eq!(units(&shorten(&plain)), LINE_MAX);
    }

    #[test]
    fn mentions_are_defused() {
        assert_eq!(
            slack_escape("<!channel> a&b <@U1>"),
            "&lt;!channel&gt; a&amp;b &lt;@U1&gt;"
        );
        assert!(!telegram_defuse("ping @everyone").contains("@everyone"));
    }
}
