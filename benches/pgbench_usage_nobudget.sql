-- pgbench (F.a): a usage row whose user has no budget (priced by the trigger, nothing charged).
\set i random(1, 1000)
INSERT INTO aicost.usage (user_id, model, in_tokens, out_tokens) VALUES ('nobody', 'gpt-4o', 1000 + :i, 500);
