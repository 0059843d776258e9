// The page: space list, one space (listen, level meter, listener count, the room: stage,
// requests to speak, moderation, reactions), host controls.

import * as api from './api.js';
import { Captions } from './captions.js';
import { Listener, RtcListener } from './listen.js';
import { renderRecordingState, renderRecordings } from './recordings.js';
import { Replay, showClipLink } from './replay.js';
import { Room } from './room.js';
import { RoomView } from './room-view.js';
import { RtcError, canWebRtc, describe } from './rtc.js';
import { RtcSpeaker, Speaker } from './speak.js';
import { StatsPanel } from './stats.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'townhall.token';

const state = {
  space: null, // the space shown
  listener: null,
  speaker: null,
  listeners: 0,
  listenState: 'not listening',
  rtc: { listen: 'idle', speak: 'idle' }, // WebRTC connection states (WHEP listener, WHIP speaker)
  speakMode: null, // 'webrtc' or 'websocket'
};

const token = () => localStorage.getItem(TOKEN_KEY) || '';

function setStatus(el, text, error = false) {
  el.textContent = text;
  el.classList.toggle('error', error);
}

function setListeners(n) {
  state.listeners = n;
  $('listener-count').textContent = String(n);
}

// ---- the room -----------------------------------------------------------------------------

const captions = new Captions($, token);
const stats = new StatsPanel($, token);

const room = new Room(token, {
  onChange: () => view.render(),
  onListeners: setListeners,
  onCaptions: (c) => captions.summary(c),
  onReactions: (ev) => view.float(ev),
  // The room ended our part: stop speaking (and, removed or blocked, listening); the notice says why.
  onKicked: (reason) => {
    if (state.speaker) stopSpeaking();
    if ((reason === 'removed' || reason === 'blocked') && state.listener) stopListening();
  },
  onEnded: () => refreshSpace(),
});
const view = new RoomView(room, {
  leaveStage: () => {
    if (state.speaker) stopSpeaking();
  },
  changed: () => renderSpeak(),
});

/** The Speak button follows the room: a listener speaks once on stage (accepted or invited). */
function renderSpeak() {
  const live = Boolean(state.space) && state.space.state === 'live';
  const may = room.maySpeak();
  $('speak').disabled = !live || Boolean(state.speaker) || !may;
  $('speak').title = may ? '' : 'Request to speak: you can speak once a host accepts';
}

/** The speaking session was refused or hung up by the room: say why rather than retry. */
function speakRefused(err) {
  if (!(err instanceof RtcError) || err.status !== 403) return false;
  if (err.code === 'removed' || err.code === 'blocked') room.kicked(err.code);
  else room.kicked('moved_to_audience');
  return true;
}

// ---- routing ------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/space\/([a-z0-9-]+)/);
  const replayed = location.hash.match(/^#\/recording\/([a-z0-9-]+)/);
  if (!replayed) replay.hide();
  $('replay-view').hidden = !replayed;
  if (match) showSpace(match[1]);
  else if (replayed) showReplay(replayed[1]);
  else showList();
}

async function showList() {
  leaveSpace();
  $('space-view').hidden = true;
  $('list-view').hidden = false;
  await refreshList();
}

// ---- a recording's replay page ------------------------------------------------------------

const replay = new Replay($, token);

function showReplay(id) {
  leaveSpace();
  $('space-view').hidden = true;
  $('list-view').hidden = true;
  replay.show(id);
}

async function refreshList() {
  let spaces;
  try {
    spaces = await api.listSpaces();
  } catch (e) {
    return;
  }
  // Live and ended spaces in the list; scheduled ones under "Upcoming", soonest first (the
  // server's order).
  const item = (s) => {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `#/space/${s.id}`;
    const title = document.createElement('span');
    title.textContent = s.title;
    const meta = document.createElement('span');
    meta.className = 'muted';
    meta.textContent =
      s.state === 'live' ? `● live · ${s.listeners} listening` : s.state === 'scheduled' ? when(s) : s.state;
    a.append(title, meta);
    li.append(a);
    return li;
  };
  const upcoming = spaces.filter((s) => s.state === 'scheduled');
  const others = spaces.filter((s) => s.state !== 'scheduled');
  $('spaces').replaceChildren(...others.map(item));
  $('upcoming').replaceChildren(...upcoming.map(item));
  $('upcoming-title').hidden = upcoming.length === 0;
  $('list-empty').hidden = spaces.length > 0;
  refreshRecordings(null);
}

