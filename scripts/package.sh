#!/usr/bin/env bash
# `make package PG=NN`: a release build of pg_aicost for PostgreSQL NN, packaged for operators who
# do not build from source (no Rust needed to install):
#   target/package/pg_aicost-<version>-pgNN-linux-x86_64.tar.gz  lib/ + extension/ + install.sh,
#       for any PostgreSQL NN layout (install.sh asks pg_config where the files go);
#   target/package/pg-aicost-15_<version>_amd64.deb  (PG=15 only) for Debian 12's own PostgreSQL 15.
# Prints the paths of what it built, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${1:?usage: scripts/package.sh MAJOR}
PG=$PG bash scripts/setup.sh >&2
PG_CONFIG=$(bash scripts/pg-install.sh "$PG")
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
OUT=target/package
mkdir -p "$OUT"

cargo pgrx package --pg-config "$PG_CONFIG" >&2
# cargo pgrx package lays the files out under the install's own absolute paths.
staged=target/release/pg_aicost-pg$PG
lib=$staged$("$PG_CONFIG" --pkglibdir)
ext=$staged$("$PG_CONFIG" --sharedir)/extension
test -f "$lib/pg_aicost.so" && test -f "$ext/pg_aicost--$VERSION.sql"

# The tarball.
name=pg_aicost-$VERSION-pg$PG-linux-x86_64
rm -rf "${OUT:?}/$name"
mkdir -p "$OUT/$name/lib" "$OUT/$name/extension"
install -m 755 "$lib/pg_aicost.so" "$OUT/$name/lib/"
install -m 644 "$ext"/pg_aicost.control "$ext"/pg_aicost--*.sql "$OUT/$name/extension/"
cat >"$OUT/$name/install.sh" <<EOF
#!/bin/sh
# Installs pg_aicost $VERSION into PostgreSQL $PG: the one whose pg_config is \$PG_CONFIG, else the
# pg_config on PATH. Run it as the user that owns the PostgreSQL install (usually root).
set -eu
PG_CONFIG=\${PG_CONFIG:-pg_config}
here=\$(cd "\$(dirname "\$0")" && pwd)
major=\$("\$PG_CONFIG" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
if [ "\$major" != "$PG" ]; then
  echo "install.sh: this package is for PostgreSQL $PG, but \$PG_CONFIG is PostgreSQL \$major" >&2
  exit 1
fi
install -m 755 "\$here/lib/pg_aicost.so" "\$("\$PG_CONFIG" --pkglibdir)/"
install -m 644 "\$here"/extension/* "\$("\$PG_CONFIG" --sharedir)/extension/"
echo "pg_aicost $VERSION installed into \$("\$PG_CONFIG" --sharedir): CREATE EXTENSION pg_aicost CASCADE;"
EOF
chmod 755 "$OUT/$name/install.sh"
tar -C "$OUT" -czf "$OUT/$name.tar.gz" "$name"
rm -rf "${OUT:?}/$name"
echo "$OUT/$name.tar.gz"

# The Debian package, for Debian's PostgreSQL 15 (its paths, its dependency).
if [ "$PG" = 15 ]; then
  pkg=pg-aicost-15
  root=$OUT/deb/${pkg}_${VERSION}_amd64
  rm -rf "$root"
  mkdir -p "$root/DEBIAN" "$root/usr/lib/postgresql/15/lib" "$root/usr/share/postgresql/15/extension" \
           "$root/usr/share/doc/$pkg"
  install -m 644 "$lib/pg_aicost.so" "$root/usr/lib/postgresql/15/lib/"
  install -m 644 "$ext"/pg_aicost.control "$ext"/pg_aicost--*.sql "$root/usr/share/postgresql/15/extension/"
  cat >"$root/usr/share/doc/$pkg/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pg_aicost
Files: *
License: MIT
EOF
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $VERSION
Architecture: amd64
Maintainer: pg_aicost developers <pg_aicost@localhost>
Depends: postgresql-15, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Installed-Size: $size
Description: price, cache and budget LLM calls inside PostgreSQL 15
 pg_aicost is a PostgreSQL extension: exact LLM request costs from a
 versioned pricing catalog, a response cache, and a usage ledger whose
 budgets and rate limits hold under concurrency.
 After installing: CREATE EXTENSION pg_aicost CASCADE;
EOF
  dpkg-deb --root-owner-group -Zxz --build "$root" "$OUT/${pkg}_${VERSION}_amd64.deb" >&2
  echo "$OUT/${pkg}_${VERSION}_amd64.deb"
fi
