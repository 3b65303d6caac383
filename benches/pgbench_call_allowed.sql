-- pgbench: one circuit-breaker check per transaction (closed: admitted).
SELECT allowed FROM ai_call_allowed('gpt-4o');
