// HTTP calls to the services, with the in-memory access token. A 401 refreshes once (see
// session.js) and retries; reads get read-your-writes from the `ryw_lsn` cookie the browser
// sends by itself (Path=/api), so no consistency token is handled here.
import * as session from './session.js';

/** A problem+json answer (RFC 9457): `status`, `detail`, `errors`, `retryAfter` (seconds). */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail ?? `request failed (${status})`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
  /** Worth retrying as is: the network, 429, 502–504. */
  get transient() {
    return this.status === 0 || this.status === 429 || (this.status >= 502 && this.status <= 504);
  }
}

function authHeaders() {
  const t = session.token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function parse(res) {
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!res.ok) {
    throw new ApiError(res.status, data, Number(res.headers.get('Retry-After')) || undefined);
  }
  return data;
}

/**
 * `method path` with an optional JSON body; resolves to the parsed JSON (null for 204).
 * Throws ApiError (status 0 for a network failure).
 */
export async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const sent = session.token();
    const headers = authHeaders();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, { detail: 'network unavailable' });
    }
    if (res.status === 401 && attempt === 0 && sent && (await session.refresh(sent).catch(() => false))) {
      continue;
    }
    return parse(res);
  }
}

/** Fetches a protected file (attachments need the bearer token) as a Blob. */
export async function blob(path) {
  for (let attempt = 0; ; attempt++) {
    const sent = session.token();
    const res = await fetch(path, { headers: authHeaders(), credentials: 'same-origin' });
    if (res.status === 401 && attempt === 0 && sent && (await session.refresh(sent).catch(() => false))) {
      continue;
    }
    if (!res.ok) await parse(res);
    return res.blob();
  }
}

/**
 * Multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
 * `onProgress(fraction)` gets 0…1. Resolves to the parsed JSON; throws ApiError.
 */
export async function upload(path, form, onProgress) {
  for (let attempt = 0; ; attempt++) {
    const sent = session.token();
    const { status, text, retryAfter } = await new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', path);
      for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
      xhr.onload = () =>
        resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader('Retry-After') });
      xhr.onerror = () => resolve({ status: 0, text: '' });
      xhr.send(form);
    });
    if (status === 401 && attempt === 0 && sent && (await session.refresh(sent).catch(() => false))) {
      continue;
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { detail: text };
    }
    if (status >= 200 && status < 300) return data;
    throw new ApiError(status, data ?? { detail: 'network unavailable' }, Number(retryAfter) || undefined);
  }
}
