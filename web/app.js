// The page: space list, one space (listen, level meter, listener count), host controls.

import * as api from './api.js';
import { Listener } from './listen.js';
import { Speaker } from './speak.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'townhall.token';

const state = {
  space: null, // the space shown
  listener: null,
  speaker: null,
  listeners: 0,
  listenState: 'not listening',
};

const token = () => localStorage.getItem(TOKEN_KEY) || '';

function setStatus(el, text, error = false) {
  el.textContent = text;
  el.classList.toggle('error', error);
}

// ---- routing ------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/space\/([a-z0-9-]+)/);
  if (match) showSpace(match[1]);
  else showList();
}

async function showList() {
  leaveSpace();
  $('space-view').hidden = true;
  $('list-view').hidden = false;
  await refreshList();
}

async function refreshList() {
  let spaces;
  try {
    spaces = await api.listSpaces();
  } catch (e) {
    return;
  }
  const ul = $('spaces');
  ul.replaceChildren(
    ...spaces.map((s) => {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = `#/space/${s.id}`;
      const title = document.createElement('span');
      title.textContent = s.title;
      const meta = document.createElement('span');
      meta.className = 'muted';
      meta.textContent = s.state === 'live' ? `● live · ${s.listeners} listening` : s.state;
      a.append(title, meta);
      li.append(a);
      return li;
    }),
  );
  $('list-empty').hidden = spaces.length > 0;
}

// ---- one space ----------------------------------------------------------------------------

async function showSpace(id) {
  if (!state.space || state.space.id !== id) leaveSpace();
  $('list-view').hidden = true;
  $('space-view').hidden = false;
  try {
    renderSpace(await api.getSpace(id));
  } catch (e) {
    $('space-title').textContent = e.status === 404 ? 'No such space' : 'Could not load the space';
    $('space-description').textContent = e.message;
  }
}

function renderSpace(space) {
  state.space = space;
  $('space-title').textContent = space.title;
  $('space-description').textContent = space.description || '';
  const badge = $('space-state');
  badge.textContent = space.state;
  badge.className = `badge ${space.state}`;
  if (!state.listener) state.listeners = space.listeners;
  $('listener-count').textContent = String(state.listeners);
  $('speakers').textContent = space.speakers.length
    ? `on stage: ${space.speakers.map((s) => s.identity).join(', ')}`
    : '';
  const ogg = `${location.origin}/live/${space.id}.opus`;
  $('ogg-link').href = ogg;
  $('ogg-link').textContent = ogg;
  const live = space.state === 'live';
  $('listen').disabled = !live || Boolean(state.listener);
  const host = Boolean(token());
  $('host-controls').hidden = !host || space.state === 'ended';
  $('start-space').hidden = space.state !== 'scheduled';
  $('end-space').disabled = space.state === 'ended';
  $('speak').disabled = !live || Boolean(state.speaker);
}

function leaveSpace() {
  if (state.listener) state.listener.stop();
  if (state.speaker) state.speaker.stop();
  state.listener = null;
  state.speaker = null;
  state.space = null;
  $('listen').hidden = false;
  $('stop').hidden = true;
  $('speak').hidden = false;
  $('unspeak').hidden = true;
}

async function listen() {
  const space = state.space;
  if (!space) return;
  $('listen').hidden = true;
  $('stop').hidden = false;
  state.listener = new Listener(space.id, {
    // Hosts listen with their token (private spaces need one; signed-in joiners wait less).
    token: token() || undefined,
    hlsUrl: space.urls.hls,
    scale: space.listen_mode === 'scale',
    onState: (s) => {
      state.listenState = s;
      setStatus($('listen-state'), s, s.includes('failed'));
    },
    onListeners: (n) => {
      state.listeners = n;
      $('listener-count').textContent = String(n);
    },
    onEnded: () => refreshSpace(),
  });
  try {
    await state.listener.start();
  } catch (e) {
    setStatus($('listen-state'), `cannot play: ${e.message}`, true);
  }
}

function stopListening() {
  if (state.listener) state.listener.stop();
  state.listener = null;
  $('listen').hidden = false;
  $('stop').hidden = true;
  if (state.space) renderSpace(state.space);
}

async function refreshSpace() {
  if (!state.space) return;
  try {
    renderSpace(await api.getSpace(state.space.id));
  } catch (e) {
    /* keep what is shown */
  }
}

