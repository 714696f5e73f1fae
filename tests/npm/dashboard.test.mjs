// tests/npm/dashboard.test.mjs: GET /dashboard in a real browser (Debian's
// chromium driven by playwright-core): the page loads with no console error,
// asks for the admin token, then shows the numbers moving as traffic flows
// (hits, tokens and money saved), and a purge through its form empties what
// it selected. A screenshot is kept in build/test-artifacts/dashboard.png.
//
// Skips, saying why, only when chromium is not installed (make test installs
// it: scripts/deps.sh with the test packages). CHROMIUM names another binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { useGateway } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TOKEN = 'dashboard-test-token';
const MODEL = 'gpt-4o-mini';
const PRICE_IN = 0.15, PRICE_OUT = 0.6; // per 1M tokens
const haveChromium = existsSync(CHROMIUM);
const artifacts = path.resolve(here, '../../build/test-artifacts');

const dir = mkdtempSync(path.join(tmpdir(), 'llmc-dash-'));
const prices = path.join(dir, 'prices.txt');
writeFileSync(prices, `# test prices\n# prices as of 2025-01-01\n${MODEL} ${PRICE_IN} ${PRICE_OUT}\n`);
const gw = haveChromium ? useGateway({ args: ['--admin-token', TOKEN, '--prices', prices] }) : null;

let browser;
before(async () => {
  if (!haveChromium) return;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
after(async () => { if (browser) await browser.close(); });

async function chat(content, headers = {}) {
  const r = await fetch(`${gw.url()}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sk-test', ...headers },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content }] }),
  });
  assert.equal(r.status, 200);
  return { xcache: r.headers.get('x-cache'), body: await r.json() };
}

test('the dashboard shows live hits, tokens and money saved, and purges', {
  skip: haveChromium ? false : `chromium not found at ${CHROMIUM}: apt-get install chromium ` +
                               '(make test installs it) or set CHROMIUM',
  timeout: 60_000,
}, async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  // Nothing but this origin may be asked for: no CDN, no font.
  const foreign = [];
  page.on('request', (r) => { if (!r.url().startsWith(gw.url())) foreign.push(r.url()); });

  await page.goto(`${gw.url()}/dashboard`);
  // /stats wants the token: the page says so instead of showing numbers.
  await page.waitForFunction(() => /admin token/.test(document.getElementById('status').textContent));
  // Chromium reports the refused /stats (401) as a failed resource; nothing else may fail.
  const before401 = errors.filter((e) => !/401/.test(e));
  assert.deepEqual(before401, []);
  errors.length = 0;

  await page.fill('#token', TOKEN);
  await page.click('#token-save');
  await page.waitForFunction(() => /^live/.test(document.getElementById('status').textContent));
  const text = (sel) => page.textContent(sel);
  assert.equal(await text('#hits'), '0');
  assert.equal(await text('#tokens-saved'), '0');

  const miss = await chat('What does the dashboard show?');
  assert.equal(miss.xcache, 'MISS');
  const hit = await chat('What does the dashboard show?');
  assert.equal(hit.xcache, 'HIT');
  const { prompt_tokens: p, completion_tokens: c } = miss.body.usage;
  assert.ok(p > 0 && c > 0);
  const money = ((p * PRICE_IN + c * PRICE_OUT) / 1e6).toFixed(6);

  // The page polls: within a few seconds it shows what the two requests did.
  await page.waitForFunction((want) => document.getElementById('hits').textContent === '1' &&
    document.getElementById('tokens-saved').textContent === want, String(p + c), { timeout: 10_000 });
  assert.equal(await text('#misses'), '1');
  assert.equal(await text('#money-saved'), money);
  assert.equal(await text('#hit-rate'), '50.0%');
  assert.match(await text('#models'), new RegExp(MODEL));
  assert.match(await text('#latency'), /hit/);
  assert.match(await text('#tiers'), /memory/);
  assert.match(await text('#prices-src'), /prices.txt, as of 2025-01-01/);
  // Hits by kind: the one hit was exact; latency of hits against the upstream's.
  assert.match(await text('#kinds'), /exact1/);
  assert.match(await text('#kinds'), /semantic0/);
  assert.match(await text('#vs-upstream'), /p50\d/);

  // Top namespaces: a namespaced miss and hit show under their namespace.
  const NS = 'team-dashboard';
  assert.equal((await chat('A namespaced question', { 'X-Cache-Namespace': NS })).xcache, 'MISS');
  assert.equal((await chat('A namespaced question', { 'X-Cache-Namespace': NS })).xcache, 'HIT');
  await page.waitForFunction((ns) => document.getElementById('namespaces').textContent.includes(ns),
                             NS, { timeout: 10_000 });
  const nsRow = await page.$$eval('#namespaces tbody tr', (trs, ns) =>
    trs.map((tr) => [...tr.cells].map((c) => c.textContent)).find((r) => r[0] === ns), NS);
  assert.deepEqual(nsRow.slice(0, 3), [NS, '1', '1']);
  assert.match(await text('#namespaces'), /\(none\)/);

  // A purge through the form by model empties that model's answers.
  await page.fill('#purge-form input[name=model]', MODEL);
  await page.click('#purge-go');
  await page.waitForFunction(() => /^200 /.test(document.getElementById('purge-result').textContent));
  await page.waitForFunction(() => document.getElementById('purges').textContent === '1');
  assert.match(await text('#purge-log'), /purge/);
  assert.equal((await chat('What does the dashboard show?')).xcache, 'MISS');

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, 'dashboard.png'), fullPage: true });
  assert.deepEqual(errors, []);
  assert.deepEqual(foreign, []);
  await page.close();
});
