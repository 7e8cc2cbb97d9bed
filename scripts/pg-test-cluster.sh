#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for local poking (tests start their own).
#   scripts/pg-test-cluster.sh start [wal_level]   → prints the DATABASE_URL
#   scripts/pg-test-cluster.sh stop
set -euo pipefail
dir="${OPS_PG_DIR:-/tmp/ops-pg-dev}"
bin="${OPS_PG_BIN:-$(compgen -G '/usr/lib/postgresql/1[5-9]/bin' | sort -V | tail -n 1)}"
[[ -x "$bin/initdb" ]] || { echo "PostgreSQL ≥ 15 not found: apt-get install postgresql (or set OPS_PG_BIN)" >&2; exit 1; }
as_pg=()
if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi

case "${1:-start}" in
  start)
    port="${OPS_PG_PORT:-55432}"
    if [[ ! -d "$dir/data" ]]; then
      mkdir -p "$dir"
      [[ ${#as_pg[@]} -eq 0 ]] || chown postgres:postgres "$dir"
      "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
      {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "wal_level = ${2:-logical}"
      } | "${as_pg[@]}" tee -a "$dir/data/postgresql.auto.conf" >/dev/null
    fi
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
    port=$(sed -n "s/^port = //p" "$dir/data/postgresql.auto.conf" | tail -n 1)
    echo "DATABASE_URL=postgresql://postgres@127.0.0.1:$port/postgres?sslmode=disable"
    ;;
  stop)
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop
    ;;
  *)
    echo "usage: $0 start [wal_level] | stop" >&2
    exit 2
    ;;
esac
