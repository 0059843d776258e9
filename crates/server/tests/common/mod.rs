//! Shared helpers for the server's integration tests: a real server on loopback, real sockets,
//! real Opus through libopus.
#![allow(dead_code, unreachable_pub)] // shared by every test crate; each uses some

pub mod nodes;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use townhall_core::{Claims, Identity, Role, SpaceScope, TokenKeys, UnixTime};
use townhall_media::analysis::ToneGenerator;
use townhall_media::wire::parse_program_batch;
use townhall_media::{FRAME_SAMPLES, SAMPLE_RATE, SpeakerFrame};
use townhall_server::{Config, Server};

/// A WebSocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Starts a server on an ephemeral loopback port, without the demo.
pub async fn server() -> Server {
    server_with(Config::default()).await
}

/// Starts a server with `config` (listen address and demo overridden).
pub async fn server_with(config: Config) -> Server {
    start_test_server(config, false).await
}

/// Starts a server with the demo space and its speaker bot.
pub async fn demo_server(config: Config) -> Server {
    start_test_server(config, true).await
}

async fn start_test_server(config: Config, demo: bool) -> Server {
    // Adaptive admission (lag-based) is off unless a test asks for a non-default threshold:
    // test machines are noisy.
    let overload_lag_ms = if config.overload_lag_ms == Config::default().overload_lag_ms {
        0
    } else {
        config.overload_lag_ms
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        demo,
        overload_lag_ms,
        api_key: config.api_key.or_else(|| Some(TEST_API_KEY.into())),
        api_secret: config.api_secret.or_else(|| Some(TEST_API_SECRET.into())),
        ..config
    };
    townhall_server::start(config).await.expect("server starts")
}

/// The key pair test servers are configured with (servers have no built-in pair).
pub const TEST_API_KEY: &str = "test-key";
/// The secret of [`TEST_API_KEY`].
pub const TEST_API_SECRET: &str = "a test secret, not for any deployment";

/// The keys the test servers use.
pub fn keys() -> TokenKeys {
    TokenKeys::new(TEST_API_KEY, TEST_API_SECRET.as_bytes())
}

/// A token for `who` with `role` on `space` ("*" for all).
pub fn token(who: &str, role: Role, space: &str) -> String {
    let scope = SpaceScope::try_from(space.to_owned()).expect("scope");
    let now = UnixTime(townhall_server::clock::now_unix().0);
    keys().mint(Identity::new(who).expect("identity"), role, scope, now, 3_600).expect("mint")
}

/// An operator's host token for every space (what the node prints at start-up).
pub fn host() -> String {
    let now = UnixTime(townhall_server::clock::now_unix().0);
    let who = Identity::new("host").expect("identity");
    let claims = Claims {
        op: true,
        ..Claims::new(TEST_API_KEY, who, Role::Host, SpaceScope::Any, now, 3_600)
    };
    keys().mint_claims(claims).expect("mint")
}

/// An HTTP client for the API.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

/// Creates a live space with this id through the API.
pub async fn live_space(addr: SocketAddr, id: &str) {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces"))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": id, "title": format!("Test {id}"), "live": true }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "create space: {}", res.text().await.unwrap_or_default());
}

/// Opens a WebSocket to `path` (e.g. `/ws/x?mode=speak&token=...`). A speaking token written
/// in the path is sent in the `Authorization` header instead, as real clients must (URLs carry
/// only listening tickets).
pub async fn ws(addr: SocketAddr, path: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (path, token) = speaking_token(path);
    let mut req = format!("ws://{addr}{path}").into_client_request().expect("request");
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header");
        req.headers_mut().insert("authorization", value);
    }
    let (ws, _) =
        tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
            .expect("websocket handshake");
    ws
}

/// Splits the `token=` out of a speaking path (`mode=speak`), if there is one.
pub fn speaking_token(path: &str) -> (String, Option<String>) {
    let Some((base, query)) = path.split_once('?') else { return (path.to_owned(), None) };
    if !query.split('&').any(|p| p == "mode=speak") {
        return (path.to_owned(), None);
    }
    let token = query.split('&').find_map(|p| p.strip_prefix("token=")).map(str::to_owned);
    let rest: Vec<&str> = query.split('&').filter(|p| !p.starts_with("token=")).collect();
    (format!("{base}?{}", rest.join("&")), token)
}

