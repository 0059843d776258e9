// The room on the page: the stage (role badges, muted icons), the page's own controls (request
// to speak, invitations, self-mute, leave the stage), the hosts' requests list and per-speaker
// moderation, the reactions bar and the tallies floating up from everyone's reactions.

import { date, num, t } from './i18n.js';
import { REACTIONS } from './room.js';

const $ = (id) => document.getElementById(id);
const ROLE = () => ({ host: t('role.host'), cohost: t('role.cohost'), speaker: t('role.speaker'), listener: t('role.listener') });
const MUTE = () => ({ self_muted: t('mute.self'), moderator: t('mute.moderator') });
/** A reaction's name, as buttons are labelled for screen readers. */
const REACTION = () => ({
  clap: t('reaction.clap'),
  heart: t('reaction.heart'),
  laugh: t('reaction.laugh'),
  fire: t('reaction.fire'),
  hundred: t('reaction.hundred'),
  raised_hands: t('reaction.raised_hands'),
  hand: t('reaction.hand'),
});
/** What the status line says after an action went through. */
const DONE = () => ({
  request_to_speak: t('done.request_to_speak'),
  cancel_request: t('done.cancel_request'),
  accept_invitation: t('done.accept_invitation'),
  decline_invitation: t('done.decline_invitation'),
  move_to_audience: t('done.move_to_audience'),
  mute: t('done.mute'),
  unmute: t('done.unmute'),
  invite: t('done.invite'),
  accept_request: t('done.accept_request'),
  decline_request: t('done.decline_request'),
  remove: t('done.remove'),
});

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

const actionButton = (text, action, target, cls = '') =>
  el('button', { type: 'button', class: cls, data: { action, target } }, text);

const clock = (at) => date(at, { hour: '2-digit', minute: '2-digit' });

/** Replaces `list`'s items only when what they show changed (a click never lands on a stale one). */
const shown = new WeakMap();
function replaceIfChanged(list, items) {
  const key = items.map((i) => i.outerHTML).join('');
  if (shown.get(list) === key) return;
  shown.set(list, key);
  list.replaceChildren(...items);
}

/**
 * Renders `room` and wires its controls. Hooks: `leaveStage()` (after our own move to the
 * audience: stop speaking) and `changed()` (the page's Speak button follows the room).
 */
export class RoomView {
  constructor(room, hooks) {
    this.room = room;
    this.hooks = hooks;
    this.drawReactions();
    this.announced = { stage: null, talking: '' };
    const bar = $('reaction-bar');
    bar.onclick = (e) => {
      const b = e.target.closest('button[data-reaction]');
      if (b) this.react(b);
    };
    $('stage').onclick = (e) => this.onStageClick(e);
    $('requests').onclick = (e) => {
      const b = e.target.closest('button[data-action]');
      if (b) this.act(b.dataset.action, { target: b.dataset.target });
    };
    $('invite-form').onsubmit = (e) => {
      e.preventDefault();
      const who = $('invite-who').value.trim();
      if (who) this.act('invite', { target: who }).then((ok) => ok && ($('invite-who').value = ''));
    };
    $('request-speak').onclick = () => this.act('request_to_speak');
    $('cancel-request').onclick = () => this.act('cancel_request');
    $('accept-invite').onclick = () => this.act('accept_invitation');
    $('decline-invite').onclick = () => this.act('decline_invitation');
    $('self-mute').onclick = () => this.act('mute', { target: this.room.me().identity });
    $('self-unmute').onclick = () => this.act('unmute', { target: this.room.me().identity });
    $('leave-stage').onclick = () => this.leaveStage();
  }

  /** The reaction buttons: an emoji each, named for screen readers in the page's language. */
  drawReactions() {
    const names = REACTION();
    $('reaction-bar').replaceChildren(
      ...REACTIONS.map(([name, emoji]) =>
        el(
          'button',
          { type: 'button', class: 'reaction', title: names[name], 'aria-label': names[name], data: { reaction: name } },
          emoji,
        ),
      ),
    );
  }

