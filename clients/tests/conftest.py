"""Fixtures of the client tests: a fresh database with pg_aicost on the test cluster, and login
roles an application and a monitoring agent would use (never a superuser)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
CLIENTS = HERE.parent
for sub in ("python", "litellm"):
    sys.path.insert(0, str(CLIENTS / sub))

ADMIN_DSN = os.environ.get("AICOST_TEST_DSN", "host=127.0.0.1 port=28815 user=postgres")
DB = "aicost_clients"
APP = "aicost_client_app"
READER = "aicost_client_reader"


def dsn(user: str, db: str = DB) -> str:
    return f"{ADMIN_DSN} user={user} dbname={db}"


@pytest.fixture(scope="session")
def database() -> str:
    with psycopg.connect(f"{ADMIN_DSN} dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
        for role, group in ((APP, "aicost_app"), (READER, "aicost_reader")):
            c.execute(f"DROP ROLE IF EXISTS {role}")
    with psycopg.connect(dsn("postgres"), autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_aicost CASCADE")
        for role, group in ((APP, "aicost_app"), (READER, "aicost_reader")):
            c.execute(f"CREATE ROLE {role} LOGIN")
            c.execute(f"GRANT {group} TO {role}")
    yield DB


@pytest.fixture
def admin(database):
    """A superuser session (sets budgets up, as an operator would)."""
    with psycopg.connect(dsn("postgres"), autocommit=True) as c:
        yield c


@pytest.fixture
def app(database):
    """The application's session: role aicost_client_app (member of aicost_app), autocommit."""
    with psycopg.connect(dsn(APP), autocommit=True) as c:
        assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        yield c


@pytest.fixture
def app_dsn(database) -> str:
    return dsn(APP)


@pytest.fixture
def reader_dsn(database) -> str:
    return dsn(READER)
