// Passkeys (WebAuthn): the server's options arrive as JSON with base64url binary fields
// (webauthn-rs), the browser's API wants ArrayBuffers, and the answer goes back as JSON again
// (WebAuthn Level 3's toJSON form). These helpers convert both ways and run the two
// ceremonies: registering a passkey (signed in, with the password) and signing in with one.

/** Whether this browser can make and use passkeys. */
export const supported = () => typeof PublicKeyCredential === 'function' && !!navigator.credentials;

function fromB64url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
}

function toB64url(buffer) {
  let raw = '';
  for (const byte of new Uint8Array(buffer)) raw += String.fromCharCode(byte);
  return btoa(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const descriptors = (list) => list?.map((c) => ({ ...c, id: fromB64url(c.id) }));

/** `{publicKey}` creation options from the server → what `credentials.create` takes. */
function creationOptions({ publicKey }) {
  return {
    publicKey: {
      ...publicKey,
      challenge: fromB64url(publicKey.challenge),
      user: { ...publicKey.user, id: fromB64url(publicKey.user.id) },
      excludeCredentials: descriptors(publicKey.excludeCredentials),
    },
  };
}

/** `{publicKey}` request options from the server → what `credentials.get` takes. */
function requestOptions({ publicKey }) {
  return {
    publicKey: {
      ...publicKey,
      challenge: fromB64url(publicKey.challenge),
      allowCredentials: descriptors(publicKey.allowCredentials),
    },
  };
}

/** A new credential → `RegisterPublicKeyCredential` JSON. */
function registrationJson(cred) {
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response: {
      clientDataJSON: toB64url(cred.response.clientDataJSON),
      attestationObject: toB64url(cred.response.attestationObject),
      transports: cred.response.getTransports?.() ?? [],
    },
    extensions: cred.getClientExtensionResults(),
  };
}

/** An assertion → `PublicKeyCredential` JSON. */
function assertionJson(cred) {
  const r = cred.response;
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response: {
      clientDataJSON: toB64url(r.clientDataJSON),
      authenticatorData: toB64url(r.authenticatorData),
      signature: toB64url(r.signature),
      userHandle: r.userHandle ? toB64url(r.userHandle) : null,
    },
    extensions: cred.getClientExtensionResults(),
  };
}

/**
 * Registers a passkey named `name`: `call(method, path, body)` is the signed-in API
 * (api.js). The server asks for the password (a token alone cannot add one) and, with
 * two-factor sign-in on, a `code`. Resolves
 * to the new passkey `{id, name, created_at}`; throws the API's error, or the browser's
 * (`NotAllowedError` when the person cancels).
 */
export async function register(call, name, password, code) {
  const { ceremony, options } = await call('POST', '/auth/me/passkeys/options', code ? { password, code } : { password });
  const cred = await navigator.credentials.create(creationOptions(options));
  return call('POST', '/auth/me/passkeys', { ceremony, name, credential: registrationJson(cred) });
}

/**
 * Signs in with a passkey the authenticator holds for this site (no user name asked):
 * `post(path, body)` makes an unauthenticated JSON request and answers what it parsed, or
 * throws. Resolves to the sign-in's answer (tokens, user).
 */
export async function signIn(post) {
  const { ceremony, options } = await post('/auth/login/passkey/options', undefined);
  const cred = await navigator.credentials.get(requestOptions(options));
  return post('/auth/login/passkey', { ceremony, credential: assertionJson(cred) });
}
