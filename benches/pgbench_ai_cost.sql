-- pgbench: one ai_cost call per transaction (the catalog cache is warm after the first).
SELECT ai_cost('gpt-4o', 1000, 500);
