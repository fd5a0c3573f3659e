// The security settings dialog: the sessions signed in (end any but this one), two-factor
// sign-in (enrol with a QR code, confirm, see the recovery codes once, turn off), passkeys
// (add with the password, remove) and the account's recent security events.
import { api } from './api.js';
import { $, h, shortTime } from './dom.js';
import * as device from './device.js';
import * as passkeys from './passkeys.js';

/** What each audit event kind (`GET /auth/me/events`) means, for people. */
const EVENT_TEXT = {
  account_created: 'Account created',
  signed_in: 'Signed in',
  sign_in_failed: 'Failed sign-in',
  second_factor_failed: 'Wrong two-factor code',
  refresh_reuse: 'A stolen session token was refused; that session ended',
  session_ended: 'Session ended',
  password_changed: 'Password changed',
  password_reset_requested: 'Password reset asked for',
  password_reset: 'Password reset',
  email_change_requested: 'Email change asked for',
  email_verified: 'Email address confirmed',
  email_changed: 'Email address changed',
  two_factor_enabled: 'Two-factor sign-in turned on',
  two_factor_disabled: 'Two-factor sign-in turned off',
  recovery_code_used: 'Recovery code used',
  passkey_added: 'Passkey added',
  passkey_removed: 'Passkey removed',
  account_deleted: 'Account deleted',
};

const dialog = () => $('security-dialog');

function status(text) {
  $('security-status').textContent = text;
  $('security-status').hidden = !text;
}

/** Runs `work` for `form`, showing a failure in its `.form-error`. */
async function guarded(form, work) {
  const error = form.querySelector('.form-error');
  const button = form.querySelector('button[type=submit]');
  error.textContent = '';
  button.disabled = true;
  try {
    await work();
  } catch (err) {
    error.textContent = err.status === 429
      ? 'Too many attempts. Wait a few minutes and try again.'
      : err.name === 'NotAllowedError' ? 'The passkey prompt was cancelled or timed out.' : err.message;
  } finally {
    button.disabled = false;
  }
}

async function loadSessions() {
  const { sessions } = await api('GET', '/auth/sessions');
  $('security-sessions').replaceChildren(...sessions.map((s) => h('li', { dataset: { session: s.id } },
    h('span', { class: 'what' }, s.current ? 'This device' : (s.user_agent ?? 'Unknown device'), s.ip ? ` · ${s.ip}` : ''),
    h('span', { class: 'when' }, `active ${shortTime(s.last_used_at)}`),
    s.current ? null : h('button', {
      type: 'button',
      'aria-label': `Sign out ${s.user_agent ?? 'that device'}`,
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api('DELETE', `/auth/sessions/${s.id}`);
          status('That device is signed out.');
        } catch (err) {
          status(err.message);
        }
        await refresh();
      },
    }, 'Sign out'))));
}

async function loadTotp() {
  const totp = await api('GET', '/auth/me/totp');
  $('totp-state').textContent = totp.enabled
    ? `On since ${shortTime(totp.enabled_at)}. Recovery codes left: ${totp.recovery_codes_left}.`
    : 'Off. Sign-in asks only for your password (or a passkey).';
  $('totp-start').hidden = totp.enabled || !$('totp-enrol').hidden;
  $('totp-disable').hidden = !totp.enabled;
  $('passkey-add-second').hidden = !totp.enabled;
}

let qrUrl = null;

/** Forgets the enrolment's secret: the QR image, its blob URL and the typed-out key. */
function forgetSecret() {
  if (qrUrl) URL.revokeObjectURL(qrUrl);
  qrUrl = null;
  $('totp-qr').removeAttribute('src');
  $('totp-secret').textContent = '';
}

async function startTotp(password) {
  const enrolment = await api('POST', '/auth/me/totp', { password });
  forgetSecret();
  // An SVG document shown as an image (never put in the page as markup); CSP allows blob:.
  qrUrl = URL.createObjectURL(new Blob([enrolment.qr_svg], { type: 'image/svg+xml' }));
  $('totp-qr').src = qrUrl;
  $('totp-secret').textContent = enrolment.secret.replace(/(.{4})/g, '$1 ').trim();
  $('totp-enrol').hidden = false;
  $('totp-start').hidden = true;
  $('totp-codes').hidden = true;
  $('totp-enrol-code').focus();
}

async function loadPasskeys() {
  const { passkeys: list } = await api('GET', '/auth/me/passkeys');
  $('security-passkeys').replaceChildren(...list.map((p) => h('li', { dataset: { passkey: p.id } },
    h('span', { class: 'what' }, p.name),
    h('span', { class: 'when' }, p.last_used_at ? `used ${shortTime(p.last_used_at)}` : `added ${shortTime(p.created_at)}`),
    h('button', {
      type: 'button',
      class: 'danger',
      'aria-label': `Remove passkey ${p.name}`,
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          await api('DELETE', `/auth/me/passkeys/${p.id}`);
          status(`Passkey ${p.name} removed: it no longer signs in, and devices signed in with it are signed out.`);
        } catch (err) {
          status(err.message);
        }
        await refresh();
      },
    }, 'Remove'))));
  if (!list.length) $('security-passkeys').append(h('li', {}, 'No passkeys yet.'));
  $('passkey-add').hidden = !passkeys.supported();
}

