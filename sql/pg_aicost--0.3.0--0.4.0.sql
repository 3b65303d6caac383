-- pg_aicost 0.3.0 -> 0.4.0: circuit breakers per model and provider (ai_call_allowed,
-- ai_call_report, ai_breaker_reset, aicost.breaker_config, aicost.stat_breaker), budget-aware
-- routing (ai_route), and ai_budget_reservations_purge for scheduled maintenance.
-- Released scripts are never edited; the upgrade test compares the result with a fresh install.

-- The Rust functions.
CREATE FUNCTION @extschema@."ai_call_allowed"(
	"model" TEXT /* Option < & str > */
) RETURNS TABLE (
	"allowed" bool,  /* bool */
	"state" TEXT,  /* String */
	"retry_after" interval  /* Option < Interval > */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ai_call_allowed_wrapper';

CREATE FUNCTION @extschema@."ai_call_report"(
	"model" TEXT, /* Option < & str > */
	"ok" bool, /* Option < bool > */
	"latency" interval DEFAULT NULL, /* Option < Interval > */
	"error_class" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ai_call_report_wrapper';

CREATE FUNCTION @extschema@."ai_breaker_reset"(
	"kind" TEXT DEFAULT NULL, /* Option < & str > */
	"name" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ai_breaker_reset_wrapper';

CREATE FUNCTION aicost."_breaker_rows"() RETURNS TABLE (
	"kind" TEXT,  /* String */
	"name" TEXT,  /* String */
	"state" TEXT,  /* String */
	"successes" bigint,  /* i64 */
	"failures" bigint,  /* i64 */
	"client_errors" bigint,  /* i64 */
	"rejected" bigint,  /* Option < i64 > */
	"consecutive_failures" bigint,  /* i64 */
	"window_calls" bigint,  /* i64 */
	"window_failures" bigint,  /* i64 */
	"trips" bigint,  /* i64 */
	"probes_in_flight" bigint,  /* i64 */
	"mean_latency" interval,  /* Option < Interval > */
	"last_change" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"opened_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"retry_after" interval  /* Option < Interval > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_breaker_rows_wrapper';

CREATE FUNCTION aicost."_invalidate_breaker_config"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_invalidate_breaker_config_wrapper';

CREATE FUNCTION aicost."_route_candidates"(
	"models" TEXT[], /* :: std :: option :: Option < pgrx :: Array < & str > > */
	"tokens" bigint /* Option < i64 > */
) RETURNS TABLE (
	"ord" INT,  /* i32 */
	"model" TEXT,  /* String */
	"estimate" NUMERIC  /* Option < AnyNumeric > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_route_candidates_wrapper';

COMMENT ON FUNCTION ai_call_allowed(text) IS 'Whether a call to the model may be made now, by its circuit breaker and its provider''s: allowed, the state (closed, open, half_open) and how long until a call would be admitted';
COMMENT ON FUNCTION ai_call_report(text, boolean, interval, text) IS 'Records the outcome of a call in the circuit breakers of the model and its provider; error classes: rate_limit, timeout, server, network, overloaded, client (client errors never trip); returns the model breaker''s state';
COMMENT ON FUNCTION ai_breaker_reset(text, text) IS 'Closes circuit breakers and forgets their counts: of a kind (model, provider) and name, every one when NULL; returns how many';
COMMENT ON FUNCTION aicost._breaker_rows() IS 'Internal: the rows of aicost.stat_breaker';
COMMENT ON FUNCTION aicost._invalidate_breaker_config() IS 'Internal: makes every backend re-read aicost.breaker_config once the change commits';
COMMENT ON FUNCTION aicost._route_candidates(text[], bigint) IS 'Internal: ai_route''s candidates: canonical names in order and an upper bound of the cost of the estimated tokens';

-- Circuit breakers per model and provider, and budget-aware routing (README "Circuit breaker").
-- The state machine is Rust (core/src/breaker.rs); where its state lives is src/breaker.rs.

CREATE TABLE aicost.breaker_config (
    kind              text NOT NULL CHECK (kind IN ('model', 'provider')),
    name              text NOT NULL CHECK (name <> '' AND octet_length(name) <= 512),
    failure_threshold int CHECK (failure_threshold BETWEEN 0 AND 1000000),
    failure_rate      int CHECK (failure_rate BETWEEN 0 AND 100),
    minimum_calls     int CHECK (minimum_calls BETWEEN 1 AND 1000000),
    window_length     interval CHECK (window_length BETWEEN interval '1 second' AND interval '1 day'),
    cooldown          interval CHECK (cooldown BETWEEN interval '1 millisecond' AND interval '1 day'),
    max_cooldown      interval CHECK (max_cooldown BETWEEN interval '1 millisecond' AND interval '7 days'),
    probes            int CHECK (probes BETWEEN 1 AND 1000),
    close_after       int CHECK (close_after BETWEEN 1 AND 1000),
    PRIMARY KEY (kind, name)
);
COMMENT ON TABLE aicost.breaker_config IS 'Circuit-breaker settings per model or provider (name * : every one of that kind); a NULL setting inherits from the * row, then the built-in default';
COMMENT ON COLUMN aicost.breaker_config.kind IS 'model or provider';
COMMENT ON COLUMN aicost.breaker_config.name IS 'Canonical model name (an alias is resolved on insert), provider name, or * for the defaults of the kind';
COMMENT ON COLUMN aicost.breaker_config.failure_threshold IS 'Consecutive failures that open a closed breaker (0: off; default 5 for a model, 20 for a provider)';
COMMENT ON COLUMN aicost.breaker_config.failure_rate IS 'Percentage of failed calls within window_length that opens it (0: off; default 50)';
COMMENT ON COLUMN aicost.breaker_config.minimum_calls IS 'Calls within window_length before failure_rate applies (default 20 for a model, 100 for a provider)';
COMMENT ON COLUMN aicost.breaker_config.window_length IS 'The sliding window of failure_rate, in 10 buckets (default 1 minute)';
COMMENT ON COLUMN aicost.breaker_config.cooldown IS 'How long it stays open the first time; doubled at each reopening before it closes (default 30 seconds)';
COMMENT ON COLUMN aicost.breaker_config.max_cooldown IS 'The longest cooldown (default 10 minutes)';
COMMENT ON COLUMN aicost.breaker_config.probes IS 'Calls in flight at once while half-open (default 1)';
COMMENT ON COLUMN aicost.breaker_config.close_after IS 'Successful probes that close it (default 2)';
SELECT pg_catalog.pg_extension_config_dump('aicost.breaker_config', '');

CREATE FUNCTION aicost._breaker_config_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'model' AND NEW.name <> '*' THEN
        NEW.name := @extschema@.ai_model_resolve(NEW.name);  -- 42704 for a model not in the catalog
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION aicost._breaker_config_check() IS 'Trigger: stores a model''s canonical name (breakers are per canonical model)';
CREATE TRIGGER breaker_config_check BEFORE INSERT OR UPDATE ON aicost.breaker_config
    FOR EACH ROW EXECUTE FUNCTION aicost._breaker_config_check();

CREATE FUNCTION aicost._breaker_config_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aicost._invalidate_breaker_config();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aicost._breaker_config_changed() IS 'Trigger: every backend re-reads the breaker settings once the change commits';
CREATE TRIGGER breaker_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aicost.breaker_config
    FOR EACH STATEMENT EXECUTE FUNCTION aicost._breaker_config_changed();
ALTER TABLE aicost.breaker_config ENABLE ALWAYS TRIGGER breaker_config_changed;

CREATE TABLE aicost.breaker_state (
    kind text NOT NULL,
    name text NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (kind, name)
);
COMMENT ON TABLE aicost.breaker_state IS 'Breaker states when pg_aicost is not preloaded (shared memory holds them otherwise); read them through aicost.stat_breaker';
COMMENT ON COLUMN aicost.breaker_state.kind IS 'model or provider';
COMMENT ON COLUMN aicost.breaker_state.name IS 'Canonical model name or provider name';
COMMENT ON COLUMN aicost.breaker_state.data IS 'The state machine''s fields, encoded by the extension';

CREATE VIEW aicost.stat_breaker AS
SELECT r.kind, r.name, r.state, r.successes, r.failures, r.client_errors, r.rejected,
       r.consecutive_failures, r.window_calls, r.window_failures, r.trips, r.probes_in_flight,
       r.mean_latency, r.last_change, r.opened_at,
       pg_catalog.clock_timestamp() - r.opened_at AS time_open, r.retry_after
  FROM aicost._breaker_rows() r;
COMMENT ON VIEW aicost.stat_breaker IS 'One row per circuit breaker (model or provider) of this database: state, counts since it was created or reset, window, probes and timings';
COMMENT ON COLUMN aicost.stat_breaker.kind IS 'model or provider';
COMMENT ON COLUMN aicost.stat_breaker.name IS 'Canonical model name or provider name (a name longer than 192 bytes is shown cut, ending with …, in shared-memory mode)';
COMMENT ON COLUMN aicost.stat_breaker.state IS 'closed (calls admitted), open (refused until the cooldown ends) or half_open (a bounded number of probe calls admitted)';
COMMENT ON COLUMN aicost.stat_breaker.successes IS 'Successful calls reported';
COMMENT ON COLUMN aicost.stat_breaker.failures IS 'Failed calls reported (every error class but client)';
COMMENT ON COLUMN aicost.stat_breaker.client_errors IS 'Calls reported with error class client (never trip the breaker)';
COMMENT ON COLUMN aicost.stat_breaker.rejected IS 'Calls ai_call_allowed refused (shared-memory mode; NULL otherwise)';
COMMENT ON COLUMN aicost.stat_breaker.consecutive_failures IS 'Failures since the last success while closed';
COMMENT ON COLUMN aicost.stat_breaker.window_calls IS 'Successes and failures within the sliding window (as of the last report)';
COMMENT ON COLUMN aicost.stat_breaker.window_failures IS 'Failures within the sliding window (as of the last report)';
COMMENT ON COLUMN aicost.stat_breaker.trips IS 'Openings since it was last closed (the cooldown doubles with each)';
COMMENT ON COLUMN aicost.stat_breaker.probes_in_flight IS 'Half-open: probe calls admitted and not yet reported';
COMMENT ON COLUMN aicost.stat_breaker.mean_latency IS 'Mean latency of the reports that gave one';
COMMENT ON COLUMN aicost.stat_breaker.last_change IS 'When the state last changed';
COMMENT ON COLUMN aicost.stat_breaker.opened_at IS 'When it last opened (NULL while closed)';
COMMENT ON COLUMN aicost.stat_breaker.time_open IS 'How long since it last opened (NULL while closed)';
COMMENT ON COLUMN aicost.stat_breaker.retry_after IS 'How long until it admits a call (NULL when it would now)';

-- The model to call: the first of models whose breaker admits a call. When the scope's budget is
-- at throttle, or the first model's estimated cost would be denied, the cheapest (by estimated
-- cost) admissible model the budget still allows instead. Admitting a model takes a half-open
-- probe slot, so only the chosen model is asked.
CREATE FUNCTION ai_route(models text[], scope text DEFAULT NULL, scope_id text DEFAULT NULL,
                         estimated_tokens bigint DEFAULT NULL, OUT model text, OUT reason jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    c record;
    a record;
    v_state text;
    v_check numeric;
    v_budget boolean := false;
    v_skipped jsonb := '[]';
BEGIN
    IF scope IS NOT NULL THEN
        SELECT CASE WHEN estimated_tokens IS NULL THEN 0 ELSE coalesce(e.estimate, 0) END INTO v_check
          FROM aicost._route_candidates(models, estimated_tokens) e ORDER BY e.ord LIMIT 1;
        v_state := (@extschema@.ai_budget_check(scope, scope_id, v_check)).state;
        v_budget := v_state IN ('throttle', 'deny');
    END IF;
    FOR c IN SELECT e.ord, e.model, e.estimate FROM aicost._route_candidates(models, estimated_tokens) e
              ORDER BY CASE WHEN v_budget THEN e.estimate END NULLS LAST, e.ord LOOP
        IF v_budget AND (@extschema@.ai_budget_check(scope, scope_id,
                CASE WHEN estimated_tokens IS NULL THEN 0 ELSE coalesce(c.estimate, 0) END)).state = 'deny' THEN
            v_skipped := v_skipped || jsonb_build_array(jsonb_build_object('model', c.model, 'why', 'budget',
                                                                            'estimated_cost', c.estimate));
            CONTINUE;
        END IF;
        SELECT * INTO a FROM @extschema@.ai_call_allowed(c.model);
        IF a.allowed THEN
            model := c.model;
            reason := jsonb_build_object(
                'policy', CASE WHEN v_budget THEN 'cheapest' ELSE 'first_available' END,
                'position', c.ord, 'breaker', a.state, 'estimated_cost', c.estimate,
                'budget_state', v_state, 'skipped', v_skipped);
            RETURN;
        END IF;
        v_skipped := v_skipped || jsonb_build_array(jsonb_build_object('model', c.model, 'why', 'breaker',
                                                                        'state', a.state, 'retry_after', a.retry_after));
    END LOOP;
    reason := jsonb_build_object(
        'policy', CASE WHEN v_budget THEN 'cheapest' ELSE 'first_available' END,
        'position', NULL, 'budget_state', v_state, 'skipped', v_skipped);
END
$$;
COMMENT ON FUNCTION ai_route(text[], text, text, bigint) IS 'The model to call among models (in order of preference): the first whose circuit breaker admits a call, or, when the scope''s budget is at throttle or the estimate would be denied, the cheapest the budget allows; reason says why (JSON); model is NULL when none can be called';

-- Maintenance (e.g. a pg_cron job): reservations stop counting when they are settled, released or
-- expire, but their rows stay; this deletes those that stopped counting more than older_than ago.
CREATE FUNCTION ai_budget_reservations_purge(older_than interval DEFAULT '1 day') RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_n bigint;
    v_before timestamptz;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be an interval of zero or more, not %', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_before := clock_timestamp() - older_than;
    DELETE FROM aicost.budget_reservations r
     WHERE (r.settled_at IS NOT NULL AND r.settled_at < v_before)
        OR (r.settled_at IS NULL AND r.expires_at < v_before);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION ai_budget_reservations_purge(interval) IS 'Deletes reservations that were settled, released or expired more than older_than ago (they no longer count); returns how many (run it periodically, e.g. with pg_cron)';

-- Privileges of what this version adds (the rules of sql/finalize.sql "Roles and privileges").
REVOKE ALL ON FUNCTION
    @extschema@.ai_call_allowed(text),
    @extschema@.ai_call_report(text, boolean, interval, text),
    @extschema@.ai_breaker_reset(text, text),
    @extschema@.ai_route(text[], text, text, bigint),
    aicost._breaker_rows(),
    aicost._invalidate_breaker_config(),
    aicost._route_candidates(text[], bigint),
    aicost._breaker_config_check(),
    aicost._breaker_config_changed(),
    @extschema@.ai_budget_reservations_purge(interval)
FROM PUBLIC;
ALTER FUNCTION @extschema@.ai_budget_reservations_purge(interval) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION aicost._breaker_config_check() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION aicost._breaker_config_changed() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
GRANT EXECUTE ON FUNCTION
    @extschema@.ai_call_allowed(text),
    @extschema@.ai_call_report(text, boolean, interval, text),
    @extschema@.ai_route(text[], text, text, bigint),
    aicost._route_candidates(text[], bigint)
TO aicost_app;
GRANT SELECT ON aicost.breaker_config, aicost.breaker_state, aicost.stat_breaker TO aicost_reader;
GRANT EXECUTE ON FUNCTION aicost._breaker_rows() TO aicost_reader;
GRANT EXECUTE ON FUNCTION @extschema@.ai_breaker_reset(text, text), @extschema@.ai_budget_reservations_purge(interval)
TO aicost_admin;
GRANT INSERT, UPDATE, DELETE ON aicost.breaker_config TO aicost_admin;
