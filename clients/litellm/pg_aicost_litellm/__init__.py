"""pg_aicost for LiteLLM: every completion (sync, async, streaming) becomes a row of the pg_aicost
ledger, priced and charged by the database from the provider's usage object; and a call whose
budget says `deny` is refused before it is made.

    import litellm
    from pg_aicost_litellm import AicostCallback, BudgetExceeded, completion

    aicost = AicostCallback("host=db dbname=app user=myapp")   # a role granted aicost_app
    litellm.callbacks = [aicost]
    resp = completion(aicost, model="gpt-4o", messages=[...],
                      metadata={"org_id": "acme", "user_id": "u42"})

Who is charged: `org_id`, `team_id`, `user_id` and `api_key_id` from the call's metadata (LiteLLM
proxy keys `user_api_key_org_id`, `user_api_key_team_id`, `user_api_key_user_id` and
`user_api_key_hash` are understood too). The ledger's request id is LiteLLM's call id, so a
duplicate delivery of the same response is charged once.

Budget check before a call (`completion` / `acompletion` here, or `async_pre_call_hook` on the
LiteLLM proxy): the most specific scope with a budget among api_key, user, team, org is checked
with `ai_budget_check`; `deny` raises BudgetExceeded. `throttle` does what `on_throttle` says:
"allow" (default: the call goes on, and a warning is logged), "deny" (refused like a deny), or a
model name to use instead (e.g. a cheaper model).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # pragma: no cover - litellm is a dependency
    CustomLogger = object  # type: ignore[misc,assignment]

log = logging.getLogger("pg_aicost_litellm")

SCOPES = (  # most specific first: (scope, metadata keys)
    ("api_key", ("api_key_id", "user_api_key_hash")),
    ("user", ("user_id", "user_api_key_user_id")),
    ("team", ("team_id", "user_api_key_team_id")),
    ("org", ("org_id", "user_api_key_org_id")),
)


class BudgetExceeded(Exception):
    """The budget check said deny (or throttle, with on_throttle="deny"); the call was not made."""


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    lp = kwargs.get("litellm_params") or {}
    md = dict(lp.get("metadata") or {})
    md.update(kwargs.get("metadata") or {})
    return md


def _ids(md: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for scope, keys in SCOPES:
        col = "api_key_id" if scope == "api_key" else f"{scope}_id"
        out[col] = next((str(md[k]) for k in keys if md.get(k) not in (None, "")), None)
    return out


def _usage(resp: Any) -> dict[str, Any] | None:
    usage = getattr(resp, "usage", None)
    if usage is None and isinstance(resp, dict):
        usage = resp.get("usage")
    if usage is None:
        return None
    if hasattr(usage, "model_dump"):
        usage = usage.model_dump(exclude_none=True)
    return dict(usage)


class AicostCallback(CustomLogger):
    """A LiteLLM callback writing the pg_aicost ledger. One autocommit connection per thread (and
    one for the event loop's async calls)."""

    def __init__(self, dsn: str, on_throttle: str = "allow"):
        super().__init__()
        self.dsn = dsn
        self.on_throttle = on_throttle
        self._local = threading.local()
        self._aconn: psycopg.AsyncConnection | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    # --- connections ----------------------------------------------------------------------------
    def _conn(self) -> psycopg.Connection:
        c = getattr(self._local, "conn", None)
        if c is None or c.closed:
            c = psycopg.connect(self.dsn, autocommit=True)
            self._local.conn = c
        return c

    async def _aconn_get(self) -> psycopg.AsyncConnection:
        # An async connection belongs to the event loop that made it.
        loop = asyncio.get_running_loop()
        if self._aconn is None or self._aconn.closed or self._aloop is not loop:
            self._aconn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            self._aloop = loop
        return self._aconn

    # --- the ledger -----------------------------------------------------------------------------
    INSERT = """INSERT INTO aicost.usage (request_id, org_id, team_id, user_id, api_key_id, model, usage, status, metadata)
                VALUES (%(request_id)s, %(org_id)s, %(team_id)s, %(user_id)s, %(api_key_id)s, %(model)s,
                        %(usage)s, 'ok', %(metadata)s)
                ON CONFLICT DO NOTHING"""

    def _row(self, kwargs: dict[str, Any], response_obj: Any) -> dict[str, Any] | None:
        resp = kwargs.get("complete_streaming_response") or response_obj
        usage = _usage(resp)
        if usage is None:
            log.warning("pg_aicost: no usage object in the response of %s; not recorded", kwargs.get("model"))
            return None
        md = _metadata(kwargs)
        request_id = kwargs.get("litellm_call_id") or getattr(resp, "id", None)
        return {
            "request_id": request_id,
            **_ids(md),
            "model": kwargs.get("model") or getattr(resp, "model", None),
            "usage": Jsonb(usage),
            "metadata": Jsonb({"litellm_call_id": kwargs.get("litellm_call_id"),
                               "response_id": getattr(resp, "id", None),
                               "stream": bool(kwargs.get("stream"))}),
        }

    def record(self, kwargs: dict[str, Any], response_obj: Any) -> bool:
        """Inserts the ledger row of one completion; False if it was recorded already."""
        row = self._row(kwargs, response_obj)
        return row is not None and self._conn().execute(self.INSERT, row).rowcount == 1

    async def arecord(self, kwargs: dict[str, Any], response_obj: Any) -> bool:
        row = self._row(kwargs, response_obj)
        if row is None:
            return False
        c = await self._aconn_get()
        cur = await c.execute(self.INSERT, row)
        return cur.rowcount == 1

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.record(kwargs, response_obj)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        await self.arecord(kwargs, response_obj)

    # --- budgets --------------------------------------------------------------------------------
    CHECK = """SELECT b.scope, (ai_budget_check(b.scope, b.scope_id)).state
                 FROM (VALUES ('api_key', %(api_key_id)s, 1), ('user', %(user_id)s, 2),
                              ('team', %(team_id)s, 3), ('org', %(org_id)s, 4)) b(scope, scope_id, rank)
                WHERE b.scope_id IS NOT NULL
                  AND EXISTS (SELECT FROM aicost.budget_status s WHERE s.scope = b.scope AND s.scope_id = b.scope_id)
                ORDER BY b.rank"""

    def _decide(self, rows: list[tuple[str, str]], kwargs: dict[str, Any]) -> dict[str, Any]:
        for scope, state in rows:
            if state == "deny" or (state == "throttle" and self.on_throttle == "deny"):
                raise BudgetExceeded(f"pg_aicost: the {scope} budget says {state}; call to {kwargs.get('model')} refused")
            if state == "throttle":
                if self.on_throttle == "allow":
                    log.warning("pg_aicost: the %s budget is at throttle; calling %s anyway", scope, kwargs.get("model"))
                else:
                    log.warning("pg_aicost: the %s budget is at throttle; %s instead of %s", scope,
                                self.on_throttle, kwargs.get("model"))
                    kwargs = {**kwargs, "model": self.on_throttle}
                break
        return kwargs

    def check(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's kwargs after the budget check (maybe another model); raises BudgetExceeded."""
        rows = self._conn().execute(self.CHECK, _ids(_metadata(kwargs))).fetchall()
        return self._decide(rows, kwargs)

    async def acheck(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        c = await self._aconn_get()
        rows = await (await c.execute(self.CHECK, _ids(_metadata(kwargs)))).fetchall()
        return self._decide(rows, kwargs)

    # LiteLLM proxy: runs before every call; an exception refuses it.
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        md = dict(data.get("metadata") or {})
        for attr, key in (("org_id", "user_api_key_org_id"), ("team_id", "user_api_key_team_id"),
                          ("user_id", "user_api_key_user_id"), ("api_key", "user_api_key_hash")):
            v = getattr(user_api_key_dict, attr, None)
            if v and key not in md:
                md[key] = v
        return await self.acheck({**data, "metadata": md})


def completion(callback: AicostCallback, **kwargs: Any) -> Any:
    """litellm.completion after the budget check (raises BudgetExceeded before any call is made)."""
    import litellm

    return litellm.completion(**callback.check(kwargs))


async def acompletion(callback: AicostCallback, **kwargs: Any) -> Any:
    """litellm.acompletion after the budget check."""
    import litellm

    return await litellm.acompletion(**await callback.acheck(kwargs))


__all__ = ["AicostCallback", "BudgetExceeded", "completion", "acompletion"]
