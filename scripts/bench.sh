#!/usr/bin/env bash
# Cold-start benchmark of the ops binary (release build) with hyperfine.
#   scripts/bench.sh          full run (50 runs per command), prints a Markdown table
#   scripts/bench.sh --quick  a few runs, for CI: checks the script works, measures nothing
set -euo pipefail
cd "$(dirname "$0")/.."

runs=50
if [[ "${1:-}" == "--quick" ]]; then
  runs=3
fi
command -v hyperfine >/dev/null || { echo "bench: hyperfine is missing (apt-get install hyperfine)" >&2; exit 1; }

cargo build --release --quiet
ops="$PWD/target/release/ops"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/jobs.yaml" <<'YAML'
version: 1
profiles:
  noop:
    cron: "* * * * *"
    tasks:
      - {kind: exec, name: true, command: ["true"]}
YAML
cp jobs.yaml "$work/bundled.yaml"
export OPS_STATE_DIR="$work/state" OPS_ENV_FILE=/dev/null
common=(--config "$work/bundled.yaml")

hyperfine --shell=none --warmup 3 --runs "$runs" --export-json "$work/result.json" \
  -n 'true (spawn floor)' "/bin/true" \
  -n 'ops --version' "$ops --version" \
  -n 'ops list' "$ops ${common[*]} list" \
  -n 'ops render-crontab' "$ops ${common[*]} render-crontab" \
  -n 'ops run noop (exec true)' "$ops --config $work/jobs.yaml run noop" \
  >/dev/null
python3 - "$work/result.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
floor = results[0]["median"]
print("| command | median ms | min ms | max ms | runs | × spawn floor |")
print("|:--|--:|--:|--:|--:|--:|")
for r in results:
    print(f"| `{r['command']}` | {r['median']*1e3:.2f} | {r['min']*1e3:.2f} | {r['max']*1e3:.2f} | {len(r['times'])} | {r['median']/floor:.1f} |")
PY
echo
echo "binary: $(stat -c %s "$ops") bytes (release, stripped)"
