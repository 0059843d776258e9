//! Speaker WebSocket frames: the wire parser, then the Opus check, exactly as ingest runs them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_media::{SpeakerFrame, check_opus_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = SpeakerFrame::parse(bytes::Bytes::copy_from_slice(data)) {
        let _ = check_opus_frame(&frame.payload);
        assert_eq!(SpeakerFrame::parse(frame.encode()).as_ref(), Ok(&frame));
    }
});
