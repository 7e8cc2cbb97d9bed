#!/usr/bin/env bash
# Installs the Debian package on this machine and checks it as an operator would: the binary,
# the user, the modes, the rendered units (systemd-analyze verify), nothing enabled while
# `ops check` fails, an upgrade over itself that keeps an edited /etc/ops/jobs.yaml, and a purge
# that leaves nothing. Run as root (CI does); changes this machine: a throwaway one.
#   scripts/package-test.sh target/debian/trigger-ops_<version>_<arch>.deb
set -euo pipefail
deb=${1:?package-test.sh: give the .deb}
fail() { echo "package-test: $*" >&2; exit 1; }
ok() { echo "package-test: ok: $*"; }
mode() { stat -c '%a %U:%G' "$1"; }

[[ $(id -u) -eq 0 ]] || fail "run as root"
if dpkg -s trigger-ops >/dev/null 2>&1; then dpkg --purge trigger-ops >/dev/null; fi
for name in ops ops-test-member; do
  if getent passwd "$name" >/dev/null; then userdel "$name"; fi
  if getent group "$name" >/dev/null; then groupdel "$name"; fi
done

# An `ops` account the package did not make: a person's is refused before anything is unpacked,
# and survives a purge; so does a shared group; a system one is used and kept on purge.
useradd --uid 1500 --user-group --no-create-home --comment "a person" ops
out=$(dpkg -i "$deb" 2>&1) && fail "installed over a person's ops account: $out"
echo "$out" | grep -q "a user named ops exists and is not a system user (uid 1500)" || fail "no clear refusal: $out"
[[ ! -e /usr/bin/ops ]] || fail "refused, yet the binary was unpacked"
out=$(bash "$(dirname "$0")/../deploy/install.sh" --dry-run --binary /bin/true 2>&1) && fail "install.sh adopted a person's ops account: $out"
echo "$out" | grep -q "is not a system user (uid 1500)" || fail "install.sh: no clear refusal: $out"
dpkg --purge trigger-ops >/dev/null 2>&1 || true
[[ $(getent passwd ops | cut -d: -f3) == 1500 && -n $(getent group ops) ]] || fail "purge deleted the person's ops account"
userdel ops
if getent group ops >/dev/null; then groupdel ops; fi
addgroup --system --quiet ops
useradd --no-create-home --groups ops ops-test-member
out=$(dpkg -i "$deb" 2>&1) && fail "installed with a group ops others are in: $out"
echo "$out" | grep -q "the group ops has members (ops-test-member)" || fail "no clear refusal: $out"
dpkg --purge trigger-ops >/dev/null 2>&1 || true
userdel ops-test-member
if getent group ops-test-member >/dev/null; then groupdel ops-test-member; fi
adduser --system --quiet --ingroup ops --no-create-home ops
dpkg -i "$deb" >/dev/null 2>&1 || fail "a system ops user and group were not used"
dpkg --purge trigger-ops >/dev/null
[[ -n $(getent passwd ops) && -n $(getent group ops) ]] || fail "purge deleted an ops account the package did not create"
deluser --system --quiet ops >/dev/null 2>&1
if getent group ops >/dev/null; then delgroup --system --quiet ops; fi
ok "a person's ops user and a shared ops group refused; accounts it did not create kept on purge"

