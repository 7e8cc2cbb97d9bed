//! Non-blocking exclusive flocks under `<state>/locks/`: one per profile, one per resource a
//! built-in task acts on. flock dies with the process, so a crash never leaves a stale lock.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use fs2::FileExt;

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes `<dir>/locks/<name>.lock` without waiting; `Ok(None)` when another process holds it.
pub fn try_lock(state_dir: &Path, name: &str) -> anyhow::Result<Option<Lock>> {
    crate::state::create_private_dir(state_dir)?;
    // Opened relative to the directories, never through a symlink, handed over by descriptor.
    let dir = crate::privilege::open_dir(state_dir)?;
    let locks = crate::privilege::subdir_at(&dir, state_dir, "locks")
        .with_context(|| format!("lock directory in {}", state_dir.display()))?;
    let shown = state_dir.join("locks");
    let file = crate::privilege::open_at(&locks, &shown, &format!("{name}.lock"), true)?
        .ok_or_else(|| anyhow::anyhow!("cannot create lock file {name}.lock"))?;
    let path = shown.join(format!("{name}.lock"));
    match file.try_lock_exclusive() {
        Ok(()) => Ok(Some(Lock { _file: file })),
        Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_process_is_refused_then_released() {
        let dir = std::env::temp_dir().join(format!("ops-lock-test-{}", std::process::id()));
        let first = try_lock(&dir, "p").unwrap();
        assert!(first.is_some());
        assert!(try_lock(&dir, "p").unwrap().is_none());
        drop(first);
        assert!(try_lock(&dir, "p").unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
