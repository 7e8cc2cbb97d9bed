//! What the operator reads (issue 34): human durations, status lines that keep their end, each
//! change said once, the summary naming every outside change, a disabled profile shown so, and
//! exit codes, checks and docs that agree.

use std::time::Duration;

use crate::supervisor::{fleet, Fleet};
use crate::support::webapp;

fn name_of(f: &Fleet, id: u64) -> String {
    f.api
        .with(|w| w.droplets.iter().find(|d| d.id == id).unwrap().name.clone())
}

/// Every text a person reads: stdout and stderr of each command.
#[derive(Default)]
struct Transcript(Vec<(String, String)>);

impl Transcript {
    fn keep(&mut self, label: &str, run: crate::support::Run) -> crate::support::Run {
        self.0.push((label.to_string(), run.all()));
        run
    }

    /// `3598192ms`: a duration a person has to decode (a millisecond count of a second or more).
    fn undecoded(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (label, text) in &self.0 {
            for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
                if let Some(n) = word.strip_suffix("ms") {
                    if n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()) {
                        found.push(format!("{label}: {word}"));
                    }
                }
            }
        }
        found
    }
}

/// One healthy droplet A with a run executing on it, then an upgrade: B comes up, A drains.
fn an_upgrade_draining_a_busy_droplet(f: &mut Fleet, t: &mut Transcript) -> (u64, u64) {
    t.keep("first run", f.health()).expect_code(0);
    let a = f.ids()[0];
    let sup_a = f.serve(a, true);
    t.keep("healthy run", f.health()).expect_code(0);
    webapp::executing_run(&mut f.db(), "long1", &name_of(f, a), "small-1x");
    f.api.with(|w| w.hold_shutdown = true);
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    t.keep("upgrade, dry run", f.run(&["run", "health", "--dry-run"]))
        .expect_code(0);
    t.keep("upgrade", f.health())
        .expect_code(0)
        .expect_stdout("rolling replace");
    let b = *f.ids().iter().find(|id| **id != a).unwrap();
    let sup_b = f.serve(b, true);
    t.keep("drain starts", f.health())
        .expect_code(0)
        .expect_stdout("told it to stop taking runs");
    std::mem::forget((sup_a, sup_b));
    (a, b)
}

#[test]
fn every_duration_a_person_reads_is_human() {
    let mut f = fleet("boot_grace: 10m");
    let mut t = Transcript::default();
    an_upgrade_draining_a_busy_droplet(&mut f, &mut t);
    std::thread::sleep(Duration::from_millis(1100));
    t.keep("drain waits", f.health())
        .expect_code(0)
        .expect_stdout("deleted once idle, or in 59m58s (drain_timeout 1h)");
    for args in [
        &["status"][..],
        &["events"],
        &["history"],
        &["history", "show", "3"],
        &["list"],
    ] {
        t.keep(&args.join(" "), f.run(args)).expect_code(0);
    }
    assert_eq!(t.undecoded(), Vec::<String>::new());
    // JSON keeps numbers, the unit in the key.
    let status = f.run(&["status", "--json"]).json();
    assert!(status["profiles"][1]["last_run"]["duration_ms"].is_i64());
}

#[test]
fn status_keeps_the_end_of_every_line_names_the_fleet_once_and_shows_its_cost() {
    let mut f = fleet("boot_grace: 10m, min: 1, max: 3");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.health().expect_code(0);
    f.s.ops.env("TRIGGER_VERSION", "v4.6.0");
    f.run(&["run", "extract"]).expect_code(0);
    let status = f.run(&["status"]);
    status.expect_code(0);
    let text = &status.stdout;
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    assert!(!text.contains('…'), "a line was cut:\n{text}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(flat.matches("wanted").count(), 1, "{text}");
    assert!(
        flat.contains("fleet: 1 wanted, 1 serving: 0 run(s) can start now"),
        "{text}"
    );
    assert!(flat.contains("/month ($"), "the cost: {text}");
    assert!(
        flat.contains("unset TRIGGER_VERSION to follow the webapp"),
        "{text}"
    );
}

#[test]
fn a_change_is_logged_once_and_a_droplet_line_names_its_droplet_once() {
    let mut f = fleet("boot_grace: 10m");
    let mut t = Transcript::default();
    let (a, _b) = an_upgrade_draining_a_busy_droplet(&mut f, &mut t);
    let name = name_of(&f, a);
    let waits = f.health();
    waits.expect_code(0);
    for line in waits.stdout.lines() {
        assert!(line.matches(&name).count() <= 1, "{line}");
    }
    f.api.with(|w| w.hold_shutdown = false);
    webapp::finish_run(&mut f.db(), "long1");
    let deleted = (0..15)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1000));
            f.health()
        })
        .find(|r| r.stdout.contains("deleted droplet"))
        .expect("the drained droplet is deleted");
    let logged = deleted
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("deleted droplet {name}")))
        .count();
    assert_eq!(logged, 1, "{}", deleted.stderr);
}
