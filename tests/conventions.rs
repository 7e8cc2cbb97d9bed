//! Operator conventions (#29): plans that read like terraform's, one JSON and time format,
//! journald priorities, checks that catch what would fail at 3 am.

use std::process::Stdio;

use crate::extract::scenario;
use crate::support::{exec_profile, Ops};

#[test]
fn a_dry_run_prints_the_plan_line_and_the_real_run_says_it_in_the_past_tense() {
    let s = scenario("extract");
    let dry = s.ops.run(&["run", "extract", "--dry-run"]);
    dry.expect_code(0)
        .expect_stdout("would cache the worker token")
        .expect_stdout("plan: cache worker token, store config record");
    let json = s.ops.run(&["run", "extract", "--dry-run", "--json"]).json();
    assert_eq!(json["schema_version"], 1);
    let actions = json["tasks"][0]["actions"].as_array().unwrap();
    assert_eq!(actions[0]["type"], "cache");
    assert_eq!(actions[0]["resource"], "worker token");
    assert_eq!(actions[1]["type"], "store");
    assert_eq!(actions[1]["resource"], "config record");
    // --detailed-exitcode: 3 while changes are planned, 0 once there are none.
    s.ops
        .run(&["run", "extract", "--dry-run", "--detailed-exitcode"])
        .expect_code(3);
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("cached the worker token")
        .expect_stdout("stored the config record")
        .expect_stdout("applied: cached worker token, stored config record");
    s.ops
        .run(&["run", "extract", "--dry-run", "--detailed-exitcode"])
        .expect_code(0)
        .expect_stdout("plan: no changes");
    // Only meaningful on a dry run.
    s.ops
        .run(&["run", "extract", "--detailed-exitcode"])
        .expect_code(2);
}

#[test]
fn under_journald_errors_carry_their_priority_and_the_table_is_not_repeated() {
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["false"], ""));
    let out = ops.path("stdout");
    let file = std::fs::File::create(&out).unwrap();
    let stream = {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().unwrap();
        format!("{}:{}", m.dev(), m.ino())
    };
    let run = ops
        .command(&["run", "p"])
        .env("JOURNAL_STREAM", &stream)
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<3>error: p/step: failed")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("<3>error: profile p: failed in")),
        "{stderr}"
    );
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(
        !printed.contains("TASK"),
        "the table went to the journal: {printed}"
    );
    // An operator's terminal (stdout not the journal's stream) still gets the table.
    let mut ops = ops;
    ops.env("JOURNAL_STREAM", "1:2");
    let run = ops.run(&["run", "p"]);
    run.expect_code(1).expect_stdout("TASK");
    assert!(run.stderr.contains("<3>error:"), "{}", run.stderr);
}
