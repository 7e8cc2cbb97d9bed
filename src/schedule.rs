//! Cron expressions (5 fields and @-aliases), their next run times, and the two renderings that
//! must fire at the same minutes: a supercronic crontab line and a systemd `OnCalendar=` value.

use std::fmt::Write as _;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};

const DOW_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// One cron field: the set of allowed values as a bit mask, and whether it was written
/// unrestricted (`*` or `*/n`), which matters for cron's day-of-month/day-of-week rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn has(&self, v: u32) -> bool {
        self.bits & (1u64 << v) != 0
    }

    fn values(&self, min: u32, max: u32) -> Vec<u32> {
        (min..=max).filter(|v| self.has(*v)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    expr: String,
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Cron {
    /// Parses a 5-field expression or an alias; the error says what is wrong and what is valid.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let trimmed = expr.trim();
        // A line break would end the crontab line (and tabs have no place in one ops writes).
        if let Some(pos) = trimmed.find(char::is_control) {
            return Err(format!(
                "cron {:?} is followed by a control character (a line break, carriage return or tab): write the five fields on one line, separated by spaces",
                &trimmed[..pos]
            ));
        }
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            s if s.starts_with('@') => {
                return Err(format!(
                    "unknown cron alias {s:?} (use @hourly, @daily, @weekly, @monthly, @yearly)"
                ))
            }
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron {trimmed:?} has {} fields; expected 5 (minute hour day-of-month month \
                 day-of-week) or @hourly/@daily/@weekly",
                fields.len()
            ));
        }
        let minute = parse_field(fields[0], "minute", 0, 59, &[])?;
        let hour = parse_field(fields[1], "hour", 0, 23, &[])?;
        let dom = parse_field(fields[2], "day-of-month", 1, 31, &[])?;
        let month = parse_field(fields[3], "month", 1, 12, &MONTH_NAMES)?;
        let mut dow = parse_field(fields[4], "day-of-week", 0, 7, &DOW_LOWER)?;
        if dow.has(7) {
            dow.bits = (dow.bits & !(1 << 7)) | 1;
        }
        Ok(Cron {
            expr: trimmed.to_string(),
            minute,
            hour,
            dom,
            month,
            dow,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expr
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.dom.has(date.day());
        let dow = self.dow.has(date.weekday().num_days_from_sunday());
        // Vixie cron: when both fields are restricted a day matches either of them.
        match (self.dom.star, self.dow.star) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute strictly after `after` that the expression matches (naive local time).
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let limit = after + Duration::days(366 * 8);
        while t <= limit {
            if !self.month.has(t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.hour.has(t.hour()) {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
                continue;
            }
            if !self.minute.has(t.minute()) {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The systemd `OnCalendar=` value firing at exactly the same minutes, or why none exists.
    pub fn on_calendar(&self) -> Result<String, String> {
        if !self.dom.star && !self.dow.star {
            return Err(format!(
                "cron {:?} restricts both day-of-month and day-of-week, which cron combines with \
                 OR and systemd OnCalendar with AND: split it into two profiles",
                self.expr
            ));
        }
        let mut out = String::new();
        if !self.dow.star && self.dow.bits & 0x7f != 0x7f {
            out.push_str(&render_dow(&self.dow));
            out.push(' ');
        }
        let _ = write!(
            out,
            "*-{}-{} {}:{}:00",
            render_field(&self.month, 1, 12),
            render_field(&self.dom, 1, 31),
            render_field(&self.hour, 0, 23),
            render_field(&self.minute, 0, 59),
        );
        Ok(out)
    }
}

const DOW_LOWER: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_field(
    text: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<Field, String> {
    let mut bits = 0u64;
    let star = text.starts_with('*');
    let bad = |what: &str| {
        format!("cron {name} field {text:?}: {what} (valid: {min}-{max}, lists a,b, ranges a-b, steps */n or a-b/n)")
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad("step is not a number"))?;
                if step == 0 {
                    return Err(bad("step must be at least 1"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                value(a, names, min).ok_or_else(|| bad("not a number"))?,
                value(b, names, min).ok_or_else(|| bad("not a number"))?,
            )
        } else {
            let v = value(range, names, min).ok_or_else(|| bad("not a number"))?;
            // `5/15` means 5 through the end of the range, as in Vixie cron.
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad("value out of range"));
        }
        // step_by cannot overflow, whatever the step (`5/4294967295` once did).
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(Field { bits, star })
}

fn value(text: &str, names: &[&str], min: u32) -> Option<u32> {
    if let Ok(v) = text.parse() {
        return Some(v);
    }
    let lower = text.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + min)
}

/// `*`, `a/s` (an arithmetic run to the end of the range), or a list of values and `a..b` runs.
fn render_field(field: &Field, min: u32, max: u32) -> String {
    let values = field.values(min, max);
    if values.len() as u32 == max - min + 1 {
        return "*".into();
    }
    if values.len() > 2 {
        let step = values[1] - values[0];
        let progression = values.windows(2).all(|w| w[1] - w[0] == step);
        if progression && step > 1 && values[values.len() - 1] + step > max {
            return format!("{:02}/{step}", values[0]);
        }
    }
    runs(&values)
        .iter()
        .map(|&(a, b)| match b - a {
            0 => format!("{a:02}"),
            1 => format!("{a:02},{b:02}"),
            _ => format!("{a:02}..{b:02}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn render_dow(field: &Field) -> String {
    // systemd weeks start on Monday: rotate Sunday to the end so Fri..Sun stays one run.
    let order: Vec<u32> = (1..=6).chain([0]).filter(|d| field.has(*d)).collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let start = i;
        while i + 1 < order.len() && monday_index(order[i + 1]) == monday_index(order[i]) + 1 {
            i += 1;
        }
        let (a, b) = (
            DOW_NAMES[order[start] as usize],
            DOW_NAMES[order[i] as usize],
        );
        parts.push(match i - start {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}..{b}"),
        });
        i += 1;
    }
    parts.join(",")
}

fn monday_index(dow: u32) -> u32 {
    (dow + 6) % 7
}

fn runs(values: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &v in values {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == v => *end = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// Quotes a word for `sh` when it needs it.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn next_times() {
        let c = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(
            c.next_after(t("2026-01-01 10:07")),
            Some(t("2026-01-01 10:15"))
        );
        assert_eq!(
            c.next_after(t("2026-01-01 10:45")),
            Some(t("2026-01-01 11:00"))
        );
        let c = Cron::parse("30 2 * * mon-fri").unwrap();
        // 2026-01-03 is a Saturday.
        assert_eq!(
            c.next_after(t("2026-01-03 00:00")),
            Some(t("2026-01-05 02:30"))
        );
        let c = Cron::parse("0 0 31 * *").unwrap();
        assert_eq!(
            c.next_after(t("2026-02-01 00:00")),
            Some(t("2026-03-31 00:00"))
        );
        let c = Cron::parse("0 12 * * 7").unwrap();
        assert_eq!(
            c.next_after(t("2026-01-01 00:00")),
            Some(t("2026-01-04 12:00"))
        );
    }

    #[test]
    fn dom_dow_or_rule() {
        let c = Cron::parse("0 0 1 * 1").unwrap();
        // 2026-01-05 is a Monday, not the 1st: matches through day-of-week.
        assert_eq!(
            c.next_after(t("2026-01-02 00:00")),
            Some(t("2026-01-05 00:00"))
        );
        assert!(c.on_calendar().is_err());
    }

    #[test]
    fn rejects_bad_expressions() {
        let huge = Cron::parse("5/4294967295 * * * *").unwrap();
        assert_eq!(
            huge.next_after(t("2026-01-01 10:07")),
            Some(t("2026-01-01 11:05"))
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "@often",
            "* * 0 * *",
            "* * * 13 *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn renders_on_calendar() {
        let cases = [
            ("* * * * *", "*-*-* *:*:00"),
            ("*/15 * * * *", "*-*-* *:00/15:00"),
            ("0 * * * *", "*-*-* *:00:00"),
            ("5,35 9-17 * * 1-5", "Mon..Fri *-*-* 09..17:05,35:00"),
            ("0 0 * * 0", "Sun *-*-* 00:00:00"),
            ("0 0 * * 5-7", "Fri..Sun *-*-* 00:00:00"),
            ("0 6 1 1,7 *", "*-01,07-01 06:00:00"),
            ("@daily", "*-*-* 00:00:00"),
        ];
        for (cron, want) in cases {
            assert_eq!(
                Cron::parse(cron).unwrap().on_calendar().unwrap(),
                want,
                "{cron}"
            );
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/ops"), "/usr/bin/ops");
        assert_eq!(shell_quote("/my dir/it's"), "'/my dir/it'\\''s'");
    }
}
