-- pgbench peer: a plain SELECT from a hand-rolled UNLOGGED key/value table (text primary key)
-- by a key the application already knows (i::text: pgbench cannot make a SHA-256 string).
\set i random(1, 10000)
SELECT v FROM kv_i WHERE k = ':i';
