//! The flood's frames: one template per kind (Ethernet + IPv4 + UDP or TCP + payload), and the
//! few bytes that change from one packet to the next (source address and port, a 10-digit
//! counter in the SIP text, the TCP sequence number, the relay port), rewritten in place.

use std::net::Ipv4Addr;

use relay_common::csum;

use super::Kind;

const ETH: usize = 14;
const IP: usize = 20;
const L4: usize = ETH + IP;
/// The counter's placeholder in the SIP templates: 10 digits, overwritten per packet.
const DIGITS: &str = "0000000000";

/// Where the frames go: the attacker's interface and the box's address on that link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst_ip: Ipv4Addr,
    pub sip_port: u16,
    /// The relay's port range (UDP to it: the `rtp` kind).
    pub media_ports: (u16, u16),
}

/// A frame of one kind and what to rewrite in it.
#[derive(Debug, Clone)]
pub struct Template {
    frame: Vec<u8>,
    /// Offsets of the 10-digit counters in the frame.
    digits: Vec<usize>,
    tcp: bool,
    /// The relay port range when the destination port changes per packet.
    dports: Option<(u16, u16)>,
}

impl Template {
    /// The template of `kind` toward `link`.
    pub fn new(kind: Kind, link: &Link) -> Template {
        Template::build(kind, link, false)
    }

    /// An OPTIONS with a scanner's User-Agent: what gets the `banned` kind's sources banned.
    pub fn scanner(link: &Link) -> Template {
        Template::build(Kind::Options, link, true)
    }

