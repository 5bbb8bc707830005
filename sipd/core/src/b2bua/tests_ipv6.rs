//! Calls over IPv6 signalling through the core: an IPv6 carrier to an IPv6 vendor, and the
//! IPv6 references in every header they put them in (Request-URI, Via with rport, Contact,
//! From/To, Record-Route) read and written bracketed.

use super::*;
use crate::sip::{NameAddr, Via};

const US6: &str = "[2001:db8::2]:5060";
const CARRIER6: &str = "[2001:db8::1]:5060";
const VENDOR6: &str = "[2001:db8:1::1]:5060";

/// A core with an IPv4 and an IPv6 address, a carrier at 2001:db8::1 and a vendor at
/// 2001:db8:1::1; media anchored on 2001:db8::10.
fn v6_world() -> World {
    let mut w = World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("2001:db8::/64"), true)],
        vec![connection(1, VENDOR6, 1)],
        vec![],
    );
    let cfg = CoreConfig {
        locals: vec![
            Local {
                proto: Proto::Udp,
                bind: sa(US),
                advertised: sa(US),
            },
            Local {
                proto: Proto::Udp,
                bind: sa(US6),
                advertised: sa(US6),
            },
        ],
        ..w.core.cfg.clone()
    };
    let policy = DigestPolicy {
        realm: "sbc".into(),
        algorithms: vec![Algorithm::Sha256],
        nonce_lifetime: Duration::from_secs(300),
        allow_md5_without_qop: false,
        max_tracked_nonces: 1024,
    };
    w.core = Core::new(
        cfg,
        RuleSet::new(
            vec![account(1, "carrier")],
            vec![rule(1, 1, Some("2001:db8::/64"), true)],
        )
        .unwrap(),
        Router::new(vec![connection(1, VENDOR6, 1)]),
        vec![],
        DigestVerifier::new(
            policy,
            NonceKey::new([7; 32]),
            w.wall - Duration::from_secs(1),
        ),
        FakeMedia::new("2001:db8::10".parse().unwrap()),
    );
    w
}

const SDP6: &str = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";

fn from6(w: &mut World, text: &str) {
    let peer = Peer {
        proto: Proto::Udp,
        remote: sa(CARRIER6),
        local: sa(US6),
        conn: None,
    };
    let text = fix_length(text);
    w.now += Duration::from_millis(1);
    w.core.on_message(w.now, w.wall, peer, text.as_bytes());
    w.collect();
}

#[test]
fn ipv6_carrier_to_ipv6_vendor() {
    let mut w = v6_world();
    from6(
        &mut w,
        &format!(
            "INVITE sip:4420555@[2001:db8::2]:5060;user=phone SIP/2.0\r\n\
             Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-v6a;rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Carrier\" <sip:1555000@[2001:db8::1]>;tag=f6\r\n\
             To: <sip:4420555@[2001:db8::2]>\r\n\
             Call-ID: v6-call@2001:db8::1\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:1555000@[2001:db8::1]:5060;transport=udp>\r\n\
             Record-Route: <sip:[2001:db8::99];lr>\r\n\
             Content-Type: application/sdp\r\n\r\n{SDP6}"
        ),
    );
    let to_carrier = w.take(CARRIER6);
    assert_eq!(
        to_carrier.iter().filter_map(Msg::code).collect::<Vec<_>>(),
        vec![100],
        "{to_carrier:?}"
    );
    let trying = &to_carrier[0];
    assert_eq!(
        trying.top_via().map(|v| (v.host, v.port)),
        Some(("2001:db8::1".to_owned(), Some(5060)))
    );
    let up = w.take(VENDOR6);
    let inv = up
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .expect("INVITE sent to the IPv6 vendor");
    let text = String::from_utf8(inv.to_bytes()).unwrap();
    assert!(
        text.starts_with("INVITE sip:4420555@[2001:db8:1::1]:5060 SIP/2.0\r\n"),
        "{text}"
    );
    let via = inv.top_via().unwrap();
    assert_eq!(
        (via.host.as_str(), via.port),
        ("2001:db8::2", Some(5060)),
        "{text}"
    );
    assert!(
        text.contains("@[2001:db8::2]:5060>"),
        "Contact bracketed:\n{text}"
    );
    assert!(
        text.contains("c=IN IP6 2001:db8::10"),
        "offer anchored:\n{text}"
    );
    assert!(
        !text.contains("2001:db8::1]"),
        "carrier address leaked:\n{text}"
    );
    // The vendor answers; the carrier gets a 200 with the anchored IPv6 SDP.
    w.from(
        VENDOR6,
        &reply(
            inv,
            200,
            "vtag",
            Some("v=0\r\no=- 2 2 IN IP6 2001:db8:1::1\r\ns=-\r\nc=IN IP6 2001:db8:1::1\r\nt=0 0\r\nm=audio 22000 RTP/AVP 0\r\n"),
        ),
    );
    let ok = w.take(CARRIER6);
    let ok = ok
        .iter()
        .find(|m| m.code() == Some(200))
        .expect("200 to the carrier");
    let ok_text = String::from_utf8(ok.to_bytes()).unwrap();
    assert!(ok_text.contains("c=IN IP6 2001:db8::10"), "{ok_text}");
    assert!(
        ok_text.contains("Contact: <sip:sbc@[2001:db8::2]:5060>"),
        "{ok_text}"
    );
    assert_eq!(w.core.active_calls(), 1);
}

