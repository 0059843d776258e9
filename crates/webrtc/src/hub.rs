//! Many peers behind one UDP port: demultiplexing, timers and lifetimes, sans-IO.
//!
//! The server owns one socket and one [`Hub`]. Datagrams are routed to their peer by source
//! address once it is known (a hash lookup), and otherwise by STUN credentials (str0m's
//! `accepts`, a scan that happens once per new address). Each peer's next wake-up is kept in an
//! ordered set, so the cost of time passing is proportional to the peers that are due, not to
//! all peers. Peers that never connect, or go silent, are closed.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::net::Transmit;

use crate::peer::{OutgoingFrame, Peer, PeerEvent, receive};

/// A peer's handle in its hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// Lifetimes of peers.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// A peer must be connected this long after it was made, or it is closed.
    pub connect_within: Duration,
    /// A peer from which nothing (not even a STUN consent check) arrives for this long is
    /// closed. Browsers check consent every few seconds.
    pub idle: Duration,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig { connect_within: Duration::from_secs(15), idle: Duration::from_secs(30) }
    }
}

struct Slot {
    peer: Peer,
    due: Instant,
    created: Instant,
    addrs: Vec<SocketAddr>,
}

/// The peers of one UDP socket.
pub struct Hub {
    local: SocketAddr,
    cfg: HubConfig,
    peers: HashMap<PeerId, Slot>,
    by_addr: HashMap<SocketAddr, PeerId>,
    timers: BTreeSet<(Instant, PeerId)>,
    next_id: u64,
    scratch: Vec<PeerEvent>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("local", &self.local).field("peers", &self.peers.len()).finish()
    }
}

/// Where a hub's outputs go: datagrams to send, and events per peer.
pub struct Outputs<'a> {
    /// Sends one datagram (on the hub's socket). The datagram is handed over by value: the
    /// caller may keep its buffer (to send it with others in one system call) without a copy.
    pub send: &'a mut dyn FnMut(Transmit),
    /// Events, in order, tagged with their peer.
    pub events: &'a mut Vec<(PeerId, PeerEvent)>,
}

impl Hub {
    /// A hub for the socket bound at `local`.
    pub fn new(local: SocketAddr, cfg: HubConfig) -> Hub {
        Hub {
            local,
            cfg,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            scratch: Vec::new(),
        }
    }

    /// Peers in the hub.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the hub has no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Adds a peer (made by [`Peer::answer`]).
    pub fn insert(&mut self, peer: Peer, now: Instant) -> PeerId {
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let due = peer.timeout();
        self.timers.insert((due, id));
        self.peers.insert(id, Slot { peer, due, created: now, addrs: Vec::new() });
        id
    }

    /// Removes a peer without reporting it; returns it, closed.
    pub fn remove(&mut self, id: PeerId) -> Option<Peer> {
        let mut slot = self.peers.remove(&id)?;
        self.timers.remove(&(slot.due, id));
        for addr in slot.addrs.drain(..) {
            if self.by_addr.get(&addr) == Some(&id) {
                self.by_addr.remove(&addr);
            }
        }
        slot.peer.close();
        Some(slot.peer)
    }

