//! The fleet's firewall: nothing inbound unless asked (the workload port for the health
//! checker's addresses, ssh from SUPERVISOR_SSH_SOURCES), compared at most hourly.

use serde_json::json;

use crate::clients::digitalocean::{DigitalOcean, Firewall};
use crate::cloudinit;
use crate::sealed::fingerprint;
use crate::settings::Settings;
use crate::task::{past_tense, ActionRecord, ActionType, TaskCtx};

use super::store::{self, FirewallChecked, FIREWALL_KEY};

/// How long a checked firewall is trusted before it is compared again.
const FIREWALL_RECHECK_MS: i64 = 3_600_000;

fn firewall_spec(s: &Settings, tag: &str) -> Firewall {
    // Nothing inbound unless asked: the workload port only for the health checker's addresses,
    // ssh only from SUPERVISOR_SSH_SOURCES.
    let mut inbound = Vec::new();
    if !s.supervisor_health_sources.is_empty() {
        inbound.push(json!({"protocol": "tcp", "ports": cloudinit::HEALTH_PORT.to_string(), "sources": {"addresses": s.supervisor_health_sources}}));
    }
    if !s.supervisor_ssh_sources.is_empty() {
        inbound.push(json!({"protocol": "tcp", "ports": "22", "sources": {"addresses": s.supervisor_ssh_sources}}));
    }
    let everywhere = json!({"addresses": ["0.0.0.0/0", "::/0"]});
    Firewall {
        id: String::new(),
        name: format!("{tag}-fw"),
        inbound_rules: inbound,
        outbound_rules: vec![
            json!({"protocol": "tcp", "ports": "0", "destinations": everywhere}),
            json!({"protocol": "udp", "ports": "0", "destinations": everywhere}),
            json!({"protocol": "icmp", "destinations": everywhere}),
        ],
        // The bake droplet too (it carries only its own tag): its SSH is never open to the
        // internet while it bakes.
        tags: vec![tag.to_string(), super::image::bake_tag(tag)],
    }
}

