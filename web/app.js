// Switchboard's web client: plain ES module, no build step, served by the server at "/"
// from the same origin as the API (docs/protocol.md is what it speaks).
//
// Session: REST login gives an access token (short-lived JWT) and a refresh token; both
// are kept in localStorage with the device id, so a reload stays logged in as the same
// device. The WebSocket carries the token in ?access_token= (browsers cannot set
// Authorization on it), and every message that arrives is acknowledged with a
// cumulative DELIVERED receipt within 50 ms; READ goes out for the open conversation
// while the page is visible. Sends wait in an outbox until their message_ack and are
// sent again, with the same client_msg_id, after a reconnect.
//
// Resume sends cursors (the newest seq the page has per conversation, from the list and
// from what arrived), so a new device is not sent years of history it can page through.
//
// Everything a user typed is put on the page with textContent, never as markup.

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'sb.session';
const DEVICE_KEY = 'sb.device';

const state = {
  session: null,          // {access_token, refresh_token, user_id, device_id, expires_at}
  me: null,               // {user_id, username, display_name}
  users: new Map(),       // user_id -> {user_id, username, display_name}
  convs: new Map(),       // conversation_id -> list entry + {member_ids, type, title}
  current: null,          // open conversation id
  messages: new Map(),    // conversation_id -> Map(seq -> message)
  byId: new Map(),        // message_id -> {conv, seq}
  oldest: new Map(),      // conversation_id -> lowest seq loaded (history paging)
  hasMore: new Map(),     // conversation_id -> older history exists
  marks: new Map(),       // conversation_id -> {delivered, read}: my messages up to these seqs
  delivered: new Map(),   // conversation_id -> highest seq received (DELIVERED to send)
  deliveredSent: new Map(),  // conversation_id -> highest seq acknowledged DELIVERED
  readSent: new Map(),    // conversation_id -> highest seq marked READ
  outbox: new Map(),      // client_msg_id -> {frame, conv, failed}
  typing: new Map(),      // conversation_id -> Map(user_id -> timer)
  presence: new Map(),    // user_id -> {status, last_seen_ms}
  ws: null,
  wsReady: false,
  retryMs: 1000,
  pingTimer: 0,
  receiptTimer: 0,
  refreshTimer: 0,
  typingSentAt: 0,
  showMembers: false,     // the open group's member panel
};

// ---- REST --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, body, { auth = true, raw = null, contentType = null, token = null } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  else if (auth && state.session) headers.Authorization = `Bearer ${state.session.access_token}`;
  let payload;
  if (raw) {
    payload = raw;
    if (contentType) headers['Content-Type'] = contentType;
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(path, { method, headers, body: payload });
  if (res.status === 204) return null;
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) {
    const err = json && json.error;
    throw new ApiError(res.status, err && err.code, err && err.message);
  }
  return json;
}

// An authenticated call; an expired access token is refreshed once, then the call retried.
async function api(method, path, body, opts) {
  try {
    return await request(method, path, body, opts);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401 || !state.session) throw e;
    await refreshSession();
    return request(method, path, body, opts);
  }
}

// Bytes a member may read (the download needs the Authorization header): a blob: URL,
// fetched once per attachment and page (every re-render reuses it).
const blobs = new Map();  // media_url -> Promise of a blob: URL
function blobUrl(mediaUrl) {
  if (!blobs.has(mediaUrl)) {
    const p = fetchBlob(mediaUrl);
    p.catch(() => blobs.delete(mediaUrl));  // a later render tries again
    blobs.set(mediaUrl, p);
  }
  return blobs.get(mediaUrl);
}

async function fetchBlob(mediaUrl) {
  const get = () => fetch(mediaUrl, { headers: { Authorization: `Bearer ${state.session.access_token}` } });
  let res = await get();
  if (res.status === 401) {
    await refreshSession();
    res = await get();
  }
  if (!res.ok) throw new ApiError(res.status, 'not_found', 'attachment unavailable');
  return URL.createObjectURL(await res.blob());
}

// ---- session -----------------------------------------------------------------------

function saveSession(s) {
  state.session = {
    access_token: s.access_token,
    refresh_token: s.refresh_token,
    user_id: s.user_id,
    device_id: s.device_id,
    expires_at: Date.now() + (s.expires_in || 900) * 1000,
  };
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  localStorage.setItem(DEVICE_KEY, s.device_id);
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const inMs = Math.max(5000, (state.session.expires_at - Date.now()) * 0.8);
  state.refreshTimer = setTimeout(() => refreshSession().catch(() => {}), inMs);
}

