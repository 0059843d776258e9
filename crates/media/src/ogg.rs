//! Ogg/Opus (RFC 7845) muxing for the Icecast-style HTTP stream, and demuxing for files and tests.
//!
//! The muxer builds the ID and comment header pages once; a listener who joins late receives those
//! headers and then the live pages, exactly as Icecast serves a late joiner. Granule positions
//! count 48 kHz samples from the start of the stream, as RFC 7845 §4 requires.

use std::io::Cursor;

use bytes::Bytes;
use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};

use crate::frame::{FRAME_SAMPLES, SAMPLE_RATE};

/// The Opus identification header (RFC 7845 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channels.
    pub channels: u8,
    /// Samples to discard at the start of decoding.
    pub pre_skip: u16,
    /// Sample rate of the original input (informational).
    pub input_rate: u32,
    /// Output gain in Q7.8 dB.
    pub gain: i16,
}

/// Why Ogg/Opus input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OggError {
    /// The Ogg framing is broken.
    #[error("ogg: {0}")]
    Ogg(#[from] ogg::OggReadError),
    /// The first packet is not an `OpusHead`.
    #[error("not an Ogg/Opus stream: {0}")]
    NotOpus(&'static str),
    /// Writing a page failed (only possible with a failing writer).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl OpusHead {
    /// Encodes the header packet (mapping family 0: mono or stereo).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19);
        out.extend_from_slice(b"OpusHead");
        out.push(1);
        out.push(self.channels);
        out.extend_from_slice(&self.pre_skip.to_le_bytes());
        out.extend_from_slice(&self.input_rate.to_le_bytes());
        out.extend_from_slice(&self.gain.to_le_bytes());
        out.push(0);
        out
    }

    /// Parses an `OpusHead` packet.
    pub fn parse(packet: &[u8]) -> Result<OpusHead, OggError> {
        if packet.len() < 19 || &packet[..8] != b"OpusHead" {
            return Err(OggError::NotOpus("missing OpusHead"));
        }
        if packet[8] & 0xF0 != 0 {
            return Err(OggError::NotOpus("unsupported OpusHead version"));
        }
        Ok(OpusHead {
            channels: packet[9],
            pre_skip: u16::from_le_bytes([packet[10], packet[11]]),
            input_rate: u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]),
            gain: i16::from_le_bytes([packet[16], packet[17]]),
        })
    }
}

/// The vendor string of every comment header Townhall writes.
const VENDOR: &str = "townhall";

/// Encodes an `OpusTags` packet with a vendor string and `KEY=value` comments.
fn opus_tags(vendor: &str, comments: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"OpusTags");
    out.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    out.extend_from_slice(vendor.as_bytes());
    out.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for c in comments {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c.as_bytes());
    }
    out
}

/// An `OpusTags` packet with Townhall's vendor string and `comments` (`KEY=value`).
pub(crate) fn opus_tags_packet(comments: &[String]) -> Vec<u8> {
    opus_tags(VENDOR, comments)
}

/// The comments of an `OpusTags` packet, if it is well formed (lengths within the packet).
pub(crate) fn parse_opus_tags(packet: &[u8]) -> Option<Vec<String>> {
    let rest = packet.strip_prefix(b"OpusTags")?;
    let (vendor_len, rest) = read_u32(rest)?;
    let rest = rest.get(vendor_len..)?;
    let (count, mut rest) = read_u32(rest)?;
    let mut comments = Vec::new();
    for _ in 0..count {
        let (len, after) = read_u32(rest)?;
        comments.push(String::from_utf8_lossy(after.get(..len)?).into_owned());
        rest = after.get(len..)?;
    }
    Some(comments)
}

fn read_u32(data: &[u8]) -> Option<(usize, &[u8])> {
    let bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some((usize::try_from(u32::from_le_bytes(bytes)).ok()?, &data[4..]))
}

