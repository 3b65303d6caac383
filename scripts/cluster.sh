#!/usr/bin/env bash
# A throwaway PostgreSQL cluster under target/ for the demo, the multi-session tests and the
# benchmarks: version $PG (default 15; target/pgcluster, or target/pgcluster-$PG for another).
# Runs as the `postgres` OS user (initdb refuses root) on 127.0.0.1:$AICOST_PGPORT.
#   scripts/cluster.sh init | start | stop | restart | psql [args] | env
# AICOST_PRELOAD=1 starts it with shared_preload_libraries = 'pg_aicost' (shared-memory mode).
# AICOST_INITDB_ARGS adds initdb options (e.g. --no-data-checksums for a pg_upgrade target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG=${PG:-15}
PGBIN=${PGBIN:-$(dirname "$(bash "$ROOT/scripts/pg-install.sh" "$PG")")}
# A wheel's modules (e.g. libpqwalreceiver, which a standby uses) carry its build-time runpath:
# point them at the install's own libpq, not the older system one.
export LD_LIBRARY_PATH="$PGBIN/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PORT=${AICOST_PGPORT:-28815}
if [ "$PG" = 15 ]; then name=pgcluster; else name=pgcluster-$PG; fi
DIR=${AICOST_CLUSTER_DIR:-$(bash "$ROOT/scripts/pg-dir.sh" "$name")}
DATA=$DIR/data
RUNAS=()
if [ "$(id -u)" -eq 0 ]; then RUNAS=(runuser -u postgres --); fi

init() {
  mkdir -p "$DIR"
  if [ ${#RUNAS[@]} -gt 0 ]; then chown postgres: "$DIR"; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    "${RUNAS[@]}" "$PGBIN/initdb" -D "$DATA" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 \
      ${AICOST_INITDB_ARGS:-} >"$DIR/initdb.log"
    cat >>"$DATA/postgresql.conf" <<CONF
# pg_aicost throwaway cluster
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
full_page_writes = off
shared_buffers = 512MB
work_mem = 64MB
max_connections = 120
max_worker_processes = 8
max_parallel_workers_per_gather = 2
log_min_messages = warning
CONF
  fi
}

running() { "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  init
  if ! running; then
    local opts=""
    if [ "${AICOST_PRELOAD:-0}" = 1 ]; then opts="-c shared_preload_libraries=pg_aicost"; fi
    # The server must not inherit our other descriptors (e.g. a flock held by the caller).
    local fd
    for fd in /proc/$$/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "$opts" -w -t 60 start >/dev/null
  fi
}

stop() { if [ -f "$DATA/PG_VERSION" ] && running; then "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; fi; }

case "${1:-start}" in
  init) init ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  psql) shift; exec "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -v ON_ERROR_STOP=1 "$@" ;;
  env) echo "AICOST_TEST_DSN=host=127.0.0.1 port=$PORT user=postgres" ;;
  *) echo "usage: $0 init|start|stop|restart|psql|env" >&2; exit 2 ;;
esac
