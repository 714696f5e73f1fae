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