// The recordings list is read when a space is opened and when its recording starts or stops,
// else at most every 30 s: a crowd of pages must not poll the index.
const shownRecordings = { key: null, at: 0, recording: null };

/** The recordings of the space shown (`space`), or of every space (`null`, the list view). */
async function refreshRecordings(space) {
  const key = space || '*';
  const recording = space && state.space ? Boolean(state.space.recording) : null;
  const changed = shownRecordings.key !== key || shownRecordings.recording !== recording;
  if (!changed && Date.now() - shownRecordings.at < 30_000) return;
  Object.assign(shownRecordings, { key, at: Date.now(), recording });
  let list;
  try {
    list = await api.listRecordings(space, token());
  } catch (e) {
    return;
  }
  renderRecordings($(space ? 'space-recordings' : 'recordings'), list, token());
  if (space) $('space-recordings-card').hidden = list.length === 0;
  else $('recordings-empty').hidden = list.length > 0;
}

/** When a scheduled space is meant to start, in the reader's time zone. */
function when(space) {
  if (!space.scheduled_for) return 'scheduled';
  const at = new Date(space.scheduled_for * 1000);
  return `starts ${at.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })}`;
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
  $('space-when').hidden = space.state !== 'scheduled';
  $('space-when').textContent = space.state === 'scheduled' ? when(space) : '';
  const badge = $('space-state');
  badge.textContent = space.state;
  badge.className = `badge ${space.state}`;
  // WebSocket listeners get live counts; otherwise the space view's count is the one shown.
  if (!room.feed && !room.live) state.listeners = space.listeners;
  $('listener-count').textContent = String(state.listeners);
  const ogg = `${location.origin}/live/${space.id}.opus`;
  $('ogg-link').href = ogg;
  $('ogg-link').textContent = ogg;
  const live = space.state === 'live';
  $('clip-controls').hidden = !live;
  $('listen').disabled = !live || Boolean(state.listener);
  $('listen-rtc').disabled = !live || Boolean(state.listener) || !canWebRtc();
  room.open(space.id, live);
  // Going live, ending: the host and co-hosts (tokens for this space, or for all).
  const me = room.me();
  const manager = Boolean(me) && (me.tokenRole === 'host' || me.tokenRole === 'cohost');
  $('host-controls').hidden = !manager || space.state === 'ended';
  $('start-space').hidden = space.state !== 'scheduled';
  $('end-space').disabled = space.state === 'ended';
  renderRecordingState($, space, manager);
  refreshRecordings(space.id);
  captions.open(space, manager);
  stats.open(space, manager);
  view.render();
}

/** Files a report of the space (or of the person named) with the page's token. */
async function report(e) {
  e.preventDefault();
  const status = $('report-status');
  if (!token()) {
    setStatus(status, 'paste a token first (Host ▸ Token; joining as a listener gives one)', true);
    return;
  }
  const body = { category: $('report-category').value };
  const target = $('report-target').value.trim();
  const details = $('report-details').value.trim();
  if (target) body.target = target;
  if (details) body.details = details;
  try {
    await api.report(token(), state.space.id, body);
    setStatus(status, 'Thank you: the report was sent to the operators.');
    $('report-target').value = '';
    $('report-details').value = '';
  } catch (err) {
    setStatus(status, `${err.code || 'error'}: ${err.message}`, true);
  }
}

/** Clips the last seconds of the live space shown: a link to share. */
async function clipLive() {
  const space = state.space;
  if (!space) return;
  const status = $('clip-status');
  $('clip').disabled = true;
  $('clip-link').hidden = true;
  setStatus(status, 'cutting…');
  try {
    const clip = await api.clipSpace(token(), space.id, Number($('clip-seconds').value) || 30);
    showClipLink($('clip-link'), status, clip);
  } catch (err) {
    setStatus(status, `${err.code || 'error'}: ${err.message}`, true);
  } finally {
    $('clip').disabled = false;
  }
}

/** The room says recording started or stopped: the REC badge follows at once (the list, at the
 * next refresh of the space, spread over its 5 s period across the audience). */
function recordingChanged(ev) {
  if (!state.space) return;
  state.space.recording = Boolean(ev.recording);
  const me = room.me();
  renderRecordingState($, state.space, Boolean(me) && (me.tokenRole === 'host' || me.tokenRole === 'cohost'));
}

