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

-- Like pg_stat_statements_reset: not transactional, superusers and aicost_admin only.
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
COMMENT ON FUNCTION aicost.stat_reset() IS 'Zeroes the statistics of aicost.stat_cost, aicost.stat_cache and aicost.stat_budget (with ai_cache_stats_reset() for the response cache); the counter reset is not undone by ROLLBACK; superusers and aicost_admin only';
-- Superusers and aicost_admin only (sql/finalize.sql).
