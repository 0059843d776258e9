// Speaking over WebRTC (WHIP, the default), or, where that is missing or fails: microphone →
// AudioWorklet (20 ms frames) → WebCodecs Opus encoder → speaker frames over the WebSocket.
// Either way, what comes back (the other speakers, without our own voice) is played.

import { getSpace, wsUrl } from './api.js';
import { Backoff } from './backoff.js';
import { t } from './i18n.js';
import { Player } from './listen.js';
import { RtcSession, canWebRtc } from './rtc.js';
import { encodeSpeakerFrame, nowUs, parseProgramBatch } from './wire.js';

const ENCODER_CONFIG = {
  codec: 'opus',
  sampleRate: 48000,
  numberOfChannels: 1,
  bitrate: 32000,
  opus: { frameDuration: 20000 },
};

/** The microphone, cleaned up for speech. */
const MIC_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
};

/** True when this browser can encode Opus itself (WebCodecs). */
export const canEncode = () => typeof AudioEncoder === 'function' && typeof AudioWorkletNode === 'function';

/**
 * A speaker session in one space. Calls `onState(text, code)` (a line in the page's language and
 * `opening`, `on_air`, `reconnecting`, `ended` or `off_air`), `onError(text)` and `onBye(reason)`
 * when the server ends the session for good (`moved_to_audience`, `removed`,
 * `replaced_by_new_session`); a lost connection, `server_shutdown` or `space_moved` reconnects
 * (to the space's origin now) with the clients' backoff.
 */
export class Speaker {
  constructor(spaceId, token, { onState, onError, onBye }) {
    this.spaceId = spaceId;
    this.token = token;
    this.onState = onState;
    this.onError = onError;
    this.onBye = onBye || (() => {});
    this.seq = 0;
    this.timestamp = 0;
    this.peak = 0;
  }

  /** Opens the microphone and starts sending (call from a user gesture). */
  async start() {
    if (!canEncode()) throw new Error(t('speak.no_encoder'));
    const support = await AudioEncoder.isConfigSupported(ENCODER_CONFIG);
    if (!support.supported) throw new Error(t('speak.no_opus_20ms'));
    this.onState(t('speak.opening_mic'), 'opening');
    this.stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    this.ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    await this.ctx.audioWorklet.addModule('/capture-worklet.js');
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, 'townhall-capture', { numberOfOutputs: 1 });
    const mute = this.ctx.createGain();
    mute.gain.value = 0;
    source.connect(this.capture);
    this.capture.connect(mute);
    mute.connect(this.ctx.destination);
    await this.ctx.resume();
    this.player = await Player.create();

    this.encoder = new AudioEncoder({
      output: (chunk) => this.send(chunk),
      error: (e) => this.onError(t('speak.encoder_error', { message: e.message })),
    });
    this.encoder.configure(ENCODER_CONFIG);

