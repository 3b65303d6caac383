-- pg_aicost usage ledger, budgets and rate limits, enforced in the inserting transaction.
--
-- Concurrency design: spend is kept per (budget, period) in one row of aicost.budget_spend. The
-- AFTER INSERT trigger (so the ledger row and its indexes are already written) locks the rows of
-- every budget covering the usage row (in budget_id order, so no deadlocks), checks committed spend + active reservations + this cost against the hard limit
-- and adds the cost, all under that row lock: concurrent writers of one budget queue on it for
-- the rest of their transaction, and the hard limit holds exactly. Threshold crossings are
-- detected under the same lock, so each alert fires once per threshold and period. Rate-limit
-- counters (one row per limit and fixed window) are taken before the budget rows (same trigger),
-- in limit_id order; every writer in this file takes locks in that same order (ai_reprice_unpriced locks all
-- the spend rows it needs first, in order). A caller's own transaction that inserts several rows
-- for different budgets, or reserves and then inserts, takes them in its own order: keep such
-- transactions short or ordered, as with any row locks.

CREATE TABLE aicost.usage (
    usage_id              bigserial PRIMARY KEY,
    created_at            timestamptz NOT NULL DEFAULT now(),
    request_id            text CHECK (request_id <> ''),
    org_id                text,
    team_id               text,
    user_id               text,
    api_key_id            text,
    model                 text NOT NULL,
    in_tokens             bigint CHECK (in_tokens >= 0),
    out_tokens            bigint CHECK (out_tokens >= 0),
    cached_tokens         bigint NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
    cache_write_tokens    bigint NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
    cache_write_1h_tokens bigint NOT NULL DEFAULT 0 CHECK (cache_write_1h_tokens >= 0),
    service_tier          text NOT NULL DEFAULT 'standard',
    usage                 jsonb,
    cost                  numeric CHECK (cost >= 0 AND cost < 'Infinity'),
    price_ids             bigint[],
    budget_ids            bigint[] NOT NULL,  -- no default: given on insert, it marks a recorded row
    cache_hit             boolean NOT NULL DEFAULT false,
    status                text NOT NULL DEFAULT 'ok' CHECK (status <> ''),
    metadata              jsonb
);
CREATE INDEX usage_created_at_idx ON aicost.usage (created_at);
-- A request id is unique per org (rows without an org share one space): tenants cannot probe or
-- pre-empt each other's ids, and a retried request is never charged twice.
CREATE UNIQUE INDEX usage_org_request_key ON aicost.usage ((coalesce(org_id, '')), request_id);
CREATE INDEX usage_unpriced_idx ON aicost.usage (usage_id) WHERE status = 'unpriced' AND cost IS NULL;
COMMENT ON TABLE aicost.usage IS 'Insert-only ledger of LLM calls; the insert trigger prices each row and charges every covering budget';
COMMENT ON COLUMN aicost.usage.usage_id IS 'Ledger row id';
COMMENT ON COLUMN aicost.usage.created_at IS 'When the call happened; decides the budget period it counts in';
COMMENT ON COLUMN aicost.usage.request_id IS 'Request id, unique per org: the same request is never charged twice';
COMMENT ON COLUMN aicost.usage.org_id IS 'Organization (charged to its org budget); set by the trigger for a role confined to an org';
COMMENT ON COLUMN aicost.usage.team_id IS 'Team (charged to its team budget)';
COMMENT ON COLUMN aicost.usage.user_id IS 'User (charged to its user budget)';
COMMENT ON COLUMN aicost.usage.api_key_id IS 'API key (charged to its api_key budget)';
COMMENT ON COLUMN aicost.usage.model IS 'Model name as requested';
COMMENT ON COLUMN aicost.usage.in_tokens IS 'All prompt tokens, cached and cache-write ones included (as ai_cost); filled from usage when NULL';
COMMENT ON COLUMN aicost.usage.out_tokens IS 'Completion tokens; filled from usage when NULL';
COMMENT ON COLUMN aicost.usage.cached_tokens IS 'Prompt tokens read from the provider''s cache';
COMMENT ON COLUMN aicost.usage.cache_write_tokens IS 'Prompt tokens written to a 5-minute cache';
COMMENT ON COLUMN aicost.usage.cache_write_1h_tokens IS 'Prompt tokens written to a 1-hour cache';
COMMENT ON COLUMN aicost.usage.service_tier IS 'standard, batch, flex or priority';
COMMENT ON COLUMN aicost.usage.usage IS 'The provider''s usage object, an alternative to the token counts';
COMMENT ON COLUMN aicost.usage.cost IS 'USD; computed by the trigger when NULL; NULL only for unpriced rows, never 0 for an unknown model';
COMMENT ON COLUMN aicost.usage.price_ids IS 'aicost.prices versions used to compute cost';
COMMENT ON COLUMN aicost.usage.budget_ids IS 'Budgets the cost was charged to (set by the trigger; a row inserted with it, as by a restore, is stored as already accounted)';
COMMENT ON COLUMN aicost.usage.cache_hit IS 'Answered from a cache: costs 0 unless a cost is given (aicost_admin only)';
COMMENT ON COLUMN aicost.usage.status IS 'ok, unpriced (unknown model, see ai_reprice_unpriced), or the caller''s own status';
COMMENT ON COLUMN aicost.usage.metadata IS 'Anything else the caller wants to keep';

