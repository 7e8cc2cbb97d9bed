//! The baked image: a private DigitalOcean snapshot of a droplet that has Docker and this
//! supervisor version's images pulled, and no secret (the worker token and secret still come
//! only through user-data at boot), so a new supervisor skips apt and the pulls.
//!
//! Level-triggered like the fleet: DigitalOcean's tags are the truth, the state only spares the
//! reads. A bake is a droplet of its own (`<deployment tag>-bake`, outside the fleet's listing:
//! it never serves runs, so taking the snapshot can lose none) that installs Docker, pulls the
//! images and powers itself off; ops then snapshots it, tags the image, deletes the droplet, and
//! deletes our older images beyond one spare. One step per run; a healthy cycle with a known
//! image asks DigitalOcean nothing (the images are listed again daily).

use serde::{Deserialize, Serialize};

use crate::clients::digitalocean::{DigitalOcean, Droplet, Image, ImageRef, NewDroplet};
use crate::clients::http::refused_outright;
use crate::cloudinit;
use crate::sealed::fingerprint;
use crate::settings::Settings;
use crate::state::now_ms;
use crate::task::{ActionRecord, ActionType, TaskCtx};
use crate::tasks::supervisor::owned;
use crate::tasks::supervisor::store::{IMAGE_KEY as STATE_KEY, NAMESPACE};

/// The bake droplet's size: the smallest, because a droplet made from a snapshot needs a disk at
/// least the snapshot's `min_disk_size` (the bake droplet's disk), and none can be smaller.
pub const BAKE_SIZE: &str = "s-1vcpu-1gb";
/// A bake droplet that has not powered off by then failed (a pull, apt): it is deleted.
pub const BAKE_TIMEOUT_MS: i64 = 45 * 60_000;
/// A snapshot still in progress after this is given up (1–3 minutes per GB is DigitalOcean's
/// figure; the image is about 3 GB).
pub const SNAPSHOT_TIMEOUT_MS: i64 = 2 * 3_600_000;
/// How long a known image is trusted before the images are listed again.
pub const RECHECK_MS: i64 = 24 * 3_600_000;
/// After a failed bake, the next try waits this long (the fleet starts from Ubuntu meanwhile).
pub const RETRY_AFTER_MS: i64 = 6 * 3_600_000;
/// DigitalOcean's price for snapshot storage, USD per GB-month.
pub const PRICE_GB_MONTH: f64 = 0.06;
/// Our images besides the current one that are kept (a version rolled back finds its image).
pub const SPARES: usize = 1;

/// What image the settings want, and the names and tags that make it ours.
#[derive(Debug, Clone)]
pub struct Want {
    /// Over the base image, region, supervisor version and the compose's other images.
    pub key: String,
    pub version: String,
    /// On every image ops baked for this deployment.
    pub owner_tag: String,
    /// On the image of this `key` only.
    pub key_tag: String,
    /// On the bake droplet only (never the deployment tag: the fleet never lists it).
    pub bake_tag: String,
    /// Bake droplets and images are named `<deployment tag>-bake-…`.
    pub prefix: String,
    pub base: String,
    pub region: String,
    pub images: Vec<String>,
}

/// The tag of the bake droplet (and nothing else): `<deployment tag>-bake`.
pub fn bake_tag(deployment_tag: &str) -> String {
    format!("{deployment_tag}-bake")
}

impl Want {
    pub fn of(s: &Settings, deployment_tag: &str, version: &str) -> Want {
        let images = cloudinit::images(s, version);
        // The recipe too (it holds no secret): a fix to how an image is made or sealed bakes
        // a new one.
        let recipe = cloudinit::render_bake(s, version).unwrap_or_default();
        let mut parts = vec![s.supervisor_image.as_str(), s.supervisor_region.as_str()];
        parts.extend(images.iter().map(String::as_str));
        parts.push(&recipe);
        let key = fingerprint(&parts);
        Want {
            key_tag: format!("ops-bake-{key}"),
            key,
            version: version.to_string(),
            owner_tag: format!("{deployment_tag}-image"),
            bake_tag: bake_tag(deployment_tag),
            prefix: format!("{deployment_tag}-bake-"),
            base: s.supervisor_image.clone(),
            region: s.supervisor_region.clone(),
            images,
        }
    }

    /// An image that looks like one ops baked for this deployment: our tag and our name. Looks
    /// only: anyone in the team may tag and name an image so; [`Made`] says which ops made.
    pub fn looks_ours(&self, i: &Image) -> bool {
        i.tags.contains(&self.owner_tag) && i.name.starts_with(&self.prefix)
    }

