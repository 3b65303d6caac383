#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root (CI and `make demo`/`make test`).
# Installs only what is missing: Debian packages, cargo-pgrx 0.18.0, and pgrx's PostgreSQL 15 config.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
# procps: the crash-recovery test signals a backend with kill(1), which minimal Debian lacks.
PKGS=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config libssl-dev procps)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
  echo "setup: installing cargo-pgrx ${PGRX_VERSION} (about 9 minutes on 2 cores)"
  cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "pg15 = \"${PG_CONFIG}\"" "$PGRX_HOME/config.toml"; then
  echo "setup: cargo pgrx init --pg15 ${PG_CONFIG}"
  cargo pgrx init --pg15 "${PG_CONFIG}"
fi
echo "setup: ok"