CREATE TABLE aicost.budgets (
    budget_id    bigserial PRIMARY KEY,
    scope        text NOT NULL CHECK (scope IN ('org', 'team', 'user', 'api_key')),
    scope_id     text NOT NULL,
    amount       numeric NOT NULL CHECK (amount >= 0 AND amount < 'Infinity'),
    period       text NOT NULL DEFAULT 'month' CHECK (period IN ('day', 'week', 'month', 'lifetime')),
    time_zone    text NOT NULL DEFAULT 'UTC',
    alert_pct    numeric NOT NULL DEFAULT 80,
    throttle_pct numeric NOT NULL DEFAULT 95,
    hard_pct     numeric NOT NULL DEFAULT 100,
    created_at   timestamptz NOT NULL DEFAULT now(),
    org_id       text,
    UNIQUE (scope, scope_id),
    CONSTRAINT budgets_thresholds_check CHECK (0 < alert_pct AND alert_pct <= throttle_pct AND throttle_pct <= hard_pct AND hard_pct < 'Infinity'),
    CONSTRAINT budgets_org_check CHECK (scope <> 'org' OR org_id = scope_id)
);
COMMENT ON TABLE aicost.budgets IS 'Spending budgets per org, team, user or API key; set with ai_budget_set()';
COMMENT ON COLUMN aicost.budgets.budget_id IS 'Budget id';
COMMENT ON COLUMN aicost.budgets.scope IS 'org, team, user or api_key';
COMMENT ON COLUMN aicost.budgets.scope_id IS 'The org/team/user/key id the budget covers';
COMMENT ON COLUMN aicost.budgets.amount IS 'USD per period';
COMMENT ON COLUMN aicost.budgets.period IS 'day, week (ISO, from Monday), month (calendar, in time_zone) or lifetime';
COMMENT ON COLUMN aicost.budgets.time_zone IS 'Time zone of the calendar periods';
COMMENT ON COLUMN aicost.budgets.alert_pct IS 'Percent of amount at which an alert is recorded and NOTIFYed';
COMMENT ON COLUMN aicost.budgets.throttle_pct IS 'Percent of amount from which rate limits switch to their throttled values';
COMMENT ON COLUMN aicost.budgets.hard_pct IS 'Percent of amount that committed spend plus reservations may never exceed';
COMMENT ON COLUMN aicost.budgets.created_at IS 'When the budget was created';
COMMENT ON COLUMN aicost.budgets.org_id IS 'The org it belongs to (its scope_id for an org budget); NULL = shared: charged by rows of any org, invisible to roles confined to an org';

