-- pg_aicost 0.1.0 -> 0.2.0: shared-memory mode (shared catalog, statistics, budget admission).
-- Released upgrade script: never edit; add pg_aicost--0.2.0--<next>.sql instead.
\echo Use "ALTER EXTENSION pg_aicost UPDATE TO '0.2.0'" to load this file. \quit

-- Spend rows get a slot: 0 = charged under the row lock (per-backend mode), n = backend n in
-- shared-memory mode.
ALTER TABLE aicost.budget_spend ADD COLUMN slot integer NOT NULL DEFAULT 0 CHECK (slot >= 0);
ALTER TABLE aicost.budget_spend DROP CONSTRAINT budget_spend_pkey;
ALTER TABLE aicost.budget_spend ADD CONSTRAINT budget_spend_pkey PRIMARY KEY (budget_id, period_start, slot);


COMMENT ON TABLE aicost.budget_spend IS 'Committed spend per budget and period, the sum over its slots (equals the ledger''s cost for them; see ai_budget_audit)';

COMMENT ON COLUMN aicost.budget_spend.spent IS 'USD spent in the period (in this slot)';

COMMENT ON COLUMN aicost.budget_spend.slot IS '0: charged under this row''s lock (per-backend mode); n > 0: charged by backend number n in shared-memory mode, where admission is decided in shared memory and each backend adds to its own row, so writers never wait on each other';

-- _stat_budget
CREATE  FUNCTION aicost."_stat_budget"(
	"budget_id" bigint, /* i64 */
	"event" TEXT /* & str */
) RETURNS void
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_stat_budget_wrapper';

