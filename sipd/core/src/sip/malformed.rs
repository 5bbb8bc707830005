//! What a message we could not take gets back: a 400 (513 for size) built from its raw header
//! lines when the ones a response needs are readable, else nothing (no response could be
//! routed, RFC 3261 §8.2). Framing problems (from a stream) and parse problems reach the core
//! as one typed [`Malformed`], so the status is chosen on the kind, never on error text.

use std::net::IpAddr;

use super::framing::FrameError;
use super::msg::{Msg, Start, host};
use super::parse::{ParseError, clip};

/// Why a message was refused before the call core could read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The stream could not be framed (size, Content-Length).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The message did not parse or failed a check.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

impl Malformed {
    /// 513 for a message over the size limit, 505 for another SIP version, 501 for a method
    /// we do not know, 416 for a Request-URI scheme we do not take, 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            Malformed::Frame(FrameError::TooLarge) | Malformed::Parse(ParseError::TooLarge(_)) => {
                513
            }
            Malformed::Parse(ParseError::Version(_)) => 505,
            Malformed::Parse(ParseError::UnknownMethod(_)) => 501,
            Malformed::Parse(ParseError::UnsupportedScheme(_)) => 416,
            _ => 400,
        }
    }
}

/// A `Warning: 399` value (RFC 3261 §20.43) naming us by `agent_host`.
pub fn warning_value(agent_host: IpAddr, text: &str) -> String {
    format!("399 {} \"{}\"", host(agent_host), text.replace('"', "'"))
}

/// The answer to `data` (at most `max_bytes` of it are read), or `None` when it gets none:
/// responses and ACKs are never answered, nor a request whose Via, From, To, Call-ID or CSeq
/// cannot be found.
pub fn answer(
    data: &[u8],
    max_bytes: usize,
    problem: &Malformed,
    agent_host: IpAddr,
) -> Option<Msg> {
    let text = String::from_utf8_lossy(&data[..data.len().min(max_bytes)]);
    if text.starts_with("SIP/") || text.trim_start().starts_with("ACK ") {
        return None;
    }
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    // Any SIP version: a request for another one is answered 505 (RFC 3261 §8.2.5 ... §21.5.6).
    if !lines
        .next()
        .and_then(|l| l.split_whitespace().last())
        .is_some_and(|v| v.starts_with("SIP/"))
    {
        return None;
    }
    let mut keep: Vec<(String, String)> = Vec::new();
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        let full = match n.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => "Via",
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        keep.push((full.to_owned(), v.trim().to_owned()));
    }
    for need in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if !keep.iter().any(|(n, _)| n == need) {
            return None;
        }
    }
    // A final response carries a To tag (RFC 3261 §8.2.6.2); derived from the request, so a
    // retransmission of it is answered alike.
    let tag = format!("{:016x}", fnv1a(head.as_bytes()));
    for (n, v) in &mut keep {
        if n == "To" && super::msg::NameAddr::parse(v).tag.is_none() {
            v.push_str(";tag=");
            v.push_str(&tag);
        }
    }
    let mut r = Msg {
        start: Start::Response {
            code: problem.status(),
            reason: String::new(),
        },
        headers: keep,
        body: Vec::new(),
    };
    r.push(
        "Warning",
        warning_value(agent_host, &clip(&problem.to_string())),
    );
    Some(r)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const HEAD: &str = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
        f: <sip:a@x>;tag=1\r\nTo: <sip:1@x>\r\ni: c1\r\nCSeq: 1 INVITE\r\n\r\n";

    #[test]
    fn status_follows_the_kind_of_problem() {
        let cases = [
            (Malformed::Frame(FrameError::TooLarge), 513),
            (Malformed::Parse(ParseError::TooLarge(70_000)), 513),
            (Malformed::Frame(FrameError::NoContentLength), 400),
            (Malformed::Parse(ParseError::NoHeaderEnd), 400),
        ];
        for (problem, code) in cases {
            let r = answer(HEAD.as_bytes(), 65_535, &problem, HOST).expect("answered");
            assert_eq!(r.code(), Some(code), "{problem:?}");
            assert_eq!(r.get("Call-ID"), Some("c1"), "compact names expanded");
            let to = r.get("To").unwrap_or_default();
            assert!(to.starts_with("<sip:1@x>;tag="), "To tagged: {to}");
            assert!(
                r.get("Warning")
                    .is_some_and(|w| w.starts_with("399 192.0.2.1 "))
            );
        }
    }

    #[test]
    fn unroutable_responses_and_acks_get_nothing() {
        let p = Malformed::Parse(ParseError::NoHeaderEnd);
        assert!(answer(b"SIP/2.0 200 OK\r\n", 100, &p, HOST).is_none());
        assert!(answer(b"ACK sip:x SIP/2.0\r\n", 100, &p, HOST).is_none());
        let no_call_id = HEAD.replace("i: c1\r\n", "");
        assert!(answer(no_call_id.as_bytes(), 65_535, &p, HOST).is_none());
    }
}
