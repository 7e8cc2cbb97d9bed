#!/usr/bin/env python3
"""Trim DigitalOcean's OpenAPI to the calls ops makes, for tests/fixtures/do-openapi.json.

DigitalOcean publishes its API's OpenAPI in digitalocean/openapi (specification/, YAML split over
many files joined by $ref). The test `do_openapi` checks every request body ops sends (and every
answer the fake DigitalOcean gives) against this pinned copy. To refresh it after adding a call:

    git clone --depth 1 https://github.com/digitalocean/openapi /tmp/do-openapi
    python3 scripts/do-openapi.py /tmp/do-openapi "$(git -C /tmp/do-openapi rev-parse HEAD)"

Each operation below keeps its request body's schema, the schema of its success answer and the
names of its query parameters, with every $ref resolved and the prose (descriptions, examples)
dropped. Needs PyYAML (.ci/pyyaml.txt pins it).
"""
import json
import sys
from pathlib import Path

import yaml

root = Path(__file__).resolve().parent.parent
spec_root, commit = Path(sys.argv[1]) / "specification", sys.argv[2]

# (method, path, success status) of every call ops makes to DigitalOcean Kubernetes.
OPERATIONS = [
    ("get", "/v2/kubernetes/options", "200"),
    ("get", "/v2/kubernetes/clusters", "200"),
    ("post", "/v2/kubernetes/clusters", "201"),
    ("get", "/v2/kubernetes/clusters/{cluster_id}", "200"),
    ("get", "/v2/kubernetes/clusters/{cluster_id}/node_pools", "200"),
    ("post", "/v2/kubernetes/clusters/{cluster_id}/node_pools", "201"),
    ("put", "/v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}", "202"),
    ("delete", "/v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}", "204"),
    ("get", "/v2/kubernetes/clusters/{cluster_id}/credentials", "200"),
    ("get", "/v2/kubernetes/clusters/{cluster_id}/upgrades", "200"),
]
KEEP = {"type", "properties", "required", "enum", "items", "allOf", "anyOf", "oneOf",
        "nullable", "readOnly", "format", "minimum", "maximum", "deprecated", "additionalProperties"}

cache = {}


def load(path):
    path = path.resolve()
    if path not in cache:
        cache[path] = yaml.safe_load(path.read_text())
    return cache[path]


def pointer(doc, frag):
    for part in [p for p in frag.split("/") if p]:
        doc = doc[part.replace("~1", "/").replace("~0", "~")]
    return doc


def resolve(node, base, depth=0):
    """`node` (from file `base`) with every $ref followed, prose dropped."""
    if depth > 40:
        raise SystemExit(f"$ref nesting too deep near {base}")
    if isinstance(node, list):
        return [resolve(n, base, depth + 1) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        file, _, frag = ref.partition("#")
        target = (base.parent / file) if file else base
        return resolve(pointer(load(target), frag), target, depth + 1)
    out = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {name: resolve(s, base, depth + 1) for name, s in v.items()}
        elif k in KEEP:
            out[k] = resolve(v, base, depth + 1)
    return out


def resolve_param(p, base):
    file, _, frag = p["$ref"].partition("#")
    target = (base.parent / file) if file else base
    return pointer(load(target), frag)


main = spec_root / "DigitalOcean-public.v2.yaml"
paths = load(main)["paths"]
out = {"source": f"digitalocean/openapi@{commit} (specification/)", "operations": {}}
for method, path, status in OPERATIONS:
    ref = paths[path][method]["$ref"]
    file = spec_root / ref
    op = load(file)
    entry = {"query": [], "request": None, "response": None}
    for p in op.get("parameters", []):
        if "$ref" in p:
            p = resolve_param(p, file)
        if p.get("in") == "query":
            entry["query"].append(p["name"])
    body = op.get("requestBody")
    if body:
        entry["request"] = resolve(body["content"]["application/json"]["schema"], file)
    answer = op["responses"][status]
    if "$ref" in answer:
        answer_file = (file.parent / answer["$ref"]).resolve()
        answer = load(answer_file)
    else:
        answer_file = file
    content = answer.get("content", {}).get("application/json")
    if content:
        entry["response"] = resolve(content["schema"], answer_file)
    out["operations"][f"{method.upper()} {path}"] = entry

dest = root / "tests/fixtures/do-openapi.json"
dest.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {dest} ({dest.stat().st_size} bytes) from {commit}")