/// Reads the next text message as JSON (skipping binary), within 5 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg =
            tokio::time::timeout_at(deadline, ws.next()).await.expect("a text message in time");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended before a text message: {other:?}"),
        }
    }
}

/// A speaker bot: encodes a tone with libopus and sends it in real time over a WebSocket.
pub struct ToneSpeaker {
    tone: ToneGenerator,
    encoder: opus::Encoder,
    seq: u32,
}

impl ToneSpeaker {
    /// A speaker of a `freq` Hz tone at `amplitude`.
    pub fn new(freq: f32, amplitude: f32) -> ToneSpeaker {
        let encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                .expect("encoder");
        ToneSpeaker { tone: ToneGenerator::new(freq, amplitude), encoder, seq: 0 }
    }

    /// The next frame as a wire message.
    pub fn next_message(&mut self) -> Bytes {
        let pcm = self.tone.next_frame();
        let payload = self.encoder.encode_vec_float(&pcm, 1275).expect("encode");
        let frame = SpeakerFrame {
            seq: self.seq,
            sent_at_us: townhall_server::clock::now_us(),
            payload: Bytes::from(payload),
        };
        self.seq += 1;
        frame.encode()
    }
}

impl ToneSpeaker {
    /// The next frame as a wire message, silent.
    pub fn next_silence(&mut self) -> Bytes {
        let payload = self.encoder.encode_vec_float(&[0.0; FRAME_SAMPLES], 1275).expect("encode");
        let frame = SpeakerFrame {
            seq: self.seq,
            sent_at_us: townhall_server::clock::now_us(),
            payload: Bytes::from(payload),
        };
        self.seq += 1;
        frame.encode()
    }
}

/// A speaker saying `phrases` phrases into `space`: each a 440 Hz tone for `on`, then silence
/// for `off` (long enough to end a phrase for the captions), in real time. Returns when done.
pub fn spawn_phrases(
    addr: SocketAddr,
    space: &str,
    who: &str,
    phrases: usize,
    on: Duration,
    off: Duration,
) -> tokio::task::JoinHandle<()> {
    let path = format!("/ws/{space}?mode=speak&token={}", token(who, Role::Speaker, space));
    tokio::spawn(async move {
        let mut ws = ws(addr, &path).await;
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "hello");
        let (mut sink, mut stream) = ws.split();
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        let mut bot = ToneSpeaker::new(440.0, 0.4);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // The space may end while it speaks: it then stops.
        'speaking: for _ in 0..phrases {
            for loud in (0..on.as_millis() / 20)
                .map(|_| true)
                .chain((0..off.as_millis() / 20).map(|_| false))
            {
                tick.tick().await;
                let frame = if loud { bot.next_message() } else { bot.next_silence() };
                if sink.send(Message::Binary(frame)).await.is_err() {
                    break 'speaking;
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        drain.abort();
    })
}

/// Connects a tone speaker to `space`, sends for `duration` in real time (20 ms pacing) while
/// decoding the mix-minus it gets back, then closes. Returns what the speaker heard.
pub fn spawn_speaker(
    addr: SocketAddr,
    space: &str,
    who: &str,
    freq: f32,
    duration: Duration,
) -> tokio::task::JoinHandle<Heard> {
    spawn_speaker_at(addr, space, who, freq, 0.4, duration)
}

/// [`spawn_speaker`] with the tone at `amplitude` (0 sends silence).
pub fn spawn_speaker_at(
    addr: SocketAddr,
    space: &str,
    who: &str,
    freq: f32,
    amplitude: f32,
    duration: Duration,
) -> tokio::task::JoinHandle<Heard> {
    let path = format!("/ws/{space}?mode=speak&token={}", token(who, Role::Speaker, space));
    tokio::spawn(async move {
        let mut ws = ws(addr, &path).await;
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "hello");
        let (mut sink, stream) = ws.split();
        let reader = tokio::spawn(listen_stream(stream, duration + Duration::from_secs(2)));
        let mut bot = ToneSpeaker::new(freq, amplitude);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..duration.as_millis() / 20 {
            tick.tick().await;
            sink.send(Message::Binary(bot.next_message())).await.expect("send frame");
        }
        let _ = sink.send(Message::Close(None)).await;
        reader.await.expect("reader")
    })
}

