-- pg_aicost LLM response cache: entries keyed by SHA-256 of (namespace, model, canonical request).
--
-- Design for concurrency (see README "Response cache"):
-- - ai_cache_get never updates a shared row: a hit or miss appends one row to the UNLOGGED event
--   log aicost.cache_events (inserts never conflict). Roll-ups (ai_cache_sweep, eviction) move the
--   log into per-entry hit counts and per-namespace totals with DELETE ... RETURNING, so each event
--   is counted exactly once even when roll-ups run concurrently.
-- - Writers (put, evict, invalidate, sweep, namespace_set, stats reset) keep per-namespace
--   entry/byte counts as deltas on one row per namespace. Lock order, the same for every writer:
--   the namespace's aicost.cache_namespaces row first (several namespaces: in namespace order),
--   then its events, entries and size row. Writers of one namespace serialize on that row;
--   readers never wait for them; writers of different namespaces never wait for each other.
-- - Entries of a namespace live in aicost.cache_entries (logged: survives a crash) or
--   aicost.cache_entries_unlogged (faster writes, emptied after a crash, together with its size row).

CREATE TABLE aicost.cache_namespaces (
    namespace      text PRIMARY KEY CHECK (namespace <> ''),
    max_entries    bigint CHECK (max_entries > 0),
    max_bytes      bigint CHECK (max_bytes > 0),
    eviction       text NOT NULL DEFAULT 'lru' CHECK (eviction IN ('lru', 'lfu')),
    default_ttl    interval CHECK (default_ttl >= interval '0'),
    cost_aware_ttl boolean NOT NULL DEFAULT false,
    durability     text NOT NULL DEFAULT 'logged' CHECK (durability IN ('logged', 'unlogged')),
    hits           bigint NOT NULL DEFAULT 0,
    misses         bigint NOT NULL DEFAULT 0,
    saved_usd      numeric NOT NULL DEFAULT 0,
    puts           bigint NOT NULL DEFAULT 0,
    evictions      bigint NOT NULL DEFAULT 0,
    expirations    bigint NOT NULL DEFAULT 0,
    stats_reset    timestamptz
);
COMMENT ON TABLE aicost.cache_namespaces IS 'Response-cache namespaces: policy (set with ai_cache_namespace_set) and rolled-up statistics';
COMMENT ON COLUMN aicost.cache_namespaces.namespace IS 'Namespace name; part of every cache key';
COMMENT ON COLUMN aicost.cache_namespaces.max_entries IS 'Entry limit; NULL = aicost.cache_max_entries';
COMMENT ON COLUMN aicost.cache_namespaces.max_bytes IS 'Size limit in bytes (request + response as stored); NULL = unbounded';
COMMENT ON COLUMN aicost.cache_namespaces.eviction IS 'lru (least recently used first) or lfu (least frequently used first, then least recent)';
COMMENT ON COLUMN aicost.cache_namespaces.default_ttl IS 'TTL when ai_cache_put gives none; NULL = aicost.cache_default_ttl; 0 = never expires';
COMMENT ON COLUMN aicost.cache_namespaces.cost_aware_ttl IS 'Expensive and popular entries live longer: ttl x least(8, 1 + 100 x cost_usd + log2(1 + hits))';
COMMENT ON COLUMN aicost.cache_namespaces.durability IS 'logged (survives a crash) or unlogged (faster writes, emptied after a crash)';
COMMENT ON COLUMN aicost.cache_namespaces.hits IS 'Rolled-up hits (aicost.cache_stats adds the pending event log)';
COMMENT ON COLUMN aicost.cache_namespaces.misses IS 'Rolled-up misses';
COMMENT ON COLUMN aicost.cache_namespaces.saved_usd IS 'Rolled-up money saved: the cost of producing each entry, once per hit';
COMMENT ON COLUMN aicost.cache_namespaces.puts IS 'Entries written';
COMMENT ON COLUMN aicost.cache_namespaces.evictions IS 'Entries evicted by the size limits';
COMMENT ON COLUMN aicost.cache_namespaces.expirations IS 'Expired entries removed';
COMMENT ON COLUMN aicost.cache_namespaces.stats_reset IS 'When the statistics were last reset';