    fn build(kind: Kind, link: &Link, scanner: bool) -> Template {
        let ua = if scanner {
            "friendly-scanner"
        } else {
            "Carrier-PBX/1.0"
        };
        let dst = link.dst_ip;
        // Via and Contact name a fixed host, not the (spoofed, changing) source, so the text
        // keeps its length and only the counter changes.
        let sip = |method: &str, ua: &str| -> Vec<u8> {
            format!(
                "{method} sip:2002@{dst} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP flood.invalid:5060;branch=z9hG4bK{DIGITS}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:1001@flood.invalid>;tag={DIGITS}\r\n\
                 To: <sip:2002@{dst}>\r\n\
                 Call-ID: {DIGITS}@flood.invalid\r\n\
                 CSeq: 1 {method}\r\n\
                 Contact: <sip:1001@flood.invalid:5060>\r\n\
                 User-Agent: {ua}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        let (payload, tcp, dports) = match kind {
            Kind::InviteFew | Kind::InviteMany | Kind::Banned => (sip("INVITE", ua), false, None),
            Kind::Options => (sip("OPTIONS", ua), false, None),
            Kind::Register => (sip("REGISTER", ua), false, None),
            // A request line no parser accepts, then binary junk: what a fuzzer sprays.
            Kind::Malformed => {
                let mut p = format!("INVITE {DIGITS} \x01SIP/9.9\r\nVia: ;;;\r\n").into_bytes();
                p.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
                (p, false, None)
            }
            Kind::Syn => (Vec::new(), true, None),
            Kind::Rtp => {
                let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
                p.extend_from_slice(&[0xd5; 160]);
                (p, false, Some(link.media_ports))
            }
        };
        let l4_len = if tcp { 20 } else { 8 };
        let total = (IP + l4_len + payload.len()) as u16;
        let mut f = Vec::with_capacity(ETH + total as usize);
        f.extend_from_slice(&link.dst_mac);
        f.extend_from_slice(&link.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&link.sip_port.to_be_bytes());
        if tcp {
            // seq, ack, data offset 5 words, SYN, window 64240, checksum, urgent.
            f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
        } else {
            f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            // No UDP checksum (allowed over IPv4): nothing to recompute per packet.
            f.extend_from_slice(&[0, 0]);
        }
        let body = f.len();
        f.extend_from_slice(&payload);
        let mut digits = Vec::new();
        let mut from = body;
        while let Some(i) = find(&f[from..], DIGITS.as_bytes()) {
            digits.push(from + i);
            from += i + DIGITS.len();
        }
        Template {
            frame: f,
            digits,
            tcp,
            dports,
        }
    }

    /// The frame's length.
    pub fn size(&self) -> usize {
        self.frame.len()
    }

    /// Writes packet number `n` from `src` into `buf` (of [`Template::size`] bytes).
    pub fn write(&self, buf: &mut [u8], n: u64, src: Ipv4Addr) {
        buf.copy_from_slice(&self.frame);
        buf[ETH + 4..ETH + 6].copy_from_slice(&(n as u16).to_be_bytes());
        buf[ETH + 12..ETH + 16].copy_from_slice(&src.octets());
        let c = csum::checksum(0, &buf[ETH..L4]);
        buf[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
        let sport = 1024 + (n % 60_000) as u16;
        buf[L4..L4 + 2].copy_from_slice(&sport.to_be_bytes());
        if let Some((lo, hi)) = self.dports {
            let span = u64::from(hi.saturating_sub(lo)) + 1;
            let p = lo + ((n.wrapping_mul(2654435761)) % span) as u16;
            buf[L4 + 2..L4 + 4].copy_from_slice(&p.to_be_bytes());
        }
        let mut d = n % 10_000_000_000;
        let mut text = [b'0'; 10];
        for c in text.iter_mut().rev() {
            *c = b'0' + (d % 10) as u8;
            d /= 10;
        }
        for &at in &self.digits {
            buf[at..at + 10].copy_from_slice(&text);
        }
        if self.tcp {
            buf[L4 + 4..L4 + 8].copy_from_slice(&(n as u32).to_be_bytes());
            buf[L4 + 16..L4 + 18].copy_from_slice(&[0, 0]);
            let len = (buf.len() - L4) as u32;
            let ph = csum::pseudo_header_sum(&buf[ETH + 12..ETH + 16], &buf[ETH + 16..L4], 6, len);
            let c = csum::checksum(ph, &buf[L4..]);
            buf[L4 + 16..L4 + 18].copy_from_slice(&c.to_be_bytes());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn link() -> Link {
        Link {
            ifindex: 1,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: Ipv4Addr::new(10, 200, 1, 2),
            sip_port: 5060,
            media_ports: (30_000, 30_009),
        }
    }

    #[test]
    fn invite_counts_and_checks_out() {
        let t = Template::new(Kind::InviteMany, &link());
        assert_eq!(t.digits.len(), 3);
        let mut b = vec![0; t.size()];
        t.write(&mut b, 42, Ipv4Addr::new(10, 201, 0, 7));
        let text = String::from_utf8_lossy(&b[42..]);
        assert!(
            text.starts_with("INVITE sip:2002@10.200.1.2 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Call-ID: 0000000042@flood.invalid\r\n"),
            "{text}"
        );
        assert_eq!(&b[26..30], &[10, 201, 0, 7]);
        // A header with its checksum sums to 0xffff (checksum 0 of the whole).
        assert_eq!(csum::checksum(0, &b[14..34]), 0);
        assert_eq!(u16::from_be_bytes([b[36], b[37]]), 5060);
    }

    #[test]
    fn syn_checksum_and_rtp_ports() {
        let t = Template::new(Kind::Syn, &link());
        let mut b = vec![0; t.size()];
        t.write(&mut b, 7, Ipv4Addr::new(10, 201, 1, 1));
        assert_eq!(b.len(), 14 + 20 + 20);
        assert_eq!(b[47], 0x02, "SYN");
        let ph = csum::pseudo_header_sum(&b[26..30], &b[30..34], 6, 20);
        assert_eq!(csum::checksum(ph, &b[34..]), 0);
        let t = Template::new(Kind::Rtp, &link());
        let mut b = vec![0; t.size()];
        for n in 0..100 {
            t.write(&mut b, n, Ipv4Addr::new(10, 201, 1, 1));
            let p = u16::from_be_bytes([b[36], b[37]]);
            assert!((30_000..=30_009).contains(&p), "{p}");
        }
    }
}
