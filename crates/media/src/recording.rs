//! Recordings of the program stream: the sans-IO halves of the recorder.
//!
//! - [`RecordingWriter`] turns 20 ms program frames into Ogg/Opus pages for a file that is only
//!   ever appended to, and decides (from an injected clock, milliseconds of any monotonic origin)
//!   when the bytes must reach the disk: it closes the page being built and asks for a sync at
//!   least every [`WriterConfig::sync_interval_ms`], so a crash loses at most that interval.
//!   Frames the recorder never received (sequence gaps) become silence, so the recording keeps
//!   time. [`RecordingWriter::finish`] writes the last page with the end-of-stream flag.
//! - [`finalise`] reads what a crash left (a file cut anywhere, perhaps with a torn page or
//!   garbage at the end), keeps every complete, CRC-valid page of the stream from the start and
//!   rewrites it as a valid Ogg/Opus file: the same packets and granule positions, the last page
//!   flagged end-of-stream.
//!
//! The server owns the files, the thread and the clock (`crates/server/src/recorder.rs`).

use std::sync::Arc;

use bytes::Bytes;
use ogg::reading::{PageParser, PageParsingOptions};
use ogg::{PacketWriteEndInfo, PacketWriter};

use crate::civil_time::date_time;
use crate::frame::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::ogg::{
    OggError, OpusHead, parse_opus_tags, start_stream, tag_value, write_header_pages,
};

/// A 20 ms Opus packet of silence (CELT, fullband, mono: TOC `0xF8`, then an all-silence
/// frame), written where program frames are missing and when a recording must end with no
/// frame left to carry the end-of-stream flag.
pub const SILENCE_FRAME: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// The longest gap, in frames, filled with silence (longer gaps are stream restarts, not
/// losses: the recording goes on without filling them).
const MAX_GAP_FILL: u32 = 250;

/// What the comment header (`OpusTags`) says about a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingTags {
    /// The space's title (`TITLE`).
    pub title: String,
    /// The space's id (`TOWNHALL_SPACE`).
    pub space: String,
    /// The recording's id (`TOWNHALL_RECORDING`).
    pub recording: String,
    /// When recording started, seconds since the Unix epoch (`DATE`, as ISO 8601 UTC, and
    /// `TOWNHALL_STARTED_AT`).
    pub started_at: u64,
}

impl RecordingTags {
    /// The `KEY=value` comments.
    pub fn comments(&self) -> Vec<String> {
        vec![
            format!("TITLE={}", tag_value(&self.title)),
            format!("DATE={}", iso8601(self.started_at)),
            format!("TOWNHALL_SPACE={}", tag_value(&self.space)),
            format!("TOWNHALL_RECORDING={}", tag_value(&self.recording)),
            format!("TOWNHALL_STARTED_AT={}", self.started_at),
            "ENCODER=townhall".to_owned(),
        ]
    }

    /// Reads the tags back from an `OpusTags` packet's comments (missing ones left empty).
    pub fn from_comments(comments: &[String]) -> RecordingTags {
        let get = |key: &str| {
            comments.iter().find_map(|c| {
                let (k, v) = c.split_once('=')?;
                k.eq_ignore_ascii_case(key).then(|| v.to_owned())
            })
        };
        RecordingTags {
            title: get("TITLE").unwrap_or_default(),
            space: get("TOWNHALL_SPACE").unwrap_or_default(),
            recording: get("TOWNHALL_RECORDING").unwrap_or_default(),
            started_at: get("TOWNHALL_STARTED_AT").and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }
}

/// `secs` since the Unix epoch as ISO 8601 UTC (`2026-11-24T12:34:56Z`).
pub fn iso8601(secs: u64) -> String {
    format!("{}Z", date_time(secs))
}

/// Milliseconds of audio in a stream whose last granule position is `granule` (48 kHz samples,
/// the decoder's pre-skip included, as RFC 7845 counts them).
pub fn duration_ms(granule: u64, pre_skip: u16) -> u64 {
    granule.saturating_sub(u64::from(pre_skip)) * 1_000 / u64::from(SAMPLE_RATE)
}

/// How a [`RecordingWriter`] pages and syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Longest time written audio may wait for a sync, ms: the most a crash can lose.
    pub sync_interval_ms: u64,
    /// Most frames in one page (pages also close at each sync).
    pub page_frames: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { sync_interval_ms: 1_000, page_frames: 50 }
    }
}

