#!/usr/bin/env python3
"""Generate reference chat costs with LiteLLM's own cost calculator.

Usage:
    python gen_costs.py PRICE_FILE OUT_CSV

PRICE_FILE is LiteLLM's model_prices_and_context_window_backup.json (for us
shared/data/litellm_model_prices.json).  The script loads LiteLLM with its
bundled (local) cost map and refuses to run unless that map is identical to
PRICE_FILE, so every cost in OUT_CSV is provably computed from the same prices
pg_aicost imports.

For every entry with mode == "chat" and both input_cost_per_token and
output_cost_per_token it prices a fixed set of scenarios with
litellm.cost_per_token (the function completion_cost() calls for a chat
response) and writes

    model,scenario,prompt_tokens,completion_tokens,cached_tokens,
    cache_write_tokens,cache_write_1h_tokens,service_tier,litellm_cost

Token convention of the CSV (OpenAI style): prompt_tokens counts ALL prompt
tokens, including cached_tokens (cache reads), cache_write_tokens (5-minute
cache writes) and cache_write_1h_tokens (1-hour cache writes).  That is also
the convention of LiteLLM's internal Usage object after its provider
transformations (Anthropic's input_tokens are re-based onto it), so the Usage
built here is what LiteLLM itself would build from a provider response.

service_tier: "standard", "flex", "priority" (passed to LiteLLM as
service_tier) or "batch" (priced the way LiteLLM prices batch output lines:
cost_per_token(call_type="retrieve_batch") -> batch_cost_calculator).

litellm_cost is repr() of prompt_cost + completion_cost, the same float sum
completion_cost() returns when no built-in tools, discounts or margins apply.

Off-peak pricing (off_peak_pricing blocks, a few DeepSeek/Tencent models) is
time dependent in LiteLLM; every cost here is priced at the fixed peak moment
BILLING_TIME so the CSV is reproducible and uses the standard rates.

Models whose name LiteLLM resolves to a *different* cost-map entry with
different prices ("shadowed", e.g. gemini-exp-1206 -> gemini/gemini-exp-1206)
are skipped, because their CSV rows would not describe the named entry.

Exit status: 0 on success (skips are reported on stderr), 2 on setup failure.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import NoReturn

# Must be set before litellm is imported: use the cost map bundled in the
# wheel instead of fetching the live one from GitHub.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

EXPECTED_LITELLM_VERSION = "1.106.10"
# A Wednesday 08:00 UTC (16:00 in Asia/Shanghai): outside every off-peak
# window in the 1.106.10 price file, so standard (peak) rates apply.
BILLING_TIME = datetime(2025, 1, 8, 8, 0, tzinfo=timezone.utc)
# Top-level key of the price file that is not a model entry; LiteLLM pops it
# when it loads the map (sample_spec stays, but its mode is not "chat").
NON_MODEL_KEYS = frozenset({"fallback_generalizations"})

HEADER = [
    "model",
    "scenario",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "service_tier",
    "litellm_cost",
]

# name: (prompt_tokens incl. cache, completion, cache_read, cache_write_5m, cache_write_1h)
BASE_SCENARIOS = {
    "s1": (1000, 500, 0, 0, 0),
    "s2": (1234567, 0, 0, 0, 0),
    "s3": (10000, 2000, 4000, 3000, 0),
    "s4": (300000, 1000, 100000, 0, 0),
    "s5": (150000, 1000, 0, 0, 0),
}
TIER_SCENARIOS = ("s1", "s4")
ONE_HOUR_SCENARIO = ("s6", (5000, 100, 0, 0, 2000))
# CSV tier name -> key suffix marking a model as having that tier
TIER_KEY_SUFFIX = {"batch": "_batches", "flex": "_flex", "priority": "_priority"}


def die(msg: str) -> NoReturn:
    print(f"gen_costs: setup failure: {msg}", file=sys.stderr)
    sys.exit(2)


def pricing_view(entry: dict) -> dict:
    """The parts of an entry that can influence a price."""
    return {
        k: v
        for k, v in entry.items()
        if "cost" in k or k in ("off_peak_pricing", "tiered_pricing", "provider_specific_entry")
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        die("expected 2 arguments: PRICE_FILE OUT_CSV")
    price_path, out_path = argv[1], argv[2]

    try:
        with open(price_path, encoding="utf-8") as f:
            price_file = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read price file {price_path}: {e}")

    t0 = time.monotonic()
    try:
        import logging
        from importlib.metadata import version

        import litellm
        from litellm._internal_context import pinned_billing_time
        from litellm.types.utils import (
            CacheCreationTokenDetails,
            PromptTokensDetailsWrapper,
            Usage,
        )
    except Exception as e:  # noqa: BLE001
        die(f"cannot import litellm ({e!r}); pip install -r requirements.txt")
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    litellm.suppress_debug_info = True

    ll_version = version("litellm")
    if ll_version != EXPECTED_LITELLM_VERSION:
        print(
            f"gen_costs: warning: litellm {ll_version} installed, expected {EXPECTED_LITELLM_VERSION}",
            file=sys.stderr,
        )

    # --- prove LiteLLM prices from exactly this file -----------------------
    model_cost = litellm.model_cost
    file_models = {k: v for k, v in price_file.items() if k not in NON_MODEL_KEYS}
    if model_cost != file_models:
        only_file = sorted(set(file_models) - set(model_cost))[:5]
        only_ll = sorted(set(model_cost) - set(file_models))[:5]
        differing = sorted(k for k in set(file_models) & set(model_cost) if file_models[k] != model_cost[k])[:5]
        die(
            "litellm.model_cost (bundled map of litellm "
            f"{ll_version}) differs from {price_path}: only in file {only_file}, "
            f"only in litellm {only_ll}, differing {differing}. Install the litellm "
            "version this price file came from."
        )
    print(
        f"gen_costs: litellm {ll_version}; bundled cost map == {price_path} ({len(model_cost)} entries)",
        file=sys.stderr,
    )

    def make_usage(prompt: int, completion: int, read: int, write5m: int, write1h: int) -> Usage:
        if not (read or write5m or write1h):
            return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        write_total = write5m + write1h
        details = PromptTokensDetailsWrapper(
            cached_tokens=read,
            cache_creation_tokens=write_total,
            text_tokens=prompt - read - write_total,
            cache_creation_token_details=(
                CacheCreationTokenDetails(ephemeral_5m_input_tokens=write5m, ephemeral_1h_input_tokens=write1h)
                if write1h
                else None
            ),
        )
        # Same shape as AnthropicConfig.calculate_usage() output.
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=details,
            cache_read_input_tokens=read,
            cache_creation_input_tokens=write_total,
        )

    def price(model: str, provider: str, tokens: tuple, tier: str) -> float:
        usage = make_usage(*tokens)
        if tier == "batch":
            p, c = litellm.cost_per_token(
                model=model,
                custom_llm_provider=provider,
                usage_object=usage,
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                call_type="retrieve_batch",
            )
        else:
            p, c = litellm.cost_per_token(
                model=model,
                custom_llm_provider=provider,
                usage_object=usage,
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                service_tier=None if tier == "standard" else tier,
            )
        return p + c

    chat_models = [
        k
        for k, v in file_models.items()
        if isinstance(v, dict)
        and v.get("mode") == "chat"
        and v.get("input_cost_per_token") is not None
        and v.get("output_cost_per_token") is not None
    ]

    rows = 0
    skipped_rows = 0
    skipped_models: set[str] = set()
    shadowed: list[str] = []
    s1_naive_mismatch: list[str] = []
    tier_counts = {t: 0 for t in TIER_KEY_SUFFIX}
    one_hour_models = 0

    with open(out_path, "w", newline="", encoding="utf-8") as out, pinned_billing_time(BILLING_TIME):
        w = csv.writer(out, lineterminator="\n")
        w.writerow(HEADER)
        for model in chat_models:
            entry = file_models[model]
            provider = entry.get("litellm_provider")

            # Which entry will LiteLLM really price for this name?
            try:
                resolved = litellm.get_model_info(model=model, custom_llm_provider=provider).get("key")
            except Exception as e:  # noqa: BLE001
                print(f"gen_costs: skip {model}: get_model_info raised {e!r}"[:300], file=sys.stderr)
                skipped_models.add(model)
                continue
            if resolved != model and pricing_view(model_cost.get(resolved, {})) != pricing_view(entry):
                print(f"gen_costs: skip {model}: LiteLLM prices it from entry {resolved!r}", file=sys.stderr)
                shadowed.append(model)
                skipped_models.add(model)
                continue

            jobs = [(name, toks, "standard") for name, toks in BASE_SCENARIOS.items()]
            for tier, suffix in TIER_KEY_SUFFIX.items():
                if any(k.endswith(suffix) and v is not None for k, v in entry.items()):
                    tier_counts[tier] += 1
                    jobs += [(name, BASE_SCENARIOS[name], tier) for name in TIER_SCENARIOS]
            if entry.get("cache_creation_input_token_cost_above_1hr") is not None:
                one_hour_models += 1
                jobs.append((ONE_HOUR_SCENARIO[0], ONE_HOUR_SCENARIO[1], "standard"))

            for name, toks, tier in jobs:
                try:
                    cost = price(model, provider, toks, tier)
                except Exception as e:  # noqa: BLE001
                    print(f"gen_costs: skip {model} {name} {tier}: {e!r}"[:300], file=sys.stderr)
                    skipped_rows += 1
                    skipped_models.add(model)
                    continue
                prompt, completion, read, write5m, write1h = toks
                w.writerow([model, name, prompt, completion, read, write5m, write1h, tier, repr(float(cost))])
                rows += 1
                if name == "s1" and tier == "standard":
                    naive = 1000 * float(entry["input_cost_per_token"]) + 500 * float(entry["output_cost_per_token"])
                    if abs(cost - naive) > 1e-9 * max(abs(naive), 1e-9):
                        s1_naive_mismatch.append(model)

    elapsed = time.monotonic() - t0
    if s1_naive_mismatch:
        print(
            f"gen_costs: note: {len(s1_naive_mismatch)} models where s1 != 1000*input+500*output: "
            + ", ".join(s1_naive_mismatch[:20]),
            file=sys.stderr,
        )
    print(
        f"gen_costs: summary: chat_models={len(chat_models)} rows={rows} "
        f"skipped_rows={skipped_rows} skipped_models={len(skipped_models)} "
        f"(shadowed={len(shadowed)}) tier_models={tier_counts} one_hour_models={one_hour_models} "
        f"elapsed={elapsed:.1f}s out={out_path}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
