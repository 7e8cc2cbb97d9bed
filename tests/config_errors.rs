//! Malformed jobs.yaml files: each exits 2 with one clear line naming file and position, never
//! a panic.

use crate::support::Ops;

const OK_TASKS: &str = "    tasks: [extract]\n";

/// (jobs.yaml text, substrings the error line must contain)
fn cases() -> Vec<(String, Vec<&'static str>)> {
    let head = "version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n";
    vec![
        (String::new(), vec!["empty", "version: 1"]),
        ("version: 2\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks: [extract]\n".into(), vec![":1:1:", "unsupported version 2"]),
        ("profiles:\n  p:\n    cron: '* * * * *'\n    tasks: [extract]\n".into(), vec!["version"]),
        (format!("{head}{OK_TASKS}    colour: blue\n"), vec![":6:5:", "unknown field `colour`"]),
        ("version: 1\nprofiles:\n  p:\n    cron: '61 * * * *'\n    tasks: [extract]\n".into(), vec![":4:12:", "minute", "out of range"]),
        ("version: 1\nprofiles:\n  p:\n    cron: '* * *'\n    tasks: [extract]\n".into(), vec![":4:", "3 fields"]),
        (format!("{head}    timeout: 5 minutes\n{OK_TASKS}"), vec![":5:14:", "invalid duration"]),
        (format!("{head}    tasks: [frobnicate]\n"), vec![":5:13:", "unknown task kind \"frobnicate\""]),
        (format!("{head}    tasks: []\n"), vec![":3:", "no tasks"]),
        (format!("{head}{OK_TASKS}  p:\n    cron: '@daily'\n{OK_TASKS}"), vec![":6:3:", "duplicate profile name \"p\""]),
        ("version: 1\nprofiles:\n  Bad_Name:\n    cron: '* * * * *'\n    tasks: [extract]\n".into(), vec![":3:3:", "invalid profile name"]),
        (format!("{head}    tasks:\n      - kind: exec\n        command: ls -l\n"), vec![":6:9:", "shell: true"]),
        (format!("{head}    tasks:\n      - kind: replication\n        fixx: true\n"), vec![":6:", "unknown field `fixx`"]),
        (format!("{head}    tasks:\n      - kind: exec\n        command: []\n"), vec!["command is empty"]),
        (format!("{head}    tasks:\n      - name: x\n"), vec![":6:", "no `kind:`"]),
        ("version: 1\nprofiles:\n  p:\n    cron: [1, 2]\n    tasks: [extract]\n".into(), vec![":4:11:", "invalid type"]),
        ("version: 1\nprofiles:\n  p: {cron: '* * * * *', tasks: [extract]\n".into(), vec!["jobs.yaml:"]),
        (format!("{head}    ping_url: ftp://x\n{OK_TASKS}"), vec!["ping_url"]),
        (format!("{head}    tasks:\n      - extract\n      - extract\n"), vec!["two tasks named \"extract\""]),
        ("version: 1\nlock: zookeeper\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks: [extract]\n".into(), vec![":2:7:", "lock"]),
        (format!("{head}    tasks:\n      - kind: replication\n        slot_max_retained: lots\n"), vec!["invalid size"]),
        ("version: 1\nprofiles: {}\n".into(), vec!["no profiles"]),
        ("\t- not yaml: [\n".into(), vec!["jobs.yaml"]),
        (format!("{head}    cron: '@hourly'\n{OK_TASKS}"), vec![":5:5:", "duplicate field `cron`"]),
        // Into a root unit as `ExecStartPre=+…`, or a broken crontab line (issue 27).
        (format!("{head}    description: \"nightly\\rExecStartPre=+/bin/sh -c id\"\n{OK_TASKS}"), vec![":5:5:", "description contains a control character"]),
        (format!("version: 1\nprofiles:\n  q:\n    cron: '@daily'\n    description: ok\n{OK_TASKS}  p:\n    cron: '* * * * *'\n    description: \"two\\nlines\"\n{OK_TASKS}"), vec![":9:5:", "profile \"p\""]),
        ("version: 1\nprofiles:\n  p:\n    cron: \"0\\n* * * *\"\n    tasks: [extract]\n".into(), vec![":4:", "control character", "one line"]),
    ]
}

#[test]
fn malformed_configs_exit_2_with_one_clear_line() {
    let cases = cases();
    assert!(cases.len() >= 12);
    for (i, (yaml, needles)) in cases.iter().enumerate() {
        let ops = Ops::new();
        ops.jobs(yaml);
        let run = ops.run(&["run", "p"]);
        assert_eq!(
            run.code,
            2,
            "case {i}: exit {} for\n{yaml}\n{}",
            run.code,
            run.all()
        );
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "case {i}: not one line:\n{line}");
        assert!(line.contains("jobs.yaml"), "case {i}: no file name: {line}");
        for needle in needles {
            assert!(line.contains(needle), "case {i}: {line:?} lacks {needle:?}");
        }
        assert!(!run.stderr.contains("panicked"), "case {i}: panic");
        // Every command that reads the config fails the same way.
        assert_eq!(ops.run(&["list"]).code, 2, "case {i}: list");
        assert_eq!(ops.run(&["check"]).code, 2, "case {i}: check");
    }
}

#[test]
fn non_utf8_file_names_line_and_column() {
    let ops = Ops::new();
    std::fs::write(
        ops.path("jobs.yaml"),
        b"version: 1\nprofiles:\n  p:\n    description: caf\xe9\n",
    )
    .unwrap();
    let run = ops.run(&["list"]);
    run.expect_code(2)
        .expect_stderr("jobs.yaml:4:21: the file is not valid UTF-8");
}

#[test]
fn missing_config_file_names_the_fix() {
    let ops = Ops::new();
    let run = ops.run(&["list"]);
    run.expect_code(2).expect_stderr("cannot read jobs file");
}
