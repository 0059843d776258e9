//! WHIP/WHEP offers from the outside: the checks and str0m's SDP parser, then (for offers that
//! pass) building the server's answer, as `POST /whip` and `POST /whep` do.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use townhall_webrtc::{Intent, Peer, PeerConfig, check_offer, shared_certificate};

fn config() -> &'static PeerConfig {
    static CONFIG: OnceLock<PeerConfig> = OnceLock::new();
    CONFIG.get_or_init(|| PeerConfig {
        candidates: vec!["127.0.0.1:5000".parse().expect("addr")],
        cert: shared_certificate(),
        ice_lite: true,
    })
}

fuzz_target!(|data: &[u8]| {
    for intent in [Intent::Publish, Intent::Subscribe] {
        if let Ok(offer) = check_offer(data, intent) {
            let _ = Peer::answer(offer, config(), Instant::now());
        }
    }
});
