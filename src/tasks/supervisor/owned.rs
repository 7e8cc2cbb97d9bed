//! Which tagged droplets are ops' own: the ones it recorded creating. Tags say which droplets
//! belong to the deployment, but anyone who may tag in the DigitalOcean team can put them on any
//! droplet; the record in ops' state database is out of their reach. A droplet with our tags
//! that ops has no record of is reported and never drained, deleted or counted as capacity.
//!
//! The record (`supervisor/created`): each droplet ops created, written as soon as
//! DigitalOcean's answer names it, and before the call the name it is about to create (so a
//! create whose answer was lost is still known as ops' own). Trust on first use: while there is
//! no record at all (the first run of a version that keeps one, or a new state database), the
//! tagged droplets named exactly as ops names them are adopted into it.

use serde::{Deserialize, Serialize};

use crate::clients::digitalocean::Droplet;
use crate::state::{now_ms, State};
use crate::task::TaskCtx;

/// The record's state key (store.rs).
use super::store::{CREATED_KEY as KEY, NAMESPACE};
/// A recorded droplet DigitalOcean has not listed under our tag for this long is forgotten (not
/// at once: a droplet just created, or one listing cut short, must not lose ops its fleet).
const FORGET_AFTER_MS: i64 = 3_600_000;
/// How stale an entry's `listed_at` may get before a listing refreshes it (so the record is not
/// written every run).
const LISTED_REFRESH_MS: i64 = 10 * 60_000;
/// A create whose answer was never heard: a droplet of that name is ops' own when DigitalOcean
/// says it was created no earlier than this before the call (clocks differ)…
pub(crate) const PENDING_SKEW_MS: i64 = 3_600_000;
/// …and the name is kept this long.
const PENDING_KEEP_MS: i64 = 24 * 3_600_000;

/// What ops created: droplets by id, and creates sent whose answer was not heard yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub droplets: Vec<Entry>,
    #[serde(default)]
    pub pending: Vec<Pending>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub name: String,
    /// When it was recorded (Unix ms).
    pub at: i64,
    /// When a listing last showed it (Unix ms, to `LISTED_REFRESH_MS`); `None`: never since it
    /// was recorded.
    #[serde(default)]
    pub listed_at: Option<i64>,
}

impl Entry {
    fn last_seen(&self) -> i64 {
        self.listed_at.unwrap_or(self.at).max(self.at)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub name: String,
    /// When the create was sent (Unix ms).
    pub at: i64,
}

impl Record {
    pub fn has(&self, id: u64) -> bool {
        self.droplets.iter().any(|e| e.id == id)
    }
}

/// What the ownership check found this run, for the plan's lines and the task's warning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Droplets with both our tags and no record: (name, id).
    pub unowned: Vec<(String, u64)>,
    /// Droplets taken into the record this run: (name, id, why).
    pub adopted: Vec<(String, u64, &'static str)>,
}

/// The listing sorted: ops' own droplets, what was found, and the record to keep.
#[derive(Debug)]
pub struct Sorted {
    pub ours: Vec<Droplet>,
    pub seen: Found,
    pub record: Record,
    /// The record differs from the stored one (or none was stored).
    pub changed: bool,
}

pub(crate) const BY_NAME: &str = "no record of ops' droplets existed yet (the first run of this version, or a new state database), and it is named as ops names its droplets";
const UNHEARD: &str =
    "ops sent its create and never heard DigitalOcean's answer; it was created since";

/// `<tag>-<yymmddHHMMSS>-<12 random hex>` (before the random part, without it), optionally
/// `-<N>`: the names ops gives its droplets (plan.rs).
pub fn named_like_ours(name: &str, tag: &str) -> bool {
    let Some(rest) = name.strip_prefix(tag).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let mut parts = rest.split('-');
    let stamp = parts.next().unwrap_or_default();
    let mut next = parts.next();
    let hex = |s: &str| s.len() == 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if next.is_some_and(hex) {
        next = parts.next();
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    stamp.len() == 12
        && digits(stamp)
        && chrono::NaiveDateTime::parse_from_str(stamp, "%y%m%d%H%M%S").is_ok()
        && next.is_none_or(|n| digits(n) && n.len() <= 4 && !n.starts_with('0'))
        && parts.next().is_none()
}

fn created_ms(d: &Droplet) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(&d.created_at)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The droplet a create whose answer was lost made: of those listed under its name, created
/// since the call (an unreadable creation time proves nothing), the earliest. A later one of
/// the same name was made by someone who saw ours listed; it stays a stranger.
pub(crate) fn unheard<'a>(listed: &'a [Droplet], name: &str, at: i64) -> Option<&'a Droplet> {
    listed
        .iter()
        .filter_map(|d| {
            let c = created_ms(d)?;
            (d.name == name && c >= at - PENDING_SKEW_MS).then_some((c, d))
        })
        .min_by_key(|(c, d)| (*c, d.id))
        .map(|(_, d)| d)
}

