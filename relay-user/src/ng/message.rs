//! ng messages: the cookie framing, typed requests, and replies.
//!
//! Field names and values follow rtpengine's ng protocol as Kamailio's rtpengine module sends
//! them. Flags are matched after normalising case and separators, because rtpengine accepts
//! `strict source`, `strict-source` and `strict_source` alike and clients use all three.

use std::net::IpAddr;

use super::bencode::{DecodeError, Value};
use crate::media::Family;

/// Longest cookie accepted. Kamailio sends ~20 bytes; the cap bounds the reply cache.
pub const MAX_COOKIE: usize = 64;

/// Why a datagram or dictionary is not a valid ng request or reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The datagram has no space separating a cookie from the body.
    #[error("no cookie (expected `<cookie> <bencode>`)")]
    NoCookie,
    /// The cookie is empty, over [`MAX_COOKIE`] bytes, or not printable.
    #[error("cookie is empty, too long or not printable")]
    BadCookie,
    /// The body is not valid bencode.
    #[error("bencode: {0}")]
    Bencode(#[from] DecodeError),
    /// The body is not a dictionary.
    #[error("message is not a dictionary")]
    NotDict,
    /// A required key is absent.
    #[error("missing key {0:?}")]
    Missing(&'static str),
    /// A key's value has the wrong bencode type.
    #[error("key {0:?} has the wrong type")]
    WrongType(&'static str),
    /// A `command` we do not implement (as sent).
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("bad value for {key:?}: {value:?}")]
    /// A key's value is of the right type but not one we accept.
    BadValue {
        /// The key.
        key: &'static str,
        /// The value as sent.
        value: String,
    },
}

/// Splits `<cookie> <bencode>` and decodes the body.
pub fn parse_datagram(buf: &[u8]) -> Result<(&[u8], Value), MessageError> {
    let sp = buf
        .iter()
        .position(|&b| b == b' ')
        .ok_or(MessageError::NoCookie)?;
    let cookie = &buf[..sp];
    if cookie.is_empty() || cookie.len() > MAX_COOKIE || !cookie.iter().all(u8::is_ascii_graphic) {
        return Err(MessageError::BadCookie);
    }
    Ok((cookie, Value::decode(&buf[sp + 1..])?))
}

/// `<cookie> <bencode>`.
pub fn format_datagram(cookie: &[u8], v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 256);
    out.extend_from_slice(cookie);
    out.push(b' ');
    v.encode_into(&mut out);
    out
}

/// A dictionary key as rtpengine matches it: `_` and ` ` turned into `-` (`received from`,
/// `received-from` and `received_from` are one key). Case is kept: keys such as `ICE` and
/// `SDES` are case-sensitive in rtpengine too.
pub fn normalize_key(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c,
        })
        .collect()
}

/// `key` of dictionary `d`, spelt exactly or with its separators (`-`, ` `, `_`) swapped.
pub fn lookup<'a>(d: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = d.get(key) {
        return Some(v);
    }
    let want = normalize_key(key);
    d.as_dict()?
        .iter()
        .find(|(k, _)| std::str::from_utf8(k).is_ok_and(|k| normalize_key(k) == want))
        .map(|(_, v)| v)
}

/// Lowercase, with `_` and ` ` turned into `-`.
pub fn normalize_flag(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Flags from the `flags` list that change what the relay does; the rest are kept in `other`
/// (accepted and ignored, like rtpengine does with flags it does not know).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// Once latched, drop packets from other sources (RTP bleed protection).
    pub strict_source: bool,
    /// Latch the peer from its first packet. rtpengine's default; explicit flag accepted.
    pub symmetric: bool,
    /// Do not latch: always send to the SDP address.
    pub asymmetric: bool,
    /// Use `received from` instead of the SDP address (`SIP source address`).
    pub sip_source_address: bool,
    /// Trust the SDP address (rtpengine's default since 3.8).
    pub trust_address: bool,
    /// Flags we do not act on, as sent (kept so a request round-trips).
    pub other: Vec<String>,
}

