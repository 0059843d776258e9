//! A room as it is kept outside the node that runs it, so that another node can take the space
//! over (an origin failing over) and bring the room back rather than start from nothing.
//!
//! What is kept is what a person would miss: who is host and co-host, every role given, every
//! microphone lock and self-mute, raised hands and invitations of people still in the space,
//! removals and blocks. Plain listeners who hold nothing are left out (they join anew). People
//! who were on stage come back absent with their role: their connection was to the node that
//! failed, and joining again seats them, as after any dropped connection. Reaction tallies and
//! the moderation log are not kept here (the log is in each node's database).

use serde::{Deserialize, Serialize};

use super::{Hand, Invitation, Member, Mute, Presence, Room, RoomConfig, idle};
use crate::{Identity, Role, UnixTime};

/// A room's lasting state (see the [module docs](self)). Serialised as JSON by its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    host: Identity,
    created_at: UnixTime,
    members: Vec<KeptMember>,
    removed: Vec<Identity>,
    blocked: Vec<Identity>,
    seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeptMember {
    identity: Identity,
    role: Role,
    joined_as: Role,
    present: bool,
    on_stage: bool,
    mute: Mute,
    /// When the hand went up and its place in the queue.
    hand: Option<(UnixTime, u64)>,
    invitation: Option<Invitation>,
    since: UnixTime,
}

impl Room {
    /// The room's lasting state.
    pub fn snapshot(&self) -> RoomSnapshot {
        let members = self
            .members
            .values()
            .filter(|m| !idle_present(m, self))
            .map(|m| KeptMember {
                identity: m.identity.clone(),
                role: m.role,
                joined_as: m.joined_as,
                present: m.is_present(),
                on_stage: m.on_stage,
                mute: m.mute.clone(),
                hand: m.hand.map(|h| (h.at, h.seq)),
                invitation: m.invitation.clone(),
                since: m.since,
            })
            .collect();
        RoomSnapshot {
            host: self.host.clone(),
            created_at: self.created_at,
            members,
            removed: self.removed.iter().cloned().collect(),
            blocked: self.blocked.iter().cloned().collect(),
            seq: self.seq,
        }
    }

    /// Brings a room back from `snapshot` under `config`'s limits (a snapshot from elsewhere
    /// is outside input: whatever exceeds a bound is dropped, nothing panics). People who were
    /// on stage come back absent with their role; present people keep their hands and
    /// invitations.
    pub fn from_snapshot(snapshot: RoomSnapshot, config: RoomConfig) -> Room {
        let mut room = Room::with_config(snapshot.host.clone(), config, snapshot.created_at);
        room.seq = snapshot.seq;
        for kept in snapshot.members {
            room.bring_back(kept);
        }
        for who in snapshot.removed {
            room.restore_removed(who);
        }
        for who in snapshot.blocked {
            room.restore_blocked(who);
        }
        room
    }

    fn bring_back(&mut self, kept: KeptMember) {
        let is_host = kept.identity == self.host;
        // The host is there from the start (and replaced by their kept self); anyone else
        // comes back once, within the room's bound.
        let known = self.members.get(&kept.identity);
        if (is_host && known.is_some_and(Member::is_present))
            || (!is_host && (known.is_some() || self.members.len() >= self.config.max_members))
        {
            return;
        }
        // The host is always the host; nobody else comes back as one.
        let role = match kept.role {
            _ if is_host => Role::Host,
            Role::Host => Role::Cohost,
            role => role,
        };
        let role = if role == Role::Cohost && self.cohosts.len() >= self.config.max_cohosts {
            Role::Speaker
        } else {
            role
        };
        let present = kept.present && !kept.on_stage;
        let presence = if present { Presence::Joined } else { Presence::Left };
        let mut m = Member::new(kept.identity.clone(), role, presence, kept.since);
        m.joined_as = kept.joined_as;
        m.mute = kept.mute;
        if present {
            if let Some((at, seq)) = kept.hand
                && self.hands.len() < self.config.max_hands
                && !self.hands.contains_key(&seq)
            {
                m.hand = Some(Hand { at, seq });
                self.hands.insert(seq, m.identity.clone());
                self.seq = self.seq.max(seq);
            }
            if let Some(invitation) = kept.invitation
                && self.invited.len() < self.config.max_hands
            {
                m.invitation = Some(invitation);
                self.invited.insert(m.identity.clone());
            }
            self.present += 1;
        }
        if role == Role::Cohost {
            self.cohosts.insert(m.identity.clone());
        }
        self.members.insert(m.identity.clone(), m);
    }
}

