//! oEmbed 1.0 (<https://oembed.com>): `GET /oembed?url=...` turns a space's page or player URL
//! on this node into a `rich` answer whose `html` is an `<iframe>` of the embeddable player
//! (`/embed/{space}`), so blogs and chat apps that speak oEmbed embed a space from its link.
//! JSON only (`format=xml` is `501`, as the spec says); `maxwidth`/`maxheight` are honoured;
//! unknown and private spaces are `404`; a URL that is not one of this node's spaces is `400`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use townhall_core::{IdError, SpaceId};

use crate::app::state::AppState;
use crate::http::embed::{escape, public_space};
use crate::http::error::ApiError;
use crate::http::origin::{authority, base_url};

/// The player's size when the consumer sets no bounds, CSS pixels.
pub const DEFAULT_WIDTH: u32 = 480;
/// See [`DEFAULT_WIDTH`].
pub const DEFAULT_HEIGHT: u32 = 96;
/// The longest `url` parameter looked at.
pub const MAX_URL_LEN: usize = 2_048;

/// Routes: the oEmbed endpoint.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/oembed", get(oembed))
}

/// Query of `GET /oembed` (other parameters, which consumers may add, are ignored).
#[derive(Debug, Deserialize)]
pub struct OembedQuery {
    /// The page or player URL of a space on this node.
    url: String,
    /// `json` (the default); anything else is `501`.
    format: Option<String>,
    /// The widest the consumer can show, pixels.
    maxwidth: Option<u32>,
    /// The tallest the consumer can show, pixels.
    maxheight: Option<u32>,
}

/// Why a `url` is not one of this node's spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceUrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("the url is too long")]
    TooLong,
    /// Not `http://` or `https://`.
    #[error("the url must be http:// or https://")]
    Scheme,
    /// Another site's URL.
    #[error("the url is not on this node")]
    Elsewhere,
    /// Neither `/embed/{space}` nor `/#/space/{space}`.
    #[error("the url names no space (use /#/space/{{id}} or /embed/{{id}})")]
    NotASpace,
    /// The space id is malformed.
    #[error(transparent)]
    Id(#[from] IdError),
}

/// Parses a space's URL on the node reached at `authority` (`host[:port]`, compared without
/// case): the page `http(s)://{authority}/#/space/{id}` or the player
/// `http(s)://{authority}/embed/{id}` (a trailing `/` and, on the player, a query allowed).
pub fn parse_space_url(url: &str, authority: &str) -> Result<SpaceId, SpaceUrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(SpaceUrlError::TooLong);
    }
    let (scheme, rest) = url.split_once("://").ok_or(SpaceUrlError::Scheme)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(SpaceUrlError::Scheme);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, rest) = rest.split_at(end);
    if !host.eq_ignore_ascii_case(authority) {
        return Err(SpaceUrlError::Elsewhere);
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (path, _query) = rest.split_once('?').unwrap_or((rest, ""));
    let id = if let Some(id) = path.strip_prefix("/embed/") {
        id
    } else if matches!(path, "" | "/") {
        fragment.and_then(|f| f.strip_prefix("/space/")).ok_or(SpaceUrlError::NotASpace)?
    } else {
        return Err(SpaceUrlError::NotASpace);
    };
    let id = id.strip_suffix('/').unwrap_or(id);
    Ok(SpaceId::new(id)?)
}

/// The player's size within the consumer's bounds (each at least 1 pixel).
pub fn size(maxwidth: Option<u32>, maxheight: Option<u32>) -> (u32, u32) {
    let width = maxwidth.map_or(DEFAULT_WIDTH, |m| DEFAULT_WIDTH.min(m)).max(1);
    let height = maxheight.map_or(DEFAULT_HEIGHT, |m| DEFAULT_HEIGHT.min(m)).max(1);
    (width, height)
}

