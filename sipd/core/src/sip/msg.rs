//! The message type the call core works on: the start line as rsip parsed it, the headers as
//! (full name, value) in wire order, and the body. Header access is by case-insensitive name;
//! the few structured values the core needs (Via, name-addr, CSeq) have small typed views here.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rsip::{Method, Uri};

use super::parse::ParseError;

/// A message's start line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A request line.
    Request {
        /// The method.
        method: Method,
        /// The Request-URI.
        uri: Uri,
    },
    /// A status line.
    Response {
        /// The status code.
        code: u16,
        /// The reason phrase; empty for the standard one of the code (parsed responses keep
        /// none).
        reason: String,
    },
}

/// A SIP message as the call core reads and builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Request line or status line.
    pub start: Start,
    /// (name, value) in wire order, names matched case-insensitively; Content-Length is left
    /// out and written from the body.
    pub headers: Vec<(String, String)>,
    /// The body (an SDP, usually); may be empty.
    pub body: Vec<u8>,
}

impl Msg {
    /// Parses with [`super::parse::parse`]'s checks. The headers are read once, by those
    /// checks; rsip's second tokenisation of them (and their rendering back to text) was the
    /// larger part of a message's cost. Names come out as rsip wrote them (`start.rs`).
    pub fn parse(data: &[u8], max_bytes: usize) -> Result<Msg, ParseError> {
        let p = super::parse::parse_parts(data, max_bytes)?;
        let start = match p.request {
            Some((method, uri)) => Start::Request { method, uri },
            None => Start::Response {
                code: super::start::status_code(p.start_line)?,
                reason: String::new(),
            },
        };
        let headers = p
            .headers
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Length"))
            .map(|(n, v)| match super::start::rsip_name(&n) {
                Some(known) => (known.to_owned(), v),
                None => (n, v),
            })
            .collect();
        Ok(Msg {
            start,
            headers,
            body: p.body.to_vec(),
        })
    }

    /// A request with no headers and no body yet.
    pub fn request(method: Method, uri: Uri) -> Msg {
        Msg {
            start: Start::Request { method, uri },
            headers: Vec::with_capacity(16),
            body: Vec::new(),
        }
    }

    /// The method of a request; `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI of a request; `None` for a response.
    pub fn uri(&self) -> Option<&Uri> {
        match &self.start {
            Start::Request { uri, .. } => Some(uri),
            Start::Response { .. } => None,
        }
    }

    /// The status code of a response; `None` for a request.
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            Start::Response { code, .. } => Some(*code),
            Start::Request { .. } => None,
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    /// The first value of header `name` (case-insensitive), as one line (not split at commas).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header line named `name` (case-insensitive), in order, not split at commas.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header that may be comma-combined (Via, Route, Record-Route), split.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get_all(name).flat_map(split_commas).collect()
    }

    /// Removes every header named `name`.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Replaces every header named `name` with one, appended at the end.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Appends a header (after any of the same name).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Inserts a header first (a Via we add goes on top).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.headers.insert(0, (name.to_owned(), value.into()));
    }

    /// The Call-ID; empty when absent (parsing refuses messages without one).
    pub fn call_id(&self) -> &str {
        self.get("Call-ID").unwrap_or_default()
    }

    /// CSeq number and method; `(0, "")` when absent or unreadable.
    pub fn cseq(&self) -> (u32, &str) {
        let v = self.get("CSeq").unwrap_or_default();
        let (n, m) = v.split_once(char::is_whitespace).unwrap_or(("0", ""));
        (n.parse().unwrap_or(0), m.trim())
    }

    /// The From header; an empty one when absent.
    pub fn from(&self) -> NameAddr {
        NameAddr::parse(self.get("From").unwrap_or_default())
    }

    /// The To header; an empty one when absent.
    pub fn to(&self) -> NameAddr {
        NameAddr::parse(self.get("To").unwrap_or_default())
    }

    /// The topmost Via value (of a comma-combined line too); `None` without any.
    pub fn top_via(&self) -> Option<Via> {
        self.list("Via").first().map(|v| Via::parse(v))
    }

    /// Max-Forwards; `None` when absent or not a number in 0-255.
    pub fn max_forwards(&self) -> Option<u8> {
        self.get("Max-Forwards").and_then(|v| v.parse().ok())
    }

    /// Whether the body is an SDP (non-empty, Content-Type `application/sdp`).
    pub fn has_sdp(&self) -> bool {
        !self.body.is_empty()
            && self
                .get("Content-Type")
                .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
    }

    /// The message on the wire: start line, headers, a Content-Length of the body, the body.
    /// A response without reason text gets [`reason_phrase`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            Start::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            Start::Response { code, reason } => {
                let reason = if reason.is_empty() {
                    reason_phrase(*code)
                } else {
                    reason
                };
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to this request (RFC 3261 §8.2.6): Via, From, Call-ID and CSeq copied, To
    /// copied and given `to_tag` if it has none.
    pub fn response(&self, code: u16, to_tag: Option<&str>) -> Msg {
        let mut r = Msg {
            start: Start::Response {
                code,
                reason: String::new(),
            },
            headers: Vec::with_capacity(8),
            body: Vec::new(),
        };
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("Via")
                || n.eq_ignore_ascii_case("From")
                || n.eq_ignore_ascii_case("Call-ID")
                || n.eq_ignore_ascii_case("CSeq")
            {
                r.headers.push((n.clone(), v.clone()));
            } else if n.eq_ignore_ascii_case("To") {
                let mut to = v.clone();
                if let Some(tag) = to_tag
                    && NameAddr::parse(v).tag.is_none()
                {
                    to.push_str(";tag=");
                    to.push_str(tag);
                }
                r.headers.push((n.clone(), to));
            }
        }
        r
    }
}

