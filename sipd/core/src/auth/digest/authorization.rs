//! The `Authorization` / `Proxy-Authorization` header value of a digest response
//! (RFC 3261 §25.1 `digest-response`, RFC 7616 §3.4).
//!
//! This runs on bytes from unauthenticated peers before anything else is known about them, so
//! it is strict about sizes and structure, never allocates proportionally to attacker input
//! beyond the size limit, and reports what was wrong without echoing unbounded input back.

use std::str::FromStr;

use super::algorithm::{Algorithm, UnknownAlgorithm};

/// Whole header value. Real responses are ~300–600 bytes; 4 KiB leaves room for long URIs.
pub const MAX_HEADER_LEN: usize = 4096;
/// Any single parameter value.
pub const MAX_VALUE_LEN: usize = 1024;
/// Parameters, known and unknown together; 11 are defined, clients add a few vendor ones.
pub const MAX_PARAMS: usize = 32;

/// Quality of protection. Only `auth`: `auth-int` would need the body hashed before routing,
/// and no carrier equipment we target uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// `qop=auth`: the request line is authenticated, not the body.
    Auth,
}

/// A parsed digest response. Values are unescaped; `response` is lowercased hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestAuthorization {
    /// Digest username as sent (not yet matched to any account).
    pub username: String,
    /// The realm the client answered for.
    pub realm: String,
    /// The nonce it answered, as sent.
    pub nonce: String,
    /// The `uri` parameter, which must be the Request-URI.
    pub uri: String,
    /// The response digest, lowercase hex of the algorithm's length.
    pub response: String,
    /// `MD5` when the header leaves it out (RFC 7616 §3.4).
    pub algorithm: Algorithm,
    /// `qop`, `nc` and `cnonce` come together or not at all (the legacy RFC 2069 form).
    pub qop: Option<QopParams>,
    /// Echoed from the challenge; we send none and ignore it.
    pub opaque: Option<String>,
}

/// The qop parameters of an RFC 2617/7616 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QopParams {
    /// Always `auth`: anything else is refused at parse.
    pub qop: Qop,
    /// The nonce-count, kept as sent (8 hex digits) because it is hashed verbatim.
    pub nc_text: String,
    /// The nonce-count as a number, for replay checks.
    pub nc: u32,
    /// The client nonce, hashed into the response.
    pub cnonce: String,
}

