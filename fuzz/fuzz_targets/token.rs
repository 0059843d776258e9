//! Access tokens from the outside: query strings and Authorization headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_core::{TokenKeys, UnixTime};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let keys = TokenKeys::new("fuzz", b"a fuzzing secret of decent length");
        let _ = keys.verify(text, UnixTime(1_700_000_000));
    }
});
