//! Which Trigger.dev release the supervisor runs: the webapp's own version (read from its
//! Railway source), unless `TRIGGER_VERSION` pins one. Trigger.dev ships the webapp and the
//! supervisor as one release, so the two should match.
//!
//! Everything here is pure: the inputs are what Railway said and what the operator set.

use serde_json::Value;

use crate::settings::DEFAULT_TRIGGER_VERSION;

/// Docker repositories of Trigger.dev's webapp image.
const WEBAPP_IMAGES: &[&str] = &[
    "ghcr.io/triggerdotdev/trigger.dev",
    "triggerdotdev/trigger.dev",
    "docker.io/triggerdotdev/trigger.dev",
];
/// The droplet tag prefix that records the supervisor version a droplet was created with.
pub const VERSION_TAG: &str = "ops-version:";

/// What the webapp's Railway service says about its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebappRelease {
    /// `vX.Y.Z` (with an optional pre-release suffix), or `None` when it cannot be followed.
    pub version: Option<String>,
    /// Where it came from, or why it is unknown, for the task's detail.
    pub origin: String,
}

/// `v` then three dot-separated numbers, then optionally `-` and a pre-release of
/// letters, digits, dots and dashes: the shape of Trigger.dev's release tags.
pub fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 40
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

/// The first `vX.Y.Z` inside a branch or tag name such as `release/v4.5.12` or `v4.5.12`.
fn version_in(name: &str) -> Option<String> {
    name.split(['/', '_', ' ', '@'])
        .find(|part| is_version(part))
        .map(str::to_string)
}

/// Reads the release from the webapp service's `source { image repo }` and its latest
/// deployment's `meta` (a JSON object; Railway puts `branch`, `commitHash`, … there).
pub fn webapp_release(
    image: Option<&str>,
    repo: Option<&str>,
    meta: Option<&Value>,
) -> WebappRelease {
    let unknown = |origin: String| WebappRelease {
        version: None,
        origin,
    };
    if let Some(image) = image.map(str::trim).filter(|i| !i.is_empty()) {
        let (name_tag, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (image, None),
        };
        // A ':' after the last '/' separates the tag (a registry host may carry a port).
        let slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[slash..].rfind(':') {
            Some(i) => (&name_tag[..slash + i], Some(&name_tag[slash + i + 1..])),
            None => (name_tag, None),
        };
        if !WEBAPP_IMAGES.contains(&name) {
            return unknown(format!(
                "image {image} is not Trigger.dev's webapp image, so its version cannot be read"
            ));
        }
        return match tag {
            Some(t) if is_version(t) => WebappRelease {
                version: Some(t.to_string()),
                origin: format!("image {image}"),
            },
            Some(t) if digest.is_none() => unknown(format!(
                "image {image}: the tag {t:?} is not a release (vX.Y.Z) and a moving tag cannot be followed safely"
            )),
            None if digest.is_none() => unknown(format!(
                "image {image} has no tag (so latest), and a moving tag cannot be followed safely"
            )),
            _ => unknown(format!(
                "image {image} is pinned by digest only, so its release cannot be read"
            )),
        };
    }
    if let Some(repo) = repo.map(str::trim).filter(|r| !r.is_empty()) {
        let branch = meta
            .and_then(|m| m.get("branch").or_else(|| m.get("tag")))
            .and_then(Value::as_str);
        return match branch.and_then(version_in) {
            Some(v) => WebappRelease {
                origin: format!("repo {repo}, branch {}", branch.unwrap_or_default()),
                version: Some(v),
            },
            None => unknown(format!(
                "repo {repo}{} names no release (vX.Y.Z)",
                branch.map(|b| format!(", branch {b}")).unwrap_or_default()
            )),
        };
    }
    unknown("the webapp service has no image or repo source on Railway".into())
}

/// Where the supervisor's version comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `TRIGGER_VERSION`.
    Pinned,
    /// The webapp's release.
    Webapp,
    /// The webapp's release is unknown: the bundled default.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub tag: String,
    pub source: Source,
}

/// The supervisor image tag: the pin, else the webapp's version, else the bundled default.
pub fn supervisor_version(pin: Option<&str>, webapp: Option<&str>) -> Chosen {
    match (pin, webapp) {
        (Some(p), _) => Chosen {
            tag: p.to_string(),
            source: Source::Pinned,
        },
        (None, Some(w)) => Chosen {
            tag: w.to_string(),
            source: Source::Webapp,
        },
        (None, None) => Chosen {
            tag: DEFAULT_TRIGGER_VERSION.to_string(),
            source: Source::Default,
        },
    }
}

