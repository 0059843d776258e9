//! `X-Forwarded-For` from the outside: the client address behind trusted proxies, as the server
//! picks the key for per-address limits. Input: a peer selector byte, then header values
//! separated by newlines.
#![no_main]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use townhall_shield::{TrustedProxies, client_from_forwarded_for};

fn trusted() -> &'static TrustedProxies {
    static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();
    TRUSTED.get_or_init(|| {
        TrustedProxies::parse(["10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32"]).expect("list")
    })
}

/// One entry as the header may write it (address, with a port, in brackets).
fn entry(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?.trim_ascii();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = match selector % 4 {
        0 => "10.0.0.1".parse().expect("ip"),
        1 => "::ffff:127.0.0.1".parse().expect("ip"),
        2 => "2001:db8::1".parse().expect("ip"),
        _ => "192.0.2.1".parse().expect("ip"),
    };
    let headers: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let client = client_from_forwarded_for(peer, headers.iter().copied(), trusted());
    if !trusted().contains(peer) {
        assert_eq!(client, peer, "an untrusted peer speaks for itself");
    }
    let listed = headers.iter().flat_map(|h| h.split(|&b| b == b',')).filter_map(entry);
    assert!(client == peer || listed.into_iter().any(|ip| ip == client), "{client} not in input");
});
