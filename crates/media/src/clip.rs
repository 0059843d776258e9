//! Clips: a range of an Ogg/Opus stream cut out as a stream of its own, without re-encoding.
//!
//! A clip keeps the source's Opus packets exactly, grouped in the pages they came in; only the
//! page headers change: a serial of its own, page sequence numbers from 0, granule positions
//! counted from the clip's first page, and a new `OpusTags` (its title). Its `OpusHead` is the
//! source's, with a pre-skip that makes playback start where the clip was asked to start:
//!
//! - The first page kept is the one holding the sample [`PREROLL_SAMPLES`] (80 ms) before the
//!   wanted start, less its whole packets that end before that sample: a decoder that starts
//!   there has converged by the wanted start (RFC 7845 §5.1 recommends a pre-skip of at least
//!   80 ms when cropping the beginning of a stream; without it, the first words click).
//! - The pre-skip is the distance from the clip's first sample to the wanted start (80 ms and
//!   less than a packet more): players discard it (RFC 7845 §4.2), so the clip is heard from
//!   the wanted sample. It also covers the source's own pre-skip (the encoder's delay): sample
//!   `s` of the source plays at `s - pre_skip`, and the clip keeps that mapping.
//! - The last page is the one holding the wanted end, less its whole packets that start after
//!   it; it is flagged end-of-stream and its granule position is the wanted end, so players
//!   trim the rest of its last packet (end trimming, RFC 7845 §4.4).
//!
//! So a clip is exact to the sample at both ends while every page between keeps its packets
//! as they came (pages of Townhall's program stream are 20 ms to 1 s long). Whole packets are
//! dropped from the first and last pages rather than kept for the pre-skip and the end
//! trimming to discard because ffmpeg (and so the browsers built on it) reports an Ogg Opus
//! stream's length from its last granule position without subtracting the pre-skip: a
//! pre-skip of up to a page would show a clip up to a page longer than it plays.
//!
//! [`Cutter`] is sans-IO and streaming: the caller pushes the source's bytes in any chunks
//! (from the start, or from any page boundary after the headers with [`Cutter::jump`], which
//! [`find_page`] helps to find in a long file) and stops reading once [`Cutter::is_done`].
//! Whatever the input, it returns an error rather than panicking, and holds at most one page
//! of input, one packet in progress and the clip itself (bounded by [`ClipSpec::max_bytes`]).

use ogg::{PacketWriteEndInfo, PacketWriter};

use crate::frame::SAMPLE_RATE;
use crate::ogg::{OpusHead, opus_tags_packet, tag_value, write_header_pages};

/// Pre-roll kept before a clip's start so the decoder has converged there: 80 ms at 48 kHz
/// (RFC 7845 §4.6).
pub const PREROLL_SAMPLES: u64 = 3_840;

/// The largest Ogg page: a 27-byte header, 255 lacing values and 255 segments of 255 bytes.
pub const MAX_PAGE_BYTES: usize = 27 + 255 + 255 * 255;

/// The largest packet the cutter assembles (an `OpusTags` with pictures is the biggest in
/// practice; Opus audio packets are far smaller).
const MAX_PACKET_BYTES: usize = 1 << 20;

/// Samples per millisecond at 48 kHz.
const PER_MS: u64 = (SAMPLE_RATE / 1_000) as u64;

const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// What to cut and how to label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipSpec {
    /// Where the clip starts, ms of the source's playback time (its first sample after the
    /// source's pre-skip is at 0).
    pub from_ms: u64,
    /// Where it ends (exclusive), ms; more than `from_ms`.
    pub to_ms: u64,
    /// The clip's Ogg serial number.
    pub serial: u32,
    /// The clip's `OpusTags` comments (`KEY=value`, e.g. `TITLE=...`).
    pub comments: Vec<String>,
    /// The largest clip, bytes: a cut that would be larger fails with [`CutError::TooLarge`].
    pub max_bytes: usize,
}

/// What a clip's comment header (`OpusTags`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipTags {
    /// The clip's title (`TITLE`).
    pub title: String,
    /// The space it comes from (`TOWNHALL_SPACE`).
    pub space: String,
    /// The clip's id (`TOWNHALL_CLIP`).
    pub clip: String,
    /// The recording it was cut from, if any (`TOWNHALL_RECORDING`).
    pub recording: Option<String>,
    /// When it was made, seconds since the Unix epoch (`DATE`, ISO 8601 UTC).
    pub created_at: u64,
}

