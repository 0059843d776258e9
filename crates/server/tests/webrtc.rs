//! WebRTC on a real server: a Rust WHIP client (str0m, the server's own stack, acting as the
//! client) publishes a tone; WebSocket and WHEP listeners decode it; two WebRTC speakers hear
//! each other and not themselves; the signalling's error paths answer what RFC 9725 asks.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use townhall_client::rtc_client::{self, Mode, RtcSession};
use townhall_client::target::Target;
use townhall_core::Role;
use townhall_media::analysis::{ToneGenerator, tone_amplitude};
use townhall_media::{FRAME_SAMPLES, SAMPLE_RATE};

fn target(addr: SocketAddr) -> Target {
    Target::new(addr).expect("loopback target")
}

/// Publishes a tone over WHIP for `duration` (20 ms pacing); returns the session.
async fn whip_tone(
    addr: SocketAddr,
    space: &str,
    who: &str,
    freq: f32,
    hear_back: bool,
) -> (RtcSession, tokio::task::JoinHandle<()>) {
    let token = token(who, Role::Speaker, space);
    let mut session = rtc_client::connect(
        &target(addr),
        "127.0.0.1".parse().expect("ip"),
        &format!("/whip/{space}"),
        Some(&token),
        Mode::Publish { hear_back },
        None,
    )
    .await
    .expect("WHIP publish");
    assert!(session.location.starts_with(&format!("/whip/{space}/")), "{}", session.location);
    session.connected(Duration::from_secs(10)).await.expect("WHIP connects");
    let send = session.send.clone();
    let sender = tokio::spawn(async move {
        let mut tone = ToneGenerator::new(freq, 0.4);
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                .expect("encoder");
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for seq in 0u32.. {
            tick.tick().await;
            let packet = enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode");
            let now = townhall_server::clock::now_us();
            if send.send((seq, Bytes::from(packet), now)).await.is_err() {
                return;
            }
        }
    });
    (session, sender)
}

/// Decodes what a session receives for `duration`; returns PCM and the frame numbers.
async fn receive_for(session: &mut RtcSession, duration: Duration) -> (Vec<f32>, Vec<u32>) {
    let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
    let mut pcm = Vec::new();
    let mut seqs = Vec::new();
    let mut buf = [0.0f32; FRAME_SAMPLES * 6];
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, session.audio.recv()).await {
        let n = dec.decode_float(&frame.payload, &mut buf, false).expect("decode");
        pcm.extend_from_slice(&buf[..n]);
        seqs.push(frame.seq);
    }
    (pcm, seqs)
}

fn last_second(pcm: &[f32]) -> &[f32] {
    &pcm[pcm.len().saturating_sub(SAMPLE_RATE as usize)..]
}

