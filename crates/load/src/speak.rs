//! The `speak` scenario: a speaker bot sending a real Opus stream with embedded send timestamps.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, MissedTickBehavior};
use townhall_media::analysis::ToneGenerator;
use townhall_media::{OggOpusReader, SAMPLE_RATE, SpeakerFrame, check_opus_frame};

use crate::http::{self, Opcode, ReadBuf};
use crate::target::Target;
use townhall_shield::Backoff;

/// What the bot says.
#[derive(Debug, Clone)]
pub enum Voice {
    /// A sine tone at this frequency (Hz).
    Tone(f32),
    /// The packets of an Ogg/Opus file (mono, 20 ms frames), looped.
    File(PathBuf),
    /// Encoded digital silence, every 20 ms: a speaker on stage who is not talking, from a
    /// client with its microphone open and no DTX (what browsers send by default).
    Silence,
}

/// A speak run.
#[derive(Debug, Clone)]
pub struct SpeakConfig {
    /// Server.
    pub target: Target,
    /// Space to speak in.
    pub space: String,
    /// A speaker, co-host or host token for the space.
    pub token: String,
    /// How long to speak.
    pub duration: Duration,
    /// What to send.
    pub voice: Voice,
    /// How to send it.
    pub protocol: SpeakProtocol,
    /// Where to ask, after a lost connection, which origin mixes the space now (`origin` in
    /// `GET /api/v1/spaces/{id}`): the speaker reconnects there, following a failover.
    pub follow: Option<Target>,
}

/// How the bot reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpeakProtocol {
    /// Townhall's WebSocket speaker frames (send time in each frame).
    Ws,
    /// WHIP (WebRTC): RTP with `abs-capture-time`, the mix-minus coming back on the same track.
    Whip,
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpeakReport {
    /// Frames sent.
    pub frames_sent: u64,
    /// Mix-minus frames received back.
    pub frames_received: u64,
    /// Error events the server sent.
    pub errors: Vec<String>,
    /// Times the WebSocket speaker connected again after losing its connection.
    pub reconnects: u64,
}

/// Why speaking failed.
#[derive(Debug, thiserror::Error)]
pub enum SpeakError {
    /// Network trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the WebSocket.
    #[error("server answered {0} to the speaker upgrade")]
    Refused(u16),
    /// The voice file could not be used.
    #[error("voice: {0}")]
    Voice(String),
}

/// Produces 20 ms Opus packets.
enum Source {
    Tone(ToneGenerator, Box<opus::Encoder>),
    File(Vec<Bytes>, usize),
}

impl Source {
    fn new(voice: &Voice) -> Result<Source, SpeakError> {
        match voice {
            Voice::Tone(freq) => {
                let enc =
                    opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                        .map_err(|e| SpeakError::Voice(e.to_string()))?;
                Ok(Source::Tone(ToneGenerator::new(*freq, 0.4), Box::new(enc)))
            }
            Voice::Silence => {
                // Encoded once: an encoder fed zeros settles on the same few packets.
                let mut enc =
                    opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                        .map_err(|e| SpeakError::Voice(e.to_string()))?;
                let zeros = [0.0f32; townhall_media::FRAME_SAMPLES];
                let packets = (0..50)
                    .map(|_| enc.encode_vec_float(&zeros, 1275).map(Bytes::from))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| SpeakError::Voice(e.to_string()))?;
                Ok(Source::File(packets, 0))
            }
            Voice::File(path) => {
                let data = std::fs::read(path)?;
                let stream =
                    OggOpusReader::parse(&data).map_err(|e| SpeakError::Voice(e.to_string()))?;
                if let Some(bad) = stream.packets.iter().find(|p| check_opus_frame(p).is_err()) {
                    let why =
                        check_opus_frame(bad).err().map(|e| e.to_string()).unwrap_or_default();
                    return Err(SpeakError::Voice(format!("{}: {why}", path.display())));
                }
                if stream.packets.is_empty() {
                    return Err(SpeakError::Voice("no audio packets".into()));
                }
                Ok(Source::File(stream.packets, 0))
            }
        }
    }

    fn next(&mut self) -> Bytes {
        match self {
            Source::Tone(tone, enc) => {
                let pcm = tone.next_frame();
                Bytes::from(
                    enc.encode_vec_float(&pcm, 1275).unwrap_or_else(|_| vec![0xF8, 0xFF, 0xFE]),
                )
            }
            Source::File(packets, i) => {
                let p = packets[*i % packets.len()].clone();
                *i += 1;
                p
            }
        }
    }
}

