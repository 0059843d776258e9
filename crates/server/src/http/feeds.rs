//! Podcast feeds of replays: `GET /feeds/recordings.rss` (every playable recording of a public
//! space on this node) and `GET /feeds/hosts/{identity}.rss` (those of the spaces one identity
//! hosted), RSS 2.0 with the iTunes tags podcast apps read.
//!
//! The XML is written by the `rss` crate (rust-syndication, iTunes extension built in): it
//! escapes text and attributes and declares the namespaces, so no hand-written escaper is
//! between a space's title and a podcast app. Only the recordings the file route serves to
//! anyone appear (the same check), so every enclosure plays. A feed holds the newest
//! [`FEED_ITEMS`]; answers are cacheable for a minute and carry an `ETag` of their bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rss::extension::itunes::{
    ITunesCategory, ITunesChannelExtension, ITunesItemExtension, ITunesOwner,
};
use rss::{Channel, Enclosure, Guid, Item};
use sha1::{Digest, Sha1};
use townhall_core::{IdError, Identity};
use townhall_media::recording::iso8601;

use crate::app::error::AppError;
use crate::app::recorder::url;
use crate::app::state::AppState;
use crate::app::store::RecordingRecord;
use crate::http::conditional::not_modified;
use crate::http::error::ApiError;
use crate::http::origin::{authority, base_url};
use crate::http::recordings::check_access;

/// Items in a feed at most: the newest recordings.
pub const FEED_ITEMS: usize = 100;

/// `Content-Type` of the feeds.
const RSS: &str = "application/rss+xml; charset=utf-8";

/// How long caches and podcast apps may reuse a feed.
const CACHE: &str = "public, max-age=60";

/// Routes: the node's feed and each host's.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/feeds/recordings.rss", get(node_feed))
        .route("/feeds/hosts/{file}", get(host_feed))
}

/// Why a host feed's path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    /// Not `{identity}.rss`.
    #[error("host feeds are at /feeds/hosts/{{identity}}.rss")]
    NotRss,
    /// The identity is empty, too long or holds control characters.
    #[error(transparent)]
    Identity(#[from] IdError),
}

/// Parses the last path segment of a host feed (already percent-decoded): `{identity}.rss`,
/// the identity as tokens name it (1 to 128 bytes, no control characters).
pub fn parse_host_file(file: &str) -> Result<Identity, HostPathError> {
    let raw = file.strip_suffix(".rss").ok_or(HostPathError::NotRss)?;
    Ok(Identity::new(raw)?)
}

/// `GET /feeds/recordings.rss`.
async fn node_feed(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    feed(app, headers, None).await
}

/// `GET /feeds/hosts/{identity}.rss`. An identity that hosted nothing public gets an empty
/// feed, not a 404: a subscription made before the first replay keeps working, and the answer
/// does not tell who exists.
async fn host_feed(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(file) = path?;
    let host = parse_host_file(&file)
        .map_err(|e| ApiError::bad_request("invalid_identity", e.to_string()))?;
    feed(app, headers, Some(host)).await
}

async fn feed(
    app: Arc<AppState>,
    headers: HeaderMap,
    host: Option<Identity>,
) -> Result<Response, ApiError> {
    let base = base_url(&app, &headers)?;
    let of = host.clone();
    let rows = app
        .blocking(move |app| {
            Ok::<_, AppError>(app.store.public_recordings(of.as_ref(), FEED_ITEMS)?)
        })
        .await?;
    // The file route's own check, anonymously: what it would refuse is not listed.
    let anonymous = HeaderMap::new();
    let rows: Vec<RecordingRecord> =
        rows.into_iter().filter(|r| check_access(&app, &anonymous, None, r).is_ok()).collect();
    let about = FeedInfo {
        base: &base,
        host: host.as_ref(),
        owner_email: app.config.feed_owner_email.as_deref(),
    };
    let xml = render(&about, &rows);
    let digest = Sha1::digest(xml.as_bytes());
    let etag =
        format!("\"{}\"", digest.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>());
    let mut res = if not_modified(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, RSS)], xml).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(res)
}

/// What a feed is about, beside its items.
#[derive(Debug, Clone, Copy)]
pub struct FeedInfo<'a> {
    /// `scheme://host[:port]` of the node (enclosures are absolute URLs).
    pub base: &'a str,
    /// The host whose feed this is; `None`: the node's.
    pub host: Option<&'a Identity>,
    /// The owner's contact, if configured.
    pub owner_email: Option<&'a str>,
}