CREATE TABLE aicost.budget_spend (
    budget_id    bigint NOT NULL REFERENCES aicost.budgets ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    spent        numeric NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent < 'Infinity'),
    slot         integer NOT NULL DEFAULT 0 CHECK (slot >= 0),
    PRIMARY KEY (budget_id, period_start, slot)
);
COMMENT ON TABLE aicost.budget_spend IS 'Committed spend per budget and period, the sum over its slots (equals the ledger''s cost for them; see ai_budget_audit)';
COMMENT ON COLUMN aicost.budget_spend.budget_id IS 'Budget';
COMMENT ON COLUMN aicost.budget_spend.period_start IS 'Start of the period (-infinity for lifetime budgets)';
COMMENT ON COLUMN aicost.budget_spend.spent IS 'USD spent in the period (in this slot)';
COMMENT ON COLUMN aicost.budget_spend.slot IS '0: charged under this row''s lock (per-backend mode); n > 0: charged by backend number n in shared-memory mode, where admission is decided in shared memory and each backend adds to its own row, so writers never wait on each other';

CREATE TABLE aicost.budget_alerts (
    budget_id    bigint NOT NULL REFERENCES aicost.budgets ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    threshold    text NOT NULL CHECK (threshold IN ('alert', 'throttle', 'hard')),
    spent        numeric NOT NULL,
    limit_usd    numeric NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (budget_id, period_start, threshold)
);
COMMENT ON TABLE aicost.budget_alerts IS 'Threshold crossings, once per budget, period and threshold (also sent as NOTIFY aicost_budget)';
COMMENT ON COLUMN aicost.budget_alerts.budget_id IS 'Budget';
COMMENT ON COLUMN aicost.budget_alerts.period_start IS 'Period in which the threshold was crossed';
COMMENT ON COLUMN aicost.budget_alerts.threshold IS 'alert, throttle or hard';
COMMENT ON COLUMN aicost.budget_alerts.spent IS 'Spend right after the crossing';
COMMENT ON COLUMN aicost.budget_alerts.limit_usd IS 'The budget amount';
COMMENT ON COLUMN aicost.budget_alerts.created_at IS 'When it was crossed';

CREATE TABLE aicost.budget_reservations (
    reservation_id bigserial PRIMARY KEY,
    budget_id      bigint NOT NULL REFERENCES aicost.budgets ON DELETE CASCADE,
    period_start   timestamptz NOT NULL,
    amount         numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    request_id     text,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz NOT NULL,
    settled_at     timestamptz,
    usage_id       bigint,
    org_id         text
);
CREATE INDEX budget_reservations_active_idx ON aicost.budget_reservations (budget_id, period_start) WHERE settled_at IS NULL;
CREATE INDEX budget_reservations_request_idx ON aicost.budget_reservations (request_id) WHERE settled_at IS NULL;
COMMENT ON TABLE aicost.budget_reservations IS 'Estimated spend held by ai_budget_reserve until settled by a usage row with the same request_id, released, or expired';
COMMENT ON COLUMN aicost.budget_reservations.reservation_id IS 'Reservation id';
COMMENT ON COLUMN aicost.budget_reservations.budget_id IS 'Budget held against';
COMMENT ON COLUMN aicost.budget_reservations.period_start IS 'Period held in';
COMMENT ON COLUMN aicost.budget_reservations.amount IS 'USD held';
COMMENT ON COLUMN aicost.budget_reservations.request_id IS 'The usage row with this request_id (and org) settles the reservation';
COMMENT ON COLUMN aicost.budget_reservations.created_at IS 'When it was made';
COMMENT ON COLUMN aicost.budget_reservations.expires_at IS 'After this it no longer counts';
COMMENT ON COLUMN aicost.budget_reservations.settled_at IS 'When it was settled or released';
COMMENT ON COLUMN aicost.budget_reservations.usage_id IS 'The ledger row that settled it';
COMMENT ON COLUMN aicost.budget_reservations.org_id IS 'Org of its budget: only usage rows of that org (or any org, when NULL) settle it';

