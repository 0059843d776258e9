// WebRTC sessions over WHIP (publish) and WHEP (subscribe), RFC 9725: POST an SDP offer, get
// `201 Created` with the answer and the session's Location, DELETE the Location to leave. The
// server is ICE-lite with host candidates only and no trickle ICE: the offer goes out once ICE
// gathering is complete (or after a short wait), and a broken session is replaced by a new one
// (DELETE, then POST a fresh offer) with exponential backoff and jitter.

import { Backoff, retryAfterMs } from './backoff.js';
import { t } from './i18n.js';

/** True when this browser can make WebRTC sessions. */
export const canWebRtc = () => typeof RTCPeerConnection === 'function';

/** How long the first ICE candidates may take to gather before the offer is sent anyway. */
const GATHER_MS = 1500;
/** How long a session may take from the answer to `connected`. */
const CONNECT_MS = 10000;
/** How long `disconnected` may last before the session is replaced. */
const DISCONNECTED_MS = 3000;

/** A WHIP/WHEP request that failed: `status` 0 when the server could not be reached. */
export class RtcError extends Error {
  constructor(status, code, message, retryAfterMs) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  /** Retrying cannot help (no token, wrong role, no such space, ended, offer refused). */
  get fatal() {
    return this.status >= 400 && this.status < 500 && this.status !== 429;
  }
}

/** What a failed request means to a person. */
export function describe(err) {
  const wait = err.retryAfterMs ? t('rtc.retry_in', { seconds: Math.ceil(err.retryAfterMs / 1000) }) : '';
  switch (err.status) {
    case 0:
      return t('rtc.unreachable', { message: err.message });
    case 401:
      return t('rtc.needs_token', { message: err.message });
    case 403:
      return t('rtc.not_allowed', { message: err.message });
    case 404:
      return t('rtc.not_found');
    case 410:
      return t('speak.space_ended');
    case 429:
      return t('rtc.too_many', { wait });
    case 503:
      return t('rtc.busy', { wait });
    default:
      return err.status ? `${err.status}: ${err.message}` : err.message;
  }
}

export { retryAfterMs };

/** Resolves once ICE gathering is complete, or after `ms` (the server needs no candidates). */
export function gathered(pc, ms = GATHER_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** POSTs an offer; resolves to `{answer, location}` (Location made absolute) or throws RtcError. */
export async function postOffer(url, sdp, token) {
  let res;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...authHeaders(token) },
      body: sdp,
    });
  } catch (e) {
    throw new RtcError(0, 'network', e.message);
  }
  if (res.status !== 201) {
    const json = await res.json().catch(() => null);
    const err = json && json.error ? json.error : { code: 'http', message: res.statusText };
    throw new RtcError(res.status, err.code, err.message, retryAfterMs(res.headers.get('Retry-After')));
  }
  const where = res.headers.get('Location');
  if (!where) throw new RtcError(res.status, 'no_location', 'the server sent no session Location');
  return { answer: await res.text(), location: new URL(where, new URL(url, document.baseURI)).href };
}

/** Ends a session (best effort; survives the page being closed). */
export function deleteSession(location, token) {
  return fetch(location, { method: 'DELETE', headers: authHeaders(token), keepalive: true }).catch(() => {});
}

/** A few numbers from `pc.getStats()`: packets each way, the selected candidate pair. */
export async function summarize(pc) {
  const out = { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState };
  if (pc.connectionState === 'closed') return out;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.packetsReceived = s.packetsReceived;
      out.packetsLost = s.packetsLost;
      out.jitter = s.jitter;
      out.totalAudioEnergy = s.totalAudioEnergy;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'audio') out.packetsSent = s.packetsSent;
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
      const local = stats.get(s.localCandidateId);
      const remote = stats.get(s.remoteCandidateId);
      out.pair = `${local && local.address}:${local && local.port} -> ${remote && remote.address}:${remote && remote.port}`;
      out.rttMs = s.currentRoundTripTime === undefined ? undefined : s.currentRoundTripTime * 1000;
    }
  });
  return out;
}

/**
 * One WHIP or WHEP session that keeps itself up: POSTs an offer to `url`, and, when the
 * connection fails (or stays disconnected for 3 s) or the POST fails in a way retrying can
 * help, DELETEs what it had and makes a new one after a backoff (or what Retry-After asks).
 *
 * `setup(pc)` adds the transceivers; `onTrack(stream)` gets the remote audio; `onState(state,
 * detail)` hears `connecting`, `connected`, `reconnecting`, `failed` (retrying cannot help:
 * `detail` says why) and `closed`.
 */
