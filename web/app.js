// The page: space list, one space (listen, level meter, listener count, the room: stage,
// requests to speak, moderation, reactions), host controls.

import * as api from './api.js';
import { Captions } from './captions.js';
import * as i18n from './i18n.js';
import { t } from './i18n.js';
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
  listenState: '',
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
  $('listener-count').textContent = t('space.listening', { count: n });
}

/** A space's state (`live`, `scheduled`, `ended`) in the page's language. */
const stateName = (s) =>
  ({ live: t('state.live'), scheduled: t('state.scheduled'), ended: t('state.ended') })[s] || s;

/** A WebRTC session's state (`connecting`, `connected`, ...) in the page's language. */
const rtcStateName = (s) =>
  ({
    idle: t('rtc.idle'),
    connecting: t('rtc.connecting'),
    connected: t('rtc.connected'),
    reconnecting: t('rtc.reconnecting'),
    failed: t('rtc.failed'),
    closed: t('rtc.closed'),
  })[s] || s;

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
  $('speak').title = may ? '' : t('speak.need_stage');
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
    title.dir = 'auto';
    const meta = document.createElement('span');
    meta.className = 'muted';
    meta.textContent =
      s.state === 'live'
        ? t('list.live_listening', { count: s.listeners })
        : s.state === 'scheduled'
          ? when(s)
          : stateName(s.state);
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
  const key = `${space || '*'} ${i18n.language()}`;
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
  if (!space.scheduled_for) return stateName('scheduled');
  return t('space.starts', { date: i18n.date(space.scheduled_for) });
}

// ---- one space ----------------------------------------------------------------------------