    /// Our image of this key: recorded, named for the key, and tagged for no other key (our
    /// tags may be gone: someone removed them; it is tagged again).
    fn is_current(&self, made: &Made, i: &Image) -> bool {
        made.image(self, i)
            && i.name.starts_with(&self.keyed())
            && !i
                .tags
                .iter()
                .any(|t| t.starts_with("ops-bake-") && *t != self.key_tag)
            && i.status.as_deref().is_none_or(|s| s == "available")
            && (i.regions.is_empty() || i.regions.contains(&self.region))
    }

    fn looks_like_baker(&self, d: &Droplet) -> bool {
        d.has_tag(&self.bake_tag) && d.name.starts_with(&self.prefix)
    }

    /// Bake droplets and their snapshots are named `<prefix><key>-<12 random hex>`: nobody can
    /// guess the name of the next one from the settings and the clock.
    fn keyed(&self) -> String {
        format!("{}{}-", self.prefix, self.key)
    }
}

/// What the state keeps of the image between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baked {
    /// The `Want::key` this record is about.
    pub key: String,
    pub version: String,
    /// The image ready for `key`.
    pub image: Option<u64>,
    pub image_name: Option<String>,
    pub size_gb: Option<f64>,
    /// Our images in all (the current one and the spares), and their storage.
    pub images: usize,
    pub stored_gb: f64,
    /// When DigitalOcean's images were last listed (ms).
    pub checked_at: i64,
    /// The bake droplet, while one is at work, and since when.
    pub baker: Option<u64>,
    pub baker_since: Option<i64>,
    pub snapshot: Option<Snap>,
    /// The last bake that failed: when, and why.
    pub failed: Option<(i64, String)>,
    /// When the next try may start after it (`None`: `RETRY_AFTER_MS` after it).
    #[serde(default)]
    pub retry_at: Option<i64>,
    /// What ops made, whatever the key: only these are used, drained of nothing, deleted.
    #[serde(default)]
    pub made: Made,
}

/// The bake droplets and images ops made, by id (as `owned.rs` records the fleet's droplets):
/// tags and names anyone in the team can set, this record they cannot. A look-alike is reported,
/// never used for a droplet (an image planted with our tags would start supervisors that hold
/// the worker token), never deleted. A lost state database forgets them all: ops bakes anew and
/// reports the old ones for a person to delete.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Made {
    /// Bake droplets whose id came back from ops' own create call: the only ones snapshotted.
    pub bakers: Vec<u64>,
    /// A bake droplet's create sent, its answer not yet heard: (name, when, ms). Forgotten when
    /// DigitalOcean refuses the create outright (a 4xx: nothing was made).
    pub pending: Option<(String, i64)>,
    /// Bake droplets found by the pending name (a create whose answer was lost): ops' own to
    /// delete, never snapshotted (whoever saw the name listed could have made one like it).
    #[serde(default)]
    pub lost: Vec<u64>,
    pub images: Vec<u64>,
}

impl Made {
    /// An image ops baked: its id recorded (our tags may be gone), our name.
    pub fn image(&self, want: &Want, i: &Image) -> bool {
        self.images.contains(&i.id) && i.name.starts_with(&want.prefix)
    }

    fn baker(&self, want: &Want, d: &Droplet) -> bool {
        want.looks_like_baker(d) && (self.bakers.contains(&d.id) || self.lost.contains(&d.id))
    }

    /// A create whose answer was lost, as for the fleet's droplets (owned.rs): the droplet
    /// listed under the pending name and created since the call (the earliest, if several) is
    /// recorded by id in `lost`, and the name no longer vouches for anything.
    fn settle(&mut self, listed: &[Droplet]) {
        let Some((name, at)) = &self.pending else {
            return;
        };
        if let Some(d) = owned::unheard(listed, name, *at) {
            self.lost.push(d.id);
            self.pending = None;
        }
    }

    fn forget(&mut self, id: u64) {
        self.bakers.retain(|b| *b != id);
        self.lost.retain(|b| *b != id);
    }
}

/// Why a bake droplet found by its pending name is deleted rather than snapshotted.
const LOST: &str = "ops never heard its create's answer, and it snapshots only a bake droplet whose id its own create returned";

/// A snapshot action in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snap {
    pub action: u64,
    pub name: String,
    pub started_at: String,
    pub at: i64,
}

impl Baked {
    /// The image new droplets start from this run, if the record is about what is wanted.
    pub fn usable(&self, want: &Want) -> Option<u64> {
        self.image.filter(|_| self.key == want.key)
    }

    /// The monthly storage cost of our images.
    pub fn cost_monthly(&self) -> f64 {
        self.stored_gb * PRICE_GB_MONTH
    }
}