/// The feed's XML: a channel about `about` with one item per recording, in the given order.
pub fn render(about: &FeedInfo<'_>, rows: &[RecordingRecord]) -> String {
    let base = about.base;
    let site = authority(base);
    let (title, author, description) = match about.host {
        Some(host) => (
            format!("{host} on Townhall"),
            host.to_string(),
            format!("Replays of the public spaces {host} hosted on {site}."),
        ),
        None => (
            "Townhall replays".to_owned(),
            "Townhall".to_owned(),
            format!("Replays of the public spaces on {site}."),
        ),
    };
    let itunes = ITunesChannelExtension {
        author: Some(xml_text(&author)),
        categories: vec![ITunesCategory { text: "Society & Culture".into(), subcategory: None }],
        explicit: Some("false".into()),
        owner: Some(ITunesOwner {
            name: Some(xml_text(&author)),
            email: about.owner_email.map(xml_text),
        }),
        summary: Some(xml_text(&description)),
        r#type: Some("episodic".into()),
        ..ITunesChannelExtension::default()
    };
    let channel = Channel {
        title: xml_text(&title),
        link: format!("{base}/"),
        description: xml_text(&description),
        language: Some("en".into()),
        generator: Some("Townhall".into()),
        last_build_date: rows.first().map(|r| rfc2822(r.started_at.0)),
        itunes_ext: Some(itunes),
        items: rows.iter().map(|r| item(base, r)).collect(),
        ..Channel::default()
    };
    channel.to_string()
}

/// One recording as an episode.
fn item(base: &str, rec: &RecordingRecord) -> Item {
    let date = iso8601(rec.started_at.0);
    let day = date.get(..10).unwrap_or("");
    let duration = clock(rec.duration_ms);
    Item {
        title: Some(episode_title(rec)),
        link: Some(format!("{base}/#/space/{}", rec.space)),
        description: Some(xml_text(&format!(
            "Recorded live in the space {} on {day} ({duration}).",
            rec.space
        ))),
        guid: Some(Guid { value: rec.id.clone(), permalink: false }),
        pub_date: Some(rfc2822(rec.started_at.0)),
        enclosure: Some(Enclosure {
            url: format!("{base}{}", url(&rec.id)),
            length: rec.bytes.to_string(),
            mime_type: "audio/ogg".into(),
        }),
        itunes_ext: Some(ITunesItemExtension {
            author: rec.host.as_ref().map(|h| xml_text(h.as_str())),
            duration: Some(duration),
            explicit: Some("false".into()),
            episode_type: Some("full".into()),
            ..ITunesItemExtension::default()
        }),
        ..Item::default()
    }
}

/// The recording's title as the feed carries it (never empty: podcast apps need one).
fn episode_title(rec: &RecordingRecord) -> String {
    let title = xml_text(&rec.title);
    if title.is_empty() { format!("Replay {}", rec.id) } else { title }
}

/// A date as RSS wants it (RFC 822/2822, in GMT).
fn rfc2822(unix_secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs))
}

/// `HH:MM:SS`, as `itunes:duration` takes it.
fn clock(ms: u64) -> String {
    let secs = ms / 1_000;
    format!("{:02}:{:02}:{:02}", secs / 3_600, secs / 60 % 60, secs % 60)
}

