//! The fleet, pure: from everything observed this run (time included) to the actions (at most
//! one delete and one create, more when scaling out), the report lines and the findings that
//! fail the task. One droplet's health is health.rs; what an action says and does, action.rs.

use std::time::Duration;

use crate::duration;
use crate::release;
use crate::tasks::supervisor::drain::{self, Drain};

use super::capacity;
use super::diff;
use super::facts::{Instance, Power};
use super::health::{ago, assess, Facts};
use super::marks;
use super::owned;

pub use super::action::{runs_line, Action};
pub use super::health::{confirm_wait, Health, Heartbeat, Rules, Streak, CONFIRM_WITHIN};
pub use super::spec::Spec;

/// Our droplets carry this tag (and the deployment tag); nothing else is ever touched.
pub const MANAGED_TAG: &str = crate::settings::MANAGED_TAG;

/// The webapp's view of our supervisors (one Postgres statement).
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// DATABASE_URL is not set.
    NotConfigured,
    /// Not asked: there are more droplets than ops may act on.
    Skipped,
    /// The token's group: the heartbeats are from it (its queue is judged in `flow`).
    Seen { group: String, queue: String },
    /// Why there is no view (token unknown, tables missing, database unreachable).
    Unavailable(String),
}

/// Everything `plan` needs, observed before deciding; time comes in here.
#[derive(Debug, Clone)]
pub struct Observation {
    pub now_ms: i64,
    /// `yymmddHHMMSS-<12 random hex>` of now, for a new droplet's name (the random part: nobody
    /// can guess the name before ops sends its create).
    pub stamp: String,
    /// Droplets with both our tags (and ops' record of creating them).
    pub droplets: Vec<Instance>,
    /// Droplets with the deployment tag but not `ops-managed`: (name, id).
    pub foreign: Vec<(String, u64)>,
    /// Droplets with both our tags that ops has no record of creating (never acted on, never
    /// in `droplets`), and those adopted into the record this run.
    pub owned: owned::Found,
    pub view: View,
    /// When the circuit breaker counted replacements (Unix ms).
    pub replacements: Vec<i64>,
    /// `GET <origin>/healthcheck`, asked only when a droplet is silent (`needs_webapp_check`).
    pub webapp_check: Option<Result<(), String>>,
    /// Other worker groups: (name, seconds since the youngest heartbeat of any of their
    /// instances). Groups that went silent at the same moment as ours point at the webapp.
    pub other_groups: Vec<(String, f64)>,
}

/// One droplet after assessment.
#[derive(Debug, Clone)]
pub struct Assessed {
    pub id: u64,
    pub name: String,
    pub ip: Option<String>,
    pub health: Health,
    pub streak: Streak,
    /// Carries the current spec tag.
    pub current: bool,
    pub age_secs: i64,
    pub note: String,
    pub heartbeat_age: Option<f64>,
    /// The version recorded in its tags.
    pub version: Option<String>,
    pub built: diff::Parts,
    /// Runs executing on it (friendly ids); `None`: not known this run.
    pub runs: Option<Vec<String>>,
    pub power: Power,
    /// Can be told to stop taking runs (created with the drain service).
    pub capable: bool,
    pub shutdown: drain::Shutdown,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// ops refuses to act at all (too many droplets): the task fails with this.
    pub refused: Option<String>,
    pub actions: Vec<Action>,
    /// What was seen, in report order.
    pub lines: Vec<String>,
    /// What fails the task.
    pub failures: Vec<String>,
    /// Oldest first.
    pub assessed: Vec<Assessed>,
    /// The circuit breaker's replacements within the window, after a reset.
    pub replacements: Vec<i64>,
    /// The webapp is the likely cause of the silences this run (nothing was decided on them).
    pub webapp_blamed: bool,
}

impl Plan {
    pub fn deletes(&self) -> impl Iterator<Item = u64> + '_ {
        self.actions.iter().filter_map(|a| match a {
            Action::Delete { id, .. } => Some(*id),
            _ => None,
        })
    }
}

/// The whole decision, pure.
pub fn plan(obs: &Observation, spec: &Spec) -> Plan {
    let mut p = Plan {
        lines: vec![spec.version_line.clone()],
        ..Plan::default()
    };
    breaker(obs, spec, &mut p);
    p.lines
        .extend(owned::foreign_lines(&obs.foreign, &spec.tag, MANAGED_TAG));
    p.lines.extend(super::owned::lines(&obs.owned));
    if let Some(why) = refusal(obs, spec) {
        p.refused = Some(why);
        return p;
    }
    view_findings(&obs.view, spec, &mut p);
    let breaker_open = p.replacements.len() as u32 >= spec.max_replacements;
    let (lines, failures) = marks::unrecorded_drains(&obs.droplets, &obs.owned, breaker_open);
    p.lines.extend(lines);
    p.failures.extend(failures);
    p.assessed = assess_all(obs, spec, breaker_open);
    let blame = (spec.blame_webapp)
        .then(|| webapp_blame(obs, spec, &p.assessed))
        .flatten();
    if let Some(why) = &blame {
        hold(&mut p.assessed, obs, why);
        p.webapp_blamed = true;
    }
    let elsewhere = elsewhere_findings(obs);
    let breaker_open = p.replacements.len() as u32 >= spec.max_replacements;
    let finished = finish_drains(&mut p.assessed, obs, spec, &mut p.failures);
    let serving = serving(&p.assessed);
    let (delete, create) = if blame.is_some() || !elsewhere.is_empty() {
        (None, None)
    } else {
        let delete = choose_delete(
            &serving,
            spec,
            obs.now_ms,
            breaker_open,
            &p.replacements,
            &mut p.failures,
        )
        .map(|(action, why)| leave(action, why, &serving, spec));
        let create = choose_create(
            &serving,
            &p.assessed,
            spec,
            breaker_open,
            delete.as_ref(),
            &obs.stamp,
        );
        (delete, create)
    };
    let more = scale_out(&serving, &p.assessed, spec, create.as_ref(), &obs.stamp);
    p.lines.extend(spec.scale_line.clone());
    mark_draining(&mut p.assessed, delete.as_ref(), obs.now_ms);
    p.lines
        .extend(p.assessed.iter().map(|a| droplet_line(a, spec)));
    if p.assessed.is_empty() {
        p.lines
            .push(format!("no droplet tagged {} and {MANAGED_TAG}", spec.tag));
    }
    p.failures.extend(elsewhere);
    if let Some(why) = blame {
        p.failures.push(format!(
            "the webapp is the likely cause, not the supervisors: {why}. Nothing is replaced and no failure is counted while it lasts; check the webapp on Railway (its deployments, logs and database)"
        ));
    }
    unhealthy_findings(&mut p, spec, delete.as_ref(), create.as_ref());
    p.actions.extend(finished);
    p.actions.extend(delete);
    p.actions.extend(create);
    p.actions.extend(more);
    p
}

/// The circuit breaker's replacements within its window, or its reset.
fn breaker(obs: &Observation, spec: &Spec, p: &mut Plan) {
    let window = spec.replacement_window.as_millis() as i64;
    if spec.reset_breaker {
        p.actions.push(Action::ResetBreaker);
    } else {
        p.replacements = obs
            .replacements
            .iter()
            .copied()
            .filter(|t| obs.now_ms - t < window)
            .collect();
    }
}

