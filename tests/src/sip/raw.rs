//! Raw-UDP SIP peers for what sipp cannot do well (a byte-identical INVITE retransmission, a
//! burst of malformed messages), and the messages they send.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::Msg;
use crate::netns::Netns;

/// A bare SIP request/response over UDP for scenarios sipp cannot express.
pub struct RawSip {
    /// The socket, bound inside the peer's namespace; usable from any thread.
    pub sock: UdpSocket,
    /// Where [`RawSip::send`] sends (sipd's SIP address).
    pub to: SocketAddr,
}

impl RawSip {
    /// Binds `local` inside `ns` and sends to `to` from there.
    pub fn bind_in(ns: &Netns, local: SocketAddr, to: SocketAddr) -> std::io::Result<RawSip> {
        let sock = ns.enter(|| UdpSocket::bind(local))?;
        Ok(RawSip { sock, to })
    }

    /// The address the socket is bound to (port 0 resolved): what the messages' Via and Contact
    /// must carry for answers to come back.
    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound socket")
    }

    /// Sends one datagram to `to`, as is.
    pub fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        self.sock.send_to(msg, self.to).map(|_| ())
    }

    /// Everything that arrives within `window` (each datagram as lossy text).
    pub fn collect(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            if now >= end {
                return out;
            }
            let _ = self
                .sock
                .set_read_timeout(Some((end - now).max(Duration::from_millis(1))));
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => return out,
            }
        }
    }

    /// Waits for a message whose first line starts with `prefix` and whose CSeq header
    /// contains `cseq` (e.g. "1 INVITE"); others are collected into `seen`.
    pub fn wait_for(
        &self,
        prefix: &str,
        cseq: &str,
        timeout: Duration,
        seen: &mut Vec<String>,
    ) -> Option<String> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < end {
            let _ = self.sock.set_read_timeout(Some(Duration::from_millis(50)));
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(text.clone());
            let m = Msg {
                received: true,
                text: text.clone(),
            };
            if m.first_line().starts_with(prefix) && m.header("CSeq").is_some_and(|c| c == cseq) {
                return Some(text);
            }
        }
        None
    }
}

/// A carrier-side INVITE with SDP, byte-identical every time it is built with the same
/// arguments (fixed branch, tag, Call-ID), so sending it again is a true retransmission.
pub fn invite(
    local: SocketAddr,
    remote: SocketAddr,
    cli: &str,
    cld: &str,
    call_id: &str,
    rtp_port: u16,
) -> String {
    let sdp = audio_sdp(SocketAddr::new(local.ip(), rtp_port));
    invite_with_sdp(local, remote, cli, cld, call_id, &sdp)
}

