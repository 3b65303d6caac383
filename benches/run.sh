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
#
# Usage: `make bench` (installs a release build, restarts the cluster, runs this script), or
#   bash benches/run.sh          against whatever build is installed; the cluster is started if needed.
# Environment: AICOST_PGPORT (default 28815) and AICOST_CLUSTER_DIR select the cluster
#   (scripts/cluster.sh); AICOST_SHARED_DATA (default ../shared/data) holds litellm_model_prices.json;
#   BENCH_RUNS (3), BENCH_NOCACHE_RUNS (1: the pricing_cache = off run takes ~1 min) and
#   BENCH_PGBENCH_SECONDS (10) tune the run length.
# Any failing step (SQL error, unequal sums, pgbench error, cargo bench error) exits non-zero.
# The database aicost_bench is recreated at the start and left in place for inspection.
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
OUT=$ROOT/target/bench-results.md
TMP=$(mktemp -d /tmp/aicost-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

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
# pgbench_run SCRIPT CLIENTS: sets TPS and LAT (average latency, ms).
pgbench_run() {
  local res
  res=$("$PGBIN/pgbench" -n -T "$PGB_SECONDS" -c "$2" -j "$2" -f "benches/$1" \
        -h 127.0.0.1 -p "$PORT" -U postgres "$DB" 2>&1) || die "pgbench -f $1 -c $2 failed: $res"
  TPS=$(grep -oP '^tps = \K[0-9.]+' <<<"$res" || true)
  LAT=$(grep -oP '^latency average = \K[0-9.]+' <<<"$res" || true)
  local failed
  failed=$(grep -oP '^number of failed transactions: \K[0-9]+' <<<"$res" || echo 0)
  [ -n "$TPS" ] && [ -n "$LAT" ] && [ "$failed" = 0 ] || die "pgbench -f $1 -c $2: unexpected output: $res"
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
out "Total benchmark run time: ${SECONDS} s."

mkdir -p "$(dirname "$OUT")"
printf '%s\n' "${RESULTS[@]}" | tee "$OUT"
log "results written to $OUT"
