//! From bytes off the wire to an `rsip` message, with the checks a peer-facing element needs
//! before anything else looks at it: size limits, the mandatory headers, a Content-Length that
//! agrees with the datagram, and the compact header names (RFC 3261 §7.3.3) that rsip does not
//! know. Every refusal is a [`ParseError`] the caller turns into a 400 or a counted drop.

use std::str::FromStr;

use relay_common::guard::MAX_LEADING_CRLF;
use rsip::SipMessage;

use super::uri::parse_uri;

/// Longest header line accepted; real ones stay under 1 KiB.
pub const MAX_HEADER_LINE: usize = 8 * 1024;
/// Most header lines in one message (RFC 3261 sets no limit; 128 is far above real traffic).
pub const MAX_HEADERS: usize = 128;

/// Why a message was refused by [`parse`]; the caller answers 400 (513 for size) or drops it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Over the configured size limit (the size is given).
    #[error("message is {0} bytes, over the limit")]
    TooLarge(usize),
    /// The headers never end: no empty line.
    #[error("no end of headers (CRLFCRLF)")]
    NoHeaderEnd,
    /// A header line over [`MAX_HEADER_LINE`] bytes.
    #[error("header line over {MAX_HEADER_LINE} bytes")]
    LineTooLong,
    /// Over [`MAX_HEADERS`] header lines.
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// A header line that is not `name: value` (clipped).
    #[error("bad header line {0:?}")]
    BadHeaderLine(String),
    /// A header every message must carry (Call-ID, CSeq, From, To, Via) is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header that must appear once appears twice.
    #[error("{0} header appears more than once")]
    Duplicate(&'static str),
    /// Content-Length is not a number (clipped).
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// Fewer body bytes than Content-Length says.
    #[error("Content-Length {declared} but {actual} body bytes arrived")]
    Truncated {
        /// The Content-Length.
        declared: usize,
        /// The body bytes present.
        actual: usize,
    },
    /// CSeq is not `number method` with a 32-bit number (clipped).
    #[error("bad CSeq {0:?}")]
    BadCSeq(String),
    /// A request whose CSeq method is not its own.
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMismatch {
        /// The CSeq's method (clipped).
        cseq: String,
        /// The request line's method.
        method: String,
    },
    /// Max-Forwards is not a number in 0-255 (clipped).
    #[error("bad Max-Forwards {0:?}")]
    BadMaxForwards(String),
    /// The start line does not parse (rsip's reason).
    #[error("start line: {0}")]
    StartLine(String),
    /// A control character (other than tab and the line ends) or DEL in the header section: the byte.
    #[error("control character 0x{0:02x} in the header section")]
    ControlChar(u8),
    /// More CR/LF before the start line than [`MAX_LEADING_CRLF`] (the kernel's INVITE detector
    /// would not look that far).
    #[error("{0} line ends before the start line (at most {MAX_LEADING_CRLF})")]
    LeadingLineEnds(usize),
    /// Not `method SP Request-URI SP version` with single spaces (RFC 3261 §7.1).
    #[error("bad request line {0:?}")]
    BadRequestLine(String),
    /// A SIP version other than 2.0 (answered 505).
    #[error("unsupported SIP version {0:?}")]
    Version(String),
    /// A well-formed method we do not know (answered 501).
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// A Request-URI that is not a URI, or an IPv6 address outside brackets.
    #[error("bad Request-URI {0:?}")]
    BadUri(String),
    /// A Via element that is not `SIP/2.0/transport sent-by;params`.
    #[error("bad Via {0:?}")]
    BadVia(String),
    /// A From, To or Contact with an unterminated quote or bracket.
    #[error("bad name-addr {0:?}")]
    BadNameAddr(String),
    /// A Request-URI scheme other than sip, sips and tel (answered 416).
    #[error("unsupported URI scheme {0:?}")]
    UnsupportedScheme(String),
}

/// Full names of the compact forms (RFC 3261 §7.3.3, RFC 3265, RFC 3515, RFC 4028 …).
fn expand_compact(name: &str) -> Option<&'static str> {
    if name.len() != 1 {
        return None;
    }
    Some(match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'u' => "Allow-Events",
        _ => return None,
    })
}

/// Headers that must appear exactly once in every message we accept.
const SINGLE: [&str; 4] = ["Call-ID", "CSeq", "From", "To"];

