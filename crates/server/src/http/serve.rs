//! The accept loop: every connection's TLS handshake (with `--tls`) and first request head are
//! made and read here, under size and time limits, before anything else runs. `GET /live/...`
//! (the Icecast-style stream) is served from the raw connection; everything else goes to hyper
//! and the axum router, with the head replayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::app::state::AppState;
use crate::http::error::ApiError;
use crate::http::raw_http::write_error;
use crate::pipeline::net::{ConnContext, GuardedStream, PeerAddr, Rewind};
use crate::pipeline::secure::ConnStream;

/// The largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Accepts connections until `shutdown` flips, then waits for open HTTP exchanges to finish
/// (the caller bounds the wait). With `tls`, every connection speaks TLS only.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<AppState>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Every connection task holds a sender; when all are gone, every exchange has finished.
    let (open_tx, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Conn { app: app.clone(), tls: tls.clone(), router: router.clone(), shutdown: shutdown.clone(), _open: open_tx.clone() };
                    tokio::spawn(connection(stream, peer, conn));
                }
                Err(e) => {
                    // Out of file descriptors or a transient error: back off briefly instead of
                    // spinning, then keep accepting.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() {
                break;
            },
        }
    }
    drop(listener);
    drop(open_tx);
    let _ = all_closed.recv().await;
    Ok(())
}

/// What a connection task shares with the server.
struct Conn {
    app: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    shutdown: watch::Receiver<bool>,
    /// Dropped when the connection ends.
    _open: mpsc::Sender<()>,
}

/// Why a request head could not be read.
enum HeadError {
    /// Closed, timed out or failed: nothing to answer.
    Gone,
    /// Larger than [`MAX_HEAD`].
    TooLarge,
}

/// Reads the PROXY protocol header a trusted proxy starts its connections with; returns the
/// client it names (the peer for `LOCAL` health checks) and the bytes read past the header.
async fn read_proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(std::net::IpAddr, BytesMut), HeadError> {
    use townhall_shield::{ProxyParse, parse_proxy_header};
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            match parse_proxy_header(&buf) {
                Ok(ProxyParse::Complete(header)) => {
                    let rest = buf.split_off(header.header_len);
                    return Ok((header.client(peer).ip(), rest));
                }
                Ok(ProxyParse::Incomplete { .. }) => {}
                Err(_) => return Err(HeadError::Gone),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(HeadError::Gone))
}

/// The values of the X-Forwarded-For headers of a raw request head, in order.
pub fn forwarded_for(head: &[u8]) -> Vec<&[u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return Vec::new();
    }
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|h| h.value)
        .collect()
}