impl ClipTags {
    /// The `KEY=value` comments, values cleaned as every Townhall tag (no control characters,
    /// at most 200 characters).
    pub fn comments(&self) -> Vec<String> {
        let mut out = vec![
            format!("TITLE={}", tag_value(&self.title)),
            format!("DATE={}", crate::recording::iso8601(self.created_at)),
            format!("TOWNHALL_SPACE={}", tag_value(&self.space)),
            format!("TOWNHALL_CLIP={}", tag_value(&self.clip)),
        ];
        if let Some(recording) = &self.recording {
            out.push(format!("TOWNHALL_RECORDING={}", tag_value(recording)));
        }
        out.push("ENCODER=townhall".to_owned());
        out
    }
}

/// Why a clip could not be cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutError {
    /// The input does not start with Ogg/Opus headers.
    #[error("not an Ogg/Opus stream: {0}")]
    NotOpus(&'static str),
    /// The input is damaged (a bad page, a page missing, granule positions going back).
    #[error("damaged Ogg stream: {0}")]
    Corrupt(&'static str),
    /// `to_ms` is not after `from_ms`.
    #[error("the clip's end must be after its start")]
    EmptyRange,
    /// The stream holds no audio in the range.
    #[error("the stream has no audio in that range")]
    OutOfRange,
    /// The clip would be larger than allowed.
    #[error("the clip would exceed {0} bytes")]
    TooLarge(usize),
    /// [`Cutter::jump`] before the headers were read.
    #[error("jumped before the headers were read")]
    JumpBeforeHeaders,
}

/// A clip, ready to store or serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// The Ogg/Opus file.
    pub bytes: Vec<u8>,
    /// Its `OpusHead` pre-skip.
    pub pre_skip: u16,
    /// Its last granule position.
    pub granule: u64,
    /// Audio packets in it.
    pub packets: usize,
    /// Audio pages in it (as in the source).
    pub pages: usize,
    /// Where it starts, ms of the source's playback time (the wanted start, or later when the
    /// source has nothing earlier).
    pub start_ms: u64,
    /// Where it ends, ms of the source's playback time (the wanted end, or earlier when the
    /// source ends first).
    pub end_ms: u64,
}

impl Clip {
    /// How long it plays, ms.
    pub fn duration_ms(&self) -> u64 {
        self.granule.saturating_sub(u64::from(self.pre_skip)) / PER_MS
    }
}

/// A page found by [`find_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAt {
    /// Where it starts in the searched bytes.
    pub offset: usize,
    /// Its length, bytes.
    pub len: usize,
    /// Its granule position (never -1: pages where no packet ends are passed over).
    pub granule: u64,
    /// Its stream's serial number.
    pub serial: u32,
}

/// The first complete, CRC-valid page in `data` on which a packet ends (so it has a granule
/// position), wherever it starts: for finding page boundaries in the middle of a file.
pub fn find_page(data: &[u8]) -> Option<PageAt> {
    let mut from = 0;
    while let Some(at) = data.get(from..)?.windows(4).position(|w| w == b"OggS") {
        let offset = from + at;
        if let Ok(Some(p)) = parse_page(&data[offset..])
            && p.granule != u64::MAX
        {
            return Some(PageAt { offset, len: p.len, granule: p.granule, serial: p.serial });
        }
        from = offset + 1;
    }
    None
}

/// One complete, CRC-valid page.
struct Page<'a> {
    flags: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    lacing: &'a [u8],
    body: &'a [u8],
    len: usize,
}

/// The page at the start of `data`: `Ok(None)` if more bytes are needed to tell, an error if
/// it is not a valid page.
fn parse_page(data: &[u8]) -> Result<Option<Page<'_>>, CutError> {
    const CAPTURE: &[u8] = b"OggS";
    let seen = data.len().min(4);
    if data[..seen] != CAPTURE[..seen] {
        return Err(CutError::Corrupt("no Ogg page where one should start"));
    }
    let Some(header) = data.get(..27) else { return Ok(None) };
    if header[4] != 0 {
        return Err(CutError::Corrupt("unknown Ogg version"));
    }
    let segments = usize::from(header[26]);
    let Some(lacing) = data.get(27..27 + segments) else { return Ok(None) };
    let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let len = 27 + segments + body_len;
    let Some(page) = data.get(..len) else { return Ok(None) };
    let stored = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
    if crc32(page) != stored {
        return Err(CutError::Corrupt("an Ogg page fails its checksum"));
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let mut granule = [0u8; 8];
    granule.copy_from_slice(&header[6..14]);
    Ok(Some(Page {
        flags: header[5],
        granule: u64::from_le_bytes(granule),
        serial: u32_at(14),
        seq: u32_at(18),
        lacing,
        body: &page[27 + segments..],
        len,
    }))
}