/// Parses one complete message (a datagram, or one message framed off a stream). Over UDP a
/// body longer than Content-Length is cut to it (RFC 3261 §18.3); a shorter one is refused.
pub fn parse(data: &[u8], max_bytes: usize) -> Result<SipMessage, ParseError> {
    let p = parse_parts(data, max_bytes)?;
    // rsip reads the headers; the Request-URI is ours (rsip refuses IPv6 references and
    // some valid user parts), so rsip gets a stand-in and the real one goes back after.
    let bytes = match &p.request {
        Some((method, _)) => canonical(
            &format!("{method} sip:uri.invalid SIP/2.0"),
            &p.headers,
            p.body,
        ),
        None => canonical(p.start_line, &p.headers, p.body),
    };
    let mut msg = SipMessage::try_from(bytes.as_slice())
        .map_err(|e| ParseError::StartLine(clip(&e.to_string())))?;
    if let (SipMessage::Request(r), Some((_, uri))) = (&mut msg, p.request) {
        r.uri = uri;
    }
    Ok(msg)
}

/// A message through every check of [`parse`], before rsip: what [`super::Msg::parse`] reads
/// directly (the call core's messages skip rsip's second tokenisation of the headers).
pub(crate) struct Parts<'a> {
    /// The start line as received.
    pub(crate) start_line: &'a str,
    /// A request's method and Request-URI; `None` for a response.
    pub(crate) request: Option<(rsip::Method, rsip::Uri)>,
    /// The headers unfolded, compact names expanded, Via in canonical form, Content-Length
    /// still among them.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, cut to Content-Length.
    pub(crate) body: &'a [u8],
}

/// [`parse`]'s checks, without building rsip's message.
pub(crate) fn parse_parts(data: &[u8], max_bytes: usize) -> Result<Parts<'_>, ParseError> {
    if data.len() > max_bytes {
        return Err(ParseError::TooLarge(data.len()));
    }
    // Keep-alive CRLFs in front of a message are not part of it.
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    // The kernel's INVITE detector looks past exactly this many: a longer run would carry an
    // INVITE past the calls-per-second limit and the session cap.
    if start > MAX_LEADING_CRLF {
        return Err(ParseError::LeadingLineEnds(start));
    }
    let data = &data[start..];
    let end = find(data, b"\r\n\r\n").ok_or(ParseError::NoHeaderEnd)?;
    // NUL and other controls have no place in SIP headers (RFC 3261 §25.1 allows only HTAB
    // among them, plus the CRLFs that end lines) and split parsers downstream disagree on them.
    // The one exception is a quoted-pair (`\` and the control) inside a quoted string
    // (RFC 3261 §25.1, RFC 4475 §3.1.1.2).
    let head_bytes = &data[..end];
    if let Some(i) = head_bytes.iter().enumerate().position(|(i, &b)| {
        ((b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
            && (i == 0 || head_bytes[i - 1] != b'\\')
    }) {
        return Err(ParseError::ControlChar(head_bytes[i]));
    }
    let head = std::str::from_utf8(&data[..end]).map_err(|_| ParseError::NotUtf8)?;
    let body = &data[end + 4..];

    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or_default();
    if start_line.len() > MAX_HEADER_LINE {
        return Err(ParseError::LineTooLong);
    }
    let headers = header_block(lines)?;

    // The version first: a request for SIP/7.0 gets a 505, whatever its Via says.
    if let Some(v) = start_line.rsplit(' ').next()
        && !start_line.starts_with("SIP/")
        && v.starts_with("SIP/")
        && v != "SIP/2.0"
    {
        return Err(ParseError::Version(clip(v)));
    }
    let mut headers = headers;
    check_structure(&mut headers)?;
    let cseq_method = check_mandatory(&headers)?;
    let body = match header(&headers, "Content-Length") {
        Some(cl) => {
            let n: usize = cl
                .parse()
                .map_err(|_| ParseError::BadContentLength(clip(cl)))?;
            if n > body.len() {
                return Err(ParseError::Truncated {
                    declared: n,
                    actual: body.len(),
                });
            }
            &body[..n]
        }
        None => body,
    };

    let is_request = !start_line.starts_with("SIP/");
    let request = if is_request {
        Some(request_line(start_line, cseq_method)?)
    } else {
        None
    };
    Ok(Parts {
        start_line,
        request,
        headers,
        body,
    })
}

/// `method SP Request-URI SP SIP-Version` (RFC 3261 §7.1): single spaces, a token method that
/// agrees with CSeq, version 2.0, and a URI we can route.
fn request_line(line: &str, cseq_method: &str) -> Result<(rsip::Method, rsip::Uri), ParseError> {
    let bad = || ParseError::BadRequestLine(clip(line));
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(bad());
    }
    if !method.eq_ignore_ascii_case(cseq_method) && method != "ACK" && method != "CANCEL" {
        return Err(ParseError::CSeqMismatch {
            cseq: clip(cseq_method),
            method: clip(method),
        });
    }
    if version != "SIP/2.0" {
        return Err(match version.strip_prefix("SIP/") {
            Some(_) => ParseError::Version(clip(version)),
            None => bad(),
        });
    }
    let uri = parse_uri(uri)?;
    // Methods are case-sensitive (RFC 3261 §7.1); rsip would take "invite".
    let known = rsip::Method::from_str(method)
        .ok()
        .filter(|m| m.to_string() == method)
        .ok_or_else(|| ParseError::UnknownMethod(clip(method)))?;
    Ok((known, uri))
}

