"""pg_aicost from Python with psycopg 3: plain SQL, exact money, budget errors as exceptions.

Copy what you need. Every function takes an open psycopg connection of a role granted
aicost_app; money comes back as decimal.Decimal (PostgreSQL numeric), never as float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

import psycopg
from psycopg.types.json import Jsonb

BUDGET_EXCEEDED = "AC001"
RATE_LIMITED = "AC002"


class BudgetExceeded(Exception):
    """A ledger row or reservation would pass a hard budget limit (SQLSTATE AC001)."""


class RateLimited(Exception):
    """A rate limit was exceeded (SQLSTATE AC002)."""


def _raise_budget_errors(e: psycopg.Error) -> None:
    if e.sqlstate == BUDGET_EXCEEDED:
        raise BudgetExceeded(str(e)) from e
    if e.sqlstate == RATE_LIMITED:
        raise RateLimited(str(e)) from e


# ai_cost's optional token counts (named arguments).
COUNTS = ("cached_tokens", "cache_write_tokens", "cache_write_1h_tokens")


def cost(conn: psycopg.Connection, model: str, in_tokens: int, out_tokens: int, **more: int) -> Decimal:
    """Exact USD cost of a request (cached_tokens=, cache_write_tokens=, cache_write_1h_tokens=)."""
    unknown = set(more) - set(COUNTS)
    if unknown:
        raise TypeError(f"unknown token counts: {sorted(unknown)}")
    named = "".join(f", {k} => %({k})s" for k in COUNTS if k in more)
    row = conn.execute(
        f"SELECT ai_cost(%(model)s, %(in)s, %(out)s{named})",
        {"model": model, "in": in_tokens, "out": out_tokens, **more},
    ).fetchone()
    return row[0]


def cost_of_usage(conn: psycopg.Connection, model: str, usage: dict[str, Any]) -> Decimal:
    """Exact USD cost of a provider's usage object (OpenAI, Anthropic or Gemini shape)."""
    return conn.execute("SELECT ai_cost(%s, %s)", (model, Jsonb(usage))).fetchone()[0]


def record(
    conn: psycopg.Connection,
    *,
    model: str,
    usage: dict[str, Any],
    request_id: str | None = None,
    org_id: str | None = None,
    team_id: str | None = None,
    user_id: str | None = None,
    api_key_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> bool:
    """Records one call in the ledger (priced and charged by the database). Returns False when
    request_id was recorded already (a retry: never charged twice). Raises BudgetExceeded or
    RateLimited when a budget or rate limit refuses it (nothing is written)."""
    try:
        cur = conn.execute(
            """INSERT INTO aicost.usage (request_id, org_id, team_id, user_id, api_key_id, model, usage, metadata)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (request_id, org_id, team_id, user_id, api_key_id, model, Jsonb(usage),
             Jsonb(metadata) if metadata is not None else None),
        )
    except psycopg.Error as e:
        _raise_budget_errors(e)
        raise
    return cur.rowcount == 1


def budget_check(conn: psycopg.Connection, scope: str, scope_id: str, estimated_cost: Decimal = Decimal(0)) -> str:
    """ok, alert, throttle or deny if estimated_cost were spent now."""
    return conn.execute("SELECT state FROM ai_budget_check(%s, %s, %s)", (scope, scope_id, estimated_cost)).fetchone()[0]


def cached_completion(
    conn: psycopg.Connection,
    model: str,
    request: dict[str, Any],
    produce: Callable[[], dict[str, Any]],
    namespace: str = "default",
) -> tuple[dict[str, Any], bool]:
    """The response to request from the response cache, or produced once by produce() while
    concurrent callers of the same request wait for it (single flight). Returns (response, hit).
    Runs in one transaction of its own (the lock is released when it commits or rolls back), so
    the connection must not be inside a transaction already."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("cached_completion needs a connection outside a transaction "
                           "(the lock would be held until the outer transaction ends)")
    with conn.transaction():
        status, response = conn.execute(
            "SELECT status, response FROM ai_cache_get_or_lock(%s, %s, %s)",
            (model, Jsonb(request), namespace),
        ).fetchone()
        if status == "hit":
            return response, True
        if status != "compute":
            raise TimeoutError(f"ai_cache_get_or_lock: {status}")
        response = produce()
        conn.execute("SELECT ai_cache_put(%s, %s, %s, namespace => %s)",
                     (model, Jsonb(request), Jsonb(response), namespace))
        return response, False


if __name__ == "__main__":
    import os

    with psycopg.connect(os.environ.get("AICOST_DSN", "host=127.0.0.1 port=28815 dbname=postgres"),
                         autocommit=True) as conn:
        print("gpt-4o, 1000 in / 500 out:", cost(conn, "gpt-4o", 1000, 500), "USD")
        usage = {"prompt_tokens": 1000, "completion_tokens": 500,
                 "prompt_tokens_details": {"cached_tokens": 800}}
        print("with 800 cached prompt tokens:", cost_of_usage(conn, "gpt-4o", usage), "USD")
