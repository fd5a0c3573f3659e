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
 * Runs `attempt(headers)` (one HTTP call with these auth headers, answering something with
 * a `status`) and, on a 401 for a token we sent, refreshes once and runs it again.
 */
async function authorized(attempt) {
  const sent = session.token();
  const first = await attempt(authHeaders());
  if (first.status === 401 && sent && (await session.refresh(sent).catch(() => false))) {
    return attempt(authHeaders());
  }
  return first;
}

/**
 * `method path` with an optional JSON body; resolves to the parsed JSON (null for 204).
 * Throws ApiError (status 0 for a network failure).
 */
export async function api(method, path, body) {
  let res;
  try {
    res = await authorized((headers) => {
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      return fetch(path, {
        method,
        headers,
        credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    });
  } catch {
    throw new ApiError(0, { detail: 'network unavailable' });
  }
  return parse(res);
}

/** Fetches a protected file (attachments need the bearer token) as a Blob. */
export async function blob(path) {
  const res = await authorized((headers) => fetch(path, { headers, credentials: 'same-origin' }));
  if (!res.ok) await parse(res);
  return res.blob();
}

/**
 * Multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
 * `onProgress(fraction)` gets 0…1; `method` is POST (a file into a conversation) or PUT (an
 * avatar). Resolves to the parsed JSON; throws ApiError.
 */
export async function upload(path, form, onProgress, method = 'POST') {
  const { status, text, retryAfter } = await authorized(
    (headers) =>
      new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        xhr.open(method, path);
        for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
        xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
        xhr.onload = () =>
          resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader('Retry-After') });
        xhr.onerror = () => resolve({ status: 0, text: '' });
        xhr.send(form);
      }),
  );
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (status >= 200 && status < 300) return data;
  throw new ApiError(status, data ?? { detail: 'network unavailable' }, Number(retryAfter) || undefined);
}