/// Unfolds continuation lines and expands compact names into a canonical header block.
fn header_block<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, ParseError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.len() > MAX_HEADER_LINE {
            return Err(ParseError::LineTooLong);
        }
        // A lone CR or LF inside a line: some parsers end the line there, some do not.
        if line.contains(['\r', '\n']) {
            return Err(ParseError::BadHeaderLine(clip(line)));
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = headers.last_mut() else {
                return Err(ParseError::BadHeaderLine(clip(line)));
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError::BadHeaderLine(clip(line)));
        };
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::BadHeaderLine(clip(line)));
        }
        let name = expand_compact(name).map_or_else(|| name.to_owned(), str::to_owned);
        headers.push((name, value.trim().to_owned()));
        if headers.len() > MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
    }
    Ok(headers)
}

/// The structure of the headers the core reads: every Via a `SIP/2.0/transport sent-by` with
/// no empty element or parameter (RFC 4475 §3.1.2.1), every From, To and Contact with
/// balanced quotes and angle brackets (§3.1.2.6). Via's LWS around `/` (allowed, §3.1.1.1)
/// is removed so the core reads one form.
fn check_structure(headers: &mut [(String, String)]) -> Result<(), ParseError> {
    for (name, value) in headers.iter_mut() {
        if name.eq_ignore_ascii_case("Via") {
            let mut canon = Vec::new();
            for element in split_list(value) {
                canon.push(via_element(&element).ok_or_else(|| ParseError::BadVia(clip(value)))?);
            }
            *value = canon.join(", ");
        } else if ["From", "To", "Contact"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            && !split_list(value).iter().all(|e| name_addr_ok(e))
        {
            return Err(ParseError::BadNameAddr(clip(value)));
        }
    }
    Ok(())
}

/// Splits a comma list outside quotes and `<>`, keeping empty elements (they are errors).
fn split_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped, mut angle, mut cur) = (false, false, false, String::new());
    for c in v.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_owned());
    out
}

/// One Via element in canonical form, or `None` when it is not one.
fn via_element(e: &str) -> Option<String> {
    // "SIP / 2.0 / UDP host" → "SIP/2.0/UDP host"
    let mut parts = e.splitn(3, '/');
    let (name, version, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = rest.trim_start();
    let transport_end = rest.find(char::is_whitespace)?;
    let (transport, after) = rest.split_at(transport_end);
    let (name, version) = (name.trim(), version.trim());
    if !name.eq_ignore_ascii_case("SIP")
        || version != "2.0"
        || transport.is_empty()
        || !transport.bytes().all(is_token_char)
    {
        return None;
    }
    let after = after.trim();
    let (sent_by, params) = match after.find(';') {
        Some(i) => (after[..i].trim(), &after[i..]),
        None => (after, ""),
    };
    if sent_by.is_empty() || sent_by.contains(char::is_whitespace) {
        return None;
    }
    // An IPv6 sent-by is in brackets and is an address (RFC 5118 §4.5).
    if let Some(v6) = sent_by.strip_prefix('[') {
        let (addr, _) = v6.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
    }
    let mut canon = format!("SIP/2.0/{transport} {sent_by}");
    for p in params.split(';').skip(1) {
        let p = p.trim();
        let pname = p.split('=').next().unwrap_or_default().trim();
        if pname.is_empty() || !pname.bytes().all(is_token_char) {
            return None;
        }
        canon.push(';');
        canon.push_str(p);
    }
    Some(canon)
}

/// A name-addr or addr-spec with balanced quotes and brackets (or Contact's `*`).
fn name_addr_ok(e: &str) -> bool {
    if e.is_empty() {
        return false;
    }
    let (mut quoted, mut escaped, mut open) = (false, false, 0i32);
    for c in e.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => open += 1,
            '>' if !quoted => open -= 1,
            _ => {}
        }
        if !(0..=1).contains(&open) {
            return false;
        }
    }
    !quoted && open == 0
}