#[tokio::test]
async fn a_whip_tone_reaches_websocket_and_whep_listeners() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "stage").await;

    let (speaker, sender) = whip_tone(addr, "stage", "alice", 440.0, false).await;
    let mut whep = rtc_client::connect(
        &target(addr),
        "127.0.0.2".parse().expect("ip"),
        "/whep/stage",
        None,
        Mode::Subscribe,
        None,
    )
    .await
    .expect("WHEP subscribe");
    assert!(whep.location.starts_with("/whep/stage/"));
    whep.connected(Duration::from_secs(10)).await.expect("WHEP connects");
    let ws_listener = tokio::spawn(listen_ws(ws(addr, "/ws/stage").await, Duration::from_secs(4)));
    let (pcm, seqs) = receive_for(&mut whep, Duration::from_secs(4)).await;
    let heard = ws_listener.await.expect("ws listener");

    assert!(seqs.len() >= 150, "WHEP frames in 4 s: {}", seqs.len());
    let lost: u32 = seqs.windows(2).map(|w| w[1].wrapping_sub(w[0]).saturating_sub(1)).sum();
    assert!(lost <= 2, "WHEP lost {lost} frames on loopback");
    let whep_amp = tone_amplitude(last_second(&pcm), 440.0);
    assert!(whep_amp > 0.25, "440 Hz over WHEP: {whep_amp}");
    assert!(tone_amplitude(last_second(&pcm), 660.0) < 0.05, "and nothing else");
    let ws_amp = tone_amplitude(heard.tail(1.0), 440.0);
    assert!(ws_amp > 0.25, "440 Hz over WebSocket from a WHIP speaker: {ws_amp}");

    // The space view counts the WHEP listener and shows the WHIP speaker on stage.
    let view: serde_json::Value = http()
        .get(format!("http://{addr}/api/v1/spaces/stage"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["listeners_by_protocol"]["webrtc"], 1, "{view}");
    assert_eq!(view["speakers"][0]["identity"], "alice", "{view}");

    // DELETE ends a session; a second DELETE finds nothing.
    let t = target(addr);
    let lo = "127.0.0.1".parse().expect("ip");
    assert_eq!(rtc_client::delete(&t, lo, &whep.location).await.expect("delete"), 200);
    // The server tells the peer (DTLS close_notify): the client knows at once, not by timeout.
    let told = tokio::time::Instant::now();
    while !whep.is_closed() && told.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(whep.is_closed(), "the WHEP client was told its session ended");
    assert_eq!(rtc_client::delete(&t, lo, &whep.location).await.expect("delete"), 404);
    assert_eq!(rtc_client::delete(&t, lo, &speaker.location).await.expect("delete"), 200);
    sender.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view: serde_json::Value = http()
        .get(format!("http://{addr}/api/v1/spaces/stage"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["listeners_by_protocol"]["webrtc"], 0, "{view}");
    assert_eq!(view["speakers"].as_array().map(Vec::len), Some(0), "{view}");
    whep.stop().await;
    speaker.stop().await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_webrtc_speakers_hear_each_other_and_not_themselves() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "duo").await;
    let (mut alice, a_send) = whip_tone(addr, "duo", "alice", 440.0, true).await;
    let (mut bob, b_send) = whip_tone(addr, "duo", "bob", 660.0, true).await;
    let (alice_heard, bob_heard) = tokio::join!(
        receive_for(&mut alice, Duration::from_secs(4)),
        receive_for(&mut bob, Duration::from_secs(4))
    );
    let (a, b) = (last_second(&alice_heard.0), last_second(&bob_heard.0));
    assert!(tone_amplitude(a, 660.0) > 0.25, "alice hears bob: {}", tone_amplitude(a, 660.0));
    assert!(tone_amplitude(a, 440.0) < 0.05, "alice not herself: {}", tone_amplitude(a, 440.0));
    assert!(tone_amplitude(b, 440.0) > 0.25, "bob hears alice: {}", tone_amplitude(b, 440.0));
    assert!(tone_amplitude(b, 660.0) < 0.05, "bob not himself: {}", tone_amplitude(b, 660.0));
    a_send.abort();
    b_send.abort();
    alice.stop().await;
    bob.stop().await;
    server.shutdown().await;
}

/// The UDP port of the host candidate in an SDP answer.
fn answer_port(answer: &str) -> u16 {
    answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let typ = words.iter().position(|w| *w == "typ")?;
            words.get(typ.checked_sub(1)?)?.parse().ok()
        })
        .expect("a host candidate with a port")
}

async fn whep(addr: SocketAddr, space: &str, source: &str) -> RtcSession {
    let mut session = rtc_client::connect(
        &target(addr),
        source.parse().expect("ip"),
        &format!("/whep/{space}"),
        None,
        Mode::Subscribe,
        None,
    )
    .await
    .expect("WHEP subscribe");
    session.connected(Duration::from_secs(10)).await.expect("WHEP connects");
    session
}

