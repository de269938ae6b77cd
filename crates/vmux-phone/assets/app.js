// vmux phone page: enrolment (#enrol=TOKEN), passkey sign-in, and live approval of the signer's
// requests (#request=ID highlights one). Plain ES module, no build step, no third-party code.
// Strict CSP: every server string is rendered with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const CRED_KEY = 'vmux.credential';
const HAS_PASSKEYS = Boolean(window.PublicKeyCredential && navigator.credentials);
const HAS_PUSH = 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
const NO_PASSKEYS = 'This browser cannot use passkeys. Open this page in Safari on iOS 17 or later, or in Chrome on Android.';

const state = {
  view: null,
  rpId: undefined,     // from /api/session (or the enrolment options)
  enrolment: null,     // {token, publicKey} once /api/enrol/begin answered
  signin: null,        // pre-fetched sign-in challenge {challenge, rp_id, timeout_ms, fetchedAt}
  signinSeq: 0,
  signinTimer: 0,
  events: null,        // the EventSource while signed in
  cards: new Map(),    // request id -> {card, el, countdown, windowBox, error, buttons, busy}
  done: new Set(),     // ids decided here: hidden even if a late `state` event still lists them
  focusId: null,       // from #request=ID, highlighted when its card shows up
  haveList: false,     // a `state` event arrived since sign-in
  clockOffset: 0,      // server clock minus this phone's clock, from Date headers (ms)
  statusAt: 0,
  statusBusy: false,
  statusTimer: 0,
  freshTimer: 0,       // re-fetches the status and push lists before their challenges expire
  push: null,          // the last /api/push/key answer
};

// Challenges that confirm a change (unpair, a push subscription) live
// two minutes; the lists carrying them are fetched again before that.
const CHALLENGE_REFRESH_MS = 90000;

// ---- small helpers ----

function b64uToBuf(text) {
  const b64 = String(text).replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

function bufToB64u(buf) {
  const bytes = new Uint8Array(buf);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function say(text) {
  $('message').textContent = text || '';
}

function loadCred() {
  try { return localStorage.getItem(CRED_KEY); } catch { return null; }
}

function storeCred(id) {
  try { localStorage.setItem(CRED_KEY, id); } catch { /* private mode: sign-in still works */ }
}

function allowCredentials() {
  const id = loadCred();
  return id ? [{ type: 'public-key', id: b64uToBuf(id) }] : [];
}

function assertionFields(cred) {
  return {
    credential_id: bufToB64u(cred.rawId),
    authenticator_data: bufToB64u(cred.response.authenticatorData),
    client_data_json: bufToB64u(cred.response.clientDataJSON),
    signature: bufToB64u(cred.response.signature),
  };
}

const serverNow = () => Date.now() + state.clockOffset;

function fmtTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

// One format for time left everywhere: minutes:seconds.
const fmtLeft = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;

const PASSKEY_ERRORS = {
  NotAllowedError: 'The passkey request was cancelled or timed out.',
  InvalidStateError: 'This phone already has a passkey for this signer.',
  SecurityError: "This page's address does not match the signer's passkey domain.",
};

function passkeyError(err) {
  if (err instanceof ApiError) return err.message;
  return PASSKEY_ERRORS[err && err.name] || (err && err.message) || 'The passkey did not work.';
}

// ---- JSON API ----

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// GET when body is undefined, else POST the body as JSON. Throws ApiError with the server's sentence.
async function api(path, body) {
  const init = body === undefined
    ? { credentials: 'same-origin', headers: { Accept: 'application/json' } }
    : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), credentials: 'same-origin' };
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'The signer cannot be reached. Check the connection and try again.');
  }
  const date = Date.parse(res.headers.get('Date') || '');
  if (!Number.isNaN(date)) {
    const offset = date - Date.now();
    state.clockOffset = Math.abs(offset) > 2000 ? offset : 0; // Date has 1 s resolution
  }
  let data = null;
  try { data = await res.json(); } catch { /* empty or not JSON */ }
  if (res.ok) return data || {};
  const sentence = data && typeof data.error === 'string' ? data.error : `The signer answered with status ${res.status}.`;
  if (res.status === 401 && !path.startsWith('/api/signin/') && !path.startsWith('/api/enrol/')) showSignIn();
  throw new ApiError(res.status, sentence);
}

// ---- views and routing ----

function show(view) {
  for (const id of ['view-loading', 'view-enrol', 'view-signin', 'view-main']) $(id).hidden = id !== view;
  state.view = view;
  const signedIn = view === 'view-main';
  $('who-line').hidden = !signedIn;
  $('signout-button').hidden = !signedIn;
  if (!signedIn) {
    $('signer').textContent = 'vmux signer';
    $('conn').hidden = true;
  }
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { enrol: params.get('enrol'), request: params.get('request') };
}

