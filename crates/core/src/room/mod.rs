//! One space's people and their powers: a sans-IO state machine.
//!
//! A [`Room`] holds who is in a space, their roles, the stage, raised hands, invitations, mutes,
//! blocks, reactions and a moderation log. It changes only through [`Room::apply`], which takes
//! the actor, an [`Action`] and the current time, and returns the [`RoomEvent`]s to broadcast or
//! a [`RoomError`] (and then changes nothing).
//!
//! # Who may do what
//!
//! Ranks: host > co-host > speaker, listener. "Act on" means mute, lift a mute, move to the
//! audience, remove, block: the host acts on everyone else, a co-host on speakers and listeners
//! only (never on the host or another co-host). Every check is against the current state.
//!
//! | action                              | host | co-host | speaker | listener |
//! |-------------------------------------|------|---------|---------|----------|
//! | join, leave, react                  | yes  | yes     | yes     | yes      |
//! | raise / lower own hand              | —    | —       | —       | yes      |
//! | take a free seat                    | yes  | yes     | yes     | 403      |
//! | accept / decline own invitation     | —    | —       | —       | yes      |
//! | self-mute, self-unmute, leave stage | yes  | yes     | yes     | —        |
//! | invite, accept / decline requests   | yes  | yes     | 403     | 403      |
//! | mute, lift a mute, move to audience | yes  | below   | 403     | 403      |
//! | remove, block                       | yes  | below   | 403     | 403      |
//! | unblock                             | yes  | yes     | 403     | 403      |
//! | promote / demote co-host, transfer  | yes  | step down only | 403 | 403  |
//! | end the space                       | yes  | 403     | 403     | 403      |
//!
//! "—" means the action does not apply to that role's state (409), e.g. a speaker has no hand
//! to raise because they are already on stage.
//!
//! # Mutes
//!
//! A self-mute is undone only by the member: nobody opens someone else's microphone (a
//! moderator's unmute of a self-muted member is 403 `not_your_microphone`). A moderator's mute
//! is a lock: the member cannot unmute (403 `muted_by_moderator`) until the host or a co-host
//! who may act on them lifts it; a co-host cannot lift the host's lock (403 `muted_by_host`).
//! Lifting leaves the member self-muted, so they choose when to speak again. Mutes persist
//! across leaving the stage, leaving the space and rejoining.
//!
//! # Joining
//!
//! The token's role is a ceiling for a first join: a listener token joins as a listener; a host
//! token for someone other than the space's host joins as a co-host while fewer than
//! [`RoomConfig::max_cohosts`] exist, else as a speaker (a co-host token likewise). A returning
//! member gets the role the room last gave them, whatever their token: promotions by the host
//! persist, and so do demotions and moves to the audience. Hosts, co-hosts and speakers take a
//! free seat on joining. Removed identities are refused for the rest of the room's life (403
//! `removed`), blocked ones until unblocked (403 `blocked`). The host stays host while absent.
//!
//! # Bounds
//!
//! Every table keyed by identity is bounded, so a crowd of identities cannot grow the room
//! without limit. A listener who came in as a listener and leaves with nothing the room must
//! keep (no mute, hand, invitation, ban) is forgotten, and coming back joins anew; everyone
//! else (roles the room granted or took, mutes, the host) is remembered. At
//! [`RoomConfig::max_members`] a first join forgets any such absent listeners left over, and if
//! none is left it is refused (503 `room_full`). Raised hands and pending invitations are
//! capped at [`RoomConfig::max_hands`] each (409 `hands_full`, `invitations_full`), removals
//! and blocks at [`Room::MAX_REMOVED`] and [`Room::MAX_BLOCKED`], and a [`RoomView`] names at
//! most a sample of the audience, hands and invitations.

mod action;
#[cfg(test)]
mod bounds;
mod error;
mod event;
mod member;
#[cfg(test)]
mod props;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

pub use action::{Action, Reaction, UnknownReaction};
pub use error::{RoomError, RoomErrorKind};
pub use event::{HandLowered, ModAction, ModerationEntry, RoomEvent};
pub use member::{Hand, Invitation, Member, Mute, Presence};
pub use snapshot::RoomSnapshot;

use crate::{Identity, Role, Stage, UnixTime};

/// A room's limits. Every table the room keys by identity has one, so that no crowd of
/// identities can make it grow without bound. Missing fields deserialise to the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// Seats on stage, host and co-hosts included.
    pub seats: usize,
    /// Most co-hosts at once.
    pub max_cohosts: usize,
    /// Most reactions one identity may send in one second.
    pub reactions_per_second: u32,
    /// Most members the room remembers at once, present or not, the host included. Plain
    /// listeners are forgotten when they leave, so this bounds the crowd in the space plus the
    /// people whose roles or mutes the room must keep; joins beyond it are refused (503).
    pub max_members: usize,
    /// Most raised hands at once, and separately most pending invitations.
    pub max_hands: usize,
}

impl Default for RoomConfig {
    fn default() -> RoomConfig {
        RoomConfig {
            seats: Stage::DEFAULT_SEATS,
            max_cohosts: 2,
            reactions_per_second: 5,
            max_members: 20_000,
            max_hands: 1_000,
        }
    }
}

/// A raised hand in the queue, for the API view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandView {
    /// Whose.
    pub who: Identity,
    /// Raised when.
    pub at: UnixTime,
}