/// When a file being appended to must be synced: at most `interval_ms` after the last sync
/// while something is unsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    interval_ms: u64,
    last_sync_ms: u64,
    dirty: bool,
}

impl SyncPolicy {
    /// A policy whose clock starts (clean: just synced) at `now_ms`.
    pub fn new(interval_ms: u64, now_ms: u64) -> SyncPolicy {
        SyncPolicy { interval_ms, last_sync_ms: now_ms, dirty: false }
    }

    /// Something new awaits a sync.
    pub fn dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether a sync is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        self.dirty && now_ms >= self.last_sync_ms.saturating_add(self.interval_ms)
    }

    /// When the next sync is due, if anything awaits one.
    pub fn deadline(&self) -> Option<u64> {
        self.dirty.then(|| self.last_sync_ms.saturating_add(self.interval_ms))
    }

    /// Everything was synced at `now_ms`.
    pub fn synced(&mut self, now_ms: u64) {
        self.dirty = false;
        self.last_sync_ms = now_ms;
    }
}

/// Bytes to append to the file, and whether to sync the file after appending them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriterOutput {
    /// Complete Ogg pages (possibly none).
    pub bytes: Vec<u8>,
    /// Append, then flush and sync the file now.
    pub sync: bool,
}

/// Turns program frames into the pages of a recording file, and says when to sync it.
///
/// One frame is always held back from the page being built, so that a page can be closed at
/// any moment (a page ends with a packet) and the stream's last page can carry the
/// end-of-stream flag. Every frame is one 20 ms Opus packet, as the mixer makes them.
pub struct RecordingWriter {
    writer: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    pre_skip: u16,
    config: WriterConfig,
    /// Granule position after the last packet handed to the page writer.
    granule: u64,
    held: Option<Bytes>,
    in_page: usize,
    next_seq: Option<u32>,
    sync: SyncPolicy,
    frames: u64,
    filled: u64,
    finished: bool,
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("serial", &self.serial)
            .field("granule", &self.granule)
            .field("frames", &self.frames)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl RecordingWriter {
    /// A writer for logical stream `serial`, started at `now_ms`; returns it with the header
    /// pages (`OpusHead`, `OpusTags`) the file starts with. Write and sync them before the first
    /// frame: a file with its headers on disk can always be finalised.
    pub fn new(
        serial: u32,
        pre_skip: u16,
        tags: &RecordingTags,
        config: WriterConfig,
        now_ms: u64,
    ) -> Result<(RecordingWriter, Vec<u8>), OggError> {
        let (writer, headers) = start_stream(serial, pre_skip, &tags.comments())?;
        let config = WriterConfig {
            sync_interval_ms: config.sync_interval_ms.max(1),
            page_frames: config.page_frames.clamp(1, 255),
        };
        Ok((
            RecordingWriter {
                writer,
                serial,
                pre_skip,
                config,
                granule: 0,
                held: None,
                in_page: 0,
                next_seq: None,
                sync: SyncPolicy::new(config.sync_interval_ms, now_ms),
                frames: 0,
                filled: 0,
                finished: false,
            },
            headers,
        ))
    }

    /// Adds program frame `seq` received at `now_ms`. Frames missing since the previous one
    /// (up to 5 s of them) are recorded as silence.
    pub fn push(&mut self, seq: u32, packet: Bytes, now_ms: u64) -> Result<WriterOutput, OggError> {
        if self.finished {
            return Ok(WriterOutput::default());
        }
        if let Some(expected) = self.next_seq {
            let gap = seq.wrapping_sub(expected);
            if gap > 0 && gap <= MAX_GAP_FILL {
                for _ in 0..gap {
                    self.hold(Bytes::from_static(&SILENCE_FRAME), false)?;
                    self.filled += 1;
                }
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
        let sync = self.sync.due(now_ms);
        self.hold(packet, sync)?;
        self.sync.dirty();
        if sync {
            self.sync.synced(now_ms);
        }
        Ok(WriterOutput { bytes: std::mem::take(self.writer.inner_mut()), sync })
    }

    /// Hands the held frame to the page writer (closing the page if it is full or `close`),
    /// and holds `next` instead.
    fn hold(&mut self, next: Bytes, close: bool) -> Result<(), OggError> {
        if let Some(frame) = self.held.replace(next) {
            self.write(frame, close)?;
        }
        self.frames += 1;
        Ok(())
    }

    fn write(&mut self, frame: Bytes, close: bool) -> Result<(), OggError> {
        self.granule += FRAME_SAMPLES as u64;
        self.in_page += 1;
        let end = if close || self.in_page >= self.config.page_frames {
            self.in_page = 0;
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        self.writer.write_packet(frame.to_vec(), self.serial, end, self.granule)?;
        Ok(())
    }

    /// Called when no frame came: if a sync is due at `now_ms`, closes the page being built
    /// (the held frame ends it) and asks for the sync.
    pub fn poll(&mut self, now_ms: u64) -> Result<WriterOutput, OggError> {
        if self.finished || !self.sync.due(now_ms) {
            return Ok(WriterOutput::default());
        }
        if let Some(frame) = self.held.take() {
            self.write(frame, true)?;
        }
        self.sync.synced(now_ms);
        Ok(WriterOutput { bytes: std::mem::take(self.writer.inner_mut()), sync: true })
    }

    /// When [`poll`](Self::poll) must be called at the latest if no frame comes, ms.
    pub fn deadline(&self) -> Option<u64> {
        if self.finished { None } else { self.sync.deadline() }
    }

    /// Ends the stream: the last page, flagged end-of-stream (append it and sync). With no frame
    /// held (none came since the last sync), the last page carries one frame of silence.
    pub fn finish(&mut self) -> Result<Vec<u8>, OggError> {
        if self.finished {
            return Ok(Vec::new());
        }
        self.finished = true;
        let last = match self.held.take() {
            Some(frame) => frame,
            None => {
                self.frames += 1;
                self.filled += 1;
                Bytes::from_static(&SILENCE_FRAME)
            }
        };
        self.granule += FRAME_SAMPLES as u64;
        self.in_page = 0;
        self.writer.write_packet(
            last.to_vec(),
            self.serial,
            PacketWriteEndInfo::EndStream,
            self.granule,
        )?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    /// Frames recorded so far (silence filled in included; the held one too).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames of silence written for frames that never came.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Audio recorded so far, ms (what a player will show once the file is finished).
    pub fn duration_ms(&self) -> u64 {
        duration_ms(self.frames * FRAME_SAMPLES as u64, self.pre_skip)
    }

    /// Audio already in complete pages handed out, ms (what survives a crash once synced).
    pub fn paged_duration_ms(&self) -> u64 {
        duration_ms(self.granule, self.pre_skip)
    }
}

/// Why a file could not be finalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinaliseError {
    /// The file does not start with complete Ogg/Opus headers (`OpusHead`, `OpusTags`): it
    /// holds no recoverable audio.
    #[error("no complete Ogg/Opus headers: {0}")]
    NoHeaders(&'static str),
    /// Rewriting failed (not expected: the output is in memory).
    #[error("writing: {0}")]
    Write(String),
}

/// A recording rewritten by [`finalise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalised {
    /// The valid file: headers, every salvaged audio packet, end-of-stream on the last page.
    pub bytes: Vec<u8>,
    /// The identification header.
    pub head: OpusHead,
    /// The comment header's comments.
    pub comments: Vec<String>,
    /// Audio packets kept (at least one: a stream with none gets a frame of silence).
    pub packets: usize,
    /// Granule position of the last page.
    pub granule: u64,
    /// Bytes of the input after its last usable page (a torn page, garbage), dropped.
    pub dropped_bytes: usize,
    /// Whether the input already ended with an end-of-stream page.
    pub was_complete: bool,
}

impl Finalised {
    /// Audio length, ms.
    pub fn duration_ms(&self) -> u64 {
        duration_ms(self.granule, self.head.pre_skip)
    }

    /// The comment header read as recording tags.
    pub fn tags(&self) -> RecordingTags {
        RecordingTags::from_comments(&self.comments)
    }
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

const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// Parses the page at the start of `data`, if a complete one with a valid CRC is there.
fn page(data: &[u8]) -> Option<Page<'_>> {
    let header: [u8; 27] = data.get(..27)?.try_into().ok()?;
    if &header[..4] != b"OggS" {
        return None;
    }
    let opts = Arc::new(PageParsingOptions::default());
    let (mut parser, segments) = PageParser::new_with_parse_opts(header, opts).ok()?;
    let lacing = data.get(27..27 + segments)?;
    let body_len = parser.parse_segments(lacing.to_vec());
    let end = 27 + segments + body_len;
    let body = data.get(27 + segments..end)?;
    // The ogg crate checks the CRC.
    parser.parse_packet_data(body.to_vec()).ok()?;
    let u32_at =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let mut granule = [0u8; 8];
    granule.copy_from_slice(&header[6..14]);
    Some(Page {
        flags: header[5],
        granule: u64::from_le_bytes(granule),
        serial: u32_at(14),
        seq: u32_at(18),
        lacing,
        body,
        len: end,
    })
}

/// Rewrites a recording that may have been cut off anywhere (a crash while appending) into a
/// valid Ogg/Opus file.
///
/// Reads the first logical stream page by page from the start and keeps every complete page
/// whose CRC holds, in order, up to the first that is missing, torn, corrupt or out of sequence
/// (a file that is only appended to is torn at its end, never in its middle). Audio packets
/// keep their pages and granule positions; a packet whose end was lost is dropped; the last page
/// is flagged end-of-stream. Finalising a finished file gives the same audio back. Never panics,
/// whatever the input.
pub fn finalise(data: &[u8]) -> Result<Finalised, FinaliseError> {
    let mut pos = 0;
    let mut serial = None;
    let mut expected_seq = 0u32;
    let mut partial: Vec<u8> = Vec::new();
    let mut in_packet = false;
    let mut header_packets: Vec<Vec<u8>> = Vec::new();
    // Audio packets, grouped by the page that completes them, with that page's granule.
    let mut pages: Vec<(Vec<Vec<u8>>, u64)> = Vec::new();
    let mut last_granule = 0u64;
    let mut was_complete = false;
    while let Some(p) = page(&data[pos..]) {
        let first = serial.is_none();
        if first && (p.flags & FLAG_BOS == 0 || p.flags & FLAG_CONTINUED != 0) {
            break;
        }
        if !first && (Some(p.serial) != serial || p.seq != expected_seq || p.flags & FLAG_BOS != 0)
        {
            break;
        }
        if (p.flags & FLAG_CONTINUED != 0) != in_packet {
            break;
        }
        let mut completed = Vec::new();
        let mut offset = 0;
        for &lace in p.lacing {
            let n = usize::from(lace);
            partial.extend_from_slice(&p.body[offset..offset + n]);
            offset += n;
            if lace < 255 {
                completed.push(std::mem::take(&mut partial));
            }
        }
        in_packet = p.lacing.last().is_some_and(|&l| l == 255);
        // Headers first (each on its own page, RFC 7845 §3), then audio.
        let mut audio = Vec::new();
        for packet in completed {
            if header_packets.len() < 2 {
                header_packets.push(packet);
            } else {
                audio.push(packet);
            }
        }
        if !audio.is_empty() {
            if p.granule == u64::MAX || p.granule < last_granule {
                break;
            }
            last_granule = p.granule;
            pages.push((audio, p.granule));
        }
        if first {
            let head = header_packets.first().map(|h| OpusHead::parse(h));
            if !matches!(head, Some(Ok(_))) {
                return Err(FinaliseError::NoHeaders("the first page is not an OpusHead"));
            }
        }
        serial = Some(p.serial);
        expected_seq = p.seq.wrapping_add(1);
        pos += p.len;
        if p.flags & FLAG_EOS != 0 {
            was_complete = true;
            break;
        }
    }
    let (Some(serial), [head_packet, tags_packet]) = (serial, header_packets.as_slice()) else {
        return Err(FinaliseError::NoHeaders("the headers are incomplete"));
    };
    let head = OpusHead::parse(head_packet)
        .map_err(|_| FinaliseError::NoHeaders("the first page is not an OpusHead"))?;
    let comments = parse_opus_tags(tags_packet).ok_or(FinaliseError::NoHeaders("bad OpusTags"))?;
    if pages.is_empty() {
        pages.push((vec![SILENCE_FRAME.to_vec()], FRAME_SAMPLES as u64));
        was_complete = false;
    }
    let write = |e: std::io::Error| FinaliseError::Write(e.to_string());
    let mut writer = PacketWriter::new(Vec::with_capacity(pos + 64));
    write_header_pages(&mut writer, serial, head_packet.clone(), tags_packet.clone())
        .map_err(write)?;
    let mut packets = 0;
    let mut granule = 0;
    let last_page = pages.len() - 1;
    for (i, (audio, page_granule)) in pages.into_iter().enumerate() {
        let n = audio.len();
        for (j, packet) in audio.into_iter().enumerate() {
            let end = match (j + 1 == n, i == last_page) {
                (true, true) => PacketWriteEndInfo::EndStream,
                (true, false) => PacketWriteEndInfo::EndPage,
                _ => PacketWriteEndInfo::NormalPacket,
            };
            writer.write_packet(packet, serial, end, page_granule).map_err(write)?;
            packets += 1;
        }
        granule = page_granule;
    }
    Ok(Finalised {
        bytes: writer.into_inner(),
        head,
        comments,
        packets,
        granule,
        dropped_bytes: data.len() - pos,
        was_complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{ToneGenerator, tone_amplitude};
    use crate::ogg::OggOpusReader;
    use proptest::prelude::*;

    fn tags() -> RecordingTags {
        RecordingTags {
            title: "Town hall\nnight".into(),
            space: "town".into(),
            recording: "town-1767225600-0a1b2c3d".into(),
            started_at: 1_767_225_600,
        }
    }

    /// A recording of `sizes.len()` frames, one every 20 ms of the injected clock, finished;
    /// returns the file and the byte offsets at which each audio page ends, with the number of
    /// frames complete at that point.
    fn record(
        sizes: &[usize],
        config: WriterConfig,
        finish: bool,
    ) -> (Vec<u8>, usize, Vec<(usize, usize)>) {
        let (mut w, mut file) = RecordingWriter::new(9, 312, &tags(), config, 0).expect("writer");
        let headers = file.len();
        let mut ends = Vec::new();
        let mut complete = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let packet = Bytes::from(vec![(i % 251) as u8; n]);
            let out = w.push(i as u32, packet, i as u64 * 20).expect("push");
            if !out.bytes.is_empty() {
                complete += page_packets(&out.bytes);
                file.extend_from_slice(&out.bytes);
                ends.push((file.len(), complete));
            }
        }
        if finish {
            let last = w.finish().expect("finish");
            file.extend_from_slice(&last);
            ends.push((file.len(), complete + page_packets(&last)));
        }
        (file, headers, ends)
    }

    /// Packets ending in one page (the test's pages hold whole packets).
    fn page_packets(page: &[u8]) -> usize {
        let n = usize::from(page[26]);
        page[27..27 + n].iter().filter(|&&l| l < 255).count()
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(iso8601(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn sync_policy_waits_for_the_interval_and_only_when_dirty() {
        let mut p = SyncPolicy::new(1_000, 5_000);
        assert!(!p.due(10_000), "nothing written");
        assert_eq!(p.deadline(), None);
        p.dirty();
        assert_eq!(p.deadline(), Some(6_000));
        assert!(!p.due(5_999));
        assert!(p.due(6_000));
        p.synced(6_010);
        assert!(!p.due(9_000));
        p.dirty();
        assert!(p.due(7_010));
    }

    #[test]
    fn the_writer_closes_a_page_and_syncs_every_interval() {
        let config = WriterConfig { sync_interval_ms: 1_000, page_frames: 200 };
        let (mut w, headers) = RecordingWriter::new(1, 312, &tags(), config, 0).expect("writer");
        let parsed = finalise(&headers).expect("headers alone finalise");
        assert_eq!(parsed.tags(), RecordingTags { title: "Town hallnight".into(), ..tags() });
        assert!(parsed.comments.contains(&"DATE=2026-01-01T00:00:00Z".to_owned()));
        let mut syncs = Vec::new();
        for i in 0..260u32 {
            let now = u64::from(i) * 20;
            let out = w.push(i, Bytes::from_static(b"\xf8abc"), now).expect("push");
            assert_eq!(out.sync, !out.bytes.is_empty(), "pages here close only to sync");
            if out.sync {
                syncs.push(now);
            }
        }
        assert_eq!(syncs, vec![1_000, 2_000, 3_000, 4_000, 5_000]);
        // The clock runs on without frames: the held frame is paged and synced on time.
        assert_eq!(w.deadline(), Some(6_000));
        assert_eq!(w.poll(5_999).expect("poll"), WriterOutput::default());
        let out = w.poll(6_000).expect("poll");
        assert!(out.sync && !out.bytes.is_empty());
        assert_eq!(w.deadline(), None, "nothing left to sync");
        assert_eq!(w.paged_duration_ms(), duration_ms(260 * 960, 312));
        // Nothing held: the end-of-stream page carries a frame of silence.
        let last = w.finish().expect("finish");
        assert_eq!(page_packets(&last), 1);
        assert_eq!(last[5] & FLAG_EOS, FLAG_EOS);
        assert_eq!(w.frames(), 261);
        assert!(w.finish().expect("again").is_empty());
    }

    #[test]
    fn full_pages_close_without_waiting_for_a_sync() {
        let config = WriterConfig { sync_interval_ms: 60_000, page_frames: 10 };
        let (mut w, _) = RecordingWriter::new(1, 0, &tags(), config, 0).expect("writer");
        let paged: Vec<bool> = (0..25u32)
            .map(|i| !w.push(i, Bytes::from_static(b"x"), 0).expect("push").bytes.is_empty())
            .collect();
        // Frame i is written when frame i + 1 arrives: pages close at frames 10 and 20.
        assert!(paged[10] && paged[20]);
        assert_eq!(paged.iter().filter(|&&p| p).count(), 2);
    }

    #[test]
    fn missing_frames_become_silence_and_restarts_do_not() {
        let (mut w, mut file) =
            RecordingWriter::new(1, 0, &tags(), WriterConfig::default(), 0).expect("writer");
        for seq in [10u32, 11, 14, 15, 5_000, 5_001] {
            file.extend(w.push(seq, Bytes::from_static(b"\xfcaudio"), 0).expect("push").bytes);
        }
        file.extend(w.finish().expect("finish"));
        assert_eq!(w.filled(), 2);
        let read = OggOpusReader::parse(&file).expect("parse");
        let silent: Vec<bool> = read.packets.iter().map(|p| p[..] == SILENCE_FRAME).collect();
        assert_eq!(silent, vec![false, false, true, true, false, false, false, false]);
        assert_eq!(read.last_granule, 8 * 960);
    }

    #[test]
    fn a_finished_recording_finalises_to_itself() {
        let sizes: Vec<usize> = (0..120).map(|i| 20 + i % 90).collect();
        let (file, _, _) = record(&sizes, WriterConfig::default(), true);
        let done = finalise(&file).expect("finalise");
        assert!(done.was_complete);
        assert_eq!(done.bytes, file);
        assert_eq!(done.packets, 120);
        assert_eq!(done.granule, 120 * 960);
        assert_eq!(done.dropped_bytes, 0);
    }

    #[test]
    fn packets_spanning_pages_are_kept_or_dropped_whole() {
        // Big packets overflow the 255 segments of a page: packets continue on the next page.
        let sizes = vec![1_200; 200];
        let config = WriterConfig { sync_interval_ms: 60_000, page_frames: 100 };
        let (file, headers, _) = record(&sizes, config, true);
        let full = finalise(&file).expect("full");
        assert_eq!(full.packets, 200);
        for cut in (headers..file.len()).step_by(997) {
            let done = finalise(&file[..cut]).expect("finalise");
            let read = OggOpusReader::parse(&done.bytes).expect("valid");
            assert!(read.packets.iter().all(|p| p.len() == 1_200 || p[..] == SILENCE_FRAME));
            assert_eq!(read.last_granule, done.granule);
            assert!(done.granule <= full.granule);
        }
    }

    #[test]
    fn a_cut_real_recording_decodes_for_as_long_as_its_complete_pages() {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                .expect("encoder");
        let pre_skip = enc.get_lookahead().expect("lookahead") as u16;
        let config = WriterConfig { sync_interval_ms: 1_000, page_frames: 50 };
        let (mut w, mut file) = RecordingWriter::new(5, pre_skip, &tags(), config, 0).expect("w");
        let mut tone = ToneGenerator::new(440.0, 0.4);
        let mut page_ends = Vec::new();
        for i in 0..250u32 {
            let pkt = enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode");
            let out = w.push(i, Bytes::from(pkt), u64::from(i) * 20).expect("push");
            file.extend_from_slice(&out.bytes);
            if !out.bytes.is_empty() {
                page_ends.push(file.len());
            }
        }
        // Cut in the middle of the fourth audio page, as a crash would.
        let cut = page_ends[3] - 17;
        let done = finalise(&file[..cut]).expect("finalise");
        assert_eq!(done.dropped_bytes, cut - page_ends[2]);
        assert_eq!(done.packets, 150, "three 1 s pages");
        assert_eq!(done.duration_ms(), duration_ms(150 * 960, pre_skip));
        let read = OggOpusReader::parse(&done.bytes).expect("parse");
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut pcm = Vec::new();
        let mut buf = [0.0f32; FRAME_SAMPLES];
        for p in &read.packets {
            let n = dec.decode_float(p, &mut buf, false).expect("decode");
            pcm.extend_from_slice(&buf[..n]);
        }
        assert_eq!(pcm.len(), 150 * FRAME_SAMPLES);
        assert!(tone_amplitude(&pcm[9_600..], 440.0) > 0.3, "the tone survives");
    }

    #[test]
    fn files_without_complete_headers_are_refused() {
        let (file, headers, _) = record(&[10; 5], WriterConfig::default(), false);
        for cut in [0, 1, 27, headers - 1] {
            assert!(matches!(finalise(&file[..cut]), Err(FinaliseError::NoHeaders(_))), "{cut}");
        }
        assert!(finalise(b"OggS garbage").is_err());
    }

    proptest! {
        /// Any truncation of a recording being written finalises into a valid file whose audio
        /// is exactly that of the complete pages (or one frame of silence when there are none).
        #[test]
        fn any_truncation_finalises_to_the_complete_pages(
            sizes in proptest::collection::vec(1usize..1_000, 0..160),
            page_frames in 1usize..50,
            sync_interval_ms in 20u64..2_000,
            finish in any::<bool>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let config = WriterConfig { sync_interval_ms, page_frames };
            let (file, headers, ends) = record(&sizes, config, finish);
            let cut = cut.index(file.len() + 1);
            let result = finalise(&file[..cut]);
            if cut < headers {
                prop_assert!(result.is_err());
                return Ok(());
            }
            let done = result.expect("finalises");
            let complete = ends.iter().rev().find(|(end, _)| *end <= cut).map_or(0, |e| e.1);
            let read = OggOpusReader::parse(&done.bytes).expect("valid Ogg/Opus");
            let got: Vec<Vec<u8>> = read.packets.iter().map(|b| b.to_vec()).collect();
            // (A finished file of no frames ends with one frame of silence.)
            let mut want: Vec<Vec<u8>> = sizes[..complete.min(sizes.len())]
                .iter()
                .enumerate()
                .map(|(i, &n)| vec![(i % 251) as u8; n])
                .collect();
            if want.is_empty() {
                want.push(SILENCE_FRAME.to_vec());
            }
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(done.granule, got.len() as u64 * 960);
            prop_assert_eq!(read.last_granule, done.granule);
            prop_assert_eq!(done.duration_ms(), duration_ms(done.granule, 312));
            prop_assert_eq!(done.tags(), RecordingTags { title: "Town hallnight".into(), ..tags() });
            // The last page, and only it, ends the stream; finalising again changes nothing.
            let flags = page_flags(&done.bytes);
            prop_assert!(flags.iter().rev().skip(1).all(|f| f & FLAG_EOS == 0));
            prop_assert!(flags.last().is_some_and(|f| f & FLAG_EOS != 0));
            let again = finalise(&done.bytes).expect("again");
            prop_assert!(again.was_complete);
            prop_assert_eq!(again.bytes, done.bytes);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3_000)) {
            let _ = finalise(&bytes);
        }

        /// Corruption anywhere: never a panic, and what comes back is a valid prefix.
        #[test]
        fn corruption_keeps_a_valid_prefix(
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 1..4),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let sizes: Vec<usize> = (0..120).map(|i| 1 + (i * 37) % 700).collect();
            let (mut file, _, _) = record(&sizes, WriterConfig::default(), true);
            for (at, x) in flips {
                let i = at.index(file.len());
                file[i] ^= x;
            }
            file.extend_from_slice(&tail);
            if let Ok(done) = finalise(&file) {
                let read = OggOpusReader::parse(&done.bytes).expect("valid");
                for (i, p) in read.packets.iter().enumerate() {
                    prop_assert!(i < sizes.len() && p[..] == vec![(i % 251) as u8; sizes[i]][..]
                        || p[..] == SILENCE_FRAME);
                }
            }
        }
    }

    /// The header flags of every page of a file made only of valid pages.
    fn page_flags(file: &[u8]) -> Vec<u8> {
        let mut pos = 0;
        let mut flags = Vec::new();
        while let Some(p) = page(&file[pos..]) {
            pos += p.len;
            flags.push(p.flags);
        }
        assert_eq!(pos, file.len(), "only valid pages");
        flags
    }
}