/// Sorts the droplets listed with both our tags by the record (`None`: there is none yet).
pub fn sort(prev: Option<&Record>, listed: Vec<Droplet>, tag: &str, now: i64) -> Sorted {
    let first_use = prev.is_none();
    let mut record = prev.cloned().unwrap_or_default();
    let listed_ids: Vec<u64> = listed.iter().map(|d| d.id).collect();
    let fresh: Vec<Droplet> = listed
        .iter()
        .filter(|d| !record.has(d.id))
        .cloned()
        .collect();
    let answers: Vec<(u64, String)> = record
        .pending
        .iter()
        .filter_map(|p| unheard(&fresh, &p.name, p.at).map(|d| (d.id, p.name.clone())))
        .collect();
    let mut seen = Found::default();
    let mut ours = Vec::new();
    for d in listed {
        if record.has(d.id) {
            ours.push(d);
            continue;
        }
        let why = match answers.iter().find(|(id, _)| *id == d.id) {
            Some((_, name)) => {
                record.pending.retain(|p| p.name != *name);
                UNHEARD
            }
            None if first_use && named_like_ours(&d.name, tag) => BY_NAME,
            None => {
                seen.unowned.push((d.name, d.id));
                continue;
            }
        };
        seen.adopted.push((d.name.clone(), d.id, why));
        record.droplets.push(Entry {
            id: d.id,
            name: d.name.clone(),
            at: now,
            listed_at: Some(now),
        });
        ours.push(d);
    }
    let mut refreshed = false;
    for e in record.droplets.iter_mut() {
        if listed_ids.contains(&e.id) && now - e.last_seen() >= LISTED_REFRESH_MS {
            e.listed_at = Some(now);
            refreshed = true;
        }
    }
    let before = (record.droplets.len(), record.pending.len());
    record
        .droplets
        .retain(|e| listed_ids.contains(&e.id) || now - e.last_seen() < FORGET_AFTER_MS);
    record.pending.retain(|p| now - p.at < PENDING_KEEP_MS);
    let pruned = before != (record.droplets.len(), record.pending.len());
    Sorted {
        ours,
        changed: first_use || pruned || refreshed || !seen.adopted.is_empty(),
        seen,
        record,
    }
}

/// The stored record; an unreadable one counts as none (the state's own rule).
pub fn load(state: Option<&State>) -> Option<Record> {
    state
        .and_then(|s| s.kv_get(NAMESPACE, KEY).ok().flatten())
        .map(|(r, _)| r)
}

/// Reads the record and sorts the listing by it; outside a dry run, keeps what changed and
/// announces each adoption.
pub fn settle(ctx: &TaskCtx, listed: Vec<Droplet>, tag: &str) -> anyhow::Result<Sorted> {
    let sorted = sort(load(ctx.state).as_ref(), listed, tag, now_ms());
    if !ctx.dry_run && sorted.changed {
        ctx.writable_state()?
            .kv_set(NAMESPACE, KEY, &sorted.record, now_ms())?;
        for (name, id, why) in &sorted.seen.adopted {
            ctx.changed(
                "droplet.adopted",
                format!("adopted droplet {name} (id {id}) as ops' own: {why}"),
            );
        }
    }
    Ok(sorted)
}

