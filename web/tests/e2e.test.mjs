// End-to-end: the web client in Debian's Chromium (headless, playwright-core), against the
// real stack through NGINX. Two browser contexts (two people, two cookie jars) sign up, chat
// live, see typing and read receipts, reply, edit, delete, upload, build a group; one reloads
// and is still signed in (cookie refresh), both outlive the access token's lifetime (on the
// same socket, which re-presents each new token), a forced WebSocket drop recovers with every
// message, sign-out closes the socket, and Swagger UI works under its CSP. A third person
// confirms their address, resets their password and signs in with a second factor, each from
// a mailed link or a form (mail read from the stack's SMTP server).
//
// Run by scripts/test.sh, which starts the stack with a short ACCESS_TOKEN_TTL_SECS.
// Screenshots of the main views go to E2E_ARTIFACTS (default target/e2e).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.SWITCHBOARD_URL ?? 'http://127.0.0.1:18080';
const TTL = Number(process.env.ACCESS_TOKEN_TTL_SECS ?? 20);
const SHOTS = process.env.E2E_ARTIFACTS ?? join(process.cwd(), '..', 'target', 'e2e');
const WAIT = 15_000;
mkdirSync(SHOTS, { recursive: true });

const tag = Math.random().toString(36).slice(2, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; fails with `what` after `ms`. */
async function until(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what} (last: ${last})`);
}

let browser;
const people = {};

/** Collects `page`'s CSP violations and uncaught errors into `problems`. */
function watch(page, problems) {
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

/** A person: their own browser context (cookie jar), one page, and what it saw. */
async function person(name, { routeSocket = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const p = {
    name,
    username: `${name}_${tag}`,
    password: `correct horse ${name}`,
    context,
    page,
    problems: [],
    refreshes: [],
    sockets: [],
    /** Server frames in arrival order: `{ws, type, data}`. */
    frames: [],
    routes: [],
    blockSocket: false,
  };
  watch(page, p.problems);
  page.on('response', (r) => {
    if (r.url().endsWith('/auth/refresh')) p.refreshes.push(r.status());
  });
  page.on('websocket', (ws) => {
    p.sockets.push(ws);
    ws.on('framereceived', ({ payload }) => {
      try {
        const { type, data } = JSON.parse(payload);
        p.frames.push({ ws, type, data });
      } catch {
        // not JSON: not a protocol frame
      }
    });
  });
  page.on('dialog', (d) => d.accept());
  if (routeSocket) {
    // Every socket of this page goes through Playwright, so the test can cut it like a
    // network failure would, and refuse reconnects for a while.
    await page.routeWebSocket(/\/ws\?ticket=/, (ws) => {
      if (p.blockSocket) {
        ws.close({ code: 1011, reason: 'network down (test)' });
        return;
      }
      const server = ws.connectToServer();
      p.routes.push({ ws, server });
    });
  }
  people[name] = p;
  return p;
}

async function signUp(p) {
  const { page } = p;
  await page.goto(BASE);
  await page.getByRole('tab', { name: 'Sign up' }).click();
  const form = page.getByRole('tabpanel', { name: 'Sign up' });
  await form.getByLabel('Username').fill(p.username);
  await form.getByLabel('Display name').fill(display(p));
  await form.getByLabel('Email').fill(`${p.username}@example.test`);
  await form.getByLabel('Password').fill(p.password);
  await form.getByRole('button', { name: 'Create account' }).click();
  await page.locator('#app-view').waitFor();
  // The sign-up notice: the account works, its address is marked unconfirmed.
  await page.getByRole('status').filter({ hasText: `we sent a link to ${p.username}@example.test` }).waitFor({ timeout: WAIT });
  await until(`${p.name} connected`, async () => (await page.locator('body').getAttribute('data-connection')) === 'live');
}

const display = (p) => p.name[0].toUpperCase() + p.name.slice(1);
const conversation = (p, title) => p.page.locator('#conversation-list button', { hasText: title });
const messages = (p) => p.page.locator('#messages li');

async function send(p, text) {
  const box = p.page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** Seqs and texts of the open thread, in order. */
async function thread(p) {
  return p.page.locator('#messages li[data-seq]').evaluateAll((lis) =>
    lis.map((li) => ({ seq: Number(li.dataset.seq), text: li.querySelector('.bubble, span')?.textContent ?? '' })));
}

async function shot(p, file) {
  await p.page.screenshot({ path: join(SHOTS, file) });
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The test stack's certificate (from its local CA, scripts/common.sh), trusted by its
      // key's hash: the page is a real HTTPS origin, where the __Secure- refresh cookie lives.
      ...(process.env.E2E_TLS_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.E2E_TLS_SPKI}`] : []),
    ],
  });
});

after(async () => {
  await browser?.close();
});

