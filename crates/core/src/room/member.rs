//! One person in a room: role, presence, seat, microphone, hand and invitation.

use serde::{Deserialize, Serialize};

use crate::{Identity, Role, UnixTime};

/// Whether a member is in the space right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// In the space.
    Joined,
    /// Known to the space but not in it (left, removed, blocked, or a host not yet arrived).
    Left,
}

/// A member's microphone state as the room decides it.
///
/// A self-mute is undone by the member alone: nobody opens someone else's microphone. A
/// moderator's mute is a lock: the member may not unmute until the host or a co-host lifts it
/// (a co-host cannot lift the host's lock), and lifting it leaves the member self-muted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Mute {
    /// Microphone open (as far as the room is concerned).
    Unmuted,
    /// Muted by the member.
    SelfMuted,
    /// Muted by a host or co-host; locked until a moderator lifts it.
    Moderator {
        /// Who muted.
        by: Identity,
        /// Their role when they muted (a co-host cannot lift a host's lock).
        by_role: Role,
        /// When.
        at: UnixTime,
    },
}

impl Mute {
    /// Muted in any way.
    pub fn is_muted(&self) -> bool {
        !matches!(self, Mute::Unmuted)
    }

    /// Locked by a moderator.
    pub fn is_locked(&self) -> bool {
        matches!(self, Mute::Moderator { .. })
    }
}

/// A raised hand: a request to speak, served first come, first served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hand {
    /// When it was raised.
    pub at: UnixTime,
    /// Position in the room's queue (smaller is earlier).
    #[serde(skip)]
    pub(super) seq: u64,
}

/// A pending invitation to the stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Who invited.
    pub by: Identity,
    /// When.
    pub at: UnixTime,
}

/// Someone the room knows: joined now or earlier, or its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Who.
    pub identity: Identity,
    /// Their role in this space.
    pub role: Role,
    /// In the space now or not.
    pub presence: Presence,
    /// Holds a seat on stage.
    pub on_stage: bool,
    /// Microphone state; kept across leaving the stage and rejoining.
    pub mute: Mute,
    /// Raised hand, if any.
    pub hand: Option<Hand>,
    /// Pending invitation to speak, if any.
    pub invitation: Option<Invitation>,
    /// When they first joined (for the host: when the space was created).
    pub since: UnixTime,
    /// Order of taking the current seat, to list speakers in stage order.
    #[serde(skip)]
    pub(super) seated_seq: u64,
    /// Reactions sent in the current second: (second, count).
    #[serde(skip)]
    pub(super) reacted: (UnixTime, u32),
    /// The role their first join granted. A listener who came in as one may be forgotten on
    /// leaving; anyone who came in higher must be remembered, or their token would undo the
    /// room's later demotion on the next join.
    #[serde(skip)]
    pub(super) joined_as: Role,
}

impl Member {
    pub(super) fn new(identity: Identity, role: Role, presence: Presence, now: UnixTime) -> Member {
        Member {
            identity,
            role,
            presence,
            on_stage: false,
            mute: Mute::Unmuted,
            hand: None,
            invitation: None,
            since: now,
            seated_seq: 0,
            reacted: (UnixTime(0), 0),
            joined_as: role,
        }
    }

    /// In the space now.
    pub fn is_present(&self) -> bool {
        self.presence == Presence::Joined
    }
}
