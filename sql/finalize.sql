-- Runs last in CREATE EXTENSION: documents the Rust functions and loads the default catalog.

COMMENT ON FUNCTION ai_cost(text, bigint, bigint, bigint, bigint, text, timestamptz, bigint) IS 'Exact cost in USD of a request: in_tokens counts all prompt tokens (cached and cache-write ones included); at picks the prices valid at that instant';
COMMENT ON FUNCTION ai_cost(text, jsonb, text, timestamptz) IS 'Exact cost in USD of a request from the provider''s usage object (OpenAI chat/responses, Anthropic, Gemini)';
COMMENT ON FUNCTION ai_cost_explain(text, bigint, bigint, bigint, bigint, text, timestamptz, bigint) IS 'How ai_cost() computes a cost: model row, name match, price versions, fallbacks and each term of the sum';
COMMENT ON FUNCTION ai_cost_explain(text, jsonb, text, timestamptz) IS 'ai_cost_explain() for a provider usage object; also names the detected usage format';
COMMENT ON FUNCTION ai_pricing_import(jsonb, text) IS 'Imports a LiteLLM model_prices_and_context_window.json document; changed prices become new versions; returns the number of models with token prices';
COMMENT ON FUNCTION ai_pricing_load_default() IS 'Loads (idempotently) the default catalog shipped with pg_aicost; returns its number of models';
COMMENT ON FUNCTION ai_cache_key(text, jsonb, text) IS 'Response-cache key: hex SHA-256 of (namespace, canonical model, canonical request); key order, whitespace and number spelling do not matter';
COMMENT ON FUNCTION aicost._cache_model(text) IS 'Internal: the model name stored with a cache entry (canonical when known)';
COMMENT ON FUNCTION aicost._response_cost(text, jsonb) IS 'Internal: cost of producing a response from its usage object, NULL when it cannot be priced';
COMMENT ON FUNCTION aicost._ledger_price(text, bigint, bigint, bigint, bigint, bigint, text, timestamptz, boolean) IS 'Internal: cost and price versions of a ledger row (NULLs for an unknown model when unpriced_ok)';
COMMENT ON FUNCTION aicost._usage_counts(jsonb) IS 'Internal: {in, out, cached, cache_write, cache_write_1h} token counts of a provider usage object';

SELECT ai_pricing_load_default();