CREATE TABLE aicost.cache_entries (
    key         text PRIMARY KEY CHECK (key ~ '^[0-9a-f]{64}$'),
    namespace   text NOT NULL,
    model       text NOT NULL,
    request     jsonb NOT NULL,
    response    jsonb NOT NULL,
    cost        numeric CHECK (cost >= 0 AND cost < 'Infinity'),
    bytes       integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    ttl         interval,
    expires_at  timestamptz,
    hits        bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz
);
CREATE INDEX cache_entries_namespace_idx ON aicost.cache_entries (namespace, expires_at);
CREATE UNLOGGED TABLE aicost.cache_entries_unlogged (LIKE aicost.cache_entries INCLUDING ALL);

CREATE TABLE aicost.cache_sizes (
    namespace text PRIMARY KEY,
    entries   bigint NOT NULL DEFAULT 0,
    bytes     bigint NOT NULL DEFAULT 0
);
CREATE UNLOGGED TABLE aicost.cache_sizes_unlogged (LIKE aicost.cache_sizes INCLUDING ALL);

CREATE UNLOGGED TABLE aicost.cache_events (
    namespace text NOT NULL,
    key       text NOT NULL,
    hit       boolean NOT NULL,
    saved_usd numeric,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['cache_entries', 'cache_entries_unlogged'] LOOP
        EXECUTE format('COMMENT ON TABLE aicost.%I IS %L', t, CASE t
            WHEN 'cache_entries' THEN 'Cached LLM responses of logged namespaces'
            ELSE 'Cached LLM responses of unlogged namespaces (emptied after a crash)' END);
        EXECUTE format('COMMENT ON COLUMN aicost.%I.key IS %L', t, 'ai_cache_key(): hex SHA-256 of (namespace, model, canonical request)');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.namespace IS %L', t, 'Namespace');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.model IS %L', t, 'Canonical model name (or the name given, if not in the catalog)');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.request IS %L', t, 'The request, for audit and invalidation (never indexed)');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.response IS %L', t, 'The cached response');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.cost IS %L', t, 'USD it cost to produce the response (its usage priced by ai_cost, or given); saved on every hit');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.bytes IS %L', t, 'Stored size of request and response');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.created_at IS %L', t, 'When the entry was written');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.ttl IS %L', t, 'Base time to live; NULL = never expires');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.expires_at IS %L', t, 'After this instant the entry is never returned; NULL = never');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.hits IS %L', t, 'Rolled-up hit count (LFU)');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.last_hit_at IS %L', t, 'Rolled-up last hit (LRU)');
    END LOOP;
    FOREACH t IN ARRAY ARRAY['cache_sizes', 'cache_sizes_unlogged'] LOOP
        EXECUTE format('COMMENT ON TABLE aicost.%I IS %L', t, 'Entry count and bytes per namespace, kept as deltas by writers'
            || CASE WHEN t = 'cache_sizes' THEN '' ELSE ' (unlogged namespaces; emptied with their entries after a crash)' END);
        EXECUTE format('COMMENT ON COLUMN aicost.%I.namespace IS %L', t, 'Namespace');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.entries IS %L', t, 'Entries stored');
        EXECUTE format('COMMENT ON COLUMN aicost.%I.bytes IS %L', t, 'Bytes stored');
    END LOOP;
END
$$;
COMMENT ON TABLE aicost.cache_events IS 'Append-only log of cache gets (unlogged), rolled up by ai_cache_sweep() and eviction';
COMMENT ON COLUMN aicost.cache_events.namespace IS 'Namespace';
COMMENT ON COLUMN aicost.cache_events.key IS 'Cache key';
COMMENT ON COLUMN aicost.cache_events.hit IS 'true = hit, false = miss';
COMMENT ON COLUMN aicost.cache_events.saved_usd IS 'Cost of the entry, for hits';
COMMENT ON COLUMN aicost.cache_events.at IS 'When';

