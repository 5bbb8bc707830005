//! The call table refuses SDP that would make the relay loop or reflect, or hold more than a
//! call may: each refusal kind, typed, a 488 (`is_sdp_fault`), and nothing changed by it.

use std::sync::Arc;

use super::{
    Anchor, Destinations, Interface, Limits, MediaCalls, MediaError, MemoryBackend, Refusal, Signal,
};

const RELAY: &str = "203.0.113.1";
const CALLER: &str = "v=0\r\no=a 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const CALLEE: &str = "v=0\r\no=b 2 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn calls() -> MediaCalls<MemoryBackend> {
    let iface = Interface::new("pub", &[RELAY.parse().unwrap()]);
    MediaCalls::new(Arc::new(MemoryBackend::new(30000, 30999)), vec![iface])
        .with_relay("10.0.0.1".parse().unwrap(), 30000..=30999)
}

fn sig<'a>(call_id: &'a str, tag: &'a str, sdp: &'a str) -> Signal<'a> {
    Signal { call_id, tag, sdp }
}

/// The caller's SDP with its media at `addr` `port`.
fn caller_at(addr: &str, port: u16) -> String {
    CALLER
        .replace("198.51.100.7", addr)
        .replace("m=audio 4000", &format!("m=audio {port}"))
}

#[track_caller]
fn refused_for(e: MediaError, want: Refusal) {
    assert!(e.is_sdp_fault(), "{e}");
    assert!(
        matches!(e, MediaError::Destination { why, .. } if why == want),
        "{e:?}"
    );
}

#[test]
fn each_destination_kind_is_refused_on_a_new_call() {
    let mut m = calls();
    let a = Anchor::default();
    let cases = [
        ("224.0.0.1", 4000, Refusal::Multicast),
        ("0.0.0.0", 4000, Refusal::Unspecified),
        ("255.255.255.255", 4000, Refusal::Broadcast),
        ("127.0.0.1", 4000, Refusal::Loopback),
        (RELAY, 30002, Refusal::OwnPort),
        ("10.0.0.1", 30002, Refusal::OwnPort),
        (RELAY, 5060, Refusal::OwnAddress),
    ];
    for (addr, port, want) in cases {
        let sdp = caller_at(addr, port);
        refused_for(m.offer(sig("c1", "a", &sdp), &a).unwrap_err(), want);
        assert_eq!(m.call_count(), 0, "{addr}: no call");
        assert_eq!(
            m.backend().session_count(),
            0,
            "{addr}: no session, no ports"
        );
    }
    // The anchor's peer address (the SIP source) is what is sent to, so it is what counts.
    let spoof = Anchor {
        peer_address: Some(RELAY.parse().unwrap()),
        ..Anchor::default()
    };
    let sdp = caller_at("198.51.100.7", 30_000);
    refused_for(
        m.offer(sig("c1", "a", &sdp), &spoof).unwrap_err(),
        Refusal::OwnPort,
    );
    // An a=rtcp address is a destination too.
    let rtcp = format!("{CALLER}a=rtcp:4001 IN IP4 {RELAY}\r\n");
    refused_for(
        m.offer(sig("c1", "a", &rtcp), &a).unwrap_err(),
        Refusal::OwnAddress,
    );
}

#[test]
fn refused_reoffer_keeps_the_old_media() {
    let mut m = calls();
    let a = Anchor::default();
    m.offer(sig("c1", "a", CALLER), &a).unwrap();
    m.answer(sig("c1", "b", CALLEE), "a", &a).unwrap();
    let ports = m.call("c1").unwrap().streams[0].ports.unwrap();
    let before = m.backend().session(1).unwrap();
    // The caller points its media at the relay port the callee sends to: a loop.
    let evil = caller_at(RELAY, ports.b);
    let e = m.reoffer(sig("c1", "a", &evil), &a).unwrap_err();
    refused_for(e, Refusal::OwnPort);
    assert_eq!(m.backend().session(1).unwrap(), before, "nothing changed");
    assert_eq!(
        m.call("c1").unwrap().streams[0].peer[0].unwrap().rtp,
        Some("198.51.100.7:4000".parse().unwrap())
    );
    // From the callee's side too.
    let evil = CALLEE.replace("192.0.2.9", "239.0.0.1");
    refused_for(
        m.reoffer(sig("c1", "b", &evil), &a).unwrap_err(),
        Refusal::Multicast,
    );
    assert_eq!(m.backend().session(1).unwrap(), before);
}

