#!/usr/bin/env bash
# Install (or uninstall) ops on a host. Idempotent: re-running never overwrites an edited
# /etc/ops/ops.env or /etc/ops/jobs.yaml.
#
#   sudo deploy/install.sh [--binary PATH] [--scheduler timers|supercronic] [--no-start]
#   sudo deploy/install.sh uninstall
#   deploy/install.sh --root DIR ...      install into a directory tree (packaging, tests)
#   deploy/install.sh --dry-run ...       print the steps, change nothing
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
mode=install
binary=""
scheduler=timers
root=""
dry_run=0
start=1

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while (($#)); do
  case "$1" in
    install | uninstall) mode="$1" ;;
    --binary) binary="${2:?--binary needs a path}"; shift ;;
    --scheduler) scheduler="${2:?--scheduler needs timers or supercronic}"; shift ;;
    --root | --prefix) root="${2:?--root needs a directory}"; shift ;;
    --dry-run) dry_run=1 ;;
    --no-start) start=0 ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
case "$scheduler" in timers | supercronic) ;; *) echo "install.sh: --scheduler must be timers or supercronic" >&2; exit 2 ;; esac
if [[ -n "$root" ]]; then
  root="$(realpath -m "$root")"
  start=0
fi

etc="$root/etc/ops"
state="$root/var/lib/ops"
bindir="$root/usr/local/bin"
units="$root/etc/systemd/system"
docdir="$root/usr/local/share/doc/ops"
is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1
have_user=0
id -u ops >/dev/null 2>&1 && have_user=1

# Every change goes through run: printed in a dry run, executed otherwise.
run() {
  if ((dry_run)); then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

note() { printf 'install.sh: %s\n' "$*"; }

owner() { # owner user:group path...
  local who="$1"; shift
  if ((is_root)) && { ((have_user)) || [[ "$who" == root:root ]]; }; then
    run chown "$who" "$@"
  fi
}

if [[ "$mode" == uninstall ]]; then
  if [[ -z "$root" ]] && ((is_root)) && command -v systemctl >/dev/null; then
    for unit in "$units"/ops-*.timer "$units"/ops.service "$units"/ops-serve.service; do
      if [[ -e "$unit" ]]; then run systemctl disable --now "$(basename "$unit")" || true; fi
    done
  fi
  for unit in "$units"/ops-*.timer "$units"/ops-*.service "$units"/ops.service; do
    if [[ -e "$unit" ]]; then run rm -f "$unit"; fi
  done
  run rm -f "$bindir/ops"
  run rm -rf "$docdir"
  if [[ -z "$root" ]] && ((is_root)) && command -v systemctl >/dev/null; then run systemctl daemon-reload; fi
  note "removed the binary and units; kept $etc (config, secrets) and $state (history)."
  note "remove them by hand if wanted: rm -rf $etc $state; userdel ops"
  exit 0
fi

if [[ -z "$root" ]] && ! ((is_root)) && ! ((dry_run)); then
  echo "install.sh: run as root (or use --root DIR to install into a directory tree)" >&2
  exit 1
fi

# 1. The system user: never a person's account or a group others are in (the package's own
# check, which refuses those with a line saying what to do).
if [[ -z "$root" ]]; then
  sh "$here/debian/preinst" install
fi
if [[ -z "$root" ]] && ! ((have_user)); then
  group_args=(--user-group)
  getent group ops >/dev/null && group_args=(--gid ops)
  run useradd --system "${group_args[@]}" --home-dir /var/lib/ops --no-create-home \
    --shell /usr/sbin/nologin --comment trigger-ops ops
  have_user=1
  ((dry_run)) && have_user=0
fi

# 2. Directories.
run install -d -m 0755 "$bindir" "$units" "$docdir"
run install -d -m 0750 "$etc"
owner root:ops "$etc"
run install -d -m 0700 "$state"
owner ops:ops "$state"

# 3. The binary: given, or built from this checkout.
if [[ -z "$binary" ]]; then
  if [[ -f "$repo/Cargo.toml" ]] && command -v cargo >/dev/null; then
    run cargo build --release --locked --manifest-path "$repo/Cargo.toml"
    binary="$repo/target/release/ops"
  else
    echo "install.sh: give --binary PATH (no Cargo checkout or cargo here to build one)" >&2
    exit 1
  fi
fi
if ! ((dry_run)) && [[ ! -x "$binary" ]]; then
  echo "install.sh: $binary is not an executable" >&2
  exit 1
fi
run install -m 0755 "$binary" "$bindir/ops"

# 4. Config and secrets: created once, never overwritten.
if [[ ! -e "$etc/ops.env" ]]; then
  run install -m 0640 "$here/ops.env.example" "$etc/ops.env"
  owner root:ops "$etc/ops.env"
else
  note "$etc/ops.env exists: kept"
fi
if [[ ! -e "$etc/jobs.yaml" ]]; then
  run install -m 0640 "$repo/jobs.yaml" "$etc/jobs.yaml"
  owner root:ops "$etc/jobs.yaml"
else
  note "$etc/jobs.yaml exists: kept"
fi
run install -m 0644 "$repo/docs/runbook.md" "$docdir/runbook.md"

# 5. The read-only API unit (not enabled: `systemctl enable --now ops-serve`).
run install -m 0644 "$here/ops-serve.service" "$units/ops-serve.service"

# 6. The scheduler.
ops_bin="$bindir/ops"
if [[ "$scheduler" == timers ]]; then
  run rm -f "$units/ops.service"
  if ((dry_run)); then
    printf '+ %s\n' "$ops_bin --config $etc/jobs.yaml --state-dir /var/lib/ops --env-file /dev/null render-systemd --out $units"
  else
    # The same rendering as the Debian package's postinst.
    sh "$here/render-units.sh" "$ops_bin" "$etc/jobs.yaml" "$units" "$root" >/dev/null
  fi
else
  if ! command -v supercronic >/dev/null; then
    msg="supercronic is not on PATH: install it from https://github.com/aptible/supercronic/releases (a static binary; put it in /usr/local/bin), then re-run"
    if [[ -n "$root" ]] || ((dry_run)); then note "warning: $msg"; else echo "install.sh: $msg" >&2; exit 1; fi
  fi
  for unit in "$units"/ops-*.timer "$units"/ops-*.service; do
    if [[ -e "$unit" && "$(basename "$unit")" != ops-serve.service ]]; then run rm -f "$unit"; fi
  done
  run install -m 0644 "$here/ops.service" "$units/ops.service"
fi

# 7. Check and start.
if ! ((dry_run)); then
  "$ops_bin" --config "$etc/jobs.yaml" --state-dir "$state" --env-file "$etc/ops.env" check >/dev/null ||
    note "warning: ops check reported a problem: run $ops_bin check"
fi
if ((start)) && command -v systemctl >/dev/null; then
  run systemctl daemon-reload
  if [[ "$scheduler" == timers ]]; then
    for timer in "$units"/ops-*.timer; do
      if [[ -e "$timer" ]]; then run systemctl enable --now "$(basename "$timer")"; fi
    done
  else
    run systemctl enable --now ops.service
  fi
fi
# Run as root, ops becomes the owner of /var/lib/ops (the ops user) before touching it, so these
# manual runs are exactly the timers' runs.
note "installed ($scheduler). Next: edit $etc/ops.env, then: ops doctor && ops run hourly --dry-run (as root or sudo -u ops: the same run)"