impl Flags {
    fn from_list(v: Option<&Value>) -> Result<Flags, MessageError> {
        let mut f = Flags::default();
        let Some(v) = v else { return Ok(f) };
        let list = v.as_list().ok_or(MessageError::WrongType("flags"))?;
        for item in list {
            let s = item.as_str().ok_or(MessageError::WrongType("flags"))?;
            match normalize_flag(s).as_str() {
                "strict-source" => f.strict_source = true,
                "symmetric" => f.symmetric = true,
                "asymmetric" => f.asymmetric = true,
                "sip-source-address" => f.sip_source_address = true,
                "trust-address" => f.trust_address = true,
                _ => f.other.push(s.to_string()),
            }
        }
        Ok(f)
    }

    fn to_list(&self) -> Vec<Value> {
        let mut l = Vec::new();
        for (on, name) in [
            (self.strict_source, "strict-source"),
            (self.symmetric, "symmetric"),
            (self.asymmetric, "asymmetric"),
            (self.sip_source_address, "SIP-source-address"),
            (self.trust_address, "trust-address"),
        ] {
            if on {
                l.push(Value::str(name));
            }
        }
        l.extend(self.other.iter().map(Value::str));
        l
    }

    /// Whether the relay latches to the first source (symmetric unless `asymmetric`).
    pub fn latch(&self) -> bool {
        !self.asymmetric
    }
}

/// `replace` list entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replace {
    /// `origin`: rewrite the o= line's address too (topology hiding).
    pub origin: bool,
    /// The session-level c= line. We rewrite every c= line anyway (all media are relayed), so
    /// this only round-trips.
    pub session_connection: bool,
    /// Entries we do not act on, as sent.
    pub other: Vec<String>,
}

/// The `ICE` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ice {
    /// Strip ICE attributes from the SDP.
    Remove,
    /// rtpengine's `force`; accepted and passed on, not acted on.
    Force,
    /// rtpengine's `default`; accepted and passed on, not acted on.
    Default,
}

/// Parameters of `offer` and `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The tag of the dialog's caller (From tag).
    pub from_tag: String,
    /// Required in `answer`.
    pub to_tag: Option<String>,
    /// The SDP body to rewrite.
    pub sdp: String,
    /// The `flags` list.
    pub flags: Flags,
    /// The `replace` list.
    pub replace: Replace,
    /// Two interface names: where the sender of this SDP is, where its receiver is.
    pub direction: Vec<String>,
    /// The `ICE` option.
    pub ice: Option<Ice>,
    /// `received from`: the SIP source (`["IP4", "1.2.3.4"]`).
    pub received_from: Option<IpAddr>,
    /// `address family` wanted by the receiver of this SDP.
    pub address_family: Option<Family>,
    /// The SIP Via branch (accepted and passed on; we keep one branch per call).
    pub via_branch: Option<String>,
}

/// The address family as ng spells it: `IP4`, `IP6`.
fn family_parse(s: &str) -> Option<Family> {
    match s {
        "IP4" => Some(Family::V4),
        "IP6" => Some(Family::V6),
        _ => None,
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IP4",
        Family::V6 => "IP6",
    }
}

/// Parameters of `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The SIP Call-ID.
    pub call_id: String,
    /// With a from-tag rtpengine deletes only that branch; we have one branch per call, so a
    /// tag that does not belong to the call is an error and a matching one deletes the call.
    pub from_tag: Option<String>,
    /// Checked like `from_tag`: when given, it must be a side of the call.
    pub to_tag: Option<String>,
    /// `delete-delay` in seconds: keep the call (and its media) this long before removing it.
    /// `None` or 0: at once (relayd's default; rtpengine's is 30 s, see the README).
    pub delete_delay: Option<u32>,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `ping`: answered `pong`.
    Ping,
    /// `offer`: anchor an SDP offer, reply with it rewritten.
    Offer(OfferAnswer),
    /// `answer`: anchor the SDP answer, reply with it rewritten.
    Answer(OfferAnswer),
    /// `delete`: end the call's media.
    Delete(Delete),
    /// `query`: the call's counters.
    Query {
        /// The SIP Call-ID.
        call_id: String,
    },
    /// `list`: the Call-IDs held.
    List {
        /// At most this many; `None`: all.
        limit: Option<u32>,
    },
}

