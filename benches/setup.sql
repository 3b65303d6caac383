-- pg_aicost benchmark fixture, run by benches/run.sh in a fresh database aicost_bench:
--   psql -v catalog_file=/path/to/litellm_model_prices.json -f benches/setup.sql
-- Everything here is deterministic: the same rows, prices and sums on every run.
\set ON_ERROR_STOP on
\set QUIET on

CREATE EXTENSION pg_aicost CASCADE;

-- The full LiteLLM catalog (about 4,200 entries). psql reads the file on the client side, so the
-- server needs no access to the shared directory.
\set catalog `cat :'catalog_file'`
SELECT ai_pricing_import(:'catalog'::jsonb) AS imported_models \gset
\unset catalog

-- The 8 chat models the usage rows are spread over (all priced in the catalog, no long-context
-- tier below 200k prompt tokens, so a flat input/output price is the whole story).
CREATE TABLE bench_models (model text PRIMARY KEY, n int NOT NULL UNIQUE);
INSERT INTO bench_models VALUES
    ('gpt-4o', 0), ('gpt-4o-mini', 1), ('gpt-4.1', 2), ('gpt-4.1-mini', 3), ('gpt-5', 4),
    ('claude-sonnet-4-5', 5), ('gemini/gemini-2.5-flash', 6), ('deepseek-chat', 7);

-- 1,000,000 usage rows: models round-robin, prompt sizes 100..50,099, completions 10..4,009.
CREATE TABLE usage (id bigint PRIMARY KEY, model text NOT NULL, in_tokens bigint NOT NULL, out_tokens bigint NOT NULL);
INSERT INTO usage
SELECT i, m.model, 100 + (i * 7919) % 50000, 10 + (i * 104729) % 4000
  FROM generate_series(1::bigint, 1000000) AS i
  JOIN bench_models m ON m.n = i % 8;

-- The first 10,000 of them, for the slow aicost.pricing_cache = off run.
CREATE TABLE usage_10k AS SELECT * FROM usage WHERE id <= 10000;

-- The plain-SQL peer: one row per model with its current standard-tier base prices, for every
-- model of the catalog that has both (the same size of lookup table ai_cost's cache holds).
CREATE TABLE bench_prices (model text PRIMARY KEY, input numeric NOT NULL, output numeric NOT NULL);
INSERT INTO bench_prices
SELECT model,
       min(usd_per_mtok) FILTER (WHERE usage_type = 'input'),
       min(usd_per_mtok) FILTER (WHERE usage_type = 'output')
  FROM aicost.current_prices
 WHERE service_tier = 'standard' AND threshold_tokens = 0 AND usage_type IN ('input', 'output')
 GROUP BY model
HAVING count(*) FILTER (WHERE usage_type = 'input') = 1
   AND count(*) FILTER (WHERE usage_type = 'output') = 1;

-- Every benchmark model must be priced, or the comparison is meaningless.
DO $$
DECLARE missing text;
BEGIN
    SELECT string_agg(b.model, ', ') INTO missing
      FROM bench_models b LEFT JOIN bench_prices p USING (model) WHERE p.model IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'benchmark models without a standard input/output price: %', missing;
    END IF;
END $$;

-- The PL/pgSQL peer: one table lookup per call.
CREATE FUNCTION bench_cost_plpgsql(p_model text, p_in bigint, p_out bigint) RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT (p_in * p.input + p_out * p.output) / 1000000
              FROM bench_prices p WHERE p.model = p_model);
END
$$;

VACUUM ANALYZE usage;
VACUUM ANALYZE usage_10k;
VACUUM ANALYZE bench_prices;
VACUUM ANALYZE bench_models;

-- One line for run.sh: imported models, catalog models, current prices, bench_prices rows.
\pset tuples_only on
\pset format unaligned
\pset fieldsep ' '
SELECT :imported_models,
       (SELECT count(*) FROM aicost.models),
       (SELECT count(*) FROM aicost.current_prices),
       (SELECT count(*) FROM bench_prices);
