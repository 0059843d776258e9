// The room of a live space as this page sees it: who is on stage (role, mute), raised hands
// (first come, first served), invitations, reactions, and what the page's own token may do
// there. Kept live from the listener WebSocket's room events; without one (HLS, WHEP, or not
// listening) it polls once a second: the cacheable /summary, plus the full /room for moderators
// and people taking part (hand raised, invited, on stage). Actions go to POST .../actions.

import * as api from './api.js';
import { t } from './i18n.js';

/** The fixed set of reactions, in display order: [name, emoji] (crates/core/src/room/action.rs). */
export const REACTIONS = [
  ['clap', '👏'],
  ['heart', '❤️'],
  ['laugh', '😂'],
  ['fire', '🔥'],
  ['hundred', '💯'],
  ['raised_hands', '🙌'],
  ['hand', '✋'],
];

/** What the page says when the room ends someone's part in the space. */
export const KICKS = {
  removed: () => t('kick.removed'),
  blocked: () => t('kick.blocked'),
  moved_to_audience: () => t('kick.moved_to_audience'),
};

const RANK = { host: 0, cohost: 1, speaker: 2, listener: 3 };
const POLL_MS = 1000;
/** A leave of one's own makes the events that follow it expected for this long. */
const SELF_MS = 10000;

export const canSpeakRole = (role) => role === 'host' || role === 'cohost' || role === 'speaker';

/** The claims of a JWT (`sub`, `role`, `space`, `exp`), unverified (the server checks), or null. */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    return null;
  }
}

const emptyView = () => ({ host: null, seats: 0, ended: false, speakers: [], cohosts: [], hands: [], invited: [] });

/**
 * One space's room. `token()` gives the page's token; hooks: `onChange()`, `onListeners(n)`,
 * `onCaptions({on, cues})` (the summary's captions, for listeners without a WebSocket),
 * `onReactions({second, counts})`, `onKicked(reason)` (`removed`, `blocked`,
 * `moved_to_audience`) and `onEnded()`.
 */
export class Room {
  constructor(token, hooks) {
    this.token = token;
    this.hooks = hooks;
    this.spaceId = null;
    this.reset();
    setInterval(() => this.poll(), POLL_MS);
  }

  reset() {
    this.view = emptyView();
    this.loaded = false;
    this.detail = false; // the view holds the hands and invitations (not just the summary)
    this.handsCount = 0;
    this.live = false;
    this.feed = false; // room events arrive over the listener WebSocket
    this.myRole = null; // the room's word on our role, once it said it
    this.joined = false; // in the room (we acted, spoke or joined), as far as we know
    this.order = new Map(); // identity → when they took their seat, for stage order
    this.mutes = new Map(); // identity → last mute state seen (mutes persist off stage)
    this.seq = 0;
    this.version = 0;
    this.notice = null;
    this.error = null;
    this.status = '';
    this.reactions = null;
    this.talking = new Set(); // who is talking now (voice activity)
    this.lastSecond = 0;
    this.floated = 0;
    this.selfAt = 0;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
  }

  /** Shows `spaceId` (another space, or another token, starts from scratch). */
  open(spaceId, live) {
    const token = this.token();
    if (spaceId !== this.spaceId || token !== this.openedWith) {
      const feed = spaceId === this.spaceId && this.feed;
      this.reset();
      this.spaceId = spaceId;
      this.openedWith = token;
      this.feed = feed;
    }
    this.setLive(live);
  }

  close() {
    this.spaceId = null;
    this.reset();
    this.changed();
  }

  setLive(live) {
    const was = this.live;
    this.live = live;
    if (live && !was) this.refresh();
  }

  /** The listener WebSocket opened (fetch the room, then follow its events) or closed (poll). */
  setFeed(open) {
    if (open === this.feed) return;
    this.feed = open;
    if (open) this.refresh();
    this.changed();
  }

  changed() {
    this.hooks.onChange();
  }

  // ---- who we are ----------------------------------------------------------------------------

  /** `{identity, tokenRole}` when the page's token is for this space, else null. */
  me() {
    const token = this.token();
    if (token !== this.claimsOf) {
      this.claimsOf = token;
      this.claims = token ? tokenClaims(token) : null;
    }
    const c = this.claims;
    if (!c || !this.spaceId || !c.sub || (c.space !== '*' && c.space !== this.spaceId)) return null;
    return { identity: c.sub, tokenRole: c.role };
  }

