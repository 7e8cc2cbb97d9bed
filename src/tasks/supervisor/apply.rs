//! All writes, in the plan's order (or, in a dry run, what they would be), then the state,
//! then the firewall and one step of the baked image. The only place the fleet changes.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::clients::digitalocean::{DigitalOcean, Droplet, ImageRef, NewDroplet, Size};
use crate::clients::http::refused_outright;
use crate::cloudinit;
use crate::config::SupervisorOptions;
use crate::record::ConfigRecord;
use crate::settings::Settings;
use crate::state::now_ms;
use crate::task::{ActionRecord, ActionType, Outcome, Status, TaskCtx, Typed};

use super::plan::{self, Action, MANAGED_TAG};
use super::store::{
    self, built_key, disk_key, droplet_key, save, Breaker, DropletStatus, ScaleStatus,
    AUTO_SIZE_KEY, BREAKER_KEY, LAST_SEEN_KEY, QUEUE_KEY, REPLACEMENTS_COUNTER, SCALE_KEY,
    SCAN_KEY, SIZES_KEY,
};
use super::webapp::ScanState;
use super::{disk, drain, firewall, flow, image, owned};

/// What `apply` keeps for `ops status`, `/metrics` and the next read, besides the droplets.
pub struct Kept {
    pub flow: Option<flow::QueueStatus>,
    pub scan: Option<ScanState>,
    pub sizes: Option<Vec<Size>>,
    pub auto_size: Option<String>,
    pub scale: ScaleStatus,
    /// Each droplet's disk reading (kept or read this run).
    pub disks: BTreeMap<u64, disk::Reading>,
}

/// The baked image new droplets start from this run, if there is one for what is wanted.
fn baked(ctx: &TaskCtx, want: &Option<image::Want>) -> Option<u64> {
    let want = want.as_ref()?;
    image::stored(ctx.state)?.usable(want)
}

/// One step of the baked image; its trouble is a warning, never the fleet's failure.
fn tend_image(ctx: &TaskCtx, api: &DigitalOcean, want: &image::Want, outcome: &mut Outcome) {
    let t = image::tend(ctx, api, want);
    outcome.detail.extend(t.lines);
    outcome.actions.extend(t.actions);
    outcome.warnings.extend(t.warnings);
    if t.planned && outcome.status == Status::Ok {
        outcome.status = Status::Planned;
    }
}

/// What a dry run says of one action. A rolling replace's create also plans the drain of the
/// droplet it replaces (done by a later run, once the new one is healthy): the summary names it.
fn would(
    action: &Action,
    what: String,
    baked: Option<u64>,
    lines: &mut Vec<String>,
    records: &mut Vec<ActionRecord>,
) {
    if let Action::Create {
        name,
        replaces: Some((old, why)),
        ..
    } = action
    {
        lines.push(format!(
            "would replace droplet {old} ({why}): {name} comes up first, {old} goes once it is healthy"
        ));
    }
    let what = match (action, baked) {
        (Action::Create { .. }, Some(id)) => format!("{what}, from the baked image {id}"),
        _ => what,
    };
    let rec = ActionRecord::planned(action.typed(), what);
    lines.push(rec.would());
    records.push(rec);
    if let Action::Create {
        name,
        replaces: Some((old, why)),
        ..
    } = action
    {
        records.push(ActionRecord::planned(
            ActionType::counted("drain", "droplet")
                .name(old)
                .reason(why.clone()),
            format!("drain droplet {old} ({why}) once {name} is healthy (a later run)"),
        ));
    }
}

