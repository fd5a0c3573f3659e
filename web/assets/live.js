// The live connection: one WebSocket per tab (`GET /ws?ticket=…`, README "WebSocket").
// It reconnects by itself with backoff, and after every (re)connect sends `resume` with the
// last seq the page holds per conversation, so nothing committed while it was away is
// missed. States: connecting → live → reconnecting / offline → … ; closed once stopped.
import { api } from './api.js';

const PING_EVERY = 15_000;
/** No frame at all for this long (the server pings every 20 s, we ping every 15 s): dead. */
const SILENCE = 45_000;

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
    this.attempt = 0;
    this.timers = {};
    this.stopped = true;
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
    this.connect();
  }

  /** Closes for good (sign-out). */
  stop() {
    this.stopped = true;
    removeEventListener('online', this.onOnline);
    removeEventListener('offline', this.onOffline);
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

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timers.reconnect);
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let ticket;
    try {
      ({ ticket } = await api('POST', '/api/ws-ticket'));
    } catch (e) {
      if (e.status === 401) return; // signed out meanwhile; session.js tells the app
      this.connectSoon();
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws?ticket=${encodeURIComponent(ticket)}`);
    this.ws = ws;
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
      if (!this.stopped) this.connectSoon();
    };
    this.heard();
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
