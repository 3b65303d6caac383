-- pgbench: ai_cache_get hit, as an application sends it (the request JSON with pgbench's :i
-- substituted); benches/cache_setup.sql put the same 10,000 requests in namespace 'bench'.
\set i random(1, 10000)
SELECT ai_cache_get('gpt-4o', '{"model": "gpt-4o", "messages": [{"role": "system", "content": "You are a helpful assistant for a travel booking company. Answer concisely and politely, cite the relevant section of the booking policy, and never invent prices, dates or availability that are not in the context you were given."}, {"role": "user", "content": "Customer question #:i. I booked a flight and a hotel in the same order last week. Can I cancel only the hotel and keep the flight, and will I get a refund for the hotel part?"}], "temperature": 0.2}', 'bench');