// ---- host ---------------------------------------------------------------------------------

async function hostAction(action, okText) {
  try {
    await action();
    setStatus($('host-status'), okText);
  } catch (e) {
    setStatus($('host-status'), `${e.code || 'error'}: ${e.message}`, true);
  }
  await refreshSpace();
  await refreshList();
}

async function speak() {
  const space = state.space;
  if (!space) return;
  $('speak').hidden = true;
  $('unspeak').hidden = false;
  state.speaker = new Speaker(space.id, token(), {
    onState: (s) => setStatus($('speak-state'), s),
    onError: (s) => setStatus($('speak-state'), s, true),
  });
  try {
    await state.speaker.start();
  } catch (e) {
    setStatus($('speak-state'), `cannot speak: ${e.message}`, true);
    stopSpeaking();
  }
}

function stopSpeaking() {
  if (state.speaker) state.speaker.stop();
  state.speaker = null;
  $('speak').hidden = false;
  $('unspeak').hidden = true;
  refreshSpace();
}

function wire() {
  $('host-toggle').onclick = () => {
    $('host-panel').hidden = !$('host-panel').hidden;
  };
  $('token').value = token();
  $('host-panel').hidden = !token();
  $('token-form').onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, $('token').value.trim());
    setStatus($('host-status'), 'token saved');
    refreshSpace();
  };
  $('token-clear').onclick = () => {
    localStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    setStatus($('host-status'), 'token forgotten');
    refreshSpace();
  };
  $('create-form').onsubmit = async (e) => {
    e.preventDefault();
    const title = $('new-title').value.trim();
    try {
      const space = await api.createSpace(token(), { title, live: $('new-live').checked });
      setStatus($('host-status'), `created ${space.id}`);
      $('new-title').value = '';
      location.hash = `#/space/${space.id}`;
    } catch (err) {
      setStatus($('host-status'), `${err.code || 'error'}: ${err.message}`, true);
    }
  };
  $('listen').onclick = listen;
  $('stop').onclick = stopListening;
  $('start-space').onclick = () => hostAction(() => api.startSpace(token(), state.space.id), 'live');
  $('end-space').onclick = () => {
    if (state.speaker) stopSpeaking();
    hostAction(() => api.endSpace(token(), state.space.id), 'ended');
  };
  $('speak').onclick = speak;
  $('unspeak').onclick = stopSpeaking;
  window.addEventListener('hashchange', route);
}

// ---- meters and periodic refresh ----------------------------------------------------------

function meters() {
  const out = state.listener ? state.listener.level() : 0;
  $('level-bar').style.width = `${Math.min(100, out * 300)}%`;
  const mic = state.speaker ? state.speaker.micLevel() : 0;
  $('mic-bar').style.width = `${Math.min(100, mic * 100)}%`;
  requestAnimationFrame(meters);
}

setInterval(() => {
  if (state.space) refreshSpace();
  else if (!$('list-view').hidden) refreshList();
}, 5000);

/** Shows the crowd-or-attack verdict to operators (tokens for every space). */
async function refreshShield() {
  if (!token() || $('host-panel').hidden) return;
  try {
    const s = await api.shieldStatus(token());
    const e = s.evidence;
    $('shield').hidden = false;
    $('verdict').textContent = s.verdict.replace('_', ' ');
    $('verdict').className = s.verdict;
    $('evidence').textContent =
      `${e.requests_per_s.toFixed(0)} req/s, ${(e.junk_share * 100).toFixed(0)}% junk, ` +
      `${(e.stay_share * 100).toFixed(0)}% of listeners stay, top subnet ${(e.top_subnet_share * 100).toFixed(0)}%` +
      (s.queued ? `, ${s.queued} waiting` : '') +
      (s.overloaded ? ', overloaded' : '') +
      (s.require_token ? ', attack mode on' : '');
  } catch (err) {
    $('shield').hidden = true;
  }
}
setInterval(refreshShield, 2000);

/** Read-outs for tests and the curious: what the page hears and does. */
window.townhall = {
  level: () => (state.listener ? state.listener.level() : 0),
  micLevel: () => (state.speaker ? state.speaker.micLevel() : 0),
  state: () => state.listenState,
  listeners: () => state.listeners,
  verdict: () => $('verdict').textContent,
  space: () => (state.space ? state.space.id : null),
};

wire();
route();
refreshShield();
requestAnimationFrame(meters);