/// All writes, in the plan's order (or, in a dry run, what they would be), then the state, then
/// one step of the baked image.
pub fn apply(
    mut plan: plan::Plan,
    spec: &plan::Spec,
    ctx: &TaskCtx,
    api: &DigitalOcean,
    record: &ConfigRecord,
    opts: &SupervisorOptions,
    kept: Kept,
) -> anyhow::Result<Outcome> {
    if let Some(why) = &plan.refused {
        bail!("{why}");
    }
    let bake = opts
        .bake
        .then(|| image::Want::of(ctx.settings, &spec.tag, &spec.version.tag));
    let baked = baked(ctx, &bake);
    let s = ctx.settings;
    let now = now_ms();
    let mut lines = plan.lines.clone();
    let mut records = Vec::new();
    let mut planned = false;
    let mut created = false;
    let mut replacements = plan.replacements.clone();
    let at = At {
        ctx,
        api,
        spec,
        record,
        baked,
        now,
    };
    let mut so_far = Done::default();
    let actions = std::mem::take(&mut plan.actions);
    for action in &actions {
        let what = action.describe(spec);
        if ctx.dry_run {
            would(action, what, baked, &mut lines, &mut records);
            planned = true;
            continue;
        }
        created |= matches!(action, Action::Create { .. });
        let (done, applied) = match act(&at, action, &mut replacements, &mut so_far) {
            Ok(d) => d,
            Err(e) => return stopped(&at, plan, so_far, kept, (lines, records), action, e),
        };
        lines.push(done.clone());
        records.push(if applied {
            ActionRecord::done(action.typed(), what, done)
        } else {
            ActionRecord::not_done(action.typed(), what, done)
        });
    }
    plan.actions = actions;
    if !ctx.dry_run {
        keep_shutdowns(&mut plan.assessed, &so_far.shutdowns);
        keep(ctx, &plan.assessed, plan.deletes().collect(), kept, now)?;
    }
    let mut failures = plan.failures.clone();
    if firewall::due(opts.firewall, !plan.assessed.is_empty(), created || planned) {
        match firewall::ensure(api, ctx, s, &spec.tag, now, &mut lines, &mut planned) {
            Ok(record) => records.extend(record),
            Err(e) => failures.push(format!("firewall: {e:#}")),
        }
    }
    let mut outcome = if failures.is_empty() {
        Outcome::lines(if planned { Status::Planned } else { Status::Ok }, lines)
    } else {
        failures.append(&mut lines);
        Outcome::lines(Status::Failed, failures)
    };
    outcome.actions = records;
    if let Some(want) = &bake {
        // After the fleet's own actions: the fleet never waits for the image.
        tend_image(ctx, api, want, &mut outcome);
    }
    Ok(outcome)
}

/// What [`perform`] did: the report lines, the action records, and the failure that stopped it.
#[derive(Debug, Default)]
pub struct Performed {
    pub lines: Vec<String>,
    pub records: Vec<ActionRecord>,
    pub failure: Option<String>,
}

/// Drains and deletes another decider chose (the migration off droplets), through the same
/// `act` as the fleet's own actions (the drain recorded before its tag, the re-read before a
/// delete, the same events), or in a dry run what they would be. Each drain's shutdown is kept
/// in its record; a deleted droplet's keys and its entry in ops' record go.
pub fn perform(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    spec: &plan::Spec,
    record: &ConfigRecord,
    actions: &[Action],
) -> anyhow::Result<Performed> {
    let at = At {
        ctx,
        api,
        spec,
        record,
        baked: None,
        now: now_ms(),
    };
    let mut replacements = store::load::<Breaker>(ctx.state, BREAKER_KEY)
        .unwrap_or_default()
        .replacements;
    let mut so_far = Done::default();
    let mut out = Performed::default();
    for action in actions {
        let what = action.describe(spec);
        if ctx.dry_run {
            would(action, what, None, &mut out.lines, &mut out.records);
            continue;
        }
        match act(&at, action, &mut replacements, &mut so_far) {
            Ok((done, applied)) => {
                out.lines.push(done.clone());
                out.records.push(if applied {
                    ActionRecord::done(action.typed(), what, done)
                } else {
                    ActionRecord::not_done(action.typed(), what, done)
                });
            }
            Err(e) => {
                let failed = format!("{what}: {e:#}");
                out.records
                    .push(ActionRecord::not_done(action.typed(), what, failed.clone()));
                out.failure = Some(failed);
                break;
            }
        }
    }
    if !ctx.dry_run {
        let st = ctx.writable_state()?;
        for (id, sent) in &so_far.shutdowns {
            let key = droplet_key(*id);
            let mut streak: super::facts::Streak = store::load(ctx.state, &key).unwrap_or_default();
            if let Some(d) = streak.drain.as_mut() {
                d.shutdown = *sent;
                store::set(st, &key, &streak, now_ms())?;
            }
        }
        for id in &so_far.deleted {
            for key in [droplet_key(*id), built_key(*id), disk_key(*id)] {
                store::delete(st, &key)?;
            }
            owned::forget(ctx, *id)?;
        }
    }
    Ok(out)
}

/// What one action needs from the run.
struct At<'a> {
    ctx: &'a TaskCtx<'a>,
    api: &'a DigitalOcean<'a>,
    spec: &'a plan::Spec,
    record: &'a ConfigRecord,
    baked: Option<u64>,
    now: i64,
}

/// Performs one action: the line, and whether it was done.
/// What this run's actions did so far, for the state.
#[derive(Default)]
struct Done {
    /// The shutdown action each drain got, kept in its record: (droplet, action id).
    shutdowns: Vec<(u64, Option<u64>)>,
    deleted: Vec<u64>,
}

