//! One WebRTC peer carrying one Opus audio track, either way, over str0m.
//!
//! A [`Peer`] is sans-IO: it is fed datagrams and time, and hands back datagrams to send, the
//! next time it wants to be woken, and [`PeerEvent`]s. The server makes peers from offers
//! ([`Peer::answer`]); tests and the load generator make the offers ([`Peer::offer`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
pub use str0m::config::DtlsCert;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{AbsCaptureTime, Extension, ExtensionMap};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Opus RTP clock: 48 kHz, 960 ticks per 20 ms frame.
pub const OPUS_FRAME_TICKS: u64 = 960;
/// The RTP header extension id Townhall offers for `abs-capture-time`.
const ABS_CAPTURE_TIME_ID: u8 = 9;

/// Why a peer could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// str0m refused the offer, answer or a candidate.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// The negotiated session carries no Opus audio.
    #[error("no opus audio was negotiated")]
    NoOpus,
    /// The answer text is not SDP.
    #[error("malformed SDP answer: {0}")]
    BadAnswer(String),
}

impl From<str0m::RtcError> for PeerError {
    fn from(e: str0m::RtcError) -> PeerError {
        PeerError::Rtc(e.to_string())
    }
}

/// How to build a peer.
#[derive(Clone)]
pub struct PeerConfig {
    /// Local host candidates (the addresses the UDP socket is reachable at).
    pub candidates: Vec<SocketAddr>,
    /// A DTLS certificate shared by many peers (generating one per peer is slow); `None`
    /// makes a new one.
    pub cert: Option<DtlsCert>,
    /// ICE-lite (servers with reachable addresses); clients use full ICE.
    pub ice_lite: bool,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("candidates", &self.candidates)
            .field("ice_lite", &self.ice_lite)
            .finish_non_exhaustive()
    }
}

/// Installs the crypto provider and makes a certificate to share among peers.
pub fn shared_certificate() -> Option<DtlsCert> {
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider.dtls_provider.generate_certificate();
    provider.install_process_default();
    cert
}

/// One 20 ms Opus frame received from the remote side.
#[derive(Debug, Clone)]
pub struct AudioIn {
    /// Frame number from the RTP timestamp (timestamp / 960): gaps in it are lost frames.
    pub seq: u32,
    /// The sender's capture time (µs since the Unix epoch), if it sent `abs-capture-time`.
    pub capture_us: Option<u64>,
    /// When the first packet of it arrived.
    pub arrived: Instant,
    /// The Opus packet.
    pub payload: Arc<[u8]>,
}

/// One Opus frame to send.
#[derive(Debug, Clone)]
pub struct OutgoingFrame {
    /// RTP time (48 kHz): frame number × 960.
    pub rtp_time: u64,
    /// The Opus packet, shared by every peer it goes to.
    pub payload: Arc<[u8]>,
    /// Capture time of the audio in it (µs since the epoch), sent as `abs-capture-time`.
    pub capture_us: Option<u64>,
}

/// What happened to a peer.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media flows.
    Connected,
    /// An audio frame arrived.
    Audio(AudioIn),
    /// The peer is gone (ICE failed, DTLS closed, silence, or it was disconnected). Reported
    /// once, by the [`Hub`](crate::Hub) that removed it.
    Closed,
}

/// One WebRTC session with one audio track.
pub struct Peer {
    rtc: Rtc,
    audio: Option<Mid>,
    pt: Option<Pt>,
    connected: bool,
    closed: bool,
    timeout: Instant,
    /// When anything last arrived from the remote side.
    last_heard: Instant,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("audio", &self.audio)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

fn rtc_config(cfg: &PeerConfig) -> RtcConfig {
    let mut exts = ExtensionMap::empty();
    // str0m's standard map without transport-wide congestion control (and the video-only
    // ones): Townhall sends one fixed-rate Opus stream and estimates no bandwidth, so TWCC
    // would only cost a sequence record per packet sent and a feedback packet per listener to
    // decrypt and apply, many times a second. Receiver reports still come (loss, RTT).
    exts.set(1, Extension::AudioLevel);
    exts.set(2, Extension::AbsoluteSendTime);
    exts.set(4, Extension::RtpMid);
    exts.set(ABS_CAPTURE_TIME_ID, Extension::AbsoluteCaptureTime);
    let mut builder = Rtc::builder()
        .set_ice_lite(cfg.ice_lite)
        .clear_codecs()
        .enable_opus(true, false)
        // Townhall's jitter buffer orders frames; str0m hands them over as they come.
        .set_reordering_size_audio(0)
        .set_extension_map(exts);
    if let Some(cert) = &cfg.cert {
        builder = builder.set_dtls_cert(cert.clone());
    }
    builder
}

impl Peer {
    fn new(rtc: Rtc, now: Instant) -> Peer {
        Peer {
            rtc,
            audio: None,
            pt: None,
            connected: false,
            closed: false,
            timeout: now,
            last_heard: now,
        }
    }