CREATE TABLE aicost.rate_limits (
    limit_id           bigserial PRIMARY KEY,
    scope              text NOT NULL CHECK (scope IN ('org', 'team', 'user', 'api_key')),
    scope_id           text NOT NULL,
    window_size        interval NOT NULL CHECK (window_size > interval '0'),
    max_requests       bigint CHECK (max_requests >= 0),
    max_tokens         bigint CHECK (max_tokens >= 0),
    throttled_requests bigint CHECK (throttled_requests >= 0),
    throttled_tokens   bigint CHECK (throttled_tokens >= 0),
    org_id             text,
    UNIQUE (scope, scope_id, window_size),
    CONSTRAINT rate_limits_org_check CHECK (scope <> 'org' OR org_id = scope_id)
);
COMMENT ON TABLE aicost.rate_limits IS 'Requests and tokens per fixed window per scope; set with ai_rate_limit_set()';
COMMENT ON COLUMN aicost.rate_limits.limit_id IS 'Rate limit id';
COMMENT ON COLUMN aicost.rate_limits.scope IS 'org, team, user or api_key';
COMMENT ON COLUMN aicost.rate_limits.scope_id IS 'The id it applies to';
COMMENT ON COLUMN aicost.rate_limits.window_size IS 'Window length; windows are aligned to 2000-01-01 UTC (date_bin)';
COMMENT ON COLUMN aicost.rate_limits.max_requests IS 'Requests per window (NULL = unlimited)';
COMMENT ON COLUMN aicost.rate_limits.max_tokens IS 'in + out tokens per window (NULL = unlimited)';
COMMENT ON COLUMN aicost.rate_limits.throttled_requests IS 'Requests per window while the scope''s budget is at or above its throttle threshold';
COMMENT ON COLUMN aicost.rate_limits.throttled_tokens IS 'Tokens per window while throttled';
COMMENT ON COLUMN aicost.rate_limits.org_id IS 'The org it belongs to (its scope_id for an org limit); NULL = counts rows of any org';

CREATE TABLE aicost.rate_counters (
    limit_id     bigint NOT NULL REFERENCES aicost.rate_limits ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    requests     bigint NOT NULL DEFAULT 0,
    tokens       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (limit_id, window_start)
);
COMMENT ON TABLE aicost.rate_counters IS 'Requests and tokens used per rate limit and window (windows that ended more than a day ago are dropped)';
COMMENT ON COLUMN aicost.rate_counters.limit_id IS 'Rate limit';
COMMENT ON COLUMN aicost.rate_counters.window_start IS 'Start of the window';
COMMENT ON COLUMN aicost.rate_counters.requests IS 'Requests counted';
COMMENT ON COLUMN aicost.rate_counters.tokens IS 'Tokens counted';

