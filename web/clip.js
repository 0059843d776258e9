// The clip page (/clips/{id}) in the reader's language (`?lang=`, else the browser's;
// `web/i18n.js`): the server writes it in English, its words marked up with their keys; the
// source ("live", or a recording at a time) and the date are written here.

import { date, init, t } from './i18n.js';

await init();

const source = document.getElementById('clip-source');
const at = source.dataset.at;
source.textContent = at ? t('clip_page.source.recording', { at }) : t('clip_page.source.live');
const when = document.getElementById('clip-date');
const day = new Date(`${when.dateTime}T00:00:00Z`);
if (!Number.isNaN(day.getTime())) {
  when.textContent = date(day, { dateStyle: 'medium', timeZone: 'UTC' });
}
