//! Every DigitalOcean Kubernetes request body ops sends, and every answer the fake gives, checked
//! against DigitalOcean's own OpenAPI (digitalocean/openapi, specification/; a trimmed, pinned
//! copy in tests/fixtures/do-openapi.json, refreshed by scripts/do-openapi.py). The fake agrees
//! with whoever wrote it; this does not. Stricter than the spec in one way: a field the schema
//! does not name is refused (DigitalOcean would ignore it silently, and ops would believe it set
//! something it did not).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use trigger_ops::tasks::supervisor::kubernetes::{cluster, pools};

use crate::support::digitalocean::DO_TOKEN;
use crate::support::doks::Client;

const SPEC: &str = include_str!("fixtures/do-openapi.json");

fn operation(key: &str) -> Value {
    let spec: Value = serde_json::from_str(SPEC).unwrap();
    spec["operations"][key].clone()
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    /// What ops sends: read-only fields are refused.
    Request,
    /// What DigitalOcean (the fake) answers.
    Response,
}

/// An object schema with its `allOf` branches merged: (properties, required, typed as object).
fn merged(schema: &Value) -> (BTreeMap<String, Value>, BTreeSet<String>, bool) {
    let mut props = BTreeMap::new();
    let mut required = BTreeSet::new();
    let mut object = schema["type"] == "object";
    if let Some(p) = schema["properties"].as_object() {
        props.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(r) = schema["required"].as_array() {
        required.extend(r.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    for branch in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r, o) = merged(branch);
        props.extend(p);
        required.extend(r);
        object |= o;
    }
    (props, required, object)
}

fn validate(schema: &Value, value: &Value, at: &str, dir: Dir, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true && schema.as_object().is_some_and(|o| !o.is_empty()) {
            errors.push(format!("{at}: null, and the spec does not allow it"));
        }
        return;
    }
    if let Some(any) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        let ok = any.iter().any(|branch| {
            let mut e = Vec::new();
            validate(branch, value, at, dir, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: matches none of the spec's alternatives"));
        }
    }
    let (props, required, object) = merged(schema);
    if object || !props.is_empty() {
        let Some(obj) = value.as_object() else {
            errors.push(format!("{at}: expected an object, got {value}"));
            return;
        };
        for name in &required {
            if !obj.contains_key(name) {
                errors.push(format!("{at}: the required field {name:?} is missing"));
            }
        }
        // An object whose schema names no properties is a free map (labels).
        if props.is_empty() {
            return;
        }
        for (k, v) in obj {
            match props.get(k) {
                None => errors.push(format!("{at}.{k}: the spec has no such field")),
                Some(s) => {
                    if dir == Dir::Request && s["readOnly"] == true {
                        errors.push(format!("{at}.{k}: read-only, DigitalOcean sets it"));
                    }
                    validate(s, v, &format!("{at}.{k}"), dir, errors);
                }
            }
        }
        return;
    }
    let ok = match schema["type"].as_str() {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("array") => {
            if let Some(items) = value.as_array() {
                for (i, item) in items.iter().enumerate() {
                    validate(&schema["items"], item, &format!("{at}[{i}]"), dir, errors);
                }
                true
            } else {
                false
            }
        }
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: expected {}, got {value}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {}", json!(allowed)));
        }
    }
    if let (Some(s), Some(format)) = (value.as_str(), schema["format"].as_str()) {
        let ok = match format {
            "uuid" => trigger_ops::clients::doks::is_cluster_id(s),
            "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: {s:?} is not a {format}"));
        }
    }
}

fn check(op: &str, which: &str, value: &Value, dir: Dir) -> Vec<String> {
    let schema = operation(op)[which].clone();
    assert!(!schema.is_null(), "the fixture has no {which} for {op}");
    let mut errors = Vec::new();
    validate(&schema, value, which, dir, &mut errors);
    errors
}