/// The Ogg CRC-32 (polynomial 0x04c11db7, not reflected, no final XOR) of a page with its
/// checksum field taken as zero.
fn crc32(page: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut r = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04c1_1db7 } else { r << 1 };
                bit += 1;
            }
            table[i] = r;
            i += 1;
        }
        table
    };
    let mut crc = 0u32;
    for (i, &b) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { b };
        crc = (crc << 8) ^ TABLE[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

/// Samples (48 kHz) of an Opus packet, from its table of contents.
fn packet_samples(packet: &[u8]) -> Option<u64> {
    opus::packet::get_nb_samples(packet, SAMPLE_RATE).ok().map(|n| n as u64)
}

/// An audio page kept for the clip: its packets and the samples it spans in the source.
struct Kept {
    packets: Vec<Vec<u8>>,
    start: u64,
    end: u64,
}

impl Kept {
    /// Where each packet starts and ends, counted back from the page's end (its granule
    /// position names the end of its last packet); `None` if a packet's length cannot be read
    /// or the packets do not fit in the page's span.
    fn packet_spans(&self) -> Option<Vec<(u64, u64)>> {
        let mut spans = vec![(0, 0); self.packets.len()];
        let mut at = self.end;
        for (i, p) in self.packets.iter().enumerate().rev() {
            let start = at.checked_sub(packet_samples(p)?)?;
            spans[i] = (start, at);
            at = start;
        }
        (at >= self.start).then_some(spans)
    }

    /// The first page of a clip: drops the whole packets that end at or before `sample` (before
    /// the pre-roll), so the pre-skip is the pre-roll and less than a packet more, not up to a
    /// page more: players that show a length from the last granule position (ffmpeg, and
    /// browsers built on it, do not subtract the pre-skip) then show about the right one. A
    /// page whose packets cannot be timed is kept whole.
    fn drop_before(&mut self, sample: u64) {
        let Some(spans) = self.packet_spans() else { return };
        let n = spans.iter().take_while(|(_, end)| *end <= sample).count().min(spans.len() - 1);
        if n > 0 {
            self.start = spans[n].0;
            self.packets.drain(..n);
        }
    }

    /// The last page of a clip: drops the whole packets that start at or after `sample` (the
    /// clip's end), which end trimming would discard anyway: fewer bytes, and players that
    /// ignore end trimming play less than a packet too much, not up to a page.
    fn drop_from(&mut self, sample: u64) {
        let Some(spans) = self.packet_spans() else { return };
        let keep = spans.iter().take_while(|(start, _)| *start < sample).count().max(1);
        if keep < spans.len() {
            self.packets.truncate(keep);
            self.end = spans[keep - 1].1;
        }
    }
}

/// Cuts a clip out of an Ogg/Opus stream fed to it in chunks. See the [module](self) docs.
pub struct Cutter {
    spec: ClipSpec,
    buf: Vec<u8>,
    /// The source's `OpusHead` packet, then its pre-skip.
    head: Option<(Vec<u8>, u16)>,
    /// Header packets read (`OpusHead`, `OpusTags`).
    headers: usize,
    serial: Option<u32>,
    next_seq: Option<u32>,
    partial: Vec<u8>,
    in_packet: bool,
    /// After a jump: the first page's leading continued packet is to be dropped.
    drop_continued: bool,
    /// Granule position of the last page on which a packet ended (since the start or a jump).
    prev_end: Option<u64>,
    kept: Vec<Kept>,
    kept_bytes: usize,
    done: bool,
}

impl std::fmt::Debug for Cutter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cutter")
            .field("spec", &self.spec)
            .field("headers", &self.headers)
            .field("kept", &self.kept.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Cutter {
    /// A cutter for `spec`; feed it the source from its first byte.
    pub fn new(spec: ClipSpec) -> Result<Cutter, CutError> {
        if spec.to_ms <= spec.from_ms {
            return Err(CutError::EmptyRange);
        }
        Ok(Cutter {
            spec,
            buf: Vec::new(),
            head: None,
            headers: 0,
            serial: None,
            next_seq: None,
            partial: Vec::new(),
            in_packet: false,
            drop_continued: false,
            prev_end: None,
            kept: Vec::new(),
            kept_bytes: 0,
            done: false,
        })
    }

    /// Whether both header packets have been read (only then may the caller [`jump`](Self::jump)).
    pub fn has_headers(&self) -> bool {
        self.headers >= 2
    }

    /// Whether everything the clip needs has been read: the caller may stop feeding.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The source's pre-skip, once its `OpusHead` has been read.
    pub fn source_pre_skip(&self) -> Option<u16> {
        self.head.as_ref().map(|(_, p)| *p)
    }

    /// The granule position a page may end at and still be skipped: a caller seeking in a long
    /// source may [`jump`](Self::jump) to any page that ends at or before it. `None` before the
    /// headers.
    pub fn skippable_until(&self) -> Option<u64> {
        self.head.as_ref()?;
        Some(self.wanted().0.saturating_sub(PREROLL_SAMPLES))
    }

    /// The wanted range in source samples (granule units: the pre-skip included).
    fn wanted(&self) -> (u64, u64) {
        let pre_skip = self.head.as_ref().map_or(0, |(_, p)| u64::from(*p));
        let at = |ms: u64| ms.saturating_mul(PER_MS).saturating_add(pre_skip);
        (at(self.spec.from_ms), at(self.spec.to_ms))
    }

    /// The next bytes fed start at a page boundary somewhere after the headers (the caller
    /// skipped ahead): page sequence numbers restart from whatever comes, and a packet that
    /// began before the jump is dropped.
    pub fn jump(&mut self) -> Result<(), CutError> {
        if !self.has_headers() {
            return Err(CutError::JumpBeforeHeaders);
        }
        self.buf.clear();
        self.partial.clear();
        self.in_packet = false;
        self.drop_continued = true;
        self.next_seq = None;
        self.prev_end = None;
        Ok(())
    }

    /// Feeds the next bytes of the source.
    pub fn push(&mut self, data: &[u8]) -> Result<(), CutError> {
        if self.done {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while !self.done {
            let rest = &self.buf[pos..];
            if rest.is_empty() {
                break;
            }
            // (A page is at most MAX_PAGE_BYTES: the buffer never holds more than one that is
            // incomplete, plus the chunk just pushed.)
            let Some(page) = parse_page(rest)? else { break };
            let len = page.len;
            let page = OwnedPage::from(&page);
            self.page(page)?;
            pos += len;
        }
        self.buf.drain(..pos);
        Ok(())
    }

    fn page(&mut self, p: OwnedPage) -> Result<(), CutError> {
        match self.serial {
            None => {
                if p.flags & FLAG_BOS == 0 {
                    return Err(CutError::NotOpus("the stream does not begin with its first page"));
                }
                self.serial = Some(p.serial);
            }
            Some(serial) if serial != p.serial => {
                return Err(CutError::Corrupt("a page of another logical stream"));
            }
            Some(_) if p.flags & FLAG_BOS != 0 => {
                return Err(CutError::Corrupt("a second first page"));
            }
            Some(_) => {}
        }
        if let Some(next) = self.next_seq
            && p.seq != next
        {
            return Err(CutError::Corrupt("a page is missing"));
        }
        self.next_seq = Some(p.seq.wrapping_add(1));
        let continued = p.flags & FLAG_CONTINUED != 0;
        let mut skipping = false;
        if self.drop_continued {
            self.drop_continued = false;
            skipping = continued;
        } else if continued != self.in_packet {
            return Err(CutError::Corrupt("a packet's continuation does not match"));
        }
        let mut completed = Vec::new();
        let mut offset = 0;
        for &lace in &p.lacing {
            let n = usize::from(lace);
            if !skipping {
                if self.partial.len() + n > MAX_PACKET_BYTES {
                    return Err(CutError::Corrupt("a packet larger than any Opus stream holds"));
                }
                self.partial.extend_from_slice(&p.body[offset..offset + n]);
            }
            offset += n;
            if lace < 255 {
                if skipping {
                    skipping = false;
                } else {
                    completed.push(std::mem::take(&mut self.partial));
                }
            }
        }
        self.in_packet = p.lacing.last().is_some_and(|&l| l == 255) && !skipping;
        if skipping {
            // The whole page continued a packet from before the jump: it ends on a later page.
            self.drop_continued = true;
        }
        let mut audio = Vec::new();
        for packet in completed {
            match self.headers {
                0 => {
                    let head = OpusHead::parse(&packet)
                        .map_err(|_| CutError::NotOpus("the first packet is not an OpusHead"))?;
                    self.head = Some((packet, head.pre_skip));
                    self.headers = 1;
                }
                1 => {
                    if !packet.starts_with(b"OpusTags") {
                        return Err(CutError::NotOpus("the second packet is not OpusTags"));
                    }
                    self.headers = 2;
                }
                _ => audio.push(packet),
            }
        }
        if !audio.is_empty() {
            self.audio_page(audio, p.granule)?;
        }
        if p.flags & FLAG_EOS != 0 {
            self.done = true;
        }
        Ok(())
    }

    fn audio_page(&mut self, packets: Vec<Vec<u8>>, end: u64) -> Result<(), CutError> {
        if end == u64::MAX {
            return Err(CutError::Corrupt("a page where packets end has no granule position"));
        }
        let start = match self.prev_end {
            Some(prev) if end < prev => {
                return Err(CutError::Corrupt("granule positions go back"));
            }
            Some(prev) => prev,
            None => {
                let mut samples = 0u64;
                for p in &packets {
                    let n = packet_samples(p).ok_or(CutError::Corrupt("not an Opus packet"))?;
                    samples = samples.saturating_add(n);
                }
                end.checked_sub(samples)
                    .ok_or(CutError::Corrupt("a granule position before its own packets"))?
            }
        };
        if self.kept.last().is_some_and(|k| start < k.end) {
            // Only a caller that jumped backwards gets here.
            return Err(CutError::Corrupt("pages overlap"));
        }
        self.prev_end = Some(end);
        let (want_start, want_end) = self.wanted();
        if start >= want_end {
            self.done = true;
            return Ok(());
        }
        if end <= want_start.saturating_sub(PREROLL_SAMPLES) {
            return Ok(());
        }
        let mut page = Kept { packets, start, end };
        if self.kept.is_empty() {
            page.drop_before(want_start.saturating_sub(PREROLL_SAMPLES));
        }
        if end >= want_end {
            page.drop_from(want_end);
            self.done = true;
        }
        let bytes: usize = page.packets.iter().map(|p| p.len() + p.len() / 255 + 1).sum();
        self.kept_bytes = self.kept_bytes.saturating_add(bytes + 27);
        if self.kept_bytes > self.spec.max_bytes {
            return Err(CutError::TooLarge(self.spec.max_bytes));
        }
        self.kept.push(page);
        Ok(())
    }

    /// Writes the clip from what was read. A cut-off last page (a live capture) is ignored.
    pub fn finish(self) -> Result<Clip, CutError> {
        let (Some((head_packet, source_pre_skip)), true) = (&self.head, self.has_headers()) else {
            return Err(CutError::NotOpus("the headers are incomplete"));
        };
        let source_pre_skip = u64::from(*source_pre_skip);
        let (want_start, want_end) = self.wanted();
        let (Some(first), Some(last)) = (self.kept.first(), self.kept.last()) else {
            return Err(CutError::OutOfRange);
        };
        let base = first.start;
        // Where playback starts: the wanted sample; at the source's very start, its own
        // pre-skip; and never less than the pre-roll after a cut in the middle.
        let floor = if base == 0 { source_pre_skip } else { PREROLL_SAMPLES };
        let pre_skip = want_start.saturating_sub(base).max(floor).min(u64::from(u16::MAX));
        let end = last.end.min(want_end);
        let granule = end - base;
        if granule <= pre_skip {
            return Err(CutError::OutOfRange);
        }
        let pre_skip_u16 = u16::try_from(pre_skip).unwrap_or(u16::MAX);
        let mut head = head_packet.clone();
        head[10..12].copy_from_slice(&pre_skip_u16.to_le_bytes());
        let tags = opus_tags_packet(&self.spec.comments);
        let write = |_: std::io::Error| CutError::Corrupt("cannot write the clip");
        let mut writer = PacketWriter::new(Vec::with_capacity(self.kept_bytes + 512));
        let serial = self.spec.serial;
        write_header_pages(&mut writer, serial, head, tags).map_err(write)?;
        let pages = self.kept.len();
        let mut packets = 0;
        for (i, page) in self.kept.into_iter().enumerate() {
            let is_last = i + 1 == pages;
            let page_granule = if is_last { granule } else { page.end.saturating_sub(base) };
            let n = page.packets.len();
            for (j, packet) in page.packets.into_iter().enumerate() {
                let info = match (j + 1 == n, is_last) {
                    (true, true) => PacketWriteEndInfo::EndStream,
                    (true, false) => PacketWriteEndInfo::EndPage,
                    _ => PacketWriteEndInfo::NormalPacket,
                };
                writer.write_packet(packet, serial, info, page_granule).map_err(write)?;
                packets += 1;
            }
        }
        let bytes = writer.into_inner();
        if bytes.len() > self.spec.max_bytes {
            return Err(CutError::TooLarge(self.spec.max_bytes));
        }
        let playback = |g: u64| g.saturating_sub(source_pre_skip) / PER_MS;
        Ok(Clip {
            bytes,
            pre_skip: pre_skip_u16,
            granule,
            packets,
            pages,
            start_ms: playback(base.saturating_add(pre_skip)),
            end_ms: playback(end),
        })
    }
}

/// A page's fields, owned (the input buffer is drained while pages are handled).
struct OwnedPage {
    flags: u8,
    granule: u64,
    serial: u32,
    seq: u32,
    lacing: Vec<u8>,
    body: Vec<u8>,
}

impl From<&Page<'_>> for OwnedPage {
    fn from(p: &Page<'_>) -> OwnedPage {
        OwnedPage {
            flags: p.flags,
            granule: p.granule,
            serial: p.serial,
            seq: p.seq,
            lacing: p.lacing.to_vec(),
            body: p.body.to_vec(),
        }
    }
}

/// Cuts a clip out of a whole stream in memory.
pub fn cut(source: &[u8], spec: ClipSpec) -> Result<Clip, CutError> {
    let mut cutter = Cutter::new(spec)?;
    cutter.push(source)?;
    cutter.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{ToneGenerator, tone_amplitude};
    use crate::frame::FRAME_SAMPLES;
    use crate::ogg::{OggOpusMuxer, OggOpusReader};
    use proptest::prelude::*;

    const FRAME: u64 = FRAME_SAMPLES as u64;

    fn spec(from_ms: u64, to_ms: u64) -> ClipSpec {
        ClipSpec {
            from_ms,
            to_ms,
            serial: 77,
            comments: vec!["TITLE=a clip".into()],
            max_bytes: 1 << 20,
        }
    }

    /// A stream of `packets` (headers first) in pages of `per_page`, ended.
    fn stream(packets: &[Vec<u8>], per_page: usize, pre_skip: u16) -> Vec<u8> {
        let mut mux = OggOpusMuxer::new(5, pre_skip, per_page, "source").expect("muxer");
        let mut out = mux.headers().to_vec();
        for (i, p) in packets.iter().enumerate() {
            if let Some(page) = mux.push(p, i + 1 == packets.len()).expect("push") {
                out.extend_from_slice(&page);
            }
        }
        out
    }

    /// `n` synthetic 20 ms packets (a CELT TOC byte, then `i`'s bytes): enough for the cutter,
    /// which never decodes.
    fn synthetic(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![0xF8, (i % 251) as u8, (i / 251) as u8]).collect()
    }

    fn tone_packets(n: usize) -> (Vec<Vec<u8>>, u16) {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                .expect("encoder");
        let pre_skip = enc.get_lookahead().expect("lookahead") as u16;
        let mut tone = ToneGenerator::new(440.0, 0.4);
        let packets = (0..n)
            .map(|_| enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode"))
            .collect();
        (packets, pre_skip)
    }

    /// Decodes a clip the way a player does: the pre-skip dropped, trimmed to the last granule.
    fn play(clip: &[u8]) -> Vec<f32> {
        let read = OggOpusReader::parse(clip).expect("a valid Ogg/Opus clip");
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut pcm = Vec::new();
        let mut buf = [0.0f32; FRAME_SAMPLES];
        for p in &read.packets {
            let n = dec.decode_float(p, &mut buf, false).expect("decode");
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm.truncate(read.last_granule as usize);
        pcm.drain(..usize::from(read.head.pre_skip).min(pcm.len()));
        pcm
    }

    #[test]
    fn a_tone_clip_plays_exactly_the_range_asked_for() {
        let (packets, pre_skip) = tone_packets(500);
        let source = stream(&packets, 10, pre_skip);
        let clip = cut(&source, spec(2_010, 5_030)).expect("cut");
        assert_eq!(clip.duration_ms(), 3_020);
        assert_eq!((clip.start_ms, clip.end_ms), (2_010, 5_030));
        let pcm = play(&clip.bytes);
        assert_eq!(pcm.len(), 3_020 * 48);
        assert!(tone_amplitude(&pcm, 440.0) > 0.3, "the tone, from the first sample");
        assert!(tone_amplitude(&pcm[..960], 440.0) > 0.3, "no click at the start");
        // The source's 200 ms pages, from the one holding the pre-roll before the start (page
        // 9, 1.8-2.0 s, from its packet ending after 1.9365 s) to the one holding the end (page
        // 25, 5.0-5.2 s, to its packet holding 5.0365 s).
        let read = OggOpusReader::parse(&clip.bytes).expect("parse");
        assert_eq!(clip.pages, 17);
        assert_eq!(read.packets.len(), 156, "packets 96 to 251");
        assert_eq!(read.packets[0].to_vec(), packets[96]);
        assert_eq!(read.packets[155].to_vec(), packets[251]);
        assert_eq!(read.head.pre_skip, clip.pre_skip);
        assert_eq!(u64::from(clip.pre_skip), (2_010 - 1_920) * 48 + u64::from(pre_skip));
        assert!(u64::from(clip.pre_skip) >= PREROLL_SAMPLES);
        assert!(OggOpusReader::parse(&clip.bytes).is_ok());
        let comments = read_comments(&clip.bytes);
        assert_eq!(comments, vec!["TITLE=a clip".to_owned()]);
    }

    fn read_comments(file: &[u8]) -> Vec<String> {
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(file));
        let _head = reader.read_packet().expect("read").expect("head");
        let tags = reader.read_packet().expect("read").expect("tags");
        crate::ogg::parse_opus_tags(&tags.data).expect("tags")
    }

    #[test]
    fn a_clip_from_the_very_start_keeps_the_sources_pre_skip() {
        let (packets, pre_skip) = tone_packets(100);
        let source = stream(&packets, 5, pre_skip);
        let clip = cut(&source, spec(0, 1_000)).expect("cut");
        assert_eq!(clip.pre_skip, pre_skip);
        assert_eq!(clip.duration_ms(), 1_000);
        assert_eq!(clip.granule, 1_000 * 48 + u64::from(pre_skip));
        let whole = cut(&source, spec(0, 10_000)).expect("all of it");
        let read = OggOpusReader::parse(&whole.bytes).expect("parse");
        let got: Vec<Vec<u8>> = read.packets.iter().map(|p| p.to_vec()).collect();
        assert_eq!(got, packets, "every packet, unchanged");
        assert_eq!(whole.end_ms, (2_000 * 48 - u64::from(pre_skip)) / 48, "the source ends first");
    }

    #[test]
    fn pages_are_renumbered_and_only_the_last_ends_the_stream() {
        let source = stream(&synthetic(300), 7, 312);
        let clip = cut(&source, spec(1_000, 2_000)).expect("cut");
        let mut pos = 0;
        let mut seqs = Vec::new();
        let mut eos = Vec::new();
        while pos < clip.bytes.len() {
            let p = parse_page(&clip.bytes[pos..]).expect("valid").expect("complete");
            assert_eq!(p.serial, 77);
            seqs.push(p.seq);
            eos.push(p.flags & FLAG_EOS != 0);
            pos += p.len;
        }
        assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
        assert_eq!(eos.iter().filter(|e| **e).count(), 1);
        assert_eq!(eos.last(), Some(&true));
    }

    #[test]
    fn a_jump_to_a_page_found_in_the_middle_gives_the_same_clip() {
        let source = stream(&synthetic(3_000), 10, 312);
        let whole = cut(&source, spec(40_000, 45_000)).expect("cut");
        let mut cutter = Cutter::new(spec(40_000, 45_000)).expect("cutter");
        cutter.push(&source[..200]).expect("headers");
        assert!(cutter.has_headers());
        let until = cutter.skippable_until().expect("after the headers");
        // Any page ending at or before `until` will do; take one well before it.
        let at = source.len() / 2;
        let found = find_page(&source[at..]).expect("a page");
        assert!(found.granule <= until, "{found:?} {until}");
        cutter.jump().expect("jump");
        for chunk in source[at + found.offset..].chunks(999) {
            cutter.push(chunk).expect("push");
            if cutter.is_done() {
                break;
            }
        }
        assert_eq!(cutter.finish().expect("finish"), whole);
    }

    #[test]
    fn ranges_outside_the_stream_and_bad_ranges_are_refused() {
        let source = stream(&synthetic(100), 10, 312);
        assert_eq!(cut(&source, spec(5_000, 6_000)), Err(CutError::OutOfRange));
        assert_eq!(Cutter::new(spec(10, 10)).err(), Some(CutError::EmptyRange));
        let small = ClipSpec { max_bytes: 100, ..spec(0, 1_000) };
        assert_eq!(cut(&source, small), Err(CutError::TooLarge(100)));
        assert!(matches!(cut(b"not ogg at all", spec(0, 1)), Err(CutError::Corrupt(_))));
        assert!(matches!(cut(&source[..40], spec(0, 1)), Err(CutError::NotOpus(_))));
        let mut cutter = Cutter::new(spec(0, 1)).expect("cutter");
        assert_eq!(cutter.jump(), Err(CutError::JumpBeforeHeaders));
        // A page missing in the middle is damage, not silence.
        let first = find_page(&source[300..]).expect("page");
        let mut holed = source[..300 + first.offset].to_vec();
        holed.extend_from_slice(&source[300 + first.offset + first.len..]);
        assert_eq!(cut(&holed, spec(0, 1_900)), Err(CutError::Corrupt("a page is missing")));
    }

    #[test]
    fn tags_name_the_clip_without_control_characters() {
        let tags = ClipTags {
            title: "Night\nshow".into(),
            space: "town".into(),
            clip: "c0ffee".into(),
            recording: Some("town-1-00".into()),
            created_at: 1_767_225_600,
        };
        assert_eq!(
            tags.comments(),
            vec![
                "TITLE=Nightshow",
                "DATE=2026-01-01T00:00:00Z",
                "TOWNHALL_SPACE=town",
                "TOWNHALL_CLIP=c0ffee",
                "TOWNHALL_RECORDING=town-1-00",
                "ENCODER=townhall",
            ]
        );
    }

    #[test]
    fn the_crc_is_ogg_s() {
        // The muxer's pages (the ogg crate's CRC) pass ours.
        let source = stream(&synthetic(50), 10, 312);
        let mut pos = 0;
        while pos < source.len() {
            let p = parse_page(&source[pos..]).expect("valid").expect("complete");
            pos += p.len;
        }
        let mut bad = source.clone();
        bad[40] ^= 1;
        assert!(parse_page(&bad).is_err());
    }

    proptest! {
        /// Any bytes, in any chunks: an error or a clip, never a panic.
        #[test]
        fn any_input_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..4_000),
            split in any::<proptest::sample::Index>(),
            from_ms in 0u64..5_000,
            len_ms in 1u64..5_000,
        ) {
            let mut cutter = Cutter::new(spec(from_ms, from_ms + len_ms)).expect("cutter");
            let at = split.index(bytes.len() + 1);
            if cutter.push(&bytes[..at]).is_ok() && cutter.push(&bytes[at..]).is_ok() {
                let _ = cutter.finish();
            }
            let _ = find_page(&bytes);
        }

        /// A valid stream damaged anywhere: an error or a valid clip, never a panic.
        #[test]
        fn damaged_streams_never_panic(
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 1..4),
            cut_at in any::<proptest::sample::Index>(),
        ) {
            let mut source = stream(&synthetic(200), 9, 312);
            for (at, x) in flips {
                let i = at.index(source.len());
                source[i] ^= x;
            }
            let end = cut_at.index(source.len() + 1);
            if let Ok(clip) = cut(&source[..end], spec(500, 2_500)) {
                prop_assert!(OggOpusReader::parse(&clip.bytes).is_ok());
            }
        }

        /// Any stream, any range, any chunking: the clip is a run of the source's packets in
        /// their pages, exact at both ends where the source has the audio.
        #[test]
        fn clips_are_runs_of_the_source_exact_at_both_ends(
            frames in 1usize..400,
            per_page in 1usize..30,
            pre_skip in 0u16..1_000,
            from_ms in 0u64..9_000,
            len_ms in 1u64..4_000,
            chunk in 1usize..5_000,
        ) {
            let packets = synthetic(frames);
            let source = stream(&packets, per_page, pre_skip);
            let spec = spec(from_ms, from_ms + len_ms);
            let mut cutter = Cutter::new(spec.clone()).expect("cutter");
            for c in source.chunks(chunk) {
                cutter.push(c).expect("push");
            }
            let chunked = cutter.finish();
            prop_assert_eq!(&chunked, &cut(&source, spec.clone()));
            let total = frames as u64 * FRAME;
            let (want_start, want_end) =
                (from_ms * 48 + u64::from(pre_skip), (from_ms + len_ms) * 48 + u64::from(pre_skip));
            let clip = match chunked {
                Ok(clip) => clip,
                Err(e) => {
                    // Nothing to hear in the range (or only its pre-skip).
                    prop_assert_eq!(e, CutError::OutOfRange);
                    prop_assert!(total <= want_start, "{total} {want_start}");
                    return Ok(());
                }
            };
            let read = OggOpusReader::parse(&clip.bytes).expect("valid");
            let got: Vec<Vec<u8>> = read.packets.iter().map(|p| p.to_vec()).collect();
            let first = packets.iter().position(|p| *p == got[0]).expect("from the source");
            prop_assert_eq!(&packets[first..first + got.len()], &got[..]);
            // From the packet holding the pre-roll's first sample to the one holding the end.
            let preroll = want_start.saturating_sub(PREROLL_SAMPLES);
            prop_assert_eq!(first as u64, preroll / FRAME);
            prop_assert_eq!((first + got.len()) as u64, want_end.div_ceil(FRAME).min(frames as u64));
            prop_assert_eq!(read.last_granule, clip.granule);
            let base = first as u64 * FRAME;
            prop_assert_eq!(clip.granule, want_end.min(total) - base);
            // Heard from exactly the wanted sample (after at least the pre-roll, at most a
            // packet more) to exactly the wanted one.
            prop_assert_eq!(u64::from(clip.pre_skip), want_start - base);
            prop_assert!(base == 0 || u64::from(clip.pre_skip) < PREROLL_SAMPLES + FRAME);
            prop_assert_eq!(clip.start_ms, from_ms);
            if want_end <= total {
                prop_assert_eq!(clip.end_ms, from_ms + len_ms);
            }
        }
    }
}
