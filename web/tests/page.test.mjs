// Drives the real page in Debian's Chromium against the native core's answers: classifying,
// explaining, what the model read of a long review, keyboard use, accessibility (axe-core and
// the contrast of every button state), failures (a classifier that errs, hangs or dies),
// offline visits with the bundle cache (old versions evicted, damaged downloads never kept), and
// a choice of models (models.json).
// Saves a screenshot of each state. Run by tests/ (the Rust end-to-end suite), which builds two
// bundles and the expectations:
//   FEELINGS_BUNDLE=dir FEELINGS_OTHER_BUNDLE=dir FEELINGS_EXPECTED=file.json
//   FEELINGS_SCREENSHOTS=dir node --test tests/page.test.mjs
// file.json: {"reviews": [{text, label, score, explanation}], "long": {text, read: [string]},
// "other_score": the other bundle's score of the first review}.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  accessibilityViolations, classifyBatch, classifyOne, contrast, explainOne, launch, need,
  openReady, screenshot, serve, stop,
} from './harness.mjs';

const expected = () => readFile(need('FEELINGS_EXPECTED'), 'utf8').then(JSON.parse);
const close = (a, b) => Math.abs(a - b) <= 1e-4;

// Runs `body(browser, server)` with a fresh Chromium and a server of `bundle`.
async function withPage(bundle, body) {
  const server = await serve(bundle);
  const browser = await launch();
  try {
    await body(browser, server);
  } finally {
    await browser.close();
    if (server.listening) await stop(server);
  }
}

async function checkAccessibility(page, state) {
  const violations = await accessibilityViolations(page);
  const serious = violations.filter((v) => ['serious', 'critical'].includes(v.impact));
  console.log(`# axe (${state}): ${violations.length} violations, ${serious.length} serious or critical ${JSON.stringify(violations)}`);
  assert.deepEqual(serious, [], `accessibility violations (${state})`);
}

async function checkContrast(page) {
  for (const id of ['classify', 'explain', 'classify-batch']) {
    for (const disabled of [false, true]) {
      const wasDisabled = await page.isDisabled(`#${id}`);
      await page.$eval(`#${id}`, (b, d) => { b.disabled = d; }, disabled);
      const ratio = await contrast(page, `#${id}`);
      await page.$eval(`#${id}`, (b, d) => { b.disabled = d; }, wasDisabled);
      assert.ok(ratio >= 4.5, `#${id} ${disabled ? 'disabled' : 'enabled'}: contrast ${ratio.toFixed(2)}`);
    }
  }
  for (const selector of ['#result', '#status', '#model-info', '.lede', 'caption', '#read .cut']) {
    const ratio = await contrast(page, selector);
    assert.ok(ratio >= 4.5, `${selector}: contrast ${ratio.toFixed(2)}`);
  }
}

test('the page classifies, explains and shows what it read as the native core does', async () => {
  const want = await expected();
  await withPage(need('FEELINGS_BUNDLE'), async (browser, server) => {
    const errors = [];
    const { page, readyMs } = await openReady(browser, server, errors);
    assert.match(await page.inputValue('#review'), /MCU.*really just ok.*meh/s, "the tutorial's sample review");
    assert.equal(await page.isHidden('#model-picker'), true, 'without models.json, one model and no choice');
    const first = await classifyOne(page, want.reviews[0].text);
    console.log(`# time to first result: cold ${readyMs + first.ms} ms (ready ${readyMs} ms)`);
    for (const review of want.reviews) {
      const got = await classifyOne(page, review.text);
      assert.equal(got.label, review.label, `label of ${JSON.stringify(review.text.slice(0, 40))}`);
      assert.ok(close(got.score, review.score), `score ${got.score} vs native ${review.score}`);
      assert.equal(await page.isHidden('#read-view'), true, 'a short review is read whole');
      const why = await explainOne(page, review.text);
      assert.deepEqual(why.units.map((u) => u.text), review.explanation.units.map((u) => u.text));
      why.units.forEach((u, i) => assert.ok(close(u.weight, review.explanation.units[i].weight),
        `weight of ${JSON.stringify(u.text)}: ${u.weight} vs native ${review.explanation.units[i].weight}`));
      assert.ok(close(why.score, review.score));
      console.log(`# ${got.label} ${got.score.toFixed(6)} in ${got.ms} ms; explained by ${why.units.length} words in ${why.ms} ms`);
    }
    await screenshot(page, 'explanation');

    // A long review: the part the model read, as the native core cuts it, the rest greyed.
    await classifyOne(page, want.long.text);
    assert.match(await page.textContent('#result'), /cut to fit/);
    assert.deepEqual(await page.$$eval('#read .read', (s) => s.map((e) => e.textContent)), want.long.read);
    assert.equal(await page.$$eval('#read span', (s) => s.map((e) => e.textContent).join('')), want.long.text);
    await screenshot(page, 'result');

    // The keyboard alone: Ctrl+Enter in the review, Tab to a button and Enter.
    await page.fill('#review', want.reviews[1].text);
    await page.evaluate(() => delete document.getElementById('result').dataset.label);
    await page.focus('#review');
    await page.keyboard.press('Control+Enter');
    await page.waitForSelector(`#result[data-label="${want.reviews[1].label}"]`);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'classify');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'explain');
    await page.evaluate(() => delete document.getElementById('explanation').dataset.score);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#explanation[data-score]:not([aria-busy])');

    const { rows } = await classifyBatch(page, want.reviews.map((e) => e.text.replaceAll('\n', ' ')));
    assert.deepEqual(rows.map((r) => r.label), want.reviews.map((e) => e.label));
    await screenshot(page, 'batch');
    await checkContrast(page);
    await checkAccessibility(page, 'results, explanation, long review and table shown');

    // Second visit: the page and the model come from the caches.
    const started = Date.now();
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const warm = await classifyOne(page, want.reviews[0].text);
    console.log(`# time to first result: warm ${Date.now() - started} ms (classify ${warm.ms} ms)`);
    assert.deepEqual(errors, []);
  });
});

