//! The baked image (issue 28): a bake droplet outside the fleet installs Docker and pulls the
//! supervisor's images, powers off, is snapshotted and deleted; new droplets start from the
//! image's id. Against a fake DigitalOcean serving droplet actions and private images with the
//! spec's shapes, and the webapp's real schema.

use serde_json::{json, Value};

use crate::supervisor::{cloud_init_schema, fleet, Fleet};
use crate::support::digitalocean::DoFault;

/// Runs the health profile until the image is ready (each run takes one step of the bake).
pub fn bake(f: &Fleet) -> String {
    let mut seen = String::new();
    for _ in 0..6 {
        let run = f.health();
        run.expect_code(0);
        seen.push_str(&run.stdout);
        if run.stdout.contains("is ready: new droplets start from it") {
            return seen;
        }
    }
    panic!("no image after six runs:\n{seen}");
}

/// Our bake droplets (the fleet never lists them: they lack the deployment tag).
fn bakers(f: &Fleet) -> Vec<(u64, Vec<String>)> {
    f.api.with(|w| {
        w.droplets
            .iter()
            .filter(|d| d.name.contains("-bake-"))
            .map(|d| (d.id, d.tags.clone()))
            .collect()
    })
}

fn images(f: &Fleet) -> Vec<(u64, String, Vec<String>)> {
    f.api.with(|w| {
        w.images
            .iter()
            .map(|i| (i.id, i.name.clone(), i.tags.clone()))
            .collect()
    })
}

/// The deployment tag, read off the fleet's first droplet.
fn deployment_tag(f: &Fleet) -> String {
    f.api.with(|w| {
        w.droplets
            .iter()
            .flat_map(|d| d.tags.iter())
            .find(|t| t.starts_with("trigger-supervisor-") && t.len() == 27)
            .cloned()
            .expect("a droplet with the deployment tag")
    })
}

fn image_requests(f: &Fleet) -> usize {
    f.api
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/images") || r.path.contains("/snapshots"))
        .count()
}