#[test]
fn ipv6_header_forms() {
    // Via with an IPv6 sent-by, received and rport.
    let v = Via::parse(
        "SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;rport=6050;branch=z9hG4bKx",
    );
    assert_eq!((v.host.as_str(), v.port), ("2001:db8::9:1", Some(6050)));
    assert!(v.rport);
    // Contact, From/To and Route name-addrs keep the bracketed host.
    for h in [
        "\"Caller\" <sip:caller@[2001:db8::20]:5070;transport=tcp>;expires=60",
        "<sip:user@[2001:db8::10]>;tag=81x2",
        "sip:user@[2001:db8::10];tag=81x2",
        "<sip:[2001:db8::99];lr>",
    ] {
        let n = NameAddr::parse(h);
        assert!(n.uri.contains("[2001:db8::"), "{h} → {}", n.uri);
        assert!(crate::sip::uri::parse_uri(&n.uri).is_ok(), "{}", n.uri);
    }
    assert_eq!(
        crate::sip::msg::host_port(sa("[2001:db8::2]:5060")),
        "[2001:db8::2]:5060"
    );
}

/// A carrier behind a NAT (NPTv6 here): its Via names its inside address with a bare `rport`,
/// the request arrives from its outside address and port. The answers carry both back
/// (RFC 3261 §18.2.1, RFC 3581 §4), IPv6 unbracketed in `received=`.
#[test]
fn ipv6_via_gets_received_and_rport() {
    let mut w = v6_world();
    let peer = Peer {
        proto: Proto::Udp,
        remote: sa("[2001:db8::1]:40123"),
        local: sa(US6),
        conn: None,
    };
    let text = fix_length(&format!(
        "INVITE sip:4420555@[2001:db8::2]:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP [fd00::1]:5060;rport;branch=z9hG4bK-nat6\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1555000@[fd00::1]>;tag=n6\r\n\
         To: <sip:4420555@[2001:db8::2]>\r\n\
         Call-ID: nat6@fd00::1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:1555000@[fd00::1]:5060>\r\n\
         Content-Type: application/sdp\r\n\r\n{SDP6}"
    ));
    w.now += Duration::from_millis(1);
    w.core.on_message(w.now, w.wall, peer, text.as_bytes());
    w.collect();
    let back = w.take("[2001:db8::1]:40123");
    let trying = back.iter().find(|m| m.code() == Some(100)).expect("100");
    assert_eq!(
        trying.get("Via"),
        Some("SIP/2.0/UDP [fd00::1]:5060;rport=40123;branch=z9hG4bK-nat6;received=2001:db8::1"),
        "{back:?}"
    );
}
