//! Just enough SDP (RFC 4566) to anchor media on the relay.
//!
//! [`Sdp::parse`] validates the structure we depend on and records where the rewritable fields
//! are; [`Sdp::rewrite`] replaces exactly those fields (connection addresses, media ports,
//! `a=rtcp:`, optionally the origin address and ICE attributes) and copies every other byte
//! through unchanged, line endings included, so codecs, fmtp, crypto etc. reach the far end as
//! the near end wrote them.

use std::net::IpAddr;
use std::ops::Range;

/// Why an SDP body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// No bytes at all.
    #[error("SDP is empty")]
    Empty,
    /// The first line is not `v=0`.
    #[error("SDP must start with v=0")]
    NoVersion,
    /// A line that is not `<letter>=<value>`.
    #[error("line {line}: not of the form <letter>=<value>")]
    BadLine {
        /// The line's number, from 1.
        line: usize,
    },
    /// A bare CR or a NUL inside a line (parsers downstream would split it differently).
    #[error("line {line}: bare CR or NUL inside a line")]
    BadChar {
        /// The line's number, from 1.
        line: usize,
    },
    /// An `o=` line that is not six fields with network type `IN`.
    #[error("line {line}: malformed o= line")]
    BadOrigin {
        /// The line's number, from 1.
        line: usize,
    },
    /// A `c=` line that is not `IN IP4|IP6 <address>`.
    #[error("line {line}: malformed c= line")]
    BadConnection {
        /// The line's number, from 1.
        line: usize,
    },
    /// A `c=` address that is not an address of the family it names.
    #[error("line {line}: c= address {addr:?} is not an IP address of its family")]
    BadAddress {
        /// The line's number, from 1.
        line: usize,
        /// The address as written.
        addr: String,
    },
    /// An `m=` line without media, port, protocol and formats.
    #[error("line {line}: malformed m= line")]
    BadMedia {
        /// The line's number, from 1.
        line: usize,
    },
    /// An `a=rtcp:` attribute whose port (or address) does not parse.
    #[error("line {line}: malformed a=rtcp attribute")]
    BadRtcp {
        /// The line's number, from 1.
        line: usize,
    },
    /// A media section with no `c=` of its own and none at session level.
    #[error("media {index} has no connection address (no c= in the media or the session)")]
    NoConnection {
        /// The m= section's index, from 0.
        index: usize,
    },
    /// A rewrite was given ports for another number of m= sections than the SDP has.
    #[error("SDP has {found} media sections, rewrite gave ports for {given}")]
    MediaCount {
        /// m= sections in the SDP.
        found: usize,
        /// Port sets given.
        given: usize,
    },
}

/// One `m=` section as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub kind: String,
    /// The m= port; 0 means the stream is disabled (RFC 3264).
    pub port: u16,
    /// `RTP/AVP`, ...
    pub proto: String,
    /// Effective connection address: the media's own c=, else the session's.
    pub addr: IpAddr,
    /// RTCP port from `a=rtcp:` (RFC 3605), else `port + 1`.
    pub rtcp_port: u16,
    /// Address from `a=rtcp:` if it names one, else `addr`.
    pub rtcp_addr: IpAddr,
}

impl Media {
    /// Whether the stream is active (port ≠ 0).
    pub fn enabled(&self) -> bool {
        self.port != 0
    }
}

/// Where a field to be replaced sits in the body.
#[derive(Debug, Clone)]
enum Field {
    /// The address token of a c= line.
    ConnAddr(Range<usize>),
    /// The address type and address of an o= line (`IP4 1.2.3.4`).
    Origin(Range<usize>),
    /// The port token of m= line `media`.
    MediaPort { media: usize, span: Range<usize> },
    /// The value of `a=rtcp:` for `media` (port, and nettype/addrtype/addr if present).
    Rtcp { media: usize, span: Range<usize> },
    /// A whole ICE attribute line including its line ending.
    IceLine(Range<usize>),
}

