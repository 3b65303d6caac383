-- pgbench peer: a hand-rolled UNLOGGED key/value table keyed by the same SHA-256 cache key,
-- which this peer computes from the request with ai_cache_key (the same hashing as ai_cache_get,
-- without its expiry check and statistics).
\set i random(1, 10000)
SELECT v FROM kv WHERE k = ai_cache_key('gpt-4o', '{"model": "gpt-4o", "messages": [{"role": "system", "content": "You are a helpful assistant for a travel booking company. Answer concisely and politely, cite the relevant section of the booking policy, and never invent prices, dates or availability that are not in the context you were given."}, {"role": "user", "content": "Customer question #:i. I booked a flight and a hotel in the same order last week. Can I cancel only the hotel and keep the flight, and will I get a refund for the hotel part?"}], "temperature": 0.2}', 'bench');
