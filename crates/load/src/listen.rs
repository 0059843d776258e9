//! The `listen` scenario: N listeners over WebSocket or Ogg/HTTP, ramped, measured.
//!
//! With a [`Door`] (Townhall paths), a WebSocket or Ogg listener that its node sends off (a
//! draining node's `bye`) or whose connection is lost goes back through the door and listens
//! wherever it is sent, as the page does ([`crate::door`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::http::Conn;
use serde::Serialize;
use tokio::time::{Instant, timeout, timeout_at};
use townhall_media::wire::parse_program_batch;
use townhall_shield::Backoff;

use crate::door::{self, Door};
use crate::hls::{HlsClient, parse_playlist};
use crate::http::{self, Dechunker, Opcode, ReadBuf};
use crate::ogg_scan::parse_page;
use crate::stats::{SeqTracker, Stats};
use crate::target::Target;
use crate::timeline::{self, Ear};

/// How listeners connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Townhall's WebSocket program batches.
    Ws,
    /// Ogg/Opus over HTTP (Townhall's `/live/{id}.opus`, or any Icecast mount).
    Ogg,
    /// LL-HLS (Townhall's `/hls/{id}/index.m3u8`, directly or through a cache).
    Hls,
    /// WHEP (WebRTC): `POST /whep/{id}`, then Opus over SRTP on UDP.
    Whep,
}

/// A listen run.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Server to load.
    pub target: Target,
    /// Request path each listener opens.
    pub path: String,
    /// Listeners to open.
    pub listeners: usize,
    /// Listeners opened per second (`None`: all at once).
    pub ramp: Option<f64>,
    /// How long each listener listens after the first connects.
    pub duration: Duration,
    /// WebSocket or Ogg.
    pub protocol: Protocol,
    /// A frame arriving later than this is late (WebSocket: after mixing; Ogg: after its place
    /// on the stream's own clock).
    pub late_budget: Duration,
    /// Per-connection read buffer, bytes.
    pub read_buffer: usize,
    /// Token for WHEP (`Authorization: Bearer`); the other protocols carry it in the path.
    pub token: Option<String>,
    /// Where WebSocket and Ogg listeners go back to when sent off or cut off (`None`: they
    /// stop, as against a server that is not Townhall).
    pub door: Option<Door>,
    /// Keep each WebSocket listener's outages and losses with their times
    /// ([`crate::timeline`]).
    pub timeline: bool,
    /// Join through the door first (as the page does) and listen where it says, with its
    /// ticket (which the listener shows the door again when it comes back), rather than at
    /// `path` on the target.
    pub join_first: bool,
}

/// Ogg lateness is only judged this long after connecting (the burst of recent pages a server
/// sends to new listeners arrives early by design).
const OGG_WARMUP: Duration = Duration::from_secs(2);
/// Connecting (TCP and handshake) must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The path a listener opens for a space on Townhall.
pub fn townhall_path(protocol: Protocol, space: &str, batch: usize, token: Option<&str>) -> String {
    let token = token.map(|t| format!("token={t}&")).unwrap_or_default();
    match protocol {
        Protocol::Ws => format!("/ws/{space}?{token}batch={batch}"),
        Protocol::Ogg if token.is_empty() => format!("/live/{space}.opus"),
        Protocol::Ogg => format!("/live/{space}.opus?{}", token.trim_end_matches('&')),
        Protocol::Hls => format!("/hls/{space}/index.m3u8"),
        Protocol::Whep => format!("/whep/{space}"),
    }
}

