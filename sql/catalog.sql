-- pg_aicost pricing catalog: models, aliases and versioned prices (schema aicost).
--
-- Prices are exact numerics in US dollars per million tokens. Every price row has a validity
-- range; rows of the same price (model, usage type, service tier, long-context threshold) never
-- overlap. Change prices with ai_price_set() or ai_pricing_import(): they close the current
-- version and open a new one, so costs computed for past instants never change.

CREATE SCHEMA IF NOT EXISTS aicost;
COMMENT ON SCHEMA aicost IS 'pg_aicost: LLM pricing catalog, response cache and usage ledger';

CREATE TABLE aicost.models (
    model            text PRIMARY KEY CHECK (model <> '' AND model = btrim(model)),
    provider         text NOT NULL CHECK (provider <> ''),
    mode             text,
    max_input_tokens bigint CHECK (max_input_tokens > 0),
    source           text,
    as_of            date,
    origin           text NOT NULL DEFAULT 'user' CHECK (origin IN ('default', 'import', 'user')),
    created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE aicost.models IS 'LLM models that can be priced; model is the canonical name (LiteLLM''s key for imported models)';
COMMENT ON COLUMN aicost.models.model IS 'Canonical model name, e.g. gpt-4o or gemini/gemini-2.5-pro';
COMMENT ON COLUMN aicost.models.provider IS 'Provider (LiteLLM''s litellm_provider), e.g. openai; also matches a provider/ prefix in requested names';
COMMENT ON COLUMN aicost.models.mode IS 'LiteLLM mode (chat, embedding, responses, ...), informational';
COMMENT ON COLUMN aicost.models.max_input_tokens IS 'Context window, informational';
COMMENT ON COLUMN aicost.models.source IS 'Where the prices come from (a pricing page URL)';
COMMENT ON COLUMN aicost.models.as_of IS 'Date the prices were taken from the source';
COMMENT ON COLUMN aicost.models.origin IS 'default = shipped catalog (recreated by CREATE EXTENSION, not dumped), import = ai_pricing_import, user = added by hand';
COMMENT ON COLUMN aicost.models.created_at IS 'When the row was created';

CREATE TABLE aicost.model_aliases (
    alias  text PRIMARY KEY CHECK (alias <> '' AND alias = btrim(alias)),
    model  text NOT NULL REFERENCES aicost.models ON UPDATE CASCADE ON DELETE CASCADE,
    origin text NOT NULL DEFAULT 'user' CHECK (origin IN ('default', 'import', 'user'))
);
CREATE INDEX model_aliases_model_idx ON aicost.model_aliases (model);
-- Name lookups of aicost.pricing_cache = off (case-insensitive name, alias, unprefixed name).
CREATE INDEX models_lower_idx ON aicost.models (lower(model));
CREATE INDEX models_unprefixed_idx ON aicost.models (lower(substr(model, strpos(model, '/') + 1)));
CREATE INDEX model_aliases_lower_idx ON aicost.model_aliases (lower(alias));
COMMENT ON TABLE aicost.model_aliases IS 'Other names that resolve to a model, e.g. openai/gpt-4o-2024-08-06 -> gpt-4o';
COMMENT ON COLUMN aicost.model_aliases.alias IS 'The other name, matched exactly, then ignoring ASCII case';
COMMENT ON COLUMN aicost.model_aliases.model IS 'Canonical model name it resolves to';
COMMENT ON COLUMN aicost.model_aliases.origin IS 'default, import or user, as in aicost.models';

CREATE TABLE aicost.prices (
    price_id         bigserial PRIMARY KEY,
    model            text NOT NULL REFERENCES aicost.models ON UPDATE CASCADE ON DELETE CASCADE,
    usage_type       text NOT NULL
                     CHECK (usage_type IN ('input', 'output', 'cache_read', 'cache_write_5m', 'cache_write_1h')),
    service_tier     text NOT NULL DEFAULT 'standard'
                     CHECK (service_tier IN ('standard', 'batch', 'flex', 'priority')),
    threshold_tokens bigint NOT NULL DEFAULT 0 CHECK (threshold_tokens >= 0),
    usd_per_mtok     numeric NOT NULL,
    valid            tstzrange NOT NULL DEFAULT tstzrange(now(), NULL),
    origin           text NOT NULL DEFAULT 'user' CHECK (origin IN ('default', 'import', 'user')),
    source           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Real prices run from $0.0001 to tens of thousands per million tokens. A per-token price
    -- stored here (e.g. 0.0000025 for $2.50/M) is below the range; per-thousand slips are caught
    -- by review of ai_cost_explain, not by a constraint.
    CONSTRAINT prices_per_million_check
        CHECK (usd_per_mtok = 0 OR usd_per_mtok BETWEEN 0.0001 AND 100000),
    -- 18 decimals: LiteLLM's file has float-noise prices such as 15.000020000000002 per million.
    CONSTRAINT prices_scale_check CHECK (scale(usd_per_mtok) <= 18),
    CONSTRAINT prices_valid_check
        CHECK (NOT isempty(valid) AND (lower_inc(valid) OR lower_inf(valid)) AND NOT upper_inc(valid)),
    -- Deferred so that pg_restore may load a closed version after its successor.
    CONSTRAINT prices_no_overlap EXCLUDE USING gist (
        model WITH =, usage_type WITH =, service_tier WITH =, threshold_tokens WITH =, valid WITH &&
    ) DEFERRABLE INITIALLY DEFERRED
);
COMMENT ON TABLE aicost.prices IS 'Versioned token prices; change them with ai_price_set() or ai_pricing_import(), never by overwriting a row';
COMMENT ON COLUMN aicost.prices.price_id IS 'Identifies one version of one price (recorded by explain output and the usage ledger)';
COMMENT ON COLUMN aicost.prices.model IS 'Canonical model name';
COMMENT ON COLUMN aicost.prices.usage_type IS 'input (uncached prompt), output (completion incl. reasoning), cache_read, cache_write_5m, cache_write_1h';
COMMENT ON COLUMN aicost.prices.service_tier IS 'standard, batch, flex or priority';
COMMENT ON COLUMN aicost.prices.threshold_tokens IS 'Long-context tier: applies to the whole request when its prompt tokens exceed this (0 = base price)';
COMMENT ON COLUMN aicost.prices.usd_per_mtok IS 'US dollars per million tokens, exact';
COMMENT ON COLUMN aicost.prices.valid IS 'Validity range [from, to); unbounded below for prices of unknown start';
COMMENT ON COLUMN aicost.prices.origin IS 'default, import or user, as in aicost.models';
COMMENT ON COLUMN aicost.prices.source IS 'Where this price comes from';
COMMENT ON COLUMN aicost.prices.created_at IS 'When the row was created';
COMMENT ON CONSTRAINT prices_per_million_check ON aicost.prices IS 'Catches per-token prices stored as per-million';
COMMENT ON CONSTRAINT prices_no_overlap ON aicost.prices IS 'Versions of the same price never overlap in time';

-- pg_dump keeps what users added or changed. Rows of the shipped default catalog are recreated by
-- CREATE EXTENSION; a closed (superseded) default price is dumped and merged back on restore by
-- aicost._prices_restore_default().
SELECT pg_catalog.pg_extension_config_dump('aicost.models', 'WHERE origin <> ''default''');
SELECT pg_catalog.pg_extension_config_dump('aicost.model_aliases', 'WHERE origin <> ''default''');
SELECT pg_catalog.pg_extension_config_dump('aicost.prices', 'WHERE origin <> ''default'' OR NOT upper_inf(valid)');
SELECT pg_catalog.pg_extension_config_dump('aicost.prices_price_id_seq', '');

-- On restore, a dumped default-catalog row meets its twin inserted by CREATE EXTENSION: keep one.
CREATE FUNCTION aicost._prices_restore_default() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE aicost.prices p
       SET valid = NEW.valid, price_id = NEW.price_id
     WHERE p.origin = 'default'
       AND (p.model, p.usage_type, p.service_tier, p.threshold_tokens) =
           (NEW.model, NEW.usage_type, NEW.service_tier, NEW.threshold_tokens)
       AND lower(p.valid) IS NOT DISTINCT FROM lower(NEW.valid)
       AND p.usd_per_mtok = NEW.usd_per_mtok;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION aicost._prices_restore_default() IS 'Merges a restored default-catalog price row into the row CREATE EXTENSION made';
-- Likewise a row inserted for a shipped default model (an import that changes it, or its dumped
-- changed version on restore) updates the default row instead of failing on the primary key.
CREATE FUNCTION aicost._models_restore_default() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM aicost.models m WHERE m.model = NEW.model AND m.origin = 'default') THEN
        RETURN NEW;
    END IF;
    -- The changed row stops being a default row, so pg_dump keeps it.
    UPDATE aicost.models m
       SET provider = NEW.provider, mode = coalesce(NEW.mode, m.mode),
           max_input_tokens = coalesce(NEW.max_input_tokens, m.max_input_tokens),
           source = coalesce(NEW.source, m.source), as_of = coalesce(NEW.as_of, m.as_of),
           origin = NEW.origin
     WHERE m.model = NEW.model
       AND (m.provider, m.mode, m.max_input_tokens, m.source, m.as_of) IS DISTINCT FROM
           (NEW.provider, coalesce(NEW.mode, m.mode), coalesce(NEW.max_input_tokens, m.max_input_tokens),
            coalesce(NEW.source, m.source), coalesce(NEW.as_of, m.as_of));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aicost._models_restore_default() IS 'Merges an inserted (e.g. restored) row for a shipped default model into the default row';
