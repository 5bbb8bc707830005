//! Request-URIs and other SIP URIs rsip cannot read, read by us: IPv6 references
//! (`sip:[2001:db8::1]:5060`, RFC 3261 §19.1.1 and RFC 5118) and user parts with the
//! `;`, `?` and `/` that RFC 3261's `user-unreserved` allows (RFC 4475 §3.1.1.9). rsip keeps
//! the hosts it knows; an IPv6 reference is kept as the bracketed text (`Host::Domain`), so it
//! prints back exactly as it arrived and as RFC 3261 requires.

use std::net::Ipv6Addr;

use rsip::{Auth, Host, HostWithPort, Param, Scheme, Uri};

use super::parse::{ParseError, clip};

/// Reads `text` as a SIP URI with rsip where it can and with our own reader where it cannot.
/// Schemes other than `sip`, `sips` and `tel` are [`ParseError::UnsupportedScheme`] (416).
pub fn parse_uri(text: &str) -> Result<Uri, ParseError> {
    let bad = || ParseError::BadUri(clip(text));
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || "<>\"".contains(c)) {
        return Err(bad());
    }
    let (scheme, rest) = text.split_once(':').ok_or_else(bad)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(bad());
    }
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "sip" => Scheme::Sip,
        "sips" => Scheme::Sips,
        // rsip reads tel: as it always has.
        "tel" => return Uri::try_from(text).map_err(|_| bad()),
        _ => return Err(ParseError::UnsupportedScheme(clip(scheme))),
    };
    // The user part may hold ';' and '?' (user-unreserved), never '@': the last '@' ends it.
    let (user, hostpart) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    // Headers (`?name=value`) of a Request-URI are not ours to act on (RFC 4475 §3.1.2.11
    // lets an element ignore them); the URI is kept without them.
    let hostpart = hostpart.split_once('?').map_or(hostpart, |(u, _)| u);
    let (hostport, params) = split_params(hostpart);
    let host_with_port = host_port(hostport).ok_or_else(bad)?;
    let auth = match user {
        Some("") => return Err(bad()),
        Some(u) => Some(match u.split_once(':') {
            Some((user, pw)) => Auth {
                user: user.to_owned(),
                password: Some(pw.to_owned()),
            },
            None => Auth {
                user: u.to_owned(),
                password: None,
            },
        }),
        None => None,
    };
    // The rsip form first, so URIs it reads keep the typed parameters it gives them.
    if !hostport.starts_with('[')
        && user.is_none_or(|u| !u.contains([';', '?', '/']))
        && let Ok(u) = Uri::try_from(text)
    {
        return Ok(u);
    }
    let params = params
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            Param::try_from((n, v)).unwrap_or_else(|_| Param::Other(n.into(), v.map(Into::into)))
        })
        .collect();
    Ok(Uri {
        scheme: Some(scheme),
        auth,
        host_with_port,
        params,
        headers: Vec::new(),
    })
}

/// `host[:port]` and the `;params` after it.
fn split_params(s: &str) -> (&str, &str) {
    // A ';' inside an IPv6 reference cannot happen, but a ':' can: split after the ']'.
    let from = if s.starts_with('[') {
        s.find(']').unwrap_or(s.len())
    } else {
        0
    };
    match s[from..].find(';') {
        Some(i) => (&s[..from + i], &s[from + i..]),
        None => (s, ""),
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; an IPv6 address must be in brackets (RFC 5118
/// §4.2), and what is in them must be one.
fn host_port(s: &str) -> Option<HostWithPort> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (Host::Domain(format!("[{v6}]").into()), port)
    } else {
        let (h, p) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let hostname_ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !hostname_ok {
            return None;
        }
        (Host::from(h), p)
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?.into()),
        None => None,
    };
    Some(HostWithPort { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_references_round_trip_and_bare_ones_are_refused() {
        for (text, back) in [
            ("sip:[2001:db8::10]", "sip:[2001:db8::10]"),
            ("sip:[2001:db8::10]:5070", "sip:[2001:db8::10]:5070"),
            (
                "sip:user@[2001:db8::10:5070]",
                "sip:user@[2001:db8::10:5070]",
            ),
            (
                "sip:user@[2001:db8::192.0.2.1];transport=tcp",
                "sip:user@[2001:db8::192.0.2.1];transport=TCP",
            ),
            (
                "sips:alice@[::ffff:192.0.2.1]",
                "sips:alice@[::ffff:192.0.2.1]",
            ),
        ] {
            let u = parse_uri(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(u.to_string(), back);
        }
        for bad in [
            "sip:2001:db8::10",
            "sip:user@[2001:db8:::192.0.2.1]",
            "sip:[2001:db8::10",
            "sip:[2001:db8::10]x",
            "<sip:user@example.com>",
            "sip:user@exa mple.com",
        ] {
            assert!(
                matches!(parse_uri(bad), Err(ParseError::BadUri(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn user_parts_with_semicolons_and_unknown_schemes() {
        let u = parse_uri("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(u.to_string(), "sip:user;par=u%40example.net@example.com");
        assert_eq!(
            parse_uri("nobodyKnowsThisScheme:totallyopaquecontent"),
            Err(ParseError::UnsupportedScheme(
                "nobodyKnowsThisScheme".into()
            ))
        );
        assert_eq!(
            parse_uri("soap.beep://192.0.2.103:3002"),
            Err(ParseError::UnsupportedScheme("soap.beep".into()))
        );
        assert!(parse_uri("sip:alice@example.com;lr").is_ok());
    }
}
