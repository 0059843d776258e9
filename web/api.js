// The JSON API under /api/v1. Errors come back as {"error": {"code", "message"}}.

import { retryAfterMs } from './backoff.js';
import { t } from './i18n.js';

/** An API error with its HTTP status, code and the `Retry-After` it came with (ms, if any). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterMs) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

async function call(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json().catch(() => null);
  if (!res.ok) {
    const err = json && json.error ? json.error : { code: 'http', message: res.statusText };
    throw new ApiError(res.status, err.code, err.message, retryAfterMs(res.headers.get('Retry-After')));
  }
  return json;
}

/**
 * The token pasted in the page, if any: reads send it too, since private spaces (their listing,
 * view, room and summary) are shown only to holders of a token for them.
 */
const pageToken = () => localStorage.getItem('townhall.token') || undefined;

/** Lists spaces, live first (private ones only with a token for them). */
export const listSpaces = () => call('GET', '/api/v1/spaces', { token: pageToken() }).then((r) => r.spaces);
/** Gets one space. */
export const getSpace = (id) => call('GET', `/api/v1/spaces/${encodeURIComponent(id)}`, { token: pageToken() });
/** Creates a space (host token). */
export const createSpace = (token, fields) => call('POST', '/api/v1/spaces', { token, body: fields });
/** Takes a scheduled space live (host token). */
export const startSpace = (token, id) => call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/start`, { token });
/** Ends a space (host token). */
export const endSpace = (token, id) => call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/end`, { token });
/**
 * Joins as a listener (anonymous for public spaces): resolves to a listener ticket
 * `{token, urls, ...}`, or, when the node is at capacity, to `{waiting: {ticket, position,
 * retry_after_ms}}`; come back with `waitTicket` to keep the place in line. In a cluster,
 * `avoid` names the node (as `node` named it) this page lost or could not reach: the door names
 * another.
 */
export const joinSpace = (id, token, waitTicket, pow, avoid) => {
  const params = new URLSearchParams();
  if (waitTicket) params.set('ticket', waitTicket);
  if (pow) params.set('pow', pow);
  if (avoid) params.set('avoid', avoid);
  const q = params.toString() ? `?${params}` : '';
  return call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/join${q}`, { token });
};

/** A proof-of-work challenge `{challenge, difficulty}` (asked of anonymous joiners under attack). */
export const powChallenge = (space) =>
  call('POST', `/api/v1/pow?space=${encodeURIComponent(space)}`);

function leadingZeroBits(bytes) {
  let bits = 0;
  for (const b of bytes) {
    if (b === 0) {
      bits += 8;
    } else {
      return bits + Math.clz32(b) - 24;
    }
  }
  return bits;
}

/**
 * Solves a challenge: finds n with SHA-256(`challenge:n`) starting with `difficulty` zero bits.
 * Returns the proof `challenge:n`. Needs WebCrypto (HTTPS or localhost).
 */
export async function solvePow({ challenge, difficulty }) {
  if (!globalThis.crypto || !crypto.subtle) throw new Error(t('listen.pow_needs_https'));
  const enc = new TextEncoder();
  for (let n = 0; ; n++) {
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(`${challenge}:${n}`)));
    if (leadingZeroBits(digest) >= difficulty) return `${challenge}:${n}`;
    if (n % 4096 === 4095) await new Promise((r) => setTimeout(r));
  }
}

/** The WebSocket URL for a path on this server. */
export function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

/** The node's shield status (operator token for every space): verdict, evidence, queue. */
export const shieldStatus = (token) => call('GET', '/api/v1/admin/shield', { token });

/** The room of a live space: `{host, seats, ended, speakers, cohosts, hands, invited, present, listeners}`. */
export const getRoom = (id) =>
  call('GET', `/api/v1/spaces/${encodeURIComponent(id)}/room`, { token: pageToken() }).then((r) => ({
    ...r.room,
    talking: r.talking,
  }));
/** The cacheable summary for listeners without a WebSocket: speakers, hands (a count), listeners, reactions. */
export const getSummary = (id) =>
  call('GET', `/api/v1/spaces/${encodeURIComponent(id)}/summary`, { token: pageToken() });
/**
 * Acts in a space's room (bearer token): `{action, target?, reason?, reaction?}`. Resolves to
 * `{events, room}`; rejects with an ApiError (403 not allowed, 404, 409 wrong state, 429 ...).
 */
export const act = (token, id, body) =>
  call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/actions`, { token, body });

/** Reports the space, or a person in it (`{category, target?, details?}`). */
export const report = (token, id, body) =>
  call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/reports`, { token, body });

/** Starts or stops recording a live space (host or co-host token): resolves to the recording. */
export const setRecording = (token, id, recording) =>
  call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/recording`, { token, body: { recording } });
/** A space's captions: `{captions, engine, error, cues}`. */
export const getCaptions = (id) =>
  call('GET', `/api/v1/spaces/${encodeURIComponent(id)}/captions`, { token: pageToken() });
/** Turns a live space's captions on or off (host or co-host token). */
export const setCaptions = (token, id, captions) =>
  call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/captions`, { token, body: { captions } });
/** Recordings, newest first (of one space with `space`); a token adds those of private spaces. */
export const listRecordings = (space, token) =>
  call('GET', `/api/v1/recordings${space ? `?space=${encodeURIComponent(space)}` : ''}`, { token }).then(
    (r) => r.recordings,
  );
/**
 * One recording, with who spoke when: `{..., speakers, turns: [{speaker, start_ms, end_ms}]}`
 * (a token for private spaces).
 */
export const getRecording = (id, token) =>
  call('GET', `/api/v1/recordings/${encodeURIComponent(id)}`, { token: token || undefined });
/**
 * Clips the last `seconds` (30 to 60) of a live space: resolves to the clip
 * `{id, url, audio_url, duration_ms, ...}` (`url` is its page, the link to share). Anonymous
 * listeners of public spaces may clip too.
 */
export const clipSpace = (token, id, seconds) =>
  call('POST', `/api/v1/spaces/${encodeURIComponent(id)}/clips`, { token: token || undefined, body: { seconds } });
/** Clips `{from_ms, to_ms}` (at most a minute) of a recording: resolves to the clip. */
export const clipRecording = (token, id, range) =>
  call('POST', `/api/v1/recordings/${encodeURIComponent(id)}/clips`, { token: token || undefined, body: range });
/** A space's audience statistics (host or co-host token, or an operator's). */
export const spaceStats = (token, id) =>
  call('GET', `/api/v1/spaces/${encodeURIComponent(id)}/stats`, { token });
