// Entry point: restores the session from the refresh cookie on load, then shows either the
// sign-in page or the messenger. The only script of the page (CSP: script-src 'self').
import { $ } from './dom.js';
import { Messenger } from './chat.js';
import * as session from './session.js';

let messenger = null;

function show(view) {
  document.body.dataset.view = view;
  $('loading').hidden = view !== 'loading';
  $('auth-view').hidden = view !== 'auth';
  $('app-view').hidden = view !== 'app';
}

function enterApp() {
  if (messenger) return;
  show('app');
  messenger = new Messenger(session.user());
  messenger.start().catch(() => {});
}

function leaveApp() {
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

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  submitting(f, () => session.signIn(f.login.value.trim(), f.password.value));
});

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
  .catch(() => leaveApp());
