//! Conditional and partial GETs (RFC 9110 §13 and §14), shared by every route that serves
//! stored objects (recordings, LL-HLS parts and segments): `If-None-Match` against an `ETag`,
//! and single byte ranges.

use axum::http::{HeaderMap, header};

/// What a `Range` header asks of a representation of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole representation (no range, or one this server ignores: another unit, bad
    /// syntax, several ranges).
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// A single byte range that no byte satisfies: `416`.
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14) against a length of `len` bytes. Single byte ranges
/// are honoured (`a-b`, `a-`, `-n`); anything else is ignored, as the RFC allows.
pub fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some((unit, set)) = value.split_once('=') else { return RangeRequest::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else { return RangeRequest::Full };
    let number = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too long to be a position in any file: clamp (a huge last-pos means "to the end").
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    if first.trim().is_empty() {
        return match number(last) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial { start: len.saturating_sub(n), end: len - 1 },
        };
    }
    let Some(start) = number(first) else { return RangeRequest::Full };
    let end = if last.trim().is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial { start, end: end.min(len - 1) }
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison).
pub fn none_match(value: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    value.split(',').any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// Whether the request's `If-None-Match` matches `etag`: the client's copy is current (`304`).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| none_match(inm, etag))
}
