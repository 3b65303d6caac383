-- pgbench (F.c): each client charges its own budget (user 'u<client_id>').
\set i random(1, 1000)
INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('u' || :client_id, 'gpt-4o', 1000 + :i, 500);
