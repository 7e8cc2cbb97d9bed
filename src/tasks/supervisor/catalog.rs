//! SUPERVISOR_SIZE, SUPERVISOR_REGION and SUPERVISOR_IMAGE against DigitalOcean's own lists,
//! before anything is planned: a value DigitalOcean does not know stops the run (exit 2) naming
//! the variable and the nearest valid values, instead of a 422 at the create. A combination
//! that passed is kept a day, so a healthy cycle asks nothing more.

use serde::{Deserialize, Serialize};

use crate::clients::digitalocean::{Image, Region, Size};
use crate::envfile::edits;

/// How long a passed check is trusted.
pub const RECHECK_MS: i64 = 24 * 3_600_000;

/// The combination that passed, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    pub size: String,
    pub region: String,
    pub image: String,
    pub at_ms: i64,
}

impl Checked {
    /// Whether this passed check still covers `want` at `now_ms`.
    pub fn covers(&self, want: &Checked, now_ms: i64) -> bool {
        self.size == want.size
            && self.region == want.region
            && self.image == want.image
            && (0..RECHECK_MS).contains(&(now_ms - self.at_ms))
    }
}

/// What DigitalOcean said: its sizes, its regions, and the image (`None`: no such image, and
/// then its distribution images' slugs, to name the nearest).
pub struct Lists<'a> {
    pub sizes: &'a [Size],
    pub regions: &'a [Region],
    pub image: Option<&'a Image>,
    pub distributions: &'a [&'a str],
}

/// Each wrong value, one line naming the variable and the nearest valid values.
pub fn problems(want: &Checked, lists: &Lists) -> Vec<String> {
    let mut out = Vec::new();
    let (size, region, image) = (&want.size, &want.region, &want.image);
    let open: Vec<&str> = lists
        .regions
        .iter()
        .filter(|r| r.available)
        .map(|r| r.slug.as_str())
        .collect();
    let region_known = match lists.regions.iter().find(|r| &r.slug == region) {
        None => {
            out.push(format!(
                "SUPERVISOR_REGION={region} is not a DigitalOcean region: the nearest are {} (doctl compute region list)",
                nearest(region, &open)
            ));
            false
        }
        Some(r) if !r.available => {
            out.push(format!(
                "SUPERVISOR_REGION={region} takes no new droplets now: pick another region, such as {}",
                nearest(region, &open)
            ));
            false
        }
        Some(_) => true,
    };
    let offered: Vec<&str> = lists
        .sizes
        .iter()
        .filter(|s| s.available && (!region_known || s.regions.contains(region)))
        .map(|s| s.slug.as_str())
        .collect();
    match lists.sizes.iter().find(|s| &s.slug == size) {
        None => out.push(format!(
            "SUPERVISOR_SIZE={size} is not a DigitalOcean size: the nearest are {} (doctl compute size list)",
            nearest(size, &offered)
        )),
        Some(s) if region_known && (!s.available || !s.regions.contains(region)) => {
            out.push(format!(
                "SUPERVISOR_SIZE={size} is not offered in SUPERVISOR_REGION={region}: the nearest offered there are {}",
                nearest(size, &offered)
            ))
        }
        Some(_) => {}
    }
    match lists.image {
        None => out.push(unknown_image(image, lists.distributions)),
        Some(i) if region_known && !i.regions.is_empty() && !i.regions.contains(region) => {
            out.push(format!(
                "SUPERVISOR_IMAGE={image} is not available in SUPERVISOR_REGION={region} (only {}): transfer it there or pick another region",
                i.regions.join(", ")
            ))
        }
        Some(_) => {}
    }
    out
}

/// An image DigitalOcean does not know: the nearest distribution slugs from its own list (never
/// a slug written here: it may be the very one refused), or a private image's id.
pub fn unknown_image(image: &str, distributions: &[&str]) -> String {
    let hint = match crate::envfile::nearest(image, distributions.iter().copied()) {
        Some(slug) => format!("did you mean {slug}? (doctl compute image list-distribution lists the others; a private image's id works too)"),
        None => "use a slug from doctl compute image list-distribution, or a private image's id".into(),
    };
    format!("SUPERVISOR_IMAGE={image} is not a DigitalOcean image: {hint}")
}

