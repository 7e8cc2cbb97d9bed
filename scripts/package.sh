#!/usr/bin/env bash
# Builds the Debian package: target/debian/trigger-ops_<version>-1_<arch>.deb, with the man page
# (from clap) and the shell completions generated from the binary.
#   scripts/package.sh [--target TRIPLE]     (cargo-deb: cargo install cargo-deb --locked)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "package.sh: cargo-deb is missing (cargo install cargo-deb --locked)" >&2; exit 1; }
target_args=()
bin=target/release/ops
if [[ "${1:-}" == "--target" ]]; then
  target_args=(--target "${2:?--target needs a triple}")
  bin="target/$2/release/ops"
fi
cargo build --release --locked "${target_args[@]}"
out=target/package
rm -rf "$out"
mkdir -p "$out/completions"
# The man page and completions come from the host's build (same clap definitions).
host_ops=target/release/ops
[[ -x "$host_ops" ]] || cargo build --release --locked
"$host_ops" manpage | gzip -9n > "$out/ops.1.gz"
"$host_ops" completions bash > "$out/completions/ops"
"$host_ops" completions zsh > "$out/completions/_ops"
"$host_ops" completions fish > "$out/completions/ops.fish"
sed -e 's#/usr/local/bin/ops#/usr/bin/ops#g' \
    -e 's#file:///usr/local/share/doc/ops/runbook.md#file:///usr/share/doc/trigger-ops/runbook.md#' \
    deploy/ops-serve.service > "$out/ops-serve.service"
[[ -x "$bin" ]] || { echo "package.sh: $bin was not built" >&2; exit 1; }
cargo deb --no-build --no-strip "${target_args[@]}"