/// Why an `Authorization` value was refused; never echoes more than a clipped name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    /// Over [`MAX_HEADER_LEN`] bytes (the length is given).
    #[error("header value is {0} bytes, over the {MAX_HEADER_LEN}-byte limit")]
    TooLong(usize),
    /// Another scheme (`Basic`, ...).
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// Not the `name=value, ...` grammar.
    #[error("syntax error at byte {at}: expected {expected}")]
    Syntax {
        /// Byte offset in the header value.
        at: usize,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// Over [`MAX_PARAMS`] parameters.
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    /// A value over [`MAX_VALUE_LEN`] bytes.
    #[error("value of {name:?} is over the {MAX_VALUE_LEN}-byte limit")]
    ValueTooLong {
        /// The parameter's name, clipped.
        name: String,
    },
    /// A parameter given twice (which one counts would be ambiguous).
    #[error("parameter {name:?} appears more than once")]
    Duplicate {
        /// The parameter's name, clipped.
        name: String,
    },
    /// A required parameter (named) is absent.
    #[error("required parameter {0:?} is missing")]
    Missing(&'static str),
    /// A qop other than `auth` (clipped).
    #[error("qop {0:?} is not supported (only auth)")]
    UnsupportedQop(String),
    /// `nc` is not exactly 8 hex digits.
    #[error("nc must be exactly 8 hex digits")]
    BadNonceCount,
    /// `response` is not hex of the algorithm's length.
    #[error("response must be {expected} hex digits for {algorithm}")]
    BadResponse {
        /// The algorithm the answer claims.
        algorithm: Algorithm,
        /// Hex digits that algorithm's response has.
        expected: usize,
    },
    /// An `algorithm` token we do not know.
    #[error(transparent)]
    UnknownAlgorithm(#[from] UnknownAlgorithm),
    /// `userhash=true` (RFC 7616 §3.4.4), which we do not offer.
    #[error("userhash is not supported")]
    UserhashUnsupported,
}

fn clip(name: &str) -> String {
    name.chars().take(32).collect()
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A cursor over the header value. Every delimiter is ASCII, so byte positions that stop on
/// one are always `str` char boundaries.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_lws(&mut self) {
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
    }

    fn token(&mut self, expected: &'static str) -> Result<&'a str, AuthorizationError> {
        let start = self.pos;
        while self.peek().is_some_and(is_token_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(AuthorizationError::Syntax {
                at: start,
                expected,
            });
        }
        Ok(&self.s[start..self.pos])
    }

    fn quoted(&mut self, name: &str) -> Result<String, AuthorizationError> {
        // Caller saw the opening quote.
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.pos..];
            let Some(c) = rest.chars().next() else {
                return Err(AuthorizationError::Syntax {
                    at: self.pos,
                    expected: "closing quote",
                });
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\\' => {
                    let Some(escaped) = rest[1..].chars().next() else {
                        return Err(AuthorizationError::Syntax {
                            at: self.pos,
                            expected: "escaped character",
                        });
                    };
                    // quoted-pair excludes CR and LF (RFC 3261 §25.1): they would let a value
                    // smuggle a header line into logs or a rebuilt message.
                    if escaped == '\r' || escaped == '\n' {
                        return Err(AuthorizationError::Syntax {
                            at: self.pos + 1,
                            expected: "escaped character other than CR/LF",
                        });
                    }
                    out.push(escaped);
                    self.pos += 1 + escaped.len_utf8();
                }
                c if c.is_control() && c != '\t' => {
                    return Err(AuthorizationError::Syntax {
                        at: self.pos,
                        expected: "printable character in quoted string",
                    });
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
            if out.len() > MAX_VALUE_LEN {
                return Err(AuthorizationError::ValueTooLong { name: clip(name) });
            }
        }
    }
}

/// Raw `name=value` pairs in order, names lowercased, duplicates refused.
fn params(s: &str) -> Result<Vec<(String, String)>, AuthorizationError> {
    if s.len() > MAX_HEADER_LEN {
        return Err(AuthorizationError::TooLong(s.len()));
    }
    let mut c = Cursor { s, pos: 0 };
    c.skip_lws();
    let scheme = c.token("authentication scheme")?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(AuthorizationError::NotDigest);
    }
    if !c.peek().is_some_and(is_lws) {
        return Err(AuthorizationError::Syntax {
            at: c.pos,
            expected: "whitespace after Digest",
        });
    }
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        c.skip_lws();
        // Empty list elements (",,") are legal in HTTP list syntax; skip them.
        while c.peek() == Some(b',') {
            c.pos += 1;
            c.skip_lws();
        }
        if c.peek().is_none() {
            break;
        }
        let name = c.token("parameter name")?.to_ascii_lowercase();
        c.skip_lws();
        if c.peek() != Some(b'=') {
            return Err(AuthorizationError::Syntax {
                at: c.pos,
                expected: "'='",
            });
        }
        c.pos += 1;
        c.skip_lws();
        let value = if c.peek() == Some(b'"') {
            c.quoted(&name)?
        } else {
            c.token("parameter value")?.to_owned()
        };
        if value.len() > MAX_VALUE_LEN {
            return Err(AuthorizationError::ValueTooLong { name: clip(&name) });
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(AuthorizationError::Duplicate { name: clip(&name) });
        }
        if out.len() == MAX_PARAMS {
            return Err(AuthorizationError::TooManyParams);
        }
        out.push((name, value));
        c.skip_lws();
        match c.peek() {
            None => break,
            Some(b',') => c.pos += 1,
            Some(_) => {
                return Err(AuthorizationError::Syntax {
                    at: c.pos,
                    expected: "',' or end of header",
                });
            }
        }
    }
    Ok(out)
}

