// Switchboard in a real browser: Debian's Chromium, driven by playwright-core, against
// the real server binary on loopback. ctest runs it as `browser_chat`:
//
//   node tests/browser/chat_test.mjs build/switchboard
//
// Two pages are served by this script from an origin of their own (another port, so
// every call is cross-origin, as for a web client hosted apart from the API). The
// server lists that origin in server.allowed_origins. What a web client does is done
// by the browser's own fetch and WebSocket, nothing else:
//   - sign up and log in over REST (CORS preflights included), list conversations;
//   - open /v1/ws with ?access_token= (browsers cannot set Authorization on a
//     WebSocket), chat: message, message_ack, DELIVERED and READ receipts, typing;
//   - reload the page and resume: what arrived meanwhile is replayed;
//   - upload an attachment and download a byte range of it;
//   - a page of an origin not listed can neither read a REST answer nor open the
//     WebSocket, even with a valid token.
// Chromium comes from Debian (scripts/deps.sh installs it with SB_WITH_BROWSER=1, as
// `./dev test` does); the path can be overridden with SB_CHROMIUM.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { WAIT_MS, checker, launch, setup, startServer, stopServer } from './harness.mjs';

const { chromium, bin, executablePath } = await setup('chat_test');
const { check, fail, failures } = checker();

// A page server: one blank page, on a port (an origin) of its own.
function servePages() {
  return new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><meta charset="utf-8"><title>switchboard browser test</title><body></body>');
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

// Runs in the page: the small web client the test drives. Everything goes through the
// page's own fetch and WebSocket, so the browser's CORS and origin rules apply.
function installClient(api) {
  window.sb = {
    api,
    events: [],
    async call(method, p, body, token) {
      const headers = {};
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (token) headers.Authorization = 'Bearer ' + token;
      const r = await fetch(api + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: r.status, body: await r.json() };
    },
    connect(token) {
      return new Promise((resolve) => {
        const ws = new WebSocket(api.replace(/^http/, 'ws') + '/v1/ws?access_token=' + encodeURIComponent(token));
        window.sb.ws = ws;
        ws.onmessage = (e) => {
          const ev = JSON.parse(e.data);
          window.sb.events.push(ev);
          if (ev.event === 'welcome') resolve({ opened: true, welcome: ev });
        };
        ws.onclose = (e) => resolve({ opened: false, code: e.code });
      });
    },
    send(frame) { window.sb.ws.send(JSON.stringify(frame)); },
    find(pred) { return window.sb.events.find(pred); },
  };
}

async function client(browser, origin, api) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(origin + '/');
  await page.evaluate(installClient, api);
  return page;
}