/// What a WebSocket listener received.
#[derive(Debug, Default)]
pub struct Heard {
    /// Program sequence numbers, in arrival order.
    pub seqs: Vec<u32>,
    /// Decoded audio.
    pub pcm: Vec<f32>,
    /// Text events.
    pub events: Vec<Value>,
}

impl Heard {
    /// Sequence numbers missing between the first and last received.
    pub fn gaps(&self) -> usize {
        self.seqs.windows(2).map(|w| w[1].wrapping_sub(w[0]).saturating_sub(1) as usize).sum()
    }

    /// The last `secs` seconds of audio.
    pub fn tail(&self, secs: f32) -> &[f32] {
        let n = (secs * SAMPLE_RATE as f32) as usize;
        &self.pcm[self.pcm.len().saturating_sub(n)..]
    }
}

/// Decodes program batches into PCM.
pub struct ProgramDecoder {
    decoder: opus::Decoder,
}

impl Default for ProgramDecoder {
    fn default() -> Self {
        ProgramDecoder {
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder"),
        }
    }
}

impl ProgramDecoder {
    /// Parses a batch and decodes every frame into `heard`.
    pub fn decode_batch(&mut self, msg: &[u8], heard: &mut Heard) {
        let mut buf = [0.0f32; FRAME_SAMPLES];
        parse_program_batch(msg, |frame| {
            heard.seqs.push(frame.seq);
            let n = self.decoder.decode_float(frame.payload, &mut buf, false).expect("decode");
            heard.pcm.extend_from_slice(&buf[..n]);
        })
        .expect("valid batch");
    }
}

/// Listens over WebSocket for `duration`, decoding everything.
pub async fn listen_ws<S>(ws: WebSocketStream<S>, duration: Duration) -> Heard
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    listen_stream(ws.split().1, duration).await
}

/// Reads program batches and events from a stream for `duration` or until it closes.
pub async fn listen_stream<S>(
    mut ws: futures_util::stream::SplitStream<WebSocketStream<S>>,
    duration: Duration,
) -> Heard
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut heard = Heard::default();
    let mut decoder = ProgramDecoder::default();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Message::Binary(b) => decoder.decode_batch(&b, &mut heard),
            Message::Text(t) => heard.events.push(serde_json::from_str(&t).expect("json event")),
            Message::Close(_) => break,
            _ => {}
        }
    }
    heard
}

/// Reads an HTTP body for `duration` (live streams never end by themselves).
pub async fn capture_http(url: &str, duration: Duration) -> (reqwest::StatusCode, Vec<u8>) {
    let mut res = http().get(url).send().await.expect("request");
    let status = res.status();
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, res.chunk()).await {
        body.extend_from_slice(&chunk);
    }
    (status, body)
}

/// Decodes Ogg/Opus bytes with the `ogg` crate and libopus.
pub fn decode_ogg(bytes: &[u8]) -> Vec<f32> {
    let stream = townhall_media::OggOpusReader::parse(bytes).expect("valid Ogg/Opus");
    assert_eq!(stream.head.channels, 1);
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
    let mut pcm = Vec::new();
    let mut buf = [0.0f32; FRAME_SAMPLES];
    for packet in &stream.packets {
        let n = decoder.decode_float(packet, &mut buf, false).expect("decode");
        pcm.extend_from_slice(&buf[..n]);
    }
    pcm
}

/// Asserts an API error response: status and JSON `{"error": {"code", "message"}}`.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) {
    assert_eq!(res.status().as_u16(), status, "status");
    let ctype =
        res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ctype.starts_with("application/json"), "content type {ctype}");
    let body: Value = res.json().await.expect("json body");
    assert_eq!(body["error"]["code"], code, "body {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
}