function clearHash() {
  history.replaceState(null, '', location.pathname + location.search);
}

async function route() {
  const { enrol, request } = readHash();
  if (request) {
    state.focusId = request;
    if (state.view === 'view-main') focusCard();
  }
  if (enrol) return beginEnrol(enrol);
  if (state.view !== 'view-main') await checkSession();
}

async function checkSession() {
  try {
    const s = await api('/api/session');
    state.rpId = s.rp_id || state.rpId;
    if (s.signed_in) showMain(s);
    else showSignIn();
  } catch (err) {
    showSignIn();
    say(err.message);
  }
}

// ---- enrolment ----

async function beginEnrol(token) {
  stopEvents();
  show('view-enrol');
  state.enrolment = null;
  $('enrol-button').hidden = true;
  $('enrol-help').hidden = true;
  $('enrol-phone').textContent = '';
  $('enrol-for').textContent = 'Checking the enrolment link…';
  try {
    const r = await api('/api/enrol/begin', { token });
    const o = r.options;
    state.rpId = o.rp.id;
    // What the passkey must be (SECURITY.md, "The phone page"): user
    // verification always (the signer refuses an assertion without UV),
    // discoverable (sign-in works when the page's storage is gone, as in
    // an installed app or after clearing site data; every phone's own
    // authenticator makes them), and on this phone by preference:
    // hints: ['client-device'] asks the browser to offer the phone's own
    // authenticator first. Not authenticatorAttachment: 'platform': that
    // is a hard filter some browsers fail outright (Firefox with a
    // WebAuthn virtual authenticator, a phone whose passkey provider is
    // an app), and the signer could not check it anyway (attestation
    // 'none'); what approves is the enrolled key with UV, wherever the
    // browser keeps it.
    state.enrolment = {
      token,
      publicKey: {
        challenge: b64uToBuf(o.challenge),
        rp: { id: o.rp.id, name: o.rp.name },
        user: { id: b64uToBuf(o.user.id), name: o.user.name, displayName: o.user.displayName },
        pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
        authenticatorSelection: { userVerification: 'required', residentKey: 'required', requireResidentKey: true },
        hints: ['client-device'],
        attestation: 'none',
        timeout: o.timeout_ms,
      },
    };
    $('enrol-for').textContent = `This link adds this phone to ${o.rp.name} as:`;
    $('enrol-phone').textContent = r.phone;
    $('enrol-help').hidden = false;
    $('enrol-button').hidden = false;
    $('enrol-button').disabled = !HAS_PASSKEYS;
    say(HAS_PASSKEYS ? '' : NO_PASSKEYS);
  } catch (err) {
    $('enrol-for').textContent = '';
    say(err.message);
  }
}

// Click handler: credentials.create is the first call, with no await before it (Safari's user gesture).
function onCreatePasskey() {
  const enrolment = state.enrolment;
  if (!enrolment) return;
  const button = $('enrol-button');
  button.disabled = true;
  say('');
  navigator.credentials.create({ publicKey: enrolment.publicKey })
    .then(async (cred) => {
      const credentialId = bufToB64u(cred.rawId);
      await api('/api/enrol/finish', {
        token: enrolment.token,
        credential_id: credentialId,
        attestation_object: bufToB64u(cred.response.attestationObject),
        client_data_json: bufToB64u(cred.response.clientDataJSON),
      });
      storeCred(credentialId);
      state.enrolment = null;
      clearHash();
      $('enrolled').hidden = false;
      await checkSession();
    })
    .catch((err) => {
      button.disabled = false;
      say(passkeyError(err));
    });
}

// ---- sign-in ----

function showSignIn() {
  stopEvents();
  clearCards();
  show('view-signin');
  $('signin-button').disabled = true;
  if (!HAS_PASSKEYS) return say(NO_PASSKEYS);
  prefetchSignIn();
}

// Fetch a challenge before the click, and again before it expires (they live about 2 minutes).
async function prefetchSignIn() {
  const seq = ++state.signinSeq;
  clearTimeout(state.signinTimer);
  state.signin = null;
  $('signin-button').disabled = true;
  try {
    const c = await api('/api/signin/begin', {});
    if (seq !== state.signinSeq || state.view !== 'view-signin') return;
    state.signin = { ...c, fetchedAt: Date.now() };
    $('signin-button').disabled = false;
    state.signinTimer = setTimeout(prefetchSignIn, Math.max(10000, (c.timeout_ms || 120000) - 15000));
  } catch (err) {
    if (seq !== state.signinSeq || state.view !== 'view-signin') return;
    say(err.message);
    state.signinTimer = setTimeout(prefetchSignIn, 5000);
  }
}

