// The live connection: one WebSocket per tab (`GET /ws?ticket=…`, README "WebSocket").
// It reconnects by itself with backoff, and after every (re)connect sends `resume` with the
// last seq the page holds per conversation, so nothing committed while it was away is
// missed. States: connecting → live → reconnecting / offline → … ; closed once stopped.
//
// A socket lives only as long as the access token behind its ticket (`hello` tells when:
// `token_expires_at`), so each time the session gets a new token the socket re-presents it
// (`auth`, answered with `auth.ok`) and stays open. If the deadline passes without one (a
// throttled background tab, say), the server closes with 4003 and the socket comes back at
// once with a fresh token and ticket: nothing failed, so no backoff.
import { api } from './api.js';
import * as session from './session.js';

const PING_EVERY = 15_000;
/** No frame at all for this long (the server pings every 20 s, we ping every 15 s): dead. */
const SILENCE = 45_000;
/** A second 4003 this soon after a renewal is no expiry but trouble: back off instead. */
const RENEW_GAP = 10_000;

export class Live extends EventTarget {
  /**
   * `cursors()` returns `{conversation_id: seq}` for `resume`; each server frame is
   * dispatched as a `frame` event (`detail` = the frame), state changes as `state`.
   */
  constructor(cursors) {
    super();
    this.cursors = cursors;
    this.state = 'idle';
    this.ws = null;
    /** Whether `hello` came on `ws`: `auth`, like `resume`, is sent only after it. */
    this.greeted = false;
    /** The access token `ws` holds: the one its ticket was asked with, or the last `auth`. */
    this.presented = null;
    /** Numbers connect() runs: only the latest may open a socket. */
    this.runs = 0;
    /** When the last 4003 renewal began (see RENEW_GAP). */
    this.renewedAt = -Infinity;
    this.attempt = 0;
    this.timers = {};
    this.stopped = true;
    this.offSession = null;
    this.onOnline = () => this.ws || this.connectSoon(0);
    this.onOffline = () => {
      // The browser knows the network is gone: do not wait for a heartbeat to tell.
      this.drop('offline');
    };
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  start() {
    this.stopped = false;
    addEventListener('online', this.onOnline);
    addEventListener('offline', this.onOffline);
    // Every refresh, in this tab or handed over by another one.
    this.offSession = session.onChange((kind) => {
      if (kind === 'refreshed') this.reauth();
    });
    this.connect();
  }

  /** Closes for good (sign-out). */
  stop() {
    this.stopped = true;
    removeEventListener('online', this.onOnline);
    removeEventListener('offline', this.onOffline);
    this.offSession?.();
    this.offSession = null;
    for (const t of Object.values(this.timers)) clearTimeout(t);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'signed out');
    this.setState('closed');
  }

  /** Sends a client frame if connected; returns whether it went out. */
  send(frame) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Re-presents the session's newest access token on the open socket (after `hello`), so
   * the server keeps it open until that token's expiry (`auth.ok`). No-op otherwise: a
   * socket still connecting does it on `hello`, a new one asks its ticket with it.
   */
  reauth() {
    const token = session.token();
    if (!this.greeted || !token || token === this.presented) return;
    if (this.send({ type: 'auth', access_token: token })) this.presented = token;
  }

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timers.reconnect);
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    const run = ++this.runs;
    // attempt is 0 after a hello: a first connect, or a renewal after 4003 (already reconnecting).
    this.setState(this.attempt === 0 && this.state !== 'reconnecting' ? 'connecting' : 'reconnecting');
    // The token the ticket is asked with (if api.js must refresh first, the ticket holds a
    // newer one, and hello re-presents that one once more: harmless).
    const presented = session.token();
    let ticket;
    try {
      ({ ticket } = await api('POST', '/api/ws-ticket'));
    } catch (e) {
      // Signed out meanwhile: session.js tells the app. A 401 with the session still here
      // (its refresh failed on the network) is worth another try.
      if (e.status === 401 && !session.token()) return;
      if (run === this.runs) this.connectSoon();
      return;
    }
    // Stopped, or another run (back online, say) started meanwhile: that one connects.
    if (this.stopped || run !== this.runs) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws?ticket=${encodeURIComponent(ticket)}`);
    this.ws = ws;
    this.greeted = false;
    this.presented = presented;
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      this.heard();
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      if (frame.type === 'hello') {
        this.attempt = 0;
        this.instance = frame.data?.instance;
        this.greeted = true;
        // A refresh while the socket was connecting: the ticket holds the older token.
        this.reauth();
        this.send({ type: 'resume', cursors: this.cursors() });
        this.setState('live');
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearTimeout(this.timers.ping);
      clearTimeout(this.timers.silence);
      if (e.code === 4001) {
        // session.revoked: the session is over; the app signs out.
        this.dispatchEvent(new CustomEvent('revoked'));
        return;
      }
      if (e.code === 4003 && !this.stopped && Date.now() - this.renewedAt > RENEW_GAP) {
        // "access token expired": no fresh token reached the socket in time.
        this.renew(this.presented);
        return;
      }
      if (!this.stopped) this.connectSoon();
    };
    this.heard();
  }

  /**
   * Reconnects at once after 4003, with a fresh token: `stale` (the one the socket held) is
   * refreshed unless the session already has a newer one, so the new ticket, and socket,
   * get a whole token lifetime. Not a failure: the backoff does not grow.
   */
  async renew(stale) {
    this.renewedAt = Date.now();
    const run = ++this.runs;
    this.setState('reconnecting');
    let signedIn;
    try {
      signedIn = await session.refresh(stale);
    } catch {
      if (run === this.runs) this.connectSoon(); // network or server trouble: back off
      return;
    }
    // Signed out (session.js tells the app), stopped, or another run started meanwhile.
    if (!signedIn || this.stopped || run !== this.runs) return;
    this.connect();
  }

  /** Any frame proves the socket alive: push the silence deadline, keep pinging. */
  heard() {
    clearTimeout(this.timers.silence);
    this.timers.silence = setTimeout(() => this.drop('reconnecting'), SILENCE);
    clearTimeout(this.timers.ping);
    this.timers.ping = setTimeout(() => this.send({ type: 'ping' }), PING_EVERY);
  }

  /** Gives up on the current socket (network gone or silent) and reconnects when it can. */
  drop(state) {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(4000, state);
    if (this.stopped) return;
    this.setState(state);
    if (state !== 'offline') this.connectSoon();
  }

  /** Reconnects after `delay` ms, by default backing off 0.5 s → 10 s with jitter. */
  connectSoon(delay) {
    if (this.stopped) return;
    this.attempt += 1;
    const wait = delay ?? Math.min(10_000, 500 * 2 ** (this.attempt - 1)) * (0.75 + Math.random() / 2);
    this.setState(navigator.onLine ? 'reconnecting' : 'offline');
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.connect(), wait);
  }
}
