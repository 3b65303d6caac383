"""The LiteLLM callback (clients/litellm) with LiteLLM's mock_response: no network, real ledger."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from decimal import Decimal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
import pytest  # noqa: E402

from pg_aicost_litellm import AicostCallback, BudgetExceeded, RateLimited, acompletion, completion  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def callback(app_dsn):
    cb = AicostCallback(app_dsn)
    litellm.callbacks = [cb]
    yield cb
    litellm.callbacks = []


def ledger(admin, org):
    # The trigger prices each row from its usage object; ai_cost of the token counts it parsed is
    # the independent check.
    return admin.execute(
        """SELECT request_id, model, in_tokens, out_tokens, cost, ai_cost(model, in_tokens, out_tokens)
             FROM aicost.usage WHERE org_id = %s""",
        (org,),
    ).fetchall()


def wait_rows(admin, org, n, timeout=15.0):
    """LiteLLM delivers success callbacks from a worker thread: wait (bounded) for them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger(admin, org)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_sync_async_and_streaming_completions_are_recorded_at_ai_cost(callback, admin):
    org = f"ll-{uuid.uuid4().hex[:8]}"
    md = {"org_id": org, "user_id": "u1", "team_id": "t1"}
    completion(callback, model="gpt-4o", messages=MESSAGES, mock_response="hello there", metadata=md)
    async def async_call():
        await acompletion(callback, model="gpt-4o-mini", messages=MESSAGES, mock_response="hi", metadata=md)
        # LiteLLM logs async successes in a task of this loop: let it run before the loop ends.
        for _ in range(300):
            if len(ledger(admin, org)) == 2:
                break
            await asyncio.sleep(0.05)

    asyncio.run(async_call())
    stream = completion(callback, model="gpt-4o", messages=MESSAGES, mock_response="a streamed answer",
                        stream=True, stream_options={"include_usage": True}, metadata=md)
    chunks = [c for c in stream]
    assert chunks
    rows = wait_rows(admin, org, 3)
    assert len(rows) == 3, rows
    for request_id, model, in_tokens, out_tokens, cost, expected in rows:
        assert request_id, "LiteLLM's call id"
        assert in_tokens > 0 and out_tokens > 0
        assert isinstance(cost, Decimal) and cost == expected, (model, cost, expected)
    assert sorted(r[1] for r in rows) == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    # LiteLLM's mock usage: 10 prompt and 20 completion tokens, at gpt-4o's 2.50 / 10.00 USD per
    # million tokens.
    assert any(r[1] == "gpt-4o" and (r[2], r[3], r[4]) == (10, 20, Decimal("0.000225")) for r in rows), rows
    who = admin.execute("SELECT DISTINCT user_id, team_id FROM aicost.usage WHERE org_id = %s", (org,)).fetchall()
    assert who == [("u1", "t1")]


def test_a_duplicate_delivery_is_charged_once(callback, admin):
    org = f"ll-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_budget_set('org', %s, 100)", (org,))
    resp = litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response="x", metadata={"org_id": org})
    rows = wait_rows(admin, org, 1)
    assert len(rows) == 1
    kwargs = {"model": "gpt-4o", "litellm_call_id": rows[0][0], "litellm_params": {"metadata": {"org_id": org}}}
    assert callback.record(kwargs, resp) is False, "the same call delivered again"
    assert len(ledger(admin, org)) == 1
    spent = admin.execute("SELECT spent FROM aicost.budget_status WHERE scope_id = %s", (org,)).fetchone()[0]
    assert spent == rows[0][4]


def test_a_denied_budget_stops_the_call_before_it_is_made(callback, admin, monkeypatch):
    org = f"ll-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_budget_set('org', %s, 1)", (org,))
    # 0.999 spent: the budget is not at its limit, but this call's estimate (its prompt and
    # max_tokens = 1000 at gpt-4o's prices, 0.01 USD) would pass it.
    admin.execute(
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens, cost) VALUES (%s, 'gpt-4o', 0, 0, 0.999)",
        (org,),
    )
    made = []
    real = litellm.completion
    monkeypatch.setattr(litellm, "completion", lambda **kw: made.append(kw) or real(**kw))
    with pytest.raises(BudgetExceeded):
        completion(callback, model="gpt-4o", messages=MESSAGES, mock_response="x", max_tokens=1000,
                   metadata={"org_id": org})
    with pytest.raises(BudgetExceeded):
        asyncio.run(acompletion(callback, model="gpt-4o", messages=MESSAGES, mock_response="x",
                                max_tokens=1000, metadata={"org_id": org}))
    assert made == [], "the provider was never called"
    # A small enough call still fits.
    completion(callback, model="gpt-4o-mini", messages=MESSAGES, mock_response="x", max_tokens=10,
               metadata={"org_id": org})
    assert len(made) == 1
    assert len(wait_rows(admin, org, 2)) == 2


