//! What differs between the spec a droplet was built with and the one this run would build,
//! field by field, as terraform's plan shows it (`size: s-2vcpu-2gb → s-4vcpu-8gb`). Secrets
//! and origins are compared by fingerprint and named only (`TRIGGER_WORKER_TOKEN changed`).
//! Pure: the parts are recorded when a droplet is created (`mod.rs`), and DigitalOcean's own
//! listing supplies size and region for a droplet created before that record existed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::ConfigRecord;
use crate::sealed::fingerprint;
use crate::settings::Settings;

/// Fields shown by value: nothing secret, and what an operator sets.
const SHOWN: [&str; 6] = [
    "size",
    "region",
    "image",
    "ssh keys",
    "proxy image",
    "health port",
];

/// A droplet's spec, one entry per field (a fingerprint for the secrets and origins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts(pub BTreeMap<String, String>);

impl Parts {
    /// The spec this run would build a droplet with (the parts of `spec_tag`; the version is
    /// in its own tag and compared by `release::upgrade_reason`).
    pub fn of(s: &Settings, record: &ConfigRecord) -> Parts {
        let hidden = |name: &str, value: &str| (name.to_string(), fingerprint(&[name, value]));
        let registry = [
            record.registry_host.as_deref().unwrap_or(""),
            record.registry_username.as_deref().unwrap_or(""),
            record
                .registry_password
                .as_ref()
                .map(|p| p.expose())
                .unwrap_or(""),
        ]
        .join("\n");
        let health_port = if s.supervisor_health_sources.is_empty() {
            format!("{} closed", crate::cloudinit::HEALTH_PORT)
        } else {
            format!("{} published", crate::cloudinit::HEALTH_PORT)
        };
        Parts(BTreeMap::from([
            ("size".into(), s.supervisor_size.clone()),
            ("region".into(), s.supervisor_region.clone()),
            ("image".into(), s.supervisor_image.clone()),
            ("ssh keys".into(), s.supervisor_ssh_keys.join(",")),
            ("proxy image".into(), s.docker_proxy_image.clone()),
            ("health port".into(), health_port),
            hidden("TRIGGER_WORKER_TOKEN", record.worker_token.expose()),
            hidden("MANAGED_WORKER_SECRET", record.managed_secret.expose()),
            hidden("TRIGGER_API_URL", &record.api_origin),
            hidden("OTEL_EXPORTER_OTLP_ENDPOINT", &record.otel_endpoint),
            hidden("DOCKER_REGISTRY credentials", &registry),
        ]))
    }

    /// What DigitalOcean itself reports of a droplet (for one created before its parts were
    /// recorded). Empty values are left out: unknown, not different.
    pub fn listed(size: &str, region: Option<&str>) -> Parts {
        let mut map = BTreeMap::new();
        if !size.is_empty() {
            map.insert("size".to_string(), size.to_string());
        }
        if let Some(r) = region.filter(|r| !r.is_empty()) {
            map.insert("region".to_string(), r.to_string());
        }
        Parts(map)
    }

    /// These parts, with `other`'s filling the fields these lack.
    pub fn or(mut self, other: Parts) -> Parts {
        for (k, v) in other.0 {
            self.0.entry(k).or_insert(v);
        }
        self
    }
}