// Waits until an event matching `pred` (a function source over `e`) has arrived.
async function waitEvent(page, predSource) {
  const handle = await page.waitForFunction(
    (src) => window.sb.find(new Function('e', 'return ' + src)), predSource, { timeout: WAIT_MS });
  return handle.jsonValue();
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-browser-'));
const app = await servePages();
const other = await servePages();
const appOrigin = `http://127.0.0.1:${app.address().port}`;
const otherOrigin = `http://127.0.0.1:${other.address().port}`;
let server;
let browser;
try {
  server = await startServer(bin, dataDir, ['--set', `server.allowed_origins=${appOrigin}`]);
  const api = `http://${server.addr}`;
  browser = await launch(chromium, executablePath);
  console.log(`browser_chat: ${browser.version()}, pages on ${appOrigin}, API on ${api}`);

  const alice = await client(browser, appOrigin, api);
  const bob = await client(browser, appOrigin, api);

  // Sign up and log in: cross-origin POSTs with a JSON body (so preflighted).
  const signup = async (page, name) => page.evaluate(async (n) => {
    const u = await window.sb.call('POST', '/v1/users', { username: n, password: 'correct horse ' + n });
    const s = await window.sb.call('POST', '/v1/sessions', { username: n, password: 'correct horse ' + n, device_id: 'web' });
    return { u, s };
  }, name);
  const a = await signup(alice, 'alice');
  const b = await signup(bob, 'bob');
  check(a.u.status === 201 && b.u.status === 201, 'sign-up over REST from another origin', [a.u, b.u]);
  check(a.s.status === 200 && typeof a.s.body.access_token === 'string', 'log-in answer readable by the page', a.s);
  const aTok = a.s.body.access_token;
  const bTok = b.s.body.access_token;

  // A direct conversation: Authorization header, so preflighted too.
  const conv = await alice.evaluate(async ([t, bid]) =>
    window.sb.call('POST', '/v1/conversations', { type: 'direct', member_ids: [bid] }, t), [aTok, b.u.body.user_id]);
  check(conv.status === 201, 'conversation created with a bearer token', conv);
  const cid = conv.body.conversation_id;

  // The WebSocket, token in the query string.
  const aw = await alice.evaluate((t) => window.sb.connect(t), aTok);
  const bw = await bob.evaluate((t) => window.sb.connect(t), bTok);
  check(aw.opened && aw.welcome.user_id === a.u.body.user_id, 'WebSocket opened with ?access_token=', aw);
  check(bw.opened && bw.welcome.device_id === 'web', 'second browser connected', bw);

  // Chat: message, ack, delivery, receipts, typing.
  await alice.evaluate((c) => window.sb.send({ event: 'send_message', client_msg_id: 'web-1', conversation_id: c,
                                              content: 'hello from chromium', content_type: 'text',
                                              sent_timestamp_ms: Date.now() }), cid);
  const ack = await waitEvent(alice, "e.event === 'message_ack' && e.client_msg_id === 'web-1'");
  check(ack.seq === 1 && ack.duplicate === false, 'message_ack with seq 1', ack);
  const msg = await waitEvent(bob, "e.event === 'message' && e.client_msg_id === 'web-1'");
  check(msg.content === 'hello from chromium' && msg.sender_id === a.u.body.user_id, 'message delivered to the other page', msg);

  await bob.evaluate(([c, m]) => {
    window.sb.send({ event: 'message_receipt', message_id: m, conversation_id: c, status: 'DELIVERED', receipt_timestamp_ms: Date.now() });
    window.sb.send({ event: 'message_receipt', message_id: m, conversation_id: c, status: 'READ', receipt_timestamp_ms: Date.now() });
    window.sb.send({ event: 'typing', conversation_id: c, state: 'started' });
  }, [cid, msg.message_id]);
  const delivered = await waitEvent(alice, "e.event === 'message_receipt' && e.status === 'DELIVERED'");
  check(delivered.recipient_id === b.u.body.user_id && delivered.message_id === msg.message_id,
        'DELIVERED receipt routed back to the sender', delivered);
  const read = await waitEvent(alice, "e.event === 'message_receipt' && e.status === 'READ'");
  check(read.up_to_seq === 1, 'READ receipt routed back to the sender', read);
  const typing = await waitEvent(alice, "e.event === 'typing' && e.state === 'started'");
  check(typing.user_id === b.u.body.user_id, 'typing indicator', typing);

  // Bob's page reloads (a new page load: a new socket, nothing kept in memory). A
  // message sent meanwhile comes back on resume.
  await bob.reload();
  await bob.evaluate(installClient, api);
  await alice.evaluate((c) => window.sb.send({ event: 'send_message', client_msg_id: 'web-2', conversation_id: c,
                                              content: 'while you were away', content_type: 'text',
                                              sent_timestamp_ms: Date.now() }), cid);
  await waitEvent(alice, "e.event === 'message_ack' && e.client_msg_id === 'web-2'");
  const bw2 = await bob.evaluate((t) => window.sb.connect(t), bTok);
  await bob.evaluate((c) => window.sb.send({ event: 'resume', cursors: { [c]: 1 } }), cid);
  const replay = await waitEvent(bob, "e.event === 'message' && e.client_msg_id === 'web-2'");
  const done = await waitEvent(bob, "e.event === 'resume_done'");
  check(bw2.opened && replay.seq === 2 && done.replayed >= 1, 'reloaded page resumes and gets what it missed',
        { bw2, replay, done });

  // History and the conversation list over REST, from the page.
  const hist = await bob.evaluate(([c, t]) => window.sb.call('GET', `/v1/conversations/${c}/messages?limit=10`, undefined, t),
                                  [cid, bTok]);
  const texts = JSON.stringify(hist.body);
  check(hist.status === 200 && texts.includes('hello from chromium') && texts.includes('while you were away'),
        'history readable by the page', hist);
  const list = await bob.evaluate((t) => window.sb.call('GET', '/v1/conversations', undefined, t), bTok);
  check(list.status === 200 && JSON.stringify(list.body).includes(cid), 'conversation list readable by the page', list);

  // An attachment: uploaded from the page (raw bytes, bearer token), then part of it
  // fetched with a Range header, as a media element or a resumed download does.
  const media = await alice.evaluate(async (t) => {
    const bytes = new Uint8Array(100000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 8)) & 255;
    const up = await fetch(window.sb.api + '/v1/attachments',
                           { method: 'POST', headers: { Authorization: 'Bearer ' + t, 'Content-Type': 'image/png' }, body: bytes });
    const meta = await up.json();
    const part = await fetch(window.sb.api + meta.media_url,
                             { headers: { Authorization: 'Bearer ' + t, Range: 'bytes=70000-70009' } });
    const got = Array.from(new Uint8Array(await part.arrayBuffer()));
    return { up: up.status, part: part.status, range: part.headers.get('Content-Range'),
             same: JSON.stringify(got) === JSON.stringify(Array.from(bytes.slice(70000, 70010))) };
  }, aTok);
  check(media.up === 201 && media.part === 206 && media.range === 'bytes 70000-70009/100000' && media.same,
        'attachment uploaded from the page, then a Range of it downloaded', media);

  // A page of an origin the server does not list: the browser keeps the REST answer
  // from it (no CORS headers; the preflight is refused), and the server refuses its
  // WebSocket even with a valid token.
  const stranger = await client(browser, otherOrigin, api);
  const rest = await stranger.evaluate(async () => {
    try {
      await window.sb.call('POST', '/v1/sessions', { username: 'alice', password: 'correct horse alice' });
      return 'answer read';
    } catch (e) {
      return 'blocked: ' + e.name;
    }
  });
  check(rest === 'blocked: TypeError', 'REST answer hidden from a page of another origin', rest);
  const sw = await stranger.evaluate((t) => window.sb.connect(t), aTok);
  check(!sw.opened, 'WebSocket refused to a page of another origin', sw);
  const aliceStillThere = await alice.evaluate(() => window.sb.ws.readyState);
  check(aliceStillThere === 1, 'the refused page did not disturb the open sessions', aliceStillThere);
} catch (e) {
  fail(e);
  if (server) console.log('server log:\n' + server.log());
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopServer(server);
  app.close();
  other.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}
console.log(failures() ? `browser_chat: ${failures()} failed` : 'browser_chat: all passed');
process.exit(failures() ? 1 : 0);
