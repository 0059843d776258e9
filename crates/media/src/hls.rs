//! LL-HLS from the program stream (sans-IO): 20 ms packets go in; CMAF parts (~200 ms),
//! segments (~2 s, the concatenation of their parts) and the media playlist come out.
//!
//! Names the server serves: `init.mp4`, `s{msn}.mp4` (segment), `p{msn}.{part}.mp4` (part),
//! with the playlist advertising `CAN-BLOCK-RELOAD` and a preload hint for the next part.
//!
//! Numbering follows the program's frame numbers: frame `n` is in segment
//! `n / frames_per_segment`, at decode time `n × 960`. Every node that packages the same program
//! (the origin and each edge, whenever it started) makes the same objects under the same names,
//! so a cache may fetch from any of them and fail over between them. A segmenter that joins the
//! stream in the middle starts at the next segment boundary; a gap in the numbers is filled with
//! silence, so the clock and the names stay the stream's.

use std::collections::VecDeque;
use std::fmt::Write;

use bytes::{Bytes, BytesMut};

use crate::civil_time::date_time;
use crate::cmaf::{CmafError, FragmentWriter};
use crate::frame::{FRAME_MS, FRAME_SAMPLES};

/// Sizing of parts, segments and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsConfig {
    /// Frames per part (10 = 200 ms).
    pub part_frames: usize,
    /// Parts per segment (10 × 200 ms = 2 s).
    pub parts_per_segment: usize,
    /// Complete segments kept and listed.
    pub window: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig { part_frames: 10, parts_per_segment: 10, window: 6 }
    }
}

impl HlsConfig {
    /// Part duration, seconds.
    pub fn part_secs(&self) -> f64 {
        (self.part_frames as u32 * FRAME_MS) as f64 / 1000.0
    }

    /// Segment duration, seconds.
    pub fn segment_secs(&self) -> f64 {
        self.part_secs() * self.parts_per_segment as f64
    }
}

/// A segment, complete or in progress.
#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    parts: Vec<(Bytes, f64)>,
    /// Wall clock of its first frame, µs since the epoch.
    start_us: u64,
}

impl Segment {
    fn duration(&self) -> f64 {
        self.parts.iter().map(|(_, d)| d).sum()
    }

    fn bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.parts.iter().for_each(|(p, _)| out.extend_from_slice(p));
        out.freeze()
    }
}

/// Where the stream is: the next part to appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Media sequence number of the segment.
    pub msn: u64,
    /// Part index within it.
    pub part: u32,
}

/// Cuts the program stream into LL-HLS parts and segments and writes the playlist.
#[derive(Debug)]
pub struct HlsSegmenter {
    cfg: HlsConfig,
    writer: FragmentWriter,
    pending: Vec<Bytes>,
    pending_start_us: u64,
    current: Segment,
    done: VecDeque<(Segment, Bytes)>,
    ended: bool,
    /// The frame number the next packet should carry; `None` until the stream is joined at a
    /// segment boundary.
    next_seq: Option<u64>,
    /// The first part this segmenter holds or will hold (`None`: no frame yet).
    begins_at: Option<Position>,
}

/// An Opus packet of 20 ms of silence (CELT, mono, fullband): what fills a gap in the numbers.
pub const SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// The largest gap (frames, 1 s) filled with silence: a hiccup, heard as a short silence by
/// whoever listens here. Past it the stream starts over at the next segment boundary (a relay
/// that stopped and started again, say): parts this node never had are not made up, since other
/// nodes hold them with their sound under the same names.
const MAX_FILL: u64 = 50;

impl HlsSegmenter {
    /// A segmenter that starts at the first segment boundary it is given.
    pub fn new(cfg: HlsConfig) -> HlsSegmenter {
        HlsSegmenter {
            cfg,
            writer: FragmentWriter::new(0),
            pending: Vec::with_capacity(cfg.part_frames),
            pending_start_us: 0,
            current: Segment { msn: 0, parts: Vec::new(), start_us: 0 },
            done: VecDeque::new(),
            ended: false,
            next_seq: None,
            begins_at: None,
        }
    }

