#!/usr/bin/env bash
# `make test`: lint, pure-Rust core tests, in-database #[pg_test]s, then the multi-session
# integration tests against a throwaway cluster. Prints one summary line at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
LOG=target/test.log
: >"$LOG"

run() {
  echo "==> $*"
  "$@" 2>&1 | tee -a "$LOG"
}

run make --no-print-directory lint
run make --no-print-directory test-core
run make --no-print-directory test-pg
run make --no-print-directory test-it

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$LOG" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$LOG" | awk '{s+=$1} END {print s+0}')
echo
echo "summary: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
