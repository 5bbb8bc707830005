//! `WWW-Authenticate` / `Proxy-Authenticate` digest challenges (RFC 7616 §3.3, RFC 8760).

use std::fmt;

use super::algorithm::Algorithm;

/// One challenge header value. RFC 8760 §2.4: a server offering several algorithms sends one
/// challenge each, most preferred first; the verifier builds them in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Our realm.
    pub realm: String,
    /// A fresh nonce from [`NonceKey::issue`](super::NonceKey::issue).
    pub nonce: String,
    /// The algorithm this challenge offers (one header per algorithm).
    pub algorithm: Algorithm,
    /// Tells the client its credentials were right but the nonce expired, so it retries
    /// silently instead of prompting for a password (RFC 7616 §3.3).
    pub stale: bool,
}

/// RFC 3261 quoted-string: escape the two characters that would end or break it.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        if c == '\r' || c == '\n' {
            // A realm never legitimately has these; dropping them keeps the header one line.
            continue;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        // qop is always offered, even when legacy no-qop answers are accepted: clients that
        // understand it must use it, which is what gives us nc replay protection.
        write!(f, ", algorithm={}, qop=\"auth\"", self.algorithm)?;
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_escapes() {
        let c = Challenge {
            realm: "a\"b\\c\r\n".into(),
            nonce: "n".into(),
            algorithm: Algorithm::Sha256,
            stale: true,
        };
        assert_eq!(
            c.to_string(),
            r#"Digest realm="a\"b\\c", nonce="n", algorithm=SHA-256, qop="auth", stale=true"#
        );
    }
}
