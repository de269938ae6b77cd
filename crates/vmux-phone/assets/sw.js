// vmux phone service worker (scope /): takes control at once and caches nothing.
// It also shows Web Push notifications and opens the page when one is tapped.

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

// Only same-origin pages may be opened from a notification.
function pageUrl(url) {
  try {
    const u = new URL(url || '/', self.location.origin);
    if (u.origin === self.location.origin) return u.href;
  } catch {
    // not a URL: fall through to the start page
  }
  return new URL('/', self.location.origin).href;
}

// Push payload (JSON): {"title", "body", "tag", "id", "url", "waiting"}.
// One tag for every push: a burst is one notification, and a newer push
// replaces an older one (and alerts again).
self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  event.waitUntil(
    self.registration.showNotification(data.title || 'vmux signer', {
      body: data.body || 'A request waits for your approval.',
      tag: data.tag || 'vmux-request',
      renotify: true,
      requireInteraction: true,
      data: { url: data.url || '/', id: data.id || null },
      icon: '/icon-192.png',
    }),
  );
});

// Focus an open vmux window and navigate it to the notification's URL, else open a new one.
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = pageUrl(event.notification.data && event.notification.data.url);
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const client of windows) {
      if (new URL(client.url).origin !== self.location.origin) continue;
      const focused = await client.focus();
      try {
        await (focused || client).navigate(url);
      } catch {
        // an uncontrolled window cannot be navigated from here: open the request in a new one
        await self.clients.openWindow(url);
      }
      return;
    }
    await self.clients.openWindow(url);
  })());
});

// The push service replaced or dropped the subscription: nothing is
// done here. Subscribing needs the phone's passkey, which a service
// worker cannot ask for; the page, when next opened, sees that the
// signer does not hold this browser's subscription and renews it with
// the passkey (meanwhile a push to the old endpoint fails, and a 410
// drops it).
