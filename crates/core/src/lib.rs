//! Townhall's domain core: spaces, roles, membership, access tokens and audience statistics.
//!
//! Everything here is plain data and state machines driven by explicit inputs, with time passed
//! in as [`UnixTime`]. No sockets, no tasks, no clocks: the server crate owns those.

pub mod absence;
pub mod directory;
pub mod id;
pub mod pow;
pub mod role;
pub mod room;
pub mod space;
pub mod stage;
pub mod stats;
pub mod time;
pub mod token;
pub mod webhook;

pub use absence::AbsenceTimer;
pub use directory::{Directory, DirectoryError};
pub use id::{IdError, Identity, SpaceId};
pub use pow::{PowError, solve as solve_pow};
pub use role::Role;
pub use room::{
    Action, HandLowered, Member, ModAction, ModerationEntry, Mute, Presence, Reaction, Room,
    RoomConfig, RoomError, RoomErrorKind, RoomEvent, RoomView,
};
pub use space::{NewSpace, Space, SpaceError, SpaceState};
pub use stage::{Seated, Stage, StageError};
pub use time::UnixTime;
pub use token::{Claims, SpaceScope, TokenError, TokenKeys, WaitPlace, WaitTicket};
pub use webhook::{Outbox, OutboxConfig, WebhookEnvelope, WebhookEvent};
