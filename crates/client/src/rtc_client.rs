//! A WHIP/WHEP client: the same WebRTC stack as the server (str0m, through `townhall-webrtc`)
//! acting as a browser would: it offers, posts the offer, applies the answer and runs the
//! session on its own UDP socket. Used by the tests and the load generator; loopback only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use townhall_webrtc::{AudioIn, Direction, OutgoingFrame, Peer, PeerConfig, PeerEvent, Transmit};

use crate::http::{self, ReadBuf};
use crate::target::Target;

/// What the client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// WHIP: send audio; with `hear_back`, also receive the mix-minus.
    Publish {
        /// Offer `sendrecv` rather than `sendonly`.
        hear_back: bool,
    },
    /// WHEP: receive the program stream.
    Subscribe,
}

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum RtcClientError {
    /// Network trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the offer.
    #[error("server answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// WebRTC setup failed.
    #[error("webrtc: {0}")]
    Peer(#[from] townhall_webrtc::PeerError),
    /// The session did not connect in time.
    #[error("not connected after {0:?}")]
    Timeout(Duration),
}

/// One frame to send: frame number, Opus packet, capture time (µs since the epoch).
pub type Outgoing = (u32, Bytes, u64);

/// A running WebRTC session.
#[derive(Debug)]
pub struct RtcSession {
    /// The session resource (`Location`), for `DELETE`.
    pub location: String,
    /// The server's SDP answer (its candidates name the UDP port the session's media uses).
    pub answer: String,
    /// Frames received.
    pub audio: mpsc::Receiver<AudioIn>,
    /// Frames to send (publishers).
    pub send: mpsc::Sender<Outgoing>,
    connected: watch::Receiver<bool>,
    closed: watch::Receiver<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RtcSession {
    /// Waits until media flows (ICE and DTLS up).
    pub async fn connected(&mut self, limit: Duration) -> Result<(), RtcClientError> {
        let wait = self.connected.wait_for(|c| *c);
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(RtcClientError::Timeout(limit)),
        }
    }

    /// Whether the session has ended (the server closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Stops the session's task (without telling the server: see [`delete`]).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// Posts an offer to `path` (`/whip/{space}` or `/whep/{space}`) from `source` (a loopback
/// address) and starts the session. `cert`: a DTLS certificate to share among many clients.
pub async fn connect(
    target: &Target,
    source: IpAddr,
    path: &str,
    token: Option<&str>,
    mode: Mode,
    cert: Option<townhall_webrtc::peer::DtlsCert>,
) -> Result<RtcSession, RtcClientError> {
    let offer = Offer::new(source, mode, cert).await?;
    let (status, location, body) = post_sdp(target, source, path, token, &offer.sdp).await?;
    if status != 201 {
        return Err(RtcClientError::Refused { status, body });
    }
    offer.start(&body, location.unwrap_or_default())
}

/// An offer made but not yet answered: for callers that post it themselves (e.g. over HTTPS).
pub struct Offer {
    /// The SDP to post.
    pub sdp: String,
    peer: Peer,
    pending: townhall_webrtc::SdpPendingOffer,
    socket: UdpSocket,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer").field("sdp", &self.sdp).finish_non_exhaustive()
    }
}

impl Offer {
    /// Makes an offer for `mode` with a UDP socket on `source`.
    pub async fn new(
        source: IpAddr,
        mode: Mode,
        cert: Option<townhall_webrtc::peer::DtlsCert>,
    ) -> Result<Offer, RtcClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(source, 0)).await?;
        let local = socket.local_addr()?;
        let direction = match mode {
            Mode::Publish { hear_back: true } => Direction::SendRecv,
            Mode::Publish { hear_back: false } => Direction::SendOnly,
            Mode::Subscribe => Direction::RecvOnly,
        };
        let cfg = PeerConfig { candidates: vec![local], cert, ice_lite: false };
        let (peer, sdp, pending) = Peer::offer(direction, &cfg, Instant::now())?;
        Ok(Offer { sdp, peer, pending, socket })
    }

    /// Applies the server's answer and starts the session (`location`: the session resource).
    pub fn start(self, answer: &str, location: String) -> Result<RtcSession, RtcClientError> {
        let Offer { mut peer, pending, socket, .. } = self;
        peer.accept_answer(pending, answer, Instant::now())?;
        let (audio_tx, audio) = mpsc::channel(1_024);
        let (send, send_rx) = mpsc::channel(256);
        let (connected_tx, connected) = watch::channel(false);
        let (closed_tx, closed) = watch::channel(false);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let driver = Driver { peer, socket, audio: audio_tx, connected: connected_tx };
        let task = tokio::spawn(async move {
            driver.run(send_rx, stop_rx).await;
            let _ = closed_tx.send(true);
        });
        Ok(RtcSession {
            location,
            answer: answer.to_owned(),
            audio,
            send,
            connected,
            closed,
            stop: Some(stop),
            task,
        })
    }
}

