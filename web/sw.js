// Service worker of the demo page: network first, the cache when offline, so that the page
// reloads and works without a network once it has been opened. The files the page needs
// (the model named by ?model= when registered) are cached at install.
const CACHE = 'elmo-web-v1';
const MODEL = new URL(location.href).searchParams.get('model') ?? 'model.onnx';
const FILES = [
  './', 'index.html', 'demo.mjs', 'demo.css', 'elmo.mjs', 'contract.json',
  'src/chars.mjs', 'src/codepoints.mjs', 'src/metadata.mjs', 'src/mix.mjs', 'src/tokenize.mjs',
  'node_modules/onnxruntime-web/dist/ort.wasm.min.mjs',
  'node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs',
  'node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm',
  MODEL,
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET' || new URL(request.url).origin !== location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const response = await fetch(request);
      if (response.ok) event.waitUntil(cache.put(request, response.clone()));
      return response;
    } catch (error) {
      const cached = await cache.match(request, { ignoreSearch: true });
      if (cached) return cached;
      throw error;
    }
  })());
});
