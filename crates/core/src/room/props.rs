//! Property tests: random actions from random actors never break the room's invariants.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::tests::{id, invariants};
use super::*;

/// The people of the random runs: index 0 is the host.
const PEOPLE: usize = 9;

/// A target index meaning "someone the action fits", picked from the room's state, so that
/// rare-by-chance successes (granting the hand that is up) happen often.
const FITTING: usize = PEOPLE;

fn person(i: usize) -> Identity {
    if i == 0 { id("host") } else { id(&format!("p{i}")) }
}

/// The first member, by identity, for whom `fits` holds (else the host).
fn first(room: &Room, fits: impl Fn(&Member) -> bool) -> Identity {
    room.members().find(|m| fits(m)).map_or_else(|| person(0), |m| m.identity.clone())
}

/// An action with its target as an index into `PEOPLE`.
#[derive(Debug, Clone)]
enum Step {
    Act(Act),
    /// The server takes the finished seconds' reaction tallies.
    Flush,
}

#[derive(Debug, Clone)]
enum Act {
    Join(Role),
    Leave,
    Request,
    Cancel,
    TakeStage,
    Invite(usize),
    AcceptInvitation,
    DeclineInvitation,
    AcceptRequest(usize),
    DeclineRequest(usize),
    Mute(usize),
    Unmute(usize),
    Move(usize),
    Promote(usize),
    Demote(usize),
    Transfer(usize),
    Remove(usize),
    Block(usize),
    Unblock(usize),
    React(usize),
    End,
}

impl Act {
    fn to_action(&self, room: &Room) -> Action {
        let t = |i: &usize| if *i == FITTING { self.fitting(room) } else { person(*i) };
        match self {
            Act::Join(token_role) => Action::Join { token_role: *token_role },
            Act::Leave => Action::Leave,
            Act::Request => Action::RequestToSpeak,
            Act::Cancel => Action::CancelRequest,
            Act::TakeStage => Action::TakeStage,
            Act::Invite(i) => Action::InviteToSpeak { target: t(i) },
            Act::AcceptInvitation => Action::AcceptInvitation,
            Act::DeclineInvitation => Action::DeclineInvitation,
            Act::AcceptRequest(i) => Action::AcceptRequest { target: t(i) },
            Act::DeclineRequest(i) => Action::DeclineRequest { target: t(i) },
            Act::Mute(i) => Action::Mute { target: t(i), reason: None },
            Act::Unmute(i) => Action::Unmute { target: t(i) },
            Act::Move(i) => Action::MoveToAudience { target: t(i), reason: None },
            Act::Promote(i) => Action::PromoteCohost { target: t(i) },
            Act::Demote(i) => Action::DemoteCohost { target: t(i) },
            Act::Transfer(i) => Action::TransferHost { target: t(i) },
            Act::Remove(i) => Action::Remove { target: t(i), reason: Some("test".into()) },
            Act::Block(i) => Action::Block { target: t(i), reason: None },
            Act::Unblock(i) => Action::Unblock { target: t(i) },
            Act::React(r) => Action::React { reaction: Reaction::ALL[r % Reaction::ALL.len()] },
            Act::End => Action::End,
        }
    }
}

/// Token roles, listeners most often (as in real spaces).
impl Act {
    /// Someone this action could succeed on.
    fn fitting(&self, room: &Room) -> Identity {
        let listener = |m: &Member| m.is_present() && !m.on_stage && m.role == Role::Listener;
        match self {
            Act::AcceptRequest(_) | Act::DeclineRequest(_) => {
                room.hands().next().map_or_else(|| person(0), |m| m.identity.clone())
            }
            Act::Invite(_) => first(room, |m| listener(m) && m.hand.is_none()),
            Act::Unmute(_) => first(room, |m| m.mute.is_locked()),
            Act::Demote(_) | Act::Transfer(_) => first(room, |m| m.role == Role::Cohost),
            Act::Unblock(_) => room.blocked().next().cloned().unwrap_or_else(|| person(0)),
            _ => first(room, |m| m.on_stage && m.role == Role::Speaker),
        }
    }
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        1 => Just(Role::Host),
        1 => Just(Role::Cohost),
        2 => Just(Role::Speaker),
        4 => Just(Role::Listener),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    let p = || 0..=FITTING;
    prop_oneof![
        12 => role().prop_map(Act::Join),
        3 => Just(Act::Leave),
        8 => Just(Act::Request),
        2 => Just(Act::Cancel),
        4 => Just(Act::TakeStage),
        6 => p().prop_map(Act::Invite),
        6 => Just(Act::AcceptInvitation),
        2 => Just(Act::DeclineInvitation),
        8 => p().prop_map(Act::AcceptRequest),
        2 => p().prop_map(Act::DeclineRequest),
        6 => p().prop_map(Act::Mute),
        6 => p().prop_map(Act::Unmute),
        4 => p().prop_map(Act::Move),
        3 => p().prop_map(Act::Promote),
        2 => p().prop_map(Act::Demote),
        2 => p().prop_map(Act::Transfer),
        1 => p().prop_map(Act::Remove),
        1 => p().prop_map(Act::Block),
        2 => p().prop_map(Act::Unblock),
        8 => (0..Reaction::ALL.len()).prop_map(Act::React),
        // Rare, so that most runs live long.
        3 => prop::bool::weighted(0.05).prop_map(|end| if end { Act::End } else { Act::Leave }),
    ]
}