const signinStale = () => !state.signin || Date.now() - state.signin.fetchedAt > (state.signin.timeout_ms || 120000) - 5000;

// Click handler: credentials.get is called with no await before it.
function onSignIn() {
  if (signinStale()) {
    say('Getting a fresh sign-in challenge. Tap Sign in again in a moment.');
    prefetchSignIn();
    return;
  }
  const c = state.signin;
  state.signin = null; // single use
  clearTimeout(state.signinTimer);
  $('signin-button').disabled = true;
  say('');
  navigator.credentials.get({
    publicKey: {
      challenge: b64uToBuf(c.challenge),
      rpId: c.rp_id,
      userVerification: 'required',
      hints: ['client-device'],
      allowCredentials: allowCredentials(),
      timeout: c.timeout_ms,
    },
  })
    .then(async (cred) => {
      await api('/api/signin/finish', { challenge: c.challenge, ...assertionFields(cred) });
      storeCred(bufToB64u(cred.rawId)); // an installed app has its own storage: remember the passkey used
      await checkSession();
    })
    .catch((err) => {
      say(passkeyError(err));
      if (state.view === 'view-signin') prefetchSignIn();
    });
}

async function onSignOut() {
  try {
    await api('/api/signout', {});
  } catch (err) {
    if (err.status !== 401) return say(err.message);
  }
  $('enrolled').hidden = true;
  say('');
  showSignIn();
}

// ---- signed-in view: live requests ----

function showMain(session) {
  clearTimeout(state.signinTimer);
  state.signinSeq++;
  state.signin = null;
  show('view-main');
  state.haveList = false;
  $('signer').textContent = session.signer || 'vmux signer';
  $('phone').textContent = session.phone ? `This phone: ${session.phone}` : '';
  $('lock').textContent = '';
  if (!HAS_PASSKEYS) say(NO_PASSKEYS);
  if (!window.EventSource) return say('This browser cannot receive live requests (no EventSource).');
  startEvents();
  refreshStatus();
  refreshNotifications();
}

function startEvents() {
  stopEvents();
  const es = new EventSource('/api/events');
  state.events = es;
  es.addEventListener('open', () => { $('conn').hidden = true; });
  es.addEventListener('state', (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    $('conn').hidden = true;
    setSigner(data.signer);
    renderCards(Array.isArray(data.requests) ? data.requests : []);
    refreshStatus();
  });
  // EventSource reconnects by itself unless the server refused it (CLOSED); either way check the session.
  es.addEventListener('error', async () => {
    if (state.events !== es) return;
    $('conn').hidden = false;
    let session = null;
    try { session = await api('/api/session'); } catch { /* offline: keep trying */ }
    if (state.events !== es) return;
    if (session && !session.signed_in) return showSignIn();
    if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (state.events === es) startEvents(); }, 3000);
  });
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

function setSigner(signer) {
  if (!signer) return;
  $('signer').textContent = signer.name;
  $('lock').textContent = signer.locked ? 'Locked' : 'Unlocked';
  $('lock').classList.toggle('locked', Boolean(signer.locked));
}

function clearCards() {
  for (const id of [...state.cards.keys()]) removeCard(id);
}

// `state` carries the full list: keep existing card elements, add new ones, drop the rest.
function renderCards(list) {
  const box = $('cards');
  const listed = new Set(list.map((c) => String(c.id)));
  for (const id of state.done) if (!listed.has(id)) state.done.delete(id);
  let prev = null;
  for (const card of list) {
    const id = String(card.id);
    if (state.done.has(id)) continue;
    let entry = state.cards.get(id);
    if (entry) entry.card = card;
    else state.cards.set(id, (entry = buildCard(card)));
    const want = prev ? prev.nextSibling : box.firstChild;
    if (entry.el !== want) box.insertBefore(entry.el, want);
    prev = entry.el;
  }
  for (const id of [...state.cards.keys()]) if (!listed.has(id)) removeCard(id);
  for (const entry of state.cards.values()) if (!entry.busy) showBurst(entry);
  // "This phone was added" has been read once a request comes: it gives
  // the request its room.
  if (state.cards.size > 0) $('enrolled').hidden = true;
  closeStaleNotifications(listed);
  tick();
  state.haveList = true;
  focusCard();
}

