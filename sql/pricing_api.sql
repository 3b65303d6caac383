-- Catalog maintenance API and the triggers that keep every backend's pricing cache in step.

-- Statement-level: one invalidation and one NOTIFY per statement, whatever its row count.
-- NOTIFY is delivered at commit only (and never after a rollback); identical payloads in one
-- transaction are folded into one notification by PostgreSQL.
CREATE FUNCTION aicost._catalog_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_names text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        v_names := '*';
    ELSIF TG_OP = 'INSERT' THEN
        SELECT string_agg(DISTINCT n.model, ',' ORDER BY n.model) INTO v_names FROM new_rows n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT string_agg(DISTINCT o.model, ',' ORDER BY o.model) INTO v_names FROM old_rows o;
    ELSE
        SELECT string_agg(DISTINCT s.model, ',' ORDER BY s.model) INTO v_names
          FROM (SELECT o.model FROM old_rows o UNION ALL SELECT n.model FROM new_rows n) s;
    END IF;
    IF v_names IS NULL THEN
        RETURN NULL;  -- the statement changed no row
    END IF;
    PERFORM aicost._invalidate_pricing_cache('aicost.prices'::regclass);
    IF octet_length(v_names) > 7900 THEN
        v_names := '*';  -- NOTIFY payloads are limited to 8000 bytes
    END IF;
    PERFORM pg_notify('aicost_pricing', v_names);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aicost._catalog_changed() IS 'Trigger: invalidates every backend''s pricing cache at commit and NOTIFYs aicost_pricing with the changed model names (comma-separated) or *';

-- On each catalog table: one trigger per event (transition tables allow only one event each).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['models', 'model_aliases', 'prices'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON aicost.%I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION aicost._catalog_changed()', t || '_changed_ins', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON aicost.%I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION aicost._catalog_changed()', t || '_changed_upd', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON aicost.%I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION aicost._catalog_changed()', t || '_changed_del', t);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON aicost.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION aicost._catalog_changed()', t || '_changed_trunc', t);
        -- Also when logical replication applies a change: replicated prices invalidate caches too.
        EXECUTE format('ALTER TABLE aicost.%I ENABLE ALWAYS TRIGGER %I, ENABLE ALWAYS TRIGGER %I,
                        ENABLE ALWAYS TRIGGER %I, ENABLE ALWAYS TRIGGER %I',
                       t, t || '_changed_ins', t || '_changed_upd', t || '_changed_del', t || '_changed_trunc');
    END LOOP;
END
$$;

-- The one documented way to change a price: closes the version valid at effective_from and opens
-- a new one from there, so costs for earlier instants never change. Returns the new price_id.
CREATE FUNCTION ai_price_set(
    model text,
    usage_type text,
    usd_per_mtok numeric,
    service_tier text DEFAULT 'standard',
    threshold_tokens bigint DEFAULT 0,
    effective_from timestamptz DEFAULT now(),
    source text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_model text;
    v_id bigint;
BEGIN
    IF ai_price_set.model IS NULL OR ai_price_set.usage_type IS NULL OR ai_price_set.usd_per_mtok IS NULL
       OR ai_price_set.service_tier IS NULL OR ai_price_set.threshold_tokens IS NULL
       OR ai_price_set.effective_from IS NULL THEN
        RAISE EXCEPTION 'ai_price_set: only source may be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF ai_price_set.usage_type NOT IN ('input', 'output', 'cache_read', 'cache_write_5m', 'cache_write_1h') THEN
        RAISE EXCEPTION 'unknown usage type "%"', ai_price_set.usage_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Usage types are input, output, cache_read, cache_write_5m and cache_write_1h.';
    END IF;
    IF ai_price_set.service_tier NOT IN ('standard', 'batch', 'flex', 'priority') THEN
        RAISE EXCEPTION 'unknown service tier "%"', ai_price_set.service_tier
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Service tiers are standard, batch, flex and priority.';
    END IF;
    IF ai_price_set.usd_per_mtok < 0 OR ai_price_set.threshold_tokens < 0 THEN
        RAISE EXCEPTION 'prices and thresholds must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ai_price_set.usd_per_mtok > 0 AND ai_price_set.usd_per_mtok < 0.0001 THEN
        RAISE EXCEPTION 'price % per million tokens looks like a per-token price', ai_price_set.usd_per_mtok
            USING ERRCODE = 'check_violation',
                  HINT = 'Prices are US dollars per million tokens: $2.50/M is 2.50, not 0.0000025.';
    END IF;
    IF ai_price_set.effective_from < now() THEN
        RAISE EXCEPTION 'effective_from % is in the past', ai_price_set.effective_from
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Prices are never changed retroactively, so costs already computed stay true; use now() or a later instant.';
    END IF;
    v_model := @extschema@.ai_model_resolve(ai_price_set.model);
    -- One price change per model at a time (does not block inserts referencing the model).
    PERFORM 1 FROM aicost.models m WHERE m.model = v_model FOR NO KEY UPDATE;
    PERFORM aicost._apply_prices(
        jsonb_build_array(jsonb_build_object(
            'model', v_model, 'source', ai_price_set.source,
            'prices', jsonb_build_array(jsonb_build_object(
                'usage_type', ai_price_set.usage_type, 'service_tier', ai_price_set.service_tier,
                'threshold_tokens', ai_price_set.threshold_tokens,
                'usd_per_mtok', ai_price_set.usd_per_mtok)))),
        'user', ai_price_set.effective_from);
    SELECT p.price_id INTO v_id
      FROM aicost.prices p
     WHERE p.model = v_model AND p.usage_type = ai_price_set.usage_type
       AND p.service_tier = ai_price_set.service_tier AND p.threshold_tokens = ai_price_set.threshold_tokens
       AND p.valid @> ai_price_set.effective_from;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION ai_price_set(text, text, numeric, text, bigint, timestamptz, text) IS 'Sets a price (US dollars per million tokens) from effective_from on: closes the current version and opens a new one; returns the price_id valid at effective_from';

CREATE VIEW aicost.current_prices AS
SELECT p.model, m.provider, p.usage_type, p.service_tier, p.threshold_tokens, p.usd_per_mtok,
       lower(p.valid) AS valid_from, upper(p.valid) AS valid_to, p.price_id, p.origin
  FROM aicost.prices p
  JOIN aicost.models m USING (model)
 WHERE p.valid @> now();
COMMENT ON VIEW aicost.current_prices IS 'The price versions valid now, one row per model, usage type, service tier and long-context threshold';

COMMENT ON FUNCTION ai_model_resolve(text) IS 'Canonical model name for a requested name: exact name or alias, then case-insensitive, then provider/name prefix, then a unique unprefixed name';
COMMENT ON FUNCTION aicost._invalidate_pricing_cache(oid) IS 'Internal: queues a transactional relcache invalidation that marks every backend''s pricing cache stale';