/// Normalised rules, for comparing what DigitalOcean returns (extra fields, "all" ports) with
/// what we want.
fn rules_key(fw: &Firewall) -> String {
    let norm = |rules: &[serde_json::Value], side: &str| -> Vec<String> {
        let mut v: Vec<String> = rules
            .iter()
            .map(|r| {
                let ports = r["ports"].as_str().unwrap_or("0");
                let ports = if ports == "all" { "0" } else { ports };
                let mut addrs: Vec<String> = r[side]["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                addrs.sort();
                format!(
                    "{}:{}:{}",
                    r["protocol"].as_str().unwrap_or(""),
                    if r["protocol"] == "icmp" { "" } else { ports },
                    addrs.join(",")
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut tags = fw.tags.clone();
    tags.sort();
    format!(
        "{:?}|{:?}|{:?}",
        norm(&fw.inbound_rules, "sources"),
        norm(&fw.outbound_rules, "destinations"),
        tags
    )
}

/// Whether the firewall is compared this run: when the task manages it (`firewall: true`) and
/// there is a fleet to guard (droplets seen, or one created or planned this run). An empty
/// project is left alone.
pub fn due(managed: bool, droplets_seen: bool, creating: bool) -> bool {
    managed && (droplets_seen || creating)
}

/// The firewall as wanted; what it changed (or, in a dry run, would), for the run's summary.
pub fn ensure(
    api: &DigitalOcean,
    ctx: &TaskCtx,
    s: &Settings,
    tag: &str,
    now: i64,
    lines: &mut Vec<String>,
    planned: &mut bool,
) -> anyhow::Result<Option<ActionRecord>> {
    let want = firewall_spec(s, tag);
    let typed = |verb| ActionType::named(verb, "firewall").name(&want.name);
    let rules = format!(
        "(8020 from {}, ssh from {})",
        sources(&s.supervisor_health_sources),
        sources(&s.supervisor_ssh_sources)
    );
    let hash = fingerprint(&[&rules_key(&want)]);
    if let Some(seen) = store::load::<FirewallChecked>(ctx.state, FIREWALL_KEY) {
        if seen.hash == hash && now - seen.checked_at < FIREWALL_RECHECK_MS {
            return Ok(None);
        }
    }
    let mut record = None;
    let id = match api.firewall_by_name(&want.name)? {
        Some(have) if rules_key(&have) == rules_key(&want) => {
            lines.push(format!("firewall {}: up to date", want.name));
            have.id
        }
        Some(have) => {
            let what = format!("update firewall {} {rules}", want.name);
            if ctx.dry_run {
                let rec = ActionRecord::planned(typed("update"), what);
                lines.push(rec.would());
                *planned = true;
                return Ok(Some(rec));
            }
            create_tags(api, &want)?;
            api.update_firewall(&have.id, &want)?;
            let done = past_tense(&what);
            ctx.changed("firewall.updated", &done);
            record = Some(ActionRecord::done(typed("update"), what, &done));
            lines.push(done);
            have.id
        }
        None => {
            let what = format!("create firewall {} {rules}", want.name);
            if ctx.dry_run {
                let rec = ActionRecord::planned(typed("create"), what);
                lines.push(rec.would());
                *planned = true;
                return Ok(Some(rec));
            }
            create_tags(api, &want)?;
            api.create_firewall(&want)?;
            let done = past_tense(&what);
            ctx.changed("firewall.created", &done);
            record = Some(ActionRecord::done(typed("create"), what, &done));
            lines.push(done);
            String::new()
        }
    };
    if !ctx.dry_run {
        store::save(
            ctx,
            FIREWALL_KEY,
            &FirewallChecked {
                id,
                hash,
                checked_at: now,
            },
            now,
        )?;
    }
    Ok(record)
}

fn sources(list: &[String]) -> String {
    if list.is_empty() {
        "nowhere".into()
    } else {
        list.join(" ")
    }
}

/// The firewall's tags exist before it names them (the bake tag may not yet).
fn create_tags(api: &DigitalOcean, fw: &Firewall) -> anyhow::Result<()> {
    for t in &fw.tags {
        api.create_tag(t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(inbound: Vec<serde_json::Value>, outbound: Vec<serde_json::Value>) -> Firewall {
        Firewall {
            id: String::new(),
            name: "t-fw".into(),
            inbound_rules: inbound,
            outbound_rules: outbound,
            tags: vec!["t".into()],
        }
    }

    #[test]
    fn the_firewall_is_compared_only_when_managed_and_there_is_a_fleet_to_guard() {
        assert!(due(true, true, false));
        assert!(due(true, false, true), "the first droplet is being created");
        assert!(!due(true, false, false), "an empty project is left alone");
        assert!(!due(false, true, true), "firewall: false");
    }

    #[test]
    fn the_rules_key_ignores_what_digitalocean_adds_and_the_order_but_not_an_address() {
        let everywhere = json!({"addresses": ["0.0.0.0/0", "::/0"]});
        let want = wall(
            vec![
                json!({"protocol": "tcp", "ports": "22", "sources": {"addresses": ["203.0.113.1", "198.51.100.0/24"]}}),
            ],
            vec![
                json!({"protocol": "tcp", "ports": "0", "destinations": everywhere}),
                json!({"protocol": "icmp", "destinations": everywhere}),
            ],
        );
        // As DigitalOcean answers: `all` for every port, ports on icmp, fields of its own, and
        // its own order.
        let mut have = wall(
            vec![
                json!({"protocol": "tcp", "ports": "22", "sources": {"addresses": ["198.51.100.0/24", "203.0.113.1"], "droplet_ids": []}}),
            ],
            vec![
                json!({"protocol": "icmp", "ports": "0", "destinations": {"addresses": ["::/0", "0.0.0.0/0"]}}),
                json!({"protocol": "tcp", "ports": "all", "destinations": {"addresses": ["0.0.0.0/0", "::/0"], "load_balancer_uids": []}}),
            ],
        );
        have.id = "fw-1".into();
        assert_eq!(rules_key(&have), rules_key(&want));
        let mut wider = want.clone();
        wider.inbound_rules[0]["sources"]["addresses"] = json!(["203.0.113.1", "0.0.0.0/0"]);
        assert_ne!(rules_key(&wider), rules_key(&want));
        let mut other_port = want.clone();
        other_port.inbound_rules[0]["ports"] = json!("2222");
        assert_ne!(rules_key(&other_port), rules_key(&want));
        let mut other_tag = want.clone();
        other_tag.tags = vec!["u".into()];
        assert_ne!(rules_key(&other_tag), rules_key(&want));
    }
}