impl FromStr for DigestAuthorization {
    type Err = AuthorizationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut params = params(s)?;
        let mut take = |name: &str| {
            params
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| params.swap_remove(i).1)
        };
        let username = take("username").ok_or(AuthorizationError::Missing("username"))?;
        let realm = take("realm").ok_or(AuthorizationError::Missing("realm"))?;
        let nonce = take("nonce").ok_or(AuthorizationError::Missing("nonce"))?;
        let uri = take("uri").ok_or(AuthorizationError::Missing("uri"))?;
        let response = take("response").ok_or(AuthorizationError::Missing("response"))?;
        let algorithm = match take("algorithm") {
            Some(a) => a.parse()?,
            // RFC 7616 §3.4: absent means MD5.
            None => Algorithm::Md5,
        };
        let opaque = take("opaque");
        if take("userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(AuthorizationError::UserhashUnsupported);
        }
        let qop = match take("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc_text = take("nc").ok_or(AuthorizationError::Missing("nc"))?;
                if nc_text.len() != 8 || !nc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(AuthorizationError::BadNonceCount);
                }
                let nc = u32::from_str_radix(&nc_text, 16)
                    .map_err(|_| AuthorizationError::BadNonceCount)?;
                let cnonce = take("cnonce")
                    .filter(|c| !c.is_empty())
                    .ok_or(AuthorizationError::Missing("cnonce"))?;
                Some(QopParams {
                    qop: Qop::Auth,
                    nc_text,
                    nc,
                    cnonce,
                })
            }
            Some(other) => return Err(AuthorizationError::UnsupportedQop(clip(&other))),
        };
        let expected = algorithm.hash().hex_len();
        if response.len() != expected || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthorizationError::BadResponse {
                algorithm,
                expected,
            });
        }
        Ok(DigestAuthorization {
            username,
            realm,
            nonce,
            uri,
            response: response.to_ascii_lowercase(),
            algorithm,
            qop,
            opaque,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC2617: &str = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    #[test]
    fn parses_rfc2617_example() {
        let a: DigestAuthorization = RFC2617.parse().unwrap();
        assert_eq!(a.username, "Mufasa");
        assert_eq!(a.realm, "testrealm@host.com");
        assert_eq!(a.uri, "/dir/index.html");
        assert_eq!(a.algorithm, Algorithm::Md5);
        let q = a.qop.unwrap();
        assert_eq!(
            (q.nc, q.nc_text.as_str(), q.cnonce.as_str()),
            (1, "00000001", "0a4f113b")
        );
        assert_eq!(
            a.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
    }

    #[test]
    fn unescapes_and_ignores_unknown_and_tolerates_quoted_tokens() {
        let a: DigestAuthorization = r#"digest USERNAME="a\"b\\c", realm="r", nonce="n", uri="sip:x@y", response="0123456789ABCDEF0123456789abcdef", qop="auth", nc=0000000a, cnonce="c", algorithm="md5", x-vendor=foo, other="bar,baz""#
            .parse()
            .unwrap();
        assert_eq!(a.username, "a\"b\\c");
        assert_eq!(a.response, "0123456789abcdef0123456789abcdef");
        assert_eq!(a.qop.unwrap().nc, 10);
    }

    #[test]
    fn legacy_no_qop_form() {
        let a: DigestAuthorization =
            r#"Digest username="u",realm="r",nonce="n",uri="sip:a",response="0123456789abcdef0123456789abcdef""#
                .parse()
                .unwrap();
        assert!(a.qop.is_none());
    }

    fn err(s: &str) -> AuthorizationError {
        s.parse::<DigestAuthorization>().unwrap_err()
    }

    const OK_TAIL: &str =
        r#"realm="r", nonce="n", uri="sip:a", response="0123456789abcdef0123456789abcdef""#;

    #[test]
    fn rejects_malformed() {
        use AuthorizationError::*;
        assert_eq!(
            err(""),
            Syntax {
                at: 0,
                expected: "authentication scheme"
            }
        );
        assert_eq!(err("Basic dXNlcjpwYXNz"), NotDigest);
        assert_eq!(
            err("Digest"),
            Syntax {
                at: 6,
                expected: "whitespace after Digest"
            }
        );
        assert_eq!(
            err(r#"Digest username="u"#),
            Syntax {
                at: 18,
                expected: "closing quote"
            }
        );
        assert_eq!(
            err(r#"Digest username="u\"#),
            Syntax {
                at: 18,
                expected: "escaped character"
            }
        );
        assert!(matches!(
            err(r#"Digest username "u""#),
            Syntax {
                expected: "'='",
                ..
            }
        ));
        assert!(matches!(
            err(r#"Digest username="u" realm="r""#),
            Syntax { .. }
        ));
        assert!(matches!(err("Digest username=\"a\x01\""), Syntax { .. }));
        assert!(matches!(err("Digest username=\"a\\\r\""), Syntax { .. }));
        assert_eq!(
            err(&format!(r#"Digest username="u", Username="v", {OK_TAIL}"#)),
            Duplicate {
                name: "username".into()
            }
        );
        assert_eq!(err(&format!("Digest {OK_TAIL}")), Missing("username"));
        assert_eq!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, qop=auth-int, nc=00000001, cnonce="c""#
            )),
            UnsupportedQop("auth-int".into())
        );
        assert_eq!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, qop=auth, nc=1, cnonce="c""#
            )),
            BadNonceCount
        );
        assert_eq!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, qop=auth, nc=0000000g, cnonce="c""#
            )),
            BadNonceCount
        );
        assert_eq!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, qop=auth, nc=00000001"#
            )),
            Missing("cnonce")
        );
        assert_eq!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, qop=auth, cnonce="c""#
            )),
            Missing("nc")
        );
        assert!(matches!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, algorithm=SHA-256"#
            )),
            BadResponse { expected: 64, .. }
        ));
        assert!(matches!(
            err(&format!(
                r#"Digest username="u", {OK_TAIL}, algorithm=SHA-1"#
            )),
            UnknownAlgorithm(_)
        ));
        assert_eq!(
            err(&format!(r#"Digest username="u", {OK_TAIL}, userhash=true"#)),
            UserhashUnsupported
        );
    }

    #[test]
    fn enforces_size_limits() {
        let long = "a".repeat(MAX_HEADER_LEN);
        assert!(matches!(
            err(&format!("Digest username=\"{long}\"")),
            AuthorizationError::TooLong(_)
        ));
        let value = "a".repeat(MAX_VALUE_LEN + 1);
        assert!(matches!(
            err(&format!("Digest username=\"{value}\"")),
            AuthorizationError::ValueTooLong { .. }
        ));
        assert!(matches!(
            err(&format!("Digest username={value}")),
            AuthorizationError::ValueTooLong { .. }
        ));
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=x,")).collect();
        assert_eq!(
            err(&format!("Digest {many}")),
            AuthorizationError::TooManyParams
        );
    }

    #[test]
    fn never_panics_on_arbitrary_prefixes_and_bytes() {
        let full = format!("{RFC2617}, x=\"é\\ü\"");
        for end in 0..=full.len() {
            if full.is_char_boundary(end) {
                let _ = full[..end].parse::<DigestAuthorization>();
            }
        }
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let s: String = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    b"Digest =,\"\\ a1\r\n\t"[(seed % 17) as usize] as char
                })
                .collect();
            let _ = s.parse::<DigestAuthorization>();
        }
    }
}