test('two people chat live in Chromium on cookie refresh', async (top) => {
  // Steps build on each other: after a failure the rest are skipped, not failed again.
  let broken = false;
  const t = {
    test: (name, fn) =>
      top.test(name, async (st) => {
        if (broken) return st.skip('an earlier step failed');
        try {
          await fn(st);
        } catch (e) {
          broken = true;
          throw e;
        }
      }),
  };
  const alice = await person('alice');
  const bob = await person('bob', { routeSocket: true });

  await t.test('both sign up; the sign-in page is a strict-CSP page', async () => {
    const res = await alice.page.goto(BASE);
    const csp = res.headers()['content-security-policy'];
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    await alice.page.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    await shot(alice, 'sign-in.png');
    await signUp(alice);
    await signUp(bob);
  });

  await t.test('alice finds bob and they exchange messages live', async () => {
    await alice.page.getByLabel('Find people to chat with').fill(bob.username);
    await alice.page.locator('#people-results button', { hasText: bob.username }).click();
    await alice.page.locator('#thread-title', { hasText: display(bob) }).waitFor();
    await send(alice, 'Hello Bob');
    // Optimistic first, then confirmed with its seq.
    await alice.page.locator('#messages li[data-seq="1"]', { hasText: 'Hello Bob' }).waitFor();

    // Bob's list gets the conversation live, with an unread badge and the last message.
    const entry = conversation(bob, display(alice));
    await entry.locator('.badge', { hasText: '1' }).waitFor({ timeout: WAIT });
    await entry.locator('.last', { hasText: 'Hello Bob' }).waitFor();
    await shot(bob, 'conversation-list.png');
    await entry.click();
    await bob.page.locator('#messages li', { hasText: 'Hello Bob' }).waitFor();
    await until('the badge to clear', async () => (await entry.locator('.badge').count()) === 0);

    // Alice sees "Seen" under her message once bob's read marker passes it.
    await alice.page.locator('#messages li[data-seq="1"] .receipt', { hasText: 'Seen' }).waitFor();
  });

  await t.test('typing shows on the other side and goes away', async () => {
    await bob.page.getByLabel('Message', { exact: true }).pressSequentially('Hi Al', { delay: 30 });
    await alice.page.locator('#typing', { hasText: `${display(bob)} is typing` }).waitFor();
    await bob.page.getByLabel('Message', { exact: true }).press('Control+a');
    await bob.page.getByLabel('Message', { exact: true }).pressSequentially('Hi Alice');
    await bob.page.getByLabel('Message', { exact: true }).press('Enter');
    await alice.page.locator('#messages li', { hasText: 'Hi Alice' }).waitFor();
    await until('typing to clear', async () => (await alice.page.locator('#typing').textContent()) === '');
  });

  await t.test('reply, edit, delete and a file arrive on the other side', async () => {
    // Alice replies to bob's message.
    await alice.page.locator('#messages li', { hasText: 'Hi Alice' }).getByRole('button', { name: 'Reply', exact: true }).click();
    await send(alice, 'Glad you are here');
    await bob.page.locator('#messages li', { hasText: 'Glad you are here' }).locator('.quote', { hasText: 'Hi Alice' }).waitFor();

    // Alice edits, then deletes, a message of hers.
    await send(alice, 'Tpyo here');
    const typo = alice.page.locator('#messages li[data-seq]', { hasText: 'Tpyo here' });
    await typo.waitFor();
    await typo.getByRole('button', { name: 'Edit', exact: true }).click();
    const edit = alice.page.getByLabel('Edit message');
    await edit.fill('Typo fixed');
    await edit.press('Enter');
    await bob.page.locator('#messages li', { hasText: 'Typo fixed' }).locator('text=edited').waitFor();
    await send(alice, 'Delete me');
    const doomed = alice.page.locator('#messages li[data-seq]', { hasText: 'Delete me' });
    await doomed.waitFor();
    await bob.page.locator('#messages li', { hasText: 'Delete me' }).waitFor();
    await doomed.getByRole('button', { name: 'Delete', exact: true }).click();
    await bob.page.locator('#messages li.deleted', { hasText: 'This message was deleted' }).waitFor();
    assert.equal(await bob.page.locator('#messages li', { hasText: 'Delete me' }).count(), 0);

    // A file, with upload progress and the name on the other side.
    const png = Buffer.from(
      'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
      'base64',
    );
    await alice.page.locator('#file-input').setInputFiles({ name: 'dot.png', mimeType: 'image/png', buffer: png });
    await bob.page.locator('#messages li .file', { hasText: 'dot.png' }).waitFor();
    await bob.page.locator('#messages li .file img').waitFor();
    await shot(alice, 'thread.png');
  });

  await t.test('a group is created, gains and loses people, live for everyone', async () => {
    // A third person, registered over the API (no browser needed).
    const carol = { username: `carol_${tag}` };
    const res = await fetch(`${BASE}/auth/register`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: carol.username, email: `${carol.username}@example.test`, password: 'carol password', display_name: 'Carol' }),
    });
    assert.equal(res.status, 201, await res.text());

    await alice.page.getByRole('button', { name: 'New group' }).click();
    await alice.page.getByLabel('Group name').fill(`Plans ${tag}`);
    for (const who of [bob.username, carol.username]) {
      await alice.page.getByLabel('Add people').first().fill(who);
      await alice.page.locator('#group-results button', { hasText: who }).click();
    }
    await alice.page.getByRole('button', { name: 'Create group' }).click();
    await alice.page.locator('#thread-title', { hasText: `Plans ${tag}` }).waitFor();
    await conversation(bob, `Plans ${tag}`).waitFor();

    await alice.page.getByRole('button', { name: 'Members' }).click();
    await alice.page.locator('#members-list li', { hasText: 'Carol' }).waitFor();
    await shot(alice, 'group-members.png');
    await alice.page.getByRole('button', { name: 'Remove Carol' }).click();
    await until('carol to leave the member list', async () =>
      (await alice.page.locator('#members-list li', { hasText: 'Carol' }).count()) === 0);
    await alice.page.locator('#members-dialog').getByRole('button', { name: 'Close' }).click();

    await conversation(bob, `Plans ${tag}`).click();
    await bob.page.locator('#messages li.system', { hasText: 'removed' }).waitFor();
    await send(bob, 'Group hello');
    await alice.page.locator('#messages li', { hasText: 'Group hello' }).waitFor();
  });

  await t.test('a mention stands out for the one it names', async () => {
    await send(alice, `@${bob.username} have a look`);
    await bob.page.locator('#messages li.message.mentioned', { hasText: 'have a look' }).waitFor();
    await alice.page.locator('#messages li', { hasText: 'have a look' }).waitFor();
    assert.equal(await alice.page.locator('#messages li.message.mentioned').count(), 0);
    // (The group's last message names no one again: later steps find conversations by name.)
    await send(alice, 'Thanks');
    await bob.page.locator('#messages li', { hasText: 'Thanks' }).waitFor();
  });

  await t.test('the mention is in the Activity feed; a conversation mutes in one click', async () => {
    const { page } = bob;
    await page.getByRole('button', { name: /^Activity/ }).click();
    const entry = page.locator('#activity-list li', { hasText: 'have a look' });
    await entry.waitFor();
    assert.match(await entry.textContent(), /Alice mentioned you in Plans/);
    await page.getByRole('button', { name: 'Mark all read' }).click();
    await until('no unread activity', async () => (await page.locator('#activity-count').isHidden()));
    await entry.getByRole('button').click();
    await page.locator('#thread-title', { hasText: `Plans ${tag}` }).waitFor();
    await page.getByRole('button', { name: 'Mute', exact: true }).click();
    await page.getByRole('button', { name: 'Unmute' }).waitFor();
    await page.getByRole('button', { name: 'Unmute' }).click();
    await page.getByRole('button', { name: 'Mute', exact: true }).waitFor();
  });

  await t.test('a reload stays signed in through the refresh cookie', async () => {
    if (BASE.startsWith('https:')) {
      // Over HTTPS the refresh token is a __Secure- cookie: Secure, HttpOnly, SameSite=Strict,
      // scoped to /auth, and the responses carry HSTS.
      const cookies = await bob.page.context().cookies(BASE + '/auth/refresh');
      const refresh = cookies.find((c) => c.name === '__Secure-refresh_token');
      assert.ok(refresh, `cookies: ${cookies.map((c) => c.name)}`);
      assert.deepEqual([refresh.secure, refresh.httpOnly, refresh.sameSite, refresh.path], [true, true, 'Strict', '/auth']);
      const res = await bob.page.goto(BASE);
      assert.match(res.headers()['strict-transport-security'] ?? '', /max-age=\d+/);
    }
    const before = bob.refreshes.length;
    await bob.page.reload();
    await bob.page.locator('#app-view').waitFor();
    await conversation(bob, display(alice)).waitFor();
    assert.ok(bob.refreshes.length > before, 'the reload restored the session with /auth/refresh');
    assert.equal(bob.refreshes.at(-1), 200);
    await until('bob live again', async () => (await bob.page.locator('body').getAttribute('data-connection')) === 'live');
  });

  await t.test('two tabs refreshing at once take turns and share one rotation', async () => {
    // Both tabs find their token wanting at the same moment and ask session.js to refresh.
    // The Web Lock serializes them: never two refreshes in flight (each presents the cookie
    // the previous one set), all 200, and the session stays alive. The first tab hands its
    // token to the other over the BroadcastChannel, so usually one refresh serves both; if
    // the second tab gets the lock before that message lands, it refreshes once more, in turn.
    const tab2 = await bob.context.newPage();
    const spans = [];
    for (const page of [bob.page, tab2]) {
      page.on('requestfinished', async (r) => {
        if (!r.url().endsWith('/auth/refresh')) return;
        const tm = r.timing();
        const res = await r.response();
        spans.push({ start: tm.startTime + tm.requestStart, end: tm.startTime + tm.responseEnd, status: res?.status() });
      });
    }
    await tab2.goto(BASE);
    await tab2.locator('#app-view').waitFor();
    await until('both tabs live', async () =>
      (await tab2.locator('body').getAttribute('data-connection')) === 'live');
    // The page's own session module (same URL, so the same instance the app uses).
    const session = (page, what) => page.evaluate(async (what) => {
      const src = document.querySelector('script[type=module]').src.replace(/app\.js$/, 'session.js');
      const m = await import(src);
      return what === 'refresh' ? m.refresh(m.token()) : m.token();
    }, what);
    for (let round = 1; round <= 3; round++) {
      spans.length = 0;
      const results = await Promise.all([session(bob.page, 'refresh'), session(tab2, 'refresh')]);
      assert.deepEqual(results, [true, true]);
      await sleep(300);
      const seen = JSON.stringify(spans);
      assert.ok(spans.length >= 1 && spans.length <= 2, `round ${round}: ${seen}`);
      assert.ok(spans.every((x) => x.status === 200), `round ${round}: ${seen}`);
      spans.sort((a, b) => a.start - b.start);
      if (spans.length === 2) assert.ok(spans[1].start >= spans[0].end, `round ${round}: overlapping refreshes ${seen}`);
      await until('both tabs to hold the same token', async () =>
        (await session(bob.page, 'token')) === (await session(tab2, 'token')));
    }
    await tab2.close();
    await conversation(bob, display(alice)).click();
    await conversation(alice, display(bob)).click();
    await send(bob, 'Still signed in after three shared refreshes');
    await alice.page.locator('#messages li', { hasText: 'Still signed in after three shared refreshes' }).waitFor();
  });

  await t.test('the session outlives the access token, and so does the socket', async () => {
    const seen = alice.refreshes.length;
    // The socket's deadline is the expiry of the newest token it holds, at most TTL from
    // now: without a re-presented token the server would close it (4003) during the wait.
    const socket = alice.sockets.at(-1);
    assert.ok(socket && !socket.isClosed(), 'alice has an open socket');
    const opened = alice.sockets.length;
    const heard = alice.frames.length;
    const hello = alice.frames.findLast((f) => f.ws === socket && f.type === 'hello');
    assert.ok(Number.isInteger(hello?.data?.token_expires_at), `hello carries token_expires_at: ${JSON.stringify(hello?.data)}`);
    await sleep((TTL + 3) * 1000);
    assert.ok(alice.refreshes.length > seen, `alice refreshed before her ${TTL} s token expired`);
    const since = alice.refreshes.slice(seen);
    assert.ok(since.every((s) => s === 200), `refreshes since: ${since}`);
    // The client sent each new token over the open socket (auth → auth.ok), so the socket
    // was never closed for an expired token and never reconnected.
    const frames = alice.frames.slice(heard);
    const oks = frames.filter((f) => f.type === 'auth.ok');
    assert.ok(oks.length > 0 && oks.every((f) => f.ws === socket), 'auth.ok on the same socket');
    assert.ok(oks.every((f) => Number.isInteger(f.data?.expires_at)), `auth.ok carries expires_at: ${JSON.stringify(oks.map((f) => f.data))}`);
    assert.equal(frames.filter((f) => f.type === 'error').length, 0, `no error frame: ${JSON.stringify(frames.filter((f) => f.type === 'error'))}`);
    assert.equal(frames.filter((f) => f.type === 'hello').length, 0, 'no new hello: the socket was not reconnected');
    assert.equal(alice.sockets.length, opened, 'no new socket across the token expiry');
    assert.equal(socket.isClosed(), false, 'the socket outlived the token its ticket was issued for');
    await conversation(alice, display(bob)).click();
    await conversation(bob, display(alice)).click();
    await send(alice, 'Still here after the token expired');
    await bob.page.locator('#messages li', { hasText: 'Still here after the token expired' }).waitFor();
    await send(bob, 'Me too');
    await alice.page.locator('#messages li', { hasText: 'Me too' }).waitFor();
  });

  await t.test('a forced WebSocket drop recovers with no missing message', async () => {
    assert.ok(bob.routes.length > 0, 'bob has a routed socket');
    bob.blockSocket = true;
    const { ws, server } = bob.routes.at(-1);
    ws.close({ code: 1011, reason: 'network down (test)' });
    server.close();
    await until('bob to see the connection drop', async () =>
      (await bob.page.locator('body').getAttribute('data-connection')) === 'reconnecting');
    await shot(bob, 'reconnecting.png');
    const missed = ['while away 1', 'while away 2', 'while away 3'];
    for (const text of missed) {
      await send(alice, text);
      await alice.page.locator('#messages li[data-seq]', { hasText: text }).waitFor();
    }
    bob.blockSocket = false;
    await until('bob live again', async () => (await bob.page.locator('body').getAttribute('data-connection')) === 'live', 30_000);
    for (const text of missed) await bob.page.locator('#messages li', { hasText: text }).waitFor();
    const seen = await thread(bob);
    const seqs = seen.map((m) => m.seq);
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `gapless: ${seqs}`);
    for (const text of missed) {
      assert.equal(seen.filter((m) => m.text.includes(text)).length, 1, `${text} exactly once`);
    }
  });

  await t.test('a narrow screen shows one pane at a time, keyboard first', async () => {
    const { page } = bob;
    await page.setViewportSize({ width: 390, height: 780 });
    assert.equal(await page.locator('.sidebar').isVisible(), false, 'the open thread takes the screen');
    await page.getByRole('button', { name: 'Back to conversations' }).click();
    await page.locator('#conversation-list').waitFor();
    // Keyboard only: the focused list entry opens with Enter, focus lands in the composer.
    await page.locator('#conversation-list button', { hasText: display(alice) }).focus();
    await page.keyboard.press('Enter');
    await until('focus in the message box', () => page.evaluate(() => document.activeElement?.id === 'composer-input'));
    await page.keyboard.type('Sent from the keyboard');
    await page.keyboard.press('Enter');
    await alice.page.locator('#messages li', { hasText: 'Sent from the keyboard' }).waitFor();
    await shot(bob, 'narrow-thread.png');
    await page.setViewportSize({ width: 1100, height: 720 });
  });

  await t.test('sign-out closes the socket and a reload lands on sign-in', async () => {
    const socket = alice.sockets.at(-1);
    assert.ok(socket && !socket.isClosed(), 'alice has an open socket');
    const closed = socket.waitForEvent('close', { timeout: WAIT });
    await alice.page.getByRole('button', { name: 'Sign out' }).click();
    await closed;
    await alice.page.locator('#auth-view').waitFor();
    await alice.page.reload();
    await alice.page.getByRole('button', { name: 'Sign in', exact: true }).waitFor();
    assert.equal(await alice.page.locator('#app-view').isVisible(), false);
    assert.equal(alice.refreshes.at(-1), 401, 'the reload tried the cleared cookie and was refused');
  });

  await t.test('no CSP violation or page error in either browser', () => {
    assert.deepEqual([...alice.problems, ...bob.problems], []);
  });

  await t.test('Swagger UI works under its CSP', async () => {
    const page = await alice.context.newPage();
    const problems = [];
    watch(page, problems);
    try {
      const res = await page.goto(`${BASE}/api/docs/`);
      assert.equal(res.status(), 200);
      const csp = res.headers()['content-security-policy'];
      assert.match(csp ?? '', /script-src 'self'/);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      assert.equal(res.headers()['x-content-type-options'], 'nosniff');
      // The first document's operations, one opened; then the second document's.
      await page.locator('.opblock').first().waitFor({ timeout: WAIT });
      await page.locator('.opblock-summary').first().click();
      await page.locator('.opblock-body').first().waitFor();
      await page.locator('.topbar select').selectOption({ label: '/auth/openapi.json' });
      await page.locator('.opblock-summary-path', { hasText: '/auth/login' }).first().waitFor({ timeout: WAIT });
      await sleep(500); // violations are reported asynchronously
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });
});

