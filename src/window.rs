//! Maintenance windows (`restart_window: Sun 03:00-05:00`): when a disruptive change may start.
//! Pure: the caller brings the time (the host's local time, as the cron schedules use).
//!
//! Forms: `03:00-05:00` (every day), `Sun 03:00-05:00`, `Sat,Sun 23:00-01:00` (a window past
//! midnight belongs to the day it starts), `Mon-Fri 02:00-04:00`; `24:00` ends a day.

use chrono::{Datelike, Duration, NaiveDateTime, NaiveTime, Timelike};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after midnight; `end <= start` wraps past midnight.
    start: u32,
    end: u32,
}

fn minutes(text: &str, whole: &str) -> Result<u32, String> {
    let bad = || format!("restart_window {whole:?}: {text:?} is not HH:MM (e.g. Sun 03:00-05:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// A day's full lowercase name (`sunday`) from its name or its first three letters, any case.
pub fn weekday(text: &str) -> Option<&'static str> {
    let t = text.trim().to_ascii_lowercase();
    (0..7)
        .find(|&i| t == DAYS[i] || t == FULL[i])
        .map(|i| FULL[i])
}

fn day(text: &str, whole: &str) -> Result<usize, String> {
    weekday(text)
        .and_then(|d| FULL.iter().position(|f| *f == d))
        .ok_or_else(|| format!("restart_window {whole:?}: {text:?} is not a day (Mon, Tue, … Sun)"))
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        let whole = text.trim();
        let (days_part, times) = match whole.rsplit_once(char::is_whitespace) {
            Some((d, t)) => (Some(d.trim()), t),
            None => (None, whole),
        };
        let (from, to) = times.split_once('-').ok_or_else(|| {
            format!("restart_window {whole:?}: expected [DAYS] HH:MM-HH:MM (e.g. Sun 03:00-05:00)")
        })?;
        let (start, end) = (minutes(from, whole)?, minutes(to, whole)?);
        if start == end {
            return Err(format!("restart_window {whole:?}: the window is empty"));
        }
        let mut days = [days_part.is_none(); 7];
        for item in days_part.into_iter().flat_map(|d| d.split(',')) {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a, whole)?, day(b, whole)?);
                    let mut i = a;
                    loop {
                        days[i] = true;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => days[day(item, whole)?] = true,
            }
        }
        Ok(Window { days, start, end })
    }

    /// Whether `t` is inside the window.
    pub fn contains(&self, t: NaiveDateTime) -> bool {
        let m = t.hour() * 60 + t.minute();
        let today = t.weekday().num_days_from_monday() as usize;
        let yesterday = (today + 6) % 7;
        if self.end > self.start {
            self.days[today] && (self.start..self.end).contains(&m)
        } else {
            (self.days[today] && m >= self.start) || (self.days[yesterday] && m < self.end)
        }
    }

    /// The next time the window opens after `t` (`t` itself when it is inside).
    pub fn next_open(&self, t: NaiveDateTime) -> NaiveDateTime {
        if self.contains(t) {
            return t;
        }
        let start = NaiveTime::from_hms_opt(self.start / 60 % 24, self.start % 60, 0)
            .unwrap_or(NaiveTime::MIN);
        (0..8)
            .map(|d| (t.date() + Duration::days(d)).and_time(start))
            .find(|open| *open > t && self.days[open.weekday().num_days_from_monday() as usize])
            .unwrap_or(t)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        if self.days.iter().all(|d| *d) {
            return write!(f, "{}-{}", hm(self.start), hm(self.end));
        }
        let names: Vec<String> = DAYS
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| format!("{}{}", d[..1].to_ascii_uppercase(), &d[1..]))
            .collect();
        write!(f, "{} {}-{}", names.join(","), hm(self.start), hm(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn sunday_mornings() {
        // 2026-12-06 is a Sunday.
        let w = Window::parse("Sun 03:00-05:00").unwrap();
        assert!(w.contains(at("2026-12-06 03:00")));
        assert!(w.contains(at("2026-12-06 04:59")));
        assert!(!w.contains(at("2026-12-06 05:00")));
        assert!(!w.contains(at("2026-12-05 04:00")));
        assert_eq!(w.next_open(at("2026-12-02 07:15")), at("2026-12-06 03:00"));
        assert_eq!(w.next_open(at("2026-12-06 05:30")), at("2026-12-13 03:00"));
        assert_eq!(w.to_string(), "Sun 03:00-05:00");
    }

    #[test]
    fn past_midnight_belongs_to_the_day_it_starts() {
        let w = Window::parse("Sat 23:00-01:00").unwrap();
        assert!(w.contains(at("2026-12-05 23:30")));
        assert!(
            w.contains(at("2026-12-06 00:30")),
            "Sunday 00:30 is Saturday's window"
        );
        assert!(!w.contains(at("2026-12-06 23:30")));
    }

    #[test]
    fn every_day_lists_and_ranges() {
        let daily = Window::parse("00:00-24:00").unwrap();
        assert!(daily.contains(at("2026-12-02 07:15")));
        assert_eq!(daily.to_string(), "00:00-24:00");
        let week = Window::parse("Mon-Fri 02:00-04:00").unwrap();
        assert!(week.contains(at("2026-12-04 03:00")), "Friday");
        assert!(!week.contains(at("2026-12-05 03:00")), "Saturday");
        let wrap = Window::parse("Fri-Mon 02:00-04:00").unwrap();
        assert_eq!(wrap.to_string(), "Mon,Fri,Sat,Sun 02:00-04:00");
        assert_eq!(
            Window::parse("sat,sunday 1:00-2:30").unwrap().to_string(),
            "Sat,Sun 01:00-02:30"
        );
    }

    #[test]
    fn bad_windows_name_the_part_and_the_form() {
        for (text, part) in [
            ("Sun 3-5", "\"3\" is not HH:MM"),
            ("Sun 03:00", "expected [DAYS] HH:MM-HH:MM"),
            ("Sunnday 03:00-05:00", "\"Sunnday\" is not a day"),
            ("Sun 25:00-05:00", "\"25:00\" is not HH:MM"),
            ("Sun 03:00-03:00", "empty"),
        ] {
            let e = Window::parse(text).unwrap_err();
            assert!(e.contains(part), "{text}: {e}");
        }
    }
}