    /// The first part made here (or to be made, at the boundary it waits for); `None` before
    /// the first frame. Earlier parts were never here: another node may have them.
    pub fn begins_at(&self) -> Option<Position> {
        self.begins_at
    }

    fn segment_frames(&self) -> u64 {
        (self.cfg.part_frames * self.cfg.parts_per_segment) as u64
    }

    /// The configuration.
    pub fn config(&self) -> HlsConfig {
        self.cfg
    }

    /// Adds program frame number `seq`, one 20 ms packet mixed at `mixed_at_us`; returns the
    /// position of the last part it completed, if any. A frame already passed is ignored; the
    /// frames missing before `seq` become silence.
    pub fn push(
        &mut self,
        seq: u64,
        packet: Bytes,
        mixed_at_us: u64,
    ) -> Result<Option<Position>, CmafError> {
        if self.ended {
            return Ok(None);
        }
        let Some(expected) = self.next_seq else {
            return self.join(seq, packet, mixed_at_us);
        };
        if seq < expected {
            return Ok(None);
        }
        let gap = seq - expected;
        if gap > MAX_FILL {
            self.start_over();
            return self.join(seq, packet, mixed_at_us);
        }
        let mut done = None;
        for i in 0..gap {
            let at_us = mixed_at_us.saturating_sub((gap - i) * u64::from(FRAME_MS) * 1_000);
            done = self.add(Bytes::from_static(&SILENCE), at_us)?.or(done);
        }
        Ok(self.add(packet, mixed_at_us)?.or(done))
    }

    /// The first frame (or the first after a jump): the stream starts at a segment boundary.
    fn join(
        &mut self,
        seq: u64,
        packet: Bytes,
        mixed_at_us: u64,
    ) -> Result<Option<Position>, CmafError> {
        let per_segment = self.segment_frames();
        if !seq.is_multiple_of(per_segment) {
            // Waiting for the boundary: the next part to appear is its first.
            self.current.msn = seq / per_segment + 1;
            self.begins_at = Some(Position { msn: self.current.msn, part: 0 });
            return Ok(None);
        }
        self.current.msn = seq / per_segment;
        self.begins_at = Some(Position { msn: self.current.msn, part: 0 });
        let part_number = seq / self.cfg.part_frames as u64 + 1;
        self.writer = FragmentWriter::at(
            u32::try_from(part_number).unwrap_or(u32::MAX),
            seq * FRAME_SAMPLES as u64,
        );
        self.next_seq = Some(seq);
        self.add(packet, mixed_at_us)
    }

    /// Drops everything held: the numbers jumped past the window.
    fn start_over(&mut self) {
        self.pending.clear();
        self.current.parts.clear();
        self.done.clear();
        self.next_seq = None;
    }

    fn add(&mut self, packet: Bytes, mixed_at_us: u64) -> Result<Option<Position>, CmafError> {
        if let Some(next) = &mut self.next_seq {
            *next += 1;
        }
        if self.pending.is_empty() {
            self.pending_start_us = mixed_at_us;
        }
        self.pending.push(packet);
        if self.pending.len() < self.cfg.part_frames {
            return Ok(None);
        }
        self.close_part().map(Some)
    }

    fn close_part(&mut self) -> Result<Position, CmafError> {
        let fragment = self.writer.fragment(&self.pending)?;
        let duration = (self.pending.len() as u32 * FRAME_MS) as f64 / 1000.0;
        if self.current.parts.is_empty() {
            self.current.start_us = self.pending_start_us;
        }
        self.pending.clear();
        self.current.parts.push((fragment, duration));
        let done = Position { msn: self.current.msn, part: self.current.parts.len() as u32 - 1 };
        if self.current.parts.len() >= self.cfg.parts_per_segment {
            self.close_segment();
        }
        Ok(done)
    }

