//! The HEPv3 (EEP) wire format, encoding only: pure, no I/O, no clock.
//!
//! A packet is `"HEP3"`, its total length (u16, network order, header included), then chunks:
//! vendor id (u16, 0 = generic), type id (u16), length (u16, the 6-byte chunk header
//! included), value. The chunk types are HEP's generic ones, as Kamailio's `siptrace` and
//! rtpengine's `--homer` send them; collectors (Homer's heplify-server, sngrep) ignore the
//! order, we keep theirs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Generic chunk type ids (vendor 0x0000).
pub mod chunk {
    /// IP family: u8, 2 (AF_INET) or 10 (AF_INET6).
    pub const IP_FAMILY: u16 = 0x0001;
    /// IP protocol: u8, 17 (UDP) or 6 (TCP).
    pub const IP_PROTO: u16 = 0x0002;
    /// IPv4 source address: 4 bytes.
    pub const IPV4_SRC: u16 = 0x0003;
    /// IPv4 destination address: 4 bytes.
    pub const IPV4_DST: u16 = 0x0004;
    /// IPv6 source address: 16 bytes.
    pub const IPV6_SRC: u16 = 0x0005;
    /// IPv6 destination address: 16 bytes.
    pub const IPV6_DST: u16 = 0x0006;
    /// Source port: u16.
    pub const SRC_PORT: u16 = 0x0007;
    /// Destination port: u16.
    pub const DST_PORT: u16 = 0x0008;
    /// Timestamp, seconds since the Unix epoch: u32.
    pub const TIME_SEC: u16 = 0x0009;
    /// Timestamp, microseconds within the second: u32.
    pub const TIME_USEC: u16 = 0x000a;
    /// Protocol type of the payload: u8 ([`super::PROTO_TYPE_SIP`]).
    pub const PROTO_TYPE: u16 = 0x000b;
    /// Capture agent id: u32.
    pub const CAPTURE_ID: u16 = 0x000c;
    /// Authentication key (the collector's password): bytes.
    pub const AUTH_KEY: u16 = 0x000e;
    /// The captured message: bytes.
    pub const PAYLOAD: u16 = 0x000f;
    /// Correlation id (for SIP, the Call-ID): bytes.
    pub const CORRELATION_ID: u16 = 0x0011;
}

/// Protocol type 1: the payload is a SIP message.
pub const PROTO_TYPE_SIP: u8 = 1;
/// The packet header: `"HEP3"` and the total length.
const HEADER: usize = 6;
/// Every chunk's header: vendor, type, length.
const CHUNK_HEADER: usize = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The transport the captured message travelled over, as HEP's IP protocol chunk says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// IP protocol 17.
    Udp,
    /// IP protocol 6 (TLS is captured as TCP, as Kamailio's `siptrace` does).
    Tcp,
}

impl Transport {
    /// The IP protocol number.
    pub fn ip_proto(self) -> u8 {
        match self {
            Transport::Udp => 17,
            Transport::Tcp => 6,
        }
    }
}

/// One captured message and what the collector is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// UDP or TCP.
    pub transport: Transport,
    /// Who sent the message. Families may differ from `dst` only through a wildcard local
    /// address; then the IPv4 one is sent as an IPv4-mapped IPv6 address.
    pub src: SocketAddr,
    /// Whom the message was for.
    pub dst: SocketAddr,
    /// When it was received or sent, since the Unix epoch.
    pub time: Duration,
    /// The capture agent id (`[capture] capture_id`).
    pub capture_id: u32,
    /// The collector's password (`[capture] password`), if any.
    pub auth_key: Option<&'a [u8]>,
    /// The Call-ID, if the message has one.
    pub correlation_id: Option<&'a [u8]>,
    /// The message, byte for byte.
    pub payload: &'a [u8],
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// HEP lengths are u16: the message and the other chunks do not fit in 65535 bytes.
    #[error("HEP packet of {0} bytes is over HEPv3's 65535")]
    TooLarge(usize),
}

/// The source and destination as HEP's address chunks carry them: both of one family.
fn same_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        pair => pair,
    }
}

