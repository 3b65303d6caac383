#!/usr/bin/env python3
"""Generate data/default_catalog.json, pg_aicost's default price catalog.

Usage: python3 data/gen_default_catalog.py /path/to/litellm_model_prices.json [OUT]

The input is LiteLLM 1.106.10's price file (model_prices_and_context_window_backup.json,
prices in USD per token).  OUT defaults to default_catalog.json beside this script.

Only the models in SELECTION are taken, and of each only the fields listed in
COPY_FIELDS / matching PRICE_FIELD_RE.  Every number is copied with its original JSON
text (no float round trip), and the output is checked against the input afterwards.
Standard library only.
"""
import decimal
import json
import os
import re
import sys

LITELLM_VERSION = "1.106.10"
# Upload time of litellm 1.106.10 on PyPI (every wheel and the sdist): 2026-11-14T00:29Z.
AS_OF = "2026-11-14"

# The models, as LiteLLM keys of mode "chat", grouped by provider.  Output order = this order.
SELECTION = [
    # OpenAI
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-5.1",
    "gpt-5.2",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.4-nano",
    "gpt-5.5",
    "gpt-5.6",
    "gpt-6-astra",
    "gpt-6-sol",
    "gpt-6-luna",
    "gpt-6.1-sol",
    # Anthropic
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-5-20251101",
    "claude-sonnet-4-6",
    "claude-opus-4-6-20260205",
    "claude-opus-4-7-20260416",
    "claude-opus-4-8",
    "claude-sonnet-5",
    "claude-opus-5",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    # Google Gemini API
    "gemini/gemini-2.5-pro",
    "gemini/gemini-2.5-flash",
    "gemini/gemini-2.5-flash-lite",
    "gemini/gemini-3-flash-preview",
    "gemini/gemini-3.1-pro-preview",
    "gemini/gemini-3.1-flash-lite",
    "gemini/gemini-3.5-flash",
    "gemini/gemini-3.5-flash-lite",
    "gemini/gemini-3.8-flash",
    "gemini/gemini-4-argon",
    # Mistral
    "mistral/mistral-large-latest",
    "mistral/mistral-large-4",
    "mistral/mistral-medium-latest",
    "mistral/mistral-small-latest",
    "mistral/magistral-medium-latest",
    "mistral/magistral-small-latest",
    "mistral/codestral-latest",
    "mistral/devstral-latest",
    "mistral/devstral-small-latest",
    "mistral/ministral-8b-latest",
    # DeepSeek
    "deepseek-chat",
    "deepseek-reasoner",
    "deepseek-v4-flash",
    "deepseek-v4-pro",
    # xAI
    "xai/grok-4.7",
    "xai/grok-4.6",
    "xai/grok-4.5",
    "xai/grok-4.3",
    "xai/grok-4.20",
    "xai/grok-code-fast-1",
]