  seatOf(who) {
    return this.view.speakers.find((s) => s.identity === who) || null;
  }

  mySeat() {
    const me = this.me();
    return me ? this.seatOf(me.identity) : null;
  }

  /** Our role in the room (before joining: what the token would get on a first join). */
  role() {
    const me = this.me();
    if (!me) return null;
    if (this.view.host === me.identity) return 'host';
    if (this.view.cohosts.includes(me.identity)) return 'cohost';
    const seat = this.mySeat();
    if (seat) return seat.role;
    if (this.myRole) return this.myRole;
    return me.tokenRole === 'host' ? 'cohost' : me.tokenRole;
  }

  isModerator() {
    const role = this.role();
    return role === 'host' || role === 'cohost';
  }

  /** Whether the page may speak now: on stage, or a role that takes a free seat. */
  maySpeak() {
    return Boolean(this.mySeat()) || canSpeakRole(this.role());
  }

  myHand() {
    const me = this.me();
    return Boolean(me) && this.view.hands.some((h) => h.who === me.identity);
  }

  amInvited() {
    const me = this.me();
    return Boolean(me) && this.view.invited.includes(me.identity);
  }

  /** Whether we act on `member` (the host on everyone else, co-hosts on speakers only). */
  outranks(member) {
    const me = this.me();
    if (!me || member.identity === me.identity) return false;
    const role = this.role();
    if (role === 'host') return true;
    return role === 'cohost' && RANK[member.role] >= RANK.speaker;
  }

  /** Whether we may lift `member`'s mute: a moderator's lock, and not the host's for a co-host. */
  mayLift(member) {
    const m = member.mute;
    return this.outranks(member) && m.state === 'moderator' && (this.role() === 'host' || m.by_role !== 'host');
  }

  /** Moderators and people taking part follow the full room; everyone else the summary. */
  involved() {
    if (!this.me()) return false;
    return this.isModerator() || this.joined || this.myHand() || this.amInvited() || Boolean(this.mySeat());
  }

  // ---- reading the room ------------------------------------------------------------------------

  async poll() {
    if (!this.spaceId || !this.live || this.feed || this.view.ended || this.polling) return;
    this.polling = true;
    try {
      await this.refresh();
    } finally {
      this.polling = false;
    }
  }

  /** Fetches the room (and, without a WebSocket, the summary's listener count and reactions). */
  async refresh() {
    const id = this.spaceId;
    if (!id || !this.live) return;
    const version = this.version;
    const detailed = this.involved();
    const wantSummary = !detailed || !this.feed;
    let room = null;
    let summary = null;
    try {
      [room, summary] = await Promise.all([
        detailed ? api.getRoom(id) : null,
        wantSummary ? api.getSummary(id) : null,
      ]);
    } catch (e) {
      if (e.status === 410) this.setEnded();
      return;
    }
    if (id !== this.spaceId) return;
    // Events applied meanwhile may be newer than what came back (a cached summary is up to a
    // second old): keep them, and look again once that answer is stale.
    const stale = this.version !== version;
    if (stale) this.later(room ? 200 : 1100);
    if (room && !stale) this.applyView(room);
    if (summary) this.applySummary(summary, !room && !stale);
    this.changed();
  }

