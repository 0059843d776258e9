// Listening: program batches over WebSocket, decoded with WebCodecs and played through an
// AudioWorklet; or, where WebCodecs is missing, the Ogg stream in an <audio> element; or, for
// the lowest latency, the program stream over WebRTC (WHEP).

import { joinSpace, powChallenge, solvePow, wsUrl } from './api.js';
import { Backoff } from './backoff.js';
import { t } from './i18n.js';
import { RtcError, RtcSession } from './rtc.js';
import { parseProgramBatch } from './wire.js';

/** True when this browser can decode Opus frames itself (WebCodecs). */
export const canDecode = () => typeof AudioDecoder === 'function' && typeof AudioWorkletNode === 'function';

/** Decodes Opus packets and plays them, with an analyser for the level meter. */
export class Player {
  /** Creates the audio graph (call from a user gesture). */
  static async create() {
    const ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    await ctx.audioWorklet.addModule('/playback-worklet.js');
    const node = new AudioWorkletNode(ctx, 'townhall-playback', { outputChannelCount: [1] });
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    node.connect(analyser);
    analyser.connect(ctx.destination);
    await ctx.resume();
    return new Player(ctx, node, analyser);
  }

  constructor(ctx, node, analyser) {
    this.ctx = ctx;
    this.node = node;
    this.analyser = analyser;
    this.samples = new Float32Array(analyser.fftSize);
    this.decoder = new AudioDecoder({
      output: (data) => this.play(data),
      error: (e) => console.warn('decoder error', e),
    });
    this.decoder.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
    this.timestamp = 0;
  }

  /** Queues one Opus packet (20 ms). */
  decode(payload) {
    if (this.decoder.state !== 'configured') return;
    const chunk = new EncodedAudioChunk({ type: 'key', timestamp: this.timestamp, data: payload });
    this.timestamp += 20000;
    this.decoder.decode(chunk);
  }

  play(data) {
    const pcm = new Float32Array(data.numberOfFrames);
    data.copyTo(pcm, { planeIndex: 0, format: 'f32-planar' });
    data.close();
    this.node.port.postMessage(pcm, [pcm.buffer]);
  }

  /** RMS of what is playing now (0..1). */
  level() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    return Math.sqrt(sum / this.samples.length);
  }

  /** Stops and releases the audio graph. */
  close() {
    if (this.decoder.state !== 'closed') this.decoder.close();
    this.ctx.close();
  }
}

/** What the WebSocket carries besides room events. */
const STREAM_EVENTS = new Set(['hello', 'listeners', 'state', 'bye', 'error']);

/**
 * A listener of one space: joins (ticket), connects, plays, reconnects with backoff after an
 * unexpected close. Calls `onState(text, failed)` (a line in the page's language, and whether it
 * says something went wrong), `onListeners(n)` and `onEnded()`; over the WebSocket
 * also `onEvent(roomEvent)`, `onFeed(open)` (room events flow or not) and `onRefused(code)`
 * (403 `removed` or `blocked`: no retry).
 */
export class Listener {
  constructor(spaceId, { onState, onListeners, onEnded, onEvent, onFeed, onRefused, token, hlsUrl, scale }) {
    this.spaceId = spaceId;
    this.hlsUrl = hlsUrl;
    this.scale = scale;
    this.onState = onState;
    this.onListeners = onListeners;
    this.onEnded = onEnded;
    this.onEvent = onEvent || (() => {});
    this.onFeed = onFeed || (() => {});
    this.onRefused = onRefused || (() => {});
    this.token = token;
    this.stopped = false;
    // Full jitter, 0.5 s doubling to 30 s (docs/protocol.md, "Reconnecting").
    this.backoff = new Backoff(500, 30000);
    this.player = null;
    this.audio = null;
    this.state = 'idle';
  }

  /** `state` is what the listener does (`connecting`, `listening`, `waiting`, `retrying` ...),
   * `text()` how the page says it. */
  setState(state, text, failed = false) {
    this.state = state;
    this.said = { text, failed };
    this.onState(text(), failed);
  }

  /** Says the state again (in the page's language now). */
  restate() {
    if (this.said) this.onState(this.said.text(), this.said.failed);
  }

