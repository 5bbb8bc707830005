//! A HEPv3 decoder written from the specification, independently of sipd's encoder, for the
//! capture scenarios: each packet a collector would receive, parsed into its chunks, with
//! malformed packets refused (never a panic).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One HEPv3 packet's generic chunks (unknown and vendor chunks are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hep {
    /// IP protocol of the captured message: 17 UDP, 6 TCP.
    pub ip_proto: u8,
    /// Who sent the captured message.
    pub src: SocketAddr,
    /// Whom it was for.
    pub dst: SocketAddr,
    /// Capture time: seconds since the Unix epoch.
    pub time_sec: u32,
    /// Capture time: microseconds within the second.
    pub time_usec: u32,
    /// Payload protocol type (1: SIP).
    pub proto_type: u8,
    /// The capture agent id.
    pub capture_id: u32,
    /// The authentication key chunk, if present.
    pub auth_key: Option<Vec<u8>>,
    /// The correlation id chunk (the Call-ID for SIP), if present.
    pub correlation_id: Option<Vec<u8>>,
    /// The captured message.
    pub payload: Vec<u8>,
}

/// Why bytes are not a HEPv3 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HepError {
    /// Fewer than the 6 header bytes.
    Short,
    /// Does not start with `HEP3`.
    Magic,
    /// The header's total length is not the packet's length.
    Length {
        /// What the header says.
        said: usize,
        /// What arrived.
        got: usize,
    },
    /// A chunk's header or value runs past the end, or its length is under 6.
    Chunk {
        /// Offset of the chunk.
        at: usize,
    },
    /// A generic chunk with a value of the wrong size for its type.
    Size {
        /// The chunk type.
        kind: u16,
        /// Its value's size.
        len: usize,
    },
    /// A generic chunk seen twice.
    Duplicate(u16),
    /// A required chunk is missing.
    Missing(&'static str),
    /// The IP family chunk is neither 2 nor 10, or disagrees with the address chunks.
    Family(u8),
}

impl fmt::Display for HepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HepError::Short => write!(f, "shorter than the HEP header"),
            HepError::Magic => write!(f, "not HEP3"),
            HepError::Length { said, got } => write!(f, "header says {said} bytes, got {got}"),
            HepError::Chunk { at } => write!(f, "bad chunk at offset {at}"),
            HepError::Size { kind, len } => write!(f, "chunk {kind:#06x} of {len} bytes"),
            HepError::Duplicate(k) => write!(f, "chunk {k:#06x} twice"),
            HepError::Missing(what) => write!(f, "no {what} chunk"),
            HepError::Family(v) => write!(f, "ip family {v}"),
        }
    }
}