/// Splits a comma-combined header value, leaving commas inside quotes and `<>` alone.
pub fn split_commas(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    let b = v.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(v[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = v[start..].trim();
    if !last.is_empty() {
        out.push(last.to_owned());
    }
    out
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameAddr {
    /// Display name, unquoted; `None` when absent.
    pub display: Option<String>,
    /// The URI, without angle brackets or header parameters.
    pub uri: String,
    /// The `tag` parameter (dialog identity); `None` when absent.
    pub tag: Option<String>,
}

impl NameAddr {
    /// Reads a value leniently: an unreadable one gives an empty URI rather than an error.
    pub fn parse(v: &str) -> NameAddr {
        let v = v.trim();
        let (display, uri, params) = if let Some(lt) = v.find('<') {
            let gt = v[lt..].find('>').map_or(v.len(), |g| lt + g);
            let display = v[..lt].trim().trim_matches('"').trim();
            (
                (!display.is_empty()).then(|| display.to_owned()),
                v[lt + 1..gt].to_owned(),
                v.get(gt + 1..).unwrap_or_default(),
            )
        } else {
            match v.split_once(';') {
                Some((u, p)) => (None, u.to_owned(), p),
                None => (None, v.to_owned(), ""),
            }
        };
        let tag = param(params, "tag").map(str::to_owned);
        NameAddr { display, uri, tag }
    }

    /// The user part of the URI: the number for CLI/CLD.
    pub fn user(&self) -> &str {
        uri_user(&self.uri)
    }
}

/// `sip:user@host` → `user` (without parameters); empty when there is none.
pub fn uri_user(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .unwrap_or(uri);
    if uri.starts_with("tel:") {
        return rest.split(';').next().unwrap_or_default();
    }
    match rest.split_once('@') {
        Some((user, _)) => user.split(';').next().unwrap_or_default(),
        None => "",
    }
}

/// `;name=value` from a parameter list (case-insensitive name).
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token (`UDP`, `TCP`, `TLS`), as written.
    pub transport: String,
    /// Sent-by host: a name or an address, IPv6 without brackets.
    pub host: String,
    /// Sent-by port; `None` when absent (5060 is implied).
    pub port: Option<u16>,
    /// The `branch` parameter (transaction identity).
    pub branch: Option<String>,
    /// Whether `rport` is present (RFC 3581: answer to the source port).
    pub rport: bool,
    /// The whole value, trimmed, as received.
    pub raw: String,
}

impl Via {
    /// Reads one Via value leniently: missing parts come out empty or `None`.
    pub fn parse(v: &str) -> Via {
        let (proto, rest) = v.trim().split_once(char::is_whitespace).unwrap_or((v, ""));
        let transport = proto.rsplit('/').next().unwrap_or_default().to_owned();
        let (sent_by, params) = rest.trim().split_once(';').unwrap_or((rest.trim(), ""));
        let (host, port) = split_host_port(sent_by.trim());
        Via {
            transport,
            host,
            port,
            branch: param(params, "branch").map(str::to_owned),
            // `rport` as the client asks for it, or `rport=port` as a proxy filled it in.
            rport: params.split(';').any(|p| {
                p.split('=')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case("rport"))
            }),
            raw: v.trim().to_owned(),
        }
    }

    /// RFC 3261 branch (magic cookie): transactions can be matched by it alone.
    pub fn rfc3261_branch(&self) -> Option<&str> {
        self.branch.as_deref().filter(|b| b.starts_with("z9hG4bK"))
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub fn split_host_port(s: &str) -> (String, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            h.to_owned(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().ok()),
        _ => (s.to_owned(), None),
    }
}

/// `ip:port` as it appears in SIP (IPv6 bracketed).
pub fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

/// An address as written as a SIP host (IPv6 bracketed).
pub fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// The standard reason phrase of `code`, or a class's generic one for codes not listed.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        c if c < 200 => "Session Progress",
        c if c < 300 => "OK",
        c if c < 400 => "Redirect",
        c if c < 500 => "Client Error",
        c if c < 600 => "Server Error",
        _ => "Global Failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_and_via() {
        let n = NameAddr::parse("\"Alice, A\" <sip:+4420@10.0.0.1;user=phone>;tag=19a");
        assert_eq!(n.display.as_deref(), Some("Alice, A"));
        assert_eq!(n.user(), "+4420");
        assert_eq!(n.tag.as_deref(), Some("19a"));
        let n = NameAddr::parse("sip:bob@example.com;tag=x");
        assert_eq!((n.user(), n.tag.as_deref()), ("bob", Some("x")));
        let v = Via::parse("SIP/2.0/TCP [2001:db8::1]:5070;rport;branch=z9hG4bKabc");
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "2001:db8::1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rfc3261_branch(), Some("z9hG4bKabc"));
        assert!(v.rport);
        assert_eq!(
            split_commas("SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2"),
            vec!["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b;branch=2"]
        );
    }

    #[test]
    fn response_copies_and_tags() {
        let req = Msg::parse(
            b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP g;branch=z9hG4bK0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 7 BYE\r\nUser-Agent: z\r\n\r\n",
            65535,
        )
        .unwrap();
        assert_eq!(req.cseq(), (7, "BYE"));
        let r = req.response(200, Some("srv"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("To: <sip:c@d>;tag=srv\r\n"));
        assert_eq!(r.list("Via").len(), 2);
        assert!(!text.contains("User-Agent"));
        let back = Msg::parse(&r.to_bytes(), 65535).unwrap();
        assert_eq!(back.code(), Some(200));
        assert_eq!(back.to().tag.as_deref(), Some("srv"));
    }
}