  /**
   * Starts listening (call from a user gesture): over LL-HLS when the node asks new listeners
   * to go through caches (`scale` mode), else over the WebSocket (or Ogg without WebCodecs).
   */
  async start() {
    if (this.hlsUrl && this.scale) return this.startHls(this.hlsUrl);
    if (!canDecode()) return this.startFallback();
    this.player = await Player.create();
    await this.connect();
  }

  /** Plays the LL-HLS stream through hls.js (or the browser's own HLS support). */
  async startHls(url) {
    const audio = document.getElementById('fallback-audio');
    const ctx = new AudioContext();
    const source = ctx.createMediaElementSource(audio);
    const analyser = ctx.createAnalyser();
    source.connect(analyser);
    analyser.connect(ctx.destination);
    this.audio = { element: audio, ctx, analyser, samples: new Float32Array(analyser.fftSize) };
    // The full build: the light one has no subtitles (the captions' WebVTT rendition).
    const { default: Hls } = await import('/vendor/hls.min.mjs');
    if (Hls.isSupported()) {
      // Under attack the node gives playlists only to token holders: send the page's token as a
      // header (never in a URL).
      const token = this.token;
      const xhrSetup = (xhr) => {
        if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      };
      this.hls = new Hls({ lowLatencyMode: true, xhrSetup });
      this.hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) this.setState('failed', () => t('listen.hls_error', { details: data.details }), true);
      });
      this.hls.loadSource(url);
      this.hls.attachMedia(audio);
    } else if (audio.canPlayType('application/vnd.apple.mpegurl')) {
      audio.src = url;
    } else {
      throw new Error(t('listen.no_hls'));
    }
    await ctx.resume();
    await audio.play();
    this.setState('listening', () => t('listen.listening_hls'));
  }

  async connect() {
    if (this.stopped) return;
    this.setState('connecting', () => t('listen.connecting'));
    let ticket;
    try {
      // Coming back, the listening ticket the door gave last time says we were admitted: the
      // door tells us where to go without queueing us behind newcomers.
      ticket = await joinSpace(this.spaceId, this.heldTicket || this.token, this.waitTicket, this.pow, this.lostNode);
    } catch (e) {
      if (e.status === 401 && this.heldTicket) {
        // That ticket expired: join as we first did.
        this.heldTicket = undefined;
        return this.retry(t('listen.join_again'), 0);
      }
      if (e.status === 410) return this.ended();
      if (e.code === 'pow_required' || e.code === 'bad_pow') return this.provePow();
      if (e.status === 403 && (e.code === 'removed' || e.code === 'blocked')) {
        this.stopped = true;
        this.setState('refused', () => t('listen.refused', { message: e.message }), true);
        return this.onRefused(e.code);
      }
      // A ticket already used (or no longer valid) keeps no place: join the line afresh.
      if (e.code === 'bad_ticket') this.waitTicket = undefined;
      // Rate-limited, a door too busy or a node draining: no sooner than its Retry-After.
      return this.retry(t('listen.join_failed', { message: e.message }), e.retryAfterMs, true);
    }
    this.pow = undefined;
    if (ticket.waiting) {
      const w = ticket.waiting;
      // The node is at capacity. With an HLS stream on offer, listen there at once (through the
      // caches); otherwise hold our place in the queue and come back when told.
      if (w.hls) {
        if (this.player) this.player.close();
        this.player = null;
        return this.startHls(w.hls);
      }
      this.waitTicket = w.ticket;
      this.setState('waiting', () => t('listen.waiting_room', { position: w.position }));
      setTimeout(() => this.connect(), w.retry_after_ms);
      return;
    }
    this.waitTicket = undefined;
    this.heldTicket = ticket.token;
    // In a cluster the door names the node to listen on (an edge); else this one.
    const path = `${ticket.urls.ws}?token=${encodeURIComponent(ticket.token)}&batch=5`;
    const node = ticket.node ? ticket.node.replace(/\/$/, '').replace(/^http/, 'ws') : null;
    this.lostNode = undefined;
    const ws = new WebSocket(node ? node + path : wsUrl(path));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onopen = () => {
      this.backoff.reset();
      this.setState('listening', () => t('listen.listening'));
      this.onFeed(true);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.onFeed(false);
      // Lost or never reached: the door is told, and names another node (one killed a moment
      // ago is still in its list for a round or two).
      if (ticket.node) this.lostNode = ticket.node;
      if (!this.stopped && this.state !== 'ended') this.retry(t('listen.connection_lost'));
    };
  }

  onMessage(data) {
    if (typeof data !== 'string') {
      try {
        parseProgramBatch(data, (f) => this.player.decode(f.payload));
      } catch (e) {
        console.warn('bad batch', e);
      }
      return;
    }
    const event = JSON.parse(data);
    if (event.type === 'listeners') this.onListeners(event.count);
    if (event.type === 'state' && event.state === 'ended') this.ended();
    if (event.type === 'bye') {
      // The node sends us off (`server_shutdown`: it is draining): back through the door, which
      // names another node, after its delay plus the backoff's draw.
      this.ws = null;
      this.onFeed(false);
      const why = event.reason === 'server_shutdown' ? t('listen.node_going_away') : event.reason;
      this.retry(t('listen.moving', { why }), event.reconnect_after_ms);
    }
    if (!STREAM_EVENTS.has(event.type)) this.onEvent(event);
  }

  /** The node asks anonymous joiners for a proof of work (it is under attack): do it, rejoin. */
  async provePow() {
    this.setState('proving', () => t('listen.proving'));
    try {
      this.pow = await solvePow(await powChallenge(this.spaceId));
    } catch (e) {
      return this.retry(t('listen.pow_failed', { message: e.message }), undefined, true);
    }
    return this.connect();
  }

  /** Goes back through the door after the backoff (no sooner than `retryAfterMs`, if given). */
  retry(why, retryAfterMs, failed = false) {
    if (this.stopped) return;
    const delay = this.backoff.next(retryAfterMs);
    this.setState('retrying', () => t('listen.retrying', { why, seconds: Math.round(delay / 1000) }), failed);
    setTimeout(() => this.connect(), delay);
  }

  ended() {
    this.stopped = true;
    this.setState('ended', () => t('listen.ended'));
    this.onEnded();
    this.close();
  }

  /** Plays the Ogg stream in an <audio> element (browsers without WebCodecs). */
  async startFallback() {
    const audio = document.getElementById('fallback-audio');
    audio.src = `/live/${encodeURIComponent(this.spaceId)}.opus`;
    const ctx = new AudioContext();
    const source = ctx.createMediaElementSource(audio);
    const analyser = ctx.createAnalyser();
    source.connect(analyser);
    analyser.connect(ctx.destination);
    this.audio = { element: audio, ctx, analyser, samples: new Float32Array(analyser.fftSize) };
    await audio.play();
    this.setState('listening', () => t('listen.listening_ogg'));
  }

  /** RMS of what is playing now (0..1). */
  level() {
    if (this.player) return this.player.level();
    if (this.audio) {
      this.audio.analyser.getFloatTimeDomainData(this.audio.samples);
      let sum = 0;
      for (const s of this.audio.samples) sum += s * s;
      return Math.sqrt(sum / this.audio.samples.length);
    }
    return 0;
  }

  close() {
    if (this.hls) this.hls.destroy();
    this.hls = null;
    if (this.ws) {
      this.ws.close();
      this.onFeed(false);
    }
    this.ws = null;
    if (this.player) this.player.close();
    this.player = null;
    if (this.audio) {
      this.audio.element.pause();
      this.audio.element.removeAttribute('src');
      this.audio.ctx.close();
      this.audio = null;
    }
  }

  /** Stops listening. */
  stop() {
    this.stopped = true;
    this.close();
    this.setState('idle', () => t('listen.not_listening'));
  }
}