export class RtcSession {
  constructor(url, { token, setup, onTrack, onState, resolve }) {
    this.url = url;
    this.token = token;
    // Where each attempt goes, asked anew each time (a listener's door: the node and ticket);
    // without it, always `url` with `token`.
    this.resolve = resolve;
    this.setup = setup;
    this.onTrack = onTrack || (() => {});
    this.onState = onState || (() => {});
    this.state = 'idle';
    this.detail = '';
    this.attempts = 0;
    this.everConnected = false;
    this.stopped = false;
    this.pc = null;
    this.location = null;
    this.timers = {};
  }

  /**
   * Starts; resolves when the session first connects, rejects (with an RtcError or Error) when
   * the first attempt fails. It keeps retrying afterwards unless the error is fatal or `stop()`.
   */
  start() {
    this.first = {};
    const settled = new Promise((resolve, reject) => {
      this.first.resolve = resolve;
      this.first.reject = reject;
    });
    this.attempt();
    return settled;
  }

  setState(state, detail = '') {
    this.state = state;
    this.detail = detail;
    this.onState(state, detail);
  }

  /** Makes one peer connection and signals it. */
  async attempt() {
    if (this.stopped) return;
    this.setState(this.everConnected || this.attempts > 0 ? 'reconnecting' : 'connecting');
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    pc.ontrack = (e) => this.onTrack(e.streams[0] || new MediaStream([e.track]));
    pc.onconnectionstatechange = () => this.changed(pc);
    try {
      const target = this.resolve ? await this.resolve() : { url: this.url, token: this.token };
      if (this.pc !== pc) return;
      this.sessionToken = target.token;
      this.setup(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      if (this.pc !== pc) return;
      const { answer, location } = await postOffer(target.url, pc.localDescription.sdp, target.token);
      if (this.pc !== pc) {
        deleteSession(location, target.token);
        return;
      }
      this.location = location;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      this.later('connect', CONNECT_MS, () => this.fail(pc, new Error(t('rtc.no_connection', { seconds: 10 }))));
    } catch (e) {
      if (this.pc === pc) this.fail(pc, e);
    }
  }

  changed(pc) {
    if (this.pc !== pc) return;
    switch (pc.connectionState) {
      case 'connected':
        this.cancel('connect');
        this.cancel('disconnected');
        this.attempts = 0;
        this.everConnected = true;
        this.setState('connected');
        if (this.first) this.first.resolve();
        this.first = null;
        break;
      case 'disconnected':
        this.setState('reconnecting', t('rtc.interrupted'));
        this.later('disconnected', DISCONNECTED_MS, () => this.fail(pc, new Error(t('listen.connection_lost'))));
        break;
      case 'failed':
        this.fail(pc, new Error(t('rtc.connection_failed')));
        break;
      default:
        break;
    }
  }

  /** Gives up this peer connection; retries unless retrying cannot help. */
  fail(pc, err) {
    if (this.pc !== pc || this.stopped) return;
    this.drop();
    if (this.first) this.first.reject(err);
    this.first = null;
    const why = err instanceof RtcError ? describe(err) : err.message;
    if (err instanceof RtcError && err.fatal) {
      this.stopped = true;
      this.error = err;
      this.setState('failed', why);
      return;
    }
    // Retry-After is a floor; the jittered draw comes on top (docs/protocol.md, "Reconnecting").
    const b = new Backoff(1000, 30000);
    b.failures = this.attempts;
    const delay = b.next(err.retryAfterMs);
    this.attempts += 1;
    this.setState('reconnecting', t('listen.retrying', { why, seconds: Math.max(1, Math.round(delay / 1000)) }));
    this.later('retry', delay, () => this.attempt());
  }

  /** Closes the current peer connection and ends its server session. */
  drop() {
    this.cancel('connect');
    this.cancel('disconnected');
    if (this.location) deleteSession(this.location, this.sessionToken);
    this.location = null;
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  later(name, ms, fn) {
    this.cancel(name);
    this.timers[name] = setTimeout(() => {
      delete this.timers[name];
      fn();
    }, ms);
  }

  cancel(name) {
    clearTimeout(this.timers[name]);
    delete this.timers[name];
  }

  /** `pc.getStats()` in a few numbers (for tests and the curious). */
  stats() {
    return this.pc ? summarize(this.pc) : Promise.resolve({ state: this.state });
  }

  /** Leaves: DELETE on the session, close the connection, no more retries. */
  stop() {
    if (this.stopped && !this.pc) return;
    this.stopped = true;
    Object.keys(this.timers).forEach((name) => this.cancel(name));
    this.drop();
    if (this.first) this.first.reject(new Error('stopped'));
    this.first = null;
    if (this.state !== 'failed') this.setState('closed');
  }
}
