-- pg_aicost benchmark fixture for section E (response cache), run by benches/run.sh in aicost_bench
-- after benches/setup.sql (pg_aicost is installed there):
--   psql -v accesses=30000 -f benches/cache_setup.sql
-- Deterministic: the same entries, keys and Zipf access sequence on every run.
\set ON_ERROR_STOP on
\set QUIET on

-- Request i (~520 bytes: a system and a user message, model, temperature) and response i
-- (~1,080 bytes: an OpenAI chat.completion with usage, which ai_cache_put prices as the entry's
-- cost). pgbench_cache_get.sql sends the same request text with :i substituted by pgbench, so
-- every get hits (run.sh fails if there is a single miss).
CREATE FUNCTION bench_request(i int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $f$
    SELECT replace($t${"model": "gpt-4o", "messages": [{"role": "system", "content": "You are a helpful assistant for a travel booking company. Answer concisely and politely, cite the relevant section of the booking policy, and never invent prices, dates or availability that are not in the context you were given."}, {"role": "user", "content": "Customer question #:i. I booked a flight and a hotel in the same order last week. Can I cancel only the hotel and keep the flight, and will I get a refund for the hotel part?"}], "temperature": 0.2}$t$,
                   ':i', i::text)::jsonb
$f$;
CREATE FUNCTION bench_response(i int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $f$
    SELECT replace($t${"id": "chatcmpl-bench-:i", "object": "chat.completion", "created": 1735689600, "model": "gpt-4o-2024-08-06", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes, you can cancel only the hotel part of booking #:i and keep your flight. Under section 4.2 of the booking policy, components of a combined order can be cancelled separately as long as the flight has not been ticketed as a package fare. The hotel you chose offers free cancellation up to 48 hours before check-in, so if you cancel now you will receive a full refund of the hotel amount to the original payment method within 5 to 10 business days. Your flight reservation, seat selection and baggage options stay unchanged. To cancel, open My Trips, select the order, choose Manage hotel and then Cancel hotel only. If the hotel was booked with a non-refundable rate, the refund would instead follow the rate rules shown on your confirmation. Is there anything else I can help you with?"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 96, "completion_tokens": 168, "total_tokens": 264}}$t$,
                   ':i', i::text)::jsonb
$f$;

-- 10,000 entries in namespace 'bench' (limit far above that): ai_cache_warm in 10 batches of
-- 1,000, one transaction each.
SELECT ai_cache_namespace_set('bench', max_entries => 1000000) IS NOT NULL AS ok \gset
SELECT clock_timestamp() AS warm_start \gset
\o /dev/null
SELECT format($q$SELECT ai_cache_warm('bench', (SELECT jsonb_agg(jsonb_build_object(
                    'model', 'gpt-4o', 'request', bench_request(i), 'response', bench_response(i)))
                  FROM generate_series(%s, %s) i))$q$, b * 1000 + 1, b * 1000 + 1000)
  FROM generate_series(0, 9) b \gexec
\o
SELECT round(extract(epoch FROM clock_timestamp() - :'warm_start') * 1000) AS warm_ms \gset

-- The hand-rolled peers, UNLOGGED key/value tables holding the same 10,000 responses:
--   kv:   keyed by the real cache keys (ai_cache_key values, 64 hex digits), for the peer that
--         hashes the request itself: SELECT v FROM kv WHERE k = ai_cache_key(...).
--   kv_i: keyed by i::text, for the peer that already knows its key (pgbench cannot produce a
--         SHA-256 string, so this key is short: an advantage for the peer).
CREATE UNLOGGED TABLE kv (k text PRIMARY KEY, v jsonb NOT NULL);
INSERT INTO kv SELECT ai_cache_key('gpt-4o', bench_request(i), 'bench'), bench_response(i) FROM generate_series(1, 10000) i;
CREATE UNLOGGED TABLE kv_i (k text PRIMARY KEY, v jsonb NOT NULL);
INSERT INTO kv_i SELECT i::text, bench_response(i) FROM generate_series(1, 10000) i;

-- The cache entries must be exactly the peer's keys.
DO $$
BEGIN
    IF (SELECT count(*) FROM kv JOIN aicost.cache_entries c ON c.key = kv.k AND c.response = kv.v
         WHERE c.namespace = 'bench') <> 10000 THEN
        RAISE EXCEPTION 'cache namespace bench does not hold the 10,000 kv entries';
    END IF;
END $$;

-- Zipf(s = 1) access sequence over 10,000 distinct requests: rank k has probability
-- (1/k) / H(10000). :accesses draws by inverse CDF from a seeded random().
CREATE TABLE zipf_cdf (k int PRIMARY KEY, c float8 NOT NULL);
INSERT INTO zipf_cdf
SELECT k, sum(1.0 / k) OVER (ORDER BY k) / sum(1.0 / k) OVER () FROM generate_series(1, 10000) k;
CREATE INDEX ON zipf_cdf (c);
SELECT setseed(0.4242) \gset
CREATE TABLE zipf_draws AS SELECT n, random() AS u FROM generate_series(1, :accesses) n;
CREATE TABLE zipf_seq AS
SELECT d.n, coalesce((SELECT z.k FROM zipf_cdf z WHERE z.c >= d.u ORDER BY z.c LIMIT 1), 10000) AS k
  FROM zipf_draws d;
ALTER TABLE zipf_seq ADD PRIMARY KEY (n);
SELECT ai_cache_namespace_set('zipf-lru', max_entries => 1000, eviction => 'lru') IS NOT NULL AS ok \gset
SELECT ai_cache_namespace_set('zipf-lfu', max_entries => 1000, eviction => 'lfu') IS NOT NULL AS ok \gset

-- One access of the Zipf workload: get; on a miss, put (each access its own transaction).
CREATE PROCEDURE bench_zipf_run(ns text) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT k FROM zipf_seq ORDER BY n LOOP
        IF ai_cache_get('gpt-4o', bench_request(r.k), ns) IS NULL THEN
            PERFORM ai_cache_put('gpt-4o', bench_request(r.k), bench_response(r.k), namespace => ns);
        END IF;
        COMMIT;
    END LOOP;
END
$$;

VACUUM ANALYZE kv;
VACUUM ANALYZE kv_i;
VACUUM ANALYZE aicost.cache_entries;
VACUUM ANALYZE aicost.cache_namespaces;

-- One line for run.sh: warm ms, entries in 'bench', average request and response bytes,
-- Zipf reference hit ratios: the probability mass of the 1,000 most frequent requests in theory,
-- and the share of accesses to the 1,000 most frequent ones of the drawn sequence; how many
-- distinct requests the sequence touches.
\pset tuples_only on
\pset format unaligned
\pset fieldsep ' '
SELECT :warm_ms,
       (SELECT entries FROM aicost.cache_stats WHERE namespace = 'bench'),
       (SELECT round(avg(octet_length(bench_request(i)::text))) FROM generate_series(1, 10000) i),
       (SELECT round(avg(octet_length(bench_response(i)::text))) FROM generate_series(1, 10000) i),
       (SELECT round(c::numeric, 4) FROM zipf_cdf WHERE k = 1000),
       (SELECT round(sum(n)::numeric / :accesses, 4)
          FROM (SELECT count(*) AS n FROM zipf_seq GROUP BY k ORDER BY n DESC LIMIT 1000) top),
       (SELECT count(DISTINCT k) FROM zipf_seq);
