//! Hardening III stories (issue 27): each test here failed before its fix.

use crate::support::fake::{loopback, FakeServer, Reply, Seen};
use crate::support::{exec_profile, Ops};

/// Any server can send `Retry-After: NaN`; here the heartbeat endpoint does, on the run's start
/// ping. The run goes on, fails as its task does, and the alert goes out.
#[test]
fn a_nan_retry_after_from_any_server_leaves_exit_1_and_the_alert_sent() {
    let ping = FakeServer::start(
        loopback(),
        Box::new(|_req: &Seen| Reply::text(429, "slow down").with_header("Retry-After", "NaN")),
    );
    let hook = FakeServer::start(loopback(), Box::new(|_req: &Seen| Reply::text(204, "")));
    let mut ops = Ops::new();
    ops.env("OPS_WEBHOOK_URL", &format!("{}/hook", hook.url()));
    ops.jobs(&exec_profile(
        "p",
        &["false"],
        &format!("ping_url: {}/ping", ping.url()),
    ));
    let run = ops.run(&["run", "p"]);
    run.expect_code(1);
    assert!(!ping.requests().is_empty(), "the heartbeat was never asked");
    let sent = hook.requests();
    assert_eq!(sent.len(), 1, "{}", run.all());
    assert!(sent[0].body.contains("step"), "{}", sent[0].body);
}
