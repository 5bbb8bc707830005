//! What an SDP may ask the relay to do: where it may send media, and how much one call may
//! hold. Checked on every offer and answer before anything changes, so a refused SDP leaves
//! the call as it was (a re-INVITE keeps its old media) and takes no relay ports.
//!
//! The destinations refused are the ones that turn the relay into a loop or a reflector:
//! itself (its own media addresses, or any of its relay ports), multicast, broadcast, the
//! unspecified address, and loopback when the relay is not on loopback itself (then loopback
//! can only be the relay's own host, never a peer).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

/// How much one call may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// m= sections in one SDP (offer or answer). A call's streams are its m= lines, which a
    /// re-offer may only add to (RFC 3264 §8), so this also bounds the streams of a call.
    pub max_streams: usize,
    /// Relay ports one call may hold (each active stream holds four: an RTP/RTCP pair per
    /// side).
    pub max_call_ports: usize,
}

/// Streams per SDP unless configured: audio, video, a second audio, T.38 and a few more fit;
/// a real call has no use for more, an attacker every use.
pub const DEFAULT_MAX_STREAMS: u16 = 8;

/// Ports one active stream holds: RTP and RTCP on each side.
pub const PORTS_PER_STREAM: usize = 4;

impl Limits {
    /// `max_streams` m= lines, and the ports that many active streams hold.
    pub fn streams(max_streams: usize) -> Limits {
        Limits {
            max_streams,
            max_call_ports: max_streams.saturating_mul(PORTS_PER_STREAM),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::streams(usize::from(DEFAULT_MAX_STREAMS))
    }
}

/// Why a destination named by an SDP is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An IPv4 or IPv6 multicast address.
    #[error("a multicast address")]
    Multicast,
    /// 255.255.255.255.
    #[error("the broadcast address")]
    Broadcast,
    /// 0.0.0.0 or `::`.
    #[error("the unspecified address")]
    Unspecified,
    /// A loopback address while the relay's own addresses are not loopback.
    #[error("loopback, and the relay is not on loopback")]
    Loopback,
    /// One of the relay's own addresses.
    #[error("the relay's own address")]
    OwnAddress,
    /// One of the relay's ports (a relay loop).
    #[error("one of the relay's own ports")]
    OwnPort,
    /// Port 0 is no destination (an m= line with port 0 is disabled and never checked).
    #[error("port 0")]
    PortZero,
}

/// The relay's own sockets as far as SDP is concerned: where it receives media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    /// Addresses the relay receives media on or advertises (unspecified ones are left out:
    /// they name no host).
    own: Vec<IpAddr>,
    /// Other addresses of the relay's host: when its sockets are bound to the unspecified
    /// address they receive on these too, so the relay's ports there are its own. Other
    /// ports there are not refused: a peer may run on the same host.
    host: Vec<IpAddr>,
    /// The relay's port range (RTP and RTCP), if known.
    ports: Option<RangeInclusive<u16>>,
    /// Whether the relay itself is on loopback: then so may its peers be (the default setup,
    /// everything on 127.0.0.1).
    on_loopback: bool,
}

impl Destinations {
    /// The relay at `own` (media and advertised addresses) on `ports`.
    pub fn new(own: &[IpAddr], ports: Option<RangeInclusive<u16>>) -> Destinations {
        let mut addrs: Vec<IpAddr> = own
            .iter()
            .map(|a| a.to_canonical())
            .filter(|a| !a.is_unspecified())
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        Destinations {
            on_loopback: addrs.iter().any(IpAddr::is_loopback),
            own: addrs,
            host: Vec::new(),
            ports,
        }
    }

    /// Adds the host's other addresses (see the field `host`), for a relay whose sockets are
    /// bound to the unspecified address.
    pub fn with_host_addresses(mut self, host: impl IntoIterator<Item = IpAddr>) -> Destinations {
        self.host = host.into_iter().map(|a| a.to_canonical()).collect();
        self.host.sort_unstable();
        self.host.dedup();
        self
    }