/// The fields that differ, in a stable order (shown fields first): `size: a → b` for a shown
/// field, `NAME changed` for a secret or origin. A field unknown on either side is left out.
pub fn changes(built: &Parts, want: &Parts) -> Vec<String> {
    let mut shown = Vec::new();
    let mut named = Vec::new();
    for (field, new) in &want.0 {
        let Some(old) = built.0.get(field) else {
            continue;
        };
        if old == new {
            continue;
        }
        if SHOWN.contains(&field.as_str()) {
            let show = |v: &str| {
                if v.is_empty() {
                    "(none)".to_string()
                } else {
                    v.to_string()
                }
            };
            shown.push((
                SHOWN.iter().position(|f| f == field).unwrap_or(SHOWN.len()),
                format!("{field}: {} → {}", show(old), show(new)),
            ));
        } else {
            named.push(format!("{field} changed"));
        }
    }
    shown.sort();
    shown
        .into_iter()
        .map(|(_, line)| line)
        .chain(named)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&str, &str)]) -> Parts {
        Parts(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn field_differences() {
        let base = [
            ("size", "s-2vcpu-2gb"),
            ("region", "fra1"),
            ("image", "docker-20-04"),
            ("health port", "8020 closed"),
            ("TRIGGER_WORKER_TOKEN", "aaaa"),
            ("TRIGGER_API_URL", "cccc"),
        ];
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &[]),
            (
                &[("size", "s-4vcpu-8gb")],
                &["size: s-2vcpu-2gb → s-4vcpu-8gb"],
            ),
            (
                &[("region", "ams3"), ("image", "ubuntu-24-04-x64")],
                &[
                    "region: fra1 → ams3",
                    "image: docker-20-04 → ubuntu-24-04-x64",
                ],
            ),
            (
                &[("health port", "8020 published")],
                &["health port: 8020 closed → 8020 published"],
            ),
            (
                &[("TRIGGER_WORKER_TOKEN", "bbbb"), ("size", "s-1vcpu-1gb")],
                &[
                    "size: s-2vcpu-2gb → s-1vcpu-1gb",
                    "TRIGGER_WORKER_TOKEN changed",
                ],
            ),
            (&[("TRIGGER_API_URL", "dddd")], &["TRIGGER_API_URL changed"]),
        ];
        for (change, want) in cases {
            let mut new = parts(&base);
            for (k, v) in *change {
                new.0.insert(k.to_string(), v.to_string());
            }
            assert_eq!(changes(&parts(&base), &new), *want, "change {change:?}");
        }
    }

    #[test]
    fn unknown_fields_are_not_differences() {
        let listed = Parts::listed("s-2vcpu-2gb", Some("fra1"));
        let want = parts(&[
            ("size", "s-4vcpu-8gb"),
            ("region", "fra1"),
            ("TRIGGER_WORKER_TOKEN", "x"),
        ]);
        assert_eq!(changes(&listed, &want), ["size: s-2vcpu-2gb → s-4vcpu-8gb"]);
        assert!(changes(&Parts::listed("", None), &want).is_empty());
    }

    #[test]
    fn a_recorded_field_wins_over_the_listing() {
        let recorded = parts(&[("size", "s-2vcpu-4gb")]);
        let merged = recorded.or(Parts::listed("s-4vcpu-8gb", Some("ams3")));
        assert_eq!(
            merged,
            parts(&[("size", "s-2vcpu-4gb"), ("region", "ams3")])
        );
    }

    #[test]
    fn secrets_are_never_shown() {
        use crate::redact::Secret;
        let record = ConfigRecord {
            worker_token: Secret::new("tr_wgt_secretvalue"),
            token_source: String::new(),
            token_found_at: 0,
            managed_secret: Secret::new("managed-secret-value"),
            api_origin: "https://api.example.com".into(),
            otel_endpoint: "https://api.example.com/otel".into(),
            registry_host: None,
            registry_username: None,
            registry_password: None,
            webapp_service: String::new(),
            fingerprint: String::new(),
            extracted_at: 0,
            webapp_version: None,
        };
        let env = crate::envfile::Env::from_pairs([("SUPERVISOR_SIZE", "s-2vcpu-2gb")]);
        let s = Settings::from_env(&env).unwrap();
        let old = Parts::of(&s, &record);
        let rotated = ConfigRecord {
            worker_token: Secret::new("tr_wgt_othervalue"),
            ..record.clone()
        };
        let text = format!("{:?}", Parts::of(&s, &rotated));
        assert!(
            !text.contains("secretvalue")
                && !text.contains("othervalue")
                && !text.contains("api.example.com")
        );
        assert_eq!(
            changes(&old, &Parts::of(&s, &rotated)),
            ["TRIGGER_WORKER_TOKEN changed"]
        );
    }
}
