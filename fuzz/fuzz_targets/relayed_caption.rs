//! An origin's caption events as an edge's relay reads them (`caption`, `captions`,
//! `captions_settled`): parsed, bounded and renumbered, or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_server::pipeline::captions::relayed::Relayed;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(event) = Relayed::parse(text)
        && let Relayed::Cue(timed) = event.renumbered(|n| n.wrapping_add(0x8000_0000))
    {
        assert!(timed.cue.start <= timed.cue.end && timed.cue.text.chars().count() <= 1_000);
        assert!(timed.start_us <= timed.end_us);
    }
});
