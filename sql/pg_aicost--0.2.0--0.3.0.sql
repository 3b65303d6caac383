-- pg_aicost 0.2.0 -> 0.3.0: the trust boundary. Roles aicost_admin / aicost_app / aicost_reader,
-- nothing granted to PUBLIC, SECURITY DEFINER money paths with a pinned search_path, tenants
-- (aicost.tenants), request ids unique per org, bounded and validated input, opaque NOTIFY payloads.
-- Released scripts are never edited; the upgrade test compares the result with a fresh install.

-- Functions whose signature gained org_id.
DROP FUNCTION @extschema@.ai_budget_set(text, text, numeric, text, numeric, numeric, numeric, text);
DROP FUNCTION @extschema@.ai_rate_limit_set(text, text, interval, bigint, bigint, bigint, bigint);

-- Request ids become unique per org (usage_org_request_key below); money is finite.
ALTER TABLE aicost.usage
    DROP CONSTRAINT usage_request_id_key,
    DROP CONSTRAINT usage_cost_check,
    ADD CONSTRAINT usage_cost_check CHECK (cost >= 0 AND cost < 'Infinity');

-- Budgets, reservations and rate limits belong to an org (NULL: shared).
ALTER TABLE aicost.budgets
    ADD COLUMN org_id text,
    DROP CONSTRAINT budgets_amount_check,
    ADD CONSTRAINT budgets_amount_check CHECK (amount >= 0 AND amount < 'Infinity'),
    DROP CONSTRAINT budgets_thresholds_check,
    ADD CONSTRAINT budgets_thresholds_check CHECK (0 < alert_pct AND alert_pct <= throttle_pct AND throttle_pct <= hard_pct AND hard_pct < 'Infinity');
UPDATE aicost.budgets SET org_id = scope_id WHERE scope = 'org';
ALTER TABLE aicost.budgets ADD CONSTRAINT budgets_org_check CHECK (scope <> 'org' OR org_id = scope_id);

ALTER TABLE aicost.budget_reservations
    ADD COLUMN org_id text,
    DROP CONSTRAINT budget_reservations_amount_check,
    ADD CONSTRAINT budget_reservations_amount_check CHECK (amount > 0 AND amount < 'Infinity');
UPDATE aicost.budget_reservations r SET org_id = b.org_id FROM aicost.budgets b WHERE b.budget_id = r.budget_id;

-- Recorded money is finite (numeric also has NaN and Infinity; NaN >= 0 is true).
ALTER TABLE aicost.budget_spend ADD CONSTRAINT budget_spend_spent_check CHECK (spent >= 0 AND spent < 'Infinity');
ALTER TABLE aicost.cache_entries DROP CONSTRAINT cache_entries_cost_check,
    ADD CONSTRAINT cache_entries_cost_check CHECK (cost >= 0 AND cost < 'Infinity');
ALTER TABLE aicost.cache_entries_unlogged DROP CONSTRAINT cache_entries_cost_check,
    ADD CONSTRAINT cache_entries_cost_check CHECK (cost >= 0 AND cost < 'Infinity');

ALTER TABLE aicost.rate_limits ADD COLUMN org_id text;
UPDATE aicost.rate_limits SET org_id = scope_id WHERE scope = 'org';
ALTER TABLE aicost.rate_limits ADD CONSTRAINT rate_limits_org_check CHECK (scope <> 'org' OR org_id = scope_id);

ALTER TABLE aicost.models ENABLE ALWAYS TRIGGER models_changed_ins, ENABLE ALWAYS TRIGGER models_changed_upd,
    ENABLE ALWAYS TRIGGER models_changed_del, ENABLE ALWAYS TRIGGER models_changed_trunc;

ALTER TABLE aicost.model_aliases ENABLE ALWAYS TRIGGER model_aliases_changed_ins, ENABLE ALWAYS TRIGGER model_aliases_changed_upd,
    ENABLE ALWAYS TRIGGER model_aliases_changed_del, ENABLE ALWAYS TRIGGER model_aliases_changed_trunc;

ALTER TABLE aicost.prices ENABLE ALWAYS TRIGGER prices_changed_ins, ENABLE ALWAYS TRIGGER prices_changed_upd,
    ENABLE ALWAYS TRIGGER prices_changed_del, ENABLE ALWAYS TRIGGER prices_changed_trunc;

CREATE  FUNCTION aicost."_ledger_maintenance"() RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_ledger_maintenance_wrapper';

CREATE  FUNCTION aicost."_tenant_org"() RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_tenant_org_wrapper';