/// A failed call ends the run's actions, but what was already done stays in the report (text,
/// --json, history) with its reason: a delete followed by a failed create must still say why
/// that droplet went. The state keeps what was done (drains started, their shutdowns) and
/// forgets only the droplets actually deleted.
fn stopped(
    at: &At,
    mut plan: plan::Plan,
    so_far: Done,
    kept: Kept,
    (mut lines, mut records): (Vec<String>, Vec<ActionRecord>),
    action: &Action,
    e: anyhow::Error,
) -> anyhow::Result<Outcome> {
    keep_shutdowns(&mut plan.assessed, &so_far.shutdowns);
    keep(at.ctx, &plan.assessed, so_far.deleted, kept, at.now)?;
    let what = action.describe(at.spec);
    let failed = format!("{what}: {e:#}");
    records.push(ActionRecord::not_done(action.typed(), what, failed.clone()));
    let mut failures = plan.failures;
    failures.push(failed);
    failures.append(&mut lines);
    let mut outcome = Outcome::lines(Status::Failed, failures);
    outcome.config_error = crate::exit::classify(&e) == crate::exit::ExitCode::Config;
    outcome.actions = records;
    Ok(outcome)
}

/// Each drain's shutdown action, kept in its record (a failed call keeps none: it is sent
/// again at the next run).
fn keep_shutdowns(assessed: &mut [plan::Assessed], shutdowns: &[(u64, Option<u64>)]) {
    for (id, sent) in shutdowns {
        if let Some(d) = assessed
            .iter_mut()
            .find(|a| a.id == *id)
            .and_then(|a| a.streak.drain.as_mut())
        {
            d.shutdown = *sent;
        }
    }
}

/// Sends a draining droplet's shutdown again, and keeps the new action's id.
fn resend(
    at: &At,
    id: u64,
    name: &str,
    reason: &str,
    so_far: &mut Done,
) -> anyhow::Result<(String, bool)> {
    let sent = at.api.droplet_action(id, "shutdown")?;
    so_far.shutdowns.push((id, Some(sent.id)));
    let done = format!("sent the shutdown again to draining droplet {name} (id {id}): {reason}");
    log::warn!("{done}");
    at.ctx.changed("droplet.shutdown", done.clone());
    Ok((done, true))
}

fn act(
    at: &At,
    action: &Action,
    replacements: &mut Vec<i64>,
    so_far: &mut Done,
) -> anyhow::Result<(String, bool)> {
    Ok(match action {
        Action::ResetBreaker => {
            store::delete(at.ctx.writable_state()?, BREAKER_KEY)?;
            ("circuit breaker reset by --reset-breaker".to_string(), true)
        }
        Action::Delete {
            id,
            name,
            reason,
            replacement,
        } => {
            let (done, applied, counted) =
                delete(at.ctx, at.api, at.spec, *id, name, reason, *replacement)?;
            if applied {
                so_far.deleted.push(*id);
                at.ctx
                    .changed(delete_kind(*replacement, reason), done.clone());
            }
            if counted {
                count_replacement(at.ctx, replacements, at.now)?;
            }
            (done, applied)
        }
        Action::Drain {
            id,
            name,
            reason,
            signal,
            runs,
            replacement,
        } => {
            let (done, applied, sent) = start_drain(
                at,
                (*id, name),
                reason,
                (*signal, *replacement),
                runs.as_deref(),
            )?;
            so_far.shutdowns.push((*id, sent));
            (done, applied)
        }
        Action::Resend { id, name, reason } => resend(at, *id, name, reason, so_far)?,
        Action::Create {
            name,
            reason,
            standby_for,
            ..
        } => {
            let done = create(
                at.ctx,
                at.api,
                at.spec,
                at.record,
                &CreateRequest {
                    name,
                    reason,
                    baked: at.baked,
                    standby: standby_for.is_some(),
                },
            )?;
            // A replacement made before its droplet goes (make before break) counts now.
            if standby_for.is_some() {
                count_replacement(at.ctx, replacements, now_ms())?;
            }
            (done, true)
        }
    })
}

/// The event of a delete: a replacement the circuit breaker counts (a dead droplet) and a drain
/// cut short with runs on it are for a person now (`notify::important`); the rest is routine.
fn delete_kind(replacement: bool, reason: &str) -> &'static str {
    if replacement {
        "droplet.replaced"
    } else if reason.starts_with(super::drain::TIMED_OUT)
        && reason.contains(super::drain::RUNS_LEFT)
    {
        "droplet.drain_timed_out"
    } else {
        "droplet.deleted"
    }
}

