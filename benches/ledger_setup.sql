-- pg_aicost benchmark fixture for section F (budgets), run by benches/run.sh in a fresh database
-- aicost_ledger_bench. Budgets are far too large to be reached (1e9 USD a month): every insert
-- is charged, none refused.
\set ON_ERROR_STOP on
\set QUIET on
CREATE EXTENSION pg_aicost CASCADE;
-- (b) one budget shared by all clients; (c) one budget per pgbench client (client_id 0..99).
SELECT ai_budget_set('user', 'shared', 1e9) IS NOT NULL AS ok \gset
SELECT count(ai_budget_set('user', 'u' || c, 1e9)) AS ok FROM generate_series(0, 99) c \gset
-- (a) user 'nobody' has no budget.