test('a classifier that errs, hangs or dies is reported, and a dead one restarted', async () => {
  const want = await expected();
  const review = want.reviews[0];
  await withPage(need('FEELINGS_BUNDLE'), async (browser, server) => {
    const { page } = await openReady(browser, server, []);
    const [classifier] = page.workers();
    // One request refused: its error is shown, the model is still ready.
    await classifier.evaluate(() => {
      self.saved = self.onmessage;
      self.onmessage = ({ data }) => postMessage({ type: 'error', id: data.id, message: 'refused by the test' });
    });
    await page.click('#classify');
    await page.waitForSelector('#error:not([hidden])');
    assert.match(await page.textContent('#error'), /refused by the test/);
    assert.match(await page.textContent('#status'), /ready/);
    assert.equal(await page.isDisabled('#classify'), false);
    // The next success clears it.
    await classifier.evaluate(() => { self.onmessage = self.saved; });
    const again = await classifyOne(page, review.text);
    assert.ok(close(again.score, review.score));
    assert.equal(await page.isHidden('#error'), true, 'a success clears the earlier error');

    // A request the classifier never answers is busy until the classifier dies; then it fails
    // with a message and a new classifier is started.
    await classifier.evaluate(() => { self.onmessage = () => {}; });
    await page.click('#classify');
    await page.waitForSelector('#result[aria-busy="true"]');
    assert.equal(await page.isDisabled('#classify'), true);
    await classifier.evaluate(() => { setTimeout(() => { throw new Error('killed by the test'); }, 0); });
    await page.waitForSelector('#error:not([hidden])');
    assert.match(await page.textContent('#error'), /stopped.*killed by the test.*Restarting/s);
    assert.equal(await page.textContent('#result'), '', 'no earlier result stays beside the error');
    assert.equal(await page.getAttribute('#result', 'aria-busy'), null);
    await screenshot(page, 'error');
    await checkAccessibility(page, 'error shown');
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const restarted = await classifyOne(page, review.text);
    assert.ok(close(restarted.score, review.score), 'the new classifier answers as before');
    assert.equal(await page.isHidden('#error'), true);
  });
});

// The bundle cache's keys, as URLs.
const cachedModel = (page) => page.evaluate(async () =>
  (await (await caches.open('feelings-model')).keys()).map((r) => r.url));

test('after one visit the page works offline; old and damaged models are not kept', async () => {
  const want = await expected();
  const [bundle, other] = [need('FEELINGS_BUNDLE'), need('FEELINGS_OTHER_BUNDLE')];
  const shas = new Map();
  for (const dir of [bundle, other]) {
    shas.set(dir, JSON.parse(await readFile(path.join(dir, 'feelings.json'), 'utf8')).sha256['model.onnx']);
  }
  const sha = (dir) => shas.get(dir);
  const damaged = path.join(tmpdir(), `feelings-damaged-${process.pid}`);
  await cp(bundle, damaged, { recursive: true });
  const model = await readFile(path.join(damaged, 'model.onnx'));
  model[model.length >> 1] ^= 0xff;
  await writeFile(path.join(damaged, 'model.onnx'), model);
  await withPage(bundle, async (browser, server) => {
    const { page } = await openReady(browser, server, []);
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 60_000 });
    assert.ok((await cachedModel(page)).some((u) => u.endsWith(`model.onnx?sha256=${sha(bundle)}`)));

    // A new version of the model replaces the old one in the cache.
    server.bundle = other;
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const newer = await classifyOne(page, want.reviews[0].text);
    assert.ok(close(newer.score, want.other_score), `${newer.score} vs the other bundle's ${want.other_score}`);
    const keys = await cachedModel(page);
    assert.equal(keys.filter((u) => u.includes('model.onnx?')).length, 1, `${keys}`);
    assert.ok(keys.some((u) => u.endsWith(sha(other))) && !keys.some((u) => u.endsWith(sha(bundle))), `${keys}`);

    // A damaged download is refused and never cached.
    server.bundle = damaged;
    await page.reload();
    await page.waitForSelector('#error:not([hidden])', { timeout: 180_000 });
    assert.match(await page.textContent('#error'), /sha256/);
    assert.match(await page.textContent('#status'), /Not available/);
    assert.deepEqual(await cachedModel(page), keys, 'the damaged download was not kept');

    // Offline: the server gone, the page, its scripts and the model come from the caches.
    server.bundle = other;
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    await stop(server);
    await page.reload();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    assert.match(await page.textContent('#status'), /offline/);
    const offline = await classifyOne(page, want.reviews[0].text);
    assert.ok(close(offline.score, want.other_score), `offline ${offline.score} vs ${want.other_score}`);
    console.log(`# offline: reloaded with the server stopped, classified ${offline.label} ${offline.score.toFixed(6)} in ${offline.ms} ms`);
    await screenshot(page, 'offline');
  });
});

