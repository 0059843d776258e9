//! WebRTC at the edge: N RTC threads, each with one UDP socket and a [`Hub`] of peers.
//!
//! The WebRTC sessions of the node (WHIP speakers and WHEP listeners) are sharded over
//! `webrtc_threads` OS threads (`townhall-rtc-{i}`), each with its own small async runtime, its
//! own UDP socket (its own port: see `docs/design.md` for why not `SO_REUSEPORT`) and its own
//! hub, apart from the mixer threads and from the workers that serve HTTP. The HTTP handlers
//! (`whip`) check requests, reserve a session in the shared registry (which places it on the
//! thread with the fewest sessions, and holds the node-wide limits), build the peer from the
//! offer with that thread's candidates and hand it over; from then on that thread's loop owns
//! it:
//!
//! - speakers' Opus frames go, checked and rate-limited, into the same mixer queue as
//!   WebSocket speakers'; their mix-minus (everyone but themselves) comes back on their track;
//! - the program stream arrives once per frame from the mixer at each thread that has WHEP
//!   listeners of the space (the `Bytes` shared, never copied per thread); its payload is made
//!   shareable once per thread and written to each of its listeners: per listener, only the RTP
//!   header and SRTP (each peer has its own keys) are done by str0m;
//! - datagrams are queued as the hub hands them over and leave in batches, one `sendmmsg` per
//!   up to 64 (`pipeline/udp_out.rs`), at the latest at the end of each turn of
//!   the loop; those that cannot be sent at once are dropped (UDP: a slow listener loses
//!   packets, nobody waits for it), and peers that never connect or go silent are closed.
//!
//! (About 800 lines with its tests, over the crate's usual size: one event loop and its session
//! table, a single state machine whose parts only make sense together.)

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
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
    FRAMES_SENT, SPEAKER_FRAMES, WEBRTC_DATAGRAMS, WEBRTC_EGRESS_LAG, WEBRTC_SEND_CALLS,
    WEBRTC_SESSIONS, WEBRTC_THREAD_FRAMES, WEBRTC_THREAD_SESSIONS,
};
use crate::pipeline::feed::ListenerGuard;
pub use crate::pipeline::program::ProgramPacket;
use crate::pipeline::program::{ProgramShard, ProgramShards};
use crate::pipeline::udp_out::Outbox;

/// Program frames queued towards each WebRTC loop before new ones are dropped (the mixer never
/// waits for WebRTC listeners).
const PROGRAM_QUEUE: usize = 256;
/// Datagrams read in one go before the loop looks at its other inputs.
const READ_BATCH: usize = 128;
/// Kernel buffers of the UDP socket: egress to thousands of listeners comes in bursts.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// How the WebRTC side of a node is set up (from the node's configuration).
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// The UDP address of the first RTC thread; with a fixed port P, thread `i` binds P + i
    /// (port 0: each thread a free port of its own).
    pub udp: SocketAddr,
    /// Addresses to advertise as host candidates (empty: the bound one).
    pub advertise: Vec<std::net::IpAddr>,
    /// Sessions at once, WHIP and WHEP together, over all threads.
    pub max_sessions: usize,
    /// Sessions one client (identity or address) may hold.
    pub sessions_per_client: usize,
    /// RTC threads (each with its own UDP socket and hub), at least one.
    pub threads: usize,
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

/// A session reserved before its peer is built: its key (the resource name) and the RTC thread
/// that will carry it (whose port its answer advertises).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The session's key.
    pub key: String,
    /// The RTC thread (shard) it goes to.
    pub shard: usize,
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
    shard: usize,
}

/// Sessions the HTTP side knows of, over every RTC thread: for `DELETE`, for limits per node
/// and per client, and for placing a new session on the least loaded thread.
struct Registry {
    sessions: HashMap<String, Entry>,
    per_client: HashMap<String, usize>,
    /// Sessions (reserved or live) per RTC thread.
    per_shard: Vec<usize>,
}

impl Registry {
    fn new(shards: usize) -> Registry {
        Registry {
            sessions: HashMap::new(),
            per_client: HashMap::new(),
            per_shard: vec![0; shards.max(1)],
        }
    }

    /// The thread with the fewest sessions (the first of equals).
    fn least_loaded(&self) -> usize {
        let mut best = 0;
        for (i, n) in self.per_shard.iter().enumerate() {
            if *n < self.per_shard[best] {
                best = i;
            }
        }
        best
    }