// A card: the headline a person reads at once, what must stand out (by
// colour and in words), the key, the pairing code, Approve and Deny; the
// rest (fingerprints, host key, process, program) folded under Details.
function buildCard(card) {
  const entry = { card, busy: false, windowBox: null };
  const head = card.headline || {};
  const art = el('article', 'card');
  art.dataset.kind = card.kind;
  art.dataset.id = card.id;
  art.classList.toggle('forwarded', Boolean(card.forwarded));
  art.append(el('h2', 'headline', head.text || card.title));
  const marks = Array.isArray(head.marks) ? head.marks : [];
  if (marks.length) {
    const ul = el('ul', 'marks');
    for (const m of marks) {
      const li = el('li', 'mark', m.text);
      li.dataset.level = m.level;
      ul.append(li);
    }
    art.append(ul);
  }
  entry.countdown = el('span', 'countdown');
  const line = el('p', 'keyline');
  // The key's name under the headline, unless the headline names it.
  const keyNamed = head.key && String(head.text || '').endsWith(` with ${head.key}`);
  if (head.key && card.kind === 'sign' && !keyNamed) line.append(el('span', 'key', `Key ${head.key}`));
  if (head.program) line.append(el('span', 'program', `from ${head.program}`));
  line.append(entry.countdown);
  art.append(line);
  if (card.code) {
    art.append(el('p', 'code-help', 'Check that the computer shows the same code:'));
    art.append(el('p', 'code', card.code));
  }
  if (card.window) {
    const label = el('label', 'window');
    entry.windowBox = el('input');
    entry.windowBox.type = 'checkbox';
    entry.windowBox.name = 'window';
    label.append(entry.windowBox, el('span', null, card.window.label));
    art.append(label);
  }
  entry.error = el('p', 'card-error');
  entry.error.setAttribute('role', 'alert');
  const deny = el('button', 'deny', 'Deny');
  const approve = el('button', 'approve', 'Approve');
  deny.type = approve.type = 'button';
  deny.addEventListener('click', () => onDeny(entry));
  approve.addEventListener('click', () => onApprove(entry));
  const actions = el('div', 'actions');
  actions.append(deny, approve);
  // Approve all N: the list and its challenge come with the card, so the
  // click handler calls credentials.get at once (Safari's user gesture).
  entry.allBox = el('div', 'burst');
  entry.allButton = el('button', 'approve-all');
  entry.allButton.type = 'button';
  entry.allButton.addEventListener('click', () => onApproveAll(entry));
  entry.allHelp = el('p', 'burst-help');
  entry.allBox.append(entry.allButton, entry.allHelp);
  entry.buttons = [deny, approve, entry.allButton];
  art.append(entry.error, actions, entry.allBox);
  if (Array.isArray(card.facts) && card.facts.length) {
    const more = el('details', 'details summary');
    const dl = el('dl', 'facts');
    for (const fact of card.facts) {
      const row = el('div');
      row.append(el('dt', null, fact.label), el('dd', null, fact.value));
      dl.append(row);
    }
    more.append(el('summary', null, 'Details'), dl);
    if (card.summary) {
      more.append(el('p', 'summary-line', `In one line, as the signer's terminal and desktop prompts show it: ${card.summary}`));
    }
    art.append(more);
  }
  entry.el = art;
  return entry;
}

// The burst offer as the latest list has it (a request that joined makes
// a new list and a new challenge, shown before the next tap), saying what
// the requests it approves ask for; offered only while every one of them
// shows on this page.
function showBurst(entry) {
  const burst = entry.card.burst;
  const ids = burst && Array.isArray(burst.ids) ? burst.ids.map(String) : [];
  const cards = ids.map((id) => state.cards.get(id)).filter(Boolean).map((e) => e.card);
  const n = ids.length;
  entry.allBox.hidden = n < 2 || cards.length !== n;
  if (entry.allBox.hidden) return;
  const agent = (entry.card.headline && entry.card.headline.agent) || 'this agent';
  const asks = new Map();
  for (const c of cards) {
    const q = (c.headline && c.headline.question) || c.title;
    asks.set(q, (asks.get(q) || 0) + 1);
  }
  const what = [...asks].slice(0, 3).map(([q, k]) => (k > 1 ? `${q.replace(/\?$/, '')} (×${k})` : q.replace(/\?$/, '')));
  if (asks.size > 3) what.push(`${asks.size - 3} more kinds`);
  entry.allButton.textContent = `Approve all ${n}`;
  entry.allHelp.textContent = `One passkey tap approves the ${n} requests from ${agent} waiting now, each once (no approval window): ${what.join('; ')}. One that arrives later is asked again.`;
}

