// Captions on the page: the CC toggle, the live caption line under the stage (with the
// speaker's name where known), the transcript panel, and the host's switch. Cues come as
// `caption` events on the listener WebSocket (interims replaced by the final of the same id) or,
// without one, from the polled /summary. Also: a recording's transcript beside its player,
// each line seeking the player to where it was said.

import * as api from './api.js';
import { date, t } from './i18n.js';

const CC_KEY = 'townhall.cc';
/** Final cues kept in the panel (the server keeps the full transcript with recordings). */
const PANEL_CUES = 200;
/** A caption line fades this long after its last words. */
const LINE_MS = 6000;

/** `mm:ss` (or `h:mm:ss`) from seconds. */
export function clock(secs) {
  const s = Math.max(0, Math.floor(secs));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(h ? 2 : 1, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** The cues of a WebVTT document: `[{start, end, text, speaker}]` (seconds). */
export function parseVtt(text) {
  const secs = (stamp) => {
    const p = stamp.trim().split(':').map(Number);
    return p.reduce((a, b) => a * 60 + b, 0);
  };
  const cues = [];
  for (const block of text.replace(/\r/g, '').split(/\n\n+/)) {
    const lines = block.split('\n');
    const at = lines.findIndex((l) => l.includes('-->'));
    if (at < 0) continue;
    const [from, to] = lines[at].split('-->');
    let body = lines.slice(at + 1).join(' ').trim();
    let speaker = null;
    const voice = body.match(/^<v ([^>]+)>/);
    if (voice) {
      speaker = voice[1];
      body = body.slice(voice[0].length);
    }
    const decode = (s) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
    cues.push({ start: secs(from), end: secs(to.split(' ')[1] || to), text: decode(body), speaker: speaker && decode(speaker) });
  }
  return cues;
}

export class Captions {
  constructor($, token) {
    this.$ = $;
    this.token = token;
    this.show = localStorage.getItem(CC_KEY) !== 'off';
    this.reset(null);
    $('cc-toggle').onclick = () => {
      this.show = !this.show;
      localStorage.setItem(CC_KEY, this.show ? 'on' : 'off');
      this.render();
    };
    $('cc-on').onclick = () => this.switch(true);
    $('cc-off').onclick = () => this.switch(false);
  }

  reset(spaceId) {
    this.spaceId = spaceId;
    this.on = false;
    this.engine = null;
    this.finals = new Map(); // id → cue, in order
    this.interim = null;
    this.lineCue = null;
    this.lineAt = 0;
    this.manager = false;
    this.live = false;
    if (this.$('transcript')) this.$('transcript').replaceChildren();
    this.render();
  }

  /** The space shown (`null` for none), whether it is live and whether we manage it. */
  async open(space, manager) {
    if (!space) return this.reset(null);
    if (space.id !== this.spaceId) {
      this.reset(space.id);
      if (space.state === 'live') {
        try {
          const state = await api.getCaptions(space.id);
          this.setOn(state.captions, state.engine);
          for (const cue of state.cues || []) this.cue(cue);
        } catch (e) {
          // No captions to show: the panel stays hidden.
        }
      }
    }
    this.manager = manager;
    this.live = space.state === 'live';
    this.render();
  }

  setOn(on, engine) {
    this.on = Boolean(on);
    if (engine !== undefined) this.engine = engine;
    if (!this.on) this.interim = null;
  }

  /** A WebSocket event: `caption` or `captions`; true when it was one. */
  event(ev) {
    if (ev.type === 'captions') {
      this.setOn(ev.on, ev.engine);
      this.render();
      return true;
    }
    if (ev.type !== 'caption') return false;
    this.on = true;
    this.cue(ev);
    return true;
  }

  /** The summary's `captions: {on, cues}` (listeners without a WebSocket). */
  summary(captions) {
    if (!captions) return;
    this.on = Boolean(captions.on);
    for (const cue of captions.cues || []) this.cue(cue);
    this.render();
  }

  /** A cue (event or summary): a final joins the transcript once; the line shows the latest. */
  cue(cue) {
    if (cue.final) {
      if (this.finals.has(cue.id)) return;
      this.finals.set(cue.id, cue);
      while (this.finals.size > PANEL_CUES) this.finals.delete(this.finals.keys().next().value);
      if (this.interim && this.interim.id === cue.id) this.interim = null;
      this.addLine(cue);
    } else if (!this.finals.has(cue.id)) {
      this.interim = cue;
    }
    const shown = cue.final ? cue : this.interim;
    // The line stays while its words change (a polled summary repeats the same cue).
    if (shown && (!this.lineCue || shown.id !== this.lineCue.id || shown.text !== this.lineCue.text)) {
      this.lineCue = shown;
      this.lineAt = Date.now();
    }
    this.render();
  }

  addLine(cue) {
    const ol = this.$('transcript');
    const li = document.createElement('li');
    const time = document.createElement('span');
    time.className = 'muted small';
    time.textContent = date(new Date(cue.start_us / 1000), { timeStyle: 'medium' });
    li.append(time, ' ');
    if (cue.speaker) {
      const who = document.createElement('strong');
      who.textContent = `${cue.speaker}: `;
      li.append(who);
    }
    li.append(cue.text);
    const stick = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 8;
    ol.append(li);
    while (ol.children.length > PANEL_CUES) ol.firstChild.remove();
    if (stick) ol.scrollTop = ol.scrollHeight;
  }

  async switch(on) {
    const status = this.$('cc-status');
    try {
      const res = await api.setCaptions(this.token(), this.spaceId, on);
      this.setOn(res.captions, res.engine);
      status.textContent = on ? t('captions.starting') : t('captions.off');
      status.classList.remove('error');
    } catch (e) {
      status.textContent = `${e.code || 'error'}: ${e.message}`;
      status.classList.add('error');
    }
    this.render();
  }

  render() {
    const $ = this.$;
    if (!$('captions-card')) return;
    const has = this.on || this.finals.size > 0;
    $('cc-toggle').hidden = !has;
    $('cc-toggle').setAttribute('aria-pressed', String(this.show));
    $('cc-toggle').classList.toggle('primary', this.show);
    const cue = this.lineCue;
    const fresh = cue && Date.now() - this.lineAt < LINE_MS;
    const line = $('caption-line');
    line.hidden = !this.show || !this.on || !fresh;
    line.replaceChildren();
    if (fresh) {
      if (cue.speaker) {
        const who = document.createElement('strong');
        who.textContent = `${cue.speaker}: `;
        line.append(who);
      }
      line.append(cue.text);
      line.classList.toggle('interim', !cue.final);
    }
    $('captions-card').hidden = !has && !(this.manager && this.live);
    $('transcript-panel').hidden = this.finals.size === 0;
    $('cc-on').hidden = !this.manager || !this.live || this.on;
    $('cc-off').hidden = !this.manager || !this.live || !this.on;
    $('cc-engine').textContent = this.on
      ? this.engine
        ? t('captions.by', { engine: this.engine })
        : t('captions.on')
      : t('captions.off');
  }

  /** Fades the caption line once its words are old (called by the page's periodic refresh). */
  tick() {
    if (this.lineCue && Date.now() - this.lineAt >= LINE_MS && !this.$('caption-line').hidden) this.render();
  }
}

/**
 * A recording's transcript beside its player: loads the WebVTT once opened; each line seeks
 * `audio` to where it was said.
 */
export function transcriptPanel(rec, audio) {
  const details = document.createElement('details');
  details.className = 'transcript-panel';
  const summary = document.createElement('summary');
  summary.className = 'muted small';
  summary.textContent = t('captions.transcript');
  const ol = document.createElement('ol');
  ol.className = 'transcript';
  details.append(summary, ol);
  details.ontoggle = async () => {
    if (!details.open || ol.dataset.loaded) return;
    ol.dataset.loaded = '1';
    try {
      const res = await fetch(rec.transcript.vtt);
      const cues = parseVtt(await res.text());
      ol.replaceChildren(
        ...cues.map((c) => {
          const li = document.createElement('li');
          const at = document.createElement('button');
          at.type = 'button';
          at.className = 'link small';
          at.textContent = clock(c.start);
          at.title = t('replay.play_from_here');
          at.setAttribute('aria-label', t('replay.play_from', { time: clock(c.start) }));
          at.onclick = () => {
            audio.currentTime = c.start;
            audio.play().catch(() => {});
          };
          li.append(at, ' ');
          if (c.speaker) {
            const who = document.createElement('strong');
            who.textContent = `${c.speaker}: `;
            li.append(who);
          }
          li.append(c.text);
          return li;
        }),
      );
    } catch (e) {
      ol.textContent = t('captions.transcript_failed');
    }
  };
  return details;
}