    fn release(&mut self, key: &str) -> Option<Entry> {
        let entry = self.sessions.remove(key)?;
        if let Some(n) = self.per_client.get_mut(&entry.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&entry.client);
            }
        }
        if let Some(n) = self.per_shard.get_mut(entry.shard) {
            *n = n.saturating_sub(1);
        }
        metrics::gauge!(WEBRTC_SESSIONS, "kind" => entry.kind.label()).decrement(1.0);
        metrics::gauge!(WEBRTC_THREAD_SESSIONS, "thread" => entry.shard.to_string()).decrement(1.0);
        Some(entry)
    }
}

/// One RTC thread as the HTTP side sees it: its commands, its socket's address, how its peers
/// are built.
struct ShardHandle {
    commands: mpsc::UnboundedSender<Command>,
    peer_config: PeerConfig,
    local: SocketAddr,
}

/// The node's WebRTC side: N RTC threads, each an event loop with its own UDP socket (its own
/// port) and [`Hub`]; limits and the session registry are shared by all.
pub struct RtcNode {
    shards: Vec<ShardHandle>,
    program: ProgramShards,
    registry: Arc<Mutex<Registry>>,
    max_sessions: usize,
    per_client: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RtcNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcNode").field("local", &self.local_addrs()).finish_non_exhaustive()
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

/// The address RTC thread `i` binds: the configured one, its port moved up by `i` when fixed.
fn shard_addr(base: SocketAddr, i: usize) -> std::io::Result<SocketAddr> {
    if base.port() == 0 {
        return Ok(base);
    }
    let port = u16::try_from(i).ok().and_then(|i| base.port().checked_add(i)).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("webrtc_udp port {} + {i} RTC threads is past 65535", base.port()),
        )
    })?;
    Ok(SocketAddr::new(base.ip(), port))
}