/// Before the create call: the name ops is about to create.
pub fn intend(ctx: &TaskCtx, name: &str) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    let mut r = load(Some(st)).unwrap_or_default();
    r.pending.push(Pending {
        name: name.to_string(),
        at: now_ms(),
    });
    st.kv_set(NAMESPACE, KEY, &r, now_ms())
}

/// DigitalOcean refused the create outright (a 4xx): nothing was made, so the name is
/// forgotten at once and no droplet named so later is ever taken as ops' own.
pub fn refused_create(ctx: &TaskCtx, name: &str) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    let mut r = load(Some(st)).unwrap_or_default();
    r.pending.retain(|p| p.name != name);
    st.kv_set(NAMESPACE, KEY, &r, now_ms())
}

/// Right after the create call returned: the droplet is ops' own.
pub fn created(ctx: &TaskCtx, id: u64, name: &str) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    let mut r = load(Some(st)).unwrap_or_default();
    r.pending.retain(|p| p.name != name);
    if !r.has(id) {
        r.droplets.push(Entry {
            id,
            name: name.to_string(),
            at: now_ms(),
            listed_at: None,
        });
    }
    st.kv_set(NAMESPACE, KEY, &r, now_ms())
}

/// After ops deleted the droplet itself: no longer in the record (the migration off droplets
/// then knows at once, without asking DigitalOcean, that none is left).
pub fn forget(ctx: &TaskCtx, id: u64) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    let Some(mut r) = load(Some(st)) else {
        return Ok(());
    };
    r.droplets.retain(|e| e.id != id);
    st.kv_set(NAMESPACE, KEY, &r, now_ms())
}

/// Whether the record (read again now) has the droplet: the last check before draining or
/// deleting it.
pub fn recorded(state: Option<&State>, id: u64) -> bool {
    load(state).is_some_and(|r| r.has(id))
}

/// The line for a drain or delete refused because ops has no record of the droplet.
pub fn refused(verb: &str, name: &str, id: u64) -> String {
    format!("not {verb} droplet {name} (id {id}): ops has no record of creating it")
}

/// The plan's lines: each adoption, and each droplet with our tags that is not ops' own.
pub fn lines(seen: &Found) -> Vec<String> {
    let mut out: Vec<String> = seen
        .adopted
        .iter()
        .map(|(name, id, why)| format!("droplet {name} (id {id}) taken as ops' own: {why}"))
        .collect();
    out.extend(seen.unowned.iter().map(|(name, id)| {
        format!("droplet {name} (id {id}) {UNOWNED}: not touched (remove our tags or delete it yourself)")
    }));
    out
}

/// How the plan names a droplet it will not touch (`ops status` finds it by these words).
pub const UNOWNED: &str = "carries our tags but ops did not create it";

/// The task's warning: our tags on droplets that are not ops' own.
pub fn warning(seen: &Found) -> Option<String> {
    if seen.unowned.is_empty() {
        return None;
    }
    let names: Vec<String> = seen
        .unowned
        .iter()
        .map(|(n, id)| format!("{n} (id {id})"))
        .collect();
    Some(format!(
        "our tags are on droplets ops did not create: {}. ops never drains, deletes or counts them; whoever tagged them can tag any droplet in the team: check who did, then remove our tags or delete them yourself",
        names.join(", ")
    ))
}

