// Runs the classifier off the page's thread: downloads the model bundle once (Cache Storage
// keeps it for offline use), builds the WebAssembly classifier, answers classify and explain
// requests.
import init, { Classifier } from './pkg/feelings_core.js';

const CACHE = 'feelings-model';
let classifier = null;

// The manifest is fetched from the network when possible (a new model shows up at once) and
// from the cache when offline; the big files are cached under their sha256, so a changed model
// is downloaded again and an unchanged one never is.
async function manifestBytes(url) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(url, { cache: 'no-cache' });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    await cache.put(url, response.clone());
    return new Uint8Array(await response.arrayBuffer());
  } catch (err) {
    const cached = await cache.match(url);
    if (cached) return new Uint8Array(await cached.arrayBuffer());
    throw err;
  }
}

async function cachedBytes(url, sha256, onBytes) {
  const cache = await caches.open(CACHE);
  const key = `${url}?sha256=${sha256}`;
  const hit = await cache.match(key);
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onBytes(bytes.length);
    return bytes;
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const reader = response.body.getReader();
  const chunks = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.length;
    onBytes(value.length);
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  await cache.put(key, new Response(bytes));
  return bytes;
}

async function load(base) {
  await init();
  const manifestRaw = await manifestBytes(`${base}feelings.json`);
  const manifest = JSON.parse(new TextDecoder().decode(manifestRaw));
  const files = ['model.onnx', 'tokenizer.json'];
  const total = files.reduce((n, f) => n + (manifest.sizes?.[f] ?? 0), 0);
  let loaded = 0;
  const progress = (n) => {
    loaded += n;
    postMessage({ type: 'progress', loaded, total });
  };
  const [model, tokenizer] = await Promise.all(
    files.map((f) => cachedBytes(`${base}${f}`, manifest.sha256[f], progress)),
  );
  const started = performance.now();
  classifier = Classifier.fromBundle(manifestRaw, model, tokenizer);
  postMessage({ type: 'ready', manifest: classifier.manifest(), loadMs: performance.now() - started });
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === 'load') {
      await load(data.base);
    } else if (data.type === 'classify') {
      const started = performance.now();
      const value = classifier.classifyBatch(data.texts);
      postMessage({ type: 'result', id: data.id, value, ms: performance.now() - started });
    } else if (data.type === 'explain') {
      const started = performance.now();
      const value = classifier.explain(data.text);
      postMessage({ type: 'result', id: data.id, value, ms: performance.now() - started });
    }
  } catch (err) {
    postMessage({ type: 'error', id: data.id, message: String(err?.message ?? err) });
  }
};
