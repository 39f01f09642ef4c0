// Drives the real page in Debian's Chromium: loads it, waits for the model, classifies the
// reviews in $FEELINGS_EXPECTED and checks label and probability against the native core's
// answers, classifies a batch, and saves a screenshot. Run by tests/ (the Rust end-to-end
// suite), which builds the bundle and the expectations:
//   FEELINGS_BUNDLE=dir FEELINGS_EXPECTED=file.json FEELINGS_SCREENSHOT=out.png node --test tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.onnx': 'application/octet-stream',
  '.png': 'image/png',
};

function need(name) {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (see the comment at the top of this file)`);
  return value;
}

// Serves web/ at / and the bundle at /model/, as the gateway does.
function serve(bundle) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const rel = decodeURIComponent(url.pathname);
    const file = rel.startsWith('/model/')
      ? path.join(bundle, rel.slice('/model/'.length))
      : path.join(WEB, rel === '/' ? 'index.html' : rel);
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function classifyOn(page, text) {
  await page.evaluate(() => {
    const r = document.getElementById('result');
    delete r.dataset.label;
    delete r.dataset.score;
  });
  await page.fill('#review', text);
  const started = Date.now();
  await page.click('#classify');
  await page.waitForSelector('#result[data-label]', { timeout: 60_000 });
  const ms = Date.now() - started;
  const label = await page.getAttribute('#result', 'data-label');
  const score = Number(await page.getAttribute('#result', 'data-score'));
  return { label, score, ms };
}

test('the page classifies reviews in the browser as the native core does', async () => {
  const bundle = need('FEELINGS_BUNDLE');
  const expected = JSON.parse(await readFile(need('FEELINGS_EXPECTED'), 'utf8'));
  const screenshot = need('FEELINGS_SCREENSHOT');
  const server = await serve(bundle);
  const base = `http://127.0.0.1:${server.address().port}/`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    let started = Date.now();
    await page.goto(base);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const coldMs = Date.now() - started;
    for (const want of expected) {
      const got = await classifyOn(page, want.text);
      assert.equal(got.label, want.label, `label of ${JSON.stringify(want.text.slice(0, 40))}`);
      assert.ok(Math.abs(got.score - want.score) <= 1e-4,
        `score ${got.score} vs native ${want.score} for ${JSON.stringify(want.text.slice(0, 40))}`);
      console.log(`# ${got.label} ${got.score.toFixed(6)} in ${got.ms} ms`);
    }
    await page.fill('#batch', expected.map((e) => e.text.replaceAll('\n', ' ')).join('\n'));
    await page.click('#classify-batch');
    await page.waitForSelector('#batch-results:not([hidden]) tbody tr', { timeout: 60_000 });
    const rows = await page.$$eval('#batch-results tbody tr', (trs) => trs.map((tr) => tr.children[1].textContent));
    assert.deepEqual(rows, expected.map((e) => e.label));
    await page.screenshot({ path: screenshot, fullPage: true });

    // Second visit: the model comes from Cache Storage.
    started = Date.now();
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const warmMs = Date.now() - started;
    console.log(`# time to ready: cold ${coldMs} ms, warm cache ${warmMs} ms`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
  }
});

test('a missing model is reported on the page, not swallowed', async () => {
  const server = await serve('/nonexistent-bundle');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    const message = await page.textContent('#error');
    assert.match(message, /feelings\.json/);
    assert.equal(await page.isDisabled('#classify'), true);
  } finally {
    await browser.close();
    server.close();
  }
});
