// This device's notifications: the service worker (/sw.js) that shows pushes while the tab
// is closed, the Push API subscription behind it (sent to POST /api/push/subscriptions), and
// the way a clicked notification comes back to the page (a message from the worker, or a
// fresh tab at /#conversation=<id>).
import { api } from './api.js';

const STORED = 'switchboard-push-subscription';

/** Whether this browser can receive pushes at all. */
export const supported = () => 'serviceWorker' in navigator && 'PushManager' in self && 'Notification' in self;

/** Registers the service worker (once per page); resolves to its registration, or null. */
export async function registerWorker() {
  if (!('serviceWorker' in navigator)) return null;
  try {
    await navigator.serviceWorker.register('/sw.js');
    return await navigator.serviceWorker.ready;
  } catch {
    return null;
  }
}

/** Calls `open(conversationId)` when a clicked notification asks the page for it. */
export function onOpenConversation(open) {
  navigator.serviceWorker?.addEventListener('message', (e) => {
    if (e.data?.type === 'open-conversation' && e.data.conversation_id) open(e.data.conversation_id);
  });
}

/** The conversation a notification's new tab was opened for (`#conversation=<id>`), once. */
export function linkedConversation() {
  const m = /^#conversation=([0-9a-f-]{36})$/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return m[1];
}

function applicationServerKey(base64url) {
  const b64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

/** Whether this device is subscribed (as far as this browser knows). */
export async function subscribed() {
  const reg = await registerWorker();
  return !!(await reg?.pushManager.getSubscription());
}

/**
 * Asks for permission, subscribes with the server's VAPID key and registers the
 * subscription for this session. Throws when permission is refused, push is not
 * configured (404) or the browser's push service cannot be reached.
 */
export async function subscribe() {
  if ((await Notification.requestPermission()) !== 'granted') {
    throw new Error('Notifications are blocked for this site in the browser settings.');
  }
  const { public_key: key } = await api('GET', '/api/push/key');
  const reg = await registerWorker();
  if (!reg) throw new Error('This browser could not start the service worker.');
  const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: applicationServerKey(key) });
  const saved = await api('POST', '/api/push/subscriptions', sub.toJSON());
  localStorage.setItem(STORED, saved.id);
}

/**
 * After a sign-in: a browser still subscribed from an earlier session hands its
 * subscription to this one (the server dropped it when that session ended). Quiet on failure.
 */
export async function resync() {
  if (!supported() || Notification.permission !== 'granted') return;
  const reg = await registerWorker();
  const sub = await reg?.pushManager.getSubscription();
  if (!sub) return;
  const saved = await api('POST', '/api/push/subscriptions', sub.toJSON()).catch(() => null);
  if (saved) localStorage.setItem(STORED, saved.id);
}

/** Unsubscribes this device, here and on the server. */
export async function unsubscribe() {
  const reg = await registerWorker();
  await (await reg?.pushManager.getSubscription())?.unsubscribe();
  const id = localStorage.getItem(STORED);
  localStorage.removeItem(STORED);
  if (id) await api('DELETE', `/api/push/subscriptions/${id}`).catch(() => {});
}