impl RtcNode {
    /// Binds one UDP socket per RTC thread (all before any thread starts, so a port in use
    /// fails the start) and starts the threads; they stop when `shutdown` turns true.
    pub fn start(
        config: &RtcSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RtcNode, RtcStartError> {
        let threads = config.threads.max(1);
        let mut sockets = Vec::with_capacity(threads);
        for i in 0..threads {
            sockets.push(bind_udp(shard_addr(config.udp, i)?)?);
        }
        let cert = townhall_webrtc::shared_certificate().ok_or(RtcStartError::Certificate)?;
        let registry = Arc::new(Mutex::new(Registry::new(threads)));
        let mut shards = Vec::with_capacity(threads);
        let mut program_shards = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for (i, socket) in sockets.into_iter().enumerate() {
            let local = socket.local_addr()?;
            let candidates = advertised(local, &config.advertise);
            let peer_config = PeerConfig { candidates, cert: Some(cert.clone()), ice_lite: true };
            let (commands, commands_rx) = mpsc::unbounded_channel();
            let (program, program_rx) = mpsc::channel(PROGRAM_QUEUE);
            let spaces = Arc::new(RwLock::new(HashSet::new()));
            program_shards.push(ProgramShard::new(program, spaces.clone()));
            let shared = registry.clone();
            let shutdown = shutdown.clone();
            let name = format!("townhall-rtc-{i}");
            let handle = std::thread::Builder::new().name(name).spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("webrtc loop {i} cannot start: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let socket = match UdpSocket::from_std(socket) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!("webrtc socket {i}: {e}");
                            return;
                        }
                    };
                    let lp = EventLoop::new(i, local, shared, spaces);
                    lp.run(socket, commands_rx, program_rx, shutdown).await;
                });
            })?;
            tracing::info!(thread = i, %local, candidates = ?peer_config.candidates, "webrtc media on UDP");
            handles.push(handle);
            shards.push(ShardHandle { commands, peer_config, local });
        }
        Ok(RtcNode {
            shards,
            program: ProgramShards::new(program_shards),
            registry,
            max_sessions: config.max_sessions,
            per_client: config.sessions_per_client,
            threads: Mutex::new(handles),
        })
    }

    /// The UDP address media arrives at on the first RTC thread.
    pub fn local_addr(&self) -> SocketAddr {
        self.shards[0].local
    }

    /// The UDP address of every RTC thread, in order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.local).collect()
    }

    /// How peers of RTC thread `shard` are built (candidates with its port, certificate).
    pub fn peer_config(&self, shard: usize) -> &PeerConfig {
        &self.shards[shard.min(self.shards.len() - 1)].peer_config
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The commands of the thread that carries session `key`, if it is known.
    fn shard_of(&self, key: &str) -> Option<&mpsc::UnboundedSender<Command>> {
        let shard = self.registry().sessions.get(key)?.shard;
        self.shards.get(shard).map(|s| &s.commands)
    }

    /// Reserves a session for `client` (an identity, or an address) before the peer is built,
    /// on the RTC thread with the fewest sessions: `503` when the node holds its most, `429`
    /// when the client does.
    pub fn reserve(
        &self,
        client: String,
        space: &SpaceId,
        kind: SessionKind,
    ) -> Result<Reserved, ReserveError> {
        let mut reg = self.registry();
        if reg.sessions.len() >= self.max_sessions {
            return Err(ReserveError::Full);
        }
        let held = reg.per_client.get(&client).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(ReserveError::PerClient(self.per_client));
        }
        let key = format!("{:032x}", rand::random::<u128>());
        let shard = reg.least_loaded();
        reg.per_shard[shard] += 1;
        *reg.per_client.entry(client.clone()).or_insert(0) += 1;
        reg.sessions.insert(key.clone(), Entry { space: space.clone(), client, kind, shard });
        metrics::gauge!(WEBRTC_SESSIONS, "kind" => kind.label()).increment(1.0);
        metrics::gauge!(WEBRTC_THREAD_SESSIONS, "thread" => shard.to_string()).increment(1.0);
        Ok(Reserved { key, shard })
    }

    /// Gives back a reservation whose peer was never handed over.
    pub fn release(&self, key: &str) {
        self.registry().release(key);
    }

    /// Hands a peer to the loop of the thread its reservation named (dropped if the
    /// reservation is gone: the session was deleted meanwhile).
    pub fn add(&self, key: String, space: SpaceId, peer: Peer, role: SessionRole) {
        if let Some(commands) = self.shard_of(&key) {
            let _ = commands.send(Command::Add { key, space, peer: Box::new(peer), role });
        }
    }

    /// Ends a session (`DELETE` on its resource); false if there is no such session.
    pub fn end_session(&self, space: &SpaceId, kind: SessionKind, key: &str) -> bool {
        let shard = self
            .registry()
            .sessions
            .get(key)
            .filter(|e| &e.space == space && e.kind == kind)
            .map(|e| e.shard);
        let Some(shard) = shard.and_then(|i| self.shards.get(i)) else { return false };
        let _ = shard.commands.send(Command::Remove(key.to_owned()));
        true
    }

    /// Ends a session by its key alone (the server's own decision: its space ended, or a new
    /// session of the same speaker replaced it).
    pub fn remove(&self, key: &str) {
        if let Some(commands) = self.shard_of(key) {
            let _ = commands.send(Command::Remove(key.to_owned()));
        }
    }

    /// Whether a session is known (not yet ended).
    pub fn has_session(&self, key: &str) -> bool {
        self.registry().sessions.contains_key(key)
    }

    /// Sends a speaker's mix-minus frame down its track.
    pub fn send_return(&self, key: &str, seq: u32, payload: Bytes, capture_us: Option<u64>) {
        if let Some(commands) = self.shard_of(key) {
            let cmd = Command::Return { key: key.to_owned(), seq, payload, capture_us };
            let _ = commands.send(cmd);
        }
    }

    /// The RTC threads' program queues, for the mixer: program frames for WHEP listeners go to
    /// each thread with listeners of the space (dropped when it is behind; the mixer never
    /// waits).
    pub fn program_sender(&self) -> ProgramShards {
        self.program.clone()
    }

    /// Closes every session of a space that ended, on every thread.
    pub fn end_space(&self, space: &SpaceId) {
        for shard in &self.shards {
            let _ = shard.commands.send(Command::EndSpace(space.clone()));
        }
    }
}

