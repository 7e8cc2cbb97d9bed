//! Per-profile state: healthy and skipped streaks, disabled by hand or auto-disabled after
//! `HEALTHY_CYCLES_BEFORE_DISABLE` healthy runs (`AUTO_DISABLE=true`), until `ops enable`.

use serde::{Deserialize, Serialize};

use crate::state::State;

const NAMESPACE: &str = "profile";

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

    pub fn save(&self, state: &State, profile: &str, now: i64) -> anyhow::Result<()> {
        state.kv_set(NAMESPACE, profile, self, now)
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