/// How to rewrite a parsed body.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The relay address the receiver of this SDP must send to.
    pub addr: IpAddr,
    /// The relay RTP port for each m= section, in order; RTCP is this + 1. Ignored for
    /// disabled (port 0) sections, which stay 0.
    pub ports: Vec<u16>,
    /// Also replace the o= line's address (`replace: ["origin"]`).
    pub origin: bool,
    /// Drop ICE attributes (`ICE: "remove"`): the relay does not do ICE, and candidates would
    /// let the endpoints bypass it.
    pub remove_ice: bool,
}

/// A parsed SDP body, borrowing the original text.
#[derive(Debug, Clone)]
pub struct Sdp<'a> {
    text: &'a str,
    fields: Vec<Field>,
    /// The m= sections, in order.
    pub media: Vec<Media>,
}

const ICE_ATTRS: &[&str] = &[
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "remote-candidates",
    "end-of-candidates",
];

/// One `m=` section while parsing: its own c= and a=rtcp (port, address) if any.
struct RawMedia {
    kind: String,
    port: u16,
    proto: String,
    conn: Option<IpAddr>,
    rtcp: Option<(u16, Option<IpAddr>)>,
}

/// What [`Sdp::parse`] has collected so far, line by line.
#[derive(Default)]
struct Parser {
    fields: Vec<Field>,
    session_conn: Option<IpAddr>,
    raw: Vec<RawMedia>,
}

impl Parser {
    fn origin(&mut self, value: &str, vstart: usize, lineno: usize) -> Result<(), SdpError> {
        let toks = tokens(value, vstart);
        if toks.len() != 6 || toks[3].0 != "IN" {
            return Err(SdpError::BadOrigin { line: lineno });
        }
        // Origin address may be a FQDN (RFC 4566); we only replace it.
        self.fields
            .push(Field::Origin(toks[4].1.start..toks[5].1.end));
        Ok(())
    }

    fn connection(&mut self, value: &str, vstart: usize, lineno: usize) -> Result<(), SdpError> {
        let toks = tokens(value, vstart);
        if toks.len() != 3 || toks[0].0 != "IN" {
            return Err(SdpError::BadConnection { line: lineno });
        }
        let (addr_tok, span) = &toks[2];
        // Multicast TTL / count suffix: address is before the first '/'.
        let addr_str = addr_tok.split('/').next().unwrap_or(addr_tok);
        let bad = || SdpError::BadAddress {
            line: lineno,
            addr: addr_str.to_string(),
        };
        let addr: IpAddr = addr_str.parse().map_err(|_| bad())?;
        match (toks[1].0, addr) {
            ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => {}
            ("IP4" | "IP6", _) => return Err(bad()),
            _ => return Err(SdpError::BadConnection { line: lineno }),
        }
        // Replace the whole "IP4 addr" so the family can change (v4 <-> v6).
        self.fields.push(Field::ConnAddr(toks[1].1.start..span.end));
        match self.raw.last_mut() {
            Some(m) => {
                if m.conn.is_some() {
                    return Err(SdpError::BadConnection { line: lineno });
                }
                m.conn = Some(addr)
            }
            None if self.session_conn.is_some() => {
                return Err(SdpError::BadConnection { line: lineno });
            }
            None => self.session_conn = Some(addr),
        }
        Ok(())
    }

    fn media(&mut self, value: &str, vstart: usize, lineno: usize) -> Result<(), SdpError> {
        let toks = tokens(value, vstart);
        if toks.len() < 4 {
            return Err(SdpError::BadMedia { line: lineno });
        }
        let (port_tok, port_span) = &toks[1];
        // "<port>/<count>": keep the count, replace the port.
        let port_str = port_tok.split('/').next().unwrap_or(port_tok);
        let port = parse_port(port_str).ok_or(SdpError::BadMedia { line: lineno })?;
        self.fields.push(Field::MediaPort {
            media: self.raw.len(),
            span: port_span.start..port_span.start + port_str.len(),
        });
        self.raw.push(RawMedia {
            kind: toks[0].0.to_string(),
            port,
            proto: toks[2].0.to_string(),
            conn: None,
            rtcp: None,
        });
        Ok(())
    }

