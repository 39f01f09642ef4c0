// Drives the real page in Debian's Chromium: loads it, waits for the model, classifies the
// reviews in $FEELINGS_EXPECTED and checks label and probability against the native core's
// answers, classifies a batch, and saves a screenshot. Run by tests/ (the Rust end-to-end
// suite), which builds the bundle and the expectations:
//   FEELINGS_BUNDLE=dir FEELINGS_EXPECTED=file.json FEELINGS_SCREENSHOT=out.png node --test tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { classifyBatch, classifyOne, explainOne, launch, need, openReady, serve } from './harness.mjs';

test('the page classifies reviews in the browser as the native core does', async () => {
  const bundle = need('FEELINGS_BUNDLE');
  const expected = JSON.parse(await readFile(need('FEELINGS_EXPECTED'), 'utf8'));
  const screenshot = need('FEELINGS_SCREENSHOT');
  const server = await serve(bundle);
  const browser = await launch();
  try {
    const errors = [];
    const { page, readyMs: coldMs } = await openReady(browser, server, errors);
    for (const want of expected) {
      const got = await classifyOne(page, want.text);
      assert.equal(got.label, want.label, `label of ${JSON.stringify(want.text.slice(0, 40))}`);
      assert.ok(Math.abs(got.score - want.score) <= 1e-4,
        `score ${got.score} vs native ${want.score} for ${JSON.stringify(want.text.slice(0, 40))}`);
      console.log(`# ${got.label} ${got.score.toFixed(6)} in ${got.ms} ms`);
      // "Why?": the native core's units and weights, each word a span with its weight.
      const why = await explainOne(page, want.text);
      assert.deepEqual(why.units.map((u) => u.text), want.explanation.units.map((u) => u.text));
      why.units.forEach((u, i) => assert.ok(Math.abs(u.weight - want.explanation.units[i].weight) <= 1e-4,
        `weight of ${JSON.stringify(u.text)}: ${u.weight} vs native ${want.explanation.units[i].weight}`));
      assert.ok(Math.abs(why.score - want.score) <= 1e-4);
      console.log(`# explained by ${why.units.length} words in ${why.ms} ms`);
    }
    const { rows } = await classifyBatch(page, expected.map((e) => e.text.replaceAll('\n', ' ')));
    assert.deepEqual(rows.map((r) => r.label), expected.map((e) => e.label));
    await page.screenshot({ path: screenshot, fullPage: true });

    // Second visit: the model comes from Cache Storage.
    const started = Date.now();
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
  const browser = await launch();
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
