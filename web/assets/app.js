// Entry point: restores the session from the refresh cookie on load, then shows either the
// sign-in page or the messenger. The only script of the page (CSP: script-src 'self').
import { api } from './api.js';
import { $ } from './dom.js';
import { Messenger } from './chat.js';
import * as device from './device.js';
import * as passkeys from './passkeys.js';
import * as security from './security.js';
import * as session from './session.js';

let messenger = null;

function show(view) {
  document.body.dataset.view = view;
  $('loading').hidden = view !== 'loading';
  $('auth-view').hidden = view !== 'auth';
  $('app-view').hidden = view !== 'app';
}

/** Marks an unconfirmed address (sign-up mails a link; the account works meanwhile). */
function showVerification(user) {
  $('verify-banner').hidden = !user || user.email_verified;
  if (user && !user.email_verified) {
    $('verify-text').textContent = `Confirm your email address: we sent a link to ${user.email}.`;
  }
}

$('verify-resend').addEventListener('click', async () => {
  $('verify-resend').disabled = true;
  try {
    await api('POST', '/auth/email/verification');
    $('verify-text').textContent = `A new link is on its way to ${session.user()?.email}.`;
  } catch (err) {
    $('verify-text').textContent = err.status === 409 ? 'Your address is confirmed.' : err.message;
  } finally {
    $('verify-resend').disabled = false;
  }
});

function enterApp() {
  if (messenger) return;
  show('app');
  showVerification(session.user());
  messenger = new Messenger(session.user());
  const linked = device.linkedConversation();
  messenger
    .start()
    .then(() => linked && messenger?.open(linked))
    .catch(() => {});
  // The service worker shows pushes while no tab is open (device.js); a subscription this
  // browser still holds moves to the new session.
  device.registerWorker().then(() => device.resync()).catch(() => {});
}

device.onOpenConversation((id) => messenger?.open(id));

function leaveApp() {
  if ($('security-dialog').open) $('security-dialog').close();
  messenger?.stop();
  messenger = null;
  show('auth');
  $('signin-login').focus();
}

session.onChange((kind) => {
  if (kind === 'signed-in') enterApp();
  else if (kind === 'signed-out') leaveApp();
});

// ---- sign in / sign up --------------------------------------------------------------------

function selectTab(which) {
  for (const [tab, form] of [['tab-signin', 'signin-form'], ['tab-signup', 'signup-form']]) {
    const on = tab === which;
    $(tab).setAttribute('aria-selected', String(on));
    $(tab).tabIndex = on ? 0 : -1;
    $(form).hidden = !on;
  }
  $(which).focus();
}

$('tab-signin').addEventListener('click', () => selectTab('tab-signin'));
$('tab-signup').addEventListener('click', () => selectTab('tab-signup'));
for (const id of ['tab-signin', 'tab-signup']) {
  $(id).addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
      selectTab(id === 'tab-signin' ? 'tab-signup' : 'tab-signin');
    }
  });
}

/** Shows a problem's detail and its per-field errors (422) next to the fields. */
function showErrors(form, err) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const fields = Object.entries(err.errors ?? {});
  for (const [field, messages] of fields) {
    const slot = form.querySelector(`#${form.id.split('-')[0]}-${field}-error`);
    if (slot) slot.textContent = [].concat(messages).join('; ');
    form.querySelector(`[name="${field}"]`)?.setAttribute('aria-invalid', 'true');
  }
  form.querySelector('.form-error').textContent =
    err.status === 429 ? 'Too many attempts. Wait a minute and try again.' : err.message;
  (form.querySelector('[aria-invalid=true]') ?? form.querySelector('input')).focus();
}

async function submitting(form, work) {
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    await work();
    form.reset();
  } catch (err) {
    showErrors(form, err);
  } finally {
    button.disabled = false;
  }
}

/** Shows one of the auth cards (`signin-form`, `mfa-form`, …) alone, or the tabs again. */
function showCard(id) {
  const tabbed = id === 'signin-form' || id === 'signup-form';
  $('auth-tabs').hidden = !tabbed;
  for (const form of ['signin-form', 'signup-form', 'mfa-form', 'forgot-form', 'reset-form']) {
    $(form).hidden = form !== id;
  }
  if (id === 'signin-form') selectTab('tab-signin');
  $(id).querySelector('input')?.focus();
}

