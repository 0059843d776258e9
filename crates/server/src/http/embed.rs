//! The embeddable player, `GET /embed/{space}`: a small page (`web/embed.html`, filled in here)
//! with the space's title, its state and one play button; it plays the space live over
//! Ogg/Opus, or its newest recording once it has ended. No sign-in and no host controls, so
//! other sites may frame it: its `frame-ancestors` is `embed_frame_ancestors` (default `*`)
//! while every other page keeps `frame_ancestors`. Private spaces are not embeddable and answer
//! like unknown ones (`404`), so the page tells nobody they exist.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use townhall_core::{Space, SpaceId, SpaceState};

use crate::app::error::AppError;
use crate::app::recorder::url;
use crate::app::state::AppState;
use crate::http::api::space_id;
use crate::http::error::ApiError;
use crate::http::headers::content_security_policy;
use crate::http::origin::base_url;
use crate::http::recordings::check_access;

/// The page, with `{{name}}` slots filled per request.
const TEMPLATE: &str = include_str!("../../../../web/embed.html");

/// Routes: the player.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/embed/{id}", get(page))
}

/// A public space, or `404` (unknown and private look the same).
pub(crate) fn public_space(app: &AppState, id: &SpaceId) -> Result<Space, ApiError> {
    match app.space(id) {
        Ok(space) if space.public => Ok(space),
        _ => Err(ApiError::not_found("no such space")),
    }
}

/// `GET /embed/{space}`.
async fn page(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let space = public_space(&app, &id)?;
    let base = base_url(&app, &headers)?;
    let replay = match space.state {
        SpaceState::Ended => {
            let of = id.clone();
            let rec = app
                .blocking(move |app| Ok::<_, AppError>(app.store.newest_recording(&of)?))
                .await?;
            rec.filter(|r| check_access(&app, &HeaderMap::new(), None, r).is_ok())
        }
        SpaceState::Scheduled | SpaceState::Live => None,
    };
    // The words in English; the page's script puts them in the reader's language by the
    // names `state` and `note_id` (`web/embed.js`).
    let (audio, state, label, note, note_id) = match (space.state, &replay) {
        (SpaceState::Live, _) => (format!("/live/{id}.opus"), "live", "Live", "", ""),
        (SpaceState::Ended, Some(rec)) => (url(&rec.id), "ended", "Ended", "replay", "replay"),
        (SpaceState::Ended, None) => {
            (String::new(), "ended", "Ended", "no recording", "no_recording")
        }
        (SpaceState::Scheduled, _) => {
            (String::new(), "scheduled", "Scheduled", "not live yet", "not_live")
        }
    };
    let query = serde_urlencoded::to_string([
        ("url", format!("{base}/embed/{id}").as_str()),
        ("format", "json"),
    ])
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let oembed = escape(&format!("{base}/oembed?{query}"));
    let page = format!("{base}/#/space/{id}");
    let title = escape(&space.title);
    let html = fill(TEMPLATE, |slot| match slot {
        "title" => Some(title.as_str()),
        "state" => Some(state),
        "state_label" => Some(label),
        "note" => Some(note),
        "note_id" => Some(note_id),
        "audio" => Some(audio.as_str()),
        "disabled" => Some(if audio.is_empty() { "disabled" } else { "" }),
        "oembed" => Some(oembed.as_str()),
        "page" => Some(page.as_str()),
        _ => None,
    });
    let csp = content_security_policy(&app.config.embed_frame_ancestors);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        html,
    )
        .into_response())
}

/// Fills each `{{name}}` of `template` with `value(name)`, in one pass (a value that holds
/// `{{...}}` stays as it is); unknown slots are left empty.
pub fn fill<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push_str(value(&after[..end]).unwrap_or(""));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text for HTML, in content or in a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !matches!(c, '\t' | '\n') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_filled_once_and_titles_escaped() {
        let title = escape("<b>\"Q&A\"</b> {{audio}} 'x'");
        let html = fill("<p title=\"{{t}}\">{{t}}</p>{{audio}}{{nope}}{{open", |s| match s {
            "t" => Some(title.as_str()),
            "audio" => Some("/live/x.opus"),
            _ => None,
        });
        assert_eq!(
            html,
            "<p title=\"&lt;b&gt;&quot;Q&amp;A&quot;&lt;/b&gt; {{audio}} &#39;x&#39;\">\
             &lt;b&gt;&quot;Q&amp;A&quot;&lt;/b&gt; {{audio}} &#39;x&#39;</p>/live/x.opus{{open"
        );
    }

    #[test]
    fn the_template_has_every_slot() {
        for slot in [
            "title",
            "state",
            "state_label",
            "note",
            "note_id",
            "audio",
            "disabled",
            "oembed",
            "page",
        ] {
            assert!(TEMPLATE.contains(&format!("{{{{{slot}}}}}")), "{slot}");
        }
    }
}
