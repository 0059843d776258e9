//! WebRTC at the edge: one UDP socket, one thread, a [`Hub`] of peers.
//!
//! All WebRTC sessions of the node (WHIP speakers and WHEP listeners) share one UDP port and
//! one OS thread (`townhall-rtc`) with its own small async runtime, apart from the mixer thread
//! and from the workers that serve HTTP. The HTTP handlers (`whip`) check requests, build the
//! peer from the offer and hand it over; from then on the loop owns it:
//!
//! - speakers' Opus frames go, checked and rate-limited, into the same mixer queue as
//!   WebSocket speakers'; their mix-minus (everyone but themselves) comes back on their track;
//! - the program stream arrives once per frame from the mixer; its payload is made shareable
//!   once and written to every WHEP listener of the space: per listener, only the RTP header
//!   and SRTP (each peer has its own keys) are done by str0m;
//! - datagrams that cannot be sent at once are dropped (UDP: a slow listener loses packets,
//!   nobody waits for it), and peers that never connect or go silent are closed.
//!
//! (About 650 lines with its tests, over the crate's usual size: one event loop and its session
//! table, a single state machine whose parts only make sense together.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::Counter;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use townhall_core::SpaceId;
use townhall_media::{SpeakerFrame, check_opus_frame};
use townhall_shield::Gcra;
use townhall_webrtc::{
    Hub, HubConfig, OutgoingFrame, Outputs, Peer, PeerConfig, PeerEvent, PeerId, Transmit,
};

use crate::clock;
use crate::metrics::{
    FRAMES_SENT, SPEAKER_FRAMES, WEBRTC_DATAGRAMS, WEBRTC_EGRESS_LAG, WEBRTC_SESSIONS,
};
use crate::pipeline::feed::ListenerGuard;
pub use crate::pipeline::program::ProgramPacket;

/// Program frames queued towards the WebRTC loop before new ones are dropped (the mixer never
/// waits for WebRTC listeners).
const PROGRAM_QUEUE: usize = 256;
/// Datagrams read in one go before the loop looks at its other inputs.
const READ_BATCH: usize = 128;
/// Kernel buffers of the UDP socket: egress to thousands of listeners comes in bursts.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// How the WebRTC side of a node is set up (from the node's configuration).
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// The UDP address every session's media shares.
    pub udp: SocketAddr,
    /// Addresses to advertise as host candidates (empty: the bound one).
    pub advertise: Vec<std::net::IpAddr>,
    /// Sessions at once, WHIP and WHEP together.
    pub max_sessions: usize,
    /// Sessions one client (identity or address) may hold.
    pub sessions_per_client: usize,
}

/// Why a session could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The node holds all the sessions it may.
    #[error("this node holds all the WebRTC sessions it can; retry, or listen over HLS")]
    Full,
    /// This client holds all the sessions one client may.
    #[error("at most {0} WebRTC sessions per client; end one first")]
    PerClient(usize),
}

/// Where a WHIP speaker's frames go (their seat on stage, in the application): the loop only
/// hands frames on, and dropping the seat leaves the stage.
pub trait SpeakerSink: Send {
    /// Passes a frame on without waiting; `false` if it was refused (the mixer is behind).
    fn send_frame(&self, frame: townhall_media::SpeakerFrame) -> bool;
}

/// What a session is for.
pub enum SessionRole {
    /// A WHIP speaker: its frames go to the mixer, its mix-minus comes back.
    Speaker {
        /// The seat on stage (leaving it when dropped).
        seat: Box<dyn SpeakerSink>,
        /// Frame rate limit.
        limiter: Gcra,
    },
    /// A WHEP listener of the program stream.
    Listener {
        /// Counts the listener in while it lives.
        guard: ListenerGuard,
    },
}

/// WHIP or WHEP, for limits and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A speaker publishing over WHIP.
    Whip,
    /// A listener over WHEP.
    Whep,
}

impl SessionKind {
    fn label(self) -> &'static str {
        match self {
            SessionKind::Whip => "whip",
            SessionKind::Whep => "whep",
        }
    }
}