CREATE TRIGGER models_restore_default BEFORE INSERT ON aicost.models
    FOR EACH ROW WHEN (NEW.origin <> 'default') EXECUTE FUNCTION aicost._models_restore_default();

CREATE TRIGGER prices_restore_default BEFORE INSERT ON aicost.prices
    FOR EACH ROW WHEN (NEW.origin = 'default') EXECUTE FUNCTION aicost._prices_restore_default();

-- Applies model and price rows (the normalized output of ai_pricing_import or one ai_price_set)
-- effective at p_at: unchanged prices are left alone; a changed price closes the version valid
-- at p_at and opens a new one; the first prices of a newly imported model are valid from the
-- unknown past (so historical usage can be priced), every other new price from p_at.
CREATE FUNCTION aicost._apply_prices(p_models jsonb, p_origin text, p_at timestamptz)
RETURNS TABLE (new_prices bigint, changed_prices bigint, unchanged_prices bigint)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO aicost.models AS m (model, provider, mode, max_input_tokens, source, as_of, origin)
    SELECT x.model, x.provider, x.mode, x.max_input_tokens, x.source, x.as_of, p_origin
      FROM jsonb_to_recordset(p_models) AS x(model text, provider text, mode text,
                                            max_input_tokens bigint, source text, as_of date)
     WHERE x.provider IS NOT NULL
    ON CONFLICT (model) DO UPDATE
       SET provider = excluded.provider,
           mode = coalesce(excluded.mode, m.mode),
           max_input_tokens = coalesce(excluded.max_input_tokens, m.max_input_tokens),
           source = coalesce(excluded.source, m.source),
           as_of = coalesce(excluded.as_of, m.as_of)
     WHERE (m.provider, m.mode, m.max_input_tokens, m.source, m.as_of) IS DISTINCT FROM
           (excluded.provider, coalesce(excluded.mode, m.mode),
            coalesce(excluded.max_input_tokens, m.max_input_tokens),
            coalesce(excluded.source, m.source), coalesce(excluded.as_of, m.as_of));

    INSERT INTO aicost.model_aliases (alias, model, origin)
    SELECT DISTINCT a.alias, x.model, p_origin
      FROM jsonb_to_recordset(p_models) AS x(model text, aliases jsonb),
           jsonb_array_elements_text(coalesce(x.aliases, '[]')) AS a(alias)
     WHERE a.alias <> x.model
    ON CONFLICT (alias) DO NOTHING;

    RETURN QUERY
    WITH src AS (
        SELECT x.model, p.usage_type, p.service_tier, p.threshold_tokens, p.usd_per_mtok, x.source,
               cur.price_id AS cur_id, cur.usd_per_mtok AS cur_rate,
               lower(cur.valid) AS cur_from, upper(cur.valid) AS cur_to,
               (cur.price_id IS NOT NULL AND cur.usd_per_mtok <> p.usd_per_mtok) AS changed,
               -- Only a model's very first prices (from an import or the default catalog) are valid
               -- from the unknown past; any later new price starts at p_at, so that costs already
               -- computed for earlier instants never change.
               (p_origin = 'user' OR EXISTS (SELECT 1 FROM aicost.prices h WHERE h.model = x.model)) AS has_history,
               (SELECT min(lower(n.valid)) FROM aicost.prices n
                 WHERE (n.model, n.usage_type, n.service_tier, n.threshold_tokens) =
                       (x.model, p.usage_type, p.service_tier, p.threshold_tokens)
                   AND lower(n.valid) > p_at) AS next_from
          FROM jsonb_to_recordset(p_models) AS x(model text, source text, prices jsonb)
         CROSS JOIN LATERAL jsonb_to_recordset(x.prices) AS p(usage_type text, service_tier text,
                                                              threshold_tokens bigint, usd_per_mtok numeric)
          LEFT JOIN aicost.prices cur
                 ON (cur.model, cur.usage_type, cur.service_tier, cur.threshold_tokens) =
                    (x.model, p.usage_type, p.service_tier, p.threshold_tokens)
                AND cur.valid @> p_at
    ),
    -- A version that starts at p_at itself is scheduled or was written by this transaction:
    -- correct it in place rather than leave an empty range behind.
    corrected AS (
        UPDATE aicost.prices p SET usd_per_mtok = s.usd_per_mtok
          FROM src s
         WHERE p.price_id = s.cur_id AND s.changed AND s.cur_from = p_at
        RETURNING 1
    ),
    closed AS (
        UPDATE aicost.prices p SET valid = tstzrange(lower(p.valid), p_at)
          FROM src s
         WHERE p.price_id = s.cur_id AND s.changed AND s.cur_from IS DISTINCT FROM p_at
        RETURNING 1
    ),
    inserted AS (
        INSERT INTO aicost.prices (model, usage_type, service_tier, threshold_tokens, usd_per_mtok,
                                   valid, origin, source)
        SELECT s.model, s.usage_type, s.service_tier, s.threshold_tokens, s.usd_per_mtok,
               CASE WHEN s.cur_id IS NOT NULL THEN tstzrange(p_at, s.cur_to)
                    WHEN s.has_history THEN tstzrange(p_at, s.next_from)
                    ELSE tstzrange(NULL, NULL) END,
               p_origin, s.source
          FROM src s
         WHERE s.cur_id IS NULL OR (s.changed AND s.cur_from IS DISTINCT FROM p_at)
         ORDER BY s.model, s.usage_type, s.service_tier, s.threshold_tokens
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM inserted) - (SELECT count(*) FROM closed),
           (SELECT count(*) FROM closed) + (SELECT count(*) FROM corrected),
           (SELECT count(*) FROM src WHERE cur_id IS NOT NULL AND NOT changed);
END
$$;
COMMENT ON FUNCTION aicost._apply_prices(jsonb, text, timestamptz) IS 'Internal: upserts normalized model/price rows as new price versions effective at p_at; returns counts of new, changed and unchanged prices';
