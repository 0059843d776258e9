//! LL-HLS for the millions: each live space's program stream as CMAF parts and segments, with a
//! media playlist that supports blocking reload, served with cache headers any HTTP cache or CDN
//! understands. The origin serves each object a handful of times; caches fan it out.
//!
//! `GET /hls/{space}/master.m3u8`, `index.m3u8[?_HLS_msn=M[&_HLS_part=P]]`, `init.mp4`,
//! `s{msn}.mp4`, `p{msn}.{part}.mp4`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use townhall_core::SpaceId;
use townhall_media::hls::{HlsConfig, HlsSegmenter, Position};

use crate::app::state::AppState;
use crate::http::error::ApiError;
use crate::pipeline::hls_store::HlsStore;

/// Query of a playlist request.
#[derive(Debug, Default, Deserialize)]
struct PlaylistQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<u32>,
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";

fn respond(
    body: impl Into<Body>,
    content_type: &'static str,
    cache: &'static str,
    etag: Option<String>,
) -> Response {
    let mut res = Response::new(body.into());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert(header::ETAG, tag);
    }
    res
}

/// An immutable object (init, segment, part), honouring `If-None-Match`.
fn object(
    store: &HlsStore,
    name: &str,
    bytes: Bytes,
    headers: &HeaderMap,
    cache: &'static str,
) -> Response {
    let etag = format!("\"{}-{name}\"", store.tag);
    if crate::http::conditional::not_modified(headers, &etag) {
        let mut res = respond(Body::empty(), MP4, cache, Some(etag));
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return res;
    }
    respond(bytes, MP4, cache, Some(etag))
}

/// 404 `not_here` for what this node never had (it joined the stream later: another node,
/// tried next by a cache, has it).
fn not_here(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_here",
        format!("this node joined the stream after {what}; another node may have it"),
    )
}

/// Whether this node's stream begins after segment `msn`, part `part`.
fn before_here(store: &HlsStore, msn: u64, part: u32) -> bool {
    store.segmenter().begins_at().is_none_or(|first| Position { msn, part } < first)
}

/// 404 for what this node never had, 410 for objects that left the window (they will never
/// come back), 404 for the rest.
fn missing(store: &HlsStore, msn: u64, what: &str) -> ApiError {
    if before_here(store, msn, u32::MAX) {
        return not_here(what);
    }
    if store.segmenter().expired(msn) {
        ApiError::new(StatusCode::GONE, "expired", format!("{what} left the window"))
    } else {
        ApiError::not_found(format!("no {what} (not made yet)"))
    }
}

/// Sets `Last-Modified` from a wall-clock time in µs since the epoch.
fn last_modified(mut res: Response, at_us: Option<u64>) -> Response {
    let Some(us) = at_us else { return res };
    let at = std::time::UNIX_EPOCH + Duration::from_micros(us);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
        res.headers_mut().insert(header::LAST_MODIFIED, v);
    }
    res
}

