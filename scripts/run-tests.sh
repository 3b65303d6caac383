#!/usr/bin/env bash
# `make test`: lint and pure-Rust core tests once; the in-database #[pg_test]s on every supported
# PostgreSQL (14-18) in both modes; the multi-session integration tests in both modes on 15
# (Debian's) and 18 (the newest); pg_upgrade and dump/restore from 15 to 18; the release packages
# (.deb for 15, tarball for 18) installed and used. Prints one summary line at the end.
# `make test-matrix` runs the integration tests on every version too; `make test PG=NN` runs the
# in-database suites on that version only.
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
if [ -n "${AICOST_TEST_PG:-}" ]; then
  # `make test PG=NN`: every in-database suite on that version only.
  run make --no-print-directory test-pg PG="$AICOST_TEST_PG"
  run make --no-print-directory test-it PG="$AICOST_TEST_PG"
  if [ "$AICOST_TEST_PG" = 15 ]; then run make --no-print-directory test-clients; fi
else
  for pg in 15 14 16 17 18; do
    run make --no-print-directory test-pg PG=$pg
  done
  for pg in ${AICOST_IT_VERSIONS:-15 18}; do
    run make --no-print-directory test-it PG=$pg
  done
  run make --no-print-directory test-clients
  run make --no-print-directory test-upgrade UPGRADE_FROM=15w UPGRADE_TO=18
  # Last: it installs the .deb over the development build of 15 and removes it again.
  run make --no-print-directory test-package
fi

# cargo test ("test result: ok. N passed; M failed;"), pytest ("N failed, M passed, K errors in ..."
# as its last line) and node --test with the TAP reporter ("# pass N", "# fail M"). A failing suite
# stops the run (set -e), so failed counts show only in that suite's own output.
# awk alone (a grep that matches nothing would fail the pipeline under pipefail).
count() { awk -v re="$1" -v field="$2" '$0 ~ re { for (i = 1; i <= NF; i++) if ($i ~ field) s += $(i - 1) } END { print s + 0 }' "$LOG"; }
passed=$(count '^test result: [a-zA-Z]+\. [0-9]+ passed' '^passed;?$')
failed=$(count '^test result: ' '^failed;$')
py_passed=$(count '^(=+ )?([0-9]+ failed, )?[0-9]+ passed.* in [0-9.]+s' '^passed,?$')
py_failed=$(count '^(=+ )?[0-9]+ (failed|errors?).* in [0-9.]+s' '^(failed|errors?),?$')
node_passed=$(awk '/^# pass [0-9]+$/ { s += $3 } END { print s + 0 }' "$LOG")
node_failed=$(awk '/^# fail [0-9]+$/ { s += $3 } END { print s + 0 }' "$LOG")
passed=$((passed + py_passed + node_passed))
failed=$((failed + py_failed + node_failed))
echo
echo "summary: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