    /// An a= line; `line` is its span, line end included.
    fn attribute(
        &mut self,
        value: &str,
        vstart: usize,
        lineno: usize,
        line: Range<usize>,
    ) -> Result<(), SdpError> {
        let name = value.split(':').next().unwrap_or(value);
        // Every ice-* attribute (RFC 8839 and the drafts before it), not only the known ones:
        // an unknown one is no less ICE.
        if ICE_ATTRS.contains(&name)
            || name
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("ice-"))
        {
            self.fields.push(Field::IceLine(line));
            return Ok(());
        }
        if name != "rtcp" || value.len() <= 5 {
            return Ok(());
        }
        let Some(media) = self.raw.len().checked_sub(1) else {
            // Session-level a=rtcp is meaningless; leave it alone.
            return Ok(());
        };
        let v = &value[5..];
        let toks = tokens(v, vstart + 5);
        let port = toks
            .first()
            .and_then(|t| parse_port(t.0))
            .ok_or(SdpError::BadRtcp { line: lineno })?;
        let addr = match toks.len() {
            1 => None,
            4 if toks[1].0 == "IN" => Some(
                toks[3]
                    .0
                    .parse::<IpAddr>()
                    .map_err(|_| SdpError::BadRtcp { line: lineno })?,
            ),
            _ => return Err(SdpError::BadRtcp { line: lineno }),
        };
        if self.raw[media].rtcp.replace((port, addr)).is_some() {
            return Err(SdpError::BadRtcp { line: lineno });
        }
        self.fields.push(Field::Rtcp {
            media,
            span: toks[0].1.start..toks.last().map_or(0, |t| t.1.end),
        });
        Ok(())
    }

    /// Each m= section with its address (own c=, else the session's) and RTCP.
    fn finish(self) -> Result<(Vec<Field>, Vec<Media>), SdpError> {
        let session_conn = self.session_conn;
        let media = self
            .raw
            .into_iter()
            .enumerate()
            .map(|(index, m)| {
                let addr = m
                    .conn
                    .or(session_conn)
                    .ok_or(SdpError::NoConnection { index })?;
                let (rtcp_port, rtcp_addr) = match m.rtcp {
                    Some((p, a)) => (p, a.unwrap_or(addr)),
                    None => (m.port.wrapping_add(1), addr),
                };
                Ok(Media {
                    kind: m.kind,
                    port: m.port,
                    proto: m.proto,
                    addr,
                    rtcp_port,
                    rtcp_addr,
                })
            })
            .collect::<Result<Vec<_>, SdpError>>()?;
        Ok((self.fields, media))
    }
}

impl<'a> Sdp<'a> {
    /// Parses and checks `text`, recording where the rewritable fields are; fails on the first
    /// structural problem.
    pub fn parse(text: &'a str) -> Result<Sdp<'a>, SdpError> {
        if text.is_empty() {
            return Err(SdpError::Empty);
        }
        let mut p = Parser::default();
        let mut offset = 0;
        for (i, full) in text.split_inclusive('\n').enumerate() {
            let lineno = i + 1;
            let start = offset;
            offset += full.len();
            let line = full
                .strip_suffix("\r\n")
                .or_else(|| full.strip_suffix('\n'))
                .unwrap_or(full);
            if line.contains(['\r', '\0']) {
                return Err(SdpError::BadChar { line: lineno });
            }
            let b = line.as_bytes();
            if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
                // A trailing empty line after the last CRLF is not a line at all; split_inclusive
                // does not produce it, so anything here is malformed.
                return Err(SdpError::BadLine { line: lineno });
            }
            if i == 0 && line != "v=0" {
                return Err(SdpError::NoVersion);
            }
            let value = &line[2..];
            let vstart = start + 2;
            match b[0] {
                b'o' => p.origin(value, vstart, lineno)?,
                b'c' => p.connection(value, vstart, lineno)?,
                b'm' => p.media(value, vstart, lineno)?,
                b'a' => p.attribute(value, vstart, lineno, start..start + full.len())?,
                _ => {}
            }
        }
        let (fields, media) = p.finish()?;
        Ok(Sdp {
            text,
            fields,
            media,
        })
    }

