// The web client the server serves at "/" (web/), used the way a person uses it: two
// people in two browser profiles of Debian's Chromium, through the page's forms and
// buttons only. ctest runs it as `browser_webclient`:
//
//   node tests/browser/webclient_test.mjs build/switchboard
//
// Sign up, start a direct chat by username, send, see the message arrive with an unread
// badge, read it (the sender's ticks turn to read), typing and presence, markup sent as
// text stays text, an image attachment shown to the other side, a reaction, an edit,
// delete, reload (still logged in, history back), a second device that is not sent old
// messages, search, a group and its administration (rename, admins, removal), and the page's own rules: its Content-Security-Policy is
// in force and nothing on the page breaks it (no console errors, no page errors). Then
// access tokens that expire mid-chat.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { WAIT_MS, checker, launch, setup, startServer, stopServer } from './harness.mjs';

const { chromium, bin, executablePath } = await setup('webclient_test');
const { check, fail, failures } = checker();

// A 2x2 PNG (red, green / blue, white).
const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001249444154789c63f8cfc0c000c20cff81' +
  '00001fee05fb0bd9688b0000000049454e44ae426082', 'hex');

const problems = [];  // console errors and page errors, from every page
const pages = {};  // the first two people's pages, for what they showed when a check failed
const sockets = new Map();  // page -> WebSockets it opened

async function person(browser, origin, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Chromium logs every 4xx answer to fetch() as a console error; the page asks for an
  // unknown username on purpose (404). Anything else logged as an error is a problem.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 404/.test(m.text())) problems.push(`${name} console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name} page error: ${e.message}`));
  // Confirmations are accepted; a prompt (Edit) gets the text the test set in
  // page.promptAnswer, else keeps its default.
  page.on('dialog', (d) => d.accept(d.type() === 'prompt' ? page.promptAnswer : undefined));
  sockets.set(page, 0);
  page.on('websocket', () => sockets.set(page, sockets.get(page) + 1));
  await page.goto(origin + '/');
  return page;
}

async function signUp(page, username) {
  await page.fill('#login-username', username);
  await page.fill('#login-password', 'correct horse ' + username);
  await page.click('#signup-submit');
  await page.waitForSelector('#app:not([hidden])', { timeout: WAIT_MS });
}