/// A serialisable snapshot of a room for the API. Its size does not grow with the crowd: the
/// audience, hands and invitations are counted, and only a sample of each is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomView {
    /// The host.
    pub host: Identity,
    /// Seats on stage.
    pub seats: usize,
    /// The space has ended.
    pub ended: bool,
    /// Who is on stage: host, co-hosts, then speakers in the order they took their seats.
    pub speakers: Vec<Member>,
    /// The co-hosts, present or not.
    pub cohosts: Vec<Identity>,
    /// The first [`Room::HAND_SAMPLE`] raised hands, first come first.
    pub hands: Vec<HandView>,
    /// All raised hands.
    pub hands_total: usize,
    /// Some listeners with a pending invitation (at most [`Room::INVITED_SAMPLE`], by identity).
    pub invited: Vec<Identity>,
    /// All pending invitations.
    pub invited_total: usize,
    /// People in the space now.
    pub present: usize,
    /// People in the space now and not on stage.
    pub listeners: usize,
    /// Some of them (at most [`Room::AUDIENCE_SAMPLE`], by identity), for the audience list.
    pub audience: Vec<Identity>,
}

/// The acting member, as checked by `apply`.
#[derive(Clone, Copy)]
struct By<'a> {
    id: &'a Identity,
    role: Role,
}

/// One space's people and their powers. See the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct Room {
    config: RoomConfig,
    host: Identity,
    created_at: UnixTime,
    ended_at: Option<UnixTime>,
    members: BTreeMap<Identity, Member>,
    stage: Stage,
    hands: BTreeMap<u64, Identity>,
    invited: BTreeSet<Identity>,
    cohosts: BTreeSet<Identity>,
    removed: BTreeSet<Identity>,
    blocked: BTreeSet<Identity>,
    present: usize,
    log: VecDeque<ModerationEntry>,
    log_dropped: u64,
    reactions: BTreeMap<UnixTime, BTreeMap<Reaction, u32>>,
    seq: u64,
    /// From when a sweep might find absent members the room could forget (see
    /// [`Room::sweep`]); `None` when it would find none. Keeps refused joins at a full door
    /// from scanning every member each time.
    sweep_at: Option<UnixTime>,
}

impl Room {
    /// The longest moderation reason kept, in characters; longer ones are cut.
    pub const MAX_REASON_CHARS: usize = 500;
    /// The most moderation log entries kept; the oldest are dropped (and counted) beyond.
    pub const MAX_LOG: usize = 10_000;
    /// The most blocked identities.
    pub const MAX_BLOCKED: usize = 10_000;
    /// The most removed identities (they are refused for the room's life, so the list only
    /// grows).
    pub const MAX_REMOVED: usize = 10_000;
    /// The most audience members a [`RoomView`] names.
    pub const AUDIENCE_SAMPLE: usize = 50;
    /// The most raised hands a [`RoomView`] lists.
    pub const HAND_SAMPLE: usize = 50;
    /// The most invited listeners a [`RoomView`] names.
    pub const INVITED_SAMPLE: usize = 50;
    /// The most seconds of reaction tallies kept before the oldest are dropped.
    pub const MAX_PENDING_SECONDS: usize = 120;

    /// A room hosted by `host` with `seats` seats and default limits. The host is a member
    /// from the start, absent until they join.
    pub fn new(host: Identity, seats: usize, now: UnixTime) -> Room {
        Room::with_config(host, RoomConfig { seats, ..RoomConfig::default() }, now)
    }

    /// A room with explicit limits.
    pub fn with_config(host: Identity, config: RoomConfig, now: UnixTime) -> Room {
        let mut members = BTreeMap::new();
        members.insert(host.clone(), Member::new(host.clone(), Role::Host, Presence::Left, now));
        Room {
            config,
            host,
            created_at: now,
            ended_at: None,
            members,
            stage: Stage::new(config.seats),
            hands: BTreeMap::new(),
            invited: BTreeSet::new(),
            cohosts: BTreeSet::new(),
            removed: BTreeSet::new(),
            blocked: BTreeSet::new(),
            present: 0,
            log: VecDeque::new(),
            log_dropped: 0,
            reactions: BTreeMap::new(),
            seq: 0,
            sweep_at: None,
        }
    }

    /// Applies `action` by `actor` at `now`: the events to broadcast, or why it was refused
    /// (and then nothing changed).
    pub fn apply(
        &mut self,
        actor: &Identity,
        action: Action,
        now: UnixTime,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        if self.ended_at.is_some() {
            return Err(RoomError::Ended);
        }
        if let Action::Join { token_role } = action {
            return self.join(actor, token_role, now);
        }
        let by = By { id: actor, role: self.actor_role(actor)? };
        let mut ev = Vec::new();
        self.act(by, action, now, &mut ev)?;
        Ok(ev)
    }

