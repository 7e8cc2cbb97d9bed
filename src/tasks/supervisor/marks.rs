//! Marks on the platform that only ops should set, when ops' state does not back them: the
//! `ops-draining` tag on a droplet whose drain ops never recorded starting. Anyone who may tag
//! in the team can set it; only a recorded drain is honoured (facts.rs, `Instance::draining`).
//! With the state intact the mark is reported and the droplet serves on; with the state lost
//! (the droplet adopted by its name this run) the drain may be real, so it goes on, its delete
//! counts in the circuit breaker, and the run fails naming the fix. Pure.

use super::drain::DRAINING_TAG;
use super::facts::Instance;
use super::owned::{self, Found};

/// How the report names a droplet whose `ops-draining` tag ops never set (`ops status` finds it by
/// these words).
pub const DRAIN_UNRECORDED: &str = "carries ops-draining but ops never started draining it";

/// Ops' state knew nothing of the droplet before this run: it was adopted by its name (a new or
/// lost state database).
fn unknown_before(owned: &Found, id: u64) -> bool {
    owned
        .adopted
        .iter()
        .any(|(_, a, why)| *a == id && *why == owned::BY_NAME)
}

/// The reason kept for a drain honoured on its mark alone.
pub const LOST_REASON: &str =
    "tagged ops-draining while ops' state had no record of it (a new or lost state database)";

/// Draining this run: a recorded drain, or a mark honoured all the same because the state knew
/// nothing of the droplet (lost), so the drain may be real; never while the breaker is open (its
/// delete counts).
pub fn draining(d: &Instance, owned: &Found, breaker_open: bool) -> bool {
    d.draining() || (d.drain_marked && unknown_before(owned, d.id) && !breaker_open)
}

/// Each `ops-draining` mark without a recorded drain: with the state intact someone tagged it (a
/// line, a warning, a status problem; the droplet serves on); with the state lost the run fails
/// naming the fix.
/// Returns the lines and the failures.
pub fn unrecorded_drains(
    droplets: &[Instance],
    owned: &Found,
    breaker_open: bool,
) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut failures) = (Vec::new(), Vec::new());
    for d in droplets.iter().filter(|d| !d.draining() && d.drain_marked) {
        if unknown_before(owned, d.id) {
            let what = if breaker_open {
                "ops leaves it alone while the circuit breaker is open"
            } else {
                "ops goes on draining it (it may be real) and counts its delete in the circuit breaker"
            };
            failures.push(format!(
                "droplet {} (id {}) carries {DRAINING_TAG} but ops' state has no record of starting that drain (a new or lost state database): {what}. If ops did not start it, remove the tag now: {}; restore the state directory from a backup if you have one",
                d.name, d.id, untag(d.id)
            ));
            continue;
        }
        lines.push(format!(
            "droplet {} (id {}) {DRAIN_UNRECORDED}: left alone, it serves as before (remove the tag: {})",
            d.name,
            d.id,
            untag(d.id)
        ));
    }
    (lines, failures)
}

fn untag(id: u64) -> String {
    format!("doctl compute droplet untag {id} --tag-name {DRAINING_TAG}")
}

/// The task's warnings: our tags on droplets ops did not create, and `ops-draining` on droplets
/// ops never started draining (its state intact).
pub fn warnings(droplets: &[Instance], owned: &Found) -> Vec<String> {
    let mut out: Vec<String> = owned::warning(owned).into_iter().collect();
    out.extend(
        droplets
            .iter()
            .filter(|d| !d.draining() && d.drain_marked && !unknown_before(owned, d.id))
            .map(|d| {
                format!(
                    "droplet {} (id {}) {DRAIN_UNRECORDED}: ops never drains or deletes it for the tag alone; whoever tagged it can tag any droplet in the team: check who did, then {}",
                    d.name,
                    d.id,
                    untag(d.id)
                )
            }),
    );
    out
}