fn req_str(d: &Value, key: &'static str) -> Result<String, MessageError> {
    opt_str(d, key)?.ok_or(MessageError::Missing(key))
}

fn opt_str(d: &Value, key: &'static str) -> Result<Option<String>, MessageError> {
    match lookup(d, key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or(MessageError::WrongType(key)),
    }
}

fn str_list(d: &Value, key: &'static str) -> Result<Vec<String>, MessageError> {
    match lookup(d, key) {
        None => Ok(Vec::new()),
        Some(v) => v
            .as_list()
            .ok_or(MessageError::WrongType(key))?
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or(MessageError::WrongType(key))
            })
            .collect(),
    }
}

impl Request {
    /// The `command` value.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Offer(_) => "offer",
            Request::Answer(_) => "answer",
            Request::Delete(_) => "delete",
            Request::Query { .. } => "query",
            Request::List { .. } => "list",
        }
    }

    /// Reads a request dictionary; fails on an unknown command, a missing or ill-typed key.
    pub fn from_value(d: &Value) -> Result<Request, MessageError> {
        if d.as_dict().is_none() {
            return Err(MessageError::NotDict);
        }
        let cmd = req_str(d, "command")?;
        Ok(match cmd.as_str() {
            "ping" => Request::Ping,
            "offer" => Request::Offer(OfferAnswer::from_value(d, false)?),
            "answer" => Request::Answer(OfferAnswer::from_value(d, true)?),
            "delete" => Request::Delete(Delete {
                call_id: req_str(d, "call-id")?,
                from_tag: opt_str(d, "from-tag")?,
                to_tag: opt_str(d, "to-tag")?,
                delete_delay: match lookup(d, "delete-delay") {
                    None => None,
                    Some(v) => Some(int_or_str(v).ok_or(MessageError::WrongType("delete-delay"))?),
                },
            }),
            "query" => Request::Query {
                call_id: req_str(d, "call-id")?,
            },
            "list" => Request::List {
                limit: match lookup(d, "limit") {
                    None => None,
                    Some(v) => Some(int_or_str(v).ok_or(MessageError::WrongType("limit"))?),
                },
            },
            _ => return Err(MessageError::UnknownCommand(cmd)),
        })
    }

    /// The request dictionary (what a client sends after the cookie).
    pub fn to_value(&self) -> Value {
        let mut d = Value::dict().with("command", self.command());
        match self {
            Request::Ping => {}
            Request::Offer(oa) | Request::Answer(oa) => oa.fill(&mut d),
            Request::Delete(del) => {
                d.insert("call-id", del.call_id.as_str());
                if let Some(t) = &del.from_tag {
                    d.insert("from-tag", t.as_str());
                }
                if let Some(t) = &del.to_tag {
                    d.insert("to-tag", t.as_str());
                }
                if let Some(s) = del.delete_delay {
                    d.insert("delete-delay", i64::from(s));
                }
            }
            Request::Query { call_id } => {
                d.insert("call-id", call_id.as_str());
            }
            Request::List { limit } => {
                if let Some(l) = limit {
                    d.insert("limit", i64::from(*l));
                }
            }
        }
        d
    }
}

/// Kamailio sends some numbers as strings.
fn int_or_str(v: &Value) -> Option<u32> {
    match v {
        Value::Int(i) => u32::try_from(*i).ok(),
        Value::Bytes(_) => v.as_str()?.parse().ok(),
        _ => None,
    }
}

impl OfferAnswer {
    /// A minimal offer/answer for a client to fill further.
    pub fn new(call_id: &str, from_tag: &str, sdp: &str) -> OfferAnswer {
        OfferAnswer {
            call_id: call_id.into(),
            from_tag: from_tag.into(),
            to_tag: None,
            sdp: sdp.into(),
            flags: Flags::default(),
            replace: Replace::default(),
            direction: Vec::new(),
            ice: None,
            received_from: None,
            address_family: None,
            via_branch: None,
        }
    }

