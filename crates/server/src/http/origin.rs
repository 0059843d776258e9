//! The node's public origin (`scheme://host[:port]`) for the absolute URLs that leave it: podcast
//! enclosures, the embed page's oEmbed link, oEmbed's iframe. The configured `public_url` wins;
//! without one, the request's `Host` header, checked first, since it is written into XML, HTML
//! and JSON that other sites read.

use axum::http::{HeaderMap, header};

use crate::app::config::parse_public_url;
use crate::app::state::AppState;
use crate::http::error::ApiError;

/// The longest `Host` accepted (a DNS name is at most 253 bytes, plus a port).
const MAX_HOST_LEN: usize = 260;

/// Whether `host` is a plain `Host` header value: a DNS name or IPv4 address (letters, digits,
/// `-`, `.`) or a bracketed IPv6 address, then an optional port; no user, path or anything that
/// would need escaping.
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return false;
    }
    let (name_ok, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else { return false };
        let port = match rest {
            "" => None,
            rest => match rest.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (addr.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        let ok = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (ok, port)
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    name_ok && port_ok
}

/// `scheme://authority` of this node as the caller reaches it (no trailing slash): the
/// configured `public_url`, else `http://` and the request's `Host` (`400 bad_host` when it is
/// missing or not a plain host).
pub fn base_url(app: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &app.config.public_url {
        // Validated at start-up; checked again rather than trusted.
        return parse_public_url(url).map_err(ApiError::internal);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("bad_host", "a Host header is needed here"))?;
    if !valid_host(host) {
        return Err(ApiError::bad_request(
            "bad_host",
            "the Host header is not a plain host[:port] (set public_url behind a proxy)",
        ));
    }
    Ok(format!("http://{}", host.to_ascii_lowercase()))
}

/// The `host[:port]` part of a base URL from [`base_url`].
pub fn authority(base: &str) -> &str {
    base.split_once("://").map_or(base, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_hosts_pass_and_anything_else_fails() {
        for ok in ["example.com", "127.0.0.1:8080", "[::1]:8080", "[::1]", "a-b.c:1", "LOCALHOST"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "evil.com\"><script>",
            "user@host",
            "host:",
            "host:99999",
            "host:8080/x",
            "[::1",
            "[zz::1]",
            "[::1]x",
            ".dot",
            "-dash",
            "host:+80",
            "h\u{e9}",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
        assert!(!valid_host(&"a".repeat(MAX_HOST_LEN + 1)));
    }

    proptest! {
        /// Whatever arrives, an accepted host holds only characters that need no escaping in
        /// XML, HTML or JSON, and parses as a URI authority.
        #[test]
        fn accepted_hosts_are_inert(host in "\\PC{0,40}|[a-z0-9.:\\[\\]-]{0,40}") {
            if valid_host(&host) {
                prop_assert!(host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)));
                prop_assert!(host.parse::<axum::http::uri::Authority>().is_ok());
            }
        }
    }
}
