#!/bin/sh
# Renders the systemd units of the profiles in a jobs.yaml (`ops render-systemd`) into a units
# directory, and removes the units of profiles that are gone (or no longer enabled). Shared by
# deploy/install.sh (source installs) and the Debian package's postinst, so both install the
# same units.
#
#   render-units.sh OPS_BINARY JOBS_YAML UNITS_DIR [STRIP_PREFIX]
#
# STRIP_PREFIX (install.sh --root): removed from the paths inside the units. Prints the timers
# it installed, one per line, and the removed units on stderr.
set -eu
ops=${1:?render-units.sh: give the ops binary}
jobs=${2:?render-units.sh: give jobs.yaml}
units=${3:?render-units.sh: give the units directory}
strip=${4:-}
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
"$ops" --config "$jobs" --state-dir /var/lib/ops --env-file /dev/null render-systemd --out "$rendered" >/dev/null
mkdir -p "$units"
for unit in "$rendered"/*; do
  [ -e "$unit" ] || continue
  if [ -n "$strip" ]; then sed -i "s#$strip##g" "$unit"; fi
  install -m 0644 "$unit" "$units/$(basename "$unit")"
  case "$unit" in *.timer) basename "$unit" ;; esac
done
for unit in "$units"/ops-*.timer "$units"/ops-*.service; do
  [ -e "$unit" ] || continue
  name=$(basename "$unit")
  if [ "$name" != ops-serve.service ] && [ ! -e "$rendered/$name" ]; then
    if [ -z "$strip" ] && [ -d /run/systemd/system ] && [ "${name%.timer}" != "$name" ]; then
      systemctl disable --now "$name" >/dev/null 2>&1 || true
    fi
    rm -f "$unit" "$units"/*.wants/"$name"
    echo "render-units.sh: removed $name (its profile is gone from $jobs)" >&2
  fi
done
