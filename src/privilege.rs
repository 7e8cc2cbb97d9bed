//! Root reruns: `ops` run by hand as root (over SSH, `sudo ops run …`) must do exactly what the
//! timer's run as the service user does, or it leaves root-owned locks, keys and databases the
//! next timer run cannot open. So when `ops` runs as root and the state directory belongs to
//! another user, it becomes that user (groups, then gid, then uid) before opening anything in
//! it. `--as-root` (or `OPS_AS_ROOT=1`) keeps root; then every file ops creates in the state
//! directory is handed to the directory's owner.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::bail;

/// The state directory's owner, when ops keeps root and must hand new files to it.
static HAND_TO: OnceLock<(u32, u32)> = OnceLock::new();

/// What `switch` did, for tests and the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Switched {
    /// Not root, or the state directory is root's (or absent): nothing to do.
    No,
    /// Now running as the owner.
    To { uid: u32, gid: u32 },
    /// Kept root on request; new files go to the owner.
    KeptRoot { uid: u32, gid: u32 },
}

pub fn switch(state_dir: &Path, as_root: bool) -> anyhow::Result<Switched> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Switched::No);
    }
    let Ok(meta) = std::fs::metadata(state_dir) else {
        return Ok(Switched::No);
    };
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(Switched::No);
    }
    if as_root {
        let _ = HAND_TO.set((uid, gid));
        log::info!(
            "running as root (--as-root); files created in {} are given to uid {uid}",
            state_dir.display()
        );
        return Ok(Switched::KeptRoot { uid, gid });
    }
    // SAFETY: plain system calls on integers; each result is checked.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            bail!(
                "cannot drop root's groups: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::setgid(gid) != 0 {
            bail!(
                "cannot switch to group {gid}: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::setuid(uid) != 0 {
            bail!(
                "cannot switch to user {uid}: {}",
                std::io::Error::last_os_error()
            );
        }
        // Permanent: there is no way back to root.
        if libc::setuid(0) == 0 {
            bail!("still able to regain root after switching to user {uid}: refusing to go on");
        }
    }
    log::info!(
        "running as uid {uid} (gid {gid}), the owner of {}, exactly as the timer does (--as-root keeps root)",
        state_dir.display()
    );
    Ok(Switched::To { uid, gid })
}

/// Gives a file or directory ops just created to the state directory's owner when ops kept root.
pub fn hand_over(path: &Path) -> anyhow::Result<()> {
    if let Some((uid, gid)) = HAND_TO.get() {
        std::os::unix::fs::chown(path, Some(*uid), Some(*gid))?;
    }
    Ok(())
}
