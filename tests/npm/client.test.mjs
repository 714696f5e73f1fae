// The official `openai` npm client pointed at llmcached (issue 2: "a real client").
//
// Starts a stand-alone `llmcached mock` and a gateway in front of it on free
// loopback ports ($LLMC_BIN, else build/llmcached), unless LLMC_GATEWAY_URL is
// set, in which case that gateway is used as it is (and the mock's call counter
// is read from LLMC_MOCK_URL when given). The same call made twice must be a
// cache hit the second time, with a deep-equal parsed result.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import OpenAI from 'openai';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.LLMC_BIN || path.resolve(here, '../../build/llmcached');
const children = [];
let gatewayURL = process.env.LLMC_GATEWAY_URL;
let mockURL = process.env.LLMC_MOCK_URL;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function start(args) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('LLMC_') || k === 'OPENAI_API_KEY') delete env[k];
  const child = spawn(BIN, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderrText = '';
  child.stderr.on('data', (d) => { child.stderrText = (child.stderrText + d).slice(-4000); });
  children.push(child);
  return child;
}

// Polls url until it answers 200; bounded, with the child's stderr on failure.
async function waitReady(url, child, what) {
  const deadline = Date.now() + 10_000;
  let last = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}: ${child.stderrText}`);
    try {
      const r = await fetch(url);
      if (r.status === 200) return;
      last = `status ${r.status}`;
    } catch (e) { last = String(e.cause ?? e); }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what} not ready at ${url} within 10 s (${last}): ${child.stderrText}`);
}

async function mockCalls(kind) {
  if (!mockURL) return undefined;
  const r = await fetch(`${mockURL}/mock/stats`);
  return (await r.json())[kind];
}

before(async () => {
  if (gatewayURL) return;
  assert.ok(existsSync(BIN), `llmcached binary not found at ${BIN}: run make or set LLMC_BIN`);
  const mockPort = await freePort();
  const mock = start(['mock', '--listen', `127.0.0.1:${mockPort}`, '--latency-ms', '50']);
  mockURL = `http://127.0.0.1:${mockPort}`;
  await waitReady(`${mockURL}/mock/stats`, mock, 'mock');
  const port = await freePort();
  const gw = start(['--listen', `127.0.0.1:${port}`, '--upstream', `${mockURL}/v1`,
                    '--threads', '2', '--access-log', 'off']);
  gatewayURL = `http://127.0.0.1:${port}`;
  await waitReady(`${gatewayURL}/healthz`, gw, 'gateway');
});

after(() => {
  for (const c of children) {
    assert.equal(c.exitCode, null, `a child process died: ${c.stderrText}`);
    c.kill('SIGTERM');
  }
});

function client() {
  return new OpenAI({ baseURL: `${gatewayURL}/v1`, apiKey: 'test-key', maxRetries: 0, timeout: 20_000 });
}

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
  const other = new OpenAI({ baseURL: `${gatewayURL}/v1`, apiKey: 'other-key', maxRetries: 0 });
  const b = await other.chat.completions.create(params).withResponse();
  assert.equal(a.response.headers.get('x-cache'), 'MISS');
  assert.equal(b.response.headers.get('x-cache'), 'MISS');
});
