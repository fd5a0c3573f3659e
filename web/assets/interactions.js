// What people do with a message besides replying (issue 20): reactions, pins, earlier
// versions, marking unread, and blocking a person. The Messenger (chat.js) calls these; each
// talks to the API and leaves the state it changes to the Messenger's upsert/onFrame.
import { api } from './api.js';
import { h, shortTime } from './dom.js';

/** The emoji offered at one click (any single emoji is accepted by the server). */
export const QUICK_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

/** Adds or takes back the signed-in user's `emoji` on message `m`; resolves to the message. */
export function toggleReaction(m, emoji) {
  const mine = (m.reactions ?? []).some((r) => r.emoji === emoji && r.me);
  return api(mine ? 'DELETE' : 'PUT', `/api/messages/${m.id}/reactions/${encodeURIComponent(emoji)}`);
}

/**
 * A message arriving in a shared frame says nothing of `me` on its reactions: keep what the
 * client knew (from an earlier answer, or from reaction events naming the user).
 */
export function keepMine(incoming, had) {
  if (!incoming?.reactions || !had?.reactions) return incoming;
  const known = new Map(had.reactions.map((r) => [r.emoji, r.me]));
  incoming.reactions = incoming.reactions.map((r) =>
    r.me === undefined ? { ...r, me: known.get(r.emoji) ?? false } : r);
  return incoming;
}

/** Applies a `reaction.added` / `reaction.removed` frame to the message it names. */
export function applyReaction(m, type, { emoji, count, user_id }, meId) {
  const list = (m.reactions ?? []).map((r) => ({ ...r }));
  let r = list.find((x) => x.emoji === emoji);
  if (!r && count > 0) {
    r = { emoji, count, me: false };
    list.push(r);
  }
  if (r) {
    r.count = count;
    if (user_id === meId) r.me = type === 'reaction.added';
  }
  return { ...m, reactions: list.filter((x) => x.count > 0) };
}

/** The row of reaction buttons under a message, with a picker of quick emoji. */
export function reactionRow(m, canReact, onToggle) {
  const row = h('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' });
  for (const r of m.reactions ?? []) {
    row.append(h('button', {
      type: 'button',
      class: `reaction${r.me ? ' me' : ''}`,
      'aria-pressed': String(!!r.me),
      'aria-label': `${r.emoji} ${r.count}${r.me ? ', including you' : ''}`,
      disabled: !canReact,
      onclick: () => onToggle(r.emoji),
    }, `${r.emoji} ${r.count}`));
  }
  if (canReact) {
    const picker = h('div', { class: 'emoji-picker', hidden: true });
    for (const e of QUICK_EMOJI) {
      picker.append(h('button', {
        type: 'button', 'aria-label': `React with ${e}`,
        onclick: () => { picker.hidden = true; onToggle(e); },
      }, e));
    }
    row.append(h('button', {
      type: 'button', class: 'add-reaction', 'aria-label': 'Add reaction', 'aria-expanded': 'false',
      onclick: (ev) => {
        picker.hidden = !picker.hidden;
        ev.currentTarget.setAttribute('aria-expanded', String(!picker.hidden));
      },
    }, '☺+'), picker);
  }
  return row;
}

/** Pins or unpins `m`; resolves to the message. */
export function togglePin(m) {
  return api(m.pinned ? 'DELETE' : 'PUT', `/api/messages/${m.id}/pin`);
}

/** Fills `list` with the pinned messages of a conversation (newest pin first). */
export async function showPins(conversationId, list, name, jump) {
  const { messages } = await api('GET', `/api/conversations/${conversationId}/pins`);
  list.replaceChildren(...messages.map((m) => h('li', {},
    h('span', { class: 'author' }, name(m.sender_id)), ' ',
    h('span', {}, m.deleted ? 'deleted message' : (m.content ?? m.attachment?.filename ?? '')), ' ',
    h('button', { type: 'button', onclick: () => jump(m) }, 'Show'))));
  if (!messages.length) list.append(h('li', { class: 'empty' }, 'Nothing pinned yet.'));
}

/** Fills `list` with what an edited message said before, oldest first. */
export async function showVersions(m, list) {
  const { versions } = await api('GET', `/api/messages/${m.id}/versions`);
  list.replaceChildren(...versions.map((v) => h('li', {},
    h('time', { datetime: v.written_at }, shortTime(v.written_at)), ' ', v.content)));
  list.append(h('li', { class: 'current' }, h('strong', {}, 'Now: '), m.content ?? ''));
}

/** Marks the conversation unread from `m` on; resolves to the read marker. */
export function markUnread(m) {
  return api('POST', `/api/conversations/${m.conversation_id}/unread`, { seq: m.seq });
}

/** Blocks or unblocks `userId`; resolves to the caller's blocks. */
export function setBlocked(userId, blocked) {
  return api(blocked ? 'PUT' : 'DELETE', `/api/blocks/${userId}`);
}

/** Words for a tick's state. */
export const TICK_TEXT = { sent: 'Sent', delivered: 'Delivered', read: 'Read' };

/**
 * How far the own message at `seq` got with `others` (participants with their markers):
 * read by every one of them, else delivered to every one, else sent. A read marker implies
 * delivery.
 */
export function tickState(seq, others) {
  if (!others.length) return 'sent';
  if (others.every((p) => p.last_read_seq >= seq)) return 'read';
  if (others.every((p) => Math.max(p.last_delivered_seq ?? 0, p.last_read_seq) >= seq)) return 'delivered';
  return 'sent';
}

/** Fills `list` with each member's receipt for `m`: state and times. */
export async function showReceipts(m, list, name) {
  const { members } = await api('GET', `/api/messages/${m.id}/receipts`);
  list.replaceChildren(...members.map((r) => h('li', {},
    h('strong', {}, name(r.user_id)), ' ', TICK_TEXT[r.state],
    r.read_at ? ` · read ${shortTime(r.read_at)}` : '',
    r.delivered_at ? ` · delivered ${shortTime(r.delivered_at)}` : '')));
}

/** Forwards `m` into conversation `to`; resolves to the copy. */
export function forward(m, to, clientId) {
  return api('POST', `/api/messages/${m.id}/forward`, { conversation_id: to, client_id: clientId });
}