out=$(dpkg -i "$deb" 2>&1) || fail "dpkg -i failed: $out"
echo "$out" | grep -q "installed, not started" || fail "a fresh install with an empty env file must not start anything: $out"
ok "installed; nothing started while ops check fails"
[[ $(ops --version) == "ops "* ]] || fail "ops --version: $(ops --version)"
getent passwd ops >/dev/null || fail "no ops user"
[[ $(mode /var/lib/ops) == "700 ops:ops" ]] || fail "/var/lib/ops is $(mode /var/lib/ops)"
[[ $(mode /etc/ops/ops.env) == "640 root:ops" ]] || fail "/etc/ops/ops.env is $(mode /etc/ops/ops.env)"
[[ $(mode /etc/ops/jobs.yaml) == "640 root:ops" ]] || fail "/etc/ops/jobs.yaml is $(mode /etc/ops/jobs.yaml)"
ok "binary, user and modes"
mapfile -t units < <(ls /etc/systemd/system/ops-*.timer /etc/systemd/system/ops-*.service /lib/systemd/system/ops-serve.service)
((${#units[@]} >= 3)) || fail "units not rendered: ${units[*]}"
for timer in /etc/systemd/system/ops-*.timer; do
  [[ ! -e /etc/systemd/system/timers.target.wants/$(basename "$timer") ]] || fail "$timer enabled before ops check passes"
done
SYSTEMD_LOG_LEVEL=err systemd-analyze verify "${units[@]}" || fail "systemd-analyze verify"
ok "units of every profile rendered and verified: ${#units[@]}"
man -w ops >/dev/null 2>&1 || [[ -e /usr/share/man/man1/ops.1.gz ]] || fail "no man page"
[[ -s /usr/share/bash-completion/completions/ops ]] || fail "no bash completion"
ok "man page and completions"

# Once the env file holds what the profiles need, reconfiguring enables the timers.
cat >> /etc/ops/ops.env <<'ENV'
RAILWAY_API_TOKEN=package-test-railway-token
RAILWAY_PROJECT_ID=proj-package-test
RAILWAY_ENVIRONMENT_ID=env-package-test
DATABASE_URL=postgresql://ops:package-test@127.0.0.1:9/trigger
DIGITALOCEAN_TOKEN=package-test-do-token
ENV
ops --config /etc/ops/jobs.yaml --env-file /etc/ops/ops.env check --strict >/dev/null || fail "check --strict still fails"
out=$(dpkg-reconfigure trigger-ops 2>&1) || fail "dpkg-reconfigure: $out"
echo "$out" | grep -q "timers enabled" || fail "timers not enabled once check passes: $out"
[[ -e /etc/systemd/system/timers.target.wants/ops-health.timer ]] || fail "ops-health.timer not enabled"
ok "timers enabled once ops check --strict passes"

# An operator edits the schedule; the upgrade keeps it and follows it.
printf '%s\n' '# edited by the operator' >> /etc/ops/jobs.yaml
sed -i 's/^  health:$/  health-edited:/' /etc/ops/jobs.yaml
before=$(sha256sum /etc/ops/jobs.yaml)
dpkg -i --force-confold "$deb" >/dev/null 2>&1 || fail "upgrade over itself failed"
[[ $(sha256sum /etc/ops/jobs.yaml) == "$before" ]] || fail "the upgrade overwrote the edited jobs.yaml"
[[ -e /etc/systemd/system/ops-health-edited.timer && ! -e /etc/systemd/system/ops-health.timer ]] ||
  fail "postinst did not re-render the units for the edited jobs.yaml"
[[ ! -L /etc/systemd/system/timers.target.wants/ops-health.timer ]] || fail "the gone profile's timer is still enabled"
ok "upgrade kept the edited jobs.yaml and re-rendered the units"

dpkg -r trigger-ops >/dev/null
[[ -e /etc/ops/ops.env && -d /var/lib/ops ]] || fail "remove must keep the config and the state"
[[ ! -e /etc/systemd/system/ops-hourly.timer && ! -e /usr/bin/ops ]] || fail "remove left units or the binary"
ok "remove kept config and state"
dpkg --purge trigger-ops >/dev/null
[[ ! -e /etc/ops && ! -e /var/lib/ops ]] || fail "purge left /etc/ops or /var/lib/ops"
if compgen -G '/etc/systemd/system/*.wants/ops-*' >/dev/null; then fail "purge left enablement symlinks"; fi
! getent passwd ops >/dev/null || fail "purge left the ops user"
! getent group ops >/dev/null || fail "purge left the ops group"
ok "purge removed config, state and the user and group it created"
