//! Keys for per-client limits: the address, and its subnet (/24 for IPv4, /64 for IPv6), which
//! catches one actor rotating through neighbouring addresses.

use std::net::IpAddr;

/// The key for one address (IPv4-mapped IPv6 addresses count as IPv4).
pub fn ip_key(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) | 1 << 127,
    }
}

/// The key for an address's subnet: its /24 (IPv4) or /64 (IPv6).
pub fn subnet_key(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xFFFF_FF00) | 1 << 126,
        IpAddr::V6(v6) => (u128::from(v6) & !0xFFFF_FFFF_FFFF_FFFF) | 3 << 126,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn subnets_group_neighbours_and_keep_families_apart() {
        assert_eq!(subnet_key(ip("10.1.2.3")), subnet_key(ip("10.1.2.200")));
        assert_ne!(subnet_key(ip("10.1.2.3")), subnet_key(ip("10.1.3.3")));
        assert_eq!(subnet_key(ip("2001:db8::1")), subnet_key(ip("2001:db8::ffff")));
        assert_ne!(subnet_key(ip("2001:db8::1")), subnet_key(ip("2001:db8:0:1::1")));
        assert_eq!(ip_key(ip("::ffff:10.1.2.3")), ip_key(ip("10.1.2.3")));
        assert_ne!(ip_key(ip("10.1.2.3")), subnet_key(ip("10.1.2.3")));
        assert_ne!(ip_key(ip("0.0.0.1")), ip_key(ip("::1")));
    }
}