  async act(action, fields) {
    this.room.error = null;
    setStatus('');
    const ok = await this.room.act(action, fields);
    const done = DONE()[action];
    if (ok && done) setStatus(done);
    return ok;
  }

  async leaveStage() {
    const me = this.room.me();
    if (!me) return;
    // The room first (it hangs up our speaking session and says why), then our microphone.
    if (await this.act('move_to_audience', { target: me.identity })) {
      setStatus(t('done.left_stage'));
      this.hooks.leaveStage();
    }
  }

  async react(button) {
    button.classList.add('sent');
    setTimeout(() => button.classList.remove('sent'), 300);
    await this.room.act('react', { reaction: button.dataset.reaction });
  }

  onStageClick(e) {
    const b = e.target.closest('button[data-action]');
    if (!b) return;
    const { action, target } = b.dataset;
    const fields = { target };
    if (action === 'remove') {
      const reason = window.prompt(t('mod.remove_prompt', { who: target }), '');
      if (reason === null) return;
      if (reason.trim()) fields.reason = reason.trim();
    }
    this.act(action, fields);
  }

  /** Draws everything from the room's state. */
  render() {
    const room = this.room;
    const v = room.view;
    const me = room.me();
    const show = room.spaceId && room.live && !v.ended;
    $('room').hidden = !room.spaceId || !room.live;
    this.renderStage();
    const notice = room.notice ? room.notice.text() : v.ended ? t('room.ended') : '';
    $('room-notice').textContent = notice;
    $('room-notice').hidden = !notice;
    const err = room.error;
    if (err) setStatus(err.message ? `${err.message}` : `${err.code}`, true);

    // Our own controls.
    const seat = room.mySeat();
    const role = room.role();
    const removed = Boolean(room.notice) && (room.notice.reason === 'removed' || room.notice.reason === 'blocked');
    const listener = Boolean(me) && !seat && role === 'listener' && !removed;
    const canAct = Boolean(me) && show && !removed;
    $('me-controls').hidden = !canAct;
    $('room-hint').hidden = Boolean(me) || !show;
    const invited = room.amInvited();
    const hand = room.myHand();
    $('invitation').hidden = !(listener && invited);
    $('request-speak').hidden = !(listener && !invited && !hand);
    $('cancel-request').hidden = !(listener && hand);
    const mute = seat ? seat.mute.state : null;
    $('self-mute').hidden = mute !== 'unmuted';
    $('self-unmute').hidden = mute !== 'self_muted';
    $('my-mute').hidden = mute !== 'moderator';
    const by = mute === 'moderator' ? seat.mute.by : null;
    $('my-mute').textContent = by ? (by === v.host ? t('mute.host_muted_you') : t('mute.muted_you', { who: by })) : '';
    $('leave-stage').hidden = !seat;
    $('speak-controls').hidden = !canAct;
    $('reaction-bar').hidden = !canAct;

    this.renderRequests(show && room.isModerator());
    this.hooks.changed();
  }

