// tests/npm/harness.mjs: what every client test needs: a stand-alone
// `llmcached mock` and a gateway in front of it on free loopback ports
// ($LLMC_BIN, else build/llmcached), started before the file's tests and
// stopped after them, unless LLMC_GATEWAY_URL names a gateway to use as it is
// (LLMC_MOCK_URL then names its mock, for the call counter).
import { before, after } from 'node:test';
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
  for (const k of Object.keys(env)) if (k.startsWith('LLMC_') || k === 'OPENAI_API_KEY' || k === 'ANTHROPIC_API_KEY') delete env[k];
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

async function gatewayStats() {
  const r = await fetch(`${gatewayURL}/stats`);
  return r.json();
}

/* Registers the start and stop hooks of a test file and returns its helpers:
   client(apiKey, options) makes an OpenAI client for the gateway (no retries
   unless options say otherwise), mockCalls(kind) reads the mock's counter,
   stats() the gateway's /stats, url() is the gateway's base URL. args are
   more gateway options (ignored with LLMC_GATEWAY_URL). */
export function useGateway({ latencyMs = 50, args = [] } = {}) {
  before(async () => {
    if (gatewayURL) return;
    assert.ok(existsSync(BIN), `llmcached binary not found at ${BIN}: run make or set LLMC_BIN`);
    const mockPort = await freePort();
    const mock = start(['mock', '--listen', `127.0.0.1:${mockPort}`, '--latency-ms', String(latencyMs)]);
    mockURL = `http://127.0.0.1:${mockPort}`;
    await waitReady(`${mockURL}/mock/stats`, mock, 'mock');
    const port = await freePort();
    // The mock speaks Anthropic Messages too: POST /v1/messages goes there as well.
    const gw = start(['--listen', `127.0.0.1:${port}`, '--upstream', `${mockURL}/v1`,
                      '--anthropic-upstream', `${mockURL}/v1`,
                      '--threads', '2', '--access-log', 'off', ...args]);
    gatewayURL = `http://127.0.0.1:${port}`;
    await waitReady(`${gatewayURL}/healthz`, gw, 'gateway');
  });

  after(() => {
    for (const c of children) {
      assert.equal(c.exitCode, null, `a child process died: ${c.stderrText}`);
      c.kill('SIGTERM');
    }
  });

  return {
    url: () => gatewayURL,
    mockCalls,
    stats: gatewayStats,
    client: (apiKey = 'test-key', options = {}) =>
      new OpenAI({ baseURL: `${gatewayURL}/v1`, apiKey, maxRetries: 0, timeout: 20_000, ...options }),
  };
}
