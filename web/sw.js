// The service worker: keeps the page, its scripts, the WebAssembly classifier and the list of
// models (models.json, where the page has one) in Cache Storage so that a later visit works
// without the network. Each file is asked of the network first (a new version shows up at once)
// and taken from the cache when the network fails. The model bundles (model/ and any other
// folder models.json names) are not handled here: worker.js caches them under their sha256,
// checked.
const CACHE = 'feelings-page';
const FILES = ['./', 'index.html', 'app.js', 'worker.js', 'style.css', 'sw.js',
  'pkg/feelings_core.js', 'pkg/feelings_core_bg.wasm'];
const URLS = new Set(FILES.map((f) => new URL(f, self.registration.scope).href));
// Kept at install and whenever fetched, where the page has them (it may have no models.json).
const OPTIONAL = new Set(['models.json'].map((f) => new URL(f, self.registration.scope).href));

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE)
    .then((cache) => cache.addAll([...URLS]).then(() => Promise.all(
      [...OPTIONAL].map((url) => cache.add(url).catch(() => undefined)))))
    .then(() => self.skipWaiting()));
});

// Controls the page that registered it at once, so the first visit is already kept.
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    // A list taken away is not offered offline either.
    else if (response.status === 404) await cache.delete(request, { ignoreSearch: true });
    return response;
  } catch (err) {
    const cached = await cache.match(request, { ignoreSearch: true });
    if (cached) return cached;
    throw err;
  }
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  url.search = '';
  if (event.request.method === 'GET' && (URLS.has(url.href) || OPTIONAL.has(url.href))) {
    event.respondWith(networkFirst(event.request));
  }
});
