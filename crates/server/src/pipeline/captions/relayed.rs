//! An origin's caption events as an edge's relay reads them (`docs/protocol.md`: `caption`,
//! `captions`, `captions_settled`): parsed, bounded and renumbered into the edge's frame
//! numbering, so the edge puts the same cues on its own board, its WebSocket listeners and its
//! LL-HLS subtitle rendition as the origin does.
//!
//! The origin is another node of the cluster, but its messages are still input from the
//! network: sizes are bounded, text is cleaned as a worker's is, numbers are checked.

use serde::Deserialize;
use townhall_captions::Cue;
use townhall_captions::protocol::{MAX_TEXT, clean};

use super::board::TimedCue;

/// Longest caption event taken from an origin, bytes (a cue's text is at most
/// [`MAX_TEXT`] characters).
pub const MAX_EVENT: usize = 16 * 1024;
/// Longest speaker name kept, characters (identities are shorter).
const MAX_SPEAKER: usize = 128;

/// A caption event from an origin, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Relayed {
    /// A cue (interim or final), its frame numbers still the origin's.
    Cue(TimedCue),
    /// Captions went on or off there.
    Switched {
        /// On or off.
        on: bool,
        /// The engine, once it runs.
        engine: Option<String>,
    },
    /// Captions before frame `seq` are settled there; it heard up to `latest`.
    Settled {
        /// The frontier.
        seq: u64,
        /// The latest frame heard.
        latest: u64,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Caption {
        id: u64,
        #[serde(rename = "final")]
        is_final: bool,
        start_seq: u64,
        end_seq: u64,
        start_us: u64,
        end_us: u64,
        text: String,
        speaker: Option<String>,
    },
    Captions {
        on: bool,
        engine: Option<String>,
    },
    CaptionsSettled {
        seq: u64,
        latest: u64,
    },
}

/// Whether an event of this `type` is one of the captions' (and so for [`Relayed::parse`]).
pub fn is_caption_event(kind: &str) -> bool {
    matches!(kind, "caption" | "captions" | "captions_settled")
}

/// Frame numbers are `u32` on the wire (`townhall_media::wire`).
fn frame(n: u64) -> Option<u64> {
    (n <= u64::from(u32::MAX)).then_some(n)
}

impl Relayed {
    /// Parses one of an origin's caption events; `None` for anything else or anything
    /// malformed (too long, frame numbers out of range or backwards).
    pub fn parse(text: &str) -> Option<Relayed> {
        if text.len() > MAX_EVENT {
            return None;
        }
        Some(match serde_json::from_str::<Wire>(text).ok()? {
            Wire::Caption { id, is_final, start_seq, end_seq, start_us, end_us, text, speaker } => {
                let (start, end) = (frame(start_seq)?, frame(end_seq)?);
                if end < start {
                    return None;
                }
                let speaker =
                    speaker.map(|s| clean(&s, MAX_SPEAKER)).filter(|s: &String| !s.is_empty());
                Relayed::Cue(TimedCue {
                    cue: Cue { id, is_final, start, end, text: clean(&text, MAX_TEXT), speaker },
                    start_us,
                    end_us: end_us.max(start_us),
                })
            }
            Wire::Captions { on, engine } => {
                Relayed::Switched { on, engine: engine.map(|e| clean(&e, 100)) }
            }
            Wire::CaptionsSettled { seq, latest } => {
                Relayed::Settled { seq: frame(seq)?, latest: frame(latest)? }
            }
        })
    }