/// `GET /oembed`.
async fn oembed(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<OembedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    if q.format.as_deref().is_some_and(|f| f != "json") {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "format_not_supported",
            "this provider answers format=json only",
        ));
    }
    let base = base_url(&app, &headers)?;
    let id = parse_space_url(&q.url, authority(&base))
        .map_err(|e| ApiError::bad_request("invalid_url", e.to_string()))?;
    let space = public_space(&app, &id)?;
    let (width, height) = size(q.maxwidth, q.maxheight);
    let title = escape(&space.title);
    let html = format!(
        "<iframe src=\"{base}/embed/{id}\" width=\"{width}\" height=\"{height}\" \
         frameborder=\"0\" allow=\"autoplay\" loading=\"lazy\" title=\"{title}\"></iframe>"
    );
    let body = json!({
        "type": "rich",
        "version": "1.0",
        "title": space.title,
        "author_name": space.host,
        "provider_name": "Townhall",
        "provider_url": format!("{base}/"),
        "cache_age": 60,
        "html": html,
        "width": width,
        "height": height,
    });
    Ok(([(header::CACHE_CONTROL, "public, max-age=60")], axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NODE: &str = "127.0.0.1:8080";

    fn parse(url: &str) -> Result<SpaceId, SpaceUrlError> {
        parse_space_url(url, NODE)
    }

    #[test]
    fn page_and_player_urls_name_their_space() {
        let demo = Ok(SpaceId::new("demo").expect("id"));
        for url in [
            "http://127.0.0.1:8080/#/space/demo",
            "http://127.0.0.1:8080#/space/demo",
            "https://127.0.0.1:8080/#/space/demo/",
            "http://127.0.0.1:8080/embed/demo",
            "HTTP://127.0.0.1:8080/embed/demo/",
            "http://127.0.0.1:8080/embed/demo?autoplay=1#x",
        ] {
            assert_eq!(parse(url), demo, "{url}");
        }
        assert_eq!(parse("http://evil.com/embed/demo"), Err(SpaceUrlError::Elsewhere));
        assert_eq!(
            parse("http://127.0.0.1:8080.evil.com/embed/demo"),
            Err(SpaceUrlError::Elsewhere)
        );
        assert_eq!(parse("http://127.0.0.1:8081/embed/demo"), Err(SpaceUrlError::Elsewhere));
        assert_eq!(parse("ftp://127.0.0.1:8080/embed/demo"), Err(SpaceUrlError::Scheme));
        assert_eq!(parse("127.0.0.1:8080/embed/demo"), Err(SpaceUrlError::Scheme));
        assert_eq!(parse("http://127.0.0.1:8080/live/demo.opus"), Err(SpaceUrlError::NotASpace));
        assert_eq!(parse("http://127.0.0.1:8080/"), Err(SpaceUrlError::NotASpace));
        assert_eq!(parse("http://127.0.0.1:8080/x#/space/demo"), Err(SpaceUrlError::NotASpace));
        assert!(matches!(parse("http://127.0.0.1:8080/embed/Demo"), Err(SpaceUrlError::Id(_))));
        assert!(matches!(parse("http://127.0.0.1:8080/embed/a/b"), Err(SpaceUrlError::Id(_))));
        assert!(matches!(parse("http://127.0.0.1:8080/embed/"), Err(SpaceUrlError::Id(_))));
        let long = format!("http://127.0.0.1:8080/embed/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(parse(&long), Err(SpaceUrlError::TooLong));
    }

    #[test]
    fn sizes_stay_within_the_consumers_bounds() {
        assert_eq!(size(None, None), (DEFAULT_WIDTH, DEFAULT_HEIGHT));
        assert_eq!(size(Some(300), Some(1_000)), (300, DEFAULT_HEIGHT));
        assert_eq!(size(Some(10_000), Some(50)), (DEFAULT_WIDTH, 50));
        assert_eq!(size(Some(0), Some(0)), (1, 1));
    }

    proptest! {
        /// Any input: no panic, and whatever is accepted is a valid space id of this node.
        #[test]
        fn any_url_is_safe(url in "\\PC{0,80}|(https?://127\\.0\\.0\\.1:8080)?[/#?a-z0-9-]{0,40}") {
            if let Ok(id) = parse(&url) {
                prop_assert!(SpaceId::new(id.as_str()).is_ok());
                prop_assert!(url.to_ascii_lowercase().contains(NODE));
            }
        }

        /// Every space's page and player URL, on this node, name it; on another, nothing.
        #[test]
        fn every_space_url_round_trips(
            id in "[a-z0-9-]{1,64}",
            https in any::<bool>(),
            player in any::<bool>(),
            slash in any::<bool>(),
        ) {
            let scheme = if https { "https" } else { "http" };
            let path = if player { format!("/embed/{id}") } else { format!("/#/space/{id}") };
            let tail = if slash { "/" } else { "" };
            let url = format!("{scheme}://{NODE}{path}{tail}");
            prop_assert_eq!(parse(&url), Ok(SpaceId::new(id.clone()).expect("id")));
            let elsewhere = format!("{scheme}://example.com{path}{tail}");
            prop_assert_eq!(parse(&elsewhere), Err(SpaceUrlError::Elsewhere));
        }
    }
}