/// A comment value as Townhall writes it: control characters out (a newline in a title would
/// pass for another comment in tools that list them one a line), at most 200 characters.
pub(crate) fn tag_value(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Starts a stream the way the live Ogg stream and recordings both start, so their headers
/// cannot drift apart: a page writer for logical stream `serial`, and the header pages it wrote
/// (a mono `OpusHead` at 48 kHz with `pre_skip` and no gain, then `OpusTags` with `comments`)
/// for the caller to send or write before any audio.
pub(crate) fn start_stream(
    serial: u32,
    pre_skip: u16,
    comments: &[String],
) -> Result<(PacketWriter<'static, Vec<u8>>, Vec<u8>), OggError> {
    let mut writer = PacketWriter::new(Vec::new());
    let head = OpusHead { channels: 1, pre_skip, input_rate: SAMPLE_RATE, gain: 0 };
    write_header_pages(&mut writer, serial, head.encode(), opus_tags(VENDOR, comments))?;
    let headers = std::mem::take(writer.inner_mut());
    Ok((writer, headers))
}

/// Writes the identification and comment header packets, each on a page of its own at granule
/// position 0, as RFC 7845 §3 requires before any audio.
pub(crate) fn write_header_pages(
    writer: &mut PacketWriter<'_, Vec<u8>>,
    serial: u32,
    head: Vec<u8>,
    tags: Vec<u8>,
) -> std::io::Result<()> {
    writer.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
    writer.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)
}

/// Turns a stream of 20 ms mono Opus packets into Ogg pages of `frames_per_page` packets.
pub struct OggOpusMuxer {
    writer: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    granule: u64,
    frames_per_page: usize,
    pending: usize,
    headers: Bytes,
}

impl std::fmt::Debug for OggOpusMuxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusMuxer")
            .field("serial", &self.serial)
            .field("granule", &self.granule)
            .field("frames_per_page", &self.frames_per_page)
            .finish_non_exhaustive()
    }
}

impl OggOpusMuxer {
    /// A muxer for logical stream `serial`; `title` goes into the comment header.
    pub fn new(
        serial: u32,
        pre_skip: u16,
        frames_per_page: usize,
        title: &str,
    ) -> Result<OggOpusMuxer, OggError> {
        let (writer, headers) =
            start_stream(serial, pre_skip, &[format!("TITLE={}", tag_value(title))])?;
        let headers = Bytes::from(headers);
        Ok(OggOpusMuxer {
            writer,
            serial,
            granule: 0,
            frames_per_page: frames_per_page.max(1),
            pending: 0,
            headers,
        })
    }

    /// The ID and comment header pages: what every listener receives first.
    pub fn headers(&self) -> Bytes {
        self.headers.clone()
    }

