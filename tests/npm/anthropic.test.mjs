// The official `@anthropic-ai/sdk` client through llmcached (issue 13):
// messages.create and messages.stream (+ finalMessage()), each made twice;
// the second must be a cache hit (X-Cache) whose Message deep-equals the
// first, tool_use and thinking blocks included. The gateway's Anthropic
// upstream is the harness's mock (--anthropic-upstream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { useGateway } from './harness.mjs';

const gw = useGateway({ latencyMs: 0 });
const client = () => new Anthropic({ baseURL: gw.url(), apiKey: 'sk-ant-test', maxRetries: 0,
                                     timeout: 20_000 });

const tools = [{ name: 'lookup', description: 'looks things up',
                 input_schema: { type: 'object', properties: { query: { type: 'string' } } } }];

// The SDK's stream helper adds fields of its own to finalMessage()
// (parsed_output for structured outputs, stop_details left undefined) that
// messages.create does not have: compared across the two forms without them.
function wire(m) {
  const o = JSON.parse(JSON.stringify(m));
  delete o.parsed_output;
  return o;
}

function params(tag, extra = {}) {
  return { model: 'claude-mock', max_tokens: 512,
           messages: [{ role: 'user', content: `${tag} ${process.pid}` }], ...extra };
}

test('messages.create twice: the second is a hit and deep-equal', async () => {
  const anthropic = client();
  const p = params('create plain', { tools, thinking: { type: 'enabled', budget_tokens: 1024 } });
  const before = await gw.mockCalls('messages');
  const first = await anthropic.messages.create(p).withResponse();
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  const second = await anthropic.messages.create(p).withResponse();
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  assert.deepEqual(second.data, first.data);
  assert.deepEqual(first.data.content.map((b) => b.type), ['thinking', 'text', 'tool_use']);
  const u = first.data.usage;
  assert.equal(second.response.headers.get('x-cache-tokens-saved'),
               `${u.input_tokens}+${u.output_tokens}`);
  assert.equal((await gw.mockCalls('messages')) - before, 1);
});

test('messages.stream twice: finalMessage() of the replay deep-equals the live one', async () => {
  const anthropic = client();
  const p = params('stream', { tools, thinking: { type: 'enabled', budget_tokens: 1024 } });
  const before = await gw.mockCalls('messages');
  const s1 = anthropic.messages.stream(p);
  const r1 = await s1.withResponse();
  assert.equal(r1.response.headers.get('x-cache'), 'MISS');
  let text1 = '';
  s1.on('text', (t) => { text1 += t; });
  const m1 = await s1.finalMessage();

  const s2 = anthropic.messages.stream(p);
  const r2 = await s2.withResponse();
  assert.equal(r2.response.headers.get('x-cache'), 'HIT');
  let text2 = '';
  s2.on('text', (t) => { text2 += t; });
  const m2 = await s2.finalMessage();
  assert.deepEqual(m2, m1);
  assert.equal(text2, text1);
  assert.ok(text1.length > 0);
  const tool = m1.content.find((b) => b.type === 'tool_use');
  assert.equal(tool.name, 'lookup');
  assert.equal(tool.input.count, 3);
  const thinking = m1.content.find((b) => b.type === 'thinking');
  assert.ok(thinking.thinking.length > 0 && thinking.signature.length > 0);
  assert.equal(m1.stop_reason, 'tool_use');
  assert.equal((await gw.mockCalls('messages')) - before, 1);
});

test('a stream recorded is served to messages.create, and the reverse', async () => {
  const anthropic = client();
  const a = params('streamed first');
  const streamed = await anthropic.messages.stream(a).finalMessage();
  const plain = await anthropic.messages.create(a).withResponse();
  assert.equal(plain.response.headers.get('x-cache'), 'HIT');
  assert.deepEqual(wire(plain.data), wire(streamed));

  const b = params('plain first');
  const direct = await anthropic.messages.create(b);
  const s = anthropic.messages.stream(b);
  const r = await s.withResponse();
  assert.equal(r.response.headers.get('x-cache'), 'HIT');
  assert.deepEqual(wire(await s.finalMessage()), wire(direct));
});