enum Command {
    Add { key: String, space: SpaceId, peer: Box<Peer>, role: SessionRole },
    Remove(String),
    Return { key: String, seq: u32, payload: Bytes, capture_us: Option<u64> },
    EndSpace(SpaceId),
}

struct Entry {
    space: SpaceId,
    client: String,
    kind: SessionKind,
}

/// Sessions the HTTP side knows of: for `DELETE`, and for limits per node and per client.
#[derive(Default)]
struct Registry {
    sessions: HashMap<String, Entry>,
    per_client: HashMap<String, usize>,
}

impl Registry {
    fn release(&mut self, key: &str) -> Option<Entry> {
        let entry = self.sessions.remove(key)?;
        if let Some(n) = self.per_client.get_mut(&entry.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&entry.client);
            }
        }
        metrics::gauge!(WEBRTC_SESSIONS, "kind" => entry.kind.label()).decrement(1.0);
        Some(entry)
    }
}

/// The node's WebRTC side.
pub struct RtcNode {
    commands: mpsc::UnboundedSender<Command>,
    program: mpsc::Sender<ProgramPacket>,
    peer_config: PeerConfig,
    local: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    max_sessions: usize,
    per_client: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RtcNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcNode").field("local", &self.local).finish_non_exhaustive()
    }
}

/// Why the WebRTC side could not start.
#[derive(Debug, thiserror::Error)]
pub enum RtcStartError {
    /// The UDP socket or the thread.
    #[error("webrtc: {0}")]
    Io(#[from] std::io::Error),
    /// The crypto provider made no certificate.
    #[error("webrtc: cannot make a DTLS certificate")]
    Certificate,
}

impl RtcNode {
    /// Binds the UDP socket and starts the loop thread; it stops when `shutdown` turns true.
    pub fn start(
        config: &RtcSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RtcNode, RtcStartError> {
        let bind = config.udp;
        let socket = bind_udp(bind)?;
        let local = socket.local_addr()?;
        let cert = townhall_webrtc::shared_certificate().ok_or(RtcStartError::Certificate)?;
        let candidates = advertised(local, &config.advertise);
        let peer_config = PeerConfig { candidates, cert: Some(cert), ice_lite: true };
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (program, program_rx) = mpsc::channel(PROGRAM_QUEUE);
        let registry = Arc::new(Mutex::new(Registry::default()));
        let shared = registry.clone();
        let thread = std::thread::Builder::new().name("townhall-rtc".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("webrtc loop cannot start: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("webrtc socket: {e}");
                        return;
                    }
                };
                let lp = EventLoop::new(local, shared);
                lp.run(socket, commands_rx, program_rx, shutdown).await;
            });
        })?;
        tracing::info!(%local, candidates = ?peer_config.candidates, "webrtc media on UDP");
        Ok(RtcNode {
            commands,
            program,
            peer_config,
            local,
            registry,
            max_sessions: config.max_sessions,
            per_client: config.sessions_per_client,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The UDP address media arrives at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How peers are built (candidates, certificate).
    pub fn peer_config(&self) -> &PeerConfig {
        &self.peer_config
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a session for `client` (an identity, or an address) before the peer is built:
    /// `503` when the node holds its most, `429` when the client does.
    pub fn reserve(
        &self,
        client: String,
        space: &SpaceId,
        kind: SessionKind,
    ) -> Result<String, ReserveError> {
        let mut reg = self.registry();
        if reg.sessions.len() >= self.max_sessions {
            return Err(ReserveError::Full);
        }
        let held = reg.per_client.get(&client).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(ReserveError::PerClient(self.per_client));
        }
        let key = format!("{:032x}", rand::random::<u128>());
        *reg.per_client.entry(client.clone()).or_insert(0) += 1;
        reg.sessions.insert(key.clone(), Entry { space: space.clone(), client, kind });
        metrics::gauge!(WEBRTC_SESSIONS, "kind" => kind.label()).increment(1.0);
        Ok(key)
    }

    /// Gives back a reservation whose peer was never handed over.
    pub fn release(&self, key: &str) {
        self.registry().release(key);
    }

    /// Hands a peer to the loop.
    pub fn add(&self, key: String, space: SpaceId, peer: Peer, role: SessionRole) {
        let _ = self.commands.send(Command::Add { key, space, peer: Box::new(peer), role });
    }

    /// Ends a session (`DELETE` on its resource); false if there is no such session.
    pub fn end_session(&self, space: &SpaceId, kind: SessionKind, key: &str) -> bool {
        let known =
            self.registry().sessions.get(key).is_some_and(|e| &e.space == space && e.kind == kind);
        if known {
            let _ = self.commands.send(Command::Remove(key.to_owned()));
        }
        known
    }

    /// Ends a session by its key alone (the server's own decision: its space ended, or a new
    /// session of the same speaker replaced it).
    pub fn remove(&self, key: &str) {
        let _ = self.commands.send(Command::Remove(key.to_owned()));
    }

    /// Whether a session is known (not yet ended).
    pub fn has_session(&self, key: &str) -> bool {
        self.registry().sessions.contains_key(key)
    }

    /// Sends a speaker's mix-minus frame down its track.
    pub fn send_return(&self, key: &str, seq: u32, payload: Bytes, capture_us: Option<u64>) {
        let cmd = Command::Return { key: key.to_owned(), seq, payload, capture_us };
        let _ = self.commands.send(cmd);
    }

    /// A sender for the mixer: program frames for WHEP listeners (dropped when the loop is
    /// behind; the mixer never waits).
    pub fn program_sender(&self) -> mpsc::Sender<ProgramPacket> {
        self.program.clone()
    }

    /// Closes every session of a space that ended.
    pub fn end_space(&self, space: &SpaceId) {
        let _ = self.commands.send(Command::EndSpace(space.clone()));
    }
}

impl Drop for RtcNode {
    fn drop(&mut self) {
        // The loop ends when its command channel closes (or on shutdown).
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.commands, tx));
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Host candidates: the configured addresses with the bound port, else the bound address
/// (loopback when bound to all interfaces and nothing is configured).
fn advertised(local: SocketAddr, configured: &[IpAddr]) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect();
    }
    if local.ip().is_unspecified() {
        tracing::warn!(
            "webrtc_udp is bound to all interfaces but webrtc_advertise is empty: advertising \
             loopback only; set webrtc_advertise to the addresses peers can reach"
        );
        let ip = if local.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        };
        return vec![SocketAddr::new(ip, local.port())];
    }
    vec![local]
}

