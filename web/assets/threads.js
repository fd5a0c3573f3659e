// A thread under a message (issue 20), in a dialog: the root, its replies oldest first, and
// a box to reply in it. Replies never enter the main timeline; the dialog keeps the open
// thread's replies by seq and marks the thread read while it is open.
import { api } from './api.js';
import { $, h, shortTime } from './dom.js';

export class ThreadPanel {
  /**
   * @param {(id: string) => string} name display name of a user id
   * @param {() => string} clientId a fresh idempotency key
   */
  constructor(name, clientId) {
    this.name = name;
    this.clientId = clientId;
    this.root = null;
    this.replies = new Map();
    $('thread-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.send();
    });
    $('thread-dialog').addEventListener('close', () => { this.root = null; });
  }

  /** Opens the thread under `root` (a top-level message). */
  async open(root) {
    this.root = root;
    this.replies = new Map();
    const page = await api('GET', `/api/messages/${root.id}/thread?limit=100`);
    this.root = page.root;
    for (const m of page.replies) this.replies.set(m.seq, m);
    this.render();
    $('thread-dialog').showModal();
    $('thread-input').focus();
    this.markRead();
  }

  /** A thread reply from the socket or an answer: shown if its thread is open. */
  add(m) {
    if (!this.root || m.thread_root_id !== this.root.id) return;
    this.replies.set(m.seq, m);
    this.render();
    this.markRead();
  }

  markRead() {
    const newest = Math.max(0, ...this.replies.keys());
    if (!this.root || !newest) return;
    api('POST', `/api/messages/${this.root.id}/thread/read`, { seq: newest }).catch(() => {});
  }

  async send() {
    const input = $('thread-input');
    const content = input.value.trim();
    if (!content || !this.root) return;
    const error = $('thread-dialog').querySelector('.form-error');
    error.textContent = '';
    try {
      const m = await api('POST', `/api/conversations/${this.root.conversation_id}/messages`,
        { content, thread_root_id: this.root.id, client_id: this.clientId() });
      input.value = '';
      this.add(m);
    } catch (e) {
      error.textContent = e.message;
    }
  }

  render() {
    const item = (m) => h('li', { dataset: { seq: m.seq } },
      h('span', { class: 'author' }, this.name(m.sender_id)), ' ',
      h('time', { datetime: m.created_at }, shortTime(m.created_at)), ' ',
      h('span', { class: 'text' }, m.deleted ? 'This message was deleted' : m.content ?? ''));
    $('thread-root').replaceChildren(item(this.root));
    const seqs = [...this.replies.keys()].sort((a, b) => a - b);
    $('thread-replies').replaceChildren(...seqs.map((s) => item(this.replies.get(s))));
  }
}

/** The "N replies" button under a thread's root. */
export function threadButton(m, open) {
  const n = m.thread?.reply_count ?? 0;
  return h('button', {
    type: 'button', class: 'thread-link',
    'aria-label': n ? `${n} ${n === 1 ? 'reply' : 'replies'} in thread` : 'Reply in thread',
    onclick: () => open(m),
  }, n ? `${n} ${n === 1 ? 'reply' : 'replies'}` : 'Reply in thread');
}
