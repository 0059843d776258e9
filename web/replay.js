// A recording's replay page (`#/recording/{id}`): the player, a timeline of who spoke when (a
// row per speaker, a bar per turn; a bar plays from there), playback speed, a clip of what is
// playing, and the transcript where there is one.

import * as api from './api.js';
import { transcriptPanel } from './captions.js';
import { date, t } from './i18n.js';
import { formatDuration } from './recordings.js';

/** Playback speeds offered. */
export const SPEEDS = [1, 1.25, 1.5, 2];

/** Bars narrower than this share of the timeline are drawn this wide (still a target to click). */
const MIN_BAR = 0.6;

/**
 * The timeline of `turns` (`[{speaker, start_ms, end_ms}]`, by start) over `durationMs`, in
 * `el`: a row per speaker (in the order they first spoke) with their name and a bar per turn.
 * Each bar is a button (`#turn-{i}`, `i` its index in `turns`) that seeks `audio` there and plays.
 */
export function renderTimeline(el, turns, durationMs, audio) {
  const speakers = [];
  for (const t of turns) if (!speakers.includes(t.speaker)) speakers.push(t.speaker);
  const total = Math.max(durationMs, ...turns.map((t) => t.end_ms), 1);
  const pct = (ms) => Math.min(100, (100 * ms) / total);
  const rows = speakers.map((who, n) => {
    const row = document.createElement('div');
    row.className = `tl-row tl-color-${n % 6}`;
    row.dataset.speaker = who;
    const name = document.createElement('span');
    name.className = 'tl-name';
    name.textContent = who;
    name.title = who;
    const track = document.createElement('div');
    track.className = 'tl-track';
    turns.forEach((turn, i) => {
      if (turn.speaker !== who) return;
      const bar = document.createElement('button');
      bar.type = 'button';
      bar.className = 'tl-turn';
      bar.id = `turn-${i}`;
      bar.dataset.start = String(turn.start_ms);
      const from = formatDuration(turn.start_ms);
      const to = formatDuration(turn.end_ms);
      bar.title = t('replay.turn_title', { who, from, to });
      bar.setAttribute('aria-label', t('replay.turn_label', { who, from, to }));
      // Time runs with the text: left to right, or right to left in Arabic.
      bar.style.insetInlineStart = `${pct(turn.start_ms)}%`;
      bar.style.width = `${Math.max(MIN_BAR, pct(turn.end_ms) - pct(turn.start_ms))}%`;
      bar.onclick = () => {
        audio.currentTime = turn.start_ms / 1000;
        audio.play().catch(() => {});
      };
      track.append(bar);
    });
    row.append(name, track);
    return row;
  });
  const head = document.createElement('div');
  head.className = 'tl-row tl-axis';
  const spacer = document.createElement('span');
  spacer.className = 'tl-name';
  const axis = document.createElement('div');
  axis.className = 'tl-track tl-ticks';
  const start = document.createElement('span');
  start.textContent = '0:00';
  const end = document.createElement('span');
  end.textContent = formatDuration(total);
  const playhead = document.createElement('div');
  playhead.className = 'tl-playhead';
  playhead.setAttribute('aria-hidden', 'true');
  axis.append(start, end, playhead);
  head.append(spacer, axis);
  el.replaceChildren(...rows, head);
  const follow = () => {
    playhead.style.insetInlineStart = `${pct(audio.currentTime * 1000)}%`;
  };
  audio.ontimeupdate = follow;
  follow();
}

/** The speed buttons in `group`: one is pressed, and sets `audio.playbackRate`. */
export function renderSpeeds(group, audio) {
  const buttons = SPEEDS.map((rate) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.id = `speed-${String(rate).replace('.', '_')}`;
    b.textContent = `${rate}×`;
    b.setAttribute('aria-pressed', String(audio.playbackRate === rate));
    b.onclick = () => {
      audio.playbackRate = rate;
      // A new source resets the rate to its default: keep the one chosen.
      audio.defaultPlaybackRate = rate;
      for (const other of buttons) other.setAttribute('aria-pressed', String(other === b));
    };
    return b;
  });
  const label = document.createElement('span');
  label.className = 'muted small';
  label.textContent = t('replay.speed_label');
  group.replaceChildren(label, ...buttons);
}