function leaveSpace() {
  if (state.listener) state.listener.stop();
  if (state.speaker) state.speaker.stop();
  state.listener = null;
  state.speaker = null;
  state.space = null;
  room.close();
  captions.open(null, false);
  stats.open(null, false);
  state.rtc = { listen: 'idle', speak: 'idle' };
  state.speakMode = null;
  $('listen').hidden = false;
  $('listen-rtc').hidden = false;
  $('stop').hidden = true;
  $('speak-mode').hidden = true;
  $('speak').hidden = false;
  $('unspeak').hidden = true;
}

async function listen() {
  const space = state.space;
  if (!space) return;
  $('listen').hidden = true;
  $('listen-rtc').hidden = true;
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
    onListeners: setListeners,
    onEnded: () => refreshSpace(),
    // Room events come with the program: the room follows them rather than polling.
    onEvent: (ev) => {
      if (captions.event(ev)) return;
      if (ev.type === 'recording') recordingChanged(ev);
      else room.apply(ev);
    },
    onFeed: (open) => room.setFeed(open),
    onRefused: (code) => room.kicked(code),
  });
  try {
    await state.listener.start();
  } catch (e) {
    setStatus($('listen-state'), `cannot play: ${e.message}`, true);
  }
}

/** A state line for a WebRTC session: `connected`, or `reconnecting: why; retrying in 2 s`. */
const rtcText = (s, detail) => (detail ? `${s}: ${detail}` : s);

/** Listens over WebRTC (WHEP): the lowest latency, e.g. while waiting to speak. */
async function listenLowLatency() {
  const space = state.space;
  if (!space) return;
  $('listen').hidden = true;
  $('listen-rtc').hidden = true;
  $('stop').hidden = false;
  const listener = new RtcListener(space.id, {
    token: token() || undefined,
    onState: (s, detail) => {
      state.rtc.listen = s;
      state.listenState = `low latency: ${rtcText(s, detail)}`;
      setStatus($('listen-state'), state.listenState, s === 'failed');
      const err = listener.session && listener.session.error;
      if (s === 'failed' && err && err.status === 403) room.kicked(err.code);
    },
    onEnded: () => refreshSpace(),
  });
  state.listener = listener;
  try {
    await listener.start();
  } catch (e) {
    // The state line says what went wrong; the session retries unless that cannot help.
    if (listener.state === 'idle') setStatus($('listen-state'), `cannot play: ${e.message}`, true);
  }
}