async function showSpace(id) {
  if (!state.space || state.space.id !== id) leaveSpace();
  $('list-view').hidden = true;
  $('space-view').hidden = false;
  try {
    renderSpace(await api.getSpace(id));
  } catch (e) {
    $('space-title').textContent = e.status === 404 ? t('space.not_found') : t('space.load_failed');
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
  badge.textContent = stateName(space.state);
  badge.className = `badge ${space.state}`;
  // WebSocket listeners get live counts; otherwise the space view's count is the one shown.
  if (!room.feed && !room.live) state.listeners = space.listeners;
  $('listener-count').textContent = t('space.listening', { count: state.listeners });
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
    setStatus(status, t('report.need_token'), true);
    return;
  }
  const body = { category: $('report-category').value };
  const target = $('report-target').value.trim();
  const details = $('report-details').value.trim();
  if (target) body.target = target;
  if (details) body.details = details;
  try {
    await api.report(token(), state.space.id, body);
    setStatus(status, t('report.sent'));
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
  setStatus(status, t('clip.cutting'));
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

/** Shows Stop in place of the Listen buttons; a keyboard on either lands on Stop. */
function showStop() {
  const focused = document.activeElement === $('listen') || document.activeElement === $('listen-rtc');
  $('listen').hidden = true;
  $('listen-rtc').hidden = true;
  $('stop').hidden = false;
  if (focused) $('stop').focus();
}

async function listen() {
  const space = state.space;
  if (!space) return;
  showStop();
  state.listener = new Listener(space.id, {
    // Hosts listen with their token (private spaces need one; signed-in joiners wait less).
    token: token() || undefined,
    hlsUrl: space.urls.hls,
    scale: space.listen_mode === 'scale',
    onState: (text, failed) => {
      state.listenState = text;
      setStatus($('listen-state'), text, failed);
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
    setStatus($('listen-state'), t('listen.cannot_play', { message: e.message }), true);
  }
}

/** A state line for a WebRTC session: `connected`, or `reconnecting: why; retrying in 2 s`. */
const rtcText = (s, detail) => (detail ? t('rtc.state_detail', { state: rtcStateName(s), detail }) : rtcStateName(s));

/** Listens over WebRTC (WHEP): the lowest latency, e.g. while waiting to speak. */
async function listenLowLatency() {
  const space = state.space;
  if (!space) return;
  showStop();
  const listener = new RtcListener(space.id, {
    token: token() || undefined,
    onState: (s, detail) => {
      state.rtc.listen = s;
      state.listenState = t('listen.low_latency', { state: rtcText(s, detail) });
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
    if (listener.state === 'idle') setStatus($('listen-state'), t('listen.cannot_play', { message: e.message }), true);
  }
}

function stopListening() {
  if (state.listener) state.listener.stop();
  state.listener = null;
  state.rtc.listen = 'idle';
  const focused = document.activeElement === $('stop');
  $('listen').hidden = false;
  $('listen-rtc').hidden = false;
  $('stop').hidden = true;
  if (state.space) renderSpace(state.space);
  if (focused) $('listen').focus();
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
  let why = t('speak.no_webrtc');
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
    setSpeakMode('webrtc', t('speak.over_webrtc'));
    try {
      await rtc.start();
      return;
    } catch (e) {
      if (state.speaker !== rtc) return; // stopped meanwhile
      rtc.stop();
      const refused = e instanceof RtcError && [401, 403, 404, 409, 410].includes(e.status);
      if (!rtc.stream || refused) {
        // No microphone, or the server refused the speaker: the WebSocket would not do better.
        setStatus($('speak-state'), t('speak.cannot', { message: e instanceof RtcError ? describe(e) : e.message }), true);
        stopSpeaking();
        return;
      }
      why = t('speak.webrtc_failed', { message: e instanceof RtcError ? describe(e) : e.message });
    }
  }
  setSpeakMode('websocket', t('speak.over_websocket', { why }), true);
  state.rtc.speak = 'idle';
  state.speaker = new Speaker(space.id, token(), {
    onState: (text, code) => {
      setStatus($('speak-state'), text);
      if (code === 'on_air') room.speaking();
    },
    onError: (s) => setStatus($('speak-state'), s, true),
    onBye: (reason) => room.kicked(reason),
  });
  try {
    await state.speaker.start();
  } catch (e) {
    setStatus($('speak-state'), t('speak.cannot', { message: e.message }), true);
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
    $('host-toggle').setAttribute('aria-expanded', String(!$('host-panel').hidden));
  };
  $('token').value = token();
  $('host-panel').hidden = !token();
  $('host-toggle').setAttribute('aria-expanded', String(!$('host-panel').hidden));
  // The language switcher: each language named in itself.
  const lang = $('lang');
  lang.replaceChildren(
    ...Object.entries(i18n.LANGUAGES).map(([code, name]) => {
      const o = document.createElement('option');
      o.value = code;
      o.lang = code;
      o.textContent = name;
      return o;
    }),
  );
  lang.onchange = () => i18n.setLanguage(lang.value);
  i18n.onLanguage(relabel);
  $('token-form').onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, $('token').value.trim());
    setStatus($('host-status'), t('host.token_saved'));
    refreshSpace();
  };
  $('token-clear').onclick = () => {
    localStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    setStatus($('host-status'), t('host.token_forgotten'));
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
      setStatus($('host-status'), t('host.created', { id: space.id }));
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
  $('start-space').onclick = () => hostAction(() => api.startSpace(token(), state.space.id), t('state.live'));
  $('record').onclick = () => hostAction(() => api.setRecording(token(), state.space.id, true), t('host.recording'));
  $('stop-record').onclick = () =>
    hostAction(() => api.setRecording(token(), state.space.id, false), t('host.recording_saved'));
  $('end-space').onclick = () => {
    if (state.speaker) stopSpeaking();
    hostAction(() => api.endSpace(token(), state.space.id), t('state.ended'));
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
    $('verdict').textContent =
      { normal: t('shield.normal'), flash_crowd: t('shield.flash_crowd'), attack: t('shield.attack') }[s.verdict] ||
      s.verdict;
    $('verdict').className = s.verdict;
    const pct = (x) => Math.round(x * 100);
    const parts = [
      t('shield.evidence', {
        rps: Math.round(e.requests_per_s),
        junk: pct(e.junk_share),
        throttled: pct(e.throttled_share),
        stay: pct(e.stay_share),
        subnet: pct(e.top_subnet_share),
      }),
    ];
    if (s.queued) parts.push(t('shield.waiting', { count: s.queued }));
    if (s.overloaded) parts.push(t('shield.overloaded'));
    if (s.require_token) parts.push(t('shield.attack_mode'));
    $('evidence').textContent = parts.join(t('list.comma'));
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

/** The language changed: redraw what the page wrote itself (the marked-up text is done). */
function relabel() {
  $('lang').value = i18n.language();
  if (!state.listener) setStatus($('listen-state'), t('listen.not_listening'));
  else if (state.listener.restate) state.listener.restate();
  view.relabel();
  if (state.space) renderSpace(state.space);
  else if (!$('list-view').hidden) refreshList();
  replay.relabel();
  captions.render();
}

// The catalogs first: everything below speaks the page's language (what was drawn before they
// came is drawn again).
wire();
await i18n.init();
$('lang').value = i18n.language();
state.listenState = t('listen.not_listening');
setStatus($('listen-state'), state.listenState);
view.drawReactions();
captions.render();
route();
refreshShield();
requestAnimationFrame(meters);