fn step() -> impl Strategy<Value = (usize, Step, u64)> {
    let step = prop_oneof![40 => act().prop_map(Step::Act), 1 => Just(Step::Flush)];
    // The host acts often, so that moderation happens; time often stands still, so that
    // reaction limits are reached.
    let actor = prop_oneof![1 => Just(0), 2 => 1..PEOPLE];
    let dt = prop_oneof![3 => Just(0u64), 1 => 1u64..3];
    (actor, step, dt)
}

/// What the events said, replayed: it must match the room's own state.
#[derive(Default)]
struct Replay {
    speakers: BTreeSet<Identity>,
    hands: BTreeSet<Identity>,
    roles: BTreeMap<Identity, Role>,
}

impl Replay {
    fn apply(&mut self, event: &RoomEvent) {
        match event {
            RoomEvent::SpeakerAdded { who, .. } => {
                self.speakers.insert(who.clone());
            }
            RoomEvent::SpeakerRemoved { who } => {
                self.speakers.remove(who);
            }
            RoomEvent::HandRaised { who, .. } => {
                self.hands.insert(who.clone());
            }
            RoomEvent::HandLowered { who, .. } => {
                self.hands.remove(who);
            }
            RoomEvent::Joined { who, role } => {
                self.roles.insert(who.clone(), *role);
            }
            RoomEvent::RoleChanged { who, to, .. } => {
                self.roles.insert(who.clone(), *to);
            }
            RoomEvent::Ended { .. } => {
                self.speakers.clear();
                self.hands.clear();
            }
            _ => {}
        }
    }

    fn matches(&self, room: &Room) -> Result<(), String> {
        let speakers: BTreeSet<Identity> =
            room.speakers().iter().map(|m| m.identity.clone()).collect();
        let hands: BTreeSet<Identity> = room.hands().map(|m| m.identity.clone()).collect();
        if speakers != self.speakers || hands != self.hands {
            return Err(format!(
                "events say {:?} / {:?}, room says {speakers:?} / {hands:?}",
                self.speakers, self.hands
            ));
        }
        for (who, role) in &self.roles {
            let forgotten = room.member(who).is_none() && *role == Role::Listener;
            if !forgotten && room.member(who).map(|m| m.role) != Some(*role) {
                return Err(format!(
                    "events say {who} is {role}, room says {:?}",
                    room.member(who)
                ));
            }
        }
        Ok(())
    }
}

/// Rules about one step, checked against the state before it.
fn step_rules(
    before: &Room,
    actor: &Identity,
    action: &Action,
    result: &Result<Vec<RoomEvent>, RoomError>,
) -> Result<(), String> {
    let m = before.member(actor);
    let banned = before.is_removed(actor) || before.is_blocked(actor);
    if banned && result.is_ok() {
        return Err(format!("{actor} is removed or blocked, yet {action:?} succeeded"));
    }
    if let Action::Unmute { target } = action
        && target == actor
        && m.is_some_and(|m| m.mute.is_locked())
        && result.is_ok()
    {
        return Err(format!("{actor} lifted a moderator's mute by themselves"));
    }
    let moderator_only = matches!(
        action,
        Action::InviteToSpeak { .. }
            | Action::AcceptRequest { .. }
            | Action::DeclineRequest { .. }
            | Action::Remove { .. }
            | Action::Block { .. }
            | Action::Unblock { .. }
    );
    if moderator_only && result.is_ok() && !m.is_some_and(|m| m.role.can_manage()) {
        return Err(format!("{actor} ({:?}) did {action:?}", m.map(|m| m.role)));
    }
    let host_only =
        matches!(action, Action::PromoteCohost { .. } | Action::TransferHost { .. } | Action::End);
    if host_only && result.is_ok() && before.host() != actor {
        return Err(format!("{actor} did {action:?} without being the host"));
    }
    Ok(())
}

