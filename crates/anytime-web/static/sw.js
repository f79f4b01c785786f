// Service worker: the app shell works offline (network first, cache as fallback, so a deploy is
// picked up at once), and Web Push shows a notification without content — the server cannot
// read messages, so it can only say that one arrived.

const CACHE = "anytime-shell-v4";
const SHELL = ["/", "/index.html", "/app.js", "/dom.js", "/message_tools.js", "/wallet.js", "/files.js", "/style.css", "/icon.svg", "/manifest.webmanifest",
  "/pkg/anytime_web.js", "/pkg/anytime_web_bg.wasm"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/v1/")) return;
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(event.request, copy));
    }
    return response;
  }).catch(() => caches.match(event.request).then((hit) => hit || caches.match("/index.html"))));
});

self.addEventListener("push", (event) => {
  event.waitUntil(self.registration.showNotification("Anytime", {
    body: "New message",
    icon: "/icon.svg",
    tag: "anytime-new-message",
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.matchAll({ type: "window" }).then((windows) => {
    for (const w of windows) if ("focus" in w) return w.focus();
    return self.clients.openWindow("/");
  }));
});