// ---- the account lifecycle in the browser (issue 18) -------------------------------------

/** Every mail the stack's SMTP server kept for `address` (its Maildir), oldest first, with
 * quoted-printable soft breaks and escapes undone. */
function mailsTo(address) {
  const dir = process.env.SWITCHBOARD_MAILDIR;
  assert.ok(dir, 'SWITCHBOARD_MAILDIR (scripts/test.sh)');
  const files = ['new', 'cur'].flatMap((sub) => {
    try {
      return readdirSync(join(dir, sub)).map((f) => join(dir, sub, f));
    } catch {
      return [];
    }
  });
  return files
    .map((f) => ({ at: statSync(f).mtimeMs, text: readFileSync(f, 'utf8') }))
    .sort((a, b) => a.at - b.at)
    .map(({ text }) => text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))))
    .filter((text) => new RegExp(`^To: .*${address.replace(/[.+]/g, '\\$&')}`, 'mi').test(text));
}

/** The token of the newest mailed link of `kind` (`verify-email`, `reset-password`). */
async function mailedToken(address, kind) {
  return until(`a ${kind} mail to ${address}`, () => {
    const found = mailsTo(address)
      .map((m) => new RegExp(`#${kind}=([A-Za-z0-9_-]+)`).exec(m)?.[1])
      .filter(Boolean);
    return found.at(-1);
  });
}

