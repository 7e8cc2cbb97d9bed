//! exec: any command, without a shell unless `shell: true`. The child runs in its own process
//! group so a timeout kills everything it started: SIGTERM, then SIGKILL after a grace period.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Command, ExecOptions};
use crate::duration;
use crate::task::{Outcome, Status, TaskCtx};

/// Lines of stdout and of stderr kept in the result.
const KEPT_LINES: usize = 10;
const MAX_LINE: usize = 400;
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The process group of the running child, for the profile watchdog (0 when none).
pub static CHILD_GROUP: AtomicI32 = AtomicI32::new(0);

/// Kills the running child's process group, if any.
pub fn kill_child_group(signal: i32) {
    let pgid = CHILD_GROUP.load(Ordering::SeqCst);
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// What every command gets of ops' own environment: where programs are, who and where it runs,
/// the locale and the journal; never a credential.
const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The base environment, then the variables the task names (`env:`).
fn child_env(opts: &ExecOptions, env: &crate::envfile::Env) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| BASE_ENV.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    out.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (name, value) in &opts.env.0 {
        match value.as_deref().or_else(|| env.raw(name)) {
            Some(v) => out.insert(name.clone(), v.to_string()),
            None => out.remove(name),
        };
    }
    out
}

fn argv(opts: &ExecOptions) -> Vec<String> {
    match (&opts.command, opts.shell) {
        (Command::Line(line), _) => vec!["sh".into(), "-c".into(), line.clone()],
        (Command::Argv(args), true) => vec!["sh".into(), "-c".into(), args.join(" ")],
        (Command::Argv(args), false) => args.clone(),
    }
}

pub fn run(opts: &ExecOptions, ctx: &TaskCtx) -> anyhow::Result<Outcome> {
    let argv = argv(opts);
    let shown = argv
        .iter()
        .map(|a| crate::schedule::shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let timeout = ctx.remaining();
    let shown_timeout = duration::format(Duration::from_millis(ctx.budget.as_millis() as u64));
    if ctx.dry_run {
        let mut line = format!("would run: {shown}");
        if let Some(cwd) = &opts.cwd {
            line.push_str(&format!(" (in {})", cwd.display()));
        }
        line.push_str(&format!(" with a {shown_timeout} timeout"));
        return Ok(Outcome::new(Status::Planned, line));
    }
    let mut cmd = Process::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(child_env(opts, ctx.env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    // A session of its own (so also a process group of its own, which the timeout kills whole):
    // no controlling terminal, so a child of a root rerun cannot open root's /dev/tty, write to
    // it or push input into it. If ops itself is killed (kill -9, OOM), the child goes with it
    // instead of running on unsupervised.
    // SAFETY: setsid and prctl are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {shown}: {e} (check the command path and the working directory)"
        )
    })?;
    let pgid = child.id() as i32;
    CHILD_GROUP.store(pgid, Ordering::SeqCst);
    let stdout = spawn_tail(child.stdout.take());
    let stderr = spawn_tail(child.stderr.take());

    let (status, timed_out) = wait_or_kill(&mut child, pgid, started + timeout)?;
    // Children that outlive the leader keep the pipes open; give them a moment, then end them.
    let out = stdout.finish(pgid);
    let err = stderr.finish(pgid);
    CHILD_GROUP.store(0, Ordering::SeqCst);

    let (status_kind, headline) = headline(status, timed_out, started, &shown, &shown_timeout);
    let mut detail = vec![headline];
    detail.extend(out.into_iter().map(|l| format!("stdout | {l}")));
    detail.extend(err.into_iter().map(|l| format!("stderr | {l}")));
    Ok(Outcome::lines(status_kind, detail))
}

/// How the command ended, in one line.
fn headline(
    status: ExitStatus,
    timed_out: bool,
    started: Instant,
    shown: &str,
    shown_timeout: &str,
) -> (Status, String) {
    let elapsed = duration::format(Duration::from_millis(started.elapsed().as_millis() as u64));
    if timed_out {
        (
            Status::Failed,
            format!(
                "timed out after {shown_timeout}: process group killed (SIGTERM, then SIGKILL after {}s)",
                KILL_GRACE.as_secs()
            ),
        )
    } else if status.success() {
        (Status::Ok, format!("exit 0 after {elapsed}"))
    } else if let Some(code) = status.code() {
        (
            Status::Failed,
            format!("exit {code} after {elapsed}: {shown}"),
        )
    } else {
        use std::os::unix::process::ExitStatusExt;
        (
            Status::Failed,
            format!(
                "killed by signal {} after {elapsed}: {shown}",
                status.signal().unwrap_or(0)
            ),
        )
    }
}

/// Waits for the child until `deadline`; past it, the process group gets SIGTERM, then SIGKILL
/// after `KILL_GRACE`. Its exit status, and whether it timed out.
fn wait_or_kill(
    child: &mut std::process::Child,
    pgid: i32,
    deadline: Instant,
) -> anyhow::Result<(ExitStatus, bool)> {
    let mut timed_out = false;
    let mut poll = Duration::from_millis(2);
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            signal_group(pgid, libc::SIGTERM);
            let grace_end = Instant::now() + KILL_GRACE;
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() >= grace_end {
                    signal_group(pgid, libc::SIGKILL);
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            // Kill stragglers that ignored SIGTERM, even if the leader exited.
            signal_group(pgid, libc::SIGKILL);
            break child.wait()?;
        }
        thread::sleep(poll.min(deadline - now));
        poll = (poll * 2).min(Duration::from_millis(50));
    };
    Ok((status, timed_out))
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) on our own child's process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

struct Tail {
    lines: Arc<Mutex<VecDeque<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Tail {
    fn finish(mut self, pgid: i32) -> Vec<String> {
        if let Some(handle) = self.handle.take() {
            let until = Instant::now() + Duration::from_secs(1);
            while !handle.is_finished() && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
            if !handle.is_finished() {
                signal_group(pgid, libc::SIGKILL);
            }
            let _ = handle.join();
        }
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines.into_iter().collect()
    }
}

/// Bytes of one output line kept for redaction before the cut to `MAX_LINE`: a line longer
/// than this (a child writing megabytes without a newline) is read to its end but not kept.
/// A secret straddling this bound lies far past the 400-byte cut, so none of it is shown.
const MAX_KEPT: usize = 64 * 1024;

/// Reads one line (through `\n` or the end) into `buf`, keeping at most `MAX_KEPT` bytes;
/// returns the bytes consumed (0 at the end).
fn read_line_bounded<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_KEPT.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

fn spawn_tail<R: Read + Send + 'static>(pipe: Option<R>) -> Tail {
    let lines = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LINES)));
    let handle = pipe.map(|pipe| {
        let lines = Arc::clone(&lines);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match read_line_bounded(&mut reader, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = crate::redact::redact_and_cut(
                            String::from_utf8_lossy(&buf).trim_end(),
                            MAX_LINE,
                        );
                        if let Ok(mut l) = lines.lock() {
                            if l.len() == KEPT_LINES {
                                l.pop_front();
                            }
                            l.push_back(line);
                        }
                    }
                }
            }
        })
    });
    Tail { lines, handle }
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[test]
    fn a_huge_line_is_consumed_whole_but_kept_bounded() {
        let mut text = vec![b'x'; 3 * MAX_KEPT];
        text.extend_from_slice(b"\nnext\n");
        let mut reader = std::io::BufReader::with_capacity(1024, &text[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf).unwrap(),
            3 * MAX_KEPT + 1
        );
        assert_eq!(buf.len(), MAX_KEPT);
        buf.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"next\n");
        buf.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut buf).unwrap(), 0);
    }
}
