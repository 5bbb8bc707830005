//! SIP message framing on byte streams (RFC 3261 §18.3), as pure code so it can be tested
//! without sockets.
//!
//! On a stream the only way to find the end of a message is the header section's end
//! (the first CRLFCRLF) plus Content-Length, which is therefore mandatory. Every limit is
//! checked before the bytes are buffered past it, so a peer cannot make us hold more than
//! `max_message_bytes` plus one read.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// A framing-level problem. After one, the stream's position is unknown, so the connection
/// cannot be trusted for further messages and is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum FrameError {
    /// Header section or whole message (headers + body) over `max_message_bytes`.
    #[error("message too large")]
    TooLarge,
    /// No Content-Length on a stream: the body's end cannot be found.
    #[error("missing Content-Length on a stream transport")]
    NoContentLength,
    /// Content-Length that is not a decimal number, or several that disagree (a classic
    /// request-smuggling vector, so never guessed).
    #[error("bad Content-Length")]
    BadContentLength,
}

/// RFC 5626 §4.4.1: a client pings with CRLFCRLF and expects a single CRLF back.
const PING: &[u8] = b"\r\n\r\n";
const CRLF: &[u8] = b"\r\n";

/// Keep-alives seen between messages since the last [`Framer::take_keepalives`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepAlives {
    /// Double CRLFs: each wants a CRLF pong.
    pub pings: usize,
    /// Single CRLFs (pongs, or stray line ends): nothing to answer.
    pub pongs: usize,
}

/// Incremental framer for one stream: feed bytes as they arrive, take whole messages out.
#[derive(Debug)]
pub struct Framer {
    buf: BytesMut,
    max: usize,
    /// Bytes of `buf` already searched for CRLFCRLF, so a slow header is not rescanned from
    /// the start on every read (quadratic on byte-at-a-time peers).
    scanned: usize,
    /// Header section length and Content-Length once the header end has been found.
    pending: Option<(usize, usize)>,
    failed: bool,
    keepalives: KeepAlives,
}

