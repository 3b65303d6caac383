#!/usr/bin/env bash
# `make test-clients`: the integrations of clients/ against the throwaway cluster (Debian's
# PostgreSQL 15, pg_aicost preloaded, so that aicost.stat_* are cluster-wide for the exporter),
# each as a least-privilege login role: Python (psycopg 3, SQLAlchemy 2), LiteLLM (callback with
# mock_response), Prometheus (prometheus-postgres-exporter + the Grafana dashboard's queries),
# pg_cron (a second throwaway cluster preloading it), then Node.js (node-postgres).
# Installs what is missing: Debian packages, the Python packages (into the LiteLLM venv that
# pgrx-tests/litellm/prepare.sh makes) and node_modules (npm ci from package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Debian's PostgreSQL 15: the one the exporter and postgresql-15-cron packages are built for.
export PG=15
log() { echo "clients: $*" >&2; }

need=()
command -v prometheus-postgres-exporter >/dev/null 2>&1 || need+=(prometheus-postgres-exporter)
[ -f /usr/share/postgresql/15/extension/pg_cron.control ] || need+=(postgresql-15-cron)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

bash pgrx-tests/litellm/prepare.sh >/dev/null
PY=$ROOT/target/litellm-venv/bin/python
if ! "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m, pathlib, re, sys
want = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", l).groups()
            for l in pathlib.Path("clients/python/requirements.txt").read_text().splitlines()
            if re.match(r"[A-Za-z]", l))
sys.exit(any(m.version(n) != v for n, v in want.items()))
PY
then
  log "installing clients/python/requirements.txt into target/litellm-venv"
  "$PY" -m pip install -q -r clients/python/requirements.txt
fi
if [ ! -d clients/node/node_modules/pg ]; then
  log "npm ci (clients/node)"
  (cd clients/node && npm ci --no-audit --no-fund --silent)
fi

PORT=${AICOST_PGPORT:-28815}
AICOST_PRELOAD=1 scripts/cluster.sh restart
trap 'scripts/cluster.sh stop' EXIT
export AICOST_TEST_DSN="host=127.0.0.1 port=$PORT user=postgres"
export LITELLM_LOCAL_MODEL_COST_MAP=True
"$PY" -m pytest -p no:cacheprovider -p no:warnings -q clients/tests
AICOST_APP_URL="postgresql://aicost_client_app@127.0.0.1:$PORT/aicost_clients" \
AICOST_ADMIN_URL="postgresql://postgres@127.0.0.1:$PORT/aicost_clients" \
  node --test --test-reporter=tap clients/node/aicost.test.js