    this.backoff = new Backoff();
    this.connect(null);
    this.capture.port.onmessage = ({ data }) => this.encode(data.samples, data.peak);
  }

  /**
   * Opens the speaking WebSocket, on `origin` (the node mixing the space, in a cluster) or on
   * this page's node. A connection lost, or a `bye` that lets us come back (the node shut
   * down, the space moved to another origin), connects again after the clients' backoff, to
   * the origin the cluster names then (docs/protocol.md, "Reconnecting", rule 6); the
   * microphone and encoder stay open meanwhile.
   */
  connect(origin) {
    if (this.stopped) return;
    // The token travels as a subprotocol, never in the URL (which logs and histories keep).
    const path = `/ws/${encodeURIComponent(this.spaceId)}?mode=speak`;
    const url = origin ? origin.replace(/\/$/, '').replace(/^http/, 'ws') + path : wsUrl(path);
    const ws = new WebSocket(url, ['townhall', `bearer.${this.token}`]);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.backoff.reset();
      this.onState(t('speak.on_air'), 'on_air');
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.stopped) return;
      if (this.final) {
        this.stop();
        return;
      }
      this.onState(e.reason ? t('speak.reconnecting_why', { why: e.reason }) : t('rtc.reconnecting'), 'reconnecting');
      setTimeout(() => this.reconnect(), this.backoff.next(this.comeBackAfterMs));
      this.comeBackAfterMs = 0;
    };
    ws.onmessage = (e) => this.onMessage(e.data);
  }

  /** Asks this page's node where the space is mixed now, then connects there. */
  async reconnect() {
    if (this.stopped) return;
    let origin = null;
    try {
      const space = await getSpace(this.spaceId);
      if (space.state === 'ended') {
        this.onState(t('speak.space_ended'), 'ended');
        return this.stop();
      }
      origin = space.origin || null;
    } catch (e) {
      // The node does not answer now: try the speaking connection where we were.
    }
    this.connect(origin);
  }

  encode(samples, peak) {
    this.peak = peak;
    if (!this.encoder || this.encoder.state !== 'configured' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const data = new AudioData({
      format: 'f32',
      sampleRate: 48000,
      numberOfFrames: samples.length,
      numberOfChannels: 1,
      timestamp: this.timestamp,
      data: samples,
    });
    this.timestamp += 20000;
    this.encoder.encode(data);
    data.close();
  }

  send(chunk) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const opus = new Uint8Array(chunk.byteLength);
    chunk.copyTo(opus);
    this.ws.send(encodeSpeakerFrame(this.seq, nowUs(), opus));
    this.seq = (this.seq + 1) >>> 0;
  }

  onMessage(data) {
    if (typeof data !== 'string') {
      parseProgramBatch(data, (f) => this.player.decode(f.payload));
      return;
    }
    const event = JSON.parse(data);
    if (event.type === 'error') this.onError(`${event.code}: ${event.message}`);
    if (event.type === 'bye') {
      // The node going away or the space moving: come back (to its new origin). Anything
      // else (moved to the audience, removed, replaced) ends this session.
      if (event.reason === 'server_shutdown' || event.reason === 'space_moved') {
        this.comeBackAfterMs = event.reconnect_after_ms || 0;
        this.onState(t('speak.server_reconnecting', { reason: event.reason }), 'reconnecting');
      } else {
        this.final = true;
        this.onError(t('speak.server_said', { reason: event.reason }));
        this.onBye(event.reason);
      }
    }
    if (event.type === 'state' && event.state === 'ended') {
      this.final = true;
      this.onState(t('speak.space_ended'), 'ended');
    }
  }

  /** Peak level of the last microphone frame (0..1). */
  micLevel() {
    return this.peak;
  }

  /** Stops sending and releases the microphone. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ws) this.ws.close();
    if (this.encoder && this.encoder.state !== 'closed') this.encoder.close();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) this.ctx.close();
    if (this.player) this.player.close();
    this.peak = 0;
    this.onState(t('speak.off_air'), 'off_air');
  }
}

/**
 * A speaker over WebRTC (WHIP): the microphone track goes out on a `sendrecv` transceiver and
 * the server sends back, on the same track, everyone else on stage (not our own voice), which
 * plays through an <audio> element. Calls `onState(state, detail)` with the session's state
 * (`connecting`, `connected`, `reconnecting`, `failed`, `closed`).
 */
export class RtcSpeaker {
  constructor(spaceId, token, { onState }) {
    this.spaceId = spaceId;
    this.token = token;
    this.onState = onState;
  }

  /**
   * Opens the microphone and publishes (call from a user gesture). Resolves once connected;
   * rejects when the first try fails (an RtcError when the server said no): fall back then.
   */
  async start() {
    if (!canWebRtc()) throw new Error(t('speak.no_webrtc'));
    this.onState('connecting', t('speak.opening_mic'));
    this.stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    this.ctx = new AudioContext({ latencyHint: 'interactive' });
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.ctx.createMediaStreamSource(this.stream).connect(this.analyser);
    this.audio = document.getElementById('speak-audio');
    const track = this.stream.getAudioTracks()[0];
    this.session = new RtcSession(`/whip/${encodeURIComponent(this.spaceId)}`, {
      token: this.token,
      setup: (pc) => pc.addTransceiver(track, { direction: 'sendrecv', streams: [this.stream] }),
      onTrack: (stream) => this.hear(stream),
      onState: this.onState,
      resolve: () => this.toOrigin(),
    });
    return this.session.start();
  }

  /**
   * Where to publish, asked anew before every attempt: the node that mixes the space (its
   * `origin`, in a cluster), else this page's node. So a speaker on a page served by an edge
   * reaches the origin, and after a failover follows the space to the standby that took it.
   */
  async toOrigin() {
    try {
      const space = await getSpace(this.spaceId);
      if (space.origin) this.origin = space.origin.replace(/\/$/, '');
    } catch (e) {
      // This page's node does not answer now: the origin we knew, if any.
    }
    return { url: `${this.origin || ''}/whip/${encodeURIComponent(this.spaceId)}`, token: this.token };
  }

  /** Plays the other speakers. */
  hear(stream) {
    this.audio.srcObject = stream;
    this.audio.play().catch(() => {});
  }

  /** The session's connection state. */
  get state() {
    return this.session ? this.session.state : 'idle';
  }

  /** Peak level of the microphone now (0..1). */
  micLevel() {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.samples);
    let peak = 0;
    for (const s of this.samples) peak = Math.max(peak, Math.abs(s));
    return peak;
  }

  /** Stops publishing (DELETE on the session) and releases the microphone. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    if (this.session) this.session.stop();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) this.ctx.close();
    if (this.audio) this.audio.srcObject = null;
    this.analyser = null;
  }
}
