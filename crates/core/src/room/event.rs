//! What changed in a room (for the server to broadcast) and the moderation log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Reaction;
use crate::{Identity, Role, UnixTime};

/// Why a raised hand came down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandLowered {
    /// The member lowered it.
    Cancelled,
    /// A moderator granted it; the member is on stage.
    Accepted,
    /// A moderator declined it.
    Declined,
    /// The member left, was removed or blocked, or the role changed.
    Dropped,
}

/// One change in a room. Serialised with a `type` tag, e.g. `{"type":"speaker_added",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    /// Someone entered the space.
    Joined {
        /// Who.
        who: Identity,
        /// With which role.
        role: Role,
    },
    /// Someone left the space (by themselves, removed, blocked).
    Left {
        /// Who.
        who: Identity,
    },
    /// Someone took a seat on stage.
    SpeakerAdded {
        /// Who.
        who: Identity,
        /// Their role.
        role: Role,
    },
    /// Someone left the stage.
    SpeakerRemoved {
        /// Who.
        who: Identity,
    },
    /// Someone was muted.
    Muted {
        /// Who.
        who: Identity,
        /// The moderator who locked the mute; `None` for a self-mute.
        by: Option<Identity>,
    },
    /// A moderator lifted a mute lock; the member stays self-muted until they unmute.
    MuteLifted {
        /// Whose mute.
        who: Identity,
        /// The moderator.
        by: Identity,
    },
    /// Someone unmuted themselves.
    Unmuted {
        /// Who.
        who: Identity,
    },
    /// A hand went up.
    HandRaised {
        /// Whose.
        who: Identity,
        /// When.
        at: UnixTime,
    },
    /// A hand came down.
    HandLowered {
        /// Whose.
        who: Identity,
        /// Why.
        reason: HandLowered,
    },
    /// A listener was invited to the stage.
    Invited {
        /// Who.
        who: Identity,
        /// By whom.
        by: Identity,
    },
    /// An invitation was answered or dropped.
    InvitationClosed {
        /// Who was invited.
        who: Identity,
        /// Accepted (they are on stage now) or not.
        accepted: bool,
    },
    /// Someone's role changed.
    RoleChanged {
        /// Who.
        who: Identity,
        /// The old role.
        from: Role,
        /// The new role.
        to: Role,
    },
    /// Someone was removed for the rest of the space.
    Removed {
        /// Who.
        who: Identity,
        /// By whom.
        by: Identity,
    },
    /// An identity was blocked.
    Blocked {
        /// Who.
        who: Identity,
        /// By whom.
        by: Identity,
    },
    /// A block was lifted.
    Unblocked {
        /// Who.
        who: Identity,
        /// By whom.
        by: Identity,
    },
    /// Reactions sent during one second, from [`Room::take_reactions`](super::Room::take_reactions).
    Reactions {
        /// The second.
        second: UnixTime,
        /// How many of each.
        counts: BTreeMap<Reaction, u32>,
    },
    /// The space ended.
    Ended {
        /// By whom.
        by: Identity,
    },
}

/// Kinds of moderation recorded in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    /// A moderator muted someone.
    Mute,
    /// A moderator lifted a mute lock.
    LiftMute,
    /// A moderator sent someone back to the audience.
    MoveToAudience,
    /// Someone was removed.
    Remove,
    /// An identity was blocked.
    Block,
    /// A block was lifted.
    Unblock,
    /// Someone became co-host.
    Promote,
    /// A co-host was demoted or stepped down.
    Demote,
    /// The host role changed hands.
    TransferHost,
    /// The space was ended.
    End,
}

/// One entry of the moderation log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationEntry {
    /// When.
    pub at: UnixTime,
    /// Who acted.
    pub actor: Identity,
    /// What they did.
    pub action: ModAction,
    /// On whom (`None` for ending the space).
    pub target: Option<Identity>,
    /// Why, if given (at most [`Room::MAX_REASON_CHARS`](super::Room::MAX_REASON_CHARS)).
    pub reason: Option<String>,
}
