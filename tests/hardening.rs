//! Hardening stories (issue 13): each test here failed before its fix.

use std::time::Duration;

use serde_json::{json, Value};
use trigger_ops::sealed::Sealer;

use crate::extract::{scenario, LOG_TOKEN, SECRET};
use crate::operator::Served;
use crate::support::digitalocean::free_port;
use crate::support::fake::{loopback, FakeServer, Reply, Seen};
use crate::support::{exec_profile, exec_profile_env, Ops};

fn kv(db: &rusqlite::Connection, key: &str) -> Value {
    let text: String = db
        .query_row(
            "SELECT value FROM kv WHERE namespace = 'config' AND key = ?1",
            [key],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn set_kv(db: &rusqlite::Connection, key: &str, value: &Value) {
    db.execute(
        "UPDATE kv SET value = ?2 WHERE namespace = 'config' AND key = ?1",
        rusqlite::params![key, value.to_string()],
    )
    .unwrap();
}

#[test]
fn secrets_sealed_by_the_old_format_are_opened_once_and_resealed() {
    let s = scenario("{kind: extract, refresh: 1ms}");
    s.ops.run(&["run", "extract"]).expect_code(0);
    let db = s.ops.sqlite();
    assert!(kv(&db, "worker_token")["token"]
        .as_str()
        .unwrap()
        .starts_with("sealed2:"));
    // The state as an earlier ops left it: the old home-made construction.
    let sealer = Sealer::load(&s.ops.state_dir(), false).unwrap().unwrap();
    let mut token = kv(&db, "worker_token");
    token["token"] = json!(sealer.seal_legacy(LOG_TOKEN).unwrap());
    set_kv(&db, "worker_token", &token);
    let mut record = kv(&db, "record");
    record["managed_secret"] = json!(sealer.seal_legacy(SECRET).unwrap());
    set_kv(&db, "record", &record);
    // (an earlier ops never recorded the end of the migration)
    db.execute(
        "DELETE FROM kv WHERE namespace = 'config' AND key = 'legacy_resealed'",
        [],
    )
    .unwrap();

    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("re-sealed the cached secrets with ChaCha20-Poly1305")
        .expect_stdout("worker token: cached (from logs");
    for (key, field) in [("worker_token", "token"), ("record", "managed_secret")] {
        let v = kv(&db, key)[field].as_str().unwrap().to_string();
        assert!(v.starts_with("sealed2:"), "{key}.{field} is still legacy");
    }
    let again = s.ops.run(&["run", "extract"]);
    again.expect_code(0);
    assert!(!again.stdout.contains("re-sealed"), "{}", again.stdout);
    // The migration is over: a legacy value appearing now is refused, and looked up again.
    let mut token = kv(&db, "worker_token");
    token["token"] = json!(sealer.seal_legacy(LOG_TOKEN).unwrap());
    set_kv(&db, "worker_token", &token);
    let late = s.ops.run(&["run", "extract"]);
    late.expect_code(0)
        .expect_stdout("worker token: found in the webapp's logs");
    assert!(late.all().contains("no longer accepted"), "{}", late.all());

    // A sealed value moved to another field does not open there.
    let mut record = kv(&db, "record");
    record["managed_secret"] = kv(&db, "worker_token")["token"].clone();
    set_kv(&db, "record", &record);
    let run = s.ops.run(&["render-cloud-init"]);
    assert_ne!(run.code, 0);
    assert!(
        run.all().contains("belongs to another field"),
        "{}",
        run.all()
    );
}

#[test]
fn a_failed_extraction_is_read_again_on_the_next_run_and_refresh_forces_it() {
    // The default refresh (15m): a good record is trusted, a failed one is not.
    let s = scenario("extract");
    s.railway.with(|w| {
        w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!("http://localhost:3030")
    });
    s.ops
        .run(&["run", "extract"])
        .expect_code(1)
        .expect_stdout("not reachable from a droplet");
    // The operator fixes the variable on Railway and reruns at once.
    let origin = s.webapp.origin();
    s.railway
        .with(|w| w.variables.get_mut("svc-web").unwrap()["API_ORIGIN"] = json!(origin));
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("the last extraction's checks failed: reading Railway again");
    // Good now: the next run trusts the record...
    s.ops
        .run(&["run", "extract"])
        .expect_code(0)
        .expect_stdout("no Railway request");
    // ...unless the operator asks for a fresh read.
    s.railway.clear();
    s.ops
        .run(&["run", "extract", "--refresh"])
        .expect_code(0)
        .expect_stdout("--refresh: reading Railway whatever the record's age");
    assert!(s.railway.ops().contains(&"Webapp".to_string()));
}

/// A registry speaking the Registry HTTP API v2 with an anonymous token challenge (as Docker Hub
/// and ghcr.io do), holding `tecnativa/docker-socket-proxy` tags v0.4.1 and v0.5.0 only.
fn fake_registry() -> FakeServer {
    let port = free_port();
    let realm = format!("http://127.0.0.1:{port}/token");
    FakeServer::start_on(
        loopback(),
        port,
        Box::new(move |req: &Seen| {
            if req.path.starts_with("/token?") {
                assert!(req
                    .path
                    .contains("scope=repository%3Atecnativa%2Fdocker-socket-proxy%3Apull"));
                return Reply::json(200, json!({"token": "anonymous-pull-token"}));
            }
            let Some(tag) = req
                .path
                .strip_prefix("/v2/tecnativa/docker-socket-proxy/manifests/")
            else {
                return Reply::text(404, "");
            };
            if req.header("authorization") != Some("Bearer anonymous-pull-token") {
                return Reply::text(401, "").with_header(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{realm}\",service=\"fake-registry\",scope=\"repository:tecnativa/docker-socket-proxy:pull\""),
                );
            }
            assert_eq!(req.method, "HEAD");
            if ["v0.4.1", "v0.5.0"].contains(&tag) {
                Reply::text(200, "")
            } else {
                Reply::text(404, "")
            }
        }),
    )
}

#[test]
fn doctor_says_when_the_proxy_image_tag_does_not_exist() {
    let registry = fake_registry();
    let mut ops = Ops::new();
    ops.jobs("version: 1\nprofiles:\n  p:\n    cron: '* * * * *'\n    tasks: [{kind: exec, name: t, command: ['true']}]\n");
    let image = |tag: &str| format!("{}/tecnativa/docker-socket-proxy:{tag}", registry.addr);
    ops.env("SUPERVISOR_DOCKER_PROXY_IMAGE", &image("v0.3.0"));
    ops.run(&["doctor"]).expect_code(1).expect_stdout(&format!(
        "✗ image {}: tag not found on {}",
        image("v0.3.0"),
        registry.addr
    ));
    ops.env("SUPERVISOR_DOCKER_PROXY_IMAGE", &image("v0.5.0"));
    ops.run(&["doctor"]).expect_stdout(&format!(
        "✓ image {} exists on {}",
        image("v0.5.0"),
        registry.addr
    ));
    // A registry that cannot be reached is a warning, not a verdict (the same for every
    // registry).
    ops.env(
        "SUPERVISOR_DOCKER_PROXY_IMAGE",
        "127.0.0.1:9/tecnativa/docker-socket-proxy:v0.5.0",
    );
    ops.run(&["doctor"]).expect_stdout(
        "! image 127.0.0.1:9/tecnativa/docker-socket-proxy:v0.5.0: not checked, 127.0.0.1:9 cannot be reached from this host",
    );
    // The default is a tag that exists; a malformed reference is a configuration error.
    assert_eq!(
        trigger_ops::settings::DEFAULT_DOCKER_PROXY_IMAGE,
        "tecnativa/docker-socket-proxy:v0.5.0"
    );
    ops.env("SUPERVISOR_DOCKER_PROXY_IMAGE", "Tecnativa/Proxy:v0.5.0");
    ops.run(&["check"]).expect_code(2).expect_stderr(
        "SUPERVISOR_DOCKER_PROXY_IMAGE: \"Tecnativa/Proxy:v0.5.0\" is not an image reference",
    );
    let pinned = format!(
        "tecnativa/docker-socket-proxy:v0.5.0@sha256:{}",
        "0a".repeat(32)
    );
    ops.env("SUPERVISOR_DOCKER_PROXY_IMAGE", &pinned);
    ops.run(&["check"]).expect_code(0);
}

#[test]
fn one_env_file_parser_for_every_run_with_escaped_quotes_and_a_warning_when_world_readable() {
    let ops = Ops::new();
    ops.jobs(&exec_profile_env(
        "p",
        &["sh", "-c", "printf '%s\\n' \"$GREETING\" \"$PLAIN\""],
        "",
        &["GREETING", "PLAIN"],
    ));
    ops.env_file("GREETING=\"say \\\"hi\\\" # not a comment\"\nPLAIN=a b # a comment\n");
    let run = ops.run(&["run", "p"]);
    run.expect_code(0)
        .expect_stdout("stdout | say \"hi\" # not a comment")
        .expect_stdout("stdout | a b");
    assert!(
        !run.stderr.contains("readable by every user"),
        "{}",
        run.stderr
    );
    // The units leave the file to ops: no second parser (systemd's) in between.
    let units = ops.path("units");
    ops.run(&["render-systemd", "--out", units.to_str().unwrap()])
        .expect_code(0);
    for entry in std::fs::read_dir(&units).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("EnvironmentFile"), "{text}");
    }
    for unit in ["deploy/ops.service", "deploy/ops-serve.service"] {
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(!text.contains("\nEnvironmentFile="), "{unit}");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ops.path("ops.env"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    ops.run(&["run", "p"]).expect_code(0).expect_stderr(
        "is readable by every user on this host (mode 644) and holds secrets: run chmod 640",
    );
}

#[test]
fn secrets_are_redacted_before_output_is_cut_and_env_file_secrets_are_registered() {
    let ops = Ops::new();
    // A secret that straddles the 400-byte cut of an exec output line.
    let secret = "Zq9xW2mK7pL4vN8rT3yB";
    ops.env_file(&format!("MY_SERVICE_TOKEN={secret}\n"));
    ops.jobs(&exec_profile_env(
        "p",
        &[
            "sh",
            "-c",
            "printf '%0390d%s\\n' 0 \"$MY_SERVICE_TOKEN\"; exit 1",
        ],
        "ping_url: http://127.0.0.1:9/ping/3f1c0d2e-uuid-is-the-secret",
        &["MY_SERVICE_TOKEN"],
    ));
    let run = ops.run(&["run", "p", "--json"]);
    run.expect_code(1);
    let half = &secret[..10];
    assert!(
        !run.all().contains(half),
        "half a secret leaked: {}",
        run.all()
    );
    let history = ops.run(&["history", "--json"]);
    assert!(!history.all().contains(half), "half a secret stored");
    assert!(history.stdout.contains("***"), "{}", history.stdout);
    // The heartbeat is logged by host, never by its secret path.
    run.expect_stderr("heartbeat to http://127.0.0.1:9");
    assert!(!run.stderr.contains("uuid-is-the-secret"), "{}", run.stderr);
}

/// `GET path` with a 3 s limit on the whole exchange; the status code.
fn get_within(addr: &str, path: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("no status line: {text:?}"))
}

