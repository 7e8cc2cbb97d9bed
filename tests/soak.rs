//! Fault-injection soak: the real binary, run again and again against the fake cloud (Railway,
//! DigitalOcean, supervisors on loopback) and a real Postgres, with a seeded random schedule of
//! faults. Invariants are checked after every run. `OPS_SOAK_RUNS` (default 200) and
//! `OPS_SOAK_SEED` (default 7) set the length and the schedule; the full soak is
//! `OPS_SOAK_RUNS=1000 scripts/test.sh --release soak -- --nocapture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::extract::LOG_TOKEN;
use crate::support::digitalocean::{free_port, DoFault, Supervisor};
use crate::support::pg::{self, Cluster};
use crate::support::railway::Fault;
use crate::support::webapp::{self, Webapp};
use crate::support::{finish, Run};

const TAG: &str = "trigger-supervisor-envabcde";
const TIMEOUTS: [(&str, u64); 2] = [("health", 4), ("hourly", 8)];

/// xorshift64*: a tiny seeded generator, so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs a health server for every active droplet; `down` lists IPs whose supervisor is dead;
/// while `webapp_down` no heartbeat is recorded.
struct FleetManager {
    stop: Arc<AtomicBool>,
    down: Arc<Mutex<Vec<String>>>,
    webapp_down: Arc<AtomicBool>,
}

