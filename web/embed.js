// The embeddable player (/embed/{space}): one button that plays or pauses the space, live over
// Ogg/Opus (/live/{space}.opus) or, once it has ended, its newest recording. No sign-in, no
// host controls. A live stream is dropped on pause and reopened on play, so playing again
// starts at the live edge, not where the pause left a buffer. It speaks the reader's language
// (`?lang=` in the frame's address, else the browser's; `web/i18n.js`): the server writes the
// English words, marked up with their keys, and they are replaced here.

import { init, t } from './i18n.js';

await init();

/** The words for the space's state and the note under it, by the names the server gives. */
const STATES = {
  live: () => t('embed.state.live'),
  ended: () => t('embed.state.ended'),
  scheduled: () => t('embed.state.scheduled'),
};
const NOTES = {
  replay: () => t('embed.note.replay'),
  no_recording: () => t('embed.note.no_recording'),
  not_live: () => t('embed.note.not_live'),
};

const audio = document.getElementById('audio');
const play = document.getElementById('play');
const label = document.getElementById('play-label');
const note = document.getElementById('note');
const live = document.body.dataset.state === 'live';
const src = audio.dataset.src;
const stateWords = STATES[document.body.dataset.state];
if (stateWords) document.getElementById('state').textContent = stateWords();
const noteWords = NOTES[note.dataset.note];
if (noteWords) note.textContent = noteWords();

function show(playing) {
  document.body.classList.toggle('playing', playing);
  const word = playing ? t('embed.pause') : t('embed.play');
  label.textContent = word;
  play.setAttribute('aria-label', word);
}

play.addEventListener('click', async () => {
  if (!src) return;
  if (!audio.paused) {
    audio.pause();
    // Said here, not only on 'pause': load() below drops the element's queued events.
    show(false);
    if (live) {
      audio.removeAttribute('src');
      audio.load();
    }
    return;
  }
  if (!audio.getAttribute('src')) audio.src = src;
  try {
    await audio.play();
  } catch (e) {
    note.textContent = t('embed.note.cannot_play', { message: e.message });
  }
});

audio.addEventListener('playing', () => { show(true); note.textContent = live ? t('embed.note.listening') : ''; });
audio.addEventListener('pause', () => show(false));
audio.addEventListener('ended', () => {
  show(false);
  if (live) {
    document.body.dataset.state = 'ended';
    document.getElementById('state').textContent = t('embed.state.ended');
    note.textContent = '';
    play.disabled = true;
  }
});
audio.addEventListener('error', () => {
  show(false);
  if (audio.getAttribute('src')) note.textContent = t('embed.note.stopped');
});

// For tests and for pages that script the frame.
window.townhallEmbed = { audio, playing: () => !audio.paused && audio.currentTime > 0 };