/// Each droplet failing and not yet replaced fails the task (the alert comes on the first
/// failed check), saying whether its replacement starts now.
fn unhealthy_findings(p: &mut Plan, spec: &Spec, delete: Option<&Action>, create: Option<&Action>) {
    let deleted = delete.and_then(Action::leaving).map(|(id, _)| id);
    let standby = create.and_then(|c| match c {
        Action::Create { standby_for, .. } => standby_for.clone(),
        _ => None,
    });
    for a in &p.assessed {
        if a.health == Health::Failing
            && Some(a.id) != deleted
            && a.streak.fails < spec.unhealthy_after
        {
            p.failures.push(format!(
                "droplet {} unhealthy ({}/{} before it is replaced{}): {}",
                a.name,
                a.streak.fails,
                spec.unhealthy_after,
                if standby.as_deref() == Some(a.name.as_str()) {
                    "; its replacement starts now and it goes once that one is healthy"
                } else {
                    ""
                },
                a.note
            ));
        }
    }
}

/// More serving droplets than `max + 1` carry our tags (the draining ones do not count): ops
/// acts on none of them, and asks nothing more about them.
pub fn too_many(droplets: &[Instance], spec: &Spec) -> bool {
    droplets.iter().filter(|d| !d.draining()).count() > spec.count.max(spec.max) + 1
}

/// Why ops refuses to act, when [`too_many`].
fn refusal(obs: &Observation, spec: &Spec) -> Option<String> {
    if !too_many(&obs.droplets, spec) {
        return None;
    }
    let serving_seen = obs.droplets.iter().filter(|d| !d.draining()).count();
    let list: Vec<String> = obs
        .droplets
        .iter()
        .filter(|d| !d.draining())
        .map(|d| {
            format!(
                "{} (id {}, {})",
                d.name,
                d.id,
                d.ip.as_deref().unwrap_or("no IP")
            )
        })
        .collect();
    Some(format!(
        "refusing to act: {} droplets carry {} and {MANAGED_TAG}, more than the {} ops ever keeps (max, or SUPERVISOR_COUNT, + 1): {}. Delete the extras by hand (or raise max); ops changes nothing until then",
        serving_seen,
        spec.tag,
        spec.count.max(spec.max) + 1,
        list.join(", ")
    ))
}

/// Scaling out by more than one: when the load wants several more droplets than serve, the
/// run creates them together (up to `extra_creates` beyond the first), each with its own name.
fn scale_out(
    serving: &[Assessed],
    all: &[Assessed],
    spec: &Spec,
    first: Option<&Action>,
    stamp: &str,
) -> Vec<Action> {
    let Some(Action::Create {
        name,
        replaces: None,
        standby_for: None,
        ..
    }) = first
    else {
        return Vec::new();
    };
    let live = serving
        .iter()
        .filter(|a| a.current && a.health != Health::Failing && !dead(a, spec))
        .count();
    let more = capacity::beyond_first(spec.count, live).min(spec.extra_creates);
    let mut taken: Vec<String> = all.iter().map(|a| a.name.clone()).collect();
    taken.push(name.clone());
    let mut out = Vec::new();
    let mut k = 2;
    while out.len() < more {
        let candidate = format!("{}-{stamp}-{k}", spec.tag);
        k += 1;
        if taken.contains(&candidate) {
            continue;
        }
        taken.push(candidate.clone());
        out.push(Action::Create {
            name: candidate,
            reason: format!(
                "scale out: {} of {} supervisor droplet(s) wanted",
                live + 2 + out.len(),
                spec.count
            ),
            replaces: None,
            standby_for: None,
        });
    }
    out
}

/// The droplets that serve (all but the draining ones).
fn serving(all: &[Assessed]) -> Vec<Assessed> {
    all.iter()
        .filter(|a| a.health != Health::Draining)
        .cloned()
        .collect()
}

/// A drain chosen this run starts now: kept in the droplet's streak.
fn mark_draining(all: &mut [Assessed], action: Option<&Action>, now_ms: i64) {
    let Some(Action::Drain {
        id,
        reason,
        replacement,
        ..
    }) = action
    else {
        return;
    };
    if let Some(a) = all.iter_mut().find(|a| a.id == *id) {
        a.streak.drain = Some(Drain {
            started_ms: now_ms,
            reason: reason.clone(),
            replacement: *replacement,
            shutdown: None,
        });
        a.health = Health::Draining;
        a.note = format!("draining from now: {reason}");
    }
}

/// The draining droplets: each deleted once drained (or its timeout passed), else its note says
/// how the drain goes; a shutdown that did not take is sent again, or reported.
fn finish_drains(
    assessed: &mut [Assessed],
    obs: &Observation,
    spec: &Spec,
    failures: &mut Vec<String>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for a in assessed.iter_mut().filter(|a| a.health == Health::Draining) {
        let Some(d) = a.streak.drain.clone() else {
            continue;
        };
        let facts = drain::Facts {
            name: &a.name,
            off: a.power == Power::Off,
            runs: a.runs.as_deref(),
            drain: &d,
            now_ms: obs.now_ms,
            timeout: spec.drain_timeout,
            capable: a.capable,
            shutdown: a.shutdown.clone(),
        };
        // The droplet's own line says it, once.
        if let Some(line) = drain_next(a.id, &facts, &mut out, failures) {
            a.note = line;
        }
    }
    out
}

/// A recorded drain's next step (drain.rs) as actions: its delete, or its shutdown sent again
/// (one the guest ignored is a failure); the line while it waits. The fleet's plan and the
/// migration off droplets (migrate.rs) both go by it.
pub fn drain_next(
    id: u64,
    facts: &drain::Facts,
    actions: &mut Vec<Action>,
    failures: &mut Vec<String>,
) -> Option<String> {
    match drain::step(facts) {
        drain::Step::Wait(line) => {
            match drain::signal(facts) {
                Some(drain::Signal::Resend(reason)) => actions.push(Action::Resend {
                    id,
                    name: facts.name.to_string(),
                    reason,
                }),
                Some(drain::Signal::Ignored(line)) => failures.push(line),
                None => {}
            }
            Some(line)
        }
        drain::Step::Delete(reason) => {
            actions.push(Action::Delete {
                id,
                name: facts.name.to_string(),
                reason,
                replacement: facts.drain.replacement,
            });
            None
        }
    }
}

/// Why a droplet is chosen to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Dead (failed `unhealthy_after` checks): nothing to save.
    Dead,
    /// Failing, its replacement serves: drained unless it is known to run nothing.
    Failing,
    /// Planned: spec drift or a surplus.
    Planned,
    /// Scaling in: idle for `scale_in_after`, drained all the same (a run may arrive meanwhile).
    ScaleIn,
}

