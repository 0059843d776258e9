//! Where load goes: loopback only, by construction.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use crate::conn::TlsClient;

/// A refused or malformed target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `http://HOST:PORT` (or `HOST:PORT`).
    #[error("target must look like http://127.0.0.1:8080, got {0:?}")]
    Malformed(String),
    /// Outside 127.0.0.0/8 and ::1.
    #[error(
        "refusing target {0}: townhall-load only sends traffic to loopback (127.0.0.0/8 or ::1)"
    )]
    NotLoopback(String),
}

/// A loopback HTTP server to load.
///
/// Only [`Target::new`] and [`FromStr`] make one, and both refuse anything outside loopback;
/// `#[non_exhaustive]` keeps other crates from building one field by field:
///
/// ```compile_fail
/// let t = townhall_client::target::Target { addr: "8.8.8.8:53".parse().unwrap() };
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// Its socket address (always loopback).
    pub addr: SocketAddr,
    /// How its TLS is checked, if it speaks TLS (see [`Target::with_tls`]).
    pub tls: Option<TlsClient>,
}

impl Target {
    /// A target at a loopback socket address.
    pub fn new(addr: SocketAddr) -> Result<Target, TargetError> {
        if !addr.ip().is_loopback() {
            return Err(TargetError::NotLoopback(addr.to_string()));
        }
        Ok(Target { addr, tls: None })
    }

    /// The same target, spoken to over TLS checked by `tls`.
    pub fn with_tls(self, tls: TlsClient) -> Target {
        Target { tls: Some(tls), ..self }
    }

    /// Source addresses to spread an audience over, so ephemeral ports never run out and, as a
    /// real crowd does, it comes from many subnets: 127.0.S.H with S in 1..=250 (250 /24s) and H
    /// in 1..=254, for an IPv4 target; ::1 alone for IPv6.
    pub fn source_ip(&self, n: usize) -> IpAddr {
        match self.addr.ip() {
            IpAddr::V4(_) => {
                let subnet = 1 + (n % 250) as u8;
                let host = 1 + ((n / 250) % 254) as u8;
                IpAddr::V4(Ipv4Addr::new(127, 0, subnet, host))
            }
            v6 => v6,
        }
    }

    /// Like [`source_ip`](Self::source_ip), but from only `subnets` /24s (1 to 250; 0 means
    /// all 250): a crowd behind a campus or carrier NAT.
    pub fn source_ip_in(&self, n: usize, subnets: usize) -> IpAddr {
        let subnets = if subnets == 0 { 250 } else { subnets.min(250) };
        match self.addr.ip() {
            IpAddr::V4(_) => {
                let subnet = 1 + (n % subnets) as u8;
                let host = 1 + ((n / subnets) % 254) as u8;
                IpAddr::V4(Ipv4Addr::new(127, 0, subnet, host))
            }
            v6 => v6,
        }
    }

    /// Source addresses for junk: 127.66.0.1 to 127.66.0.254, one /24, as a botnet's
    /// concentrated traffic (IPv6: ::1).
    pub fn junk_source_ip(&self, n: usize) -> IpAddr {
        match self.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(127, 66, 0, 1 + (n % 254) as u8)),
            v6 => v6,
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // `https://` names the same address: TLS comes with the CA to trust (`with_tls`).
        let text = raw.strip_prefix("http://").or_else(|| raw.strip_prefix("https://"));
        let text = text.unwrap_or(raw).trim_end_matches('/');
        let text = match text.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => text.to_owned(),
        };
        let addr: SocketAddr = text.parse().map_err(|_| TargetError::Malformed(raw.to_owned()))?;
        Target::new(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn loopback_targets_are_accepted() {
        for ok in
            ["http://127.0.0.1:8080", "127.0.0.5:1", "http://localhost:9000/", "http://[::1]:80"]
        {
            assert!(ok.parse::<Target>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn other_targets_are_refused_with_a_clear_error() {
        for bad in [
            "http://10.0.0.1:80",
            "http://192.168.1.1:8080",
            "8.8.8.8:53",
            "http://[2001:db8::1]:80",
        ] {
            assert!(matches!(bad.parse::<Target>(), Err(TargetError::NotLoopback(_))), "{bad}");
        }
        for bad in ["http://example.com:80", "", "http://127.0.0.1"] {
            assert!(matches!(bad.parse::<Target>(), Err(TargetError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn sources_stay_in_loopback() {
        let t: Target = "127.0.0.1:80".parse().expect("target");
        for n in 0..100_000 {
            assert!(t.source_ip(n).is_loopback());
            assert!(t.junk_source_ip(n).is_loopback());
        }
        assert_ne!(t.source_ip(0), t.source_ip(1));
        let subnet = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.octets()[2],
            IpAddr::V6(_) => 0,
        };
        assert!((0..5_000).all(|n| subnet(t.source_ip_in(n, 1)) == 1), "one /24");
        assert_eq!(t.source_ip_in(7, 0), t.source_ip(7), "0 means spread as usual");
    }

    proptest! {
        #[test]
        fn nothing_outside_loopback_is_ever_accepted(a in 0u8..=255, b in 0u8..=255, c in 0u8..=255, d in 0u8..=255, port in 1u16..) {
            let parsed = format!("http://{a}.{b}.{c}.{d}:{port}").parse::<Target>();
            prop_assert_eq!(parsed.is_ok(), a == 127);
        }
    }
}
