#!/usr/bin/env python3
"""LiteLLM 1.106.10 text-token chat pricing rules, written out in plain Python.

Not LiteLLM: a standalone restatement of what litellm.cost_per_token does for
text-only chat usage. It is checked against gen_costs.py output:

    python reference_model.py PRICE_FILE COSTS_CSV

and must reproduce every row (it does, bit for bit, for the 1.106.10 file).
Token convention: prompt tokens P include cache reads R, 5-minute cache
writes W5 and 1-hour cache writes W1. C = completion tokens.
Source references are to litellm/litellm_core_utils/llm_cost_calc/utils.py
(utils) and litellm/cost_calculator.py (cc) in litellm 1.106.10.
"""

from __future__ import annotations

import csv
import json
import re
import sys

PREFIXES = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)
# utils _SERVICE_TIER_SUFFIXES: longest first
SERVICE_TIER_SUFFIXES = ("_ultrafast", "_balanced", "_priority", "_flex", "_fast", "_auto")
# Provider calculators in cc.cost_per_token that do not forward service_tier
TIER_BLIND_PROVIDERS = frozenset(
    {"deepseek", "fireworks_ai", "xai", "tencent", "lemonade", "dashscope", "qwencloud", "qwen_ai_platform"}
)


def threshold_value(s: str) -> float:
    """utils._parse_token_threshold: "200k" -> 200000.0, "128" -> 128.0"""
    return float(s.replace("k", "")) * (1000 if "k" in s else 1)


def rate(entry: dict, key: str, default: float | None = 0.0) -> float | None:
    """utils.get_cost_per_unit: the key, else (for a tier-suffixed key) the key without the suffix."""
    v = entry.get(key)
    if v is not None:
        return float(v)
    for suffix in SERVICE_TIER_SUFFIXES:
        if suffix in key:
            base = entry.get(key.replace(suffix, ""))
            if base is not None:
                return float(base)
            break
    return default


def tiered(key: str, tier: str | None) -> str:
    """utils.get_service_tier_cost_key ("fast" would map to "priority")."""
    return key if tier is None else f"{key}_{tier}"


def standard_cost(entry: dict, P: int, C: int, R: int, W5: int, W1: int, tier: str | None, inclusive: bool) -> float:
    """utils.generic_cost_per_token / _get_token_base_cost for text tokens."""
    inp = rate(entry, tiered("input_cost_per_token", tier))
    out = rate(entry, tiered("output_cost_per_token", tier))
    cc = rate(entry, tiered("cache_creation_input_token_cost", tier), None)
    cr = rate(entry, tiered("cache_read_input_token_cost", tier), None)
    c1h = rate(entry, "cache_creation_input_token_cost_above_1hr", None)  # never tier-suffixed here

    suffix = "" if tier is None else "_" + tier
    keys = [
        k
        for k in entry
        if k.startswith(tuple(p + "_above_" for p in PREFIXES))
        and "_tokens" in k
        and (not k.endswith(SERVICE_TIER_SUFFIXES + ("_batches",)) or (suffix and k.endswith(suffix)))
    ]
    # ascending thresholds; every crossed one overrides, so the highest crossed wins per rate
    for k in sorted(keys, key=lambda k: threshold_value(k.rsplit("_above_", 1)[1].split("_tokens")[0])):
        if entry.get(k) is None:
            continue
        t = k.rsplit("_above_", 1)[1].split("_tokens")[0]
        if P > threshold_value(t) or (inclusive and P == threshold_value(t)):
            inp = rate(entry, tiered(f"input_cost_per_token_above_{t}_tokens", tier), inp)
            out = rate(entry, tiered(f"output_cost_per_token_above_{t}_tokens", tier), out)
            cc = rate(entry, tiered(f"cache_creation_input_token_cost_above_{t}_tokens", tier), cc)
            c1h = rate(entry, tiered(f"cache_creation_input_token_cost_above_1hr_above_{t}_tokens", tier), c1h)
            cr = rate(entry, tiered(f"cache_read_input_token_cost_above_{t}_tokens", tier), cr)
    if cr is None:
        cr = inp  # no cache-read price: cached tokens cost the (resolved) input price
    if cc is None:
        cc = inp  # no cache-write price: written tokens cost the (resolved) input price
    if c1h is None:
        c1h = cc  # no 1h price: 1h writes cost the 5m write price
    W = W5 + W1
    prompt = (P - R - W) * inp + R * cr + ((W5 * cc + W1 * c1h) if W1 else W * cc)
    return prompt + C * out


def batch_cost(entry: dict, P: int, C: int, R: int, W5: int, W1: int) -> float:
    """cc.batch_cost_calculator (what LiteLLM uses for batch output lines)."""
    W = W5 + W1

    def batch_rate(prefix: str) -> float | None:
        flat = entry.get(prefix + "_batches")
        crossed = [
            m.group(1)
            for k, v in entry.items()
            if v is not None and (m := re.match(rf"^{prefix}_above_(\d+k?)_tokens_batches$", k))
        ]
        for t in sorted(crossed, key=threshold_value, reverse=True):
            if P > threshold_value(t):
                v = entry.get(f"{prefix}_above_{t}_tokens_batches")
                return v if v is not None else flat
        return flat  # NB: no fallback to the standard long-context price

    ib, ob, crb, ccb = (batch_rate(p) for p in PREFIXES)
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if ib is not None:
        # cache tokens without a *_batches cache price are billed as plain batch input
        cached = R if crb is not None else 0
        written = W if ccb is not None else 0
        prompt = (P - cached - written) * ib + cached * (crb or 0) + written * (ccb or 0)
    elif inp:
        # no batch price: half of standard; missing cache-read price makes cached tokens free
        prompt = (
            (P - R - W) * inp / 2
            + R * (entry.get("cache_read_input_token_cost") or 0) / 2
            + W * (entry.get("cache_creation_input_token_cost") or inp) / 2
        )
    else:
        prompt = 0.0
    return prompt + C * (ob if ob is not None else out / 2)


def cost(entry: dict, P: int, C: int, R: int, W5: int, W1: int, service_tier: str) -> float:
    provider = entry.get("litellm_provider")
    if service_tier == "batch":
        return batch_cost(entry, P, C, R, W5, W1)
    tier = None if service_tier == "standard" else service_tier
    if provider == "perplexity":  # llms/perplexity/cost_calculator.py: no cache pricing at all
        return P * entry["input_cost_per_token"] + C * entry["output_cost_per_token"]
    if provider in TIER_BLIND_PROVIDERS:
        tier = None
    if provider == "fireworks_ai" and entry.get("cache_read_input_token_cost") is None:
        # llms/fireworks_ai/cache_pricing.py: default cache read = 0.5 x input
        entry = dict(entry, cache_read_input_token_cost=entry["input_cost_per_token"] * 0.5)
    return standard_cost(entry, P, C, R, W5, W1, tier, inclusive=(provider == "xai"))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        prices = json.load(f)
    rows = exact = close = 0
    with open(argv[2], newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rows += 1
            toks = [
                int(r[k])
                for k in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "cache_write_1h_tokens")
            ]
            want = float(r["litellm_cost"])
            got = cost(prices[r["model"]], *toks, r["service_tier"])
            if got == want:
                exact += 1
            elif abs(got - want) <= 1e-9 * max(abs(want), 1e-12):
                close += 1
            else:
                print(f"MISMATCH {r['model']} {r['scenario']} {r['service_tier']}: litellm={want!r} model={got!r}")
    bad = rows - exact - close
    print(f"{rows} rows: {exact} bit-exact, {close} within 1e-9 relative, {bad} mismatched")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