/// Text that XML 1.0 can carry: escaping happens in the writer, but a control character (a
/// title may hold one) is not allowed in XML even escaped, so it is dropped; readers trim the
/// ends, so the feed does too.
fn xml_text(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || !(c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
        })
        .collect();
    kept.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::store::RecordingState;
    use proptest::prelude::*;
    use townhall_core::{SpaceId, UnixTime};

    fn rec(id: &str, title: &str) -> RecordingRecord {
        RecordingRecord {
            id: id.into(),
            space: SpaceId::new("s").expect("id"),
            title: title.into(),
            file: format!("{id}.opus"),
            started_at: UnixTime(1_767_225_600),
            ended_at: Some(UnixTime(1_767_229_261)),
            duration_ms: 3_661_500,
            bytes: 12_345,
            state: RecordingState::Finished,
            host: Some(Identity::new("alice").expect("identity")),
            part: None,
        }
    }

    #[test]
    fn titles_round_trip_through_the_xml_and_dates_are_rfc_2822() {
        let title = "Q&A <live> \"quoted\" 'single' — Café ☕ ]]> \u{7}";
        let host = Identity::new("Zoë <&>").expect("identity");
        let about = FeedInfo {
            base: "http://127.0.0.1:8080",
            host: Some(&host),
            owner_email: Some("ops@example.com"),
        };
        let xml = render(&about, &[rec("s-1-00", title)]);
        let channel = Channel::read_from(xml.as_bytes()).expect("well-formed RSS");
        assert_eq!(channel.title, "Zoë <&> on Townhall");
        let item = &channel.items[0];
        assert_eq!(item.title.as_deref(), Some("Q&A <live> \"quoted\" 'single' — Café ☕ ]]>"));
        assert_eq!(item.pub_date.as_deref(), Some("Thu, 01 Jan 2026 00:00:00 GMT"));
        let guid = item.guid.as_ref().expect("guid");
        assert_eq!((guid.value.as_str(), guid.permalink), ("s-1-00", false));
        let enclosure = item.enclosure.as_ref().expect("enclosure");
        assert_eq!(enclosure.url, "http://127.0.0.1:8080/recordings/s-1-00.opus");
        assert_eq!(
            (enclosure.length.as_str(), enclosure.mime_type.as_str()),
            ("12345", "audio/ogg")
        );
        let itunes = item.itunes_ext.as_ref().expect("itunes");
        assert_eq!(itunes.duration.as_deref(), Some("01:01:01"));
        let owner = channel.itunes_ext.as_ref().and_then(|i| i.owner.clone()).expect("owner");
        assert_eq!(owner.email.as_deref(), Some("ops@example.com"));
        assert!(xml.contains("xmlns:itunes=\"http://www.itunes.com/dtds/podcast-1.0.dtd\""));
        assert!(!xml.contains('\u{7}'));
    }

    #[test]
    fn host_paths_are_identities_with_rss_after() {
        assert_eq!(parse_host_file("alice.rss"), Ok(Identity::new("alice").expect("id")));
        assert_eq!(parse_host_file("Zoë Q.rss"), Ok(Identity::new("Zoë Q").expect("id")));
        assert_eq!(parse_host_file("alice"), Err(HostPathError::NotRss));
        assert!(matches!(parse_host_file(".rss"), Err(HostPathError::Identity(_))));
        assert!(matches!(parse_host_file("a\nb.rss"), Err(HostPathError::Identity(_))));
        let long = format!("{}.rss", "a".repeat(Identity::MAX_LEN + 1));
        assert!(matches!(parse_host_file(&long), Err(HostPathError::Identity(_))));
    }

    proptest! {
        /// Any segment: no panic; what is accepted is a bounded identity without control
        /// characters that names the same file again.
        #[test]
        fn any_host_segment_is_safe(file in "\\PC{0,140}(\\.rss)?|.{0,20}") {
            if let Ok(host) = parse_host_file(&file) {
                prop_assert!(!host.as_str().is_empty() && host.as_str().len() <= Identity::MAX_LEN);
                prop_assert!(!host.as_str().chars().any(char::is_control));
                prop_assert_eq!(format!("{host}.rss"), file);
            }
        }

        /// Every valid identity has a feed path.
        #[test]
        fn every_identity_has_a_feed(raw in "[^\\p{Cc}]{1,40}") {
            let host = Identity::new(raw.clone()).expect("printable");
            prop_assert_eq!(parse_host_file(&format!("{raw}.rss")), Ok(host));
        }

        /// Any title: the feed parses and the title comes back, less XML's forbidden characters
        /// and the ends' whitespace (never empty).
        #[test]
        fn any_title_round_trips(title in "\\PC{1,60}|.{1,20}") {
            let about = FeedInfo { base: "http://h", host: None, owner_email: None };
            let recording = rec("s-1-00", &title);
            let xml = render(&about, std::slice::from_ref(&recording));
            let channel = Channel::read_from(xml.as_bytes()).expect("well-formed");
            prop_assert_eq!(channel.items[0].title.clone(), Some(episode_title(&recording)));
            prop_assert!(!episode_title(&recording).is_empty());
        }
    }
}
