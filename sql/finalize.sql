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
COMMENT ON FUNCTION aicost._may_record() IS 'Internal: whether the acting role may give a usage row cost, cache_hit, price_ids or budget_ids (INSERT on aicost.usage.budget_ids: admins and superusers)';
COMMENT ON FUNCTION aicost._ledger_mark_recorded(bigint) IS 'Internal: marks the ledger row being inserted as recorded (given its budget_ids by a restore): nothing is charged for it';
COMMENT ON FUNCTION aicost._ledger_take_recorded(bigint) IS 'Internal: the ledger AFTER INSERT trigger''s WHEN clause: whether the row just written was marked recorded';
COMMENT ON FUNCTION aicost._ledger_maintenance() IS 'Internal: whether ai_reprice_unpriced() is updating ledger rows in this transaction (read through the library, never a placeholder)';
COMMENT ON FUNCTION aicost._guc(text) IS 'Internal: the value of an aicost.* setting as the library defines it (a placeholder a caller set before the library loaded is never trusted)';
COMMENT ON FUNCTION aicost._visible(text) IS 'Internal: whether the acting role may see rows of an org (every org unless aicost.tenants confines it)';
COMMENT ON FUNCTION aicost._tenant_org() IS 'Internal: the org the acting role (after SET ROLE, also inside SECURITY DEFINER code) is confined to, NULL when it acts for any org';
COMMENT ON FUNCTION aicost._check_created_at(timestamptz) IS 'Internal: refuses a usage row dated more than aicost.ledger_max_backdate before its transaction or 5 minutes ahead of the clock, unless the caller is a superuser or aicost_admin (22023)';
COMMENT ON FUNCTION aicost._invalidate_tenants() IS 'Internal: makes every backend re-read aicost.tenants once the change commits';
COMMENT ON FUNCTION aicost._cache_ns(text) IS 'Internal: the response-cache namespace a call uses: trimmed, 1 to 256 bytes, prefixed with the org of a role confined to one';
COMMENT ON FUNCTION aicost._cache_ns_prefix() IS 'Internal: the namespace prefix of the acting role''s org ('''' when it is not confined)';
COMMENT ON FUNCTION ai_call_allowed(text) IS 'Whether a call to the model may be made now, by its circuit breaker and its provider''s: allowed, the state (closed, open, half_open) and how long until a call would be admitted';
COMMENT ON FUNCTION ai_call_report(text, boolean, interval, text) IS 'Records the outcome of a call in the circuit breakers of the model and its provider; error classes: rate_limit, timeout, server, network, overloaded, client (client errors never trip); returns the model breaker''s state';
COMMENT ON FUNCTION ai_breaker_reset(text, text) IS 'Closes circuit breakers and forgets their counts: of a kind (model, provider) and name, every one when NULL; returns how many';
COMMENT ON FUNCTION aicost._breaker_rows() IS 'Internal: the rows of aicost.stat_breaker';
COMMENT ON FUNCTION aicost._invalidate_breaker_config() IS 'Internal: makes every backend re-read aicost.breaker_config once the change commits';
COMMENT ON FUNCTION aicost._route_candidates(text[], bigint) IS 'Internal: ai_route''s candidates: canonical names in order and an upper bound of the cost of the estimated tokens';

SELECT ai_pricing_load_default();

-- ---------------------------------------------------------------------------------------------
-- Roles and privileges (README "Roles and privileges"). Upgrade scripts end with the same rules
-- applied to what they add.
--
-- aicost_app    what an application needs per request: prices, the response cache, recording
--               usage (the caller's columns of aicost.usage only), budget and rate-limit checks.
-- aicost_reader views, statistics and ledger reads (an operator's role: its raw-table reads are
--               not confined to an org; the views are).
-- aicost_admin  both of the above, and prices, imports, aliases, budgets, rate limits, tenants,
--               cache namespaces, repricing, statistics resets and circuit-breaker settings.
-- Roles are cluster-wide: created here when missing, kept by DROP EXTENSION. Nothing is granted
-- to PUBLIC. Whatever writes money runs as the extension (SECURITY DEFINER, search_path pinned).
DO $$
DECLARE
    r text;
    a record;
BEGIN
    FOREACH r IN ARRAY ARRAY['aicost_admin', 'aicost_app', 'aicost_reader'] LOOP
        SELECT rolcanlogin, rolsuper, rolbypassrls INTO a FROM pg_catalog.pg_roles WHERE rolname = r;
        IF NOT FOUND THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object THEN
                NULL;  -- created meanwhile by a CREATE EXTENSION in another database
            END;
        ELSIF a.rolcanlogin OR a.rolsuper OR a.rolbypassrls THEN
            RAISE WARNING 'role % exists and can log in or bypasses privileges; pg_aicost grants to it all the same', r
                USING HINT = format('It should be a NOLOGIN group role: ALTER ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS.', r);
        END IF;
    END LOOP;
END
$$;
GRANT aicost_app, aicost_reader TO aicost_admin;

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig,
                    -- Trigger functions and every SQL-callable function that reads or writes the
                    -- protected tables run as the extension, with a search_path no caller can
                    -- plant anything in.
                    (p.prorettype = 'pg_catalog.trigger'::regtype
                     OR p.proname IN ('ai_price_set', 'ai_pricing_import', 'ai_pricing_load_default',
                                      'ai_budget_set', 'ai_budget_drop', 'ai_budget_check', 'ai_budget_reserve',
                                      'ai_budget_release', 'ai_budget_reservations_purge', 'ai_rate_limit_set', 'ai_rate_limit_check',
                                      'ai_reprice_unpriced', 'ai_tenant_set', 'ai_tenant_drop',
                                      'ai_cache_get', 'ai_cache_put', 'ai_cache_get_or_lock', 'ai_cache_invalidate',
                                      'ai_cache_sweep', 'ai_cache_warm', 'ai_cache_namespace_set',
                                      'ai_cache_stats_reset', 'stat_reset')) AS definer
               FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
              WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
                AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_aicost')
    LOOP
        -- Nothing of the extension is executable by PUBLIC; the grants below are the whole API.
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
        IF f.definer THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', f.sig);
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA aicost TO aicost_app, aicost_reader;

-- aicost_app and aicost_reader: reading prices and budget states
GRANT EXECUTE ON FUNCTION
    @extschema@.ai_cost(text, bigint, bigint, bigint, bigint, text, timestamptz, bigint),
    @extschema@.ai_cost(text, jsonb, text, timestamptz),
    @extschema@.ai_cost_explain(text, bigint, bigint, bigint, bigint, text, timestamptz, bigint),
    @extschema@.ai_cost_explain(text, jsonb, text, timestamptz),
    @extschema@.ai_model_resolve(text),
    @extschema@.ai_cache_key(text, jsonb, text),
    @extschema@.ai_budget_check(text, text, numeric),
    @extschema@.ai_rate_limit_check(text, text, bigint),
    -- called by the views as the querying role
    aicost._visible(text), aicost._tenant_org(), aicost._guc(text), aicost._cache_ns_prefix(),
    aicost._period_start(text, text, timestamptz), aicost._period_end(text, text, timestamptz),
    aicost._budget_state(numeric, numeric, numeric, numeric, numeric, numeric, numeric)
TO aicost_app, aicost_reader;
-- aicost_app: what writes per request (cache entries and statistics, reservations)
GRANT EXECUTE ON FUNCTION
    @extschema@.ai_cache_get(text, jsonb, text),
    @extschema@.ai_cache_put(text, jsonb, jsonb, interval, text, numeric),
    @extschema@.ai_cache_get_or_lock(text, jsonb, text, interval),
    @extschema@.ai_budget_reserve(text, text, numeric, text, interval),
    @extschema@.ai_budget_release(bigint),
    @extschema@.ai_call_allowed(text),
    @extschema@.ai_call_report(text, boolean, interval, text),
    @extschema@.ai_route(text[], text, text, bigint),
    aicost._route_candidates(text[], bigint),
    -- the WHEN clause of the ledger's AFTER INSERT trigger, evaluated as the inserting role
    aicost._ledger_take_recorded(bigint)
TO aicost_app;
-- Usage facts only: cost, cache_hit, price_ids, budget_ids and usage_id are the extension's.
GRANT INSERT (request_id, org_id, team_id, user_id, api_key_id, model, in_tokens, out_tokens, cached_tokens,
              cache_write_tokens, cache_write_1h_tokens, service_tier, usage, status, metadata, created_at)
    ON aicost.usage TO aicost_app;
GRANT USAGE ON SEQUENCE aicost.usage_usage_id_seq TO aicost_app;
GRANT SELECT ON aicost.models, aicost.model_aliases, aicost.prices, aicost.current_prices,
                aicost.budget_status, aicost.spend_daily, aicost.my_usage
    TO aicost_app;

-- aicost_reader: every table and view but the cached prompts and responses themselves.
GRANT SELECT ON ALL TABLES IN SCHEMA aicost TO aicost_reader;
REVOKE SELECT ON aicost.cache_entries, aicost.cache_entries_unlogged, aicost.cache_events FROM aicost_reader;
GRANT EXECUTE ON FUNCTION
    @extschema@.ai_budget_audit(),
    aicost._stat_cost_rows(), aicost._stat_cache_rows(), aicost._stat_budget_rows(), aicost._breaker_rows(),
    aicost._spent(bigint, timestamptz), aicost._reserved(bigint, timestamptz)
TO aicost_reader;

-- aicost_admin
GRANT EXECUTE ON FUNCTION
    @extschema@.ai_price_set(text, text, numeric, text, bigint, timestamptz, text),
    @extschema@.ai_pricing_import(jsonb, text),
    @extschema@.ai_pricing_load_default(),
    @extschema@.ai_budget_set(text, text, numeric, text, numeric, numeric, numeric, text, text),
    @extschema@.ai_budget_drop(text, text),
    @extschema@.ai_rate_limit_set(text, text, interval, bigint, bigint, bigint, bigint, text),
    @extschema@.ai_reprice_unpriced(),
    @extschema@.ai_tenant_set(regrole, text),
    @extschema@.ai_tenant_drop(regrole),
    @extschema@.ai_cache_invalidate(text, text, text, interval),
    @extschema@.ai_cache_sweep(),
    @extschema@.ai_cache_warm(text, jsonb),
    @extschema@.ai_cache_namespace_set(text, bigint, bigint, text, interval, boolean, text),
    @extschema@.ai_cache_stats_reset(text),
    @extschema@.ai_breaker_reset(text, text),
    @extschema@.ai_budget_reservations_purge(interval),
    aicost.stat_reset()
TO aicost_admin;
-- Models and aliases may be edited directly (prices only through ai_price_set / import).
GRANT INSERT, UPDATE, DELETE ON aicost.models, aicost.model_aliases TO aicost_admin;
-- Circuit-breaker settings are edited directly.
GRANT INSERT, UPDATE, DELETE ON aicost.breaker_config TO aicost_admin;
-- Backfills: an admin may give a usage row its cost (and any created_at).
GRANT INSERT ON aicost.usage TO aicost_admin;