    fn close_segment(&mut self) {
        let next = Segment { msn: self.current.msn + 1, parts: Vec::new(), start_us: 0 };
        let finished = std::mem::replace(&mut self.current, next);
        let bytes = finished.bytes();
        self.done.push_back((finished, bytes));
        while self.done.len() > self.cfg.window {
            self.done.pop_front();
        }
    }

    /// Ends the stream: what is pending becomes a last (short) part and segment.
    pub fn finish(&mut self) -> Result<(), CmafError> {
        if !self.pending.is_empty() {
            self.close_part()?;
        }
        if !self.current.parts.is_empty() {
            self.close_segment();
        }
        self.ended = true;
        Ok(())
    }

    /// Whether the stream has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next part to appear.
    pub fn next(&self) -> Position {
        Position { msn: self.current.msn, part: self.current.parts.len() as u32 }
    }

    /// Whether the part at `pos` exists (or the stream moved past it).
    pub fn reached(&self, pos: Position) -> bool {
        self.ended || pos < self.next()
    }

    /// The bytes of part `part` of segment `msn`, if still held.
    pub fn part(&self, msn: u64, part: u32) -> Option<Bytes> {
        let parts = if msn == self.current.msn {
            &self.current.parts
        } else {
            &self.done.iter().find(|(s, _)| s.msn == msn)?.0.parts
        };
        parts.get(part as usize).map(|(b, _)| b.clone())
    }

    /// The bytes of complete segment `msn`, if still held.
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.done.iter().find(|(s, _)| s.msn == msn).map(|(_, b)| b.clone())
    }

    /// Wall clock (µs since the epoch) of the first frame of segment `msn`, if still held.
    pub fn segment_start_us(&self, msn: u64) -> Option<u64> {
        if msn == self.current.msn && !self.current.parts.is_empty() {
            return Some(self.current.start_us);
        }
        self.done.iter().find(|(s, _)| s.msn == msn).map(|(s, _)| s.start_us)
    }

    /// Whether segment `msn` (and its parts) has left the window for good.
    pub fn expired(&self, msn: u64) -> bool {
        msn < self.first_msn()
    }

    /// The oldest segment still held (or the current one).
    pub fn first_msn(&self) -> u64 {
        self.done.front().map_or(self.current.msn, |(s, _)| s.msn)
    }

    /// The media playlist.
    pub fn playlist(&self) -> String {
        let cfg = &self.cfg;
        let target = cfg.segment_secs().ceil() as u64;
        let mut out = String::new();
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", cfg.part_secs());
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.3}",
            cfg.part_secs() * 3.0,
            target as f64 * 3.0
        );
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.first_msn());
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"init.mp4\"");
        // Parts are listed for the last segments (about three target durations) and the current.
        let parts_from = self.done.len().saturating_sub(2);
        for (i, (seg, _)) in self.done.iter().enumerate() {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(seg.start_us));
            if i >= parts_from {
                write_parts(&mut out, seg);
            }
            let _ = writeln!(out, "#EXTINF:{:.3},", seg.duration());
            let _ = writeln!(out, "s{}.mp4", seg.msn);
        }
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
            return out;
        }
        if !self.current.parts.is_empty() {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(self.current.start_us));
            write_parts(&mut out, &self.current);
        }
        let next = self.next();
        let _ =
            writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p{}.{}.mp4\"", next.msn, next.part);
        out
    }
}