fn specs(size: &str, ha: bool) -> (cluster::ClusterSpec, pools::PoolSpec) {
    (
        cluster::ClusterSpec {
            adopt: None,
            name: "trigger-supervisor-abcd1234".into(),
            tags: vec!["trigger-supervisor-abcd1234".into(), "ops-managed".into()],
            region: "nyc1".into(),
            ha,
            maintenance: ("sunday".into(), "04:00".into()),
            scale_in_after: Duration::from_secs(600),
        },
        pools::PoolSpec {
            tag: "trigger-supervisor-abcd1234".into(),
            runs_size: size.into(),
            min: 0,
            max: 4,
            nodetype: "v4-worker".into(),
            drain_timeout: Duration::from_secs(3600),
        },
    )
}

fn options() -> trigger_ops::clients::doks::Options {
    Client::start().api().kubernetes_options().unwrap()
}

#[test]
fn every_doks_request_body_ops_builds_matches_digitaloceans_openapi() {
    let options = options();
    for (size, ha) in [("s-4vcpu-8gb", false), ("s-2vcpu-4gb", true)] {
        let (cs, ps) = specs(size, ha);
        let body = cluster::new_cluster(
            &cs,
            &options,
            vec![pools::supervisor_pool(&ps), pools::runs_pool(&ps)],
        )
        .unwrap();
        let body = serde_json::to_value(&body).unwrap();
        let e = check(
            "POST /v2/kubernetes/clusters",
            "request",
            &body,
            Dir::Request,
        );
        assert!(e.is_empty(), "{e:#?}\n{body:#}");
        assert_eq!(body["ha"], json!(ha), "ha is always sent");
        let pool = serde_json::to_value(pools::runs_pool(&ps)).unwrap();
        let e = check(
            "POST /v2/kubernetes/clusters/{cluster_id}/node_pools",
            "request",
            &pool,
            Dir::Request,
        );
        assert!(e.is_empty(), "{e:#?}\n{pool:#}");
    }
    // The update brings a pool ops owns back to its bounds, label and taint.
    let (_, ps) = specs("s-4vcpu-8gb", false);
    let mut live: trigger_ops::clients::doks::NodePool = serde_json::from_value(json!({
        "id": "cdda885e-7663-40c8-bc74-3a036c66545d", "name": "ops-runs-s-4vcpu-8gb",
        "size": "s-4vcpu-8gb", "count": 2, "auto_scale": false, "nodes": []}))
    .unwrap();
    live.labels.insert("team".into(), "a".into());
    let mut record = cluster::Record::default();
    record.pool_created(&live.id, &live.name, &live.size, 0);
    let plan = pools::plan(
        &ps,
        &[live],
        &record,
        &Default::default(),
        &Default::default(),
        None,
        0,
    );
    let update = plan
        .actions
        .iter()
        .find_map(|a| match a {
            pools::Action::Update { body, .. } => Some(serde_json::to_value(body).unwrap()),
            _ => None,
        })
        .expect("an update");
    let e = check(
        "PUT /v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}",
        "request",
        &update,
        Dir::Request,
    );
    assert!(e.is_empty(), "{e:#?}\n{update:#}");
    // The query parameters ops sends exist.
    assert_eq!(
        operation("GET /v2/kubernetes/clusters/{cluster_id}/credentials")["query"],
        json!(["expiry_seconds"])
    );
    let list = operation("GET /v2/kubernetes/clusters")["query"].clone();
    assert!(
        list.as_array().unwrap().contains(&json!("per_page"))
            && list.as_array().unwrap().contains(&json!("page"))
    );
}

