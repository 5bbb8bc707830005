//! What [`super::Msg::parse`] needs beyond the checks of `parse.rs`: a response's status
//! code, and header names spelled as rsip wrote them when messages went through it.

use super::parse::{ParseError, clip};

/// The status code of a status line `SIP/2.0 SP 3DIGIT [SP reason]` (RFC 3261 §7.2).
pub(super) fn status_code(line: &str) -> Result<u16, ParseError> {
    let bad = || ParseError::StartLine(clip(line));
    let rest = line.strip_prefix("SIP/2.0 ").ok_or_else(bad)?;
    let (code, _reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let code: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=699).contains(&code) {
        return Err(bad());
    }
    Ok(code)
}

/// The name rsip writes for a header it knows (matched case-insensitively), so messages keep
/// the header names they had when they were read through rsip; `None` for the others, which
/// keep the peer's spelling.
pub(super) fn rsip_name(name: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "CSeq",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "Mime-Version",
        "Min-Expires",
        "Organization",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Record-Route",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "Server",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    ];
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code("SIP/2.0 200 OK"), Ok(200));
        assert_eq!(status_code("SIP/2.0 183 Session Progress"), Ok(183));
        assert_eq!(status_code("SIP/2.0 404"), Ok(404));
        for bad in [
            "SIP/2.0 20 OK",
            "SIP/2.0 2000 OK",
            "SIP/2.0 099 x",
            "SIP/3.0 200 OK",
            "SIP/2.0 abc OK",
        ] {
            assert!(status_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn known_names_take_rsips_spelling() {
        assert_eq!(rsip_name("call-id"), Some("Call-ID"));
        assert_eq!(rsip_name("CSEQ"), Some("CSeq"));
        assert_eq!(rsip_name("www-authenticate"), Some("WWW-Authenticate"));
        assert_eq!(rsip_name("X-Custom"), None);
    }
}
