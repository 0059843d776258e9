//! Ogg/Opus input (recordings, the demo file, captures).
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_media::OggOpusReader;

fuzz_target!(|data: &[u8]| {
    let _ = OggOpusReader::parse(data);
});