#[test]
fn a_droplet_created_after_the_image_is_baked_starts_from_its_id_and_becomes_healthy() {
    let f = fleet("boot_grace: 10m, bake: true");
    // The dry run says what it would bake, and changes nothing.
    f.run(&["run", "health", "--dry-run"])
        .expect_stdout("would bake an image for supervisor v4.5.12")
        .expect_stdout("its user-data holds no secret");
    assert_eq!(f.api.mutations(), 0, "a dry run changes nothing");

    let first = f.health();
    first
        .expect_code(0)
        .expect_stdout("created bake droplet")
        .expect_stdout("created droplet");
    let (baker, tags) = bakers(&f).pop().expect("a bake droplet");
    let tag = deployment_tag(&f);
    assert_eq!(
        tags,
        [format!("{tag}-bake")],
        "the bake droplet is outside the fleet"
    );
    let creates = f.creates();
    let bake_create = creates
        .iter()
        .find(|c| c["name"].as_str().unwrap_or("").contains("-bake-"))
        .unwrap();
    let user_data = bake_create["user_data"].as_str().unwrap();
    for secret in [
        "tr_wgt_",
        "MANAGED_WORKER_SECRET",
        "TRIGGER_WORKER_TOKEN",
        ".env",
    ] {
        assert!(
            !user_data.contains(secret),
            "{secret} in the bake user-data"
        );
    }
    assert!(
        user_data.contains("ghcr.io/triggerdotdev/supervisor:v4.5.12"),
        "the bake pulls the pinned supervisor: {user_data}"
    );
    assert!(
        user_data.contains("rm -f /root/.ssh/authorized_keys /etc/ssh/ssh_host_*"),
        "the image keeps no SSH key of the bake droplet: {user_data}"
    );
    cloud_init_schema(user_data);
    assert_eq!(bake_create["size"], "s-1vcpu-1gb");
    let fleet_create = creates
        .iter()
        .find(|c| !c["name"].as_str().unwrap_or("").contains("-bake-"))
        .unwrap();
    assert_eq!(
        fleet_create["image"], "ubuntu-24-04-x64",
        "before the image exists, from Ubuntu"
    );
    let a = fleet_create["name"].as_str().unwrap().to_string();
    let a_id = f
        .api
        .with(|w| w.droplets.iter().find(|d| d.name == a).unwrap().id);
    let _sup_a = f.serve(a_id, true);

    let steps = bake(&f);
    assert!(steps.contains("snapshotting bake droplet"), "{steps}");
    let imgs = images(&f);
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    let (image, name, itags) = imgs[0].clone();
    assert!(name.starts_with(&format!("{tag}-bake-")), "{name}");
    assert!(itags.contains(&format!("{tag}-image")), "{itags:?}");
    assert!(
        itags.iter().any(|t| t.starts_with("ops-bake-")),
        "{itags:?}"
    );
    assert!(
        f.api.with(|w| w.droplets.iter().all(|d| d.id != baker)),
        "the bake droplet is deleted once its image is ready"
    );
    assert!(
        f.api.with(|w| w
            .actions
            .iter()
            .any(|(id, k)| *id == baker && k == "snapshot")),
        "the snapshot was taken of the bake droplet, never of a supervisor"
    );

    // A healthy cycle with a known image asks DigitalOcean nothing about images.
    let before = image_requests(&f);
    f.health().expect_code(0);
    assert_eq!(
        image_requests(&f),
        before,
        "a healthy cycle lists no images"
    );

    // The supervisor's droplet dies (gone from DigitalOcean): its replacement starts from the image.
    f.api.with(|w| w.droplets.retain(|d| d.id != a_id));
    f.health()
        .expect_code(0)
        .expect_stdout(&format!("from the baked image {image}"));
    let replacement = f.creates().last().cloned().unwrap();
    assert_eq!(replacement["image"], json!(image), "the image's numeric id");
    let b_id = f.api.with(|w| {
        w.droplets
            .iter()
            .find(|d| d.name == replacement["name"])
            .unwrap()
            .id
    });
    let _sup_b = f.serve(b_id, true);
    let name = replacement["name"].as_str().unwrap();
    f.health()
        .expect_code(0)
        .expect_stdout(&format!("droplet {name} (id {b_id}"))
        .expect_stdout("healthy (last heartbeat");
    f.run(&["status"]).expect_stdout(&format!(
        "image: baked {image} (supervisor v4.5.12); 1 kept"
    ));
    let status = f.run(&["status", "--json"]).json();
    assert_eq!(
        status["supervisor"]["image"]["image"],
        json!(image),
        "{}",
        status["supervisor"]
    );
}

#[test]
fn a_version_change_bakes_a_new_image_and_deletes_the_oldest_beyond_the_spare() {
    let mut f = fleet("boot_grace: 10m, bake: true");
    f.s.ops.env("TRIGGER_VERSION", "v4.5.10");
    f.health().expect_code(0);
    let tag = deployment_tag(&f);
    let a_id = f.ids()[0];
    let _sup = f.serve(a_id, true);
    bake(&f);
    let v10 = images(&f)[0].0;
    f.s.ops.env("TRIGGER_VERSION", "v4.5.11");
    bake(&f);
    let v11 = images(&f).iter().map(|i| i.0).max().unwrap();
    assert_eq!(images(&f).len(), 2, "one image and one spare");
    // Look-alikes: our tag and name on an image ops never baked (planted, or a lost state's),
    // and someone's image that carries our tag.
    let (planted, foreign) = f.api.with(|w| {
        (
            w.add_image(
                &format!("{tag}-bake-0000-old"),
                &[&format!("{tag}-image")],
                "2025-01-01T00:00:00Z",
            ),
            w.add_image(
                "golden-db",
                &[&format!("{tag}-image")],
                "2024-01-01T00:00:00Z",
            ),
        )
    });

    f.s.ops.env("TRIGGER_VERSION", "v4.5.12");
    let steps = bake(&f);
    assert!(
        steps.contains("created bake droplet")
            && steps.contains(&format!("deleted image {tag}-bake-")),
        "{steps}"
    );
    assert!(
        steps.contains("carries our tag but ops has no record of baking it"),
        "the look-alike is reported: {steps}"
    );
    let left: Vec<u64> = images(&f).iter().map(|i| i.0).collect();
    assert!(
        left.contains(&v11),
        "the previous image stays as the spare: {left:?}"
    );
    assert!(
        !left.contains(&v10),
        "the oldest beyond the spare is deleted: {left:?}"
    );
    assert!(
        left.contains(&planted),
        "an image ops never baked is never deleted: {left:?}"
    );
    assert!(left.contains(&foreign), "{left:?}");
    assert_eq!(f.api.with(|w| w.image_deletes.clone()), [v10]);
    let events = f.run(&["events", "--json"]).stdout;
    for kind in [
        "image.baking",
        "image.snapshot",
        "image.baked",
        "image.deleted",
    ] {
        assert!(events.contains(kind), "{kind} announced: {events}");
    }
}

