#!/usr/bin/env bash
# pg_aicost benchmarks: one run on one cluster, one results table, printed and written to
# target/bench-results.md.
#
# The cluster runs in two modes during the run (scripts/cluster.sh restart in between):
#   per-backend mode     pg_aicost loaded by each backend on first use (no shared memory);
#   shared-memory mode   pg_aicost in shared_preload_libraries (AICOST_PRELOAD=1): frozen pricing
#                        catalog, statistics and budget admission in shared memory.
# Phase 1 runs in per-backend mode: A, B, C (per-backend half), D, E, F (per-backend half).
# Phase 2 runs in shared-memory mode: C (shared half), G, F (shared half), then the cross-database
# check. The run ends in the mode the cluster was in when it started (after `scripts/cluster.sh
# start`, which uses AICOST_PRELOAD if it has to start it), also when it fails.
#
#   A. Batch pricing of 1,000,000 usage rows with the full LiteLLM catalog imported:
#        1. ai_cost()   2. a plain SQL join on a prices table   3. a PL/pgSQL lookup function
#        4. constant prices (the floor: only the arithmetic and the scan).
#      Each with the planner's default (parallel) plan and again serially. Variants 1-3 must give
#      exactly the same sum (numeric equality), so the benchmark also checks correctness.
#      Then ai_cost with aicost.pricing_cache on vs off over 10,000 rows, and the per-query cost
#      of parallel workers building their own pricing cache.
#   B. pgbench: SELECT ai_cost('gpt-4o', 1000, 500) vs SELECT 1, at 1 and 8 clients.
#   C. (issue 5, G1) First-call latency of ai_cost in a fresh connection, full catalog imported,
#      per-backend vs shared-memory mode: BENCH_FRESH_CONNECTIONS connections per mode, median and
#      p90 of the first ai_cost statement after an untimed SELECT 1 (psql \timing). Measured
#      separately in shared-memory mode: the first call after the restart and the first call after
#      each of BENCH_PRICE_CHANGES price changes (both build the shared catalog).
#   D. Criterion micro-benchmarks of the pure-Rust core (aicost-core, benches/cost.rs).
#   E. Response cache (fixture: benches/cache_setup.sql). pgbench of ai_cache_get hits at 1, 8
#      and 32 clients vs two hand-rolled UNLOGGED key/value peers and vs Redis GET on loopback
#      (redis-server/redis-tools are installed from Debian if missing; a throwaway redis-server
#      runs on BENCH_REDIS_PORT and is stopped at exit). Checks that aicost.cache_stats counts
#      exactly the hits pgbench executed, before and after ai_cache_sweep() (timed). Then the
#      hit ratio of LRU and LFU on one Zipf(1) access sequence over 10x the namespace's limit.
#   F. (issue 5, G3) Budgets (fixture: benches/ledger_setup.sql), in both modes, each in a fresh
#      database (aicost_ledger_bench, aicost_ledger_bench_shm). pgbench of usage-row inserts at 1, 8
#      and 32 clients (a) without a budget, (b) all on one shared budget, (c) one budget per client;
#      checks the invariant (ai_budget_audit() empty, spend summed over all slots of budget_spend =
#      ledger cost for the shared budget and for each own budget, one ledger row per pgbench
#      transaction) and reports the targets (b) / (a) >= 0.70 (per-backend) and >= 0.90
#      (shared-memory) at 32 clients. Each mode runs on the throwaway cluster, then again on a
#      durable one (fsync, full_page_writes, synchronous_commit on; ALTER SYSTEM, reloaded).
#      E and F sample pg_stat_activity wait events at 32 clients.
#      Then checks that shared memory keeps databases apart (prices and budget admission).
#   G. (issue 5, G2) Statistics overhead in shared-memory mode: sum(ai_cost(...)) over the 1,000,000
#      rows of A and pgbench of SELECT ai_cost('gpt-4o', 1000, 500) at 8 clients, aicost.track = on
#      vs off; if aicost.stat_cost exists, checks it counted exactly the calls made with track = on.
#   H. (issue 14) Circuit breaker: pgbench of ai_call_allowed and ai_call_report (a success) on one
#      model at 1, 8 and 32 clients vs SELECT 1, in both modes (per-backend: table
#      aicost.breaker_state; shared-memory: shared memory), each on the throwaway cluster and on a
#      durable one (ALTER SYSTEM SET fsync, full_page_writes, synchronous_commit = on, reloaded).
#
# Usage: `make bench` (installs a release build, restarts the cluster, runs this script), or
#   bash benches/run.sh          against whatever build is installed; the cluster is started if needed.
# Environment: AICOST_PGPORT (default 28815) and AICOST_CLUSTER_DIR select the cluster
#   (scripts/cluster.sh); AICOST_SHARED_DATA (default ../shared/data) may hold litellm_model_prices.json
#   (else the copy the pinned LiteLLM wheel ships is used, see pgrx-tests/litellm/prepare.sh);
#   BENCH_RUNS (3), BENCH_NOCACHE_RUNS (1: the pricing_cache = off run takes ~1 min) and
#   BENCH_PGBENCH_SECONDS (10) tune the run length; BENCH_CACHE_SECONDS and BENCH_LEDGER_SECONDS
#   (default: BENCH_PGBENCH_SECONDS) the pgbench runs of E and F, BENCH_ZIPF_ACCESSES (30000),
#   BENCH_REDIS_REQUESTS (200000) and BENCH_REDIS_PORT (28879) the rest of E;
#   BENCH_FRESH_CONNECTIONS (20) and BENCH_PRICE_CHANGES (5) section C; BENCH_STATS_RUNS (5) and
#   BENCH_STATS_SECONDS (default: BENCH_PGBENCH_SECONDS) the 1M-row and pgbench runs of G;
#   BENCH_BREAKER_SECONDS (5) the pgbench runs of H; BENCH_SECTIONS ("A B C D E F G H") the
#   sections to run (the fixture of A is always built); BENCH_OUT (target/bench-results.md) where
#   the results go.
# Any failing step (SQL error, unequal sums, pgbench error, cargo bench error, a statistics or
# budget invariant broken, databases not kept apart in shared memory, pg_aicost.so replaced during
# the run) exits non-zero. The checks that need the numbers (cross-database, library replaced)
# fail after the results are written.
# The databases aicost_bench, aicost_ledger_bench and aicost_ledger_bench_shm are recreated and
# left for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PGBIN=${PGBIN:-$(dirname "$(bash scripts/pg-install.sh "${PG:-15}")")}
export AICOST_PGPORT=${AICOST_PGPORT:-28815}
PORT=$AICOST_PGPORT
# LiteLLM's price file: the shared copy, else the one the pinned LiteLLM wheel ships (prepare.sh).
bash "$ROOT/pgrx-tests/litellm/prepare.sh" >/dev/null
CATALOG=$ROOT/target/litellm-prices.json
DB=aicost_bench
RUNS=${BENCH_RUNS:-3}
# The cache-off run takes about a minute per run (~6 ms per call): once by default.
NOCACHE_RUNS=${BENCH_NOCACHE_RUNS:-1}
PGB_SECONDS=${BENCH_PGBENCH_SECONDS:-10}
# Section E: seconds per pgbench run, Zipf accesses, Redis requests and port. Section F: seconds.
E_SECONDS=${BENCH_CACHE_SECONDS:-$PGB_SECONDS}
ZIPF_ACCESSES=${BENCH_ZIPF_ACCESSES:-30000}
REDIS_REQUESTS=${BENCH_REDIS_REQUESTS:-200000}
REDIS_PORT=${BENCH_REDIS_PORT:-28879}
F_SECONDS=${BENCH_LEDGER_SECONDS:-$PGB_SECONDS}
LEDGER_DB=aicost_ledger_bench
LEDGER_DB_SHM=aicost_ledger_bench_shm
# Section C: fresh connections per mode, price changes in shared-memory mode. Section G: seconds.
FRESH=${BENCH_FRESH_CONNECTIONS:-20}
PRICE_CHANGES=${BENCH_PRICE_CHANGES:-5}
G_SECONDS=${BENCH_STATS_SECONDS:-$PGB_SECONDS}
G_RUNS=${BENCH_STATS_RUNS:-5}
H_SECONDS=${BENCH_BREAKER_SECONDS:-5}
SECTIONS=" ${BENCH_SECTIONS:-A B C D E F G H} "
OUT=${BENCH_OUT:-$ROOT/target/bench-results.md}
TMP=$(mktemp -d /tmp/aicost-bench.XXXXXX)
REDIS_PIDFILE=$ROOT/target/bench-redis.pid
# Stops the throwaway redis-server of section E, if this run started it.
REDIS_STARTED=
stop_redis() {
  if [ -n "$REDIS_STARTED" ] && [ -s "$REDIS_PIDFILE" ]; then
    kill "$(cat "$REDIS_PIDFILE")" 2>/dev/null || true
    rm -f "$REDIS_PIDFILE"
  fi
  REDIS_STARTED=
}
# The mode the cluster was found in; restored at exit.
INITIAL_MODE=
cleanup() {
  stop_redis
  if [ -n "${DURABLE_ON:-}" ]; then durable off || true; fi
  if [ -n "${SAMPLER_PID:-}" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
  restore_mode
  rm -rf "$TMP"
}
trap cleanup EXIT

log() { printf '==> [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'bench: FAILED: %s\n' "$*" >&2; exit 1; }
psql_() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_db() { psql_ -d "$DB" "$@"; }
want() { [[ $SECTIONS == *" $1 "* ]]; }
# Floating-point helpers (bash has integers only).
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# pctl P VALUES...: the P-th percentile, nearest rank (ceil(P / 100 * n)-th smallest).
pctl() {
  printf '%s\n' "${@:2}" | sort -g |
    awk -v p="$1" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'
}
best() { printf '%s\n' "$@" | sort -g | head -1; }
# holds EXPR: whether a numeric comparison holds (awk; keep > and < inside the parentheses).
holds() { awk "BEGIN { exit !($1) }"; }
# Results are collected per section (out appends to section $SEC) and printed at the end in
# the order of $ORDER (progress goes to stderr meanwhile).
declare -A BUF
ORDER="head A B C D E F G H tail"
SEC=head
out() { BUF[$SEC]+="$*"$'\n'; }

# time_sql SQL [RUNS]: runs a one-value SELECT RUNS times in one fresh session. Sets BEST_MS to the
# fastest psql \timing (server execution + one loopback round trip) and VALUE to the result, which
# must be identical in every run. WARMUP, if set, is an untimed statement run first (no output).
time_sql() {
  local sql=$1 runs=${2:-$RUNS} args=(-At) res i
  if [ -n "${WARMUP:-}" ]; then args+=(-c "$WARMUP"); fi
  args+=(-c '\timing on')
  for ((i = 0; i < runs; i++)); do args+=(-c "$sql"); done
  res=$(psql_db "${args[@]}") || die "query failed: $sql"
  VALUE=$(grep -v '^Time: ' <<<"$res" | sort -u)
  [ -n "$VALUE" ] && [ "$(wc -l <<<"$VALUE")" -eq 1 ] || die "runs of [$sql] disagree: $VALUE"
  BEST_MS=$(grep '^Time: ' <<<"$res" | awk '{ print $2 }' | sort -g | head -1)
}

# plan_info SQL: WORKERS = workers planned (0 without a Gather), JIT = yes/no, from plain EXPLAIN.
plan_info() {
  local plan
  plan=$(psql_db -At -c "EXPLAIN $1")
  WORKERS=$(grep -oP 'Workers Planned: \K[0-9]+' <<<"$plan" | head -1 || true)
  WORKERS=${WORKERS:-0}
  if grep -q '^JIT:' <<<"$plan"; then JIT=yes; else JIT=no; fi
}

# pgbench_db DATABASE SCRIPT CLIENTS THREADS SECONDS: sets TPS, LAT (average latency, ms) and
# XACTS (transactions processed). Fails on any failed transaction. PGOPTIONS passes through.
pgbench_db() {
  local res failed
  res=$("$PGBIN/pgbench" -n -T "$5" -c "$3" -j "$4" -f "benches/$2" \
        -h 127.0.0.1 -p "$PORT" -U postgres "$1" 2>&1) || die "pgbench -f $2 -c $3 failed: $res"
  TPS=$(grep -oP '^tps = \K[0-9.]+' <<<"$res" || true)
  LAT=$(grep -oP '^latency average = \K[0-9.]+' <<<"$res" || true)
  XACTS=$(grep -oP '^number of transactions actually processed: \K[0-9]+' <<<"$res" || true)
  failed=$(grep -oP '^number of failed transactions: \K[0-9]+' <<<"$res" || echo 0)
  [ -n "$TPS" ] && [ -n "$LAT" ] && [ -n "$XACTS" ] && [ "$failed" = 0 ] ||
    die "pgbench -f $2 -c $3: unexpected output: $res"
}
# pgbench_run SCRIPT CLIENTS: section B, in $DB, one thread per client, PGB_SECONDS.
pgbench_run() { pgbench_db "$DB" "$1" "$2" "$2" "$PGB_SECONDS"; }

# Wait-event sampler for sections E and F: start_sampler DATABASE FILE starts a psql session
# that records every 0.5 s what each client backend of DATABASE is doing: its
# wait_event_type:wait_event, CPU if active without a wait event (running, spinning on a spinlock,
# or waiting for a CPU), else its state. stop_sampler ends it. wait_table NAME FILE [NAME FILE...]
# prints a markdown table of the share of (backend, sample) pairs in each state, one column per file.
SAMPLER_PID=
start_sampler() {
  "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -At -d "$1" >"$2" 2>&1 <<<"SELECT '#sample' UNION ALL
    SELECT coalesce(wait_event_type || ':' || wait_event, CASE WHEN state = 'active' THEN 'CPU' ELSE state END)
      FROM pg_stat_activity
     WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid() \\watch 0.5" &
  SAMPLER_PID=$!
}
stop_sampler() {
  if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi
  SAMPLER_PID=
}
wait_table() {
  local names=() files=()
  while [ $# -gt 0 ]; do names+=("$1"); files+=("$2"); shift 2; done
  printf '| client backend state (sampled every 0.5 s) |'; printf ' %s |' "${names[@]}"; echo
  printf '| --- |'; printf ' ---: |%.0s' "${names[@]}"; echo
  # Rows sorted by their largest share; the last row counts the samples.
  awk 'FNR == 1 { f++ } /^#sample$/ { s[f]++; next } /^[A-Za-z]/ { n[f, $0]++; t[f]++; k[$0] = 1 }
       END {
         for (key in k) {
           row = "| " key " |"; m = 0
           for (i = 1; i <= f; i++) { v = t[i] ? 100 * n[i, key] / t[i] : 0; row = row sprintf(" %.1f%% |", v); if (v > m) m = v }
           printf "%09.3f\t%s\n", m, row
         }
         row = "| samples |"; for (i = 1; i <= f; i++) row = row " " (s[i] + 0) " |"
         printf "%09.3f\t%s\n", -1, row
       }' "${files[@]}" | sort -r | cut -f2-
}

# ---------------------------------------------------------------------------------------------
# The cluster, its two modes, the library guard and the machine
# ---------------------------------------------------------------------------------------------
SO=$("$PGBIN/pg_config" --pkglibdir)/pg_aicost.so
# A reinstall during the run would mix builds: checked before every restart and at the end.
so_stamp() { stat -c '%s %Y %i' "$SO" 2>/dev/null || echo missing; }
so_unchanged() { [ "$(so_stamp)" = "$SO_STAMP" ]; }
check_so() { so_unchanged || die "$SO was replaced during the run (someone installed a build): the numbers would mix builds, run again"; }

# mode_now: "shared" if pg_aicost is in the running server's shared_preload_libraries, else "backend".
mode_now() {
  psql_ -d postgres -At -c "SELECT CASE WHEN 'pg_aicost' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
                                        THEN 'shared' ELSE 'backend' END"
}
mode_name() { if [ "$1" = shared ]; then echo "shared-memory"; else echo "per-backend"; fi; }
# restart_in MODE: restarts the cluster in MODE (scripts/cluster.sh restart with AICOST_PRELOAD).
restart_in() {
  AICOST_PRELOAD=$([ "$1" = shared ] && echo 1 || echo 0) scripts/cluster.sh restart
}
# set_mode MODE: restarts the cluster into MODE unless it runs in it already.
set_mode() {
  local m
  m=$(mode_now) || die "cluster not reachable on port $PORT"
  [ "$m" = "$1" ] && return 0
  check_so
  log "restarting the cluster in $(mode_name "$1") mode"
  restart_in "$1" || die "restart in $(mode_name "$1") mode failed (see server.log in the cluster directory)"
  m=$(mode_now) || die "cluster not reachable after the restart"
  [ "$m" = "$1" ] || die "the cluster came up in $(mode_name "$m") mode, wanted $(mode_name "$1")"
  if [ "$1" = shared ]; then
    psql_ -d postgres -At -c "SHOW aicost.shmem_catalog_size" >/dev/null ||
      die "pg_aicost is preloaded but its shared-memory settings are missing (old build?)"
  fi
}
# restore_mode: back to INITIAL_MODE (at exit, also after a failure; best effort).
restore_mode() {
  local m
  [ -n "$INITIAL_MODE" ] || return 0
  m=$(mode_now 2>/dev/null) || m=
  if [ "$m" != "$INITIAL_MODE" ]; then
    log "restoring the cluster's $(mode_name "$INITIAL_MODE") mode"
    restart_in "$INITIAL_MODE" >&2 || printf 'bench: could not restart the cluster in %s mode\n' "$(mode_name "$INITIAL_MODE")" >&2
  fi
  INITIAL_MODE=
}

scripts/cluster.sh start
INITIAL_MODE=$(mode_now) || die "cluster not reachable on port $PORT"
[ -r "$CATALOG" ] || die "LiteLLM catalog not readable: $CATALOG (set AICOST_SHARED_DATA)"

[ -f "$SO" ] || die "pg_aicost is not installed ($SO missing): run make install-release"
SO_MB=$(( $(stat -c %s "$SO") / 1048576 ))
SO_STAMP=$(so_stamp)
if ! command -v readelf >/dev/null; then
  BUILD="build type unknown (no readelf)"
elif grep -q '\.debug_info' <<<"$(readelf -S "$SO")"; then
  BUILD="has debug info: probably a DEBUG build, numbers not representative"
else
  BUILD="no debug info: release build"
fi
out "# pg_aicost benchmark results"
out ""
out "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
out ""
out "| machine | |"
out "| --- | --- |"
out "| CPUs (nproc) | $(nproc) |"
out "| CPU model | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') |"
out "| RAM | $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
out "| PostgreSQL | $(psql_ -d postgres -At -c 'SHOW server_version') |"
out "| cluster settings | $(psql_ -d postgres -At -F ', ' -c "SELECT 'max_parallel_workers_per_gather=' || current_setting('max_parallel_workers_per_gather'), 'jit=' || current_setting('jit'), 'shared_buffers=' || current_setting('shared_buffers'), 'fsync=' || current_setting('fsync'), 'max_connections=' || current_setting('max_connections')") |"
out "| pg_aicost.so | ${SO_MB} MiB, $BUILD |"
out "| modes | A, B, D, E: per-backend (pg_aicost not preloaded); C and F: both modes; G: shared-memory (shared_preload_libraries = pg_aicost). The cluster was found in $(mode_name "$INITIAL_MODE") mode and is left in it. |"
out ""

# ---------------------------------------------------------------------------------------------
# Phase 1: per-backend mode
# ---------------------------------------------------------------------------------------------
set_mode backend

log "fixture: database $DB, import of $CATALOG, 1,000,000 usage rows"
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
FIXTURE=$(psql_db -v catalog_file="$CATALOG" -f benches/setup.sql) || die "fixture (benches/setup.sql) failed"
read -r IMPORTED MODELS PRICES BENCH_PRICES <<<"$FIXTURE"
# References for the shared-memory phase, priced in per-backend mode: usage_10k and one call.
REF10K=$(psql_db -At -c "SELECT sum(ai_cost(model, in_tokens, out_tokens)) FROM usage_10k") || die "reference sum failed"
REF_GPT4O=$(psql_db -At -c "SELECT ai_cost('gpt-4o', 1000000, 0)") || die "reference price failed"

# ---------------------------------------------------------------------------------------------
# A. Batch pricing over 1,000,000 rows
# ---------------------------------------------------------------------------------------------
section_A() {
  SEC=A
  SQL[1]="SELECT sum(ai_cost(model, in_tokens, out_tokens)) FROM usage"
  SQL[2]="SELECT sum((u.in_tokens * p.input + u.out_tokens * p.output) / 1000000) FROM usage u JOIN bench_prices p USING (model)"
  SQL[3]="SELECT sum(bench_cost_plpgsql(model, in_tokens, out_tokens)) FROM usage"
  SQL[4]="SELECT sum((in_tokens * 2.5 + out_tokens * 10) / 1000000) FROM usage"
  NAME[1]="ai_cost(model, in_tokens, out_tokens)"
  NAME[2]="plain SQL join on bench_prices"
  NAME[3]="PL/pgSQL lookup function (STABLE PARALLEL SAFE)"
  NAME[4]="floor: constant prices, same arithmetic"
  for v in 1 2 3 4; do
    log "A.$v ${NAME[$v]} (best of $RUNS)"
    plan_info "${SQL[$v]}"
    time_sql "${SQL[$v]}"
    MS[v]=$BEST_MS SUM[v]=$VALUE W[v]=$WORKERS J[v]=$JIT
    # The same query without parallel workers, to show how each variant scales.
    log "A.$v ... serial (max_parallel_workers_per_gather = 0, best of $RUNS)"
    PGOPTIONS="-c max_parallel_workers_per_gather=0" time_sql "${SQL[$v]}"
    SERIAL_MS[v]=$BEST_MS
    [ "$VALUE" = "${SUM[v]}" ] || die "variant $v: serial sum $VALUE differs from parallel sum ${SUM[v]}"
  done

  # Variant 1 again, in a session whose pricing cache was first built by a serial statement. In a
  # fresh session (above) the leader builds it during the first parallel query; a cache read in
  # parallel mode is rebuilt at the next statement, so there every run pays for a leader rebuild too.
  log "A.1b ai_cost, session cache warmed by a serial call first (best of $RUNS)"
  WARMUP="DO \$\$ BEGIN PERFORM ai_cost('gpt-4o', 1, 1); END \$\$" time_sql "${SQL[1]}"
  MS1B=$BEST_MS
  [ "$VALUE" = "${SUM[1]}" ] || die "variant 1b: sum $VALUE differs from ${SUM[1]}"

  # Correctness: ai_cost, the join and the PL/pgSQL function must agree to the last digit.
  EQ=$(psql_db -At -c "SELECT '${SUM[1]}'::numeric = '${SUM[2]}'::numeric AND '${SUM[2]}'::numeric = '${SUM[3]}'::numeric")
  [ "$EQ" = t ] || die "sums differ: ai_cost=${SUM[1]} join=${SUM[2]} plpgsql=${SUM[3]}"

  FASTEST=$(printf '%s\n' "${MS[@]}" | sort -g | head -1)
  out "## A. Batch pricing: sum over 1,000,000 usage rows, 8 models"
  out ""
  out "Catalog: full LiteLLM file imported ($IMPORTED models with token prices; $MODELS models and $PRICES current prices in aicost; bench_prices has $BENCH_PRICES rows). Wall time = psql \\timing, best of $RUNS, with the plan the planner chooses by default (parallel); serial = the same with max_parallel_workers_per_gather = 0."
  out ""
  out "| # | variant | wall ms | ns/row | × fastest | workers planned | JIT | serial wall ms | parallel speedup | sum (USD) |"
  out "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
  for v in 1 2 3 4; do
    out "| $v | ${NAME[$v]} | $(calc %.1f "${MS[v]}") | $(calc %.0f "${MS[v]} * 1e6 / 1000000") | $(calc %.2f "${MS[v]} / $FASTEST") | ${W[v]} | ${J[v]} | $(calc %.1f "${SERIAL_MS[v]}") | $(calc %.2f× "${SERIAL_MS[v]} / ${MS[v]}") | $(calc %.6f "${SUM[v]}") |"
    if [ "$v" = 1 ]; then
      out "| 1b | ai_cost, session cache built by a serial call first | $(calc %.1f "$MS1B") | $(calc %.0f "$MS1B * 1e6 / 1000000") | $(calc %.2f "$MS1B / $FASTEST") | ${W[1]} | ${J[1]} | | $(calc %.2f× "${SERIAL_MS[1]} / $MS1B") | $(calc %.6f "${SUM[1]}") |"
    fi
  done
  out ""
  out "Correctness: sums of variants 1, 2 and 3 are equal (numeric =): **yes** (${SUM[1]})."
  out ""

  # ai_cost with the in-memory cache on vs off (off re-reads the catalog tables on every call), on
  # the same 10,000 rows; a 10,000-row table is below min_parallel_table_scan_size, so both are serial.
  Q10K="SELECT sum(ai_cost(model, in_tokens, out_tokens)) FROM usage_10k"
  log "A.5 ai_cost over 10,000 rows, pricing cache on (best of $RUNS)"
  time_sql "$Q10K"
  ON_MS=$BEST_MS ON_SUM=$VALUE
  log "A.6 ai_cost over 10,000 rows, pricing cache off (best of $NOCACHE_RUNS; slow)"
  PGOPTIONS="-c aicost.pricing_cache=off" time_sql "$Q10K" "$NOCACHE_RUNS"
  OFF_MS=$BEST_MS OFF_SUM=$VALUE
  [ "$(psql_db -At -c "SELECT '$ON_SUM'::numeric = '$OFF_SUM'::numeric")" = t ] ||
    die "pricing_cache on/off sums differ: $ON_SUM vs $OFF_SUM"
  out "| ai_cost over usage_10k (10,000 rows, serial; cache on: best of $RUNS, off: best of $NOCACHE_RUNS) | wall ms | µs/call |"
  out "| --- | ---: | ---: |"
  out "| aicost.pricing_cache = on | $(calc %.1f "$ON_MS") | $(calc %.2f "$ON_MS * 1000 / 10000") |"
  out "| aicost.pricing_cache = off | $(calc %.1f "$OFF_MS") | $(calc %.1f "$OFF_MS * 1000 / 10000") |"
  out "| off / on | $(calc %.0f× "$OFF_MS / $ON_MS") | |"
  out ""

  # Each parallel worker is a new backend: it loads pg_aicost and builds its own pricing cache on
  # every parallel query. Measure that fixed cost: a forced parallel plan over usage_10k in which
  # the leader does not take rows, so the 2 workers price everything; the floor query is the control.
  FORCE_PARALLEL="-c parallel_setup_cost=0 -c parallel_tuple_cost=0 -c min_parallel_table_scan_size=0 -c parallel_leader_participation=off"
  Q10K_FLOOR="SELECT sum((in_tokens * 2.5 + out_tokens * 10) / 1000000) FROM usage_10k"
  log "A.7 forced parallel plan over 10,000 rows, workers only: ai_cost vs floor (best of $RUNS)"
  PGOPTIONS=$FORCE_PARALLEL plan_info "$Q10K"
  PW=$WORKERS
  PGOPTIONS=$FORCE_PARALLEL time_sql "$Q10K"
  PAR_MS=$BEST_MS
  [ "$(psql_db -At -c "SELECT '$ON_SUM'::numeric = '$VALUE'::numeric")" = t ] ||
    die "parallel-worker ai_cost sum differs: $VALUE vs $ON_SUM"
  PGOPTIONS=$FORCE_PARALLEL time_sql "$Q10K_FLOOR"
  PAR_FLOOR_MS=$BEST_MS
  out "| forced parallel plan over usage_10k, $PW workers, leader takes no rows | wall ms |"
  out "| --- | ---: |"
  out "| ai_cost (each worker builds its own pricing cache first) | $(calc %.1f "$PAR_MS") |"
  out "| floor: constant prices (control) | $(calc %.1f "$PAR_FLOOR_MS") |"
  out "| difference ≈ per-query cost of the workers' cache loads | $(calc %.1f "$PAR_MS - $PAR_FLOOR_MS") |"
  out ""
}

# ---------------------------------------------------------------------------------------------
# B. pgbench: per-statement overhead of one ai_cost call
# ---------------------------------------------------------------------------------------------
section_B() {
  SEC=B
  out "## B. pgbench, ${PGB_SECONDS} s each (-n -c N -j N, simple protocol)"
  out ""
  out "| clients | SELECT ai_cost('gpt-4o', 1000, 500) tps | latency ms | SELECT 1 tps | latency ms | tps ai_cost / SELECT 1 |"
  out "| ---: | ---: | ---: | ---: | ---: | ---: |"
  for c in 1 8; do
    log "B. pgbench ai_cost, $c client(s), ${PGB_SECONDS} s"
    pgbench_run pgbench_ai_cost.sql "$c"; AT=$TPS AL=$LAT
    log "B. pgbench SELECT 1, $c client(s), ${PGB_SECONDS} s"
    pgbench_run pgbench_select1.sql "$c"; ST=$TPS SL=$LAT
    out "| $c | $(calc %.0f "$AT") | $AL | $(calc %.0f "$ST") | $SL | $(calc %.2f "$AT / $ST") |"
    if [ "$c" = 8 ]; then B_TPS8=$AT B_LAT8=$AL; fi
  done
  out ""
}

# ---------------------------------------------------------------------------------------------
# C. (G1) First call in a fresh connection: per-backend vs shared-memory mode
# ---------------------------------------------------------------------------------------------
# What is timed: psql \timing of the first `SELECT ai_cost('gpt-4o', 1000, 500)` of a new
# connection, run after an untimed `SELECT 1` in that connection, so neither the connection set-up
# nor the backend's first-statement work (its relation cache etc.) is counted; the second, identical
# statement of the same connection is the warm reference. Each time includes one loopback round trip.
# Per-backend mode: the first call loads pg_aicost.so (dlopen + _PG_init) and reads the whole catalog
# into the backend's cache; "after LOAD" loads the library in an untimed statement first.
# Shared-memory mode: the library is inherited from the postmaster; the first call reads the models
# the name can match from the frozen catalog in shared memory. The shared catalog is built by the
# first call after the restart and by the first call after each committed price change: those are
# measured separately and excluded from the steady-state numbers.
QC="SELECT ai_cost('gpt-4o', 1000, 500)"
QC_VALUE=
# first_calls N [PRE]: N fresh connections to $DB, each: SELECT 1, PRE (untimed, optional), then QC
# twice under \timing. Sets FC_FIRST and FC_SECOND (ms, one per connection); every call must return
# the same value (QC_VALUE, set by the first call measured in the run).
first_calls() {
  local n=$1 pre=() i res t vals
  if [ -n "${2:-}" ]; then pre=(-c "$2"); fi
  FC_FIRST=() FC_SECOND=()
  for ((i = 0; i < n; i++)); do
    res=$(psql_db -At -c 'SELECT 1' "${pre[@]}" -c '\timing on' -c "$QC" -c "$QC") || die "first-call run failed"
    t=$(grep -oP '^Time: \K[0-9.]+' <<<"$res")
    [ "$(wc -l <<<"$t")" = 2 ] || die "first-call run: unexpected output: $res"
    FC_FIRST+=("$(sed -n 1p <<<"$t")") FC_SECOND+=("$(sed -n 2p <<<"$t")")
    vals=$(grep -v '^Time: ' <<<"$res" | sed 1d | sort -u)  # line 1: the result of SELECT 1
    if [ -z "$QC_VALUE" ]; then QC_VALUE=$vals; fi
    [ "$vals" = "$QC_VALUE" ] || die "first-call run: ai_cost returned [$vals], expected $QC_VALUE"
  done
}

# Phase 1 (per-backend mode).
section_C_backend() {
  log "C. first call in a fresh connection, per-backend mode ($FRESH + $FRESH connections)"
  first_calls 1  # untimed: brings the catalog tables into shared buffers
  first_calls "$FRESH"
  C_B_FIRST=("${FC_FIRST[@]}") C_B_SECOND=("${FC_SECOND[@]}")
  first_calls "$FRESH" "LOAD 'pg_aicost'"
  C_B_LOADED=("${FC_FIRST[@]}")
}

# Phase 2 (shared-memory mode), right after the restart: nothing has priced anything yet.
section_C_shared() {
  local k price res
  log "C. first call after the restart, shared-memory mode (builds the shared catalog)"
  first_calls 1
  C_S_RESTART=${FC_FIRST[0]}
  log "C. first call in a fresh connection, shared-memory mode ($FRESH connections)"
  first_calls "$FRESH"
  C_S_FIRST=("${FC_FIRST[@]}") C_S_SECOND=("${FC_SECOND[@]}")
  # A model outside the 8 of the usage rows, with a flat standard input price (no token tiers).
  PC_MODEL=$(psql_db -At -c "SELECT p.model FROM aicost.current_prices p
     WHERE p.usage_type = 'input' AND p.service_tier = 'standard' AND p.threshold_tokens = 0 AND p.usd_per_mtok > 0
       AND p.model NOT IN (SELECT model FROM bench_models)
       AND NOT EXISTS (SELECT 1 FROM aicost.current_prices q WHERE q.model = p.model AND q.threshold_tokens > 0)
     ORDER BY p.model LIMIT 1") || die "no model for the price changes"
  [ -n "$PC_MODEL" ] || die "no model for the price changes"
  log "C. first call after a price change, shared-memory mode ($PRICE_CHANGES changes of $PC_MODEL)"
  C_S_CHANGE=()
  for ((k = 1; k <= PRICE_CHANGES; k++)); do
    price=$(calc %.2f "1 + $k / 100")
    psql_db -At -c "SELECT ai_price_set('$PC_MODEL', 'input', $price, source => 'benches/run.sh')" >/dev/null ||
      die "ai_price_set('$PC_MODEL') failed"
    first_calls 1
    C_S_CHANGE+=("${FC_FIRST[0]}")
    # The new price is what a fresh connection sees (the shared catalog was rebuilt).
    res=$(psql_db -At -c "SELECT ai_cost('$PC_MODEL', 1000000, 0) = $price") || die "pricing $PC_MODEL failed"
    [ "$res" = t ] || die "after ai_price_set('$PC_MODEL', 'input', $price) a fresh connection prices it at $(psql_db -At -c "SELECT ai_cost('$PC_MODEL', 1000000, 0)")"
  done
}

section_C_report() {
  local bm sm
  SEC=C
  out "## C. First call in a fresh connection (G1): per-backend vs shared-memory mode"
  out ""
  out "Full LiteLLM catalog imported ($MODELS models). Time = psql \\timing (server execution + one loopback round trip) of the first \`$QC\` of a new connection, after an untimed \`SELECT 1\` in it (connection set-up and the backend's own first-statement work not counted); second call = the next, identical statement. $FRESH connections per row unless n says otherwise; median and p90 by nearest rank. Shared-memory mode: the first call after the restart and after each price change (\`ai_price_set\` on $PC_MODEL, committed) builds the shared catalog; they are reported separately and not in the steady-state row."
  out ""
  out "| mode | call | n | median ms | p90 ms | best ms | max ms |"
  out "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
  row() { out "| $1 | $2 | $(($# - 2)) | $(pctl 50 "${@:3}") | $(pctl 90 "${@:3}") | $(best "${@:3}") | $(printf '%s\n' "${@:3}" | sort -g | tail -1) |"; }
  row per-backend "first ai_cost (library load + whole-catalog cache load)" "${C_B_FIRST[@]}"
  row per-backend "first ai_cost after LOAD 'pg_aicost' (catalog cache load only)" "${C_B_LOADED[@]}"
  row per-backend "second call (cache warm)" "${C_B_SECOND[@]}"
  row shared-memory "**first ai_cost, steady state** (shared catalog built)" "${C_S_FIRST[@]}"
  row shared-memory "second call" "${C_S_SECOND[@]}"
  row shared-memory "first ai_cost after the restart (builds the shared catalog)" "$C_S_RESTART"
  row shared-memory "first ai_cost after a price change (rebuilds the shared catalog)" "${C_S_CHANGE[@]}"
  out ""
  bm=$(pctl 50 "${C_B_FIRST[@]}") sm=$(pctl 50 "${C_S_FIRST[@]}")
  out "Median first call per-backend / shared-memory: **$(calc %.0f× "$bm / $sm")** ($bm ms vs $sm ms); first minus second call: per-backend $(calc %.3f "$bm - $(pctl 50 "${C_B_SECOND[@]}")") ms, shared-memory $(calc %.3f "$sm - $(pctl 50 "${C_S_SECOND[@]}")") ms."
  out ""
  if holds "$sm < 1"; then
    out "Target (issue 5) first call below 1 ms preloaded: **met** (median $sm ms, p90 $(pctl 90 "${C_S_FIRST[@]}") ms). Seed target for an uncached cost calculation, 200 ms: per-backend median $bm ms, $(holds "$bm < 200" && echo met || echo '**NOT met**')."
  else
    out "Target (issue 5) first call below 1 ms preloaded: **NOT met** (median $sm ms, p90 $(pctl 90 "${C_S_FIRST[@]}") ms). Seed target for an uncached cost calculation, 200 ms: per-backend median $bm ms."
  fi
  out ""
}

# ---------------------------------------------------------------------------------------------
# D. Criterion micro-benchmarks of the pure-Rust core
# ---------------------------------------------------------------------------------------------
section_D() {
  SEC=D
  log "D. cargo bench -p aicost-core --bench cost (compiles first if needed)"
  cargo bench -q -p aicost-core --bench cost -- --noplot --warm-up-time 1 --measurement-time 3 \
    >"$TMP/criterion.txt" 2>"$TMP/cargo.err" || { cat "$TMP/cargo.err" >&2; die "cargo bench failed"; }
  # Criterion prints "name" then "time: [low est high]" (or both on one line for short names).
  awk '
    /^(Benchmarking|Found|Gnuplot|WARNING)/ { next }
    /time:/ {
      line = $0; sub(/^ +/, "", line)
      if (line !~ /^time:/) { name = line; sub(/ +time:.*/, "", name) }
      v = $0; sub(/.*\[/, "", v); sub(/\].*/, "", v); split(v, f, " ")
      print name "\t" f[3] "\t" f[4]
      next
    }
    /^[^ ]/ { name = $0 }
  ' "$TMP/criterion.txt" >"$TMP/criterion.tsv"
  [ -s "$TMP/criterion.tsv" ] || { cat "$TMP/criterion.txt" >&2; die "no criterion results parsed"; }
  to_ns() { awk -v v="$1" -v u="$2" 'BEGIN { m["ps"]=0.001; m["ns"]=1; m["µs"]=1000; m["us"]=1000; m["ms"]=1e6; m["s"]=1e9; printf "%.3f", v * m[u] }'; }
  out "## D. Criterion, aicost-core (pure Rust, release profile)"
  out ""
  out "| benchmark | time per iteration |"
  out "| --- | ---: |"
  EXACT= PEER=
  while IFS=$'\t' read -r name val unit; do
    out "| $name | $val $unit |"
    case $name in
      *"exact decimal"*) EXACT=$(to_ns "$val" "$unit") ;;
      cost/peer*) PEER=$(to_ns "$val" "$unit") ;;  # not the peers of other groups
    esac
  done <"$TMP/criterion.tsv"
  if [ -n "$EXACT" ] && [ -n "$PEER" ]; then
    out "| ratio exact decimal / f64 peer | $(calc %.1f× "$EXACT / $PEER") |"
  fi
  out ""
}

# ---------------------------------------------------------------------------------------------
# E. Response cache: ai_cache_get hits vs hand-rolled peers and Redis; statistics; Zipf hit ratio
# ---------------------------------------------------------------------------------------------
section_E() {
  SEC=E
  log "E. fixture: 10,000 cache entries in namespace 'bench', kv peers, Zipf sequence of $ZIPF_ACCESSES"
  FIXTURE=$(psql_db -v accesses="$ZIPF_ACCESSES" -f benches/cache_setup.sql) || die "fixture (benches/cache_setup.sql) failed"
  read -r WARM_MS ENTRIES REQ_BYTES RESP_BYTES ZIPF_THEORY ZIPF_TOP ZIPF_DISTINCT <<<"$FIXTURE"
  [ "$ENTRIES" = 10000 ] || die "namespace bench holds $ENTRIES entries, expected 10000"

  # cache_counts: HITS and MISSES of namespace 'bench' in aicost.cache_stats.
  cache_counts() { read -r HITS MISSES <<<"$(psql_db -At -F ' ' -c "SELECT hits, misses FROM aicost.cache_stats WHERE namespace = 'bench'")"; }
  cache_counts
  HITS0=$HITS MISSES0=$MISSES
  GET_XACTS=0
  declare -gA E_TPS
  for c in 1 8 32; do
    j=$(( c < 2 ? c : 2 ))
    for v in cache_get kv_hashed kv; do
      log "E. pgbench $v, $c client(s), $j thread(s), ${E_SECONDS} s"
      if [ "$c" = 32 ]; then start_sampler "$DB" "$TMP/waits-$v.txt"; fi
      pgbench_db "$DB" "pgbench_$v.sql" "$c" "$j" "$E_SECONDS"
      stop_sampler
      E_TPS[$v,$c]=$TPS
      if [ "$v" = cache_get ]; then GET_XACTS=$((GET_XACTS + XACTS)); fi
    done
  done

  # Redis GET on loopback, request/response (-P 1) like pgbench, 10,000 keys of 1,000 bytes.
  if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "redis-server/redis-benchmark missing: apt-get install redis-server redis-tools (as root)"
    log "E. installing redis-server and redis-tools from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools >"$TMP/apt.log" 2>&1 ||
      { cat "$TMP/apt.log" >&2; die "apt-get install redis-server redis-tools failed"; }
  fi
  REDIS_VERSION=$(redis-server --version | grep -oP 'v=\K[0-9.]+')
  log "E. redis-server $REDIS_VERSION on 127.0.0.1:$REDIS_PORT, 10,000 keys of 1,000 bytes"
  rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
  if rcli ping >/dev/null 2>&1; then die "something already listens on redis port $REDIS_PORT (BENCH_REDIS_PORT)"; fi
  rm -f "$REDIS_PIDFILE"
  REDIS_STARTED=1
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
    --pidfile "$REDIS_PIDFILE" --logfile "$ROOT/target/bench-redis.log" --dir "$TMP" || die "redis-server did not start"
  for ((i = 0; i < 50; i++)); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
  rcli ping >/dev/null || die "redis-server did not answer on port $REDIS_PORT"
  # The keys redis-benchmark -r 10000 asks for: key:000000000000 .. key:000000009999.
  awk 'BEGIN { v = sprintf("%1000s", ""); gsub(/ /, "x", v)
               for (i = 0; i < 10000; i++) printf "*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$1000\r\n%s\r\n", i, v }' |
    rcli --pipe >"$TMP/redis-load.txt" 2>&1 || { cat "$TMP/redis-load.txt" >&2; die "loading redis failed"; }
  [ "$(rcli dbsize)" = 10000 ] || die "redis holds $(rcli dbsize) keys, expected 10000"
  rcli config resetstat >/dev/null
  declare -gA REDIS_RPS
  for c in 1 8 32; do
    n=$(( c == 1 ? REDIS_REQUESTS / 2 : REDIS_REQUESTS ))
    log "E. redis-benchmark GET, $c client(s), $n requests"
    res=$(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t get -n "$n" -c "$c" -r 10000 -d 1000 -P 1 -q 2>&1) ||
      die "redis-benchmark -c $c failed: $res"
    REDIS_RPS[$c]=$(tr '\r' '\n' <<<"$res" | grep -oP '^GET: \K[0-9.]+(?= requests per second)' | tail -1 || true)
    [ -n "${REDIS_RPS[$c]}" ] || die "redis-benchmark -c $c: unexpected output: $res"
  done
  REDIS_MISSES=$(rcli info stats | tr -d '\r' | grep -oP '^keyspace_misses:\K[0-9]+')
  [ "$REDIS_MISSES" = 0 ] || die "redis-benchmark GETs missed $REDIS_MISSES times"
  stop_redis

  out "## E. Response cache: ai_cache_get hits vs hand-rolled peers and Redis"
  out ""
  out "10,000 entries in namespace 'bench' (requests ~$REQ_BYTES bytes: system + user message, model, temperature; responses ~$RESP_BYTES bytes), loaded with ai_cache_warm in 10 batches of 1,000 in $(calc %.1f "$WARM_MS / 1000") s ($(calc %.0f "10000 * 1000 / $WARM_MS") entries/s). pgbench -n -T $E_SECONDS -c N -j min(N, 2), simple protocol, each transaction one random entry (all hits); pgbench and the server share the $(nproc) CPUs."
  out ""
  out "- **ai_cache_get**: \`SELECT ai_cache_get('gpt-4o', '<request JSON>', 'bench')\`"
  out "- **kv by hashed request**: \`SELECT v FROM kv WHERE k = ai_cache_key('gpt-4o', '<request JSON>', 'bench')\` (UNLOGGED, text primary key = the same SHA-256 keys)"
  out "- **kv by known key**: \`SELECT v FROM kv_i WHERE k = '<i>'\` (UNLOGGED, text primary key; the application already holds the key, here i::text, shorter than a 64-digit SHA-256 key)"
  out "- **Redis GET**: redis-server $REDIS_VERSION on loopback (--save '' --appendonly no), \`redis-benchmark -t get -c N -r 10000 -d 1000 -P 1\`, $REDIS_REQUESTS requests ($(( REDIS_REQUESTS / 2 )) at 1 client)"
  out ""
  out "| clients | ai_cache_get tps | kv by hashed request tps | kv by known key tps | Redis GET rps | ai_cache_get / kv by known key | ai_cache_get / kv by hashed request | ai_cache_get / Redis |"
  out "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for c in 1 8 32; do
    g=${E_TPS[cache_get,$c]} h=${E_TPS[kv_hashed,$c]} k=${E_TPS[kv,$c]} r=${REDIS_RPS[$c]}
    out "| $c | $(calc %.0f "$g") | $(calc %.0f "$h") | $(calc %.0f "$k") | $(calc %.0f "$r") | $(calc %.2f "$g / $k") | $(calc %.2f "$g / $h") | $(calc %.3f "$g / $r") |"
  done
  out ""
  while read -r line; do out "$line"; done < <(wait_table "ai_cache_get, 32 clients" "$TMP/waits-cache_get.txt" \
    "kv by hashed request" "$TMP/waits-kv_hashed.txt" "kv by known key" "$TMP/waits-kv.txt")
  out ""

  # Statistics: every hit pgbench executed is counted, exactly once, before and after the roll-up.
  log "E. statistics: aicost.cache_stats vs pgbench, then ai_cache_sweep()"
  time_sql "SELECT hits FROM aicost.cache_stats WHERE namespace = 'bench'" 1
  STATS_MS=$BEST_MS
  cache_counts
  STATS_HITS=$((HITS - HITS0)) STATS_MISSES=$((MISSES - MISSES0))
  PENDING=$(psql_db -At -c "SELECT count(*) FROM aicost.cache_events WHERE namespace = 'bench'")
  time_sql "SELECT ai_cache_sweep()" 1
  SWEEP_MS=$BEST_MS
  cache_counts
  SWEPT_HITS=$((HITS - HITS0))
  ENTRY_HITS=$(psql_db -At -c "SELECT sum(hits) FROM aicost.cache_entries WHERE namespace = 'bench'")
  LEFT=$(psql_db -At -c "SELECT count(*) FROM aicost.cache_events WHERE namespace = 'bench'")
  out "| statistics of namespace 'bench' after the ai_cache_get runs | |"
  out "| --- | ---: |"
  out "| transactions pgbench processed (sum of the 3 ai_cache_get runs) | $GET_XACTS |"
  out "| hits in aicost.cache_stats | $STATS_HITS |"
  out "| misses in aicost.cache_stats | $STATS_MISSES |"
  out "| pending events read by the view / its query time | $PENDING / $(calc %.1f "$STATS_MS") ms |"
  out "| ai_cache_sweep() rolling them up | $(calc %.1f "$SWEEP_MS") ms ($(calc %.2f "$SWEEP_MS * 1000 / ($PENDING > 0 ? $PENDING : 1)") µs/event) |"
  out "| hits after the sweep: cache_stats / sum of per-entry hits / events left | $SWEPT_HITS / $ENTRY_HITS / $LEFT |"
  out ""
  [ "$STATS_HITS" = "$GET_XACTS" ] || die "cache_stats counts $STATS_HITS hits, pgbench executed $GET_XACTS ai_cache_get calls"
  [ "$STATS_MISSES" = 0 ] || die "$STATS_MISSES misses: the pgbench request differs from the fixture's (benches/cache_setup.sql)"
  [ "$SWEPT_HITS" = "$GET_XACTS" ] && [ "$ENTRY_HITS" = "$GET_XACTS" ] && [ "$LEFT" = 0 ] ||
    die "after ai_cache_sweep: cache_stats $SWEPT_HITS hits, entries $ENTRY_HITS, events left $LEFT; expected $GET_XACTS, $GET_XACTS, 0"

  # Zipf hit ratio: the same access sequence (get; on a miss, put) against an LRU and an LFU
  # namespace of 1,000 entries; the requests come from a universe 10x that size.
  out "| Zipf(s = 1) workload: $ZIPF_ACCESSES accesses over $ZIPF_DISTINCT distinct of 10,000 requests, limit 1,000 entries; each access a get, and a put on a miss, one transaction each | hit ratio | hits | misses | evictions | entries at end | wall s | ms/access |"
  out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for policy in lru lfu; do
    log "E. Zipf workload, $ZIPF_ACCESSES accesses, namespace zipf-$policy"
    t0=$(date +%s.%N)
    psql_db -c "CALL bench_zipf_run('zipf-$policy')" || die "Zipf run zipf-$policy failed"
    t1=$(date +%s.%N)
    read -r ratio hits misses evictions entries <<<"$(psql_db -At -F ' ' -c \
      "SELECT hit_ratio, hits, misses, evictions, entries FROM aicost.cache_stats WHERE namespace = 'zipf-$policy'")"
    [ $((hits + misses)) = "$ZIPF_ACCESSES" ] || die "zipf-$policy: $hits hits + $misses misses != $ZIPF_ACCESSES accesses"
    [ "$entries" -le 1000 ] || die "zipf-$policy holds $entries entries, over its limit of 1000"
    out "| $policy | $ratio | $hits | $misses | $evictions | $entries | $(calc %.1f "$t1 - $t0") | $(calc %.2f "($t1 - $t0) * 1000 / $ZIPF_ACCESSES") |"
  done
  out "| reference: probability mass of the 1,000 most frequent requests (theory / in this sequence) | $ZIPF_THEORY / $ZIPF_TOP | | | | | | |"
  out "| bound: 1 - first accesses / accesses (no cache avoids the $ZIPF_DISTINCT compulsory misses) | $(calc %.4f "1 - $ZIPF_DISTINCT / $ZIPF_ACCESSES") | | | | | | |"
  out ""
}

# ---------------------------------------------------------------------------------------------
# F. (G3) Budgets: ledger inserts without a budget, on one shared budget, on one budget per client,
#    in per-backend and in shared-memory mode
# ---------------------------------------------------------------------------------------------
declare -gA F_TPS F_LAT F_XACTS F_INV F_SLOTS F_DTPS
# budget_grid MODE DATABASE CLUSTER TPS: the pgbench runs of one mode on the throwaway or durable
# cluster; tps into the array named TPS. The throwaway runs also keep latencies and sample waits.
budget_grid() {
  local m=$1 db=$2 d=$3 c j v
  local -n tps=$4
  for c in 1 8 32; do
    j=$(( c < 2 ? c : 2 ))
    for v in nobudget shared own; do
      log "F. ($(mode_name "$m"), $d) pgbench usage insert, $v, $c client(s), $j thread(s), ${F_SECONDS} s"
      if [ "$c" = 32 ] && [ "$d" = throwaway ]; then start_sampler "$db" "$TMP/waits-$m-$v.txt"; fi
      pgbench_db "$db" "pgbench_usage_$v.sql" "$c" "$j" "$F_SECONDS"
      stop_sampler
      tps[$m,$v,$c]=$TPS
      if [ "$d" = throwaway ]; then F_LAT[$m,$v,$c]=$LAT; fi
      F_XACTS[$m,$v]=$(( ${F_XACTS[$m,$v]} + XACTS ))
    done
  done
}

# run_budgets MODE DATABASE: the pgbench runs and the invariant checks of one mode.
run_budgets() {
  local m=$1 db=$2 c j v audit sp_spent sp_ledger sp_eq own_bad n_a n_b n_c slots
  log "F. ($(mode_name "$m")) fixture: fresh database $db, budgets of 1e9 USD for 'shared' and u0..u99"
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  psql_ -d "$db" -f benches/ledger_setup.sql || die "fixture (benches/ledger_setup.sql) failed"
  for v in nobudget shared own; do F_XACTS[$m,$v]=0; done
  budget_grid "$m" "$db" throwaway F_TPS
  # The same on a durable cluster: fsync, full_page_writes and synchronous_commit on.
  durable on
  budget_grid "$m" "$db" durable F_DTPS
  durable off

  # The invariant: recorded spend (summed over all slots of budget_spend: one row per budget period
  # in per-backend mode, one per backend number in shared-memory mode) equals the ledger, and every
  # pgbench transaction is one row.
  log "F. ($(mode_name "$m")) invariant: ai_budget_audit(), spend of each budget vs ledger, rows vs pgbench"
  read -r audit sp_spent sp_ledger sp_eq own_bad slots n_a n_b n_c <<<"$(psql_ -d "$db" -At -F ' ' -c "
    WITH spend AS (SELECT sp.budget_id, sum(sp.spent) AS spent, count(*) AS slots
                     FROM aicost.budget_spend sp GROUP BY sp.budget_id),
         ledger AS (SELECT user_id, sum(cost) AS cost FROM aicost.usage GROUP BY user_id),
         per_budget AS (SELECT b.scope_id, coalesce(s.spent, 0) AS spent, coalesce(s.slots, 0) AS slots,
                               coalesce(l.cost, 0) AS cost
                          FROM aicost.budgets b
                          LEFT JOIN spend s USING (budget_id)
                          LEFT JOIN ledger l ON l.user_id = b.scope_id
                         WHERE b.scope = 'user')
    SELECT (SELECT count(*) FROM ai_budget_audit()),
           sh.spent, sh.cost, sh.spent = sh.cost,
           (SELECT count(*) FROM per_budget WHERE scope_id <> 'shared' AND spent <> cost),
           sh.slots,
           (SELECT count(*) FROM aicost.usage WHERE user_id = 'nobody'),
           (SELECT count(*) FROM aicost.usage WHERE user_id = 'shared'),
           (SELECT count(*) FROM aicost.usage WHERE user_id ~ '^u[0-9]+\$')
      FROM per_budget sh WHERE sh.scope_id = 'shared'")"
  F_INV[$m]="ai_budget_audit() rows: $audit; shared budget spend (sum over its $slots budget_spend rows) $sp_spent = ledger cost of user 'shared' $sp_ledger: $sp_eq; own budgets whose spend differs from their ledger cost: $own_bad; ledger rows = pgbench transactions: (a) $n_a = ${F_XACTS[$m,nobudget]}, (b) $n_b = ${F_XACTS[$m,shared]}, (c) $n_c = ${F_XACTS[$m,own]}."
  F_SLOTS[$m]=$slots
  [ "$audit" = 0 ] || die "($(mode_name "$m") mode) ai_budget_audit() reports $audit budget periods whose spend differs from the ledger"
  [ "$sp_eq" = t ] || die "($(mode_name "$m") mode) shared budget spend $sp_spent differs from the ledger cost $sp_ledger"
  [ "$own_bad" = 0 ] || die "($(mode_name "$m") mode) $own_bad own budgets' spend differs from their ledger cost"
  [ "$n_a" = "${F_XACTS[$m,nobudget]}" ] && [ "$n_b" = "${F_XACTS[$m,shared]}" ] && [ "$n_c" = "${F_XACTS[$m,own]}" ] ||
    die "($(mode_name "$m") mode) ledger rows differ from pgbench transactions: $n_a/$n_b/$n_c vs ${F_XACTS[$m,nobudget]}/${F_XACTS[$m,shared]}/${F_XACTS[$m,own]}"
}

# Shared memory is one per cluster: prices and budget admission of one database must not leak into
# another. Run after the shared-memory budget runs, in shared-memory mode:
# - prices: database $LEDGER_DB_SHM changes the input price of gpt-4o and prices it (so the shared
#   catalog is rebuilt there); then a fresh connection to $DB must still price gpt-4o as in
#   per-backend mode;
# - budgets: $DB creates its first budget (1 USD); its budget_id is that of the 'shared' budget of
#   $LEDGER_DB_SHM, which has spent far more than 1 USD; a 0.50 USD ledger row in $DB must be
#   admitted (in a transaction that is rolled back).
XDB_FAIL=
cross_database_check() {
  local got id other res
  log "F. cross-database check in shared-memory mode"
  psql_ -d "$LEDGER_DB_SHM" -At -c "SELECT ai_price_set('gpt-4o', 'input', 1000, source => 'benches/run.sh cross-database check')" >/dev/null ||
    die "ai_price_set in $LEDGER_DB_SHM failed"
  psql_ -d "$LEDGER_DB_SHM" -At -c "SELECT ai_cost('gpt-4o', 1000000, 0)" >/dev/null || die "ai_cost in $LEDGER_DB_SHM failed"
  got=$(psql_db -At -c "SELECT ai_cost('gpt-4o', 1000000, 0)") || die "ai_cost in $DB failed"
  if [ "$(psql_db -At -c "SELECT '$got'::numeric = '$REF_GPT4O'::numeric")" = t ]; then
    XDB_PRICE="prices: after $LEDGER_DB_SHM set gpt-4o input to 1000 USD/Mtok, $DB still prices 1M input tokens at $got USD (per-backend mode: $REF_GPT4O): **kept apart**"
  else
    XDB_PRICE="prices: after $LEDGER_DB_SHM set gpt-4o input to 1000 USD/Mtok, $DB prices 1M input tokens at $got USD, per-backend mode $REF_GPT4O: **FAILED, the shared catalog of another database is used**"
    XDB_FAIL+="$DB priced gpt-4o from the catalog of $LEDGER_DB_SHM ($got instead of $REF_GPT4O); "
  fi
  id=$(psql_db -At -c "SELECT ai_budget_set('user', 'bench-xdb', 1)") || die "ai_budget_set in $DB failed"
  other=$(psql_ -d "$LEDGER_DB_SHM" -At -c "SELECT coalesce(sum(sp.spent), 0) FROM aicost.budget_spend sp JOIN aicost.budgets b USING (budget_id) WHERE b.budget_id = $id AND b.period = 'month'")
  if ! holds "$other > 1"; then
    XDB_BUDGET="budgets: not tested (budget_id $id of $DB has spent $other USD in $LEDGER_DB_SHM, need > 1)"
    return
  fi
  if res=$(psql_db -At -c "BEGIN" -c "INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens, cost) VALUES ('bench-xdb', 'gpt-4o', 0, 0, 0.50)" -c "ROLLBACK" 2>&1); then
    XDB_BUDGET="budgets: budget_id $id is a fresh 1 USD budget in $DB and has spent $other USD in $LEDGER_DB_SHM; a 0.50 USD row in $DB was admitted: **kept apart**"
  else
    XDB_BUDGET="budgets: budget_id $id is a fresh 1 USD budget in $DB and has spent $other USD in $LEDGER_DB_SHM; a 0.50 USD row in $DB was refused (\`$(head -1 <<<"$res")\`): **FAILED, admission counts another database's spend**"
    XDB_FAIL+="a 0.50 USD charge on a fresh 1 USD budget of $DB was refused because budget_id $id of $LEDGER_DB_SHM has spent $other USD; "
  fi
}

# budget_table TPS: the tps of (a), (b) and (c) per mode and client count, from the array named TPS.
budget_table() {
  local -n tps=$1
  local m c a b o
  out "| mode | clients | (a) no budget tps | (b) one shared budget tps | (c) own budget per client tps | (b) / (a) | (c) / (a) |"
  out "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for m in backend shared; do
    for c in 1 8 32; do
      a=${tps[$m,nobudget,$c]} b=${tps[$m,shared,$c]} o=${tps[$m,own,$c]}
      out "| $(mode_name "$m") | $c | $(calc %.0f "$a") | $(calc %.0f "$b") | $(calc %.0f "$o") | $(calc %.2f "$b / $a") | $(calc %.2f "$o / $a") |"
    done
  done
}

section_F_report() {
  local m c a b o ratio target
  SEC=F
  out "## F. Budgets (G3): usage inserts, per-backend vs shared-memory mode, pgbench -n -T $F_SECONDS -c N -j min(N, 2)"
  out ""
  out "\`INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES (<user>, 'gpt-4o', 1000 + :i, 500)\`, priced and charged by the BEFORE INSERT trigger, in a fresh database per mode; budgets of 1e9 USD a month (never reached). (a) user 'nobody' has no budget; (b) every client charges the one budget of user 'shared'; (c) client n charges its own budget, user 'u<n>'. Per-backend mode: each charge updates the budget period's one budget_spend row under its row lock. Shared-memory mode: admission in shared memory, each backend adds to its own budget_spend row (slot)."
  out ""
  budget_table F_TPS
  out ""
  out "Durable cluster (fsync, full_page_writes and synchronous_commit on: ALTER SYSTEM and a reload), the same runs right after:"
  out ""
  budget_table F_DTPS
  out ""
  out "| shared-memory / per-backend tps | 1 client | 8 clients | 32 clients |"
  out "| --- | ---: | ---: | ---: |"
  for v in nobudget shared own; do
    out "| $(case $v in nobudget) echo '(a) no budget' ;; shared) echo '(b) one shared budget' ;; own) echo '(c) own budget per client' ;; esac) | $(calc %.2f "${F_TPS[shared,$v,1]} / ${F_TPS[backend,$v,1]}") | $(calc %.2f "${F_TPS[shared,$v,8]} / ${F_TPS[backend,$v,8]}") | $(calc %.2f "${F_TPS[shared,$v,32]} / ${F_TPS[backend,$v,32]}") |"
  done
  out ""
  for m in backend shared; do
    out "$(mode_name "$m") mode, single client, no contention: a row costs $(calc %.0f "${F_LAT[$m,nobudget,1]} * 1000") µs without a budget, $(calc %.0f "${F_LAT[$m,shared,1]} * 1000") µs charging one budget: the charge itself is $(calc %.0f "(${F_LAT[$m,shared,1]} - ${F_LAT[$m,nobudget,1]}) * 1000") µs (pgbench average latency). (b) / (c) at 32 clients, the price of sharing one budget: $(calc %.2f "${F_TPS[$m,shared,32]} / ${F_TPS[$m,own,32]}")."
    out ""
  done
  for m in backend shared; do
    ratio=$(calc %.2f "${F_TPS[$m,shared,32]} / ${F_TPS[$m,nobudget,32]}")
    if [ "$m" = backend ]; then target=0.70; else target=0.90; fi
    if holds "$ratio >= $target"; then
      out "Target $(mode_name "$m") mode (b) / (a) >= $target at 32 clients: **met** ($ratio)."
    else
      out "Target $(mode_name "$m") mode (b) / (a) >= $target at 32 clients: **NOT met** ($ratio); see the wait events below."
    fi
    out ""
  done
  for m in backend shared; do
    out "Invariant after the $(mode_name "$m") runs: ${F_INV[$m]}"
    out ""
  done
  # Where the time goes at 32 clients.
  while read -r line; do out "$line"; done < <(wait_table \
    "(a) per-backend" "$TMP/waits-backend-nobudget.txt" "(b) per-backend" "$TMP/waits-backend-shared.txt" \
    "(c) per-backend" "$TMP/waits-backend-own.txt" "(a) shared-memory" "$TMP/waits-shared-nobudget.txt" \
    "(b) shared-memory" "$TMP/waits-shared-shared.txt" "(c) shared-memory" "$TMP/waits-shared-own.txt")
  out ""
  out "Shared memory keeps databases apart (checked after the shared-memory runs):"
  out ""
  out "- $XDB_PRICE"
  out "- $XDB_BUDGET"
  out ""
}

# ---------------------------------------------------------------------------------------------
# G. (G2) Statistics overhead in shared-memory mode: aicost.track = on vs off
# ---------------------------------------------------------------------------------------------
# stat_totals: STAT_CALLS and STAT_COST, the totals of aicost.stat_cost (cluster-wide when preloaded).
stat_totals() {
  read -r STAT_CALLS STAT_COST <<<"$(psql_db -At -F ' ' -c "SELECT coalesce(sum(calls), 0), coalesce(sum(cost_usd), 0) FROM aicost.stat_cost")" ||
    die "reading aicost.stat_cost failed"
}
section_G() {
  local r on=() off=() calls0 cost0 sum ok
  SEC=G
  log "G. sum(ai_cost) over 1,000,000 rows, aicost.track on vs off, shared-memory mode ($G_RUNS runs each, alternating)"
  psql_db -At -c "SELECT count(*) FROM usage" >/dev/null  # into shared buffers again after the restart
  HAVE_STATS=$(psql_db -At -c "SELECT to_regclass('aicost.stat_cost') IS NOT NULL")
  if [ "$HAVE_STATS" = t ]; then stat_totals; calls0=$STAT_CALLS cost0=$STAT_COST; fi
  Q1M="SELECT sum(ai_cost(model, in_tokens, out_tokens)) FROM usage"
  plan_info "$Q1M"
  G_WORKERS=$WORKERS
  sum=
  # One fresh session per run, on and off alternating, so that drift hits both alike.
  for ((r = 0; r < G_RUNS; r++)); do
    PGOPTIONS="-c aicost.track=on" time_sql "$Q1M" 1
    on+=("$BEST_MS"); sum=${sum:-$VALUE}
    [ "$VALUE" = "$sum" ] || die "track = on: sum $VALUE differs from $sum"
    PGOPTIONS="-c aicost.track=off" time_sql "$Q1M" 1
    off+=("$BEST_MS")
    [ "$VALUE" = "$sum" ] || die "track = off: sum $VALUE differs from $sum"
  done
  G_ON_MS=$(best "${on[@]}") G_OFF_MS=$(best "${off[@]}") G_SUM=$sum
  # The shared catalog must price exactly like the per-backend cache.
  if want A; then
    [ "$(psql_db -At -c "SELECT '$G_SUM'::numeric = '${SUM[1]}'::numeric")" = t ] ||
      die "shared-memory mode: sum(ai_cost) over usage is $G_SUM, per-backend mode (A.1) ${SUM[1]}"
  fi
  sum=$(PGOPTIONS="-c aicost.track=off" psql_db -At -c "SELECT sum(ai_cost(model, in_tokens, out_tokens)) = '$REF10K'::numeric FROM usage_10k")
  [ "$sum" = t ] || die "shared-memory mode: sum(ai_cost) over usage_10k differs from per-backend mode ($REF10K)"
  G_STATS_LINE=
  if [ "$HAVE_STATS" = t ]; then
    stat_totals
    ok=$(psql_db -At -c "SELECT $STAT_CALLS - $calls0 = $G_RUNS * 1000000 AND $STAT_COST - $cost0 = $G_RUNS * '$G_SUM'::numeric")
    G_STATS_LINE="aicost.stat_cost after the 1M-row runs: +$((STAT_CALLS - calls0)) calls, +$(calc %.6f "$STAT_COST - $cost0") USD; expected $G_RUNS × 1,000,000 calls and $G_RUNS × $G_SUM USD (track = on runs only): $([ "$ok" = t ] && echo '**exact**' || echo '**WRONG**')."
    [ "$ok" = t ] || die "aicost.stat_cost counted $((STAT_CALLS - calls0)) calls / $STAT_COST - $cost0 USD, expected $G_RUNS × 1,000,000 calls / $G_RUNS × $G_SUM USD"
    stat_totals; calls0=$STAT_CALLS
  fi
  log "G. pgbench ai_cost, 8 clients, aicost.track = on, ${G_SECONDS} s"
  PGOPTIONS="-c aicost.track=on" pgbench_db "$DB" pgbench_ai_cost.sql 8 8 "$G_SECONDS"
  G_TPS_ON=$TPS G_LAT_ON=$LAT G_X_ON=$XACTS
  log "G. pgbench ai_cost, 8 clients, aicost.track = off, ${G_SECONDS} s"
  PGOPTIONS="-c aicost.track=off" pgbench_db "$DB" pgbench_ai_cost.sql 8 8 "$G_SECONDS"
  G_TPS_OFF=$TPS G_LAT_OFF=$LAT
  if [ "$HAVE_STATS" = t ]; then
    stat_totals
    [ "$((STAT_CALLS - calls0))" = "$G_X_ON" ] ||
      die "aicost.stat_cost counted $((STAT_CALLS - calls0)) calls during the pgbench runs, pgbench made $G_X_ON with track = on"
    G_STATS_LINE+=" During the pgbench runs: +$((STAT_CALLS - calls0)) calls = $G_X_ON transactions with track = on: **exact**."
  fi

  out "## G. Statistics overhead (G2): aicost.track = on vs off, shared-memory mode"
  out ""
  out "\`$Q1M\` (the 1,000,000 rows of A, $G_WORKERS workers planned), best of $G_RUNS fresh sessions per setting, on and off alternating; pgbench -n -T $G_SECONDS -c 8 -j 8 of \`SELECT ai_cost('gpt-4o', 1000, 500)\`. Setting passed as PGOPTIONS=-c aicost.track=…"
  out ""
  out "| aicost.track | 1M-row sum wall ms | ns/row | pgbench tps, 8 clients | latency ms |"
  out "| --- | ---: | ---: | ---: | ---: |"
  out "| on | $(calc %.1f "$G_ON_MS") | $(calc %.0f "$G_ON_MS * 1e6 / 1000000") | $(calc %.0f "$G_TPS_ON") | $G_LAT_ON |"
  out "| off | $(calc %.1f "$G_OFF_MS") | $(calc %.0f "$G_OFF_MS * 1e6 / 1000000") | $(calc %.0f "$G_TPS_OFF") | $G_LAT_OFF |"
  out "| on / off (statistics overhead) | $(calc %.3f "$G_ON_MS / $G_OFF_MS") | $(calc %+.0f "($G_ON_MS - $G_OFF_MS) * 1e6 / 1000000") ns/row | $(calc %.3f "$G_TPS_ON / $G_TPS_OFF") | |"
  if want A && want B; then
    out "| reference: per-backend mode (A.1, B at 8 clients; statistics per backend) | $(calc %.1f "${MS[1]}") | $(calc %.0f "${MS[1]} * 1e6 / 1000000") | $(calc %.0f "$B_TPS8") | $B_LAT8 |"
  fi
  out ""
  out "Sum with track on = off$(want A && echo " = per-backend A.1"): $G_SUM."
  if [ "$HAVE_STATS" = t ]; then
    out "$G_STATS_LINE"
  else
    out "aicost.stat_cost does not exist in this build (statistics module still a stub): the overhead measured is that of the stub."
  fi
  out ""
}

# ---------------------------------------------------------------------------------------------
# H. Circuit breaker: ai_call_allowed / ai_call_report vs SELECT 1, both modes, throwaway and durable
# ---------------------------------------------------------------------------------------------
declare -gA H_TPS
# durable on|off: fsync, full_page_writes and synchronous_commit on (ALTER SYSTEM, reload), or
# back to the cluster's own settings.
durable() {
  local v
  DURABLE_ON=$([ "$1" = on ] && echo 1 || true)
  for v in fsync full_page_writes synchronous_commit; do
    if [ "$1" = on ]; then psql_ -d postgres -c "ALTER SYSTEM SET $v = on"; else psql_ -d postgres -c "ALTER SYSTEM RESET $v"; fi
  done
  psql_ -d postgres -At -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  [ "$(psql_ -d postgres -At -c "SHOW fsync")" = "$1" ] || [ "$1" = off ] || die "fsync did not turn on"
}
# run_breaker MODE: the pgbench runs of one mode, throwaway then durable.
run_breaker() {
  local m=$1 d c f
  for d in throwaway durable; do
    if [ "$d" = durable ]; then durable on; fi
    psql_db -At -c "SELECT ai_breaker_reset()" >/dev/null || die "ai_breaker_reset() failed"
    for c in 1 8 32; do
      for f in select1 call_allowed call_report; do
        log "H. ($(mode_name "$m"), $d) pgbench $f, $c client(s), ${H_SECONDS} s"
        pgbench_db "$DB" "pgbench_$f.sql" "$c" "$(( c < 8 ? c : 8 ))" "$H_SECONDS"
        H_TPS[$m,$d,$f,$c]=$TPS
      done
    done
    if [ "$d" = durable ]; then durable off; fi
  done
  # Every report counted, and the breaker stayed closed.
  local st
  st=$(psql_db -At -c "SELECT state || ' ' || failures FROM aicost.stat_breaker WHERE kind = 'model' AND name = 'gpt-4o'")
  [ "$st" = "closed 0" ] || die "($(mode_name "$m") mode) the gpt-4o breaker is '$st' after success reports only"
}

section_H_report() {
  local m d c
  SEC=H
  out "## H. Circuit breaker (issue 14): pgbench -n -T $H_SECONDS -c N -j min(N, 8), one model"
  out ""
  out "\`SELECT allowed FROM ai_call_allowed('gpt-4o')\` (closed: admitted) and \`SELECT ai_call_report('gpt-4o', true)\` (every client reports on the same model and provider) vs \`SELECT 1\`. Per-backend mode keeps breakers in table aicost.breaker_state (a report updates two rows, the model's and the provider's, under their row locks until commit; a closed check only reads); shared-memory mode in shared memory (spinlock per breaker). Durable: fsync, full_page_writes and synchronous_commit on."
  out ""
  out "| mode | cluster | clients | SELECT 1 tps | ai_call_allowed tps | ai_call_report tps | allowed / SELECT 1 | report / SELECT 1 |"
  out "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for m in backend shared; do
    for d in throwaway durable; do
      for c in 1 8 32; do
        if [ -z "${H_TPS[$m,$d,select1,$c]:-}" ]; then continue; fi
        out "| $(mode_name "$m") | $d | $c | $(calc %.0f "${H_TPS[$m,$d,select1,$c]}") | $(calc %.0f "${H_TPS[$m,$d,call_allowed,$c]}") | $(calc %.0f "${H_TPS[$m,$d,call_report,$c]}") | $(calc %.2f "${H_TPS[$m,$d,call_allowed,$c]} / ${H_TPS[$m,$d,select1,$c]}") | $(calc %.2f "${H_TPS[$m,$d,call_report,$c]} / ${H_TPS[$m,$d,select1,$c]}") |"
      done
    done
  done
  out ""
}

# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
# Phase 1, per-backend mode (the fixture of $DB is built above).
if want A; then section_A; fi
if want B; then section_B; fi
if want C; then section_C_backend; fi
if want D; then section_D; fi
if want E; then section_E; fi
if want F; then run_budgets backend "$LEDGER_DB"; fi
if want H; then run_breaker backend; fi

# Phase 2, shared-memory mode: C first (nothing may price before the first-call-after-restart
# sample), then G (in $DB), then F in its own database and the cross-database check.
if want C || want F || want G || want H; then
  set_mode shared
  if want C; then section_C_shared; section_C_report; fi
  if want G; then section_G; fi
  if want F; then run_budgets shared "$LEDGER_DB_SHM"; cross_database_check; section_F_report; fi
  if want H; then run_breaker shared; section_H_report; fi
fi

SEC=tail
out "Total benchmark run time: ${SECONDS} s (the cluster is left in $(mode_name "$INITIAL_MODE") mode, as found)."

mkdir -p "$(dirname "$OUT")"
for s in $ORDER; do printf '%s' "${BUF[$s]:-}"; done | tee "$OUT"
log "results written to $OUT"
check_so
[ -z "$XDB_FAIL" ] || die "shared memory is not kept apart per database: $XDB_FAIL(see section F)"
