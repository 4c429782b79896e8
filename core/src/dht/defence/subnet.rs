//! Address classes the defences need: which addresses are exempt from the routing-table
//! subnet rule, and the network a source or a node belongs to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The network one public host is assumed to control: its IPv4 /24 or its IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet(IpAddr);

impl Subnet {
    /// The /24 or /64 of a public address; `None` for exempt ones (see [`is_exempt`]).
    pub fn of_public(ip: IpAddr) -> Option<Subnet> {
        (!is_exempt(ip)).then(|| Subnet(mask(ip.to_canonical(), 24, 64)))
    }
}

/// Whether `ip` is loopback, private (RFC 1918), link-local, unique-local (fc00::/7),
/// shared (100.64/10) or unspecified: the ranges libtorrent leaves out of its per-network
/// rules, so a LAN or a test box with many nodes on one network still works.
pub fn is_exempt(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || is_shared(v4)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

/// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
fn is_shared(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 100 && (b & 0xc0) == 64
}

/// The key a rate limiter counts `ip` under: the IPv4 address, or the IPv6 /64.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    mask(ip.to_canonical(), 32, 64)
}

fn mask(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - v4_bits).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - v6_bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn lan_loopback_and_link_local_are_exempt() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_exempt(ip(s)), "{s}");
            assert_eq!(Subnet::of_public(ip(s)), None, "{s}");
        }
        for s in ["203.0.113.9", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_exempt(ip(s)), "{s}");
        }
    }

    #[test]
    fn public_hosts_share_a_24_or_a_64() {
        let same = |a: &str, b: &str| Subnet::of_public(ip(a)) == Subnet::of_public(ip(b));

        assert!(same("203.0.113.1", "203.0.113.254"));
        assert!(!same("203.0.113.1", "203.0.114.1"));
        assert!(same("2001:db8:1:2::1", "2001:db8:1:2:ffff::1"));
        assert!(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
        assert!(same("::ffff:8.8.8.8", "8.8.8.1"));
    }
}