fn put_chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    // Lengths were checked against u16 before anything was written.
    let len = (CHUNK_HEADER + value.len()) as u16;
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// Appends `p` as one HEPv3 packet to `out` (cleared first); on error `out` is left empty.
pub fn encode(p: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.clear();
    let (src, dst) = same_family(p.src.ip(), p.dst.ip());
    let addr_len = if src.is_ipv4() { 4 } else { 16 };
    let optional = |v: Option<&[u8]>| v.map_or(0, |v| CHUNK_HEADER + v.len());
    // family, proto, type (u8); ports (u16); secs, usecs, capture id (u32); two addresses.
    let total = HEADER
        + 3 * (CHUNK_HEADER + 1)
        + 2 * (CHUNK_HEADER + 2)
        + 3 * (CHUNK_HEADER + 4)
        + 2 * (CHUNK_HEADER + addr_len)
        + optional(p.auth_key)
        + optional(p.correlation_id)
        + CHUNK_HEADER
        + p.payload.len();
    let Ok(total16) = u16::try_from(total) else {
        return Err(EncodeError::TooLarge(total));
    };
    out.reserve(total);
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&total16.to_be_bytes());
    let family = if src.is_ipv4() { AF_INET } else { AF_INET6 };
    put_chunk(out, chunk::IP_FAMILY, &[family]);
    put_chunk(out, chunk::IP_PROTO, &[p.transport.ip_proto()]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put_chunk(out, chunk::IPV4_SRC, &s.octets());
            put_chunk(out, chunk::IPV4_DST, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            put_chunk(out, chunk::IPV6_SRC, &s.octets());
            put_chunk(out, chunk::IPV6_DST, &d.octets());
        }
        _ => unreachable!("same_family returns one family"),
    }
    put_chunk(out, chunk::SRC_PORT, &p.src.port().to_be_bytes());
    put_chunk(out, chunk::DST_PORT, &p.dst.port().to_be_bytes());
    // u32 seconds: good until 2106, as every HEP agent's.
    let secs = u32::try_from(p.time.as_secs()).unwrap_or(u32::MAX);
    put_chunk(out, chunk::TIME_SEC, &secs.to_be_bytes());
    put_chunk(out, chunk::TIME_USEC, &p.time.subsec_micros().to_be_bytes());
    put_chunk(out, chunk::PROTO_TYPE, &[PROTO_TYPE_SIP]);
    put_chunk(out, chunk::CAPTURE_ID, &p.capture_id.to_be_bytes());
    if let Some(key) = p.auth_key {
        put_chunk(out, chunk::AUTH_KEY, key);
    }
    put_chunk(out, chunk::PAYLOAD, p.payload);
    if let Some(cid) = p.correlation_id {
        put_chunk(out, chunk::CORRELATION_ID, cid);
    }
    debug_assert_eq!(out.len(), total);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Packet<'a> {
        Packet {
            transport: Transport::Udp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            time: Duration::new(0x6574_2A10, 123_456_789),
            capture_id: 2001,
            auth_key: None,
            correlation_id: None,
            payload,
        }
    }

    /// A chunk as written by hand: vendor 0, type, length with the header, value.
    fn c(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, kind, 0, 6 + value.len() as u8];
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn ipv4_udp_with_key_and_call_id_matches_hand_built_bytes() {
        let mut p = packet("192.0.2.1:5060", "198.51.100.7:5080", b"OPTIONS");
        p.auth_key = Some(b"pw");
        p.correlation_id = Some(b"abc@h");
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        let body: Vec<u8> = [
            c(0x01, &[2]),
            c(0x02, &[17]),
            c(0x03, &[192, 0, 2, 1]),
            c(0x04, &[198, 51, 100, 7]),
            c(0x07, &[0x13, 0xc4]),
            c(0x08, &[0x13, 0xd8]),
            c(0x09, &[0x65, 0x74, 0x2a, 0x10]),
            c(0x0a, &[0x00, 0x01, 0xe2, 0x40]),
            c(0x0b, &[1]),
            c(0x0c, &[0, 0, 0x07, 0xd1]),
            c(0x0e, b"pw"),
            c(0x0f, b"OPTIONS"),
            c(0x11, b"abc@h"),
        ]
        .concat();
        let mut want = b"HEP3".to_vec();
        want.extend_from_slice(&((6 + body.len()) as u16).to_be_bytes());
        want.extend_from_slice(&body);
        assert_eq!(out, want);
    }

    #[test]
    fn ipv6_tcp_without_optional_chunks() {
        let mut p = packet("[2001:db8::1]:5060", "[2001:db8::2]:40000", b"BYE");
        p.transport = Transport::Tcp;
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        let body: Vec<u8> = [
            c(0x01, &[10]),
            c(0x02, &[6]),
            c(0x05, &src),
            c(0x06, &dst),
            c(0x07, &5060u16.to_be_bytes()),
            c(0x08, &40000u16.to_be_bytes()),
            c(0x09, &[0x65, 0x74, 0x2a, 0x10]),
            c(0x0a, &123_456u32.to_be_bytes()),
            c(0x0b, &[1]),
            c(0x0c, &2001u32.to_be_bytes()),
            c(0x0f, b"BYE"),
        ]
        .concat();
        assert_eq!(&out[..4], b"HEP3");
        assert_eq!(u16::from_be_bytes([out[4], out[5]]) as usize, out.len());
        assert_eq!(&out[6..], &body[..]);
    }

    #[test]
    fn mixed_families_become_mapped_ipv6() {
        let p = packet("0.0.0.0:5060", "[2001:db8::2]:5060", b"x");
        let mut out = Vec::new();
        encode(&p, &mut out).unwrap();
        assert_eq!(&out[6..13], &c(0x01, &[10])[..]);
        let mapped = std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets();
        assert_eq!(&out[20..42], &c(0x05, &mapped)[..]);
    }

    #[test]
    fn too_large_is_an_error_and_leaves_nothing() {
        let big = vec![b'a'; 65_535];
        let mut out = b"stale".to_vec();
        let e = encode(&packet("192.0.2.1:1", "192.0.2.2:2", &big), &mut out).unwrap_err();
        assert!(matches!(e, EncodeError::TooLarge(n) if n > 65_535));
        assert!(out.is_empty());
    }
}