#[test]
fn serve_keeps_answering_while_a_slow_client_and_a_huge_request_line_are_connected() {
    use std::io::{Read, Write};
    let ops = Ops::new();
    ops.jobs(&exec_profile("p", &["true"], ""));
    ops.run(&["run", "p"]).expect_code(0);
    let (_served, addr) = Served::start(&ops);

    // A client that drips its request line one byte every 300 ms, forever.
    let drip_addr = addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripping = std::sync::Arc::clone(&stop);
    let drip = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&drip_addr).unwrap();
        for b in b"GET /v1/runs?limit=1".iter().cycle() {
            if dripping.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    // A 1 MiB request line without a newline: refused once past 8 KiB.
    let huge_addr = addr.clone();
    let huge = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&huge_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 1 << 20));
        let _ = s.write_all(&line);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    });
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        assert_eq!(get_within(&addr, "/healthz"), Ok(200));
    }
    let answer = huge.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 414"),
        "{}",
        &answer[..answer.len().min(80)]
    );
    assert_eq!(get_within(&addr, "/healthz"), Ok(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drip.join().unwrap();
}

/// `ops args` as `user` (through runuser), with the same flags and environment as `ops.run`.
pub fn run_as(ops: &Ops, user: &str, args: &[&str]) -> crate::support::Run {
    let base = ops.command(args);
    let mut cmd = std::process::Command::new("runuser");
    cmd.args(["-u", user, "--"]).arg(base.get_program());
    cmd.args(base.get_args()).env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.current_dir("/").stdin(std::process::Stdio::null());
    let start = std::time::Instant::now();
    crate::support::finish(cmd.output().expect("runuser"), start.elapsed())
}

/// Every entry under `dir` (itself included): (path, uid, mode).
fn tree(dir: &std::path::Path) -> Vec<(String, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.display().to_string(), meta.uid(), meta.mode() & 0o777));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

