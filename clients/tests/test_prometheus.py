"""The Prometheus metrics (clients/prometheus/queries.yaml) scraped from Debian's
prometheus-postgres-exporter after a workload, and the Grafana dashboard's queries checked against
them. The exporter connects as a login role granted aicost_reader."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

PROM = Path(__file__).resolve().parent.parent / "prometheus"
EXPORTER = shutil.which("prometheus-postgres-exporter")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, metric, **labels) -> float:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == metric and want <= set(ls)]
    assert len(found) == 1, f"{metric}{labels}: {len(found)} samples"
    return found[0]


@pytest.fixture
def exporter(reader_dsn, database):
    if EXPORTER is None:
        pytest.fail("prometheus-postgres-exporter is not installed (clients/run-tests.sh installs it)")
    port = free_port()
    env = {"DATA_SOURCE_NAME": f"postgresql://aicost_client_reader@127.0.0.1:{dict(p.split('=') for p in reader_dsn.split())['port']}/{database}?sslmode=disable"}
    proc = subprocess.Popen(
        [EXPORTER, f"--extend.query-path={PROM / 'queries.yaml'}", "--disable-default-metrics",
         "--disable-settings-metrics", f"--web.listen-address=127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the exporter did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_metrics_after_a_workload_and_the_dashboard_uses_only_them(app, admin, exporter):
    libs = admin.execute("SHOW shared_preload_libraries").fetchone()[0]
    assert "pg_aicost" in libs, "run with pg_aicost preloaded (clients/run-tests.sh does): stat_* are per session otherwise"
    org = f"prom-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_budget_set('org', %s, 1)", (org,))
    admin.execute("INSERT INTO aicost.breaker_config (kind, name, failure_threshold, cooldown) "
                  "VALUES ('model', 'gpt-4o-mini', 1, '1 hour') ON CONFLICT DO NOTHING")
    for i in range(20):
        app.execute("SELECT ai_cost('gpt-4o', %s, 100)", (1000 + i,))
    app.execute("INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens) VALUES (%s, 'gpt-4o', 1000, 500)", (org,))
    ns = f"prom{uuid.uuid4().hex[:8]}"
    req = '{"q": "metrics"}'
    app.execute("SELECT ai_cache_put('gpt-4o', %s, '{\"usage\": {\"prompt_tokens\": 1000, \"completion_tokens\": 500}}', namespace => %s)", (req, ns))
    for _ in range(3):
        app.execute("SELECT ai_cache_get('gpt-4o', %s, %s)", (req, ns))
    app.execute("SELECT ai_cache_get('gpt-4o', '{\"q\": \"miss\"}', %s)", (ns,))
    app.execute("SELECT ai_call_report('gpt-4o-mini', false, error_class => 'timeout')")

    with psycopg.connect(admin.info.dsn, autocommit=True) as c:
        calls = c.execute("SELECT calls FROM aicost.stat_cost WHERE model = 'gpt-4o'").fetchone()[0]
        spent = c.execute("SELECT spent FROM aicost.budget_status WHERE scope_id = %s", (org,)).fetchone()[0]
        hits, misses = c.execute("SELECT hits, misses FROM aicost.cache_stats WHERE namespace = %s", (ns,)).fetchone()
    s = scrape(exporter)

    assert value(s, "pg_exporter_last_scrape_error") == 0
    assert value(s, "pg_exporter_user_queries_load_error", filename=str(PROM / "queries.yaml")) == 0
    assert value(s, "aicost_model_calls_total", model="gpt-4o") == calls >= 21
    assert value(s, "aicost_model_cost_usd_total", model="gpt-4o") > 0
    assert value(s, "aicost_model_p95_latency_seconds", model="gpt-4o") > 0
    assert value(s, "aicost_budget_spent_usd", scope="org", scope_id=org) == pytest.approx(float(spent))
    assert float(spent) == 0.0075
    assert value(s, "aicost_budget_limit_usd", scope_id=org) == 1
    assert value(s, "aicost_budget_charges_total", scope_id=org) == 1
    assert value(s, "aicost_budget_state_level", scope_id=org) == 0
    assert value(s, "aicost_spend_today_cost_usd", org_id=org, model="gpt-4o") == pytest.approx(0.0075)
    assert (value(s, "aicost_cache_hits_total", namespace=ns), value(s, "aicost_cache_misses_total", namespace=ns)) == (hits, misses) == (3, 1)
    assert value(s, "aicost_cache_saved_usd_total", namespace=ns) == pytest.approx(3 * 0.0075)
    assert value(s, "aicost_breaker_state_level", kind="model", name="gpt-4o-mini") == 2
    assert value(s, "aicost_pricing_cache_shared_reads_total") + value(s, "aicost_pricing_cache_local_loads_total") > 0

    # Every metric a dashboard query names is one the exporter serves.
    dash = json.loads((PROM / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    served = {n for n, _ in s}
    used = {m for e in exprs for m in re.findall(r"\baicost_[a-z0-9_]+", e)}
    assert used and used <= served, f"not served: {sorted(used - served)}"
    # Each of the panels is there: cost per model and tenant, hit ratio, p95 latency, budget usage.
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("per model", "per tenant", "hit ratio", "p95", "budget usage"):
        assert want in titles, want