/// Speaks for the configured duration in real time (one frame every 20 ms). Over WebSocket, a
/// connection lost (or ended by the node's `bye`) is made again after the clients' backoff
/// ([`Backoff::CLIENT`]: full jitter, the `bye`'s delay as a floor), until the duration is up;
/// only the first connection failing is an error.
pub async fn run(cfg: &SpeakConfig) -> Result<SpeakReport, SpeakError> {
    if cfg.protocol == SpeakProtocol::Whip {
        return run_whip(cfg).await;
    }
    let mut source = Source::new(&cfg.voice)?;
    let end = Instant::now() + cfg.duration;
    let mut report = SpeakReport::default();
    let mut backoff = Backoff::CLIENT;
    let mut floor: Option<Duration> = None;
    let mut first = true;
    let mut target = cfg.target;
    while Instant::now() < end {
        if !first {
            let pause = backoff.next_delay(rand::random(), floor.take());
            if Instant::now() + pause >= end {
                break;
            }
            tokio::time::sleep(pause).await;
            report.reconnects += 1;
            if let Some(door) = &cfg.follow
                && let Ok(Some(origin)) = origin_of(door, &cfg.space).await
            {
                target = origin;
            }
        }
        match ws_session(cfg, target, &mut source, end, &mut report).await {
            Ok(Session::Done) => break,
            Ok(Session::Lost { after, spoke }) => {
                if spoke {
                    backoff.reset();
                }
                floor = after;
            }
            Err(e) if first => return Err(e),
            Err(SpeakError::Voice(why)) => return Err(SpeakError::Voice(why)),
            // Taken off stage, removed, the space gone: trying again cannot help.
            Err(SpeakError::Refused(status)) if (400..500).contains(&status) && status != 429 => {
                break;
            }
            Err(_) => {}
        }
        first = false;
    }
    Ok(report)
}

/// How one speaking connection ended.
enum Session {
    /// The duration is up.
    Done,
    /// The connection was lost, or the node sent the speaker off (`after`: its `bye`'s delay);
    /// `spoke`: frames went out on it first.
    Lost { after: Option<Duration>, spoke: bool },
}

/// What the reading half of a speaker's connection saw.
#[derive(Debug, Default)]
struct Heard {
    frames: u64,
    errors: Vec<String>,
    bye: Option<Duration>,
}