/// Our images other than `current` to delete: all but the newest `SPARES`.
pub fn beyond_spare<'a>(
    images: &'a [Image],
    want: &Want,
    made: &Made,
    current: u64,
) -> Vec<&'a Image> {
    let mut others: Vec<&Image> = images
        .iter()
        .filter(|i| made.image(want, i) && i.id != current)
        .collect();
    others.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    others.into_iter().skip(SPARES).collect()
}

/// What one run did or found, for the task's outcome.
#[derive(Debug, Default)]
pub struct Tended {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    pub planned: bool,
    /// What changed outside ops (or, in a dry run, would): the run's summary counts them.
    pub actions: Vec<ActionRecord>,
}

impl Tended {
    /// A dry run's step: its line (`would …`) and its record.
    fn would(&mut self, typed: ActionType, what: String) {
        let rec = ActionRecord::planned(typed, what);
        self.lines.push(rec.would());
        self.actions.push(rec);
        self.planned = true;
    }

    /// A change made: its record (`what` as planned, `done` as it went).
    fn did(&mut self, typed: ActionType, what: String, done: &str) {
        self.actions.push(ActionRecord::done(typed, what, done));
    }
}

/// After an API error in a bake (a token without the image scopes, DigitalOcean down), the
/// next try waits this long: a refused request is not repeated every minute.
pub const ERROR_RETRY_MS: i64 = 30 * 60_000;

/// One step of the bake, as far as this run gets. Its trouble is a warning (the fleet does not
/// depend on the image); an API error is kept, with what the step got done before it, so the
/// next try waits `ERROR_RETRY_MS`.
pub fn tend(ctx: &TaskCtx, api: &DigitalOcean, want: &Want) -> Tended {
    let mut st: Baked = load(ctx);
    if st.key != want.key {
        // A new version or base: what was known is about another image (kept as a spare); a
        // bake of it still at work is found in the listing and removed.
        st = Baked {
            key: want.key.clone(),
            version: want.version.clone(),
            made: st.made,
            ..Baked::default()
        };
    }
    let mut out = Tended::default();
    if let Err(e) = step(ctx, api, want, &mut st, &mut out) {
        let why = format!("{e:#}");
        let now = now_ms();
        // Mid-bake too: a refused snapshot request is not sent again every minute.
        st.failed = Some((now, why.clone()));
        st.retry_at = Some(now + ERROR_RETRY_MS);
        let hint = if why.contains("HTTP 403") {
            " (a custom-scoped token needs image:create, image:read, image:update and image:delete, tag:create and the right to read actions, besides the droplet scopes)"
        } else {
            ""
        };
        out.warnings.push(format!(
            "baked image: {why}{hint}; the next try is in {}{}",
            minutes(ERROR_RETRY_MS),
            match st.usable(want) {
                Some(id) => format!("; new droplets still start from image {id}"),
                None => format!("; new droplets start from {} until then", want.base),
            }
        ));
    }
    if !ctx.dry_run {
        if let Err(e) = keep(ctx, &st) {
            out.warnings
                .push(format!("baked image: its record was not kept: {e:#}"));
        }
    }
    out
}

fn step(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let now = now_ms();
    if st.image.is_some() && st.baker.is_none() && now - st.checked_at < RECHECK_MS {
        return Ok(());
    }
    if waiting_to_retry(want, st, now, out) {
        return Ok(());
    }
    let Survey {
        mut images,
        current,
        bakers,
    } = survey(api, want, st, out)?;
    let (bakers, lost): (Vec<Droplet>, Vec<Droplet>) = bakers
        .into_iter()
        .partition(|d| st.made.bakers.contains(&d.id));
    for d in &lost {
        remove_baker(ctx, api, want, st, d.id, LOST, out)?;
    }
    if let Some(cur) = current {
        // A bake droplet left over (a lost answer, a run killed mid-finish) costs money: gone.
        for b in &bakers {
            remove_baker(ctx, api, want, st, b.id, "its image is ready", out)?;
        }
        st.baker = None;
        st.baker_since = None;
        st.snapshot = None;
        retag(ctx, api, want, &cur, out)?;
        prune(ctx, api, want, st, &mut images, cur.id, out)?;
        ready(st, &cur, &images, now);
        return Ok(());
    }
    st.image = None;
    let mut bakers = bakers;
    bakers.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let (mut bakers, stale): (Vec<Droplet>, Vec<Droplet>) = bakers
        .into_iter()
        .partition(|d| d.name.starts_with(&want.keyed()));
    for old in &stale {
        let why = "it bakes an image of another version or base than the one wanted now";
        remove_baker(ctx, api, want, st, old.id, why, out)?;
    }
    for extra in bakers.split_off(bakers.len().min(1)) {
        remove_baker(ctx, api, want, st, extra.id, "a second bake droplet", out)?;
    }
    let Some(baker) = bakers.into_iter().next() else {
        st.snapshot = None;
        start(ctx, api, want, st, now, out)?;
        return Ok(());
    };
    st.baker = Some(baker.id);
    let since = st
        .baker_since
        .unwrap_or(now - baker.age_secs(chrono::Utc::now()) * 1000);
    st.baker_since = Some(since);
    if baker.status != "off" {
        return baking(ctx, api, want, st, &baker, (since, now), out);
    }
    snapshot_step(ctx, api, want, st, &baker, &mut images, now, out)
}

