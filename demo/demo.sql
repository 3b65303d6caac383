-- pg_aicost demo: run by `make demo` against the throwaway cluster (scripts/cluster.sh).
\set ON_ERROR_STOP 1
\pset footer off
DROP DATABASE IF EXISTS aicost_demo WITH (FORCE);
CREATE DATABASE aicost_demo;
\c aicost_demo
SET client_min_messages = warning;
CREATE EXTENSION pg_aicost CASCADE;  -- loads the default catalog
SELECT ai_pricing_load_default() AS default_models;
RESET client_min_messages;

\echo
\echo '== What does a request cost? (USD, exact numeric) =='
SELECT model, in_tokens, out_tokens, ai_cost(model, in_tokens, out_tokens) AS usd
  FROM (VALUES ('gpt-4o', 1000, 500), ('openai/gpt-4o-mini', 1000, 500),
               ('claude-sonnet-4-5', 12000, 800), ('gemini/gemini-2.5-pro', 250000, 2000),
               ('deepseek-chat', 1000, 500), ('grok-4.5', 1000, 500),
               ('mistral-large-latest', 1000, 500)) AS r(model, in_tokens, out_tokens);

\echo '== Exact: 1,234,567 tokens at $2.50 per million =='
SELECT ai_cost('gpt-4o', 1234567, 0) AS usd;

\echo '== Cached prompt tokens, batch and priority tiers =='
SELECT ai_cost('gpt-4o', 10000, 500) AS uncached,
       ai_cost('gpt-4o', 10000, 500, cached_tokens => 8000) AS cached_8k,
       ai_cost('gpt-4o', 10000, 500, service_tier => 'batch') AS batch,
       ai_cost('gpt-4o', 10000, 500, service_tier => 'priority') AS priority;

\echo '== Straight from the provider''s usage object =='
SELECT ai_cost('gpt-4o', '{"prompt_tokens": 1200, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1024}}') AS openai,
       ai_cost('claude-sonnet-4-5', '{"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 9000, "cache_creation_input_tokens": 1000}') AS anthropic,
       ai_cost('gemini/gemini-2.5-flash', '{"usageMetadata": {"promptTokenCount": 4000, "candidatesTokenCount": 200, "thoughtsTokenCount": 300}}') AS gemini;

\echo '== How a cost was computed =='
SELECT jsonb_pretty(ai_cost_explain('claude-sonnet-4-5', 12000, 800, cached_tokens => 10000));

\echo '== A price change takes effect at its instant; earlier instants keep the old price =='
SELECT ai_price_set('gpt-4o', 'output', 12.00, effective_from => now() + interval '1 hour') AS new_price_id;
SELECT ai_cost('gpt-4o', 0, 1000000) AS now_usd,
       ai_cost('gpt-4o', 0, 1000000, at => now() + interval '2 hours') AS in_two_hours_usd;
SELECT usage_type, usd_per_mtok, valid FROM aicost.prices
 WHERE model = 'gpt-4o' AND usage_type = 'output' AND service_tier = 'standard' ORDER BY valid;

\echo '== Unknown models are an error (or NULL with aicost.unknown_model = null), never $0 =='
\set ON_ERROR_STOP 0
SELECT ai_cost('gpt4o', 1000, 500);
\set ON_ERROR_STOP 1
SET aicost.unknown_model = 'null';
SELECT ai_cost('gpt4o', 1000, 500) IS NULL AS is_null;
RESET aicost.unknown_model;

\echo
\echo '== Response cache: key order and whitespace do not matter; hits count money saved =='
SELECT left(ai_cache_put('gpt-4o', '{"messages": [{"role": "user", "content": "What is PostgreSQL?"}], "temperature": 0}',
                         '{"choices": [{"message": {"content": "A database."}}], "usage": {"prompt_tokens": 1200, "completion_tokens": 300}}'), 16) AS key_prefix;
SELECT ai_cache_get('openai/gpt-4o', '{"temperature": 0.0, "messages": [{"content": "What is PostgreSQL?", "role": "user"}]}') -> 'choices' AS hit,
       ai_cache_get('gpt-4o', '{"messages": [{"role": "user", "content": "What is PostgreSQL?"}], "temperature": 0.7}') AS miss;
SELECT namespace, entries, hits, misses, hit_ratio, saved_usd FROM aicost.cache_stats;

\echo '== Usage ledger with a budget: exact spend, alert at 80%, hard stop at 100% =='
SELECT ai_budget_set('user', 'alice', 0.10) AS budget_id;
INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens) VALUES ('demo-1', 'alice', 'gpt-4o', 20000, 2000);
INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens) VALUES ('demo-2', 'alice', 'gpt-4o', 4000, 400);
SELECT scope_id, spent, remaining, percent, state FROM aicost.budget_status;
SELECT threshold, spent, limit_usd FROM aicost.budget_alerts;
\set ON_ERROR_STOP 0
\set VERBOSITY terse
INSERT INTO aicost.usage (request_id, user_id, model, in_tokens, out_tokens) VALUES ('demo-3', 'alice', 'gpt-4o', 10000, 1000);
\set VERBOSITY default
\set ON_ERROR_STOP 1
SELECT count(*) AS ledger_rows, sum(cost) AS ledger_cost FROM aicost.usage;

\echo '== Statistics (scope backend: this session; preload pg_aicost for cluster-wide numbers) =='
SELECT scope, model, calls, errors, in_tokens, out_tokens, cost_usd FROM aicost.stat_cost ORDER BY cost_usd DESC LIMIT 3;
SELECT budget_scope_id, charges, denials, alerts FROM aicost.stat_budget;
