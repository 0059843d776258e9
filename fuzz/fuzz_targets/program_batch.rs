//! Program batches, as listeners (the page, the load generator) parse them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_media::wire::parse_program_batch;

fuzz_target!(|data: &[u8]| {
    let mut n = 0;
    if let Ok(count) = parse_program_batch(data, |_| n += 1) {
        assert_eq!(count, n);
    }
});
