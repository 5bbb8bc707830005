//! Whether the `uri` of a digest answer designates the request's Request-URI, compared as
//! SIP URIs (RFC 3261 §19.1.4), not as strings: the digest covers the `uri` parameter only,
//! so without this check an answer captured for one number could be replayed against
//! another (RFC 3261 §22.4 has the server check that they match).
//!
//! Kamailio's auth module never compares the two; it binds the nonce to the Request-URI
//! instead (`auth_checks_*`, a hash of the R-URI inside the nonce) and answers a mismatch
//! as a stale nonce. Our nonces are stateless and shared by every request of a caller, so
//! the comparison is made here, on the answer.

/// A SIP or SIPS URI split into what §19.1.4 compares; other schemes compare whole.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    scheme: String,
    /// `user[:password]`, %-escapes of unreserved characters decoded, case kept.
    userinfo: Option<String>,
    host: String,
    port: Option<u16>,
    /// Names and values lowercased and decoded, sorted.
    params: Vec<(String, Option<String>)>,
    headers: Vec<(String, String)>,
}

/// `%XX` of a character that is not reserved is the character itself (§19.1.4); reserved
/// ones stay escaped, because escaping them changes the meaning.
fn unescape(s: &str) -> Option<String> {
    const RESERVED: &[u8] = b";/?:@&=+$,";
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if RESERVED.contains(&v) {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                out.push(v);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse(uri: &str) -> Option<Parts> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let (scheme, rest) = uri.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return None;
    }
    let (rest, headers) = match rest.split_once('?') {
        Some((r, h)) => (r, Some(h)),
        None => (rest, None),
    };
    // The userinfo may itself contain ';' (a telephone-subscriber's parameters), so the
    // parameters start after the '@' when there is one.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(unescape(&rest[..at])?), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut pieces = after.split(';');
    let hostport = pieces.next()?;
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once(']')?;
        (format!("[{h}]"), p)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p),
            None => (hostport.to_owned(), ""),
        }
    };
    let port = match port.strip_prefix(':').unwrap_or(port) {
        "" => None,
        p => Some(p.parse().ok()?),
    };
    if host.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    for p in pieces.filter(|p| !p.is_empty()) {
        let (n, v) = match p.split_once('=') {
            Some((n, v)) => (n, Some(unescape(v)?.to_ascii_lowercase())),
            None => (p, None),
        };
        params.push((unescape(n)?.to_ascii_lowercase(), v));
    }
    params.sort();
    let mut hdrs = Vec::new();
    for h in headers.into_iter().flat_map(|h| h.split('&')) {
        let (n, v) = h.split_once('=').unwrap_or((h, ""));
        hdrs.push((unescape(n)?.to_ascii_lowercase(), unescape(v)?));
    }
    hdrs.sort();
    Some(Parts {
        scheme,
        userinfo,
        host: host.to_ascii_lowercase(),
        port,
        params,
        headers: hdrs,
    })
}

/// The §19.1.4 rules for parameters: one present in both must match; `user`, `ttl`,
/// `method` and `maddr` present in one only never match; others present in one only are
/// ignored.
fn params_match(a: &[(String, Option<String>)], b: &[(String, Option<String>)]) -> bool {
    let one_sided_never = ["user", "ttl", "method", "maddr"];
    let get = |l: &[(String, Option<String>)], n: &str| -> Option<Option<String>> {
        l.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    };
    let check = |x: &[(String, Option<String>)], y: &[(String, Option<String>)]| {
        x.iter().all(|(n, v)| match get(y, n) {
            Some(w) => &w == v,
            None => !one_sided_never.contains(&n.as_str()),
        })
    };
    check(a, b) && check(b, a)
}

/// Whether the digest answer's `uri` designates `request_uri` (both as sent).
pub fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    match (parse(digest_uri), parse(request_uri)) {
        (Some(a), Some(b)) => {
            a.scheme == b.scheme
                && a.userinfo == b.userinfo
                && a.host == b.host
                && a.port == b.port
                && a.headers == b.headers
                && params_match(&a.params, &b.params)
        }
        // tel: and other schemes: the same text, scheme case aside.
        (None, None) => match (digest_uri.split_once(':'), request_uri.split_once(':')) {
            (Some((s1, r1)), Some((s2, r2))) => {
                let sip = |s: &str| s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips");
                // A SIP URI that does not parse matches nothing.
                !sip(s1) && s1.eq_ignore_ascii_case(s2) && r1 == r2
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::same_uri;

    #[test]
    fn equal_as_uris() {
        for (a, b) in [
            (
                "sip:3312345678@10.0.0.1:5060",
                "sip:3312345678@10.0.0.1:5060",
            ),
            (
                "SIP:3312345678@SBC.Example.com",
                "sip:3312345678@sbc.example.com",
            ),
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:bob@biloxi.com;transport=udp", "sip:bob@biloxi.com"),
            ("sip:a@h;x=1;y=2", "sip:a@h;y=2;x=1"),
            ("sip:a@[2001:db8::1]:5060", "sip:a@[2001:DB8::1]:5060"),
            ("tel:+441234", "TEL:+441234"),
        ] {
            assert!(same_uri(a, b), "{a} = {b}");
            assert!(same_uri(b, a), "{b} = {a}");
        }
    }

    #[test]
    fn different_as_uris() {
        for (a, b) in [
            // Another number: the replay this check exists for.
            ("sip:3312345678@10.0.0.1", "sip:3399999999@10.0.0.1"),
            ("sip:ALICE@atlanta.com", "sip:alice@atlanta.com"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
            ("sip:bob@biloxi.com", "sip:biloxi.com"),
            ("sip:bob@biloxi.com;user=phone", "sip:bob@biloxi.com"),
            ("sip:bob@biloxi.com;maddr=10.0.0.9", "sip:bob@biloxi.com"),
            (
                "sip:bob@biloxi.com;transport=tcp",
                "sip:bob@biloxi.com;transport=udp",
            ),
            ("sip:bob@biloxi.com?subject=a", "sip:bob@biloxi.com"),
            ("sip:bob@10.0.0.1", "sip:bob@10.0.0.2"),
            ("tel:+441234", "tel:+441235"),
            ("sip:bob@h", "tel:bob"),
            ("", "sip:bob@h"),
            ("sip:bob@h:99999", "sip:bob@h:99999"),
        ] {
            assert!(!same_uri(a, b), "{a} != {b}");
            assert!(!same_uri(b, a), "{b} != {a}");
        }
    }
}
