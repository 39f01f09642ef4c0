// Runs the classifier off the page's thread: downloads the model bundle once (Cache Storage
// keeps it for offline use), builds the WebAssembly classifier, answers classify, read and
// explain requests.
import init, { Classifier } from './pkg/feelings_core.js';

const CACHE = 'feelings-model';
const FILES = ['model.onnx', 'tokenizer.json'];
let classifier = null;

// Cache Storage, where the origin has it (secure origins: https or this machine).
const openCache = () => (self.caches ? caches.open(CACHE) : Promise.resolve(null));

// The manifest from the network when possible (a new model shows up at once), else the one
// cached with the model last loaded (`offline`).
async function manifestBytes(url, cache) {
  try {
    const response = await fetch(url, { cache: 'no-cache' });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return { bytes: new Uint8Array(await response.arrayBuffer()), offline: false };
  } catch (err) {
    const cached = await cache?.match(url);
    if (cached) return { bytes: new Uint8Array(await cached.arrayBuffer()), offline: true };
    throw err;
  }
}

async function download(url, onBytes) {
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
  return bytes;
}

// The big files are cached under their sha256, so a changed model is downloaded again and an
// unchanged one never is. Returns the bytes and whether they came from the cache.
async function fileBytes(cache, url, sha256, useCache, onBytes) {
  const hit = useCache ? await cache?.match(`${url}?sha256=${sha256}`) : undefined;
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onBytes(bytes.length);
    return { bytes, cached: true };
  }
  return { bytes: await download(url, onBytes), cached: false };
}

// Keeps what was just loaded, and only that: the manifest, and each file under its sha256
// with any other version of it removed. Called once the classifier accepted the bytes, which
// checks them against the manifest's sha256: a damaged download is never kept.
async function keep(cache, base, manifestRaw, manifest, loaded) {
  if (!cache) return;
  await cache.put(`${base}feelings.json`, new Response(manifestRaw));
  for (const [i, file] of FILES.entries()) {
    const url = `${base}${file}`;
    const key = `${url}?sha256=${manifest.sha256[file]}`;
    if (!loaded[i].cached) await cache.put(key, new Response(loaded[i].bytes));
    for (const old of await cache.keys()) {
      if (old.url.startsWith(`${url}?sha256=`) && old.url !== key) await cache.delete(old);
    }
  }
}

// Loads the bundle, from the cache where it has it; a cached copy the classifier refuses is
// dropped and the files are downloaded again once.
async function load(base) {
  await init();
  const cache = await openCache();
  const { bytes: manifestRaw, offline } = await manifestBytes(`${base}feelings.json`, cache);
  const manifest = JSON.parse(new TextDecoder().decode(manifestRaw));
  const total = FILES.reduce((n, f) => n + (manifest.sizes?.[f] ?? 0), 0);
  for (const useCache of [true, false]) {
    let loaded = 0;
    const progress = (n) => {
      loaded += n;
      postMessage({ type: 'progress', loaded, total });
    };
    const files = await Promise.all(FILES.map(
      (f) => fileBytes(cache, `${base}${f}`, manifest.sha256?.[f], useCache, progress)));
    try {
      classifier = Classifier.fromBundle(manifestRaw, files[0].bytes, files[1].bytes);
    } catch (err) {
      if (!files.some((f) => f.cached)) throw err;
      console.warn('the cached model was refused, downloading it again:', err);
      continue;
    }
    await keep(cache, base, manifestRaw, manifest, files);
    postMessage({ type: 'ready', manifest: classifier.manifest(), offline });
    return;
  }
}

function answer(data) {
  if (data.type === 'classify') return classifier.classifyBatch(data.texts);
  if (data.type === 'read') return classifier.readParts(data.text);
  if (data.type === 'explain') return classifier.explain(data.text);
  throw new Error(`unknown request ${data.type}`);
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === 'load') {
      await load(data.base);
    } else {
      const started = performance.now();
      const value = answer(data);
      postMessage({ type: 'result', id: data.id, value, ms: performance.now() - started });
    }
  } catch (err) {
    // A trap leaves the WebAssembly instance unusable: the page starts a new worker.
    const fatal = err instanceof WebAssembly.RuntimeError;
    postMessage({ type: 'error', id: data.id, message: String(err?.message ?? err), fatal });
  }
};
