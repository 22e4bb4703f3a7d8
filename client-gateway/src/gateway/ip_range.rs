//! An address or a CIDR block (`10.0.0.1`, `10.42.0.0/16`, `fd00::/8`): what
//! `--trusted-proxies` lists, so that a proxy whose pods change address (an ingress
//! controller in a cluster) can be trusted by the network its pods live in.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A block of addresses; an IPv4-mapped IPv6 address counts as its IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

/// `ip`, with an IPv4-mapped IPv6 address turned into its IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `prefix` leading bits of `ip` as an integer, the rest zero.
fn masked(ip: IpAddr, prefix: u8) -> u128 {
    let (bits, width) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let host_bits = u32::from(width - prefix);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits << host_bits
    }
}

impl IpRange {
    /// Whether `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4()
            && masked(ip, self.prefix) == masked(self.net, self.prefix)
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let net = canonical(addr.parse::<IpAddr>().map_err(|_| {
            format!("{s:?} is not an IP address or a CIDR block like 10.42.0.0/16")
        })?);
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {width}"))?,
        };
        if masked(net, prefix) != masked(net, width) {
            return Err(format!(
                "{s:?} has bits set after its /{prefix} prefix (did you mean the network's first address?)"
            ));
        }
        Ok(Self { net, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> IpRange {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        for (block, ip, want) in [
            ("10.42.0.0/16", "10.42.3.7", true),
            ("10.42.0.0/16", "10.43.0.1", false),
            ("10.42.0.0/16", "::ffff:10.42.0.9", true),
            ("10.0.0.1", "10.0.0.1", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("0.0.0.0/0", "203.0.113.5", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
        ] {
            assert_eq!(
                range(block).contains(ip.parse().unwrap()),
                want,
                "{block} contains {ip}"
            );
        }
    }

    #[test]
    fn bad_blocks_are_refused_in_words() {
        for (bad, says) in [
            ("10.42.0.0/33", "prefix length must be 0 to 32"),
            ("10.42.0.0/x", "prefix length"),
            ("10.42.0.1/16", "bits set after its /16 prefix"),
            ("pods", "not an IP address or a CIDR block"),
            ("", "not an IP address"),
        ] {
            let err = bad.parse::<IpRange>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(range("10.42.0.0/16").to_string(), "10.42.0.0/16");
        assert_eq!(range("10.0.0.1").to_string(), "10.0.0.1/32");
    }
}