impl Framer {
    /// A framer that refuses any message over `max_message_bytes` (headers and body).
    pub fn new(max_message_bytes: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(max_message_bytes.clamp(512, 16 * 1024)),
            max: max_message_bytes,
            scanned: 0,
            pending: None,
            failed: false,
            keepalives: KeepAlives::default(),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a framing error has been returned; nothing more will be framed.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// What was buffered, at most `max_message_bytes`: after an error this is the start of the
    /// offending message, which often still parses far enough to answer 400/513.
    pub fn take_remainder(&mut self) -> Bytes {
        let n = self.buf.len().min(self.max);
        let out = self.buf.split_to(n).freeze();
        self.buf.clear();
        self.scanned = 0;
        self.pending = None;
        out
    }

    /// The keep-alives received since the last call, reset to none (pings want a CRLF back;
    /// pongs want nothing).
    pub fn take_keepalives(&mut self) -> KeepAlives {
        std::mem::take(&mut self.keepalives)
    }

    /// The next complete message, `None` when more bytes are needed, or an error after which
    /// the framer stays failed (returns `None`).
    pub fn next_message(&mut self) -> Option<Result<Bytes, FrameError>> {
        if self.failed {
            return None;
        }
        if self.pending.is_none() {
            if !self.skip_keepalives() {
                return None;
            }
            match self.find_header_end() {
                Ok(Some(pending)) => self.pending = Some(pending),
                Ok(None) => return None,
                Err(e) => return Some(Err(self.fail(e))),
            }
        }
        let (head, body) = self.pending?;
        if self.buf.len() < head + body {
            return None;
        }
        self.pending = None;
        self.scanned = 0;
        Some(Ok(self.buf.split_to(head + body).freeze()))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = true;
        e
    }

    /// Consumes CRLFs before a message. Returns false when the buffer holds only a prefix
    /// of a possible ping, which must wait for more bytes to be told apart from a pong.
    fn skip_keepalives(&mut self) -> bool {
        loop {
            if self.buf.starts_with(PING) {
                self.buf.advance(PING.len());
                self.keepalives.pings += 1;
            } else if self.buf.len() < PING.len() && PING.starts_with(&self.buf) {
                return self.buf.is_empty();
            } else if self.buf.starts_with(CRLF) {
                self.buf.advance(CRLF.len());
                self.keepalives.pongs += 1;
            } else {
                return true;
            }
        }
    }

    fn find_header_end(&mut self) -> Result<Option<(usize, usize)>, FrameError> {
        // Resume 3 bytes back: the terminator may straddle the previous search's end.
        let from = self.scanned.saturating_sub(PING.len() - 1);
        let Some(pos) = find(&self.buf[from..], PING).map(|p| from + p) else {
            if self.buf.len() > self.max {
                return Err(FrameError::TooLarge);
            }
            self.scanned = self.buf.len();
            return Ok(None);
        };
        let head = pos + PING.len();
        if head > self.max {
            return Err(FrameError::TooLarge);
        }
        let body = content_length(&self.buf[..pos])?.ok_or(FrameError::NoContentLength)?;
        // Checked as a sum so a huge Content-Length cannot overflow.
        if body > self.max - head {
            return Err(FrameError::TooLarge);
        }
        Ok(Some((head, body)))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length from a header section (start line included, terminator excluded): `None`
/// if absent. Lines starting with whitespace continue the previous header (RFC 3261 §7.3.1
/// folding) and are never read as a header of their own: a `Subject` folded onto
/// " l: 99" must not set the body length, or the framer and the parser would disagree on
/// where the message ends. A folded Content-Length value is not joined (no legitimate use).
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        // HCOLON allows whitespace before the colon.
        let name = line[..colon].trim_ascii_end();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = parse_decimal(line[colon + 1..].trim_ascii())?;
        match found {
            Some(prev) if prev != value => return Err(FrameError::BadContentLength),
            _ => found = Some(value),
        }
    }
    Ok(found)
}

fn parse_decimal(v: &[u8]) -> Result<usize, FrameError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BadContentLength);
    }
    // A value too big for usize is certainly over any limit.
    Ok(v.iter()
        .try_fold(0usize, |n, &d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> String {
        format!(
            "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn all(f: &mut Framer) -> Vec<Result<Bytes, FrameError>> {
        std::iter::from_fn(|| f.next_message()).collect()
    }

    #[test]
    fn two_messages_in_one_push() {
        let (a, b) = (msg("hello"), msg(""));
        let mut f = Framer::new(4096);
        f.push(format!("{a}{b}").as_bytes());
        let got = all(&mut f);
        assert_eq!(got, vec![Ok(Bytes::from(a)), Ok(Bytes::from(b))]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn message_split_byte_by_byte() {
        let a = msg("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n");
        let mut f = Framer::new(4096);
        let mut got = Vec::new();
        for b in a.as_bytes() {
            f.push(std::slice::from_ref(b));
            got.extend(all(&mut f));
        }
        assert_eq!(got, vec![Ok(Bytes::from(a))]);
    }

    #[test]
    fn split_inside_terminator_and_body() {
        let a = msg("0123456789");
        let cut = a.find("\r\n\r\n").unwrap() + 2;
        let mut f = Framer::new(4096);
        f.push(&a.as_bytes()[..cut]);
        assert_eq!(f.next_message(), None);
        f.push(&a.as_bytes()[cut..a.len() - 4]);
        assert_eq!(f.next_message(), None);
        f.push(&a.as_bytes()[a.len() - 4..]);
        assert_eq!(f.next_message(), Some(Ok(Bytes::from(a))));
    }

    #[test]
    fn keepalives_between_messages() {
        let a = msg("x");
        let mut f = Framer::new(4096);
        f.push(b"\r\n\r\n\r\n");
        assert_eq!(f.next_message(), None);
        f.push(format!("{a}\r\n\r\n").as_bytes());
        assert_eq!(all(&mut f), vec![Ok(Bytes::from(a))]);
        assert_eq!(f.take_keepalives(), KeepAlives { pings: 2, pongs: 1 });
        assert_eq!(f.take_keepalives(), KeepAlives::default());
    }

    #[test]
    fn ping_split_across_reads() {
        let mut f = Framer::new(4096);
        f.push(b"\r\n");
        assert_eq!(f.next_message(), None);
        assert_eq!(f.take_keepalives().pings, 0);
        f.push(b"\r\n");
        assert_eq!(f.next_message(), None);
        assert_eq!(f.take_keepalives().pings, 1);
    }

    #[test]
    fn compact_and_odd_content_length_forms() {
        for hdr in [
            "l: 3",
            "L:3",
            "content-LENGTH :   3  ",
            "Content-Length:\t3",
        ] {
            let m = format!("SIP/2.0 200 OK\r\nCall-ID: x\r\n{hdr}\r\n\r\nabc");
            let mut f = Framer::new(4096);
            f.push(m.as_bytes());
            assert_eq!(f.next_message(), Some(Ok(Bytes::from(m))), "{hdr}");
        }
    }

    #[test]
    fn other_headers_ending_in_l_are_not_content_length() {
        let m = "SIP/2.0 200 OK\r\nUrl: 5\r\nX-L: 7\r\nl: 0\r\n\r\n";
        let mut f = Framer::new(4096);
        f.push(m.as_bytes());
        assert_eq!(f.next_message(), Some(Ok(Bytes::from(m))));
    }

    #[test]
    fn folded_lines_are_not_headers() {
        let m = "INVITE sip:a SIP/2.0\r\nSubject: a\r\n l: 99\r\nl: 1\r\n\r\nx";
        let mut f = Framer::new(4096);
        f.push(m.as_bytes());
        assert_eq!(f.next_message(), Some(Ok(Bytes::from(m))));
    }

    #[test]
    fn missing_content_length() {
        let mut f = Framer::new(4096);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: 1\r\n\r\nOPTIONS");
        assert_eq!(f.next_message(), Some(Err(FrameError::NoContentLength)));
        assert!(f.failed());
        assert_eq!(f.next_message(), None);
        assert!(f.take_remainder().starts_with(b"OPTIONS sip:a"));
    }

    #[test]
    fn bad_content_length() {
        for hdr in [
            "Content-Length: -1",
            "Content-Length: 1x",
            "Content-Length:",
            "l: 0\r\nContent-Length: 2",
        ] {
            let mut f = Framer::new(4096);
            f.push(format!("INVITE sip:a SIP/2.0\r\n{hdr}\r\n\r\n").as_bytes());
            assert_eq!(
                f.next_message(),
                Some(Err(FrameError::BadContentLength)),
                "{hdr}"
            );
        }
        // Repeated but equal is harmless.
        let m = "INVITE sip:a SIP/2.0\r\nl: 0\r\nContent-Length: 0\r\n\r\n";
        let mut f = Framer::new(4096);
        f.push(m.as_bytes());
        assert_eq!(f.next_message(), Some(Ok(Bytes::from(m))));
    }

    #[test]
    fn header_section_too_large_without_terminator() {
        let mut f = Framer::new(100);
        f.push(&[b'a'; 100]);
        assert_eq!(f.next_message(), None);
        f.push(b"a");
        assert_eq!(f.next_message(), Some(Err(FrameError::TooLarge)));
        assert_eq!(f.take_remainder().len(), 100);
    }

    #[test]
    fn body_too_large_and_huge_content_length() {
        let mut f = Framer::new(100);
        f.push(b"INVITE sip:a SIP/2.0\r\nContent-Length: 90\r\n\r\n");
        assert_eq!(f.next_message(), Some(Err(FrameError::TooLarge)));
        let mut f = Framer::new(100);
        f.push(b"INVITE sip:a SIP/2.0\r\nl: 99999999999999999999999999\r\n\r\n");
        assert_eq!(f.next_message(), Some(Err(FrameError::TooLarge)));
        // Exactly at the limit is fine.
        // The head is 31 bytes with a two-digit length, so the body takes the other 69.
        let head = "INVITE sip:a SIP/2.0\r\nl: 69\r\n\r\n";
        let m = format!("{head}{}", "b".repeat(69));
        assert_eq!(m.len(), 100);
        let mut f = Framer::new(100);
        f.push(m.as_bytes());
        assert_eq!(f.next_message(), Some(Ok(Bytes::from(m))));
    }

    #[test]
    fn garbage_never_panics() {
        // Cheap fuzz: deterministic pseudo-random bytes biased towards CR, LF, ':' and digits.
        let alphabet = b"\r\n:l0123456789 Content-Length";
        let mut x: u32 = 12345;
        for _ in 0..200 {
            let mut f = Framer::new(256);
            for _ in 0..64 {
                let mut chunk = Vec::new();
                for _ in 0..(x % 17) {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    chunk.push(alphabet[(x >> 16) as usize % alphabet.len()]);
                }
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                f.push(&chunk);
                while let Some(r) = f.next_message() {
                    if let Ok(m) = r {
                        assert!(m.len() <= 256);
                    }
                }
                assert!(f.buffered() <= 256 + 17);
            }
        }
    }
}
