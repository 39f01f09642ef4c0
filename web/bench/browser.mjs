// Latency of the page's classifier (tract compiled to WebAssembly, in a Web Worker) against
// transformers.js (ONNX Runtime Web) on the same model.onnx, the same review and the same
// Chromium, in one run; prints a table and one JSON line with the ratios.
//
//   (cd web/bench && npm ci --ignore-scripts)   # once: transformers.js from npm
//   node web/bench/browser.mjs BUNDLE_DIR [--runs 10] [--threads 1]
//
// The review is long enough to fill the bundle's sequence length in both tokenizers.
// transformers.js reads the bundle through a Hugging Face layout made on the fly (config.json,
// tokenizer_config.json, tokenizer.json, onnx/model.onnx), with remote models switched off.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { classifyOne, launch, openReady } from '../tests/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WEB = path.resolve(HERE, '..');
const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm',
};

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const bundle = process.argv[2];
if (!bundle || bundle.startsWith('--')) {
  console.error('usage: node web/bench/browser.mjs BUNDLE_DIR [--runs 10] [--threads 1]');
  process.exit(2);
}
const runs = option('runs', 10);
const threads = option('threads', 1);
const manifest = JSON.parse(await readFile(path.join(bundle, 'feelings.json'), 'utf8'));
const labels = [manifest.labels.negative, manifest.labels.positive];
const hfFiles = {
  'config.json': JSON.stringify({
    model_type: 'bert',
    architectures: ['BertForSequenceClassification'],
    id2label: { 0: labels[0], 1: labels[1] },
    label2id: { [labels[0]]: 0, [labels[1]]: 1 },
  }),
  'tokenizer_config.json': JSON.stringify({
    tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: manifest.max_seq_len,
  }),
};

// web/ at /, the bundle at /model/, transformers.js and ONNX Runtime Web, and the bundle again
// in Hugging Face layout at /hf/feelings/. Cross-origin isolated, so ONNX Runtime may use threads.
function fileFor(rel) {
  const modules = path.join(HERE, 'node_modules');
  if (rel.startsWith('/model/')) return path.join(bundle, rel.slice(7));
  if (rel.startsWith('/tjs/')) return path.join(modules, '@huggingface/transformers/dist', rel.slice(5));
  if (rel.startsWith('/ort/')) return path.join(modules, 'onnxruntime-web/dist', rel.slice(5));
  if (rel === '/hf/feelings/onnx/model.onnx') return path.join(bundle, 'model.onnx');
  if (rel === '/hf/feelings/tokenizer.json') return path.join(bundle, 'tokenizer.json');
  if (rel.startsWith('/bench/')) return path.join(HERE, rel.slice(7));
  return path.join(WEB, rel === '/' ? 'index.html' : rel);
}

const server = http.createServer(async (req, res) => {
  const rel = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
  const headers = {
    'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp',
  };
  const generated = rel.startsWith('/hf/feelings/') ? hfFiles[rel.slice(13)] : undefined;
  try {
    const file = generated ? rel : fileFor(rel);
    const body = generated ?? await readFile(file);
    const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
    res.writeHead(200, { ...headers, 'content-type': type }).end(body);
  } catch {
    res.writeHead(404, headers).end('not found');
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const review = 'This film was a quiet delight, with honest acting and a story that stays with you. '
  .repeat(40);
const browser = await launch();
try {
  const errors = [];
  const ours = await openReady(browser, { address: () => server.address() }, errors);
  const first = await classifyOne(ours.page, review);
  const times = [];
  for (let i = 0; i < runs; i += 1) times.push((await classifyOne(ours.page, review)).ms);

  const peerPage = await browser.newPage();
  peerPage.on('pageerror', (e) => errors.push(String(e)));
  await peerPage.goto(`${base}/bench/transformers.html?threads=${threads}`);
  await peerPage.waitForSelector('body[data-ready="true"]', { state: 'attached', timeout: 60_000 });
  const peer = await peerPage.evaluate(([text, n]) => window.bench(text, n), [review, runs]);
  if (errors.length > 0) throw new Error(errors.join('\n'));

  const oursMs = median(times);
  const peerMs = median(peer.times);
  const result = {
    what: 'infer_browser', seq: manifest.max_seq_len, batch: 1, peer_tokens: peer.tokens,
    ours_ms: oursMs, peer: 'transformers.js 4.3.1 (onnxruntime-web)', peer_threads: peer.threads,
    peer_ms: peerMs, ratio: oursMs / peerMs,
    ours_ready_ms: ours.readyMs, ours_first_ms: first.ms,
    peer_load_ms: peer.loadMs, peer_first_ms: peer.firstMs,
    ours_score: first.score, peer_scores: peer.first,
  };
  console.log(`Chromium, seq ${manifest.max_seq_len}, batch 1, median of ${runs}:`);
  console.log(`  feelings (tract wasm)  ${oursMs.toFixed(0)} ms   ready ${ours.readyMs} ms, first ${first.ms} ms`);
  console.log(`  transformers.js (${peer.threads} thread${peer.threads > 1 ? 's' : ''})  ${peerMs.toFixed(0)} ms   loaded ${peer.loadMs.toFixed(0)} ms, first ${peer.firstMs.toFixed(0)} ms, ${peer.tokens} tokens`);
  console.log(`  ours / peer ${result.ratio.toFixed(2)}`);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  server.close();
}
