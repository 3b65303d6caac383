"""The Python examples (clients/python) against the test cluster, as an application role."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import aicost_psycopg as pg
import aicost_sqlalchemy as orm


def rid() -> str:
    return f"req-{uuid.uuid4()}"


# --- psycopg 3 -----------------------------------------------------------------------------------

def test_costs_are_exact_decimals(app):
    c = pg.cost(app, "gpt-4o", 1000, 500)
    assert isinstance(c, Decimal) and c == Decimal("0.0075")
    # Cached prompt tokens at their own price, not the input price.
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 800}}
    assert pg.cost_of_usage(app, "gpt-4o", usage) == Decimal("0.0065")
    assert pg.cost(app, "gpt-4o", 1000, 500, cached_tokens=800) == Decimal("0.0065")
    with pytest.raises(TypeError):
        pg.cost(app, "gpt-4o", 1, 1, **{"x => 1); DROP TABLE t; --": 1})
    # A thousand exact sums do not drift (a float would: 0.0075 * 1000 != 7.5 in binary).
    total = sum((pg.cost(app, "gpt-4o-mini", 333, 77) for _ in range(1000)), Decimal(0))
    assert total == pg.cost(app, "gpt-4o-mini", 333, 77) * 1000


def test_unknown_model_is_an_error_not_zero(app):
    with pytest.raises(psycopg.errors.UndefinedObject):
        pg.cost(app, "no-such-model", 1, 1)


def test_record_charges_once_and_budget_errors_are_exceptions(app, admin):
    admin.execute("SELECT ai_budget_set('org', 'py-acme', 0.01)")
    r = rid()
    usage = {"prompt_tokens": 1000, "completion_tokens": 500}
    assert pg.record(app, model="gpt-4o", usage=usage, request_id=r, org_id="py-acme")
    # A retry of the same request: not charged twice.
    assert not pg.record(app, model="gpt-4o", usage=usage, request_id=r, org_id="py-acme")
    spent = app.execute("SELECT spent FROM aicost.budget_status WHERE scope_id = 'py-acme'").fetchone()[0]
    assert spent == Decimal("0.0075")
    assert pg.budget_check(app, "org", "py-acme", Decimal("0.002")) == "throttle"
    with pytest.raises(pg.BudgetExceeded):
        pg.record(app, model="gpt-4o", usage=usage, request_id=rid(), org_id="py-acme")
    assert app.execute("SELECT count(*) FROM aicost.my_usage WHERE org_id = 'py-acme'").fetchone()[0] == 1


def test_rate_limit_error_is_an_exception(app, admin):
    admin.execute("SELECT ai_rate_limit_set('org', 'py-rl', '1 hour', 1)")
    pg.record(app, model="gpt-4o", usage={"prompt_tokens": 1, "completion_tokens": 1}, org_id="py-rl")
    with pytest.raises(pg.RateLimited):
        pg.record(app, model="gpt-4o", usage={"prompt_tokens": 1, "completion_tokens": 1}, org_id="py-rl")


def test_single_flight_produces_once_under_concurrent_callers(app_dsn):
    request = {"messages": [{"role": "user", "content": f"hello {uuid.uuid4()}"}]}
    produced = []
    results = []
    start = threading.Barrier(4, timeout=30)

    def caller():
        with psycopg.connect(app_dsn, autocommit=True) as c:
            start.wait()

            def produce():
                produced.append(1)
                threading.Event().wait(0.3)  # the LLM call
                return {"choices": [{"message": {"content": "hi"}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1}}

            results.append(pg.cached_completion(c, "gpt-4o", request, produce))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(produced) == 1, "the response was produced once"
    with psycopg.connect(app_dsn) as c:  # not autocommit: inside a transaction after a query
        c.execute("SELECT 1")
        with pytest.raises(RuntimeError):
            pg.cached_completion(c, "gpt-4o", request, lambda: {})
    assert sorted(hit for _, hit in results) == [False, True, True, True]
    assert all(resp["choices"][0]["message"]["content"] == "hi" for resp, _ in results)


# --- SQLAlchemy 2 -------------------------------------------------------------------------------

@pytest.fixture
def engine(app_dsn):
    e = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(app_dsn))
    yield e
    e.dispose()


def test_orm_prices_records_and_reads_back(engine, admin):
    admin.execute("SELECT ai_budget_set('org', 'orm-acme', 1)")
    with Session(engine) as s:
        assert orm.cost(s, "gpt-4o", 1000, 500) == Decimal("0.0075")
        ex = orm.explain(s, "gpt-4o", 1000, 500)
        assert ex["model"] == "gpt-4o" and "terms" in ex, ex
        r = rid()
        orm.record(s, orm.Usage(request_id=r, org_id="orm-acme", user_id="u1", model="openai/gpt-4o",
                                usage={"prompt_tokens": 1000, "completion_tokens": 500},
                                metadata_={"feature": "chat"}))
        row = s.scalars(select(orm.LedgerRow).where(orm.LedgerRow.request_id == r)).one()
        assert row.model == "openai/gpt-4o" and row.in_tokens == 1000 and row.out_tokens == 500
        assert isinstance(row.cost, Decimal) and row.cost == Decimal("0.0075")


def test_orm_budget_error_rolls_back(engine, admin):
    admin.execute("SELECT ai_budget_set('org', 'orm-tiny', 0.001)")
    with Session(engine) as s:
        with pytest.raises(orm.BudgetExceeded):
            orm.record(s, orm.Usage(request_id=rid(), org_id="orm-tiny", model="gpt-4o", in_tokens=1000, out_tokens=500))
        n = s.scalar(select(orm.LedgerRow.usage_id).where(orm.LedgerRow.org_id == "orm-tiny").limit(1))
        assert n is None, "nothing written"


def test_orm_single_flight(engine):
    request = {"q": str(uuid.uuid4())}
    calls = []
    with Session(engine) as s:
        orm.cost(s, "gpt-4o", 1, 1)  # the caller's session is in a transaction already
        first = orm.cached_completion(s, "gpt-4o-mini", request, lambda: calls.append(1) or {"a": 1})
        second = orm.cached_completion(s, "gpt-4o-mini", request, lambda: calls.append(1) or {"a": 2})
    assert first == ({"a": 1}, False) and second == ({"a": 1}, True) and calls == [1]
