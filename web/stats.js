// Audience statistics for a space's hosts: headline numbers and two pictures drawn as SVG
// (listeners over time with the reactions beneath, and the retention curve), from
// GET /api/v1/spaces/{id}/stats. The server decides who may read them (the room's host and
// co-hosts, operators): the panel offers itself to the page's managers and steps aside when the
// server says no.

import * as api from './api.js';
import { num, onLanguage, t } from './i18n.js';

/** The protocols' names (not translated: they are names). */
const PROTOCOLS = { ws: 'WebSocket', ogg: 'Ogg', webrtc: 'WebRTC', hls: 'HLS' };

const SVG = 'http://www.w3.org/2000/svg';
/** While the panel is open on a live space, it is read again this often. */
const REFRESH_MS = 10_000;
/** The drawing's size in its own units (it scales to the card's width). */
const W = 600;
const PAD = { left: 36, right: 8 };

function svgEl(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** `1h30`, `5m`, `30s`: a duration on an axis. */
export function shortDuration(secs) {
  if (secs >= 3600) {
    const m = Math.round((secs % 3600) / 60);
    return `${Math.floor(secs / 3600)}h${m ? String(m).padStart(2, '0') : ''}`;
  }
  if (secs >= 60) return `${Math.round(secs / 60)}m`;
  return `${secs}s`;
}

function timeOfDay(unixSecs) {
  return new Date(unixSecs * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * Draws listeners over time into `svg`: the most listeners at once in each bucket as a stepped
 * line, the average as an area beneath it, and each bucket's reactions as bars in a band below.
 */
export function drawListeners(svg, stats) {
  const points = stats.series || [];
  const H = 230;
  const top = 14;
  const plotBottom = 160;
  const barTop = 178;
  const barBottom = 210;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const n = Math.max(points.length, 1);
  const x = (i) => PAD.left + ((W - PAD.left - PAD.right) * i) / n;
  const most = Math.max(1, ...points.map((p) => p.peak));
  const y = (v) => plotBottom - ((plotBottom - top) * v) / most;
  // Axes and the scale.
  svg.append(
    svgEl('line', { x1: PAD.left, y1: plotBottom, x2: W - PAD.right, y2: plotBottom, class: 'axis' }),
    svgEl('line', { x1: PAD.left, y1: top, x2: PAD.left, y2: plotBottom, class: 'axis' }),
    svgEl('text', { x: PAD.left - 6, y: top + 4, class: 'tick', 'text-anchor': 'end' }, String(most)),
    svgEl('text', { x: PAD.left - 6, y: plotBottom, class: 'tick', 'text-anchor': 'end' }, '0'),
  );
  if (points.length) {
    svg.append(
      svgEl('text', { x: PAD.left, y: H - 4, class: 'tick' }, timeOfDay(points[0].at)),
      svgEl('text', { x: W - PAD.right, y: H - 4, class: 'tick', 'text-anchor': 'end' },
        stats.live ? t('stats.now') : timeOfDay(stats.updated_at)),
    );
  }
  // The average: an area, each bucket a flat step.
  let area = `M${x(0)},${plotBottom}`;
  let line = '';
  points.forEach((p, i) => {
    area += ` L${x(i)},${y(p.average)} L${x(i + 1)},${y(p.average)}`;
    line += `${i ? ' L' : 'M'}${x(i)},${y(p.peak)} L${x(i + 1)},${y(p.peak)}`;
  });
  area += ` L${x(points.length)},${plotBottom} Z`;
  if (points.length) {
    svg.append(svgEl('path', { id: 'stats-average-area', class: 'average', d: area }));
    svg.append(svgEl('path', { id: 'stats-peak-line', class: 'peak', d: line }));
  }
  // Reactions: a bar per bucket, as tall as its share of the busiest.
  const busiest = Math.max(1, ...points.map((p) => p.reactions));
  svg.append(svgEl('line', { x1: PAD.left, y1: barBottom, x2: W - PAD.right, y2: barBottom, class: 'axis' }));
  svg.append(svgEl('text', { x: PAD.left - 6, y: barTop + 8, class: 'tick', 'text-anchor': 'end' }, String(busiest)));
  points.forEach((p, i) => {
    if (!p.reactions) return;
    const h = ((barBottom - barTop) * p.reactions) / busiest;
    const w = Math.max(1, x(i + 1) - x(i) - 1);
    const bar = svgEl('rect', { x: x(i), y: barBottom - h, width: w, height: h, class: 'stats-bar' });
    bar.append(svgEl('title', {}, t('stats.reactions_in_bucket', { count: p.reactions })));
    svg.append(bar);
  });
}

/** Draws the retention curve into `svg`: a step down at each duration of the API's curve. */
export function drawRetention(svg, stats) {
  const points = stats.retention || [];
  const H = 150;
  const top = 10;
  const bottom = 120;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const n = Math.max(points.length - 1, 1);
  const x = (i) => PAD.left + ((W - PAD.left - PAD.right) * i) / n;
  const y = (share) => bottom - (bottom - top) * share;
  svg.append(
    svgEl('line', { x1: PAD.left, y1: bottom, x2: W - PAD.right, y2: bottom, class: 'axis' }),
    svgEl('line', { x1: PAD.left, y1: top, x2: PAD.left, y2: bottom, class: 'axis' }),
    svgEl('text', { x: PAD.left - 6, y: top + 4, class: 'tick', 'text-anchor': 'end' }, '100%'),
    svgEl('text', { x: PAD.left - 6, y: bottom, class: 'tick', 'text-anchor': 'end' }, '0%'),
  );
  if (!points.length) return;
  let d = '';
  points.forEach((p, i) => {
    d += `${i ? ' L' : 'M'}${x(i)},${y(p.share)}`;
    if (i + 1 < points.length) d += ` L${x(i + 1)},${y(p.share)}`;
  });
  // A single point (a space younger than ten seconds) is drawn as a flat line across.
  if (points.length === 1) d += ` L${x(1)},${y(points[0].share)}`;
  svg.append(svgEl('path', { id: 'stats-retention-line', class: 'retention', d }));
  points.forEach((p, i) => {
    const dot = svgEl('circle', { cx: x(i), cy: y(p.share), r: 3, class: 'retention-dot' });
    dot.append(svgEl('title', {}, `${shortDuration(p.after_secs)}: ${Math.round(p.share * 100)}%`));
    svg.append(dot);
    svg.append(svgEl('text', { x: x(i), y: H - 10, class: 'tick', 'text-anchor': 'middle' },
      shortDuration(p.after_secs)));
  });
}

/** The panel: offered to managers of the space shown; opened and closed by its button. */
export class StatsPanel {
  constructor($, token) {
    this.$ = $;
    this.token = token;
    this.spaceId = null;
    this.live = false;
    this.expanded = false;
    this.refused = false;
    this.timer = null;
    this.stats = null;
    this.build();
    // A language switch redraws what was written here (labels marked data-i18n redraw alone).
    onLanguage(() => {
      this.renderToggle();
      if (this.stats) this.render(this.stats);
    });
  }

  build() {
    const card = this.$('stats-card');
    const head = document.createElement('div');
    head.className = 'row spread';
    const h2 = document.createElement('h2');
    h2.textContent = t('stats.title');
    h2.dataset.i18n = 'stats.title';
    const toggle = document.createElement('button');
    toggle.type = 'button';
    toggle.id = 'stats-toggle';
    toggle.setAttribute('aria-controls', 'stats-body');
    toggle.onclick = () => this.setExpanded(!this.expanded);
    head.append(h2, toggle);
    const body = document.createElement('div');
    body.id = 'stats-body';
    body.hidden = true;
    const numbers = document.createElement('dl');
    numbers.id = 'stats-numbers';
    numbers.className = 'stats-numbers';
    const chartTitle = document.createElement('h3');
    chartTitle.textContent = t('stats.listeners_chart');
    chartTitle.dataset.i18n = 'stats.listeners_chart';
    const legend = document.createElement('p');
    legend.className = 'muted small';
    legend.textContent = t('stats.listeners_legend');
    legend.dataset.i18n = 'stats.listeners_legend';
    const chart = svgEl('svg', { id: 'stats-chart', class: 'stats-chart', role: 'img', 'aria-label': t('stats.listeners_chart') });
    const joins = document.createElement('p');
    joins.id = 'stats-joins';
    joins.className = 'muted small';
    const retentionTitle = document.createElement('h3');
    retentionTitle.textContent = t('stats.retention_chart');
    retentionTitle.dataset.i18n = 'stats.retention_chart';
    const retention = svgEl('svg', { id: 'stats-retention', class: 'stats-chart', role: 'img', 'aria-label': t('stats.retention_chart') });
    const status = document.createElement('span');
    status.id = 'stats-status';
    status.className = 'status';
    status.setAttribute('role', 'status');
    body.append(numbers, chartTitle, legend, chart, joins, retentionTitle, retention);
    card.replaceChildren(head, body, status);
    this.renderToggle();
  }

  renderToggle() {
    const toggle = this.$('stats-toggle');
    toggle.textContent = this.expanded ? t('stats.hide') : t('stats.show');
    toggle.setAttribute('aria-expanded', String(this.expanded));
    this.$('stats-body').hidden = !this.expanded;
  }

  /** The space shown (`null` for none), and whether the page's token manages it. */
  open(space, manager) {
    const id = space && manager ? space.id : null;
    this.live = Boolean(space) && space.state === 'live';
    if (id !== this.spaceId) this.refused = false;
    this.$('stats-card').hidden = !id || space.state === 'scheduled' || this.refused;
    if (id === this.spaceId) return;
    this.spaceId = id;
    this.setExpanded(false);
  }

  setExpanded(on) {
    this.expanded = on && Boolean(this.spaceId);
    this.renderToggle();
    clearInterval(this.timer);
    this.timer = null;
    if (!this.expanded) return;
    this.refresh();
    this.timer = setInterval(() => {
      if (this.live) this.refresh();
    }, REFRESH_MS);
  }

  async refresh() {
    const id = this.spaceId;
    const status = this.$('stats-status');
    if (!this.$('stats-numbers').childElementCount) status.textContent = t('stats.loading');
    try {
      const stats = await api.spaceStats(this.token(), id);
      if (id !== this.spaceId || !this.expanded) return;
      status.textContent = '';
      status.classList.remove('error');
      this.render(stats);
    } catch (err) {
      if (id !== this.spaceId) return;
      if (err.status === 403 || err.status === 401) {
        // The room does not give this token the host's role (any more): nothing to offer.
        this.refused = true;
        this.setExpanded(false);
        this.$('stats-card').hidden = true;
        return;
      }
      status.textContent = `${err.code || 'error'}: ${err.message}`;
      status.classList.add('error');
    }
  }

  render(stats) {
    this.stats = stats;
    const l = stats.listeners;
    const rows = [
      [t('stats.peak'), l.peak],
      [t('stats.average'), l.average],
      [t('stats.unique'), l.unique],
      [t('stats.minutes'), Math.round(stats.listen_minutes * 10) / 10],
      [t('stats.requests'), stats.requests_to_speak],
      [t('stats.reactions'), stats.reactions.total],
    ];
    const numbers = this.$('stats-numbers');
    numbers.replaceChildren(...rows.map(([label, value]) => {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = label;
      const dd = document.createElement('dd');
      dd.textContent = num(value);
      div.append(dd, dt);
      return div;
    }));
    const joins = Object.entries(PROTOCOLS).map(([k, name]) => `${name} ${num(stats.joins[k] || 0)}`);
    this.$('stats-joins').textContent = t('stats.joins', { list: joins.join(' · ') });
    drawListeners(this.$('stats-chart'), stats);
    drawRetention(this.$('stats-retention'), stats);
  }
}