/// After a failed try, until its retry time (after an API error: `retry_at`; after a failed
/// bake, its droplet gone: 6 h): the line saying so.
fn waiting_to_retry(want: &Want, st: &Baked, now: i64, out: &mut Tended) -> bool {
    let Some((at, why)) = &st.failed else {
        return false;
    };
    let retry = st
        .retry_at
        .or((st.baker.is_none()).then_some(at + RETRY_AFTER_MS))
        .unwrap_or(0);
    if now >= retry {
        return false;
    }
    out.lines.push(format!(
        "baked image: the last try failed ({why}); the next try is in {}; new droplets start from {} meanwhile",
        minutes(retry - now),
        st.usable(want).map_or(want.base.clone(), |id| format!("image {id}"))
    ));
    true
}

/// The bake droplet is still up (installing, pulling): waited for, up to `BAKE_TIMEOUT_MS`.
fn baking(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    baker: &Droplet,
    (since, now): (i64, i64),
    out: &mut Tended,
) -> anyhow::Result<()> {
    if now - since > BAKE_TIMEOUT_MS {
        return fail(
            ctx,
            api,
            want,
            st,
            baker.id,
            &format!("bake droplet {} did not power off within {}: its cloud-init failed (read /var/log/cloud-init-output.log on it next time, or set bake: false)", baker.name, minutes(BAKE_TIMEOUT_MS)),
            now,
            out,
        );
    }
    out.lines.push(format!(
        "baked image: bake droplet {} (id {}) is installing Docker and pulling {} ({} so far)",
        baker.name,
        baker.id,
        want.images.join(", "),
        minutes(now - since)
    ));
    Ok(())
}

/// What DigitalOcean holds of ours: the images ops baked, the current one among them, and
/// the bake droplets ops created; look-alikes are named in `out` and left out.
struct Survey {
    images: Vec<Image>,
    current: Option<Image>,
    bakers: Vec<Droplet>,
}

fn survey(
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    out: &mut Tended,
) -> anyhow::Result<Survey> {
    let mut listed = api.private_images(&want.owner_tag)?;
    // Images are listed by our tag; one of ours someone untagged is still ours to use, count
    // and prune: read by its recorded id (no request while the tags are there).
    for id in st.made.images.clone() {
        if listed.iter().any(|i| i.id == id) {
            continue;
        }
        match api.image(&id.to_string())? {
            Some(i) => listed.push(i),
            None => st.made.images.retain(|m| *m != id),
        }
    }
    let (images, strangers): (Vec<Image>, Vec<Image>) = listed
        .into_iter()
        .filter(|i| st.made.image(want, i) || want.looks_ours(i))
        .partition(|i| st.made.image(want, i));
    for i in &strangers {
        out.lines.push(format!(
            "image {} (id {}) carries our tag but ops has no record of baking it: never used for a droplet, never deleted (delete it yourself if it is an old one of ours)",
            i.name, i.id
        ));
    }
    let current = images
        .iter()
        .filter(|i| want.is_current(&st.made, i))
        .max_by(|a, b| a.created_at.cmp(&b.created_at))
        .cloned();
    let listed: Vec<Droplet> = api
        .droplets_by_tag(&want.bake_tag)?
        .into_iter()
        .filter(|d| want.looks_like_baker(d))
        .collect();
    st.made.settle(&listed);
    let (bakers, strangers): (Vec<Droplet>, Vec<Droplet>) =
        listed.into_iter().partition(|d| st.made.baker(want, d));
    for d in &strangers {
        out.lines.push(format!(
            "droplet {} (id {}) carries our bake tag but ops did not create it: not touched",
            d.name, d.id
        ));
    }
    Ok(Survey {
        images,
        current,
        bakers,
    })
}

