//! The application: spaces and their rooms, who may do what (from the room's current state),
//! admission and the shield's policies, configuration and secrets, the database, webhooks,
//! recordings, clips and audience statistics. Errors are [`error::AppError`] kinds, with no HTTP in them; the layer above maps
//! them to statuses.

pub mod auth;
pub mod captioning;
pub mod captions;
pub mod clips;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod datadir;
pub mod demo;
pub mod error;
pub mod identity_limit;
pub mod live;
pub mod outbound;
pub mod recorder;
pub mod shield;
pub mod state;
pub mod stats;
pub mod store;
pub mod tls;
pub mod webhooks;
