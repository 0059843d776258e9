//! Checks an SDP offer from outside before any WebRTC state is built for it.
//!
//! str0m parses SDP; this module adds what Townhall requires of an offer: a bounded size, an
//! audio section that can carry Opus, and a direction that fits what the client asked for
//! (publishing needs audio from the client, listening needs audio to it).

use str0m::change::SdpOffer;

/// The largest offer accepted, in bytes (browser offers are 3–6 KiB).
pub const MAX_OFFER_BYTES: usize = 16 * 1024;

/// What the client wants from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Send audio to the server (WHIP). Hearing the other speakers back is optional.
    Publish,
    /// Receive the program stream (WHEP).
    Subscribe,
}

/// Why an offer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// No offer at all.
    #[error("the body is empty: send an SDP offer")]
    Empty,
    /// Larger than [`MAX_OFFER_BYTES`].
    #[error("the offer is {0} bytes; at most {MAX_OFFER_BYTES} are accepted")]
    TooLarge(usize),
    /// Not text.
    #[error("the offer is not UTF-8 text")]
    NotText,
    /// Not SDP str0m can read.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No `m=audio` section that is not disabled.
    #[error("the offer has no audio section")]
    NoAudio,
    /// Audio, but no Opus at 48 kHz in it.
    #[error("the offer's audio does not include opus/48000")]
    NoOpus,
    /// Audio flows the wrong way for the request.
    #[error("the offer's audio is {found}; {needed}")]
    Direction {
        /// The direction in the offer.
        found: &'static str,
        /// What the endpoint needs.
        needed: &'static str,
    },
}

/// Checks `body` for `intent` and parses it.
pub fn check_offer(body: &[u8], intent: Intent) -> Result<SdpOffer, OfferError> {
    if body.is_empty() {
        return Err(OfferError::Empty);
    }
    if body.len() > MAX_OFFER_BYTES {
        return Err(OfferError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| OfferError::NotText)?;
    let audio = audio_sections(text);
    if audio.is_empty() {
        return Err(OfferError::NoAudio);
    }
    let opus: Vec<&AudioSection> = audio.iter().filter(|a| a.opus).collect();
    let Some(first) = opus.first() else {
        return Err(OfferError::NoOpus);
    };
    let fits = |a: &&AudioSection| match intent {
        Intent::Publish => a.direction.client_sends(),
        Intent::Subscribe => a.direction.client_receives(),
    };
    if !opus.iter().any(fits) {
        let needed = match intent {
            Intent::Publish => "publishing needs sendonly or sendrecv audio",
            Intent::Subscribe => "listening needs recvonly or sendrecv audio",
        };
        return Err(OfferError::Direction { found: first.direction.name(), needed });
    }
    SdpOffer::from_sdp_string(text).map_err(|e| OfferError::Malformed(e.to_string()))
}

/// Direction of a media section, from the offerer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDirection {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl OfferDirection {
    fn client_sends(self) -> bool {
        matches!(self, OfferDirection::SendRecv | OfferDirection::SendOnly)
    }

    fn client_receives(self) -> bool {
        matches!(self, OfferDirection::SendRecv | OfferDirection::RecvOnly)
    }

    fn name(self) -> &'static str {
        match self {
            OfferDirection::SendRecv => "sendrecv",
            OfferDirection::SendOnly => "sendonly",
            OfferDirection::RecvOnly => "recvonly",
            OfferDirection::Inactive => "inactive",
        }
    }
}

/// What the checks need of one `m=audio` section.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AudioSection {
    opus: bool,
    opus_pt: Option<u8>,
    mid: Option<String>,
    direction: OfferDirection,
}

/// Whether the offerer also wants audio from the server (an Opus section that is `sendrecv`
/// or `recvonly`): a publishing speaker who wants to hear the others.
pub fn wants_audio_back(sdp: &str) -> bool {
    audio_sections(sdp).iter().any(|a| a.opus && a.direction.client_receives())
}

/// The `a=mid` and Opus payload type of the first enabled audio section that has Opus.
pub fn opus_track(sdp: &str) -> Option<(String, u8)> {
    audio_sections(sdp).into_iter().find_map(|a| Some((a.mid?, a.opus_pt?)))
}