function removeCard(id) {
  const entry = state.cards.get(id);
  if (entry) entry.el.remove();
  state.cards.delete(id);
  $('no-requests').hidden = state.cards.size > 0;
}

function secondsLeft(card) {
  return Math.max(0, Math.ceil((card.expires_at_ms - serverNow()) / 1000));
}

// Every second: countdowns, and no buttons on an expired card.
function tick() {
  for (const entry of state.cards.values()) {
    const left = secondsLeft(entry.card);
    entry.countdown.textContent = left > 0 ? `expires in ${fmtLeft(left)}` : 'expired';
    entry.el.classList.toggle('expired', left === 0);
    entry.el.classList.toggle('urgent', left > 0 && left <= 15);
    if (!entry.busy) setBusy(entry, false);
  }
  $('no-requests').hidden = state.cards.size > 0;
}

function setBusy(entry, busy) {
  entry.busy = busy;
  const off = busy || secondsLeft(entry.card) === 0;
  for (const b of entry.buttons) b.disabled = off;
  if (entry.windowBox) entry.windowBox.disabled = off;
  entry.el.classList.toggle('busy', busy);
}

// #request=ID: once the list is known, highlight that card (or say it is gone).
function focusCard() {
  if (!state.focusId || !state.haveList) return;
  const entry = state.cards.get(state.focusId);
  state.focusId = null;
  clearHash();
  if (!entry) return say('That request is no longer waiting.');
  entry.el.classList.add('highlight');
  entry.el.scrollIntoView({ behavior: 'smooth', block: 'center' });
}

function decided(entry) {
  const id = String(entry.card.id);
  state.done.add(id);
  removeCard(id);
}

// Click handler: credentials.get is called with no await before it.
function onApprove(entry) {
  const card = entry.card;
  const msLeft = card.expires_at_ms - serverNow();
  if (entry.busy || msLeft <= 0) return;
  if (!HAS_PASSKEYS) {
    entry.error.textContent = NO_PASSKEYS;
    return;
  }
  const useWindow = Boolean(card.window && entry.windowBox && entry.windowBox.checked);
  setBusy(entry, true);
  entry.error.textContent = '';
  navigator.credentials.get({
    publicKey: {
      challenge: b64uToBuf(useWindow ? card.window.challenge : card.challenge),
      rpId: state.rpId,
      userVerification: 'required',
      hints: ['client-device'],
      // A request for this phone's own key names the passkey that signs it.
      allowCredentials: card.credential
        ? [{ type: 'public-key', id: b64uToBuf(card.credential) }]
        : allowCredentials(),
      timeout: Math.round(msLeft),
    },
  })
    .then((cred) => api(`/api/requests/${encodeURIComponent(card.id)}/approve`, { window: useWindow, ...assertionFields(cred) }))
    .then(() => decided(entry))
    .catch((err) => {
      setBusy(entry, false);
      entry.error.textContent = passkeyError(err);
    });
}

// Click handler: credentials.get is called with no await before it; the
// list and its challenge were in the card when the button was shown.
function onApproveAll(entry) {
  const card = entry.card;
  const burst = card.burst;
  if (entry.busy || !burst || !Array.isArray(burst.ids) || burst.ids.length < 2) return;
  const ids = burst.ids.map(String);
  const entries = ids.map((id) => state.cards.get(id)).filter(Boolean);
  if (entries.length !== ids.length) return; // not every one shows here
  const msLeft = Math.min(...entries.map((e) => e.card.expires_at_ms)) - serverNow();
  if (msLeft <= 0) return;
  if (!HAS_PASSKEYS) {
    entry.error.textContent = NO_PASSKEYS;
    return;
  }
  for (const e of entries) setBusy(e, true);
  entry.error.textContent = '';
  navigator.credentials.get({
    publicKey: {
      challenge: b64uToBuf(burst.challenge),
      rpId: state.rpId,
      userVerification: 'required',
      allowCredentials: allowCredentials(),
      timeout: Math.round(msLeft),
    },
  })
    .then((cred) => api('/api/requests/approve-all', { ids, ...assertionFields(cred) }))
    .then(() => { for (const e of entries) decided(e); })
    .catch((err) => {
      for (const e of entries) setBusy(e, false);
      showBurst(entry);
      entry.error.textContent = passkeyError(err);
    });
}

function onDeny(entry) {
  if (entry.busy) return;
  setBusy(entry, true);
  entry.error.textContent = '';
  api(`/api/requests/${encodeURIComponent(entry.card.id)}/deny`, {})
    .then(() => decided(entry))
    .catch((err) => {
      setBusy(entry, false);
      entry.error.textContent = err.message;
    });
}

