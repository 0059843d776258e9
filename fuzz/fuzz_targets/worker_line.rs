//! Lines from a captions worker (`captions_engine`, a process the operator chose): parsed,
//! bounded and cleaned, or refused, never a panic; the cues they make stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_captions::{Captioner, CaptionerConfig, WorkerLine};

fuzz_target!(|data: &[u8]| {
    let mut captioner = Captioner::new(CaptionerConfig::default(), 1);
    captioner.started(1, 100);
    captioner.ended(1, 200, 0);
    for line in data.split(|b| *b == b'\n') {
        if let Ok(parsed) = WorkerLine::parse(line)
            && let Some(cue) = captioner.line(parsed)
        {
            assert!(cue.start <= cue.end && cue.text.chars().count() <= 1_000);
        }
    }
});
