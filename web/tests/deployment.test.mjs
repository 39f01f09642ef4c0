// Drives a deployment's web app as feelings-serve serves it (/d/NAME/, its bundle at
// /d/NAME/model/) in Debian's Chromium: the page loads that deployment's model and classifies
// the reviews in $FEELINGS_EXPECTED as the gateway's own sandboxes did. Run by tests/ (the Rust
// end-to-end suite), which starts the gateway with two deployments:
//   FEELINGS_PAGE=http://127.0.0.1:PORT/d/NAME/ FEELINGS_EXPECTED=file.json FEELINGS_SCREENSHOT=out.png node --test tests/deployment.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { classifyOne, launch, need } from './harness.mjs';

test("a deployment's page classifies with that deployment's model", async () => {
  const url = need('FEELINGS_PAGE');
  const expected = JSON.parse(await readFile(need('FEELINGS_EXPECTED'), 'utf8'));
  const browser = await launch();
  try {
    const errors = [];
    const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
    page.on('pageerror', (e) => errors.push(String(e)));
    const loaded = [];
    page.on('response', (r) => loaded.push(new URL(r.url()).pathname));
    await page.goto(url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 180_000 });
    const prefix = new URL(url).pathname;
    assert.ok(loaded.includes(`${prefix}model/model.onnx`), `the page loaded ${prefix}model/: ${loaded}`);
    for (const want of expected) {
      const got = await classifyOne(page, want.text);
      assert.equal(got.label, want.label, `label of ${JSON.stringify(want.text)}`);
      assert.ok(Math.abs(got.score - want.score) <= 1e-4,
        `score ${got.score} in the browser vs ${want.score} from the gateway for ${JSON.stringify(want.text)}`);
      console.log(`# ${got.label} ${got.score.toFixed(6)} in ${got.ms} ms`);
    }
    await page.screenshot({ path: need('FEELINGS_SCREENSHOT'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
