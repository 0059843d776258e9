//! Why a room refused an action: forbidden (403), unknown person (404), invalid now (409), too
//! fast (429) or full (503), each with a stable machine code.

use crate::{Identity, Role};

/// The class of a refusal, which fixes its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomErrorKind {
    /// The actor's role or standing does not allow this (403).
    Forbidden,
    /// The target is not known to the space (404).
    NotFound,
    /// Allowed in general, but not in the room's current state (409).
    Conflict,
    /// Too many reactions; retry after a second (429).
    RateLimited,
    /// The space holds as many people as it may; retry later (503). Capacity, not a verdict on
    /// the actor, so it is not a 4xx.
    Unavailable,
}

impl RoomErrorKind {
    /// The HTTP status that reports this class.
    pub fn http_status(self) -> u16 {
        match self {
            RoomErrorKind::Forbidden => 403,
            RoomErrorKind::NotFound => 404,
            RoomErrorKind::Conflict => 409,
            RoomErrorKind::RateLimited => 429,
            RoomErrorKind::Unavailable => 503,
        }
    }
}

/// A refused action. Refusals change nothing: the room is as it was before the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    // --- 403 ---
    /// The actor's role does not carry this power.
    #[error("a {role} may not {action}")]
    NotPermitted {
        /// The actor's role.
        role: Role,
        /// What they tried.
        action: &'static str,
    },
    /// The target ranks as high as the actor or higher (a co-host acting on the host or on
    /// another co-host).
    #[error("{target} is a {role}; you may not act on them")]
    Outranked {
        /// Who was targeted.
        target: Identity,
        /// Their role.
        role: Role,
    },
    /// The actor tried to unmute themselves after a moderator's mute.
    #[error("a host or co-host muted you; only they can lift it")]
    MutedByModerator,
    /// A co-host tried to lift a mute the host imposed.
    #[error("the host muted {0}; only the host can lift it")]
    MutedByHost(Identity),
    /// A moderator tried to open someone's self-muted microphone.
    #[error("{0} muted themselves; only they can unmute")]
    NotYourMicrophone(Identity),
    /// The identity was removed from this space and may not come back.
    #[error("{0} was removed from this space")]
    Removed(Identity),
    /// The identity is blocked from this space.
    #[error("{0} is blocked from this space")]
    Blocked(Identity),

    // --- 404 ---
    /// Nobody by that identity is known to the space.
    #[error("{0} is not a member of this space")]
    UnknownMember(Identity),

    // --- 409 ---
    /// The space has ended.
    #[error("this space has ended")]
    Ended,
    /// The person is not in the space right now.
    #[error("{0} is not in the space")]
    NotPresent(Identity),
    /// The actor is already in the space.
    #[error("{0} is already in the space")]
    AlreadyPresent(Identity),
    /// The action makes no sense on oneself (use `Leave`, or transfer the host role first).
    #[error("you cannot {0} yourself")]
    SelfTarget(&'static str),
    /// Every seat is taken.
    #[error("the stage is full ({0} seats)")]
    StageFull(usize),
    /// Already on stage.
    #[error("{0} is already on stage")]
    AlreadyOnStage(Identity),
    /// Not on stage.
    #[error("{0} is not on stage")]
    NotOnStage(Identity),
    /// The hand is already raised.
    #[error("{0} has already raised a hand")]
    HandAlreadyRaised(Identity),
    /// The target's hand is raised: accept their request instead of inviting them.
    #[error("{0} has raised a hand; accept the request instead")]
    HandRaised(Identity),
    /// No hand raised.
    #[error("{0} has not raised a hand")]
    NoHandRaised(Identity),
    /// An invitation is already pending.
    #[error("{0} already has a pending invitation")]
    AlreadyInvited(Identity),
    /// No invitation is pending.
    #[error("{0} has no pending invitation")]
    NotInvited(Identity),
    /// The person's role lets them take the stage without asking.
    #[error("{0} may take the stage without asking")]
    CanTakeStage(Identity),
    /// Already muted.
    #[error("{0} is already muted")]
    AlreadyMuted(Identity),
    /// Not muted.
    #[error("{0} is not muted")]
    NotMuted(Identity),
    /// The space already has as many co-hosts as it may.
    #[error("the space already has {0} co-hosts")]
    CohostsFull(usize),
    /// Already a co-host.
    #[error("{0} is already a co-host")]
    AlreadyCohost(Identity),
    /// Not a co-host.
    #[error("{0} is not a co-host")]
    NotCohost(Identity),
    /// Already removed.
    #[error("{0} was already removed")]
    AlreadyRemoved(Identity),
    /// Already blocked.
    #[error("{0} is already blocked")]
    AlreadyBlocked(Identity),
    /// Not blocked.
    #[error("{0} is not blocked")]
    NotBlocked(Identity),
    /// The block list holds as many identities as it may.
    #[error("the block list is full ({0} identities)")]
    BlockListFull(usize),
    /// The list of removed identities holds as many as it may.
    #[error("the list of removed people is full ({0} identities)")]
    RemovedListFull(usize),
    /// As many hands are up as the queue holds; the listener may ask again once it moves.
    #[error("too many raised hands ({0}); try again once some are answered")]
    HandsFull(usize),
    /// As many invitations are pending as the room holds.
    #[error("too many pending invitations ({0}); wait for some to be answered")]
    InvitationsFull(usize),

    // --- 429 ---
    /// Too many reactions from this identity this second.
    #[error("too many reactions; at most {0} a second")]
    ReactionRateLimited(u32),

    // --- 503 ---
    /// The room remembers as many people as it may and none can be forgotten to make space.
    #[error("this space is full ({0} people); try again later")]
    Full(usize),
}

