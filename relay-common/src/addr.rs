//! A 16-byte address usable as a map key for both families.

/// IPv6 address, or IPv4 mapped into `::ffff:0:0/96`. Network byte order.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr {
    /// The IPv6 address, or `::ffff:` and the four IPv4 octets, most significant byte first.
    pub bytes: [u8; 16],
}
crate::map_type!(Addr, 16);

impl core::fmt::Debug for Addr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.as_v4() {
            Some(o) => write!(f, "{}.{}.{}.{}", o[0], o[1], o[2], o[3]),
            None => {
                for (i, pair) in self.bytes.chunks_exact(2).enumerate() {
                    if i > 0 {
                        f.write_str(":")?;
                    }
                    write!(f, "{:x}", u16::from_be_bytes([pair[0], pair[1]]))?;
                }
                Ok(())
            }
        }
    }
}

const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

impl Addr {
    /// `::`, all zero: the value of an empty key or field (see also [`Addr::is_unspecified`]).
    pub const UNSPECIFIED: Addr = Addr { bytes: [0; 16] };

    /// The v4-mapped form (`::ffff:a.b.c.d`) of an IPv4 address given as its octets.
    #[inline(always)]
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[10] = 0xff;
        bytes[11] = 0xff;
        bytes[12] = octets[0];
        bytes[13] = octets[1];
        bytes[14] = octets[2];
        bytes[15] = octets[3];
        Addr { bytes }
    }

    /// An IPv6 address as its 16 bytes, kept as they are: a v4-mapped one reads as IPv4
    /// afterwards (the `From<Ipv6Addr>` conversion does the same).
    #[inline(always)]
    pub const fn from_v6(bytes: [u8; 16]) -> Self {
        Addr { bytes }
    }

    /// Whether this is an IPv4 address (in `::ffff:0:0/96`).
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        self.bytes[..12] == V4_MAPPED_PREFIX
    }

    /// The IPv4 octets, or `None` for an IPv6 address.
    #[inline(always)]
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        if self.is_v4() {
            Some([
                self.bytes[12],
                self.bytes[13],
                self.bytes[14],
                self.bytes[15],
            ])
        } else {
            None
        }
    }

    /// Whether this is `::` or `0.0.0.0`: no address at all, in either family.
    pub fn is_unspecified(&self) -> bool {
        self.bytes == [0; 16] || self.as_v4() == Some([0; 4])
    }
}

#[cfg(feature = "user")]
mod user {
    extern crate std;
    use super::Addr;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    impl From<IpAddr> for Addr {
        fn from(ip: IpAddr) -> Self {
            match ip {
                IpAddr::V4(v4) => Addr::from_v4(v4.octets()),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => Addr::from_v4(v4.octets()),
                    None => Addr::from_v6(v6.octets()),
                },
            }
        }
    }
    impl From<Ipv4Addr> for Addr {
        fn from(ip: Ipv4Addr) -> Self {
            Addr::from_v4(ip.octets())
        }
    }
    impl From<Ipv6Addr> for Addr {
        fn from(ip: Ipv6Addr) -> Self {
            IpAddr::V6(ip).into()
        }
    }
    impl From<Addr> for IpAddr {
        fn from(a: Addr) -> Self {
            match a.as_v4() {
                Some(o) => IpAddr::V4(Ipv4Addr::from(o)),
                None => IpAddr::V6(Ipv6Addr::from(a.bytes)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapping_round_trips() {
        let a = Addr::from_v4([192, 0, 2, 1]);
        assert!(a.is_v4());
        assert_eq!(a.as_v4(), Some([192, 0, 2, 1]));
        let mut six = [0u8; 16];
        six[0] = 0x20;
        six[1] = 0x01;
        assert!(!Addr::from_v6(six).is_v4());
    }
}