    /// The body with the relay's address and ports in place of the peer's.
    pub fn rewrite(&self, rw: &Rewrite) -> Result<String, SdpError> {
        if rw.ports.len() != self.media.len() {
            return Err(SdpError::MediaCount {
                found: self.media.len(),
                given: rw.ports.len(),
            });
        }
        let fam_addr = match rw.addr {
            IpAddr::V4(a) => format!("IP4 {a}"),
            IpAddr::V6(a) => format!("IP6 {a}"),
        };
        let mut out = String::with_capacity(self.text.len() + 64);
        let mut pos = 0;
        for f in &self.fields {
            let (span, with) = match f {
                Field::ConnAddr(s) => (s.clone(), Some(fam_addr.clone())),
                Field::Origin(s) if rw.origin => (s.clone(), Some(fam_addr.clone())),
                Field::Origin(_) => continue,
                Field::MediaPort { media, span } => {
                    if !self.media[*media].enabled() {
                        continue;
                    }
                    (span.clone(), Some(rw.ports[*media].to_string()))
                }
                Field::Rtcp { media, span } => {
                    if !self.media[*media].enabled() {
                        continue;
                    }
                    let port = rw.ports[*media].wrapping_add(1);
                    (span.clone(), Some(format!("{port} IN {fam_addr}")))
                }
                Field::IceLine(s) if rw.remove_ice => (s.clone(), None),
                Field::IceLine(_) => continue,
            };
            out.push_str(&self.text[pos..span.start]);
            if let Some(w) = with {
                out.push_str(&w);
            }
            pos = span.end;
        }
        out.push_str(&self.text[pos..]);
        Ok(out)
    }
}

