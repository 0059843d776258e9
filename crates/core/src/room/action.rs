//! What people ask of a room: actions and the fixed set of reactions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Identity, Role};

/// One thing someone asks of a room, applied with [`Room::apply`](super::Room::apply).
///
/// The actor is passed next to the action, never inside it. `Join` carries the role of the
/// actor's verified token: build it from the token's claims, never from client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Enter the space. The token's role bounds what a first join grants; a returning member
    /// gets the role the room last gave them (promotions and demotions persist).
    Join {
        /// The role the actor's token grants.
        token_role: Role,
    },
    /// Leave the space (seat, raised hand and invitation are dropped; roles and mutes are
    /// kept, and a listener with nothing to keep is forgotten).
    Leave,
    /// Raise a hand: ask to speak (listeners only).
    RequestToSpeak,
    /// Lower one's own raised hand.
    CancelRequest,
    /// Take a free seat on stage (host, co-hosts and speakers; no invitation needed).
    TakeStage,
    /// Invite a listener to the stage (host and co-hosts).
    InviteToSpeak {
        /// Who is invited.
        target: Identity,
    },
    /// Accept one's pending invitation and take a seat.
    AcceptInvitation,
    /// Decline one's pending invitation.
    DeclineInvitation,
    /// Grant a raised hand: the listener becomes a speaker on stage (host and co-hosts).
    AcceptRequest {
        /// Whose hand.
        target: Identity,
    },
    /// Refuse a raised hand and lower it (host and co-hosts).
    DeclineRequest {
        /// Whose hand.
        target: Identity,
    },
    /// Mute oneself, or (host and co-hosts) mute someone on stage with a lock.
    Mute {
        /// Who is muted; the actor for a self-mute.
        target: Identity,
        /// Why, for the moderation log.
        reason: Option<String>,
    },
    /// Undo one's own self-mute, or (host and co-hosts) lift a moderator's mute lock.
    Unmute {
        /// Whose mute.
        target: Identity,
    },
    /// Leave the stage oneself, or (host and co-hosts) send someone back to the audience.
    MoveToAudience {
        /// Who leaves the stage.
        target: Identity,
        /// Why, for the moderation log.
        reason: Option<String>,
    },
    /// Make a present member a co-host (host only).
    PromoteCohost {
        /// The new co-host.
        target: Identity,
    },
    /// Take co-host powers away (host), or step down as co-host (the co-host themselves).
    DemoteCohost {
        /// The co-host.
        target: Identity,
    },
    /// Hand the space to a present co-host; the old host becomes a co-host (host only).
    TransferHost {
        /// The new host.
        target: Identity,
    },
    /// Remove someone for the rest of this space's life (host and co-hosts).
    Remove {
        /// Who is removed.
        target: Identity,
        /// Why, for the moderation log.
        reason: Option<String>,
    },
    /// Refuse an identity on any later join, removing it if present (host and co-hosts).
    Block {
        /// Who is blocked; need not have joined.
        target: Identity,
        /// Why, for the moderation log.
        reason: Option<String>,
    },
    /// Lift a block (host and co-hosts). A removal still stands.
    Unblock {
        /// Who is unblocked.
        target: Identity,
    },
    /// Send a reaction (anyone present; rate-limited per identity).
    React {
        /// Which one.
        reaction: Reaction,
    },
    /// End the space for everyone (host only).
    End,
}

impl Action {
    /// A short verb phrase naming the action, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Join { .. } => "join",
            Action::Leave => "leave",
            Action::RequestToSpeak => "request to speak",
            Action::CancelRequest => "cancel a request to speak",
            Action::TakeStage => "take the stage",
            Action::InviteToSpeak { .. } => "invite to speak",
            Action::AcceptInvitation => "accept an invitation",
            Action::DeclineInvitation => "decline an invitation",
            Action::AcceptRequest { .. } => "accept a request to speak",
            Action::DeclineRequest { .. } => "decline a request to speak",
            Action::Mute { .. } => "mute others",
            Action::Unmute { .. } => "unmute others",
            Action::MoveToAudience { .. } => "move others to the audience",
            Action::PromoteCohost { .. } => "promote a co-host",
            Action::DemoteCohost { .. } => "demote a co-host",
            Action::TransferHost { .. } => "transfer the host role",
            Action::Remove { .. } => "remove someone",
            Action::Block { .. } => "block someone",
            Action::Unblock { .. } => "unblock someone",
            Action::React { .. } => "react",
            Action::End => "end the space",
        }
    }
}

/// The fixed set of reactions. Serialised as the emoji itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reaction {
    /// 👏
    #[serde(rename = "👏")]
    Clap,
    /// ❤️
    #[serde(rename = "❤️")]
    Heart,
    /// 😂
    #[serde(rename = "😂")]
    Laugh,
    /// 🔥
    #[serde(rename = "🔥")]
    Fire,
    /// 💯
    #[serde(rename = "💯")]
    Hundred,
    /// 🙌
    #[serde(rename = "🙌")]
    RaisedHands,
    /// ✋
    #[serde(rename = "✋")]
    Hand,
}

impl Reaction {
    /// Every reaction, in display order.
    pub const ALL: [Reaction; 7] = [
        Reaction::Clap,
        Reaction::Heart,
        Reaction::Laugh,
        Reaction::Fire,
        Reaction::Hundred,
        Reaction::RaisedHands,
        Reaction::Hand,
    ];

    /// The emoji.
    pub fn emoji(self) -> &'static str {
        match self {
            Reaction::Clap => "👏",
            Reaction::Heart => "❤️",
            Reaction::Laugh => "😂",
            Reaction::Fire => "🔥",
            Reaction::Hundred => "💯",
            Reaction::RaisedHands => "🙌",
            Reaction::Hand => "✋",
        }
    }

    /// An ASCII name, for URLs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reaction::Clap => "clap",
            Reaction::Heart => "heart",
            Reaction::Laugh => "laugh",
            Reaction::Fire => "fire",
            Reaction::Hundred => "hundred",
            Reaction::RaisedHands => "raised_hands",
            Reaction::Hand => "hand",
        }
    }
}

impl fmt::Display for Reaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.emoji())
    }
}

/// The text named no reaction of the fixed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reaction {0:?}")]
pub struct UnknownReaction(pub String);

impl FromStr for Reaction {
    type Err = UnknownReaction;
    /// Accepts the emoji (with or without a trailing variation selector) or the ASCII name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim_end_matches('\u{fe0f}');
        Reaction::ALL
            .into_iter()
            .find(|r| r.name() == s || r.emoji().trim_end_matches('\u{fe0f}') == bare)
            .ok_or_else(|| UnknownReaction(s.to_owned()))
    }
}
