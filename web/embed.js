// The embeddable player (/embed/{space}): one button that plays or pauses the space, live over
// Ogg/Opus (/live/{space}.opus) or, once it has ended, its newest recording. No sign-in, no
// host controls. A live stream is dropped on pause and reopened on play, so playing again
// starts at the live edge, not where the pause left a buffer.

const audio = document.getElementById('audio');
const play = document.getElementById('play');
const label = document.getElementById('play-label');
const note = document.getElementById('note');
const live = document.body.dataset.state === 'live';
const src = audio.dataset.src;

function show(playing) {
  document.body.classList.toggle('playing', playing);
  label.textContent = playing ? 'Pause' : 'Play';
  play.setAttribute('aria-label', playing ? 'Pause' : 'Play');
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
    note.textContent = `cannot play: ${e.message}`;
  }
});

audio.addEventListener('playing', () => { show(true); note.textContent = live ? 'listening live' : ''; });
audio.addEventListener('pause', () => show(false));
audio.addEventListener('ended', () => {
  show(false);
  if (live) {
    document.body.dataset.state = 'ended';
    document.getElementById('state').textContent = 'Ended';
    note.textContent = '';
    play.disabled = true;
  }
});
audio.addEventListener('error', () => {
  show(false);
  if (audio.getAttribute('src')) note.textContent = 'the audio stopped';
});

// For tests and for pages that script the frame.
window.townhallEmbed = { audio, playing: () => !audio.paused && audio.currentTime > 0 };