/// `DELETE`s a session resource from `source`; returns the status.
pub async fn delete(
    target: &Target,
    source: IpAddr,
    location: &str,
) -> Result<u16, RtcClientError> {
    let mut stream = http::connect(target, source).await?;
    let req = format!(
        "DELETE {location} HTTP/1.1\r\nHost: {}\r\nUser-Agent: townhall-load\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        target.addr
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = ReadBuf::new(4 * 1024);
    Ok(http::read_head(&mut stream, &mut buf).await?.status)
}

/// Posts an SDP offer; returns status, `Location` and body.
async fn post_sdp(
    target: &Target,
    source: IpAddr,
    path: &str,
    token: Option<&str>,
    offer: &str,
) -> Result<(u16, Option<String>, String), RtcClientError> {
    let mut stream = http::connect(target, source).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: townhall-load\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        target.addr,
        offer.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = ReadBuf::new(16 * 1024);
    let location = loop {
        if http::parse_head(buf.data())?.is_some() {
            break http::header_value(buf.data(), "location");
        }
        if buf.fill(&mut stream).await? == 0 {
            return Err(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response").into()
            );
        }
    };
    let head = http::read_head(&mut stream, &mut buf).await?;
    let body = http::read_body(&mut stream, &mut buf, head).await?;
    Ok((head.status, location, String::from_utf8_lossy(&body).into_owned()))
}

struct Driver {
    peer: Peer,
    socket: UdpSocket,
    audio: mpsc::Sender<AudioIn>,
    connected: watch::Sender<bool>,
}

impl Driver {
    async fn run(
        mut self,
        mut outgoing: mpsc::Receiver<Outgoing>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; 2048];
        let local = self.socket.local_addr().ok();
        let mut events = Vec::new();
        let mut outgoing_open = true;
        loop {
            let now = Instant::now();
            let wake = {
                let socket = &self.socket;
                let mut send = |t: Transmit| {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                };
                self.peer.drain(now, &mut send, &mut events)
            };
            for event in events.drain(..) {
                match event {
                    PeerEvent::Connected => {
                        let _ = self.connected.send(true);
                    }
                    PeerEvent::Audio(a) => {
                        let _ = self.audio.try_send(a);
                    }
                    PeerEvent::Closed => {}
                }
            }
            if self.peer.is_closed() {
                return;
            }
            let wake = tokio::time::Instant::from_std(wake.max(now + Duration::from_millis(1)));
            tokio::select! {
                read = self.socket.recv_from(&mut buf) => {
                    let (Ok((n, from)), Some(local)) = (read, local) else { continue };
                    if let Some(r) = townhall_webrtc::peer::receive(from, local, &buf[..n]) {
                        self.peer.receive(Instant::now(), r);
                    }
                }
                frame = outgoing.recv(), if outgoing_open => match frame {
                    Some((seq, payload, capture_us)) => {
                        let frame = OutgoingFrame {
                            rtp_time: u64::from(seq) * townhall_webrtc::OPUS_FRAME_TICKS,
                            payload: Arc::from(&payload[..]),
                            capture_us: Some(capture_us),
                        };
                        let socket = &self.socket;
                        let mut send = |t: Transmit| {
                            let _ = socket.try_send_to(&t.contents, t.destination);
                        };
                        self.peer.write_audio(Instant::now(), frame, &mut send, &mut events);
                    }
                    None => outgoing_open = false,
                },
                _ = tokio::time::sleep_until(wake) => self.peer.tick(Instant::now()),
                _ = &mut stop => return,
            }
        }
    }
}