# Further names (besides the automatic provider-prefixed / bare / undated forms) that must
# resolve to a selected model: the dated snapshot or pinned-version ids the providers' APIs
# report.  Each is kept only if it is not a separate source key with different prices.
EXTRA_ALIASES = {
    "gpt-4o": ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20"],
    "gpt-4o-mini": ["gpt-4o-mini-2024-07-18"],
    "gpt-4.1": ["gpt-4.1-2025-04-14"],
    "gpt-4.1-mini": ["gpt-4.1-mini-2025-04-14"],
    "gpt-4.1-nano": ["gpt-4.1-nano-2025-04-14"],
    "o3": ["o3-2025-04-16"],
    "o4-mini": ["o4-mini-2025-04-16"],
    "gpt-5": ["gpt-5-2025-08-07"],
    "gpt-5-mini": ["gpt-5-mini-2025-08-07"],
    "gpt-5-nano": ["gpt-5-nano-2025-08-07"],
    "gpt-5.1": ["gpt-5.1-2025-11-13"],
    "gpt-5.2": ["gpt-5.2-2025-12-11"],
    "gpt-5.4": ["gpt-5.4-2026-03-05"],
    "gpt-5.4-mini": ["gpt-5.4-mini-2026-03-17"],
    "gpt-5.4-nano": ["gpt-5.4-nano-2026-03-17"],
    "gpt-5.5": ["gpt-5.5-2026-04-23"],
    "gpt-5.6": ["gpt-5.6-sol"],
    "mistral/mistral-large-latest": ["mistral/mistral-large-2512", "mistral/mistral-large-3"],
    "mistral/mistral-large-4": ["mistral/mistral-large-4-0"],
    "mistral/mistral-medium-latest": ["mistral/mistral-medium-2604", "mistral/mistral-medium-3-5",
                                      "mistral/mistral-medium-3.5"],
    "mistral/mistral-small-latest": ["mistral/mistral-small-2603"],
    "mistral/codestral-latest": ["mistral/codestral-2508"],
    "mistral/devstral-latest": ["mistral/devstral-medium-latest"],
    "mistral/ministral-8b-latest": ["mistral/ministral-8b-2512", "mistral/ministral-3-8b-2512"],
    "xai/grok-4.3": ["xai/grok-4.3-latest"],
    "xai/grok-4.5": ["xai/grok-4.5-latest"],
    "xai/grok-4.20": ["xai/grok-4.20-0309", "xai/grok-4.20-reasoning", "xai/grok-4.20-non-reasoning",
                      "xai/grok-4.20-0309-reasoning", "xai/grok-4.20-0309-non-reasoning"],
    "xai/grok-code-fast-1": ["xai/grok-code-fast-1-0825"],
}

PRICING_PAGES = {
    "openai": "https://openai.com/api/pricing/",
    "anthropic": "https://www.anthropic.com/pricing#api",
    "gemini": "https://ai.google.dev/gemini-api/docs/pricing",
    "mistral": "https://mistral.ai/pricing",
    "deepseek": "https://api-docs.deepseek.com/quick_start/pricing",
    "xai": "https://docs.x.ai/docs/models",
}

COPY_FIELDS = ["litellm_provider", "mode", "max_input_tokens", "max_output_tokens"]
PRICE_BASES = ["input_cost_per_token", "output_cost_per_token",
               "cache_read_input_token_cost", "cache_creation_input_token_cost"]
PRICE_FIELD_RE = re.compile(
    r"^(?P<base>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost)(?:_above_(?P<k>\d+)k_tokens)?"
    r"(?P<var>_batches|_flex|_priority)?$")
HR_FIELD_RE = re.compile(r"^cache_creation_input_token_cost_above_1hr(?:_above_(?P<k>\d+)k_tokens)?$")
VARIANTS = [None, "_batches", "_flex", "_priority"]