/** A message above the forms (a confirmed address, a mailed link, a new password). */
function notice(text) {
  $('auth-notice').textContent = text;
  $('auth-notice').hidden = !text;
}

let challenge = null;
let resetToken = null;

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  submitting(f, async () => {
    const answer = await session.signIn(f.login.value.trim(), f.password.value);
    if (answer.challenge) {
      challenge = answer.challenge;
      notice('');
      showCard('mfa-form');
    }
  });
});

$('mfa-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  submitting(f, async () => {
    try {
      await session.secondFactor(challenge, f.code.value);
      challenge = null;
      showCard('signin-form');
    } catch (err) {
      if (err.status === 401 && /sign in again/.test(err.message)) {
        challenge = null;
        showCard('signin-form');
        notice('That sign-in expired or took too many wrong codes. Sign in again.');
        return;
      }
      throw err;
    }
  });
});

$('passkey-signin').hidden = !passkeys.supported();
$('passkey-signin').addEventListener('click', async () => {
  const form = $('signin-form');
  const button = $('passkey-signin');
  button.disabled = true;
  form.querySelector('.form-error').textContent = '';
  try {
    await session.signInWithPasskey();
    notice('');
  } catch (err) {
    form.querySelector('.form-error').textContent = err.name === 'NotAllowedError'
      ? 'The passkey prompt was cancelled or timed out.'
      : err.status === 429 ? 'Too many attempts. Wait a minute and try again.' : err.message;
  } finally {
    button.disabled = false;
  }
});

$('forgot-open').addEventListener('click', () => {
  notice('');
  showCard('forgot-form');
});

$('forgot-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  submitting(f, async () => {
    await session.accountRequest('/auth/password/forgot', { email: f.email.value.trim() });
    showCard('signin-form');
    notice('If an account uses that address, a link to reset its password is on its way. It works for 30 minutes.');
  });
});

$('reset-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  submitting(f, async () => {
    await session.accountRequest('/auth/password/reset', {
      token: resetToken,
      new_password: f.new_password.value,
    });
    resetToken = null;
    showCard('signin-form');
    notice('Your password is set, and every device was signed out. Sign in with the new one.');
  });
});

for (const back of document.querySelectorAll('#auth-view [data-back]')) {
  back.addEventListener('click', () => {
    challenge = null;
    showCard('signin-form');
  });
}

/**
 * Links from account mail put their token after `#` (never sent to a server):
 * `#verify-email=…` confirms an address at once, `#reset-password=…` asks for a new
 * password. The fragment is dropped from the address bar right away.
 */
async function followMailLink() {
  const link = /^#(verify-email|reset-password)=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!link) return;
  history.replaceState(null, '', location.pathname + location.search);
  const [, kind, token] = link;
  if (kind === 'reset-password') {
    resetToken = token;
    showCard('reset-form');
    return;
  }
  try {
    const account = await session.accountRequest('/auth/email/verify', { token });
    notice(`Your email address ${account.email} is confirmed.`);
  } catch (err) {
    notice(err.status === 400 ? 'That confirmation link is invalid, was used already, or has expired.' : err.message);
  }
}

$('signup-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  const fields = {
    username: f.username.value.trim(),
    email: f.email.value.trim(),
    password: f.password.value,
  };
  if (f.display_name.value.trim()) fields.display_name = f.display_name.value.trim();
  submitting(f, () => session.signUp(fields));
});

$('security-open').addEventListener('click', () => {
  security.open().catch(() => {});
});

$('signout').addEventListener('click', () => {
  session.signOut().catch(() => {});
});

// ---- start --------------------------------------------------------------------------------

// Restore the session from the refresh cookie. A network failure leaves us on the sign-in
// page rather than a spinner.
session
  .refresh()
  .then((signedIn) => {
    if (!signedIn) leaveApp();
  })
  .catch(() => leaveApp())
  .finally(() => followMailLink());