impl std::error::Error for HepError {}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses one packet (one UDP datagram from the agent).
pub fn decode(b: &[u8]) -> Result<Hep, HepError> {
    if b.len() < 6 {
        return Err(HepError::Short);
    }
    if &b[..4] != b"HEP3" {
        return Err(HepError::Magic);
    }
    let said = usize::from(be16(&b[4..6]));
    if said != b.len() {
        return Err(HepError::Length { said, got: b.len() });
    }
    let mut seen = std::collections::BTreeMap::<u16, &[u8]>::new();
    let mut at = 6;
    while at < b.len() {
        if b.len() - at < 6 {
            return Err(HepError::Chunk { at });
        }
        let (vendor, kind, len) = (
            be16(&b[at..]),
            be16(&b[at + 2..]),
            usize::from(be16(&b[at + 4..])),
        );
        if len < 6 || at + len > b.len() {
            return Err(HepError::Chunk { at });
        }
        let value = &b[at + 6..at + len];
        if vendor == 0 && seen.insert(kind, value).is_some() {
            return Err(HepError::Duplicate(kind));
        }
        at += len;
    }
    let get = |kind: u16, name: &'static str, size: Option<usize>| -> Result<&[u8], HepError> {
        let v = *seen.get(&kind).ok_or(HepError::Missing(name))?;
        match size {
            Some(n) if v.len() != n => Err(HepError::Size { kind, len: v.len() }),
            _ => Ok(v),
        }
    };
    let family = get(0x0001, "ip family", Some(1))?[0];
    let (src_ip, dst_ip) = match family {
        2 => {
            let ip = |k, n| -> Result<IpAddr, HepError> {
                let v: [u8; 4] = get(k, n, Some(4))?.try_into().expect("4 bytes");
                Ok(IpAddr::V4(Ipv4Addr::from(v)))
            };
            (ip(0x0003, "IPv4 source")?, ip(0x0004, "IPv4 destination")?)
        }
        10 => {
            let ip = |k, n| -> Result<IpAddr, HepError> {
                let v: [u8; 16] = get(k, n, Some(16))?.try_into().expect("16 bytes");
                Ok(IpAddr::V6(Ipv6Addr::from(v)))
            };
            (ip(0x0005, "IPv6 source")?, ip(0x0006, "IPv6 destination")?)
        }
        other => return Err(HepError::Family(other)),
    };
    let other_family = if family == 2 {
        [0x0005, 0x0006]
    } else {
        [0x0003, 0x0004]
    };
    if other_family.iter().any(|k| seen.contains_key(k)) {
        return Err(HepError::Family(family));
    }
    Ok(Hep {
        ip_proto: get(0x0002, "ip protocol", Some(1))?[0],
        src: SocketAddr::new(src_ip, be16(get(0x0007, "source port", Some(2))?)),
        dst: SocketAddr::new(dst_ip, be16(get(0x0008, "destination port", Some(2))?)),
        time_sec: be32(get(0x0009, "seconds", Some(4))?),
        time_usec: be32(get(0x000a, "microseconds", Some(4))?),
        proto_type: get(0x000b, "protocol type", Some(1))?[0],
        capture_id: be32(get(0x000c, "capture id", Some(4))?),
        auth_key: seen.get(&0x000e).map(|v| v.to_vec()),
        correlation_id: seen.get(&0x0011).map(|v| v.to_vec()),
        payload: get(0x000f, "payload", None)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(vendor: u16, kind: u16, v: &[u8]) -> Vec<u8> {
        let mut c = vendor.to_be_bytes().to_vec();
        c.extend_from_slice(&kind.to_be_bytes());
        c.extend_from_slice(&(6 + v.len() as u16).to_be_bytes());
        c.extend_from_slice(v);
        c
    }

    fn packet(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body = chunks.concat();
        let mut p = b"HEP3".to_vec();
        p.extend_from_slice(&(6 + body.len() as u16).to_be_bytes());
        p.extend_from_slice(&body);
        p
    }

    fn v4_chunks() -> Vec<Vec<u8>> {
        vec![
            chunk(0, 1, &[2]),
            chunk(0, 2, &[17]),
            chunk(0, 3, &[10, 0, 0, 1]),
            chunk(0, 4, &[10, 0, 0, 2]),
            chunk(0, 7, &5060u16.to_be_bytes()),
            chunk(0, 8, &5080u16.to_be_bytes()),
            chunk(0, 9, &7u32.to_be_bytes()),
            chunk(0, 10, &8u32.to_be_bytes()),
            chunk(0, 11, &[1]),
            chunk(0, 12, &2001u32.to_be_bytes()),
            chunk(0x1234, 99, b"vendor chunk, skipped"),
            chunk(0, 15, b"INVITE"),
            chunk(0, 17, b"cid"),
        ]
    }

    #[test]
    fn decodes_every_generic_chunk() {
        let h = decode(&packet(&v4_chunks())).unwrap();
        assert_eq!(h.ip_proto, 17);
        assert_eq!(h.src, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(h.dst, "10.0.0.2:5080".parse().unwrap());
        assert_eq!(
            (h.time_sec, h.time_usec, h.proto_type, h.capture_id),
            (7, 8, 1, 2001)
        );
        assert_eq!(h.auth_key, None);
        assert_eq!(h.correlation_id.as_deref(), Some(&b"cid"[..]));
        assert_eq!(h.payload, b"INVITE");
    }

    #[test]
    fn refuses_malformed_packets() {
        let good = packet(&v4_chunks());
        assert_eq!(decode(&good[..5]), Err(HepError::Short));
        let mut magic = good.clone();
        magic[3] = b'2';
        assert_eq!(decode(&magic), Err(HepError::Magic));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(HepError::Length { .. })
        ));
        // A chunk claiming more than is there (total length fixed up to match).
        let mut chunks = v4_chunks();
        chunks.last_mut().unwrap()[5] = 200;
        assert!(matches!(
            decode(&packet(&chunks)),
            Err(HepError::Chunk { .. })
        ));
        let mut chunks = v4_chunks();
        chunks.last_mut().unwrap()[5] = 3;
        assert!(matches!(
            decode(&packet(&chunks)),
            Err(HepError::Chunk { .. })
        ));
        let mut chunks = v4_chunks();
        chunks.retain(|c| c[3] != 15);
        assert_eq!(decode(&packet(&chunks)), Err(HepError::Missing("payload")));
        let mut chunks = v4_chunks();
        chunks[2] = chunk(0, 3, &[10, 0, 0]);
        assert_eq!(
            decode(&packet(&chunks)),
            Err(HepError::Size { kind: 3, len: 3 })
        );
        let mut chunks = v4_chunks();
        chunks.push(chunk(0, 15, b"again"));
        assert_eq!(decode(&packet(&chunks)), Err(HepError::Duplicate(15)));
        let mut chunks = v4_chunks();
        chunks[0] = chunk(0, 1, &[10]);
        assert_eq!(
            decode(&packet(&chunks)),
            Err(HepError::Missing("IPv6 source"))
        );
        let mut chunks = v4_chunks();
        chunks[0] = chunk(0, 1, &[7]);
        assert_eq!(decode(&packet(&chunks)), Err(HepError::Family(7)));
    }
}