    fn act(
        &mut self,
        by: By<'_>,
        action: Action,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        let name = action.name();
        match action {
            Action::Join { .. } => Err(RoomError::AlreadyPresent(by.id.clone())),
            Action::Leave => {
                self.depart(by.id, ev);
                self.forget_if_idle(by.id, now);
                Ok(())
            }
            Action::RequestToSpeak => self.raise_hand(by, now, ev),
            Action::CancelRequest => self.cancel_hand(by, ev),
            Action::TakeStage => self.take_stage(by, name, ev),
            Action::InviteToSpeak { target } => self.invite(by, &target, name, now, ev),
            Action::AcceptInvitation => self.answer_invitation(by, true, ev),
            Action::DeclineInvitation => self.answer_invitation(by, false, ev),
            Action::AcceptRequest { target } => self.answer_hand(by, &target, true, name, ev),
            Action::DeclineRequest { target } => self.answer_hand(by, &target, false, name, ev),
            Action::Mute { target, reason } => self.mute(by, &target, reason, name, now, ev),
            Action::Unmute { target } => self.unmute(by, &target, name, now, ev),
            Action::MoveToAudience { target, reason } => {
                self.move_to_audience(by, &target, reason, name, now, ev)
            }
            Action::PromoteCohost { target } => self.promote(by, &target, name, now, ev),
            Action::DemoteCohost { target } => self.demote(by, &target, name, now, ev),
            Action::TransferHost { target } => self.transfer(by, &target, name, now, ev),
            Action::Remove { target, reason } => self.remove(by, &target, reason, name, now, ev),
            Action::Block { target, reason } => self.block(by, &target, reason, name, now, ev),
            Action::Unblock { target } => self.unblock(by, &target, name, now, ev),
            Action::React { reaction } => self.react(by, reaction, now),
            Action::End => self.end(by, name, now, ev),
        }
    }

    // ----- read accessors -----

    /// The limits this room was built with.
    pub fn config(&self) -> RoomConfig {
        self.config
    }

    /// The host (exactly one while the room lives).
    pub fn host(&self) -> &Identity {
        &self.host
    }

    /// When the room was created.
    pub fn created_at(&self) -> UnixTime {
        self.created_at
    }

    /// When the room ended, if it has.
    pub fn ended_at(&self) -> Option<UnixTime> {
        self.ended_at
    }

    /// The room has ended; every action is refused.
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// A member by identity (present or not).
    pub fn member(&self, who: &Identity) -> Option<&Member> {
        self.members.get(who)
    }

    /// Everyone the room knows, present or not, by identity.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Who is on stage: host, co-hosts, then speakers in the order they took their seats.
    pub fn speakers(&self) -> Vec<&Member> {
        let mut on: Vec<&Member> =
            self.stage.speakers().filter_map(|(who, _)| self.members.get(who)).collect();
        on.sort_by_key(|m| (m.role, m.seated_seq));
        on
    }

    /// Raised hands, first come first.
    pub fn hands(&self) -> impl Iterator<Item = &Member> {
        self.hands.values().filter_map(|who| self.members.get(who))
    }

    /// The co-hosts, present or not.
    pub fn cohosts(&self) -> impl Iterator<Item = &Identity> {
        self.cohosts.iter()
    }

    /// How many hands are up, without walking the queue.
    pub fn hands_total(&self) -> usize {
        self.hands.len()
    }

    /// Listeners with a pending invitation to speak.
    pub fn invited(&self) -> impl Iterator<Item = &Identity> {
        self.invited.iter()
    }

    /// How many invitations are pending.
    pub fn invited_total(&self) -> usize {
        self.invited.len()
    }

    /// The role the room gives `who` now, for decisions made outside [`Room::apply`] (such as
    /// whether to let them manage the space over the API): the room's word beats the token's,
    /// so a demoted co-host is a speaker whatever their token says and a new host is the host.
    /// A member, present or not, has their current role; anyone else what a first join with
    /// `token_role` would grant. Removed and blocked identities are refused. Changes nothing,
    /// and does not look at whether the room has ended.
    pub fn authority(&self, who: &Identity, token_role: Role) -> Result<Role, RoomError> {
        self.not_banned(who)?;
        if who == &self.host {
            return Ok(Role::Host);
        }
        Ok(self.members.get(who).map_or_else(|| self.first_join_role(token_role), |m| m.role))
    }

    /// Whether `who` is refused on join until unblocked.
    pub fn is_blocked(&self, who: &Identity) -> bool {
        self.blocked.contains(who)
    }

    /// Blocked identities.
    pub fn blocked(&self) -> impl Iterator<Item = &Identity> {
        self.blocked.iter()
    }

    /// Removed identities.
    pub fn removed(&self) -> impl Iterator<Item = &Identity> {
        self.removed.iter()
    }

    /// Takes another room's removals and blocks as this one's, within the same bounds (a
    /// relayed copy of a room mixed elsewhere: its authority is that room's). Present
    /// identities are not moved; the copy's only use is to refuse joins.
    pub fn replace_bars(&mut self, removed: Vec<Identity>, blocked: Vec<Identity>) {
        self.removed = removed.into_iter().take(Self::MAX_REMOVED).collect();
        self.blocked = blocked.into_iter().take(Self::MAX_BLOCKED).collect();
    }

    /// Whether `who` was removed (refused for the rest of the room's life).
    pub fn is_removed(&self, who: &Identity) -> bool {
        self.removed.contains(who)
    }

    /// Re-applies a removal remembered from before a restart (no event, no log entry), within
    /// [`Room::MAX_REMOVED`]. The identity must not be present; a present one is left alone.
    pub fn restore_removed(&mut self, who: Identity) {
        let room = self.removed.len() < Self::MAX_REMOVED;
        if room && !self.member(&who).is_some_and(Member::is_present) && who != self.host {
            self.removed.insert(who);
        }
    }

