// The service worker (served at /sw.js, scope /): shows the pushes Switchboard sends when the
// tab is closed (README "Notifications": `{type: "message", conversation_id, message_id, seq,
// title, sender, preview, mention}`) and opens the conversation when one is clicked.
// Served with no-cache, so a new version is picked up on the next visit.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

/** The notification's text: who wrote, and the start of it when the push carries one. */
function body(push) {
  const who = push.sender ?? 'Someone';
  if (push.preview) return `${who}: ${push.preview}`;
  return push.mention ? `${who} mentioned you` : `${who} sent a message`;
}

self.addEventListener('push', (event) => {
  let push;
  try {
    push = event.data?.json();
  } catch {
    push = null;
  }
  if (!push || push.type !== 'message') return;
  event.waitUntil(
    self.registration.showNotification(push.title || 'Switchboard', {
      body: body(push),
      // One notification per conversation: a newer push replaces it.
      tag: push.conversation_id,
      renotify: true,
      data: { conversation_id: push.conversation_id, seq: push.seq },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const id = event.notification.data?.conversation_id;
  const url = id ? `/#conversation=${id}` : '/';
  event.waitUntil((async () => {
    const open = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const tab = open.find((c) => new URL(c.url).origin === self.location.origin);
    if (tab) {
      tab.postMessage({ type: 'open-conversation', conversation_id: id });
      return tab.focus();
    }
    return self.clients.openWindow(url);
  })());
});
