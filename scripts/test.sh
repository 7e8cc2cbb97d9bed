#!/usr/bin/env bash
# The tests in a network namespace of their own: build first (crates.io needs the network), then
# run `cargo test` under `unshare --net`, where only loopback exists, with the test addresses
# 10.77.0.2 (private) and 192.0.2.77 (public-looking) added to that namespace's `lo`. No test can
# reach or bind anything outside it, none can call a real API by mistake, and the host's network
# is never changed (the namespace goes when the run ends).
#   scripts/test.sh                                        every test
#   scripts/test.sh --test integration drain               the integration tests whose name has "drain"
#   scripts/test.sh --release soak -- --nocapture          any `cargo test` arguments
# Needs unshare (util-linux) and ip (iproute2); as a user other than root, unprivileged user
# namespaces too (the namespace is then owned by a user namespace mapping you to yourself).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in unshare ip; do
  command -v "$tool" >/dev/null || { echo "test: $tool is missing (apt-get install ${tool/unshare/util-linux}; ip is in iproute2)" >&2; exit 2; }
done
# Arguments after `--` go to the test binaries, not to the build.
build=()
for a in "$@"; do
  [[ "$a" == -- ]] && break
  build+=("$a")
done
cargo test --locked --no-run "${build[@]}"

ns=(unshare --net)
[[ $(id -u) -eq 0 ]] || ns=(unshare --map-current-user --keep-caps --net)
# shellcheck disable=SC2016 # expanded inside the namespace
inside='set -e
ip link set lo up
ip addr add 10.77.0.2/32 dev lo
ip addr add 192.0.2.77/32 dev lo
exec "$@"'
exec "${ns[@]}" -- bash -c "$inside" test-netns cargo test --frozen "$@"