#[test]
fn a_planted_image_with_our_tags_is_never_used_and_a_planted_bake_droplet_never_deleted() {
    let f = fleet("boot_grace: 10m, bake: true");
    f.api
        .with(|w| w.bake_after = std::time::Duration::from_secs(3600));
    f.health().expect_code(0);
    let tag = deployment_tag(&f);
    let a_id = f.ids()[0];
    let _sup = f.serve(a_id, true);
    // Someone in the team tags and names an image and a droplet as ops would.
    let key_tag = f
        .creates()
        .iter()
        .find_map(|c| {
            let name = c["name"].as_str()?;
            let rest = name.strip_prefix(&format!("{tag}-bake-"))?;
            Some(format!("ops-bake-{}", rest.split('-').next()?))
        })
        .unwrap();
    let planted = f.api.with(|w| {
        w.add_image(
            &format!("{tag}-bake-planted"),
            &[&format!("{tag}-image"), &key_tag],
            "2026-01-01T00:00:00Z",
        )
    });
    let lookalike = f
        .api
        .insert(
            &format!("{tag}-bake-0000000000000000-000000000000"),
            &[&format!("{tag}-bake")],
            std::time::Duration::from_secs(7200),
        )
        .id;
    let run = f.health();
    run.expect_code(0)
        .expect_stdout("carries our bake tag but ops did not create it: not touched");
    // The supervisor's droplet dies: its replacement never starts from the planted image.
    f.api.with(|w| w.droplets.retain(|d| d.id != a_id));
    f.health().expect_code(0);
    let last = f
        .creates()
        .into_iter()
        .rfind(|c| !c["name"].as_str().unwrap_or("").contains("-bake-"))
        .unwrap();
    assert_eq!(last["image"], "ubuntu-24-04-x64", "never image {planted}");
    assert!(
        f.api.with(|w| w.droplets.iter().any(|d| d.id == lookalike)),
        "a bake droplet ops did not create is never deleted"
    );
}

#[test]
fn a_baked_image_deleted_behind_ops_back_falls_back_to_ubuntu_in_the_same_run() {
    let f = fleet("boot_grace: 10m, bake: true");
    f.health().expect_code(0);
    let a_id = f.ids()[0];
    let _sup = f.serve(a_id, true);
    bake(&f);
    // Someone deletes the image in the console; then the supervisor's droplet dies.
    f.api.with(|w| {
        w.images.clear();
        w.droplets.retain(|d| d.id != a_id);
    });
    f.health()
        .expect_code(0)
        .expect_stdout("DigitalOcean refused the baked image")
        .expect_stdout("created bake droplet");
    let fleet_creates: Vec<Value> = f
        .creates()
        .into_iter()
        .filter(|c| !c["name"].as_str().unwrap_or("").contains("-bake-"))
        .collect();
    assert_eq!(fleet_creates.last().unwrap()["image"], "ubuntu-24-04-x64");
    assert_eq!(
        f.api.with(|w| w
            .droplets
            .iter()
            .filter(|d| !d.name.contains("-bake-"))
            .count()),
        1,
        "one replacement, no duplicate"
    );
}

