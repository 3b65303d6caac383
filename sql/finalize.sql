-- Runs last in CREATE EXTENSION: documents the Rust functions and loads the default catalog.

COMMENT ON FUNCTION ai_cost(text, bigint, bigint, bigint, bigint, text, timestamptz, bigint) IS 'Exact cost in USD of a request: in_tokens counts all prompt tokens (cached and cache-write ones included); at picks the prices valid at that instant';
COMMENT ON FUNCTION ai_cost(text, jsonb, text, timestamptz) IS 'Exact cost in USD of a request from the provider''s usage object (OpenAI chat/responses, Anthropic, Gemini)';
COMMENT ON FUNCTION ai_cost_explain(text, bigint, bigint, bigint, bigint, text, timestamptz, bigint) IS 'How ai_cost() computes a cost: model row, name match, price versions, fallbacks and each term of the sum';
COMMENT ON FUNCTION ai_cost_explain(text, jsonb, text, timestamptz) IS 'ai_cost_explain() for a provider usage object; also names the detected usage format';
COMMENT ON FUNCTION ai_pricing_import(jsonb, text) IS 'Imports a LiteLLM model_prices_and_context_window.json document; changed prices become new versions; returns the number of models with token prices';
COMMENT ON FUNCTION ai_pricing_load_default() IS 'Loads (idempotently) the default catalog shipped with pg_aicost; returns its number of models';

SELECT ai_pricing_load_default();
