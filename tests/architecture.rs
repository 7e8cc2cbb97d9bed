//! The architecture's two rules, checked on every test run: no import cycle between modules,
//! no function over 120 lines (scripts/architecture.py says how each is measured).

#[test]
fn modules_form_no_cycle_and_no_function_is_over_120_lines() {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/architecture.py"
        ))
        .output()
        .expect("python3 runs scripts/architecture.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("no cycle, no function over 120 lines"),
        "{text}"
    );
}