CREATE  FUNCTION aicost."_check_created_at"(
	"created_at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS void
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_created_at_wrapper';

CREATE  FUNCTION aicost."_may_record"() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_may_record_wrapper';

CREATE  FUNCTION aicost."_ledger_mark_recorded"(
	"usage_id" bigint /* i64 */
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_ledger_mark_recorded_wrapper';

CREATE  FUNCTION aicost."_ledger_take_recorded"(
	"usage_id" bigint /* i64 */
) RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_ledger_take_recorded_wrapper';

CREATE  FUNCTION aicost."_invalidate_tenants"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_invalidate_tenants_wrapper';

CREATE TABLE aicost.tenants (
    role   regrole PRIMARY KEY,
    org_id text NOT NULL CHECK (org_id <> '' AND octet_length(org_id) <= 256)
);

COMMENT ON TABLE aicost.tenants IS 'Roles confined to one org (set with ai_tenant_set); roles not listed act for any org';

COMMENT ON COLUMN aicost.tenants.role IS 'A role (usually a login role of one tenant''s application)';

COMMENT ON COLUMN aicost.tenants.org_id IS 'The org it acts for: its ledger rows, budgets, reservations and cache namespaces';

SELECT pg_catalog.pg_extension_config_dump('aicost.tenants', '');

CREATE FUNCTION aicost._tenants_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aicost._invalidate_tenants();
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION aicost._tenants_changed() IS 'Trigger: every backend re-reads the tenant map once the change commits';

CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aicost.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION aicost._tenants_changed();

ALTER TABLE aicost.tenants ENABLE ALWAYS TRIGGER tenants_changed;

CREATE FUNCTION aicost._check_id(p_what text, p_value text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF p_value = '' OR octet_length(p_value) > 256 THEN
        RAISE EXCEPTION '% must be 1 to 256 bytes long, not %', p_what, octet_length(p_value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

COMMENT ON FUNCTION aicost._check_id(text, text) IS 'Internal: ids given by callers are 1 to 256 bytes (22023 otherwise)';

CREATE FUNCTION aicost._check_money(p_what text, p_value numeric, p_positive boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF p_value IS NULL OR p_value = 'NaN' OR p_value >= 'Infinity' OR p_value < 0
       OR (p_positive AND p_value = 0) THEN
        RAISE EXCEPTION '% must be a finite % number of USD, not %', p_what,
              CASE WHEN p_positive THEN 'positive' ELSE 'non-negative' END, left(coalesce(p_value::text, 'NULL'), 64)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

COMMENT ON FUNCTION aicost._check_money(text, numeric, boolean) IS 'Internal: money given by callers is finite and non-negative (or positive), never NaN (22023 otherwise)';

CREATE FUNCTION @extschema@.ai_tenant_set(role regrole, org_id text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ai_tenant_set.role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM aicost._check_id('org_id', coalesce(ai_tenant_set.org_id, ''));
    INSERT INTO aicost.tenants AS t (role, org_id) VALUES (ai_tenant_set.role, ai_tenant_set.org_id)
    ON CONFLICT ON CONSTRAINT tenants_pkey DO UPDATE SET org_id = excluded.org_id;
END
$$;

COMMENT ON FUNCTION @extschema@.ai_tenant_set(regrole, text) IS 'Confines a role to one org: its usage rows, budgets, reservations, rate limits and cache namespaces are that org''s only';

CREATE FUNCTION @extschema@.ai_tenant_drop(role regrole) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    DELETE FROM aicost.tenants t WHERE t.role = ai_tenant_drop.role RETURNING true
$$;

COMMENT ON FUNCTION @extschema@.ai_tenant_drop(regrole) IS 'Removes a role''s org confinement (it then acts for any org); NULL if it had none';

CREATE  FUNCTION aicost."_guc"(
	"name" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_guc_wrapper';

CREATE  FUNCTION aicost."_visible"(
	"org" TEXT /* Option < & str > */
) RETURNS bool /* bool */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_visible_wrapper';

CREATE  FUNCTION aicost."_cache_ns"(
	"namespace" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_cache_ns_wrapper';

CREATE  FUNCTION aicost."_cache_ns_prefix"() RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_cache_ns_prefix_wrapper';

CREATE OR REPLACE FUNCTION aicost._cache_policy(p_namespace text,
    OUT max_entries bigint, OUT max_bytes bigint, OUT eviction text, OUT default_ttl interval,
    OUT cost_aware_ttl boolean, OUT durability text)
-- PL/pgSQL, not SQL: a SQL function with a FROM clause is planned again on every call.
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n aicost.cache_namespaces;
BEGIN
    SELECT * INTO n FROM aicost.cache_namespaces ns WHERE ns.namespace = p_namespace;
    max_entries := coalesce(n.max_entries, aicost._guc('aicost.cache_max_entries')::bigint);
    max_bytes := n.max_bytes;
    eviction := coalesce(n.eviction, 'lru');
    default_ttl := coalesce(n.default_ttl, aicost._guc('aicost.cache_default_ttl')::interval);
    cost_aware_ttl := coalesce(n.cost_aware_ttl, false);
    durability := coalesce(n.durability, 'logged');
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_cache_get(model text, request jsonb, namespace text DEFAULT 'default')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    k text := @extschema@.ai_cache_key(ai_cache_get.model, ai_cache_get.request, ai_cache_get.namespace);
    e record;
BEGIN
    SELECT l.response, l.cost INTO e FROM aicost._cache_lookup(k) l;
    PERFORM aicost._cache_count(aicost._cache_ns(ai_cache_get.namespace), k, e.response IS NOT NULL, e.cost);
    RETURN e.response;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_cache_put(model text, request jsonb, response jsonb, ttl interval DEFAULT NULL,
                             namespace text DEFAULT 'default', cost numeric DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    k text := @extschema@.ai_cache_key(ai_cache_put.model, ai_cache_put.request, ai_cache_put.namespace);
    pol record;
    sz record;
    v_model text;
    v_cost numeric;
    v_ttl interval;
    v_base interval;
    v_bytes integer;
    v_old integer;
    v_max integer := aicost._guc('aicost.cache_max_response_bytes')::integer;
    v_ns text := aicost._cache_ns(ai_cache_put.namespace);
BEGIN
    IF ai_cache_put.response IS NULL THEN
        RAISE EXCEPTION 'response must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF ai_cache_put.ttl IS NOT NULL AND ai_cache_put.ttl <= interval '0' THEN
        RAISE EXCEPTION 'ttl must be positive, not %', ai_cache_put.ttl
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave ttl NULL for the namespace default.';
    END IF;
    IF ai_cache_put.cost IS NOT NULL THEN
        PERFORM aicost._check_money('cost', ai_cache_put.cost);
    END IF;
    v_bytes := pg_column_size(ai_cache_put.response);
    IF v_bytes > v_max THEN
        RAISE EXCEPTION 'response of % bytes exceeds aicost.cache_max_response_bytes (%)', v_bytes, v_max
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    v_bytes := v_bytes + pg_column_size(ai_cache_put.request);
    -- Namespace row first (see the lock order above); the policy is read under that lock.
    INSERT INTO aicost.cache_namespaces AS n (namespace, puts) VALUES (v_ns, 1)
    ON CONFLICT (namespace) DO UPDATE SET puts = n.puts + 1;
    pol := aicost._cache_policy(v_ns);
    v_model := aicost._cache_model(ai_cache_put.model);
    v_cost := coalesce(ai_cache_put.cost, aicost._response_cost(ai_cache_put.model, ai_cache_put.response));
    v_base := coalesce(ai_cache_put.ttl, nullif(pol.default_ttl, interval '0'));
    v_ttl := v_base;
    IF pol.cost_aware_ttl AND v_ttl IS NOT NULL THEN
        v_ttl := v_ttl * aicost._cache_ttl_factor(v_cost, 0);
    END IF;
    -- The namespace's entries table by its durability; same statement for both.
    EXECUTE format('SELECT e.bytes FROM %s e WHERE e.key = $1 FOR UPDATE', aicost._cache_table(pol.durability))
       INTO v_old USING k;
    EXECUTE format($q$
        INSERT INTO %s AS e (key, namespace, model, request, response, cost, bytes, ttl, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp() + $9)
        ON CONFLICT (key) DO UPDATE
           SET response = excluded.response, request = excluded.request, cost = excluded.cost,
               bytes = excluded.bytes, created_at = excluded.created_at, ttl = excluded.ttl,
               expires_at = excluded.expires_at, hits = 0, last_hit_at = NULL$q$, aicost._cache_table(pol.durability))
      USING k, v_ns, v_model, ai_cache_put.request, ai_cache_put.response,
            v_cost, v_bytes, v_base, v_ttl;
    sz := aicost._cache_size_add(v_ns, pol.durability,
                                 CASE WHEN v_old IS NULL THEN 1 ELSE 0 END, v_bytes - coalesce(v_old, 0));
    IF sz.entries > pol.max_entries OR sz.bytes > coalesce(pol.max_bytes, sz.bytes) THEN
        PERFORM aicost._cache_evict(v_ns, k);
    END IF;
    RETURN k;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_cache_get_or_lock(model text, request jsonb, namespace text DEFAULT 'default',
                                     wait_timeout interval DEFAULT '30 seconds',
                                     OUT status text, OUT response jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    k text := @extschema@.ai_cache_key(ai_cache_get_or_lock.model, ai_cache_get_or_lock.request,
                                       ai_cache_get_or_lock.namespace);
    -- Advisory lock (class, object): a fixed class keeps clear of the application's own locks.
    v_class integer := 1634296691;  -- 'aics'
    v_obj integer := ('x' || substr(k, 1, 8))::bit(32)::integer;
    v_deadline timestamptz := clock_timestamp() + wait_timeout;
    v_old_timeout text := current_setting('lock_timeout');
    v_left interval;
    e record;
    v_ns text := aicost._cache_ns(ai_cache_get_or_lock.namespace);
BEGIN
    IF wait_timeout IS NULL OR wait_timeout < interval '0' THEN
        RAISE EXCEPTION 'wait_timeout must be a non-negative interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One statistics event per call: a hit, or a miss for compute and timeout.
    LOOP
        SELECT l.response, l.cost INTO e FROM aicost._cache_lookup(k) l;
        response := e.response;
        IF response IS NOT NULL THEN
            status := 'hit';
            PERFORM aicost._cache_count(v_ns, k, true, e.cost);
            RETURN;
        END IF;
        IF pg_try_advisory_xact_lock(v_class, v_obj) THEN
            status := 'compute';
            PERFORM aicost._cache_count(v_ns, k, false, NULL);
            RETURN;
        END IF;
        v_left := v_deadline - clock_timestamp();
        IF v_left <= interval '0' THEN
            status := 'timeout';
            PERFORM aicost._cache_count(v_ns, k, false, NULL);
            RETURN;
        END IF;
        -- Wait for the computing caller's transaction to end: a shared session lock conflicts with
        -- its exclusive transaction lock; take it and let it go at once.
        PERFORM set_config('lock_timeout', greatest(1, ceil(extract(epoch FROM v_left) * 1000))::bigint::text, true);
        BEGIN
            PERFORM pg_advisory_lock_shared(v_class, v_obj);
            PERFORM pg_advisory_unlock_shared(v_class, v_obj);
        EXCEPTION WHEN lock_not_available THEN
            PERFORM set_config('lock_timeout', v_old_timeout, true);
            status := 'timeout';
            PERFORM aicost._cache_count(v_ns, k, false, NULL);
            RETURN;
        END;
        PERFORM set_config('lock_timeout', v_old_timeout, true);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_cache_invalidate(key text DEFAULT NULL, namespace text DEFAULT NULL,
                                    model text DEFAULT NULL, older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_model text;
    v_n bigint := 0;
    ns text;
BEGIN
    IF key IS NULL AND namespace IS NULL AND model IS NULL AND older_than IS NULL THEN
        RAISE EXCEPTION 'ai_cache_invalidate needs at least one of key, namespace, model, older_than'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'To empty the whole cache: SELECT ai_cache_invalidate(older_than => interval ''0'').';
    END IF;
    IF model IS NOT NULL THEN
        v_model := aicost._cache_model(ai_cache_invalidate.model);
    END IF;
    FOR ns IN SELECT n FROM aicost._cache_namespaces() n
               WHERE ai_cache_invalidate.namespace IS NULL OR n = aicost._cache_ns(ai_cache_invalidate.namespace)
    LOOP
        PERFORM aicost._cache_lock_namespace(ns);
        v_n := v_n + aicost._cache_delete(ns,
            '($2 IS NULL OR c.key = $2) AND ($3 IS NULL OR c.model = $3)
             AND ($4 IS NULL OR c.created_at <= clock_timestamp() - $4)',
            ai_cache_invalidate.key, v_model, older_than);
    END LOOP;
    RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_cache_namespace_set(namespace text, max_entries bigint DEFAULT NULL, max_bytes bigint DEFAULT NULL,
                                       eviction text DEFAULT NULL, default_ttl interval DEFAULT NULL,
                                       cost_aware_ttl boolean DEFAULT NULL, durability text DEFAULT NULL)
RETURNS aicost.cache_namespaces
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    old_durability text;
    r aicost.cache_namespaces;
    v_ns text := aicost._cache_ns(ai_cache_namespace_set.namespace);
BEGIN
    IF eviction IS NOT NULL AND eviction NOT IN ('lru', 'lfu') THEN
        RAISE EXCEPTION 'unknown eviction policy "%"', eviction
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Eviction policies are lru and lfu.';
    END IF;
    IF durability IS NOT NULL AND durability NOT IN ('logged', 'unlogged') THEN
        RAISE EXCEPTION 'unknown durability "%"', durability
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Durability is logged or unlogged.';
    END IF;
    IF max_entries <= 0 OR max_bytes <= 0 OR default_ttl < interval '0' THEN
        RAISE EXCEPTION 'limits must be positive and default_ttl non-negative (0 = never expires)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM aicost._cache_lock_namespace(v_ns);
    SELECT n.durability INTO old_durability FROM aicost.cache_namespaces n
     WHERE n.namespace = v_ns;
    INSERT INTO aicost.cache_namespaces AS n (namespace, max_entries, max_bytes, eviction, default_ttl, cost_aware_ttl, durability)
    VALUES (v_ns, ai_cache_namespace_set.max_entries, ai_cache_namespace_set.max_bytes,
            coalesce(ai_cache_namespace_set.eviction, 'lru'), ai_cache_namespace_set.default_ttl,
            coalesce(ai_cache_namespace_set.cost_aware_ttl, false), coalesce(ai_cache_namespace_set.durability, 'logged'))
    ON CONFLICT (namespace) DO UPDATE
       SET max_entries = coalesce(excluded.max_entries, n.max_entries) ,
           max_bytes = coalesce(ai_cache_namespace_set.max_bytes, n.max_bytes),
           eviction = coalesce(ai_cache_namespace_set.eviction, n.eviction),
           default_ttl = coalesce(ai_cache_namespace_set.default_ttl, n.default_ttl),
           cost_aware_ttl = coalesce(ai_cache_namespace_set.cost_aware_ttl, n.cost_aware_ttl),
           durability = coalesce(ai_cache_namespace_set.durability, n.durability)
    RETURNING n.* INTO r;
    -- Durability moved: move the entries and their size row with it.
    IF coalesce(old_durability, 'logged') <> r.durability THEN
        IF r.durability = 'unlogged' THEN
            WITH m AS (DELETE FROM aicost.cache_entries c WHERE c.namespace = r.namespace RETURNING c.*)
            INSERT INTO aicost.cache_entries_unlogged SELECT * FROM m;
            WITH m AS (DELETE FROM aicost.cache_sizes s WHERE s.namespace = r.namespace RETURNING s.*)
            INSERT INTO aicost.cache_sizes_unlogged SELECT * FROM m;
        ELSE
            WITH m AS (DELETE FROM aicost.cache_entries_unlogged c WHERE c.namespace = r.namespace RETURNING c.*)
            INSERT INTO aicost.cache_entries SELECT * FROM m;
            WITH m AS (DELETE FROM aicost.cache_sizes_unlogged s WHERE s.namespace = r.namespace RETURNING s.*)
            INSERT INTO aicost.cache_sizes SELECT * FROM m;
        END IF;
    END IF;
    PERFORM aicost._cache_evict(r.namespace, '');
    RETURN r;
END
$$;

CREATE OR REPLACE VIEW aicost.cache_stats WITH (security_barrier) AS
SELECT ns.namespace,
       coalesce(sz.entries, 0) AS entries,
       coalesce(sz.bytes, 0) AS bytes,
       coalesce(n.hits, 0) + coalesce(ev.hits, 0) AS hits,
       coalesce(n.misses, 0) + coalesce(ev.misses, 0) AS misses,
       round((coalesce(n.hits, 0) + coalesce(ev.hits, 0))::numeric
             / nullif(coalesce(n.hits, 0) + coalesce(ev.hits, 0) + coalesce(n.misses, 0) + coalesce(ev.misses, 0), 0), 4) AS hit_ratio,
       coalesce(n.saved_usd, 0) + coalesce(ev.saved_usd, 0) AS saved_usd,
       coalesce(n.puts, 0) AS puts,
       coalesce(n.evictions, 0) AS evictions,
       coalesce(n.expirations, 0) AS expirations,
       coalesce(n.eviction, 'lru') AS eviction,
       coalesce(n.durability, 'logged') AS durability,
       n.stats_reset
  FROM (SELECT namespace FROM aicost.cache_namespaces
        UNION SELECT namespace FROM aicost.cache_sizes
        UNION SELECT namespace FROM aicost.cache_sizes_unlogged
        UNION SELECT namespace FROM aicost.cache_events) ns
  LEFT JOIN aicost.cache_namespaces n ON n.namespace = ns.namespace
  LEFT JOIN (SELECT namespace, entries, bytes FROM aicost.cache_sizes
             UNION ALL SELECT namespace, entries, bytes FROM aicost.cache_sizes_unlogged) sz ON sz.namespace = ns.namespace
  LEFT JOIN (SELECT e.namespace, count(*) FILTER (WHERE e.hit) AS hits, count(*) FILTER (WHERE NOT e.hit) AS misses,
                    sum(e.saved_usd) AS saved_usd
               FROM aicost.cache_events e GROUP BY e.namespace) ev ON ev.namespace = ns.namespace
 WHERE starts_with(ns.namespace, aicost._cache_ns_prefix());

CREATE OR REPLACE FUNCTION @extschema@.ai_cache_stats_reset(namespace text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    ns text;
BEGIN
    FOR ns IN SELECT n FROM aicost._cache_namespaces() n
               WHERE ai_cache_stats_reset.namespace IS NULL OR n = aicost._cache_ns(ai_cache_stats_reset.namespace)
    LOOP
        PERFORM aicost._cache_rollup_ns(ns);
        UPDATE aicost.cache_namespaces n
           SET hits = 0, misses = 0, saved_usd = 0, puts = 0, evictions = 0, expirations = 0, stats_reset = now()
         WHERE n.namespace = ns;
    END LOOP;
END
$$;

CREATE UNIQUE INDEX usage_org_request_key ON aicost.usage ((coalesce(org_id, '')), request_id);

COMMENT ON COLUMN aicost.usage.request_id IS 'Request id, unique per org: the same request is never charged twice';

COMMENT ON COLUMN aicost.usage.org_id IS 'Organization (charged to its org budget); set by the trigger for a role confined to an org';

COMMENT ON COLUMN aicost.usage.cache_hit IS 'Answered from a cache: costs 0 unless a cost is given (aicost_admin only)';

COMMENT ON COLUMN aicost.budgets.org_id IS 'The org it belongs to (its scope_id for an org budget); NULL = shared: charged by rows of any org, invisible to roles confined to an org';

COMMENT ON COLUMN aicost.budget_reservations.request_id IS 'The usage row with this request_id (and org) settles the reservation';

COMMENT ON COLUMN aicost.budget_reservations.org_id IS 'Org of its budget: only usage rows of that org (or any org, when NULL) settle it';

COMMENT ON COLUMN aicost.rate_limits.org_id IS 'The org it belongs to (its scope_id for an org limit); NULL = counts rows of any org';

CREATE OR REPLACE FUNCTION aicost._budget_thresholds(b aicost.budgets, p_start timestamptz, p_old numeric, p_new numeric)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('alert', b.alert_pct), ('throttle', b.throttle_pct), ('hard', b.hard_pct)) AS x(name, pct)
    LOOP
        IF p_old < trim_scale(b.amount * t.pct / 100) AND p_new >= trim_scale(b.amount * t.pct / 100) THEN
            INSERT INTO aicost.budget_alerts (budget_id, period_start, threshold, spent, limit_usd)
            VALUES (b.budget_id, p_start, t.name, p_new, b.amount)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                PERFORM aicost._stat_budget(b.budget_id, 'alert');
                -- Every role may LISTEN: the payload names the alert, its details are in
                -- aicost.budget_alerts (readable by aicost_reader).
                PERFORM pg_notify('aicost_budget', json_build_object(
                    'budget_id', b.budget_id, 'period_start', p_start, 'threshold', t.name)::text);
            END IF;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION aicost._covering_budgets(p_row aicost.usage) RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(bu.budget_id ORDER BY bu.budget_id), '{}')
              FROM aicost.budgets bu
             WHERE ((bu.scope = 'org' AND bu.scope_id = p_row.org_id)
                 OR (bu.scope = 'team' AND bu.scope_id = p_row.team_id)
                 OR (bu.scope = 'user' AND bu.scope_id = p_row.user_id)
                 OR (bu.scope = 'api_key' AND bu.scope_id = p_row.api_key_id))
               AND (bu.org_id IS NULL OR bu.org_id = p_row.org_id));
END
$$;

COMMENT ON FUNCTION aicost._covering_budgets(aicost.usage) IS 'Internal: ids of the budgets covering a ledger row (of its org, or shared), in lock order';

CREATE FUNCTION aicost._settle_reservations(p_row aicost.usage, p_budgets bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE aicost.budget_reservations r SET settled_at = clock_timestamp(), usage_id = p_row.usage_id
     WHERE r.request_id = p_row.request_id AND r.settled_at IS NULL
       AND (r.org_id IS NULL OR r.org_id = p_row.org_id)
       AND (p_budgets IS NULL OR r.budget_id = ANY (p_budgets));
END
$$;

COMMENT ON FUNCTION aicost._settle_reservations(aicost.usage, bigint[]) IS 'Internal: settles the reservations a ledger row''s request_id (and org) names, on the given budgets or all';

CREATE OR REPLACE FUNCTION aicost._charge(p_row aicost.usage, p_cost numeric, p_budgets bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b aicost.budgets;
    v_id bigint;
    v_start timestamptz;
    v_spent numeric;
    v_reserved numeric;
    d record;
BEGIN
    IF p_row.request_id IS NOT NULL THEN
        -- This row's reservations stop counting now (under the spend locks in per-backend mode).
        PERFORM aicost._settle_reservations(p_row, p_budgets);
    END IF;
    IF aicost._shmem_budgets() THEN
        FOR d IN SELECT * FROM aicost._charge_shared(p_budgets, p_cost, p_row.created_at, p_row.request_id, p_row.usage_id) LOOP
            SELECT * INTO b FROM aicost.budgets bu WHERE bu.budget_id = d.budget_id;
            PERFORM aicost._budget_exceeded(b, d.period_start, d.spent, d.reserved, d.amount);
        END LOOP;
        RETURN;
    END IF;
    FOREACH v_id IN ARRAY p_budgets LOOP
        SELECT * INTO b FROM aicost.budgets bu WHERE bu.budget_id = v_id;
        CONTINUE WHEN NOT FOUND;  -- dropped meanwhile
        v_start := aicost._period_start(b.period, b.time_zone, p_row.created_at);
        v_spent := aicost._lock_spend(b.budget_id, v_start);
        -- Re-read under the lock: ai_budget_set() may have committed while this writer waited.
        SELECT * INTO b FROM aicost.budgets bu WHERE bu.budget_id = v_id;
        CONTINUE WHEN NOT FOUND;
        v_reserved := aicost._reserved(b.budget_id, v_start);
        IF (v_spent + v_reserved + p_cost) * 100 > b.amount * b.hard_pct THEN  -- exact: no division
            PERFORM aicost._stat_budget(b.budget_id, 'denial');
            PERFORM aicost._budget_exceeded(b, v_start, v_spent, v_reserved, p_cost);
        END IF;
        UPDATE aicost.budget_spend s SET spent = s.spent + p_cost
         WHERE s.budget_id = b.budget_id AND s.period_start = v_start AND s.slot = 0;
        PERFORM aicost._stat_budget(b.budget_id, 'charge');
        IF v_spent + p_cost >= b.amount * b.alert_pct / 100 AND v_spent < b.amount * b.hard_pct / 100 THEN
            PERFORM aicost._budget_thresholds(b, v_start, v_spent, v_spent + p_cost);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION aicost._rate_count(p_row aicost.usage) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    l aicost.rate_limits;
    v_ws timestamptz;
    v_req bigint;
    v_tok bigint;
    v_throttled boolean;
    v_max_req bigint;
    v_max_tok bigint;
    v_tokens bigint := coalesce(p_row.in_tokens, 0) + coalesce(p_row.out_tokens, 0);
BEGIN
    FOR l IN
        SELECT * FROM aicost.rate_limits rl
         WHERE ((rl.scope = 'org' AND rl.scope_id = p_row.org_id)
             OR (rl.scope = 'team' AND rl.scope_id = p_row.team_id)
             OR (rl.scope = 'user' AND rl.scope_id = p_row.user_id)
             OR (rl.scope = 'api_key' AND rl.scope_id = p_row.api_key_id))
           AND (rl.org_id IS NULL OR rl.org_id = p_row.org_id)
         ORDER BY rl.limit_id
    LOOP
        v_ws := date_bin(l.window_size, p_row.created_at, timestamptz '2000-01-01 00:00:00+00');
        UPDATE aicost.rate_counters c SET requests = c.requests + 1, tokens = c.tokens + v_tokens
         WHERE c.limit_id = l.limit_id AND c.window_start = v_ws
        RETURNING c.requests, c.tokens INTO v_req, v_tok;
        IF NOT FOUND THEN
            -- Windows that ended more than a day ago are no longer needed (late rows within a day
            -- still find their window's counter).
            DELETE FROM aicost.rate_counters c
             WHERE c.limit_id = l.limit_id AND c.window_start < v_ws
               AND c.window_start + l.window_size < now() - interval '1 day';
            INSERT INTO aicost.rate_counters AS c (limit_id, window_start, requests, tokens)
            VALUES (l.limit_id, v_ws, 1, v_tokens)
            ON CONFLICT (limit_id, window_start) DO UPDATE
               SET requests = c.requests + 1, tokens = c.tokens + excluded.tokens
            RETURNING c.requests, c.tokens INTO v_req, v_tok;
        END IF;
        v_throttled := aicost._throttled(l.scope, l.scope_id, p_row.created_at);
        v_max_req := CASE WHEN v_throttled THEN coalesce(l.throttled_requests, l.max_requests) ELSE l.max_requests END;
        v_max_tok := CASE WHEN v_throttled THEN coalesce(l.throttled_tokens, l.max_tokens) ELSE l.max_tokens END;
        IF v_req > v_max_req OR v_tok > v_max_tok THEN
            RAISE EXCEPTION USING
                ERRCODE = 'AC002',
                MESSAGE = format('rate limit exceeded: %s "%s" allows %s requests and %s tokens per %s%s',
                                 l.scope, l.scope_id, coalesce(v_max_req::text, 'unlimited'),
                                 coalesce(v_max_tok::text, 'unlimited'), l.window_size,
                                 CASE WHEN v_throttled THEN ' (throttled: its budget is past the throttle threshold)' ELSE '' END),
                DETAIL = format('window starting %s: %s requests, %s tokens with this one', v_ws, v_req, v_tok),
                HINT = format('Retry after %s.', v_ws + l.window_size);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION aicost._usage_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_counts bigint[];
    v_cost numeric;
    v_ids bigint[];
    v_mode text := aicost._guc('aicost.ledger_unknown_model');
    v_org text := aicost._tenant_org();
BEGIN
    -- A role confined to an org records usage for that org only.
    IF v_org IS NOT NULL THEN
        IF NEW.org_id IS DISTINCT FROM v_org AND NEW.org_id IS NOT NULL THEN
            RAISE EXCEPTION 'this role records usage for org "%" only, not "%"', v_org, NEW.org_id
                USING ERRCODE = 'insufficient_privilege', HINT = 'Leave org_id out: it is filled in.';
        END IF;
        NEW.org_id := v_org;
    END IF;
    -- The extension's own columns come only from roles that may write them (a column privilege
    -- is not checked for a value that comes from a default, e.g. of a view over this table).
    IF (NEW.budget_ids IS NOT NULL OR NEW.cost IS NOT NULL OR NEW.cache_hit OR NEW.price_ids IS NOT NULL)
       AND NOT aicost._may_record() THEN
        RAISE EXCEPTION 'permission denied to set cost, cache_hit, price_ids or budget_ids of a usage row'
            USING ERRCODE = 'insufficient_privilege', HINT = 'They are the extension''s: leave them out.';
    END IF;
    -- A row that comes with its budget_ids (a pg_dump restore, a copy of another ledger; only
    -- admins may write the column) was priced and charged where it was first recorded: it is
    -- stored as it is, and charges, counts and settles nothing (see the AFTER trigger's WHEN).
    IF NEW.budget_ids IS NOT NULL THEN
        IF NEW.cost IS NULL AND NEW.status <> 'unpriced' THEN
            RAISE EXCEPTION 'a recorded usage row (one given its budget_ids) needs its cost, or status ''unpriced'''
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM aicost._ledger_mark_recorded(NEW.usage_id);
        RETURN NEW;
    END IF;
    -- The budgets charged, decided below: '{}' rather than NULL, so a restore knows the row.
    NEW.budget_ids := '{}';
    PERFORM aicost._check_id('org_id', NEW.org_id), aicost._check_id('team_id', NEW.team_id),
            aicost._check_id('user_id', NEW.user_id), aicost._check_id('api_key_id', NEW.api_key_id),
            aicost._check_id('request_id', NEW.request_id);
    -- A backdated (or future) row would be charged to another budget period.
    PERFORM aicost._check_created_at(NEW.created_at);
    IF NEW.usage IS NOT NULL AND (NEW.in_tokens IS NULL OR NEW.out_tokens IS NULL) THEN
        v_counts := aicost._usage_counts(NEW.usage);
        NEW.in_tokens := coalesce(NEW.in_tokens, v_counts[1]);
        NEW.out_tokens := coalesce(NEW.out_tokens, v_counts[2]);
        IF NEW.cached_tokens = 0 AND NEW.cache_write_tokens = 0 AND NEW.cache_write_1h_tokens = 0 THEN
            NEW.cached_tokens := v_counts[3];
            NEW.cache_write_tokens := v_counts[4];
            NEW.cache_write_1h_tokens := v_counts[5];
        END IF;
    END IF;
    IF NEW.in_tokens IS NULL OR NEW.out_tokens IS NULL THEN
        RAISE EXCEPTION 'usage row needs in_tokens and out_tokens, or a provider usage object'
            USING ERRCODE = 'not_null_violation';
    END IF;
    IF NEW.cost IS NULL AND NEW.cache_hit THEN
        NEW.cost := 0;  -- answered from a cache: no provider charge
    END IF;
    IF NEW.cost IS NULL THEN
        SELECT p.cost, p.price_ids INTO v_cost, v_ids
          FROM aicost._ledger_price(NEW.model, NEW.in_tokens, NEW.out_tokens, NEW.cached_tokens,
                                    NEW.cache_write_tokens, NEW.cache_write_1h_tokens, NEW.service_tier,
                                    NEW.created_at, v_mode = 'unpriced') p;
        NEW.cost := v_cost;
        NEW.price_ids := v_ids;
        IF v_cost IS NULL THEN
            NEW.status := 'unpriced';
        END IF;
    END IF;
    IF NEW.status = 'unpriced' AND NEW.cost IS NOT NULL THEN
        RAISE EXCEPTION 'status ''unpriced'' is reserved for rows the trigger could not price'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Rate limits and budgets are counted by the AFTER trigger, once the row and its indexes are
    -- written: their locks are held as short a time as possible, and a duplicate request_id (also
    -- one skipped by ON CONFLICT DO NOTHING) is never counted.
    IF NEW.cost IS NOT NULL AND (NEW.cost > 0 OR NEW.request_id IS NOT NULL) THEN
        NEW.budget_ids := aicost._covering_budgets(NEW);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION aicost._usage_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Rate limits first: whether a scope is throttled is decided by its spend before this row.
    IF EXISTS (SELECT 1 FROM aicost.rate_limits) THEN
        PERFORM aicost._rate_count(NEW);
    END IF;
    IF cardinality(NEW.budget_ids) > 0 THEN
        PERFORM aicost._charge(NEW, NEW.cost, NEW.budget_ids);
    END IF;
    -- A reservation held on a budget that does not cover this row is settled all the same.
    IF NEW.request_id IS NOT NULL THEN
        PERFORM aicost._settle_reservations(NEW, NULL);
    END IF;
    RETURN NULL;
END
$$;

-- Every stored row names the budgets it was charged to ('{}' for none), so that a restore can tell
-- rows already accounted (they come with the column) from new ones.
ALTER TABLE aicost.usage DISABLE TRIGGER usage_insert_only;
UPDATE aicost.usage SET budget_ids = '{}' WHERE budget_ids IS NULL;
ALTER TABLE aicost.usage ENABLE TRIGGER usage_insert_only;
ALTER TABLE aicost.usage ALTER COLUMN budget_ids SET NOT NULL;
COMMENT ON COLUMN aicost.usage.budget_ids IS 'Budgets the cost was charged to (set by the trigger; a row inserted with it, as by a restore, is stored as already accounted)';
-- A restored (recorded) row queues no AFTER event: see the BEFORE trigger.
DROP TRIGGER usage_after_insert ON aicost.usage;
-- The WHEN clause runs right after each row is written: a recorded row queues no event.
CREATE TRIGGER usage_after_insert AFTER INSERT ON aicost.usage
    FOR EACH ROW WHEN (NOT aicost._ledger_take_recorded(NEW.usage_id))
    EXECUTE FUNCTION aicost._usage_after_insert();

CREATE OR REPLACE FUNCTION aicost._usage_insert_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Read through Rust: a placeholder a caller SET before the library loaded is never trusted.
    IF aicost._ledger_maintenance() THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'aicost.usage is insert-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Budgets are accounted at insert time; use ai_reprice_unpriced() to price unpriced rows.';
END
$$;

CREATE OR REPLACE FUNCTION aicost._check_scope(p_scope text, p_scope_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_scope IS NULL OR p_scope NOT IN ('org', 'team', 'user', 'api_key') THEN
        RAISE EXCEPTION 'unknown scope kind "%"', left(p_scope, 64)  -- a hostile value is not echoed whole
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Scopes are org, team, user and api_key.';
    END IF;
    IF p_scope_id IS NULL OR p_scope_id = '' THEN
        RAISE EXCEPTION 'scope_id must not be NULL or empty' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM aicost._check_id('scope_id', p_scope_id);
END
$$;

CREATE FUNCTION @extschema@.ai_budget_set(scope text, scope_id text, amount numeric, period text DEFAULT 'month',
                              alert_pct numeric DEFAULT 80, throttle_pct numeric DEFAULT 95,
                              hard_pct numeric DEFAULT 100, time_zone text DEFAULT NULL,
                              org_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_tz text := coalesce(ai_budget_set.time_zone, nullif(aicost._guc('aicost.budget_timezone'), ''), 'UTC');
    v_org text := CASE WHEN ai_budget_set.scope = 'org' THEN ai_budget_set.scope_id ELSE ai_budget_set.org_id END;
    v_id bigint;
BEGIN
    PERFORM aicost._check_scope(ai_budget_set.scope, ai_budget_set.scope_id);
    PERFORM aicost._check_money('amount', ai_budget_set.amount);
    IF ai_budget_set.scope = 'org' AND ai_budget_set.org_id IS DISTINCT FROM ai_budget_set.scope_id
       AND ai_budget_set.org_id IS NOT NULL THEN
        RAISE EXCEPTION 'an org budget belongs to its own org' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM aicost._check_id('org_id', v_org);
    IF ai_budget_set.period IS NULL OR ai_budget_set.period NOT IN ('day', 'week', 'month', 'lifetime') THEN
        RAISE EXCEPTION 'unknown budget period "%"', ai_budget_set.period
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Periods are day, week, month and lifetime.';
    END IF;
    IF NOT (0 < ai_budget_set.alert_pct AND ai_budget_set.alert_pct <= ai_budget_set.throttle_pct
            AND ai_budget_set.throttle_pct <= ai_budget_set.hard_pct AND ai_budget_set.hard_pct < 'Infinity') THEN
        RAISE EXCEPTION 'thresholds out of order: need 0 < alert_pct (%) <= throttle_pct (%) <= hard_pct (%)',
              ai_budget_set.alert_pct, ai_budget_set.throttle_pct, ai_budget_set.hard_pct
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = v_tz)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_abbrevs WHERE abbrev = v_tz) THEN
        RAISE EXCEPTION 'unknown time zone "%"', v_tz USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM aicost.budgets bu
                WHERE bu.scope = ai_budget_set.scope AND bu.scope_id = ai_budget_set.scope_id
                  AND (bu.period, bu.time_zone) IS DISTINCT FROM (ai_budget_set.period, v_tz)
                  AND EXISTS (SELECT 1 FROM aicost.budget_spend s WHERE s.budget_id = bu.budget_id)) THEN
        RAISE EXCEPTION 'cannot change the period or time zone of the budget of % "%": it has recorded spend',
              ai_budget_set.scope, ai_budget_set.scope_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Drop it with ai_budget_drop() and create it again; its spend is not carried over.';
    END IF;
    INSERT INTO aicost.budgets AS b (scope, scope_id, amount, period, time_zone, alert_pct, throttle_pct, hard_pct, org_id)
    VALUES (ai_budget_set.scope, ai_budget_set.scope_id, ai_budget_set.amount, ai_budget_set.period, v_tz,
            ai_budget_set.alert_pct, ai_budget_set.throttle_pct, ai_budget_set.hard_pct, v_org)
    ON CONFLICT (scope, scope_id) DO UPDATE
       SET amount = excluded.amount, period = excluded.period, time_zone = excluded.time_zone,
           alert_pct = excluded.alert_pct, throttle_pct = excluded.throttle_pct, hard_pct = excluded.hard_pct,
           org_id = excluded.org_id
    RETURNING b.budget_id INTO v_id;
    RETURN v_id;
END
$$;

COMMENT ON FUNCTION @extschema@.ai_budget_set(text, text, numeric, text, numeric, numeric, numeric, text, text) IS 'Creates or changes the budget (USD per period) of an org, team, user or api_key (of org org_id, or shared when NULL), with alert, throttle and hard-stop percentages';

-- The one rule for a budget's state, used by ai_budget_check(), aicost.budget_status and the
-- rate limits' throttle: with p = spent + reserved + estimate, 'deny' when p would pass the hard
-- limit or nothing is left, else 'throttle' and 'alert' at their thresholds. Exact: p * 100 is
-- compared with amount * pct (no division).
CREATE FUNCTION aicost._budget_state(p_amount numeric, p_alert_pct numeric, p_throttle_pct numeric,
                                     p_hard_pct numeric, p_spent numeric, p_reserved numeric,
                                     p_estimate numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN (p_spent + p_reserved + p_estimate) * 100 > p_amount * p_hard_pct
                  OR (p_spent + p_reserved) * 100 >= p_amount * p_hard_pct THEN 'deny'
                WHEN (p_spent + p_reserved + p_estimate) * 100 >= p_amount * p_throttle_pct THEN 'throttle'
                WHEN (p_spent + p_reserved + p_estimate) * 100 >= p_amount * p_alert_pct THEN 'alert'
                ELSE 'ok' END
$$;
COMMENT ON FUNCTION aicost._budget_state(numeric, numeric, numeric, numeric, numeric, numeric, numeric) IS 'Internal: a budget''s state (ok, alert, throttle, deny) for spent, reserved and an estimate: the one rule';

CREATE OR REPLACE FUNCTION aicost._throttled(p_scope text, p_scope_id text, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(bool_or(aicost._budget_state(b.amount, b.alert_pct, b.throttle_pct, b.hard_pct,
                                                         aicost._spent(b.budget_id, aicost._period_start(b.period, b.time_zone, p_at)),
                                                         0, 0) IN ('throttle', 'deny')), false)
              FROM aicost.budgets b
             WHERE b.scope = p_scope AND b.scope_id = p_scope_id);
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_budget_check(scope text, scope_id text, estimated_cost numeric DEFAULT 0,
                                OUT state text, OUT remaining numeric, OUT spent numeric, OUT reserved numeric,
                                OUT limit_usd numeric, OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    b aicost.budgets;
BEGIN
    PERFORM aicost._check_scope(ai_budget_check.scope, ai_budget_check.scope_id);
    PERFORM aicost._check_money('estimated_cost', estimated_cost);
    SELECT * INTO b FROM aicost.budgets bu WHERE bu.scope = ai_budget_check.scope AND bu.scope_id = ai_budget_check.scope_id
       AND aicost._visible(bu.org_id);
    IF NOT FOUND THEN
        state := 'ok';  -- no budget: nothing limits this scope
        RETURN;
    END IF;
    period_start := aicost._period_start(b.period, b.time_zone, now());
    period_end := aicost._period_end(b.period, b.time_zone, period_start);
    spent := aicost._spent(b.budget_id, ai_budget_check.period_start);
    PERFORM aicost._stat_budget(b.budget_id, 'check');
    reserved := aicost._reserved(b.budget_id, period_start);
    limit_usd := trim_scale(b.amount * b.hard_pct / 100);
    remaining := trim_scale(greatest(limit_usd - spent - reserved, 0));
    state := aicost._budget_state(b.amount, b.alert_pct, b.throttle_pct, b.hard_pct, spent, reserved, estimated_cost);
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_budget_reserve(scope text, scope_id text, amount numeric, request_id text DEFAULT NULL,
                                  ttl interval DEFAULT '5 minutes')
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    b aicost.budgets;
    v_start timestamptz;
    v_spent numeric;
    v_reserved numeric;
    v_id bigint;
    d record;
BEGIN
    PERFORM aicost._check_scope(ai_budget_reserve.scope, ai_budget_reserve.scope_id);
    PERFORM aicost._check_money('amount', ai_budget_reserve.amount, true);
    PERFORM aicost._check_id('request_id', ai_budget_reserve.request_id);
    IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 day' THEN
        RAISE EXCEPTION 'ttl must be positive and at most a day, not %', ttl USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO b FROM aicost.budgets bu WHERE bu.scope = ai_budget_reserve.scope AND bu.scope_id = ai_budget_reserve.scope_id
       AND aicost._visible(bu.org_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no budget for % "%"', ai_budget_reserve.scope, ai_budget_reserve.scope_id
            USING ERRCODE = 'undefined_object', HINT = 'Create one with ai_budget_set().';
    END IF;
    v_start := aicost._period_start(b.period, b.time_zone, now());
    IF aicost._shmem_budgets() THEN
        -- Held in shared memory until this transaction ends, then counted from the table.
        SELECT * INTO d FROM aicost._admit_shared(b.budget_id, v_start, ai_budget_reserve.amount, true);
        IF FOUND THEN
            PERFORM aicost._budget_exceeded(b, d.period_start, d.spent, d.reserved, d.amount);
        END IF;
    ELSE
        v_spent := aicost._lock_spend(b.budget_id, v_start);
        SELECT * INTO b FROM aicost.budgets bu WHERE bu.budget_id = b.budget_id;  -- re-read under the lock
        v_reserved := aicost._reserved(b.budget_id, v_start);
        IF (v_spent + v_reserved + ai_budget_reserve.amount) * 100 > b.amount * b.hard_pct THEN
            PERFORM aicost._stat_budget(b.budget_id, 'denial');
            PERFORM aicost._budget_exceeded(b, v_start, v_spent, v_reserved, ai_budget_reserve.amount);
        END IF;
    END IF;
    PERFORM aicost._stat_budget(b.budget_id, 'reservation');
    INSERT INTO aicost.budget_reservations (budget_id, period_start, amount, request_id, expires_at, org_id)
    VALUES (b.budget_id, v_start, ai_budget_reserve.amount, ai_budget_reserve.request_id, clock_timestamp() + ttl, b.org_id)
    RETURNING reservation_id INTO v_id;
    -- A new version of the spend row: a REPEATABLE READ transaction whose snapshot predates this
    -- reservation (and so cannot see it) fails with 40001 when it locks the row, instead of
    -- ignoring the hold.
    UPDATE aicost.budget_spend s SET spent = s.spent
     WHERE s.budget_id = b.budget_id AND s.period_start = v_start AND s.slot = 0;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.ai_budget_release(reservation_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    UPDATE aicost.budget_reservations r SET settled_at = clock_timestamp()
     WHERE r.reservation_id = ai_budget_release.reservation_id AND r.settled_at IS NULL
       AND aicost._visible(r.org_id)
    RETURNING true
$$;

COMMENT ON FUNCTION @extschema@.ai_budget_release(bigint) IS 'Releases a reservation early; NULL if it was already settled or released (or is another org''s)';

CREATE FUNCTION @extschema@.ai_rate_limit_set(scope text, scope_id text, window_size interval,
                                  max_requests bigint DEFAULT NULL, max_tokens bigint DEFAULT NULL,
                                  throttled_requests bigint DEFAULT NULL, throttled_tokens bigint DEFAULT NULL,
                                  org_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
    v_org text := CASE WHEN ai_rate_limit_set.scope = 'org' THEN ai_rate_limit_set.scope_id ELSE ai_rate_limit_set.org_id END;
BEGIN
    PERFORM aicost._check_scope(ai_rate_limit_set.scope, ai_rate_limit_set.scope_id);
    PERFORM aicost._check_id('org_id', v_org);
    IF window_size IS NULL OR window_size <= interval '0' OR extract(month FROM window_size) <> 0
       OR extract(year FROM window_size) <> 0 THEN
        RAISE EXCEPTION 'window_size must be a positive interval of days or less (e.g. ''1 hour'')'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_requests < 0 OR max_tokens < 0 OR throttled_requests < 0 OR throttled_tokens < 0 THEN
        RAISE EXCEPTION 'limits must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO aicost.rate_limits AS l (scope, scope_id, window_size, max_requests, max_tokens, throttled_requests, throttled_tokens, org_id)
    VALUES (ai_rate_limit_set.scope, ai_rate_limit_set.scope_id, ai_rate_limit_set.window_size,
            ai_rate_limit_set.max_requests, ai_rate_limit_set.max_tokens,
            ai_rate_limit_set.throttled_requests, ai_rate_limit_set.throttled_tokens, v_org)
    ON CONFLICT (scope, scope_id, window_size) DO UPDATE
       SET max_requests = excluded.max_requests, max_tokens = excluded.max_tokens,
           throttled_requests = excluded.throttled_requests, throttled_tokens = excluded.throttled_tokens,
           org_id = excluded.org_id
    RETURNING l.limit_id INTO v_id;
    RETURN v_id;
END
$$;

COMMENT ON FUNCTION @extschema@.ai_rate_limit_set(text, text, interval, bigint, bigint, bigint, bigint, text) IS 'Sets requests and tokens per window for a scope, with throttled values used while its budget is past the throttle threshold';

CREATE OR REPLACE FUNCTION @extschema@.ai_rate_limit_check(scope text, scope_id text, tokens bigint DEFAULT 0,
                                    OUT allowed boolean, OUT requests_used bigint, OUT requests_limit bigint,
                                    OUT tokens_used bigint, OUT tokens_limit bigint, OUT reset_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    l aicost.rate_limits;
    v_ws timestamptz;
    v_req bigint;
    v_tok bigint;
    v_thr boolean;
    v_max_req bigint;
    v_max_tok bigint;
    v_refuses boolean;
BEGIN
    PERFORM aicost._check_scope(ai_rate_limit_check.scope, ai_rate_limit_check.scope_id);
    IF ai_rate_limit_check.tokens IS NULL OR ai_rate_limit_check.tokens < 0 THEN
        RAISE EXCEPTION 'tokens must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    allowed := true;
    v_thr := aicost._throttled(ai_rate_limit_check.scope, ai_rate_limit_check.scope_id, now());
    -- Reports the first window that would refuse the request, else the longest window.
    FOR l IN SELECT * FROM aicost.rate_limits rl
              WHERE rl.scope = ai_rate_limit_check.scope AND rl.scope_id = ai_rate_limit_check.scope_id
                AND aicost._visible(rl.org_id)
              ORDER BY rl.window_size DESC
    LOOP
        v_ws := date_bin(l.window_size, now(), timestamptz '2000-01-01 00:00:00+00');
        SELECT c.requests, c.tokens INTO v_req, v_tok FROM aicost.rate_counters c
         WHERE c.limit_id = l.limit_id AND c.window_start = v_ws;
        v_req := coalesce(v_req, 0);
        v_tok := coalesce(v_tok, 0);
        v_max_req := CASE WHEN v_thr THEN coalesce(l.throttled_requests, l.max_requests) ELSE l.max_requests END;
        v_max_tok := CASE WHEN v_thr THEN coalesce(l.throttled_tokens, l.max_tokens) ELSE l.max_tokens END;
        v_refuses := coalesce(v_req + 1 > v_max_req, false) OR coalesce(v_tok + ai_rate_limit_check.tokens > v_max_tok, false);
        IF requests_used IS NULL OR (v_refuses AND allowed) THEN
            requests_used := v_req; requests_limit := v_max_req;
            tokens_used := v_tok; tokens_limit := v_max_tok;
            reset_at := v_ws + l.window_size;
        END IF;
        allowed := allowed AND NOT v_refuses;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW aicost.budget_status WITH (security_barrier) AS
SELECT b.budget_id, b.scope, b.scope_id, b.period, p.period_start,
       aicost._period_end(b.period, b.time_zone, p.period_start) AS period_end,
       b.amount, trim_scale(b.amount * b.hard_pct / 100) AS limit_usd,
       s.spent,
       r.reserved,
       trim_scale(greatest(b.amount * b.hard_pct / 100 - s.spent - r.reserved, 0)) AS remaining,
       round(100 * s.spent / nullif(b.amount, 0), 2) AS percent,
       aicost._budget_state(b.amount, b.alert_pct, b.throttle_pct, b.hard_pct, s.spent, r.reserved, 0) AS state,
       b.org_id
  FROM aicost.budgets b
 CROSS JOIN LATERAL (SELECT aicost._period_start(b.period, b.time_zone, now()) AS period_start) p
 CROSS JOIN LATERAL (SELECT coalesce(sum(sp.spent), 0) AS spent FROM aicost.budget_spend sp
                      WHERE sp.budget_id = b.budget_id AND sp.period_start = p.period_start) s
 CROSS JOIN LATERAL (SELECT coalesce(sum(rs.amount), 0) AS reserved FROM aicost.budget_reservations rs
                      WHERE rs.budget_id = b.budget_id AND rs.period_start = p.period_start
                        AND rs.settled_at IS NULL AND rs.expires_at > clock_timestamp()) r
 WHERE aicost._visible(b.org_id);

COMMENT ON VIEW aicost.budget_status IS 'Each budget''s current period: spent, reserved, remaining, percent and state (ok, alert, throttle, deny); a role confined to an org sees that org''s budgets only';

CREATE OR REPLACE VIEW aicost.spend_daily WITH (security_barrier) AS
SELECT (u.created_at AT TIME ZONE coalesce(nullif(aicost._guc('aicost.budget_timezone'), ''), 'UTC'))::date AS day,
       s.scope, s.scope_id, u.model,
       count(*) AS requests, sum(u.in_tokens) AS in_tokens, sum(u.out_tokens) AS out_tokens,
       sum(u.cost) AS cost, count(*) FILTER (WHERE u.status = 'unpriced') AS unpriced
  FROM aicost.usage u
 CROSS JOIN LATERAL (VALUES ('org', u.org_id), ('team', u.team_id), ('user', u.user_id), ('api_key', u.api_key_id)) AS s(scope, scope_id)
 WHERE s.scope_id IS NOT NULL AND aicost._visible(u.org_id)
 GROUP BY 1, 2, 3, 4;

COMMENT ON VIEW aicost.spend_daily IS 'Spend per day (in aicost.budget_timezone), scope and model: requests, tokens, cost, unpriced rows (a role confined to an org: its org''s rows only)';

CREATE VIEW aicost.my_usage WITH (security_barrier) AS
SELECT u.* FROM aicost.usage u WHERE aicost._visible(u.org_id);

COMMENT ON VIEW aicost.my_usage IS 'The ledger rows the acting role may read: its org''s for a role confined to an org (aicost.tenants), all rows otherwise';

COMMENT ON FUNCTION aicost.stat_reset() IS 'Zeroes the statistics of aicost.stat_cost, aicost.stat_cache and aicost.stat_budget (with ai_cache_stats_reset() for the response cache); the counter reset is not undone by ROLLBACK; superusers and aicost_admin only';

COMMENT ON FUNCTION aicost._charge_shared(bigint[], numeric, timestamptz, text, bigint) IS 'Internal: shared-memory mode charge of a ledger row (whose reservations _charge settled): admits its cost against each hard limit (AC001), adds it to this backend''s spend rows, records alerts';
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

-- ---------------------------------------------------------------------------------------------
-- Roles and privileges (README "Roles and privileges"). The same block ends every upgrade script.
--
-- aicost_app    what an application needs per request: prices, the response cache, recording
--               usage (the caller's columns of aicost.usage only), budget and rate-limit checks.
-- aicost_reader views, statistics and ledger reads (an operator's role: its raw-table reads are
--               not confined to an org; the views are).
-- aicost_admin  both of the above, and prices, imports, aliases, budgets, rate limits, tenants,
--               cache namespaces, repricing and statistics resets.
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
                                      'ai_budget_release', 'ai_rate_limit_set', 'ai_rate_limit_check',
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
    aicost._stat_cost_rows(), aicost._stat_cache_rows(), aicost._stat_budget_rows(),
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
    aicost.stat_reset()
TO aicost_admin;
-- Models and aliases may be edited directly (prices only through ai_price_set / import).
GRANT INSERT, UPDATE, DELETE ON aicost.models, aicost.model_aliases TO aicost_admin;
-- Backfills: an admin may give a usage row its cost (and any created_at).
GRANT INSERT ON aicost.usage TO aicost_admin;