const NOBODY: u32 = 65534;

/// An ops whose state directory belongs to `nobody`, with an exec profile and an extract
/// profile (which creates the key, the database and the task locks).
fn owned_by_nobody() -> crate::extract::Scenario {
    use std::os::unix::fs::PermissionsExt;
    let s = scenario("extract");
    // Every task kind: replication and supervisor fail here (no DATABASE_URL, no
    // DIGITALOCEAN_TOKEN), after taking their locks and recording the run, as a timer run would.
    s.ops.jobs(&format!(
        "{}  extract:\n    cron: '*/15 * * * *'\n    tasks: [{{kind: extract, refresh: 1ms}}]\n  rep:\n    cron: '0 * * * *'\n    tasks: [replication]\n  sup:\n    cron: '* * * * *'\n    tasks: [supervisor]\n",
        exec_profile("p", &["true"], "")
    ));
    // The test's directory must be traversable by nobody (the runs read nothing else there
    // after switching).
    let top = s.ops.path("");
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
    // As install.sh leaves it: root:ops 0640, readable by the service user's group.
    std::os::unix::fs::chown(s.ops.path("ops.env"), Some(0), Some(NOBODY)).unwrap();
    let state = s.ops.state_dir();
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    s
}

fn assert_all_nobodys_and_private(s: &crate::extract::Scenario) {
    let entries = tree(&s.ops.state_dir());
    for needed in [
        "ops.db",
        "secret.key",
        "profile-p.lock",
        "profile-extract.lock",
        "profile-rep.lock",
        "profile-sup.lock",
        "task-replication.lock",
        "task-supervisor.lock",
        "task-extract.lock",
        "locks",
    ] {
        assert!(
            entries.iter().any(|(p, _, _)| p.ends_with(needed)),
            "{needed} was not created: {entries:?}"
        );
    }
    for (path, uid, mode) in &entries {
        assert_eq!(
            *uid, NOBODY,
            "{path} is not owned by the state directory's owner"
        );
        assert_eq!(mode & 0o077, 0, "{path} is open to others: {mode:o}");
    }
}

