"""The pg_cron jobs of clients/pg_cron/jobs.sql, scheduled by an aicost_admin role on a cluster of
its own that preloads Debian's pg_cron (postgresql-15-cron), seen to run and do their work."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "clients" / "pg_cron" / "jobs.sql"
PORT = int(os.environ.get("AICOST_CRON_PGPORT", "28836"))
DIR = ROOT / "target" / "pgcluster-cron"
DB = "aicost_cron"
ENV = {**os.environ, "AICOST_CLUSTER_DIR": str(DIR), "AICOST_PGPORT": str(PORT), "AICOST_PRELOAD": "0", "PG": "15"}


def cluster(cmd: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), cmd], env=ENV, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


@pytest.fixture(scope="module")
def cron_cluster():
    if not Path("/usr/share/postgresql/15/extension/pg_cron.control").exists():
        pytest.fail("pg_cron is not installed (clients/run-tests.sh installs postgresql-15-cron)")
    cluster("stop")
    cluster("init")
    conf = DIR / "data" / "postgresql.conf"
    text = conf.read_text()
    if "cron.database_name" not in text:
        conf.write_text(text + f"shared_preload_libraries = 'pg_cron'\ncron.database_name = '{DB}'\n"
                               "cron.use_background_workers = on\nmax_worker_processes = 16\n")
    cluster("start")
    base = f"host=127.0.0.1 port={PORT} user=postgres"
    with psycopg.connect(f"{base} dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
        c.execute("DROP ROLE IF EXISTS aicost_cron_ops")
    # The scheduler ends when its database is dropped: start it again on the new one.
    cluster("restart")
    try:
        yield base
    finally:
        cluster("stop")


def test_maintenance_jobs_run_as_an_admin_role(cron_cluster):
    su = psycopg.connect(f"{cron_cluster} dbname={DB}", autocommit=True)
    su.execute("CREATE EXTENSION pg_aicost CASCADE")
    su.execute("CREATE EXTENSION pg_cron")
    su.execute("CREATE ROLE aicost_cron_ops LOGIN")
    su.execute("GRANT aicost_admin TO aicost_cron_ops")
    su.execute("GRANT USAGE ON SCHEMA cron TO aicost_cron_ops")
    # Work for the jobs: an expired cache entry, and a reservation that expired two days ago.
    su.execute("SELECT ai_cache_put('gpt-4o', '{\"q\": 1}', '{\"a\": 1}', ttl => '1 millisecond')")
    su.execute("SELECT ai_budget_set('org', 'acme', 10)")
    su.execute("""INSERT INTO aicost.budget_reservations (budget_id, period_start, amount, created_at, expires_at)
                  SELECT budget_id, date_trunc('month', now()), 1, now() - interval '3 days', now() - interval '2 days'
                    FROM aicost.budgets""")
    su.execute("SELECT ai_budget_reserve('org', 'acme', 1)")  # active: kept
    assert su.execute("SELECT count(*) FROM aicost.budget_reservations").fetchone()[0] == 2

    with psycopg.connect(f"{cron_cluster} dbname={DB} user=aicost_cron_ops", autocommit=True) as ops:
        ops.execute(JOBS.read_text())
    jobs = dict(su.execute("SELECT jobname, username FROM cron.job").fetchall())
    assert jobs == {"aicost-cache-sweep": "aicost_cron_ops", "aicost-reservations-purge": "aicost_cron_ops"}
    # Run them at the next minute instead of their own schedules.
    su.execute("SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job")

    deadline = time.monotonic() + 130
    while True:
        done = dict(su.execute(
            """SELECT j.jobname, bool_or(d.status = 'succeeded') FROM cron.job j
                 LEFT JOIN cron.job_run_details d USING (jobid) GROUP BY j.jobname""").fetchall())
        failed = su.execute("SELECT string_agg(return_message, '; ') FROM cron.job_run_details WHERE status = 'failed'").fetchone()[0]
        assert failed is None, failed
        if all(done.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert done == {"aicost-cache-sweep": True, "aicost-reservations-purge": True}, done
    assert su.execute("SELECT entries FROM aicost.cache_stats WHERE namespace = 'default'").fetchone()[0] == 0
    assert su.execute("SELECT count(*) FROM aicost.budget_reservations").fetchone()[0] == 1
    su.close()
