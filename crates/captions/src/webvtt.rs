//! Cues as WebVTT and plain text: HLS subtitle segments (each with the `X-TIMESTAMP-MAP` that
//! ties its times to the audio's media timeline) and whole transcripts.
//!
//! Times are written relative to a `base` program frame: 0 for subtitle segments (LL-HLS puts
//! program frame `n` at media time `n × 20 ms`), the recording's first frame for transcripts.

use std::fmt::Write;

use crate::{Cue, FRAME_MS};

/// `HH:MM:SS.mmm` for a number of milliseconds.
pub fn timestamp(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    )
}

fn ms_since(base: u64, frame: u64) -> u64 {
    frame.saturating_sub(base) * FRAME_MS
}

/// Text safe inside a cue: no markup, no line that could end the cue or start a timing line.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace(['\n', '\r'], " ")
}

fn write_cue(out: &mut String, cue: &Cue, base: u64) {
    let _ = writeln!(out, "{}", cue.id);
    let _ = writeln!(
        out,
        "{} --> {}",
        timestamp(ms_since(base, cue.start)),
        timestamp(ms_since(base, cue.end.max(cue.start + 1)))
    );
    match &cue.speaker {
        Some(who) => {
            let _ = writeln!(out, "<v {}>{}", escape(who), escape(&cue.text));
        }
        None => {
            let _ = writeln!(out, "{}", escape(&cue.text));
        }
    }
    out.push('\n');
}

/// An HLS subtitle segment: the cues given (those overlapping the segment), timed on the media
/// timeline that starts at frame `base`. `X-TIMESTAMP-MAP` maps its local time 0 to media time
/// 0 (MPEG-TS 90 kHz units), which is where the CMAF audio's decode times start.
pub fn segment(cues: &[Cue], base: u64) -> String {
    let mut out = String::from("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n");
    for cue in cues {
        write_cue(&mut out, cue, base);
    }
    out
}

/// A whole transcript as WebVTT, times from frame `base`.
pub fn transcript(cues: &[Cue], base: u64) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for cue in cues {
        write_cue(&mut out, cue, base);
    }
    out
}

/// A whole transcript as plain text: `[mm:ss] speaker: words`, one cue a line.
pub fn plain_text(cues: &[Cue], base: u64) -> String {
    let mut out = String::new();
    for cue in cues {
        let secs = ms_since(base, cue.start) / 1_000;
        let _ = write!(out, "[{:02}:{:02}] ", secs / 60, secs % 60);
        if let Some(who) = &cue.speaker {
            let _ = write!(out, "{who}: ");
        }
        let _ = writeln!(out, "{}", cue.text.replace(['\n', '\r'], " "));
    }
    out
}

/// How long after its end (program frames) a subtitle segment is listed even if captions
/// are not settled there: past the longest phrase ([`crate::SegmenterConfig`]'s cut, 10 s)
/// plus the time a final is waited for ([`crate::CaptionerConfig`], 10 s) and a second of
/// slack, no final can come for it any more, so a segment listed is never changed. Only a
/// stalled stage comes this far: a phrase given up settles its frames anyway.
pub const LIST_DEADLINE_FRAMES: u64 = 500 + 500 + 50;

/// The subtitle segments of an LL-HLS stream that may be listed: those whose captions are
/// settled (every phrase that overlaps them has its final, or was given up), or that ended at
/// least `grace_frames` before the latest frame heard (a stuck engine does not hold subtitles
/// back for ever). Segment `msn` covers frames `base + msn * frames_per_segment` onwards;
/// `complete` are the audio segments that exist, oldest first. Listed segments never change.
pub fn settled_segments(
    complete: std::ops::Range<u64>,
    base: u64,
    frames_per_segment: u64,
    settled_until: u64,
    latest: u64,
    grace_frames: u64,
) -> std::ops::Range<u64> {
    let mut end = complete.start;
    while end < complete.end {
        let seg_end = base + (end + 1) * frames_per_segment;
        if seg_end > settled_until && seg_end + grace_frames > latest {
            break;
        }
        end += 1;
    }
    complete.start..end
}

/// The subtitle media playlist: one WebVTT segment per audio segment (`v{msn}.vtt`), each
/// with its program date-time (so players align it with the audio), `segment_secs` long.
pub fn subtitle_playlist(
    segments: &[(u64, Option<String>)],
    first_msn: u64,
    segment_secs: f64,
    ended: bool,
) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", segment_secs.ceil() as u64);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    for (msn, date) in segments {
        if let Some(date) = date {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{date}");
        }
        let _ = writeln!(out, "#EXTINF:{segment_secs:.3},");
        let _ = writeln!(out, "v{msn}.vtt");
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(id: u64, start: u64, end: u64, text: &str, speaker: Option<&str>) -> Cue {
        Cue {
            id,
            is_final: true,
            start,
            end,
            text: text.into(),
            speaker: speaker.map(str::to_owned),
        }
    }

    #[test]
    fn segments_carry_the_timestamp_map_and_escaped_voices() {
        let text = segment(
            &[cue(7, 150, 275, "a <b> & c --> d", Some("ann")), cue(8, 300, 300, "x", None)],
            100,
        );
        assert!(text.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n"));
        assert!(
            text.contains(
                "7\n00:00:01.000 --> 00:00:03.500\n<v ann>a &lt;b&gt; &amp; c --&gt; d\n\n"
            )
        );
        assert!(text.contains("8\n00:00:04.000 --> 00:00:04.020\nx\n"), "{text}");
    }

    #[test]
    fn only_settled_segments_are_listed() {
        // Segments of 100 frames from frame 1_000; 0..5 exist.
        let settled = |until, latest| settled_segments(0..5, 1_000, 100, until, latest, 500);
        assert_eq!(settled(1_250, 1_300), 0..2, "segments ending by the settled frame");
        assert_eq!(settled(1_000, 1_300), 0..0, "a phrase open since the start holds all");
        assert_eq!(settled(1_000, 1_800), 0..3, "unless they are older than the grace");
        assert_eq!(settled(u64::MAX, 1_300), 0..5);
        let text = subtitle_playlist(&[(3, Some("2026-01-01T00:00:00.000Z".into()))], 3, 2.0, true);
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n#EXTINF:2.000,\nv3.vtt\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn the_listing_deadline_outlasts_any_final() {
        let longest = crate::SegmenterConfig::default().max_phrase_frames;
        let waited = crate::CaptionerConfig::default().final_timeout_ms / crate::FRAME_MS;
        assert!(LIST_DEADLINE_FRAMES > longest + waited);
    }

    #[test]
    fn transcripts_in_both_forms() {
        let cues =
            [cue(1, 3_000, 3_100, "hello", Some("bob")), cue(2, 3_200, 3_300, "again", None)];
        assert_eq!(plain_text(&cues, 0), "[01:00] bob: hello\n[01:04] again\n");
        let vtt = transcript(&cues, 3_000);
        assert!(vtt.starts_with("WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.000\n<v bob>hello\n"));
        assert_eq!(timestamp(3_723_004), "01:02:03.004");
    }
}