#[tokio::test]
async fn two_rtc_threads_share_the_sessions_and_every_listener_hears_the_speaker() {
    let config = townhall_server::Config { webrtc_threads: Some(2), ..Default::default() };
    let server = server_with(config).await;
    let addr = server.addr();
    live_space(addr, "shards").await;
    // Placement by fewest sessions: the speaker on one thread, listeners on both.
    let (speaker, sender) = whip_tone(addr, "shards", "alice", 440.0, false).await;
    let mut listeners = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        listeners.push(whep(addr, "shards", source).await);
    }
    let speaker_port = answer_port(&speaker.answer);
    let ports: Vec<u16> = listeners.iter().map(|l| answer_port(&l.answer)).collect();
    assert_ne!(ports[0], speaker_port, "the first listener is on the other thread: {ports:?}");
    assert_eq!(ports[1], speaker_port, "then the speaker's thread again: {ports:?}");
    assert_eq!(ports[2], ports[0], "{ports:?}");

    let heard = futures_util::future::join_all(
        listeners.iter_mut().map(|l| receive_for(l, Duration::from_secs(4))),
    )
    .await;
    for ((pcm, seqs), port) in heard.iter().zip(&ports) {
        assert!(seqs.len() >= 150, "WHEP frames in 4 s on port {port}: {}", seqs.len());
        let lost: u32 = seqs.windows(2).map(|w| w[1].wrapping_sub(w[0]).saturating_sub(1)).sum();
        assert!(lost <= 2, "WHEP lost {lost} frames on port {port}");
        let amp = tone_amplitude(last_second(pcm), 440.0);
        assert!(amp > 0.25, "440 Hz over WHEP on port {port}: {amp}");
    }
    let metrics = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    // (The recorder is the process's: other tests' sessions count too, so no exact values.)
    for thread in ["0", "1"] {
        let line = format!("townhall_webrtc_thread_sessions{{thread=\"{thread}\"}} ");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // DELETE reaches the session's own thread; the space's end reaches both.
    let gone = listeners.remove(0);
    let status =
        rtc_client::delete(&target(addr), "127.0.0.2".parse().expect("ip"), &gone.location)
            .await
            .expect("delete");
    assert_eq!(status, 200);
    gone.stop().await;
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/shards/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !listeners.iter().all(RtcSession::is_closed) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listeners.iter().all(RtcSession::is_closed), "every thread hung up on its listeners");
    sender.abort();
    speaker.stop().await;
    for l in listeners {
        l.stop().await;
    }
    server.shutdown().await;
}

/// A valid browser-like offer made by the client stack, for the error paths.
fn offer(direction: townhall_webrtc::Direction) -> String {
    let cfg = townhall_webrtc::PeerConfig {
        candidates: vec!["127.0.0.1:9".parse().expect("addr")],
        cert: None,
        ice_lite: false,
    };
    townhall_webrtc::Peer::offer(direction, &cfg, std::time::Instant::now()).expect("offer").1
}

async fn post_sdp(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    ctype: &str,
    body: String,
) -> reqwest::Response {
    let mut req =
        http().post(format!("http://{addr}{path}")).header("content-type", ctype).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("post")
}