let refreshing = null;
function refreshSession() {
  // One refresh at a time: the refresh token rotates, so a second call would use a dead one.
  if (!refreshing) {
    refreshing = request('POST', '/v1/sessions/refresh', { refresh_token: state.session.refresh_token }, { auth: false })
      .then(saveSession)
      .catch((e) => {
        if (e instanceof ApiError && (e.status === 401 || e.status === 400)) logout(false);
        throw e;
      })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function login(username, password) {
  const device_id = localStorage.getItem(DEVICE_KEY) || undefined;
  const s = await request('POST', '/v1/sessions', { username, password, device_id }, { auth: false });
  saveSession(s);
  await start();
}

async function signup(username, password) {
  await request('POST', '/v1/users', { username, password }, { auth: false });
  await login(username, password);
}

async function logout(tellServer = true) {
  // Forget the session first: the server closes this device's socket as it revokes it,
  // and nothing may try to refresh or reconnect then.
  const s = state.session;
  state.session = null;
  localStorage.removeItem(SESSION_KEY);
  clearTimeout(state.refreshTimer);
  clearInterval(state.pingTimer);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close(1000);
    state.ws = null;
  }
  if (tellServer && s) {
    try {
      await request('POST', '/v1/sessions/logout', { refresh_token: s.refresh_token }, { token: s.access_token });
    } catch { /* the session is gone from this browser anyway */ }
  }
  location.reload();
}

// ---- users and conversations ---------------------------------------------------------

const userLookups = new Map();  // user_id -> Promise, one request per user
function user(id) {
  if (state.users.has(id)) return Promise.resolve(state.users.get(id));
  if (!userLookups.has(id)) {
    userLookups.set(id, api('GET', `/v1/users/${encodeURIComponent(id)}`)
      .catch(() => ({ user_id: id, username: id, display_name: id }))
      .then((u) => {
        state.users.set(id, u);
        userLookups.delete(id);
        return u;
      }));
  }
  return userLookups.get(id);
}

// Members, and for a direct chat the other person: their name, presence and typing.
async function conversationDetails(id) {
  const c = state.convs.get(id) || { conversation_id: id };
  state.convs.set(id, c);
  if (!c.member_ids) Object.assign(c, await api('GET', `/v1/conversations/${encodeURIComponent(id)}`));
  if (c.type === 'direct' && !c.other) {
    const other = c.member_ids.find((m) => m !== state.me.user_id);
    if (other) {
      c.other = other;
      c.name = (await user(other)).display_name;
      subscribePresence();
      api('GET', `/v1/users/${encodeURIComponent(other)}/presence`).then((p) => {
        state.presence.set(other, p);
        renderHeader();
      }).catch(() => {});
    }
  }
  return c;
}

// Presence of everyone I have a direct chat with (again after each reconnect: a
// subscription lives as long as its socket).
function subscribePresence() {
  const ids = [...state.convs.values()].map((c) => c.other).filter(Boolean);
  if (ids.length) sendFrame({ event: 'presence_subscribe', user_ids: ids });
}

function displayName(c) {
  if (c.type === 'group') return c.title || 'Group';
  return c.name || c.title || 'Direct chat';
}

async function loadConversations() {
  let cursor = '';
  const seen = [];
  for (let page = 0; page < 20; page++) {
    const q = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : '?limit=100';
    const r = await api('GET', `/v1/conversations${q}`);
    for (const e of r.conversations) {
      const c = state.convs.get(e.conversation_id) || {};
      Object.assign(c, e);
      state.convs.set(e.conversation_id, c);
      seen.push(c);
      // The list shows these messages (and history brings them on demand): this device
      // has them, so the socket need not replay them (resume's cursors) and their
      // senders learn they were delivered.
      if (e.last_seq) noteReceived(e.conversation_id, e.last_seq, true);
    }
    if (!r.next_cursor) break;
    cursor = r.next_cursor;
  }
  await Promise.all(seen.filter((c) => c.type === 'direct').map((c) => conversationDetails(c.conversation_id).catch(() => {})));
  renderConversations();
}

async function startDirect(username) {
  const u = await api('GET', `/v1/users?username=${encodeURIComponent(username.trim())}`);
  const c = await api('POST', '/v1/conversations', { type: 'direct', member_ids: [u.user_id] });
  state.convs.set(c.conversation_id, Object.assign(state.convs.get(c.conversation_id) || {}, c));
  await conversationDetails(c.conversation_id);
  renderConversations();
  await openConversation(c.conversation_id);
}

async function startGroup(title, usernames) {
  const ids = [];
  for (const name of usernames.split(',').map((s) => s.trim()).filter(Boolean)) {
    ids.push((await api('GET', `/v1/users?username=${encodeURIComponent(name)}`)).user_id);
  }
  const c = await api('POST', '/v1/conversations', { type: 'group', member_ids: ids, title });
  state.convs.set(c.conversation_id, Object.assign(state.convs.get(c.conversation_id) || {}, c));
  renderConversations();
  await openConversation(c.conversation_id);
}

// ---- messages ------------------------------------------------------------------------

function convMessages(conv) {
  if (!state.messages.has(conv)) state.messages.set(conv, new Map());
  return state.messages.get(conv);
}

// Stores a message (live, replayed or from history); false when it was known. Reactions,
// edits and deletes are messages of their own: applied to their target (applyEffect),
// not shown as bubbles.
function storeMessage(m) {
  const msgs = convMessages(m.conversation_id);
  if (msgs.has(m.seq)) return false;
  msgs.set(m.seq, Object.assign({}, m));
  state.byId.set(m.message_id, { conv: m.conversation_id, seq: m.seq });
  applyEffect(m);
  return true;
}

function applyEffect(m) {
  const target = m.target_message_id && state.byId.get(m.target_message_id);
  const t = target && convMessages(target.conv).get(target.seq);
  if (!t) return;
  if (m.content_type === 'edit' && !t.deleted) { t.content = m.content; t.edited_ms = m.server_timestamp_ms; }
  if (m.content_type === 'delete') { t.deleted = true; t.content = ''; delete t.media_url; }
  if (m.content_type === 'reaction') {
    t.reactions = t.reactions || new Map();
    t.reactions.set(m.sender_id, m.content);
  }
}

async function loadHistory(conv, older) {
  const before = older ? state.oldest.get(conv) : undefined;
  const q = before ? `?before_seq=${before}&limit=50` : '?limit=50';
  const r = await api('GET', `/v1/conversations/${encodeURIComponent(conv)}/messages${q}`);
  // Oldest first, so a reaction or an edit finds its target already stored.
  const page = r.messages.slice().sort((a, b) => a.seq - b.seq);
  for (const m of page) storeMessage(m);
  // A reaction or an edit of a message on an older page finds its target once that
  // page is here: every effect again, in seq order (the latest edit wins).
  const all = [...convMessages(conv).values()].sort((a, b) => a.seq - b.seq);
  for (const m of all) if (m.target_message_id) applyEffect(m);
  if (page.length) {
    const low = page[0].seq;
    state.oldest.set(conv, Math.min(low, state.oldest.get(conv) || Infinity));
    noteReceived(conv, page[page.length - 1].seq, false);
  }
  state.hasMore.set(conv, r.has_more);
}

async function openConversation(conv) {
  state.current = conv;
  $('search-results').hidden = true;
  $('empty').hidden = true;
  $('conversation').hidden = false;
  // Changes arrive as conversation_updated while connected; read the members again on
  // each open for what happened while this page was offline.
  const known = state.convs.get(conv);
  if (known && known.type === 'group') delete known.member_ids;
  const c = await conversationDetails(conv);
  if (!state.oldest.has(conv)) await loadHistory(conv, false);
  c.unread_count = 0;
  renderConversations();
  renderHeader();
  renderMembers();
  renderMessages(true);
  markRead();
  $('text').focus();
}

function newClientMsgId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return 'web_' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function send(fields) {
  const conv = state.current;
  const frame = Object.assign({ event: 'send_message', client_msg_id: newClientMsgId(), conversation_id: conv,
                                sent_timestamp_ms: Date.now() }, fields);
  state.outbox.set(frame.client_msg_id, { frame, conv });
  sendFrame(frame);
  renderMessages(true);
}

function sendText(text) {
  if (text.trim()) send({ content: text, content_type: 'text' });
}

async function sendAttachment(file) {
  const type = file.type || 'application/octet-stream';
  const r = await api('POST', '/v1/attachments', undefined, { raw: file, contentType: type });
  send({ content: file.name, content_type: type.startsWith('image/') ? 'image' : 'file', media_url: r.media_url });
}

// ---- receipts ------------------------------------------------------------------------

// A message reached this device: DELIVERED up to the highest seq, cumulatively, within 50 ms.
function noteReceived(conv, seq, live) {
  if (seq > (state.delivered.get(conv) || 0)) state.delivered.set(conv, seq);
  if (live) scheduleReceipts();
}

function scheduleReceipts() {
  if (state.receiptTimer) return;
  state.receiptTimer = setTimeout(() => {
    state.receiptTimer = 0;
    for (const [conv, seq] of state.delivered) {
      if (seq <= (state.deliveredSent.get(conv) || 0)) continue;
      if (sendFrame({ event: 'message_receipt', conversation_id: conv, status: 'DELIVERED', up_to_seq: seq,
                      receipt_timestamp_ms: Date.now() })) {
        state.deliveredSent.set(conv, seq);
      }
    }
    markRead();
  }, 50);
}

// The open conversation, on a visible page: READ up to the newest message received.
function markRead() {
  const conv = state.current;
  if (!conv || document.visibilityState !== 'visible') return;
  const seq = state.delivered.get(conv) || 0;
  if (seq > (state.readSent.get(conv) || 0) &&
      sendFrame({ event: 'message_receipt', conversation_id: conv, status: 'READ', up_to_seq: seq,
                  receipt_timestamp_ms: Date.now() })) {
    state.readSent.set(conv, seq);
  }
}

// ---- the socket --------------------------------------------------------------------

// False when there is no open socket (the frame is dropped; callers that must not lose
// it keep it: the outbox, the receipt marks).
function sendFrame(obj) {
  if (!state.ws || !state.wsReady) return false;
  state.ws.send(JSON.stringify(obj));
  return true;
}

function reconnectLater() {
  const wait = state.retryMs;
  state.retryMs = Math.min(state.retryMs * 2, 30000);
  setTimeout(() => { if (state.session) connect(); }, wait * (0.5 + Math.random()));
}

async function connect() {
  // The upgrade checks the token: one about to expire is refreshed first (a dead
  // session logs out; an unreachable server is tried again later).
  if (Date.now() > state.session.expires_at - 30000) {
    try {
      await refreshSession();
    } catch {
      if (state.session) reconnectLater();
      return;
    }
  }
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}/v1/ws?access_token=${encodeURIComponent(state.session.access_token)}`);
  state.ws = ws;
  state.wsReady = false;
  ws.onopen = () => {
    state.wsReady = true;
    // Cursors: what this page already has, so only newer messages are replayed (without
    // them a new device would be sent every conversation's whole history).
    ws.send(JSON.stringify({ event: 'resume', cursors: Object.fromEntries(state.delivered) }));
  };
  ws.onmessage = (ev) => {
    let f;
    try { f = JSON.parse(ev.data); } catch { return; }
    onEvent(f);
  };
  ws.onclose = async (ev) => {
    state.wsReady = false;
    clearInterval(state.pingTimer);
    setConnected(false);
    if (state.ws !== ws || !state.session) return;
    // 1008: the token expired or the device was logged out; a refresh tells which (a
    // dead session logs out). A network failure just waits for the next attempt.
    if (ev.code === 1008) {
      try { await refreshSession(); } catch { if (!state.session) return; }
    }
    reconnectLater();
  };
}

function setConnected(on) {
  $('conn-state').classList.toggle('online', on);
  $('conn-state').title = on ? 'connected' : 'reconnecting…';
}

function onEvent(f) {
  switch (f.event) {
    case 'welcome':
      clearInterval(state.pingTimer);
      state.pingTimer = setInterval(() => sendFrame({ event: 'ping' }), f.heartbeat_interval_ms || 20000);
      break;
    case 'resume_done':
      state.retryMs = 1000;
      setConnected(true);
      subscribePresence();
      // Sends not acknowledged before the drop go again, with the same client_msg_id:
      // the server stores each once and answers a retry with the same ack.
      for (const o of state.outbox.values()) if (!o.failed) sendFrame(o.frame);
      scheduleReceipts();  // marks that could not go out while disconnected
      break;
    case 'message': onMessage(f); break;
    case 'message_ack': onAck(f); break;
    case 'message_receipt': onReceipt(f); break;
    case 'typing': onTyping(f); break;
    case 'presence':
      state.presence.set(f.user_id, f);
      renderHeader();
      break;
    case 'conversation_updated': onConversationUpdated(f); break;
    case 'conversation_removed': onConversationRemoved(f.conversation_id); break;
    case 'error': onError(f); break;
    default: break;
  }
}

// A conversation I am in was created or changed (members, title, roles): it shows in
// the list at once, and the open group's header and member panel follow.
function onConversationUpdated(f) {
  const known = state.convs.get(f.conversation_id);
  const c = known || { conversation_id: f.conversation_id, unread_count: 0, last_message_ms: f.created_ms };
  for (const k of ['type', 'title', 'owner_id', 'admin_ids', 'created_ms', 'member_count']) if (k in f) c[k] = f[k];
  // The event says who joined and left, not the whole list: apply it to the list this
  // page has (read on open), or leave it to the next open.
  if (c.member_ids) {
    const ids = new Set(c.member_ids);
    for (const id of f.members_added || []) ids.add(id);
    for (const id of f.members_removed || []) ids.delete(id);
    c.member_ids = [...ids].sort();
    if (c.member_ids.length !== f.member_count) delete c.member_ids;  // missed a change
  } else if (!known && f.members_added && f.members_added.length === f.member_count) {
    c.member_ids = [...f.members_added].sort();  // a creation names everyone
  }
  state.convs.set(f.conversation_id, c);
  if (c.type === 'direct' && !c.other) conversationDetails(f.conversation_id).then(renderConversations).catch(() => {});
  renderConversations();
  if (state.current === f.conversation_id) {
    if (c.member_ids) {
      renderHeader();
      renderMembers();
    } else {
      conversationDetails(f.conversation_id).then(() => { renderHeader(); renderMembers(); }).catch(() => {});
    }
  }
}

// I left or was removed (this device or another of mine): the group goes from the list.
function onConversationRemoved(conv) {
  if (!state.convs.has(conv)) return;
  state.convs.delete(conv);
  state.messages.delete(conv);
  state.oldest.delete(conv);
  if (state.current === conv) {
    state.current = null;
    $('conversation').hidden = true;
    $('empty').hidden = false;
  }
  renderConversations();
}

// Reactions, edits and deletes act on another message: never a bubble of their own.
const isEffect = (contentType) => contentType === 'reaction' || contentType === 'edit' || contentType === 'delete';

// The list entry follows its newest message, as the server's summary does (the preview
// is that message's content: an edit's new text, a reaction's emoji, nothing for a
// delete). False when `m` is not newer than what the entry shows.
function noteLatest(c, m) {
  if (m.seq <= (c.last_seq || 0)) return false;
  c.last_seq = m.seq;
  c.last_message_ms = m.server_timestamp_ms;
  c.last_message_preview = m.content || '';
  return true;
}

function onMessage(m) {
  const fresh = storeMessage(m);
  noteReceived(m.conversation_id, m.seq, true);
  if (!fresh) return;
  let c = state.convs.get(m.conversation_id);
  if (!c) {
    c = { conversation_id: m.conversation_id, unread_count: 0 };
    state.convs.set(m.conversation_id, c);
    conversationDetails(m.conversation_id).then(renderConversations).catch(() => {});
  }
  if (noteLatest(c, m)) {
    if (m.sender_id !== state.me.user_id && (state.current !== m.conversation_id || document.visibilityState !== 'visible')) {
      c.unread_count = (c.unread_count || 0) + 1;
    }
  }
  stopTyping(m.conversation_id, m.sender_id);
  renderConversations();
  if (state.current === m.conversation_id) renderMessages(isNearBottom());
}

function onAck(a) {
  const o = state.outbox.get(a.client_msg_id);
  state.outbox.delete(a.client_msg_id);
  if (o) {
    const f = o.frame;
    const m = { message_id: a.message_id, conversation_id: a.conversation_id, seq: a.seq, sender_id: state.me.user_id,
                content: f.content || '', content_type: f.content_type, media_url: f.media_url,
                target_message_id: f.target_message_id, client_msg_id: f.client_msg_id,
                sent_timestamp_ms: f.sent_timestamp_ms, server_timestamp_ms: a.server_timestamp_ms };
    storeMessage(m);
    // My message counts as received here when nothing before it is missing (a
    // conversation's messages reach this socket before the ack of a later one).
    if (a.seq === (state.delivered.get(a.conversation_id) || 0) + 1) noteReceived(a.conversation_id, a.seq, false);
    const c = state.convs.get(a.conversation_id);
    if (c) noteLatest(c, m);
  }
  renderConversations();
  if (state.current === a.conversation_id) renderMessages(true);
}

function onReceipt(r) {
  if (r.recipient_id && r.recipient_id === state.me.user_id) return;  // my own marks: not ticks
  let seq = r.up_to_seq;
  if (!seq && r.message_id && state.byId.has(r.message_id)) seq = state.byId.get(r.message_id).seq;
  if (!seq) return;
  const mk = state.marks.get(r.conversation_id) || { delivered: 0, read: 0 };
  if (r.status === 'READ') mk.read = Math.max(mk.read, seq);
  mk.delivered = Math.max(mk.delivered, seq);
  state.marks.set(r.conversation_id, mk);
  if (state.current === r.conversation_id) renderMessages(false);
}

function onError(e) {
  const o = e.client_msg_id && state.outbox.get(e.client_msg_id);
  if (o && e.code !== 'rate_limited' && e.code !== 'unavailable') {
    o.failed = e.message || e.code;
  } else if (o) {
    setTimeout(() => sendFrame(o.frame), 1000);  // overloaded: the same send again, later
  }
  showError(`${e.code}: ${e.message || ''}`);
  if (state.current) renderMessages(false);
}

function onTyping(t) {
  if (t.user_id === state.me.user_id) return;
  if (t.state === 'stopped') return stopTyping(t.conversation_id, t.user_id);
  const m = state.typing.get(t.conversation_id) || new Map();
  clearTimeout(m.get(t.user_id));
  m.set(t.user_id, setTimeout(() => stopTyping(t.conversation_id, t.user_id), 6000));
  state.typing.set(t.conversation_id, m);
  renderHeader();
}

function stopTyping(conv, userId) {
  const m = state.typing.get(conv);
  if (!m || !m.has(userId)) return;
  clearTimeout(m.get(userId));
  m.delete(userId);
  renderHeader();
}

// ---- rendering ---------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function timeOf(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const today = new Date();
  return d.toDateString() === today.toDateString()
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString();
}

function renderConversations() {
  // The tab's title counts what is unread, so a background tab shows new messages.
  const unread = [...state.convs.values()].reduce((n, c) => n + (c.unread_count || 0), 0);
  document.title = unread ? `(${unread}) Switchboard` : 'Switchboard';
  const list = $('conversations');
  list.replaceChildren();
  const convs = [...state.convs.values()].filter((c) => c.conversation_id);
  convs.sort((a, b) => (b.last_message_ms || b.created_ms || 0) - (a.last_message_ms || a.created_ms || 0));
  for (const c of convs) {
    const li = el('li', c.conversation_id === state.current ? 'active' : '');
    li.dataset.conv = c.conversation_id;
    li.append(el('span', 'name', displayName(c)), el('span', 'when', timeOf(c.last_message_ms)));
    li.append(el('span', 'preview', c.last_message_preview || ''));
    if (c.unread_count > 0) li.append(el('span', 'badge', String(c.unread_count)));
    li.addEventListener('click', () => openConversation(c.conversation_id).catch(showError));
    list.append(li);
  }
}

function renderHeader() {
  const conv = state.current;
  if (!conv) return;
  const c = state.convs.get(conv) || {};
  $('conv-title').textContent = displayName(c);
  let status = '';
  if (c.type === 'direct' && c.other) {
    const p = state.presence.get(c.other);
    if (p && p.status === 'online') status = 'online';
    else if (p && p.last_seen_ms) status = `last seen ${timeOf(p.last_seen_ms)}`;
  } else if (c.member_ids) {
    status = c.member_ids.length === 1 ? '1 member' : `${c.member_ids.length} members`;
  }
  $('group-tools').hidden = c.type !== 'group';
  $('conv-status').textContent = status;
  const typers = [...(state.typing.get(conv) || new Map()).keys()];
  const names = typers.map((u) => (state.users.get(u) || { display_name: 'someone' }).display_name);
  $('conv-typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

function isNearBottom() {
  const box = $('messages');
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function renderMessages(scrollToEnd) {
  const conv = state.current;
  if (!conv) return;
  const list = $('message-list');
  const box = $('messages');
  const keepFromBottom = box.scrollHeight - box.scrollTop;
  list.replaceChildren();
  const mk = state.marks.get(conv) || { delivered: 0, read: 0 };
  const msgs = [...convMessages(conv).values()].sort((a, b) => a.seq - b.seq);
  const group = (state.convs.get(conv) || {}).type === 'group';
  for (const m of msgs) {
    if (isEffect(m.content_type)) continue;
    list.append(renderMessage(m, mk, group));
  }
  for (const o of state.outbox.values()) {
    if (o.conv !== conv || isEffect(o.frame.content_type)) continue;
    const m = { content: o.frame.content, content_type: o.frame.content_type, media_url: o.frame.media_url,
                sender_id: state.me.user_id, server_timestamp_ms: o.frame.sent_timestamp_ms };
    list.append(renderMessage(m, mk, group, o.failed ? 'failed' : 'pending'));
  }
  $('load-older').hidden = !state.hasMore.get(conv);
  if (scrollToEnd) box.scrollTop = box.scrollHeight;
  else box.scrollTop = box.scrollHeight - keepFromBottom;
}

function renderMessage(m, mk, group, outState) {
  const mine = m.sender_id === state.me.user_id;
  const li = el('li', `msg${mine ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`);
  if (m.message_id) li.dataset.messageId = m.message_id;
  if (group && !mine) li.append(el('div', 'who', (state.users.get(m.sender_id) || {}).display_name || ''));
  if (group && !state.users.has(m.sender_id) && !userLookups.has(m.sender_id)) {
    user(m.sender_id).then(() => renderMessages(false));
  }
  if (m.deleted) {
    li.append(el('div', 'body', 'This message was deleted'));
  } else if (m.media_url && (m.content_type === 'image' || m.content_type === 'file')) {
    li.append(renderMedia(m));
    if (m.content && m.content_type === 'image') li.append(el('div', 'body', m.content));
  } else {
    li.append(el('div', 'body', m.content));
  }
  if (m.reactions && m.reactions.size && !m.deleted) {
    const counts = new Map();
    for (const r of m.reactions.values()) counts.set(r, (counts.get(r) || 0) + 1);
    li.append(el('div', 'reactions', [...counts].map(([r, n]) => (n > 1 ? `${r} ${n}` : r)).join('  ')));
  }
  const meta = el('div', 'meta', timeOf(m.server_timestamp_ms) + (m.edited_ms ? ' · edited' : ''));
  if (mine) {
    let ticks = '✓';
    let cls = 'ticks';
    if (outState === 'pending') ticks = '🕓';
    else if (outState === 'failed') { ticks = '⚠'; cls += ' failed'; }
    else if (m.seq <= mk.read) { ticks = '✓✓'; cls += ' read'; }
    else if (m.seq <= mk.delivered) ticks = '✓✓';
    const t = el('span', cls, ticks);
    t.title = outState || (m.seq <= mk.read ? 'read' : m.seq <= mk.delivered ? 'delivered' : 'sent');
    meta.append(t);
  }
  li.append(meta);
  if (m.message_id && !m.deleted) li.append(renderActions(m, mine));
  return li;
}

function renderMedia(m) {
  const box = el('div', 'media');
  if (m.content_type === 'image') {
    const img = el('img');
    img.alt = m.content || 'image';
    blobUrl(m.media_url).then((u) => { img.src = u; }).catch(() => { box.replaceChildren(el('span', '', 'image unavailable')); });
    box.append(img);
  } else {
    const a = el('a', '', m.content || 'file');
    a.href = '#';
    a.addEventListener('click', async (ev) => {
      ev.preventDefault();
      try {
        const u = await blobUrl(m.media_url);
        const link = el('a');
        link.href = u;
        link.download = m.content || 'file';
        link.click();
      } catch (e) { showError(e); }
    });
    box.append(a);
  }
  return box;
}

function renderActions(m, mine) {
  const bar = el('div', 'actions');
  const react = el('button', '', '👍');
  react.type = 'button';
  react.title = 'React';
  react.addEventListener('click', () => send({ content_type: 'reaction', content: '👍', target_message_id: m.message_id }));
  bar.append(react);
  if (mine) {
    if (m.content_type === 'text') {
      const edit = el('button', '', 'Edit');
      edit.type = 'button';
      edit.addEventListener('click', () => {
        const text = prompt('Edit message', m.content);
        if (text && text !== m.content) send({ content_type: 'edit', content: text, target_message_id: m.message_id });
      });
      bar.append(edit);
    }
    const del = el('button', '', 'Delete');
    del.type = 'button';
    del.addEventListener('click', () => {
      if (confirm('Delete this message for everyone?')) send({ content_type: 'delete', content: '', target_message_id: m.message_id });
    });
    bar.append(del);
  }
  return bar;
}

// Groups: any member may leave; adding takes the owner or an admin (the server says
// "forbidden" otherwise, shown as the error).
async function addMember(conv, username) {
  const u = await api('GET', `/v1/users?username=${encodeURIComponent(username.trim())}`);
  const r = await api('POST', `/v1/conversations/${encodeURIComponent(conv)}/members`, { user_ids: [u.user_id] });
  (state.convs.get(conv) || {}).member_ids = r.member_ids;
  renderHeader();
  renderMembers();
}

// The member panel of the open group: names and roles, and what my role lets me do.
// The buttons follow the server's rules (docs/protocol.md, "Groups as built"): the
// owner and admins rename and remove members, only the owner removes an admin or
// appoints and dismisses admins, nobody removes the owner. The server checks them all
// again; a refusal shows as the error.
function renderMembers() {
  const c = state.convs.get(state.current) || {};
  const panel = $('members-panel');
  panel.hidden = !state.showMembers || c.type !== 'group' || !c.member_ids;
  if (panel.hidden) return;
  const me = state.me.user_id;
  const admins = new Set(c.admin_ids || []);
  const owner = c.owner_id === me;
  const manager = owner || admins.has(me);
  $('rename-form').hidden = !manager;
  const list = $('member-list');
  list.replaceChildren();
  for (const id of c.member_ids) {
    const u = state.users.get(id);
    if (!u) user(id).then(rerenderMembersSoon).catch(() => {});
    const li = el('li');
    li.dataset.user = id;
    const role = id === c.owner_id ? 'owner' : admins.has(id) ? 'admin' : '';
    li.append(el('span', 'name', u ? u.display_name : '…'), el('span', 'role', role));
    const path = `/v1/conversations/${encodeURIComponent(c.conversation_id)}`;
    const act = (label, method, sub) => {
      const b = el('button', 'secondary', label);
      b.type = 'button';
      b.addEventListener('click', () => groupChange(c.conversation_id, method, `${path}/${sub}/${encodeURIComponent(id)}`)
        .catch(showError));
      li.append(b);
    };
    if (owner && id !== me) {
      if (admins.has(id)) act('Dismiss admin', 'DELETE', 'admins');
      else act('Make admin', 'PUT', 'admins');
    }
    if (id !== me && id !== c.owner_id && (owner || (manager && !admins.has(id)))) act('Remove', 'DELETE', 'members');
    list.append(li);
  }
}

// Names arrive one lookup at a time: one re-render for a burst of them.
let membersRerender = 0;
function rerenderMembersSoon() {
  if (membersRerender) return;
  membersRerender = setTimeout(() => {
    membersRerender = 0;
    renderMembers();
  }, 50);
}

// A change to the group (rename, roles, removal), then the group as it is now.
async function groupChange(conv, method, path, body) {
  await api(method, path, body);
  const c = state.convs.get(conv);
  if (!c) return;
  Object.assign(c, await api('GET', `/v1/conversations/${encodeURIComponent(conv)}`));
  renderConversations();
  if (state.current === conv) {
    renderHeader();
    renderMembers();
  }
}

async function leave(conv) {
  await api('DELETE', `/v1/conversations/${encodeURIComponent(conv)}/members/${encodeURIComponent(state.me.user_id)}`);
  onConversationRemoved(conv);
}

async function runSearch(q) {
  const r = await api('GET', `/v1/search?q=${encodeURIComponent(q)}&limit=50`);
  const list = $('search-list');
  list.replaceChildren();
  for (const m of r.results) {
    const c = state.convs.get(m.conversation_id) || {};
    const li = el('li');
    li.append(el('div', 'where', `${displayName(c)} · ${timeOf(m.server_timestamp_ms)}`), el('div', '', m.content));
    li.addEventListener('click', () => openConversation(m.conversation_id).catch(showError));
    list.append(li);
  }
  if (!r.results.length) list.append(el('li', '', 'Nothing found.'));
  $('conversation').hidden = true;
  $('empty').hidden = true;
  $('search-results').hidden = false;
}

function showError(e) {
  const msg = typeof e === 'string' ? e : (e && e.message) || String(e);
  $('sidebar-error').textContent = msg;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { $('sidebar-error').textContent = ''; }, 6000);
}

// ---- start -------------------------------------------------------------------------

async function start() {
  state.me = await api('GET', `/v1/users/${encodeURIComponent(state.session.user_id)}`);
  state.users.set(state.me.user_id, state.me);
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = state.me.display_name;
  await loadConversations();
  connect();
}

function wire() {
  const form = $('login-form');
  const creds = () => [$('login-username').value.trim(), $('login-password').value];
  const fail = (e) => { $('login-error').textContent = e.message || String(e); };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    login(...creds()).catch(fail);
  });
  $('signup-submit').addEventListener('click', () => {
    if (form.reportValidity()) signup(...creds()).catch(fail);
  });
  $('logout').addEventListener('click', () => logout(true));
  $('new-direct').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('new-direct-username').value;
    if (name.trim()) startDirect(name).then(() => { $('new-direct-username').value = ''; }).catch(showError);
  });
  $('new-group').addEventListener('submit', (ev) => {
    ev.preventDefault();
    startGroup($('new-group-title').value.trim(), $('new-group-members').value)
      .then(() => { $('new-group-title').value = ''; $('new-group-members').value = ''; })
      .catch(showError);
  });
  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('search-q').value.trim();
    if (q) runSearch(q).catch(showError);
  });
  $('search-close').addEventListener('click', () => {
    $('search-results').hidden = true;
    if (state.current) $('conversation').hidden = false;
    else $('empty').hidden = false;
  });
  $('group-tools').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('add-member').value;
    if (state.current && name.trim()) {
      addMember(state.current, name).then(() => { $('add-member').value = ''; }).catch(showError);
    }
  });
  $('members-toggle').addEventListener('click', () => {
    state.showMembers = !state.showMembers;
    renderMembers();
  });
  $('rename-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const title = $('rename-title').value.trim();
    if (!state.current || !title) return;
    groupChange(state.current, 'PATCH', `/v1/conversations/${encodeURIComponent(state.current)}`, { title })
      .then(() => { $('rename-title').value = ''; })
      .catch(showError);
  });
  $('leave').addEventListener('click', () => {
    if (state.current && confirm('Leave this group?')) leave(state.current).catch(showError);
  });
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendText($('text').value);
    $('text').value = '';
    if (state.current) sendFrame({ event: 'typing', conversation_id: state.current, state: 'stopped' });
    state.typingSentAt = 0;
  });
  $('text').addEventListener('input', () => {
    // "started" at most every 3 s while typing; the other side expires it after 6 s.
    if (!state.current || Date.now() - state.typingSentAt < 3000) return;
    state.typingSentAt = Date.now();
    sendFrame({ event: 'typing', conversation_id: state.current, state: 'started' });
  });
  $('attach').addEventListener('change', () => {
    const f = $('attach').files[0];
    $('attach').value = '';
    if (f) sendAttachment(f).catch(showError);
  });
  $('load-older').addEventListener('click', async () => {
    if (!state.current) return;
    await loadHistory(state.current, true).catch(showError);
    renderMessages(false);
  });
  document.addEventListener('visibilitychange', markRead);
}

wire();
try {
  state.session = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
} catch {
  state.session = null;
}
if (state.session) {
  // A stored session: its access token may have expired; the first call refreshes it.
  scheduleRefresh();
  start().catch(() => { $('login').hidden = false; });
} else {
  $('login').hidden = false;
}