/// The bake droplet is off: snapshot it, or follow the snapshot, or finish.
#[allow(clippy::too_many_arguments)]
fn snapshot_step(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    baker: &Droplet,
    images: &mut Vec<Image>,
    now: i64,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let foreign = foreign_actions(&api.droplet_actions(baker.id)?, st);
    if !foreign.is_empty() {
        let why = format!(
            "bake droplet {} (id {}) had actions ops did not send ({}): someone may have changed what its snapshot would hold, so it is not used",
            baker.name,
            baker.id,
            foreign.join(", ")
        );
        return fail(ctx, api, want, st, baker.id, &why, now, out);
    }
    let status = match &st.snapshot {
        Some(sn) => api.action(sn.action)?.map(|a| a.status),
        None => None,
    };
    let age = st.snapshot.as_ref().map_or(0, |sn| now - sn.at);
    if let (Some(sn), Some(status)) = (&st.snapshot, status.as_deref()) {
        // A completed snapshot is looked for below however late; one still running is not
        // waited for forever.
        let late = age > SNAPSHOT_TIMEOUT_MS && status != "completed";
        let why = match status {
            "errored" => Some(format!("DigitalOcean's snapshot of {} errored", baker.name)),
            _ if late => Some(format!(
                "the snapshot of {} took longer than {}",
                baker.name,
                minutes(SNAPSHOT_TIMEOUT_MS)
            )),
            _ => None,
        };
        if let Some(why) = why {
            return fail(ctx, api, want, st, baker.id, &why, now, out);
        }
        if status != "completed" {
            out.lines.push(format!(
                "baked image: snapshot {} of bake droplet {} in progress ({} so far; DigitalOcean takes 1–3 minutes per GB)",
                sn.name,
                baker.name,
                minutes(age)
            ));
            return Ok(());
        }
    }
    // Completed: is it there? Only the snapshot of the name ops requested (its random part
    // is known to nobody else); another of the droplet, however named, is not ours.
    let snaps = api.droplet_snapshots(baker.id)?;
    let found = snaps
        .iter()
        .filter(|s| st.snapshot.as_ref().is_some_and(|sn| s.name == sn.name))
        .max_by(|a, b| a.created_at.cmp(&b.created_at));
    if let Some(snap) = found {
        return finish(
            ctx, api, want, st, baker, snap.id, &snap.name, images, now, out,
        );
    }
    if status.as_deref() == Some("completed") && age <= SNAPSHOT_TIMEOUT_MS {
        out.lines.push(format!(
            "baked image: the snapshot of {} is done; waiting for DigitalOcean to list it",
            baker.name
        ));
        return Ok(());
    }
    start_snapshot(ctx, api, want, st, baker, now, out)
}

/// Asks DigitalOcean to snapshot the powered-off bake droplet (a dry run says it would).
fn start_snapshot(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    baker: &Droplet,
    now: i64,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let name = format!("{}{}", want.keyed(), crate::sealed::nonce()?);
    let what = format!(
        "snapshot bake droplet {} (id {}, powered off) as image {name}",
        baker.name, baker.id
    );
    let typed = ActionType::named("snapshot", "bake droplet").id(baker.id);
    if ctx.dry_run {
        out.would(typed, what);
        return Ok(());
    }
    let action = api.snapshot_droplet(baker.id, &name)?;
    out.did(typed, what, &format!("snapshotting as {name}"));
    ctx.changed(
        "image.snapshot",
        format!(
            "snapshotting bake droplet {} (id {}) as image {name} (supervisor {})",
            baker.name, baker.id, want.version
        ),
    );
    out.lines.push(format!(
        "baked image: snapshotting bake droplet {} (id {}) as {name}",
        baker.name, baker.id
    ));
    st.snapshot = Some(Snap {
        action: action.id,
        name,
        started_at: action.started_at,
        at: now,
    });
    Ok(())
}

/// The actions on a bake droplet ops did not send: any but its create and ops' own snapshot
/// (it powers itself off from inside, which is no action). A power action from someone else
/// (a power off before the seal, a power cycle after it) could leave keys or anything else in
/// the snapshot.
fn foreign_actions(actions: &[crate::clients::digitalocean::Action], st: &Baked) -> Vec<String> {
    actions
        .iter()
        .filter(|a| a.kind != "create")
        .filter(|a| {
            !(a.kind == "snapshot" && st.snapshot.as_ref().is_some_and(|sn| sn.action == a.id))
        })
        .map(|a| format!("{} (action {})", a.kind, a.id))
        .collect()
}