/// A delete for a planned reason becomes a drain (unless `drain_timeout` is zero, or the
/// droplet is known to run nothing).
fn leave(action: Action, why: Why, all: &[Assessed], spec: &Spec) -> Action {
    let Action::Delete {
        id,
        name,
        reason,
        replacement,
    } = action
    else {
        return action;
    };
    let a = all.iter().find(|a| a.id == id);
    let runs = a.and_then(|a| a.runs.clone());
    let drain = !spec.drain_timeout.is_zero()
        && match why {
            Why::Dead => false,
            // Silent, its replacement serving: runs may still execute on it (only its heartbeat
            // may have stopped), so it drains unless it is known to run nothing.
            Why::Failing | Why::Planned => runs.as_ref().is_none_or(|r| !r.is_empty()),
            Why::ScaleIn => true,
        };
    if !drain {
        let reason = match (&runs, why) {
            (Some(r), Why::Planned) if r.is_empty() => {
                format!("{reason}; idle: no run executes on it")
            }
            _ => reason,
        };
        return Action::Delete {
            id,
            name,
            reason,
            replacement,
        };
    }
    Action::Drain {
        id,
        name,
        reason,
        replacement,
        signal: a.is_some_and(|a| a.capable),
        runs,
    }
}

/// Whether a droplet is silent to the webapp this run (its heartbeat is stale, or it was never
/// heard after its grace): only then is the webapp's own health asked (no cost when healthy).
pub fn needs_webapp_check(obs: &Observation, spec: &Spec) -> bool {
    spec.blame_webapp
        && obs.droplets.iter().any(|d| match d.heartbeat {
            Heartbeat::Age(a) => a >= spec.rules.stale_after.as_secs_f64(),
            // Past the time a healthy boot takes to heartbeat (about 4 minutes), or its grace.
            Heartbeat::Never => {
                d.age_secs >= BOOT_EXPECTED_SECS.min(spec.rules.boot_grace.as_secs() as i64)
            }
            Heartbeat::NoView | Heartbeat::Elsewhere { .. } => false,
        })
}

/// Droplets of ours that heartbeat into another worker group: ops' token is not theirs (a new
/// host, or lost state), so the fleet is left as it is and the task fails with the fix.
fn elsewhere_findings(obs: &Observation) -> Vec<String> {
    let ours = match &obs.view {
        View::Seen { group, .. } => group.as_str(),
        _ => "?",
    };
    obs.droplets
        .iter()
        .filter_map(|d| match &d.heartbeat {
            Heartbeat::Elsewhere { group, .. } => Some(format!(
                "droplet {} heartbeats into worker group {group}, not ours ({ours}): ops does not have that group's token. Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN to that group's token; ops creates and deletes no droplet until then",
                d.name
            )),
            _ => None,
        })
        .collect()
}

/// A droplet heartbeats about 4 minutes after its create (active 1 min, cloud-init and pulls
/// 2.5 min, first heartbeat 30 s after start); one still silent at 5 minutes makes ops ask
/// whether the webapp is there to hear it.
const BOOT_EXPECTED_SECS: i64 = 300;

/// "The webapp stopped recording heartbeats" rather than "this supervisor stopped": its
/// `/healthcheck` fails, or every supervisor that was heartbeating went silent at once (two or
/// more), or another worker group's supervisors went silent at the same moment as ours.
/// `None` when nothing is silent or the silence is this supervisor's own.
fn webapp_blame(obs: &Observation, spec: &Spec, assessed: &[Assessed]) -> Option<String> {
    // A droplet booting through the webapp's outage does not make the run ok either.
    let waiting = |a: &Assessed| matches!(a.health, Health::Failing | Health::Booting);
    if let (Some(Err(e)), true) = (&obs.webapp_check, assessed.iter().any(waiting)) {
        return Some(format!("the webapp is down or unreachable ({e})"));
    }
    if !assessed.iter().any(|a| a.health == Health::Failing) {
        return None;
    }
    let stale = spec.rules.stale_after.as_secs_f64();
    let heard: Vec<f64> = obs
        .droplets
        .iter()
        .filter_map(|d| match d.heartbeat {
            Heartbeat::Age(a) => Some(a),
            _ => None,
        })
        .collect();
    let silent: Vec<f64> = heard.iter().copied().filter(|a| *a >= stale).collect();
    let (Some(young), Some(old)) = (
        silent.iter().copied().reduce(f64::min),
        silent.iter().copied().reduce(f64::max),
    ) else {
        return None;
    };
    let at_once = old - young < stale;
    if silent.len() >= 2 && silent.len() == heard.len() && at_once {
        return Some(format!(
            "all {} supervisors went silent at once (for {}): the webapp is not recording heartbeats",
            silent.len(),
            ago(young)
        ));
    }
    if silent.len() < heard.len() {
        // One of ours is heard: the webapp records heartbeats.
        return None;
    }
    let witness = obs
        .other_groups
        .iter()
        .find(|(_, a)| *a >= stale && (a - young).abs() < stale);
    witness.map(|(name, a)| {
        format!(
            "worker group {name:?} went silent at the same moment (for {}) as ours (for {}): the webapp is not recording heartbeats",
            ago(*a),
            ago(young)
        )
    })
}

/// While the webapp is blamed: a failing droplet is held, its streak left as it was.
fn hold(assessed: &mut [Assessed], obs: &Observation, why: &str) {
    for a in assessed.iter_mut().filter(|a| a.health == Health::Failing) {
        if let Some(d) = obs.droplets.iter().find(|d| d.id == a.id) {
            a.streak = d.prev.clone();
        }
        a.health = Health::Held;
        a.note = format!("held, not counted ({why}): {}", a.note);
    }
}

/// The view's line, and a failure when ops is blind.
fn view_findings(view: &View, spec: &Spec, p: &mut Plan) {
    match view {
        View::NotConfigured => p
            .lines
            .push("webapp view: DATABASE_URL is not set, health comes from /health only".into()),
        View::Unavailable(why) if !spec.health_sources => p
            .failures
            .push(format!("cannot see the supervisors: {why}")),
        View::Unavailable(why) => p.lines.push(format!(
            "webapp view unavailable ({why}): health comes from /health only"
        )),
        View::Skipped | View::Seen { .. } => {}
    }
}

/// Every droplet's health, oldest first.
fn assess_all(obs: &Observation, spec: &Spec, breaker_open: bool) -> Vec<Assessed> {
    let mut out: Vec<Assessed> = obs
        .droplets
        .iter()
        .map(|d| {
            let verdict = assess(
                &Facts {
                    name: &d.name,
                    power: &d.power,
                    has_ip: d.ip.is_some(),
                    age_secs: d.age_secs,
                    heartbeat: d.heartbeat.clone(),
                    http: d.http.clone(),
                    prev: &d.prev,
                    now_ms: obs.now_ms,
                },
                &spec.rules,
            );
            let (health, streak, note) = if marks::draining(d, &obs.owned, breaker_open) {
                let mut streak = d.prev.clone();
                let drain = streak.drain.get_or_insert_with(|| Drain {
                    started_ms: obs.now_ms,
                    reason: marks::LOST_REASON.into(),
                    replacement: true,
                    shutdown: None,
                });
                let note = format!("draining: {}", drain.reason);
                (Health::Draining, streak, note)
            } else {
                (verdict.health, verdict.streak, verdict.note)
            };
            let mut streak = streak;
            match d.runs.as_deref() {
                Some([]) => {
                    streak.idle_since = streak.idle_since.or(Some(obs.now_ms));
                }
                Some(_) => streak.idle_since = None,
                None => {}
            }
            Assessed {
                id: d.id,
                name: d.name.clone(),
                ip: d.ip.clone(),
                health,
                streak,
                current: d.current(&spec.spec_tag),
                age_secs: d.age_secs,
                note,
                heartbeat_age: match d.heartbeat {
                    Heartbeat::Age(a) => Some(a),
                    _ => None,
                },
                version: d.version.clone(),
                built: d.built.clone(),
                runs: d.runs.clone(),
                power: d.power.clone(),
                capable: d.capable,
                shutdown: d.shutdown.clone(),
            }
        })
        .collect();
    out.sort_by_key(|a| std::cmp::Reverse(a.age_secs));
    out
}