const conversationItem = (page, name) => page.locator('#conversations li', { has: page.locator('.name', { hasText: name }) });
const bubble = (page, text) => page.locator('#message-list li.msg', { hasText: text });

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-webclient-'));
let server;
let browser;
try {
  server = await startServer(bin, dataDir);
  const origin = `http://${server.addr}`;
  browser = await launch(chromium, executablePath);
  console.log(`browser_webclient: ${browser.version()}, page and API on ${origin}`);

  const head = await fetch(origin + '/');
  const csp = head.headers.get('content-security-policy') || '';
  check(head.status === 200 && /text\/html/.test(head.headers.get('content-type')) &&
        csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"),
        'the page is served at / with its Content-Security-Policy', { status: head.status, csp });

  const alice = await person(browser, origin, 'alice');
  const bob = await person(browser, origin, 'bob');
  Object.assign(pages, { alice, bob });
  await signUp(alice, 'alice');
  await signUp(bob, 'bob');
  check(await alice.textContent('#me-name') === 'alice', 'signed up and logged in through the form');

  // A username that does not exist: a clear error, nothing created.
  await alice.fill('#new-direct-username', 'nobody-here');
  await alice.press('#new-direct-username', 'Enter');
  await alice.waitForFunction(() => document.getElementById('sidebar-error').textContent !== '', null, { timeout: WAIT_MS });
  check(/no such user/.test(await alice.textContent('#sidebar-error')), 'an unknown username is refused with a message',
        await alice.textContent('#sidebar-error'));

  // Alice starts a chat with Bob by username and writes.
  await alice.fill('#new-direct-username', 'bob');
  await alice.press('#new-direct-username', 'Enter');
  await alice.waitForSelector('#conversation:not([hidden])', { timeout: WAIT_MS });
  check(await alice.textContent('#conv-title') === 'bob', 'a direct chat opened by username', await alice.textContent('#conv-title'));
  await alice.fill('#text', 'hello bob, <b>not bold</b> <img src=x onerror="window.pwned=1">');
  await alice.press('#text', 'Enter');
  await bubble(alice, 'hello bob').locator('.ticks[title="sent"], .ticks[title="delivered"], .ticks[title="read"]')
    .waitFor({ timeout: WAIT_MS });
  check(true, 'the message is acknowledged (one tick)');

  // Bob sees the conversation appear with an unread badge, live.
  const item = conversationItem(bob, 'alice');
  await item.locator('.badge', { hasText: '1' }).waitFor({ timeout: WAIT_MS });
  check(/hello bob/.test(await item.locator('.preview').textContent()) && await bob.title() === '(1) Switchboard',
        'the recipient sees the new chat, its preview and 1 unread (also in the tab title)', await bob.title());
  await item.click();
  const got = bubble(bob, 'hello bob');
  await got.waitFor({ timeout: WAIT_MS });
  const markup = await got.evaluate((li) => ({ text: li.querySelector('.body').textContent, tags: li.querySelectorAll('b, img').length }));
  check(markup.text.includes('<b>not bold</b>') && markup.tags === 0 && !(await bob.evaluate(() => window.pwned)),
        'markup in a message is shown as text, never run', markup);
  await alice.waitForSelector('#message-list li.msg.mine .ticks.read', { timeout: WAIT_MS });
  check(true, "the sender's ticks turn to read once the recipient opens the chat");
  check((await item.locator('.badge').count()) === 0, 'the badge is gone once read');

  // Presence and typing.
  await alice.waitForFunction(() => document.getElementById('conv-status').textContent === 'online', null, { timeout: WAIT_MS });
  check(true, 'the other person shows as online');
  await bob.type('#text', 'hi al', { delay: 20 });
  await alice.waitForFunction(() => /bob is typing/.test(document.getElementById('conv-typing').textContent), null,
                              { timeout: WAIT_MS });
  check(true, 'typing shows on the other side');
  await bob.type('#text', 'ice, zebrafish tonight?');
  await bob.press('#text', 'Enter');
  await bubble(alice, 'zebrafish tonight').waitFor({ timeout: WAIT_MS });
  await alice.waitForFunction(() => document.getElementById('conv-typing').textContent === '', null, { timeout: WAIT_MS });
  check(true, 'the reply arrives and the typing line clears');

  // An image: uploaded from the file picker, shown on the other side.
  await alice.setInputFiles('#attach', { name: 'dot.png', mimeType: 'image/png', buffer: PNG });
  const img = bob.locator('#message-list li.msg img');
  await img.waitFor({ timeout: WAIT_MS });
  await bob.waitForFunction(() => {
    const i = document.querySelector('#message-list li.msg img');
    return i && i.src.startsWith('blob:') && i.complete && i.naturalWidth === 2;
  }, null, { timeout: WAIT_MS });
  check(true, 'an image sent from the file picker is shown to the recipient');

  // React and edit: Bob reacts to Alice's first message, then edits one of his own.
  const first = bubble(bob, 'hello bob');
  await first.hover();
  await first.locator('.actions button[title="React"]').click();
  await bubble(alice, 'hello bob').locator('.reactions').waitFor({ timeout: WAIT_MS });
  check((await bubble(alice, 'hello bob').locator('.reactions').textContent()) === '👍',
        "a reaction shows under the message on the author's side");
  await bob.fill('#text', 'see you at the zoo');
  await bob.press('#text', 'Enter');
  const zoo = bubble(bob, 'see you at the zoo');
  await zoo.locator('.ticks:not([title="pending"])').waitFor({ timeout: WAIT_MS });
  bob.promptAnswer = 'see you at the aquarium';
  await zoo.hover();
  await zoo.locator('.actions button', { hasText: 'Edit' }).click();
  await bubble(alice, 'see you at the aquarium').waitFor({ timeout: WAIT_MS });
  check((await bubble(alice, 'see you at the zoo').count()) === 0 &&
        /edited/.test(await bubble(alice, 'see you at the aquarium').locator('.meta').textContent()),
        'an edit replaces the text on the other side, marked edited');

  // Delete: the recipient sees the tombstone.
  const mine = bubble(alice, 'hello bob');
  await mine.hover();
  await mine.locator('.actions button', { hasText: 'Delete' }).click();
  await bob.locator('#message-list li.msg.deleted', { hasText: 'This message was deleted' }).waitFor({ timeout: WAIT_MS });
  check((await bubble(bob, 'hello bob').count()) === 0, 'a deleted message becomes a tombstone for the recipient');
  check(await conversationItem(bob, 'alice').locator('.preview').textContent() === '',
        'the list preview follows the newest message (a delete: empty, as the server lists it)',
        await conversationItem(bob, 'alice').locator('.preview').textContent());

  // A reload keeps the session (refresh token) and brings the history back.
  await alice.reload();
  await alice.waitForSelector('#app:not([hidden])', { timeout: WAIT_MS });
  await conversationItem(alice, 'bob').click();
  await bubble(alice, 'zebrafish tonight').waitFor({ timeout: WAIT_MS });
  check((await alice.locator('#message-list li.msg.deleted').count()) === 1 && (await alice.locator('#message-list img').count()) === 1,
        'after a reload: still logged in, history with the tombstone and the image');
  check((await bubble(alice, 'see you at the aquarium').count()) === 1 && (await bubble(alice, 'see you at the zoo').count()) === 0,
        'after a reload: the edit is in the history too');
  check((await conversationItem(alice, 'bob').locator('.badge').count()) === 0,
        "after a reload: no unread badge for what was already read", await conversationItem(alice, 'bob').textContent());

  // Alice on a second browser (a new device): the list and history are there, and the
  // socket replays none of the old messages (the page resumes from what the list shows).
  const alice2 = await person(browser, origin, 'alice-2');
  const replayed = [];
  alice2.on('websocket', (ws) => ws.on('framereceived', (f) => {
    if (typeof f.payload === 'string' && f.payload.includes('"event":"message"')) replayed.push(f.payload);
  }));
  await alice2.fill('#login-username', 'alice');
  await alice2.fill('#login-password', 'correct horse alice');
  await alice2.click('#login-submit');
  await alice2.waitForSelector('#app:not([hidden])', { timeout: WAIT_MS });
  await alice2.waitForFunction(() => document.getElementById('conn-state').classList.contains('online'), null,
                               { timeout: WAIT_MS });
  await conversationItem(alice2, 'bob').click();
  await bubble(alice2, 'zebrafish tonight').waitFor({ timeout: WAIT_MS });
  check(replayed.length === 0, 'a new device is not sent the old messages over the socket (history comes on demand)',
        { replayed: replayed.length });
  await alice2.context().close();

  // Search (the index lags the commit by up to search.index_delay_ms).
  let found = 0;
  for (let i = 0; i < 40 && !found; i++) {
    await alice.fill('#search-q', 'zebrafish');
    await alice.press('#search-q', 'Enter');
    await alice.waitForSelector('#search-results:not([hidden])', { timeout: WAIT_MS });
    found = await alice.locator('#search-list li', { hasText: 'zebrafish tonight' }).count();
    if (!found) await alice.waitForTimeout(250);
  }
  check(found === 1, 'search finds the message');

  // A group: created from the form by usernames; members see who wrote what.
  await alice.click('#search-close');
  await alice.fill('#new-group-title', 'Trip planning');
  await alice.fill('#new-group-members', 'bob');
  await alice.click('#new-group button');
  await alice.waitForFunction(() => document.getElementById('conv-title').textContent === 'Trip planning', null,
                              { timeout: WAIT_MS });
  await alice.fill('#text', 'train at nine');
  await alice.press('#text', 'Enter');
  await conversationItem(bob, 'Trip planning').click();
  const groupMsg = bubble(bob, 'train at nine');
  await groupMsg.locator('.who', { hasText: 'alice' }).waitFor({ timeout: WAIT_MS });
  check(await bob.textContent('#conv-status') === '2 members', 'a group made from the form; members see the sender of each message',
        await bob.textContent('#conv-status'));
  // Bob leaves; Alice sees one member left.
  await bob.click('#leave');
  await bob.waitForSelector('#empty:not([hidden])', { timeout: WAIT_MS });
  check((await conversationItem(bob, 'Trip planning').count()) === 0, 'leaving a group removes it from the list');
  // Alice, the owner, sees him gone when she opens the group, and adds him back.
  await conversationItem(alice, 'Trip planning').click();
  await alice.waitForFunction(() => document.getElementById('conv-status').textContent === '1 member', null,
                              { timeout: WAIT_MS });
  await bubble(alice, 'train at nine').waitFor({ timeout: WAIT_MS });  // the open is done
  await alice.fill('#add-member', 'bob');
  await alice.click('#group-tools button[type=submit]');
  await alice.waitForFunction(() => document.getElementById('conv-status').textContent === '2 members', null,
                              { timeout: WAIT_MS });
  await conversationItem(bob, 'Trip planning').waitFor({ timeout: WAIT_MS });
  check(true, 'the owner adds a member by username, and the group is back in his list at once');

  // The member panel: the owner renames the group, makes Bob an admin (who then may
  // rename but not remove the owner), dismisses him, and removes him.
  const memberRow = (page, name) => page.locator('#member-list li', { has: page.locator('.name', { hasText: name }) });
  await alice.click('#members-toggle');
  await memberRow(alice, 'bob').waitFor({ timeout: WAIT_MS });
  check(await memberRow(alice, 'alice').locator('.role').textContent() === 'owner' &&
        await memberRow(alice, 'bob').locator('.role').textContent() === '' &&
        (await memberRow(alice, 'alice').locator('button').count()) === 0,
        'the member panel lists the members with their roles, and no action on oneself');
  await alice.fill('#rename-title', 'Trip 2027');
  await alice.click('#rename-form button');
  await alice.waitForFunction(() => document.getElementById('conv-title').textContent === 'Trip 2027', null,
                              { timeout: WAIT_MS });
  await conversationItem(alice, 'Trip 2027').waitFor({ timeout: WAIT_MS });
  await conversationItem(bob, 'Trip 2027').waitFor({ timeout: WAIT_MS });
  check(true, 'the owner renames the group (header and list, and the other member\'s list at once)');
  await memberRow(alice, 'bob').locator('button', { hasText: 'Make admin' }).click();
  await memberRow(alice, 'bob').locator('.role', { hasText: 'admin' }).waitFor({ timeout: WAIT_MS });
  await alice.fill('#text', 'you are an admin now');
  await alice.press('#text', 'Enter');
  await conversationItem(bob, 'Trip 2027').click();
  await bubble(bob, 'you are an admin now').waitFor({ timeout: WAIT_MS });
  await bob.click('#members-toggle');
  await memberRow(bob, 'alice').waitFor({ timeout: WAIT_MS });
  check(!(await bob.locator('#rename-form').isHidden()) &&
        (await memberRow(bob, 'alice').locator('button').count()) === 0,
        'an admin may rename, and has no button against the owner');
  await memberRow(alice, 'bob').locator('button', { hasText: 'Dismiss admin' }).click();
  await memberRow(alice, 'bob').locator('button', { hasText: 'Make admin' }).waitFor({ timeout: WAIT_MS });
  await memberRow(alice, 'bob').locator('button', { hasText: 'Remove' }).click();
  await alice.waitForFunction(() => document.getElementById('conv-status').textContent === '1 member', null,
                              { timeout: WAIT_MS });
  check((await memberRow(alice, 'bob').count()) === 0, 'the owner dismisses an admin and removes a member');
  // Bob had the group open: his page closes it and drops it from his list.
  await bob.waitForSelector('#empty:not([hidden])', { timeout: WAIT_MS });
  check((await conversationItem(bob, 'Trip 2027').count()) === 0, 'the removed member\'s page drops the group at once');

  // Log out: back to the form, and the session is gone after a reload.
  await bob.click('#logout');
  await bob.waitForSelector('#login:not([hidden])', { timeout: WAIT_MS });
  await bob.reload();
  await bob.waitForSelector('#login:not([hidden])', { timeout: WAIT_MS });
  check(await bob.evaluate(() => localStorage.getItem('sb.session')) === null, 'log out forgets the session');

  check(problems.length === 0, 'no console errors or page errors (the CSP allows everything the page does)', problems);

  // Tokens that expire: with 10 s access tokens the server closes each socket with
  // 1008 when its token runs out; the page refreshes its tokens (before expiry and
  // after the close), reconnects, and chatting goes on.
  await alice.context().close();
  await bob.context().close();
  await stopServer(server);
  server = await startServer(bin, fs.mkdtempSync(path.join(dataDir, 'ttl-')), ['--set', 'auth.access_ttl_s=10']);
  const origin2 = `http://${server.addr}`;
  const carol = await person(browser, origin2, 'carol');
  const dave = await person(browser, origin2, 'dave');
  await signUp(carol, 'carol');
  await signUp(dave, 'dave');
  await carol.fill('#new-direct-username', 'dave');
  await carol.press('#new-direct-username', 'Enter');
  await carol.waitForSelector('#conversation:not([hidden])', { timeout: WAIT_MS });
  await carol.fill('#text', 'before the tokens expire');
  await carol.press('#text', 'Enter');
  await conversationItem(dave, 'carol').click();
  await bubble(dave, 'before the tokens expire').waitFor({ timeout: WAIT_MS });
  await carol.waitForTimeout(13000);  // past one token lifetime
  const opened = sockets.get(carol);
  await dave.fill('#text', 'after they expired');
  await dave.press('#text', 'Enter');
  await bubble(carol, 'after they expired').waitFor({ timeout: WAIT_MS });
  await carol.fill('#text', 'and back');
  await carol.press('#text', 'Enter');
  await bubble(dave, 'and back').waitFor({ timeout: WAIT_MS });
  check(opened >= 2, 'chatting goes on across expired access tokens (the socket was closed and opened again)',
        { sockets: opened });
  check(problems.length === 0, 'still no console errors or page errors', problems);
} catch (e) {
  fail(e);
  if (problems.length) console.log('page problems:\n' + problems.join('\n'));
  // What each page showed: its error line, the open conversation's header.
  for (const [page, who] of [[pages.alice, 'alice'], [pages.bob, 'bob']]) {
    if (!page || page.isClosed()) continue;
    const shown = await page.evaluate(() => ({
      error: document.getElementById('sidebar-error').textContent,
      title: document.getElementById('conv-title').textContent,
      status: document.getElementById('conv-status').textContent,
      list: [...document.querySelectorAll('#conversations .name')].map((n) => n.textContent),
    })).catch((err) => String(err));
    console.log(`${who}'s page: ${JSON.stringify(shown)}`);
  }
  if (server) console.log('server log:\n' + server.log());
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopServer(server);
  fs.rmSync(dataDir, { recursive: true, force: true });
}
console.log(failures() ? `browser_webclient: ${failures()} failed` : 'browser_webclient: all passed');
process.exit(failures() ? 1 : 0);