    /// Re-applies a block remembered from before a restart (no event, no log entry), within
    /// [`Room::MAX_BLOCKED`]. A present identity is left alone.
    pub fn restore_blocked(&mut self, who: Identity) {
        let room = self.blocked.len() < Self::MAX_BLOCKED;
        if room && !self.member(&who).is_some_and(Member::is_present) && who != self.host {
            self.blocked.insert(who);
        }
    }

    /// How many moderation entries were ever logged (kept and dropped).
    pub fn log_total(&self) -> u64 {
        self.log_dropped + self.log.len() as u64
    }

    /// How many people are in the space now.
    pub fn present_count(&self) -> usize {
        self.present
    }

    /// The moderation log, oldest first (the newest [`Room::MAX_LOG`] entries).
    pub fn log(&self) -> impl ExactSizeIterator<Item = &ModerationEntry> {
        self.log.iter()
    }

    /// How many old log entries were dropped to keep the log bounded.
    pub fn log_dropped(&self) -> u64 {
        self.log_dropped
    }

    /// Reactions counted per second and not yet taken.
    pub fn pending_reactions(&self) -> impl Iterator<Item = (UnixTime, &BTreeMap<Reaction, u32>)> {
        self.reactions.iter().map(|(second, counts)| (*second, counts))
    }

    /// Takes (and resets) the tallies of every second before `before`, as
    /// [`RoomEvent::Reactions`], oldest first. Call it each second with the current time.
    pub fn take_reactions(&mut self, before: UnixTime) -> Vec<RoomEvent> {
        let later = self.reactions.split_off(&before);
        let done = std::mem::replace(&mut self.reactions, later);
        done.into_iter().map(|(second, counts)| RoomEvent::Reactions { second, counts }).collect()
    }

    /// A serialisable snapshot for the API.
    pub fn view(&self) -> RoomView {
        let speakers: Vec<Member> = self.speakers().into_iter().cloned().collect();
        RoomView {
            host: self.host.clone(),
            seats: self.config.seats,
            ended: self.is_ended(),
            listeners: self.present.saturating_sub(speakers.len()),
            speakers,
            cohosts: self.cohosts.iter().cloned().collect(),
            hands: self
                .hands()
                .take(Self::HAND_SAMPLE)
                .map(|m| HandView { who: m.identity.clone(), at: hand_at(m) })
                .collect(),
            hands_total: self.hands.len(),
            invited: self.invited.iter().take(Self::INVITED_SAMPLE).cloned().collect(),
            invited_total: self.invited.len(),
            present: self.present,
            audience: self
                .members
                .values()
                .filter(|m| m.is_present() && !m.on_stage)
                .take(Self::AUDIENCE_SAMPLE)
                .map(|m| m.identity.clone())
                .collect(),
        }
    }

    // ----- checks -----

    /// Refuses a removed identity, then a blocked one: the one door check that joining, acting
    /// and [`Room::authority`] share, so that a ban holds the same way everywhere.
    fn not_banned(&self, who: &Identity) -> Result<(), RoomError> {
        if self.removed.contains(who) {
            return Err(RoomError::Removed(who.clone()));
        }
        if self.blocked.contains(who) {
            return Err(RoomError::Blocked(who.clone()));
        }
        Ok(())
    }

    fn actor_role(&self, who: &Identity) -> Result<Role, RoomError> {
        self.not_banned(who)?;
        match self.members.get(who) {
            Some(m) if m.is_present() => Ok(m.role),
            _ => Err(RoomError::NotPresent(who.clone())),
        }
    }

    fn get(&self, who: &Identity) -> Result<&Member, RoomError> {
        self.members.get(who).ok_or_else(|| RoomError::UnknownMember(who.clone()))
    }

    fn get_present(&self, who: &Identity) -> Result<&Member, RoomError> {
        let m = self.get(who)?;
        if m.is_present() { Ok(m) } else { Err(RoomError::NotPresent(who.clone())) }
    }

    fn stage_full(&self) -> Result<(), RoomError> {
        if self.stage.len() >= self.config.seats {
            return Err(RoomError::StageFull(self.config.seats));
        }
        Ok(())
    }

    // ----- actions -----

    fn join(
        &mut self,
        who: &Identity,
        token_role: Role,
        now: UnixTime,
    ) -> Result<Vec<RoomEvent>, RoomError> {
        self.not_banned(who)?;
        let role = match self.members.get_mut(who) {
            Some(m) if m.is_present() => return Err(RoomError::AlreadyPresent(who.clone())),
            Some(m) => {
                m.presence = Presence::Joined;
                m.role
            }
            None => {
                self.make_space(now)?;
                let role = self.first_join_role(token_role);
                self.members
                    .insert(who.clone(), Member::new(who.clone(), role, Presence::Joined, now));
                if role == Role::Cohost {
                    self.cohosts.insert(who.clone());
                }
                role
            }
        };
        self.present += 1;
        let mut ev = vec![RoomEvent::Joined { who: who.clone(), role }];
        if role.can_speak() && self.stage_full().is_ok() {
            self.seat(who, &mut ev);
        }
        Ok(ev)
    }

