//! Room action bodies from the outside: `POST /api/v1/spaces/{id}/actions` JSON, parsed into an
//! action (unknown names, missing targets, bad identities and reactions are errors, never panics).
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_server::room::{ActionRequest, parse_action};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ActionRequest>(data) {
        let _ = parse_action(req);
    }
});