/// A present plain listener holding nothing: not worth keeping (they join anew).
fn idle_present(m: &Member, room: &Room) -> bool {
    let as_if_absent = Member { presence: Presence::Left, ..m.clone() };
    idle(&as_if_absent, &room.host, &room.removed, &room.blocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::Action;
    use proptest::prelude::*;

    fn id(s: &str) -> Identity {
        Identity::new(s).expect("identity")
    }

    fn act(room: &mut Room, who: &str, role: Role, action: Action) {
        let now = UnixTime(1_000);
        if !room.member(&id(who)).is_some_and(Member::is_present) {
            room.apply(&id(who), Action::Join { token_role: role }, now).expect("join");
        }
        room.apply(&id(who), action, now).expect("act");
    }

    /// A room with a co-host, a speaker locked by a moderator, a raised hand, a removal and a
    /// block; every one of them comes back.
    #[test]
    fn the_room_comes_back_from_its_snapshot() {
        let now = UnixTime(1_000);
        let mut room = Room::new(id("host"), 13, now);
        room.apply(&id("host"), Action::Join { token_role: Role::Host }, now).expect("host");
        for (who, role) in
            [("carol", Role::Cohost), ("sam", Role::Speaker), ("idle", Role::Listener)]
        {
            room.apply(&id(who), Action::Join { token_role: role }, now).expect("join");
        }
        act(&mut room, "host", Role::Host, Action::Mute { target: id("sam"), reason: None });
        act(&mut room, "lea", Role::Listener, Action::RequestToSpeak);
        act(&mut room, "bob", Role::Listener, Action::RequestToSpeak);
        act(&mut room, "host", Role::Host, Action::Remove { target: id("bob"), reason: None });
        act(&mut room, "host", Role::Host, Action::Block { target: id("eve"), reason: None });
        act(
            &mut room,
            "idle",
            Role::Listener,
            Action::React { reaction: "clap".parse().expect("r") },
        );

        let json = serde_json::to_string(&room.snapshot()).expect("json");
        let back: RoomSnapshot = serde_json::from_str(&json).expect("parse");
        let back = Room::from_snapshot(back, RoomConfig::default());

        assert_eq!(back.host(), &id("host"));
        assert_eq!(back.cohosts().cloned().collect::<Vec<_>>(), vec![id("carol")]);
        let sam = back.member(&id("sam")).expect("sam kept");
        assert_eq!(sam.role, Role::Speaker);
        assert!(sam.mute.is_locked(), "the moderator's lock holds");
        assert!(!sam.is_present() && !sam.on_stage, "speakers come back absent, to rejoin");
        assert_eq!(back.hands().map(|m| m.identity.clone()).collect::<Vec<_>>(), vec![id("lea")]);
        assert!(back.is_removed(&id("bob")) && back.is_blocked(&id("eve")));
        assert!(back.member(&id("idle")).is_none(), "a listener holding nothing is not kept");
        assert_eq!(back.present_count(), 1, "lea, whose hand is up");

        // A speaker who comes back takes their seat again; bob stays out.
        let mut back = back;
        back.apply(&id("sam"), Action::Join { token_role: Role::Listener }, now).expect("rejoin");
        assert!(back.member(&id("sam")).is_some_and(|m| m.on_stage));
        assert!(back.apply(&id("bob"), Action::Join { token_role: Role::Host }, now).is_err());
        // Hands keep their order after new ones.
        back.apply(&id("zed"), Action::Join { token_role: Role::Listener }, now).expect("zed");
        back.apply(&id("zed"), Action::RequestToSpeak, now).expect("hand");
        let order: Vec<Identity> = back.hands().map(|m| m.identity.clone()).collect();
        assert_eq!(order, vec![id("lea"), id("zed")]);
    }

    #[test]
    fn a_snapshot_beyond_the_bounds_is_cut_to_them() {
        let now = UnixTime(1);
        let mut room = Room::new(id("host"), 13, now);
        for n in 0..50 {
            act(&mut room, &format!("l{n}"), Role::Listener, Action::RequestToSpeak);
        }
        let small = RoomConfig { max_members: 10, max_hands: 5, ..RoomConfig::default() };
        let back = Room::from_snapshot(room.snapshot(), small);
        assert!(back.members().count() <= 10);
        assert!(back.hands_total() <= 5);
    }

    proptest! {
        #[test]
        fn any_snapshot_text_is_refused_or_restored_without_panic(raw in ".{0,400}") {
            if let Ok(s) = serde_json::from_str::<RoomSnapshot>(&raw) {
                let _ = Room::from_snapshot(s, RoomConfig::default());
            }
        }

        #[test]
        fn snapshots_restore_within_bounds(members in proptest::collection::vec(("[a-e]{1,2}", 0u8..4, any::<bool>(), any::<bool>(), proptest::option::of(0u64..20)), 0..40)) {
            let kept: Vec<KeptMember> = members.into_iter().map(|(who, role, present, on_stage, hand)| KeptMember {
                identity: id(&who),
                role: [Role::Host, Role::Cohost, Role::Speaker, Role::Listener][role as usize],
                joined_as: Role::Listener,
                present,
                on_stage,
                mute: Mute::Unmuted,
                hand: hand.map(|s| (UnixTime(1), s)),
                invitation: None,
                since: UnixTime(1),
            }).collect();
            let snapshot = RoomSnapshot { host: id("h"), created_at: UnixTime(1), members: kept, removed: vec![], blocked: vec![], seq: 0 };
            let config = RoomConfig { max_members: 8, max_hands: 3, max_cohosts: 2, ..RoomConfig::default() };
            let room = Room::from_snapshot(snapshot, config);
            prop_assert!(room.members().count() <= 8);
            prop_assert!(room.hands_total() <= 3);
            prop_assert!(room.cohosts().count() <= 2);
            prop_assert_eq!(room.present_count(), room.members().filter(|m| m.is_present()).count());
            prop_assert_eq!(room.members().filter(|m| m.role == Role::Host).count(), 1);
        }
    }
}