fn root() -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root || std::env::var("CI").is_err(),
        "CI runs the tests as root: this test needs it"
    );
    root
}

/// The profiles of `owned_by_nobody` and the exit code each run ends with, whoever runs it.
const PROFILES: [(&str, i32); 4] = [("p", 0), ("extract", 0), ("rep", 2), ("sup", 2)];

/// Runs every profile, as `user` (through runuser) or as root (`None`), and checks that none was
/// refused a file: each ends as it would for the timer.
fn run_every_profile(s: &crate::extract::Scenario, user: Option<&str>, extra: &[&str]) {
    for (profile, code) in PROFILES {
        let mut args = vec!["run", profile];
        args.extend_from_slice(extra);
        let run = match user {
            Some(u) => run_as(&s.ops, u, &args),
            None => s.ops.run(&args),
        };
        run.expect_code(code);
        assert!(!run.all().contains("Permission denied"), "{}", run.all());
        if user.is_none() {
            let said = if extra.contains(&"--as-root") {
                "running as root (--as-root)"
            } else {
                "running as uid 65534 (gid 65534), the owner of"
            };
            run.expect_stderr(said);
        }
    }
}

#[test]
fn a_manual_run_as_root_is_the_timers_run_as_the_state_directory_owner() {
    if !root() {
        eprintln!("not root: the root-rerun test cannot run here");
        return;
    }
    // Root first, then the owner (as the timer would run next).
    let s = owned_by_nobody();
    run_every_profile(&s, None, &[]);
    s.ops.run(&["status"]).expect_code(0);
    assert_all_nobodys_and_private(&s);
    run_every_profile(&s, Some("nobody"), &[]);

    // The reverse: the owner first, then root.
    let s = owned_by_nobody();
    run_every_profile(&s, Some("nobody"), &[]);
    run_every_profile(&s, None, &[]);
    assert_all_nobodys_and_private(&s);

    // --as-root keeps root; what it creates still goes to the owner.
    let s = owned_by_nobody();
    run_every_profile(&s, None, &["--as-root"]);
    assert_all_nobodys_and_private(&s);
    run_every_profile(&s, Some("nobody"), &[]);
}