impl Drop for RtcNode {
    fn drop(&mut self) {
        // Each loop ends when its command channel closes (or on shutdown).
        for shard in &mut self.shards {
            let (tx, _) = mpsc::unbounded_channel();
            drop(std::mem::replace(&mut shard.commands, tx));
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
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
    /// System calls that sent them (batches).
    send_calls: Counter,
    dropped: Counter,
    received: Counter,
    frames_sent: Counter,
    /// The same frames, this thread's share.
    thread_frames: Counter,
    egress_lag: metrics::Histogram,
}

impl Counters {
    fn new(shard: usize) -> Counters {
        Counters {
            thread_frames: metrics::counter!(WEBRTC_THREAD_FRAMES, "thread" => shard.to_string()),
            sent: metrics::counter!(WEBRTC_DATAGRAMS, "result" => "sent"),
            send_calls: metrics::counter!(WEBRTC_SEND_CALLS),
            dropped: metrics::counter!(WEBRTC_DATAGRAMS, "result" => "dropped"),
            received: metrics::counter!(WEBRTC_DATAGRAMS, "result" => "received"),
            frames_sent: metrics::counter!(FRAMES_SENT, "protocol" => "webrtc"),
            egress_lag: metrics::histogram!(WEBRTC_EGRESS_LAG),
        }
    }
}

/// Queues a datagram (its buffer taken as it is), sending the queue once it holds a batch.
fn send_later(socket: &UdpSocket, outbox: &mut Outbox, counters: &Counters, t: Transmit) {
    if outbox.push(t.destination, t.contents.into()) {
        flush(socket, outbox, counters);
    }
}

/// Sends what is queued now or never (a full socket buffer drops it).
fn flush(socket: &UdpSocket, outbox: &mut Outbox, counters: &Counters) {
    if outbox.len() == 0 {
        return;
    }
    let done = outbox.flush(socket);
    counters.sent.increment(done.sent as u64);
    counters.dropped.increment(done.dropped as u64);
    counters.send_calls.increment(done.calls as u64);
}

struct EventLoop {
    hub: Hub,
    sessions: HashMap<PeerId, Session>,
    by_key: HashMap<String, PeerId>,
    /// WHEP listeners by space.
    listeners: HashMap<SpaceId, Vec<PeerId>>,
    /// The spaces of `listeners`, shared with the mixers (which send program frames only to
    /// the threads that have listeners of the space).
    spaces: Arc<RwLock<HashSet<SpaceId>>>,
    registry: Arc<Mutex<Registry>>,
    events: Vec<(PeerId, PeerEvent)>,
    /// Datagrams waiting to be sent in one system call.
    outbox: Outbox,
    counters: Counters,
}

impl EventLoop {
    fn new(
        shard: usize,
        local: SocketAddr,
        registry: Arc<Mutex<Registry>>,
        spaces: Arc<RwLock<HashSet<SpaceId>>>,
    ) -> EventLoop {
        EventLoop {
            hub: Hub::new(local, HubConfig::default()),
            sessions: HashMap::new(),
            by_key: HashMap::new(),
            listeners: HashMap::new(),
            spaces,
            registry,
            events: Vec::new(),
            outbox: Outbox::new(),
            counters: Counters::new(shard),
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
            // Whatever this turn produced leaves now, in as few system calls as it fits.
            flush(&socket, &mut self.outbox, &self.counters);
        }
        let ids: Vec<PeerId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.hang_up(&socket, id);
        }
        flush(&socket, &mut self.outbox, &self.counters);
    }

    /// Ends a session the server decided to end, telling the peer.
    fn hang_up(&mut self, socket: &UdpSocket, id: PeerId) {
        let EventLoop { hub, outbox, counters, .. } = self;
        let mut send = |t: Transmit| send_later(socket, outbox, counters, t);
        hub.hang_up(id, Instant::now(), &mut send);
        self.forget(id);
    }

    fn on_datagram(&mut self, socket: &UdpSocket, from: SocketAddr, bytes: &[u8]) {
        self.counters.received.increment(1);
        let now = Instant::now();
        let EventLoop { hub, events, outbox, counters, .. } = self;
        let mut send = |t: Transmit| send_later(socket, outbox, counters, t);
        hub.receive(now, from, bytes, &mut Outputs { send: &mut send, events });
    }

    fn tick(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        let EventLoop { hub, events, outbox, counters, .. } = self;
        let mut send = |t: Transmit| send_later(socket, outbox, counters, t);
        hub.tick(now, &mut Outputs { send: &mut send, events });
    }

    fn sweep(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        let EventLoop { hub, events, outbox, counters, .. } = self;
        let mut send = |t: Transmit| send_later(socket, outbox, counters, t);
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
        let EventLoop { hub, events, outbox, counters, .. } = self;
        let mut send = |t: Transmit| send_later(socket, outbox, counters, t);
        let mut out = Outputs { send: &mut send, events };
        for id in ids {
            let frame =
                OutgoingFrame { rtp_time, payload: payload.clone(), capture_us: packet.capture_us };
            hub.write_audio(*id, now, frame, &mut out);
        }
        counters.frames_sent.increment(ids.len() as u64);
        counters.thread_frames.increment(ids.len() as u64);
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
                    let ids = self.listeners.entry(space.clone()).or_default();
                    if ids.is_empty() {
                        self.spaces
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(space.clone());
                    }
                    ids.push(id);
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
                let EventLoop { hub, events, outbox, counters, .. } = self;
                let mut send = |t: Transmit| send_later(socket, outbox, counters, t);
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
                self.spaces.write().unwrap_or_else(|p| p.into_inner()).remove(&session.space);
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

    /// A node with `shards` threads that run nothing (their commands are kept, unread).
    fn idle_node(
        shards: usize,
        max_sessions: usize,
        per_client: usize,
    ) -> (RtcNode, Vec<mpsc::UnboundedReceiver<Command>>) {
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        let mut program = Vec::new();
        for i in 0..shards {
            let (commands, rx) = mpsc::unbounded_channel();
            receivers.push(rx);
            let (tx, _prx) = mpsc::channel(1);
            program.push(ProgramShard::new(tx, Arc::new(RwLock::new(HashSet::new()))));
            handles.push(ShardHandle {
                commands,
                peer_config: PeerConfig { candidates: vec![], cert: None, ice_lite: true },
                local: SocketAddr::from(([127, 0, 0, 1], 1 + i as u16)),
            });
        }
        let node = RtcNode {
            shards: handles,
            program: ProgramShards::new(program),
            registry: Arc::new(Mutex::new(Registry::new(shards))),
            max_sessions,
            per_client,
            threads: Mutex::new(Vec::new()),
        };
        (node, receivers)
    }

    #[test]
    fn limits_per_node_and_per_client() {
        let (node, _rx) = idle_node(1, 3, 2);
        let space = SpaceId::new("s").expect("id");
        let a1 = node.reserve("alice".into(), &space, SessionKind::Whep).expect("first");
        node.reserve("alice".into(), &space, SessionKind::Whep).expect("second");
        let third = node.reserve("alice".into(), &space, SessionKind::Whep);
        assert_eq!(third.err(), Some(ReserveError::PerClient(2)));
        node.reserve("bob".into(), &space, SessionKind::Whip).expect("bob");
        let full = node.reserve("carol".into(), &space, SessionKind::Whep);
        assert_eq!(full.err(), Some(ReserveError::Full));
        node.release(&a1.key);
        node.reserve("alice".into(), &space, SessionKind::Whep).expect("room again");
        assert!(node.end_session(&space, SessionKind::Whip, "nope").eq(&false));
    }

    #[test]
    fn sessions_go_to_the_least_loaded_thread_and_limits_span_threads() {
        let (node, mut rx) = idle_node(3, 4, 2);
        let space = SpaceId::new("s").expect("id");
        let shards: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|c| node.reserve((*c).into(), &space, SessionKind::Whep).expect("room").shard)
            .collect();
        assert_eq!(shards, vec![0, 1, 2, 0], "round the threads, fewest sessions first");
        let keys: Vec<String> = node.registry().sessions.keys().cloned().collect();
        let on_one = keys.iter().find(|k| node.registry().sessions[*k].shard == 1).expect("one");
        node.release(on_one);
        let next = node.reserve("e".into(), &space, SessionKind::Whep).expect("room");
        assert_eq!(next.shard, 1, "the thread a session left is the least loaded again");
        // Four sessions over three threads: the node's limit, not a thread's.
        assert_eq!(node.reserve("f".into(), &space, SessionKind::Whep), Err(ReserveError::Full));
        // A session's commands go to its own thread; a space's end goes to all.
        assert!(node.end_session(&space, SessionKind::Whep, &next.key));
        node.end_space(&space);
        let mut seen = Vec::new();
        for (i, rx) in rx.iter_mut().enumerate() {
            while let Ok(cmd) = rx.try_recv() {
                seen.push((i, matches!(cmd, Command::Remove(_))));
            }
        }
        assert_eq!(seen, vec![(0, false), (1, true), (1, false), (2, false)]);
    }

    #[test]
    fn fixed_ports_count_up_per_thread() {
        let base: SocketAddr = "0.0.0.0:8443".parse().expect("addr");
        assert_eq!(shard_addr(base, 2).expect("port").port(), 8445);
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(shard_addr(any, 5).expect("port"), any);
        let top: SocketAddr = "127.0.0.1:65535".parse().expect("addr");
        assert!(shard_addr(top, 1).is_err());
    }
}