// ---- status: agents, phones, recent decisions (at most one fetch a second) ----

function refreshStatus() {
  const wait = state.statusAt + 1000 - Date.now();
  if (state.statusBusy || wait > 0) {
    if (!state.statusTimer) {
      state.statusTimer = setTimeout(() => { state.statusTimer = 0; refreshStatus(); }, Math.max(wait, 250));
    }
    return;
  }
  if (state.view !== 'view-main') return;
  state.statusBusy = true;
  state.statusAt = Date.now();
  api('/api/status')
    .then(renderStatus)
    .catch((err) => { if (err.status !== 401) say(err.message); })
    .finally(() => { state.statusBusy = false; });
}

function fillList(id, items, emptyText, row) {
  const rows = (items || []).map((item) => {
    const li = el('li');
    li.append(...row(item));
    return li;
  });
  $(id).replaceChildren(...(rows.length ? rows : [el('li', 'empty', emptyText)]));
}

function renderStatus(s) {
  if (state.view !== 'view-main') return;
  clearTimeout(state.freshTimer);
  state.freshTimer = setTimeout(() => { refreshStatus(); refreshNotifications(); }, CHALLENGE_REFRESH_MS);
  setSigner(s.signer);
  fillList('agents', s.agents, 'No agents are paired.', (a) => [
    el('span', 'name', a.name),
    el('span', 'meta', `Paired ${fmtTime(a.paired_at)} · ${a.last_seen ? `last seen ${fmtTime(a.last_seen)}` : 'not seen yet'}`),
    unpairButton(a),
  ]);
  fillList('phones', s.phones, 'No phones.', (p) => [
    el('span', 'name', p.this ? `${p.name} (this phone)` : p.name),
    el('span', p.online ? 'meta online' : 'meta', [p.online ? 'Online' : 'Offline', `added ${fmtTime(p.added_at)}`,
      p.last_seen ? `last seen ${fmtTime(p.last_seen)}` : ''].filter(Boolean).join(' · ')),
  ]);
  const recent = [...(s.recent || [])].sort((a, b) => b.time - a.time);
  fillList('recent', recent, 'No decisions yet.', (r) => {
    const outcome = el('span', 'outcome', r.outcome);
    outcome.dataset.outcome = r.outcome;
    const meta = el('span', 'meta', [fmtTime(r.time), r.kind, r.phone].filter(Boolean).join(' · '));
    return [el('span', 'name', r.summary), outcome, meta];
  });
}

// The passkey confirms a change: the options of an assertion over
// `challenge` (from the list the change is made on; it names the action
// and its target). Each click handler calls navigator.credentials.get
// with them itself, with nothing awaited before it (Safari's rule).
function confirmRequest(challenge) {
  return {
    publicKey: {
      challenge: b64uToBuf(challenge),
      rpId: state.rpId,
      userVerification: 'required',
      allowCredentials: allowCredentials(),
      hints: ['client-device'],
      timeout: 60000,
    },
  };
}

// What the signer checks of a confirmation.
const confirmation = (challenge) => (cred) => ({ challenge, ...assertionFields(cred) });

// Unpairing takes the passkey: a stolen session cookie alone cannot.
function unpairButton(agent) {
  const button = el('button', 'small unpair', 'Unpair');
  button.type = 'button';
  button.dataset.agent = agent.id;
  button.dataset.name = agent.name;
  button.dataset.challenge = agent.unpair_challenge;
  button.addEventListener('click', onUnpair);
  return button;
}

// Click handler of an agent's Unpair.
function onUnpair(ev) {
  const button = ev.currentTarget;
  const { agent, name, challenge } = button.dataset;
  if (!HAS_PASSKEYS) return say(NO_PASSKEYS);
  button.disabled = true;
  say(`Confirm with your passkey to unpair ${name}; it must pair again before it can use this signer.`);
  return navigator.credentials.get(confirmRequest(challenge))
    .then(confirmation(challenge))
    .then((c) => api(`/api/agents/${encodeURIComponent(agent)}/unpair`, c))
    .then(() => { say(`${name} was unpaired.`); refreshStatus(); })
    .catch((err) => { button.disabled = false; say(passkeyError(err)); refreshStatus(); });
}

// ---- notifications (Web Push) ----

// A request decided anywhere (or expired) takes its notification away.
async function closeStaleNotifications(listed) {
  if (!('serviceWorker' in navigator)) return;
  try {
    const reg = await navigator.serviceWorker.getRegistration();
    if (!reg || typeof reg.getNotifications !== 'function') return;
    for (const n of await reg.getNotifications()) {
      const id = n.data && n.data.id;
      if (!id || !listed.has(String(id))) n.close();
    }
  } catch { /* no notifications to close */ }
}

