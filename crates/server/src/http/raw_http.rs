//! Responses written straight onto a raw socket, outside hyper: errors the accept loop answers
//! before any router runs, and the head of an Icecast-style stream served from the socket.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::http::error::ApiError;

/// Writes an API error as a complete HTTP/1.1 response on a raw connection (plain or TLS),
/// then the connection is closed by the caller.
pub async fn write_error<S: AsyncWrite + Unpin>(stream: &mut S, e: &ApiError) {
    e.count();
    let body = e.body().to_string();
    let retry = e.retry_after_secs().map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n",
        e.status.as_u16(),
        e.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}

/// A raw response head for a streaming body that ends when the connection closes.
pub fn streaming_head(content_type: &str, extra: &[(&str, String)]) -> Bytes {
    let mut head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache, no-store\r\n\
         X-Content-Type-Options: nosniff\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    Bytes::from(head)
}
