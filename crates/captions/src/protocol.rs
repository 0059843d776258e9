//! The captions worker protocol: how the server talks to a speech-to-text engine running as a
//! process of its own (`captions_engine`), so that any engine can be plugged in.
//!
//! **Server to worker (stdin)**, binary messages, each a 9-byte header and a payload:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | kind: `1` audio, `2` end of phrase |
//! | 4 | phrase id (`utt`), u32 little-endian |
//! | 4 | payload length in bytes, u32 little-endian |
//! | n | audio: 16 kHz mono signed 16-bit little-endian samples; end: nothing |
//!
//! Audio messages of one phrase follow each other; its end message follows them. The server
//! decides where phrases begin and end (voice activity) and may drop audio when the worker
//! falls behind; a worker that receives audio of a new phrase before the end of the old one
//! drops the old one.
//!
//! **Worker to server (stdout)**, one JSON object per line (at most [`MAX_LINE`] bytes):
//!
//! - `{"type":"ready","engine":"name version"}` once, when it can take audio;
//! - `{"type":"interim","utt":7,"text":"the birch canoe"}` (optional) while a phrase goes on;
//! - `{"type":"final","utt":7,"text":"The birch canoe slid.","words":[{"w":"the","start":0.21,
//!   "end":0.35}, ...]}` once per phrase, after its end (`words` optional, times in seconds
//!   from the phrase's first sample);
//! - `{"type":"error","message":"..."}` when it cannot work (then it exits).
//!
//! Lines are outside input: [`WorkerLine::parse`] bounds their size, the text's length and the
//! number of words, drops control characters, and refuses what it does not understand.

use serde::Deserialize;

/// Kind byte of an audio message.
pub const AUDIO: u8 = 1;
/// Kind byte of an end-of-phrase message.
pub const END: u8 = 2;
/// Longest line taken from a worker, bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// Longest cue text kept, characters.
pub const MAX_TEXT: usize = 1_000;
/// Most words kept from one final.
pub const MAX_WORDS: usize = 300;

/// An audio message for phrase `utt`.
pub fn audio(utt: u32, pcm: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + pcm.len() * 2);
    out.push(AUDIO);
    out.extend_from_slice(&utt.to_le_bytes());
    out.extend_from_slice(&((pcm.len() * 2) as u32).to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The end-of-phrase message for `utt`.
pub fn end(utt: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(END);
    out.extend_from_slice(&utt.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// A word and where it lies in its phrase, seconds from the phrase's first sample.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Word {
    /// The word.
    pub w: String,
    /// Where it starts.
    pub start: f64,
    /// Where it ends.
    pub end: f64,
}

/// One line from the worker, checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerLine {
    /// The worker can take audio.
    Ready {
        /// Its engine, for logs and metrics.
        #[serde(default)]
        engine: String,
    },
    /// The words so far of a phrase that goes on.
    Interim {
        /// The phrase.
        utt: u32,
        /// Its words so far.
        text: String,
    },
    /// A phrase's words, final.
    Final {
        /// The phrase.
        utt: u32,
        /// Its words.
        text: String,
        /// Word times, when the engine gives them.
        #[serde(default)]
        words: Vec<Word>,
    },
    /// The worker cannot work.
    Error {
        /// Why.
        #[serde(default)]
        message: String,
    },
}

/// Why a worker's line was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not a JSON message of the protocol.
    #[error("not a worker message: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl WorkerLine {
    /// Parses one line (without its newline), bounding what it keeps.
    pub fn parse(line: &[u8]) -> Result<WorkerLine, ProtocolError> {
        if line.len() > MAX_LINE {
            return Err(ProtocolError::TooLong);
        }
        let mut parsed: WorkerLine = serde_json::from_slice(line)?;
        match &mut parsed {
            WorkerLine::Ready { engine } => *engine = clean(engine, 100),
            WorkerLine::Interim { text, .. } => *text = clean(text, MAX_TEXT),
            WorkerLine::Final { text, words, .. } => {
                *text = clean(text, MAX_TEXT);
                words.truncate(MAX_WORDS);
                words.retain(|w| {
                    w.start.is_finite() && w.end.is_finite() && w.start >= 0.0 && w.end >= w.start
                });
                for w in words.iter_mut() {
                    w.w = clean(&w.w, 100);
                }
            }
            WorkerLine::Error { message } => *message = clean(message, 500),
        }
        Ok(parsed)
    }
}

/// Text without control characters, runs of white space made one space, at most `max` chars.
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if count >= max {
            break;
        }
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
            if count >= max {
                break;
            }
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_are_as_documented() {
        let a = audio(7, &[1, -2]);
        assert_eq!(a, vec![1, 7, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0xFE, 0xFF]);
        assert_eq!(end(258), vec![2, 2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn lines_of_the_protocol_parse() {
        let l = WorkerLine::parse(br#"{"type":"ready","engine":"pocketsphinx 5"}"#).expect("ok");
        assert_eq!(l, WorkerLine::Ready { engine: "pocketsphinx 5".into() });
        let l = WorkerLine::parse(
            br#"{"type":"final","utt":3,"text":"hello  world\n","words":[{"w":"hello","start":0.1,"end":0.4},{"w":"x","start":-1,"end":2}]}"#,
        )
        .expect("ok");
        let WorkerLine::Final { utt, text, words } = l else { panic!("final") };
        assert_eq!((utt, text.as_str(), words.len()), (3, "hello world", 1));
        let l = WorkerLine::parse(br#"{"type":"interim","utt":3,"text":"hel","extra":1}"#);
        assert!(matches!(l, Ok(WorkerLine::Interim { .. })), "unknown fields are ignored");
        assert!(WorkerLine::parse(br#"{"type":"shout","utt":1}"#).is_err());
        assert!(WorkerLine::parse(br#"{"type":"final","utt":-1,"text":""}"#).is_err());
        assert!(WorkerLine::parse(&vec![b' '; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn text_is_bounded_and_clean() {
        assert_eq!(clean("  a\u{7}b\t\tc  ", 100), "a b c");
        assert_eq!(clean(&"é".repeat(5_000), 10).chars().count(), 10);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_000)) {
            let _ = WorkerLine::parse(&bytes);
        }

        #[test]
        fn any_text_comes_back_bounded(text in ".{0,3000}", utt in any::<u32>()) {
            let line = serde_json::json!({"type": "final", "utt": utt, "text": text}).to_string();
            match WorkerLine::parse(line.as_bytes()) {
                Ok(WorkerLine::Final { utt: u, text: t, .. }) => {
                    prop_assert_eq!(u, utt);
                    prop_assert!(t.chars().count() <= MAX_TEXT);
                    prop_assert!(!t.chars().any(|c| c.is_control()));
                }
                Ok(other) => prop_assert!(false, "parsed as {:?}", other),
                Err(_) => prop_assert!(line.len() > MAX_LINE),
            }
        }
    }
}
