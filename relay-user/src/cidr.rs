//! An address prefix (`192.0.2.0/24`, `2001:db8::/32`, or a bare address as a host route).
//! Our own small type rather than a dependency: we need parse, display, containment and the
//! LPM key bytes, nothing else.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// Why a prefix was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// The address part is no IPv4 or IPv6 address (the input is given).
    #[error("invalid address in {0:?}")]
    Address(String),
    /// The part after `/` is not a number (the input is given).
    #[error("invalid prefix length in {0:?}")]
    PrefixSyntax(String),
    /// The prefix length is over the family's 32 or 128.
    #[error("prefix length {len} too long for {family} (max {max})")]
    PrefixTooLong {
        /// The length given.
        len: u8,
        /// The family's longest.
        max: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
}

/// A network prefix with its host bits cleared. IPv4-mapped IPv6 prefixes are stored as IPv4 so
/// that one rule matches both spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The prefix of `addr`/`len`, host bits cleared; a v4-mapped IPv6 prefix of /96 or longer
    /// becomes the IPv4 one. Fails when `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let (addr, len) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => (IpAddr::V4(v4), len - 96),
                _ => (addr, len),
            },
            IpAddr::V4(_) => (addr, len),
        };
        let max = max_len(&addr);
        if len > max {
            return Err(CidrError::PrefixTooLong {
                len,
                max,
                family: family(&addr),
            });
        }
        Ok(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// The single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let addr = normalize(addr);
        Cidr {
            len: max_len(&addr),
            addr,
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether it is an IPv4 prefix (v4-mapped input included).
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` (v4-mapped addresses as IPv4) is inside it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

/// `::ffff:a.b.c.d` is the IPv4 host `a.b.c.d`: the kernel keys v4 that way too.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn family(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl From<ipnet::IpNet> for Cidr {
    fn from(n: ipnet::IpNet) -> Cidr {
        // An IpNet's prefix never exceeds its family's width, the one thing `new` refuses.
        Cidr::new(n.addr(), n.prefix_len()).unwrap_or_else(|_| Cidr::host(n.addr()))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| CidrError::Address(s.to_owned()))?;
        match l {
            None => Ok(Cidr::host(addr)),
            Some(l) => {
                let len: u8 = l
                    .parse()
                    .map_err(|_| CidrError::PrefixSyntax(s.to_owned()))?;
                Cidr::new(addr, len)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let h: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(h.prefix_len(), 32);
        let six: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(six.to_string(), "2001:db8::/32");
        assert!(six.contains("2001:db8:ffff::9".parse().unwrap()));
        assert!(!six.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
    }

    #[test]
    fn v4_mapped_is_v4() {
        let c: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(Cidr::host("::ffff:1.2.3.4".parse().unwrap()).is_v4());
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "1.2.3.4/-1",
            "a/b",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn from_ipnet_is_the_parsed_prefix() {
        for text in [
            "10.1.2.3/8",
            "0.0.0.0/0",
            "2001:db8::1/48",
            "::ffff:192.0.2.1/120",
            "::/0",
        ] {
            let net: ipnet::IpNet = text.parse().unwrap();
            assert_eq!(Cidr::from(net), text.parse::<Cidr>().unwrap(), "{text}");
        }
    }
}