  /** Refreshes after `ms` (once, however many ask). */
  later(ms) {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh();
    }, ms);
  }

  applyView(v) {
    this.view = {
      host: v.host,
      seats: v.seats,
      ended: v.ended,
      speakers: v.speakers.map((s) => ({ ...s })),
      cohosts: [...v.cohosts],
      hands: v.hands.map((h) => ({ ...h })),
      invited: [...v.invited],
      audience: [...(v.audience || [])],
      audienceCount: v.listeners || 0,
    };
    this.loaded = true;
    this.detail = true;
    this.handsCount = v.hands.length;
    if (Array.isArray(v.talking)) this.talking = new Set(v.talking);
    for (const s of this.view.speakers) this.seated(s);
    const seat = this.mySeat();
    if (seat) this.myRole = seat.role;
    if (v.ended) this.setEnded();
  }

  applySummary(s, withSpeakers) {
    if (typeof s.listeners === 'number') this.hooks.onListeners(s.listeners);
    if (s.captions && this.hooks.onCaptions) this.hooks.onCaptions(s.captions);
    if (Array.isArray(s.talking)) this.talking = new Set(s.talking);
    if (withSpeakers) {
      this.view.speakers = s.speakers.map((m) => ({ ...m }));
      for (const m of this.view.speakers) this.seated(m);
      this.handsCount = s.hands;
      this.loaded = true;
    }
    const r = s.reactions;
    if (r && r.second > this.lastSecond) {
      const fresh = this.lastSecond > 0 || r.second >= Date.now() / 1000 - 5;
      if (fresh) this.react(r);
      else this.lastSecond = r.second;
    }
    if (s.state === 'ended') this.setEnded();
  }

  seated(member) {
    if (!this.order.has(member.identity)) this.order.set(member.identity, ++this.seq);
    this.mutes.set(member.identity, member.mute);
  }

  sortStage() {
    const at = (who) => this.order.get(who) || 0;
    this.view.speakers.sort((a, b) => RANK[a.role] - RANK[b.role] || at(a.identity) - at(b.identity));
  }

  setEnded() {
    if (this.view.ended) return;
    this.view.ended = true;
    this.view.speakers = [];
    this.view.hands = [];
    this.view.invited = [];
    this.handsCount = 0;
    this.hooks.onEnded();
  }

  react(ev) {
    this.lastSecond = Math.max(this.lastSecond, ev.second);
    this.reactions = { second: ev.second, counts: ev.counts };
    this.floated += Object.values(ev.counts).reduce((a, b) => a + b, 0);
    this.hooks.onReactions(ev);
  }

  /** Applies one room event from the WebSocket. */
  apply(ev) {
    if (ev.type !== 'reactions' && ev.type !== 'speaking') this.version += 1;
    const v = this.view;
    const who = ev.who;
    const drop = (list) => list.filter((x) => x !== who);
    switch (ev.type) {
      case 'joined':
      case 'left':
        break;
      case 'speaker_added': {
        v.speakers = v.speakers.filter((s) => s.identity !== who);
        // A mute outlives the stage: one we never saw may be stale, so look again (spread out).
        const mute = this.mutes.get(who);
        if (!mute) this.later(this.involved() ? 100 : 1000 + Math.random() * 2000);
        this.order.set(who, ++this.seq);
        v.speakers.push({ identity: who, role: ev.role, on_stage: true, mute: mute || { state: 'unmuted' } });
        this.sortStage();
        break;
      }
      case 'speaker_removed':
        v.speakers = v.speakers.filter((s) => s.identity !== who);
        break;
      case 'muted': {
        const by = ev.by;
        const mute = by
          ? { state: 'moderator', by, by_role: by === v.host ? 'host' : 'cohost' }
          : { state: 'self_muted' };
        this.setMute(who, mute);
        break;
      }
      case 'mute_lifted':
        this.setMute(who, { state: 'self_muted' });
        break;
      case 'unmuted':
        this.setMute(who, { state: 'unmuted' });
        break;
      case 'hand_raised':
        if (!v.hands.some((h) => h.who === who)) v.hands.push({ who, at: ev.at });
        this.handsCount = v.hands.length;
        break;
      case 'hand_lowered':
        v.hands = v.hands.filter((h) => h.who !== who);
        this.handsCount = v.hands.length;
        break;
      case 'invited':
        if (!v.invited.includes(who)) v.invited.push(who);
        break;
      case 'invitation_closed':
        v.invited = drop(v.invited);
        break;
      case 'role_changed': {
        const seat = this.seatOf(who);
        if (seat) seat.role = ev.to;
        v.cohosts = ev.to === 'cohost' ? [...drop(v.cohosts), who] : drop(v.cohosts);
        if (ev.to === 'host') v.host = who;
        this.sortStage();
        break;
      }
      case 'removed':
      case 'blocked':
        v.speakers = v.speakers.filter((s) => s.identity !== who);
        v.hands = v.hands.filter((h) => h.who !== who);
        v.invited = drop(v.invited);
        break;
      case 'unblocked':
        break;
      case 'reactions':
        this.react(ev);
        break;
      case 'speaking':
        this.talking = new Set(ev.speakers);
        break;
      case 'ended':
        this.setEnded();
        break;
      default:
        // Something this page does not know how to apply: read the room again.
        this.later(this.involved() ? 100 : 1000 + Math.random() * 2000);
    }
    this.mine(ev);
    this.changed();
  }

  setMute(who, mute) {
    this.mutes.set(who, mute);
    const seat = this.seatOf(who);
    if (seat) seat.mute = mute;
  }

  /** What an event says about us: our role, presence, and whether a host moved or removed us. */
  mine(ev) {
    const me = this.me();
    if (!me || ev.who !== me.identity) return;
    switch (ev.type) {
      case 'joined':
        this.joined = true;
        this.myRole = ev.role;
        break;
      case 'left':
        this.joined = false;
        break;
      case 'speaker_added':
        this.myRole = ev.role;
        if (this.notice && this.notice.reason === 'moved_to_audience') this.notice = null;
        break;
      case 'role_changed':
        this.myRole = ev.to;
        // Off stage while still in the room (a removal leaves the room first): a host moved us.
        if (ev.from === 'speaker' && ev.to === 'listener' && this.joined) this.kicked('moved_to_audience');
        break;
      case 'removed':
      case 'blocked':
        this.joined = false;
        this.kicked(ev.type);
        break;
      default:
        break;
    }
  }

  /**
   * The room ended our part (from its events, a speaking session's `bye`, or a 403): say so and
   * tell the page (stop speaking; removed or blocked: stop listening too). Our own leave is not.
   */
  kicked(reason) {
    if (!(reason in KICKS)) return;
    if (reason === 'moved_to_audience' && Date.now() - this.selfAt < SELF_MS) return;
    if (this.notice && this.notice.reason === reason) return;
    if (this.notice && this.notice.reason !== 'moved_to_audience' && reason === 'moved_to_audience') return;
    this.notice = { reason, text: KICKS[reason] };
    if (reason !== 'moved_to_audience') this.myRole = 'listener';
    this.hooks.onKicked(reason);
    this.changed();
  }

  /** We are leaving the stage ourselves: what follows is not a host's doing. */
  leavingStage() {
    this.selfAt = Date.now();
  }

  /** We speak: the server put us in the room. */
  speaking() {
    this.joined = true;
    if (this.notice && this.notice.reason === 'moved_to_audience') this.notice = null;
    this.changed();
  }

  // ---- acting -------------------------------------------------------------------------------

  /**
   * Asks the room for `action` (`{target, reason, reaction}` in `fields`). Resolves true when
   * done; on refusal, keeps the server's error to show (a 429 on a reaction is ignored).
   */
  async act(action, fields = {}) {
    const token = this.token();
    const me = this.me();
    if (!token || !me) {
      this.error = { status: 401, code: 'unauthorized', message: t('room.need_token'), action };
      this.changed();
      return false;
    }
    if (action === 'move_to_audience' && fields.target === me.identity) this.leavingStage();
    try {
      const res = await api.act(token, this.spaceId, { action, ...fields });
      if (action !== 'leave') this.joined = true;
      this.version += 1;
      for (const ev of res.events) this.mine(ev);
      this.applyView(res.room);
      this.error = null;
      this.changed();
      return true;
    } catch (e) {
      if (action === 'react' && e.status === 429) return false;
      if (e.status === 403 && (e.code === 'removed' || e.code === 'blocked')) this.kicked(e.code);
      this.error = { status: e.status || 0, code: e.code || 'error', message: e.message, action };
      this.changed();
      return false;
    }
  }

  // ---- for tests and the curious ---------------------------------------------------------------

  snapshot() {
    const me = this.me();
    const seat = this.mySeat();
    return {
      space: this.spaceId,
      feed: this.feed ? 'websocket' : this.live ? 'poll' : 'none',
      loaded: this.loaded,
      ended: this.view.ended,
      host: this.view.host,
      seats: this.view.seats,
      speakers: this.view.speakers.map((s) => ({
        identity: s.identity,
        role: s.role,
        mute: s.mute.state,
        muted: s.mute.state !== 'unmuted',
      })),
      hands: this.view.hands.map((h) => h.who),
      handsCount: this.handsCount,
      invited: [...this.view.invited],
      me: me && {
        identity: me.identity,
        tokenRole: me.tokenRole,
        role: this.role(),
        moderator: this.isModerator(),
        onStage: Boolean(seat),
        mute: seat ? seat.mute.state : null,
        hand: this.myHand(),
        invited: this.amInvited(),
        canSpeak: this.maySpeak(),
      },
      notice: this.notice ? this.notice.reason : null,
      error: this.error,
      reactions: this.reactions,
      floated: this.floated,
    };
  }
}