// The subscription as the signer stores it: {endpoint, keys: {p256dh, auth}}.
function subscriptionJson(sub) {
  const j = typeof sub.toJSON === 'function' ? sub.toJSON() : sub;
  return { endpoint: j.endpoint, keys: { p256dh: j.keys && j.keys.p256dh, auth: j.keys && j.keys.auth } };
}

async function currentSubscription() {
  const reg = await navigator.serviceWorker.getRegistration();
  return reg ? reg.pushManager.getSubscription() : null;
}

// Whether `sub` was made with the signer's VAPID key `key` (base64url);
// true where the browser does not say.
function madeWithKey(sub, key) {
  const made = sub.options && sub.options.applicationServerKey;
  if (!made) return true;
  return bufToB64u(made).replace(/=+$/, '') === String(key).replace(/=+$/, '');
}

// Subscribes this page with `key` and tells the signer, with the
// passkey's `confirmation` (a stolen cookie alone cannot add a feed of
// the requests); the subscription.
async function subscribeWith(reg, key, confirmation) {
  const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64uToBuf(key) });
  await api('/api/push/subscribe', { ...subscriptionJson(sub), ...confirmation });
  return sub;
}

// This phone's subscriptions as the signer holds them, each with Remove
// (the passkey confirms it).
function renderSubscriptions(signer, mine) {
  const subs = (signer && signer.subscriptions) || [];
  $('subscriptions').hidden = subs.length === 0;
  fillList('subscriptions', subs, '', (s) => {
    let host = s.endpoint;
    try { host = new URL(s.endpoint).host; } catch { /* shown whole */ }
    const button = el('button', 'small', 'Remove');
    button.type = 'button';
    button.dataset.endpoint = s.endpoint;
    button.dataset.challenge = s.remove_challenge;
    button.addEventListener('click', onRemoveSubscription);
    return [
      el('span', 'name', s.endpoint === mine ? `${host} (this browser)` : host),
      el('span', 'meta', `added ${fmtTime(s.added_at)}`),
      button,
    ];
  });
}

// Click handler of a subscription's Remove.
function onRemoveSubscription(ev) {
  const button = ev.currentTarget;
  const { endpoint, challenge } = button.dataset;
  if (!HAS_PASSKEYS) return say(NO_PASSKEYS);
  button.disabled = true;
  return navigator.credentials.get(confirmRequest(challenge))
    .then(confirmation(challenge))
    .then((c) => api('/api/push/unsubscribe', { endpoint, ...c }))
    .then(async () => {
      // This browser's own: end it here too.
      if (endpoint === state.pushEndpoint) {
        try { const sub = await currentSubscription(); if (sub) await sub.unsubscribe(); } catch { /* gone already */ }
      }
      say('That subscription was removed.');
    })
    .catch((err) => say(passkeyError(err)))
    .finally(() => refreshNotifications());
}

// Whether the signer can use the browser's subscription `sub`: it holds
// it (a push service that said it is gone had it dropped; a browser may
// rotate it unseen) and it was made with the signer's key.
const signerHolds = (signer, sub) =>
  (signer.subscribed || []).includes(sub.endpoint) && madeWithKey(sub, signer.key);

// One look at a time (the main view, visibility and the buttons all ask);
// asked during a look, one more look follows it, so a change made
// meanwhile (a tap on Turn on) is never shown as before.
let notificationsLook = null;
let lookAgain = false;
function refreshNotifications() {
  if (notificationsLook) {
    lookAgain = true;
    return notificationsLook;
  }
  notificationsLook = (async () => {
    do {
      lookAgain = false;
      await lookAtNotifications();
    } while (lookAgain);
  })().finally(() => { notificationsLook = null; });
  return notificationsLook;
}

async function lookAtNotifications() {
  if (!HAS_PUSH) { $('notifications').hidden = true; return; }
  $('notifications').hidden = false;
  let sub = null;
  try { sub = await currentSubscription(); } catch { sub = null; }
  let on = Boolean(sub) && Notification.permission === 'granted';
  let lost = false;
  let signer = null;
  try { signer = await api('/api/push/key'); } catch { signer = null; /* keep the browser's word */ }
  state.push = signer && { ...signer, fetchedAt: Date.now() };
  if (on && signer && !signerHolds(signer, sub)) {
    // Renewed only with a tap on Turn on (the passkey confirms it, and
    // Safari asks for it only in a tap), never behind the person's back.
    on = false;
    lost = true;
  }
  try { sub = await currentSubscription(); } catch { sub = null; }
  state.pushEndpoint = sub && sub.endpoint;
  renderSubscriptions(state.push, state.pushEndpoint);
  $('notifications-on').hidden = on;
  $('notifications-off').hidden = !on;
  $('notifications-text').textContent = on
    ? 'This phone is notified when a request waits and no page is open.'
    : lost
      ? 'Notifications stopped reaching this phone; turn them on again.'
      : Notification.permission === 'denied'
        ? 'Notifications are blocked for this page in the browser\'s settings.'
        : 'Turn on notifications to be told when a request waits while this page is closed.';
}

