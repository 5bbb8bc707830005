//! Where a request really came from, noted in its top Via as it arrives (RFC 3261 §18.2.1,
//! RFC 3581 §4), so that every response built from it carries the note back: `received=`
//! when the sent-by host is not the source address, and `rport=<source port>` where the client
//! asked with a bare `rport` (then `received=` always). A client behind a NAT (an IPv6 one
//! behind NPTv6 too) learns the address and port we answer to.
//!
//! IPv6 goes in `received=` without brackets, as RFC 3261's grammar has it
//! (`received = "received" EQUAL (IPv4address / IPv6address)`); RFC 5118 §4.5 asks readers to
//! take both forms, and sipd's own Via reader does.

use std::net::{IpAddr, SocketAddr};

use super::msg::{Msg, split_commas, split_host_port};

/// Notes `src` in `msg`'s top Via (see the module docs); a message without a Via, or whose
/// top Via already has `received=`, is left as it is.
pub fn stamp_received(msg: &mut Msg, src: SocketAddr) {
    let Some((_, line)) = msg
        .headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("Via"))
    else {
        return;
    };
    // The top Via is the first element of the first Via line, which may combine several.
    let Some(first) = split_commas(line).into_iter().next() else {
        return;
    };
    let first = first.trim();
    let Some(at) = line.find(first) else {
        return;
    };
    if let Some(stamped) = stamped(first, src) {
        line.replace_range(at..at + first.len(), &stamped);
    }
}

/// One Via value with the source noted, or `None` when there is nothing to note.
fn stamped(via: &str, src: SocketAddr) -> Option<String> {
    let mut parts = via.split(';');
    let sent_by_part = parts.next()?;
    let params: Vec<&str> = parts.collect();
    let name = |p: &str| {
        p.split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    if params.iter().any(|p| name(p) == "received") {
        return None;
    }
    let bare_rport = params
        .iter()
        .any(|p| p.trim().eq_ignore_ascii_case("rport"));
    let sent_by = sent_by_part
        .trim()
        .split_once(char::is_whitespace)
        .map_or("", |(_, s)| s.trim());
    let (host, _) = split_host_port(sent_by);
    let same_host = host.parse::<IpAddr>().is_ok_and(|h| h == src.ip());
    if same_host && !bare_rport {
        return None;
    }
    let mut out = String::from(sent_by_part);
    for p in &params {
        out.push(';');
        if p.trim().eq_ignore_ascii_case("rport") {
            out.push_str(&format!("rport={}", src.port()));
        } else {
            out.push_str(p);
        }
    }
    out.push_str(&format!(";received={}", src.ip()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(via: &str, src: &str) -> String {
        let mut m = Msg {
            start: crate::sip::Start::Response {
                code: 200,
                reason: String::new(),
            },
            headers: vec![("Via".into(), via.into())],
            body: Vec::new(),
        };
        stamp_received(&mut m, src.parse().unwrap());
        m.headers[0].1.clone()
    }

    #[test]
    fn same_host_without_rport_is_left_alone() {
        let v = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa";
        assert_eq!(stamp(v, "192.0.2.1:5060"), v);
        let v6 = "SIP/2.0/UDP [2001:DB8::1]:5060;branch=z9hG4bKa";
        assert_eq!(stamp(v6, "[2001:db8::1]:5060"), v6);
    }

    #[test]
    fn another_host_gets_received() {
        assert_eq!(
            stamp(
                "SIP/2.0/UDP pc.example.com;branch=z9hG4bKa",
                "192.0.2.7:5060"
            ),
            "SIP/2.0/UDP pc.example.com;branch=z9hG4bKa;received=192.0.2.7"
        );
        assert_eq!(
            stamp(
                "SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bKa",
                "[2001:db8::1]:5060"
            ),
            "SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bKa;received=2001:db8::1"
        );
    }

    #[test]
    fn bare_rport_gets_the_source_port_and_received() {
        assert_eq!(
            stamp(
                "SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bKa",
                "[2001:db8::1]:40123"
            ),
            "SIP/2.0/UDP [2001:db8::1]:5060;rport=40123;branch=z9hG4bKa;received=2001:db8::1"
        );
    }

    #[test]
    fn only_the_top_via_and_never_twice() {
        let v = "SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;rport";
        assert_eq!(
            stamp(v, "192.0.2.7:4000"),
            "SIP/2.0/UDP 10.0.0.1;rport=4000;branch=z9hG4bKa;received=192.0.2.7, \
             SIP/2.0/UDP 10.0.0.2;rport"
        );
        let done = "SIP/2.0/UDP 10.0.0.1;rport=4000;received=192.0.2.7";
        assert_eq!(stamp(done, "192.0.2.9:4001"), done);
    }
}
