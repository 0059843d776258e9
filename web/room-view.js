// The room on the page: the stage (role badges, muted icons), the page's own controls (request
// to speak, invitations, self-mute, leave the stage), the hosts' requests list and per-speaker
// moderation, the reactions bar and the tallies floating up from everyone's reactions.

import { REACTIONS } from './room.js';

const $ = (id) => document.getElementById(id);
const ROLE = { host: 'Host', cohost: 'Co-host', speaker: 'Speaker', listener: 'Listener' };
const MUTE = { self_muted: 'muted', moderator: 'muted by a host' };
/** What the status line says after an action went through. */
const DONE = {
  request_to_speak: 'Hand raised: a host will see your request.',
  cancel_request: 'Request cancelled.',
  accept_invitation: 'You are on stage: press Speak.',
  decline_invitation: 'Invitation declined.',
  move_to_audience: 'Moved to the audience.',
  mute: 'Muted.',
  unmute: 'Unmuted.',
  invite: 'Invited.',
  accept_request: 'Request accepted.',
  decline_request: 'Request declined.',
  remove: 'Removed.',
};

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

const clock = (at) => new Date(at * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

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
    const bar = $('reaction-bar');
    bar.replaceChildren(
      ...REACTIONS.map(([name, emoji]) =>
        el('button', { type: 'button', class: 'reaction', title: name.replace('_', ' '), data: { reaction: name } },
          emoji),
      ),
    );
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

  async act(action, fields) {
    this.room.error = null;
    setStatus('');
    const ok = await this.room.act(action, fields);
    if (ok && DONE[action]) setStatus(DONE[action]);
    return ok;
  }

  async leaveStage() {
    const me = this.room.me();
    if (!me) return;
    // The room first (it hangs up our speaking session and says why), then our microphone.
    if (await this.act('move_to_audience', { target: me.identity })) {
      setStatus('You left the stage.');
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
      const reason = window.prompt(`Remove ${target} from this space? They cannot come back.\nReason (optional):`, '');
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
    const notice = room.notice ? room.notice.text : v.ended ? 'The space has ended.' : '';
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
    $('my-mute').textContent = by ? `🔇 ${by === v.host ? 'the host' : by} muted you` : '';
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
    const items = v.speakers.map((s) => {
      const mine = me && s.identity === me.identity;
      const muted = s.mute.state !== 'unmuted';
      const talking = !muted && room.talking.has(s.identity);
      const controls = [];
      if (room.outranks(s)) {
        if (s.mute.state !== 'moderator') controls.push(actionButton('Mute', 'mute', s.identity));
        if (room.mayLift(s)) controls.push(actionButton('Unmute', 'unmute', s.identity));
        controls.push(actionButton('Move to audience', 'move_to_audience', s.identity));
        controls.push(actionButton('Remove', 'remove', s.identity, 'danger'));
      }
      return el(
        'li',
        {
          class: `member${muted ? ' muted' : ''}${talking ? ' talking' : ''}`,
          data: { identity: s.identity, role: s.role, mute: s.mute.state, talking: String(talking) },
        },
        el('span', { class: 'avatar', 'aria-hidden': 'true' }, s.identity.slice(0, 1).toUpperCase()),
        el('span', { class: 'who' }, s.identity, mine ? el('span', { class: 'muted small' }, ' (you)') : null),
        el('span', { class: `badge role ${s.role}` }, ROLE[s.role] || s.role),
        muted ? el('span', { class: 'mic-off', title: MUTE[s.mute.state], 'aria-label': MUTE[s.mute.state] }, '🔇') : null,
        controls.length ? el('span', { class: 'mod' }, ...controls) : null,
      );
    });
    replaceIfChanged($('stage'), items);
    // The audience in the room (people who joined it, not every anonymous listener), from the
    // last read of the room.
    const audience = v.audience || [];
    const more = Math.max(0, (v.audienceCount || 0) - audience.length);
    $('audience-line').hidden = audience.length === 0;
    $('audience-line').textContent = audience.length
      ? `In the audience: ${audience.join(', ')}${more ? ` and ${more} more` : ''}`
      : '';
    $('stage-empty').hidden = items.length > 0 || !room.loaded;
    const n = v.speakers.length;
    $('stage-count').textContent = v.seats ? `${n} of ${v.seats} seats` : `${n} on stage`;
    $('hands-line').hidden = !room.handsCount;
    $('hands-line').textContent = room.handsCount ? `✋ ${room.handsCount} asking to speak` : '';
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
        el('span', { class: 'muted small' }, ` raised at ${clock(h.at)} `),
        actionButton('Accept', 'accept_request', h.who, 'primary'),
        actionButton('Decline', 'decline_request', h.who),
      ),
    );
    replaceIfChanged($('requests'), items);
    $('no-requests').hidden = items.length > 0;
    $('hand-count').textContent = items.length ? `(${items.length})` : '';
    $('invited-line').hidden = v.invited.length === 0;
    $('invited-line').textContent = v.invited.length ? `Invited, not answered yet: ${v.invited.join(', ')}` : '';
  }

  /** Floats one second's reaction tallies up the room card. */
  float(ev) {
    const zone = $('reaction-float');
    for (const [emoji, count] of Object.entries(ev.counts)) {
      const item = el('span', { class: 'floating' }, count > 1 ? `${emoji} ${count}` : emoji);
      item.style.left = `${10 + Math.random() * 70}%`;
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