fn now_zero() -> UnixTime {
    UnixTime(0)
}

/// Runs `steps` on a fresh room with `config`, checking every rule after every step.
fn run(config: RoomConfig, steps: Vec<(usize, Step, u64)>) -> Result<(), TestCaseError> {
    let per_second = config.reactions_per_second;
    let mut room = Room::with_config(person(0), config, UnixTime(0));
    let mut replay = Replay::default();
    replay.roles.insert(person(0), Role::Host);
    let joined = room.apply(&person(0), Action::Join { token_role: Role::Host }, now_zero());
    prop_assert!(joined.is_ok());
    joined.iter().flatten().for_each(|e| replay.apply(e));
    let mut sent: BTreeMap<(Identity, UnixTime), u32> = BTreeMap::new();
    let mut tally: BTreeMap<UnixTime, u32> = BTreeMap::new();
    let mut now = UnixTime(0);
    for (who, step, dt) in steps {
        now = now.plus(dt);
        let actor = person(who);
        let act = match step {
            Step::Flush => {
                let taken: u32 = room
                    .take_reactions(now)
                    .iter()
                    .map(|e| match e {
                        RoomEvent::Reactions { counts, .. } => counts.values().sum::<u32>(),
                        _ => 0,
                    })
                    .sum();
                let later = tally.split_off(&now);
                let want: u32 = std::mem::replace(&mut tally, later).values().sum();
                prop_assert_eq!(taken, want);
                continue;
            }
            Step::Act(act) => act,
        };
        let action = act.to_action(&room);
        let before = room.clone();
        let result = room.apply(&actor, action.clone(), now);
        if let Err(msg) = step_rules(&before, &actor, &action, &result) {
            prop_assert!(false, "{}", msg);
        }
        match &result {
            Ok(events) => events.iter().for_each(|e| replay.apply(e)),
            Err(e) => {
                // A refused join at a full door may learn that a sweep finds nobody: a hint,
                // not a change.
                let mut before = before;
                before.sweep_at = room.sweep_at;
                prop_assert_eq!(
                    format!("{before:?}"),
                    format!("{room:?}"),
                    "{} changed the room",
                    e
                );
                prop_assert!([403, 404, 409, 429, 503].contains(&e.http_status()));
            }
        }
        if matches!(action, Action::React { .. }) && result.is_ok() {
            let n = sent.entry((actor.clone(), now)).or_default();
            *n += 1;
            prop_assert!(*n <= per_second, "{} sent {} reactions in one second", actor, n);
            *tally.entry(now).or_default() += 1;
            while tally.len() > Room::MAX_PENDING_SECONDS {
                tally.pop_first();
            }
        }
        if let Err(msg) = invariants(&room) {
            prop_assert!(false, "after {:?} by {}: {}", action, actor, msg);
        }
        if let Err(msg) = replay.matches(&room) {
            prop_assert!(false, "after {:?} by {}: {}", action, actor, msg);
        }
        let pending: u32 = room.pending_reactions().map(|(_, c)| c.values().sum::<u32>()).sum();
        prop_assert_eq!(pending, tally.values().sum::<u32>());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(
        seats in 1usize..=5,
        per_second in 1u32..=3,
        steps in prop::collection::vec(step(), 0..250),
    ) {
        let config = RoomConfig { seats, reactions_per_second: per_second, ..RoomConfig::default() };
        run(config, steps)?;
    }

    /// With room for fewer people, hands and invitations than the runs bring, the door and
    /// the queues refuse, and forgetting and sweeping happen often.
    #[test]
    fn random_sequences_at_tight_limits_keep_the_invariants(
        seats in 1usize..=5,
        per_second in 1u32..=3,
        max_members in 1usize..=6,
        max_hands in 1usize..=2,
        steps in prop::collection::vec(step(), 0..250),
    ) {
        let config = RoomConfig {
            seats,
            reactions_per_second: per_second,
            max_members,
            max_hands,
            ..RoomConfig::default()
        };
        run(config, steps)?;
    }
}