fn dead(a: &Assessed, spec: &Spec) -> bool {
    a.health == Health::Failing && a.streak.fails >= spec.unhealthy_after
}

/// Why a droplet without the current spec tag is stale: the version and the fields that
/// differ, each with both values (a secret or origin by name only).
fn drift_why(a: &Assessed, spec: &Spec) -> String {
    let why: Vec<String> = release::upgrade_reason(
        &spec.version.source,
        a.version.as_deref(),
        &spec.version.tag,
    )
    .into_iter()
    .chain(diff::changes(&a.built, &spec.parts))
    .collect();
    if why.is_empty() {
        "spec changed".into()
    } else {
        why.join(", ")
    }
}

/// At most one delete: a dead droplet (unless the breaker is open); with make before break, a
/// failing droplet once the others carry the load; else the oldest stale one once the rest carry
/// the load; else the newest surplus current one.
fn choose_delete(
    all: &[Assessed],
    spec: &Spec,
    now_ms: i64,
    breaker_open: bool,
    replacements: &[i64],
    failures: &mut Vec<String>,
) -> Option<(Action, Why)> {
    if let Some(a) = all.iter().find(|a| dead(a, spec)) {
        if !breaker_open {
            let reason = format!(
                "unhealthy: {} consecutive failed health checks ({})",
                a.streak.fails, a.note
            );
            // Droplets other than this one that carry (or will carry) the load: current and
            // not dead. Counted when a create follows; a standby created earlier was counted then.
            let live = all
                .iter()
                .filter(|o| o.id != a.id && o.current && !dead(o, spec))
                .count();
            return Some((delete(a, reason, live < spec.count), Why::Dead));
        }
        failures.push(format!(
            "circuit breaker open: {} replacements within {}; droplet {} is unhealthy but will not be replaced. Investigate (ssh root@{} 'cloud-init status --long; docker compose -f /opt/trigger/docker-compose.yml logs --tail 100'), then run `ops run {} --reset-breaker`",
            replacements.len(),
            duration::format(spec.replacement_window),
            a.name,
            a.ip.as_deref().unwrap_or("<ip>"),
            spec.profile
        ));
    }
    failing_delete(all, spec)
        .or_else(|| stale_delete(all, spec))
        .or_else(|| surplus_delete(all, spec, now_ms))
}

fn delete(a: &Assessed, reason: String, replacement: bool) -> Action {
    Action::Delete {
        id: a.id,
        name: a.name.clone(),
        reason,
        replacement,
    }
}

/// The healthy droplets other than `skip`.
fn healthy_without(all: &[Assessed], skip: u64) -> usize {
    all.iter()
        .filter(|a| a.id != skip && a.health == Health::Healthy)
        .count()
}

/// Make before break: a failing droplet goes as soon as the others are healthy enough.
fn failing_delete(all: &[Assessed], spec: &Spec) -> Option<(Action, Why)> {
    if !spec.standby {
        return None;
    }
    let a = all
        .iter()
        .find(|a| a.health == Health::Failing && healthy_without(all, a.id) >= spec.count)?;
    let reason = format!(
        "unhealthy ({}/{}: {}); its replacement is healthy",
        a.streak.fails, spec.unhealthy_after, a.note
    );
    Some((delete(a, reason, false), Why::Failing))
}

/// Rolling replace: the oldest stale droplet goes once the rest can carry the load.
fn stale_delete(all: &[Assessed], spec: &Spec) -> Option<(Action, Why)> {
    let a = all.iter().find(|a| !a.current)?;
    let healthy_current = all.iter().any(|o| o.current && o.health == Health::Healthy);
    if healthy_without(all, a.id) < spec.count || !healthy_current {
        return None;
    }
    let reason = format!(
        "spec drift ({}): replaced by a healthy droplet with the current spec",
        drift_why(a, spec)
    );
    Some((delete(a, reason, false), Why::Planned))
}

/// A surplus (a standby whose droplet recovered, say): the newest goes, the least likely to
/// be running tasks; never one the load needs. Scaling in: the newest droplet that executed
/// nothing for `scale_in_after`.
fn surplus_delete(all: &[Assessed], spec: &Spec, now_ms: i64) -> Option<(Action, Why)> {
    let current: Vec<&Assessed> = all.iter().filter(|a| a.current).collect();
    if current.len() <= spec.count {
        return None;
    }
    let Some(idle_for) = spec.scale_in_after else {
        let newest = current.last()?;
        if healthy_without(all, newest.id) < spec.count {
            return None;
        }
        let reason = format!(
            "more than SUPERVISOR_COUNT={} droplets with the current spec",
            spec.count
        );
        return Some((delete(newest, reason, false), Why::Planned));
    };
    let idle = |a: &&&Assessed| {
        a.health == Health::Healthy
            && a.streak
                .idle_since
                .is_some_and(|t| now_ms - t >= idle_for.as_millis() as i64)
    };
    let a = current.iter().rev().find(idle)?;
    if healthy_without(all, a.id) < spec.count {
        return None;
    }
    let reason = format!(
        "scale in: {}; it executed nothing for {}",
        spec.scale_line
            .as_deref()
            .unwrap_or("the load needs fewer droplets"),
        duration::format(idle_for)
    );
    Some((delete(a, reason, false), Why::ScaleIn))
}