/// `GET /hls/{space}/{file}`.
pub async fn handler(
    State(app): State<Arc<AppState>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::pipeline::net::PeerAddr>>>,
    client: Option<axum::Extension<crate::pipeline::net::ClientAddr>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((raw_id, file)) = path?;
    let id = SpaceId::new(raw_id)
        .map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))?;
    let space = app.space(&id)?;
    if !space.public {
        return Err(ApiError::forbidden("HLS is for public spaces (it is made for shared caches)"));
    }
    let store = app
        .hls
        .get(&id)
        .ok_or_else(|| ApiError::conflict("not_live", "this space has not started yet"))?;
    let cfg = HlsConfig::default();
    let wait = Duration::from_secs_f64(cfg.segment_secs() * 3.0);
    let kind = match file.as_str() {
        "master.m3u8" => "master",
        "index.m3u8" if query.0.as_deref().is_some_and(|q| q.contains("_HLS_msn")) => {
            "blocking_playlist"
        }
        "index.m3u8" => "playlist",
        "init.mp4" => "init",
        "subs.m3u8" => "subtitles",
        f if f.ends_with(".vtt") => "subtitle_segment",
        f if f.starts_with('p') => "part",
        _ => "segment",
    };
    metrics::counter!(crate::metrics::HLS_REQUESTS, "kind" => kind).increment(1);
    // A player's first media playlist load (later ones block on `_HLS_msn`) is an HLS start
    // for the space's statistics; a cache in front is counted as one listener.
    if kind == "playlist"
        && let Some(live) = app.live(&id)
    {
        let key = app.listener_key(None, client.map(|c| c.0.0));
        live.feed().audience().joined(townhall_core::stats::Protocol::Hls, key);
    }
    // Attack mode covers HLS at its entry point: a player straight at this node needs a token
    // for the space to get a playlist. Caches in `trusted_proxies` are served as always (their
    // origin cost does not grow with listeners: the CDN is HLS's shield). Media objects are
    // immutable and served from memory; without a playlist a client can only guess their names,
    // at its address's request rate.
    let playlist = matches!(kind, "master" | "playlist" | "blocking_playlist" | "subtitles");
    let from_cache = peer.is_some_and(|p| app.shield.is_trusted(p.0.0.0.ip()));
    if playlist && app.shield.require_token() && !from_cache {
        let token =
            crate::app::state::bearer(&headers).ok_or_else(crate::app::state::attack_mode)?;
        app.verify(token, &id)?;
    }
    // A node that has not had a frame of this stream yet (an edge whose relay starts with this
    // request) waits for its first: only then does it know where its stream begins.
    if !matches!(kind, "master" | "init") && store.segmenter().begins_at().is_none() {
        let heard = store.wait_until(wait, |s| s.begins_at().is_some()).await;
        if !heard {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_yet",
                "no audio of this space has reached this node yet",
            ));
        }
    }
    match file.as_str() {
        "master.m3u8" => {
            // A captioned run lists its subtitle rendition (and is re-read sooner: captions
            // can be turned on while players watch).
            if captions_of(&app, &id).is_some() {
                let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
                    #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"Captions\",\
                    LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,FORCED=NO,URI=\"subs.m3u8\"\n\
                    #EXT-X-STREAM-INF:BANDWIDTH=48000,CODECS=\"opus\",SUBTITLES=\"subs\"\n\
                    index.m3u8\n";
                return Ok(respond(text, PLAYLIST, "public, max-age=5", None));
            }
            let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
                        #EXT-X-STREAM-INF:BANDWIDTH=48000,CODECS=\"opus\"\nindex.m3u8\n";
            Ok(respond(text, PLAYLIST, "public, max-age=60", None))
        }
        "subs.m3u8" => {
            let run = captions_of(&app, &id)
                .ok_or_else(|| ApiError::not_found("this space has no captions"))?;
            let range = settled(&store, &run);
            let s = store.segmenter();
            let segments: Vec<(u64, Option<String>)> = range
                .map(|msn| (msn, s.segment_start_us(msn).map(townhall_media::hls::iso8601)))
                .collect();
            let text = townhall_captions::webvtt::subtitle_playlist(
                &segments,
                s.first_msn(),
                cfg.segment_secs(),
                s.ended(),
            );
            Ok(respond(text, PLAYLIST, "public, max-age=1", None))
        }
        name if name.ends_with(".vtt") => {
            let msn: u64 = name
                .strip_suffix(".vtt")
                .and_then(|n| n.strip_prefix('v'))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ApiError::not_found("no such HLS file"))?;
            let run = captions_of(&app, &id)
                .ok_or_else(|| ApiError::not_found("this space has no captions"))?;
            if !settled(&store, &run).contains(&msn) {
                return Err(missing(&store, msn, "this subtitle segment"));
            }
            // Program frame `n` is at media time n × 20 ms, in segment n / frames_per_segment.
            let frames = frames_per_segment(&cfg);
            let from = msn * frames;
            let cues = run.board.finals_between(from, from + frames);
            let text = townhall_captions::webvtt::segment(&cues, 0);
            let res = respond(text, VTT, "public, max-age=86400, immutable", None);
            Ok(last_modified(res, store.segmenter().segment_start_us(msn)))
        }
        "index.m3u8" => {
            let q: PlaylistQuery = serde_urlencoded::from_str(query.0.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
            let Some(msn) = q.msn else {
                if q.part.is_some() {
                    return Err(ApiError::bad_request("bad_query", "_HLS_part needs _HLS_msn"));
                }
                let text = store.segmenter().playlist();
                return Ok(respond(text, PLAYLIST, "public, max-age=1", None));
            };
            if before_here(&store, msn, q.part.unwrap_or(u32::MAX)) {
                return Err(not_here("that part"));
            }
            let next = store.segmenter().next();
            if msn > next.msn + 2 {
                return Err(ApiError::bad_request(
                    "too_far",
                    "_HLS_msn is more than two segments ahead",
                ));
            }
            let done = |s: &HlsSegmenter| match q.part {
                Some(part) => s.reached(Position { msn, part }),
                None => s.ended() || s.next().msn > msn,
            };
            if !store.wait_until(wait, done).await {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_yet",
                    "the requested part did not appear in time",
                ));
            }
            let text = store.segmenter().playlist();
            Ok(respond(text, PLAYLIST, "public, max-age=6", None))
        }
        "init.mp4" => {
            Ok(object(&store, "init", store.init.clone(), &headers, "public, max-age=86400"))
        }
        name => {
            let (msn, part) =
                parse_media_name(name).ok_or_else(|| ApiError::not_found("no such HLS file"))?;
            let immutable = "public, max-age=86400, immutable";
            match part {
                Some(part) => {
                    // The preload-hinted part is held until it exists (LL-HLS blocking).
                    let next = store.segmenter().next();
                    if (Position { msn, part }) == next {
                        store.wait_until(wait, |s| s.reached(Position { msn, part })).await;
                    }
                    // (The segmenter's lock is released before `missing` takes it again.)
                    let found = store.segmenter().part(msn, part);
                    let bytes = found.ok_or_else(|| missing(&store, msn, "this part"))?;
                    let res = object(&store, &format!("p{msn}.{part}"), bytes, &headers, immutable);
                    Ok(last_modified(res, store.segmenter().segment_start_us(msn)))
                }
                None => {
                    let found = store.segmenter().segment(msn);
                    let bytes = found.ok_or_else(|| missing(&store, msn, "this segment"))?;
                    let res = object(&store, &format!("s{msn}"), bytes, &headers, immutable);
                    Ok(last_modified(res, store.segmenter().segment_start_us(msn)))
                }
            }
        }
    }
}