    /// Ends a peer and tells its remote side (see [`Peer::hang_up`]); not reported as an event.
    pub fn hang_up(&mut self, id: PeerId, now: Instant, send: &mut dyn FnMut(Transmit)) {
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.hang_up(now, send);
        }
        self.remove(id);
    }

    /// Whether the peer exists and media flows to it.
    pub fn is_connected(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|s| s.peer.is_connected())
    }

    /// When the earliest peer wants to be woken.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Routes one received datagram to its peer; returns the peer, if any took it.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        bytes: &[u8],
        out: &mut Outputs<'_>,
    ) -> Option<PeerId> {
        let input = Input::Receive(now, receive(source, self.local, bytes)?);
        let id = self.route(source, bytes, &input)?;
        let slot = self.peers.get_mut(&id)?;
        if !slot.addrs.contains(&source) {
            slot.addrs.push(source);
        }
        let Input::Receive(at, r) = input else { return None };
        slot.peer.receive(at, r);
        self.settle(id, now, out);
        Some(id)
    }

    /// Finds the peer of a datagram: by address, except that STUN is checked against the
    /// peer's credentials (a new session may reuse an old one's address).
    fn route(&mut self, source: SocketAddr, bytes: &[u8], input: &Input<'_>) -> Option<PeerId> {
        // RFC 7983: a first byte of 0..=3 is STUN.
        let is_stun = bytes.first().is_some_and(|b| *b <= 3);
        if let Some(id) = self.by_addr.get(&source).copied()
            && let Some(slot) = self.peers.get(&id)
            && (!is_stun || slot.peer.accepts(input))
        {
            return Some(id);
        }
        let id = self.peers.iter().find(|(_, s)| s.peer.accepts(input)).map(|(id, _)| *id)?;
        self.by_addr.insert(source, id);
        Some(id)
    }

    /// Wakes every peer whose time has come.
    pub fn tick(&mut self, now: Instant, out: &mut Outputs<'_>) {
        while let Some(&(due, id)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            if let Some(slot) = self.peers.get_mut(&id) {
                // Not in the timer set until `settle` puts it back with its new time.
                slot.due = far_future(now);
                slot.peer.tick(now);
            }
            self.settle(id, now, out);
        }
    }

    /// Sends one Opus frame to a peer.
    pub fn write_audio(
        &mut self,
        id: PeerId,
        now: Instant,
        frame: OutgoingFrame,
        out: &mut Outputs<'_>,
    ) {
        let Some(slot) = self.peers.get_mut(&id) else { return };
        if !slot.peer.is_connected() {
            return;
        }
        let mut events = std::mem::take(&mut self.scratch);
        // The peer drains itself after a write: no second pass over it here.
        let due = slot.peer.write_audio(now, frame, out.send, &mut events);
        out.events.extend(events.drain(..).map(|e| (id, e)));
        self.scratch = events;
        self.rearm(id, due, out);
    }

    /// Closes peers that did not connect in time or went silent; reports them.
    pub fn sweep(&mut self, now: Instant, out: &mut Outputs<'_>) {
        let cfg = self.cfg;
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                let never_connected =
                    !s.peer.is_connected() && now.duration_since(s.created) > cfg.connect_within;
                let silent = now.duration_since(s.peer.last_heard()) > cfg.idle;
                never_connected || silent || s.peer.is_closed()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(id);
            out.events.push((id, PeerEvent::Closed));
        }
    }

    /// Drains a peer after a mutation: outputs, events, its next wake-up, or its removal.
    fn settle(&mut self, id: PeerId, now: Instant, out: &mut Outputs<'_>) {
        let Some(slot) = self.peers.get_mut(&id) else { return };
        let mut events = std::mem::take(&mut self.scratch);
        let due = slot.peer.drain(now, out.send, &mut events);
        out.events.extend(events.drain(..).map(|e| (id, e)));
        self.scratch = events;
        self.rearm(id, due, out);
    }

    /// After a peer was drained: its next wake-up, or its removal if it ended.
    fn rearm(&mut self, id: PeerId, due: Instant, out: &mut Outputs<'_>) {
        let Some(slot) = self.peers.get_mut(&id) else { return };
        if slot.peer.is_closed() {
            self.remove(id);
            out.events.push((id, PeerEvent::Closed));
            return;
        }
        if due != slot.due {
            self.timers.remove(&(slot.due, id));
            slot.due = due;
            self.timers.insert((due, id));
        }
    }
}

