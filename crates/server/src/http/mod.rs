//! The HTTP edge: the accept loop and its raw-socket responses, the router's routes (the JSON
//! API, rooms, reports, recordings, HLS, the Ogg stream, WebSocket, WHIP/WHEP, the page), the
//! security headers, and [`error::ApiError`], where application errors become statuses.

pub mod api;
pub mod conditional;
pub mod error;
pub mod headers;
pub mod hls;
pub mod ogg_http;
pub mod raw_http;
pub mod recordings;
pub mod reports;
pub mod room;
pub mod serve;
pub mod web;
pub mod whip;
pub mod ws;