/** RMS of an analyser's current window (0..1). */
function rmsOf(analyser, samples) {
  analyser.getFloatTimeDomainData(samples);
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length);
}

/**
 * A low-latency listener over WHEP: the program stream arrives as a WebRTC audio track and plays
 * through Web Audio (an AnalyserNode feeds the level meter). Chrome only lets a remote track into
 * Web Audio while it is attached to a media element, so it also goes to a muted <audio>.
 * Calls `onState(state, detail)` (`connecting`, `connected`, `reconnecting`, `failed`, `closed`)
 * and `onEnded()`.
 */
export class RtcListener {
  constructor(spaceId, { token, onState, onEnded }) {
    this.spaceId = spaceId;
    this.token = token;
    this.onState = onState;
    this.onEnded = onEnded;
    this.peak = 0;
    this.loud = 0;
  }

  /** Starts (call from a user gesture); resolves once connected, rejects if the first try fails. */
  async start() {
    this.ctx = new AudioContext({ latencyHint: 'interactive' });
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.analyser.connect(this.ctx.destination);
    await this.ctx.resume();
    this.audio = document.getElementById('rtc-audio');
    // Speech comes in bursts and beeps can be 20 ms short: sample the level every 20 ms.
    this.meter = setInterval(() => this.sample(), 20);
    this.session = new RtcSession(`/whep/${encodeURIComponent(this.spaceId)}`, {
      token: this.token,
      // Each attempt goes through the door, as the WebSocket listener's: in a cluster it names
      // the edge (another one when ours died), and the ticket it gives is our token there.
      resolve: () => this.throughDoor(),
      setup: (pc) => pc.addTransceiver('audio', { direction: 'recvonly' }),
      onTrack: (stream) => this.attach(stream),
      onState: (state, detail) => {
        this.onState(state, detail);
        if (state === 'failed' && this.session.error && this.session.error.status === 410) this.onEnded();
      },
    });
    return this.session.start();
  }