/// One G.711 audio stream whose media goes to `media`.
pub fn audio_sdp(media: SocketAddr) -> String {
    let fam = if media.is_ipv4() { "IP4" } else { "IP6" };
    let (ip, port) = (media.ip(), media.port());
    format!(
        "v=0\r\no=carrier 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// An INVITE like [`invite`]'s with `sdp` as its body (an attacker's SDP, say).
pub fn invite_with_sdp(
    local: SocketAddr,
    remote: SocketAddr,
    cli: &str,
    cld: &str,
    call_id: &str,
    sdp: &str,
) -> String {
    format!(
        "INVITE sip:{cld}@{remote} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-1\r\n\
         From: <sip:{cli}@{local}>;tag=raw-{call_id}\r\n\
         To: <sip:{cld}@{remote}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{cli}@{local}>\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: raw-carrier\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The in-dialog request (ACK or BYE) for a call answered by `ok` (a 200 to [`invite`]).
pub fn in_dialog(
    method: &str,
    cseq: u32,
    local: SocketAddr,
    remote: SocketAddr,
    call_id: &str,
    ok: &str,
) -> String {
    let m = Msg {
        received: true,
        text: ok.to_string(),
    };
    let to = m.header("To").unwrap_or("").to_string();
    let from = m.header("From").unwrap_or("").to_string();
    // Remote target: the 200's Contact; route set: its Record-Routes (loose routing).
    let target = m
        .header("Contact")
        .and_then(|c| {
            let s = c.find('<')? + 1;
            let e = c[s..].find('>')? + s;
            Some(c[s..e].to_string())
        })
        .unwrap_or_else(|| format!("sip:{remote}"));
    let routes = m.headers("Record-Route");
    let route = if routes.is_empty() {
        String::new()
    } else {
        format!("Route: {}\r\n", routes.join(", "))
    };
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-{method}{cseq}\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         {route}Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// `msg` (a request with no body, e.g. from [`in_dialog`]) carrying `sdp` instead, with the
/// Contact (`local`) a re-INVITE must have (RFC 3261 §8.1.1.8).
pub fn with_sdp(msg: &str, local: SocketAddr, sdp: &str) -> String {
    let head = msg.strip_suffix("Content-Length: 0\r\n\r\n").unwrap_or(msg);
    format!(
        "{head}Contact: <sip:raw@{local}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Where an SDP body says to send media (first c= and first m=audio).
pub fn sdp_media(body: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for l in body.lines() {
        let l = l.trim();
        if let Some(c) = l
            .strip_prefix("c=IN IP4 ")
            .or_else(|| l.strip_prefix("c=IN IP6 "))
        {
            ip = ip.or_else(|| c.trim().parse::<IpAddr>().ok());
        }
        if let Some(m) = l.strip_prefix("m=audio ") {
            port = port.or_else(|| m.split_whitespace().next()?.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// INVITEs with a NUL byte, which no SIP grammar rule allows (RFC 3261 §25.1): one in the
/// Request-URI (`sip:100` → `sip\0100`), one in the From tag. Each deserves a 400.
pub fn nul_bytes(local: SocketAddr, remote: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    let msg = |k: &str| {
        format!(
            "INVITE sip:100@{remote} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-nul{k}\r\n\
             From: <sip:1@{local}>;tag=x\r\nTo: <sip:100@{remote}>\r\nCall-ID: nul{k}@x\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let mut uri = msg("u");
    uri[10] = 0;
    let mut tag = msg("t");
    let at = tag.windows(5).position(|w| w == b"tag=x").expect("tag") + 4;
    tag[at] = 0;
    vec![
        ("NUL in the Request-URI", uri),
        ("NUL in the From tag", tag),
    ]
}

/// Malformed SIP for a robustness burst: garbage, truncated and missing headers, a lying
/// Content-Length, an oversized datagram. Each entry: (what, bytes).
pub fn malformed_messages(local: SocketAddr, remote: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    // A different branch (and Call-ID) each, so none is taken for another's retransmission.
    let via = |k: &str| format!("Via: SIP/2.0/UDP {local};branch=z9hG4bK-bad-{k}");
    let base = |call: &str, extra: &str, clen: &str| {
        format!(
            "INVITE sip:100@{remote} SIP/2.0\r\n{}\r\nFrom: <sip:1@{local}>;tag=x\r\n\
             To: <sip:100@{remote}>\r\nCall-ID: bad-{call}@x\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n{extra}Content-Length: {clen}\r\n\r\n",
            via(call)
        )
        .into_bytes()
    };
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..300u32).map(|i| (i * 37 % 251) as u8).collect(),
        ),
        ("empty datagram", Vec::new()),
        ("crlf keepalive", b"\r\n\r\n".to_vec()),
        ("not sip", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "request line only",
            format!("INVITE sip:100@{remote} SIP/2.0\r\n").into_bytes(),
        ),
        (
            "bad version",
            format!("INVITE sip:100@{remote} SIP/9.9\r\n{}\r\n\r\n", via("v")).into_bytes(),
        ),
        (
            "truncated headers",
            format!(
                "INVITE sip:100@{remote} SIP/2.0\r\n{}\r\nFrom: <sip:1@",
                via("t")
            )
            .into_bytes(),
        ),
        (
            "missing Call-ID",
            format!(
                "INVITE sip:100@{remote} SIP/2.0\r\n{}\r\nFrom: <sip:1@{local}>;tag=x\r\n\
                 To: <sip:100@{remote}>\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n",
                via("m")
            )
            .into_bytes(),
        ),
        ("huge Content-Length", base("h", "", "4294967296000")),
        ("Content-Length beyond the datagram", base("c", "", "5000")),
        ("negative Content-Length", base("n", "", "-1")),
        ("bad CSeq", {
            let mut b = base("s", "", "0");
            let s = String::from_utf8_lossy(&b).replace("CSeq: 1 INVITE", "CSeq: x INVITE");
            b = s.into_bytes();
            b
        }),
        (
            "header without colon",
            base("k", "This is not a header\r\n", "0"),
        ),
        ("oversized", {
            let mut b = base("o", &format!("X-Pad: {}\r\n", "a".repeat(60_000)), "0");
            b.truncate(65_000);
            b
        }),
        ("binary after request line", {
            let mut b = format!("INVITE sip:100@{remote} SIP/2.0\r\n").into_bytes();
            b.extend((0..200u32).map(|i| (i * 91 % 256) as u8));
            b
        }),
    ];
    v.push(("response with no transaction", {
        format!(
            "SIP/2.0 200 OK\r\n{}\r\nFrom: <sip:1@{local}>;tag=x\r\nTo: <sip:100@{remote}>\r\n\
             Call-ID: nobody@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            via("r")
        )
        .into_bytes()
    }));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_messages() {
        let l: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let r: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let a = invite(l, r, "441", "331", "cid-1", 20000);
        assert_eq!(a, invite(l, r, "441", "331", "cid-1", 20000));
        let m = Msg {
            received: false,
            text: a.clone(),
        };
        assert_eq!(sdp_media(m.body()), Some("10.0.0.1:20000".parse().unwrap()));
        let clen: usize = m.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(clen, m.body().len());
        let ok = "SIP/2.0 200 OK\r\nTo: <sip:331@x>;tag=t\r\nFrom: <sip:441@y>;tag=f\r\n\
                  Contact: <sip:b2b@10.0.0.2:5060>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\n\r\n";
        let bye = in_dialog("BYE", 2, l, r, "cid-1", ok);
        assert!(
            bye.starts_with("BYE sip:b2b@10.0.0.2:5060 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(bye.contains("To: <sip:331@x>;tag=t\r\n"));
        assert!(bye.contains("Route: <sip:10.0.0.2;lr>\r\n"));
        assert!(malformed_messages(l, r).len() > 10);
    }
}
