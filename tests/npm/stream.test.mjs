// The official `openai` npm client streaming through llmcached (issue 4).
//
// Starts a stand-alone `llmcached mock` and a gateway in front of it on free
// loopback ports ($LLMC_BIN, else build/llmcached), unless LLMC_GATEWAY_URL is
// set, in which case that gateway is used as it is (and the mock's call counter
// is read from LLMC_MOCK_URL when given). A streamed call made twice must be a
// cache hit the second time, and the client must parse both to the same text
// and finish reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway } from './harness.mjs';

const gw = useGateway({ latencyMs: 0 });
const client = () => gw.client();
const mockCalls = (kind) => gw.mockCalls(kind);

// Reads a chat stream the way an application does: text, finish reason, usage.
async function collectChat(stream) {
  let text = '';
  let finish = null;
  let usage = null;
  let role = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      role = c.delta?.role ?? role;
      finish = c.finish_reason ?? finish;
    }
  }
  return { text, finish, usage, role, chunks };
}

test('chat stream twice: the second is a cache hit that parses to the same text and finish reason', async () => {
  const openai = client();
  const params = {
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `stream me a short answer ${process.pid}` }],
    stream: true,
    mock: { chunk_delay_ms: 20 }, // the mock's pacing; forwarded, and part of the key
  };
  const before = await mockCalls('chat');
  const first = await openai.chat.completions.create(params).withResponse();
  assert.equal(first.response.status, 200);
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  assert.match(first.response.headers.get('content-type'), /^text\/event-stream/);
  // The SDK's fetch sends Accept-Encoding: the live stream comes compressed
  // (flushed per event) and the client decodes it as it arrives.
  assert.match(first.response.headers.get('content-encoding') ?? '', /^(gzip|br|zstd)$/);
  const a = await collectChat(first.data);

  const second = await openai.chat.completions.create(params).withResponse();
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  assert.equal(second.response.headers.get('content-encoding'), first.response.headers.get('content-encoding'));
  assert.equal(second.response.headers.get('x-cache-key'), first.response.headers.get('x-cache-key'));
  const b = await collectChat(second.data);

  assert.ok(a.text.length > 0 && a.chunks > 2, JSON.stringify(a));
  assert.equal(a.finish, 'stop');
  assert.equal(a.role, 'assistant');
  assert.equal(b.text, a.text);
  assert.equal(b.finish, a.finish);
  assert.equal(b.role, a.role);
  if (before !== undefined) assert.equal(await mockCalls('chat'), before + 1);
});

test('stream with include_usage twice: the replay carries the same usage', async () => {
  const openai = client();
  const params = {
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `count my tokens ${process.pid}` }],
    stream: true,
    stream_options: { include_usage: true },
  };
  const before = await mockCalls('chat');
  const a = await collectChat(await openai.chat.completions.create(params));
  const second = await openai.chat.completions.create(params).withResponse();
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  const b = await collectChat(second.data);
  assert.ok(a.usage && a.usage.total_tokens > 0, JSON.stringify(a));
  assert.deepStrictEqual(b.usage, a.usage);
  assert.equal(b.text, a.text);
  assert.equal(b.finish, a.finish);
  if (before !== undefined) assert.equal(await mockCalls('chat'), before + 1);
});

test('a streamed answer serves a later non-streaming call, and the stream helper agrees', async () => {
  const openai = client();
  const base = {
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `both forms ${process.pid}` }],
  };
  const before = await mockCalls('chat');
  const streamed = await collectChat(await openai.chat.completions.create({ ...base, stream: true }));
  const plain = await openai.chat.completions.create(base).withResponse();
  assert.equal(plain.response.headers.get('x-cache'), 'HIT');
  assert.equal(plain.data.object, 'chat.completion');
  assert.equal(plain.data.choices[0].message.content, streamed.text);
  assert.equal(plain.data.choices[0].finish_reason, streamed.finish);
  // The SDK's own stream helper assembles the replayed stream into a completion.
  const final = await openai.chat.completions.stream({ ...base, stream: true }).finalChatCompletion();
  assert.equal(final.choices[0].message.content, streamed.text);
  assert.equal(final.choices[0].message.role, 'assistant');
  assert.equal(final.choices[0].finish_reason, streamed.finish);
  if (before !== undefined) assert.equal(await mockCalls('chat'), before + 1);
});

test('completions stream twice: the second is a cache hit with the same text', async () => {
  const openai = client();
  const params = { model: 'gpt-3.5-turbo-instruct', prompt: `Once upon a time ${process.pid}`,
                   max_tokens: 16, stream: true };
  const collect = async (s) => {
    let text = '';
    let finish = null;
    for await (const chunk of s) {
      for (const c of chunk.choices) {
        text += c.text ?? '';
        finish = c.finish_reason ?? finish;
      }
    }
    return { text, finish };
  };
  const before = await mockCalls('completions');
  const first = await openai.completions.create(params).withResponse();
  assert.equal(first.response.headers.get('x-cache'), 'MISS');
  const a = await collect(first.data);
  const second = await openai.completions.create(params).withResponse();
  assert.equal(second.response.headers.get('x-cache'), 'HIT');
  const b = await collect(second.data);
  assert.ok(a.text.length > 0);
  assert.equal(a.finish, 'stop');
  assert.deepStrictEqual(b, a);
  if (before !== undefined) assert.equal(await mockCalls('completions'), before + 1);
});