/// At most one create: when fewer live current droplets than wanted remain and one more fits.
fn choose_create(
    all: &[Assessed],
    named: &[Assessed],
    spec: &Spec,
    breaker_open: bool,
    delete: Option<&Action>,
    stamp: &str,
) -> Option<Action> {
    let (deleted, replacing) = match delete.and_then(Action::leaving) {
        Some((id, replacement)) => (Some(id), replacement),
        None => (None, false),
    };
    let remaining: Vec<&Assessed> = all.iter().filter(|a| Some(a.id) != deleted).collect();
    // With make before break a failing droplet is not counted on: its replacement starts now.
    let relied_on = |a: &Assessed| {
        breaker_open || !(dead(a, spec) || (spec.standby && a.health == Health::Failing))
    };
    let live_current = remaining
        .iter()
        .filter(|a| a.current && relied_on(a))
        .count();
    if capacity::to_create(spec.count, live_current) == 0 || remaining.len() > spec.count {
        return None;
    }
    let failing = remaining
        .iter()
        .find(|a| a.current && a.health == Health::Failing && !breaker_open)
        .map(|a| (a.name.clone(), a.streak.fails));
    let stale = remaining
        .iter()
        .find(|a| !a.current)
        .map(|a| (a.name.clone(), drift_why(a, spec)));
    let name = new_name(&spec.tag, stamp, named);
    if let (false, Some((old, fails))) = (replacing, &failing) {
        return Some(Action::Create {
            name,
            reason: format!(
                "replacing unhealthy {old} ({fails}/{}) before it goes: make before break, {old} is deleted once this one is healthy",
                spec.unhealthy_after
            ),
            replaces: None,
            standby_for: Some(old.clone()),
        });
    }
    let (reason, replaces) = match (replacing, stale) {
        (true, _) => (
            format!(
                "replacing unhealthy {}",
                all.iter()
                    .find(|a| Some(a.id) == deleted)
                    .map_or("", |a| a.name.as_str())
            ),
            None,
        ),
        (false, Some((old, why))) => (
            format!("spec drift ({why}): rolling replace of {old}, which stays until this one is healthy"),
            Some((old, why)),
        ),
        (false, None) => (
            format!(
                "{live_current} of {} supervisor droplet(s) running",
                spec.count
            ),
            None,
        ),
    };
    Some(Action::Create {
        name,
        reason,
        replaces,
        standby_for: None,
    })
}

/// `<tag>-<stamp>`, made unique among the droplets seen: the name is the supervisor's
/// TRIGGER_WORKER_INSTANCE_NAME, so two droplets must never share one (a replacement created in
/// the same second as its predecessor would inherit its heartbeat row).
fn new_name(tag: &str, stamp: &str, all: &[Assessed]) -> String {
    let base = format!("{tag}-{stamp}");
    let taken = |n: &str| all.iter().any(|a| a.name == n);
    let mut name = base.clone();
    let mut i = 2;
    while taken(&name) {
        name = format!("{base}-{i}");
        i += 1;
    }
    name
}

fn droplet_line(a: &Assessed, spec: &Spec) -> String {
    format!(
        "droplet {} (id {}, {}, {} old, spec {}): {}{}",
        a.name,
        a.id,
        a.ip.as_deref().unwrap_or("no IP"),
        duration::format(Duration::from_secs(a.age_secs.max(1) as u64)),
        if a.current { "current" } else { "stale" },
        match a.health {
            Health::Failing => format!("failing {}/{}: ", a.streak.fails, spec.unhealthy_after),
            Health::Held => format!("failing {}/{}, ", a.streak.fails, spec.unhealthy_after),
            _ => String::new(),
        },
        a.note
    )
}

