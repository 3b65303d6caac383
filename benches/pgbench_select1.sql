-- pgbench baseline: the cheapest possible query.
SELECT 1;