impl RoomError {
    /// The class, which fixes the HTTP status.
    pub fn kind(&self) -> RoomErrorKind {
        use RoomError::*;
        match self {
            NotPermitted { .. }
            | Outranked { .. }
            | MutedByModerator
            | MutedByHost(_)
            | NotYourMicrophone(_)
            | Removed(_)
            | Blocked(_) => RoomErrorKind::Forbidden,
            UnknownMember(_) => RoomErrorKind::NotFound,
            ReactionRateLimited(_) => RoomErrorKind::RateLimited,
            Full(_) => RoomErrorKind::Unavailable,
            _ => RoomErrorKind::Conflict,
        }
    }

    /// The HTTP status: 403, 404, 409, 429 or 503.
    pub fn http_status(&self) -> u16 {
        self.kind().http_status()
    }

    /// A stable, machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        use RoomError::*;
        match self {
            NotPermitted { .. } => "not_permitted",
            Outranked { .. } => "outranked",
            MutedByModerator => "muted_by_moderator",
            MutedByHost(_) => "muted_by_host",
            NotYourMicrophone(_) => "not_your_microphone",
            Removed(_) => "removed",
            Blocked(_) => "blocked",
            UnknownMember(_) => "unknown_member",
            Ended => "ended",
            NotPresent(_) => "not_present",
            AlreadyPresent(_) => "already_present",
            SelfTarget(_) => "self_target",
            StageFull(_) => "stage_full",
            AlreadyOnStage(_) => "already_on_stage",
            NotOnStage(_) => "not_on_stage",
            HandAlreadyRaised(_) => "hand_already_raised",
            HandRaised(_) => "hand_raised",
            NoHandRaised(_) => "no_hand_raised",
            AlreadyInvited(_) => "already_invited",
            NotInvited(_) => "not_invited",
            CanTakeStage(_) => "can_take_stage",
            AlreadyMuted(_) => "already_muted",
            NotMuted(_) => "not_muted",
            CohostsFull(_) => "cohosts_full",
            AlreadyCohost(_) => "already_cohost",
            NotCohost(_) => "not_cohost",
            AlreadyRemoved(_) => "already_removed",
            AlreadyBlocked(_) => "already_blocked",
            NotBlocked(_) => "not_blocked",
            BlockListFull(_) => "block_list_full",
            RemovedListFull(_) => "removed_list_full",
            HandsFull(_) => "hands_full",
            InvitationsFull(_) => "invitations_full",
            ReactionRateLimited(_) => "rate_limited",
            Full(_) => "room_full",
        }
    }

    /// Seconds to wait before retrying, for 429s and 503s.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            RoomError::ReactionRateLimited(_) => Some(1),
            RoomError::Full(_) => Some(Self::FULL_RETRY_SECS),
            _ => None,
        }
    }

    /// How long a refused joiner should wait before trying a full space again: long enough
    /// that a crowd at the door does not retry in lockstep every second.
    pub const FULL_RETRY_SECS: u64 = 30;
}