async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
    mut buf: BytesMut,
) -> Result<BytesMut, HeadError> {
    let read = async {
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(());
            }
            if buf.len() >= MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(HeadError::Gone),
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HeadError::Gone),
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, conn: Conn) {
    let app = &conn.app;
    // The connection's place in its address's and subnet's counts, opaque below this point.
    let hold = match app.shield.connect(peer.ip()) {
        Ok(hold) => hold.map(|h| h as Arc<dyn Send + Sync>),
        Err(e) => {
            app.shield.observe_error(e.code);
            // Before a handshake there is no way to answer a TLS client: close.
            if conn.tls.is_none() {
                write_error(&mut stream, &ApiError::from(e)).await;
            }
            return;
        }
    };
    let timeout = Duration::from_secs(app.config.header_timeout_secs);
    // A trusted proxy speaking the PROXY protocol names its client before the request.
    let (proxied, start) = if app.config.proxy_protocol && app.shield.is_trusted(peer.ip()) {
        match read_proxy_header(&mut stream, peer, timeout).await {
            Ok((client, rest)) => (Some(client), rest),
            Err(_) => {
                app.shield.observe_junk_connection(peer.ip());
                return;
            }
        }
    } else {
        (None, BytesMut::with_capacity(1024))
    };
    let stall = Duration::from_secs(app.config.stall_timeout_secs.max(1));
    let guarded = GuardedStream::new(stream, stall);
    let (mut io, start) = match &conn.tls {
        None => (ConnStream::Plain(guarded), start),
        Some(acceptor) => {
            let handshake = acceptor.accept(Rewind::new(start.freeze(), guarded));
            match tokio::time::timeout(timeout, handshake).await {
                // A certificate authority's TLS-ALPN-01 check ends with the handshake.
                Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => return,
                Ok(Ok(tls)) => (ConnStream::Tls(Box::new(tls)), BytesMut::with_capacity(1024)),
                Ok(Err(_)) | Err(_) => {
                    // Not TLS, a failed handshake, or one that never finished.
                    app.shield.observe_junk_connection(peer.ip());
                    return;
                }
            }
        }
    };
    let head = match read_head(&mut io, timeout, start).await {
        Ok(head) => head.freeze(),
        Err(HeadError::Gone) => {
            // A connection that never sent a whole request: churn, a scan or a slowloris.
            app.shield.observe_junk_connection(peer.ip());
            return;
        }
        Err(HeadError::TooLarge) => {
            app.shield.observe_junk_connection(peer.ip());
            let e = ApiError::new(
                axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "request head larger than 16 KiB",
            );
            write_error(&mut io, &e).await;
            return;
        }
    };
    let client = proxied.unwrap_or_else(|| app.shield.client(peer.ip(), forwarded_for(&head)));
    if let Err(e) = app.shield.request(client) {
        app.shield.observe_error(e.code);
        write_error(&mut io, &ApiError::from(e)).await;
        return;
    }
    if head.starts_with(b"GET /live/") {
        crate::http::ogg_http::serve_raw(io, head, app, hold, client).await;
        return;
    }
    let io = Rewind::new(head, io);
    hyper_connection(io, peer, proxied, hold, &conn).await;
}

/// The ALPN protocol of an ACME TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Serves HTTP/1.1 (and WebSocket upgrades) on a connection until it closes; on shutdown,
/// finishes the exchange in flight and closes.
async fn hyper_connection(
    io: Rewind<ConnStream>,
    peer: SocketAddr,
    proxied: Option<std::net::IpAddr>,
    hold: Option<Arc<dyn Send + Sync>>,
    conn: &Conn,
) {
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let shield = conn.app.shield.clone();
    let service = conn.router.clone().map_request(move |mut req: axum::http::Request<Incoming>| {
        let ordinal = requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Each request on a proxy's keep-alive connection may be another client's.
        let client = proxied.unwrap_or_else(|| {
            let values = req.headers().get_all("x-forwarded-for");
            shield.client(peer.ip(), values.iter().map(|v| v.as_bytes()))
        });
        req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        req.extensions_mut().insert(crate::pipeline::net::ClientAddr(client));
        req.extensions_mut().insert(ConnContext { hold: hold.clone(), ordinal });
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(conn.app.config.header_timeout_secs))
        .max_buf_size(MAX_HEAD.max(8192));
    let http = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(http);
    let mut shutdown = conn.shutdown.clone();
    tokio::select! {
        _ = http.as_mut() => return,
        _ = shutdown.wait_for(|draining| *draining) => {}
    }
    http.as_mut().graceful_shutdown();
    let _ = http.await;
}

/// Rate-limits the requests after the first on a keep-alive connection (the accept loop checked
/// the first), and tells the classifier which requests were refused as junk.
pub async fn rate_limit(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let client = req.extensions().get::<crate::pipeline::net::ClientAddr>().map(|c| c.0);
    let later = req.extensions().get::<ConnContext>().is_some_and(|c| c.ordinal > 0);
    if let (Some(client), true) = (client, later)
        && let Err(e) = app.shield.request(client)
    {
        app.shield.observe_error(e.code);
        return ApiError::from(e).into_response();
    }
    let res = next.run(req).await;
    if let Some(code) = res.extensions().get::<crate::http::error::ErrorCode>() {
        app.shield.observe_error(code.0);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forwarded_for_values_come_in_order() {
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nHost: x\r\nx-forwarded-for: 5.6.7.8, 9.9.9.9\r\n\r\n";
        assert_eq!(forwarded_for(head), vec![&b"1.2.3.4"[..], &b"5.6.7.8, 9.9.9.9"[..]]);
        assert!(forwarded_for(b"not http at all\r\n\r\n").is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_heads_never_panic(head in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = forwarded_for(&head);
        }
    }
}