/// Space-separated tokens with their absolute byte spans. SDP fields are separated by exactly
/// one space (RFC 4566), but tolerating runs costs nothing.
fn tokens(s: &str, base: usize) -> Vec<(&str, Range<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    for tok in s.split(' ') {
        if !tok.is_empty() {
            out.push((tok, base + i..base + i + tok.len()));
        }
        i += tok.len() + 1;
    }
    out
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp:49171 IN IP4 192.0.2.10\r\n\
a=candidate:1 1 udp 2122260223 192.0.2.10 49170 typ host\r\n\
a=ice-ufrag:abcd\r\n\
a=sendrecv\r\n\
m=video 0 RTP/AVP 96\r\n\
m=video 51372 RTP/AVP 97\r\n\
c=IN IP6 2001:db8::5\r\n\
a=rtpmap:97 H264/90000\r\n";

    #[test]
    fn parses_media() {
        let sdp = Sdp::parse(OFFER).unwrap();
        assert_eq!(sdp.media.len(), 3);
        let a = &sdp.media[0];
        assert_eq!(
            (a.kind.as_str(), a.port, a.proto.as_str()),
            ("audio", 49170, "RTP/AVP")
        );
        assert_eq!(a.addr, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(a.rtcp_port, 49171);
        assert!(!sdp.media[1].enabled());
        let v = &sdp.media[2];
        assert_eq!(v.addr, "2001:db8::5".parse::<IpAddr>().unwrap());
        assert_eq!((v.port, v.rtcp_port), (51372, 51373));
    }

    #[test]
    fn rewrites_only_what_it_must() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let out = sdp
            .rewrite(&Rewrite {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                ports: vec![30000, 0, 30010],
                origin: false,
                remove_ice: false,
            })
            .unwrap();
        let want = OFFER
            .replace("c=IN IP4 192.0.2.10", "c=IN IP4 10.0.0.1")
            .replace("m=audio 49170", "m=audio 30000")
            .replace(
                "a=rtcp:49171 IN IP4 192.0.2.10",
                "a=rtcp:30001 IN IP4 10.0.0.1",
            )
            .replace("m=video 51372", "m=video 30010")
            .replace("c=IN IP6 2001:db8::5", "c=IN IP4 10.0.0.1");
        assert_eq!(out, want);
        // The rewritten body parses and points at the relay.
        let again = Sdp::parse(&out).unwrap();
        assert_eq!(again.media[0].port, 30000);
        assert_eq!(again.media[2].addr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn origin_ice_and_ipv6() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let out = sdp
            .rewrite(&Rewrite {
                addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
                ports: vec![30000, 0, 30010],
                origin: true,
                remove_ice: true,
            })
            .unwrap();
        assert!(out.contains("o=alice 2890844526 2890844527 IN IP6 fd00::2\r\n"));
        assert!(out.contains("\r\nc=IN IP6 fd00::2\r\n"));
        assert!(out.contains("a=rtcp:30001 IN IP6 fd00::2\r\n"));
        assert!(!out.contains("candidate") && !out.contains("ice-ufrag"));
        assert!(out.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"));
    }

    #[test]
    fn lf_only_and_no_trailing_newline_survive() {
        let body = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 4000/2 RTP/AVP 0\na=rtcp:5000";
        let sdp = Sdp::parse(body).unwrap();
        assert_eq!(sdp.media[0].rtcp_port, 5000);
        let out = sdp
            .rewrite(&Rewrite {
                addr: "9.9.9.9".parse().unwrap(),
                ports: vec![30002],
                origin: false,
                remove_ice: false,
            })
            .unwrap();
        assert_eq!(
            out,
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nc=IN IP4 9.9.9.9\nt=0 0\nm=audio 30002/2 RTP/AVP 0\na=rtcp:30003 IN IP4 9.9.9.9"
        );
    }

    #[test]
    fn rejects_malformed() {
        let ok = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert!(Sdp::parse(ok).is_ok());
        let cases: &[(&str, SdpError)] = &[
            ("", SdpError::Empty),
            ("v=1\r\n", SdpError::NoVersion),
            ("x\r\n", SdpError::BadLine { line: 1 }),
            ("v=0\r\n\r\n", SdpError::BadLine { line: 2 }),
            ("v=0\r\nQ=1\r\n", SdpError::BadLine { line: 2 }),
            ("v=0\r\ns=a\rb\r\n", SdpError::BadChar { line: 2 }),
            (
                "v=0\r\no=- 1 IN IP4 1.2.3.4\r\n",
                SdpError::BadOrigin { line: 2 },
            ),
            ("v=0\r\nc=IN IP4\r\n", SdpError::BadConnection { line: 2 }),
            (
                "v=0\r\nc=IN IPX 1.2.3.4\r\n",
                SdpError::BadConnection { line: 2 },
            ),
            (
                "v=0\r\nc=IN IP4 host.example\r\n",
                SdpError::BadAddress {
                    line: 2,
                    addr: "host.example".into(),
                },
            ),
            (
                "v=0\r\nc=IN IP6 1.2.3.4\r\n",
                SdpError::BadAddress {
                    line: 2,
                    addr: "1.2.3.4".into(),
                },
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
                SdpError::BadMedia { line: 3 },
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP\r\n",
                SdpError::BadMedia { line: 3 },
            ),
            (
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n",
                SdpError::BadRtcp { line: 4 },
            ),
            (
                "v=0\r\nm=audio 4000 RTP/AVP 0\r\n",
                SdpError::NoConnection { index: 0 },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(Sdp::parse(body).err().as_ref(), Some(want), "{body:?}");
        }
        let sdp = Sdp::parse(ok).unwrap();
        let e = sdp.rewrite(&Rewrite {
            addr: "1.1.1.1".parse().unwrap(),
            ports: vec![],
            origin: false,
            remove_ice: false,
        });
        assert_eq!(e, Err(SdpError::MediaCount { found: 1, given: 0 }));
    }

    #[test]
    fn truncations_never_panic() {
        for n in 0..OFFER.len() {
            if let Some(prefix) = OFFER.get(..n)
                && let Ok(sdp) = Sdp::parse(prefix)
            {
                let ports = vec![30000; sdp.media.len()];
                let _ = sdp.rewrite(&Rewrite {
                    addr: "1.1.1.1".parse().unwrap(),
                    ports,
                    origin: true,
                    remove_ice: true,
                });
            }
        }
    }
}