/// A file of root's that whoever owns the state directory would like to own.
fn victim(s: &crate::extract::Scenario, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = s.ops.path("root-only");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, "root:secret-hash:19000::::::\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn untouched(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "{} changed hands",
        path.display()
    );
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "root:secret-hash:19000::::::\n",
        "{} was written",
        path.display()
    );
}

#[test]
fn planted_symlinks_and_hard_links_under_as_root_leave_roots_files_untouched() {
    if !root() {
        eprintln!("not root: the root-rerun test cannot run here");
        return;
    }
    use std::os::unix::fs::symlink;
    // ops.db -> a file of root's.
    let s = owned_by_nobody();
    let shadow = victim(&s, "shadow");
    symlink(&shadow, s.ops.state_dir().join("ops.db")).unwrap();
    let run = s.ops.run(&["run", "p", "--as-root"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all().contains("ops.db: it is a symlink"),
        "{}",
        run.all()
    );
    untouched(&shadow);
    // A lock file -> a file of root's: the run used to report ok through it.
    let s = owned_by_nobody();
    let sudoers = victim(&s, "sudoers");
    let locks = s.ops.state_dir().join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::os::unix::fs::chown(&locks, Some(NOBODY), Some(NOBODY)).unwrap();
    symlink(&sudoers, locks.join("profile-p.lock")).unwrap();
    let run = s.ops.run(&["run", "p", "--as-root"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all().contains("profile-p.lock: it is a symlink"),
        "{}",
        run.all()
    );
    untouched(&sudoers);
    // The WAL file as a hard link to a file of root's.
    let s = owned_by_nobody();
    let passwd = victim(&s, "passwd");
    s.ops.run(&["run", "p", "--as-root"]).expect_code(0);
    let wal = s.ops.state_dir().join("ops.db-wal");
    let _ = std::fs::remove_file(&wal);
    std::fs::hard_link(&passwd, &wal).unwrap();
    let run = s.ops.run(&["run", "p", "--as-root"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("ops.db-wal: not a regular file with one link"),
        "{}",
        run.all()
    );
    untouched(&passwd);
    // A symlinked state directory is refused outright when running as root.
    let s = owned_by_nobody();
    let link = s.ops.path("state-link");
    symlink(s.ops.state_dir(), &link).unwrap();
    let mut cmd = s.ops.command(&["run", "p"]);
    cmd.arg("--state-dir").arg(&link);
    let out = cmd.output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a symlink"),
        "{out:?}"
    );
}

#[test]
fn ops_as_root_in_the_env_file_keeps_no_root_and_the_switch_takes_the_owners_identity() {
    if !root() {
        eprintln!("not root: the root-rerun test cannot run here");
        return;
    }
    let s = owned_by_nobody();
    s.ops.jobs(&exec_profile(
        "who",
        &["sh", "-c", "echo \"id=$(id -u) home=$HOME user=$USER logname=$LOGNAME umask=$(umask) groups=$(id -G)\""],
        "",
    ));
    let env = s.ops.path("ops.env");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str("OPS_AS_ROOT=1\n");
    std::fs::write(&env, text).unwrap();
    let run = s.ops.run(&["run", "who"]);
    run.expect_code(0)
        .expect_stderr("OPS_AS_ROOT in the env file is ignored")
        .expect_stderr("running as uid 65534")
        .expect_stdout("id=65534 home=/nonexistent user=nobody logname=nobody umask=0077");
}

#[test]
fn an_exec_child_under_a_terminal_cannot_open_it() {
    // `script` gives ops a controlling terminal, as an SSH session would.
    if !crate::support::tool("script") {
        assert!(std::env::var("CI").is_err(), "CI needs script (bsdutils)");
        return;
    }
    let ops = crate::support::Ops::new();
    ops.jobs(&exec_profile(
        "tty",
        &["sh", "-c", "if (echo typed > /dev/tty) 2>/dev/null; then echo TTY-REACHED; exit 1; fi; echo no-terminal"],
        "",
    ));
    let base = ops.command(&["run", "tty"]);
    let line = std::iter::once(base.get_program())
        .chain(base.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no-terminal"), "{text}");
    assert!(!text.contains("TTY-REACHED"), "{text}");
}

/// Every 10-character piece of `secret` that shows up in `text`.
fn pieces_of(secret: &str, text: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .windows(10)
        .map(|w| w.iter().collect::<String>())
        .filter(|p| text.contains(p.as_str()))
        .collect()
}

#[test]
fn trace_logging_shows_no_piece_of_any_secret() {
    use crate::support::digitalocean::DO_TOKEN;
    use crate::support::railway::{ADMIN_TOKEN, RAILWAY_TOKEN};
    let telegram = crate::support::fake::FakeServer::start(
        crate::support::fake::loopback(),
        Box::new(|_r: &crate::support::fake::Seen| crate::support::fake::Reply::text(500, "down")),
    );
    const BOT: &str = "987654:bot-token-for-trace-test-xyz";
    let mut f = crate::supervisor::fleet("boot_grace: 10m");
    f.s.ops
        .env("LOG_LEVEL", "trace")
        .env("TRIGGER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TELEGRAM_BOT_TOKEN", BOT)
        .env("TELEGRAM_CHAT_ID", "-100")
        .env("TELEGRAM_API_URL", &telegram.url());
    let mut all = String::new();
    for args in [
        &["run", "extract", "--refresh"][..],
        &["run", "health"],
        &["run", "health"],
    ] {
        let run = f.run(args);
        all.push_str(&run.all());
    }
    assert!(
        all.contains("trace") || all.contains("debug"),
        "trace logging is on"
    );
    for secret in [
        RAILWAY_TOKEN,
        DO_TOKEN,
        ADMIN_TOKEN,
        BOT,
        crate::extract::LOG_TOKEN,
        crate::extract::SECRET,
        crate::extract::REGISTRY_PASSWORD,
    ] {
        // "registry-p…" is also the start of the fake registry's public domain.
        let found: Vec<String> = pieces_of(secret, &all)
            .into_iter()
            .filter(|p| !"registry-prod.invalid".contains(p.as_str()))
            .collect();
        assert!(
            found.is_empty(),
            "pieces of a secret in trace output: {found:?}"
        );
    }
}

#[test]
fn four_slow_readers_of_a_large_response_do_not_stop_healthz() {
    use std::io::Write;
    let ops = Ops::new();
    // A thousand runs with a 6 KB summary each: /v1/runs?limit=1000 is megabytes, more than
    // the socket buffers of a client that does not read.
    ops.jobs(&exec_profile("big", &["true"], ""));
    ops.run(&["run", "big"]).expect_code(0);
    ops.sqlite()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
             INSERT INTO runs (profile, started_at, finished_at, status, host, summary)
             SELECT profile, started_at + i, finished_at + i, status, host, printf('%.6000c', 'a')
               FROM runs, n WHERE runs.id = 1;",
        )
        .unwrap();
    let (_served, addr) = Served::start(&ops);
    let readers: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_nodelay(true).unwrap();
            write!(
                s,
                "GET /v1/runs?limit=1000 HTTP/1.1\r\nHost: localhost\r\n\r\n"
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        assert_eq!(get_within(&addr, "/healthz"), Ok(200));
        // A server held by the readers would answer only once their 5 s response deadline cut
        // them off; 4 s leaves a loaded machine room (2 s failed under a loaded full run).
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    }
    // The slow readers are cut off at the response deadline, not held forever.
    std::thread::sleep(Duration::from_secs(6));
    for mut r in readers {
        use std::io::Read;
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let _ = r.read_to_end(&mut got);
        assert!(
            got.len() < 12 * 600_000,
            "a reader got the whole response after its deadline"
        );
    }
}
