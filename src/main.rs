//! `ops`: C's `main` calls the library directly, without Rust's runtime start-up (`no_main`).
//! On Linux that start-up reads /proc/self/maps and installs a signal stack only to name a
//! main-thread stack overflow: a ninth of the instructions of `ops --version` (issue 35,
//! docs/performance.md). What else it does that matters is done here: closed standard
//! descriptors are opened on /dev/null (a file ops opens never becomes its stdout), a panic
//! ends with status 101, and `process::exit` flushes stdout.
#![cfg_attr(not(test), no_main)]

/// The C entry point (the bin's own test harness keeps Rust's).
#[cfg(not(test))]
mod start {
    use std::ffi::{CStr, OsString};
    use std::os::raw::{c_char, c_int};
    use std::os::unix::ffi::OsStringExt;

    #[no_mangle]
    extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
        open_closed_standard_fds();
        let args: Vec<OsString> = (0..usize::try_from(argc).unwrap_or(0))
            // SAFETY: the C runtime passes `argc` valid NUL-terminated strings in `argv`.
            .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
            .map(|s| OsString::from_vec(s.to_bytes().to_vec()))
            .collect();
        let code = std::panic::catch_unwind(|| trigger_ops::main_with(args)).unwrap_or(101);
        std::process::exit(code)
    }

    fn open_closed_standard_fds() {
        for fd in 0..3 {
            // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open; open(2) gets a
            // NUL-terminated path, and the lowest free descriptor is the closed one.
            unsafe {
                if libc::fcntl(fd, libc::F_GETFD) == -1 {
                    libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                }
            }
        }
    }
}