    fn from_value(d: &Value, answer: bool) -> Result<OfferAnswer, MessageError> {
        let mut replace = Replace::default();
        for r in str_list(d, "replace")? {
            match normalize_flag(&r).as_str() {
                "origin" => replace.origin = true,
                "session-connection" => replace.session_connection = true,
                _ => replace.other.push(r),
            }
        }
        let ice = match opt_str(d, "ICE")? {
            None => None,
            Some(s) => Some(match normalize_flag(&s).as_str() {
                "remove" => Ice::Remove,
                "force" => Ice::Force,
                "default" => Ice::Default,
                _ => {
                    return Err(MessageError::BadValue {
                        key: "ICE",
                        value: s,
                    });
                }
            }),
        };
        let received_from = match lookup(d, "received from") {
            None => None,
            Some(v) => {
                let l = v
                    .as_list()
                    .ok_or(MessageError::WrongType("received from"))?;
                let bad = || MessageError::BadValue {
                    key: "received from",
                    value: format!("{v:?}"),
                };
                let [fam, addr] = l else { return Err(bad()) };
                let fam = fam.as_str().and_then(family_parse).ok_or_else(bad)?;
                let addr: IpAddr = addr.as_str().and_then(|a| a.parse().ok()).ok_or_else(bad)?;
                if Family::of(&addr) != fam {
                    return Err(bad());
                }
                Some(addr)
            }
        };
        let address_family = match opt_str(d, "address family")? {
            None => None,
            Some(s) => Some(family_parse(&s).ok_or(MessageError::BadValue {
                key: "address family",
                value: s,
            })?),
        };
        let direction = str_list(d, "direction")?;
        if !direction.is_empty() && direction.len() != 2 {
            return Err(MessageError::BadValue {
                key: "direction",
                value: direction.join(","),
            });
        }
        let sdp = match lookup(d, "sdp") {
            None => return Err(MessageError::Missing("sdp")),
            // SDP is text; anything non-UTF-8 is malformed for our parser anyway.
            Some(v) => v
                .as_str()
                .ok_or(MessageError::WrongType("sdp"))?
                .to_string(),
        };
        let to_tag = opt_str(d, "to-tag")?;
        if answer && to_tag.is_none() {
            return Err(MessageError::Missing("to-tag"));
        }
        Ok(OfferAnswer {
            call_id: req_str(d, "call-id")?,
            from_tag: req_str(d, "from-tag")?,
            to_tag,
            sdp,
            flags: Flags::from_list(lookup(d, "flags"))?,
            replace,
            direction,
            ice,
            received_from,
            address_family,
            via_branch: opt_str(d, "via-branch")?,
        })
    }

    fn fill(&self, d: &mut Value) {
        d.insert("call-id", self.call_id.as_str());
        d.insert("from-tag", self.from_tag.as_str());
        if let Some(t) = &self.to_tag {
            d.insert("to-tag", t.as_str());
        }
        d.insert("sdp", self.sdp.as_str());
        let flags = self.flags.to_list();
        if !flags.is_empty() {
            d.insert("flags", flags);
        }
        let mut rep = Vec::new();
        if self.replace.origin {
            rep.push(Value::str("origin"));
        }
        if self.replace.session_connection {
            rep.push(Value::str("session-connection"));
        }
        rep.extend(self.replace.other.iter().map(Value::str));
        if !rep.is_empty() {
            d.insert("replace", rep);
        }
        if !self.direction.is_empty() {
            d.insert(
                "direction",
                self.direction.iter().map(Value::str).collect::<Vec<_>>(),
            );
        }
        if let Some(ice) = self.ice {
            let s = match ice {
                Ice::Remove => "remove",
                Ice::Force => "force",
                Ice::Default => "default",
            };
            d.insert("ICE", s);
        }
        if let Some(a) = self.received_from {
            let fam = family_name(Family::of(&a));
            d.insert(
                "received from",
                vec![Value::str(fam), Value::str(a.to_string())],
            );
        }
        if let Some(f) = self.address_family {
            d.insert("address family", family_name(f));
        }
        if let Some(b) = &self.via_branch {
            d.insert("via-branch", b.as_str());
        }
    }
}

/// A reply: `result` plus whatever else the command returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response(pub Value);

impl Response {
    /// `result: pong`.
    pub fn pong() -> Response {
        Response(Value::dict().with("result", "pong"))
    }