// Click handler: the browser's permission if it was not given yet (one
// tap: Safari grants it only while a tap is handled, and the passkey's
// prompt would end that), else the passkey (credentials.get with no await
// before it), then the subscription.
async function onNotificationsOn() {
  const push = state.push;
  if (!push || Date.now() - push.fetchedAt > CHALLENGE_REFRESH_MS + 20000) {
    say('Getting a fresh challenge. Tap Turn on notifications again in a moment.');
    refreshNotifications();
    return;
  }
  if (!HAS_PASSKEYS) return say(NO_PASSKEYS);
  if (Notification.permission !== 'granted') {
    return Notification.requestPermission().then((permission) => say(permission === 'granted'
      ? 'Allowed. Tap Turn on notifications once more to confirm with your passkey.'
      : 'Notifications were not allowed.'));
  }
  $('notifications-on').disabled = true;
  const confirmed = navigator.credentials.get(confirmRequest(push.subscribe_challenge))
    .then(confirmation(push.subscribe_challenge));
  try {
    const c = await confirmed;
    const reg = await navigator.serviceWorker.ready;
    const old = await reg.pushManager.getSubscription();
    if (old && !signerHolds(push, old)) await old.unsubscribe();
    await subscribeWith(reg, push.key, c);
    say('Notifications are on.');
  } catch (err) {
    say(err instanceof ApiError ? err.message : err && err.name ? passkeyError(err) : 'Notifications could not be turned on in this browser.');
  }
  $('notifications-on').disabled = false;
  refreshNotifications();
}

// Click handler: the passkey confirms removing this browser's
// subscription (its challenge came with the list).
async function onNotificationsOff() {
  const mine = state.push && (state.push.subscriptions || []).find((s) => s.endpoint === state.pushEndpoint);
  $('notifications-off').disabled = true;
  const confirmed = mine && HAS_PASSKEYS
    ? navigator.credentials.get(confirmRequest(mine.remove_challenge)).then(confirmation(mine.remove_challenge))
    : null;
  try {
    const sub = await currentSubscription();
    if (sub && confirmed) {
      await api('/api/push/unsubscribe', { endpoint: sub.endpoint, ...(await confirmed) });
    }
    if (sub) {
      try { await sub.unsubscribe(); } catch { /* the signer forgot it already */ }
    }
    say('Notifications are off.');
  } catch (err) {
    say(err instanceof ApiError ? err.message : err && err.name ? passkeyError(err) : 'Notifications could not be turned off.');
  }
  $('notifications-off').disabled = false;
  refreshNotifications();
}

// ---- start ----

function onVisible() {
  if (document.visibilityState !== 'visible') {
    // Hidden (screen off, another app in front): end the live stream, so
    // the signer knows nobody looks here and wakes this phone with a push.
    if (state.view === 'view-main') stopEvents();
    return;
  }
  if (state.view === 'view-signin' && signinStale()) prefetchSignIn();
  if (state.view === 'view-main') {
    if (!state.events || state.events.readyState === EventSource.CLOSED) startEvents();
    refreshStatus();
    refreshNotifications();
    tick();
  }
}

function start() {
  if ('serviceWorker' in navigator) {
    try { navigator.serviceWorker.register('/sw.js').catch(() => {}); } catch { /* ignored */ }
  }
  $('enrol-button').addEventListener('click', onCreatePasskey);
  $('signin-button').addEventListener('click', onSignIn);
  $('signout-button').addEventListener('click', onSignOut);
  $('message').addEventListener('click', () => say(''));
  $('notifications-on').addEventListener('click', onNotificationsOn);
  $('notifications-off').addEventListener('click', onNotificationsOff);
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', onVisible);
  // Leaving the page (or its being frozen in the back-forward cache) ends
  // the live stream, so the signer knows no page is open here.
  window.addEventListener('pagehide', stopEvents);
  window.addEventListener('pageshow', (ev) => { if (ev.persisted) onVisible(); });
  setInterval(tick, 1000);
  route();
}

start();