    /// Makes space for one more member, forgetting absent ones the room need not remember if
    /// it is full; refuses if none can be forgotten.
    fn make_space(&mut self, now: UnixTime) -> Result<(), RoomError> {
        let max = self.config.max_members;
        if self.members.len() >= max && self.sweep_at.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        if self.members.len() >= max {
            return Err(RoomError::Full(max));
        }
        Ok(())
    }

    /// What a first join with this token role grants: never more than the token, and a host
    /// token (for someone who is not the host) counts as a co-host one.
    fn first_join_role(&self, token_role: Role) -> Role {
        match token_role {
            Role::Host | Role::Cohost if self.cohosts.len() < self.config.max_cohosts => {
                Role::Cohost
            }
            Role::Host | Role::Cohost => Role::Speaker,
            other => other,
        }
    }

    fn raise_hand(
        &mut self,
        by: By<'_>,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        if by.role.can_speak() {
            return Err(RoomError::CanTakeStage(by.id.clone()));
        }
        let m = self.get(by.id)?;
        if m.hand.is_some() {
            return Err(RoomError::HandAlreadyRaised(by.id.clone()));
        }
        if m.invitation.is_some() {
            return Err(RoomError::AlreadyInvited(by.id.clone()));
        }
        if self.hands.len() >= self.config.max_hands {
            return Err(RoomError::HandsFull(self.config.max_hands));
        }
        let seq = self.next_seq();
        self.hands.insert(seq, by.id.clone());
        if let Some(m) = self.members.get_mut(by.id) {
            m.hand = Some(Hand { at: now, seq });
        }
        ev.push(RoomEvent::HandRaised { who: by.id.clone(), at: now });
        Ok(())
    }

    fn cancel_hand(&mut self, by: By<'_>, ev: &mut Vec<RoomEvent>) -> Result<(), RoomError> {
        if self.get(by.id)?.hand.is_none() {
            return Err(RoomError::NoHandRaised(by.id.clone()));
        }
        self.lower_hand(by.id, HandLowered::Cancelled, ev);
        Ok(())
    }

    fn take_stage(
        &mut self,
        by: By<'_>,
        name: &'static str,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        if !by.role.can_speak() {
            return Err(RoomError::NotPermitted { role: by.role, action: name });
        }
        if self.get(by.id)?.on_stage {
            return Err(RoomError::AlreadyOnStage(by.id.clone()));
        }
        self.stage_full()?;
        self.seat(by.id, ev);
        Ok(())
    }

    fn invite(
        &mut self,
        by: By<'_>,
        target: &Identity,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        moderator(by, name)?;
        not_self(by, target, "invite")?;
        let t = self.get_present(target)?;
        if t.on_stage {
            return Err(RoomError::AlreadyOnStage(target.clone()));
        }
        if t.role.can_speak() {
            return Err(RoomError::CanTakeStage(target.clone()));
        }
        if t.invitation.is_some() {
            return Err(RoomError::AlreadyInvited(target.clone()));
        }
        if t.hand.is_some() {
            return Err(RoomError::HandRaised(target.clone()));
        }
        self.stage_full()?;
        if self.invited.len() >= self.config.max_hands {
            return Err(RoomError::InvitationsFull(self.config.max_hands));
        }
        if let Some(t) = self.members.get_mut(target) {
            t.invitation = Some(Invitation { by: by.id.clone(), at: now });
        }
        self.invited.insert(target.clone());
        ev.push(RoomEvent::Invited { who: target.clone(), by: by.id.clone() });
        Ok(())
    }

    fn answer_invitation(
        &mut self,
        by: By<'_>,
        accept: bool,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        if self.get(by.id)?.invitation.is_none() {
            return Err(RoomError::NotInvited(by.id.clone()));
        }
        if accept {
            self.stage_full()?;
        }
        self.close_invitation(by.id, accept, ev);
        if accept {
            self.promote_to_stage(by.id, ev);
        }
        Ok(())
    }

    fn answer_hand(
        &mut self,
        by: By<'_>,
        target: &Identity,
        accept: bool,
        name: &'static str,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        moderator(by, name)?;
        not_self(by, target, "answer the request of")?;
        if self.get_present(target)?.hand.is_none() {
            return Err(RoomError::NoHandRaised(target.clone()));
        }
        if !accept {
            self.lower_hand(target, HandLowered::Declined, ev);
            return Ok(());
        }
        self.stage_full()?;
        self.lower_hand(target, HandLowered::Accepted, ev);
        self.promote_to_stage(target, ev);
        Ok(())
    }

    fn mute(
        &mut self,
        by: By<'_>,
        target: &Identity,
        reason: Option<String>,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        if by.id == target {
            let m = self.get(target)?;
            if !m.on_stage {
                return Err(RoomError::NotOnStage(target.clone()));
            }
            if m.mute.is_muted() {
                return Err(RoomError::AlreadyMuted(target.clone()));
            }
            self.set_mute(target, Mute::SelfMuted);
            ev.push(RoomEvent::Muted { who: target.clone(), by: None });
            return Ok(());
        }
        moderator(by, name)?;
        let t = self.get(target)?;
        outranks(by, t)?;
        if !t.on_stage {
            return Err(RoomError::NotOnStage(target.clone()));
        }
        if t.mute.is_locked() {
            return Err(RoomError::AlreadyMuted(target.clone()));
        }
        self.set_mute(target, Mute::Moderator { by: by.id.clone(), by_role: by.role, at: now });
        ev.push(RoomEvent::Muted { who: target.clone(), by: Some(by.id.clone()) });
        self.record(now, by, ModAction::Mute, Some(target), reason);
        Ok(())
    }

    fn unmute(
        &mut self,
        by: By<'_>,
        target: &Identity,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        if by.id == target {
            match self.get(target)?.mute {
                Mute::Unmuted => return Err(RoomError::NotMuted(target.clone())),
                Mute::Moderator { .. } => return Err(RoomError::MutedByModerator),
                Mute::SelfMuted => {}
            }
            self.set_mute(target, Mute::Unmuted);
            ev.push(RoomEvent::Unmuted { who: target.clone() });
            return Ok(());
        }
        moderator(by, name)?;
        let t = self.get(target)?;
        outranks(by, t)?;
        match &t.mute {
            Mute::Unmuted => return Err(RoomError::NotMuted(target.clone())),
            Mute::SelfMuted => return Err(RoomError::NotYourMicrophone(target.clone())),
            Mute::Moderator { by_role: Role::Host, .. } if by.role != Role::Host => {
                return Err(RoomError::MutedByHost(target.clone()));
            }
            Mute::Moderator { .. } => {}
        }
        self.set_mute(target, Mute::SelfMuted);
        ev.push(RoomEvent::MuteLifted { who: target.clone(), by: by.id.clone() });
        self.record(now, by, ModAction::LiftMute, Some(target), None);
        Ok(())
    }

    fn move_to_audience(
        &mut self,
        by: By<'_>,
        target: &Identity,
        reason: Option<String>,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        let own = by.id == target;
        if !own {
            moderator(by, name)?;
        }
        let t = self.get(target)?;
        if !own {
            outranks(by, t)?;
        }
        if !t.on_stage {
            return Err(RoomError::NotOnStage(target.clone()));
        }
        let role = t.role;
        self.unseat(target, ev);
        if role == Role::Speaker {
            self.set_role(target, Role::Listener, ev);
        }
        if !own {
            self.record(now, by, ModAction::MoveToAudience, Some(target), reason);
        }
        Ok(())
    }

    fn promote(
        &mut self,
        by: By<'_>,
        target: &Identity,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        host_only(by, name)?;
        not_self(by, target, "promote")?;
        if self.get_present(target)?.role == Role::Cohost {
            return Err(RoomError::AlreadyCohost(target.clone()));
        }
        if self.cohosts.len() >= self.config.max_cohosts {
            return Err(RoomError::CohostsFull(self.config.max_cohosts));
        }
        self.lower_hand(target, HandLowered::Dropped, ev);
        self.close_invitation(target, false, ev);
        self.set_role(target, Role::Cohost, ev);
        self.record(now, by, ModAction::Promote, Some(target), None);
        Ok(())
    }

    fn demote(
        &mut self,
        by: By<'_>,
        target: &Identity,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        if by.id == target && by.role == Role::Host {
            return Err(RoomError::SelfTarget("demote"));
        }
        if by.id != target {
            host_only(by, name)?;
        }
        let t = self.get(target)?;
        if t.role != Role::Cohost {
            return Err(RoomError::NotCohost(target.clone()));
        }
        let to = if t.on_stage { Role::Speaker } else { Role::Listener };
        self.set_role(target, to, ev);
        self.record(now, by, ModAction::Demote, Some(target), None);
        Ok(())
    }

    fn transfer(
        &mut self,
        by: By<'_>,
        target: &Identity,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        host_only(by, name)?;
        not_self(by, target, "transfer the host role to")?;
        if self.get_present(target)?.role != Role::Cohost {
            return Err(RoomError::NotCohost(target.clone()));
        }
        self.set_role(target, Role::Host, ev);
        self.set_role(by.id, Role::Cohost, ev);
        self.host = target.clone();
        self.record(now, by, ModAction::TransferHost, Some(target), None);
        Ok(())
    }

    fn remove(
        &mut self,
        by: By<'_>,
        target: &Identity,
        reason: Option<String>,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        moderator(by, name)?;
        not_self(by, target, "remove")?;
        outranks(by, self.get(target)?)?;
        if self.removed.contains(target) {
            return Err(RoomError::AlreadyRemoved(target.clone()));
        }
        if self.removed.len() >= Self::MAX_REMOVED {
            return Err(RoomError::RemovedListFull(Self::MAX_REMOVED));
        }
        self.depart(target, ev);
        self.set_role(target, Role::Listener, ev);
        self.removed.insert(target.clone());
        ev.push(RoomEvent::Removed { who: target.clone(), by: by.id.clone() });
        self.record(now, by, ModAction::Remove, Some(target), reason);
        Ok(())
    }

    fn block(
        &mut self,
        by: By<'_>,
        target: &Identity,
        reason: Option<String>,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        moderator(by, name)?;
        not_self(by, target, "block")?;
        if let Some(t) = self.members.get(target) {
            outranks(by, t)?;
        }
        if self.blocked.contains(target) {
            return Err(RoomError::AlreadyBlocked(target.clone()));
        }
        if self.blocked.len() >= Self::MAX_BLOCKED {
            return Err(RoomError::BlockListFull(Self::MAX_BLOCKED));
        }
        self.depart(target, ev);
        self.set_role(target, Role::Listener, ev);
        self.blocked.insert(target.clone());
        ev.push(RoomEvent::Blocked { who: target.clone(), by: by.id.clone() });
        self.record(now, by, ModAction::Block, Some(target), reason);
        Ok(())
    }

    fn unblock(
        &mut self,
        by: By<'_>,
        target: &Identity,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        moderator(by, name)?;
        not_self(by, target, "unblock")?;
        if !self.blocked.remove(target) {
            return Err(RoomError::NotBlocked(target.clone()));
        }
        if self.members.contains_key(target) {
            self.hint_sweep(now);
        }
        ev.push(RoomEvent::Unblocked { who: target.clone(), by: by.id.clone() });
        self.record(now, by, ModAction::Unblock, Some(target), None);
        Ok(())
    }

    fn react(&mut self, by: By<'_>, reaction: Reaction, now: UnixTime) -> Result<(), RoomError> {
        let limit = self.config.reactions_per_second;
        let Some(m) = self.members.get_mut(by.id) else {
            return Err(RoomError::UnknownMember(by.id.clone()));
        };
        let sent = if m.reacted.0 == now { m.reacted.1 } else { 0 };
        if sent >= limit {
            return Err(RoomError::ReactionRateLimited(limit));
        }
        m.reacted = (now, sent + 1);
        *self.reactions.entry(now).or_default().entry(reaction).or_default() += 1;
        while self.reactions.len() > Self::MAX_PENDING_SECONDS {
            self.reactions.pop_first();
        }
        Ok(())
    }

    fn end(
        &mut self,
        by: By<'_>,
        name: &'static str,
        now: UnixTime,
        ev: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomError> {
        host_only(by, name)?;
        for m in self.members.values_mut() {
            m.presence = Presence::Left;
            m.on_stage = false;
            m.hand = None;
            m.invitation = None;
        }
        self.stage = Stage::new(self.config.seats);
        self.hands.clear();
        self.invited.clear();
        self.present = 0;
        // Everyone is absent now, and listeners among them need not be remembered.
        self.hint_sweep(now);
        self.ended_at = Some(now);
        ev.push(RoomEvent::Ended { by: by.id.clone() });
        self.record(now, by, ModAction::End, None, None);
        Ok(())
    }

    // ----- mutations (validated by the caller; each is a no-op where it does not apply) -----

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn seat(&mut self, who: &Identity, ev: &mut Vec<RoomEvent>) {
        let seq = self.next_seq();
        let Some(m) = self.members.get_mut(who) else { return };
        let seated = self.stage.take_seat(who.clone(), m.role);
        debug_assert!(seated.is_ok(), "seat checked by the caller: {seated:?}");
        if seated.is_ok() {
            m.on_stage = true;
            m.seated_seq = seq;
            ev.push(RoomEvent::SpeakerAdded { who: who.clone(), role: m.role });
        }
    }

    fn unseat(&mut self, who: &Identity, ev: &mut Vec<RoomEvent>) {
        let Some(m) = self.members.get_mut(who) else { return };
        if m.on_stage {
            m.on_stage = false;
            self.stage.leave(who);
            ev.push(RoomEvent::SpeakerRemoved { who: who.clone() });
        }
    }

    /// A listener whose hand or invitation was granted becomes a speaker and takes a seat.
    fn promote_to_stage(&mut self, who: &Identity, ev: &mut Vec<RoomEvent>) {
        if self.members.get(who).is_some_and(|m| m.role == Role::Listener) {
            self.set_role(who, Role::Speaker, ev);
        }
        self.seat(who, ev);
    }

    fn lower_hand(&mut self, who: &Identity, reason: HandLowered, ev: &mut Vec<RoomEvent>) {
        let Some(m) = self.members.get_mut(who) else { return };
        if let Some(hand) = m.hand.take() {
            self.hands.remove(&hand.seq);
            ev.push(RoomEvent::HandLowered { who: who.clone(), reason });
        }
    }

    fn close_invitation(&mut self, who: &Identity, accepted: bool, ev: &mut Vec<RoomEvent>) {
        let Some(m) = self.members.get_mut(who) else { return };
        if m.invitation.take().is_some() {
            self.invited.remove(who);
            ev.push(RoomEvent::InvitationClosed { who: who.clone(), accepted });
        }
    }

    fn set_role(&mut self, who: &Identity, to: Role, ev: &mut Vec<RoomEvent>) {
        let Some(m) = self.members.get_mut(who) else { return };
        let from = m.role;
        if from == to {
            return;
        }
        m.role = to;
        let absent = !m.is_present();
        if m.on_stage {
            let seated = self.stage.take_seat(who.clone(), to);
            debug_assert!(seated.is_ok(), "role change on stage keeps a speaking role");
        }
        if to == Role::Cohost {
            self.cohosts.insert(who.clone());
        } else {
            self.cohosts.remove(who);
        }
        ev.push(RoomEvent::RoleChanged { who: who.clone(), from, to });
        if absent {
            self.hint_sweep(UnixTime(0));
        }
    }

    fn set_mute(&mut self, who: &Identity, mute: Mute) {
        let Some(m) = self.members.get_mut(who) else { return };
        m.mute = mute;
        if !m.is_present() {
            self.hint_sweep(UnixTime(0));
        }
    }

    /// Forgets `who` if they are absent and the room need not remember them (see [`idle`]),
    /// so that people passing through leave nothing behind. Someone who reacted this second is
    /// kept until it is over, so that leaving and rejoining does not reset their reaction
    /// limit; a later sweep forgets them.
    fn forget_if_idle(&mut self, who: &Identity, now: UnixTime) {
        let Some(m) = self.members.get(who) else { return };
        if !idle(m, &self.host, &self.removed, &self.blocked) {
            return;
        }
        if reacted_since(m, now) {
            let over = m.reacted.0.plus(1);
            self.hint_sweep(over);
        } else {
            self.members.remove(who);
        }
    }

    /// Notes that from `at` a sweep may find members to forget.
    fn hint_sweep(&mut self, at: UnixTime) {
        self.sweep_at = Some(self.sweep_at.map_or(at, |t| t.min(at)));
    }

    /// Forgets every absent member the room need not remember. O(members), so it runs only
    /// when the room is full and [`Room::sweep_at`] says it may find someone: at most once
    /// per change that made someone forgettable, and once a second for recent reactors.
    fn sweep(&mut self, now: UnixTime) {
        let (host, removed, blocked) = (&self.host, &self.removed, &self.blocked);
        let mut later: Option<UnixTime> = None;
        self.members.retain(|_, m| {
            if !idle(m, host, removed, blocked) {
                return true;
            }
            if reacted_since(m, now) {
                let at = m.reacted.0.plus(1);
                later = Some(later.map_or(at, |t| t.min(at)));
                return true;
            }
            false
        });
        self.sweep_at = later;
    }

    /// Takes `who` out of the space: off stage, hand down, invitation dropped, absent.
    fn depart(&mut self, who: &Identity, ev: &mut Vec<RoomEvent>) {
        if !self.members.get(who).is_some_and(Member::is_present) {
            return;
        }
        self.unseat(who, ev);
        self.lower_hand(who, HandLowered::Dropped, ev);
        self.close_invitation(who, false, ev);
        if let Some(m) = self.members.get_mut(who) {
            m.presence = Presence::Left;
        }
        self.present -= 1;
        ev.push(RoomEvent::Left { who: who.clone() });
    }

    fn record(
        &mut self,
        at: UnixTime,
        by: By<'_>,
        action: ModAction,
        target: Option<&Identity>,
        reason: Option<String>,
    ) {
        if self.log.len() >= Self::MAX_LOG {
            self.log.pop_front();
            self.log_dropped += 1;
        }
        self.log.push_back(ModerationEntry {
            at,
            actor: by.id.clone(),
            action,
            target: target.cloned(),
            reason: clip(reason),
        });
    }
}