/** The replay page, filled from `GET /api/v1/recordings/{id}`. */
export class Replay {
  constructor($, token) {
    this.$ = $;
    this.token = token;
    this.id = null;
  }

  async show(id) {
    const $ = this.$;
    if (this.id === id) return;
    this.id = id;
    this.rec = null;
    $('replay-title').textContent = t('replay.loading');
    $('replay-meta').textContent = '';
    $('replay-card').hidden = true;
    setStatus($('replay-clip-status'), '');
    $('replay-clip-link').hidden = true;
    let rec;
    try {
      rec = await api.getRecording(id, this.token());
    } catch (e) {
      $('replay-title').textContent = e.status === 404 ? t('replay.not_found') : t('replay.load_failed');
      $('replay-meta').textContent = e.message;
      return;
    }
    if (this.id !== id) return;
    this.rec = rec;
    $('replay-title').textContent = rec.title || rec.space;
    $('replay-meta').textContent = [date(rec.started_at), formatDuration(rec.duration_ms)].join(' · ');
    $('replay-space').href = `#/space/${rec.space}`;
    const audio = $('replay-audio');
    audio.pause();
    audio.src = rec.url || '';
    audio.playbackRate = audio.defaultPlaybackRate = 1;
    renderSpeeds($('replay-speeds'), audio);
    const turns = rec.turns || [];
    renderTimeline($('timeline'), turns, rec.duration_ms, audio);
    $('timeline').hidden = turns.length === 0;
    $('timeline-empty').hidden = turns.length > 0;
    const panel = $('replay-transcript');
    panel.replaceChildren(...(rec.transcript ? [transcriptPanel(rec, audio)] : []));
    $('replay-card').hidden = !rec.url;
  }

  /** The language changed: the page is drawn again in it. */
  relabel() {
    const rec = this.rec;
    if (!rec) return;
    const $ = this.$;
    const audio = $('replay-audio');
    $('replay-meta').textContent = [date(rec.started_at), formatDuration(rec.duration_ms)].join(' · ');
    renderSpeeds($('replay-speeds'), audio);
    renderTimeline($('timeline'), rec.turns || [], rec.duration_ms, audio);
    $('replay-transcript').replaceChildren(...(rec.transcript ? [transcriptPanel(rec, audio)] : []));
  }

  hide() {
    this.id = null;
    this.$('replay-audio').pause();
  }

  /** Clips the chosen length from where the player is. */
  async clip() {
    const $ = this.$;
    const rec = this.rec;
    if (!rec) return;
    const from = Math.floor($('replay-audio').currentTime * 1000);
    const seconds = Number($('replay-clip-length').value) || 30;
    const to = Math.min(rec.duration_ms, from + seconds * 1000);
    $('replay-clip').disabled = true;
    setStatus($('replay-clip-status'), t('clip.cutting'));
    try {
      const clip = await api.clipRecording(this.token(), rec.id, { from_ms: Math.max(0, Math.min(from, to - 1000)), to_ms: to });
      showClipLink($('replay-clip-link'), $('replay-clip-status'), clip);
    } catch (e) {
      setStatus($('replay-clip-status'), `${e.code || 'error'}: ${e.message}`, true);
    } finally {
      $('replay-clip').disabled = false;
    }
  }
}

function setStatus(el, text, error = false) {
  el.textContent = text;
  el.classList.toggle('error', error);
}

/** Shows a clip's link (its page, to share) in `a`, and what it is in `status`. */
export function showClipLink(a, status, clip) {
  a.href = clip.url;
  a.textContent = `${location.origin}${clip.url}`;
  a.hidden = false;
  setStatus(status, t('clip.ready', { duration: formatDuration(clip.duration_ms) }));
}