    /// `result: ok`.
    pub fn ok() -> Response {
        Response(Value::dict().with("result", "ok"))
    }

    /// `result: load limit` with `message`: rtpengine's reply when it takes no more calls
    /// (session, CPU or bandwidth limit). Kamailio's rtpengine module then tries the next relay
    /// of the set.
    pub fn load_limit(message: &str) -> Response {
        Response(
            Value::dict()
                .with("result", "load limit")
                .with("message", message),
        )
    }

    /// `result: error` with `reason` as `error-reason`.
    pub fn error(reason: impl std::fmt::Display) -> Response {
        Response(
            Value::dict()
                .with("result", "error")
                .with("error-reason", reason.to_string()),
        )
    }

    /// Sets `key` (builder form).
    pub fn with(mut self, key: &str, v: impl Into<Value>) -> Response {
        self.0.insert(key, v);
        self
    }

    /// `result`: `ok`, `pong`, `error`, ...
    pub fn result(&self) -> Option<&str> {
        self.0.get("result").and_then(Value::as_str)
    }

    /// Whether `result` is `ok` or `pong`.
    pub fn is_ok(&self) -> bool {
        matches!(self.result(), Some("ok" | "pong"))
    }

    /// `error-reason`, if any.
    pub fn error_reason(&self) -> Option<&str> {
        self.0.get("error-reason").and_then(Value::as_str)
    }

    /// The rewritten `sdp`, if any.
    pub fn sdp(&self) -> Option<&str> {
        self.0.get("sdp").and_then(Value::as_str)
    }