/// The three candidates closest to `value` by edit distance (ties by name).
pub fn nearest(value: &str, candidates: &[&str]) -> String {
    let mut ranked: Vec<(usize, &str)> = candidates.iter().map(|c| (edits(value, c), *c)).collect();
    ranked.sort();
    ranked.dedup();
    let shown: Vec<&str> = ranked.iter().take(3).map(|(_, c)| *c).collect();
    if shown.is_empty() {
        "none listed".into()
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(slug: &str, regions: &[&str]) -> Size {
        Size {
            slug: slug.into(),
            vcpus: 1,
            memory: 1024,
            disk: 25,
            price_monthly: 6.0,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            available: true,
        }
    }

    fn region(slug: &str, available: bool) -> Region {
        Region {
            slug: slug.into(),
            available,
            sizes: Vec::new(),
        }
    }

    fn want(size: &str, region: &str) -> Checked {
        Checked {
            size: size.into(),
            region: region.into(),
            image: "ubuntu-24-04-x64".into(),
            at_ms: 0,
        }
    }

    fn image() -> Image {
        serde_json::from_value(
            serde_json::json!({"id": 1, "slug": "ubuntu-24-04-x64", "regions": ["nyc1", "fra1"]}),
        )
        .unwrap()
    }

    #[test]
    fn nearest_by_edits() {
        assert_eq!(
            nearest("fra9", &["nyc1", "fra1", "ams3", "sfo3"]),
            "fra1, ams3, nyc1"
        );
    }

    #[test]
    fn a_wrong_value_is_named_with_the_nearest_valid_ones() {
        let sizes = [
            size("s-1vcpu-1gb", &["nyc1", "fra1"]),
            size("s-2vcpu-2gb", &["nyc1", "fra1"]),
            size("c-4", &["fra1"]),
        ];
        let regions = [
            region("nyc1", true),
            region("fra1", true),
            region("sfo1", false),
        ];
        let img = image();
        let lists = Lists {
            sizes: &sizes,
            regions: &regions,
            image: Some(&img),
            distributions: &[],
        };
        assert!(problems(&want("s-2vcpu-2gb", "nyc1"), &lists).is_empty());
        let p = problems(&want("s-99vcpu-1gb", "nyc1"), &lists);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("SUPERVISOR_SIZE=s-99vcpu-1gb is not a DigitalOcean size: the nearest are s-1vcpu-1gb"),
            "{p:?}"
        );
        let p = problems(&want("c-4", "nyc1"), &lists);
        assert!(
            p[0].contains("not offered in SUPERVISOR_REGION=nyc1"),
            "{p:?}"
        );
        let p = problems(&want("s-2vcpu-2gb", "xx9"), &lists);
        assert_eq!(
            p.len(),
            1,
            "the size is not blamed for an unknown region: {p:?}"
        );
        assert!(p[0].starts_with("SUPERVISOR_REGION=xx9 is not a DigitalOcean region"));
        assert!(
            !p[0].contains("sfo1"),
            "a closed region is not suggested: {p:?}"
        );
        let p = problems(&want("s-2vcpu-2gb", "sfo1"), &lists);
        assert!(p[0].contains("takes no new droplets"), "{p:?}");
        let none = Lists {
            image: None,
            ..lists
        };
        let p = problems(&want("s-2vcpu-2gb", "nyc1"), &none);
        assert!(p[0].starts_with("SUPERVISOR_IMAGE=ubuntu-24-04-x64 is not a DigitalOcean image"));
        let listed = Lists {
            distributions: &[
                "ubuntu-22-04-x64",
                "debian-12-x64",
                "ubuntu-24-10-x64",
                "fedora-40-x64",
            ],
            ..none
        };
        let p = problems(&want("s-2vcpu-2gb", "nyc1"), &listed);
        assert!(p[0].contains("did you mean ubuntu-22-04-x64?"), "{p:?}");
    }

    #[test]
    fn a_passed_check_is_kept_a_day_for_the_same_values() {
        let mut done = want("s-2vcpu-2gb", "nyc1");
        done.at_ms = 1_000;
        let now = want("s-2vcpu-2gb", "nyc1");
        assert!(done.covers(&now, 1_000 + RECHECK_MS - 1));
        assert!(!done.covers(&now, 1_000 + RECHECK_MS));
        assert!(!done.covers(&want("s-1vcpu-1gb", "nyc1"), 2_000));
    }
}