  /**
   * Asks the door where to listen: `{url, token}` for the WHEP offer. Every attempt after the
   * first follows a failure, so the node the last one was sent to is named as lost (`avoid`:
   * the door names another; one killed a moment ago is still in its list for a round or two),
   * and a place in the waiting line is kept by coming back with its ticket.
   */
  async throughDoor() {
    const avoid = this.lastNode;
    this.lastNode = undefined;
    let ticket;
    try {
      ticket = await joinSpace(this.spaceId, this.heldTicket || this.token, this.waitTicket, undefined, avoid);
    } catch (e) {
      // An expired ticket of ours: join again as the first time (not a reason to give up).
      const expired = e.status === 401 && this.heldTicket;
      if (expired) this.heldTicket = undefined;
      // A waiting ticket already used (or no longer valid) keeps no place: join the line afresh.
      if (e.code === 'bad_ticket') this.waitTicket = undefined;
      throw new RtcError(expired ? 503 : e.status || 0, e.code || 'network', e.message, e.retryAfterMs);
    }
    if (ticket.waiting) {
      this.waitTicket = ticket.waiting.ticket;
      throw new RtcError(503, 'waiting_room', t('listen.in_line', { position: ticket.waiting.position }), ticket.waiting.retry_after_ms);
    }
    this.waitTicket = undefined;
    this.heldTicket = ticket.token;
    this.lastNode = ticket.node || undefined;
    const base = ticket.node ? ticket.node.replace(/\/$/, '') : '';
    return { url: `${base}/whep/${encodeURIComponent(this.spaceId)}`, token: ticket.token };
  }

  /** Plays a (new) remote stream. */
  attach(stream) {
    if (this.source) this.source.disconnect();
    this.audio.muted = true;
    this.audio.srcObject = stream;
    this.audio.play().catch(() => {});
    this.source = this.ctx.createMediaStreamSource(stream);
    this.source.connect(this.analyser);
  }

  sample() {
    const level = this.level();
    this.peak = Math.max(this.peak, level);
    if (level > 0.01) this.loud += 1;
  }

  /** RMS of what is playing now (0..1). */
  level() {
    return this.analyser ? rmsOf(this.analyser, this.samples) : 0;
  }

  /** What was heard since the start: the loudest 43 ms window (RMS) and how many were loud. */
  heard() {
    return { peak: this.peak, loud: this.loud };
  }

  /** The session's connection state. */
  get state() {
    return this.session ? this.session.state : 'idle';
  }

  /** Stops listening (DELETE on the session) and releases the audio graph. */
  stop() {
    clearInterval(this.meter);
    if (this.session) this.session.stop();
    if (this.source) this.source.disconnect();
    if (this.audio) this.audio.srcObject = null;
    if (this.ctx) this.ctx.close();
    this.analyser = null;
  }
}