    /// Any key of the reply.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A reply from a decoded dictionary; fails without a string `result`.
    pub fn from_value(v: Value) -> Result<Response, MessageError> {
        if v.as_dict().is_none() {
            return Err(MessageError::NotDict);
        }
        if v.get("result").and_then(Value::as_str).is_none() {
            return Err(MessageError::Missing("result"));
        }
        Ok(Response(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_framing() {
        let (c, v) = parse_datagram(b"5323_1 d7:command4:pinge").unwrap();
        assert_eq!(c, b"5323_1");
        assert_eq!(Request::from_value(&v).unwrap(), Request::Ping);
        assert_eq!(parse_datagram(b"nocookie"), Err(MessageError::NoCookie));
        assert_eq!(
            parse_datagram(b" d7:command4:pinge"),
            Err(MessageError::BadCookie)
        );
        assert!(matches!(
            parse_datagram(b"c d7:command4:ping"),
            Err(MessageError::Bencode(_))
        ));
        let v = Value::dict().with("result", "pong");
        assert_eq!(format_datagram(b"x1", &v), b"x1 d6:result4:ponge");
    }

    #[test]
    fn kamailio_offer() {
        // As Kamailio's rtpengine module sends it (keys unsorted, flags with spaces).
        let v = Value::dict()
            .with("sdp", "v=0\r\n")
            .with("ICE", "remove")
            .with(
                "flags",
                vec![
                    Value::str("strict source"),
                    Value::str("trust-address"),
                    Value::str("loop-protect"),
                ],
            )
            .with(
                "replace",
                vec![Value::str("origin"), Value::str("session-connection")],
            )
            .with(
                "received from",
                vec![Value::str("IP4"), Value::str("10.0.0.9")],
            )
            .with("call-id", "c1@h")
            .with("via-branch", "z9hG4bK1")
            .with("from-tag", "ft")
            .with("direction", vec![Value::str("pub"), Value::str("priv")])
            .with("command", "offer");
        let Request::Offer(o) = Request::from_value(&v).unwrap() else {
            panic!()
        };
        assert!(o.flags.strict_source && o.flags.trust_address && o.flags.latch());
        assert_eq!(o.flags.other, vec!["loop-protect".to_string()]);
        assert!(o.replace.origin && o.replace.session_connection);
        assert_eq!(o.ice, Some(Ice::Remove));
        assert_eq!(o.received_from, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(o.direction, vec!["pub", "priv"]);
        // Round trip through our own encoder.
        let again = Request::from_value(&Request::Offer(o.clone()).to_value()).unwrap();
        assert_eq!(again, Request::Offer(o));
    }

    #[test]
    fn typed_errors() {
        let base = || Value::dict().with("command", "answer").with("call-id", "c");
        assert_eq!(
            Request::from_value(&base()),
            Err(MessageError::Missing("sdp"))
        );
        assert_eq!(
            Request::from_value(&base().with("sdp", "v=0").with("from-tag", "f")),
            Err(MessageError::Missing("to-tag"))
        );
        assert_eq!(
            Request::from_value(&Value::dict().with("command", "fly")),
            Err(MessageError::UnknownCommand("fly".into()))
        );
        assert_eq!(
            Request::from_value(&Value::List(vec![])),
            Err(MessageError::NotDict)
        );
        assert_eq!(
            Request::from_value(&Value::dict().with("command", Value::Int(1))),
            Err(MessageError::WrongType("command"))
        );
        let bad_rf = Value::dict()
            .with("command", "offer")
            .with("call-id", "c")
            .with("from-tag", "f")
            .with("sdp", "v=0")
            .with(
                "received from",
                vec![Value::str("IP6"), Value::str("1.2.3.4")],
            );
        assert!(matches!(
            Request::from_value(&bad_rf),
            Err(MessageError::BadValue { .. })
        ));
        assert_eq!(
            Request::from_value(&Value::dict().with("command", "list").with("limit", "5")),
            Ok(Request::List { limit: Some(5) })
        );
    }

    #[test]
    fn separators_in_keys_and_flags_are_alike() {
        // rtpengine treats `-`, ` ` and `_` alike in keys and flags; Kamailio and other
        // clients use all three spellings.
        let v = Value::dict()
            .with("command", "offer")
            .with("call id", "c1")
            .with("from_tag", "ft")
            .with("sdp", "v=0\r\n")
            .with(
                "flags",
                vec![
                    Value::str("SIP_source_address"),
                    Value::str("trust address"),
                    Value::str("Strict-Source"),
                ],
            )
            .with(
                "received-from",
                vec![Value::str("IP4"), Value::str("10.0.0.9")],
            )
            .with("address_family", "IP4")
            .with("via branch", "z9hG4bK1");
        let Request::Offer(o) = Request::from_value(&v).unwrap() else {
            panic!()
        };
        assert_eq!(o.call_id, "c1");
        assert_eq!(o.from_tag, "ft");
        assert!(o.flags.sip_source_address && o.flags.trust_address && o.flags.strict_source);
        assert!(o.flags.other.is_empty(), "{:?}", o.flags.other);
        assert_eq!(o.received_from, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(o.address_family, Some(Family::V4));
        assert_eq!(o.via_branch.as_deref(), Some("z9hG4bK1"));
        assert_eq!(
            normalize_key("received_from"),
            normalize_key("received from")
        );
        assert_eq!(normalize_flag("SIP source-address"), "sip-source-address");
    }

    #[test]
    fn delete_delay_as_kamailio_sends_it() {
        // Kamailio passes `delete-delay=2` on as a string value.
        for (key, v) in [
            ("delete-delay", Value::str("2")),
            ("delete delay", Value::Int(2)),
        ] {
            let d = Value::dict()
                .with("command", "delete")
                .with("call-id", "c")
                .with(key, v);
            let Request::Delete(del) = Request::from_value(&d).unwrap() else {
                panic!()
            };
            assert_eq!(del.delete_delay, Some(2));
            let again = Request::from_value(&Request::Delete(del.clone()).to_value()).unwrap();
            assert_eq!(again, Request::Delete(del));
        }
        let bad = Value::dict()
            .with("command", "delete")
            .with("call-id", "c")
            .with("delete-delay", "soon");
        assert_eq!(
            Request::from_value(&bad),
            Err(MessageError::WrongType("delete-delay"))
        );
    }

    #[test]
    fn load_limit_reply() {
        let r = Response::load_limit("Parallel session limit reached");
        assert_eq!(r.result(), Some("load limit"));
        assert!(!r.is_ok());
        assert_eq!(
            r.get("message").and_then(Value::as_str),
            Some("Parallel session limit reached")
        );
    }
}