/// The snapshot exists: tag it ours, delete the bake droplet and the images beyond the spare.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    baker: &Droplet,
    image: u64,
    name: &str,
    images: &mut Vec<Image>,
    now: i64,
    out: &mut Tended,
) -> anyhow::Result<()> {
    if ctx.dry_run {
        out.would(
            ActionType::named("tag", "baked image").id(image),
            format!("tag image {name} (id {image}) as the baked image"),
        );
        out.would(
            ActionType::counted("delete", "bake droplet").id(baker.id),
            format!("delete bake droplet {}: its image is ready", baker.name),
        );
        return Ok(());
    }
    // Recorded first: whatever fails after, the image stays known as ours.
    if !st.made.images.contains(&image) {
        st.made.images.push(image);
    }
    keep(ctx, st)?;
    for tag in [&want.owner_tag, &want.key_tag] {
        api.create_tag(tag)?;
        api.tag_image(tag, image)?;
    }
    let fresh = api.image(&image.to_string())?.unwrap_or_else(|| Image {
        id: image,
        slug: None,
        name: name.to_string(),
        regions: vec![want.region.clone()],
        status: Some("available".into()),
        created_at: chrono::Utc::now().to_rfc3339(),
        min_disk_size: None,
        size_gigabytes: None,
        tags: vec![want.owner_tag.clone(), want.key_tag.clone()],
    });
    ctx.changed(
        "image.baked",
        format!(
            "baked image {name} (id {image}, supervisor {}, {}): new droplets start from it",
            want.version,
            gb(fresh.size_gigabytes)
        ),
    );
    out.lines.push(format!(
        "baked image {name} (id {image}) is ready: new droplets start from it"
    ));
    out.did(
        ActionType::named("tag", "baked image").id(image),
        format!("tag image {name} (id {image}) as the baked image"),
        "tagged",
    );
    images.retain(|i| i.id != image);
    images.push(fresh.clone());
    ready(st, &fresh, images, now);
    remove_baker(ctx, api, want, st, baker.id, "its image is ready", out)?;
    st.baker = None;
    st.baker_since = None;
    st.snapshot = None;
    prune(ctx, api, want, st, images, image, out)?;
    ready(st, &fresh, images, now);
    Ok(())
}

/// No image and no bake droplet: start a bake (a droplet with the bake user-data, no secret).
fn start(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    now: i64,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let name = format!("{}{}", want.keyed(), crate::sealed::nonce()?);
    let what = format!(
        "bake an image for supervisor {}: droplet {name} ({BAKE_SIZE}, {}, {}; its user-data holds no secret) installs Docker and pulls {}, powers off, is snapshotted (${PRICE_GB_MONTH}/GB-month) and deleted; until then new droplets start from {}",
        want.version,
        want.region,
        want.base,
        want.images.join(", "),
        want.base
    );
    let typed = ActionType::counted("create", "bake droplet").name(&name);
    if ctx.dry_run {
        out.would(typed, what);
        return Ok(());
    }
    let s = ctx.settings;
    api.create_tag(&want.bake_tag)?;
    // Known as ours before the call: a create whose answer is lost still made our droplet.
    st.made.pending = Some((name.clone(), now));
    keep(ctx, st)?;
    let d = api
        .create_droplet(&NewDroplet {
            name: name.clone(),
            region: want.region.clone(),
            size: BAKE_SIZE.into(),
            image: ImageRef::Slug(want.base.clone()),
            ssh_keys: s.supervisor_ssh_keys.clone(),
            tags: vec![want.bake_tag.clone()],
            user_data: cloudinit::render_bake(s, &want.version)?,
            monitoring: false,
        })
        .inspect_err(|e| {
            if refused_outright(e) {
                // Refused: no droplet was made, and none may ever answer to the name.
                st.made.pending = None;
            }
        })?;
    ctx.changed(
        "image.baking",
        format!("created bake droplet {} (id {}) to {what}", d.name, d.id),
    );
    out.lines.push(format!(
        "baked image: created bake droplet {} (id {})",
        d.name, d.id
    ));
    out.did(typed.id(d.id), what, &format!("created {}", d.name));
    st.made.bakers.push(d.id);
    st.made.pending = None;
    st.baker = Some(d.id);
    st.baker_since = Some(now);
    Ok(())
}

/// A bake that failed: its droplet goes, the next try waits `RETRY_AFTER_MS`.
#[allow(clippy::too_many_arguments)]
fn fail(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    baker: u64,
    why: &str,
    now: i64,
    out: &mut Tended,
) -> anyhow::Result<()> {
    if ctx.dry_run {
        out.warnings.push(format!(
            "baked image: {why}; would delete the bake droplet and try again in {}",
            minutes(RETRY_AFTER_MS)
        ));
        out.planned = true;
        return Ok(());
    }
    remove_baker(ctx, api, want, st, baker, why, out)?;
    st.baker = None;
    st.baker_since = None;
    st.snapshot = None;
    st.failed = Some((now, why.to_string()));
    st.retry_at = None;
    out.warnings.push(format!(
        "baked image: {why}; deleted the bake droplet, next try in {}; new droplets start from {} meanwhile",
        minutes(RETRY_AFTER_MS),
        want.base
    ));
    Ok(())
}