/// One speaking connection: sends frames until `end` or until the connection goes.
async fn ws_session(
    cfg: &SpeakConfig,
    target: Target,
    source: &mut Source,
    end: Instant,
    report: &mut SpeakReport,
) -> Result<Session, SpeakError> {
    let mut stream = http::connect(&target, target.source_ip(0)).await?;
    let mut buf = ReadBuf::new(16 * 1024);
    let path = format!("/ws/{}?mode=speak", cfg.space);
    let head =
        http::ws_handshake_with(&mut stream, &target, &path, Some(&cfg.token), &mut buf).await?;
    if head.status != 101 {
        return Err(SpeakError::Refused(head.status));
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let reader = tokio::spawn(async move {
        let mut heard = Heard::default();
        let mut buf = buf;
        loop {
            while let Ok(Some((op, range, total))) = http::parse_ws_frame(buf.data()) {
                match op {
                    Opcode::Binary => {
                        let _ =
                            townhall_media::wire::parse_program_batch(&buf.data()[range], |_| {
                                heard.frames += 1
                            });
                    }
                    Opcode::Text => {
                        let text = String::from_utf8_lossy(&buf.data()[range]).into_owned();
                        if text.contains("\"error\"") {
                            heard.errors.push(text);
                        } else if let Some(after) = bye_delay(&text) {
                            heard.bye = Some(after);
                        }
                    }
                    _ => {}
                }
                buf.consume(total);
            }
            match buf.fill_from(&mut rd).await {
                Ok(0) | Err(_) => return heard,
                Ok(_) => {}
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut out = Vec::with_capacity(2_048);
    let mut mask_state = 0x9E37_79B9u32 ^ report.frames_sent as u32;
    let mut spoke = false;
    let mut lost = false;
    while Instant::now() < end {
        tick.tick().await;
        if reader.is_finished() {
            lost = true;
            break;
        }
        let sent_at_us = now_us();
        let frame =
            SpeakerFrame { seq: report.frames_sent as u32, sent_at_us, payload: source.next() };
        mask_state ^= mask_state << 13;
        mask_state ^= mask_state >> 17;
        mask_state ^= mask_state << 5;
        out.clear();
        http::encode_ws_frame(Opcode::Binary, &frame.encode(), mask_state.to_be_bytes(), &mut out);
        if wr.write_all(&out).await.is_err() {
            lost = true;
            break;
        }
        report.frames_sent += 1;
        spoke = true;
    }
    if !lost {
        out.clear();
        http::encode_ws_frame(Opcode::Close, &[0x03, 0xE8], [1, 2, 3, 4], &mut out);
        let _ = wr.write_all(&out).await;
    }
    let heard = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    report.frames_received += heard.frames;
    report.errors.extend(heard.errors);
    Ok(if lost { Session::Lost { after: heard.bye, spoke } } else { Session::Done })
}

/// The delay of a `bye` event (at most a minute, whatever it says), if `text` is one.
/// Which origin mixes `space` now, as `door` says (`origin` in its view of the space); `None`
/// from a node alone, or an origin this tool may not reach.
async fn origin_of(door: &Target, space: &str) -> std::io::Result<Option<Target>> {
    let ask = async {
        let mut stream = http::connect(door, door.source_ip(0)).await?;
        let mut buf = ReadBuf::new(16 * 1024);
        http::get(&mut stream, door, &format!("/api/v1/spaces/{space}"), "").await?;
        let head = http::read_head(&mut stream, &mut buf).await?;
        http::read_body(&mut stream, &mut buf, head).await
    };
    let body = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    let view: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(view["origin"].as_str().and_then(|o| o.parse().ok()))
}

fn bye_delay(text: &str) -> Option<Duration> {
    let event: serde_json::Value = serde_json::from_str(text).ok()?;
    (event["type"] == "bye").then(|| {
        Duration::from_millis(event["reconnect_after_ms"].as_u64().unwrap_or(0).min(60_000))
    })
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Speaks over WHIP, hearing the mix-minus back.
async fn run_whip(cfg: &SpeakConfig) -> Result<SpeakReport, SpeakError> {
    let mut source = Source::new(&cfg.voice)?;
    let path = format!("/whip/{}", cfg.space);
    let mode = crate::rtc_client::Mode::Publish { hear_back: true };
    let source_ip = cfg.target.source_ip(0);
    let connect =
        crate::rtc_client::connect(&cfg.target, source_ip, &path, Some(&cfg.token), mode, None);
    let mut session = match connect.await {
        Ok(s) => s,
        Err(crate::rtc_client::RtcClientError::Refused { status, .. }) => {
            return Err(SpeakError::Refused(status));
        }
        Err(e) => return Err(SpeakError::Io(std::io::Error::other(e.to_string()))),
    };
    session
        .connected(Duration::from_secs(10))
        .await
        .map_err(|e| SpeakError::Io(std::io::Error::other(e.to_string())))?;
    let mut report = SpeakReport::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + cfg.duration;
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                let frame = (report.frames_sent as u32, source.next(), now_us());
                if session.send.send(frame).await.is_err() {
                    report.errors.push("the WebRTC session ended".into());
                    break;
                }
                report.frames_sent += 1;
            }
            Some(_) = session.audio.recv() => report.frames_received += 1,
        }
    }
    let location = session.location.clone();
    session.stop().await;
    let _ = crate::rtc_client::delete(&cfg.target, source_ip, &location).await;
    Ok(report)
}
