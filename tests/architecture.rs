//! The architecture's rules, checked on every test run: no import cycle between modules, no
//! function over 80 lines, no file over 900 lines of code (its tests apart), and no DigitalOcean
//! client type in the supervisor's pure modules (scripts/architecture.py says how each is
//! measured).

#[test]
fn modules_form_no_cycle_no_function_is_over_80_lines_and_no_file_over_900_lines_of_code() {
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
        text.contains(
            "no cycle, no function over 80 lines, no file over 900 lines of code, no DigitalOcean client type in the pure modules"
        ),
        "{text}"
    );
}