class RawNumber:
    """A JSON number kept as its source text."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __eq__(self, other):
        return isinstance(other, RawNumber) and decimal.Decimal(self.text) == decimal.Decimal(other.text)

    def __hash__(self):
        return hash(decimal.Decimal(self.text))


def load_raw(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_float=RawNumber, parse_int=RawNumber)


def price_sort_key(field):
    m = PRICE_FIELD_RE.match(field)
    if m:
        return (PRICE_BASES.index(m["base"]), int(m["k"] or 0), VARIANTS.index(m["var"]))
    m = HR_FIELD_RE.match(field)
    return (len(PRICE_BASES), int(m["k"] or 0), 0)


def price_fields(entry):
    fields = [k for k in entry if PRICE_FIELD_RE.match(k) or HR_FIELD_RE.match(k)]
    return sorted(fields, key=price_sort_key)


def prices(entry):
    return {k: entry[k] for k in price_fields(entry)}


def bare_and_prefixed(name, provider):
    bare = name[len(provider) + 1:] if name.startswith(provider + "/") else name
    return [provider + "/" + bare, bare]


def candidate_aliases(key, provider):
    names = bare_and_prefixed(key, provider)
    if provider == "gemini":
        # LiteLLM's bare "gemini-..." names are Vertex AI's models, priced separately.
        names = [n for n in names if n.startswith("gemini/")]
    if provider == "anthropic":
        undated = re.sub(r"-\d{8}$", "", key)
        if undated != key:
            names += bare_and_prefixed(undated, provider)
    for extra in EXTRA_ALIASES.get(key, []):
        names += bare_and_prefixed(extra, provider)
    out = []
    for n in names:
        if n != key and n not in out:
            out.append(n)
    return out


def build(src):
    catalog = {}
    notes = []
    claimed = set(SELECTION)
    for key in SELECTION:
        entry = src.get(key)
        if not isinstance(entry, dict):
            raise SystemExit(f"{key}: not in the source file")
        provider = entry.get("litellm_provider")
        if entry.get("mode") != "chat" or provider not in PRICING_PAGES:
            raise SystemExit(f"{key}: mode {entry.get('mode')!r}, provider {provider!r}")
        out = {f: entry[f] for f in COPY_FIELDS if f in entry}
        out.update(prices(entry))
        aliases = []
        for alias in candidate_aliases(key, provider):
            other = src.get(alias)
            if isinstance(other, dict) and prices(other) != prices(entry):
                notes.append(f"{key}: alias {alias} dropped (separate source key, "
                             f"provider {other.get('litellm_provider')}, different prices)")
                continue
            if alias in claimed:
                raise SystemExit(f"{key}: alias {alias} is already used")
            claimed.add(alias)
            aliases.append(alias)
        out["aliases"] = aliases
        out["source"] = f"{PRICING_PAGES[provider]} (via LiteLLM {LITELLM_VERSION} price file)"
        out["as_of"] = AS_OF
        catalog[key] = out
    return catalog, notes


def dump(value, indent=0):
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {dump(v, indent + 1)}' for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{pad}  {dump(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(value, RawNumber):
        return value.text
    return json.dumps(value, ensure_ascii=False)


def check(out_path, src):
    """Every number in the output must equal (as Decimal, and as text) the source's."""
    with open(out_path, encoding="utf-8") as f:
        text_out = json.load(f, parse_float=str, parse_int=str)
    with open(out_path, encoding="utf-8") as f:
        dec_out = json.load(f, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
    n = 0
    for key, entry in dec_out.items():
        if key.startswith("_"):
            continue
        for field, value in entry.items():
            if field in ("aliases", "source", "as_of"):
                continue
            s = src[key][field]
            if isinstance(value, decimal.Decimal):
                assert isinstance(s, RawNumber), (key, field)
                assert value == decimal.Decimal(s.text), (key, field)
                assert text_out[key][field] == s.text, (key, field)
                n += 1
            else:
                assert value == s, (key, field)
    return n


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    src_path = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "default_catalog.json")
    src = load_raw(src_path)
    catalog, notes = build(src)
    doc = {"_meta": {
        "description": "pg_aicost default price catalog: list prices in USD per token of widely "
                       "used chat models of OpenAI, Anthropic, Google (Gemini API), Mistral, "
                       "DeepSeek and xAI, in LiteLLM's price-file format, each entry copied "
                       "from LiteLLM's price file (numbers unchanged) with aliases added. "
                       "Generated by data/gen_default_catalog.py.",
        "source": f"LiteLLM {LITELLM_VERSION} model_prices_and_context_window_backup.json "
                  "(https://github.com/BerriAI/litellm, MIT), from the providers' public pricing pages",
        "as_of": AS_OF,
    }}
    doc.update(catalog)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(dump(doc) + "\n")
    n = check(out_path, src)
    for note in notes:
        print("note:", note, file=sys.stderr)
    print(f"wrote {out_path}: {len(catalog)} models, {n} numbers checked against the source, "
          f"{os.path.getsize(out_path)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