const VTT: &str = "text/vtt; charset=utf-8";

/// The space's captions run on this node (the latest, on or off), if it had one.
fn captions_of(app: &AppState, id: &SpaceId) -> Option<crate::app::live::CaptionsRun> {
    app.live(id)?.captions()
}

fn frames_per_segment(cfg: &HlsConfig) -> u64 {
    (cfg.part_frames * cfg.parts_per_segment) as u64
}

/// The subtitle segments that may be listed now (see
/// [`townhall_captions::webvtt::settled_segments`]): all of them once captions are off.
fn settled(store: &HlsStore, run: &crate::app::live::CaptionsRun) -> std::ops::Range<u64> {
    let cfg = HlsConfig::default();
    // Settled by the board's runs (or an origin's word, relayed); everything once none runs.
    let (settled_until, latest) = run.board.settled();
    let s = store.segmenter();
    let complete = s.first_msn()..s.next().msn;
    // A stream that ended has no segment in progress: its last segment is complete.
    townhall_captions::webvtt::settled_segments(
        complete,
        0,
        frames_per_segment(&cfg),
        settled_until,
        latest,
        townhall_captions::webvtt::LIST_DEADLINE_FRAMES,
    )
}

/// `s{msn}.mp4` → (msn, None); `p{msn}.{part}.mp4` → (msn, Some(part)).
fn parse_media_name(name: &str) -> Option<(u64, Option<u32>)> {
    let stem = name.strip_suffix(".mp4")?;
    if let Some(msn) = stem.strip_prefix('s') {
        return Some((msn.parse().ok()?, None));
    }
    let (msn, part) = stem.strip_prefix('p')?.split_once('.')?;
    Some((msn.parse().ok()?, Some(part.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn media_names() {
        assert_eq!(parse_media_name("s12.mp4"), Some((12, None)));
        assert_eq!(parse_media_name("p12.3.mp4"), Some((12, Some(3))));
        for bad in ["s.mp4", "p1.mp4", "x1.mp4", "s1.ts", "p1.2.3.mp4", "s-1.mp4"] {
            assert_eq!(parse_media_name(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn names_never_panic(name in ".{0,40}") {
            let _ = parse_media_name(&name);
        }
    }

    #[test]
    fn objects_behind_the_window_are_gone_and_later_ones_not_found() {
        let store = HlsStore::new(312, "t".into()).expect("store");
        for i in 0..1_000u64 {
            store.push(
                i,
                Bytes::from_static(&townhall_media::hls::SILENCE),
                1_700_000_000_000_000 + i * 20_000,
            );
        }
        assert_eq!(missing(&store, 0, "s0").status, StatusCode::GONE);
        assert_eq!(missing(&store, 99, "s99").status, StatusCode::NOT_FOUND);
        let res = last_modified(Response::new(Body::empty()), Some(1_700_000_000_000_000));
        assert_eq!(res.headers()[header::LAST_MODIFIED], "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    /// For the response helpers' content types.
    #[test]
    fn playlist_responses_are_typed_and_cacheable() {
        let res = respond("x", PLAYLIST, "public, max-age=1", None);
        assert_eq!(res.headers()[header::CONTENT_TYPE], PLAYLIST);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "public, max-age=1");
    }
}