/// Whether the room may forget `m`: absent, a listener who came in as one (so a token cannot
/// undo a demotion on rejoining), not the host, not removed or blocked, with an open microphone
/// (a self-mute or a moderator's lock is kept) and nothing pending. Coming back, they join anew.
fn idle(
    m: &Member,
    host: &Identity,
    removed: &BTreeSet<Identity>,
    blocked: &BTreeSet<Identity>,
) -> bool {
    !m.is_present()
        && !m.on_stage
        && m.role == Role::Listener
        && m.joined_as == Role::Listener
        && m.mute == Mute::Unmuted
        && m.hand.is_none()
        && m.invitation.is_none()
        && &m.identity != host
        && !removed.contains(&m.identity)
        && !blocked.contains(&m.identity)
}

/// Whether `m` reacted in the second `now` or later: their reaction limit still counts.
fn reacted_since(m: &Member, now: UnixTime) -> bool {
    m.reacted.1 > 0 && m.reacted.0 >= now
}

fn hand_at(m: &Member) -> UnixTime {
    m.hand.map_or(UnixTime(0), |h| h.at)
}

/// Whether `actor` may act on someone holding `target`: the host on everyone else, a co-host
/// on speakers and listeners.
pub fn outranks_role(actor: Role, target: Role) -> bool {
    match actor {
        Role::Host => target != Role::Host,
        Role::Cohost => matches!(target, Role::Speaker | Role::Listener),
        Role::Speaker | Role::Listener => false,
    }
}

fn outranks(by: By<'_>, target: &Member) -> Result<(), RoomError> {
    if outranks_role(by.role, target.role) {
        Ok(())
    } else {
        Err(RoomError::Outranked { target: target.identity.clone(), role: target.role })
    }
}

fn moderator(by: By<'_>, action: &'static str) -> Result<(), RoomError> {
    if by.role.can_manage() {
        Ok(())
    } else {
        Err(RoomError::NotPermitted { role: by.role, action })
    }
}

fn host_only(by: By<'_>, action: &'static str) -> Result<(), RoomError> {
    if by.role == Role::Host {
        Ok(())
    } else {
        Err(RoomError::NotPermitted { role: by.role, action })
    }
}

fn not_self(by: By<'_>, target: &Identity, verb: &'static str) -> Result<(), RoomError> {
    if by.id == target { Err(RoomError::SelfTarget(verb)) } else { Ok(()) }
}

/// Trims a reason, drops it if empty, and cuts it to [`Room::MAX_REASON_CHARS`].
fn clip(reason: Option<String>) -> Option<String> {
    let reason = reason?;
    let trimmed = reason.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.chars().take(Room::MAX_REASON_CHARS).collect())
}