function stopListening() {
  if (state.listener) state.listener.stop();
  state.listener = null;
  state.rtc.listen = 'idle';
  $('listen').hidden = false;
  $('listen-rtc').hidden = false;
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

function setSpeakMode(mode, text, warn = false) {
  state.speakMode = mode;
  $('speak-mode').hidden = false;
  setStatus($('speak-mode'), text, warn);
}

/**
 * Speaks over WebRTC (WHIP); where the browser has no WebRTC or the first try fails for a reason
 * the WebSocket path does not share (not a token, role or space problem), over the WebSocket.
 */
async function speak() {
  const space = state.space;
  if (!space) return;
  $('speak').hidden = true;
  $('unspeak').hidden = false;
  let why = 'this browser has no WebRTC';
  if (canWebRtc()) {
    const rtc = new RtcSpeaker(space.id, token(), {
      onState: (s, detail) => {
        state.rtc.speak = s;
        setStatus($('speak-state'), rtcText(s, detail), s === 'failed');
        if (s === 'connected') room.speaking();
        // Hung up and then refused (moved to the audience, removed): the room says why.
        if (s === 'failed' && state.speaker === rtc && rtc.session.everConnected && speakRefused(rtc.session.error)) {
          stopSpeaking();
        }
      },
    });
    state.speaker = rtc;
    setSpeakMode('webrtc', 'speaking over WebRTC (WHIP)');
    try {
      await rtc.start();
      return;
    } catch (e) {
      if (state.speaker !== rtc) return; // stopped meanwhile
      rtc.stop();
      const refused = e instanceof RtcError && [401, 403, 404, 409, 410].includes(e.status);
      if (!rtc.stream || refused) {
        // No microphone, or the server refused the speaker: the WebSocket would not do better.
        setStatus($('speak-state'), `cannot speak: ${e instanceof RtcError ? describe(e) : e.message}`, true);
        stopSpeaking();
        return;
      }
      why = `WebRTC failed: ${e instanceof RtcError ? describe(e) : e.message}`;
    }
  }
  setSpeakMode('websocket', `speaking over WebSocket, because ${why}`, true);
  state.rtc.speak = 'idle';
  state.speaker = new Speaker(space.id, token(), {
    onState: (s) => {
      setStatus($('speak-state'), s);
      if (s === 'on air') room.speaking();
    },
    onError: (s) => setStatus($('speak-state'), s, true),
    onBye: (reason) => room.kicked(reason),
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
  state.rtc.speak = 'idle';
  state.speakMode = null;
  $('speak').hidden = false;
  $('unspeak').hidden = true;
  $('speak-mode').hidden = true;
  renderSpeak();
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
    const fields = { title, live: $('new-live').checked };
    const description = $('new-description').value.trim();
    if (description) fields.description = description;
    if (!fields.live && $('new-when').value) {
      fields.scheduled_for = Math.floor(new Date($('new-when').value).getTime() / 1000);
    }
    try {
      const space = await api.createSpace(token(), fields);
      setStatus($('host-status'), `created ${space.id}`);
      $('new-title').value = '';
      $('new-description').value = '';
      location.hash = `#/space/${space.id}`;
    } catch (err) {
      setStatus($('host-status'), `${err.code || 'error'}: ${err.message}`, true);
    }
  };
  $('new-live').onchange = () => {
    $('new-when-label').hidden = $('new-live').checked;
  };
  $('report-form').onsubmit = report;
  $('listen').onclick = listen;
  $('listen-rtc').onclick = listenLowLatency;
  $('stop').onclick = stopListening;
  $('start-space').onclick = () => hostAction(() => api.startSpace(token(), state.space.id), 'live');
  $('record').onclick = () => hostAction(() => api.setRecording(token(), state.space.id, true), 'recording');
  $('stop-record').onclick = () =>
    hostAction(() => api.setRecording(token(), state.space.id, false), 'recording saved');
  $('end-space').onclick = () => {
    if (state.speaker) stopSpeaking();
    hostAction(() => api.endSpace(token(), state.space.id), 'ended');
  };
  $('speak').onclick = speak;
  $('unspeak').onclick = stopSpeaking;
  $('clip').onclick = clipLive;
  $('replay-clip').onclick = () => replay.clip();
  window.addEventListener('hashchange', route);
  // Leaving the page ends WebRTC sessions at once (DELETE) rather than when they time out.
  window.addEventListener('pagehide', leaveSpace);
}

// ---- meters and periodic refresh ----------------------------------------------------------

function meters() {
  const out = state.listener ? state.listener.level() : 0;
  $('level-bar').style.width = `${Math.min(100, out * 300)}%`;
  const mic = state.speaker ? state.speaker.micLevel() : 0;
  $('mic-bar').style.width = `${Math.min(100, mic * 100)}%`;
  requestAnimationFrame(meters);
}

setInterval(() => captions.tick(), 1000);

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
      `${(e.throttled_share * 100).toFixed(0)}% throttled, ` +
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
  /** The replay page's recording id, once shown. */
  replay: () => (replay.rec ? replay.rec.id : null),
  /** WebRTC connection states (`idle` when unused) and how the page speaks. */
  rtc: () => ({ listen: state.rtc.listen, speak: state.rtc.speak, speakMode: state.speakMode }),
  /** The WHEP listener's loudest level (RMS) and loud windows since it started. */
  heard: () => (state.listener instanceof RtcListener ? state.listener.heard() : { peak: 0, loud: 0 }),
  /** `pc.getStats()` of the WHEP listener's or WHIP speaker's session, in a few numbers. */
  rtcStats: (which) => {
    const s = which === 'speak' ? state.speaker : state.listener;
    return s && s.session ? s.session.stats() : Promise.resolve(null);
  },
  /** The room as the page shows it: stage, hands, invitations, our part, notices, reactions. */
  room: () => room.snapshot(),
  /** The session's Location (what DELETE ends). */
  rtcLocation: (which) => {
    const s = which === 'speak' ? state.speaker : state.listener;
    return s && s.session ? s.session.location : null;
  },
};

wire();
route();
refreshShield();
requestAnimationFrame(meters);
