#!/usr/bin/env python3
"""Trim Railway's published GraphQL schema to what ops uses, for tests/fixtures/railway-schema.json.

Railway publishes its schema (an introspection result) in its CLI repository: railwayapp/cli,
src/gql/schema.json. The test `railway_schema` validates every query in src/clients/railway.rs
against this pinned copy. To refresh it after adding a query:

    git clone --depth 1 https://github.com/railwayapp/cli /tmp/railway-cli
    python3 scripts/railway-schema.py /tmp/railway-cli/src/gql/schema.json "$(git -C /tmp/railway-cli rev-parse HEAD)"

The trimmed copy keeps the root fields our queries name, every type reachable from them, and of
each object type only the fields whose names appear in our queries (the others cannot matter to
the validation). Input objects, enums and scalars are kept whole.
"""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
schema_path, commit = sys.argv[1], sys.argv[2]
full = json.loads(Path(schema_path).read_text())
schema = full.get("data", full)["__schema"]
source = (root / "src/clients/railway.rs").read_text()
queries = re.findall(r'"((?:query|mutation) [^"]*)"', source)
words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(queries)))
types = {t["name"]: t for t in schema["types"]}


def named(ref):
    while ref.get("ofType"):
        ref = ref["ofType"]
    return ref["name"]


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items()
                if k not in ("description", "isDeprecated", "deprecationReason") and v is not None}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


keep, todo = {}, [schema["queryType"]["name"], schema["mutationType"]["name"]]
while todo:
    name = todo.pop()
    if name in keep or name not in types:
        continue
    t = dict(types[name])
    if t["kind"] in ("OBJECT", "INTERFACE"):
        t["fields"] = [f for f in t["fields"] or [] if f["name"] in words]
        t["interfaces"] = []
        for f in t["fields"]:
            todo.append(named(f["type"]))
            todo.extend(named(a["type"]) for a in f["args"])
    if t["kind"] == "INPUT_OBJECT":
        todo.extend(named(f["type"]) for f in t["inputFields"])
    if t["kind"] == "UNION":
        todo.extend(p["name"] for p in t["possibleTypes"] or [])
    keep[name] = strip(t)

out = {
    "source": f"railwayapp/cli src/gql/schema.json at {commit}, trimmed by scripts/railway-schema.py",
    "__schema": {
        "queryType": schema["queryType"],
        "mutationType": schema["mutationType"],
        "types": [keep[n] for n in sorted(keep)],
    },
}
dest = root / "tests/fixtures/railway-schema.json"
dest.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"{dest}: {len(keep)} types from {len(queries)} queries")