/// A time no timer reaches (the slot is re-armed by `settle`).
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::{Intent, check_offer};
    use crate::peer::{AudioIn, PeerConfig, shared_certificate};
    use std::sync::Arc;
    use str0m::media::Direction;

    const SERVER: &str = "10.0.0.1:5000";

    /// Datagrams in flight, with their source and destination.
    type Wire = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;

    struct Client {
        peer: Peer,
        addr: SocketAddr,
        heard: Vec<u32>,
    }

    fn client(hub: &mut Hub, addr: &str, direction: Direction, now: Instant) -> (Client, PeerId) {
        let addr: SocketAddr = addr.parse().expect("addr");
        let cfg = PeerConfig { candidates: vec![addr], cert: None, ice_lite: false };
        let (mut peer, offer, pending) = Peer::offer(direction, &cfg, now).expect("offer");
        let intent =
            if direction == Direction::RecvOnly { Intent::Subscribe } else { Intent::Publish };
        let checked = check_offer(offer.as_bytes(), intent).expect("offer passes");
        let server_cfg = PeerConfig {
            candidates: vec![SERVER.parse().expect("addr")],
            cert: shared_certificate(),
            ice_lite: true,
        };
        let (server_peer, answer) = Peer::answer(checked, &server_cfg, now).expect("answer");
        let id = hub.insert(server_peer, now);
        peer.accept_answer(pending, &answer, now).expect("accept");
        (Client { peer, addr, heard: Vec::new() }, id)
    }

    /// Runs clients and hub on simulated time for `ms`; clients that publish send a frame every
    /// 20 ms once connected, and the hub sends every connected peer a frame every 20 ms.
    fn run(
        hub: &mut Hub,
        clients: &mut [Client],
        ids: &[PeerId],
        ms: u64,
        start: Instant,
    ) -> Vec<(PeerId, PeerEvent)> {
        let server: SocketAddr = SERVER.parse().expect("addr");
        let mut all = Vec::new();
        let payload: Arc<[u8]> = Arc::from(&[0xF8u8, 0xFF, 0xFE][..]);
        let mut wire: Wire = Vec::new();
        for step in 0..ms {
            let now = start + Duration::from_millis(step);
            let mut events = Vec::new();
            let mut to_clients: Wire = Vec::new();
            {
                let mut send =
                    |t: Transmit| to_clients.push((t.source, t.destination, t.contents.into()));
                let mut out = Outputs { send: &mut send, events: &mut events };
                for (src, dst, bytes) in wire.drain(..) {
                    assert_eq!(dst, server);
                    hub.receive(now, src, &bytes, &mut out);
                }
                hub.tick(now, &mut out);
                if step % 20 == 0 {
                    for id in ids {
                        let frame = OutgoingFrame {
                            rtp_time: step / 20 * 960,
                            payload: payload.clone(),
                            capture_us: None,
                        };
                        hub.write_audio(*id, now, frame, &mut out);
                    }
                }
            }
            all.extend(events);
            for c in clients.iter_mut() {
                let mut out_events = Vec::new();
                let mut send = |t: Transmit| wire.push((c.addr, t.destination, t.contents.into()));
                for (src, dst, bytes) in to_clients.iter().filter(|(_, d, _)| *d == c.addr) {
                    if let Some(r) = crate::peer::receive(*src, *dst, bytes) {
                        c.peer.receive(now, r);
                        c.peer.drain(now, &mut send, &mut out_events);
                    }
                }
                c.peer.tick(now);
                if step % 20 == 0 {
                    let frame = OutgoingFrame {
                        rtp_time: step / 20 * 960,
                        payload: payload.clone(),
                        capture_us: Some(1_000_000),
                    };
                    c.peer.write_audio(now, frame, &mut send, &mut out_events);
                }
                c.peer.drain(now, &mut send, &mut out_events);
                for e in out_events {
                    if let PeerEvent::Audio(a) = e {
                        c.heard.push(a.seq);
                    }
                }
            }
        }
        all
    }

    #[test]
    fn a_publisher_and_a_listener_connect_and_audio_flows_both_ways() {
        let now = Instant::now();
        let mut hub = Hub::new(SERVER.parse().expect("addr"), HubConfig::default());
        let (speaker, s_id) = client(&mut hub, "10.0.0.2:6000", Direction::SendRecv, now);
        let (listener, l_id) = client(&mut hub, "10.0.0.3:6000", Direction::RecvOnly, now);
        let mut clients = [speaker, listener];
        let events = run(&mut hub, &mut clients, &[s_id, l_id], 3_000, now);
        let connected: Vec<PeerId> = events
            .iter()
            .filter(|(_, e)| matches!(e, PeerEvent::Connected))
            .map(|(id, _)| *id)
            .collect();
        assert!(connected.contains(&s_id) && connected.contains(&l_id), "{events:?}");
        let from_speaker: Vec<&AudioIn> = events
            .iter()
            .filter_map(|(id, e)| match e {
                PeerEvent::Audio(a) if *id == s_id => Some(a),
                _ => None,
            })
            .collect();
        assert!(from_speaker.len() > 50, "speaker frames reached the hub: {}", from_speaker.len());
        assert!(from_speaker.windows(2).all(|w| w[1].seq == w[0].seq + 1), "in order, none lost");
        assert_eq!(from_speaker[0].capture_us, Some(1_000_000), "abs-capture-time carried");
        assert!(
            !events.iter().any(|(id, e)| *id == l_id && matches!(e, PeerEvent::Audio(_))),
            "a recvonly listener sends nothing"
        );
        assert!(
            clients[0].heard.len() > 50,
            "the speaker hears the hub: {}",
            clients[0].heard.len()
        );
        assert!(
            clients[1].heard.len() > 50,
            "the listener hears the hub: {}",
            clients[1].heard.len()
        );
        assert_eq!(hub.len(), 2);
    }

    #[test]
    fn silent_and_unconnected_peers_are_swept() {
        let now = Instant::now();
        let mut hub = Hub::new(SERVER.parse().expect("addr"), HubConfig::default());
        let (_never, id) = client(&mut hub, "10.0.0.2:6000", Direction::RecvOnly, now);
        let mut events = Vec::new();
        let mut send = |_: Transmit| {};
        let mut out = Outputs { send: &mut send, events: &mut events };
        hub.sweep(now + Duration::from_secs(5), &mut out);
        assert_eq!(hub.len(), 1, "still within its time to connect");
        hub.sweep(now + Duration::from_secs(16), &mut out);
        assert_eq!(hub.len(), 0);
        assert!(matches!(events.as_slice(), [(i, PeerEvent::Closed)] if *i == id));
    }

    #[test]
    fn junk_datagrams_reach_nobody() {
        let now = Instant::now();
        let mut hub = Hub::new(SERVER.parse().expect("addr"), HubConfig::default());
        let (_c, _) = client(&mut hub, "10.0.0.2:6000", Direction::RecvOnly, now);
        let mut events = Vec::new();
        let mut send = |_: Transmit| panic!("nothing is sent for junk");
        let mut out = Outputs { send: &mut send, events: &mut events };
        let src: SocketAddr = "10.9.9.9:1".parse().expect("addr");
        for junk in [
            &[][..],
            &[0u8; 20][..],
            &[0x80, 0, 0, 1][..],
            &[22, 254, 253, 0][..],
            &[255; 1200][..],
        ] {
            assert_eq!(hub.receive(now, src, junk, &mut out), None);
        }
        assert!(events.is_empty());
    }
}