fn write_parts(out: &mut String, seg: &Segment) {
    for (i, (_, d)) in seg.parts.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={d:.3},URI=\"p{}.{i}.mp4\",INDEPENDENT=YES",
            seg.msn
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for µs since the epoch (proleptic Gregorian, UTC).
pub fn iso8601(us: u64) -> String {
    let millis = (us / 1_000) % 1_000;
    format!("{}.{millis:03}Z", date_time(us / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(frames: usize) -> HlsSegmenter {
        let mut s = HlsSegmenter::new(HlsConfig::default());
        for i in 0..frames {
            s.push(
                i as u64,
                Bytes::from_static(&SILENCE),
                1_700_000_000_000_000 + i as u64 * 20_000,
            )
            .expect("push");
        }
        s
    }

    /// Checks a media playlist against the LL-HLS rules we rely on.
    fn check_playlist(text: &str, cfg: HlsConfig) {
        let value =
            |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).map(str::to_owned);
        assert!(text.starts_with("#EXTM3U\n"));
        let target: f64 = value("#EXT-X-TARGETDURATION:").expect("target").parse().expect("number");
        let part_target: f64 =
            value("#EXT-X-PART-INF:PART-TARGET=").expect("part target").parse().expect("number");
        let control = value("#EXT-X-SERVER-CONTROL:").expect("server control");
        assert!(control.contains("CAN-BLOCK-RELOAD=YES"));
        let hold_back: f64 = control
            .split("PART-HOLD-BACK=")
            .nth(1)
            .and_then(|v| v.split(',').next())
            .expect("phb")
            .parse()
            .expect("n");
        assert!(
            hold_back + 1e-9 >= 3.0 * part_target,
            "PART-HOLD-BACK at least three part targets"
        );
        let mut msn: u64 =
            value("#EXT-X-MEDIA-SEQUENCE:").expect("media sequence").parse().expect("n");
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("#EXTINF:") {
                let d: f64 = d.trim_end_matches(',').parse().expect("duration");
                assert!(d <= target, "segment {d} over the target {target}");
            }
            if let Some(p) = line.strip_prefix("#EXT-X-PART:DURATION=") {
                let d: f64 = p.split(',').next().expect("d").parse().expect("n");
                assert!(d <= part_target + 1e-9, "part {d} over the part target");
            }
            if line.starts_with('s') && line.ends_with(".mp4") {
                assert_eq!(line, format!("s{msn}.mp4"), "segments are numbered in sequence");
                msn += 1;
            }
        }
        let ended = text.contains("#EXT-X-ENDLIST");
        assert_eq!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"), !ended);
        assert!((cfg.part_secs() - part_target).abs() < 1e-9);
    }

    #[test]
    fn parts_segments_and_a_valid_playlist() {
        let s = run(215);
        assert_eq!(s.next(), Position { msn: 2, part: 1 });
        assert!(s.part(2, 0).is_some() && s.part(2, 1).is_none());
        assert!(s.segment(0).is_some() && s.segment(2).is_none());
        let text = s.playlist();
        check_playlist(&text, HlsConfig::default());
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.1.mp4\""), "{text}");
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"), "{text}");
        assert_eq!(
            s.segment(1).expect("s1").len(),
            (0..10).map(|i| s.part(1, i).expect("part").len()).sum::<usize>()
        );
    }

    #[test]
    fn the_window_slides_and_the_end_is_marked() {
        let mut s = run(1_000);
        assert_eq!(s.first_msn(), 4, "six segments kept");
        assert!(s.segment(3).is_none() && s.segment(4).is_some());
        assert!(s.expired(3) && !s.expired(4) && !s.expired(99), "gone only behind the window");
        assert!(s.segment_start_us(3).is_none() && s.segment_start_us(4).is_some());
        s.push(1_000, Bytes::from_static(&SILENCE), 0).expect("push");
        s.finish().expect("finish");
        let text = s.playlist();
        check_playlist(&text, HlsConfig::default());
        assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"));
        assert!(s.reached(Position { msn: 99, part: 0 }), "an ended stream blocks nobody");
    }

    /// Frame `seq` of a stream: a packet that says which frame it is.
    fn frame(seq: u64) -> Bytes {
        Bytes::from(vec![0xF8, (seq >> 8) as u8, seq as u8])
    }

    fn from(first: u64, last: u64, gaps: &[u64]) -> HlsSegmenter {
        let mut s = HlsSegmenter::new(HlsConfig::default());
        for seq in (first..last).filter(|n| !gaps.contains(n)) {
            s.push(seq, frame(seq), 1_700_000_000_000_000 + seq * 20_000).expect("push");
        }
        s
    }

    #[test]
    fn nodes_that_joined_at_different_times_make_the_same_objects() {
        // The origin from frame 0; an edge from frame 437 (mid-segment: it starts at 500).
        let origin = from(0, 1_234, &[]);
        let edge = from(437, 1_234, &[]);
        assert_eq!(origin.next(), edge.next(), "the same next part");
        assert_eq!(edge.first_msn(), origin.first_msn(), "the same window");
        assert_eq!(from(437, 800, &[]).first_msn(), 5, "starts at the boundary after frame 437");
        for msn in 6..12 {
            assert_eq!(origin.segment(msn), edge.segment(msn), "segment {msn}");
            for part in 0..10 {
                assert_eq!(origin.part(msn, part), edge.part(msn, part), "part {msn}.{part}");
            }
        }
        assert!(edge.part(12, 2).is_some() && edge.part(12, 3).is_none());
        assert_eq!(HlsSegmenter::new(HlsConfig::default()).begins_at(), None);
        assert_eq!(origin.begins_at(), Some(Position { msn: 0, part: 0 }));
        let waiting = from(437, 480, &[]);
        assert_eq!(waiting.next(), Position { msn: 5, part: 0 }, "hinted: the first part to come");
        assert_eq!(waiting.begins_at(), Some(Position { msn: 5, part: 0 }));
        assert!(waiting.part(4, 0).is_none() && waiting.segment(4).is_none());
        check_playlist(&waiting.playlist(), HlsConfig::default());
        check_playlist(&edge.playlist(), HlsConfig::default());
    }

    #[test]
    fn a_gap_is_filled_with_silence_and_numbers_hold() {
        let whole = from(0, 400, &[]);
        let holed = from(0, 400, &[150, 151, 152, 311]);
        assert_eq!(whole.next(), holed.next());
        assert_eq!(whole.part(1, 4), holed.part(1, 4), "parts before the gap are the same");
        assert_eq!(whole.part(1, 6), holed.part(1, 6), "and after it");
        let (a, b) = (whole.part(1, 5).expect("part"), holed.part(1, 5).expect("part"));
        assert_eq!(a.len(), b.len(), "same frame count and sizes (3-byte packets)");
        assert_ne!(a, b, "the missing frames became silence");
        assert!(b.windows(3).any(|w| w == SILENCE));
        // Replays and duplicates change nothing.
        let mut dup = from(0, 400, &[]);
        dup.push(120, frame(999), 0).expect("push");
        assert_eq!(dup.part(1, 2), whole.part(1, 2));
    }

    #[test]
    fn the_filler_is_20_ms_of_silence() {
        let mut dec =
            opus::Decoder::new(crate::frame::SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut pcm = [1.0f32; FRAME_SAMPLES];
        let n = dec.decode_float(&SILENCE, &mut pcm, false).expect("decodes");
        assert_eq!(n, FRAME_SAMPLES);
        assert!(pcm.iter().all(|s| s.abs() < 1e-4), "silent");
    }

    #[test]
    fn a_jump_of_more_than_a_second_starts_over_at_a_boundary() {
        let mut s = from(0, 700, &[]);
        s.push(751, frame(751), 0).expect("push");
        assert_eq!(s.next(), Position { msn: 8, part: 0 }, "waits for segment 8");
        assert!(s.segment(6).is_none(), "the old numbering is gone");
        s.push(5_100, frame(5_100), 0).expect("push");
        assert_eq!(s.first_msn(), 51);
        check_playlist(&s.playlist(), HlsConfig::default());
    }

    #[test]
    fn dates_are_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123_000), "2000-02-29T00:00:00.123Z");
    }

    proptest! {
        #[test]
        fn playlists_stay_valid(frames in 0usize..2_000) {
            let s = run(frames);
            check_playlist(&s.playlist(), HlsConfig::default());
        }

        #[test]
        fn any_numbering_keeps_playlists_valid(
            seqs in proptest::collection::vec(0u64..3_000, 0..400),
        ) {
            let mut s = HlsSegmenter::new(HlsConfig::default());
            for seq in seqs {
                s.push(seq, frame(seq), seq * 20_000).expect("push");
            }
            check_playlist(&s.playlist(), HlsConfig::default());
        }
    }
}
