"""pg_aicost for LiteLLM: every completion (sync, async, streaming) becomes a row of the pg_aicost
ledger, priced and charged by the database from the provider's usage object; and a call whose
budget says `deny` is refused before it is made.

    import litellm
    from pg_aicost_litellm import AicostCallback, BudgetExceeded, completion

    aicost = AicostCallback("host=db dbname=app user=myapp")   # a role granted aicost_app
    litellm.callbacks = [aicost]
    resp = completion(aicost, model="gpt-4o", messages=[...],
                      metadata={"org_id": "acme", "user_id": "u42"})

Who is charged: on the LiteLLM proxy, the authenticated key's org, team, user and key hash
(`user_api_key_org_id`, `user_api_key_team_id`, `user_api_key_user_id`, `user_api_key_hash`);
they win over anything a client puts in its request's metadata. With the SDK, `org_id`, `team_id`,
`user_id` and `api_key_id` from the call's metadata. The ledger's request id is LiteLLM's call id,
so a duplicate delivery of the same response is charged once.

Before a call (`completion` / `acompletion` here, or `async_pre_call_hook` on the LiteLLM proxy):
- every scope with a budget among api_key, user, team and org is checked with `ai_budget_check`
  and an estimate of the call's cost: its prompt tokens (litellm.token_counter) and `max_tokens`
  (default `default_max_tokens`) at the model's prices, an upper bound when the reply stays within
  `max_tokens`. If any says `deny`, BudgetExceeded is raised and the call is not made;
- then `throttle` (the most specific scope's) does what `on_throttle` says: "allow" (default: the
  call goes on, and a warning is logged), "deny" (refused like a deny), or a model name to use
  instead (e.g. a cheaper model);
- rate limits are checked with `ai_rate_limit_check`: RateLimited if one is used up.
A call whose real cost passes the hard limit anyway (a reply longer than the estimate) is refused
by the ledger (AC001) when recorded: it is logged as an ERROR with its usage, since LiteLLM does
not let callbacks fail a call that was already made.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError:  # pragma: no cover - litellm is a dependency
    CustomLogger = object  # type: ignore[misc,assignment]

log = logging.getLogger("pg_aicost_litellm")

SCOPES = (  # most specific first: (scope, metadata keys, the proxy's authenticated one first)
    ("api_key", ("user_api_key_hash", "api_key_id")),
    ("user", ("user_api_key_user_id", "user_id")),
    ("team", ("user_api_key_team_id", "team_id")),
    ("org", ("user_api_key_org_id", "org_id")),
)


class BudgetExceeded(Exception):
    """The budget check said deny (or throttle, with on_throttle="deny"); the call was not made."""


class RateLimited(Exception):
    """A rate limit of the caller is used up; the call was not made."""


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    # What LiteLLM (the proxy: from the authenticated key) put in litellm_params wins over the
    # request's own metadata.
    md = dict(kwargs.get("metadata") or {})
    md.update((kwargs.get("litellm_params") or {}).get("metadata") or {})
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

    def __init__(self, dsn: str, on_throttle: str = "allow", default_max_tokens: int = 1024):
        super().__init__()
        self.dsn = dsn
        self.on_throttle = on_throttle
        self.default_max_tokens = default_max_tokens
        self._local = threading.local()
        # One async connection per event loop (a connection belongs to the loop that made it).
        self._aconns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._alocks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._alocks_guard = threading.Lock()

    # --- connections ----------------------------------------------------------------------------
    def _conn(self) -> psycopg.Connection:
        c = getattr(self._local, "conn", None)
        if c is None or c.closed:
            c = psycopg.connect(self.dsn, autocommit=True)
            self._local.conn = c
        return c

    async def _aconn_get(self) -> psycopg.AsyncConnection:
        loop = asyncio.get_running_loop()
        with self._alocks_guard:
            lock = self._alocks.setdefault(loop, asyncio.Lock())
        async with lock:  # tasks of one loop connecting at once make one connection
            c = self._aconns.get(loop)
            if c is None or c.closed:
                c = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                self._aconns[loop] = c
            return c

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

    @staticmethod
    def _refused(e: psycopg.Error, row: dict[str, Any]) -> None:
        if e.sqlstate in ("AC001", "AC002"):
            # The call was made: its spend is real but the ledger refused it. Say so loudly.
            log.error("pg_aicost: the ledger refused a completion that was already made (%s): %s; "
                      "model %s, request %s, usage %s", e.sqlstate, e, row["model"], row["request_id"],
                      row["usage"].obj)

    def record(self, kwargs: dict[str, Any], response_obj: Any) -> bool:
        """Inserts the ledger row of one completion; False if it was recorded already."""
        row = self._row(kwargs, response_obj)
        if row is None:
            return False
        try:
            return self._conn().execute(self.INSERT, row).rowcount == 1
        except psycopg.Error as e:
            self._refused(e, row)
            raise

    async def arecord(self, kwargs: dict[str, Any], response_obj: Any) -> bool:
        row = self._row(kwargs, response_obj)
        if row is None:
            return False
        c = await self._aconn_get()
        try:
            cur = await c.execute(self.INSERT, row)
        except psycopg.Error as e:
            self._refused(e, row)
            raise
        return cur.rowcount == 1

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.record(kwargs, response_obj)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        await self.arecord(kwargs, response_obj)

    # --- budgets and rate limits ----------------------------------------------------------------
    # Each scope the call is charged to: its budget state for the estimate (NULL without a budget)
    # and whether its rate limits allow the call (NULL without limits).
    CHECK = """SELECT b.scope,
                      CASE WHEN EXISTS (SELECT FROM aicost.budget_status s WHERE s.scope = b.scope AND s.scope_id = b.scope_id)
                           THEN (ai_budget_check(b.scope, b.scope_id, %(estimate)s)).state END,
                      (ai_rate_limit_check(b.scope, b.scope_id, %(tokens)s)).allowed
                 FROM (VALUES ('api_key', %(api_key_id)s, 1), ('user', %(user_id)s, 2),
                              ('team', %(team_id)s, 3), ('org', %(org_id)s, 4)) b(scope, scope_id, rank)
                WHERE b.scope_id IS NOT NULL
                ORDER BY b.rank"""
    ESTIMATE = "SELECT ai_cost(%s::text, %s::bigint, %s::bigint)"

    def _tokens(self, kwargs: dict[str, Any]) -> tuple[int, int]:
        try:
            import litellm

            prompt = int(litellm.token_counter(model=kwargs.get("model"), messages=kwargs.get("messages") or []))
        except Exception:  # noqa: BLE001 - an unknown tokenizer: no prompt estimate
            prompt = 0
        out = kwargs.get("max_tokens") or kwargs.get("max_completion_tokens") or self.default_max_tokens
        return prompt, int(out)

    def _params(self, kwargs: dict[str, Any], estimate: Any) -> dict[str, Any]:
        prompt, out = self._tokens(kwargs)
        return {**_ids(_metadata(kwargs)), "estimate": estimate or 0, "tokens": prompt + out}

    def _decide(self, rows: list[tuple[str, str | None, bool | None]], kwargs: dict[str, Any]) -> dict[str, Any]:
        model = kwargs.get("model")
        for scope, state, _ in rows:
            if state == "deny" or (state == "throttle" and self.on_throttle == "deny"):
                raise BudgetExceeded(f"pg_aicost: the {scope} budget says {state}; call to {model} refused")
        for scope, _, allowed in rows:
            if allowed is False:
                raise RateLimited(f"pg_aicost: the {scope} rate limit is used up; call to {model} refused")
        throttled = next((scope for scope, state, _ in rows if state == "throttle"), None)
        if throttled is None or self.on_throttle == "allow":
            if throttled:
                log.warning("pg_aicost: the %s budget is at throttle; calling %s anyway", throttled, model)
            return kwargs
        log.warning("pg_aicost: the %s budget is at throttle; %s instead of %s", throttled, self.on_throttle, model)
        return {**kwargs, "model": self.on_throttle}

    def check(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's kwargs after the budget and rate-limit checks (maybe another model); raises
        BudgetExceeded or RateLimited."""
        c = self._conn()
        prompt, out = self._tokens(kwargs)
        try:
            estimate = c.execute(self.ESTIMATE, (kwargs.get("model"), prompt, out)).fetchone()[0]
        except psycopg.Error as e:  # e.g. a model pg_aicost does not price: check with 0
            log.warning("pg_aicost: no estimate for %s: %s", kwargs.get("model"), e)
            estimate = 0
        rows = c.execute(self.CHECK, self._params(kwargs, estimate)).fetchall()
        return self._decide(rows, kwargs)

    async def acheck(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        c = await self._aconn_get()
        prompt, out = self._tokens(kwargs)
        try:
            estimate = (await (await c.execute(self.ESTIMATE, (kwargs.get("model"), prompt, out))).fetchone())[0]
        except psycopg.Error as e:
            log.warning("pg_aicost: no estimate for %s: %s", kwargs.get("model"), e)
            estimate = 0
        rows = await (await c.execute(self.CHECK, self._params(kwargs, estimate))).fetchall()
        return self._decide(rows, kwargs)

    # LiteLLM proxy: runs before every call; an exception refuses it.
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        # Only the authenticated key decides who is charged: nothing of the request's own metadata.
        md = {}
        for attr, key in (("org_id", "user_api_key_org_id"), ("team_id", "user_api_key_team_id"),
                          ("user_id", "user_api_key_user_id"), ("api_key", "user_api_key_hash")):
            md[key] = getattr(user_api_key_dict, attr, None)
        checked = await self.acheck({**data, "metadata": md, "litellm_params": {"metadata": md}})
        return {**data, "model": checked.get("model", data.get("model"))}


def _with_stream_usage(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A stream carries the provider's usage only when asked for (else LiteLLM estimates it).
    if kwargs.get("stream"):
        opts = dict(kwargs.get("stream_options") or {})
        opts.setdefault("include_usage", True)
        kwargs = {**kwargs, "stream_options": opts}
    return kwargs


def completion(callback: AicostCallback, **kwargs: Any) -> Any:
    """litellm.completion after the budget and rate-limit checks (BudgetExceeded / RateLimited are
    raised before any call is made)."""
    import litellm

    return litellm.completion(**_with_stream_usage(callback.check(kwargs)))


async def acompletion(callback: AicostCallback, **kwargs: Any) -> Any:
    """litellm.acompletion after the budget and rate-limit checks."""
    import litellm

    return await litellm.acompletion(**_with_stream_usage(await callback.acheck(kwargs)))


__all__ = ["AicostCallback", "BudgetExceeded", "RateLimited", "completion", "acompletion"]
