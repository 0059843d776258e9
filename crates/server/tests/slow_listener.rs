//! Backpressure: listeners that stop reading are cut off and never hold up anyone else.
//! (Its own test binary, so the process-wide metrics it reads belong to this test alone.)

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const STALLED: usize = 20;

/// Opens a WebSocket to `path` with a tiny receive buffer and never reads from it.
async fn stalled_listener(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4_096).expect("rcvbuf");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("handshake request");
    stream
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn stalled_listeners_are_dropped_and_never_delay_a_healthy_one() {
    let config = townhall_server::Config {
        stall_timeout_secs: 1,
        socket_send_buffer: Some(4_096),
        ..Default::default()
    };
    let server = server_with(config).await;
    let addr = server.addr();
    live_space(addr, "busy").await;
    let speaker = spawn_speaker(addr, "busy", "alice", 440.0, Duration::from_secs(9));

    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stalled_listener(addr, "/ws/busy?batch=1").await);
    }
    let healthy = ws(addr, "/ws/busy?batch=1").await;
    let listening = tokio::spawn(listen_ws(healthy, Duration::from_secs(8)));
    tokio::time::sleep(Duration::from_secs(7)).await;
    let metrics = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let heard = listening.await.expect("healthy listener");

    assert_eq!(heard.gaps(), 0, "the healthy listener lost frames");
    assert!(heard.seqs.len() >= 350, "the healthy listener got {} frames in 8 s", heard.seqs.len());
    let tail = heard.tail(1.0);
    assert!(townhall_media::analysis::tone_amplitude(tail, 440.0) > 0.25, "and heard the speaker");

    let cut = metric(&metrics, "townhall_stalled_connections_total");
    assert!(cut >= STALLED as f64, "stalled listeners cut: {cut}\n{metrics}");
    let listening = metric(&metrics, "townhall_listeners{space=\"busy\",protocol=\"ws\"}");
    assert_eq!(listening, 1.0, "only the healthy listener remains counted");
    drop(stalled);
    speaker.await.expect("speaker");
    server.shutdown().await;
}
