//! Trust (issue 26): no silent change to production, no wrong move on a new host, and status
//! shows what pages. A fake Railway, webapp and DigitalOcean around a real PostgreSQL.

use std::time::Duration;

use crate::supervisor::fleet;
use crate::support::webapp;

const TAG: &str = "trigger-supervisor-envabcde";
/// The token of the group the first host's droplets heartbeat into (not ops' token here).
const BOOTSTRAP_TOKEN: &str = "tr_wgt_BootstrapGroup0123456789abcdefghijklmno";

#[test]
fn a_droplet_heartbeating_into_another_group_is_named_so_and_not_replaced() {
    let f = fleet("boot_grace: 1ms, stale_after: 1m, unhealthy_after: 1");
    let mut db = f.db();
    webapp::add_group(&mut db, BOOTSTRAP_TOKEN, "bootstrap", "bootstrap-queue");
    let name = format!("{TAG}-260101000000");
    f.api.insert(
        &name,
        &[TAG, "ops-managed", "ops-spec-old"],
        Duration::from_secs(3600),
    );
    webapp::heartbeat(&mut db, BOOTSTRAP_TOKEN, &name).unwrap();
    for _ in 0..2 {
        let run = f.run(&["run", "health"]);
        run.expect_code(1)
            .expect_stdout(&format!("droplet {name} heartbeats into worker group bootstrap, not ours (ops-test-group): ops does not have that group's token. Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN"))
            .expect_stdout("heartbeating into group bootstrap (last heartbeat");
        assert!(!run.stdout.contains("booting"), "{}", run.stdout);
        assert!(!run.stdout.contains("never heard"), "{}", run.stdout);
    }
    assert_eq!(f.api.with(|w| w.creates.len()), 0, "nothing created");
    assert!(f.api.with(|w| w.deletes.is_empty()), "nothing deleted");
}