/// Opens every listener (ramped), lets them listen until the end of the run, and returns.
pub async fn run(cfg: Arc<ListenConfig>, stats: Arc<Stats>) {
    let start = Instant::now();
    let ramp_time = cfg
        .ramp
        .map_or(Duration::ZERO, |r| Duration::from_secs_f64(cfg.listeners as f64 / r.max(0.001)));
    let deadline = start + ramp_time + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    // WebRTC clients share one DTLS certificate (making one per client costs more than the rest
    // of the handshake).
    let cert =
        if cfg.protocol == Protocol::Whep { townhall_webrtc::shared_certificate() } else { None };
    for n in 0..cfg.listeners {
        if let Some(rate) = cfg.ramp {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
        }
        let (cfg, stats, cert) = (cfg.clone(), stats.clone(), cert.clone());
        tasks.spawn(async move {
            match cfg.protocol {
                Protocol::Ws | Protocol::Ogg => stream_listener(&cfg, &stats, n, deadline).await,
                Protocol::Hls => hls_listener(&cfg, &stats, n, deadline).await,
                Protocol::Whep => whep_listener(&cfg, &stats, n, deadline, cert).await,
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Counts a listener as connected for as long as it lives.
struct Connected<'a> {
    stats: &'a Stats,
    since: Instant,
}

impl<'a> Connected<'a> {
    fn new(stats: &'a Stats) -> Connected<'a> {
        Stats::add(&stats.connected, 1);
        Stats::add(&stats.ever_connected, 1);
        Connected { stats, since: Instant::now() }
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.stats.connected.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Stats::add(&self.stats.connected_us, self.since.elapsed().as_micros() as u64);
    }
}

async fn open(
    cfg: &ListenConfig,
    stats: &Stats,
    at: &Place,
    n: usize,
    buf: &mut ReadBuf,
) -> Option<(Conn, http::Head)> {
    Stats::add(&stats.attempted, 1);
    let (target, path) = (&at.target, at.path.as_str());
    let opened = timeout(CONNECT_TIMEOUT, async {
        let mut stream = http::connect(target, target.source_ip(n)).await?;
        let head = match cfg.protocol {
            Protocol::Ws => http::ws_handshake(&mut stream, target, path, buf).await?,
            Protocol::Ogg | Protocol::Hls | Protocol::Whep => {
                http::get(&mut stream, target, path, "Icy-MetaData: 0\r\n").await?;
                http::read_head(&mut stream, buf).await?
            }
        };
        let ok = match cfg.protocol {
            Protocol::Ws => head.status == 101,
            Protocol::Ogg | Protocol::Hls | Protocol::Whep => head.status == 200,
        };
        if ok {
            Ok((stream, head))
        } else {
            Err(io::Error::other(format!("status {}", head.status)))
        }
    })
    .await;
    match opened {
        Ok(Ok(opened)) => Some(opened),
        _ => {
            Stats::add(&stats.failed, 1);
            None
        }
    }
}

/// How a read ended.
enum Read {
    /// Bytes came.
    More,
    /// The run's deadline passed.
    Deadline,
    /// The connection was lost (closed or failed).
    Lost,
}

/// Reads more, counting the bytes.
async fn read_more(stream: &mut Conn, buf: &mut ReadBuf, stats: &Stats, deadline: Instant) -> Read {
    match timeout_at(deadline, buf.fill(stream)).await {
        Err(_) => Read::Deadline,
        Ok(Ok(0)) | Ok(Err(_)) => Read::Lost,
        Ok(Ok(n)) => {
            Stats::add(&stats.bytes, n as u64);
            Read::More
        }
    }
}

/// Where a listener listens: a node and the path there.
#[derive(Debug, Clone)]
struct Place {
    target: Target,
    path: String,
}

/// How one listening session ended.
enum Ended {
    /// The run is over.
    Done,
    /// The node sent it off (a `bye`): back through the door, no sooner than this.
    SentOff(Duration),
    /// The connection was lost (counted as a disconnect).
    Lost,
}

/// One WebSocket or Ogg listener for the whole run: its first session at the configured place,
/// then (with a door) a new one wherever the door sends it each time it is sent off or cut off,
/// waiting by [`Backoff::CLIENT`] between failed attempts.
async fn stream_listener(cfg: &ListenConfig, stats: &Stats, n: usize, deadline: Instant) {
    let mut ear = Ear::new(u32::try_from(n).unwrap_or(u32::MAX));
    stream_sessions(cfg, stats, n, deadline, &mut ear).await;
    if cfg.timeline
        && let Some(outage) = ear.end(timeline::now_ms())
    {
        stats.timeline.outage(outage);
    }
}

async fn stream_sessions(
    cfg: &ListenConfig,
    stats: &Stats,
    n: usize,
    deadline: Instant,
    ear: &mut Ear,
) {
    let mut at = Place { target: cfg.target, path: cfg.path.clone() };
    let mut backoff = Backoff::CLIENT;
    let mut rejoined = false;
    let mut held: Option<String> = None;
    if cfg.join_first
        && let Some(door) = &cfg.door
    {
        let source = cfg.target.source_ip(n);
        let Some((node, token)) =
            door::rejoin(door, source, None, &mut backoff, deadline, None, None).await
        else {
            Stats::add(&stats.failed, 1);
            return;
        };
        at = Place {
            target: node,
            path: townhall_path(cfg.protocol, &door.space, door.batch, Some(&token)),
        };
        held = Some(token);
    }
    loop {
        let mut buf = ReadBuf::new(cfg.read_buffer);
        // The node this session lost or could not reach, named at the door.
        let mut lost = None;
        let floor = match open(cfg, stats, &at, n, &mut buf).await {
            Some((stream, head)) => {
                let _connected = Connected::new(stats);
                let (ended, heard) = match cfg.protocol {
                    Protocol::Ws => ws_session(cfg, stats, stream, buf, deadline, ear).await,
                    _ => ogg_session(cfg, stats, stream, buf, head.chunked, deadline).await,
                };
                if heard {
                    backoff.reset();
                }
                match ended {
                    Ended::Done => return,
                    Ended::SentOff(after) => {
                        Stats::add(&stats.sent_off, 1);
                        Some(after)
                    }
                    Ended::Lost => {
                        if cfg.timeline {
                            let listener = u32::try_from(n).unwrap_or(u32::MAX);
                            let at_ms = timeline::now_ms();
                            stats.timeline.drop_of(timeline::Drop { listener, at_ms });
                        }
                        lost = Some(at.target);
                        None
                    }
                }
            }
            // After a handover, a refusal (the node named is still draining, or full) sends
            // the listener back to the door; the first connection failing ends it (counted).
            // The door hears which node failed, and names another: no need to wait long.
            None if rejoined => {
                lost = Some(at.target);
                Some(Duration::from_millis(100))
            }
            None => return,
        };
        let Some(door) = &cfg.door else { return };
        Stats::add(&stats.rejoins, 1);
        let source = cfg.target.source_ip(n);
        let Some((node, token)) =
            door::rejoin(door, source, floor, &mut backoff, deadline, held.as_deref(), lost).await
        else {
            return;
        };
        let path = townhall_path(cfg.protocol, &door.space, door.batch, Some(&token));
        at = Place { target: node, path };
        held = Some(token);
        rejoined = true;
    }
}

/// Keeps what a message says on the timeline: the outage its audio ends, the frames missing.
fn note(stats: &Stats, ear: &mut Ear, audio: bool, gaps: u64) {
    let now_ms = timeline::now_ms();
    if audio && let Some(outage) = ear.heard(now_ms) {
        stats.timeline.outage(outage);
    }
    if gaps > 0 {
        stats.timeline.loss(ear.lost(now_ms, gaps));
    }
}

/// Reads program batches and events until the deadline, a `bye`, or a lost connection;
/// whether any audio came.
async fn ws_session(
    cfg: &ListenConfig,
    stats: &Stats,
    mut stream: Conn,
    mut buf: ReadBuf,
    deadline: Instant,
    ear: &mut Ear,
) -> (Ended, bool) {
    let budget_us = cfg.late_budget.as_micros() as u64;
    let mut seqs = SeqTracker::default();
    let mut bye: Option<Duration> = None;
    let mut heard = false;
    loop {
        let now_us = townhall_media_clock();
        let mut closed = false;
        loop {
            let frame = match http::parse_ws_frame(buf.data()) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            };
            let (op, range, total) = frame;
            match op {
                Opcode::Binary => {
                    let (mut frames, mut late, mut gaps, mut audio) = (0u64, 0u64, 0u64, 0u64);
                    let parsed = parse_program_batch(&buf.data()[range], |f| {
                        frames += 1;
                        if f.payload.len() > timeline::SILENT_BYTES {
                            audio += 1;
                        }
                        gaps += seqs.observe(f.seq);
                        let age = now_us.saturating_sub(f.mixed_at_us);
                        stats.latency.record(age);
                        if let Some(captured) = f.captured_at_us() {
                            stats.mouth_to_ear.record(now_us.saturating_sub(captured));
                        }
                        if age > budget_us {
                            late += 1;
                        }
                    });
                    if parsed.is_err() {
                        closed = true;
                    }
                    heard |= frames > 0;
                    if cfg.timeline {
                        note(stats, ear, audio > 0, gaps);
                    }
                    Stats::add(&stats.frames, frames);
                    Stats::add(&stats.late, late);
                    Stats::add(&stats.gaps, gaps);
                }
                Opcode::Text => bye = bye.or_else(|| sent_off(&buf.data()[range])),
                Opcode::Close => closed = true,
                _ => {}
            }
            buf.consume(total);
            if closed {
                break;
            }
        }
        if !closed {
            match read_more(&mut stream, &mut buf, stats, deadline).await {
                Read::More => continue,
                Read::Deadline => return (Ended::Done, heard),
                Read::Lost => {}
            }
        }
        return match bye {
            Some(after) => (Ended::SentOff(after), heard),
            None => {
                Stats::add(&stats.disconnects, 1);
                (Ended::Lost, heard)
            }
        };
    }
}

/// The delay of a `bye` event that sends the listener elsewhere (a draining node's
/// `server_shutdown`), if `text` is one; at most a minute, whatever it says.
pub fn sent_off(text: &[u8]) -> Option<Duration> {
    let event: serde_json::Value = serde_json::from_slice(text).ok()?;
    if event["type"] != "bye" || event["reason"] != "server_shutdown" {
        return None;
    }
    let ms = event["reconnect_after_ms"].as_u64().unwrap_or(0).min(60_000);
    Some(Duration::from_millis(ms))
}

/// A WHEP listener: offers, connects over UDP, and judges each frame by the capture time the
/// server stamps on it (`abs-capture-time`: the speaker's capture time, present while someone
/// speaks). Both the latency and the mouth-to-ear figures are arrival minus that time.
async fn whep_listener(
    cfg: &ListenConfig,
    stats: &Stats,
    n: usize,
    deadline: Instant,
    cert: Option<townhall_webrtc::peer::DtlsCert>,
) {
    Stats::add(&stats.attempted, 1);
    let source = cfg.target.source_ip(n);
    let mode = crate::rtc_client::Mode::Subscribe;
    let connecting = timeout(CONNECT_TIMEOUT, async {
        let mut session = crate::rtc_client::connect(
            &cfg.target,
            source,
            &cfg.path,
            cfg.token.as_deref(),
            mode,
            cert,
        )
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        session.connected(CONNECT_TIMEOUT).await.map_err(|e| io::Error::other(e.to_string()))?;
        Ok::<_, io::Error>(session)
    })
    .await;
    let Ok(Ok(mut session)) = connecting else {
        Stats::add(&stats.failed, 1);
        return;
    };
    let _connected = Connected::new(stats);
    let budget_us = cfg.late_budget.as_micros() as u64;
    let mut seqs = SeqTracker::default();
    loop {
        match timeout_at(deadline, session.audio.recv()).await {
            Err(_) => break,
            Ok(None) => {
                Stats::add(&stats.disconnects, 1);
                break;
            }
            Ok(Some(frame)) => {
                Stats::add(&stats.frames, 1);
                // RTP header, SRTP tag and UDP/IP headers are not seen here: count the payload
                // plus the 12-byte RTP header and 10-byte SRTP tag.
                Stats::add(&stats.bytes, frame.payload.len() as u64 + 22);
                Stats::add(&stats.gaps, seqs.observe(frame.seq));
                if let Some(captured) = frame.capture_us {
                    let age = townhall_media_clock().saturating_sub(captured);
                    stats.latency.record(age);
                    stats.mouth_to_ear.record(age);
                    if age > budget_us {
                        Stats::add(&stats.late, 1);
                    }
                }
            }
        }
    }
    let location = session.location.clone();
    session.stop().await;
    let _ = crate::rtc_client::delete(&cfg.target, source, &location).await;
}

/// Microseconds since the Unix epoch (the clock program frames are stamped with).
fn townhall_media_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Judges Ogg pages against the stream's own clock: a page is late when it arrives more than the
/// budget after the earliest arrival its granule position allows.
#[derive(Debug, Default)]
pub struct OggTiming {
    /// Smallest (arrival − media time) seen, µs.
    min_offset: Option<i64>,
    seqs: SeqTracker,
}

impl OggTiming {
    /// Records a page; returns (frames, late frames, gaps, lateness µs if judged).
    pub fn page(
        &mut self,
        arrival_us: i64,
        page: &crate::ogg_scan::PageInfo,
        judge: bool,
        budget_us: i64,
    ) -> (u64, u64, u64, Option<u64>) {
        // Header pages (granule 0) carry no audio.
        if page.granule == 0 {
            return (0, 0, 0, None);
        }
        let gaps = self.seqs.observe(page.seq);
        let media_us = (page.granule as i64).saturating_mul(1_000_000) / 48_000;
        let offset = arrival_us - media_us;
        let min = *self.min_offset.get_or_insert(offset);
        self.min_offset = Some(min.min(offset));
        let frames = u64::from(page.packets);
        if !judge {
            return (frames, 0, gaps, None);
        }
        let lateness = (offset - min).max(0);
        let late = if lateness > budget_us { frames } else { 0 };
        (frames, late, gaps, Some(lateness as u64))
    }
}

/// Reads Ogg pages until the deadline or a lost connection (a draining node closes Ogg
/// listeners without a word); whether any audio came.
async fn ogg_session(
    cfg: &ListenConfig,
    stats: &Stats,
    mut stream: Conn,
    mut buf: ReadBuf,
    chunked: bool,
    deadline: Instant,
) -> (Ended, bool) {
    let connected_at = Instant::now();
    let budget_us = cfg.late_budget.as_micros() as i64;
    let mut dechunk = Dechunker::default();
    let mut body: Vec<u8> = Vec::with_capacity(cfg.read_buffer);
    let mut timing = OggTiming::default();
    let mut heard = false;
    loop {
        if chunked {
            match dechunk.feed(buf.data(), &mut body) {
                Ok(used) => buf.consume(used),
                Err(_) => {
                    Stats::add(&stats.disconnects, 1);
                    return (Ended::Lost, heard);
                }
            }
        } else {
            body.extend_from_slice(buf.data());
            let all = buf.data().len();
            buf.consume(all);
        }
        let now_us = townhall_media_clock() as i64;
        let judge = connected_at.elapsed() >= OGG_WARMUP;
        let mut pos = 0;
        loop {
            match parse_page(&body[pos..]) {
                Ok(Some(page)) => {
                    let (frames, late, gaps, lateness) =
                        timing.page(now_us, &page, judge, budget_us);
                    heard |= frames > 0;
                    Stats::add(&stats.frames, frames);
                    Stats::add(&stats.late, late);
                    Stats::add(&stats.gaps, gaps);
                    if let Some(l) = lateness {
                        stats.latency.record(l);
                    }
                    pos += page.len;
                }
                Ok(None) => break,
                Err(_) => {
                    Stats::add(&stats.disconnects, 1);
                    return (Ended::Lost, heard);
                }
            }
        }
        body.drain(..pos);
        match read_more(&mut stream, &mut buf, stats, deadline).await {
            Read::More => {}
            Read::Deadline => return (Ended::Done, heard),
            Read::Lost => {
                Stats::add(&stats.disconnects, 1);
                return (Ended::Lost, heard);
            }
        }
    }
}

/// An LL-HLS listener: follows the preload hints and blocking playlists like a player.
async fn hls_listener(cfg: &ListenConfig, stats: &Stats, n: usize, deadline: Instant) {
    let mut client = HlsClient::new(cfg.target, cfg.target.source_ip(n));
    let dir = cfg.path.rsplit_once('/').map_or("/", |(d, _)| d).to_owned();
    Stats::add(&stats.attempted, 1);
    let first = timeout(CONNECT_TIMEOUT, client.get(&cfg.path)).await;
    let Ok(Ok((200, body))) = first else {
        Stats::add(&stats.failed, 1);
        return;
    };
    let _connected = Connected::new(stats);
    let budget_us = cfg.late_budget.as_micros() as u64;
    let mut playlist = parse_playlist(&String::from_utf8_lossy(&body));
    let mut previous: Option<(u64, u32)> = None;
    loop {
        let Some((msn, part)) = playlist.hint else {
            if !playlist.ended {
                Stats::add(&stats.disconnects, 1);
            }
            return;
        };
        let got = timeout_at(deadline, client.get(&format!("{dir}/p{msn}.{part}.mp4"))).await;
        let (status, bytes) = match got {
            Err(_) => return,
            Ok(Err(_)) => {
                Stats::add(&stats.disconnects, 1);
                return;
            }
            Ok(Ok(answer)) => answer,
        };
        let arrived_us = townhall_media_clock();
        Stats::add(&stats.bytes, bytes.len() as u64);
        // The playlist that lists the part just fetched: every listener asks for the same URL
        // (a cache answers all but one), and its preload hint names the next part.
        let after = format!("{dir}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
        let next = match timeout_at(deadline, client.get(&after)).await {
            Err(_) => return,
            Ok(Ok((200, body))) => parse_playlist(&String::from_utf8_lossy(&body)),
            Ok(_) => {
                Stats::add(&stats.disconnects, 1);
                return;
            }
        };
        if status == 200 {
            let info = next.parts.iter().find(|p| p.msn == msn && p.part == part);
            let frames = info.map_or(10, |p| (p.duration * 50.0).round() as u64);
            Stats::add(&stats.frames, frames);
            // Latency: from when the part's first audio was mixed (its place on the stream's
            // clock) to its arrival here.
            if let Some(info) = info
                && let Some(end) = info.end_us
            {
                let start = end.saturating_sub((info.duration * 1e6) as u64);
                let latency = arrived_us.saturating_sub(start);
                stats.latency.record(latency);
                if latency > budget_us {
                    Stats::add(&stats.late, frames);
                }
            }
            // A part skipped since the previous one is a gap (counted in parts of 10 frames).
            if let Some((pm, pp)) = previous
                && !(msn == pm && part == pp + 1 || msn == pm + 1 && part == 0)
            {
                Stats::add(&stats.gaps, 10);
            }
            previous = Some((msn, part));
        }
        playlist = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ogg_scan::PageInfo;

    fn page(granule: u64, seq: u32) -> PageInfo {
        PageInfo { granule, seq, packets: 10, bos: false, len: 100 }
    }

    #[test]
    fn ogg_pages_on_time_are_not_late_and_delayed_ones_are() {
        let mut t = OggTiming::default();
        assert_eq!(t.page(0, &page(0, 0), false, 0), (0, 0, 0, None), "header page");
        // 200 ms pages arriving on time (a burst page first, arriving early).
        let base = 1_000_000_000i64;
        t.page(base, &page(9_600, 7), false, 500_000);
        for k in 1..10u64 {
            let arrival = base + (k as i64) * 200_000;
            let (frames, late, gaps, _) =
                t.page(arrival, &page(9_600 * (k + 1), 7 + k as u32), true, 500_000);
            assert_eq!((frames, late, gaps), (10, 0, 0));
        }
        // The next page arrives 800 ms late and one page is missing before it.
        let (_, late, gaps, lateness) =
            t.page(base + 11 * 200_000 + 800_000, &page(9_600 * 12, 18), true, 500_000);
        assert_eq!((late, gaps), (10, 1));
        assert!(lateness.is_some_and(|l| l >= 800_000));
    }

    #[test]
    fn a_draining_nodes_bye_sends_the_listener_off_and_others_do_not() {
        let bye = br#"{"type":"bye","reason":"server_shutdown","reconnect_after_ms":250}"#;
        assert_eq!(sent_off(bye), Some(Duration::from_millis(250)));
        let replaced =
            br#"{"type":"bye","reason":"replaced_by_new_session","reconnect_after_ms":1000}"#;
        assert_eq!(sent_off(replaced), None);
        assert_eq!(sent_off(br#"{"type":"listeners","count":3}"#), None);
        assert_eq!(sent_off(b"not json"), None);
        let huge = br#"{"type":"bye","reason":"server_shutdown","reconnect_after_ms":99999999}"#;
        assert_eq!(sent_off(huge), Some(Duration::from_secs(60)), "bounded");
    }

    #[test]
    fn paths() {
        assert_eq!(townhall_path(Protocol::Ws, "demo", 5, None), "/ws/demo?batch=5");
        assert_eq!(townhall_path(Protocol::Ogg, "demo", 5, Some("t")), "/live/demo.opus?token=t");
    }
}
