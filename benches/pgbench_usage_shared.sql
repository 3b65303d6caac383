-- pgbench (F.b): every client charges the same budget (user 'shared'): one spend row for all.
\set i random(1, 1000)
INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('shared', 'gpt-4o', 1000 + :i, 500);
