// Recordings: the list (title, date, duration, a player and a download link, the transcript
// where there is one; the title opens the replay page) and the REC state.

import { transcriptPanel } from './captions.js';
import { date, language, t } from './i18n.js';

/** `1:02:03` or `4:05` from milliseconds. */
export function formatDuration(ms) {
  const total = Math.round((ms || 0) / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

const STATE_TEXT = () => ({ recording: t('recordings.recording'), finished: '', recovered: t('recordings.recovered') });

/**
 * Shows `recordings` in `ul` (newest first): title, date, duration, an `<audio controls
 * preload="none">` and a download link for finished and recovered ones. Rendering the same list
 * again changes nothing, so a player keeps playing through the page's periodic refreshes.
 */
export function renderRecordings(ul, recordings, token) {
  const key = JSON.stringify([
    language(),
    recordings.map((r) => [r.id, r.state, r.duration_ms, Boolean(token), Boolean(r.transcript)]),
  ]);
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  const playing = new Map(
    [...ul.querySelectorAll('audio')].filter((a) => !a.paused || a.currentTime > 0).map((a) => [a.dataset.id, a]),
  );
  ul.replaceChildren(
    ...recordings.map((r) => {
      const li = document.createElement('li');
      li.className = 'recording';
      li.dataset.id = r.id;
      const head = document.createElement('div');
      head.className = 'row spread';
      // The title opens the recording's replay page (timeline, speed, clips).
      const title = document.createElement('a');
      title.className = 'replay-link';
      title.href = `#/recording/${r.id}`;
      const name = document.createElement('strong');
      name.textContent = r.title || r.space;
      name.dir = 'auto';
      title.append(name);
      if (r.state === 'recording') title.removeAttribute('href');
      const meta = document.createElement('span');
      meta.className = 'muted small';
      meta.textContent = [date(r.started_at), formatDuration(r.duration_ms), STATE_TEXT()[r.state]]
        .filter(Boolean)
        .join(' · ');
      head.append(title, meta);
      li.append(head);
      if (r.url) {
        // A player already started keeps playing (same element) when the list changes.
        const audio = playing.get(r.id) || document.createElement('audio');
        audio.controls = true;
        audio.preload = 'none';
        audio.dataset.id = r.id;
        // A private recording's URLs carry a short-lived listening ticket the server minted for this
        // page's token; the token itself never goes into a URL.
        if (!audio.src) audio.src = r.url;
        const download = document.createElement('a');
        download.href = r.download_url;
        download.textContent = t('recordings.download');
        download.className = 'small';
        download.setAttribute('download', '');
        const row = document.createElement('div');
        row.className = 'row';
        row.append(audio, download);
        li.append(row);
        if (r.transcript) li.append(transcriptPanel(r, audio));
      }
      return li;
    }),
  );
}

/** The REC badge and the host's Record / Stop recording buttons for `space`. */
export function renderRecordingState($, space, manager) {
  const live = space.state === 'live';
  $('rec-badge').hidden = !space.recording;
  $('record').hidden = !manager || !live || space.recording;
  $('stop-record').hidden = !manager || !live || !space.recording;
}