#[test]
fn hold_with_unspecified_address_on_an_answered_call_is_accepted() {
    let mut m = calls();
    let a = Anchor::default();
    m.offer(sig("c1", "a", CALLER), &a).unwrap();
    // Before the answer there is nothing to hold.
    let hold = CALLER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
    refused_for(
        m.offer(sig("c1", "a", &hold), &a).unwrap_err(),
        Refusal::Unspecified,
    );
    m.answer(sig("c1", "b", CALLEE), "a", &a).unwrap();
    m.reoffer(sig("c1", "a", &hold), &a).unwrap();
    assert_eq!(m.call("c1").unwrap().streams[0].peer[0].unwrap().rtp, None);
}

/// `n` active audio m= lines.
fn streams(n: usize) -> String {
    let mut sdp = String::from(CALLER);
    for i in 1..n {
        sdp += &format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * i);
    }
    sdp
}

#[test]
fn too_many_streams_is_refused_before_any_port_is_taken() {
    let mut m = calls();
    let a = Anchor::default();
    let e = m.offer(sig("c1", "a", &streams(700)), &a).unwrap_err();
    assert!(e.is_sdp_fault(), "{e}");
    assert!(
        matches!(e, MediaError::TooManyStreams { found: 700, max: 8 }),
        "{e:?}"
    );
    assert_eq!(m.backend().session_count(), 0);
    assert_eq!(m.backend().ports_in_use(), 0);
    m.offer(sig("c1", "a", &streams(8)), &a).unwrap();
    assert_eq!(m.backend().ports_in_use(), 8 * 4);
}

#[test]
fn too_many_ports_is_refused_and_a_reoffer_cannot_add_past_it() {
    let limits = Limits {
        max_streams: 8,
        max_call_ports: 8,
    };
    let mut m = calls().with_limits(limits);
    let a = Anchor::default();
    let e = m.offer(sig("c1", "a", &streams(3)), &a).unwrap_err();
    assert!(
        matches!(e, MediaError::TooManyPorts { needed: 12, max: 8 }),
        "{e:?}"
    );
    assert!(e.is_sdp_fault());
    m.offer(sig("c1", "a", &streams(2)), &a).unwrap();
    // A re-offer adding a third stream would hold 12.
    let e = m.offer(sig("c1", "a", &streams(3)), &a).unwrap_err();
    assert!(matches!(e, MediaError::TooManyPorts { .. }), "{e:?}");
    assert_eq!(m.call("c1").unwrap().streams.len(), 2);
    assert_eq!(m.backend().ports_in_use(), 8);
    // A disabled third line takes no ports.
    let off = format!("{}m=audio 0 RTP/AVP 0\r\n", streams(2));
    m.offer(sig("c1", "a", &off), &a).unwrap();
}

#[test]
fn loopback_relay_keeps_loopback_peers() {
    let iface = Interface::new("lo", &["127.0.0.1".parse().unwrap()]);
    let mut m = MediaCalls::new(Arc::new(MemoryBackend::new(30000, 30999)), vec![iface])
        .with_relay("127.0.0.1".parse().unwrap(), 30000..=30999);
    let a = Anchor::default();
    m.offer(sig("c1", "a", &caller_at("127.0.0.1", 20000)), &a)
        .unwrap();
    let back = CALLEE.replace("192.0.2.9", "127.0.0.1");
    m.answer(sig("c1", "b", &back), "a", &a).unwrap();
    let e = m
        .offer(sig("c2", "a", &caller_at("127.0.0.1", 30000)), &a)
        .unwrap_err();
    refused_for(e, Refusal::OwnPort);
    // Unused but exported: the same judgement as a value.
    let d = Destinations::new(&["127.0.0.1".parse().unwrap()], Some(30000..=30999));
    assert_eq!(d.check("127.0.0.1:20000".parse().unwrap()), Ok(()));
}
