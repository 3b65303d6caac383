-- pg_aicost maintenance jobs for pg_cron (Debian: postgresql-15-cron; postgresql.conf:
-- shared_preload_libraries = 'pg_cron', cron.database_name = '<your database>', and
-- cron.use_background_workers = on, so that jobs run in background workers as their role; without
-- it pg_cron logs in over libpq to localhost as that role, which needs a password in .pgpass or a
-- pg_hba.conf entry for it).
--
-- Run this file in the database named by cron.database_name, as the role the jobs should run as:
-- a login role granted aicost_admin (and USAGE on schema cron), e.g.
--     CREATE ROLE aicost_ops LOGIN; GRANT aicost_admin TO aicost_ops;
--     GRANT USAGE ON SCHEMA cron TO aicost_ops;
--     psql -U aicost_ops -d app -f clients/pg_cron/jobs.sql
-- Re-running it updates the jobs in place (cron.schedule with a job name replaces that job).
-- See them with: SELECT jobname, schedule, command FROM cron.job;
-- and their runs with: SELECT * FROM cron.job_run_details ORDER BY start_time DESC LIMIT 20;

-- Every 5 minutes: remove expired response-cache entries and roll the cache's event log up into
-- the statistics of aicost.cache_stats (keeps the unlogged event log short).
SELECT cron.schedule('aicost-cache-sweep', '*/5 * * * *', $$SELECT ai_cache_sweep()$$);

-- Hourly: delete budget reservations settled, released or expired more than a day ago (they no
-- longer count; the table would otherwise only grow).
SELECT cron.schedule('aicost-reservations-purge', '17 * * * *', $$SELECT ai_budget_reservations_purge('1 day')$$);
