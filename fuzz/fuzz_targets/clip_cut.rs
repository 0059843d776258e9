//! The clip cutter over any bytes, in two chunks, with a jump between them when the first held
//! the headers, for any range (a recording's file, the live ring's pages): an error or a clip,
//! never a panic; and `find_page` over the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_media::clip::{ClipSpec, Cutter, find_page};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<5>() else { return };
    let from_ms = u64::from(u16::from_le_bytes([head[0], head[1]])) * 10;
    let len_ms = u64::from(u16::from_le_bytes([head[2], head[3]])).max(1);
    let split = usize::from(head[4]) * rest.len() / 256;
    let spec = ClipSpec {
        from_ms,
        to_ms: from_ms + len_ms,
        serial: 1,
        comments: vec!["TITLE=fuzz".into()],
        max_bytes: 1 << 20,
    };
    let _ = find_page(rest);
    let Ok(mut cutter) = Cutter::new(spec) else { return };
    if cutter.push(&rest[..split]).is_err() {
        return;
    }
    if cutter.has_headers() && head[4] % 2 == 1 && cutter.jump().is_err() {
        return;
    }
    if cutter.push(&rest[split..]).is_ok() {
        let _ = cutter.finish();
    }
});
