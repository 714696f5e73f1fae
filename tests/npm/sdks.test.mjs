// The clients people use today, pointed at llmcached (issue 13): the official
// `openai` SDK's Responses API (plain, streamed, and its stream helper), the
// Vercel AI SDK's default provider call (which uses the Responses API), with
// tools over several steps, and LangChain's ChatOpenAI on both APIs. Each
// runs twice: the second run must be answered from the cache (X-Cache: HIT on
// every call it makes) and give the client a deep-equal result.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';
import { ChatOpenAI } from '@langchain/openai';
import { useGateway } from './harness.mjs';

const gw = useGateway({ latencyMs: 0 });
const MODEL = 'gpt-4o-mini';
// A fresh prompt per process run, so a gateway left running (LLMC_GATEWAY_URL)
// still sees a miss first.
const tag = `${process.pid}-${Date.now()}`;

// A fetch that notes the X-Cache of every answer the client gets.
function recorder() {
  const seen = [];
  const f = async (input, init) => {
    const r = await fetch(input, init);
    seen.push(r.headers.get('x-cache'));
    return r;
  };
  return { fetch: f, seen, take() { return seen.splice(0); } };
}

function openaiClient(rec) {
  return new OpenAI({ baseURL: `${gw.url()}/v1`, apiKey: 'test-key', maxRetries: 0,
                      timeout: 20_000, fetch: rec.fetch });
}

// Runs run() twice: every call of the first is a miss, every call of the
// second a hit; the results are deep-equal. Returns the first result.
async function twice(rec, run, { calls = 1 } = {}) {
  const first = await run();
  assert.deepStrictEqual(rec.take(), Array(calls).fill('MISS'));
  const second = await run();
  assert.deepStrictEqual(rec.take(), Array(calls).fill('HIT'));
  assert.deepStrictEqual(second, first);
  return first;
}

const weatherParams = {
  type: 'object',
  properties: { city: { type: 'string' } },
  required: ['city'],
  additionalProperties: false,
};

// ---------------------------------------------------------------- openai SDK

test('openai responses.create with stream: true, iterated', async () => {
  const rec = recorder();
  const openai = openaiClient(rec);
  const params = { model: MODEL, input: `stream this answer ${tag}`, stream: true };
  const before = await gw.mockCalls('responses');
  // The events themselves differ in how the text is cut; what they add up
  // to must not.
  const run = async () => {
    const events = [];
    for await (const ev of await openai.responses.create(params)) events.push(ev);
    assert.deepStrictEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
    assert.equal(events[0].type, 'response.created');
    assert.equal(events.at(-1).type, 'response.completed');
    const text = events.filter((e) => e.type === 'response.output_text.delta')
      .map((e) => e.delta).join('');
    return { text, final: events.at(-1).response };
  };
  const { text, final } = await twice(rec, run);
  assert.ok(text.includes(`stream this answer ${tag}`));
  assert.equal(final.output[0].content[0].text, text);
  assert.ok(final.usage.output_tokens > 0);
  if (before !== undefined) assert.equal(await gw.mockCalls('responses'), before + 1);
  // The plain form of the same request is served from the streamed entry.
  const { stream: _, ...plainParams } = params;
  const plain = await openai.responses.create(plainParams);
  assert.deepStrictEqual(rec.take(), ['HIT']);
  assert.equal(plain.output_text, text);
  assert.deepStrictEqual(plain.usage, final.usage);
});

test('openai responses.stream + finalResponse, and a plain entry served as a stream', async () => {
  const rec = recorder();
  const openai = openaiClient(rec);
  const params = { model: MODEL, instructions: 'Be terse.', input: `stream helper ${tag}` };
  // parse(): the plain request, with the same client-side parsing (parsed,
  // output_parsed) that the stream helper applies to its final response.
  const plain = await openai.responses.parse(params);
  assert.deepStrictEqual(rec.take(), ['MISS']);
  const run = async () => {
    const s = openai.responses.stream(params);
    let deltas = '';
    s.on('response.output_text.delta', (e) => { deltas += e.delta; });
    const final = await s.finalResponse();
    return { final, deltas };
  };
  const first = await run();
  assert.deepStrictEqual(rec.take(), ['HIT']);
  assert.equal(first.deltas, plain.output_text);
  assert.deepStrictEqual(first.final, plain);
  const second = await run();
  assert.deepStrictEqual(rec.take(), ['HIT']);
  assert.deepStrictEqual(second, first);
});

test('openai responses.stream with a function tool: the call survives a replay', async () => {
  const rec = recorder();
  const openai = openaiClient(rec);
  const params = {
    model: MODEL, input: `weather in Paris? ${tag}`,
    tools: [{ type: 'function', name: 'get_weather', parameters: weatherParams, strict: true }],
  };
  const run = async () => {
    const s = openai.responses.stream(params);
    let args = '';
    s.on('response.function_call_arguments.delta', (e) => { args += e.delta; });
    return { final: await s.finalResponse(), args };
  };
  const { final, args } = await twice(rec, run);
  const [call] = final.output;
  assert.equal(call.type, 'function_call');
  assert.equal(call.name, 'get_weather');
  assert.equal(call.arguments, args);
  assert.equal(typeof JSON.parse(call.arguments).city, 'string');
});

// ------------------------------------------------------------- Vercel AI SDK

function aiProvider(rec) {
  return createOpenAI({ baseURL: `${gw.url()}/v1`, apiKey: 'test-key', fetch: rec.fetch });
}