-- Policies are user configuration (dumped); entries are a cache (not dumped).
SELECT pg_catalog.pg_extension_config_dump('aicost.cache_namespaces', '');

-- Creates (if needed) and locks a namespace's row: the first lock every cache writer takes.
CREATE FUNCTION aicost._cache_lock_namespace(p_namespace text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO aicost.cache_namespaces (namespace) VALUES (p_namespace) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM aicost.cache_namespaces n WHERE n.namespace = p_namespace FOR UPDATE;
END
$$;
COMMENT ON FUNCTION aicost._cache_lock_namespace(text) IS 'Internal: creates and locks a cache namespace row (first lock of every cache writer)';

-- Moves a namespace's event log into entry hit counts and namespace totals. Each event is
-- deleted, hence counted, exactly once, even with concurrent roll-ups.
CREATE FUNCTION aicost._cache_rollup_ns(p_namespace text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    PERFORM aicost._cache_lock_namespace(p_namespace);
    WITH ev AS (
        DELETE FROM aicost.cache_events e WHERE e.namespace = p_namespace
        RETURNING e.key, e.hit, e.saved_usd, e.at
    ),
    per_key AS (
        SELECT e.key, count(*) AS hits, max(e.at) AS last FROM ev e WHERE e.hit GROUP BY e.key
    ),
    logged AS (
        UPDATE aicost.cache_entries c
           SET hits = c.hits + k.hits, last_hit_at = greatest(c.last_hit_at, k.last)
          FROM per_key k WHERE c.key = k.key
    ),
    unlogged AS (
        UPDATE aicost.cache_entries_unlogged c
           SET hits = c.hits + k.hits, last_hit_at = greatest(c.last_hit_at, k.last)
          FROM per_key k WHERE c.key = k.key
    ),
    t AS (
        SELECT count(*) FILTER (WHERE e.hit) AS hits, count(*) FILTER (WHERE NOT e.hit) AS misses,
               coalesce(sum(e.saved_usd), 0) AS saved
          FROM ev e
    ),
    totals AS (
        UPDATE aicost.cache_namespaces n
           SET hits = n.hits + t.hits, misses = n.misses + t.misses, saved_usd = n.saved_usd + t.saved
          FROM t WHERE n.namespace = p_namespace
    )
    SELECT count(*) INTO v_n FROM ev;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION aicost._cache_rollup_ns(text) IS 'Internal: rolls one namespace''s event log up into entry hit counts and namespace totals (exactly once)';

-- Namespaces a cache-wide writer must visit, in lock order.
CREATE FUNCTION aicost._cache_namespaces() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT s.namespace FROM (SELECT namespace FROM aicost.cache_namespaces
                             UNION SELECT namespace FROM aicost.cache_events
                             UNION SELECT namespace FROM aicost.cache_sizes
                             UNION SELECT namespace FROM aicost.cache_sizes_unlogged) s
     ORDER BY 1
$$;
COMMENT ON FUNCTION aicost._cache_namespaces() IS 'Internal: every cache namespace, in lock order';

-- The effective policy of a namespace: its row, or the GUC defaults.
CREATE FUNCTION aicost._cache_policy(p_namespace text,
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
COMMENT ON FUNCTION aicost._cache_policy(text) IS 'Internal: a namespace''s policy with GUC defaults filled in';

CREATE FUNCTION aicost._cache_ttl_factor(p_cost numeric, p_hits bigint) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(8, 1 + 100 * coalesce(p_cost, 0) + log(2, 1 + p_hits))
$$;
COMMENT ON FUNCTION aicost._cache_ttl_factor(numeric, bigint) IS 'Cost-aware TTL multiplier: least(8, 1 + 100 x cost_usd + log2(1 + hits))';

CREATE FUNCTION aicost._cache_table(p_durability text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_durability WHEN 'unlogged' THEN 'aicost.cache_entries_unlogged' ELSE 'aicost.cache_entries' END
$$;
COMMENT ON FUNCTION aicost._cache_table(text) IS 'Internal: the entries table of a durability';

-- Applies entry/byte deltas to a namespace's size row; returns the new totals.
CREATE FUNCTION aicost._cache_size_add(p_namespace text, p_durability text, p_entries bigint, p_bytes bigint,
    OUT entries bigint, OUT bytes bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_durability = 'unlogged' THEN
        INSERT INTO aicost.cache_sizes_unlogged AS s (namespace, entries, bytes)
        VALUES (p_namespace, p_entries, p_bytes)
        ON CONFLICT (namespace) DO UPDATE SET entries = s.entries + excluded.entries, bytes = s.bytes + excluded.bytes
        RETURNING s.entries, s.bytes INTO entries, bytes;
    ELSE
        INSERT INTO aicost.cache_sizes AS s (namespace, entries, bytes)
        VALUES (p_namespace, p_entries, p_bytes)
        ON CONFLICT (namespace) DO UPDATE SET entries = s.entries + excluded.entries, bytes = s.bytes + excluded.bytes
        RETURNING s.entries, s.bytes INTO entries, bytes;
    END IF;
END
$$;
COMMENT ON FUNCTION aicost._cache_size_add(text, text, bigint, bigint) IS 'Internal: adds entry and byte deltas to a namespace''s size row (serializes writers of one namespace)';

-- Deletes the entries of one namespace that match p_cond (a condition on alias c that may use
-- $2 = p_key, $3 = p_model, $4 = p_older) and keeps its size row in step; returns how many.
-- The caller holds the namespace lock; a namespace's entries all live in its durability's table.
CREATE FUNCTION aicost._cache_delete(p_namespace text, p_cond text, p_key text DEFAULT NULL,
                                     p_model text DEFAULT NULL, p_older interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_durability text := (aicost._cache_policy(p_namespace)).durability;
    v_n bigint;
    v_bytes bigint;
BEGIN
    EXECUTE format('WITH d AS (DELETE FROM %s c WHERE c.namespace = $1 AND (%s) RETURNING c.bytes)
                    SELECT count(*), coalesce(sum(d.bytes), 0) FROM d', aicost._cache_table(v_durability), p_cond)
       INTO v_n, v_bytes USING p_namespace, p_key, p_model, p_older;
    IF v_n > 0 THEN
        PERFORM aicost._cache_size_add(p_namespace, v_durability, -v_n, -v_bytes);
    END IF;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION aicost._cache_delete(text, text, text, text, interval) IS 'Internal: deletes matching entries of one namespace and updates its size row; the caller holds the namespace lock';

-- Evicts expired entries, then the least valuable ones by the namespace's policy, until it fits.
CREATE FUNCTION aicost._cache_evict(p_namespace text, p_keep text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    pol record;
    sz record;
    v_expired bigint := 0;
    v_evicted bigint := 0;
    v_bytes bigint := 0;
    v_tab text;
BEGIN
    pol := aicost._cache_policy(p_namespace);
    v_tab := aicost._cache_table(pol.durability);
    PERFORM aicost._cache_rollup_ns(p_namespace);
    v_expired := aicost._cache_delete(p_namespace, 'c.expires_at <= clock_timestamp()');
    sz := aicost._cache_size_add(p_namespace, pol.durability, 0, 0);
    IF sz.entries > pol.max_entries OR sz.bytes > coalesce(pol.max_bytes, sz.bytes) THEN
        EXECUTE format($q$
            WITH ranked AS (
                SELECT c.key, c.bytes,
                       row_number() OVER w AS rn,
                       sum(c.bytes) OVER w - c.bytes AS bytes_before
                  FROM %s c
                 WHERE c.namespace = $1 AND c.key <> $2
                WINDOW w AS (ORDER BY %s)
            ), d AS (
                DELETE FROM %s c USING ranked r
                 WHERE c.key = r.key AND (r.rn <= $3 OR r.bytes_before < $4)
                RETURNING c.bytes
            )
            SELECT count(*), coalesce(sum(d.bytes), 0) FROM d$q$,
            v_tab,
            CASE pol.eviction
                WHEN 'lfu' THEN 'c.hits, coalesce(c.last_hit_at, c.created_at), c.key'
                ELSE 'coalesce(c.last_hit_at, c.created_at), c.key' END,
            v_tab)
           INTO v_evicted, v_bytes
          USING p_namespace, p_keep, sz.entries - pol.max_entries,
                sz.bytes - coalesce(pol.max_bytes, sz.bytes);
        PERFORM aicost._cache_size_add(p_namespace, pol.durability, -v_evicted, -v_bytes);
    END IF;
    UPDATE aicost.cache_namespaces n
       SET evictions = n.evictions + v_evicted, expirations = n.expirations + v_expired
     WHERE n.namespace = p_namespace;
    RETURN v_evicted;
END
$$;
COMMENT ON FUNCTION aicost._cache_evict(text, text) IS 'Internal: removes expired entries, then evicts by LRU or LFU until the namespace fits its limits (never p_keep); the caller holds the namespace lock';

-- The live entry for a key (no statistics).
CREATE FUNCTION aicost._cache_lookup(p_key text, OUT response jsonb, OUT cost numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT c.response, c.cost INTO response, cost FROM aicost.cache_entries c
     WHERE c.key = p_key AND (c.expires_at IS NULL OR c.expires_at > clock_timestamp());
    IF NOT FOUND THEN
        SELECT c.response, c.cost INTO response, cost FROM aicost.cache_entries_unlogged c
         WHERE c.key = p_key AND (c.expires_at IS NULL OR c.expires_at > clock_timestamp());
    END IF;
END
$$;
COMMENT ON FUNCTION aicost._cache_lookup(text) IS 'Internal: the unexpired entry for a key, without counting a hit or miss';

-- Appends one hit or miss to the statistics log (not in read-only transactions, e.g. a standby).
CREATE FUNCTION aicost._cache_count(p_namespace text, p_key text, p_hit boolean, p_saved numeric) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_catalog.current_setting('transaction_read_only')::boolean THEN
        INSERT INTO aicost.cache_events (namespace, key, hit, saved_usd)
        VALUES (p_namespace, p_key, p_hit, CASE WHEN p_hit THEN p_saved END);
    END IF;
END
$$;
COMMENT ON FUNCTION aicost._cache_count(text, text, boolean, numeric) IS 'Internal: logs one cache hit or miss (an insert: never contended)';

CREATE FUNCTION ai_cache_get(model text, request jsonb, namespace text DEFAULT 'default')
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
COMMENT ON FUNCTION ai_cache_get(text, jsonb, text) IS 'The cached response for (model, request) in a namespace, or NULL on a miss or an expired entry; counts the hit or miss';

CREATE FUNCTION ai_cache_put(model text, request jsonb, response jsonb, ttl interval DEFAULT NULL,
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
COMMENT ON FUNCTION ai_cache_put(text, jsonb, jsonb, interval, text, numeric) IS 'Caches a response for (model, request); ttl NULL = namespace default; cost NULL = the response''s usage priced by ai_cost; evicts when the namespace is over its limits; returns the key';

-- Stampede protection. Status 'hit': here is the response. 'compute': you are the one caller that
-- should produce it; call ai_cache_put in this same transaction (the lock is transaction-scoped,
-- so it is released at commit or abort and never leaks). Other callers wait up to wait_timeout for
-- the computing caller to finish and then get 'hit' (or become the computing caller if it aborted);
-- 'timeout' if it took longer. Needs READ COMMITTED, so the waiter sees the committed entry.
CREATE FUNCTION ai_cache_get_or_lock(model text, request jsonb, namespace text DEFAULT 'default',
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
COMMENT ON FUNCTION ai_cache_get_or_lock(text, jsonb, text, interval) IS 'Stampede-safe get: status hit (response given), compute (you alone should produce it and ai_cache_put it in this transaction) or timeout';

-- Removes entries by key, namespace, model and/or age (at least one criterion); returns how many.
CREATE FUNCTION ai_cache_invalidate(key text DEFAULT NULL, namespace text DEFAULT NULL,
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
COMMENT ON FUNCTION ai_cache_invalidate(text, text, text, interval) IS 'Removes cache entries matching all given criteria (key, namespace, model, created at least older_than ago); returns the number removed';

-- Removes expired entries of every namespace and rolls the event log up; returns entries removed.
CREATE FUNCTION ai_cache_sweep() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_n bigint := 0;
    v_expired bigint;
    ns text;
BEGIN
    FOR ns IN SELECT n FROM aicost._cache_namespaces() n LOOP
        PERFORM aicost._cache_rollup_ns(ns);  -- takes the namespace lock
        -- Cost-aware namespaces: popular entries live longer (never revives an expired one).
        IF (SELECT n.cost_aware_ttl FROM aicost.cache_namespaces n WHERE n.namespace = ns) THEN
            EXECUTE format('UPDATE %s c SET expires_at = greatest(c.expires_at, c.created_at + c.ttl * aicost._cache_ttl_factor(c.cost, c.hits))
                             WHERE c.namespace = $1 AND c.hits > 0 AND c.expires_at > clock_timestamp()',
                           aicost._cache_table((aicost._cache_policy(ns)).durability)) USING ns;
        END IF;
        v_expired := aicost._cache_delete(ns, 'c.expires_at <= clock_timestamp()');
        IF v_expired > 0 THEN
            UPDATE aicost.cache_namespaces n SET expirations = n.expirations + v_expired WHERE n.namespace = ns;
            v_n := v_n + v_expired;
        END IF;
    END LOOP;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION ai_cache_sweep() IS 'Removes expired cache entries and rolls up the statistics log, namespace by namespace; returns the number of entries removed (run it periodically, e.g. with pg_cron)';

-- Bulk-loads entries: a JSON array of {"model", "request", "response"[, "ttl", "cost"]}, atomically.
CREATE FUNCTION ai_cache_warm(namespace text, entries jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    e jsonb;
    i integer := 0;
BEGIN
    IF entries IS NULL OR jsonb_typeof(entries) <> 'array' THEN
        RAISE EXCEPTION 'entries must be a JSON array of {"model", "request", "response"} objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(entries) AS x LOOP
        i := i + 1;
        IF jsonb_typeof(e) <> 'object' OR NOT e ?& ARRAY['model', 'request', 'response']
           OR jsonb_typeof(e -> 'model') <> 'string' THEN
            RAISE EXCEPTION 'entry % must be an object with "model" (string), "request" and "response"', i
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM @extschema@.ai_cache_put(e ->> 'model', e -> 'request', e -> 'response',
                                         (e ->> 'ttl')::interval, ai_cache_warm.namespace, (e ->> 'cost')::numeric);
    END LOOP;
    RETURN i;
END
$$;
COMMENT ON FUNCTION ai_cache_warm(text, jsonb) IS 'Bulk-loads cache entries (a JSON array of {model, request, response[, ttl, cost]}) in one call; all or nothing; returns the number loaded';

-- Sets a namespace's policy. Unchanged arguments (NULL) keep the current value.
CREATE FUNCTION ai_cache_namespace_set(namespace text, max_entries bigint DEFAULT NULL, max_bytes bigint DEFAULT NULL,
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
COMMENT ON FUNCTION ai_cache_namespace_set(text, bigint, bigint, text, interval, boolean, text) IS 'Sets a cache namespace''s policy (NULL arguments keep the current value): size limits, lru or lfu eviction, default TTL, cost-aware TTL, logged or unlogged durability';

CREATE VIEW aicost.cache_stats WITH (security_barrier) AS
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
COMMENT ON VIEW aicost.cache_stats IS 'Response cache per namespace: entries, bytes, hits, misses, hit ratio, money saved, puts, evictions, expirations (pg_stat style: exact, includes not yet rolled-up events)';

CREATE FUNCTION ai_cache_stats_reset(namespace text DEFAULT NULL) RETURNS void
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
COMMENT ON FUNCTION ai_cache_stats_reset(text) IS 'Resets the response-cache statistics of one namespace (or all)';
