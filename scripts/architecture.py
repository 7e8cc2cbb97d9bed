#!/usr/bin/env python3
"""Checks four architecture rules on src/, and prints the module graph.

1. No import cycle between modules. An edge A -> B is any `crate::B…` path in A (tests
   excluded), `super::…` to a parent, `use child::…`, and a parent's `mod child;` declaration.
   Rust's module tree allows a child to use its parent; we do not: shared types live below both.
2. No function longer than 80 lines (signature to closing brace), tests included.
3. No file with more than 900 lines of code: lines that are neither blank nor only a comment,
   its `#[cfg(test)] mod …` apart.
4. The supervisor's pure modules (the decisions and the simulation) name no DigitalOcean client
   type: they read ops' own facts (tasks/supervisor/facts.rs), so another platform can feed them.

  python3 scripts/architecture.py          check; exit 1 on a violation
  python3 scripts/architecture.py --graph  also print every module's dependencies
"""
import os
import re
import sys

MAX_FN_LINES = 80
MAX_FILE_CODE = 900
PURE = [
    "tasks::supervisor::" + m
    for m in ("action", "capacity", "decide", "diff", "disk", "drain", "facts", "flow", "health",
              "plan", "presets", "sim", "sim::fleet", "sim::load", "spec")
]
src_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

modules = {}
for root, _, files in os.walk(src_dir):
    for f in files:
        if f.endswith(".rs"):
            path = os.path.join(root, f)
            parts = os.path.relpath(path, src_dir)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            modules["::".join(parts) or "crate"] = (path, open(path).read())


def resolve(path):
    segs = path.split("::")
    for k in range(len(segs), 0, -1):
        cand = "::".join(segs[:k])
        if cand in modules:
            return cand
    return None


edges = {}
for name, (_, text) in modules.items():
    text = re.sub(r"#\[cfg\(test\)\]\s*mod \w+ \{.*", "", text, flags=re.S)
    parent = "::".join(name.split("::")[:-1])
    deps = set()
    for m in re.finditer(r"crate::([A-Za-z_][\w:]*)", text):
        deps.add(resolve(m.group(1)))
    for m in re.finditer(r"\bsuper::\{?([A-Za-z_][\w:]*)?", text):
        deps.add(resolve((parent + "::" if parent else "") + (m.group(1) or "")) or parent)
    for m in re.finditer(r"^\s*(?:pub )?(?:use|mod) (\w+)\b", text, flags=re.M):
        child = (name + "::" if name != "crate" else "") + m.group(1)
        if child in modules:
            deps.add(child)
    edges[name] = {d for d in deps if d and d != name and d in modules}

# Tarjan's strongly connected components; the crate root (lib.rs) only declares modules.
index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()) if v != "crate" else ():
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            cycles.append(sorted(comp))


for v in edges:
    if v not in index:
        strong(v)

long_fns = []
for name, (path, text) in modules.items():
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(?:pub(?:\([a-z]+\))? )?fn (\w+)", line)
        if not m:
            continue
        indent = len(m.group(1))
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith(("{", ";")):
            j += 1
        if j >= len(lines) or lines[j].rstrip().endswith(";"):
            continue
        k = j + 1
        while k < len(lines) and not (
            lines[k].startswith(" " * indent + "}") and len(lines[k]) - len(lines[k].lstrip()) == indent
        ):
            k += 1
        if k - i + 1 > MAX_FN_LINES:
            long_fns.append(f"{os.path.relpath(path, src_dir)}:{i + 1} fn {m.group(2)}: {k - i + 1} lines")

big_files = []
leaky = []
for name, (path, text) in modules.items():
    code = re.sub(r"#\[cfg\(test\)\]\s*mod \w+ \{.*", "", text, flags=re.S)
    n = sum(1 for l in code.split("\n") if l.strip() and not l.strip().startswith("//"))
    if n > MAX_FILE_CODE:
        big_files.append(f"{os.path.relpath(path, src_dir)}: {n} lines of code")
    if name in PURE and re.search(r"clients::digitalocean", code):
        leaky.append(f"{os.path.relpath(path, src_dir)} names clients::digitalocean")

if "--graph" in sys.argv:
    for name in sorted(edges):
        print(f"{name} -> {', '.join(sorted(edges[name])) or '-'}")
ok = True
if cycles:
    ok = False
    for c in cycles:
        print("import cycle: " + " <-> ".join(c))
if long_fns:
    ok = False
    for f in long_fns:
        print(f"function over {MAX_FN_LINES} lines: {f}")
for f in big_files:
    ok = False
    print(f"file over {MAX_FILE_CODE} lines of code: {f}")
for f in leaky:
    ok = False
    print(f"DigitalOcean client type in a pure module: {f}")
print(f"{len(modules)} modules, {sum(len(e) for e in edges.values())} edges: "
      + (f"no cycle, no function over {MAX_FN_LINES} lines, no file over {MAX_FILE_CODE} lines "
         "of code, no DigitalOcean client type in the pure modules" if ok else "violations above"))
sys.exit(0 if ok else 1)