    /// The event with its frame numbers moved into this node's numbering by `renumber` (the
    /// relay's: the origin's frame `n` is this node's `renumber(n)`).
    pub fn renumbered(self, renumber: impl Fn(u32) -> u32) -> Relayed {
        let map = |n: u64| u64::from(renumber(n as u32));
        match self {
            Relayed::Cue(mut timed) => {
                let length = timed.cue.end - timed.cue.start;
                timed.cue.start = map(timed.cue.start);
                timed.cue.end = timed.cue.start + length;
                Relayed::Cue(timed)
            }
            Relayed::Settled { seq, latest } => {
                Relayed::Settled { seq: map(seq), latest: map(latest) }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_events_parse_and_others_do_not() {
        let cue = Relayed::parse(
            r#"{"type":"caption","id":7,"final":true,"start_seq":10,"end_seq":60,"start_us":1,"end_us":2,"text":"hi\u0007 there","speaker":"ann"}"#,
        );
        let Some(Relayed::Cue(t)) = cue else { panic!("{cue:?}") };
        assert_eq!((t.cue.id, t.cue.is_final, t.cue.start, t.cue.end), (7, true, 10, 60));
        assert_eq!((t.cue.text.as_str(), t.cue.speaker.as_deref()), ("hi there", Some("ann")));
        assert_eq!(
            Relayed::parse(r#"{"type":"captions","on":false,"engine":null}"#),
            Some(Relayed::Switched { on: false, engine: None })
        );
        assert_eq!(
            Relayed::parse(r#"{"type":"captions_settled","seq":5,"latest":9}"#),
            Some(Relayed::Settled { seq: 5, latest: 9 })
        );
        for bad in [
            r#"{"type":"speaking","speakers":[]}"#,
            r#"{"type":"captions_settled","seq":5}"#,
            r#"{"type":"captions_settled","seq":4294967296,"latest":1}"#,
            r#"{"type":"caption","id":1,"final":true,"start_seq":9,"end_seq":8,"start_us":0,"end_us":0,"text":"x","speaker":null}"#,
            "not json",
        ] {
            assert_eq!(Relayed::parse(bad), None, "{bad}");
        }
        assert!(is_caption_event("captions_settled") && !is_caption_event("joined"));
    }

    #[test]
    fn renumbering_moves_every_frame_number_and_keeps_lengths() {
        let Some(cue) = Relayed::parse(
            r#"{"type":"caption","id":1,"final":true,"start_seq":100,"end_seq":150,"start_us":0,"end_us":0,"text":"x","speaker":null}"#,
        ) else {
            panic!("parses")
        };
        let Relayed::Cue(t) = cue.renumbered(|n| n.wrapping_add(1_000)) else { panic!("cue") };
        assert_eq!((t.cue.start, t.cue.end), (1_100, 1_150));
        let s = Relayed::Settled { seq: 7, latest: 9 }.renumbered(|n| n + 3);
        assert_eq!(s, Relayed::Settled { seq: 10, latest: 12 });
    }

    proptest! {
        #[test]
        fn any_text_never_panics(text in ".{0,400}") {
            let _ = Relayed::parse(&text);
        }

        #[test]
        fn any_caption_comes_back_bounded(
            id in any::<u64>(),
            start in any::<u32>(),
            len in 0u32..10_000,
            text in ".{0,3000}",
            speaker in proptest::option::of(".{0,300}"),
            offset in any::<u32>(),
        ) {
            let end = u64::from(start) + u64::from(len);
            let line = serde_json::json!({
                "type": "caption", "id": id, "final": true, "start_seq": start, "end_seq": end,
                "start_us": 5, "end_us": 1, "text": text, "speaker": speaker,
            })
            .to_string();
            match Relayed::parse(&line) {
                Some(event) => {
                    let Relayed::Cue(t) = event.renumbered(|n| n.wrapping_add(offset)) else {
                        return Err(TestCaseError::fail("not a cue"));
                    };
                    prop_assert_eq!(t.cue.id, id);
                    prop_assert_eq!(t.cue.end - t.cue.start, u64::from(len));
                    prop_assert!(t.cue.text.chars().count() <= MAX_TEXT);
                    prop_assert!(!t.cue.text.chars().any(char::is_control));
                    prop_assert!(t.cue.speaker.as_ref().is_none_or(|s| s.chars().count() <= MAX_SPEAKER));
                    prop_assert!(t.end_us >= t.start_us);
                }
                None => prop_assert!(line.len() > MAX_EVENT || end > u64::from(u32::MAX)),
            }
        }
    }
}