    fn add_candidates(&mut self, cfg: &PeerConfig) -> Result<(), PeerError> {
        for addr in &cfg.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|e| PeerError::Rtc(e.to_string()))?;
            self.rtc.add_local_candidate(c);
        }
        Ok(())
    }

    /// The server side: accepts a (checked) offer and returns the peer and its SDP answer.
    pub fn answer(
        offer: SdpOffer,
        cfg: &PeerConfig,
        now: Instant,
    ) -> Result<(Peer, String), PeerError> {
        let mut peer = Peer::new(rtc_config(cfg).build(now), now);
        peer.add_candidates(cfg)?;
        let answer = peer.rtc.sdp_api().accept_offer(offer)?.to_sdp_string();
        peer.settle(&answer, now)?;
        Ok((peer, answer))
    }

    /// The client side: an offer with one audio track in `direction` (from the client's view),
    /// to be completed with [`Peer::accept_answer`].
    pub fn offer(
        direction: Direction,
        cfg: &PeerConfig,
        now: Instant,
    ) -> Result<(Peer, String, SdpPendingOffer), PeerError> {
        let mut peer = Peer::new(rtc_config(cfg).build(now), now);
        peer.add_candidates(cfg)?;
        let mut change = peer.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
        let Some((offer, pending)) = change.apply() else {
            return Err(PeerError::Rtc("nothing to offer".into()));
        };
        peer.audio = Some(mid);
        let mut sink = |_: Transmit| {};
        peer.drain(now, &mut sink, &mut Vec::new());
        Ok((peer, offer.to_sdp_string(), pending))
    }

    /// Completes a client's offer with the server's answer.
    pub fn accept_answer(
        &mut self,
        pending: SdpPendingOffer,
        answer: &str,
        now: Instant,
    ) -> Result<(), PeerError> {
        let parsed =
            SdpAnswer::from_sdp_string(answer).map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        self.rtc.sdp_api().accept_answer(pending, parsed)?;
        self.settle(answer, now)
    }

    /// Finds the audio track and its Opus payload type in the answer, and drains.
    ///
    /// (str0m reports new media as events only once media can flow, so the track is read from
    /// the negotiated SDP.)
    fn settle(&mut self, answer: &str, now: Instant) -> Result<(), PeerError> {
        let (mid, pt) = crate::offer::opus_track(answer).ok_or(PeerError::NoOpus)?;
        let mid = Mid::from(mid.as_str());
        if self.audio.is_some_and(|m| m != mid) {
            return Err(PeerError::NoOpus);
        }
        self.audio = Some(mid);
        self.pt = Some(Pt::from(pt));
        self.tick(now);
        let mut sink = |_: Transmit| {};
        self.drain(now, &mut sink, &mut Vec::new());
        Ok(())
    }

    /// Whether `source`'s datagram belongs to this peer (STUN by ufrag, else by address).
    pub fn accepts(&self, input: &Input) -> bool {
        self.rtc.accepts(input)
    }

    /// Feeds a datagram (drain afterwards).
    pub fn receive(&mut self, now: Instant, input: Receive) {
        self.last_heard = now;
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, input)) {
            tracing::debug!("webrtc input refused, closing the peer: {e}");
            self.close();
        }
    }

    /// Advances time (drain afterwards).
    pub fn tick(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("webrtc timeout failed, closing the peer: {e}");
            self.close();
        }
    }

    /// Sends one 20 ms Opus frame at RTP time `rtp_time`, and drains (see [`Peer::drain`]).
    /// Frames written before the peer is connected are dropped, as WebRTC does.
    pub fn write_audio(
        &mut self,
        now: Instant,
        frame: OutgoingFrame,
        send: &mut dyn FnMut(Transmit),
        events: &mut Vec<PeerEvent>,
    ) -> Instant {
        let (Some(mid), Some(pt), true) = (self.audio, self.pt, self.connected) else {
            return self.timeout;
        };
        let Some(mut writer) = self.rtc.writer(mid) else { return self.timeout };
        if let Some(us) = frame.capture_us {
            let capture_time = UNIX_EPOCH + Duration::from_micros(us);
            writer = writer.abs_capture_time(AbsCaptureTime { capture_time, clock_offset: None });
        }
        let time = MediaTime::new(frame.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        if let Err(e) = writer.write(pt, now, time, frame.payload) {
            tracing::debug!("webrtc write failed: {e}");
            return self.drain(now, send, events);
        }
        // str0m packetizes written frames on its next time input: give it one now, so the
        // frame leaves at once rather than after another trip through the timers. (A write
        // produces no output of its own, so nothing is left undrained between the two.)
        self.tick(now);
        self.drain(now, send, events)
    }

    /// Runs str0m until it wants to wait: datagrams go to `send`, events to `events`. Returns
    /// when the peer next wants [`Peer::tick`].
    pub fn drain(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(Transmit),
        events: &mut Vec<PeerEvent>,
    ) -> Instant {
        loop {
            if self.closed {
                return now;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return t;
                }
                Ok(Output::Transmit(t)) => send(t),
                Ok(Output::Event(e)) => self.on_event(e, events),
                Err(e) => {
                    tracing::debug!("webrtc poll failed, closing the peer: {e}");
                    self.close();
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, events: &mut Vec<PeerEvent>) {
        match event {
            Event::Connected => {
                self.connected = true;
                events.push(PeerEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                self.close();
            }
            Event::MediaData(d) if Some(d.mid) == self.audio && Some(d.pt) == self.pt => {
                let ticks = d.time.numer() * 48_000 / u64::from(d.time.denom().max(1));
                let capture_us = d
                    .ext_vals
                    .abs_capture_time
                    .and_then(|a| a.capture_time.duration_since(SystemTime::UNIX_EPOCH).ok());
                events.push(PeerEvent::Audio(AudioIn {
                    seq: (ticks / OPUS_FRAME_TICKS) as u32,
                    capture_us: capture_us.map(|d| d.as_micros() as u64),
                    arrived: d.network_time,
                    payload: d.data,
                }));
            }
            _ => {}
        }
    }

    /// Ends the session and tells the remote side (RTCP BYE, DTLS close_notify), so a browser
    /// learns at once rather than by timeout.
    pub fn hang_up(&mut self, now: Instant, send: &mut dyn FnMut(Transmit)) {
        if self.is_closed() {
            return;
        }
        if self.rtc.close().is_ok() {
            self.drain(now, send, &mut Vec::new());
        }
        self.close();
    }

    /// Ends the session at once; it produces nothing more.
    pub fn close(&mut self) {
        self.closed = true;
        self.rtc.disconnect();
    }

    /// Whether the peer has ended.
    pub fn is_closed(&self) -> bool {
        self.closed || !self.rtc.is_alive()
    }

    /// Whether media flows.
    pub fn is_connected(&self) -> bool {
        self.connected && !self.is_closed()
    }

    /// When the peer wants to be ticked next.
    pub fn timeout(&self) -> Instant {
        self.timeout
    }

    /// When anything last arrived from the remote side (or the peer was made).
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }
}

/// Turns a received datagram into str0m input, if it is one of the protocols WebRTC muxes on
/// its port (STUN, DTLS, RTP, RTCP).
pub fn receive<'a>(
    source: SocketAddr,
    destination: SocketAddr,
    bytes: &'a [u8],
) -> Option<Receive<'a>> {
    Receive::new(Protocol::Udp, source, destination, bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::{Intent, check_offer};

    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    /// A listener's offer with the TWCC extension added, as browsers offer it.
    fn browser_like_offer(now: Instant) -> String {
        let addr: SocketAddr = "10.0.0.3:6000".parse().expect("addr");
        let cfg = PeerConfig { candidates: vec![addr], cert: None, ice_lite: false };
        let (_, offer, _) = Peer::offer(Direction::RecvOnly, &cfg, now).expect("offer");
        assert!(!offer.contains(TWCC), "Townhall's own clients do not offer TWCC");
        let mut out = String::new();
        for line in offer.split_inclusive('\n') {
            out.push_str(line);
            if line.starts_with("a=mid:") {
                out.push_str(&format!("a=extmap:3 {TWCC}\r\n"));
            }
        }
        assert!(out.contains(TWCC));
        out
    }

    #[test]
    fn the_answer_declines_twcc_and_keeps_capture_time() {
        let now = Instant::now();
        let offer = browser_like_offer(now);
        let checked = check_offer(offer.as_bytes(), Intent::Subscribe).expect("offer passes");
        let cfg = PeerConfig {
            candidates: vec!["10.0.0.1:5000".parse().expect("addr")],
            cert: shared_certificate(),
            ice_lite: true,
        };
        let (_, answer) = Peer::answer(checked, &cfg, now).expect("answer");
        assert!(!answer.contains("transport-wide-cc"), "no TWCC feedback asked for:\n{answer}");
        assert!(answer.contains("abs-capture-time"), "capture time kept:\n{answer}");
        assert!(answer.contains("sdes:mid"), "mid kept:\n{answer}");
    }
}
