//! Frames the XDP benchmarks hand to the program through `BPF_PROG_TEST_RUN`.

use std::net::IpAddr;

/// Source and destination MACs of every frame (the program never checks them).
const MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];

/// Ethernet + IPv4 or IPv6 + UDP from `src`:`sport` to `dst`:`dport` with hop limit `ttl`,
/// valid IPv4 header checksum, no UDP checksum over IPv4 (zero), a fixed non-zero one over
/// IPv6 (the program updates it incrementally; its truth does not change the cost).
pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len() as u16;
    let mut f = MACS.to_vec();
    let udp_check = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0x40, 0, ttl, 17, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = relay_common::csum::checksum(0, &ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            0
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[17, ttl]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            0x1234u16
        }
        _ => panic!("udp frame: {src} and {dst} are of different families"),
    };
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&udp_check.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An RTP packet (version 2, PT 0, sequence 1) with 160 bytes of G.711 audio: 172 bytes.
pub fn rtp() -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    p.extend_from_slice(&[0xd5; 160]);
    p
}