  renderStage() {
    const room = this.room;
    const v = room.view;
    const me = room.me();
    const roles = ROLE();
    const mutes = MUTE();
    const items = v.speakers.map((s) => {
      const mine = me && s.identity === me.identity;
      const muted = s.mute.state !== 'unmuted';
      const talking = !muted && room.talking.has(s.identity);
      const controls = [];
      if (room.outranks(s)) {
        if (s.mute.state !== 'moderator') controls.push(actionButton(t('room.mute'), 'mute', s.identity));
        if (room.mayLift(s)) controls.push(actionButton(t('room.unmute'), 'unmute', s.identity));
        controls.push(actionButton(t('mod.move_to_audience'), 'move_to_audience', s.identity));
        controls.push(actionButton(t('mod.remove'), 'remove', s.identity, 'danger'));
      }
      return el(
        'li',
        {
          class: `member${muted ? ' muted' : ''}${talking ? ' talking' : ''}`,
          data: { identity: s.identity, role: s.role, mute: s.mute.state, talking: String(talking) },
        },
        el('span', { class: 'avatar', 'aria-hidden': 'true' }, s.identity.slice(0, 1).toUpperCase()),
        el('span', { class: 'who' }, s.identity, mine ? el('span', { class: 'muted small' }, ` ${t('room.you')}`) : null),
        el('span', { class: `badge role ${s.role}` }, roles[s.role] || s.role),
        muted ? el('span', { class: 'mic-off', title: mutes[s.mute.state], role: 'img', 'aria-label': mutes[s.mute.state] }, '🔇') : null,
        controls.length ? el('span', { class: 'mod' }, ...controls) : null,
      );
    });
    replaceIfChanged($('stage'), items);
    // The audience in the room (people who joined it, not every anonymous listener), from the
    // last read of the room.
    const audience = v.audience || [];
    const more = Math.max(0, (v.audienceCount || 0) - audience.length);
    $('audience-line').hidden = audience.length === 0;
    const names = audience.join(t('list.comma'));
    $('audience-line').textContent = audience.length
      ? more
        ? t('room.audience_more', { names, count: more })
        : t('room.audience', { names })
      : '';
    $('stage-empty').hidden = items.length > 0 || !room.loaded;
    const n = v.speakers.length;
    $('stage-count').textContent = v.seats ? t('room.seats', { n, count: v.seats }) : t('room.on_stage', { count: n });
    $('hands-line').hidden = !room.handsCount;
    $('hands-line').textContent = room.handsCount ? t('room.hands', { count: room.handsCount }) : '';
    this.announce();
  }

  /**
   * Tells screen readers (the polite live region `#stage-live`) who came on or left the stage
   * and who is talking now: a new set of voices is said once, not every time it pauses.
   */
  announce() {
    const room = this.room;
    if (!room.loaded) return;
    const said = [];
    const stage = room.view.speakers.map((s) => s.identity);
    const before = this.announced.stage;
    if (before) {
      for (const who of stage) if (!before.includes(who)) said.push(t('live.joined', { who }));
      for (const who of before) if (!stage.includes(who)) said.push(t('live.left', { who }));
    }
    this.announced.stage = stage;
    const talking = stage.filter((who) => room.talking.has(who));
    const key = talking.join('\n');
    if (talking.length && key !== this.announced.talking) {
      this.announced.talking = key;
      said.push(t('live.talking', { names: talking.join(t('list.comma')) }));
    }
    if (said.length) $('stage-live').textContent = said.join(' ');
  }

  /** The language changed: what was said in the old one is said again in the new one. */
  relabel() {
    this.drawReactions();
    this.announced.talking = '';
    this.render();
  }

  renderRequests(visible) {
    const room = this.room;
    const v = room.view;
    $('moderation').hidden = !visible;
    if (!visible) return;
    const items = v.hands.map((h, i) =>
      el(
        'li',
        { data: { who: h.who } },
        el('span', { class: 'who' }, `${i + 1}. ${h.who}`),
        el('span', { class: 'muted small' }, ` ${t('mod.raised_at', { time: clock(h.at) })} `),
        actionButton(t('room.accept'), 'accept_request', h.who, 'primary'),
        actionButton(t('room.decline'), 'decline_request', h.who),
      ),
    );
    replaceIfChanged($('requests'), items);
    $('no-requests').hidden = items.length > 0;
    $('hand-count').textContent = items.length ? `(${items.length})` : '';
    $('invited-line').hidden = v.invited.length === 0;
    $('invited-line').textContent = v.invited.length
      ? t('mod.invited_waiting', { names: v.invited.join(t('list.comma')) })
      : '';
  }

  /** Floats one second's reaction tallies up the room card. */
  float(ev) {
    const zone = $('reaction-float');
    for (const [emoji, count] of Object.entries(ev.counts)) {
      const item = el('span', { class: 'floating' }, count > 1 ? `${emoji} ${num(count)}` : emoji);
      item.style.insetInlineStart = `${10 + Math.random() * 70}%`;
      zone.append(item);
      setTimeout(() => item.remove(), 2600);
    }
  }
}

function setStatus(text, error = false) {
  const s = $('room-status');
  s.textContent = text;
  s.classList.toggle('error', error);
}
