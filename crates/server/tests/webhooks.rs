//! Webhooks on a real server: a receiver on loopback that refuses the first delivery gets it
//! again (same event id) after the retry; every request is signed with the API secret; a
//! speaker taking and leaving a seat, and the space ending, are reported; an `https://`
//! receiver whose CA the node trusts (`tls_client_ca`) gets them too.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use common::*;
use serde_json::Value;
use tokio::sync::mpsc;
use townhall_core::Role;
use townhall_core::webhook::verify;
use townhall_server::Config;

/// One request the receiver got.
#[derive(Debug)]
struct Hook {
    headers: HeaderMap,
    body: Bytes,
    json: Value,
}

impl Hook {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Hook>,
}

/// Records the request; answers 500 to the very first one and 200 after.
async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let first = r.seen.fetch_add(1, Ordering::SeqCst) == 0;
    let _ = r.tx.send(Hook { headers, body, json });
    if first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Hook>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(Receiver { seen: Arc::new(AtomicUsize::new(0)), tx });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// The webhook secret the test server is given.
const WEBHOOK_SECRET: &str = "the webhook secret of this test";

/// The next request, checked: JSON, our user agent, a valid signature with the webhook secret
/// (and not with the token secret: receivers must not hold the key that mints tokens).
async fn next_hook(rx: &mut mpsc::UnboundedReceiver<Hook>) -> Hook {
    let hook = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a webhook in time")
        .expect("receiver running");
    assert_eq!(hook.header("content-type"), "application/json");
    assert_eq!(hook.header("user-agent"), "townhall");
    let now = townhall_server::clock::now_unix();
    let signature = hook.header("townhall-signature");
    verify(WEBHOOK_SECRET.as_bytes(), signature, &hook.body, now, 300).expect("signature verifies");
    assert!(verify(TEST_API_SECRET.as_bytes(), signature, &hook.body, now, 300).is_err());
    assert!(verify(b"some other secret entirely", signature, &hook.body, now, 300).is_err());
    assert!(hook.json["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{}", hook.json);
    assert!(hook.json["created_at"].as_u64().is_some_and(|t| t.abs_diff(now.0) < 300));
    hook
}

#[tokio::test]
async fn events_are_signed_retried_and_cover_a_space_from_start_to_end() {
    let (recv_addr, mut hooks) = receiver().await;
    let server = server_with(Config {
        webhook_urls: vec![format!("http://{recv_addr}/hooks")],
        webhook_retry_base_ms: 50,
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        ..Config::default()
    })
    .await;
    let addr = server.addr();

    // Going live: space_started, refused once (500), then delivered again with the same id.
    live_space(addr, "hooks").await;
    let first = next_hook(&mut hooks).await;
    assert_eq!(first.json["event"], "space_started", "{}", first.json);
    assert_eq!(first.json["space"]["id"], "hooks");
    assert_eq!(first.json["space"]["title"], "Test hooks");
    let again = next_hook(&mut hooks).await;
    assert_eq!(again.json["event"], "space_started", "{}", again.json);
    assert_eq!(again.json["id"], first.json["id"], "a retry carries the same event id");
    assert_eq!(again.body, first.body, "a retry sends the same bytes");

    // A speaker takes a seat, then hangs up.
    let path = format!("/ws/hooks?mode=speak&token={}", token("alice", Role::Speaker, "hooks"));
    let mut speaker = ws(addr, &path).await;
    assert_eq!(next_json(&mut speaker).await["type"], "hello");
    let joined = next_hook(&mut hooks).await;
    assert_eq!(joined.json["event"], "speaker_joined", "{}", joined.json);
    assert_eq!(joined.json["space"]["id"], "hooks");
    assert_eq!(joined.json["speaker"]["identity"], "alice");
    assert_eq!(joined.json["speaker"]["role"], "speaker");
    drop(speaker);
    let left = next_hook(&mut hooks).await;
    assert_eq!(left.json["event"], "speaker_left", "{}", left.json);
    assert_eq!(left.json["speaker"]["identity"], "alice");
    assert_ne!(left.json["id"], joined.json["id"]);

    // Ending the space.
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/hooks/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    let ended = next_hook(&mut hooks).await;
    assert_eq!(ended.json["event"], "space_ended", "{}", ended.json);
    assert_eq!(ended.json["space"]["id"], "hooks");

    // Nothing else was sent (no duplicate of a delivered event).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hooks.try_recv().is_err(), "no further webhooks");

    // The outcomes are counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = http()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let count = |outcome: &str| {
            let prefix = format!("townhall_webhooks_total{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if count("delivered") >= 4.0 && count("retried") >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "webhook metrics: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

/// The same receiver over TLS, with the certificate `ca` signed.
async fn tls_receiver(ca: &common::tls::TestCa) -> (SocketAddr, mpsc::UnboundedReceiver<Hook>) {
    use rustls_pki_types::pem::PemObject;
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(Receiver { seen: Arc::new(AtomicUsize::new(1)), tx });
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&ca.cert)
        .expect("chain")
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&ca.key).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn an_https_receiver_gets_signed_events_when_its_ca_is_trusted() {
    let ca = common::tls::TestCa::new("webhooks");
    let ca_file = ca.cert.with_file_name("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).expect("write the CA");
    let (hooks, mut rx) = tls_receiver(&ca).await;
    let server = server_with(Config {
        webhook_urls: vec![format!("https://127.0.0.1:{}/hooks", hooks.port())],
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        tls_client_ca: Some(ca_file.clone()),
        ..Config::default()
    })
    .await;
    live_space(server.addr(), "secure-hooks").await;
    let hook = next_hook(&mut rx).await;
    assert_eq!(hook.json["event"], "space_started", "{}", hook.json);
    assert_eq!(hook.json["space"]["id"], "secure-hooks", "{}", hook.json);
    server.shutdown().await;
    let _ = std::fs::remove_file(&ca_file);
}