struct Session {
    key: String,
    space: SpaceId,
    role: SessionRole,
}

struct Counters {
    sent: Counter,
    dropped: Counter,
    received: Counter,
    frames_sent: Counter,
    egress_lag: metrics::Histogram,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            sent: metrics::counter!(WEBRTC_DATAGRAMS, "result" => "sent"),
            dropped: metrics::counter!(WEBRTC_DATAGRAMS, "result" => "dropped"),
            received: metrics::counter!(WEBRTC_DATAGRAMS, "result" => "received"),
            frames_sent: metrics::counter!(FRAMES_SENT, "protocol" => "webrtc"),
            egress_lag: metrics::histogram!(WEBRTC_EGRESS_LAG),
        }
    }
}

/// Sends a datagram now or never (a full socket buffer drops it).
fn send_now(socket: &UdpSocket, counters: &Counters, t: &Transmit) {
    match socket.try_send_to(&t.contents, t.destination) {
        Ok(_) => counters.sent.increment(1),
        Err(_) => counters.dropped.increment(1),
    }
}

struct EventLoop {
    hub: Hub,
    sessions: HashMap<PeerId, Session>,
    by_key: HashMap<String, PeerId>,
    /// WHEP listeners by space.
    listeners: HashMap<SpaceId, Vec<PeerId>>,
    registry: Arc<Mutex<Registry>>,
    events: Vec<(PeerId, PeerEvent)>,
    counters: Counters,
}

impl EventLoop {
    fn new(local: SocketAddr, registry: Arc<Mutex<Registry>>) -> EventLoop {
        EventLoop {
            hub: Hub::new(local, HubConfig::default()),
            sessions: HashMap::new(),
            by_key: HashMap::new(),
            listeners: HashMap::new(),
            registry,
            events: Vec::new(),
            counters: Counters::new(),
        }
    }

