//! The tests run in a network namespace of their own: `scripts/test.sh` (and `.ci/run` through
//! it) builds, then runs `cargo test` under `unshare --net` with `lo` up and the two test
//! addresses added to it. Nothing a test binds or calls can leave the namespace (no real API is
//! reachable by mistake), and the host's network is never changed. Run outside it, a test that
//! starts a fake or the binary stops at once with the command to use instead.

use std::net::{IpAddr, UdpSocket};
use std::sync::OnceLock;

/// A private (RFC 1918) address on the namespace's `lo`.
pub const PRIVATE: &str = "10.77.0.2";
/// A public-looking address (TEST-NET-1) on the namespace's `lo`.
pub const PUBLIC_LOOKING: &str = "192.0.2.77";

const HOW: &str = "the tests run in a network namespace of their own: run them with \
scripts/test.sh [cargo test arguments] (e.g. scripts/test.sh --test integration drain), as .ci/run does";

/// Why this process is not in the tests' namespace, if it is not: an interface other than `lo`
/// (`/proc/self/net/dev` lists the interfaces of the reader's own namespace), or a test address
/// missing.
fn outside() -> Option<String> {
    let dev = match std::fs::read_to_string("/proc/self/net/dev") {
        Ok(d) => d,
        Err(e) => return Some(format!("/proc/self/net/dev cannot be read ({e})")),
    };
    let others: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .filter(|i| *i != "lo")
        .collect();
    if !others.is_empty() {
        return Some(format!(
            "this process sees the interface(s) {}",
            others.join(", ")
        ));
    }
    [PRIVATE, PUBLIC_LOOKING]
        .into_iter()
        .find(|a| UdpSocket::bind((a.parse::<IpAddr>().unwrap(), 0)).is_err())
        .map(|a| format!("{a} is not on this namespace's lo"))
}

/// Stops the test unless it runs in the tests' own network namespace.
pub fn ensure() {
    static CHECK: OnceLock<Option<String>> = OnceLock::new();
    if let Some(why) = CHECK.get_or_init(outside) {
        panic!("{HOW} ({why})");
    }
}

/// One of the test addresses, after [`ensure`].
pub fn address(addr: &str) -> IpAddr {
    ensure();
    addr.parse().expect("a test address")
}