-- _admit_shared
CREATE  FUNCTION aicost."_admit_shared"(
	"budget_id" bigint, /* i64 */
	"period_start" timestamp with time zone, /* TimestampWithTimeZone */
	"amount" NUMERIC, /* AnyNumeric */
	"hold" bool /* bool */
) RETURNS TABLE (
	"budget_id" bigint,  /* i64 */
	"period_start" timestamp with time zone,  /* TimestampWithTimeZone */
	"spent" NUMERIC,  /* AnyNumeric */
	"reserved" NUMERIC,  /* AnyNumeric */
	"amount" NUMERIC  /* AnyNumeric */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_admit_shared_wrapper';

-- _charge_shared
CREATE  FUNCTION aicost."_charge_shared"(
	"budget_ids" bigint[], /* Vec < i64 > */
	"cost" NUMERIC, /* AnyNumeric */
	"created_at" timestamp with time zone, /* TimestampWithTimeZone */
	"request_id" TEXT, /* Option < & str > */
	"usage_id" bigint /* Option < i64 > */
) RETURNS TABLE (
	"budget_id" bigint,  /* i64 */
	"period_start" timestamp with time zone,  /* TimestampWithTimeZone */
	"spent" NUMERIC,  /* AnyNumeric */
	"reserved" NUMERIC,  /* AnyNumeric */
	"amount" NUMERIC  /* AnyNumeric */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_charge_shared_wrapper';

-- _shmem_budgets
CREATE  FUNCTION aicost."_shmem_budgets"() RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_shmem_budgets_wrapper';

-- _stat_cost_rows
CREATE  FUNCTION aicost."_stat_cost_rows"() RETURNS TABLE (
	"scope" TEXT,  /* String */
	"model" TEXT,  /* Option < String > */
	"calls" bigint,  /* i64 */
	"unpriced" bigint,  /* i64 */
	"errors" bigint,  /* i64 */
	"in_tokens" bigint,  /* i64 */
	"out_tokens" bigint,  /* i64 */
	"cost_usd" NUMERIC,  /* AnyNumeric */
	"total_latency_us" double precision,  /* f64 */
	"mean_latency_us" double precision,  /* Option < f64 > */
	"p50_latency_us" double precision,  /* Option < f64 > */
	"p95_latency_us" double precision,  /* Option < f64 > */
	"p99_latency_us" double precision,  /* Option < f64 > */
	"stats_reset" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_stat_cost_rows_wrapper';

-- _stat_cache_rows
CREATE  FUNCTION aicost."_stat_cache_rows"() RETURNS TABLE (
	"scope" TEXT,  /* String */
	"catalog_hits" bigint,  /* i64 */
	"catalog_local_loads" bigint,  /* i64 */
	"catalog_shared_reads" bigint,  /* i64 */
	"catalog_shared_builds" bigint,  /* i64 */
	"catalog_shared_too_big" bigint,  /* i64 */
	"stats_reset" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_stat_cache_rows_wrapper';

-- _stat_budget_rows
CREATE  FUNCTION aicost."_stat_budget_rows"() RETURNS TABLE (
	"scope" TEXT,  /* String */
	"budget_id" bigint,  /* Option < i64 > */
	"checks" bigint,  /* i64 */
	"reservations" bigint,  /* i64 */
	"charges" bigint,  /* i64 */
	"denials" bigint,  /* i64 */
	"alerts" bigint,  /* i64 */
	"stats_reset" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_stat_budget_rows_wrapper';

-- _stat_reset
CREATE  FUNCTION aicost."_stat_reset"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_stat_reset_wrapper';

CREATE FUNCTION aicost._spent(p_budget bigint, p_start timestamptz) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(sum(s.spent), 0) FROM aicost.budget_spend s
             WHERE s.budget_id = p_budget AND s.period_start = p_start);
END
$$;

CREATE OR REPLACE FUNCTION aicost._lock_spend(p_budget bigint, p_start timestamptz) RETURNS numeric
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM aicost.budget_spend s
     WHERE s.budget_id = p_budget AND s.period_start = p_start AND s.slot = 0 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO aicost.budget_spend (budget_id, period_start) VALUES (p_budget, p_start)
        ON CONFLICT DO NOTHING;
        PERFORM FROM aicost.budget_spend s
         WHERE s.budget_id = p_budget AND s.period_start = p_start AND s.slot = 0 FOR UPDATE;
    END IF;
    RETURN aicost._spent(p_budget, p_start);
END
$$;

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
                PERFORM pg_notify('aicost_budget', json_build_object(
                    'budget_id', b.budget_id, 'scope', b.scope, 'scope_id', b.scope_id,
                    'period_start', p_start, 'spent', p_new, 'limit', b.amount,
                    'threshold', t.name, 'threshold_pct', t.pct)::text);
            END IF;
        END IF;
    END LOOP;
END
$$;

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
        IF p_row.request_id IS NOT NULL THEN
            UPDATE aicost.budget_reservations r SET settled_at = clock_timestamp(), usage_id = p_row.usage_id
             WHERE r.budget_id = b.budget_id AND r.request_id = p_row.request_id AND r.settled_at IS NULL;
        END IF;
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

CREATE OR REPLACE FUNCTION aicost._throttled(p_scope text, p_scope_id text, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(bool_or(aicost._spent(b.budget_id, aicost._period_start(b.period, b.time_zone, p_at))
                                    >= b.amount * b.throttle_pct / 100), false)
              FROM aicost.budgets b
             WHERE b.scope = p_scope AND b.scope_id = p_scope_id);
END
$$;

CREATE OR REPLACE FUNCTION ai_budget_check(scope text, scope_id text, estimated_cost numeric DEFAULT 0,
                                OUT state text, OUT remaining numeric, OUT spent numeric, OUT reserved numeric,
                                OUT limit_usd numeric, OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    b aicost.budgets;
    v_projected numeric;
BEGIN
    PERFORM aicost._check_scope(ai_budget_check.scope, ai_budget_check.scope_id);
    IF estimated_cost IS NULL OR estimated_cost < 0 THEN
        RAISE EXCEPTION 'estimated_cost must be a non-negative number' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO b FROM aicost.budgets bu WHERE bu.scope = ai_budget_check.scope AND bu.scope_id = ai_budget_check.scope_id;
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
    v_projected := spent + reserved + estimated_cost;
    state := CASE WHEN v_projected > limit_usd THEN 'deny'
                  WHEN v_projected >= trim_scale(b.amount * b.throttle_pct / 100) THEN 'throttle'
                  WHEN v_projected >= trim_scale(b.amount * b.alert_pct / 100) THEN 'alert'
                  ELSE 'ok' END;
END
$$;

CREATE OR REPLACE FUNCTION ai_budget_reserve(scope text, scope_id text, amount numeric, request_id text DEFAULT NULL,
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
    IF ai_budget_reserve.amount IS NULL OR ai_budget_reserve.amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ttl IS NULL OR ttl <= interval '0' THEN
        RAISE EXCEPTION 'ttl must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO b FROM aicost.budgets bu WHERE bu.scope = ai_budget_reserve.scope AND bu.scope_id = ai_budget_reserve.scope_id;
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
    INSERT INTO aicost.budget_reservations (budget_id, period_start, amount, request_id, expires_at)
    VALUES (b.budget_id, v_start, ai_budget_reserve.amount, ai_budget_reserve.request_id, clock_timestamp() + ttl)
    RETURNING reservation_id INTO v_id;
    -- A new version of the spend row: a REPEATABLE READ transaction whose snapshot predates this
    -- reservation (and so cannot see it) fails with 40001 when it locks the row, instead of
    -- ignoring the hold.
    UPDATE aicost.budget_spend s SET spent = s.spent
     WHERE s.budget_id = b.budget_id AND s.period_start = v_start AND s.slot = 0;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION ai_budget_audit()
RETURNS TABLE (budget_id bigint, period_start timestamptz, recorded numeric, ledger numeric)
LANGUAGE sql STABLE AS $$
    WITH charged AS (
        SELECT b.budget_id, aicost._period_start(b.period, b.time_zone, u.created_at) AS period_start,
               sum(u.cost) AS ledger
          FROM aicost.usage u
          JOIN aicost.budgets b ON b.budget_id = ANY (u.budget_ids)
         GROUP BY 1, 2
    )
    SELECT coalesce(s.budget_id, c.budget_id), coalesce(s.period_start, c.period_start),
           coalesce(s.spent, 0), coalesce(c.ledger, 0)
      FROM (SELECT sp.budget_id, sp.period_start, sum(sp.spent) AS spent
              FROM aicost.budget_spend sp GROUP BY 1, 2) s
      FULL JOIN charged c ON c.budget_id = s.budget_id AND c.period_start = s.period_start
     WHERE coalesce(s.spent, 0) <> coalesce(c.ledger, 0)
$$;

COMMENT ON FUNCTION aicost._spent(bigint, timestamptz) IS 'Internal: committed spend of a budget period (all slots)';

COMMENT ON FUNCTION aicost._lock_spend(bigint, timestamptz) IS 'Internal: locks (creating it if needed) the slot-0 spend row of a budget period; returns the period''s spend';

COMMENT ON FUNCTION aicost._charge(aicost.usage, numeric, bigint[]) IS 'Internal: adds a ledger row''s cost to every covering budget period, under its row lock or (shared-memory mode) by admission in shared memory; AC001 past a hard limit';

COMMENT ON FUNCTION aicost._shmem_budgets() IS 'Internal: whether budgets are admitted in shared memory (pg_aicost preloaded, not a standby)';

COMMENT ON FUNCTION aicost._stat_budget(bigint, text) IS 'Internal: counts a budget event (check, reservation, charge, denial, alert) for aicost.stat_budget';

COMMENT ON FUNCTION aicost._admit_shared(bigint, timestamptz, numeric, boolean) IS 'Internal: shared-memory admission of a reservation against a budget period''s hard limit (AC001)';

COMMENT ON FUNCTION aicost._charge_shared(bigint[], numeric, timestamptz, text, bigint) IS 'Internal: shared-memory mode charge of a ledger row: settles its reservations, admits its cost against each hard limit (AC001), adds it to this backend''s spend rows, records alerts';

CREATE OR REPLACE VIEW aicost.budget_status AS
SELECT b.budget_id, b.scope, b.scope_id, b.period, p.period_start,
       aicost._period_end(b.period, b.time_zone, p.period_start) AS period_end,
       b.amount, trim_scale(b.amount * b.hard_pct / 100) AS limit_usd,
       coalesce(s.spent, 0) AS spent,
       aicost._reserved(b.budget_id, p.period_start) AS reserved,
       trim_scale(greatest(b.amount * b.hard_pct / 100 - coalesce(s.spent, 0) - aicost._reserved(b.budget_id, p.period_start), 0)) AS remaining,
       round(100 * coalesce(s.spent, 0) / nullif(b.amount, 0), 2) AS percent,
       CASE WHEN coalesce(s.spent, 0) + aicost._reserved(b.budget_id, p.period_start) >= trim_scale(b.amount * b.hard_pct / 100) THEN 'deny'
            WHEN coalesce(s.spent, 0) >= trim_scale(b.amount * b.throttle_pct / 100) THEN 'throttle'
            WHEN coalesce(s.spent, 0) >= trim_scale(b.amount * b.alert_pct / 100) THEN 'alert'
            ELSE 'ok' END AS state
  FROM aicost.budgets b
 CROSS JOIN LATERAL (SELECT aicost._period_start(b.period, b.time_zone, now()) AS period_start) p
  LEFT JOIN LATERAL (SELECT aicost._spent(b.budget_id, p.period_start) AS spent) s ON true;

-- Statistics (sql/stats.sql)
-- pg_aicost statistics: views over counters kept in Rust (src/stats.rs).
--
-- scope = 'cluster' when pg_aicost is in shared_preload_libraries: the counters live in shared
-- memory and cover every session (parallel workers included) since the last aicost.stat_reset() or
-- server start. scope = 'backend' otherwise: the views show this session only (its parallel workers
-- not included); add pg_aicost to shared_preload_libraries and restart for cluster-wide statistics.
-- Counters are kept only while aicost.track = on, and are not transactional.

COMMENT ON FUNCTION aicost._stat_cost_rows() IS 'Internal: rows of aicost.stat_cost';
COMMENT ON FUNCTION aicost._stat_cache_rows() IS 'Internal: catalog-cache counters of aicost.stat_cache';
COMMENT ON FUNCTION aicost._stat_budget_rows() IS 'Internal: rows of aicost.stat_budget before the join with aicost.budgets';
COMMENT ON FUNCTION aicost._stat_reset() IS 'Internal: zeroes the counters of aicost.stat_cost, stat_cache (catalog part) and stat_budget';

CREATE VIEW aicost.stat_cost AS
SELECT s.scope, s.model, s.calls, s.unpriced, s.errors, s.in_tokens, s.out_tokens, s.cost_usd,
       s.total_latency_us, s.mean_latency_us, s.p50_latency_us, s.p95_latency_us, s.p99_latency_us,
       s.stats_reset
  FROM aicost._stat_cost_rows() s;
COMMENT ON VIEW aicost.stat_cost IS 'Pricing calls per model (ai_cost and the ledger''s pricing): calls, tokens, money, errors and latency. scope cluster = all sessions (library preloaded); backend = this session only (pg_aicost not in shared_preload_libraries)';
COMMENT ON COLUMN aicost.stat_cost.scope IS 'cluster: all sessions since stats_reset (pg_aicost preloaded); backend: this session only (not preloaded: add pg_aicost to shared_preload_libraries for cluster-wide statistics)';
COMMENT ON COLUMN aicost.stat_cost.model IS 'Canonical model name; NULL = names that did not resolve, and models beyond aicost.stat_max_models';
COMMENT ON COLUMN aicost.stat_cost.calls IS 'Pricing calls that returned (a cost or NULL)';
COMMENT ON COLUMN aicost.stat_cost.unpriced IS 'Calls (included in calls) that returned NULL (unknown model or no price, with aicost.unknown_model = null)';
COMMENT ON COLUMN aicost.stat_cost.errors IS 'Pricing calls that raised an error';
COMMENT ON COLUMN aicost.stat_cost.in_tokens IS 'Input tokens priced (cached and cache-write tokens included)';
COMMENT ON COLUMN aicost.stat_cost.out_tokens IS 'Output tokens priced';
COMMENT ON COLUMN aicost.stat_cost.cost_usd IS 'Exact sum of the costs returned, in USD (never rounded)';
COMMENT ON COLUMN aicost.stat_cost.total_latency_us IS 'Time spent in the calls and errors counted, in microseconds';
COMMENT ON COLUMN aicost.stat_cost.mean_latency_us IS 'Mean latency of the calls and errors counted, in microseconds';
COMMENT ON COLUMN aicost.stat_cost.p50_latency_us IS 'Median latency, in microseconds: upper bound of its histogram bucket (4 buckets per power of two from 64 ns, so at most 25% above the true value; 68.7 s means at least that)';
COMMENT ON COLUMN aicost.stat_cost.p95_latency_us IS '95th percentile of latency, in microseconds (bucket upper bound, as p50_latency_us)';
COMMENT ON COLUMN aicost.stat_cost.p99_latency_us IS '99th percentile of latency, in microseconds (bucket upper bound, as p50_latency_us)';
COMMENT ON COLUMN aicost.stat_cost.stats_reset IS 'Start of the counting: last aicost.stat_reset(), else server start (cluster) or this session''s first use (backend)';

CREATE VIEW aicost.stat_cache AS
SELECT s.scope, s.catalog_hits, s.catalog_local_loads, s.catalog_shared_reads, s.catalog_shared_builds,
       s.catalog_shared_too_big,
       c.cache_gets, c.cache_hits, c.cache_misses, c.cache_puts, c.cache_evictions, c.cache_expirations,
       s.stats_reset
  FROM aicost._stat_cache_rows() s
 CROSS JOIN (SELECT coalesce(sum(cs.hits + cs.misses), 0)::bigint AS cache_gets,
                    coalesce(sum(cs.hits), 0)::bigint AS cache_hits,
                    coalesce(sum(cs.misses), 0)::bigint AS cache_misses,
                    coalesce(sum(cs.puts), 0)::bigint AS cache_puts,
                    coalesce(sum(cs.evictions), 0)::bigint AS cache_evictions,
                    coalesce(sum(cs.expirations), 0)::bigint AS cache_expirations
               FROM aicost.cache_stats cs) c;
COMMENT ON VIEW aicost.stat_cache IS 'Pricing-catalog cache events (scope as in aicost.stat_cost) and the response cache''s totals over all namespaces (always cluster-wide, from aicost.cache_stats)';
COMMENT ON COLUMN aicost.stat_cache.scope IS 'Of the catalog_* columns: cluster (all sessions, pg_aicost preloaded) or backend (this session only, not preloaded)';
COMMENT ON COLUMN aicost.stat_cache.catalog_hits IS 'Calls priced from a backend''s cached catalog (or its memo of the shared one)';
COMMENT ON COLUMN aicost.stat_cache.catalog_local_loads IS 'Whole-catalog loads from the tables into a backend''s own cache (first use or after a change)';
COMMENT ON COLUMN aicost.stat_cache.catalog_shared_reads IS 'Model entries read from the shared catalog (preloaded mode)';
COMMENT ON COLUMN aicost.stat_cache.catalog_shared_builds IS 'Rebuilds of the shared catalog after a committed change or at first use (preloaded mode)';
COMMENT ON COLUMN aicost.stat_cache.catalog_shared_too_big IS 'Times the catalog did not fit in aicost.shmem_catalog_size';
COMMENT ON COLUMN aicost.stat_cache.cache_gets IS 'Response-cache lookups (hits + misses); cluster-wide and persistent in both modes, since each namespace''s last reset';
COMMENT ON COLUMN aicost.stat_cache.cache_hits IS 'Response-cache hits, all namespaces (cluster-wide, persistent)';
COMMENT ON COLUMN aicost.stat_cache.cache_misses IS 'Response-cache misses, all namespaces (cluster-wide, persistent)';
COMMENT ON COLUMN aicost.stat_cache.cache_puts IS 'Response-cache entries written, all namespaces (cluster-wide, persistent)';
COMMENT ON COLUMN aicost.stat_cache.cache_evictions IS 'Response-cache entries evicted by size limits, all namespaces (cluster-wide, persistent)';
COMMENT ON COLUMN aicost.stat_cache.cache_expirations IS 'Expired response-cache entries removed, all namespaces (cluster-wide, persistent)';
COMMENT ON COLUMN aicost.stat_cache.stats_reset IS 'Start of the catalog_* counting (see aicost.stat_cost.stats_reset); the response-cache columns count since each namespace''s stats_reset in aicost.cache_stats';

CREATE VIEW aicost.stat_budget AS
SELECT s.scope, s.budget_id, b.scope AS budget_scope, b.scope_id AS budget_scope_id,
       s.checks, s.reservations, s.charges, s.denials, s.alerts, s.stats_reset
  FROM aicost._stat_budget_rows() s
  LEFT JOIN aicost.budgets b ON b.budget_id = s.budget_id;
COMMENT ON VIEW aicost.stat_budget IS 'Budget checks, reservations, charges, denials and alerts per budget (scope as in aicost.stat_cost)';
COMMENT ON COLUMN aicost.stat_budget.scope IS 'cluster: all sessions since stats_reset (pg_aicost preloaded); backend: this session only (not preloaded)';
COMMENT ON COLUMN aicost.stat_budget.budget_id IS 'Budget; NULL = budgets beyond aicost.shmem_budgets';
COMMENT ON COLUMN aicost.stat_budget.budget_scope IS 'The budget''s scope (org, team, user, api_key); NULL when the budget was dropped';
COMMENT ON COLUMN aicost.stat_budget.budget_scope_id IS 'The budget''s scope id; NULL when the budget was dropped';
COMMENT ON COLUMN aicost.stat_budget.checks IS 'ai_budget_check() calls';
COMMENT ON COLUMN aicost.stat_budget.reservations IS 'Successful ai_budget_reserve() calls';
COMMENT ON COLUMN aicost.stat_budget.charges IS 'Ledger rows charged to the budget';
COMMENT ON COLUMN aicost.stat_budget.denials IS 'Charges or reservations refused by the hard limit (SQLSTATE AC001)';
COMMENT ON COLUMN aicost.stat_budget.alerts IS 'Threshold alerts recorded';
COMMENT ON COLUMN aicost.stat_budget.stats_reset IS 'Start of the counting (see aicost.stat_cost.stats_reset)';

-- Like pg_stat_statements_reset: not transactional, superusers only unless granted.
CREATE FUNCTION aicost.stat_reset() RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- The response cache's own counters (tables): not writable on a standby.
    IF NOT pg_catalog.pg_is_in_recovery() THEN
        PERFORM @extschema@.ai_cache_stats_reset(NULL);
    END IF;
    PERFORM aicost._stat_reset();
END
$$;
COMMENT ON FUNCTION aicost.stat_reset() IS 'Zeroes the statistics of aicost.stat_cost, aicost.stat_cache and aicost.stat_budget (with ai_cache_stats_reset() for the response cache); the counter reset is not undone by ROLLBACK; superusers only by default';
REVOKE EXECUTE ON FUNCTION aicost.stat_reset() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION aicost._stat_reset() FROM PUBLIC;