test('models.json offers a choice of models, and the choice is kept for the next visit, offline too', async () => {
  const want = await expected();
  const [bundle, other] = [need('FEELINGS_BUNDLE'), need('FEELINGS_OTHER_BUNDLE')];
  const list = path.join(await mkdtemp(path.join(tmpdir(), 'feelings-models-')), 'models.json');
  await writeFile(list, JSON.stringify([{ path: 'model/', label: 'Model A' }, { path: 'other/', label: 'Model B' }]));
  const ready = (page) => page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
  await withPage(bundle, async (browser, server) => {
    server.routes = { '/models.json': list, '/other/': other };
    const errors = [];
    const { page } = await openReady(browser, server, errors);
    assert.deepEqual(await page.$$eval('#model-choice option', (os) => os.map((o) => [o.value, o.textContent])),
      [['model/', 'Model A'], ['other/', 'Model B']]);
    assert.ok(close((await classifyOne(page, want.reviews[0].text)).score, want.reviews[0].score), 'the first is the default');
    await page.selectOption('#model-choice', 'other/');
    await ready(page);
    const chosen = await classifyOne(page, want.reviews[0].text);
    assert.ok(close(chosen.score, want.other_score), `${chosen.score} vs the other bundle's ${want.other_score}`);
    await checkAccessibility(page, 'a choice of models');
    await screenshot(page, 'models');

    await page.reload();
    await ready(page);
    assert.equal(await page.inputValue('#model-choice'), 'other/', 'the choice is kept');
    assert.ok(close((await classifyOne(page, want.reviews[0].text)).score, want.other_score));

    // A kept choice no longer offered gives way to the first model; one model needs no choice.
    await writeFile(list, JSON.stringify([{ path: 'model/' }]));
    await page.reload();
    await ready(page);
    assert.equal(await page.isHidden('#model-picker'), true);
    assert.ok(close((await classifyOne(page, want.reviews[0].text)).score, want.reviews[0].score));

    // A list that is not one is reported, naming the file.
    await writeFile(list, JSON.stringify({ models: 'model/' }));
    await page.reload();
    await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    assert.match(await page.textContent('#error'), /models\.json must be a list/);
    assert.equal(await page.isDisabled('#classify'), true);
    await writeFile(list, JSON.stringify([{ path: 'model/' }, { path: 'https://example.com/m/' }]));
    await page.reload();
    await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    assert.match(await page.textContent('#error'), /models\.json, model 2: "path" "https:\/\/example\.com\/m\/" is on another site/);

    // Offline: the list and the chosen model come from the caches, the choice still kept.
    await writeFile(list, JSON.stringify([{ path: 'model/', label: 'Model A' }, { path: 'other/', label: 'Model B' }]));
    await page.reload();
    await ready(page);
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 60_000 });
    await page.selectOption('#model-choice', 'other/');
    await ready(page);
    await stop(server);
    await page.reload();
    await ready(page);
    assert.match(await page.textContent('#status'), /offline/);
    assert.deepEqual(await page.$$eval('#model-choice option', (os) => os.map((o) => o.value)), ['model/', 'other/']);
    assert.equal(await page.inputValue('#model-choice'), 'other/', 'the choice is kept offline');
    const offline = await classifyOne(page, want.reviews[0].text);
    assert.ok(close(offline.score, want.other_score), `offline ${offline.score} vs ${want.other_score}`);
    assert.deepEqual(errors, []);
  });
});

test('a missing model is reported on the page, not swallowed', async () => {
  await withPage('/nonexistent-bundle', async (browser, server) => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    assert.match(await page.textContent('#error'), /feelings\.json/);
    assert.equal(await page.isDisabled('#classify'), true);
    assert.equal(await page.isVisible('#retry'), true, 'the page offers to try again');
  });
});