/// The enabled (non-zero port) audio sections of an SDP text.
fn audio_sections(text: &str) -> Vec<AudioSection> {
    let mut out = Vec::new();
    let mut current: Option<AudioSection> = None;
    for line in text.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            out.extend(current.take());
            let mut fields = media.split_ascii_whitespace();
            let is_audio = fields.next() == Some("audio");
            let port_open = fields.next().is_some_and(|p| p != "0");
            if is_audio && port_open {
                current = Some(AudioSection {
                    opus: false,
                    opus_pt: None,
                    mid: None,
                    direction: OfferDirection::SendRecv,
                });
            }
            continue;
        }
        let Some(section) = current.as_mut() else { continue };
        if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut fields = map.split_ascii_whitespace();
            let pt = fields.next().and_then(|p| p.parse::<u8>().ok()).filter(|p| *p < 128);
            let codec = fields.next().unwrap_or("");
            if codec.to_ascii_lowercase().starts_with("opus/48000") {
                section.opus = true;
                section.opus_pt = section.opus_pt.or(pt);
            }
        }
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_owned());
        }
        section.direction = match line {
            "a=sendrecv" => OfferDirection::SendRecv,
            "a=sendonly" => OfferDirection::SendOnly,
            "a=recvonly" => OfferDirection::RecvOnly,
            "a=inactive" => OfferDirection::Inactive,
            _ => section.direction,
        };
    }
    out.extend(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A trimmed-down Chrome audio offer.
    pub(crate) fn offer(direction: &str, codec: &str) -> String {
        [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=msid-semantic: WMS",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "a=ice-options:trickle",
            "a=fingerprint:sha-256 7A:D7:C9:33:94:8D:8A:BA:10:EB:93:21:7C:B4:91:6D:40:F7:56:07:CA:9D:42:D3:80:32:2D:10:D9:AC:8E:15",
            "a=setup:actpass",
            "a=mid:0",
            &format!("a={direction}"),
            "a=rtcp-mux",
            &format!("a=rtpmap:111 {codec}"),
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "",
        ]
        .join("\r\n")
    }

    #[test]
    fn browser_offers_pass_for_the_right_intent() {
        let send = offer("sendonly", "opus/48000/2");
        assert!(check_offer(send.as_bytes(), Intent::Publish).is_ok());
        let recv = offer("recvonly", "opus/48000/2");
        assert!(check_offer(recv.as_bytes(), Intent::Subscribe).is_ok());
        let both = offer("sendrecv", "opus/48000/2");
        assert!(check_offer(both.as_bytes(), Intent::Publish).is_ok());
        assert!(check_offer(both.as_bytes(), Intent::Subscribe).is_ok());
    }

    #[test]
    fn wrong_offers_say_why() {
        let recv = offer("recvonly", "opus/48000/2");
        assert!(matches!(
            check_offer(recv.as_bytes(), Intent::Publish),
            Err(OfferError::Direction { found: "recvonly", .. })
        ));
        let pcmu = offer("sendonly", "PCMU/8000");
        assert_eq!(check_offer(pcmu.as_bytes(), Intent::Publish).err(), Some(OfferError::NoOpus));
        let video = offer("sendonly", "opus/48000/2").replace("m=audio", "m=video");
        assert_eq!(check_offer(video.as_bytes(), Intent::Publish).err(), Some(OfferError::NoAudio));
        let disabled = offer("sendonly", "opus/48000/2").replace("m=audio 9", "m=audio 0");
        assert_eq!(
            check_offer(disabled.as_bytes(), Intent::Publish).err(),
            Some(OfferError::NoAudio)
        );
        assert_eq!(check_offer(b"", Intent::Publish).err(), Some(OfferError::Empty));
        assert_eq!(check_offer(&[0xff, 0xfe], Intent::Publish).err(), Some(OfferError::NotText));
        let big = vec![b'a'; MAX_OFFER_BYTES + 1];
        assert!(matches!(check_offer(&big, Intent::Publish), Err(OfferError::TooLarge(_))));
    }

    #[test]
    fn the_opus_track_is_found() {
        let text = offer("sendrecv", "opus/48000/2");
        assert_eq!(opus_track(&text), Some(("0".to_owned(), 111)));
        assert_eq!(opus_track(&offer("sendrecv", "PCMU/8000")), None);
        assert!(wants_audio_back(&text));
        assert!(!wants_audio_back(&offer("sendonly", "opus/48000/2")));
    }

    #[test]
    fn text_that_looks_right_but_is_not_sdp_is_malformed() {
        let text = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            check_offer(text.as_bytes(), Intent::Publish),
            Err(OfferError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2_000)) {
            let _ = check_offer(&body, Intent::Publish);
            let _ = check_offer(&body, Intent::Subscribe);
        }

        #[test]
        fn mangled_offers_never_panic(cut in 0usize..900, junk in "[ -~\r\n]{0,40}") {
            let mut text = offer("sendrecv", "opus/48000/2");
            let at = cut.min(text.len());
            text.insert_str(at, &junk);
            let _ = check_offer(text.as_bytes(), Intent::Subscribe);
        }
    }
}