    /// Whether the relay may send media to `to`. An IPv4-mapped IPv6 address is judged as the
    /// IPv4 address it is (the kernel would send it there).
    pub fn check(&self, to: SocketAddr) -> Result<(), Refusal> {
        let ip = to.ip().to_canonical();
        if ip.is_unspecified() {
            return Err(Refusal::Unspecified);
        }
        if ip.is_multicast() {
            return Err(Refusal::Multicast);
        }
        if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            return Err(Refusal::Broadcast);
        }
        if to.port() == 0 {
            return Err(Refusal::PortZero);
        }
        let own_port = self.ports.as_ref().is_some_and(|r| r.contains(&to.port()));
        if self.own.contains(&ip) {
            // On loopback the peers share the relay's address, so only its ports are its own.
            if own_port {
                return Err(Refusal::OwnPort);
            }
            if !self.on_loopback {
                return Err(Refusal::OwnAddress);
            }
        }
        if own_port && self.host.contains(&ip) {
            return Err(Refusal::OwnPort);
        }
        if ip.is_loopback() {
            if !self.on_loopback {
                return Err(Refusal::Loopback);
            }
            // 127.0.0.1 and 127.0.0.2 are one host: the relay's ports on any loopback
            // address are its own.
            if own_port {
                return Err(Refusal::OwnPort);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn public() -> Destinations {
        Destinations::new(&["203.0.113.1".parse().unwrap()], Some(30_000..=30_999))
    }

    #[test]
    fn each_refusal_kind() {
        let d = public();
        let cases = [
            ("0.0.0.0:4000", Refusal::Unspecified),
            ("[::]:4000", Refusal::Unspecified),
            ("224.0.0.1:4000", Refusal::Multicast),
            ("[ff02::1]:4000", Refusal::Multicast),
            ("[::ffff:239.1.1.1]:4000", Refusal::Multicast),
            ("255.255.255.255:4000", Refusal::Broadcast),
            ("198.51.100.7:0", Refusal::PortZero),
            ("127.0.0.1:4000", Refusal::Loopback),
            ("[::1]:4000", Refusal::Loopback),
            ("203.0.113.1:30002", Refusal::OwnPort),
            ("[::ffff:203.0.113.1]:30003", Refusal::OwnPort),
            ("203.0.113.1:5060", Refusal::OwnAddress),
        ];
        for (to, want) in cases {
            assert_eq!(d.check(sa(to)), Err(want), "{to}");
        }
        // A peer elsewhere, on any port (another SBC may use the same range).
        assert_eq!(d.check(sa("198.51.100.7:30002")), Ok(()));
        assert_eq!(d.check(sa("[2001:db8::7]:4000")), Ok(()));
    }

    #[test]
    fn loopback_relay_accepts_loopback_peers_but_not_its_ports() {
        let d = Destinations::new(&["127.0.0.1".parse().unwrap()], Some(30_000..=39_999));
        assert_eq!(d.check(sa("127.0.0.1:20000")), Ok(()));
        assert_eq!(d.check(sa("127.0.0.1:5062")), Ok(()));
        assert_eq!(d.check(sa("127.0.0.1:30000")), Err(Refusal::OwnPort));
        assert_eq!(d.check(sa("127.0.0.2:30001")), Err(Refusal::OwnPort));
        assert_eq!(d.check(sa("0.0.0.0:20000")), Err(Refusal::Unspecified));
    }

    #[test]
    fn unspecified_bind_address_is_not_an_own_address() {
        let bind_any: [IpAddr; 2] = ["0.0.0.0".parse().unwrap(), "192.0.2.1".parse().unwrap()];
        let d = Destinations::new(&bind_any, Some(30_000..=30_999))
            .with_host_addresses(["127.0.0.1".parse().unwrap(), "10.1.1.1".parse().unwrap()]);
        assert!(
            !d.on_loopback,
            "host addresses do not put the relay on loopback"
        );
        assert_eq!(d.check(sa("192.0.2.1:30000")), Err(Refusal::OwnPort));
        assert_eq!(d.check(sa("127.0.0.1:4000")), Err(Refusal::Loopback));
        assert_eq!(d.check(sa("192.0.2.2:30000")), Ok(()));
        // The host's other addresses: its relay ports are the relay, other ports a peer's.
        assert_eq!(d.check(sa("10.1.1.1:30002")), Err(Refusal::OwnPort));
        assert_eq!(d.check(sa("10.1.1.1:5080")), Ok(()));
    }

    #[test]
    fn limits() {
        assert_eq!(
            Limits::default(),
            Limits {
                max_streams: 8,
                max_call_ports: 32
            }
        );
        assert_eq!(Limits::streams(usize::MAX).max_call_ports, usize::MAX);
    }
}
