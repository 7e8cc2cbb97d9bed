//! Non-blocking exclusive flocks under `<state>/locks/`: one per profile, one per resource a
//! built-in task acts on. flock dies with the process, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
    let dir = state_dir.join("locks");
    if !dir.is_dir() {
        crate::state::create_private_dir(state_dir)?;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => crate::privilege::hand_over(&dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create lock directory {}", dir.display()))
            }
        }
    }
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    crate::privilege::hand_over(&path)?;
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
