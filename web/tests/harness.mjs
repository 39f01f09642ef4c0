// What the browser tests share: a static server laid out as the gateway serves the page, and
// Debian's Chromium.
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.onnx': 'application/octet-stream',
  '.png': 'image/png',
};

/** The value of environment variable `name`, which the test needs. */
export function need(name) {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (see the comment at the top of the test file)`);
  return value;
}

/** The file `server` serves at URL path `rel`: under a folder of `server.routes` (URL prefix
 * ending in "/" to folder) or that file itself (URL path to file, null for none), else under
 * web/. */
function servedFile(server, rel) {
  // A models.json of the developer's in web/ is not the test's.
  const routes = { '/models.json': null, ...server.routes, '/model/': server.bundle };
  if (routes[rel] !== undefined && !rel.endsWith('/')) return routes[rel];
  const prefix = Object.keys(routes).find((p) => p.endsWith('/') && rel.startsWith(p));
  if (prefix) return path.join(routes[prefix], rel.slice(prefix.length));
  return path.join(WEB, rel === '/' ? 'index.html' : rel);
}

/** Serves web/ at / and the bundle folder at /model/, as the gateway does; `server.bundle`
 * may be changed to serve another bundle from then on, and `server.routes` (URL path to file,
 * or URL prefix ending in "/" to folder) serves more files, such as a models.json and the
 * bundles it names. */
export function serve(bundle) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const file = servedFile(server, decodeURIComponent(url.pathname));
    try {
      if (file === null) throw new Error('not served');
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  server.bundle = bundle;
  server.routes = {};
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Stops `server` and drops its open connections: nothing answers at its address after this. */
export function stop(server) {
  return new Promise((resolve) => {
    server.close(resolve);
    server.closeAllConnections();
  });
}

/** Debian's Chromium (or $CHROMIUM), headless, never a downloaded browser. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Opens the page served by `server` and waits until its model is ready; returns the page and
 * the milliseconds that took. */
export async function openReady(browser, server, errors) {
  const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
  page.on('pageerror', (e) => errors.push(String(e)));
  const started = Date.now();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
  return { page, readyMs: Date.now() - started };
}

/** Pastes `texts` (one per line) into the batch box and returns the table's rows. */
export async function classifyBatch(page, texts) {
  await page.fill('#batch', texts.join('\n'));
  const started = Date.now();
  await page.click('#classify-batch');
  await page.waitForSelector('#batch-results:not([hidden]) tbody tr', { timeout: 600_000 });
  const ms = Date.now() - started;
  const rows = await page.$$eval('#batch-results tbody tr',
    (trs) => trs.map((tr) => ({ label: tr.dataset.label, score: Number(tr.dataset.score) })));
  return { rows, ms };
}

/** Types `text` into the review box, presses the button and returns the result and its time. */
export async function classifyOne(page, text) {
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

/** Types `text` into the review box, presses "Why?" and returns the highlighted units (text and
 * weight) and the explanation's score. */
export async function explainOne(page, text) {
  await page.evaluate(() => delete document.getElementById('explanation').dataset.score);
  await page.fill('#review', text);
  const started = Date.now();
  await page.click('#explain');
  await page.waitForSelector('#explanation[data-score]:not([aria-busy])', { timeout: 120_000 });
  const ms = Date.now() - started;
  const units = await page.$$eval('#explanation span[data-weight]',
    (spans) => spans.map((s) => ({ text: s.textContent, weight: Number(s.dataset.weight) })));
  const score = Number(await page.getAttribute('#explanation', 'data-score'));
  return { units, score, ms };
}

/** Saves a screenshot of `page` as NAME.png in $FEELINGS_SCREENSHOTS, for people to look at. */
export async function screenshot(page, name) {
  const file = path.join(need('FEELINGS_SCREENSHOTS'), `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** axe-core's violations on `page` as it is now: `[{ id, impact, nodes }]`, `nodes` the elements at fault. */
export async function accessibilityViolations(page) {
  const axe = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ path: axe });
  return page.evaluate(async () => {
    const { violations } = await window.axe.run(document, { resultTypes: ['violations'] });
    return violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
}

/** The WCAG contrast ratio of `selector`'s text on its own background (opaque), as shown. */
export function contrast(page, selector) {
  return page.$eval(selector, (element) => {
    const rgb = (css) => css.match(/[\d.]+/g).slice(0, 3).map(Number);
    const luminance = (css) => {
      const [r, g, b] = rgb(css).map((v) => {
        const c = v / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    // The background is the nearest one that is not transparent.
    let behind = element;
    while (behind && getComputedStyle(behind).backgroundColor.match(/[\d.]+/g)?.[3] === '0') {
      behind = behind.parentElement;
    }
    const background = behind ? getComputedStyle(behind).backgroundColor : 'rgb(255, 255, 255)';
    const [a, b] = [luminance(getComputedStyle(element).color), luminance(background)].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);
  });
}