#[test]
fn a_token_without_the_image_scopes_warns_once_and_waits_before_asking_again() {
    let f = fleet("boot_grace: 10m");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    f.jobs("boot_grace: 10m, bake: true");
    f.api.with(|w| w.create_fault = Some(DoFault::Status(403)));
    f.health()
        .expect_code(0)
        .expect_stdout("baked image:")
        .expect_stdout("HTTP 403")
        .expect_stdout("a custom-scoped token needs image:create");
    let asked = image_requests(&f) + f.creates().len();
    f.health()
        .expect_code(0)
        .expect_stdout("the next try is in");
    assert_eq!(
        image_requests(&f) + f.creates().len(),
        asked,
        "no bake request again before the retry time"
    );
}

#[test]
fn a_version_change_while_baking_replaces_the_bake_droplet_so_no_image_holds_the_old_version() {
    let mut f = fleet("boot_grace: 10m, bake: true");
    f.api
        .with(|w| w.bake_after = std::time::Duration::from_secs(3600));
    f.s.ops.env("TRIGGER_VERSION", "v4.5.11");
    f.health()
        .expect_code(0)
        .expect_stdout("created bake droplet");
    let (old, _) = bakers(&f).pop().unwrap();
    f.health()
        .expect_code(0)
        .expect_stdout("is installing Docker and pulling");
    f.s.ops.env("TRIGGER_VERSION", "v4.5.12");
    f.health()
        .expect_code(0)
        .expect_stdout("bakes an image of another version")
        .expect_stdout("created bake droplet");
    let now: Vec<u64> = bakers(&f).iter().map(|b| b.0).collect();
    assert_eq!(now.len(), 1, "one bake droplet at a time: {now:?}");
    assert_ne!(now[0], old, "the old version's bake droplet is deleted");
    let user_data = f
        .creates()
        .into_iter()
        .rfind(|c| c["name"].as_str().unwrap_or("").contains("-bake-"))
        .unwrap()["user_data"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(user_data.contains("supervisor:v4.5.12"), "{user_data}");
}

#[test]
fn an_old_image_that_cannot_be_deleted_never_makes_ops_forget_the_new_one_or_bake_again() {
    let mut f = fleet("boot_grace: 10m, bake: true");
    f.s.ops.env("TRIGGER_VERSION", "v4.5.10");
    f.health().expect_code(0);
    let _sup = f.serve(f.ids()[0], true);
    bake(&f);
    f.s.ops.env("TRIGGER_VERSION", "v4.5.11");
    bake(&f);
    // The token may not delete images: the third version's bake cannot prune the first.
    f.api.with(|w| w.refuse_image_deletes = true);
    f.s.ops.env("TRIGGER_VERSION", "v4.5.12");
    let steps = bake(&f);
    assert!(steps.contains("could not delete the old image"), "{steps}");
    let newest = images(&f).iter().map(|i| i.0).max().unwrap();
    let bakes = || {
        f.creates()
            .iter()
            .filter(|c| c["name"].as_str().unwrap_or("").contains("-bake-"))
            .count()
    };
    let before = bakes();
    for _ in 0..4 {
        f.health().expect_code(0);
    }
    assert_eq!(
        bakes(),
        before,
        "no bake again: the new image is still known"
    );
    let status = f.run(&["status", "--json"]).json();
    assert_eq!(status["supervisor"]["image"]["image"], json!(newest));
    assert_eq!(images(&f).len(), 3, "the old one stays until it can go");
}

#[test]
fn a_refused_snapshot_is_not_asked_again_every_run() {
    let f = fleet("boot_grace: 10m, bake: true");
    f.api.with(|w| w.refuse_snapshots = true);
    f.health()
        .expect_code(0)
        .expect_stdout("created bake droplet");
    f.health()
        .expect_code(0)
        .expect_stdout("HTTP 403")
        .expect_stdout("the next try is in 30m");
    let snapshots = || {
        f.api
            .server
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.body.contains("\"snapshot\""))
            .count()
    };
    assert_eq!(snapshots(), 1);
    for _ in 0..3 {
        f.health()
            .expect_code(0)
            .expect_stdout("the last try failed");
    }
    assert_eq!(
        snapshots(),
        1,
        "the refused snapshot waits for its retry time"
    );
}
