// The signed-in session: the access token lives in this module's memory only (never in
// localStorage, never in a cookie the page can read); the refresh token is the HttpOnly
// `refresh_token` cookie, which only /auth/refresh and /auth/logout ever see.
//
// Refresh rotates that cookie (RFC 9700 §4.14): presenting an already-rotated token revokes
// the whole session. So refreshes are serialized across every tab of this origin with a Web
// Lock, and the tab that refreshed hands the new access token to the others over a
// BroadcastChannel; a tab that was waiting for the lock then finds a fresh token and does
// not refresh at all.

import * as passkeys from './passkeys.js';

const LOCK = 'switchboard-refresh';
const channel = 'BroadcastChannel' in self ? new BroadcastChannel('switchboard-session') : null;

/** @type {{token: string, expiresAt: number, lifetime: number, user: object} | null} */
let current = null;
let timer = 0;
let inflight = null;
const listeners = new Set();

/** The access token, or null when signed out. */
export const token = () => current?.token ?? null;
/** The signed-in user `{id, username, display_name, …}`, or null. */
export const user = () => current?.user ?? null;

/** Calls `fn(kind)` with `'signed-in'`, `'refreshed'` or `'signed-out'`. */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(kind) {
  for (const fn of listeners) fn(kind);
}

/** Refresh this long before expiry: a quarter of the lifetime, at most 30 s. */
const lead = (s) => Math.min(30_000, s.lifetime / 4);
const fresh = (s) => s && s.expiresAt - Date.now() > lead(s);

function adopt(body, kind, announce) {
  const lifetime = body.expires_in * 1000;
  const was = current?.user?.id;
  current = {
    token: body.access_token,
    expiresAt: body.expires_at ?? Date.now() + lifetime,
    lifetime,
    user: body.user ?? current?.user,
  };
  schedule();
  if (announce) {
    channel?.postMessage({ type: 'token', body: { ...body, expires_at: current.expiresAt } });
  }
  emit(was && was === current.user?.id ? 'refreshed' : kind);
}

function schedule() {
  clearTimeout(timer);
  if (!current) return;
  const wait = Math.max(1_000, current.expiresAt - Date.now() - lead(current));
  const seen = current.token;
  timer = setTimeout(() => {
    refresh(seen).catch(() => {
      // Network or server trouble: try again shortly; the token may still be valid.
      if (current) timer = setTimeout(() => refresh(current?.token).catch(() => {}), 5_000);
    });
  }, wait);
}

function clear(announce) {
  const had = current !== null;
  current = null;
  clearTimeout(timer);
  if (announce) channel?.postMessage({ type: 'signed-out' });
  if (had || announce) emit('signed-out');
}

channel?.addEventListener('message', (e) => {
  const msg = e.data;
  if (msg?.type === 'token') adopt(msg.body, 'signed-in', false);
  else if (msg?.type === 'signed-out') clear(false);
});

async function postJson(path, body, headers = {}) {
  const res = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  return { res, data };
}

/**
 * Exchanges the refresh cookie for a new access token (`POST /auth/refresh` with `X-CSRF`).
 * `seen` is the access token the caller found wanting (expired, or refused with 401): if
 * another tab or call has replaced it by then with a fresh one, no refresh is made.
 * Resolves true when signed in afterwards, false when the session is over (401/403: the
 * cookie is gone, expired or revoked). Rejects on network or server errors.
 */
export function refresh(seen = null) {
  inflight ??= (async () => {
    const run = async () => {
      if (current && current.token !== seen && fresh(current)) return true;
      const { res, data } = await postJson('/auth/refresh', undefined, { 'X-CSRF': '1' });
      if (res.ok) {
        adopt(data, 'signed-in', true);
        return true;
      }
      if (res.status === 401 || res.status === 403) {
        clear(false);
        return false;
      }
      throw new Error(data?.detail ?? `refresh failed (${res.status})`);
    };
    return navigator.locks ? navigator.locks.request(LOCK, run) : run();
  })().finally(() => {
    inflight = null;
  });
  return inflight;
}

/** A failed sign-in or sign-up: `status`, `detail`, and `errors` (field → messages) on 422. */
export class AuthError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `request failed (${status})`);
    this.status = status;
    this.errors = problem?.errors ?? {};
  }
}

async function start(path, body) {
  const { res, data } = await postJson(path, body);
  if (!res.ok) throw new AuthError(res.status, data);
  // 202: the password is right and the account signs in with a second factor.
  if (res.status === 202 && data?.mfa_required) return { challenge: data.challenge };
  adopt(data, 'signed-in', true);
  return { user: data.user };
}

/**
 * `POST /auth/login` with `{login, password}`: `{user}` when signed in, or `{challenge}` when
 * a second factor is asked for (answer it with `secondFactor`). Throws AuthError.
 */
export const signIn = (login, password) => start('/auth/login', { login, password });

/**
 * `POST /auth/login/mfa`: answers a sign-in's challenge with a 6-digit TOTP code or, for
 * anything else typed, a recovery code. Throws AuthError (401: wrong code; sign in again
 * once the challenge is spent).
 */
export function secondFactor(challenge, typed) {
  const value = typed.replace(/\s+/g, '');
  const answer = /^\d{6}$/.test(value) ? { code: value } : { recovery_code: value };
  return start('/auth/login/mfa', { challenge, ...answer });
}

/**
 * Signs in with a passkey (`POST /auth/login/passkey/options`, the browser's prompt, then
 * `POST /auth/login/passkey`): `{user}`. Throws AuthError, or the browser's error
 * (`NotAllowedError` when cancelled).
 */
export async function signInWithPasskey() {
  const data = await passkeys.signIn(async (path, body) => {
    const { res, data } = await postJson(path, body);
    if (!res.ok) throw new AuthError(res.status, data);
    return data;
  });
  adopt(data, 'signed-in', true);
  return { user: data.user };
}

/**
 * A signed-out account request (`/auth/password/forgot`, `/auth/password/reset`,
 * `/auth/email/verify`): resolves to the answer's JSON, throws AuthError.
 */
export async function accountRequest(path, body) {
  const { res, data } = await postJson(path, body);
  if (!res.ok) throw new AuthError(res.status, data);
  return data;
}

/** `POST /auth/register` with `{username, email, password, display_name?}`. Throws AuthError. */
export const signUp = (fields) => start('/auth/register', fields);

/** `POST /auth/logout`: the server revokes the session and clears the cookie; every tab signs out. */
export async function signOut() {
  try {
    await navigator.locks?.request(LOCK, () => postJson('/auth/logout', undefined, { 'X-CSRF': '1' }));
    if (!navigator.locks) await postJson('/auth/logout', undefined, { 'X-CSRF': '1' });
  } finally {
    clear(true);
  }
}

/** Forgets the session locally (the server already ended it: `session.revoked`). */
export const forget = () => clear(true);
