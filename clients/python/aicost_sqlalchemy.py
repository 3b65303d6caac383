"""pg_aicost from SQLAlchemy 2: the ledger as ORM classes, ai_cost as a SQL function, the response
cache's single flight, and budget errors as exceptions. Money is decimal.Decimal end to end.

The application's role is granted aicost_app: it may INSERT the usage facts of aicost.usage (not
the columns the database computes: cost, cache_hit, price_ids, budget_ids, usage_id) and read its
rows back through the view aicost.my_usage. So `Usage` (writes) is keyed by the application's own
request_id, and inserts need no RETURNING; `LedgerRow` (reads) maps the view.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

from sqlalchemy import BigInteger, Numeric, String, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

BUDGET_EXCEEDED = "AC001"
RATE_LIMITED = "AC002"


class BudgetExceeded(Exception):
    """A ledger row would pass a hard budget limit (SQLSTATE AC001)."""


class RateLimited(Exception):
    """A rate limit was exceeded (SQLSTATE AC002)."""


class Base(DeclarativeBase):
    pass


class Usage(Base):
    """One LLM call, as the application records it (INSERT only)."""

    __tablename__ = "usage"
    __table_args__ = {"schema": "aicost"}

    # The ORM's identity: the application's request id (unique per org in the ledger).
    request_id: Mapped[str] = mapped_column(String, primary_key=True)
    org_id: Mapped[str | None]
    team_id: Mapped[str | None]
    user_id: Mapped[str | None]
    api_key_id: Mapped[str | None]
    model: Mapped[str]
    in_tokens: Mapped[int | None] = mapped_column(BigInteger)
    out_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)


class LedgerRow(Base):
    """A ledger row as the database priced and charged it (the view aicost.my_usage: the acting
    role's org's rows, or every row for a role not confined to an org)."""

    __tablename__ = "my_usage"
    __table_args__ = {"schema": "aicost"}

    usage_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime]
    request_id: Mapped[str | None]
    org_id: Mapped[str | None]
    user_id: Mapped[str | None]
    model: Mapped[str]
    in_tokens: Mapped[int | None] = mapped_column(BigInteger)
    out_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[Decimal | None] = mapped_column(Numeric)
    status: Mapped[str]


def cost(session: Session, model: str, in_tokens: int, out_tokens: int) -> Decimal:
    """Exact USD cost, computed by the database."""
    return session.scalar(select(func.ai_cost(model, in_tokens, out_tokens, type_=Numeric)))


def explain(session: Session, model: str, in_tokens: int, out_tokens: int) -> dict[str, Any]:
    """How the cost is computed: model row, price versions and each term (JSON)."""
    return session.scalar(select(func.ai_cost_explain(model, in_tokens, out_tokens, type_=JSONB)))


def record(session: Session, row: Usage) -> None:
    """Adds a ledger row and commits. Raises BudgetExceeded / RateLimited (and rolls back) when a
    budget or rate limit refuses it."""
    session.add(row)
    try:
        session.commit()
    except DBAPIError as e:
        session.rollback()
        state = getattr(e.orig, "sqlstate", None)
        if state == BUDGET_EXCEEDED:
            raise BudgetExceeded(str(e.orig)) from e
        if state == RATE_LIMITED:
            raise RateLimited(str(e.orig)) from e
        raise


def cached_completion(
    session: Session,
    model: str,
    request: dict[str, Any],
    produce: Callable[[], dict[str, Any]],
    namespace: str = "default",
) -> tuple[dict[str, Any], bool]:
    """Single flight in one transaction of its own (a new session on the same engine, so the
    caller's session and its transaction are left alone): a hit, or this caller produces the
    response while the other callers of the same request wait; (response, hit)."""
    lock = func.ai_cache_get_or_lock(model, literal(request, JSONB), namespace).table_valued(
        "status", "response"
    )
    with Session(session.get_bind()) as own, own.begin():
        status, response = own.execute(select(lock.c.status, lock.c.response)).one()
        if status == "hit":
            return response, True
        if status != "compute":
            raise TimeoutError(f"ai_cache_get_or_lock: {status}")
        response = produce()
        own.execute(
            select(func.ai_cache_put(model, literal(request, JSONB), literal(response, JSONB), None, namespace))
        )
        return response, False
