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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        let p = |s| parse_range(s, 1_000);
        assert_eq!(p("bytes=0-99"), Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=900-"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=900-5000"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=-100"), Partial { start: 900, end: 999 });
        assert_eq!(p("bytes=-5000"), Partial { start: 0, end: 999 });
        assert_eq!(p("Bytes = 5-5"), Partial { start: 5, end: 5 });
        assert_eq!(p("bytes=1000-"), Unsatisfiable);
        assert_eq!(p("bytes=1000-2000"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        assert_eq!(p("bytes=0-99999999999999999999999"), Partial { start: 0, end: 999 });
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-+2",
            "0-1",
            "bytes=--1",
            "",
        ] {
            assert_eq!(p(ignored), Full, "{ignored:?}");
        }
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match("\"a\"", "\"a\""));
        assert!(none_match("W/\"a\", \"b\"", "\"a\""));
        assert!(none_match("*", "\"a\""));
        assert!(!none_match("\"b\"", "\"a\""));
    }

    proptest! {
        /// Any header: no panic, and a partial range always lies inside the representation.
        #[test]
        fn any_range_header_is_safe(value in ".{0,40}", len in 0u64..10_000) {
            if let RangeRequest::Partial { start, end } = parse_range(&value, len) {
                prop_assert!(start <= end && end < len);
            }
        }

        /// Well-formed single ranges mean what RFC 9110 says.
        #[test]
        fn byte_ranges_select_the_right_bytes(
            len in 0u64..5_000,
            a in 0u64..6_000,
            b in proptest::option::of(0u64..6_000),
            suffix in any::<bool>(),
        ) {
            let got = if suffix {
                parse_range(&format!("bytes=-{a}"), len)
            } else {
                let b = b.map_or(String::new(), |b| b.to_string());
                parse_range(&format!("bytes={a}-{b}"), len)
            };
            let want = if suffix {
                if a == 0 || len == 0 {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial { start: len - a.min(len), end: len - 1 }
                }
            } else if b.is_some_and(|b| b < a) {
                RangeRequest::Full
            } else if a >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial { start: a, end: b.unwrap_or(u64::MAX).min(len - 1) }
            };
            prop_assert_eq!(got, want);
        }
    }
}
