// The official `openai` npm client against llmcached's wider API coverage
// (issue 13): gateway-made errors that a retry cannot fix are not retried.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useGateway } from './harness.mjs';

const gw = useGateway({ latencyMs: 0 });

test('only-if-cached on a miss: the SDK makes one request, not three', async () => {
  // The SDK's own default: two retries of any 5xx, with backoff.
  const openai = gw.client('test-key', { maxRetries: 2 });
  const before = (await gw.stats()).only_if_cached_misses;
  const params = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `never cached ${process.pid}` }] };
  const t0 = Date.now();
  await assert.rejects(
    openai.chat.completions.create(params, { headers: { 'Cache-Control': 'only-if-cached' } }),
    (err) => err instanceof OpenAI.APIError && err.status === 504 && err.code === 'only_if_cached');
  assert.equal((await gw.stats()).only_if_cached_misses, before + 1);
  assert.ok(Date.now() - t0 < 400, 'no retry backoff was waited');
});

test('models.retrieve is passed through (GET /v1/models/{id}), never cached', async () => {
  const openai = gw.client();
  const before = await gw.mockCalls('model');
  const first = await openai.models.retrieve('gpt-4o').withResponse();
  const second = await openai.models.retrieve('gpt-4o').withResponse();
  assert.equal(first.data.id, 'gpt-4o');
  assert.equal(first.data.object, 'model');
  assert.deepStrictEqual(second.data, first.data);
  for (const r of [first, second]) {
    assert.equal(r.response.headers.get('x-cache'), 'BYPASS');
    assert.equal(r.response.headers.get('cache-status'), 'llmcached; fwd=bypass');
  }
  if (before !== undefined) assert.equal(await gw.mockCalls('model'), before + 2);
  await assert.rejects(openai.models.retrieve('no-such-model'),
    (err) => err instanceof OpenAI.NotFoundError && err.code === 'model_not_found');
});

test('responses.create twice: the second is a cache hit with the same result', async () => {
  const openai = gw.client();
  const params = {
    model: 'gpt-4o-mini',
    instructions: 'You are terse.',
    input: `responses API question ${process.pid}`,
  };
  const before = await gw.mockCalls('responses');
  const first = await openai.responses.create(params).withResponse();
  const second = await openai.responses.create(params).withResponse();
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  assert.equal(first.data.object, 'response');
  assert.ok(first.data.output_text.includes(`responses API question ${process.pid}`));
  assert.deepStrictEqual(second.data, first.data);
  assert.equal(second.data.output_text, first.data.output_text);
  const u = first.data.usage;
  assert.equal(second.response.headers.get('x-cache-tokens-saved'), `${u.input_tokens}+${u.output_tokens}`);
  if (before !== undefined) assert.equal(await gw.mockCalls('responses'), before + 1);
});

test('responses.create with previous_response_id is never served from the cache', async () => {
  const openai = gw.client();
  const params = { model: 'gpt-4o-mini', input: `follow-up ${process.pid}`, previous_response_id: 'resp_prev' };
  const before = await gw.mockCalls('responses');
  for (let i = 0; i < 2; i++) {
    const r = await openai.responses.create(params).withResponse();
    assert.equal(r.response.headers.get('x-cache'), 'BYPASS');
    assert.equal(r.response.headers.get('cache-status'), 'llmcached; fwd=bypass; detail=previous_response_id');
  }
  if (before !== undefined) assert.equal(await gw.mockCalls('responses'), before + 2);
});