// What a caller reads of an AI SDK result: everything but the timing and
// the HTTP headers (which carry X-Cache and Date).
function aiView(r) {
  return {
    text: r.text,
    finishReason: r.finishReason,
    usage: r.usage,
    responseId: r.response.id,
    modelId: r.response.modelId,
    steps: r.steps.map((s) => ({ content: s.content, finishReason: s.finishReason, usage: s.usage })),
  };
}

test('AI SDK generateText with openai(model) (the Responses API)', async () => {
  const rec = recorder();
  const openai = aiProvider(rec);
  const before = await gw.mockCalls('responses');
  const view = await twice(rec, async () =>
    aiView(await generateText({ model: openai(MODEL), prompt: `generate ${tag}`, maxRetries: 0 })));
  assert.ok(view.text.includes(`generate ${tag}`));
  assert.ok(view.usage.outputTokens > 0);
  if (before !== undefined) assert.equal(await gw.mockCalls('responses'), before + 1);
});

test('AI SDK streamText with openai(model) (the Responses API)', async () => {
  const rec = recorder();
  const openai = aiProvider(rec);
  const view = await twice(rec, async () => {
    const r = streamText({ model: openai(MODEL), prompt: `stream text ${tag}`, maxRetries: 0 });
    let streamed = '';
    for await (const piece of r.textStream) streamed += piece;
    return { streamed, text: await r.text, usage: await r.usage, finishReason: await r.finishReason,
             id: (await r.response).id };
  });
  assert.ok(view.streamed.includes(`stream text ${tag}`), 'the stream is not empty');
  assert.equal(view.text, view.streamed);
  assert.equal(view.finishReason, 'stop');
  assert.ok(view.usage.outputTokens > 0);
});

function weatherTool(log) {
  return tool({
    description: 'The weather in a city',
    inputSchema: jsonSchema(weatherParams),
    execute: async ({ city }) => { log.push(city); return `sunny in ${city}`; },
  });
}

test('AI SDK generateText with a tool over two steps (stopWhen)', async () => {
  const rec = recorder();
  const openai = aiProvider(rec);
  const log = [];
  const view = await twice(rec, async () => aiView(await generateText({
    model: openai(MODEL), prompt: `weather in Paris? ${tag}`, maxRetries: 0,
    tools: { weather: weatherTool(log) }, stopWhen: stepCountIs(3),
  })), { calls: 2 });
  assert.equal(view.steps.length, 2);
  assert.equal(view.steps[0].finishReason, 'tool-calls');
  assert.ok(view.text.includes('tool result: '), view.text);
  assert.ok(view.text.includes('sunny in'), view.text);
  assert.equal(log.length, 2); // the tool itself ran on both runs
});

test('AI SDK streamText with a tool over two steps (stopWhen)', async () => {
  const rec = recorder();
  const openai = aiProvider(rec);
  const log = [];
  const view = await twice(rec, async () => {
    const r = streamText({
      model: openai(MODEL), prompt: `stream the weather in Rome? ${tag}`, maxRetries: 0,
      tools: { weather: weatherTool(log) }, stopWhen: stepCountIs(3),
    });
    let streamed = '';
    for await (const piece of r.textStream) streamed += piece;
    const steps = await r.steps;
    return { streamed, steps: steps.map((s) => ({ content: s.content, finishReason: s.finishReason })),
             usage: await r.totalUsage };
  }, { calls: 2 });
  assert.equal(view.steps.length, 2);
  assert.ok(view.streamed.includes('sunny in'), view.streamed);
  const call = view.steps[0].content.find((c) => c.type === 'tool-call');
  assert.equal(call.toolName, 'weather');
});

// ------------------------------------------------------------------ LangChain

function langchainView(m) {
  return { content: m.content, usage: m.usage_metadata, id: m.id,
           tool_calls: m.tool_calls, additional_kwargs: m.additional_kwargs };
}

for (const useResponsesApi of [false, true]) {
  test(`LangChain ChatOpenAI invoke (${useResponsesApi ? 'Responses API' : 'chat completions'})`,
    async () => {
      const rec = recorder();
      const chat = new ChatOpenAI({
        model: MODEL, apiKey: 'test-key', maxRetries: 0, useResponsesApi,
        configuration: { baseURL: `${gw.url()}/v1`, fetch: rec.fetch },
      });
      const prompt = `langchain ${useResponsesApi ? 'responses' : 'chat'} ${tag}`;
      const view = await twice(rec, async () => langchainView(await chat.invoke(prompt)));
      const text = typeof view.content === 'string' ? view.content
        : view.content.map((p) => p.text ?? '').join('');
      assert.ok(text.includes(prompt), text);
      assert.ok(view.usage.output_tokens > 0);
    });

  test(`LangChain ChatOpenAI stream (${useResponsesApi ? 'Responses API' : 'chat completions'})`,
    async () => {
      const rec = recorder();
      const chat = new ChatOpenAI({
        model: MODEL, apiKey: 'test-key', maxRetries: 0, useResponsesApi, streamUsage: true,
        configuration: { baseURL: `${gw.url()}/v1`, fetch: rec.fetch },
      });
      const prompt = `langchain stream ${useResponsesApi ? 'responses' : 'chat'} ${tag}`;
      const view = await twice(rec, async () => {
        let text = '';
        let usage;
        for await (const chunk of await chat.stream(prompt)) {
          text += typeof chunk.content === 'string' ? chunk.content
            : chunk.content.map((p) => p.text ?? '').join('');
          if (chunk.usage_metadata) usage = chunk.usage_metadata;
        }
        return { text, usage };
      });
      assert.ok(view.text.includes(prompt), view.text);
      assert.ok(view.usage && view.usage.output_tokens > 0, 'usage came with the stream');
    });
}
