//! Per-profile state: healthy and skipped streaks, disabled by hand or auto-disabled after
//! `HEALTHY_CYCLES_BEFORE_DISABLE` healthy runs (`AUTO_DISABLE=true`), until `ops enable`.
//!
//! The database is the truth. Beside it, `profiles-none-disabled` is present only while no
//! profile is disabled, so that `ops list` need not open the database at all: on a host, SQLite's
//! parse of the schema was a third of `list`'s cost (issue 35). The file decides nothing but what
//! `list` shows. Its writers keep it by their order:
//! - a save that leaves a profile disabled writes, then removes it;
//! - any other save writes, then, when the file is absent and no profile reads disabled, creates
//!   it, reads again and removes it if one does now.
//!
//! Whatever the interleaving of two processes, once both are done the file is absent while a
//! profile is disabled. A process killed in the middle of a save can leave it behind while
//! another disables a profile: the next run of the disabled profile removes it (as it does after
//! a database is restored from elsewhere).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::State;

const NAMESPACE: &str = "profile";
/// In the state directory: no profile is disabled (see the module's comment).
const NONE_DISABLED: &str = "profiles-none-disabled";

/// The steps of a save, in their order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Write,
    Forget,
    /// Whether the file is absent and no profile reads disabled.
    Check,
    /// The file created when the check said so.
    Mark,
    /// The file removed again when, after it was created, a profile reads disabled.
    Recheck,
}

/// What the steps of one save learnt so far.
#[derive(Debug, Default)]
struct Progress {
    clear: bool,
    marked: bool,
}