/// One line for a task's detail, `status` and `doctor`: the version and why. `None` for the
/// webapp's version means it is unknown (or no record was extracted yet).
pub fn describe(pin: Option<&str>, webapp: Option<&str>) -> String {
    let chosen = supervisor_version(pin, webapp);
    match (chosen.source, webapp) {
        (Source::Pinned, Some(w)) if w != chosen.tag => format!(
            "supervisor pinned to {} (TRIGGER_VERSION), webapp runs {w}: Trigger.dev ships them as one release, unset TRIGGER_VERSION to follow the webapp",
            chosen.tag
        ),
        (Source::Pinned, _) => format!("supervisor version {} (pinned by TRIGGER_VERSION)", chosen.tag),
        (Source::Webapp, _) => format!("supervisor version {} (the webapp's)", chosen.tag),
        (Source::Default, _) => format!(
            "supervisor version {}: the bundled default, because the webapp's version is unknown (set TRIGGER_VERSION to pin one)",
            chosen.tag
        ),
    }
}

/// `describe`'s line when it asks the operator to change something (a pin that differs from
/// the webapp, or a version ops could not learn): shown as a warning, not among the facts.
pub fn warning(pin: Option<&str>, webapp: Option<&str>) -> Option<String> {
    let chosen = supervisor_version(pin, webapp);
    let warn = match (&chosen.source, webapp) {
        (Source::Pinned, Some(w)) => w != chosen.tag,
        (Source::Default, _) => true,
        _ => false,
    };
    warn.then(|| describe(pin, webapp))
}

/// The droplet tag recording a version: DigitalOcean tags allow no dots, and a version holds no
/// underscore, so dots become underscores (reversibly).
pub fn version_tag(version: &str) -> String {
    format!("{VERSION_TAG}{}", version.replace('.', "_"))
}

/// The version recorded in a droplet's tags, if any.
pub fn version_of(tags: &[String]) -> Option<String> {
    tags.iter()
        .find_map(|t| t.strip_prefix(VERSION_TAG))
        .map(|v| v.replace('_', "."))
}

/// Why a droplet of version `old` is replaced by one of `new`, when the version is the reason.
pub fn upgrade_reason(source: &Source, old: Option<&str>, new: &str) -> Option<String> {
    let old = old?;
    if old == new {
        return None;
    }
    let verb = if numbers(new) > numbers(old) {
        "upgraded"
    } else {
        "changed"
    };
    Some(match source {
        Source::Webapp => format!("webapp {verb} {old} → {new}"),
        Source::Pinned => format!("TRIGGER_VERSION {old} → {new}"),
        Source::Default => format!("supervisor version {old} → {new} (bundled default)"),
    })
}

/// A release's three numbers, for ordering (`v4.10.0` after `v4.9.0`).
pub fn numbers(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split(['.', '-'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions() {
        for ok in ["v4.5.12", "v4.0.0", "v4.1.0-rc.1", "v10.20.30-beta-2"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in [
            "4.5.12",
            "v4.5",
            "latest",
            "v4.5.x",
            "v4..1",
            "v4.5.12-",
            "v4.5.12-a/b",
            "main",
        ] {
            assert!(!is_version(bad), "{bad}");
        }
    }

    #[test]
    fn image_sources() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "ghcr.io/triggerdotdev/trigger.dev:v4.5.10",
                Some("v4.5.10"),
                "image ghcr.io",
            ),
            (
                "triggerdotdev/trigger.dev:v4.6.0-rc.1",
                Some("v4.6.0-rc.1"),
                "image",
            ),
            (
                "ghcr.io/triggerdotdev/trigger.dev:latest",
                None,
                "moving tag",
            ),
            ("ghcr.io/triggerdotdev/trigger.dev", None, "moving tag"),
            (
                "ghcr.io/triggerdotdev/trigger.dev@sha256:abcd",
                None,
                "digest only",
            ),
            (
                "ghcr.io/triggerdotdev/trigger.dev:v4.5.10@sha256:abcd",
                Some("v4.5.10"),
                "image",
            ),
            ("myorg/webapp:v4.5.10", None, "not Trigger.dev's"),
            (
                "localhost:5000/triggerdotdev/trigger.dev:v4.5.10",
                None,
                "not Trigger.dev's",
            ),
        ];
        for (image, version, origin) in cases {
            let r = webapp_release(Some(image), None, None);
            assert_eq!(r.version.as_deref(), *version, "{image}");
            assert!(r.origin.contains(origin), "{image}: {}", r.origin);
        }
    }

    #[test]
    fn repo_sources() {
        let r = webapp_release(
            None,
            Some("acme/trigger-railway"),
            Some(&json!({"branch": "release/v4.5.11", "commitHash": "abc"})),
        );
        assert_eq!(r.version.as_deref(), Some("v4.5.11"));
        assert!(r.origin.contains("branch release/v4.5.11"));
        let r = webapp_release(
            None,
            Some("acme/trigger-railway"),
            Some(&json!({"branch": "main"})),
        );
        assert_eq!(r.version, None);
        assert!(r.origin.contains("names no release"), "{}", r.origin);
        let r = webapp_release(None, Some("acme/t"), None);
        assert_eq!(r.version, None);
        let r = webapp_release(None, None, None);
        assert!(r.origin.contains("no image or repo source"));
    }

    #[test]
    fn the_pin_wins_then_the_webapp_then_the_default() {
        assert_eq!(
            supervisor_version(Some("v4.6.0"), Some("v4.5.10")).tag,
            "v4.6.0"
        );
        assert_eq!(
            supervisor_version(None, Some("v4.5.10")).source,
            Source::Webapp
        );
        let d = supervisor_version(None, None);
        assert_eq!(
            (d.tag.as_str(), d.source),
            (DEFAULT_TRIGGER_VERSION, Source::Default)
        );
        assert!(describe(Some("v4.6.0"), Some("v4.5.10"))
            .starts_with("supervisor pinned to v4.6.0 (TRIGGER_VERSION), webapp runs v4.5.10"));
        assert!(describe(Some("v4.6.0"), Some("v4.6.0")).contains("(pinned by TRIGGER_VERSION)"));
        assert!(describe(None, None).contains("bundled default"));
    }

    #[test]
    fn tags_round_trip_and_reasons() {
        let t = version_tag("v4.6.0-rc.1");
        assert_eq!(t, "ops-version:v4_6_0-rc_1");
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b)));
        assert_eq!(version_of(&["x".into(), t]).as_deref(), Some("v4.6.0-rc.1"));
        assert_eq!(
            upgrade_reason(&Source::Webapp, Some("v4.5.10"), "v4.5.12").as_deref(),
            Some("webapp upgraded v4.5.10 → v4.5.12")
        );
        assert_eq!(
            upgrade_reason(&Source::Webapp, Some("v4.10.0"), "v4.9.0").as_deref(),
            Some("webapp changed v4.10.0 → v4.9.0")
        );
        assert_eq!(
            upgrade_reason(&Source::Webapp, Some("v4.5.12"), "v4.5.12"),
            None
        );
        assert_eq!(upgrade_reason(&Source::Webapp, None, "v4.5.12"), None);
    }
}

