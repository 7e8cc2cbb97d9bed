//! Root reruns: `ops` run by hand as root (over SSH, `sudo ops run …`) must do exactly what the
//! timer's run as the service user does, or it leaves root-owned locks, keys and databases the
//! next timer run cannot open. So when `ops` runs as root and the state directory belongs to
//! another user, it becomes that user (groups, then gid, then uid) before opening anything in
//! it, with its groups, `HOME`, `USER`, `LOGNAME` and umask 077. `--as-root` (or `OPS_AS_ROOT=1`
//! in the process environment) keeps root; then every file ops opens in the state directory is
//! opened relative to it without following symlinks, refused unless it is a regular file with one
//! link, and handed to the directory's owner by descriptor (`open_at`, `subdir_at`).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    // Root never follows a symlink to find the directory whose owner it becomes or serves.
    let Ok(meta) = std::fs::symlink_metadata(state_dir) else {
        return Ok(Switched::No);
    };
    if meta.file_type().is_symlink() {
        return Err(crate::exit::config_error(format!(
            "refusing to run as root: the state directory {} is a symlink; point --state-dir (or OPS_STATE_DIR) at the real directory",
            state_dir.display()
        )));
    }
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(Switched::No);
    }
    if gid == 0 {
        return Err(crate::exit::config_error(format!(
            "refusing to run as root: the state directory {} belongs to group 0 (root's); give it the service user's group (chgrp ops {})",
            state_dir.display(),
            state_dir.display()
        )));
    }
    // Files created from here on are private, as under the unit's UMask=0077.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    if as_root {
        let _ = HAND_TO.set((uid, gid));
        log::info!(
            "running as root (--as-root); files created in {} are given to uid {uid}",
            state_dir.display()
        );
        return Ok(Switched::KeptRoot { uid, gid });
    }
    let user = account(uid);
    // SAFETY: plain system calls on integers and a NUL-terminated name; each result is checked.
    unsafe {
        let groups_ok = match &user {
            // The owner's supplementary groups too, as the timer's run has them.
            Some((name, _)) => libc::initgroups(name.as_ptr(), gid) == 0,
            None => libc::setgroups(1, &gid) == 0,
        };
        if !groups_ok {
            bail!(
                "cannot set the groups of user {uid}: {}",
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
    become_owner(user.as_ref());
    log::info!(
        "running as uid {uid} (gid {gid}), the owner of {}, exactly as the timer does (--as-root keeps root)",
        state_dir.display()
    );
    Ok(Switched::To { uid, gid })
}

/// The owner's identity for what ops and its exec tasks read from the environment.
fn become_owner(user: Option<&(std::ffi::CString, std::path::PathBuf)>) {
    if let Some((name, home)) = user {
        let name = name.to_string_lossy().into_owned();
        std::env::set_var("HOME", home);
        std::env::set_var("USER", &name);
        std::env::set_var("LOGNAME", &name);
    }
}

/// The user's name and home directory from the password database.
/// A path that exists but this user may not `verb` (read, write): who owns it, and the fix
/// (`sudo ops <the same arguments>`). A configuration error: exit 2.
pub fn denied(path: &Path, what: &str, verb: &str, flag: &str) -> anyhow::Error {
    let owner = std::fs::metadata(path)
        .map(|m| {
            format!(
                " (uid {} gid {}, mode {:o})",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777
            )
        })
        .unwrap_or_default();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let args: Vec<String> = std::env::args().skip(1).collect();
    crate::exit::config_error(format!(
        "{what} {} exists but uid {uid} cannot {verb} it{owner}: run as root or a member of group ops: sudo ops {} (or point {flag} elsewhere)",
        path.display(),
        args.join(" ")
    ))
}

/// Whether this process may access `path` with `mode` (`libc::R_OK`, `W_OK`, `X_OK`).
pub fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads a NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

fn account(uid: u32) -> Option<(CString, std::path::PathBuf)> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwuid_r writes into our buffers only; pwd is read only when it succeeded.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc != 0 || out.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_owned();
        let home = if pwd.pw_dir.is_null() {
            std::path::PathBuf::from("/")
        } else {
            std::path::PathBuf::from(
                std::ffi::CStr::from_ptr(pwd.pw_dir)
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        Some((name, home))
    }
}

/// Gives a file or directory ops holds open to the state directory's owner when ops kept root:
/// `fchown` on the descriptor, never `chown` on a path (a path can be swapped for a symlink).
pub fn hand_over_fd(fd: &impl AsRawFd) -> std::io::Result<()> {
    if let Some((uid, gid)) = HAND_TO.get() {
        // SAFETY: fchown on a descriptor we own; the result is checked.
        if unsafe { libc::fchown(fd.as_raw_fd(), *uid, *gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cstr(name: &str) -> anyhow::Result<CString> {
    if name.is_empty() || name.contains('/') {
        bail!("internal: {name:?} is not a plain file name");
    }
    CString::new(name).map_err(|_| anyhow::anyhow!("internal: {name:?} holds a NUL byte"))
}

/// Opens the directory `dir` itself without following a symlink at its last component.
pub fn open_dir(dir: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => anyhow::anyhow!(
                "refusing {}: it is a symlink or not a directory (point --state-dir at the real directory)",
                dir.display()
            ),
            _ => anyhow::anyhow!("cannot open {}: {e}", dir.display()),
        })
}

/// `name` inside the open directory `dir` (shown as `shown` in errors), opened relative to it
/// without following a symlink, created 0600 when `create`; refused unless it is a regular file
/// with exactly one link (a symlink or a hard link planted by whoever controls the directory);
/// handed to the owner by descriptor when ops kept root. `None`: absent and not created.
pub fn open_at(dir: &File, shown: &Path, name: &str, create: bool) -> anyhow::Result<Option<File>> {
    let c = cstr(name)?;
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    flags |= if create {
        libc::O_RDWR | libc::O_CREAT
    } else {
        libc::O_RDONLY
    };
    // SAFETY: openat with a valid directory descriptor and a NUL-terminated name; checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) if !create => Ok(None),
            Some(libc::ELOOP) => bail!(
                "refusing {}: it is a symlink (ops never makes one there; remove it)",
                shown.join(name).display()
            ),
            _ => Err(anyhow::anyhow!(
                "cannot open {}: {e}",
                shown.join(name).display()
            )),
        };
    }
    // SAFETY: fd is a fresh descriptor we own from here on.
    let file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        bail!(
            "refusing {}: not a regular file with one link ({} link(s)); remove it and run again",
            shown.join(name).display(),
            meta.nlink()
        );
    }
    hand_over_fd(&file)
        .map_err(|e| anyhow::anyhow!("cannot hand {} over: {e}", shown.join(name).display()))?;
    Ok(Some(file))
}

/// The subdirectory `name` of the open directory `dir`, created 0700 when missing, opened
/// without following a symlink and handed over by descriptor.
pub fn subdir_at(dir: &File, shown: &Path, name: &str) -> anyhow::Result<File> {
    let c = cstr(name)?;
    // SAFETY: mkdirat with a valid directory descriptor and a NUL-terminated name; checked.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            bail!("cannot create {}: {e}", shown.join(name).display());
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as above.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        bail!(
            "refusing {}: not a directory, or a symlink ({})",
            shown.join(name).display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fd is a fresh descriptor we own from here on.
    let sub = unsafe { File::from_raw_fd(fd) };
    hand_over_fd(&sub)?;
    Ok(sub)
}
