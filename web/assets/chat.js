// The messenger: conversation list, thread, composer, groups, and everything the socket
// says. State lives in plain Maps; the DOM is updated per item (keyed by conversation id and
// message seq), never rebuilt from HTML strings.
import { api, blob, upload } from './api.js';
import { $, h, shortTime, bytes, debounce } from './dom.js';
import { Live } from './live.js';
import * as act from './interactions.js';
import { ThreadPanel, threadButton } from './threads.js';
import * as session from './session.js';

const PAGE = 50;
const TYPING_EVERY = 2_000;
const SEND_ATTEMPTS = 6;
const STATE_TEXT = {
  idle: 'Connecting…',
  connecting: 'Connecting…',
  live: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline — waiting for the network',
  closed: 'Disconnected',
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A client_id for idempotent retries (crypto.randomUUID needs a secure context). */
function clientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export class Messenger {
  constructor(me) {
    this.me = me;
    /** id → list entry (`GET /api/conversations` shape). */
    this.convs = new Map();
    /** id → details with participants (`GET /api/conversations/{id}`). */
    this.details = new Map();
    /** id → {messages: Map<seq, message>, oldest, hasMore, loading}. */
    this.threads = new Map();
    /** client_id → a message being sent. */
    this.pending = new Map();
    /** user id → {username, display_name}. */
    this.people = new Map([[me.id, me]]);
    /** Unread entries of the notification feed (the Activity badge). */
    this.activityUnread = 0;
    this.asked = new Set();
    /** user id → {online, last_seen_at}. */
    this.presence = new Map();
    /** Users the signed-in user blocks. */
    this.blocks = new Set();
    /** conversation id → highest seq to acknowledge as delivered. */
    this.toAck = new Map();
    /** conversation id → Map<user id, timer> of who is typing. */
    this.typing = new Map();
    this.active = null;
    this.replyTo = null;
    this.lastTyping = 0;
    this.disposers = [];
    this.live = new Live(() => this.cursors());
    this.live.addEventListener('state', (e) => this.showConnection(e.detail));
    this.live.addEventListener('frame', (e) => this.onFrame(e.detail));
    this.live.addEventListener('revoked', () => session.forget());
  }

  // ---- lifecycle -------------------------------------------------------------------------

  async start() {
    $('me-name').textContent = this.me.display_name || this.me.username;
    this.bindUi();
    this.threadPanel = new ThreadPanel((u) => this.name(u), clientId);
    this.showConnection('connecting');
    await this.loadList();
    this.live.start();
    this.loadActivityCount().catch(() => {});
    this.loadBlocks().catch(() => {});
  }

  stop() {
    if ($('activity-dialog').open) $('activity-dialog').close();
    this.live.stop();
    for (const off of this.disposers) off();
    for (const t of this.typing.values()) for (const timer of t.values()) clearTimeout(timer);
    $('conversation-list').replaceChildren();
    $('messages').replaceChildren();
    $('thread').hidden = true;
    $('placeholder').hidden = false;
  }

  on(el, type, fn) {
    el.addEventListener(type, fn);
    this.disposers.push(() => el.removeEventListener(type, fn));
  }

  bindUi() {
    const input = $('composer-input');
    this.on($('composer'), 'submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.on(input, 'keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.submit();
      } else if (e.key === 'Escape') {
        this.setReply(null);
      }
    });
    this.on(input, 'input', () => {
      input.style.height = 'auto';
      input.style.height = `${input.scrollHeight}px`;
      this.typed(input.value.trim() !== '');
    });
    this.on(input, 'blur', () => this.typed(false));
    this.on($('file-input'), 'change', (e) => {
      const file = e.target.files?.[0];
      e.target.value = '';
      if (file) this.sendFile(file);
    });
    this.on($('reply-cancel'), 'click', () => this.setReply(null));
    this.on($('back'), 'click', () => this.close());
    this.on($('members-button'), 'click', () => this.openMembers());
    this.on($('mute-button'), 'click', () => this.toggleMute());
    this.on($('pins-button'), 'click', () => this.openPins());
    this.on($('block-button'), 'click', () => this.toggleBlock());
    this.on($('hide-button'), 'click', () => this.hide());
    this.on($('activity-open'), 'click', () => this.openActivity());
    this.on($('activity-read-all'), 'click', () => this.markActivityRead(null));
    this.on($('new-group'), 'click', () => this.openGroupDialog());
    this.on($('people-search'), 'input', debounce(() => this.searchPeople(), 250));
    this.on($('people-search'), 'keydown', (e) => {
      if (e.key === 'Escape') this.clearPeopleSearch();
    });
    this.on($('messages-scroll'), 'scroll', () => this.maybeMarkRead());
    this.on(document, 'visibilitychange', () => this.maybeMarkRead());
    this.on(window, 'focus', () => this.maybeMarkRead());
    for (const dialog of document.querySelectorAll('dialog')) {
      for (const b of dialog.querySelectorAll('[data-close]')) this.on(b, 'click', () => dialog.close());
    }
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: $('messages-scroll') });
    this.observer.observe($('history-sentinel'));
    this.disposers.push(() => this.observer.disconnect());
  }

  showConnection(state) {
    document.body.dataset.connection = state;
    $('connection-text').textContent = STATE_TEXT[state] ?? state;
    if (state === 'live') this.loadList().catch(() => {});
  }

  /** Resume cursors: the newest seq held per conversation (loaded thread, else list entry). */
  cursors() {
    const out = {};
    for (const c of this.convs.values()) {
      if (c.left) continue;
      const t = this.threads.get(c.id);
      out[c.id] = t && t.messages.size ? Math.max(...t.messages.keys()) : c.last_seq;
    }
    return out;
  }

  // ---- people ----------------------------------------------------------------------------

  name(id) {
    if (!id) return 'Switchboard';
    if (id === this.me.id) return 'You';
    const p = this.people.get(id);
    if (p) return p.display_name || p.username;
    if (!this.asked.has(id)) {
      this.asked.add(id);
      api('GET', `/auth/users/${id}`)
        .then((u) => {
          this.people.set(id, u);
          this.renderList();
          this.renderThread(true);
        })
        .catch(() => {});
    }
    return '…';
  }

  learn(participants) {
    for (const p of participants ?? []) {
      this.people.set(p.user_id, { id: p.user_id, username: p.username, display_name: p.display_name });
      if (p.online !== undefined) this.presence.set(p.user_id, { online: p.online, last_seen_at: p.last_seen_at });
    }
  }

  online(id) {
    return this.presence.get(id)?.online === true;
  }

  async findPeople(query) {
    const q = query.trim();
    if (!q) return [];
    const { users } = await api('GET', `/auth/users?query=${encodeURIComponent(q)}&limit=10`);
    for (const u of users) this.people.set(u.id, u);
    return users.filter((u) => u.id !== this.me.id && u.active !== false);
  }

  /** Renders search results as buttons into `list`; `pick(user)` on click. */
  showPeople(list, users, pick) {
    list.replaceChildren(
      ...(users.length
        ? users.map((u) =>
            h('li', {}, h('button', { type: 'button', onclick: () => pick(u) },
              `${u.display_name} `, h('span', { class: 'hint' }, `@${u.username}`))))
        : [h('li', { class: 'empty' }, 'Nobody found')]),
    );
  }

  async searchPeople() {
    const input = $('people-search');
    const list = $('people-results');
    if (!input.value.trim()) {
      list.hidden = true;
      return;
    }
    try {
      const users = await this.findPeople(input.value);
      list.hidden = false;
      this.showPeople(list, users, (u) => this.startDirect(u));
    } catch {
      /* a failed search shows nothing new */
    }
  }

  clearPeopleSearch() {
    $('people-search').value = '';
    $('people-results').hidden = true;
  }

  async startDirect(user) {
    const conv = await api('POST', '/api/conversations', { participant_ids: [user.id] });
    this.clearPeopleSearch();
    this.adoptDetails(conv);
    await this.loadList();
    await this.open(conv.id);
  }

  // ---- conversation list -----------------------------------------------------------------

  async loadList() {
    const { conversations } = await api('GET', '/api/conversations?limit=100');
    for (const c of conversations) {
      const known = this.convs.get(c.id);
      // Frames may have moved past what this (replica) read shows: keep the newer.
      if (known && known.last_seq > c.last_seq) continue;
      if (c.peer) this.people.set(c.peer.user_id, { id: c.peer.user_id, ...c.peer });
      this.convs.set(c.id, c);
    }
    this.renderList();
  }

  title(c) {
    if (c.is_group) return c.name || this.details.get(c.id)?.name || 'Group';
    const peer = this.peerOf(c);
    return peer ? this.name(peer) : 'Direct conversation';
  }

  peerOf(c) {
    if (c.is_group) return null;
    return c.peer?.user_id ?? this.details.get(c.id)?.participants?.find((p) => p.user_id !== this.me.id)?.user_id;
  }

  excerpt(m) {
    if (!m) return 'No messages yet';
    if (m.deleted) return 'Message deleted';
    if (m.kind === 'system') return m.content;
    const who = m.sender_id === this.me.id ? 'You: ' : '';
    if (m.kind === 'file') return `${who}File: ${m.attachment?.filename ?? 'deleted'}`;
    return `${who}${m.content}`;
  }

  renderList() {
    const list = $('conversation-list');
    const sorted = [...this.convs.values()].sort((a, b) =>
      a.last_activity_at < b.last_activity_at ? 1 : a.last_activity_at > b.last_activity_at ? -1 : 0);
    $('conversation-empty').hidden = sorted.length > 0;
    list.replaceChildren(
      ...sorted.map((c) => {
        const peer = this.peerOf(c);
        const unread = c.left ? 0 : c.unread_count;
        const mentioned = c.left ? 0 : Math.min(c.mention_count ?? 0, unread);
        const title = this.title(c);
        const threadUnread = c.left ? 0 : (c.thread_unread_count ?? 0);
        return h('li', { dataset: { id: c.id } },
          h('button', {
            type: 'button',
            'aria-current': c.id === this.active ? 'true' : 'false',
            'aria-label': `${title}${unread ? `, ${unread} unread` : ''}${mentioned ? `, ${mentioned} mentioning you` : ''}${threadUnread ? `, ${threadUnread} unread in threads` : ''}${peer && this.online(peer) ? ', online' : ''}`,
            onclick: () => this.open(c.id),
          },
          h('span', { class: `presence ${peer ? (this.online(peer) ? 'online' : '') : 'none'}`, 'aria-hidden': 'true' }),
          h('span', { class: 'title' }, title),
          unread
            ? h('span', { class: `badge${mentioned ? ' mention' : ''}`, 'aria-hidden': 'true' }, mentioned ? `@${unread}` : String(unread))
            : h('span'),
          h('span', { class: 'last' }, threadUnread ? `🧵${threadUnread} · ` : '', this.excerpt(c.last_message))));
      }),
    );
  }

  // ---- thread ----------------------------------------------------------------------------

  thread(id) {
    let t = this.threads.get(id);
    if (!t) {
      t = { messages: new Map(), oldest: null, hasMore: true, loading: false, loaded: false };
      this.threads.set(id, t);
    }
    return t;
  }

  adoptDetails(d) {
    this.details.set(d.id, d);
    this.learn(d.participants);
  }

  async open(id) {
    this.active = id;
    this.editing = null;
    this.setReply(null);
    document.querySelector('.app').classList.add('in-thread');
    $('placeholder').hidden = true;
    $('thread').hidden = false;
    $('messages').replaceChildren();
    this.renderList();
    this.renderHeader();
    const t = this.thread(id);
    const conv = this.convs.get(id);
    try {
      const [details] = await Promise.all([
        conv?.left ? Promise.resolve(null) : api('GET', `/api/conversations/${id}`),
        t.loaded ? null : this.loadPage(id),
      ]);
      if (details) this.adoptDetails(details);
    } catch {
      /* shown as an empty thread; the socket or a retry fills it */
    }
    if (this.active !== id) return;
    this.renderHeader();
    this.renderThread(true);
    this.renderTyping();
    this.scrollToBottom();
    this.maybeMarkRead();
    $('composer-input').focus();
  }

  close() {
    this.active = null;
    document.querySelector('.app').classList.remove('in-thread');
    $('thread').hidden = true;
    $('placeholder').hidden = false;
    this.renderList();
    document.querySelector(`#conversation-list button`)?.focus();
  }

  /** Loads the newest page, or with `before` the page below it. */
  async loadPage(id, before) {
    const t = this.thread(id);
    const q = before ? `?before=${before}&limit=${PAGE}` : `?limit=${PAGE}`;
    const { messages, has_more } = await api('GET', `/api/conversations/${id}/messages${q}`);
    for (const m of messages) t.messages.set(m.seq, m);
    const seqs = messages.map((m) => m.seq);
    if (seqs.length) t.oldest = Math.min(t.oldest ?? Infinity, ...seqs);
    t.hasMore = has_more;
    t.loaded = true;
    return messages;
  }

  /** Infinite scroll: the sentinel at the top came into view. */
  async loadOlder() {
    const id = this.active;
    if (!id) return;
    const t = this.thread(id);
    if (!t.loaded || !t.hasMore || t.loading || t.oldest === null || t.oldest <= 1) {
      $('history-start').hidden = !(t.loaded && (!t.hasMore || t.oldest <= 1));
      return;
    }
    t.loading = true;
    const scroller = $('messages-scroll');
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    try {
      await this.loadPage(id, t.oldest);
    } catch {
      /* try again on the next scroll */
    } finally {
      t.loading = false;
    }
    if (this.active !== id) return;
    this.renderThread();
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
    // Still at the top (short pages): keep going.
    requestAnimationFrame(() => {
      const r = $('history-sentinel').getBoundingClientRect();
      const box = scroller.getBoundingClientRect();
      if (r.bottom >= box.top && t.hasMore) this.loadOlder();
    });
  }

  renderHeader() {
    const c = this.convs.get(this.active);
    const d = this.details.get(this.active);
    if (!c && !d) return;
    const conv = c ?? { ...d, left: false };
    $('thread-title').textContent = this.title(conv);
    const peer = this.peerOf(conv);
    const dot = $('thread-presence');
    dot.className = `presence ${peer ? (this.online(peer) ? 'online' : '') : 'none'}`;
    let sub = '';
    if (peer) {
      const p = this.presence.get(peer);
      sub = p?.online ? 'online' : p?.last_seen_at ? `last seen ${shortTime(p.last_seen_at)}` : '';
    } else if (d) {
      sub = `${d.participants.length} members`;
    }
    $('thread-sub').textContent = sub;
    $('members-button').hidden = !conv.is_group || conv.left;
    const muted = !!c?.muted_until && new Date(c.muted_until) > new Date();
    $('mute-button').hidden = !c || conv.left;
    $('mute-button').textContent = muted ? 'Unmute' : 'Mute';
    $('mute-button').setAttribute('aria-pressed', String(muted));
    $('mute-button').title = muted ? `Muted until ${shortTime(c.muted_until)}` : 'Mute for 8 hours';
    $('left-note').hidden = !conv.left;
    const blocked = !!(d?.blocked ?? c?.blocked);
    $('blocked-note').hidden = conv.left || !blocked;
    $('composer').hidden = !!conv.left || blocked;
    $('pins-button').hidden = !!conv.left;
    this.showGroupAvatar(conv.is_group && !conv.left ? (d?.avatar_id ?? c?.avatar_id) : null);
    $('hide-button').hidden = !c;
    $('block-button').hidden = !peer || conv.left;
    const iBlock = !!peer && this.blocks.has(peer);
    $('block-button').textContent = iBlock ? 'Unblock' : 'Block';
    $('block-button').setAttribute('aria-pressed', String(iBlock));
  }

  /** Reloads the conversation list soon (coalesced), for counts only the server knows. */
  refreshList() {
    clearTimeout(this.listTimer);
    this.listTimer = setTimeout(() => this.loadList().catch(() => {}), 500);
  }

  /** The open group's picture in the header (fetched with the access token). */
  showGroupAvatar(avatarId) {
    const img = $('thread-avatar');
    if (!avatarId) {
      img.hidden = true;
      img.dataset.avatar = '';
      return;
    }
    if (img.dataset.avatar === avatarId) return;
    img.dataset.avatar = avatarId;
    const id = this.active;
    blob(`/api/conversations/${id}/avatar`).then((b) => {
      if (img.dataset.avatar !== avatarId) return;
      if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(b);
      img.alt = 'Group picture';
      img.hidden = false;
    }).catch(() => { img.hidden = true; });
  }

  /** Hides the open conversation from the list until its next activity. */
  async hide() {
    const id = this.active;
    if (!id) return;
    await api('POST', `/api/conversations/${id}/hide`);
    this.convs.delete(id);
    this.close();
    this.renderList();
  }

  /** Loads the users the signed-in user blocks (for the Block/Unblock button). */
  async loadBlocks() {
    const { blocks } = await api('GET', '/api/blocks');
    this.blocks = new Set(blocks.map((b) => b.user_id));
    this.renderHeader();
  }

  /** Blocks or unblocks the other person of the open direct conversation. */
  async toggleBlock() {
    const c = this.convs.get(this.active) ?? this.details.get(this.active);
    const peer = c && this.peerOf(c);
    if (!peer) return;
    const blocking = !this.blocks.has(peer);
    if (blocking && !confirm(`Block ${this.name(peer)}? Neither of you can write here until you unblock.`)) return;
    const { blocks } = await act.setBlocked(peer, blocking);
    this.blocks = new Set(blocks.map((b) => b.user_id));
    const conv = this.convs.get(this.active);
    if (conv) conv.blocked = blocking || conv.blocked;
    const d = this.details.get(this.active);
    if (d) d.blocked = blocking || d.blocked;
    this.renderHeader();
  }

  /** The pinned messages of the open conversation, in a dialog. */
  async openPins() {
    const dialog = $('pins-dialog');
    const id = this.active;
    await act.showPins(id, $('pins-list'), (u) => this.name(u), (m) => {
      dialog.close();
      document.querySelector(`#messages li[data-seq="${m.seq}"]`)?.scrollIntoView({ block: 'center' });
    });
    dialog.showModal();
  }

  /** What an edited message said before, in a dialog. */
  async openVersions(m) {
    await act.showVersions(m, $('versions-list'));
    $('versions-dialog').showModal();
  }

  /** Reacts to `m` with `emoji`, or takes the reaction back. */
  async react(m, emoji) {
    try {
      this.upsert(await act.toggleReaction(m, emoji));
    } catch {
      /* refused (read-only, left): the message stays as it was */
    }
  }

  async pin(m) {
    try {
      this.upsert(await act.togglePin(m));
    } catch {
      /* refused: stays */
    }
  }

  /** Counts the conversation unread from `m` on and goes back to the list. */
  async markUnread(m) {
    const marker = await act.markUnread(m);
    this.adoptMarker(marker);
    this.close();
  }

  /** A read marker (an answer, or `conversation.unread` from another device). */
  adoptMarker(r) {
    const c = this.convs.get(r.conversation_id);
    if (!c) return;
    c.last_read_seq = Math.max(c.last_read_seq, r.last_read_seq);
    c.unread_from_seq = r.unread_from_seq;
    c.unread_count = r.unread_count;
    this.renderList();
  }

  /**
   * Puts every loaded message of the active thread in the DOM, in seq order, then pending
   * ones. Items are keyed (seq, client_id) and only changed ones are rebuilt, so the message
   * log (role=log) announces what is new, not the whole thread. `all` rebuilds every item
   * (names learned, another thread). Waits while a message is being edited in place.
   */
  renderThread(all = false) {
    const id = this.active;
    if (!id) return;
    // Ending the edit renders everything again (renderThread(true)).
    if (this.editing) return;
    if (all || this.renderedFor !== id) {
      this.rendered = new Map();
      this.renderedFor = id;
    }
    const t = this.thread(id);
    const list = $('messages');
    const nearBottom = this.nearBottom();
    const seqs = [...t.messages.keys()].sort((a, b) => a - b);
    const items = [];
    const keep = new Map();
    const item = (key, stamp, make) => {
      let li = this.rendered.get(key);
      if (!li || li.stamp !== stamp) {
        li = make();
        li.stamp = stamp;
      }
      keep.set(key, li);
      items.push(li);
    };
    for (const seq of seqs) {
      const m = t.messages.get(seq);
      item(seq, m, () => this.messageItem(m));
    }
    for (const p of this.pending.values()) {
      if (p.conv === id) item(p.client_id, p.state, () => this.pendingItem(p));
    }
    this.rendered = keep;
    items.forEach((li, i) => {
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
    });
    while (list.children.length > items.length) list.lastElementChild.remove();
    this.renderReceipt();
    $('history-start').hidden = !(t.loaded && (!t.hasMore || t.oldest <= 1));
    if (nearBottom) this.scrollToBottom();
  }

  nearBottom() {
    const s = $('messages-scroll');
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToBottom() {
    const s = $('messages-scroll');
    s.scrollTop = s.scrollHeight;
  }

  /** Whether `m` names the signed-in user (`@username`, or `@all` in a group). */
  mentionsMe(m) {
    return m.sender_id !== this.me.id && (m.mentions_all || (m.mentions ?? []).includes(this.me.id));
  }

  messageItem(m) {
    const mine = m.sender_id === this.me.id;
    const cls = ['message', mine ? 'mine' : '', m.kind === 'system' ? 'system' : '', m.deleted ? 'deleted' : '',
      this.mentionsMe(m) ? 'mentioned' : '']
      .filter(Boolean).join(' ');
    if (m.kind === 'system') {
      return h('li', { class: cls, dataset: { seq: m.seq, id: m.id } }, h('span', {}, m.content));
    }
    const conv = this.convs.get(m.conversation_id);
    const d = this.details.get(m.conversation_id);
    const admin = d?.participants?.some((p) => p.user_id === this.me.id && p.role === 'admin');
    const body = h('div', { class: 'bubble' });
    if (m.quote) {
      body.append(h('div', { class: 'quote' },
        h('span', { class: 'author' }, this.name(m.quote.sender_id)), ' ',
        m.quote.deleted ? 'deleted message' : m.quote.excerpt));
    }
    if (m.forwarded_from && !m.deleted) {
      body.append(h('div', { class: 'forwarded' }, `Forwarded from ${this.name(m.forwarded_from.sender_id)}`));
    }
    if (m.deleted) body.append('This message was deleted');
    else if (m.kind === 'file') body.append(this.fileView(m));
    else body.append(m.content);
    const actions = [];
    const writable = !m.deleted && !conv?.left && !(conv?.blocked ?? d?.blocked);
    if (writable) {
      actions.push(h('button', { type: 'button', onclick: () => this.setReply(m), 'aria-label': 'Reply' }, 'Reply'));
      if (m.kind !== 'system') {
        actions.push(h('button', { type: 'button', onclick: () => this.openForward(m), 'aria-label': 'Forward' }, 'Forward'));
      }
      if (!conv?.is_group || admin) {
        actions.push(h('button', { type: 'button', onclick: () => this.pin(m), 'aria-label': m.pinned ? 'Unpin' : 'Pin' },
          m.pinned ? 'Unpin' : 'Pin'));
      }
      if (mine && m.kind === 'text') {
        actions.push(h('button', { type: 'button', onclick: (e) => this.startEdit(m, e.target.closest('li')), 'aria-label': 'Edit' }, 'Edit'));
      }
    }
    if (!m.deleted && !conv?.left && (mine || admin)) {
      actions.push(h('button', { type: 'button', onclick: () => this.remove(m), 'aria-label': 'Delete' }, 'Delete'));
    }
    if (!m.deleted && !conv?.left && !mine) {
      actions.push(h('button', { type: 'button', onclick: () => this.markUnread(m), 'aria-label': 'Mark unread from here' }, 'Mark unread'));
    }
    return h('li', { class: cls, dataset: { seq: m.seq, id: m.id } },
      conv?.is_group && !mine ? h('span', { class: 'author' }, this.name(m.sender_id)) : null,
      m.pinned ? h('span', { class: 'pinned-mark', 'aria-label': 'Pinned' }, '📌') : null,
      m.priority && m.priority !== 'normal' && !m.deleted
        ? h('span', { class: `priority ${m.priority}` }, m.priority === 'urgent' ? 'Urgent' : 'Important')
        : null,
      body,
      m.deleted ? null : act.reactionRow(m, writable, (e) => this.react(m, e)),
      m.thread || (writable && !m.thread_root_id) ? threadButton(m, (root) => this.threadPanel.open(root)) : null,
      h('div', { class: 'meta' },
        h('time', { datetime: m.created_at }, shortTime(m.created_at)),
        m.edited_at && !m.deleted
          ? h('button', { type: 'button', class: 'link', onclick: () => this.openVersions(m), 'aria-label': 'Edited: show earlier versions' }, 'edited')
          : null,
        ...actions));
  }

  pendingItem(p) {
    const failed = p.state === 'failed';
    return h('li', { class: `message mine ${failed ? 'failed' : 'pending'}`, dataset: { pending: p.client_id } },
      h('div', { class: 'bubble' }, p.content),
      h('div', { class: 'meta' },
        failed ? h('span', { role: 'alert' }, p.error ?? 'Not sent') : h('span', {}, 'Sending…'),
        failed ? h('button', { type: 'button', onclick: () => this.retry(p) }, 'Retry') : null));
  }

  fileView(m) {
    const a = m.attachment;
    const wrap = h('div', { class: 'file' });
    if (!a) return wrap;
    wrap.append(h('button', { type: 'button', onclick: () => this.download(a), 'aria-label': `Download ${a.filename}` },
      h('span', { class: 'clip', 'aria-hidden': 'true' }), a.filename), ` (${bytes(a.size)})`);
    if (m.content) wrap.append(h('div', {}, m.content));
    if (a.content_type.startsWith('image/') && a.size <= 2 * 1024 * 1024) {
      const img = h('img', { alt: a.filename });
      wrap.append(img);
      blob(`/api/attachments/${a.id}`).then((b) => { img.src = URL.createObjectURL(b); }).catch(() => img.remove());
    }
    return wrap;
  }

  async download(a) {
    const b = await blob(`/api/attachments/${a.id}`);
    const url = URL.createObjectURL(b);
    const link = h('a', { href: url, download: a.filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  /** "Seen" under the caller's last message, from the others' read markers. */
  renderReceipt() {
    for (const el of document.querySelectorAll('#messages .receipt, #messages .tick')) el.remove();
    const id = this.active;
    const d = this.details.get(id);
    const t = this.threads.get(id);
    if (!d || !t) return;
    const own = [...t.messages.values()].filter((m) => m.sender_id === this.me.id && m.kind !== 'system');
    if (!own.length) return;
    const last = own.reduce((a, b) => (a.seq > b.seq ? a : b));
    const others = d.participants.filter((p) => p.user_id !== this.me.id);
    const seen = others.filter((p) => p.last_read_seq >= last.seq);
    let text = 'Sent';
    if (seen.length && !d.is_group) text = 'Seen';
    else if (seen.length) text = seen.length === others.length ? 'Seen by everyone' : `Seen by ${seen.map((p) => this.name(p.user_id)).join(', ')}`;
    const li = document.querySelector(`#messages li[data-seq="${last.seq}"]`);
    li?.append(h('span', { class: 'receipt', 'aria-label': `Read receipt: ${text}` }, text));
    // Each own message: sent ✓, delivered ✓✓ (to everyone), read ✓✓ (by everyone).
    for (const m of own) {
      const state = act.tickState(m.seq, others);
      const meta = document.querySelector(`#messages li[data-seq="${m.seq}"] .meta`);
      meta?.append(h('button', {
        type: 'button', class: `tick ${state}`, 'aria-label': `${act.TICK_TEXT[state]}: show receipts`,
        onclick: () => this.openReceipts(m),
      }, state === 'sent' ? '✓' : '✓✓'));
    }
  }

  /** Who got and read `m`, and when, in a dialog. */
  async openReceipts(m) {
    await act.showReceipts(m, $('receipts-list'), (u) => this.name(u));
    $('receipts-dialog').showModal();
  }

  /** Forwards `m` to a conversation picked in a dialog. */
  openForward(m) {
    const list = $('forward-list');
    const targets = [...this.convs.values()].filter((c) => !c.left && !c.blocked);
    list.replaceChildren(...targets.map((c) => h('li', {},
      h('button', {
        type: 'button',
        onclick: async () => {
          try {
            const copy = await act.forward(m, c.id, clientId());
            $('forward-dialog').close();
            this.upsert(copy);
          } catch (e) {
            $('forward-dialog').querySelector('.form-error').textContent = e.message;
          }
        },
      }, this.title(c)))));
    $('forward-dialog').querySelector('.form-error').textContent = '';
    $('forward-dialog').showModal();
  }

  /** Acknowledges delivery of what arrived (coalesced: one frame per conversation). */
  acknowledge(m) {
    if (m.sender_id === this.me.id) return;
    const due = this.toAck.get(m.conversation_id) ?? 0;
    this.toAck.set(m.conversation_id, Math.max(due, m.seq));
    clearTimeout(this.ackTimer);
    this.ackTimer = setTimeout(() => {
      for (const [conversation_id, seq] of this.toAck) this.live.send({ type: 'delivered', conversation_id, seq });
      this.toAck.clear();
    }, 300);
  }

  /** Marks the active thread read up to its newest message when the reader can see it. */
  maybeMarkRead() {
    const id = this.active;
    const c = this.convs.get(id);
    const t = this.threads.get(id);
    if (!c || !t || c.left || document.visibilityState !== 'visible' || !this.nearBottom()) return;
    const newest = t.messages.size ? Math.max(...t.messages.keys()) : 0;
    // Marked unread (here or on another device): reading it again clears that too.
    if (newest <= c.last_read_seq && !c.unread_from_seq) return;
    c.last_read_seq = Math.max(c.last_read_seq, newest);
    c.unread_from_seq = null;
    c.unread_count = Math.max(0, c.last_seq - c.last_read_seq);
    if (!c.unread_count) c.mention_count = 0;
    this.renderList();
    api('POST', `/api/conversations/${id}/read`, { seq: newest })
      .then((r) => {
        const cur = this.convs.get(id);
        if (cur && r.last_read_seq >= cur.last_read_seq) this.adoptMarker(r);
      })
      .catch(() => {});
  }

  // ---- notifications ---------------------------------------------------------------------

  /** Mutes the open conversation for 8 hours, or unmutes it (its level stays). */
  async toggleMute() {
    const c = this.convs.get(this.active);
    if (!c) return;
    const muted = !!c.muted_until && new Date(c.muted_until) > new Date();
    const until = muted ? null : new Date(Date.now() + 8 * 3600_000).toISOString();
    $('mute-button').disabled = true;
    try {
      const saved = await api('PUT', `/api/conversations/${c.id}/notifications`, {
        level: c.notify_level ?? null,
        muted_until: until,
      });
      c.muted_until = saved.muted_until;
    } catch {
      /* unchanged; the button shows the state as it is */
    } finally {
      $('mute-button').disabled = false;
      this.renderHeader();
    }
  }

  async loadActivityCount() {
    const { unread } = await api('GET', '/api/notifications?limit=1');
    this.activityUnread = unread;
    this.renderActivityCount();
  }

  renderActivityCount() {
    const n = this.activityUnread ?? 0;
    $('activity-count').hidden = n === 0;
    $('activity-count').textContent = n ? String(n) : '';
    $('activity-open').setAttribute('aria-label', n ? `Activity, ${n} unread` : 'Activity');
  }

  /** The feed: each entry opens its conversation and is marked read. */
  async openActivity() {
    const dialog = $('activity-dialog');
    const { notifications, unread } = await api('GET', '/api/notifications?limit=30');
    this.activityUnread = unread;
    this.renderActivityCount();
    $('activity-list').replaceChildren(...notifications.map((n) => {
      const conv = this.convs.get(n.conversation_id);
      const where = conv ? this.title(conv) : 'a conversation';
      return h('li', { class: n.read_at ? '' : 'unread', dataset: { id: n.id } },
        h('button', {
          type: 'button',
          class: 'what',
          onclick: async () => {
            dialog.close();
            await this.open(n.conversation_id);
            if (!n.read_at) await this.markActivityRead([n.id]);
          },
        }, `${this.name(n.actor_id)} mentioned you in ${where}`, n.excerpt ? `: ${n.excerpt}` : ''),
        h('span', { class: 'when' }, shortTime(n.created_at)));
    }));
    if (!notifications.length) $('activity-list').append(h('li', {}, 'Nothing yet.'));
    if (!dialog.open) dialog.showModal();
  }

  /** Marks `ids` (or, with null, every entry) read. */
  async markActivityRead(ids) {
    const { unread } = await api('POST', '/api/notifications/read', ids ? { ids } : { all: true })
      .catch(() => ({ unread: this.activityUnread }));
    this.activityUnread = unread;
    this.renderActivityCount();
    if ($('activity-dialog').open) {
      for (const li of $('activity-list').querySelectorAll('li.unread')) {
        if (!ids || ids.includes(li.dataset.id)) li.classList.remove('unread');
      }
    }
  }

  // ---- composing -------------------------------------------------------------------------

  setReply(m) {
    this.replyTo = m;
    $('reply-bar').hidden = !m;
    if (m) {
      $('reply-text').textContent = `Replying to ${this.name(m.sender_id)}: ${(m.content ?? '').slice(0, 80)}`;
      $('composer-input').focus();
    }
  }

  typed(active) {
    const id = this.active;
    if (!id) return;
    const now = Date.now();
    if (active && now - this.lastTyping < TYPING_EVERY) return;
    if (!active && this.lastTyping === 0) return;
    this.lastTyping = active ? now : 0;
    this.live.send({ type: 'typing', conversation_id: id, is_typing: active });
  }

  submit() {
    const input = $('composer-input');
    const content = input.value.trim();
    if (!content || !this.active) return;
    input.value = '';
    input.style.height = 'auto';
    this.typed(false);
    const priority = $('priority').value;
    $('priority').value = 'normal';
    const p = { client_id: clientId(), conv: this.active, content, reply_to: this.replyTo?.id, priority, state: 'sending' };
    this.setReply(null);
    this.pending.set(p.client_id, p);
    this.renderThread();
    this.scrollToBottom();
    this.deliver(p);
  }

  retry(p) {
    p.state = 'sending';
    this.renderThread();
    this.deliver(p);
  }

  /** Sends with the same client_id until it lands: a retry never makes a second message. */
  async deliver(p) {
    for (let attempt = 0; ; attempt++) {
      try {
        const m = await api('POST', `/api/conversations/${p.conv}/messages`, {
          content: p.content,
          reply_to: p.reply_to,
          client_id: p.client_id,
          priority: p.priority,
        });
        this.pending.delete(p.client_id);
        this.upsert(m);
        return;
      } catch (e) {
        if (!this.pending.has(p.client_id)) return; // its frame arrived first
        if (!e.transient || attempt + 1 >= SEND_ATTEMPTS) {
          p.state = 'failed';
          p.error = e.message;
          if (this.active === p.conv) this.renderThread();
          return;
        }
        await sleep(e.retryAfter ? e.retryAfter * 1000 : Math.min(8_000, 500 * 2 ** attempt));
      }
    }
  }

  async sendFile(file) {
    const id = this.active;
    if (!id) return;
    const form = new FormData();
    form.append('file', file, file.name);
    const caption = $('composer-input').value.trim();
    if (caption) form.append('caption', caption);
    $('upload').hidden = false;
    $('upload-label').textContent = `Uploading ${file.name}`;
    const bar = $('upload-progress');
    bar.value = 0;
    try {
      const m = await upload(`/api/conversations/${id}/attachments`, form, (f) => {
        bar.value = Math.round(f * 100);
      });
      if (caption) $('composer-input').value = '';
      this.upsert(m);
    } catch (e) {
      $('upload-label').textContent = `${file.name}: ${e.message}`;
      await sleep(4_000);
    } finally {
      $('upload').hidden = true;
    }
  }

  startEdit(m, li) {
    const box = h('textarea', { 'aria-label': 'Edit message', rows: 2 });
    box.value = m.content;
    const done = () => {
      this.editing = null;
      this.renderThread(true);
    };
    const save = async () => {
      const content = box.value.trim();
      if (!content || content === m.content) return done();
      try {
        const edited = await api('PATCH', `/api/messages/${m.id}`, { content });
        this.editing = null;
        this.upsert(edited);
        this.renderThread(true);
      } catch (e) {
        form.querySelector('.field-error').textContent = e.message;
      }
    };
    const form = h('form', { class: 'edit-box', onsubmit: (e) => { e.preventDefault(); save(); } },
      box,
      h('small', { class: 'field-error', role: 'alert' }),
      h('div', { class: 'meta' },
        h('button', { type: 'submit' }, 'Save'),
        h('button', { type: 'button', onclick: done }, 'Cancel')));
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        save();
      } else if (e.key === 'Escape') {
        done();
        $('composer-input').focus();
      }
    });
    this.editing = m.id;
    li.stamp = null;
    li.replaceChildren(form);
    box.focus();
  }

  async remove(m) {
    if (!confirm('Delete this message for everyone?')) return;
    try {
      await api('DELETE', `/api/messages/${m.id}`);
      this.upsert({ ...m, deleted: true, content: null, attachment: null });
    } catch {
      /* the message stays as it was */
    }
  }

  // ---- state from the server -------------------------------------------------------------

  /** A message from an answer or a frame: into its thread and its list entry. */
  upsert(m) {
    if (m.thread_root_id) {
      // A thread reply: never in the main timeline; the open thread shows it.
      this.threadPanel?.add(m);
      return;
    }
    const id = m.conversation_id;
    const t = this.threads.get(id);
    if (t) {
      const had = t.messages.get(m.seq);
      // Frames and answers can cross: keep the newest revision.
      if (!had || (m.rev ?? 0) >= (had.rev ?? 0)) t.messages.set(m.seq, act.keepMine(m, had));
    }
    // An own message whose frame beat the answer to its send.
    if (m.sender_id === this.me.id) {
      for (const p of this.pending.values()) {
        if (p.conv === id && p.content === m.content && p.state === 'sending') {
          this.pending.delete(p.client_id);
          break;
        }
      }
    }
    const c = this.convs.get(id);
    if (c) {
      if (m.seq > c.last_seq) {
        c.last_seq = m.seq;
        c.last_activity_at = m.created_at;
        if (m.sender_id === this.me.id) c.last_read_seq = m.seq;
        else if (this.mentionsMe(m)) c.mention_count = (c.mention_count ?? 0) + 1;
      }
      if (!c.last_message || m.seq >= c.last_message.seq) c.last_message = m;
      c.unread_count = Math.max(0, c.last_seq - Math.min(c.last_read_seq, (c.unread_from_seq ?? Infinity) - 1));
      this.renderList();
    }
    if (id === this.active) {
      this.renderThread();
      this.maybeMarkRead();
    }
  }

  onFrame(f) {
    const id = f.conversation_id;
    switch (f.type) {
      case 'message.created':
      case 'message.edited':
      case 'message.deleted':
      case 'message.pinned':
      case 'message.unpinned':
        if (!this.convs.has(id)) this.loadList().catch(() => {});
        this.upsert(f.data);
        if (f.type === 'message.created') this.acknowledge(f.data);
        break;
      case 'delivered': {
        const p = this.details.get(id)?.participants?.find((x) => x.user_id === f.data.user_id);
        if (p) p.last_delivered_seq = Math.max(p.last_delivered_seq ?? 0, f.data.last_delivered_seq);
        if (id === this.active) this.renderReceipt();
        break;
      }
      case 'read': {
        const { user_id, last_read_seq } = f.data;
        if (user_id === this.me.id) {
          const c = this.convs.get(id);
          if (c && last_read_seq > c.last_read_seq) {
            c.last_read_seq = last_read_seq;
            c.unread_count = Math.max(0, c.last_seq - last_read_seq);
            if (!c.unread_count) c.mention_count = 0;
            this.renderList();
          }
        }
        const p = this.details.get(id)?.participants?.find((x) => x.user_id === user_id);
        if (p) p.last_read_seq = Math.max(p.last_read_seq, last_read_seq);
        if (id === this.active) this.renderReceipt();
        break;
      }
      case 'typing':
        this.onTyping(id, f.data);
        break;
      case 'reaction.added':
      case 'reaction.removed': {
        const t = this.threads.get(id);
        const m = t?.messages.get(f.seq);
        if (m && (f.rev ?? 0) > (m.rev ?? 0)) {
          t.messages.set(f.seq, { ...act.applyReaction(m, f.type, f.data, this.me.id), rev: f.rev });
          if (id === this.active) this.renderThread();
        }
        break;
      }
      case 'thread.updated': {
        const root = [...(this.threads.get(id)?.messages.values() ?? [])].find((m) => m.id === f.data.root_id);
        if (root) {
          const { root_id: _, ...summary } = f.data;
          this.threads.get(id).messages.set(root.seq, { ...root, thread: summary });
          if (id === this.active) this.renderThread();
        }
        // Thread counts live in the list (followed threads): fetch it again.
        this.refreshList();
        break;
      }
      case 'conversation.unread':
        this.adoptMarker(f.data);
        break;
      case 'notification':
        this.activityUnread += 1;
        this.renderActivityCount();
        if ($('activity-dialog').open) this.openActivity().catch(() => {});
        break;
      case 'presence':
        this.presence.set(f.data.user_id, { online: f.data.online, last_seen_at: f.data.last_seen_at });
        for (const d of this.details.values()) {
          const p = d.participants?.find((x) => x.user_id === f.data.user_id);
          if (p) Object.assign(p, { online: f.data.online, last_seen_at: f.data.last_seen_at });
        }
        this.renderList();
        this.renderHeader();
        break;
      case 'participant.added':
      case 'conversation.updated':
        if (f.data?.conversation) {
          this.adoptDetails(f.data.conversation);
          const c = this.convs.get(id);
          if (c) {
            Object.assign(c, {
              name: f.data.conversation.name,
              blocked: f.data.conversation.blocked,
              avatar_id: f.data.conversation.avatar_id,
            });
          }
        }
        if (!this.convs.has(id)) this.loadList().catch(() => {});
        this.renderList();
        if (id === this.active) this.renderHeader();
        break;
      case 'participant.removed': {
        const gone = f.data?.user_ids ?? [];
        const d = this.details.get(id);
        if (d) d.participants = d.participants.filter((p) => !gone.includes(p.user_id));
        if (gone.includes(this.me.id)) {
          const c = this.convs.get(id);
          if (c) c.left = true;
        }
        this.renderList();
        if (id === this.active) {
          this.renderHeader();
          this.renderThread(true);
        }
        break;
      }
      case 'resume.reload':
        // Too far behind to replay: reload the list and, if open, the thread.
        this.threads.delete(id);
        this.loadList().catch(() => {});
        if (id === this.active) this.open(id);
        break;
      default:
        break;
    }
  }

  onTyping(id, { user_id, is_typing, expires_in }) {
    if (user_id === this.me.id) return;
    let who = this.typing.get(id);
    if (!who) this.typing.set(id, (who = new Map()));
    clearTimeout(who.get(user_id));
    who.delete(user_id);
    if (is_typing) {
      who.set(user_id, setTimeout(() => {
        who.delete(user_id);
        this.renderTyping();
      }, (expires_in ?? 6) * 1000));
    }
    this.renderTyping();
  }

  renderTyping() {
    const who = [...(this.typing.get(this.active)?.keys() ?? [])].map((u) => this.name(u));
    $('typing').textContent = who.length === 0 ? ''
      : who.length === 1 ? `${who[0]} is typing…` : `${who.join(', ')} are typing…`;
  }

  // ---- groups ----------------------------------------------------------------------------

  openGroupDialog() {
    const dialog = $('group-dialog');
    const chosen = new Map();
    const form = $('group-form');
    form.reset();
    form.querySelector('.form-error').textContent = '';
    $('group-results').replaceChildren();
    const renderChosen = () => $('group-chosen').replaceChildren(
      ...[...chosen.values()].map((u) => h('li', {},
        h('button', { type: 'button', 'aria-label': `Remove ${u.display_name}`, onclick: () => { chosen.delete(u.id); renderChosen(); } },
          `${u.display_name} ✕`))));
    renderChosen();
    const search = debounce(async () => {
      const users = await this.findPeople($('group-search').value).catch(() => []);
      this.showPeople($('group-results'), users, (u) => {
        chosen.set(u.id, u);
        renderChosen();
        $('group-search').value = '';
        $('group-results').replaceChildren();
        $('group-search').focus();
      });
    }, 250);
    $('group-search').oninput = search;
    form.onsubmit = async (e) => {
      e.preventDefault();
      try {
        const conv = await api('POST', '/api/conversations', {
          name: $('group-name').value.trim(),
          participant_ids: [...chosen.keys()],
          is_group: true,
        });
        dialog.close();
        this.adoptDetails(conv);
        await this.loadList();
        await this.open(conv.id);
      } catch (err) {
        form.querySelector('.form-error').textContent = err.message;
      }
    };
    dialog.showModal();
    $('group-name').focus();
  }

  openMembers() {
    const id = this.active;
    const dialog = $('members-dialog');
    const error = dialog.querySelector('.form-error');
    error.textContent = '';
    const render = () => {
      const d = this.details.get(id);
      if (!d) return;
      const admin = d.participants.some((p) => p.user_id === this.me.id && p.role === 'admin');
      $('members-add').hidden = !admin;
      $('members-list').replaceChildren(...d.participants.map((p) => h('li', {},
        h('span', { class: `presence ${p.online ? 'online' : ''}`, 'aria-hidden': 'true' }),
        h('span', { class: 'name' }, this.name(p.user_id), p.online ? h('span', { class: 'visually-hidden' }, ' (online)') : null),
        h('span', { class: 'role' }, p.role),
        admin && p.user_id !== this.me.id
          ? h('button', { type: 'button', class: 'danger', 'aria-label': `Remove ${this.name(p.user_id)}`, onclick: () => act(() =>
              api('DELETE', `/api/conversations/${id}/participants/${p.user_id}`).then(() => {
                d.participants = d.participants.filter((x) => x.user_id !== p.user_id);
              })) }, 'Remove')
          : null)));
    };
    const act = async (fn) => {
      try {
        await fn();
        error.textContent = '';
      } catch (e) {
        error.textContent = e.message;
      }
      render();
      this.renderHeader();
    };
    $('group-avatar-input').value = '';
    $('group-avatar-input').onchange = (e) => act(async () => {
      const file = e.target.files?.[0];
      if (!file) return;
      const form = new FormData();
      form.append('file', file);
      this.adoptDetails(await upload(`/api/conversations/${id}/avatar`, form, null, 'PUT'));
    });
    $('members-search').value = '';
    $('members-results').replaceChildren();
    $('members-search').oninput = debounce(async () => {
      const users = await this.findPeople($('members-search').value).catch(() => []);
      const d = this.details.get(id);
      const fresh = users.filter((u) => !d?.participants.some((p) => p.user_id === u.id));
      this.showPeople($('members-results'), fresh, (u) => act(async () => {
        this.adoptDetails(await api('POST', `/api/conversations/${id}/participants`, { user_ids: [u.id] }));
        $('members-search').value = '';
        $('members-results').replaceChildren();
      }));
    }, 250);
    $('leave-group').onclick = () => act(async () => {
      await api('POST', `/api/conversations/${id}/leave`);
      const c = this.convs.get(id);
      if (c) c.left = true;
      dialog.close();
      this.renderList();
      this.renderHeader();
      this.renderThread(true);
    });
    render();
    dialog.showModal();
  }
}
