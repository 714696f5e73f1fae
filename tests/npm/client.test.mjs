// The official `openai` npm client pointed at llmcached (issue 2: "a real client").
//
// Starts a stand-alone `llmcached mock` and a gateway in front of it on free
// loopback ports ($LLMC_BIN, else build/llmcached), unless LLMC_GATEWAY_URL is
// set, in which case that gateway is used as it is (and the mock's call counter
// is read from LLMC_MOCK_URL when given). The same call made twice must be a
// cache hit the second time, with a deep-equal parsed result.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway } from './harness.mjs';

const gw = useGateway({ latencyMs: 50 });
const client = () => gw.client();
const mockCalls = (kind) => gw.mockCalls(kind);

test('chat.completions.create twice: the second is a cache hit with the same result', async () => {
  const openai = client();
  const params = {
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: `npm client question ${process.pid}` },
    ],
    temperature: 0,
  };
  const before = await mockCalls('chat');
  const first = await openai.chat.completions.create(params).withResponse();
  const second = await openai.chat.completions.create(params).withResponse();
  assert.equal(first.response.status, 200);
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  assert.match(second.response.headers.get('x-cache-key'), /^[0-9a-f]{64}$/);
  assert.equal(second.response.headers.get('x-cache-key'), first.response.headers.get('x-cache-key'));
  assert.ok(first.data.choices[0].message.content.length > 0);
  assert.deepStrictEqual(second.data, first.data);
  if (before !== undefined) assert.equal(await mockCalls('chat'), before + 1);
});

test('embeddings.create twice: the second is a cache hit with the same vectors', async () => {
  const openai = client();
  const params = { model: 'text-embedding-3-small', input: `embed me ${process.pid}`, encoding_format: 'float' };
  const before = await mockCalls('embeddings');
  const first = await openai.embeddings.create(params).withResponse();
  const second = await openai.embeddings.create(params).withResponse();
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  assert.ok(Array.isArray(first.data.data[0].embedding) && first.data.data[0].embedding.length > 0);
  assert.deepStrictEqual(second.data, first.data);
  if (before !== undefined) assert.equal(await mockCalls('embeddings'), before + 1);
});

test('embeddings with the client\'s default (base64) encoding are cached too', async () => {
  // The client asks for base64 unless told otherwise and decodes it itself.
  const openai = client();
  const params = { model: 'text-embedding-3-small', input: [`first ${process.pid}`, `second ${process.pid}`] };
  const first = await openai.embeddings.create(params).withResponse();
  const second = await openai.embeddings.create(params).withResponse();
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  assert.equal(first.data.data.length, 2);
  assert.ok(first.data.data[0].embedding.length > 0);
  assert.notDeepStrictEqual(first.data.data[0].embedding, first.data.data[1].embedding);
  assert.deepStrictEqual(second.data, first.data);
});

test('another API key does not see the first key\'s answers (per-key scope)',
  { skip: process.env.LLMC_GATEWAY_URL ? 'external gateway: its cache scope is unknown' : false }, async () => {
  const params = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `scoped ${process.pid}` }] };
  const a = await client().chat.completions.create(params).withResponse();
  const other = gw.client('other-key');
  const b = await other.chat.completions.create(params).withResponse();
  assert.equal(a.response.headers.get('x-cache'), 'MISS');
  assert.equal(b.response.headers.get('x-cache'), 'MISS');
});
