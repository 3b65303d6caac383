// The Node.js example against the test cluster, as the application role (AICOST_APP_URL).
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { randomUUID } = require('node:crypto');
const { Client } = require('pg');
const aicost = require('./aicost');

const APP_URL = process.env.AICOST_APP_URL;
const ADMIN_URL = process.env.AICOST_ADMIN_URL;

async function connect(url) {
  const c = new Client({ connectionString: url });
  await c.connect();
  return c;
}

test('costs are exact decimal strings', async () => {
  const c = await connect(APP_URL);
  try {
    const who = await c.query('SELECT current_user AS u, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS s');
    assert.strictEqual(who.rows[0].s, false, 'not a superuser');
    assert.strictEqual(await aicost.cost(c, 'gpt-4o', 1000, 500), '0.0075');
    const usage = { prompt_tokens: 1000, completion_tokens: 500, prompt_tokens_details: { cached_tokens: 800 } };
    assert.strictEqual(await aicost.costOfUsage(c, 'gpt-4o', usage), '0.0065');
    // 0.1 + 0.2 in the database is 0.3 (as JS Numbers it is 0.30000000000000004).
    assert.strictEqual(await aicost.sum(c, ['0.1', '0.2']), '0.3');
    const many = [];
    for (let i = 0; i < 1000; i++) many.push(await aicost.cost(c, 'gpt-4o-mini', 333, 77));
    const one = await aicost.cost(c, 'gpt-4o-mini', 333, 77);
    const r = await c.query('SELECT ($1::numeric * 1000)::text AS t', [one]);
    assert.strictEqual(await aicost.sum(c, many), r.rows[0].t);
  } finally {
    await c.end();
  }
});

test('recording charges once; budget and rate-limit errors are typed', async () => {
  const admin = await connect(ADMIN_URL);
  const c = await connect(APP_URL);
  const acme = `node-acme-${randomUUID()}`;
  const rl = `node-rl-${randomUUID()}`;
  try {
    await admin.query("SELECT ai_budget_set('org', $1, 0.01)", [acme]);
    await admin.query("SELECT ai_rate_limit_set('org', $1, '1 hour', 1)", [rl]);
    const id = `req-${randomUUID()}`;
    const usage = { prompt_tokens: 1000, completion_tokens: 500 };
    assert.strictEqual(await aicost.record(c, { model: 'gpt-4o', usage, requestId: id, orgId: acme }), true);
    assert.strictEqual(await aicost.record(c, { model: 'gpt-4o', usage, requestId: id, orgId: acme }), false);
    const s = await c.query('SELECT spent::text AS s FROM aicost.budget_status WHERE scope_id = $1', [acme]);
    assert.strictEqual(s.rows[0].s, '0.0075');
    await assert.rejects(aicost.record(c, { model: 'gpt-4o', usage, orgId: acme }), aicost.BudgetExceeded);
    await aicost.record(c, { model: 'gpt-4o', usage: { prompt_tokens: 1, completion_tokens: 1 }, orgId: rl });
    await assert.rejects(
      aicost.record(c, { model: 'gpt-4o', usage: { prompt_tokens: 1, completion_tokens: 1 }, orgId: rl }),
      aicost.RateLimited,
    );
  } finally {
    await c.end();
    await admin.end();
  }
});

test('single flight: one producer among concurrent callers', async () => {
  const request = { q: randomUUID() };
  let produced = 0;
  const clients = await Promise.all([1, 2, 3].map(() => connect(APP_URL)));
  try {
    const results = await Promise.all(clients.map((c) => aicost.cachedCompletion(c, 'gpt-4o', request, async () => {
      produced += 1;
      await new Promise((r) => setTimeout(r, 300));
      return { answer: 42 };
    })));
    assert.strictEqual(produced, 1);
    assert.deepStrictEqual(results.map((r) => r.hit).sort(), [false, true, true]);
    assert.ok(results.every((r) => r.response.answer === 42));
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
});
