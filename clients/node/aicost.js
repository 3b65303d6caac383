// pg_aicost from Node.js with node-postgres (`pg`). Money stays exact: PostgreSQL numeric comes
// back as a string (node-postgres never parses numeric into a JS float); add amounts in SQL, or
// with a decimal library, never with `+` on Numbers.
'use strict';

const BUDGET_EXCEEDED = 'AC001';
const RATE_LIMITED = 'AC002';

class BudgetExceeded extends Error {}
class RateLimited extends Error {}

function budgetError(e) {
  if (e && e.code === BUDGET_EXCEEDED) return new BudgetExceeded(e.message);
  if (e && e.code === RATE_LIMITED) return new RateLimited(e.message);
  return e;
}

/** Exact USD cost of a request, as a decimal string. */
async function cost(client, model, inTokens, outTokens) {
  const r = await client.query('SELECT ai_cost($1::text, $2::bigint, $3::bigint) AS cost', [model, inTokens, outTokens]);
  return r.rows[0].cost;
}

/** Exact USD cost of a provider usage object (OpenAI, Anthropic, Gemini), as a decimal string. */
async function costOfUsage(client, model, usage) {
  const r = await client.query('SELECT ai_cost($1::text, $2::jsonb) AS cost', [model, JSON.stringify(usage)]);
  return r.rows[0].cost;
}

/**
 * Records a call in the ledger; false when requestId was recorded already (never charged twice).
 * Throws BudgetExceeded / RateLimited when a budget or rate limit refuses it.
 */
async function record(client, { model, usage, requestId = null, orgId = null, userId = null, metadata = null }) {
  try {
    const r = await client.query(
      `INSERT INTO aicost.usage (request_id, org_id, user_id, model, usage, metadata)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb) ON CONFLICT DO NOTHING`,
      [requestId, orgId, userId, model, JSON.stringify(usage), metadata === null ? null : JSON.stringify(metadata)],
    );
    return r.rowCount === 1;
  } catch (e) {
    throw budgetError(e);
  }
}

/** Sums exact decimal strings in the database (never as JS Numbers). */
async function sum(client, amounts) {
  const r = await client.query('SELECT coalesce(sum(a), 0)::text AS s FROM unnest($1::numeric[]) a', [amounts]);
  return r.rows[0].s;
}

/**
 * The cached response to `request`, or produced once by `produce()` while concurrent callers of
 * the same request wait (single flight, one transaction). Resolves to { response, hit }.
 */
async function cachedCompletion(client, model, request, produce, namespace = 'default') {
  await client.query('BEGIN');
  try {
    const r = await client.query(
      'SELECT status, response FROM ai_cache_get_or_lock($1, $2::jsonb, $3)',
      [model, JSON.stringify(request), namespace],
    );
    const { status, response } = r.rows[0];
    if (status === 'hit') {
      await client.query('COMMIT');
      return { response, hit: true };
    }
    if (status !== 'compute') throw new Error(`ai_cache_get_or_lock: ${status}`);
    const produced = await produce();
    await client.query('SELECT ai_cache_put($1, $2::jsonb, $3::jsonb, namespace => $4)',
      [model, JSON.stringify(request), JSON.stringify(produced), namespace]);
    await client.query('COMMIT');
    return { response: produced, hit: false };
  } catch (e) {
    await client.query('ROLLBACK');
    throw e;
  }
}

module.exports = { cost, costOfUsage, record, sum, cachedCompletion, BudgetExceeded, RateLimited };

if (require.main === module) {
  const { Client } = require('pg');
  (async () => {
    const client = new Client({ connectionString: process.env.AICOST_URL || 'postgresql://127.0.0.1:28815/postgres' });
    await client.connect();
    console.log('gpt-4o, 1000 in / 500 out:', await cost(client, 'gpt-4o', 1000, 500), 'USD');
    await client.end();
  })().catch((e) => { console.error(e); process.exit(1); });
}
