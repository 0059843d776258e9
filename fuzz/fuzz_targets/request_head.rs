//! Request heads from the outside, as the accept loop reads them: the X-Forwarded-For values a
//! trusted proxy sends, resolved to the client behind it.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use townhall_shield::{TrustedProxies, client_from_forwarded_for};

fuzz_target!(|data: &[u8]| {
    let values = townhall_server::serve::forwarded_for(data);
    let peer: IpAddr = [127, 0, 0, 1].into();
    let trusted: TrustedProxies = [peer].into_iter().collect();
    let client = client_from_forwarded_for(peer, values.iter().copied(), &trusted);
    let _ = client;
});