/// Re-reads before deleting: acts only on a droplet that still carries both tags and that ops
/// recorded creating. Returns the line, whether it was deleted, and whether that counts as a
/// replacement.
fn delete(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    spec: &plan::Spec,
    id: u64,
    name: &str,
    reason: &str,
    replacement: bool,
) -> anyhow::Result<(String, bool, bool)> {
    Ok(match api.droplet(id)? {
        Some(_) if !owned::recorded(ctx.state, id) => {
            (owned::refused("deleting", name, id), false, false)
        }
        Some(f) if f.has_tag(&spec.tag) && f.has_tag(MANAGED_TAG) => {
            api.delete_droplet(id)?;
            (
                format!("deleted droplet {name} (id {id}): {reason}"),
                true,
                replacement,
            )
        }
        Some(_) => (
            format!("not deleting droplet {name}: it lost our tags since it was listed"),
            false,
            false,
        ),
        None => (format!("droplet {name} is already gone"), false, false),
    })
}

/// Records the drain, tags the droplet draining and, when it can be told, sends the shutdown its
/// drain service waits in; only a droplet ops recorded creating. Returns the line, whether it
/// drains, and the shutdown action DigitalOcean accepted (a failed call does not stop the
/// drain: the shutdown is sent again at the next run).
fn start_drain(
    at: &At,
    (id, name): (u64, &str),
    reason: &str,
    (signal, replacement): (bool, bool),
    runs: Option<&[String]>,
) -> anyhow::Result<(String, bool, Option<u64>)> {
    let (ctx, api, spec) = (at.ctx, at.api, at.spec);
    if !owned::recorded(ctx.state, id) {
        return Ok((owned::refused("draining", name, id), false, None));
    }
    // Recorded before the tag and the shutdown: the tag alone is never trusted.
    let drain = drain::Drain {
        started_ms: now_ms(),
        reason: reason.to_string(),
        replacement,
        shutdown: None,
    };
    store::record_drain(ctx, id, drain)?;
    api.create_tag(drain::DRAINING_TAG)?;
    api.tag_droplet(drain::DRAINING_TAG, id)?;
    let (told, sent) = match signal.then(|| api.droplet_action(id, "shutdown")) {
        None => (
            "it predates ops' drain: waiting until it is idle".to_string(),
            None,
        ),
        Some(Ok(a)) => (
            "told it to stop taking runs (DigitalOcean shutdown: its drain service waits for the runs on it)".to_string(),
            Some(a.id),
        ),
        Some(Err(e)) => (
            format!("its shutdown failed ({e:#}): sent again at the next run"),
            None,
        ),
    };
    let done = format!(
        "draining droplet {name} (id {id}): {reason}; {}; {told}; deleted once idle or after {}",
        plan::runs_line(runs),
        crate::duration::format(spec.drain_timeout)
    );
    ctx.changed("droplet.draining", done.clone());
    Ok((done, true, sent))
}

/// One replacement for the circuit breaker (kept at once, so a crash cannot forget it) and for
/// `ops_supervisor_replacements_total`.
fn count_replacement(ctx: &TaskCtx, replacements: &mut Vec<i64>, now: i64) -> anyhow::Result<()> {
    ctx.writable_state()?.count(REPLACEMENTS_COUNTER, now)?;
    replacements.push(now);
    save(
        ctx,
        BREAKER_KEY,
        &Breaker {
            replacements: replacements.clone(),
        },
        now,
    )
}

/// What a create is for: the droplet's name, why, and the baked
/// image to start from (`None`: `SUPERVISOR_IMAGE`).
struct CreateRequest<'a> {
    name: &'a str,
    reason: &'a str,
    baked: Option<u64>,
    /// It replaces a failing droplet (make before break): an event a person is told of.
    standby: bool,
}