/** RFC 4648 base32 to bytes. */
function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  return Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
}

/** RFC 6238 TOTP (HMAC-SHA1, 6 digits, 30 s) at `unix` seconds. */
function totp(secret, unix) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unix / 30)));
  const h = createHmac('sha1', secret).update(counter).digest();
  const o = h[19] & 15;
  const bin = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
  return String(bin % 1_000_000).padStart(6, '0');
}

/**
 * An API call from Node through NGINX. `client`: the address the call claims to come from
 * (the test stack trusts 127.0.0.1 as a proxy, NGINX_TRUSTED_PROXIES), so sign-ups of one
 * test do not spend the per-address sign-up brake of the browser's.
 */
async function apiCall(method, path, body, token, client) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(client ? { 'x-forwarded-for': client } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

test('a confirmed address, a reset password and a two-factor sign-in, all from the browser', async () => {
  const username = `erin_${tag}`;
  const email = `${username}@example.test`;
  const signedUp = await apiCall('POST', '/auth/register', { username, email, password: 'first password here' }, undefined, '10.19.0.5');
  assert.equal(signedUp.status, 201, JSON.stringify(signedUp.body));
  const context = await browser.newContext({
    // A client address of its own (the stack trusts 127.0.0.1 as a proxy): the sign-ins of
    // each test spend their own per-address brake, not the others'.
    extraHTTPHeaders: { 'x-forwarded-for': '10.20.0.3' },
    viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const problems = [];
  watch(page, problems);
  try {
    // The link from the sign-up mail confirms the address.
    const verify = await mailedToken(email, 'verify-email');
    await page.goto(`${BASE}/#verify-email=${verify}`);
    await page.getByRole('status').filter({ hasText: 'is confirmed' }).waitFor({ timeout: WAIT });
    assert.equal(new URL(page.url()).hash, '', 'the token left the address bar');

    // Forgot password → the mailed link → a new password → sign in with it.
    await page.getByRole('button', { name: 'Forgot password?' }).click();
    await page.getByLabel("Your account's email address").fill(email);
    await page.getByRole('button', { name: 'Mail me a link' }).click();
    await page.getByRole('status').filter({ hasText: 'a link to reset its password is on its way' }).waitFor({ timeout: WAIT });
    const reset = await mailedToken(email, 'reset-password');
    await page.goto('about:blank');
    await page.goto(`${BASE}/#reset-password=${reset}`);
    await page.getByLabel('New password').fill('second password here');
    await page.getByRole('button', { name: 'Set password' }).click();
    await page.getByRole('status').filter({ hasText: 'Your password is set' }).waitFor({ timeout: WAIT });
    await shot({ page }, 'password-reset.png');

    // Two-factor on (through the API), then the browser signs in in two steps.
    // (From its own client address: the browser's sign-ins keep the per-address brake.)
    const login = await apiCall('POST', '/auth/login', { login: username, password: 'second password here' }, undefined, '10.19.0.3');
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const token = login.body.access_token;
    const enrolment = await apiCall('POST', '/auth/me/totp', { password: 'second password here' }, token);
    assert.equal(enrolment.status, 200);
    const secret = base32(enrolment.body.secret);
    const confirmedAt = Date.now() / 1000;
    const confirmed = await apiCall('POST', '/auth/me/totp/confirm', { code: totp(secret, confirmedAt) }, token);
    assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));

    const form = page.getByRole('tabpanel', { name: 'Sign in', exact: true });
    await form.getByLabel('Username or email').fill(username);
    await form.getByLabel('Password').fill('second password here');
    await form.getByRole('button', { name: 'Sign in', exact: true }).click();
    const code = page.getByLabel('Code from your authenticator app, or a recovery code');
    await code.waitFor({ timeout: WAIT });
    await shot({ page }, 'two-factor.png');
    // A code of a later step than the one that confirmed the enrolment (that one is spent).
    while (Math.floor(Date.now() / 1000 / 30) === Math.floor(confirmedAt / 30) || 30 - ((Date.now() / 1000) % 30) < 3) {
      await sleep(250);
    }
    await code.fill(totp(secret, Date.now() / 1000));
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.locator('#app-view').waitFor({ timeout: WAIT });
    await sleep(300);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

// ---- passkeys and the security page (issue 18) ------------------------------------------

// WebAuthn needs a domain (an IP address cannot be a relying party id): this part of the test
// opens the page as https://localhost, which the stack's auth accepts (WEBAUTHN_ORIGINS).
const SITE = BASE.replace('//127.0.0.1:', '//localhost:');

test('passkeys, two-factor enrolment, sessions and events from the security page', async () => {
  const username = `frank_${tag}`;
  const password = 'frank password here';
  const signedUp = await apiCall('POST', '/auth/register', { username, email: `${username}@example.test`, password }, undefined, '10.19.0.6');
  assert.equal(signedUp.status, 201, JSON.stringify(signedUp.body));
  const otherDevice = signedUp.body.access_token;
  const gina = await apiCall('POST', '/auth/register', { username: `gina_${tag}`, email: `gina_${tag}@example.test`, password }, undefined, '10.19.0.7');
  assert.equal(gina.status, 201);
  const ginaToken = gina.body.access_token;

  const context = await browser.newContext({
    // A client address of its own (the stack trusts 127.0.0.1 as a proxy): the sign-ins of
    // each test spend their own per-address brake, not the others'.
    extraHTTPHeaders: { 'x-forwarded-for': '10.20.0.4' },
    viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  watch(page, problems);
  // Chromium's virtual authenticator (DevTools protocol, WebAuthn domain): a platform
  // authenticator with resident keys and user verification, answering without a person.
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  // What the page sends, for the replays below.
  const sent = {};
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.method() === 'POST' && (path === '/auth/me/passkeys' || path === '/auth/login/passkey')) sent[path] = r.postDataJSON();
  });
  const security = page.locator('#security-dialog');
  const openSecurity = async () => {
    await page.getByRole('button', { name: 'Security' }).click();
    await security.locator('#security-sessions li').first().waitFor({ timeout: WAIT });
  };
  const signOut = async () => {
    if (await security.evaluate((d) => d.open)) await security.getByRole('button', { name: 'Close' }).click();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#auth-view').waitFor({ timeout: WAIT });
  };
  try {
    await page.goto(SITE);
    const form = page.getByRole('tabpanel', { name: 'Sign in', exact: true });
    await form.getByLabel('Username or email').fill(username);
    await form.getByLabel('Password').fill(password);
    await form.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.locator('#app-view').waitFor({ timeout: WAIT });

    // Sessions: this one and the API's, which this page signs out.
    await openSecurity();
    await until('two sessions listed', async () => (await security.locator('#security-sessions li').count()) === 2);
    await security.locator('#security-sessions li', { hasText: 'This device' }).waitFor();
    await security.locator('#security-sessions li button', { hasText: 'Sign out' }).click();
    await until('the other session gone', async () => (await security.locator('#security-sessions li').count()) === 1);
    assert.equal((await apiCall('GET', '/auth/me', undefined, otherDevice)).status, 401, 'the revoked session is over');

    // A passkey: a wrong password adds nothing; the right one does.
    const add = security.locator('#passkey-add');
    await add.getByLabel('Name for a new passkey').fill('Laptop');
    await add.getByLabel('Your password').fill('not the password');
    await add.getByRole('button', { name: 'Add a passkey' }).click();
    await add.locator('.form-error', { hasText: 'password is incorrect' }).waitFor({ timeout: WAIT });
    await add.getByLabel('Your password').fill(password);
    await add.getByRole('button', { name: 'Add a passkey' }).click();
    await security.locator('#security-passkeys li', { hasText: 'Laptop' }).waitFor({ timeout: WAIT });
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1);
    assert.equal(credentials[0].isResidentCredential, true, 'a discoverable credential (a passkey)');

    // Two-factor on from the page: the QR code shows, a code confirms, ten recovery codes.
    await security.getByLabel('Your password to turn it on').fill(password);
    await security.getByRole('button', { name: 'Turn on two-factor sign-in' }).click();
    await until('the QR code drawn', () => security.locator('#totp-qr').evaluate((img) => img.complete && img.naturalWidth > 0));
    const secret = base32((await security.locator('#totp-secret').textContent()).replace(/\s+/g, ''));
    await security.getByLabel('Code from the app', { exact: true }).fill(totp(secret, Date.now() / 1000));
    await security.getByRole('button', { name: 'Confirm' }).click();
    await until('ten recovery codes', async () => (await security.locator('#totp-code-list li').count()) === 10);
    const recoveryCodes = await security.locator('#totp-code-list li').allTextContents();
    await security.locator('#totp-state', { hasText: 'Recovery codes left: 10' }).waitFor({ timeout: WAIT });
    // With two-factor on, a password alone adds no passkey (it would sign in around the code).
    await add.getByLabel('Name for a new passkey').fill('Phone');
    await add.getByLabel('Your password').fill(password);
    await add.getByRole('button', { name: 'Add a passkey' }).click();
    await add.locator('.form-error', { hasText: 'two-factor sign-in is on' }).waitFor({ timeout: WAIT });
    assert.equal((await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials.length, 1);
    await shot({ page }, 'security.png');
    // Notification settings: groups notify for every message from now on.
    await security.getByLabel('Groups').selectOption('all');
    await security.getByRole('button', { name: 'Save notification settings' }).click();
    await security.locator('#security-status', { hasText: 'Notification settings saved.' }).waitFor({ timeout: WAIT });
    for (const text of ['Two-factor sign-in turned on', 'Passkey added (Laptop)', 'Session ended', 'Signed in']) {
      await security.locator('#security-events li', { hasText: text }).first().waitFor({ timeout: WAIT });
    }

    // Signed out, the passkey signs in with no password and no code.
    await signOut();
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await page.locator('#app-view').waitFor({ timeout: WAIT });
    const answer = sent['/auth/login/passkey'];
    assert.ok(answer?.ceremony && answer.credential, 'the page sent an assertion');

    // Replays of real answers: a used ceremony, an old assertion for a new challenge, another
    // person finishing this person's registration, another person removing this passkey.
    const replay = await apiCall('POST', '/auth/login/passkey', answer);
    assert.equal(replay.status, 400, `a used ceremony: ${JSON.stringify(replay.body)}`);
    const fresh = await apiCall('POST', '/auth/login/passkey/options');
    assert.equal(fresh.status, 200);
    assert.equal(fresh.body.options.publicKey.allowCredentials?.length ?? 0, 0, 'no credential named: nothing about who has an account');
    const stale = await apiCall('POST', '/auth/login/passkey', { ceremony: fresh.body.ceremony, credential: answer.credential });
    assert.equal(stale.status, 401, `an assertion for another challenge: ${JSON.stringify(stale.body)}`);
    const ginaOptions = await apiCall('POST', '/auth/me/passkeys/options', { password }, ginaToken);
    assert.equal(ginaOptions.status, 200);
    const stolen = await apiCall('POST', '/auth/me/passkeys',
      { ceremony: ginaOptions.body.ceremony, name: 'stolen', credential: sent['/auth/me/passkeys'].credential }, ginaToken);
    assert.equal(stolen.status, 400, `frank's attestation in gina's ceremony: ${JSON.stringify(stolen.body)}`);
    const frankCeremony = sent['/auth/me/passkeys'].ceremony;
    const foreign = await apiCall('POST', '/auth/me/passkeys',
      { ceremony: frankCeremony, name: 'x', credential: sent['/auth/me/passkeys'].credential }, ginaToken);
    assert.equal(foreign.status, 400, 'a used (and foreign) ceremony');
    await openSecurity();
    const passkeyId = await security.locator('#security-passkeys li[data-passkey]').getAttribute('data-passkey');
    assert.equal((await apiCall('DELETE', `/auth/me/passkeys/${passkeyId}`, undefined, ginaToken)).status, 404);
    assert.equal((await apiCall('GET', '/auth/me/passkeys', undefined, ginaToken)).body.passkeys.length, 0);

    // A recovery code turns two-factor off; removing the passkey ends its sign-ins.
    await security.getByLabel('Code from the app (or a recovery code) to turn it off').fill(recoveryCodes[0]);
    await security.getByRole('button', { name: 'Turn off' }).click();
    await security.locator('#totp-state', { hasText: 'Off.' }).waitFor({ timeout: WAIT });
    // This session was signed in with the passkey: removing it ends the session too.
    await security.getByRole('button', { name: 'Remove passkey Laptop' }).click();
    await page.locator('#auth-view').waitFor({ timeout: WAIT });
    const again = await apiCall('POST', '/auth/login', { login: username, password }, undefined, '10.19.0.4');
    assert.equal(again.status, 200, 'two-factor is off: the password alone signs in');
    const events = await apiCall('GET', '/auth/me/events', undefined, again.body.access_token);
    assert.ok(events.body.events.some((e) => e.kind === 'passkey_removed' && e.detail === 'Laptop'));
    assert.equal((await apiCall('GET', '/auth/me/passkeys', undefined, again.body.access_token)).body.passkeys.length, 0);
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    await page.locator('#signin-form .form-error', { hasText: 'was not accepted' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#app-view').isHidden(), true);
    await sleep(300);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

// ---- a push while away (issue 19) --------------------------------------------------------

test('a push for someone away reaches the service worker, shows, and links to the conversation', async () => {
  const push = process.env.SWITCHBOARD_PUSH_URL;
  assert.ok(push, 'SWITCHBOARD_PUSH_URL (scripts/test.sh)');
  const password = 'gail password here';
  const gail = await apiCall('POST', '/auth/register', { username: `gail_${tag}`, email: `gail_${tag}@example.test`, password }, undefined, '10.19.0.1');
  const hank = await apiCall('POST', '/auth/register', { username: `hank_${tag}`, email: `hank_${tag}@example.test`, password, display_name: 'Hank' }, undefined, '10.19.0.2');
  assert.equal(gail.status, 201);
  assert.equal(hank.status, 201);
  const direct = await apiCall('POST', '/api/conversations', { participant_ids: [gail.body.user.id] }, hank.body.access_token);
  assert.equal(direct.status, 201, JSON.stringify(direct.body));
  const conversationId = direct.body.id;

  // Gail's browser subscription lives at the test push service, which decrypts what comes.
  const browserSub = await (await fetch(`${push}/subscriptions`, { method: 'POST' })).json();
  const subscribed = await apiCall('POST', '/api/push/subscriptions',
    { endpoint: browserSub.endpoint, keys: browserSub.keys }, gail.body.access_token);
  assert.equal(subscribed.status, 201, JSON.stringify(subscribed.body));
  // She is away (no socket): Hank's mention is pushed, encrypted, and decrypted over there.
  const sent = await apiCall('POST', `/api/conversations/${conversationId}/messages`,
    { content: `@gail_${tag} lunch at noon?` }, hank.body.access_token);
  assert.equal(sent.status, 201);
  const payload = await until('the push at the push service', async () => {
    const seen = await (await fetch(`${push}/subscriptions/${browserSub.id}`)).json();
    assert.deepEqual(seen.refused, []);
    return seen.received[0]?.payload;
  });
  assert.equal(payload.message_id, sent.body.id);

  const context = await browser.newContext({
    // A client address of its own (the stack trusts 127.0.0.1 as a proxy): the sign-ins of
    // each test spend their own per-address brake, not the others'.
    extraHTTPHeaders: { 'x-forwarded-for': '10.20.0.5' },
    viewport: { width: 1100, height: 720 } });
  await context.grantPermissions(['notifications'], { origin: SITE });
  const page = await context.newPage();
  const problems = [];
  watch(page, problems);
  const cdp = await context.newCDPSession(page);
  const registrations = new Map();
  cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations: list }) => {
    for (const r of list) if (!r.isDeleted) registrations.set(r.scopeURL, r.registrationId);
  });
  await cdp.send('ServiceWorker.enable');
  try {
    await page.goto(SITE);
    const form = page.getByRole('tabpanel', { name: 'Sign in', exact: true });
    await form.getByLabel('Username or email').fill(`gail_${tag}`);
    await form.getByLabel('Password').fill(password);
    await form.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.locator('#app-view').waitFor({ timeout: WAIT });
    const registrationId = await until('the service worker registered', () => registrations.get(`${SITE}/`));
    await until('the service worker active', () => page.evaluate(async () =>
      (await navigator.serviceWorker.ready).active?.state === 'activated'));
    assert.equal(await page.evaluate(() => Notification.permission), 'granted');

    // The payload the server sent, handed to the worker as the browser's push service would
    // (again until it shows: a delivery racing the worker's activation can be dropped; the
    // notification's tag makes a repeat replace, not add).
    const notifications = () => page.evaluate(async () => {
      const list = await (await navigator.serviceWorker.ready).getNotifications();
      return list.length ? list.map((n) => ({ title: n.title, body: n.body, tag: n.tag })) : null;
    });
    const shown = await until('the notification shown', async () => {
      await cdp.send('ServiceWorker.deliverPushMessage', { origin: SITE, registrationId, data: JSON.stringify(payload) });
      await sleep(500);
      return notifications();
    });
    assert.deepEqual(shown, [{ title: 'Hank', body: `Hank: @gail_${tag} lunch at noon?`, tag: conversationId }]);

    // Its click opens /#conversation=<id> when no tab is open: that link opens the thread.
    await page.goto('about:blank');
    await page.goto(`${SITE}/#conversation=${conversationId}`);
    await page.locator('#thread-title', { hasText: 'Hank' }).waitFor({ timeout: WAIT });
    await page.locator('#messages li', { hasText: 'lunch at noon?' }).waitFor({ timeout: WAIT });
    assert.equal(new URL(page.url()).hash, '');
    await sleep(300);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test('reactions, a pin, earlier versions, marking unread and blocking, from the browser', async () => {
  const password = 'ivy and jack password';
  const ivy = await apiCall('POST', '/auth/register', { username: `ivy_${tag}`, email: `ivy_${tag}@example.test`, password, display_name: 'Ivy' }, undefined, '10.21.0.1');
  const jack = await apiCall('POST', '/auth/register', { username: `jack_${tag}`, email: `jack_${tag}@example.test`, password, display_name: 'Jack' }, undefined, '10.21.0.2');
  assert.equal(ivy.status, 201);
  assert.equal(jack.status, 201);
  const jackToken = jack.body.access_token;
  const direct = await apiCall('POST', '/api/conversations', { participant_ids: [ivy.body.user.id] }, jackToken);
  assert.equal(direct.status, 201, JSON.stringify(direct.body));
  const conv = direct.body.id;
  const first = await apiCall('POST', `/api/conversations/${conv}/messages`, { content: 'hello ivy' }, jackToken);
  assert.equal(first.status, 201);
  const msg = first.body.id;

  const context = await browser.newContext({
    extraHTTPHeaders: { 'x-forwarded-for': '10.21.0.5' },
    viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const problems = [];
  watch(page, problems);
  page.on('dialog', (d) => d.accept());
  try {
    await page.goto(BASE);
    const form = page.getByRole('tabpanel', { name: 'Sign in', exact: true });
    await form.getByLabel('Username or email').fill(`ivy_${tag}`);
    await form.getByLabel('Password').fill(password);
    await form.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.locator('#app-view').waitFor({ timeout: WAIT });
    await until('Ivy connected', async () => (await page.locator('body').getAttribute('data-connection')) === 'live');
    await page.locator('#conversation-list button', { hasText: 'Jack' }).click();
    const item = page.locator('#messages li', { hasText: 'hello ivy' });
    await item.waitFor({ timeout: WAIT });

    // React from the picker; Jack's reaction arrives live.
    await item.getByRole('button', { name: 'Add reaction' }).click();
    await item.getByRole('button', { name: 'React with 👍' }).click();
    await item.getByRole('button', { name: '👍 1, including you' }).waitFor({ timeout: WAIT });
    const jacks = await apiCall('PUT', `/api/messages/${msg}/reactions/${encodeURIComponent('👍')}`, undefined, jackToken);
    assert.equal(jacks.status, 200, JSON.stringify(jacks.body));
    assert.equal(jacks.body.reactions[0].count, 2);
    assert.equal(jacks.body.reactions[0].me, true);
    await item.getByRole('button', { name: '👍 2, including you' }).waitFor({ timeout: WAIT });
    // Taking hers back leaves Jack's.
    await item.getByRole('button', { name: '👍 2, including you' }).click();
    await item.getByRole('button', { name: '👍 1', exact: true }).waitFor({ timeout: WAIT });

    // Pin it; the pinned list shows it.
    await item.getByRole('button', { name: 'Pin', exact: true }).click();
    await item.getByLabel('Pinned').waitFor({ timeout: WAIT });
    await page.getByRole('button', { name: 'Pinned', exact: true }).click();
    await page.locator('#pins-list li', { hasText: 'hello ivy' }).waitFor({ timeout: WAIT });
    await page.locator('#pins-dialog').getByRole('button', { name: 'Close' }).click();

    // Jack edits it: the earlier text is a click away.
    const edited = await apiCall('PATCH', `/api/messages/${msg}`, { content: 'hello, Ivy!' }, jackToken);
    assert.equal(edited.status, 200);
    const editedItem = page.locator('#messages li', { hasText: 'hello, Ivy!' });
    await editedItem.getByRole('button', { name: 'Edited: show earlier versions' }).click();
    await page.locator('#versions-list li', { hasText: 'hello ivy' }).waitFor({ timeout: WAIT });
    await page.locator('#versions-dialog').getByRole('button', { name: 'Close' }).click();

    // Mark unread from it: back to the list with a badge; opening it reads it again.
    await editedItem.getByRole('button', { name: 'Mark unread from here' }).click();
    await page.locator('#conversation-list button[aria-label="Jack, 1 unread"]').waitFor({ timeout: WAIT });
    const marker = await until('the unread mark stored', async () => {
      const list = await apiCall('GET', '/api/conversations', undefined, ivy.body.access_token);
      const c = list.body.conversations.find((x) => x.id === conv);
      return c?.unread_from_seq === first.body.seq ? c : null;
    });
    assert.equal(marker.last_read_seq, first.body.seq, 'the read marker stayed');
    await page.locator('#conversation-list button', { hasText: 'Jack' }).click();
    await page.locator('#conversation-list button[aria-label="Jack"]').waitFor({ timeout: WAIT });

    // Block Jack: the conversation turns read-only for both; unblock opens it again.
    await page.getByRole('button', { name: 'Block' }).click();
    await page.locator('#blocked-note').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.locator('#composer').isHidden(), true);
    const refused = await apiCall('POST', `/api/conversations/${conv}/messages`, { content: 'let me in' }, jackToken);
    assert.equal(refused.status, 403);
    await page.getByRole('button', { name: 'Unblock' }).click();
    await page.locator('#composer').waitFor({ state: 'visible', timeout: WAIT });
    const again = await apiCall('POST', `/api/conversations/${conv}/messages`, { content: 'thanks' }, jackToken);
    assert.equal(again.status, 201);
    await page.locator('#messages li', { hasText: 'thanks' }).waitFor({ timeout: WAIT });

    // An urgent message: marked for both; its tick goes sent → delivered → read as Jack's
    // client fetches and then reads it.
    await page.getByLabel('Priority').selectOption('urgent');
    await send({ page }, 'call me now');
    const mine = page.locator('#messages li', { hasText: 'call me now' });
    await mine.locator('.priority', { hasText: 'Urgent' }).waitFor({ timeout: WAIT });
    assert.equal(await page.getByLabel('Priority').inputValue(), 'normal');
    await mine.getByRole('button', { name: 'Sent: show receipts' }).waitFor({ timeout: WAIT });
    const urgent = await until('Jack fetched the urgent message', async () => {
      const page1 = await apiCall('GET', `/api/conversations/${conv}/messages`, undefined, jackToken);
      return page1.body?.messages?.find((m) => m.content === 'call me now');
    });
    assert.equal(urgent.priority, 'urgent');
    await mine.getByRole('button', { name: 'Delivered: show receipts' }).waitFor({ timeout: WAIT });
    const read = await apiCall('POST', `/api/conversations/${conv}/read`, { seq: urgent.seq }, jackToken);
    assert.equal(read.status, 200);
    await mine.getByRole('button', { name: 'Read: show receipts' }).click();
    await page.locator('#receipts-list li', { hasText: 'Read · read' }).waitFor({ timeout: WAIT });
    await page.locator('#receipts-dialog').getByRole('button', { name: 'Close' }).click();

    // Forward Jack's message into a group with him: it arrives marked as forwarded.
    const pals = await apiCall('POST', '/api/conversations', { participant_ids: [ivy.body.user.id], name: 'Pals' }, jackToken);
    assert.equal(pals.status, 201);
    await page.locator('#conversation-list button', { hasText: 'Pals' }).waitFor({ timeout: WAIT });
    await page.locator('#messages li', { hasText: 'thanks' }).getByRole('button', { name: 'Forward' }).click();
    await page.locator('#forward-list').getByRole('button', { name: 'Pals' }).click();
    const copies = await until('the copy in Pals', async () => {
      const got = await apiCall('GET', `/api/conversations/${pals.body.id}/messages`, undefined, jackToken);
      return got.body?.messages?.find((m) => m.content === 'thanks');
    });
    assert.equal(copies.forwarded_from.sender_id, jack.body.user.id);
    await page.locator('#conversation-list button', { hasText: 'Pals' }).click();
    await page.locator('#messages li', { hasText: 'Forwarded from Jack' }).waitFor({ timeout: WAIT });

    // A thread under the forwarded copy: Ivy replies in it, Jack's reply arrives live there,
    // the main timeline stays as it was and the root counts the replies.
    const rootItem = page.locator('#messages li', { hasText: 'Forwarded from Jack' });
    await rootItem.getByRole('button', { name: 'Reply in thread' }).click();
    await page.getByRole('textbox', { name: 'Reply in thread' }).fill('on it');
    await page.locator('#thread-dialog').getByRole('button', { name: 'Reply', exact: true }).click();
    await page.locator('#thread-replies li', { hasText: 'on it' }).waitFor({ timeout: WAIT });
    const jackReply = await apiCall('POST', `/api/conversations/${pals.body.id}/messages`,
      { content: 'great, thanks', thread_root_id: copies.id }, jackToken);
    assert.equal(jackReply.status, 201, JSON.stringify(jackReply.body));
    await page.locator('#thread-replies li', { hasText: 'great, thanks' }).waitFor({ timeout: WAIT });
    await page.locator('#thread-dialog').getByRole('button', { name: 'Close' }).click();
    await rootItem.getByRole('button', { name: '2 replies in thread' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#messages li', { hasText: 'great, thanks' }).count(), 0);
    await shot({ page }, 'interactions.png');
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});