#[test]
fn the_check_refuses_what_digitalocean_would_not_take() {
    let (cs, ps) = specs("s-4vcpu-8gb", false);
    let good = serde_json::to_value(
        cluster::new_cluster(&cs, &options(), vec![pools::runs_pool(&ps)]).unwrap(),
    )
    .unwrap();
    let op = "POST /v2/kubernetes/clusters";
    assert!(check(op, "request", &good, Dir::Request).is_empty());
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut b = good.clone();
        f(&mut b);
        check(op, "request", &b, Dir::Request)
    };
    let e = broken(&|b| b["high_availability"] = json!(true));
    assert!(
        e.iter()
            .any(|e| e.contains("high_availability: the spec has no such field")),
        "{e:?}"
    );
    let e = broken(&|b| b["node_pools"][0]["taints"][0]["effect"] = json!("NoEvict"));
    assert!(e.iter().any(|e| e.contains("not one of")), "{e:?}");
    let e = broken(&|b| b["maintenance_policy"]["duration"] = json!("4h0m0s"));
    assert!(e.iter().any(|e| e.contains("read-only")), "{e:?}");
    let e = broken(&|b| {
        b.as_object_mut().unwrap().remove("version");
    });
    assert!(
        e.iter().any(|e| e.contains("\"version\" is missing")),
        "{e:?}"
    );
    let e = broken(&|b| b["ha"] = json!("false"));
    assert!(
        e.iter().any(|e| e.contains("expected \"boolean\"")),
        "{e:?}"
    );
    let e = broken(&|b| b["node_pools"][0]["count"] = json!(1.5));
    assert!(
        e.iter().any(|e| e.contains("expected \"integer\"")),
        "{e:?}"
    );
}

#[test]
fn the_fake_doks_answers_as_digitaloceans_openapi_says() {
    let c = Client::start();
    let (api, fake, url) = (c.api(), &c.fake, &c.url);
    let (cs, ps) = specs("s-4vcpu-8gb", false);
    let body = cluster::new_cluster(
        &cs,
        &api.kubernetes_options().unwrap(),
        vec![pools::supervisor_pool(&ps), pools::runs_pool(&ps)],
    )
    .unwrap();
    let made = api.create_cluster(&body).unwrap();
    fake.with(|w| {
        w.doks
            .add_cluster("someone-elses", &[("pool-a", "s-2vcpu-2gb", 2)])
    });
    let get = |path: &str| -> (u16, Value) {
        let mut resp = ureq::get(format!("{url}{path}"))
            .header("authorization", format!("Bearer {DO_TOKEN}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().unwrap_or(Value::Null))
    };
    let id = &made.id;
    let pool = &made.node_pools[0].id;
    for (op, path) in [
        (
            "GET /v2/kubernetes/options",
            "/v2/kubernetes/options".to_string(),
        ),
        (
            "GET /v2/kubernetes/clusters",
            "/v2/kubernetes/clusters?page=1&per_page=1".to_string(),
        ),
        (
            "GET /v2/kubernetes/clusters/{cluster_id}",
            format!("/v2/kubernetes/clusters/{id}"),
        ),
        (
            "GET /v2/kubernetes/clusters/{cluster_id}/node_pools",
            format!("/v2/kubernetes/clusters/{id}/node_pools"),
        ),
        (
            "GET /v2/kubernetes/clusters/{cluster_id}/credentials",
            format!("/v2/kubernetes/clusters/{id}/credentials?expiry_seconds=300"),
        ),
        (
            "GET /v2/kubernetes/clusters/{cluster_id}/upgrades",
            format!("/v2/kubernetes/clusters/{id}/upgrades"),
        ),
    ] {
        let (status, answer) = get(&path);
        assert_eq!(status, 200, "{path}: {answer}");
        let e = check(op, "response", &answer, Dir::Response);
        assert!(e.is_empty(), "{op}: {e:#?}\n{answer:#}");
    }
    // The create's answer too (as the fake sent it, re-read raw).
    let (_, one) = get(&format!("/v2/kubernetes/clusters/{id}"));
    let e = check(
        "POST /v2/kubernetes/clusters",
        "response",
        &one,
        Dir::Response,
    );
    assert!(e.is_empty(), "{e:#?}");
    // The pool create's answer.
    let raw = ureq::post(format!("{url}/v2/kubernetes/clusters/{id}/node_pools"))
        .header("authorization", format!("Bearer {DO_TOKEN}"))
        .send_json(json!({"name": "extra", "size": "s-2vcpu-2gb", "count": 1}))
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    let e = check(
        "POST /v2/kubernetes/clusters/{cluster_id}/node_pools",
        "response",
        &raw,
        Dir::Response,
    );
    assert!(e.is_empty(), "{e:#?}");
    assert!(!pool.is_empty());
}