/// Creates one droplet with our tags and the user-data. From the baked image when
/// there is one; when DigitalOcean refuses it (gone, or a disk too small: a 4xx, so no droplet
/// was made), from `SUPERVISOR_IMAGE` in the same run.
fn create(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    spec: &plan::Spec,
    record: &ConfigRecord,
    made: &CreateRequest,
) -> anyhow::Result<String> {
    let s = ctx.settings;
    let name = made.name;
    let mut new = new_droplet(s, spec, name, cloudinit::render(record, s, name)?);
    let mut from = String::new();
    owned::intend(ctx, name)?;
    let mut send = || -> anyhow::Result<Droplet> {
        Ok(match made.baked {
            Some(id) => {
                new.image = ImageRef::Id(id);
                match api.create_droplet(&new) {
                    Ok(d) => {
                        from = format!(", from the baked image {id}");
                        d
                    }
                    Err(e) if refused(&e) => {
                        log::warn!(
                            "the baked image {id} was refused ({e:#}): creating {name} from {}",
                            s.supervisor_image
                        );
                        from = format!(
                            ", from {} (DigitalOcean refused the baked image {id}: {e:#})",
                            s.supervisor_image
                        );
                        new.image = ImageRef::Slug(s.supervisor_image.clone());
                        image::forget(ctx)?;
                        api.create_droplet(&new)?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => api.create_droplet(&new)?,
        })
    };
    let d = match send() {
        Ok(d) => d,
        Err(e) => {
            if refused_outright(&e) {
                owned::refused_create(ctx, name)?;
            }
            return Err(e);
        }
    };
    owned::created(ctx, d.id, &d.name)?;
    ctx.changed(
        if made.standby {
            "droplet.replacement_created"
        } else {
            "droplet.created"
        },
        format!(
            "created droplet {} (id {}{from}): {}",
            d.name, d.id, made.reason
        ),
    );
    save(ctx, &built_key(d.id), &spec.parts, now_ms())?;
    Ok(format!(
        "created droplet {} (id {}, {}, {}{from}): {}",
        d.name, d.id, spec.size, s.supervisor_region, made.reason
    ))
}

/// The create request: the spec's size and tags (the ones `Action::describe` names), the
/// settings' region, image and keys, and the user-data.
pub fn new_droplet(s: &Settings, spec: &plan::Spec, name: &str, user_data: String) -> NewDroplet {
    NewDroplet {
        name: name.to_string(),
        region: s.supervisor_region.clone(),
        size: spec.size.clone(),
        image: ImageRef::Slug(s.supervisor_image.clone()),
        ssh_keys: s.supervisor_ssh_keys.clone(),
        tags: spec.tags(),
        user_data,
        monitoring: true,
    }
}

/// DigitalOcean refused the image itself (no droplet was made): a 400, 404 or 422 that names
/// the image (not, say, the droplet limit).
fn refused(e: &anyhow::Error) -> bool {
    let m = e.to_string();
    ["HTTP 400", "HTTP 404", "HTTP 422"]
        .iter()
        .any(|c| m.contains(c))
        && m.to_ascii_lowercase().contains("image")
}

/// Streaks for the droplets that exist (dropped for those gone or deleted), what was seen for
/// `ops status`, and the queue.
fn keep(
    ctx: &TaskCtx,
    assessed: &[plan::Assessed],
    deleted: Vec<u64>,
    observed: Kept,
    now: i64,
) -> anyhow::Result<()> {
    let st = ctx.writable_state()?;
    let keep: Vec<String> = assessed
        .iter()
        .filter(|a| !deleted.contains(&a.id))
        .flat_map(|a| [droplet_key(a.id), built_key(a.id), disk_key(a.id)])
        .collect();
    store::prune(st, &keep, now)?;
    let seen: Vec<DropletStatus> = assessed
        .iter()
        .map(|a| DropletStatus {
            id: a.id,
            name: a.name.clone(),
            ip: a.ip.clone(),
            health: format!("{:?}", a.health).to_ascii_lowercase(),
            fails: a.streak.fails,
            spec_current: a.current,
            age_secs: a.age_secs,
            deleted: deleted.contains(&a.id),
            heartbeat_age_secs: a.heartbeat_age,
            executing_runs: a.runs.as_ref().map(Vec::len),
            draining: a.streak.drain.is_some(),
            disk: observed.disks.get(&a.id).map(disk::Reading::status),
        })
        .collect();
    store::set(st, LAST_SEEN_KEY, &seen, now)?;
    match observed.flow {
        Some(q) => store::set(st, QUEUE_KEY, &q, now)?,
        None => store::delete(st, QUEUE_KEY)?,
    }
    if let Some(scan) = observed.scan {
        store::set(st, SCAN_KEY, &scan, now)?;
    }
    if let Some(sizes) = observed.sizes {
        store::set(st, SIZES_KEY, &sizes, now)?;
    }
    if let Some(size) = observed.auto_size {
        store::set(st, AUTO_SIZE_KEY, &size, now)?;
    }
    store::set(st, SCALE_KEY, &observed.scale, now)?;
    for a in assessed.iter().filter(|a| !deleted.contains(&a.id)) {
        store::set(st, &droplet_key(a.id), &a.streak, now)?;
    }
    for (id, reading) in &observed.disks {
        store::set(st, &disk_key(*id), reading, now)?;
    }
    Ok(())
}