    /// Adds one 20 ms packet; returns a page when one is complete. With `end_of_stream`, the
    /// page is closed and marked as the stream's last.
    pub fn push(&mut self, packet: &[u8], end_of_stream: bool) -> Result<Option<Bytes>, OggError> {
        self.granule += FRAME_SAMPLES as u64;
        self.pending += 1;
        let end = if end_of_stream {
            PacketWriteEndInfo::EndStream
        } else if self.pending >= self.frames_per_page {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        self.writer.write_packet(packet.to_vec(), self.serial, end, self.granule)?;
        if end == PacketWriteEndInfo::NormalPacket {
            return Ok(None);
        }
        self.pending = 0;
        Ok(Some(Bytes::from(std::mem::take(self.writer.inner_mut()))))
    }
}

/// An Ogg/Opus stream read back into its header and packets.
#[derive(Debug, Clone)]
pub struct OggOpusReader {
    /// The identification header.
    pub head: OpusHead,
    /// Audio packets in order (headers excluded).
    pub packets: Vec<Bytes>,
    /// Granule position of the last complete page.
    pub last_granule: u64,
}

impl OggOpusReader {
    /// Reads a whole Ogg/Opus stream (the first logical stream). A truncated last page, as when
    /// a live HTTP capture is cut off, ends the packets without error.
    pub fn parse(data: &[u8]) -> Result<OggOpusReader, OggError> {
        let mut reader = PacketReader::new(Cursor::new(data));
        let head_packet = reader.read_packet()?.ok_or(OggError::NotOpus("empty stream"))?;
        let head = OpusHead::parse(&head_packet.data)?;
        let tags = reader.read_packet()?.ok_or(OggError::NotOpus("missing OpusTags"))?;
        if !tags.data.starts_with(b"OpusTags") {
            return Err(OggError::NotOpus("missing OpusTags"));
        }
        let mut packets = Vec::new();
        let mut last_granule = 0;
        loop {
            match reader.read_packet() {
                Ok(Some(p)) => {
                    if p.last_in_page() {
                        last_granule = p.absgp_page();
                    }
                    packets.push(Bytes::from(p.data));
                }
                Ok(None) => break,
                // A cut-off tail (live capture) ends the stream; corruption before it is an error.
                Err(ogg::OggReadError::ReadError(_)) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(OggOpusReader { head, packets, last_granule })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{ToneGenerator, tone_amplitude};
    use proptest::prelude::*;

    fn encoder() -> opus::Encoder {
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
            .expect("encoder")
    }

    #[test]
    fn headers_round_trip() {
        let head = OpusHead { channels: 1, pre_skip: 312, input_rate: 48_000, gain: -3 };
        assert_eq!(OpusHead::parse(&head.encode()).expect("parse"), head);
        assert!(OpusHead::parse(b"OpusHeaX0123456789012").is_err());
    }

    /// The header pages byte for byte, as they were before recordings came to share
    /// `start_stream` (CRCs included): a listener's player and a recording's readers see the
    /// same stream start as before.
    #[test]
    fn header_pages_are_unchanged() {
        let mux = OggOpusMuxer::new(7, 312, 5, "test").expect("muxer");
        let hex: String = mux.headers().iter().map(|b| format!("{b:02x}")).collect();
        let want = concat!(
            "4f676753000200000000000000000700000000000000810b352f01134f7075734865616401013801",
            "80bb0000000000",
            "4f676753000000000000000000000700000001000000cc59f92801264f7075735461677308000000",
            "746f776e68616c6c010000000a0000005449544c453d74657374",
        );
        assert_eq!(hex, want);
    }

    #[test]
    fn a_muxed_tone_decodes_back_with_correct_granules() {
        let mut enc = encoder();
        let mut mux = OggOpusMuxer::new(7, 312, 5, "test").expect("muxer");
        let mut tone = ToneGenerator::new(440.0, 0.4);
        let mut stream = mux.headers().to_vec();
        for i in 0..50 {
            let pkt = enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode");
            if let Some(page) = mux.push(&pkt, i == 49).expect("push") {
                stream.extend_from_slice(&page);
            }
        }
        let read = OggOpusReader::parse(&stream).expect("parse");
        assert_eq!(read.head.pre_skip, 312);
        assert_eq!(read.packets.len(), 50);
        assert_eq!(read.last_granule, 50 * FRAME_SAMPLES as u64);
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut pcm = Vec::new();
        let mut buf = [0.0f32; FRAME_SAMPLES];
        for p in &read.packets {
            let n = dec.decode_float(p, &mut buf, false).expect("decode");
            pcm.extend_from_slice(&buf[..n]);
        }
        let settled = &pcm[4_800..];
        assert!(tone_amplitude(settled, 440.0) > 0.3);
    }

    #[test]
    fn a_late_joiner_stream_still_parses() {
        let mut enc = encoder();
        let mut mux = OggOpusMuxer::new(1, 312, 2, "late").expect("muxer");
        let mut pages = Vec::new();
        for _ in 0..20 {
            let pkt = enc.encode_vec_float(&[0.0; FRAME_SAMPLES], 1275).expect("encode");
            pages.extend(mux.push(&pkt, false).expect("push"));
        }
        let mut late = mux.headers().to_vec();
        for page in &pages[5..] {
            late.extend_from_slice(page);
        }
        let read = OggOpusReader::parse(&late).expect("late joiner parses");
        assert_eq!(read.packets.len(), 10);
        assert_eq!(read.last_granule, 20 * FRAME_SAMPLES as u64);
    }

    proptest! {
        /// Any packet sizes, any page sizes: everything pushed comes back, in order.
        #[test]
        fn pages_carry_every_packet(
            sizes in proptest::collection::vec(1usize..600, 1..60),
            per_page in 1usize..12,
        ) {
            let mut mux = OggOpusMuxer::new(3, 0, per_page, "p").expect("muxer");
            let mut stream = mux.headers().to_vec();
            let packets: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| vec![i as u8; *n]).collect();
            for (i, p) in packets.iter().enumerate() {
                if let Some(page) = mux.push(p, i + 1 == packets.len()).expect("push") {
                    stream.extend_from_slice(&page);
                }
            }
            let read = OggOpusReader::parse(&stream).expect("parse");
            let got: Vec<Vec<u8>> = read.packets.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, packets);
            prop_assert_eq!(read.last_granule, sizes.len() as u64 * FRAME_SAMPLES as u64);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = OggOpusReader::parse(&bytes);
        }
    }
}