async function loadEvents() {
  const { events } = await api('GET', '/auth/me/events?limit=20');
  $('security-events').replaceChildren(...events.map((e) => h('li', {},
    h('span', { class: 'what' }, EVENT_TEXT[e.kind] ?? e.kind, e.detail ? ` (${e.detail})` : ''),
    h('span', { class: 'when' }, `${shortTime(e.at)}${e.ip ? ` · ${e.ip}` : ''}`))));
}

async function loadDevice() {
  const on = device.supported() && (await device.subscribed().catch(() => false));
  $('device-state').textContent = !device.supported()
    ? 'This browser cannot show notifications while Switchboard is closed.'
    : on ? 'On: messages for you arrive here while Switchboard is closed.' : 'Off.';
  $('device-on').hidden = !device.supported() || on;
  $('device-off').hidden = !on;
}

async function loadPrefs() {
  const p = await api('GET', '/api/notification-settings');
  const f = $('prefs-form');
  f.direct_level.value = p.direct_level;
  f.group_level.value = p.group_level;
  f.push.checked = p.push;
  f.email.checked = p.email;
  f.previews.checked = p.previews;
  f.quiet_start.value = p.quiet_hours?.start?.slice(0, 5) ?? '';
  f.quiet_end.value = p.quiet_hours?.end?.slice(0, 5) ?? '';
  f.time_zone.value = p.time_zone === 'UTC' && !p.quiet_hours
    ? Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC'
    : p.time_zone;
}

$('prefs-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  guarded(f, async () => {
    const quiet = f.quiet_start.value && f.quiet_end.value
      ? { start: `${f.quiet_start.value}:00`, end: `${f.quiet_end.value}:00` }
      : null;
    await api('PUT', '/api/notification-settings', {
      direct_level: f.direct_level.value,
      group_level: f.group_level.value,
      push: f.push.checked,
      email: f.email.checked,
      previews: f.previews.checked,
      quiet_hours: quiet,
      time_zone: f.time_zone.value.trim() || 'UTC',
    });
    status('Notification settings saved.');
  });
});

async function refresh() {
  await Promise.all([loadSessions(), loadTotp(), loadPasskeys(), loadEvents(), loadDevice(), loadPrefs()])
    .catch((err) => status(err.message));
}

for (const [id, work, done] of [
  ['device-on', device.subscribe, 'Notifications are on for this device.'],
  ['device-off', device.unsubscribe, 'Notifications are off for this device.'],
]) {
  $(id).addEventListener('click', async () => {
    $(id).disabled = true;
    try {
      await work();
      status(done);
    } catch (err) {
      status(err.status === 404 ? 'This server does not send notifications.' : err.message);
    } finally {
      $(id).disabled = false;
      await loadDevice();
    }
  });
}

$('totp-start').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  guarded(f, async () => {
    await startTotp(f.password.value);
    f.reset();
  });
});

$('totp-enrol').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  guarded(f, async () => {
    const { recovery_codes: codes } = await api('POST', '/auth/me/totp/confirm', { code: f.code.value.trim() });
    f.reset();
    f.hidden = true;
    forgetSecret();
    $('totp-code-list').replaceChildren(...codes.map((c) => h('li', {}, c)));
    $('totp-codes').hidden = false;
    status('Two-factor sign-in is on.');
    await refresh();
  });
});

$('totp-disable').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  guarded(f, async () => {
    await api('DELETE', '/auth/me/totp', { code: f.code.value.trim() });
    f.reset();
    $('totp-codes').hidden = true;
    status('Two-factor sign-in is off.');
    await refresh();
  });
});

$('passkey-add').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  guarded(f, async () => {
    const code = $('passkey-add-second').hidden ? undefined : f.code.value.trim();
    const added = await passkeys.register(api, f.name.value.trim(), f.password.value, code);
    f.reset();
    status(`Passkey ${added.name} added. You can sign in with it instead of a password.`);
    await refresh();
  });
});

for (const b of dialog().querySelectorAll('[data-close]')) b.addEventListener('click', () => dialog().close());

dialog().addEventListener('close', () => {
  forgetSecret();
  $('totp-enrol').hidden = true;
  $('totp-codes').hidden = true;
  $('totp-code-list').replaceChildren();
  status('');
});

/** Opens the security settings, freshly loaded. */
export async function open() {
  status('');
  dialog().showModal();
  await refresh();
}