/// A release's place in the order: the three numbers, then the pre-release (none sorts after
/// any pre-release of the same numbers, as in SemVer).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    core: (u32, u32, u32),
    release: bool,
    pre: Vec<Ident>,
}

/// A pre-release identifier: numbers compare as numbers and before words (SemVer 11.4).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ident {
    Number(u64),
    Word(String),
}

fn precedence(tag: &str) -> Option<Precedence> {
    if !is_version(tag) {
        return None;
    }
    let (core, pre) = match tag[1..].split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (&tag[1..], None),
    };
    let n: Vec<u32> = core.split('.').filter_map(|p| p.parse().ok()).collect();
    let [a, b, c] = n.as_slice() else {
        return None;
    };
    Some(Precedence {
        core: (*a, *b, *c),
        release: pre.is_none(),
        pre: pre
            .unwrap_or_default()
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| match p.parse() {
                Ok(n) => Ident::Number(n),
                Err(_) => Ident::Word(p.to_string()),
            })
            .collect(),
    })
}

/// Whether a release tag is `min` or later, pre-releases in their place: `v4.5.0-rc.4` is
/// before `v4.5.0-rc.5`, which is before `v4.5.0`. `false` for anything that is not a version.
pub fn at_least(tag: &str, min: &str) -> bool {
    match (precedence(tag), precedence(min)) {
        (Some(t), Some(m)) => t >= m,
        _ => false,
    }
}

#[cfg(test)]
mod at_least_tests {
    use super::at_least;

    #[test]
    fn versions_compare_by_number_not_text() {
        assert!(at_least("v4.5.0", "v4.5.0"));
        assert!(at_least("v4.10.1", "v4.5.0"));
        assert!(!at_least("v4.4.12", "v4.5.0"));
        assert!(!at_least("latest", "v4.5.0"));
    }

    /// The dequeue backpressure first ships in v4.5.0-rc.5 (apps/supervisor/src/env.ts has no
    /// TRIGGER_DEQUEUE_BACKPRESSURE_* at v4.5.0-rc.4): rc.0 to rc.4 cannot drain.
    #[test]
    fn pre_releases_count_in_their_place() {
        let since = crate::tasks::supervisor::drain::BACKPRESSURE_SINCE;
        for before in ["v4.5.0-rc.0", "v4.5.0-rc.4", "v4.4.12", "v4.5.0-beta.9"] {
            assert!(!at_least(before, since), "{before}");
        }
        for after in [
            "v4.5.0-rc.5",
            "v4.5.0-rc.7",
            "v4.5.0-rc.10",
            "v4.5.0",
            "v4.5.5",
            "v4.6.0-rc.0",
        ] {
            assert!(at_least(after, since), "{after}");
        }
        assert!(!at_least("v4.5.0-rc.5", "v4.5.0"));
        assert!(!crate::cloudinit::drains("v4.5.0-rc.4"));
        assert!(crate::cloudinit::drains("v4.5.0-rc.5"));
    }
}