/// The droplets with the deployment tag but not ops' own (`managed`): named, never touched.
pub fn foreign_lines(foreign: &[(String, u64)], tag: &str, managed: &str) -> Vec<String> {
    // Named one by one when few; a project with many hand-made droplets gets one more line.
    const NAMED: usize = 5;
    let mut lines: Vec<String> = foreign
        .iter()
        .take(NAMED)
        .map(|(name, id)| {
            format!("ignored droplet {name} (id {id}): tagged {tag} but not {managed}, so not ours to touch")
        })
        .collect();
    if foreign.len() > NAMED {
        lines.push(format!(
            "ignored {} more droplets tagged {tag} without {managed}",
            foreign.len() - NAMED
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "trigger-supervisor-envabcde";
    const NOW: i64 = 1_780_000_000_000;

    fn droplet(id: u64, name: &str, created_ms: i64) -> Droplet {
        let created = chrono::DateTime::from_timestamp_millis(created_ms)
            .unwrap()
            .to_rfc3339();
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "created_at": created,
            "tags": [TAG, crate::settings::MANAGED_TAG],
        }))
        .unwrap()
    }

    fn ids(v: &[Droplet]) -> Vec<u64> {
        v.iter().map(|d| d.id).collect()
    }

    fn entry(id: u64, at: i64) -> Entry {
        Entry {
            id,
            name: format!("n{id}"),
            at,
            listed_at: None,
        }
    }

    #[test]
    fn ops_names_only() {
        for ok in [
            "trigger-supervisor-envabcde-260101000000",
            "trigger-supervisor-envabcde-261125150000-2",
            "trigger-supervisor-envabcde-261125150000-13",
            "trigger-supervisor-envabcde-261125150000-0a1b2c3d4e5f",
            "trigger-supervisor-envabcde-261125150000-0a1b2c3d4e5f-2",
        ] {
            assert!(named_like_ours(ok, TAG), "{ok}");
        }
        for bad in [
            "trigger-supervisor-envabcde",
            "trigger-supervisor-envabcde-",
            "trigger-supervisor-envabcde-26010100000",
            "trigger-supervisor-envabcde-2601010000001",
            "trigger-supervisor-envabcde-261325150000",
            "trigger-supervisor-envabcde-261125150000-",
            "trigger-supervisor-envabcde-261125150000-0",
            "trigger-supervisor-envabcde-261125150000-x",
            "trigger-supervisor-envabcde-261125150000-2-2",
            "trigger-supervisor-envabcde-261125150000-0a1b2c3d4e5f-0a1b2c3d4e5f",
            "trigger-supervisor-envabcde-261125150000-0A1B2C3D4E5F",
            "trigger-supervisor-envabcde-261125150000-0a1b2c3d4e5-2",
            "trigger-supervisor-envabcde-26112515000a",
            "trigger-supervisor-envabcdef-261125150000",
            "prod-db-1",
            "ours-0",
        ] {
            assert!(!named_like_ours(bad, TAG), "{bad}");
        }
    }

    #[test]
    fn the_first_use_adopts_ops_names_only() {
        let listed = vec![
            droplet(1, "trigger-supervisor-envabcde-260101000000", NOW),
            droplet(2, "prod-db-1", NOW),
        ];
        let s = sort(None, listed, TAG, NOW);
        assert_eq!(ids(&s.ours), [1]);
        assert_eq!(s.seen.unowned, [("prod-db-1".to_string(), 2)]);
        assert_eq!(s.record.droplets.len(), 1);
        assert!(
            s.changed,
            "a first use writes the record, even an empty one"
        );
        assert!(sort(None, vec![], TAG, NOW).changed);
    }

    #[test]
    fn once_a_record_exists_a_look_alike_name_is_not_enough() {
        let prev = Record {
            droplets: vec![entry(1, NOW - 10)],
            pending: vec![],
        };
        let listed = vec![
            droplet(1, "trigger-supervisor-envabcde-260101000000", NOW),
            droplet(9, "trigger-supervisor-envabcde-260101000001", NOW),
        ];
        let s = sort(Some(&prev), listed, TAG, NOW);
        assert_eq!(ids(&s.ours), [1]);
        assert_eq!(s.seen.unowned.len(), 1);
        assert!(!s.changed);
    }

    #[test]
    fn a_create_whose_answer_was_lost_is_ours_but_not_an_older_droplet_renamed_to_it() {
        let name = "trigger-supervisor-envabcde-260101000000";
        let prev = Record {
            droplets: vec![],
            pending: vec![Pending {
                name: name.into(),
                at: NOW - 60_000,
            }],
        };
        let old = droplet(7, name, NOW - 30 * 86_400_000);
        let s = sort(Some(&prev), vec![old], TAG, NOW);
        assert!(s.ours.is_empty());
        assert_eq!(s.record.pending.len(), 1);
        let new = droplet(8, name, NOW - 50_000);
        let s = sort(Some(&prev), vec![new], TAG, NOW);
        assert_eq!(ids(&s.ours), [8]);
        assert_eq!(s.seen.adopted[0].2, UNHEARD);
        assert!(s.record.pending.is_empty() && s.record.has(8));
        // Someone who saw ours listed makes one of the same name: only the earlier is ours.
        let copy = droplet(9, name, NOW - 10_000);
        let s = sort(
            Some(&prev),
            vec![copy, droplet(8, name, NOW - 50_000)],
            TAG,
            NOW,
        );
        assert_eq!(ids(&s.ours), [8]);
        assert_eq!(s.seen.unowned, [(name.to_string(), 9)]);
    }

    #[test]
    fn ids_no_longer_listed_are_forgotten_after_an_hour() {
        let prev = Record {
            droplets: vec![entry(1, NOW - 2 * FORGET_AFTER_MS), entry(2, NOW - 1000)],
            pending: vec![Pending {
                name: "x".into(),
                at: NOW - 2 * PENDING_KEEP_MS,
            }],
        };
        let s = sort(Some(&prev), vec![], TAG, NOW);
        assert_eq!(s.record.droplets, [entry(2, NOW - 1000)]);
        assert!(s.record.pending.is_empty());
        assert!(s.changed);
        // Listed ones stay, however old their entry.
        let listed = vec![droplet(1, "n1", NOW)];
        let s = sort(Some(&prev), listed, TAG, NOW);
        assert!(s.record.has(1));
    }

    #[test]
    fn one_listing_cut_short_forgets_nothing_listed_within_the_hour() {
        let old = NOW - 10 * FORGET_AFTER_MS;
        let prev = Record {
            droplets: vec![entry(1, old), entry(2, old)],
            pending: vec![],
        };
        // Listed now: the entries learn when.
        let s = sort(
            Some(&prev),
            vec![droplet(1, "n1", old), droplet(2, "n2", old)],
            TAG,
            NOW,
        );
        assert!(s.changed);
        // A listing a minute later that shows none of them (cut short, or DigitalOcean's
        // hiccup) forgets neither: they were listed within the hour.
        let later = sort(Some(&s.record), vec![], TAG, NOW + 60_000);
        assert!(
            later.record.has(1) && later.record.has(2),
            "{:?}",
            later.record
        );
        // Still missing an hour on: gone.
        let gone = sort(
            Some(&later.record),
            vec![],
            TAG,
            NOW + FORGET_AFTER_MS + 60_000,
        );
        assert!(gone.record.droplets.is_empty());
        // Listed every run: the record is written at most every LISTED_REFRESH_MS.
        let again = sort(
            Some(&s.record),
            vec![droplet(1, "n1", old), droplet(2, "n2", old)],
            TAG,
            NOW + 60_000,
        );
        assert!(!again.changed);
    }

    #[test]
    fn the_warning_names_every_unowned_droplet() {
        let seen = Found {
            unowned: vec![("a".into(), 1), ("b".into(), 2)],
            adopted: vec![],
        };
        let w = warning(&seen).unwrap();
        assert!(
            w.starts_with("our tags are on droplets ops did not create: a (id 1), b (id 2). "),
            "{w}"
        );
        assert_eq!(warning(&Found::default()), None);
        assert_eq!(lines(&seen).len(), 2);
    }
}
