#!/usr/bin/env bash
# pg_aicost benchmarks: one run on one cluster, one results table, printed and written to
# target/bench-results.md.
#
#   A. Batch pricing of 1,000,000 usage rows with the full LiteLLM catalog imported:
#        1. ai_cost()   2. a plain SQL join on a prices table   3. a PL/pgSQL lookup function
#        4. constant prices (the floor: only the arithmetic and the scan).
#      Each with the planner's default (parallel) plan and again serially. Variants 1-3 must give
#      exactly the same sum (numeric equality), so the benchmark also checks correctness.
#      Then ai_cost with aicost.pricing_cache on vs off over 10,000 rows, and the per-query cost
#      of parallel workers building their own pricing cache.
#   B. pgbench: SELECT ai_cost('gpt-4o', 1000, 500) vs SELECT 1, at 1 and 8 clients.
#   C. First-call latency of ai_cost in a fresh connection (library load + catalog cache load).
#   D. Criterion micro-benchmarks of the pure-Rust core (aicost-core, benches/cost.rs).
#   E. Response cache (fixture: benches/cache_setup.sql). pgbench of ai_cache_get hits at 1, 8
#      and 32 clients vs two hand-rolled UNLOGGED key/value peers and vs Redis GET on loopback
#      (redis-server/redis-tools are installed from Debian if missing; a throwaway redis-server
#      runs on BENCH_REDIS_PORT and is stopped at exit). Checks that aicost.cache_stats counts
#      exactly the hits pgbench executed, before and after ai_cache_sweep() (timed). Then the
#      hit ratio of LRU and LFU on one Zipf(1) access sequence over 10x the namespace's limit.
#   F. Budgets (fixture: benches/ledger_setup.sql, database aicost_ledger_bench). pgbench of
#      usage-row inserts at 1, 8 and 32 clients (a) without a budget, (b) all on one shared
#      budget, (c) one budget per client; checks the invariant (ai_budget_audit() empty, shared
#      spend = its ledger cost, one ledger row per pgbench transaction) and reports the target
#      (b) / (a) >= 0.70 at 32 clients. E and F sample pg_stat_activity wait events at 32 clients.
#
# Usage: `make bench` (installs a release build, restarts the cluster, runs this script), or
#   bash benches/run.sh          against whatever build is installed; the cluster is started if needed.
# Environment: AICOST_PGPORT (default 28815) and AICOST_CLUSTER_DIR select the cluster
#   (scripts/cluster.sh); AICOST_SHARED_DATA (default ../shared/data) holds litellm_model_prices.json;
#   BENCH_RUNS (3), BENCH_NOCACHE_RUNS (1: the pricing_cache = off run takes ~1 min) and
#   BENCH_PGBENCH_SECONDS (10) tune the run length; BENCH_CACHE_SECONDS and BENCH_LEDGER_SECONDS
#   (default: BENCH_PGBENCH_SECONDS) the pgbench runs of E and F, BENCH_ZIPF_ACCESSES (30000),
#   BENCH_REDIS_REQUESTS (200000) and BENCH_REDIS_PORT (28879) the rest of E.
# Any failing step (SQL error, unequal sums, pgbench error, cargo bench error, a statistics or
# budget invariant broken, pg_aicost.so replaced during the run) exits non-zero.
# The databases aicost_bench and aicost_ledger_bench are recreated and left for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export AICOST_PGPORT=${AICOST_PGPORT:-28815}
PORT=$AICOST_PGPORT
SHARED=${AICOST_SHARED_DATA:-$ROOT/../shared/data}
CATALOG=$SHARED/litellm_model_prices.json
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
OUT=$ROOT/target/bench-results.md
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
cleanup() {
  stop_redis
  if [ -n "${SAMPLER_PID:-}" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

log() { printf '==> [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'bench: FAILED: %s\n' "$*" >&2; exit 1; }
psql_() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_db() { psql_ -d "$DB" "$@"; }
# Floating-point helpers (bash has integers only).
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# Results are collected here and printed at the end (progress goes to stderr meanwhile).
RESULTS=()
out() { RESULTS+=("$*"); }

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

# ---------------------------------------------------------------------------------------------
# The cluster and the machine
# ---------------------------------------------------------------------------------------------
scripts/cluster.sh start
[ -r "$CATALOG" ] || die "LiteLLM catalog not readable: $CATALOG (set AICOST_SHARED_DATA)"

SO=$("$PGBIN/pg_config" --pkglibdir)/pg_aicost.so
[ -f "$SO" ] || die "pg_aicost is not installed ($SO missing): run make install-release"
SO_MB=$(( $(stat -c %s "$SO") / 1048576 ))
SO_STAMP=$(stat -c '%s %Y' "$SO")  # a reinstall during the run would mix builds
if ! command -v readelf >/dev/null; then
  BUILD="build type unknown (no readelf)"
elif readelf -S "$SO" | grep -q '\.debug_info'; then
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
out "| cluster settings | $(psql_ -d postgres -At -F ', ' -c "SELECT 'max_parallel_workers_per_gather=' || current_setting('max_parallel_workers_per_gather'), 'jit=' || current_setting('jit'), 'shared_buffers=' || current_setting('shared_buffers')") |"
out "| pg_aicost.so | ${SO_MB} MiB, $BUILD |"
out ""

# ---------------------------------------------------------------------------------------------
# A. Batch pricing over 1,000,000 rows
# ---------------------------------------------------------------------------------------------
log "A. fixture: database $DB, import of $CATALOG, 1,000,000 usage rows"
psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
FIXTURE=$(psql_db -v catalog_file="$CATALOG" -f benches/setup.sql) || die "fixture (benches/setup.sql) failed"
read -r IMPORTED MODELS PRICES BENCH_PRICES <<<"$FIXTURE"

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

# ---------------------------------------------------------------------------------------------
# B. pgbench: per-statement overhead of one ai_cost call
# ---------------------------------------------------------------------------------------------
# pgbench_db DATABASE SCRIPT CLIENTS THREADS SECONDS: sets TPS, LAT (average latency, ms) and
# XACTS (transactions processed). Fails on any failed transaction.
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
# wait_event_type:wait_event, CPU if active without a wait event (running, or waiting for a CPU),
# else its state. stop_sampler ends it. wait_table NAME FILE [NAME FILE...] prints a markdown table
# of the share of (backend, sample) pairs in each state, one column per file.
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
done
out ""

# ---------------------------------------------------------------------------------------------
# C. First-call latency in a fresh connection
# ---------------------------------------------------------------------------------------------
# The first ai_cost call of a backend loads pg_aicost.so and builds the pricing cache from the
# whole imported catalog; "after LOAD" leaves the library load out. Best of 5 connections each.
log "C. first-call latency (5 connections x 2)"
QC="SELECT ai_cost('gpt-4o', 1000, 500)"
FIRST=() SECOND=() AFTERLOAD=()
for ((i = 0; i < 5; i++)); do
  t=$(psql_db -At -c '\timing on' -c "$QC" -c "$QC" | grep -oP '^Time: \K[0-9.]+') || die "first-call run failed"
  FIRST+=("$(sed -n 1p <<<"$t")") SECOND+=("$(sed -n 2p <<<"$t")")
  t=$(psql_db -At -c "LOAD 'pg_aicost'" -c '\timing on' -c "$QC" | grep -oP '^Time: \K[0-9.]+') ||
    die "first-call run after LOAD failed"
  AFTERLOAD+=("$t")
done
best() { printf '%s\n' "$@" | sort -g | head -1; }
out "## C. First call in a fresh connection (psql \\timing, best of 5 connections)"
out ""
out "| call | ms |"
out "| --- | ---: |"
out "| first ai_cost call (library load + catalog cache load, $MODELS models) | $(best "${FIRST[@]}") |"
out "| first call after LOAD 'pg_aicost' (catalog cache load only) | $(best "${AFTERLOAD[@]}") |"
out "| second call (cache warm) | $(best "${SECOND[@]}") |"
out ""

# ---------------------------------------------------------------------------------------------
# D. Criterion micro-benchmarks of the pure-Rust core
# ---------------------------------------------------------------------------------------------
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
    *peer*) PEER=$(to_ns "$val" "$unit") ;;
  esac
done <"$TMP/criterion.tsv"
if [ -n "$EXACT" ] && [ -n "$PEER" ]; then
  out "| ratio exact decimal / f64 peer | $(calc %.1f× "$EXACT / $PEER") |"
fi
out ""
# ---------------------------------------------------------------------------------------------
# E. Response cache: ai_cache_get hits vs hand-rolled peers and Redis; statistics; Zipf hit ratio
# ---------------------------------------------------------------------------------------------
log "E. fixture: 10,000 cache entries in namespace 'bench', kv peers, Zipf sequence of $ZIPF_ACCESSES"
FIXTURE=$(psql_db -v accesses="$ZIPF_ACCESSES" -f benches/cache_setup.sql) || die "fixture (benches/cache_setup.sql) failed"
read -r WARM_MS ENTRIES REQ_BYTES RESP_BYTES ZIPF_THEORY ZIPF_TOP ZIPF_DISTINCT <<<"$FIXTURE"
[ "$ENTRIES" = 10000 ] || die "namespace bench holds $ENTRIES entries, expected 10000"

# cache_counts: HITS and MISSES of namespace 'bench' in aicost.cache_stats.
cache_counts() { read -r HITS MISSES <<<"$(psql_db -At -F ' ' -c "SELECT hits, misses FROM aicost.cache_stats WHERE namespace = 'bench'")"; }
cache_counts
HITS0=$HITS MISSES0=$MISSES
GET_XACTS=0
declare -A E_TPS
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
declare -A REDIS_RPS
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

# ---------------------------------------------------------------------------------------------
# F. Budgets: ledger inserts without a budget, on one shared budget, on one budget per client
# ---------------------------------------------------------------------------------------------
log "F. fixture: fresh database $LEDGER_DB, budgets of 1e9 USD for 'shared' and u0..u99"
psql_ -d postgres -c "DROP DATABASE IF EXISTS $LEDGER_DB WITH (FORCE)" -c "CREATE DATABASE $LEDGER_DB"
psql_ -d "$LEDGER_DB" -f benches/ledger_setup.sql || die "fixture (benches/ledger_setup.sql) failed"

declare -A F_TPS F_LAT F_XACTS=([nobudget]=0 [shared]=0 [own]=0)
for c in 1 8 32; do
  j=$(( c < 2 ? c : 2 ))
  for v in nobudget shared own; do
    log "F. pgbench usage insert, $v, $c client(s), $j thread(s), ${F_SECONDS} s"
    if [ "$c" = 32 ]; then start_sampler "$LEDGER_DB" "$TMP/waits-$v.txt"; fi
    pgbench_db "$LEDGER_DB" "pgbench_usage_$v.sql" "$c" "$j" "$F_SECONDS"
    stop_sampler
    F_TPS[$v,$c]=$TPS F_LAT[$v,$c]=$LAT
    F_XACTS[$v]=$((F_XACTS[$v] + XACTS))
  done
done

# The invariant: recorded spend equals the ledger, and every pgbench transaction is one row.
log "F. invariant: ai_budget_audit(), shared budget spend vs ledger, rows vs pgbench"
read -r AUDIT SHARED_SPENT SHARED_LEDGER SPEND_EQ N_NOBUDGET N_SHARED N_OWN <<<"$(psql_ -d "$LEDGER_DB" -At -F ' ' -c "
  SELECT (SELECT count(*) FROM ai_budget_audit()),
         s.spent, l.cost, s.spent = l.cost,
         (SELECT count(*) FROM aicost.usage WHERE user_id = 'nobody'),
         (SELECT count(*) FROM aicost.usage WHERE user_id = 'shared'),
         (SELECT count(*) FROM aicost.usage WHERE user_id ~ '^u[0-9]+\$')
    FROM (SELECT sum(sp.spent) AS spent FROM aicost.budget_spend sp JOIN aicost.budgets b USING (budget_id)
           WHERE b.scope = 'user' AND b.scope_id = 'shared') s,
         (SELECT sum(cost) AS cost FROM aicost.usage WHERE user_id = 'shared') l")"

B_RATIO32=$(calc %.2f "${F_TPS[shared,32]} / ${F_TPS[nobudget,32]}")
out "## F. Budgets: usage inserts, pgbench -n -T $F_SECONDS -c N -j min(N, 2)"
out ""
out "\`INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES (<user>, 'gpt-4o', 1000 + :i, 500)\`, priced and charged by the BEFORE INSERT trigger, in a fresh database; budgets of 1e9 USD a month (never reached). (a) user 'nobody' has no budget; (b) every client charges the one budget of user 'shared'; (c) client n charges its own budget, user 'u<n>'."
out ""
out "| clients | (a) no budget tps | (b) one shared budget tps | (c) own budget per client tps | (b) / (a) | (c) / (a) |"
out "| ---: | ---: | ---: | ---: | ---: | ---: |"
for c in 1 8 32; do
  a=${F_TPS[nobudget,$c]} b=${F_TPS[shared,$c]} o=${F_TPS[own,$c]}
  out "| $c | $(calc %.0f "$a") | $(calc %.0f "$b") | $(calc %.0f "$o") | $(calc %.2f "$b / $a") | $(calc %.2f "$o / $a") |"
done
out ""
out "Single client, no contention: a row costs $(calc %.0f "${F_LAT[nobudget,1]} * 1000") µs without a budget, $(calc %.0f "${F_LAT[shared,1]} * 1000") µs charging one budget: the charge itself is $(calc %.0f "(${F_LAT[shared,1]} - ${F_LAT[nobudget,1]}) * 1000") µs (pgbench average latency). (b) / (c) at 32 clients, the price of sharing one budget row: $(calc %.2f "${F_TPS[shared,32]} / ${F_TPS[own,32]}")."
out ""
if awk "BEGIN { exit !($B_RATIO32 >= 0.70) }"; then
  out "Target (b) / (a) >= 0.70 at 32 clients: **met** ($B_RATIO32)."
else
  out "Target (b) / (a) >= 0.70 at 32 clients: **NOT met** ($B_RATIO32); see the wait events below."
fi
out ""
out "Invariant after the runs: ai_budget_audit() rows: $AUDIT; shared budget spend $SHARED_SPENT = ledger cost of user 'shared' $SHARED_LEDGER: $SPEND_EQ; ledger rows = pgbench transactions: (a) $N_NOBUDGET = ${F_XACTS[nobudget]}, (b) $N_SHARED = ${F_XACTS[shared]}, (c) $N_OWN = ${F_XACTS[own]}."
out ""
# Where the time goes at 32 clients.
while read -r line; do out "$line"; done < <(wait_table "(a) no budget" "$TMP/waits-nobudget.txt" \
  "(b) shared budget" "$TMP/waits-shared.txt" "(c) own budget" "$TMP/waits-own.txt")
out ""
[ "$AUDIT" = 0 ] || die "ai_budget_audit() reports $AUDIT budget periods whose spend differs from the ledger"
[ "$SPEND_EQ" = t ] || die "shared budget spend $SHARED_SPENT differs from the ledger cost $SHARED_LEDGER"
[ "$N_NOBUDGET" = "${F_XACTS[nobudget]}" ] && [ "$N_SHARED" = "${F_XACTS[shared]}" ] && [ "$N_OWN" = "${F_XACTS[own]}" ] ||
  die "ledger rows differ from pgbench transactions"

out "Total benchmark run time: ${SECONDS} s."

mkdir -p "$(dirname "$OUT")"
printf '%s\n' "${RESULTS[@]}" | tee "$OUT"
log "results written to $OUT"
[ "$(stat -c '%s %Y' "$SO")" = "$SO_STAMP" ] ||
  die "$SO was replaced during the run (someone installed a build): the numbers mix builds, run again"