impl FleetManager {
    fn start(
        api: Arc<Mutex<crate::support::digitalocean::DoWorld>>,
        port: u16,
        webapp: Webapp,
    ) -> FleetManager {
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(Mutex::new(Vec::<String>::new()));
        let webapp_down = Arc::new(AtomicBool::new(false));
        let (s, d, w) = (
            Arc::clone(&stop),
            Arc::clone(&down),
            Arc::clone(&webapp_down),
        );
        std::thread::spawn(move || {
            let mut servers: HashMap<String, Supervisor> = HashMap::new();
            while !s.load(Ordering::SeqCst) {
                let active: Vec<(String, String)> = api
                    .lock()
                    .unwrap()
                    .droplets
                    .iter()
                    .filter(|x| Instant::now() >= x.active_at)
                    .map(|x| (x.ip.clone(), x.name.clone()))
                    .collect();
                servers.retain(|ip, _| active.iter().any(|(a, _)| a == ip));
                let down = d.lock().unwrap().clone();
                for (ip, name) in active {
                    let healthy = !down.contains(&ip) && !w.load(Ordering::SeqCst);
                    servers
                        .entry(ip.clone())
                        .or_insert_with(|| {
                            Supervisor::serve(&ip, port, healthy).beating(&webapp, &name)
                        })
                        .set(healthy);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        FleetManager {
            stop,
            down,
            webapp_down,
        }
    }
}

impl Drop for FleetManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The droplet id in an event's message: `… droplet NAME (id 42): …`.
fn id_in(message: &str) -> Option<u64> {
    message
        .split("(id ")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()
}

#[test]
fn soak() {
    if !pg::available() {
        return;
    }
    let runs: usize = std::env::var("OPS_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("OPS_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = Rng(seed.max(1));
    let started = Instant::now();

    let cluster = Arc::new(Cluster::start(&["wal_level = logical"]));
    let db = cluster.create_db();
    webapp::install(&mut cluster.client(&db), LOG_TOKEN);
    let webapp = Webapp {
        url: cluster.url(&db),
        token: LOG_TOKEN.into(),
    };
    let (s, api, port) = crate::supervisor::cloud(&cluster.url(&db));
    let supervisor = format!("{{kind: supervisor, health_port: {port}, boot_grace: 2s, stale_after: 1s, unhealthy_after: 2, max_replacements: 1000, bake: true}}");
    s.ops.jobs(&format!(
        "version: 1\nprofiles:\n  health:\n    cron: '* * * * *'\n    timeout: {}s\n    tasks:\n      - {supervisor}\n  hourly:\n    cron: '0 * * * *'\n    timeout: {}s\n    tasks:\n      - {{kind: extract, refresh: 1ms}}\n      - {{kind: replication, restart: false}}\n      - {supervisor}\n",
        TIMEOUTS[0].1, TIMEOUTS[1].1
    ));
    s.ops.run(&["run", "hourly"]);
    let foreign = api.insert(
        "hand-made-do-not-touch",
        &[TAG],
        Duration::from_secs(86_400),
    );
    let fleet = FleetManager::start(Arc::clone(&api.world), port, webapp);
    // Long runs execute on the droplets; a planned change (a version pin) comes and goes; a
    // draining droplet turns off once its runs are over (what its drain service does).
    api.with(|w| w.hold_shutdown = true);
    let db_url = cluster.url(&db);
    // Postgres restarts under the soak: every write gets a fresh session, and one that fails
    // (a restart in its way) is simply not counted.
    let db_try = |f: &dyn Fn(&mut postgres::Client)| -> bool {
        let Ok(mut c) = postgres::Client::connect(&db_url, postgres::NoTls) else {
            return false;
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut c))).is_ok()
    };
    let mut busy: HashMap<String, Vec<String>> = HashMap::new();
    // Droplets ops said it started draining (its `droplet.draining` events), and the bake
    // droplets ops created (the ids its create calls got back).
    let mut ops_drained: HashSet<u64> = HashSet::new();
    let mut last_event: i64 = 0;
    let bake_tag = format!("{TAG}-bake");
    // Droplets made by hand, not by ops.
    let planted: HashSet<u64> = HashSet::from([foreign.id]);

    let closed = format!("http://127.0.0.1:{}", free_port());

    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    let mut killed = 0;
    let mut outage_left = 0u32;
    let mut longest = Duration::ZERO;
    for i in 0..runs {
        let mut do_refused = false;
        let mut kill_after = None;
        let fault =
            |name: &'static str, f: &mut BTreeMap<&str, usize>| *f.entry(name).or_default() += 1;
        if rng.chance(0.06) {
            api.with(|w| w.faults.push_back(DoFault::RateLimit));
            fault("do-429", &mut faults);
        }
        if rng.chance(0.06) {
            let code = [500, 502, 503][rng.below(3) as usize];
            api.with(|w| w.faults.push_back(DoFault::Status(code)));
            fault("do-5xx", &mut faults);
        }
        if rng.chance(0.02) {
            api.with(|w| w.faults.push_back(DoFault::Slow(Duration::from_secs(9))));
            fault("do-slow-past-timeout", &mut faults);
        }
        if rng.chance(0.03) {
            api.with(|w| w.faults.push_back(DoFault::Truncated));
            fault("do-truncated-body", &mut faults);
        }
        if rng.chance(0.03) {
            api.with(|w| w.faults.push_back(DoFault::Html));
            fault("do-html-body", &mut faults);
        }
        if rng.chance(0.03) {
            do_refused = true;
            fault("do-connection-refused", &mut faults);
        }
        if rng.chance(0.05) {
            api.with(|w| w.create_fault = Some(DoFault::Status(500)));
            fault("do-create-500", &mut faults);
        }
        if rng.chance(0.05) {
            let f = [
                Fault::RateLimit(1),
                Fault::Status(502),
                Fault::Html,
                Fault::Truncated,
            ][rng.below(4) as usize]
                .clone();
            s.railway.fault(f);
            fault("railway-fault", &mut faults);
        }
        if rng.chance(0.05) {
            api.with(|w| w.boot_after = Duration::from_secs(3600));
            fault("droplet-stuck-in-new", &mut faults);
        } else {
            api.with(|w| w.boot_after = Duration::from_millis(300));
        }
        if rng.chance(0.08) {
            let ips: Vec<String> = api.with(|w| {
                w.droplets
                    .iter()
                    .filter(|d| d.tags.contains(&"ops-managed".to_string()))
                    .map(|d| d.ip.clone())
                    .collect()
            });
            if !ips.is_empty() {
                let ip = ips[rng.below(ips.len() as u64) as usize].clone();
                let mut down = fleet.down.lock().unwrap();
                if let Some(pos) = down.iter().position(|d| *d == ip) {
                    down.remove(pos);
                    fault("supervisor-comes-back", &mut faults);
                } else {
                    down.push(ip);
                    fault("supervisor-dies", &mut faults);
                }
            }
        }
        // The webapp goes down for six runs, half a second apart (past stale_after, so the
        // silence is seen): no heartbeat recorded, /healthcheck 500.
        if outage_left == 0 && rng.chance(0.03) {
            outage_left = 6;
            fleet.webapp_down.store(true, Ordering::SeqCst);
            *s.webapp.health.lock().unwrap() = (500, "ERROR".into());
            fault("webapp-down-6-runs", &mut faults);
        } else if outage_left == 1 {
            fleet.webapp_down.store(false, Ordering::SeqCst);
            *s.webapp.health.lock().unwrap() = (200, "OK".into());
        }
        outage_left = outage_left.saturating_sub(1);
        if fleet.webapp_down.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
        }
        let webapp_down = fleet.webapp_down.load(Ordering::SeqCst);
        if rng.chance(0.03) {
            let c = Arc::clone(&cluster);
            std::thread::spawn(move || c.restart_quietly());
            fault("postgres-restart", &mut faults);
        }
        if rng.chance(0.01) {
            // Someone with image rights plants a look-alike of ops' baked image (its tags and
            // name prefix): it must never become a supervisor's image.
            let tags = api.with(|w| {
                w.images
                    .iter()
                    .find(|i| i.name.starts_with(&format!("{bake_tag}-")))
                    .map(|i| (i.name.clone(), i.tags.clone()))
            });
            if let Some((name, tags)) = tags {
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                let planted = format!("{name}-9");
                api.with(|w| w.add_image(&planted, &tags, "2099-01-01T00:00:00Z"));
                fault("planted-image", &mut faults);
            }
        }
        if rng.chance(0.06) {
            kill_after = Some(Duration::from_millis(rng.below(400)));
            fault("kill-9", &mut faults);
        }

        let alive: Vec<(String, String)> = api.with(|w| {
            w.droplets
                .iter()
                .filter(|d| {
                    !d.off
                        && Instant::now() >= d.active_at
                        && !d.tags.contains(&"ops-draining".to_string())
                        && d.tags.contains(&"ops-managed".to_string())
                })
                .map(|d| (d.name.clone(), d.ip.clone()))
                .collect()
        });
        if !alive.is_empty() && rng.chance(0.6) {
            let (name, ip) = alive[rng.below(alive.len() as u64) as usize].clone();
            let heard = std::cell::Cell::new(false);
            db_try(&|c| {
                heard.set(
                    c.query_one(
                        r#"SELECT count(*) FROM "WorkerInstance" WHERE name = $1"#,
                        &[&name],
                    )
                    .map(|r| r.get::<_, i64>(0) > 0)
                    .unwrap_or(false),
                )
            });
            let heard = heard.get();
            let id = format!("soak{i}");
            if heard
                && !fleet.down.lock().unwrap().contains(&ip)
                && db_try(&|c| webapp::executing_run(c, &id, &name, "small-1x"))
            {
                busy.entry(name).or_default().push(format!("run_{id}"));
                fault("run-starts", &mut faults);
            }
        }
        for runs in busy.values_mut() {
            runs.retain(|r| {
                let done = rng.chance(0.08)
                    && db_try(&|c| webapp::finish_run(c, r.trim_start_matches("run_")));
                !done
            });
        }
        busy.retain(|_, r| !r.is_empty());
        api.with(|w| {
            for d in w.droplets.iter_mut() {
                if d.tags.contains(&"ops-draining".to_string()) && !busy.contains_key(&d.name) {
                    d.off = true;
                }
            }
        });
        let pin = if (i / 40) % 2 == 1 {
            "v4.6.0"
        } else {
            "v4.5.12"
        };
        let names: HashMap<u64, String> =
            api.with(|w| w.droplets.iter().map(|d| (d.id, d.name.clone())).collect());

        let (profile, timeout) = if rng.chance(0.25) {
            TIMEOUTS[1]
        } else {
            TIMEOUTS[0]
        };
        let before = api.with(|w| (w.creates.len(), w.deletes.len()));
        // Drained droplets that shut themselves down: no supervisor runs on them any more.
        let off_before: HashSet<u64> =
            api.with(|w| w.droplets.iter().filter(|d| d.off).map(|d| d.id).collect());
        // Droplets still `new` (no public IPv4, no supervisor ever started): one stuck there is
        // replaced after its failed checks, by DigitalOcean's status, webapp or not.
        let unborn_before: HashSet<u64> = api.with(|w| {
            w.droplets
                .iter()
                .filter(|d| Instant::now() < d.active_at)
                .map(|d| d.id)
                .collect()
        });
        let runs_before: i64 = s
            .ops
            .sqlite()
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        let mut cmd = s.ops.command(&["run", profile]);
        if do_refused {
            cmd.env("DIGITALOCEAN_API_URL", &closed);
        }
        cmd.env("TRIGGER_VERSION", pin);
        let t0 = Instant::now();
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let run: Option<Run> = match kill_after {
            Some(after) => {
                std::thread::sleep(after);
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait_with_output();
                killed += 1;
                None
            }
            None => Some(finish(child.wait_with_output().unwrap(), t0.elapsed())),
        };
        let took = t0.elapsed();
        longest = longest.max(took);

        let mut check = |ok: bool, what: String| {
            if !ok {
                violations.push(format!("run {i} ({profile}): {what}"))
            }
        };
        let dead = fleet.down.lock().unwrap().clone();
        // What ops decided this run, from its events (each written right after its call, so
        // a killed run keeps those made before the kill) and its report.
        let events: Vec<(i64, String, String)> = {
            let db = s.ops.sqlite();
            let mut st = db
                .prepare("SELECT id, kind, message FROM events WHERE id > ?1 ORDER BY id")
                .unwrap();
            let rows = st
                .query_map([last_event], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap();
            rows.map(Result::unwrap).collect()
        };
        let mut decided: HashMap<u64, String> = HashMap::new();
        for (id, kind, message) in &events {
            last_event = last_event.max(*id);
            let Some(droplet) = id_in(message) else {
                continue;
            };
            match kind.as_str() {
                "droplet.draining" => {
                    ops_drained.insert(droplet);
                }
                // Every kind a fleet delete is told by (apply.rs `delete_kind`): a dead
                // droplet's replacement and a drain cut short are decisions too (a killed run's
                // `droplet.replaced` was counted as "no decision reported", seed 505 run 224).
                "droplet.deleted" | "droplet.replaced" | "droplet.drain_timed_out" => {
                    decided.insert(droplet, message.clone());
                }
                _ => {}
            }
        }
        // Never kill a run: a droplet with executing runs whose supervisor is alive is deleted
        // only once drained (or past drain_timeout, 1h: never within the soak).
        let killed_runs: Vec<String> = api.with(|w| {
            w.deletes[before.1..]
                .iter()
                .filter(|(id, _)| w.deleted_ips.get(id).is_some_and(|ip| !dead.contains(ip)))
                .filter_map(|(id, _)| names.get(id).map(|n| (id, n)))
                // A droplet ops judged dead (failed unhealthy_after checks) is not a planned
                // delete: there is nothing to save on it. Its reason is in the report, and in
                // the event written right after the delete (a killed run has no report).
                .filter(|(id, n)| {
                    let dead_delete = format!("deleted droplet {n} (id {id}): unhealthy: ");
                    !(run
                        .as_ref()
                        .is_some_and(|r| r.stdout.contains(&dead_delete))
                        || decided.get(id).is_some_and(|m| m.contains(&dead_delete)))
                })
                .filter_map(|(_, n)| busy.get(n).map(|r| format!("{n}: {}", r.join(", "))))
                .collect()
        });
        check(
            killed_runs.is_empty(),
            format!(
                "deleted with executing runs before drain_timeout: {killed_runs:?}; ops said: {}",
                run.as_ref().map_or("(killed)".into(), |r| r
                    .stdout
                    .lines()
                    .filter(|l| l.contains("droplet"))
                    .collect::<Vec<_>>()
                    .join(" | "))
            ),
        );

        // No droplet deleted that ops did not decide to drain or delete: each fleet delete is
        // one ops reported, with its reason; one for a drain only after ops started that drain.
        let undecided: Vec<String> = api.with(|w| {
            w.deletes[before.1..]
                .iter()
                .filter(|(_, tags)| tags.contains(&"ops-managed".to_string()))
                .filter_map(|(id, _)| {
                    let name = names.get(id).cloned().unwrap_or_default();
                    let said = format!("deleted droplet {name} (id {id}): ");
                    let line = decided.get(id).cloned().or_else(|| {
                        run.as_ref().and_then(|r| {
                            r.stdout
                                .lines()
                                .find(|l| l.contains(&said))
                                .map(str::to_string)
                        })
                    });
                    let was_dead = w.deleted_ips.get(id).is_some_and(|ip| dead.contains(ip));
                    match line {
                        Some(l) if l.contains("): drained") || l.contains("): drain timeout") => {
                            (!ops_drained.contains(id))
                                .then(|| format!("{l} (ops never said it started this drain)"))
                        }
                        Some(_) => None,
                        // Killed between the delete and its event: only a droplet ops was
                        // draining or whose supervisor was dead may have gone.
                        None if run.is_none() && (ops_drained.contains(id) || was_dead) => None,
                        None => Some(format!(
                            "{name} (id {id}): no decision reported{}; its events: {:?}",
                            if run.is_none() { " (run killed)" } else { "" },
                            events
                                .iter()
                                .filter(|(_, _, m)| m.contains(&format!("(id {id})")))
                                .collect::<Vec<_>>()
                        )),
                    }
                })
                .collect()
        });
        check(
            undecided.is_empty(),
            format!("droplet(s) deleted that ops did not decide to drain or delete: {undecided:?}"),
        );
        // No image used that ops did not request: a droplet starts from SUPERVISOR_IMAGE or
        // from the image of a snapshot ops asked for, of a bake droplet ops created.
        let unrequested: Vec<String> = api.with(|w| {
            w.creates[before.0..]
                .iter()
                .filter_map(|c| {
                    let image = &c["image"];
                    if let Some(slug) = image.as_str() {
                        return (slug != "ubuntu-24-04-x64")
                            .then(|| format!("{}: {slug}", c["name"]));
                    }
                    let requested = image.as_u64().is_some_and(|id| {
                        w.images.iter().any(|i| {
                            i.id == id
                                && !planted.contains(&i.droplet)
                                && w.snapshots
                                    .iter()
                                    .any(|sn| sn.droplet == i.droplet && sn.name == i.name)
                        })
                    });
                    (!requested).then(|| format!("{}: image {image}", c["name"]))
                })
                .collect()
        });
        check(
            unrequested.is_empty(),
            format!("droplet(s) created from an image ops did not request: {unrequested:?}"),
        );

        let (creates, deletes, ours, foreign_alive, bad_deletes, healthy_deleted) = api.with(|w| {
            let ours = w
                .droplets
                .iter()
                .filter(|d| {
                    d.tags.contains(&TAG.to_string())
                        && d.tags.contains(&"ops-managed".to_string())
                        && !d.tags.contains(&"ops-draining".to_string())
                })
                .count();
            let bad = w
                .deletes
                .iter()
                .filter(|(id, tags)| {
                    let fleet = tags.contains(&TAG.to_string())
                        && tags.contains(&"ops-managed".to_string());
                    let bake = *tags == [bake_tag.clone()] && !planted.contains(id);
                    !(fleet || bake)
                })
                .count();
            // Deleted this run although its supervisor was alive: a fleet droplet whose IP is
            // not among the dead and that had not shut down. A drained droplet that turned
            // itself `off` runs no supervisor: deleting it is right even while the webapp is
            // down (ops judges it by DigitalOcean's status, not by heartbeats, and it had
            // decided to drain it before). Nor does one still `new`: deleting it once its
            // checks failed is right in an outage too (seed 90210's run 790 of a third pass:
            // "still new without a public IPv4 after 13s", counted as healthy before).
            let healthy_deleted = w.deletes[before.1..]
                .iter()
                .filter(|(id, tags)| {
                    tags.contains(&"ops-managed".to_string())
                        && !off_before.contains(id)
                        && !unborn_before.contains(id)
                        && w.deleted_ips.get(id).is_some_and(|ip| !dead.contains(ip))
                })
                .count();
            (
                w.creates[before.0..]
                    .iter()
                    .filter(|c| {
                        c["tags"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|t| t == "ops-managed"))
                    })
                    .count(),
                // Fleet deletes: a bake droplet goes once its image is made, in any run.
                w.deletes[before.1..]
                    .iter()
                    .filter(|(_, tags)| tags.contains(&"ops-managed".to_string()))
                    .count(),
                ours,
                w.droplets.iter().any(|d| d.id == foreign.id),
                bad,
                healthy_deleted,
            )
        });
        check(
            !(webapp_down && healthy_deleted > 0),
            format!(
                "{healthy_deleted} healthy droplet(s) deleted while the webapp was down; deleted (tags): {:?}; ops said: {}",
                api.with(|w| w.deletes[before.1..]
                    .iter()
                    .map(|(id, tags)| format!("{} {tags:?}", names.get(id).cloned().unwrap_or_default()))
                    .collect::<Vec<_>>()),
                run.as_ref().map_or_else(
                    || format!("(killed) events: {:?}", decided.values().collect::<Vec<_>>()),
                    |r| r.stdout.lines().filter(|l| l.contains("droplet")).collect::<Vec<_>>().join(" | ")
                )
            ),
        );
        check(
            ours <= 2,
            format!("{ours} tagged droplets (SUPERVISOR_COUNT + 1 = 2)"),
        );
        check(creates <= 1, format!("{creates} fleet creates in one run"));
        let drained_deletes = api.with(|w| {
            w.deletes[before.1..]
                .iter()
                .filter(|(_, tags)| tags.contains(&"ops-draining".to_string()))
                .count()
        });
        check(
            deletes - drained_deletes <= 1,
            format!("{deletes} fleet deletes in one run ({drained_deletes} of drained droplets)"),
        );
        check(
            bad_deletes == 0 && foreign_alive,
            "a droplet without both tags was deleted".into(),
        );
        check(
            took <= Duration::from_secs(timeout + 5),
            format!("took {took:?}, profile timeout {timeout}s"),
        );
        let integrity: String = s
            .ops
            .sqlite()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        check(integrity == "ok", format!("integrity_check: {integrity}"));
        let runs_after: i64 = s
            .ops
            .sqlite()
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        if let Some(run) = &run {
            check(
                runs_after == runs_before + 1,
                format!("run not recorded ({runs_before} → {runs_after})"),
            );
            check(
                run.code == 0 || run.code == 1,
                format!("exit {}: {}", run.code, run.stderr),
            );
            check(
                !run.stderr.contains("panicked") && !run.stderr.contains("internal error"),
                format!("panic: {}", run.stderr),
            );
        }
    }

    // Faults stop: everything heals; count the runs until the fleet is healthy again.
    api.with(|w| {
        w.faults.clear();
        w.create_fault = None;
        w.boot_after = Duration::from_millis(300);
    });
    fleet.down.lock().unwrap().clear();
    for runs in busy.values() {
        for r in runs {
            let id = r.trim_start_matches("run_").to_string();
            while !db_try(&|c| webapp::finish_run(c, &id)) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    busy.clear();
    fleet.webapp_down.store(false, Ordering::SeqCst);
    *s.webapp.health.lock().unwrap() = (200, "OK".into());
    std::thread::sleep(Duration::from_millis(1500));
    let mut converged_after = None;
    for n in 1..=12 {
        api.with(|w| {
            for d in w.droplets.iter_mut() {
                if d.tags.contains(&"ops-draining".to_string()) {
                    d.off = true;
                }
            }
        });
        let run = s.ops.run(&["run", "health"]);
        let ours: Vec<u64> = api.with(|w| {
            w.droplets
                .iter()
                .filter(|d| d.tags.contains(&"ops-managed".to_string()))
                .map(|d| d.id)
                .collect()
        });
        if run.code == 0
            && ours.len() == 1
            && run.stdout.contains("spec current): healthy")
            && !run.stdout.contains("created")
            && !run.stdout.contains("deleted")
        {
            converged_after = Some(n);
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    let total_faults: usize = faults.values().sum();
    eprintln!("soak: seed {seed}, {runs} runs ({killed} killed with SIGKILL), {total_faults} faults injected, longest run {longest:.2?}, wall time {:.1?}", started.elapsed());
    for (name, n) in &faults {
        eprintln!("soak:   {name:<24} {n}");
    }
    let drains = api.with(|w| w.actions.iter().filter(|(_, k)| k == "shutdown").count());
    eprintln!("soak: {drains} droplets drained (DigitalOcean shutdown) before a planned delete");
    eprintln!("soak: invariant violations: {}", violations.len());
    eprintln!(
        "soak: converged {} fault-free run(s) after faults stopped",
        converged_after
            .map(|n| n.to_string())
            .unwrap_or_else(|| "NOT within 12".into())
    );
    assert!(
        violations.is_empty(),
        "invariant violations:\n{}",
        violations.join("\n")
    );
    assert!(
        converged_after.is_some(),
        "the fleet did not converge to one healthy droplet within 12 runs"
    );
}