/// Deletes a bake droplet after checking again that it is one (our bake tag and name).
fn remove_baker(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    id: u64,
    why: &str,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let Some(d) = api.droplet(id)? else {
        st.made.forget(id);
        return Ok(());
    };
    if !st.made.baker(want, &d) {
        out.warnings.push(format!(
            "baked image: droplet {} (id {id}) is no bake droplet ops created: not deleted",
            d.name
        ));
        return Ok(());
    }
    let what = format!("delete bake droplet {} (id {id}): {why}", d.name);
    let typed = ActionType::counted("delete", "bake droplet").id(id);
    if ctx.dry_run {
        out.would(typed, what);
        return Ok(());
    }
    api.delete_droplet(id)?;
    st.made.forget(id);
    let done = crate::task::past_tense(&what);
    ctx.changed("image.bake_droplet_deleted", &done);
    out.did(typed, what, &done);
    out.lines.push(done);
    Ok(())
}

/// Our current image without our tags (someone removed them): tagged again, not baked again.
fn retag(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    cur: &Image,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let missing: Vec<&String> = [&want.owner_tag, &want.key_tag]
        .into_iter()
        .filter(|t| !cur.tags.contains(t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let tags = missing
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if ctx.dry_run {
        out.lines.push(format!(
            "would tag image {} (id {}) again with {tags}",
            cur.name, cur.id
        ));
        out.planned = true;
        return Ok(());
    }
    for t in missing {
        api.create_tag(t)?;
        api.tag_image(t, cur.id)?;
    }
    let done = format!(
        "baked image {} (id {}) had lost {tags}: tagged it again",
        cur.name, cur.id
    );
    ctx.changed("image.retagged", &done);
    out.lines.push(done);
    Ok(())
}

/// Deletes our images beyond the current one and the spare.
fn prune(
    ctx: &TaskCtx,
    api: &DigitalOcean,
    want: &Want,
    st: &mut Baked,
    images: &mut Vec<Image>,
    current: u64,
    out: &mut Tended,
) -> anyhow::Result<()> {
    let gone: Vec<Image> = beyond_spare(images, want, &st.made, current)
        .into_iter()
        .cloned()
        .collect();
    for i in &gone {
        let what = format!(
            "delete image {} (id {}): older than the current one and the spare",
            i.name, i.id
        );
        let typed = ActionType::counted("delete", "image").id(i.id);
        if ctx.dry_run {
            out.would(typed, what);
            continue;
        }
        // An image that cannot go now (a token without image:delete, DigitalOcean down) stays
        // recorded and is tried again at the next listing: never a reason to bake again.
        if let Err(e) = api.delete_image(i.id) {
            out.warnings.push(format!(
                "baked image: could not delete the old image {} (id {}): {e:#}",
                i.name, i.id
            ));
            continue;
        }
        st.made.images.retain(|m| *m != i.id);
        ctx.changed(
            "image.deleted",
            format!(
                "deleted image {} (id {}, {}): older than the current one and the spare",
                i.name,
                i.id,
                gb(i.size_gigabytes)
            ),
        );
        out.lines.push(format!(
            "deleted image {} (id {}): beyond the spare",
            i.name, i.id
        ));
        out.did(typed, what, "deleted");
    }
    if !ctx.dry_run {
        images.retain(|i| !gone.iter().any(|g| g.id == i.id) || st.made.images.contains(&i.id));
    }
    Ok(())
}

fn ready(st: &mut Baked, cur: &Image, images: &[Image], now: i64) {
    st.image = Some(cur.id);
    st.image_name = Some(cur.name.clone());
    st.size_gb = cur.size_gigabytes;
    st.images = images.len().max(1);
    st.stored_gb = images.iter().filter_map(|i| i.size_gigabytes).sum();
    st.checked_at = now;
    st.failed = None;
    st.retry_at = None;
}

fn load(ctx: &TaskCtx) -> Baked {
    stored(ctx.state).unwrap_or_default()
}

/// Writes the record (never in a dry run: the callers are past their dry-run returns).
fn keep(ctx: &TaskCtx, st: &Baked) -> anyhow::Result<()> {
    ctx.writable_state()?
        .kv_set(NAMESPACE, STATE_KEY, st, now_ms())
}

/// DigitalOcean refused the image at a create: the next run lists the images again instead of
/// trusting the record.
pub fn forget(ctx: &TaskCtx) -> anyhow::Result<()> {
    if let Some(mut b) = stored(ctx.state) {
        b.image = None;
        b.checked_at = 0;
        keep(ctx, &b)?;
    }
    Ok(())
}

/// The record, as the state holds it (for `ops status`).
pub fn stored(state: Option<&crate::state::State>) -> Option<Baked> {
    state
        .and_then(|s| s.kv_get(NAMESPACE, STATE_KEY).ok().flatten())
        .map(|(v, _)| v)
}

fn minutes(ms: i64) -> String {
    crate::duration::format(std::time::Duration::from_secs((ms.max(0) / 1000) as u64))
}

fn gb(size: Option<f64>) -> String {
    size.map(|g| format!("{g:.1} GB, ${:.2}/month", g * PRICE_GB_MONTH))
        .unwrap_or_else(|| "size not yet known".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want {
            key: "k2".into(),
            version: "v4.5.12".into(),
            owner_tag: "trigger-supervisor-abcd1234-image".into(),
            key_tag: "ops-bake-k2".into(),
            bake_tag: "trigger-supervisor-abcd1234-bake".into(),
            prefix: "trigger-supervisor-abcd1234-bake-".into(),
            base: "ubuntu-24-04-x64".into(),
            region: "nyc1".into(),
            images: vec![],
        }
    }

    fn image(id: u64, created: &str, tags: &[&str], name: &str) -> Image {
        Image {
            id,
            slug: None,
            name: name.into(),
            regions: vec!["nyc1".into()],
            status: Some("available".into()),
            created_at: created.into(),
            min_disk_size: Some(25),
            size_gigabytes: Some(2.5),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_newest_spare_survives_and_foreign_images_are_never_counted() {
        let w = want();
        let own = "trigger-supervisor-abcd1234-image";
        let images = vec![
            image(
                1,
                "2026-01-01T00:00:00Z",
                &[own, "ops-bake-k0"],
                "trigger-supervisor-abcd1234-bake-k0-1",
            ),
            image(
                2,
                "2026-02-01T00:00:00Z",
                &[own, "ops-bake-k1"],
                "trigger-supervisor-abcd1234-bake-k1-1",
            ),
            image(
                3,
                "2026-03-01T00:00:00Z",
                &[own, "ops-bake-k2"],
                "trigger-supervisor-abcd1234-bake-k2-1",
            ),
            // Someone's image with our tag but not our name: never ours to delete.
            image(4, "2025-01-01T00:00:00Z", &[own], "golden-db-server"),
            // Our tag and our name, but ops never baked it: planted, or from a lost state.
            image(
                5,
                "2025-06-01T00:00:00Z",
                &[own, "ops-bake-k2"],
                "trigger-supervisor-abcd1234-bake-k2-0",
            ),
        ];
        let made = Made {
            images: vec![1, 2, 3],
            ..Made::default()
        };
        let gone: Vec<u64> = beyond_spare(&images, &w, &made, 3)
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(gone, vec![1]);
        assert!(w.is_current(&made, &images[2]));
        assert!(!w.is_current(&made, &images[1]));
        assert!(!w.looks_ours(&images[3]));
        assert!(w.looks_ours(&images[4]) && !made.image(&w, &images[4]));
        assert!(
            !w.is_current(&made, &images[4]),
            "a planted image is never used"
        );
    }

    #[test]
    fn an_image_elsewhere_or_still_pending_is_not_current() {
        let w = want();
        let own = "trigger-supervisor-abcd1234-image";
        let mut i = image(
            3,
            "2026-03-01T00:00:00Z",
            &[own, "ops-bake-k2"],
            "trigger-supervisor-abcd1234-bake-k2-1",
        );
        let made = Made {
            images: vec![3],
            ..Made::default()
        };
        assert!(w.is_current(&made, &i));
        i.regions = vec!["fra1".into()];
        assert!(!w.is_current(&made, &i));
        i.regions = vec!["nyc1".into()];
        i.status = Some("pending".into());
        assert!(!w.is_current(&made, &i));
    }

    #[test]
    fn a_record_about_another_version_gives_no_image() {
        let w = want();
        let b = Baked {
            key: "k1".into(),
            image: Some(2),
            ..Baked::default()
        };
        assert_eq!(b.usable(&w), None);
        let b = Baked {
            key: "k2".into(),
            image: Some(3),
            stored_gb: 5.0,
            ..Baked::default()
        };
        assert_eq!(b.usable(&w), Some(3));
        assert!((b.cost_monthly() - 0.30).abs() < 1e-9);
    }
}