/// The fleet decision, one case per test: observations in, actions and findings out.
#[cfg(test)]
mod fleet_tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const SPEC_TAG: &str = "ops-spec-current";

    fn spec() -> Spec {
        Spec {
            count: 1,
            tag: "trigger-supervisor-envabcde".into(),
            spec_tag: SPEC_TAG.into(),
            version: release::supervisor_version(None, Some("v4.5.12")),
            version_line: "supervisor version v4.5.12 (the webapp's)".into(),
            rules: Rules {
                boot_grace: Duration::from_secs(600),
                stale_after: Duration::from_secs(120),
            },
            unhealthy_after: 3,
            max_replacements: 3,
            replacement_window: Duration::from_secs(3600),
            health_sources: false,
            standby: true,
            blame_webapp: true,
            reset_breaker: false,
            profile: "health".into(),
            size: "s-2vcpu-4gb".into(),
            region: "fra1".into(),
            image: "ubuntu-24-04-x64".into(),
            parts: diff::Parts::listed("s-2vcpu-4gb", Some("fra1")),
            drain_timeout: Duration::ZERO,
            max: 0,
            scale_in_after: None,
            extra_creates: 0,
            scale_line: None,
        }
    }

    /// A droplet an hour old with the current spec, heartbeating 10 s ago, seen healthy before.
    fn healthy(id: u64) -> Instance {
        Instance {
            id,
            name: format!("sup-{id}"),
            power: Power::Up,
            ip: Some(format!("192.0.2.{id}")),
            drain_marked: false,
            specs: vec![SPEC_TAG.into()],
            version: Some("v4.5.12".into()),
            capable: false,
            age_secs: 3600 + id as i64,
            prev: Streak {
                fails: 0,
                last_ok: Some(NOW - 60_000),
                last_error: None,
                drain: None,
                idle_since: None,
            },
            built: diff::Parts::listed("s-2vcpu-4gb", Some("fra1")),
            heartbeat: Heartbeat::Age(10.0),
            http: None,
            runs: None,
            shutdown: Default::default(),
        }
    }

    fn silent(id: u64, fails: u32) -> Instance {
        let mut d = healthy(id);
        d.heartbeat = Heartbeat::Age(900.0);
        d.prev.fails = fails;
        d
    }

    fn stale(mut d: Instance, version: &str) -> Instance {
        d.specs = vec!["ops-spec-old".into()];
        d.version = Some(version.into());
        d.capable = false;
        d
    }

    fn obs(droplets: Vec<Instance>) -> Observation {
        Observation {
            now_ms: NOW,
            stamp: "261125150000".into(),
            droplets,
            foreign: Vec::new(),
            owned: Default::default(),
            view: View::Seen {
                group: "g".into(),
                queue: "q".into(),
            },
            replacements: Vec::new(),
            webapp_check: None,
            other_groups: Vec::new(),
        }
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::ResetBreaker => "reset".to_string(),
                Action::Delete { id, .. } => format!("delete {id}"),
                Action::Create { .. } => "create".to_string(),
                Action::Drain { id, .. } => format!("drain {id}"),
                Action::Resend { id, .. } => format!("resend {id}"),
            })
            .collect()
    }

    fn draining_spec() -> Spec {
        Spec {
            drain_timeout: Duration::from_secs(3600),
            ..spec()
        }
    }

    fn with_runs(mut d: Instance, runs: &[&str]) -> Instance {
        d.runs = Some(runs.iter().map(|r| r.to_string()).collect());
        d.capable = true;
        d
    }

    fn draining(mut d: Instance, started_ago_secs: i64) -> Instance {
        d.drain_marked = true;
        d.prev.drain = Some(Drain {
            started_ms: NOW - started_ago_secs * 1000,
            reason: "spec drift".into(),
            replacement: false,
            shutdown: Some(1),
        });
        d
    }

    #[test]
    fn a_stale_droplet_with_runs_is_drained_not_deleted_once_its_replacement_serves() {
        let old = with_runs(stale(healthy(1), "v4.5.10"), &["run_a", "run_b"]);
        let p = plan(&obs(vec![old, healthy(2)]), &draining_spec());
        assert_eq!(kinds(&p), ["drain 1"], "{:?}", p.lines);
        let Action::Drain { signal, runs, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert!(*signal);
        assert_eq!(runs.as_deref().map(|r| r.len()), Some(2));
        let a = p.assessed.iter().find(|a| a.id == 1).unwrap();
        assert_eq!(a.health, Health::Draining);
        assert!(a.streak.drain.is_some(), "the drain is kept in the streak");
        // Without drain_timeout: today's delete.
        let old = with_runs(stale(healthy(1), "v4.5.10"), &["run_a"]);
        assert_eq!(
            kinds(&plan(&obs(vec![old, healthy(2)]), &spec())),
            ["delete 1"]
        );
    }

    #[test]
    fn an_idle_stale_droplet_goes_at_once_and_a_dead_one_is_never_drained() {
        let idle = with_runs(stale(healthy(1), "v4.5.10"), &[]);
        let p = plan(&obs(vec![idle, healthy(2)]), &draining_spec());
        assert_eq!(kinds(&p), ["delete 1"]);
        let dead = with_runs(silent(1, 3), &["run_a"]);
        let p = plan(&obs(vec![dead]), &draining_spec());
        assert_eq!(kinds(&p), ["delete 1", "create"], "{:?}", p.lines);
    }

    #[test]
    fn a_draining_droplet_waits_for_its_runs_and_is_not_counted_as_serving() {
        let d = draining(with_runs(stale(healthy(1), "v4.5.10"), &["run_a"]), 120);
        let p = plan(&obs(vec![d, healthy(2)]), &draining_spec());
        assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
        assert!(
            p.lines.iter().any(|l| l.starts_with("droplet sup-1 ")
                && l.contains("): draining (")
                && l.contains("run_a")),
            "{:?}",
            p.lines
        );
        assert!(
            p.failures.is_empty(),
            "draining is not failing: {:?}",
            p.failures
        );
        // With SUPERVISOR_COUNT=2 the draining one does not count: a second droplet is made.
        let two = Spec {
            count: 2,
            ..draining_spec()
        };
        let d = draining(with_runs(stale(healthy(1), "v4.5.10"), &["run_a"]), 120);
        assert_eq!(kinds(&plan(&obs(vec![d, healthy(2)]), &two)), ["create"]);
    }

    fn scaling(count: usize, max: usize, extra: usize) -> Spec {
        Spec {
            count,
            max,
            scale_in_after: Some(Duration::from_secs(900)),
            extra_creates: extra,
            scale_line: Some(format!("fleet: {count} wanted")),
            ..draining_spec()
        }
    }

    fn idle_for(mut d: Instance, secs: i64) -> Instance {
        d = with_runs(d, &[]);
        d.prev.idle_since = Some(NOW - secs * 1000);
        d
    }

    #[test]
    fn scaling_out_creates_every_droplet_the_load_wants_in_one_run() {
        let p = plan(&obs(vec![healthy(1)]), &scaling(3, 3, 1));
        assert_eq!(kinds(&p), ["create", "create"], "{:?}", p.lines);
        let names: Vec<&String> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_ne!(names[0], names[1]);
        // Without room for more (the droplet limit), one.
        assert_eq!(
            kinds(&plan(&obs(vec![healthy(1)]), &scaling(3, 3, 0))),
            ["create"]
        );
    }

    #[test]
    fn scaling_in_drains_only_a_droplet_idle_for_scale_in_after_newest_first() {
        // Both idle long enough: the newest (id 3: younger) goes, drained.
        let p = plan(
            &obs(vec![idle_for(healthy(2), 3600), idle_for(healthy(1), 3600)]),
            &scaling(1, 3, 0),
        );
        assert_eq!(kinds(&p), ["drain 1"], "{:?}", p.lines);
        // Busy, or idle for less than scale_in_after: nothing goes.
        let busy = with_runs(healthy(1), &["run_a"]);
        let p = plan(
            &obs(vec![idle_for(healthy(2), 3600), busy]),
            &scaling(1, 3, 0),
        );
        assert_eq!(kinds(&p), ["drain 2"]);
        let p = plan(
            &obs(vec![idle_for(healthy(2), 60), idle_for(healthy(1), 60)]),
            &scaling(1, 3, 0),
        );
        assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
        // min: 0: the last idle one goes too.
        let p = plan(&obs(vec![idle_for(healthy(1), 3600)]), &scaling(0, 3, 0));
        assert_eq!(kinds(&p), ["drain 1"]);
    }

    #[test]
    fn idleness_is_kept_in_the_streak_and_ends_with_a_run() {
        let p = plan(&obs(vec![with_runs(healthy(1), &[])]), &scaling(1, 3, 0));
        assert_eq!(p.assessed[0].streak.idle_since, Some(NOW));
        let p = plan(
            &obs(vec![with_runs(idle_for(healthy(1), 60), &["run_a"])]),
            &scaling(1, 3, 0),
        );
        assert_eq!(p.assessed[0].streak.idle_since, None);
    }

    #[test]
    fn a_drained_droplet_is_deleted_when_off_idle_or_past_the_timeout() {
        let mut off = draining(with_runs(stale(healthy(1), "v4.5.10"), &[]), 300);
        off.power = Power::Off;
        assert_eq!(
            kinds(&plan(&obs(vec![off, healthy(2)]), &draining_spec())),
            ["delete 1"]
        );
        let late = draining(
            with_runs(stale(healthy(1), "v4.5.10"), &["run_a", "run_b"]),
            3600,
        );
        let p = plan(&obs(vec![late, healthy(2)]), &draining_spec());
        let Action::Delete { reason, .. } = &p.actions[0] else {
            panic!("{:?}", p.actions)
        };
        assert!(
            reason.contains("run_a, run_b") && reason.contains("retried"),
            "{reason}"
        );
    }

    #[test]
    fn no_droplets_creates_one() {
        let p = plan(&obs(vec![]), &spec());
        assert_eq!(kinds(&p), ["create"]);
        assert!(p.failures.is_empty());
        assert!(p.lines.iter().any(|l| l.starts_with("no droplet tagged")));
        let Action::Create { name, reason, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(name, "trigger-supervisor-envabcde-261125150000");
        assert_eq!(reason, "0 of 1 supervisor droplet(s) running");
    }

    #[test]
    fn one_healthy_droplet_means_nothing_to_do() {
        let p = plan(&obs(vec![healthy(1)]), &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.failures.is_empty());
        assert_eq!(p.assessed[0].health, Health::Healthy);
    }

    #[test]
    fn a_booting_droplet_is_waited_for() {
        let mut d = healthy(1);
        d.age_secs = 60;
        d.prev.last_ok = None;
        d.heartbeat = Heartbeat::Never;
        let p = plan(&obs(vec![d]), &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.failures.is_empty());
        assert_eq!(p.assessed[0].health, Health::Booting);
    }

    #[test]
    fn a_droplet_heartbeating_into_another_group_is_named_and_nothing_is_replaced() {
        // Stale spec and past its grace: without the other group's heartbeat it would be
        // "booting", then "never heard", then replaced.
        let mut d = stale(healthy(1), "v4.5.11");
        d.prev.last_ok = None;
        d.heartbeat = Heartbeat::Elsewhere {
            group: "bootstrap".into(),
            age: 12.0,
        };
        let p = plan(&obs(vec![d]), &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.assessed[0].health, Health::Unknown);
        assert!(
            p.assessed[0]
                .note
                .starts_with("heartbeating into group bootstrap (last heartbeat 12s ago)"),
            "{}",
            p.assessed[0].note
        );
        assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
        assert!(p.failures[0].starts_with(
            "droplet sup-1 heartbeats into worker group bootstrap, not ours (g): ops does not have that group's token. Copy /var/lib/ops from the old host, or set TRIGGER_WORKER_TOKEN"
        ));
        assert_eq!(p.assessed[0].streak.fails, 0, "not counted");
    }

    #[test]
    fn failing_below_unhealthy_after_starts_its_replacement_without_deleting_it() {
        let p = plan(&obs(vec![silent(1, 0)]), &spec());
        assert_eq!(kinds(&p), ["create"]);
        let Action::Create {
            standby_for,
            reason,
            ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert_eq!(standby_for.as_deref(), Some("sup-1"));
        assert!(reason.starts_with("replacing unhealthy sup-1 (1/3) before it goes"));
        assert_eq!(p.failures.len(), 1);
        assert!(p.failures[0].starts_with(
            "droplet sup-1 unhealthy (1/3 before it is replaced; its replacement starts now"
        ));
        // The older policy (simulated only) waited for unhealthy_after.
        let old = Spec {
            standby: false,
            ..spec()
        };
        assert!(plan(&obs(vec![silent(1, 0)]), &old).actions.is_empty());
    }

    #[test]
    fn a_failing_droplet_goes_once_its_replacement_is_healthy_uncounted() {
        let mut new = healthy(2);
        new.age_secs = 300;
        let p = plan(&obs(vec![silent(1, 1), new]), &spec());
        assert_eq!(kinds(&p), ["delete 1"]);
        let Action::Delete {
            replacement,
            reason,
            ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert!(!*replacement, "counted when the replacement was created");
        assert!(reason.contains("its replacement is healthy"), "{reason}");
    }

    #[test]
    fn while_the_replacement_boots_nothing_more_happens_and_a_recovery_drops_it() {
        let mut booting = healthy(2);
        booting.age_secs = 90;
        booting.prev.last_ok = None;
        booting.heartbeat = Heartbeat::Never;
        let p = plan(&obs(vec![silent(1, 1), booting.clone()]), &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        // The silent one reaches unhealthy_after: deleted, not counted again, nothing created.
        let p = plan(&obs(vec![silent(1, 2), booting.clone()]), &spec());
        assert_eq!(kinds(&p), ["delete 1"]);
        assert!(matches!(
            p.actions[0],
            Action::Delete {
                replacement: false,
                ..
            }
        ));
        // It recovers first (a blip): the newest, the replacement, goes; never the healthy one.
        let p = plan(&obs(vec![healthy(1), booting]), &spec());
        assert_eq!(kinds(&p), ["delete 2"]);
    }

    #[test]
    fn the_webapp_down_holds_every_silent_droplet_uncounted() {
        let two = Spec { count: 2, ..spec() };
        let mut o = obs(vec![silent(1, 2), silent(2, 2)]);
        o.webapp_check = Some(Err(
            "GET https://app/healthcheck answered HTTP 500: ERROR".into()
        ));
        assert!(needs_webapp_check(&o, &two));
        let p = plan(&o, &two);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
        assert!(p.failures[0].starts_with(
            "the webapp is the likely cause, not the supervisors: the webapp is down or unreachable (GET https://app/healthcheck answered HTTP 500"
        ));
        for a in &p.assessed {
            assert_eq!((a.health, a.streak.fails), (Health::Held, 2));
        }
    }

    #[test]
    fn a_droplet_booting_through_a_webapp_outage_does_not_make_the_run_ok() {
        let mut booting = healthy(1);
        booting.age_secs = 330;
        booting.prev.last_ok = None;
        booting.heartbeat = Heartbeat::Never;
        let mut o = obs(vec![booting]);
        assert!(
            needs_webapp_check(&o, &spec()),
            "silent past the expected first heartbeat"
        );
        o.webapp_check = Some(Err("GET https://app/healthcheck: connection refused".into()));
        let p = plan(&o, &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(
            p.failures[0].starts_with("the webapp is the likely cause"),
            "{:?}",
            p.failures
        );
        o.webapp_check = Some(Ok(()));
        let p = plan(&o, &spec());
        assert!(
            p.failures.is_empty(),
            "still booting, webapp fine: {:?}",
            p.failures
        );
    }

    #[test]
    fn every_supervisor_silent_at_once_is_the_webapp_even_when_it_answers() {
        let two = Spec { count: 2, ..spec() };
        let mut o = obs(vec![silent(1, 0), silent(2, 0)]);
        o.webapp_check = Some(Ok(()));
        let p = plan(&o, &two);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.failures[0].contains("all 2 supervisors went silent at once"));
        // One silent among heard ones is that supervisor's own failure.
        let p = plan(&obs(vec![silent(1, 0), healthy(2)]), &two);
        assert_eq!(kinds(&p), ["create"]);
        // Silent at very different moments: not "at once".
        let mut early = silent(2, 0);
        early.heartbeat = Heartbeat::Age(5000.0);
        let p = plan(&obs(vec![silent(1, 0), early]), &two);
        assert!(
            !p.failures.iter().any(|f| f.contains("likely cause")),
            "{:?}",
            p.failures
        );
    }

    #[test]
    fn another_group_silent_at_the_same_moment_points_at_the_webapp() {
        let mut o = obs(vec![silent(1, 0)]);
        o.other_groups = vec![("bootstrap".into(), 905.0)];
        let p = plan(&o, &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.failures[0].contains("worker group \"bootstrap\" went silent at the same moment"));
        // A group dead long before ours is no witness.
        o.other_groups = vec![("bootstrap".into(), 7200.0)];
        assert_eq!(kinds(&plan(&o, &spec())), ["create"]);
        assert!(!needs_webapp_check(&obs(vec![healthy(1)]), &spec()));
    }

    #[test]
    fn failing_at_unhealthy_after_is_replaced_delete_then_create() {
        let p = plan(&obs(vec![silent(1, 2)]), &spec());
        assert_eq!(kinds(&p), ["delete 1", "create"]);
        let Action::Delete {
            replacement,
            reason,
            ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert!(*replacement);
        assert!(reason.starts_with("unhealthy: 3 consecutive failed health checks"));
        let Action::Create { reason, .. } = &p.actions[1] else {
            unreachable!()
        };
        assert_eq!(reason, "replacing unhealthy sup-1");
        assert!(
            p.failures.is_empty(),
            "a droplet being replaced is not a failure"
        );
    }

    #[test]
    fn grace_over_without_a_heartbeat_is_failing() {
        let mut d = healthy(1);
        d.age_secs = 900;
        d.prev.last_ok = None;
        d.heartbeat = Heartbeat::Never;
        let p = plan(&obs(vec![d]), &spec());
        assert_eq!(p.assessed[0].health, Health::Failing);
        assert!(p.failures[0].contains("the webapp has never heard from sup-1"));
    }

    #[test]
    fn drift_without_healthy_peer_creates_first_and_keeps_the_old() {
        let p = plan(&obs(vec![stale(healthy(1), "v4.5.10")]), &spec());
        assert_eq!(kinds(&p), ["create"]);
        let Action::Create {
            replaces, reason, ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert_eq!(
            replaces.as_ref(),
            Some(&(
                "sup-1".to_string(),
                "webapp upgraded v4.5.10 → v4.5.12".to_string()
            ))
        );
        assert!(reason.starts_with(
            "spec drift (webapp upgraded v4.5.10 → v4.5.12): rolling replace of sup-1"
        ));
    }

    #[test]
    fn a_size_change_names_both_sizes() {
        let mut old = stale(healthy(1), "v4.5.12");
        old.built = diff::Parts::listed("s-2vcpu-2gb", Some("fra1"));
        let p = plan(&obs(vec![old]), &spec());
        let Action::Create { replaces, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(
            replaces.as_ref().map(|(_, why)| why.as_str()),
            Some("size: s-2vcpu-2gb → s-2vcpu-4gb")
        );
        // Nothing known to differ (no record of what it was built with): said so, not guessed.
        let mut unknown = stale(healthy(1), "v4.5.12");
        unknown.built = diff::Parts::default();
        let p = plan(&obs(vec![unknown]), &spec());
        let Action::Create { replaces, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(replaces.as_ref().unwrap().1, "spec changed");
    }

    #[test]
    fn drift_with_healthy_peer_deletes_the_stale_one() {
        let p = plan(
            &obs(vec![stale(healthy(1), "v4.5.10"), healthy(2)]),
            &spec(),
        );
        assert_eq!(kinds(&p), ["delete 1"]);
        let Action::Delete {
            replacement,
            reason,
            ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert!(
            !*replacement,
            "a rolling replace does not count toward the breaker"
        );
        assert!(reason.contains("replaced by a healthy droplet with the current spec"));
    }

    #[test]
    fn drift_with_a_booting_peer_waits() {
        let mut new = healthy(2);
        new.age_secs = 30;
        new.prev.last_ok = None;
        new.heartbeat = Heartbeat::Never;
        let p = plan(&obs(vec![stale(healthy(1), "v4.5.10"), new]), &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    #[test]
    fn count_plus_one_current_drops_the_newest_surplus() {
        let p = plan(&obs(vec![healthy(1), healthy(2)]), &spec());
        assert_eq!(
            kinds(&p),
            ["delete 1"],
            "the newest (smallest age) goes: the least likely to run tasks"
        );
    }

    #[test]
    fn above_count_plus_one_refuses_to_act() {
        let p = plan(&obs(vec![healthy(1), healthy(2), healthy(3)]), &spec());
        assert!(p.actions.is_empty());
        assert!(p
            .refused
            .as_deref()
            .unwrap()
            .starts_with("refusing to act: 3 droplets"));
    }

    #[test]
    fn breaker_open_blocks_replacement_and_says_how_to_reset() {
        let mut o = obs(vec![silent(1, 5)]);
        o.replacements = vec![NOW - 1000, NOW - 2000, NOW - 3000];
        let p = plan(&o, &spec());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert!(p.failures[0].starts_with("circuit breaker open: 3 replacements within 1h"));
        assert!(p.failures[0].contains("ops run health --reset-breaker"));
    }

    #[test]
    fn breaker_forgets_replacements_outside_the_window_and_resets_on_request() {
        let mut o = obs(vec![silent(1, 5)]);
        o.replacements = vec![NOW - 7_200_000, NOW - 1000, NOW - 2000];
        let p = plan(&o, &spec());
        assert_eq!(p.replacements.len(), 2);
        assert_eq!(kinds(&p), ["delete 1", "create"]);
        o.replacements = vec![NOW - 1000, NOW - 2000, NOW - 3000];
        let reset = Spec {
            reset_breaker: true,
            ..spec()
        };
        let p = plan(&o, &reset);
        assert_eq!(kinds(&p), ["reset", "delete 1", "create"]);
    }

    #[test]
    fn foreign_droplets_are_named_and_never_touched() {
        let mut o = obs(vec![]);
        o.foreign = (1..=7)
            .map(|i| (format!("hand-made-{i}"), 100 + i))
            .collect();
        let p = plan(&o, &spec());
        assert_eq!(kinds(&p), ["create"]);
        assert_eq!(
            p.lines
                .iter()
                .filter(|l| l.starts_with("ignored droplet"))
                .count(),
            5
        );
        assert!(p.lines.iter().any(|l| l
            == "ignored 2 more droplets tagged trigger-supervisor-envabcde without ops-managed"));
    }

    #[test]
    fn at_most_one_delete_and_one_create_per_run() {
        let wide = Spec {
            count: 3,
            blame_webapp: false,
            ..spec()
        };
        let p = plan(
            &obs(vec![silent(1, 4), silent(2, 4), silent(3, 4), silent(4, 4)]),
            &wide,
        );
        let deletes = p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Delete { .. }))
            .count();
        let creates = p
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Create { .. }))
            .count();
        assert!(deletes <= 1 && creates <= 1, "{:?}", p.actions);
        assert_eq!(deletes, 1);
    }

    #[test]
    fn a_new_name_never_repeats_an_existing_one() {
        let mut d = silent(1, 2);
        d.name = "trigger-supervisor-envabcde-261125150000".into();
        let p = plan(&obs(vec![d]), &spec());
        let Action::Create { name, .. } = &p.actions[1] else {
            unreachable!()
        };
        assert_eq!(name, "trigger-supervisor-envabcde-261125150000-2");
    }

    #[test]
    fn no_view_without_health_sources_is_a_failure_and_no_replacement() {
        let mut d = healthy(1);
        d.heartbeat = Heartbeat::NoView;
        let mut o = obs(vec![d]);
        o.view = View::Unavailable("connection refused".into());
        let p = plan(&o, &spec());
        assert!(p.actions.is_empty());
        assert_eq!(
            p.failures[0],
            "cannot see the supervisors: connection refused"
        );
        assert_eq!(p.assessed[0].health, Health::Unknown);
    }

    #[test]
    fn a_dry_run_names_exactly_the_tags_the_create_sends() {
        let env = crate::envfile::Env::from_pairs([("X", "")]);
        let s = crate::settings::Settings::from_env(&env).unwrap();
        // A version whose supervisor drains (the drain tag too), and one before that.
        for version in ["v4.5.12", "v4.0.0"] {
            let spec = Spec {
                version: release::supervisor_version(Some(version), None),
                ..spec()
            };
            let create = Action::Create {
                name: "sup-new".into(),
                reason: "scale out".into(),
                replaces: None,
                standby_for: None,
            };
            let sent = super::super::apply::new_droplet(&s, &spec, "sup-new", String::new()).tags;
            let said = create.describe(&spec);
            assert!(
                said.contains(&format!("tags {}): scale out", sent.join(" "))),
                "{said:?} does not name {sent:?}"
            );
            assert_eq!(
                sent.contains(&drain::CAPABLE_TAG.to_string()),
                version == "v4.5.12",
                "{sent:?}"
            );
            assert!(sent.contains(&crate::cloudinit::BEAT_TAG.to_string()));
        }
    }
}