def test_a_throttled_scope_does_not_hide_a_denied_one(callback, admin):
    org, user = f"ll-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_budget_set('org', %s, 1), ai_budget_set('user', %s, 100)", (org, user))
    admin.execute(
        "INSERT INTO aicost.usage (org_id, user_id, model, in_tokens, out_tokens, cost) VALUES (%s, %s, 'gpt-4o', 0, 0, 96)",
        (None, user),
    )
    admin.execute(
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens, cost) VALUES (%s, 'gpt-4o', 0, 0, 1)",
        (org,),
    )
    with pytest.raises(BudgetExceeded, match="org budget"):
        callback.check({"model": "gpt-4o", "messages": MESSAGES, "metadata": {"org_id": org, "user_id": user}})


def test_a_used_up_rate_limit_stops_the_call(callback, admin):
    org = f"ll-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_rate_limit_set('org', %s, '1 day', 1)", (org,))
    completion(callback, model="gpt-4o", messages=MESSAGES, mock_response="x", metadata={"org_id": org})
    assert len(wait_rows(admin, org, 1)) == 1
    with pytest.raises(RateLimited):
        completion(callback, model="gpt-4o", messages=MESSAGES, mock_response="x", metadata={"org_id": org})


def test_throttle_switches_to_the_configured_model(app_dsn, admin):
    org = f"ll-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_budget_set('org', %s, 1)", (org,))
    admin.execute(
        "INSERT INTO aicost.usage (org_id, model, in_tokens, out_tokens, cost) VALUES (%s, 'gpt-4o', 0, 0, 0.96)",
        (org,),
    )
    cb = AicostCallback(app_dsn, on_throttle="gpt-4o-mini")
    litellm.callbacks = [cb]
    try:
        resp = completion(cb, model="gpt-4o", messages=MESSAGES, mock_response="x", metadata={"org_id": org})
        assert "gpt-4o-mini" in resp.model
        rows = wait_rows(admin, org, 2)
        assert sorted(r[1] for r in rows) == ["gpt-4o", "gpt-4o-mini"]
        deny = AicostCallback(app_dsn, on_throttle="deny")
        with pytest.raises(BudgetExceeded):
            deny.check({"model": "gpt-4o", "metadata": {"org_id": org}})
    finally:
        litellm.callbacks = []


def test_proxy_pre_call_hook_charges_only_the_authenticated_key(callback, admin):
    key = f"key-{uuid.uuid4().hex[:8]}"
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    admin.execute("SELECT ai_budget_set('api_key', %s, 0.000001), ai_budget_set('org', %s, 0.000001)", (key, victim))
    admin.execute(
        "INSERT INTO aicost.usage (api_key_id, model, in_tokens, out_tokens, cost) VALUES (%s, 'gpt-4o', 0, 0, 0.000001)",
        (key,),
    )

    class KeyAuth:  # the fields of LiteLLM's UserAPIKeyAuth the hook reads
        api_key = key
        user_id = org_id = team_id = None

    # The spent key is refused, whatever the request's metadata claims.
    data = {"model": "gpt-4o", "messages": MESSAGES, "metadata": {"api_key_id": "other", "user_api_key_hash": "other"}}
    with pytest.raises(BudgetExceeded, match="api_key budget"):
        asyncio.run(callback.async_pre_call_hook(KeyAuth(), None, data, "completion"))
    # Another key passes, and a request cannot name another org to be charged or checked.
    KeyAuth.api_key = "key-without-budget"
    data = {"model": "gpt-4o", "messages": MESSAGES, "metadata": {"org_id": victim, "user_api_key_org_id": victim}}
    out = asyncio.run(callback.async_pre_call_hook(KeyAuth(), None, data, "completion"))
    assert out["model"] == "gpt-4o"