impl Step {
    fn order(disabling: bool) -> &'static [Step] {
        if disabling {
            &[Step::Write, Step::Forget]
        } else {
            &[Step::Write, Step::Check, Step::Mark, Step::Recheck]
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileState {
    pub healthy_streak: u32,
    pub skipped_streak: u32,
    pub disabled: bool,
    pub auto_disabled: bool,
    pub changed_at: i64,
}

impl ProfileState {
    pub fn load(state: &State, profile: &str) -> ProfileState {
        state
            .kv_get(NAMESPACE, profile)
            .ok()
            .flatten()
            .map(|(p, _)| p)
            .unwrap_or_default()
    }

    /// Changes the profile's record as it is now in the database (read and written in one
    /// transaction: an `ops disable` made while a run was under way is kept by the run's save),
    /// then keeps the marker (see the module's comment). Returns the record written.
    pub fn update(
        state: &State,
        profile: &str,
        now: i64,
        change: impl FnOnce(&mut ProfileState),
    ) -> anyhow::Result<ProfileState> {
        let ps = state.kv_update(NAMESPACE, profile, now, |old: Option<ProfileState>| {
            let mut ps = old.unwrap_or_default();
            change(&mut ps);
            ps
        })?;
        let mut progress = Progress::default();
        for step in Step::order(ps.disabled)
            .iter()
            .filter(|s| **s != Step::Write)
        {
            ps.step(*step, state, profile, now, &mut progress)?;
        }
        Ok(ps)
    }

    #[cfg(test)]
    fn save(&self, state: &State, profile: &str, now: i64) -> anyhow::Result<()> {
        let mut progress = Progress::default();
        for step in Step::order(self.disabled) {
            self.step(*step, state, profile, now, &mut progress)?;
        }
        Ok(())
    }

    /// One step of a save (see the module's comment); apart so that a test can interleave two.
    fn step(
        &self,
        step: Step,
        state: &State,
        profile: &str,
        now: i64,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let dir = state_dir(state);
        match step {
            Step::Write => state.kv_set(NAMESPACE, profile, self, now)?,
            Step::Forget => forget_none_disabled(dir),
            Step::Check => progress.clear = !none_disabled(dir) && !any_disabled(state),
            Step::Mark if progress.clear => match mark_none_disabled(dir) {
                Ok(()) => progress.marked = true,
                Err(e) => log::warn!("{}: {e:#}", dir.join(NONE_DISABLED).display()),
            },
            Step::Mark => {}
            Step::Recheck => {
                if progress.marked && any_disabled(state) {
                    forget_none_disabled(dir);
                }
            }
        }
        Ok(())
    }

    /// Why a run does nothing, when it does nothing.
    pub fn disabled_reason(&self, profile: &str) -> Option<String> {
        match (self.disabled, self.auto_disabled) {
            (true, true) => Some(format!(
                "auto-disabled after {} healthy runs (ops enable {profile} to resume)",
                self.healthy_streak
            )),
            (true, false) => Some(format!("disabled (ops enable {profile} to resume)")),
            _ => None,
        }
    }
}

/// Whether the state directory says that no profile is disabled, without opening the database.
/// `false` also when it cannot tell (an older host, a profile disabled): then ask the database.
pub fn none_disabled(state_dir: &Path) -> bool {
    std::fs::symlink_metadata(state_dir.join(NONE_DISABLED)).is_ok_and(|m| m.is_file())
}

/// A run that found its profile disabled: the file, if present, is stale.
pub fn saw_disabled(state: &State) {
    if none_disabled(state_dir(state)) {
        forget_none_disabled(state_dir(state));
    }
}

fn state_dir(state: &State) -> &Path {
    state.path().parent().unwrap_or(Path::new("."))
}

/// Any profile disabled in the database; an unreadable store counts as one (the file then stays
/// absent and `list` asks the database).
fn any_disabled(state: &State) -> bool {
    match state.kv_list(NAMESPACE) {
        Ok(rows) => rows.iter().any(|(_, value, _)| {
            serde_json::from_str::<ProfileState>(value).map_or(true, |p| p.disabled)
        }),
        Err(_) => true,
    }
}

fn mark_none_disabled(dir: &Path) -> anyhow::Result<()> {
    let d = crate::privilege::open_dir(dir)?;
    crate::privilege::open_at(&d, dir, NONE_DISABLED, true)?;
    Ok(())
}

fn forget_none_disabled(dir: &Path) {
    match std::fs::remove_file(dir.join(NONE_DISABLED)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(
            "cannot remove {} (ops list may show a disabled profile as enabled): {e}",
            dir.join(NONE_DISABLED).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ops-profiles-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn disabled(yes: bool) -> ProfileState {
        ProfileState {
            disabled: yes,
            ..Default::default()
        }
    }

    #[test]
    fn list_may_skip_the_database_only_while_no_profile_is_disabled() {
        let dir = fresh("order");
        let state = State::open(&dir).unwrap();
        assert!(!none_disabled(&dir), "nothing saved yet: ask the database");
        disabled(false).save(&state, "health", 1).unwrap();
        assert!(none_disabled(&dir), "one enabled profile saved");
        disabled(true).save(&state, "hourly", 2).unwrap();
        assert!(!none_disabled(&dir), "hourly disabled");
        disabled(false).save(&state, "health", 3).unwrap();
        assert!(
            !none_disabled(&dir),
            "health saved again while hourly is disabled"
        );
        disabled(false).save(&state, "hourly", 4).unwrap();
        assert!(none_disabled(&dir), "hourly enabled again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two processes (two connections), one disabling a profile while the other saves one
    /// enabled, in every interleaving of their steps: once both are done, the file is present
    /// only if no profile reads disabled.
    #[test]
    fn every_interleaving_of_a_disabling_and_an_enabling_save_leaves_the_file_true() {
        let d = Step::order(true);
        let c = Step::order(false);
        let mut seen = 0;
        for other in ["health", "hourly"] {
            for mask in 0u32..(1 << (d.len() + c.len())) {
                if mask.count_ones() as usize != d.len() {
                    continue;
                }
                let dir = fresh(&format!("interleave-{other}-{mask}"));
                let first = State::open(&dir).unwrap();
                let second = State::open(&dir).unwrap();
                disabled(false).save(&first, "health", 0).unwrap();
                let (mut di, mut ci) = (0, 0);
                let (mut pd, mut pc) = (Progress::default(), Progress::default());
                for i in 0..d.len() + c.len() {
                    if mask & (1 << i) != 0 {
                        disabled(true)
                            .step(d[di], &first, "hourly", 1, &mut pd)
                            .unwrap();
                        di += 1;
                    } else {
                        disabled(false)
                            .step(c[ci], &second, other, 1, &mut pc)
                            .unwrap();
                        ci += 1;
                    }
                }
                let truth = any_disabled(&first);
                assert!(
                    !(none_disabled(&dir) && truth),
                    "steps {mask:07b} with the enabling save on {other}: the file says none \
                     is disabled while one is"
                );
                if other == "health" {
                    assert!(truth, "hourly stays disabled");
                }
                seen += 1;
                drop((first, second));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        assert_eq!(
            seen, 30,
            "C(6,2) interleavings for each of the two profiles"
        );
    }

    #[test]
    fn a_run_that_finds_its_profile_disabled_removes_a_stale_file() {
        let dir = fresh("stale");
        let state = State::open(&dir).unwrap();
        disabled(false).save(&state, "health", 1).unwrap();
        // A database restored from elsewhere, or a writer killed before its second removal.
        state
            .kv_set(NAMESPACE, "hourly", &disabled(true), 2)
            .unwrap();
        assert!(none_disabled(&dir));
        saw_disabled(&state);
        assert!(!none_disabled(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
