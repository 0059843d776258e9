//! The web page, embedded in the binary (plain ES modules from `web/`, no build step).

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::state::AppState;

/// One embedded file.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $mime:expr) => {
        Asset { path: $path, mime: $mime, body: include_bytes!(concat!("../../../../web/", $file)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/style.css", "style.css", "text/css; charset=utf-8"),
    asset!("/app.js", "app.js", JS),
    asset!("/api.js", "api.js", JS),
    asset!("/wire.js", "wire.js", JS),
    asset!("/listen.js", "listen.js", JS),
    asset!("/backoff.js", "backoff.js", JS),
    asset!("/speak.js", "speak.js", JS),
    asset!("/rtc.js", "rtc.js", JS),
    asset!("/room.js", "room.js", JS),
    asset!("/room-view.js", "room-view.js", JS),
    asset!("/recordings.js", "recordings.js", JS),
    asset!("/replay.js", "replay.js", JS),
    asset!("/stats.js", "stats.js", JS),
    asset!("/captions.js", "captions.js", JS),
    // The page's words: the catalog module and one catalog per language (docs: README, "Languages").
    asset!("/i18n.js", "i18n.js", JS),
    asset!("/locales/en.json", "locales/en.json", JSON),
    asset!("/locales/ar.json", "locales/ar.json", JSON),
    // The embeddable player's script and style (its page is filled in by `http::embed`).
    asset!("/embed.js", "embed.js", JS),
    asset!("/embed.css", "embed.css", "text/css; charset=utf-8"),
    // The clip page's script (its page is filled in by `http::clips`).
    asset!("/clip.js", "clip.js", JS),
    asset!("/playback-worklet.js", "playback-worklet.js", JS),
    asset!("/capture-worklet.js", "capture-worklet.js", JS),
    // hls.js 1.7.4 (Apache-2.0), the light build, for LL-HLS playback where the browser has none.
    asset!("/vendor/hls.min.mjs", "vendor/hls.min.mjs", JS),
    asset!("/vendor/hls.js-LICENSE.txt", "vendor/hls.js-LICENSE.txt", "text/plain; charset=utf-8"),
];

/// Routes serving the page's files.
pub fn routes() -> Router<Arc<AppState>> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.body,
    )
        .into_response()
}