SELECT pg_catalog.pg_extension_config_dump('aicost.usage', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.usage_usage_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.budgets', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.budgets_budget_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.budget_spend', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.budget_alerts', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.budget_reservations', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.budget_reservations_reservation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.rate_limits', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.rate_limits_limit_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('aicost.rate_counters', '');

COMMENT ON FUNCTION aicost._shmem_budgets() IS 'Internal: whether budgets are admitted in shared memory (pg_aicost preloaded, not a standby)';
COMMENT ON FUNCTION aicost._stat_budget(bigint, text) IS 'Internal: counts a budget event (check, reservation, charge, denial, alert) for aicost.stat_budget';
COMMENT ON FUNCTION aicost._admit_shared(bigint, timestamptz, numeric, boolean) IS 'Internal: shared-memory admission of a reservation against a budget period''s hard limit (AC001)';
COMMENT ON FUNCTION aicost._charge_shared(bigint[], numeric, timestamptz, text, bigint) IS 'Internal: shared-memory mode charge of a ledger row (whose reservations _charge settled): admits its cost against each hard limit (AC001), adds it to this backend''s spend rows, records alerts';

-- Budget periods are calendar periods in the budget's time zone.
CREATE FUNCTION aicost._period_start(p_period text, p_tz text, p_at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE p_period WHEN 'lifetime' THEN '-infinity'::timestamptz ELSE date_trunc(p_period, p_at, p_tz) END
$$;
COMMENT ON FUNCTION aicost._period_start(text, text, timestamptz) IS 'Internal: start of the budget period containing p_at';

CREATE FUNCTION aicost._period_end(p_period text, p_tz text, p_start timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE p_period WHEN 'lifetime' THEN 'infinity'::timestamptz
           ELSE ((p_start AT TIME ZONE p_tz) + ('1 ' || p_period)::interval) AT TIME ZONE p_tz END
$$;
COMMENT ON FUNCTION aicost._period_end(text, text, timestamptz) IS 'Internal: end (exclusive) of the budget period starting at p_start';

CREATE FUNCTION aicost._reserved(p_budget bigint, p_start timestamptz) RETURNS numeric
-- PL/pgSQL, not SQL: a SQL function with a FROM clause is planned again on every call.
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(sum(r.amount), 0) FROM aicost.budget_reservations r
             WHERE r.budget_id = p_budget AND r.period_start = p_start
               AND r.settled_at IS NULL AND r.expires_at > clock_timestamp());
END
$$;
COMMENT ON FUNCTION aicost._reserved(bigint, timestamptz) IS 'Internal: USD held by active reservations of a budget period';

CREATE FUNCTION aicost._spent(p_budget bigint, p_start timestamptz) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(sum(s.spent), 0) FROM aicost.budget_spend s
             WHERE s.budget_id = p_budget AND s.period_start = p_start);
END
$$;
COMMENT ON FUNCTION aicost._spent(bigint, timestamptz) IS 'Internal: committed spend of a budget period (all slots)';

-- Locks a budget period's slot-0 spend row (creating it) and returns the period's spend. In
-- per-backend mode every writer goes through this lock; the other slots are written only in
-- shared-memory mode (a previous server run), so they do not change meanwhile.
CREATE FUNCTION aicost._lock_spend(p_budget bigint, p_start timestamptz) RETURNS numeric
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
COMMENT ON FUNCTION aicost._lock_spend(bigint, timestamptz) IS 'Internal: locks (creating it if needed) the slot-0 spend row of a budget period; returns the period''s spend';

CREATE FUNCTION aicost._budget_exceeded(b aicost.budgets, p_start timestamptz, p_spent numeric,
                                        p_reserved numeric, p_cost numeric) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'budget exceeded: % "%" has % USD left of % USD this period',
          b.scope, b.scope_id, trim_scale(greatest(b.amount * b.hard_pct / 100 - p_spent - p_reserved, 0)), trim_scale(b.amount * b.hard_pct / 100)
        USING ERRCODE = 'AC001',
              DETAIL = format('period starting %s: spent %s, reserved %s, this request %s', p_start, p_spent, p_reserved, p_cost),
              HINT = 'Raise the budget with ai_budget_set(), or wait for the next period.';
END
$$;
COMMENT ON FUNCTION aicost._budget_exceeded(aicost.budgets, timestamptz, numeric, numeric, numeric) IS 'Internal: raises SQLSTATE AC001 (budget exceeded)';

-- Records and announces threshold crossings of one budget period (caller holds its spend lock).
CREATE FUNCTION aicost._budget_thresholds(b aicost.budgets, p_start timestamptz, p_old numeric, p_new numeric)
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
COMMENT ON FUNCTION aicost._budget_thresholds(aicost.budgets, timestamptz, numeric, numeric) IS 'Internal: records a budget_alerts row and NOTIFYs aicost_budget for each threshold crossed';

-- Charges p_cost to every budget covering the row; raises AC001 when a hard limit would be passed.
-- The budgets covering a ledger row (its org, team, user and API key), in lock order.
CREATE FUNCTION aicost._covering_budgets(p_row aicost.usage) RETURNS bigint[]
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

-- Settles the active reservations of a ledger row's request: those with its request_id whose org
-- is the row's (or none), on the given budgets (NULL: on any budget). The one settlement rule.
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

-- Charges p_cost to the given budgets (in budget_id order) in the period of the row's created_at;
-- raises AC001 when a hard limit would be passed.
CREATE FUNCTION aicost._charge(p_row aicost.usage, p_cost numeric, p_budgets bigint[]) RETURNS void
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
COMMENT ON FUNCTION aicost._charge(aicost.usage, numeric, bigint[]) IS 'Internal: adds a ledger row''s cost to every covering budget period, under its row lock or (shared-memory mode) by admission in shared memory; AC001 past a hard limit';

-- Counts the row against every covering rate limit; raises AC002 past a limit.
CREATE FUNCTION aicost._rate_count(p_row aicost.usage) RETURNS void
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
COMMENT ON FUNCTION aicost._rate_count(aicost.usage) IS 'Internal: counts a ledger row against every covering rate limit window; AC002 past a limit';

-- Whether the budget of a scope is at or above its throttle threshold in the period of p_at.
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

CREATE FUNCTION aicost._throttled(p_scope text, p_scope_id text, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT coalesce(bool_or(aicost._budget_state(b.amount, b.alert_pct, b.throttle_pct, b.hard_pct,
                                                         aicost._spent(b.budget_id, aicost._period_start(b.period, b.time_zone, p_at)),
                                                         0, 0) IN ('throttle', 'deny')), false)
              FROM aicost.budgets b
             WHERE b.scope = p_scope AND b.scope_id = p_scope_id);
END
$$;
COMMENT ON FUNCTION aicost._throttled(text, text, timestamptz) IS 'Internal: whether a scope''s budget is at or above its throttle threshold';

CREATE FUNCTION aicost._usage_before_insert() RETURNS trigger
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
COMMENT ON FUNCTION aicost._usage_before_insert() IS 'Trigger: fills a ledger row''s counts, prices it and lists the budgets to charge';
CREATE TRIGGER usage_before_insert BEFORE INSERT ON aicost.usage
    FOR EACH ROW EXECUTE FUNCTION aicost._usage_before_insert();

CREATE FUNCTION aicost._usage_after_insert() RETURNS trigger
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
COMMENT ON FUNCTION aicost._usage_after_insert() IS 'Trigger: counts a ledger row against its rate limits (AC002) and charges it to the budgets listed by the BEFORE trigger (AC001 past a hard limit), undoing the insert on either';
-- The WHEN clause runs right after each row is written: a recorded row queues no event.
CREATE TRIGGER usage_after_insert AFTER INSERT ON aicost.usage
    FOR EACH ROW WHEN (NOT aicost._ledger_take_recorded(NEW.usage_id))
    EXECUTE FUNCTION aicost._usage_after_insert();

CREATE FUNCTION aicost._usage_insert_only() RETURNS trigger
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
COMMENT ON FUNCTION aicost._usage_insert_only() IS 'Trigger: keeps the ledger insert-only (except for ai_reprice_unpriced)';
CREATE TRIGGER usage_insert_only BEFORE UPDATE OR DELETE ON aicost.usage
    FOR EACH ROW EXECUTE FUNCTION aicost._usage_insert_only();
CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON aicost.usage
    FOR EACH STATEMENT EXECUTE FUNCTION aicost._usage_insert_only();

CREATE FUNCTION aicost._check_scope(p_scope text, p_scope_id text) RETURNS void
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
COMMENT ON FUNCTION aicost._check_scope(text, text) IS 'Internal: validates a scope kind and id';

-- Creates or changes the budget of a scope. Returns its id.
CREATE FUNCTION ai_budget_set(scope text, scope_id text, amount numeric, period text DEFAULT 'month',
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
COMMENT ON FUNCTION ai_budget_set(text, text, numeric, text, numeric, numeric, numeric, text, text) IS 'Creates or changes the budget (USD per period) of an org, team, user or api_key (of org org_id, or shared when NULL), with alert, throttle and hard-stop percentages';

CREATE FUNCTION ai_budget_drop(scope text, scope_id text) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    DELETE FROM aicost.budgets b WHERE b.scope = ai_budget_drop.scope AND b.scope_id = ai_budget_drop.scope_id
    RETURNING true
$$;
COMMENT ON FUNCTION ai_budget_drop(text, text) IS 'Deletes the budget of a scope with its spend, alerts and reservations (the ledger is untouched); NULL if there was none';

-- Pre-flight: the state of a scope's budget if estimated_cost were spent now.
CREATE FUNCTION ai_budget_check(scope text, scope_id text, estimated_cost numeric DEFAULT 0,
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
COMMENT ON FUNCTION ai_budget_check(text, text, numeric) IS 'Pre-flight check: ok, alert, throttle or deny if estimated_cost were spent now, with the money remaining (reservations count)';

-- Holds amount against a scope's budget until a usage row with request_id settles it, it is
-- released, it expires, or the transaction that made it rolls back. AC001 if it does not fit.
CREATE FUNCTION ai_budget_reserve(scope text, scope_id text, amount numeric, request_id text DEFAULT NULL,
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
COMMENT ON FUNCTION ai_budget_reserve(text, text, numeric, text, interval) IS 'Holds an estimated amount against a budget (counts against its limit) until settled by the usage row with request_id, released, expired or rolled back; AC001 if it does not fit';

CREATE FUNCTION ai_budget_release(reservation_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    UPDATE aicost.budget_reservations r SET settled_at = clock_timestamp()
     WHERE r.reservation_id = ai_budget_release.reservation_id AND r.settled_at IS NULL
       AND aicost._visible(r.org_id)
    RETURNING true
$$;
COMMENT ON FUNCTION ai_budget_release(bigint) IS 'Releases a reservation early; NULL if it was already settled or released (or is another org''s)';

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

-- Sets a rate limit for a scope and window (NULL limits are unlimited). Returns its id.
CREATE FUNCTION ai_rate_limit_set(scope text, scope_id text, window_size interval,
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
COMMENT ON FUNCTION ai_rate_limit_set(text, text, interval, bigint, bigint, bigint, bigint, text) IS 'Sets requests and tokens per window for a scope, with throttled values used while its budget is past the throttle threshold';

-- Whether one more request of `tokens` tokens would pass every rate limit of the scope now.
CREATE FUNCTION ai_rate_limit_check(scope text, scope_id text, tokens bigint DEFAULT 0,
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
COMMENT ON FUNCTION ai_rate_limit_check(text, text, bigint) IS 'Whether one more request with this many tokens passes the scope''s rate limits now (throttled values apply past the budget''s throttle threshold); reports the binding window';

-- Prices rows stored as unpriced (aicost.ledger_unknown_model = unpriced) once their model has a
-- price (valid at the row's time, or else its first price), charging their budgets; rows that
-- would pass a hard limit stay unpriced.
-- SECURITY DEFINER: only this function may update ledger rows (aicost.ledger_maintenance can be
-- set by superusers only); every name inside is schema-qualified.
CREATE FUNCTION ai_reprice_unpriced() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r aicost.usage;
    v_cost numeric;
    v_ids bigint[];
    v_n bigint := 0;
    v_skipped bigint := 0;
    v_rows bigint[];
    v_budget bigint;
    v_start timestamptz;
    v_budgets bigint[];
BEGIN
    PERFORM set_config('aicost.ledger_maintenance', 'on', true);
    -- The rows to price, locked first (inserts never lock ledger rows).
    SELECT coalesce(array_agg(x.usage_id ORDER BY x.usage_id), '{}') INTO v_rows
      FROM (SELECT u.usage_id FROM aicost.usage u WHERE u.status = 'unpriced' AND u.cost IS NULL
             ORDER BY u.usage_id FOR UPDATE) x;
    -- Then every spend row they may charge, in (budget_id, period_start) order: the order in which
    -- the insert trigger and ai_budget_reserve lock them, so that repricing several rows in one
    -- transaction cannot deadlock with them.
    FOR v_budget, v_start IN
        SELECT DISTINCT bu.budget_id, aicost._period_start(bu.period, bu.time_zone, u.created_at)
          FROM aicost.usage u
          JOIN aicost.budgets bu
            ON (bu.scope = 'org' AND bu.scope_id = u.org_id) OR (bu.scope = 'team' AND bu.scope_id = u.team_id)
            OR (bu.scope = 'user' AND bu.scope_id = u.user_id) OR (bu.scope = 'api_key' AND bu.scope_id = u.api_key_id)
         WHERE u.usage_id = ANY (v_rows)
         ORDER BY 1, 2
    LOOP
        PERFORM aicost._lock_spend(v_budget, v_start);
    END LOOP;
    FOR r IN SELECT * FROM aicost.usage u WHERE u.usage_id = ANY (v_rows) ORDER BY u.usage_id LOOP
        -- Priced at the row's time, or, for a model that had no price yet then, at its first price.
        SELECT p.cost, p.price_ids INTO v_cost, v_ids
          FROM aicost._ledger_price(r.model, r.in_tokens, r.out_tokens, r.cached_tokens, r.cache_write_tokens,
                                    r.cache_write_1h_tokens, r.service_tier,
                                    greatest(r.created_at, (SELECT min(lower(pr.valid)) FROM aicost.prices pr
                                                             WHERE pr.model = aicost._cache_model(r.model))),
                                    true) p;
        CONTINUE WHEN v_cost IS NULL;
        BEGIN
            v_budgets := aicost._covering_budgets(r);
            PERFORM aicost._charge(r, v_cost, v_budgets);
            UPDATE aicost.usage u SET cost = v_cost, price_ids = v_ids, status = 'ok', budget_ids = v_budgets
             WHERE u.usage_id = r.usage_id;
            v_n := v_n + 1;
        EXCEPTION WHEN SQLSTATE 'AC001' THEN
            v_skipped := v_skipped + 1;
        END;
    END LOOP;
    PERFORM set_config('aicost.ledger_maintenance', 'off', true);
    IF v_skipped > 0 THEN
        RAISE NOTICE '% unpriced rows left unpriced: charging them would pass a hard budget limit', v_skipped;
    END IF;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION ai_reprice_unpriced() IS 'Prices unpriced ledger rows whose model now has a price (at the row''s time) and charges their budgets; returns how many';

-- Budgets whose recorded spend differs from the ledger (should always be empty).
CREATE FUNCTION ai_budget_audit()
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
COMMENT ON FUNCTION ai_budget_audit() IS 'Checks the budget invariant: lists budget periods whose recorded spend differs from the sum of the cost of the ledger rows charged to them (empty when all is well)';

-- Views read the tables with their owner's rights and show a role confined to an org only that
-- org's rows (aicost._visible); the spend and reservation sums are inline so that callers need
-- no right on those tables.
CREATE VIEW aicost.budget_status WITH (security_barrier) AS
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

CREATE VIEW aicost.spend_daily WITH (security_barrier) AS
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
