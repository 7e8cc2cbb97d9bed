#!/usr/bin/env bash
# Bounded fuzzing of the input parsers with cargo-fuzz (libFuzzer). Not run in CI.
#   scripts/fuzz.sh [seconds per target, default 60]
# Targets: jobs_yaml (config loader), log_tokens (token extractor + redaction), cron, env_file,
# response_headers (what ops reads from any server's headers: retry advice, challenges).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes unstable compiler flags; the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/jobs_yaml fuzz/corpus/cron fuzz/corpus/env_file fuzz/corpus/log_tokens \
  fuzz/corpus/response_headers
cp jobs.yaml tests/corpus/bad-jobs/*.yaml fuzz/corpus/jobs_yaml/
printf '%s\n' '*/15 * * * *' '5,35 9-17 * * 1-5' '@weekly' '0 0 1 * 1' > fuzz/corpus/cron/seed
cp deploy/ops.env.example fuzz/corpus/env_file/
printf 'Token:\ntr_wgt_abc123\nTRIGGER_WORKER_TOKEN=tr_wgt_abc123\n' > fuzz/corpus/log_tokens/banner
# Two status bytes (a first byte of 0 mod 4 reads as 429), then header lines.
printf '\0\0Retry-After: 1.5\nratelimit-reset: 1700000000\nwww-authenticate: Bearer realm="https://r/token",service="s"\n' \
  > fuzz/corpus/response_headers/seed
for target in jobs_yaml log_tokens cron env_file response_headers; do
  echo "fuzz: $target for ${secs}s"
  cargo fuzz run --sanitizer none --debug-assertions "$target" "fuzz/corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
