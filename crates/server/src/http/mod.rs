//! The HTTP edge: the accept loop and its raw-socket responses, the router's routes (the JSON
//! API, rooms, reports, recordings and their podcast feeds, HLS, the Ogg stream, WebSocket,
//! WHIP/WHEP, the page, the embeddable player and oEmbed, clips, statistics), the security headers, and
//! [`error::ApiError`], where application errors become statuses.

pub mod api;
pub mod captions;
pub mod clips;
pub mod conditional;
pub mod embed;
pub mod error;
pub mod feeds;
pub mod files;
pub mod headers;
pub mod hls;
pub mod oembed;
pub mod ogg_http;
pub mod origin;
pub mod raw_http;
pub mod recordings;
pub mod redirect;
pub mod reports;
pub mod room;
pub mod serve;
pub mod stats;
pub mod web;
pub mod whip;
pub mod ws;
