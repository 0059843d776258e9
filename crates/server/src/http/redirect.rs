//! The plain-HTTP port of a TLS node (`tls_redirect`, e.g. port 80): every request is answered
//! with a permanent redirect to the same path over HTTPS, and the connection closed. Nothing
//! else is served here, so nothing can be read in the clear by mistake.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its head, and the answer to leave.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Answers every connection on `listener` with a redirect to `https://` on `tls_port`, until
/// `shutdown` flips.
pub async fn serve(listener: TcpListener, tls_port: u16, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, tls_port));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn answer(mut stream: TcpStream, tls_port: u16) {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(TIMEOUT, read).await, Ok(true)) {
        return;
    }
    let response = response_for(&head, tls_port);
    let _ = tokio::time::timeout(TIMEOUT, stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// The whole response to a request head: `308` to the HTTPS URL, or `400` when the request has
/// no usable `Host` or target.
pub fn response_for(head: &[u8], tls_port: u16) -> String {
    match location(head, tls_port) {
        Some(url) => format!(
            "HTTP/1.1 308 Permanent Redirect\r\nLocation: {url}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ),
        None => {
            let body = r#"{"error":{"code":"bad_request","message":"this port only redirects to HTTPS; the request needs a Host header and a path"}}"#;
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        }
    }
}

/// `https://host[:port]/path?query` for a request head, if it names a plausible host and an
/// origin-form target (nothing that could inject a header or another authority).
pub fn location(head: &[u8], tls_port: u16) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let path = req.path.filter(|p| p.starts_with('/') && !p.starts_with("//"))?;
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host"))?.value;
    let host = std::str::from_utf8(host).ok()?.trim();
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b);
    if host.is_empty() || host.len() > 255 || !host.bytes().all(ok) {
        return None;
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    // The name without the plain port; an IPv6 literal keeps its brackets.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let port = if tls_port == 443 { String::new() } else { format!(":{tls_port}") };
    Some(format!("https://{name}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_are_sent_to_the_same_path_over_https() {
        let get = |host: &str, path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let loc = |h: &str, p: &str, port| location(get(h, p).as_bytes(), port);
        assert_eq!(loc("live.example.com", "/#x", 443), Some("https://live.example.com/#x".into()));
        assert_eq!(
            loc("live.example.com:80", "/live/demo.opus?token=a", 443),
            Some("https://live.example.com/live/demo.opus?token=a".into())
        );
        assert_eq!(loc("127.0.0.1:8081", "/", 8443), Some("https://127.0.0.1:8443/".into()));
        assert_eq!(loc("[::1]:80", "/x", 443), Some("https://[::1]/x".into()));
        assert_eq!(loc("[::1]", "/x", 443), Some("https://[::1]/x".into()));
        // Another authority, a path or user in the host, or no host at all: refused.
        assert_eq!(loc("evil.example", "//other.example/", 443), None);
        assert_eq!(loc("a.example/evil", "/", 443), None);
        assert_eq!(loc("user@a.example", "/", 443), None);
        assert_eq!(loc("a b", "/", 443), None);
        assert_eq!(location(b"GET / HTTP/1.1\r\n\r\n", 443), None);
        assert!(response_for(b"junk\r\n\r\n", 443).starts_with("HTTP/1.1 400"));
    }

    proptest! {
        #[test]
        fn any_head_gets_a_redirect_or_a_400_and_never_a_header_break(
            head in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let r = response_for(&head, 443);
            prop_assert!(r.starts_with("HTTP/1.1 308") || r.starts_with("HTTP/1.1 400"));
            if let Some(url) = location(&head, 443) {
                prop_assert!(url.starts_with("https://"));
                prop_assert!(!url.contains('\r') && !url.contains('\n'));
            }
        }
    }
}
