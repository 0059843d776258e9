// The page's words, in the reader's language. Every user-visible string lives in a catalog
// (`/locales/{lang}.json`), keyed by a dotted name; the page asks for it with `t(key, params)`.
// A catalog entry is a string with `{name}` placeholders, or, for counts, an object of CLDR
// plural forms (`zero one two few many other`, picked with Intl.PluralRules). Numbers are
// formatted with Intl.NumberFormat, dates with Intl.DateTimeFormat, in the page's language.
//
// The language comes from `?lang=` in the address, else the reader's saved choice (the
// switcher), else the browser's languages (`navigator.languages`), else English. Arabic is
// written right to left: `<html lang dir>` follows the language, and the style sheet uses
// logical properties (`margin-inline-start` ...) so the layout mirrors by itself.
//
// Static text in index.html names its key in a `data-i18n` attribute (its text), or in
// `data-i18n-title`, `data-i18n-placeholder` and `data-i18n-aria-label` (those attributes);
// `apply()` fills them.
// `crates/server/tests/i18n.rs` checks that every key used here and there is in every catalog.

/** The languages the page ships, each named in itself (how the switcher shows it). */
export const LANGUAGES = { en: 'English', ar: 'العربية' };
const RTL = new Set(['ar']);
const LANG_KEY = 'townhall.lang';
const FALLBACK = 'en';
const ATTRS = ['title', 'placeholder', 'aria-label'];

let lang = FALLBACK;
let catalog = {};
let fallback = {};
let plurals = new Intl.PluralRules(FALLBACK);
let numbers = new Intl.NumberFormat(FALLBACK);
const listeners = new Set();

/** The first of `wanted` (language tags, best first) the page speaks, by primary subtag. */
export function pick(wanted) {
  for (const tag of wanted) {
    const primary = String(tag || '').toLowerCase().split(/[-_]/)[0];
    if (primary in LANGUAGES) return primary;
  }
  return FALLBACK;
}

function saved() {
  try {
    return localStorage.getItem(LANG_KEY);
  } catch (e) {
    return null;
  }
}

/** The language this page should speak: `?lang=`, the saved choice, the browser's. */
export function preferred() {
  const asked = new URLSearchParams(location.search).get('lang');
  return pick([asked, saved(), ...(navigator.languages || [navigator.language])]);
}

async function load(code) {
  const res = await fetch(`/locales/${code}.json`);
  if (!res.ok) throw new Error(`no catalog for ${code}: ${res.status}`);
  return res.json();
}

/** Loads the catalogs and marks up the page; call once before rendering anything. */
export async function init() {
  try {
    fallback = await load(FALLBACK);
  } catch (e) {
    console.warn(e);
  }
  await use(preferred());
}

/** Switches to `code` (saved for next time), re-labels the page and tells who listens. */
export async function setLanguage(code) {
  const next = pick([code]);
  try {
    localStorage.setItem(LANG_KEY, next);
  } catch (e) {
    // A browser without storage: the choice lasts this page.
  }
  // A `?lang=` in the address would outrank the choice on the next visit: the choice wins now.
  const url = new URL(location.href);
  if (url.searchParams.has('lang')) {
    url.searchParams.delete('lang');
    history.replaceState(history.state, '', url);
  }
  await use(next);
  for (const f of listeners) f(next);
}

async function use(code) {
  let words = fallback;
  if (code !== FALLBACK) {
    try {
      words = await load(code);
    } catch (e) {
      console.warn(e);
      code = FALLBACK;
    }
  }
  lang = code;
  catalog = words;
  plurals = new Intl.PluralRules(lang);
  numbers = new Intl.NumberFormat(lang);
  const root = document.documentElement;
  root.lang = lang;
  root.dir = RTL.has(lang) ? 'rtl' : 'ltr';
  apply(document);
}

/** Calls `f(lang)` after every switch (to redraw what the page wrote itself). */
export function onLanguage(f) {
  listeners.add(f);
}

/** The page's language now (`en`, `ar`). */
export const language = () => lang;
/** Whether the page is written right to left now. */
export const rtl = () => RTL.has(lang);

/** A number in the page's language (Arabic-Indic digits in Arabic). */
export const num = (n) => numbers.format(n);

/** A date (`Date` or seconds since the epoch) in the page's language. */
export function date(at, options = { dateStyle: 'medium', timeStyle: 'short' }) {
  const d = at instanceof Date ? at : new Date(at * 1000);
  return new Intl.DateTimeFormat(lang, options).format(d);
}

/**
 * The text for `key` in the page's language (English where the catalog misses it, the key
 * itself where both do), with `{name}` replaced by `params.name`; a plural entry picks its
 * form by `params.count`. Numbers in params are formatted for the language.
 */
export function t(key, params = {}) {
  let entry = catalog[key] ?? fallback[key] ?? key;
  if (typeof entry === 'object' && entry !== null) {
    const n = Number(params.count) || 0;
    entry = entry[plurals.select(n)] ?? entry.other ?? key;
  }
  return entry.replace(/\{(\w+)\}/g, (whole, name) => {
    if (!(name in params)) return whole;
    const v = params[name];
    return typeof v === 'number' ? num(v) : String(v);
  });
}

/** Fills the marked-up text and attributes under `root` in the page's language. */
export function apply(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const attr of ATTRS) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
    }
  }
}
