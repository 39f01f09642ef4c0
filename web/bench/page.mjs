// Times the page with one bundle in Chromium: the time to the first result on a first visit
// (cold: nothing cached) and on a second (warm: the service worker's and the bundle's caches),
// and "Why?" (occlusion, in the Web Worker) on one review, the median of RUNS after one to warm
// up. Prints one JSON line.
//
//   node web/bench/page.mjs BUNDLE_DIR REVIEW_FILE [--runs 3]
import { readFile } from 'node:fs/promises';
import { classifyOne, explainOne, launch, openReady, serve, stop } from '../tests/harness.mjs';

const [bundle, reviewFile] = process.argv.slice(2);
if (!bundle || !reviewFile) {
  console.error('usage: node web/bench/page.mjs BUNDLE_DIR REVIEW_FILE [--runs 3]');
  process.exit(2);
}
const at = process.argv.indexOf('--runs');
const runs = at > 0 ? Number(process.argv[at + 1]) : 3;
const review = (await readFile(reviewFile, 'utf8')).trim();
const server = await serve(bundle);
const browser = await launch();
try {
  const errors = [];
  const { page, readyMs } = await openReady(browser, server, errors);
  const cold = await classifyOne(page, review);
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
  const started = Date.now();
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
  const warmReadyMs = Date.now() - started;
  const warm = await classifyOne(page, review);
  const first = await explainOne(page, review);
  const times = [];
  for (let i = 0; i < runs; i += 1) times.push((await explainOne(page, review)).ms);
  if (errors.length > 0) throw new Error(errors.join('\n'));
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({
    what: 'page_chromium',
    cold_ready_ms: readyMs, cold_first_result_ms: readyMs + cold.ms,
    warm_ready_ms: warmReadyMs, warm_first_result_ms: warmReadyMs + warm.ms,
    explain_units: first.units.length, explain_first_ms: first.ms,
    explain_median_ms: times[Math.floor(runs / 2)], explain_times_ms: times,
  }));
} finally {
  await browser.close();
  await stop(server);
}