    async fn run(
        mut self,
        socket: UdpSocket,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut program: mpsc::Receiver<ProgramPacket>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 2048];
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wake = self.hub.next_timeout().map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(1),
                tokio::time::Instant::from_std,
            );
            tokio::select! {
                read = socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = read {
                        self.on_datagram(&socket, from, &buf[..n]);
                        for _ in 0..READ_BATCH {
                            let Ok((n, from)) = socket.try_recv_from(&mut buf) else { break };
                            self.on_datagram(&socket, from, &buf[..n]);
                        }
                    }
                }
                Some(packet) = program.recv() => self.on_program(&socket, packet),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(&socket, command),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake) => {}
                _ = sweep.tick() => self.sweep(&socket),
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
            self.tick(&socket);
            self.handle_events();
        }
        let ids: Vec<PeerId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.hang_up(&socket, id);
        }
    }

    /// Ends a session the server decided to end, telling the peer.
    fn hang_up(&mut self, socket: &UdpSocket, id: PeerId) {
        let EventLoop { hub, counters, .. } = self;
        let mut send = |t: &Transmit| send_now(socket, counters, t);
        hub.hang_up(id, Instant::now(), &mut send);
        self.forget(id);
    }

    fn on_datagram(&mut self, socket: &UdpSocket, from: SocketAddr, bytes: &[u8]) {
        self.counters.received.increment(1);
        let now = Instant::now();
        let EventLoop { hub, events, counters, .. } = self;
        let mut send = |t: &Transmit| send_now(socket, counters, t);
        hub.receive(now, from, bytes, &mut Outputs { send: &mut send, events });
    }

    fn tick(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        let EventLoop { hub, events, counters, .. } = self;
        let mut send = |t: &Transmit| send_now(socket, counters, t);
        hub.tick(now, &mut Outputs { send: &mut send, events });
    }

    fn sweep(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        let EventLoop { hub, events, counters, .. } = self;
        let mut send = |t: &Transmit| send_now(socket, counters, t);
        hub.sweep(now, &mut Outputs { send: &mut send, events });
    }

    fn on_program(&mut self, socket: &UdpSocket, packet: ProgramPacket) {
        let Some(ids) = self.listeners.get(&packet.space) else { return };
        let lag_us = clock::now_us().saturating_sub(packet.mixed_at_us);
        self.counters.egress_lag.record(lag_us as f64 / 1e6);
        let now = Instant::now();
        // One shared copy of the payload for every listener of the space.
        let payload: Arc<[u8]> = Arc::from(&packet.payload[..]);
        let rtp_time = u64::from(packet.seq) * townhall_webrtc::OPUS_FRAME_TICKS;
        let EventLoop { hub, events, counters, .. } = self;
        let mut send = |t: &Transmit| send_now(socket, counters, t);
        let mut out = Outputs { send: &mut send, events };
        for id in ids {
            let frame =
                OutgoingFrame { rtp_time, payload: payload.clone(), capture_us: packet.capture_us };
            hub.write_audio(*id, now, frame, &mut out);
        }
        counters.frames_sent.increment(ids.len() as u64);
    }

    fn on_command(&mut self, socket: &UdpSocket, command: Command) {
        match command {
            Command::Add { key, space, peer, role } => {
                if !self
                    .registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sessions
                    .contains_key(&key)
                {
                    return; // Deleted before it was handed over.
                }
                let id = self.hub.insert(*peer, Instant::now());
                if matches!(role, SessionRole::Listener { .. }) {
                    self.listeners.entry(space.clone()).or_default().push(id);
                }
                self.by_key.insert(key.clone(), id);
                self.sessions.insert(id, Session { key, space, role });
            }
            Command::Remove(key) => match self.by_key.get(&key).copied() {
                Some(id) => self.hang_up(socket, id),
                // Not handed over yet: its `Add` will find no reservation and drop the peer.
                None => {
                    self.registry.lock().unwrap_or_else(|p| p.into_inner()).release(&key);
                }
            },
            Command::Return { key, seq, payload, capture_us } => {
                let Some(id) = self.by_key.get(&key).copied() else { return };
                let now = Instant::now();
                let payload: Arc<[u8]> = Arc::from(&payload[..]);
                let rtp_time = u64::from(seq) * townhall_webrtc::OPUS_FRAME_TICKS;
                let EventLoop { hub, events, counters, .. } = self;
                let mut send = |t: &Transmit| send_now(socket, counters, t);
                let mut out = Outputs { send: &mut send, events };
                hub.write_audio(id, now, OutgoingFrame { rtp_time, payload, capture_us }, &mut out);
            }
            Command::EndSpace(space) => {
                let ids: Vec<PeerId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.space == space)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.hang_up(socket, id);
                }
            }
        }
    }

    fn handle_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for (id, event) in events.drain(..) {
            match event {
                PeerEvent::Connected => {
                    if let Some(s) = self.sessions.get(&id) {
                        tracing::debug!(space = %s.space, session = %s.key, "webrtc connected");
                    }
                }
                PeerEvent::Audio(audio) => self.on_audio(id, audio),
                PeerEvent::Closed => self.forget(id),
            }
        }
        self.events = events;
    }

    fn on_audio(&mut self, id: PeerId, audio: townhall_webrtc::AudioIn) {
        let Some(Session { role: SessionRole::Speaker { seat, limiter }, .. }) =
            self.sessions.get_mut(&id)
        else {
            return;
        };
        let result = if check_opus_frame(&audio.payload).is_err() {
            "invalid"
        } else if limiter.check(audio.arrived).is_err() {
            "rate_limited"
        } else {
            let frame = SpeakerFrame {
                seq: audio.seq,
                sent_at_us: audio.capture_us.unwrap_or_else(clock::now_us),
                payload: Bytes::copy_from_slice(&audio.payload),
            };
            if seat.send_frame(frame) { "accepted" } else { "overloaded" }
        };
        metrics::counter!(SPEAKER_FRAMES, "result" => result).increment(1);
    }

    /// Drops what the loop holds for a peer that is gone (its seat, its listener count) and
    /// its reservation.
    fn forget(&mut self, id: PeerId) {
        let Some(session) = self.sessions.remove(&id) else { return };
        self.by_key.remove(&session.key);
        if let Some(ids) = self.listeners.get_mut(&session.space) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.listeners.remove(&session.space);
            }
        }
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).release(&session.key);
        tracing::debug!(space = %session.space, session = %session.key, "webrtc session ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_candidates() {
        let bound: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert_eq!(advertised(bound, &[]), vec![bound]);
        let any: SocketAddr = "0.0.0.0:5000".parse().expect("addr");
        assert_eq!(advertised(any, &[]), vec!["127.0.0.1:5000".parse().expect("addr")]);
        let public: IpAddr = "203.0.113.7".parse().expect("ip");
        assert_eq!(advertised(any, &[public]), vec!["203.0.113.7:5000".parse().expect("addr")]);
    }

    #[test]
    fn limits_per_node_and_per_client() {
        let reg = Arc::new(Mutex::new(Registry::default()));
        let (commands, _rx) = mpsc::unbounded_channel();
        let (program, _prx) = mpsc::channel(1);
        let node = RtcNode {
            commands,
            program,
            peer_config: PeerConfig { candidates: vec![], cert: None, ice_lite: true },
            local: "127.0.0.1:1".parse().expect("addr"),
            registry: reg,
            max_sessions: 3,
            per_client: 2,
            thread: Mutex::new(None),
        };
        let space = SpaceId::new("s").expect("id");
        let a1 = node.reserve("alice".into(), &space, SessionKind::Whep).expect("first");
        node.reserve("alice".into(), &space, SessionKind::Whep).expect("second");
        let third = node.reserve("alice".into(), &space, SessionKind::Whep);
        assert_eq!(third.err(), Some(ReserveError::PerClient(2)));
        node.reserve("bob".into(), &space, SessionKind::Whip).expect("bob");
        let full = node.reserve("carol".into(), &space, SessionKind::Whep);
        assert_eq!(full.err(), Some(ReserveError::Full));
        node.release(&a1);
        node.reserve("alice".into(), &space, SessionKind::Whep).expect("room again");
        assert!(node.end_session(&space, SessionKind::Whip, "nope").eq(&false));
    }
}
