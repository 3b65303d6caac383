#!/usr/bin/env bash
# Prints a directory for PostgreSQL data that the `postgres` OS user can reach: target/<name> when
# every parent of the checkout is searchable by it (the usual case), else /tmp/pg_aicost-<name>-<hash>
# (e.g. a checkout under /root). Creates it, owned by postgres when run as root.
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/target/$name"
mkdir -p "$root/target"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$root/target" 2>/dev/null; then
  dir="/tmp/pg_aicost-$name-$(printf '%s' "$root" | cksum | cut -d' ' -f1)"
fi
mkdir -p "$dir"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
echo "$dir"
