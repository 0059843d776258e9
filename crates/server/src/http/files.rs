//! Files served from the data directory (recordings, clips): single byte ranges, `ETag` and
//! `Last-Modified` with conditional requests, `Content-Disposition`, streamed in chunks.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use townhall_media::recording::iso8601;

use crate::http::conditional::{RangeRequest, none_match, parse_range};
use crate::http::error::ApiError;

/// A file to serve, and how.
#[derive(Debug)]
pub(crate) struct StaticFile<'a> {
    /// Where it is.
    pub(crate) path: &'a Path,
    /// What it is, for error messages ("recording", "clip").
    pub(crate) what: &'static str,
    /// Its media type.
    pub(crate) content_type: &'static str,
    /// Whether shared caches may keep it (`public`) or only the caller's (`private`).
    pub(crate) public: bool,
    /// Its `Content-Disposition`.
    pub(crate) disposition: String,
}

impl StaticFile<'_> {
    /// The file as `headers` ask for it: whole, a range, or `304`.
    pub(crate) async fn serve(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        let what = self.what;
        let mut file = match tokio::fs::File::open(self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ApiError::not_found(format!("the {what}'s file is missing")));
            }
            Err(e) => return Err(ApiError::internal(format!("cannot open the {what}: {e}"))),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| ApiError::internal(format!("cannot read the {what}: {e}")))?;
        let len = meta.len();
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mtime_ns = modified.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let etag = format!("\"{len:x}-{mtime_ns:x}\"");
        let last_modified = httpdate::fmt_http_date(modified);
        let mut common = HeaderMap::new();
        let mut set = |name, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                common.insert(name, v);
            }
        };
        set(header::ETAG, &etag);
        set(header::LAST_MODIFIED, &last_modified);
        set(header::ACCEPT_RANGES, "bytes");
        set(
            header::CACHE_CONTROL,
            if self.public { "public, max-age=3600" } else { "private, max-age=3600" },
        );
        let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        // Conditional GET: If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        let not_modified = match header_str(header::IF_NONE_MATCH) {
            Some(inm) => none_match(inm, &etag),
            None => header_str(header::IF_MODIFIED_SINCE)
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .is_some_and(|since| {
                    modified.duration_since(since).map_or(true, |d| d < Duration::from_secs(1))
                }),
        };
        if not_modified {
            return Ok((StatusCode::NOT_MODIFIED, common).into_response());
        }
        // If-Range: ranges only for the representation the client already has part of.
        let range_applies =
            header_str(header::IF_RANGE).is_none_or(|v| v == etag || v == last_modified);
        let range = match header_str(header::RANGE) {
            Some(value) if range_applies => parse_range(value, len),
            _ => RangeRequest::Full,
        };
        let (status, start, count) = match range {
            RangeRequest::Full => (StatusCode::OK, 0, len),
            RangeRequest::Partial { start, end } => {
                set(header::CONTENT_RANGE, &format!("bytes {start}-{end}/{len}"));
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            RangeRequest::Unsatisfiable => {
                let mut res = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the {what} has {len} bytes"),
                )
                .into_response();
                res.headers_mut().extend(common);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(res);
            }
        };
        set(header::CONTENT_TYPE, self.content_type);
        set(header::CONTENT_LENGTH, &count.to_string());
        set(header::CONTENT_DISPOSITION, &self.disposition);
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        use tokio::io::AsyncSeekExt;
        file.seek(io::SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(format!("cannot read the {what}: {e}")))?;
        let body = Body::from_stream(file_chunks(file, count));
        Ok((status, common, body).into_response())
    }
}

/// `count` bytes of `file` from where it stands, in chunks of up to 64 KiB.
pub(crate) fn file_chunks(
    file: tokio::fs::File,
    count: u64,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(left.min(64 * 1024)).unwrap_or(64 * 1024)];
        match file.read(&mut buf).await {
            Ok(0) => Some((Err(io::ErrorKind::UnexpectedEof.into()), (file, 0))),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

/// `Content-Disposition` for an Ogg/Opus file titled `title` from `date` (seconds since the
/// epoch): a readable ASCII name (`{slug}-{yyyy-mm-dd}.opus`, else `{id}.opus`) and the UTF-8
/// title (RFC 6266), `inline` or `attachment`.
pub fn content_disposition(title: &str, date: u64, id: &str, attachment: bool) -> String {
    let date = iso8601(date);
    let date = date.get(..10).unwrap_or("");
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(60).collect();
    let base = if slug.is_empty() { id.to_owned() } else { format!("{slug}-{date}") };
    let mut encoded = String::new();
    let title: String = title.chars().filter(|c| !c.is_control()).take(100).collect();
    for b in format!("{title} {date}.opus").trim_start().bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if attachment { "attachment" } else { "inline" };
    format!("{kind}; filename=\"{base}.opus\"; filename*=UTF-8''{encoded}")
}