/// The headers every message needs, once each, and a usable CSeq and Max-Forwards; returns
/// the CSeq method.
fn check_mandatory(headers: &[(String, String)]) -> Result<&str, ParseError> {
    for h in SINGLE {
        match headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(h))
            .count()
        {
            0 => return Err(ParseError::Missing(h)),
            1 => {}
            _ => return Err(ParseError::Duplicate(h)),
        }
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("Via")) {
        return Err(ParseError::Missing("Via"));
    }
    let cseq = header(headers, "CSeq").unwrap_or_default();
    let (cseq_num, cseq_method) = cseq
        .split_once(char::is_whitespace)
        .ok_or_else(|| ParseError::BadCSeq(clip(cseq)))?;
    if cseq_num.parse::<u32>().is_err() || cseq_method.trim().is_empty() {
        return Err(ParseError::BadCSeq(clip(cseq)));
    }
    if headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .count()
        > 1
    {
        return Err(ParseError::Duplicate("Content-Length"));
    }
    if let Some(mf) = header(headers, "Max-Forwards")
        && mf.parse::<u8>().is_err()
    {
        return Err(ParseError::BadMaxForwards(clip(mf)));
    }
    Ok(cseq_method.trim())
}

/// The message as rsip should read it: compact names expanded, folding undone, and a
/// Content-Length that matches the body.
fn canonical(start_line: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut canon = String::with_capacity(start_line.len() + 64 * headers.len());
    canon.push_str(start_line);
    canon.push_str("\r\n");
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        canon.push_str(n);
        canon.push_str(": ");
        canon.push_str(v);
        canon.push_str("\r\n");
    }
    canon.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = canon.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Error texts quote peer input; keep them short and printable.
pub(crate) fn clip(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:441234@sbc.example SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
        Max-Forwards: 70\r\n\
        t: <sip:441234@sbc.example>\r\n\
        f: \"Alice\" <sip:4420@10.0.0.1>;tag=1928301774\r\n\
        i: a84b4c76e66710@10.0.0.1\r\n\
        CSeq: 314159 INVITE\r\n\
        m: <sip:4420@10.0.0.1:5060>\r\n\
        c: application/sdp\r\n\
        l: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn compact_headers_are_expanded_and_body_cut_to_content_length() {
        let SipMessage::Request(r) = parse(INVITE.as_bytes(), 65535).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.method, rsip::Method::Invite);
        assert_eq!(r.body, b"v=0\r");
        let text = r.to_string();
        assert!(text.contains("Call-ID: a84b4c76e66710@10.0.0.1"), "{text}");
        assert!(text.contains("Via: SIP/2.0/UDP 10.0.0.1:5060"), "{text}");
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &str, ParseError)] = &[
            (
                "no end of headers",
                "INVITE sip:a@b SIP/2.0\r\nVia: x",
                ParseError::NoHeaderEnd,
            ),
            (
                "missing Call-ID",
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\n\r\n",
                ParseError::Missing("Call-ID"),
            ),
            (
                "two CSeq",
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\n\r\n",
                ParseError::Duplicate("CSeq"),
            ),
            (
                "truncated body",
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 900\r\n\r\nabc",
                ParseError::Truncated {
                    declared: 900,
                    actual: 3,
                },
            ),
            (
                "CSeq method mismatch",
                "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
                ParseError::CSeqMismatch {
                    cseq: "INVITE".into(),
                    method: "BYE".into(),
                },
            ),
            (
                "NUL in the Request-URI",
                "INVITE sip\u{0}1@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",
                ParseError::ControlChar(0),
            ),
            (
                "header without colon",
                "BYE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",
                ParseError::BadHeaderLine("Via SIP/2.0/UDP h".into()),
            ),
        ];
        for (what, msg, want) in cases {
            assert_eq!(parse(msg.as_bytes(), 65535).unwrap_err(), *want, "{what}");
        }
        assert_eq!(
            parse(INVITE.as_bytes(), 100).unwrap_err(),
            ParseError::TooLarge(INVITE.len())
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..2000 {
            let mut bytes = INVITE.as_bytes().to_vec();
            for _ in 0..(n % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % bytes.len() as u64) as usize;
                bytes[i] = (seed >> 32) as u8;
            }
            bytes.truncate((seed % (bytes.len() as u64 + 1)) as usize);
            let _ = parse(&bytes, 65535);
        }
    }

    #[test]
    fn line_ends_before_the_request_line_are_bounded_as_the_kernel_bounds_them() {
        let msg = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let ok = format!("{}{msg}", "\n".repeat(MAX_LEADING_CRLF));
        assert!(parse(ok.as_bytes(), 65_535).is_ok());
        let long = format!("{}{msg}", "\n".repeat(MAX_LEADING_CRLF + 1));
        assert_eq!(
            parse(long.as_bytes(), 65_535).err(),
            Some(ParseError::LeadingLineEnds(MAX_LEADING_CRLF + 1))
        );
    }
}
