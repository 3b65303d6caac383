-- pgbench: one circuit-breaker report per transaction (a success: the breaker stays closed).
SELECT ai_call_report('gpt-4o', true);
