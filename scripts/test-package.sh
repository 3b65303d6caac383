#!/usr/bin/env bash
# `make test-package`: installs the packages an operator would, and uses them in fresh clusters:
#   - the .deb into Debian's PostgreSQL 15 with `apt-get install ./pg-aicost-15_<version>_amd64.deb`
#     (then removed again with apt-get, which must take every file it installed);
#   - the PostgreSQL 18 tarball with its install.sh into the PostgreSQL 18 install.
# Each: CREATE EXTENSION pg_aicost CASCADE as a superuser, the installed version, a cost, and a
# cost computed by an application role. Runs as root (it installs packages).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
fail() { echo "test-package: FAILED: $*" >&2; exit 1; }

# One fresh cluster of PostgreSQL $1 on port $2: creates the extension and checks it works.
check_cluster() {
  local pg=$1 port=$2 dir
  dir=$(bash scripts/pg-dir.sh "package-test-$pg")
  local env=(PG="$pg" AICOST_PGPORT="$port" AICOST_CLUSTER_DIR="$dir")
  env "${env[@]}" bash scripts/cluster.sh stop || true
  rm -rf "${dir:?}/data"
  env "${env[@]}" bash scripts/cluster.sh start
  local out
  out=$(env "${env[@]}" bash scripts/cluster.sh psql -qAt -d postgres <<'SQL'
CREATE EXTENSION pg_aicost CASCADE;
SELECT extversion FROM pg_extension WHERE extname = 'pg_aicost';
SELECT ai_cost('gpt-4o', 1000000, 1000000);
CREATE ROLE package_app LOGIN IN ROLE aicost_app;
SET ROLE package_app;
SELECT ai_cost('gpt-4o', 2000000, 0);
SQL
  ) || { env "${env[@]}" bash scripts/cluster.sh stop; fail "PostgreSQL $pg: the extension does not work"; }
  env "${env[@]}" bash scripts/cluster.sh stop
  rm -rf "${dir:?}"
  local want
  want=$(printf '%s\n%s\n%s' "$VERSION" "12.5" "5")
  [ "$out" = "$want" ] || fail "PostgreSQL $pg: got
$out
want
$want"
  echo "test-package: PostgreSQL $pg: pg_aicost $VERSION installed from the package works"
}

# The .deb, into Debian's PostgreSQL 15.
deb=$(bash scripts/package.sh 15 | grep '\.deb$')
[ -f "$deb" ] || fail "no .deb built"
[ "$(basename "$deb")" = "pg-aicost-15_${VERSION}_amd64.deb" ] || fail "unexpected name $deb"
# Output captured first: `cmd | grep -q` fails under pipefail when grep exits before cmd has
# written everything (SIGPIPE).
grep -q 'Depends: postgresql-15' <<<"$(dpkg-deb -I "$deb")" || fail "the .deb does not depend on postgresql-15"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$ROOT/$deb" >/dev/null
files=$(dpkg -L pg-aicost-15)
grep -qx /usr/lib/postgresql/15/lib/pg_aicost.so <<<"$files" || fail "the .deb did not install the library"
grep -qx "/usr/share/postgresql/15/extension/pg_aicost--$VERSION.sql" <<<"$files" \
  || fail "the .deb did not install the install script"
check_cluster 15 28834
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q pg-aicost-15 >/dev/null
[ ! -e /usr/lib/postgresql/15/lib/pg_aicost.so ] || fail "apt-get remove left the library behind"
echo "test-package: the .deb installs with apt-get and is removed cleanly"

# The tarball, into PostgreSQL 18.
tarball=$(bash scripts/package.sh 18 | grep '\.tar\.gz$')
tmp=$(mktemp -d)
tar -C "$tmp" -xzf "$tarball"
PG_CONFIG=$(bash scripts/pg-install.sh 15) sh "$tmp"/*/install.sh 2>/dev/null \
  && fail "install.sh of the PostgreSQL 18 package accepted PostgreSQL 15"
PG_CONFIG=$(bash scripts/pg-install.sh 18) sh "$tmp"/*/install.sh
rm -rf "$tmp"
check_cluster 18 28835
echo "test-package: ok"
