// The page against the native core on real reviews and a real model, with timings. Run by the
// Rust end-to-end suite (tests/e2e/parity.rs), which writes the expectations:
//   FEELINGS_PARITY=file.json node --test tests/parity.test.mjs
// where file.json is {"bundle": dir, "reviews": [{"text", "label", "score"}, ...],
// "tolerance": largest score difference allowed (1e-4 when absent)}.
// Prints one line "# parity {json}" with the timings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { classifyBatch, classifyOne, launch, openReady, serve } from './harness.mjs';

const skip = process.env.FEELINGS_PARITY ? false : 'FEELINGS_PARITY is not set';

test('the page gives the native probabilities on real reviews', { skip }, async () => {
  const { bundle, reviews, tolerance = 1e-4 } = JSON.parse(
    await readFile(process.env.FEELINGS_PARITY, 'utf8'),
  );
  const server = await serve(bundle);
  const browser = await launch();
  try {
    const errors = [];
    const cold = await openReady(browser, server, errors);
    const longest = reviews.reduce((a, b) => (b.text.length > a.text.length ? b : a));
    const coldFirst = await classifyOne(cold.page, longest.text);
    const { rows, ms } = await classifyBatch(cold.page, reviews.map((r) => r.text));
    assert.equal(rows.length, reviews.length);
    let worst = 0;
    rows.forEach((row, i) => {
      assert.equal(row.label, reviews[i].label, `label of review ${i}`);
      worst = Math.max(worst, Math.abs(row.score - reviews[i].score));
    });
    assert.ok(worst <= tolerance, `largest difference to native ${worst}`);
    const single = [];
    for (let i = 0; i < 3; i += 1) single.push((await classifyOne(cold.page, longest.text)).ms);
    single.sort((a, b) => a - b);
    // Second visit (same browser profile): the model comes from Cache Storage.
    const started = Date.now();
    await cold.page.reload();
    await cold.page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const warmReadyMs = Date.now() - started;
    const warmFirst = await classifyOne(cold.page, longest.text);
    assert.deepEqual(errors, []);
    const figures = {
      reviews: reviews.length,
      max_score_difference: worst,
      batch_ms_per_review: ms / reviews.length,
      longest_review_ms: single[1],
      cold_ready_ms: cold.readyMs,
      cold_first_result_ms: cold.readyMs + coldFirst.ms,
      warm_ready_ms: warmReadyMs,
      warm_first_result_ms: warmReadyMs + warmFirst.ms,
    };
    console.log(`# parity ${JSON.stringify(figures)}`);
  } finally {
    await browser.close();
    server.close();
  }
});