#[tokio::test]
async fn signalling_errors_answer_with_the_rfc_statuses() {
    use townhall_webrtc::Direction;
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "errs").await;
    let speaker = token("sam", Role::Speaker, "errs");
    let listener = token("lee", Role::Listener, "errs");
    let send = offer(Direction::SendOnly);
    let sdp = "application/sdp";

    let res = post_sdp(addr, "/whip/errs", Some(&speaker), "application/json", send.clone()).await;
    assert_error(res, 415, "unsupported_media_type").await;
    assert_error(post_sdp(addr, "/whip/errs", None, sdp, send.clone()).await, 401, "unauthorized")
        .await;
    let res = post_sdp(addr, "/whip/errs", Some("not-a-jwt"), sdp, send.clone()).await;
    assert_eq!(res.status(), 401);
    assert_error(
        post_sdp(addr, "/whip/errs", Some(&listener), sdp, send.clone()).await,
        403,
        "forbidden",
    )
    .await;
    let res = post_sdp(addr, "/whip/errs", Some(&speaker), sdp, "v=0\r\nnonsense".into()).await;
    assert_error(res, 400, "no_audio").await;
    let res = post_sdp(addr, "/whip/errs", Some(&speaker), sdp, "garbage".into()).await;
    assert_eq!(res.status(), 400);
    let pcmu = send.replace("opus/48000/2", "PCMU/8000");
    assert_error(post_sdp(addr, "/whip/errs", Some(&speaker), sdp, pcmu).await, 400, "no_opus")
        .await;
    let recv = offer(Direction::RecvOnly);
    let res = post_sdp(addr, "/whip/errs", Some(&speaker), sdp, recv.clone()).await;
    assert_error(res, 400, "wrong_direction").await;
    let res = post_sdp(addr, "/whep/errs", None, sdp, send.clone()).await;
    assert_error(res, 400, "wrong_direction").await;
    let res = post_sdp(addr, "/whep/nowhere", None, sdp, recv.clone()).await;
    assert_error(res, 404, "not_found").await;
    let big = "a".repeat(40 * 1024);
    let res = post_sdp(addr, "/whep/errs", None, sdp, big).await;
    assert_eq!(res.status(), 413);

    // Unknown sessions, trickle ICE, preflight.
    let res = http()
        .delete(format!("http://{addr}/whip/errs/0123456789abcdef"))
        .send()
        .await
        .expect("delete");
    assert_error(res, 404, "not_found").await;
    let res = http()
        .patch(format!("http://{addr}/whip/errs/0123456789abcdef"))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates")
        .send()
        .await
        .expect("patch");
    assert_eq!(res.headers()["allow"], "DELETE, OPTIONS");
    assert_error(res, 405, "no_trickle").await;
    let res = http()
        .request(reqwest::Method::OPTIONS, format!("http://{addr}/whip/errs"))
        .send()
        .await
        .expect("options");
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["accept-post"], "application/sdp");

    // A good offer is answered; the answer is SDP with a Location; the space's end closes it.
    let res = post_sdp(addr, "/whep/errs", None, sdp, recv.clone()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["content-type"], sdp);
    let location = res.headers()["location"].to_str().expect("location").to_owned();
    let answer = res.text().await.expect("answer");
    assert!(answer.contains("a=ice-lite") && answer.contains("opus/48000"), "{answer}");
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/errs/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = http().delete(format!("http://{addr}{location}")).send().await.expect("delete");
    assert_eq!(res.status(), 404, "the session ended with its space");
    assert_error(post_sdp(addr, "/whep/errs", None, sdp, recv).await, 410, "ended").await;
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_are_limited_per_client_and_per_node() {
    use townhall_webrtc::Direction;
    // Two RTC threads: the limits are the node's, over both.
    let config = townhall_server::Config {
        webrtc_max_sessions: 3,
        webrtc_sessions_per_client: 2,
        webrtc_threads: Some(2),
        ..townhall_server::Config::default()
    };
    let server = server_with(config).await;
    let addr = server.addr();
    live_space(addr, "lim").await;
    let recv = offer(Direction::RecvOnly);
    let lee = token("lee", Role::Listener, "lim");
    let sdp = "application/sdp";
    for _ in 0..2 {
        assert_eq!(post_sdp(addr, "/whep/lim", Some(&lee), sdp, recv.clone()).await.status(), 201);
    }
    let res = post_sdp(addr, "/whep/lim", Some(&lee), sdp, recv.clone()).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "too_many_sessions").await;
    let kim = token("kim", Role::Listener, "lim");
    assert_eq!(post_sdp(addr, "/whep/lim", Some(&kim), sdp, recv.clone()).await.status(), 201);
    let ann = token("ann", Role::Listener, "lim");
    let res = post_sdp(addr, "/whep/lim", Some(&ann), sdp, recv).await;
    assert_error(res, 503, "webrtc_full").await;
    server.shutdown().await;
}
