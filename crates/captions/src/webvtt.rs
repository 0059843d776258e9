//! Cues as WebVTT and plain text: HLS subtitle segments (each with the `X-TIMESTAMP-MAP` that
//! ties its times to the audio's media timeline) and whole transcripts.
//!
//! Times are written relative to a `base` program frame: the first frame of the LL-HLS stream
//! (whose media time is 0) for subtitle segments, the recording's first frame for transcripts.

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
    fn transcripts_in_both_forms() {
        let cues =
            [cue(1, 3_000, 3_100, "hello", Some("bob")), cue(2, 3_200, 3_300, "again", None)];
        assert_eq!(plain_text(&cues, 0), "[01:00] bob: hello\n[01:04] again\n");
        let vtt = transcript(&cues, 3_000);
        assert!(vtt.starts_with("WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.000\n<v bob>hello\n"));
        assert_eq!(timestamp(3_723_004), "01:02:03.004");
    }
}
