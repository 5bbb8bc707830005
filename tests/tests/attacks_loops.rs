//! Attacks that try to make the relay loop or reflect media, against a real `sipd run` in the
//! relay namespace, on both data planes (generic XDP and userspace). The carrier is a raw SIP
//! peer (it writes its own, hostile, SDP); the vendor is sipp.
//!
//! 1. After answer, a re-INVITE whose SDP sends the carrier's media to the relay's own address
//!    and the relay port the vendor sends to: every vendor packet would come back to the relay,
//!    forever. Refused with 488 and a Warning; the relay's packet counter stays flat; the call
//!    keeps its old media.
//! 2. An initial INVITE whose SDP names a multicast, unspecified, broadcast or loopback address
//!    (the relay is not on loopback here), or the relay itself: 488, and no call reaches the
//!    vendor.
//! 3. An offer with 700 media lines: 488, not the exhaustion of the relay's port range; no
//!    relay session is left, and the next call still gets its ports.
//! 4. A vendor (a raw SIP peer in the callee namespace) that answers 200 with an SDP pointing
//!    media at the relay itself or at a multicast address: sipd ACKs and hangs the vendor up
//!    (BYE), the caller gets 488 with a Warning, no relay session is left and nothing loops.

mod sbc;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sbc::*;
use tests::sip::{self, Msg, RawSip};
use tests::{require_privileged, require_sipp};

/// Packets the vendor sends after the hostile re-offer.
const PROBES: u64 = 20;

/// A raw carrier's SIP socket: not sipp's port on the carrier host.
const RAW_SIP_PORT: u16 = SIP_PORT + 2;

/// Metrics without a token (read by curl in the relay namespace); SIP messages big enough for
/// the 700-line SDP, as an operator may allow.
fn settings() -> Settings {
    Settings {
        sip: "max_message_bytes = 65535\n".into(),
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    }
}

/// Packets waiting on `sock` (until 300 ms pass without one).
fn drain(sock: &std::net::UdpSocket) -> u64 {
    let mut buf = [0u8; 2048];
    let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// The carrier's raw SIP socket towards sipd.
fn carrier(net: &Net, sbc: &Sbc) -> RawSip {
    let local = SocketAddr::new(net.topo.caller_if.ip(false), RAW_SIP_PORT);
    RawSip::bind_in(&net.topo.caller, local, sbc.sip()).expect("raw carrier socket")
}

/// Sends `msg` and waits for the final response to `cseq` ("1 INVITE"); every message seen
/// is in the panic text when none comes.
fn final_response(raw: &RawSip, msg: &str, cseq: &str) -> Msg {
    raw.send(msg.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < end {
        if let Some(r) = raw.wait_for("SIP/2.0 ", cseq, Duration::from_secs(1), &mut seen) {
            let m = Msg {
                received: true,
                text: r,
            };
            if m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }
    panic!("no final response to {cseq}; got:\n{}", seen.join("\n"))
}

/// The final response was `code` with a Warning header.
#[track_caller]
fn assert_refused_with_warning(r: &Msg, code: u16, what: &str) {
    assert_eq!(r.status(), Some(code), "{what}:\n{}", r.text);
    assert!(
        !r.headers("Warning").is_empty(),
        "{what}: a Warning says why:\n{}",
        r.text
    );
}

/// Attack 1: a re-INVITE pointing the carrier's media at the relay port the vendor sends to.
fn reinvite_at_the_relay(plane: Plane) {
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings());
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let raw = carrier(&net, &sbc);
    let local = raw.local();
    let call_id = format!("loop-{}", std::process::id());
    let inv = sip::invite(local, sbc.sip(), CLI, CLD, &call_id, RTP_PORT);
    let ok = final_response(&raw, &inv, "1 INVITE");
    assert_eq!(ok.status(), Some(200), "{}", ok.text);
    raw.send(sip::in_dialog("ACK", 1, local, sbc.sip(), &call_id, &ok.text).as_bytes())
        .expect("ACK");
    let at_carrier = sip::sdp_media(ok.body()).expect("SDP in the 200");
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(5))
        .expect("vendor got the offer");
    assert_eq!(at_vendor.ip(), sbc.addr, "the vendor sends to the relay");
    let check = |n| {
        sip::MediaCheck::run(
            &net.carrier_rtp,
            &net.vendor_rtp,
            at_carrier,
            at_vendor,
            n,
            1,
        )
    };
    check(PACKETS).assert_lossless();

    // The hostile re-offer: the carrier's media "is" at the relay port the vendor sends to.
    let evil = sip::audio_sdp(at_vendor);
    let reinvite = sip::with_sdp(
        &sip::in_dialog("INVITE", 2, local, sbc.sip(), &call_id, &ok.text),
        local,
        &evil,
    );
    let r = final_response(&raw, &reinvite, "2 INVITE");
    if r.status() == Some(200) {
        // Accepted (the hole): complete the transaction so the loop can run.
        raw.send(sip::in_dialog("ACK", 2, local, sbc.sip(), &call_id, &r.text).as_bytes())
            .expect("ACK");
    }
    // Only the vendor talks now (the carrier is silent, so nothing re-latches its leg): with
    // the re-offer applied each vendor packet would go to the relay itself, and round again.
    let before = sbc.metric("sbc_relay_packets_total");
    let mut buf = Vec::new();
    for seq in 0..PROBES {
        tests::rtp::build_packet(7, seq, 160, &mut buf);
        net.vendor_rtp.send_to(&buf, at_vendor).expect("vendor RTP");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let relayed = sbc.metric("sbc_relay_packets_total") - before;
    assert!(
        relayed <= PROBES,
        "{relayed} packets relayed for {PROBES} sent: the relay looped"
    );
    // The call keeps its old media: the probes reached the carrier's real address, and media
    // flows both ways, byte for byte.
    let probes_at_carrier = drain(&net.carrier_rtp);
    let after_check = check(PACKETS);
    after_check.assert_lossless();
    assert_eq!(
        probes_at_carrier, PROBES,
        "the vendor's probes reached the carrier"
    );
    assert_refused_with_warning(&r, 488, "re-INVITE sending media to the relay itself");
    assert!(
        uas.media("REINVITE").is_empty(),
        "the hostile re-offer never reached the vendor: {:?}",
        uas.logs()
    );
    let bye = sip::in_dialog("BYE", 3, local, sbc.sip(), &call_id, &ok.text);
    let bye = final_response(&raw, &bye, "3 BYE");
    assert_eq!(bye.status(), Some(200), "{}", bye.text);
    assert!(sbc.alive(), "sipd still runs:\n{}", sbc.log_text());
}

#[test]
fn reinvite_media_at_the_relay_is_refused_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    reinvite_at_the_relay(Plane::Xdp);
}

#[test]
fn reinvite_media_at_the_relay_is_refused_userspace() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    reinvite_at_the_relay(Plane::Userspace);
}

/// Attack 2: initial offers naming destinations the relay must never send to.
fn bad_destinations(plane: Plane) {
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings());
    // A vendor that would answer each of them, had sipd passed them on.
    let uas = net.uas("uas.xml", SIP_PORT, 10, Duration::ZERO);
    let raw = carrier(&net, &sbc);
    let local = raw.local();
    let relay = sbc.addr;
    let cases: [(&str, SocketAddr); 6] = [
        ("multicast", "224.0.0.1:4000".parse().unwrap()),
        ("unspecified", "0.0.0.0:4000".parse().unwrap()),
        ("broadcast", "255.255.255.255:4000".parse().unwrap()),
        ("loopback", "127.0.0.1:4000".parse().unwrap()),
        ("the relay's media port", SocketAddr::new(relay, 30_000)),
        ("the relay's SIP port", SocketAddr::new(relay, SIP_PORT)),
    ];
    let mut failures = Vec::new();
    for (i, (what, to)) in cases.iter().enumerate() {
        let call_id = format!("dst{i}-{}", std::process::id());
        let inv = sip::invite_with_sdp(local, sbc.sip(), CLI, CLD, &call_id, &sip::audio_sdp(*to));
        let r = final_response(&raw, &inv, "1 INVITE");
        if r.status() != Some(488) || r.headers("Warning").is_empty() {
            failures.push(format!("{what} ({to}): {}", r.first_line()));
        }
    }
    let vendor_saw = uas.logs().iter().filter(|l| l.starts_with("MEDIA")).count();
    assert!(
        failures.is_empty(),
        "not refused with 488 + Warning:\n{}",
        failures.join("\n")
    );
    assert_eq!(vendor_saw, 0, "no hostile offer reached the vendor");
    assert_eq!(sbc.metric("sbc_relay_sessions"), 0, "no relay session left");
    assert!(sbc.alive());
}

#[test]
fn offer_to_multicast_broadcast_unspecified_or_self_is_refused_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    bad_destinations(Plane::Xdp);
}

#[test]
fn offer_to_multicast_broadcast_unspecified_or_self_is_refused_userspace() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    bad_destinations(Plane::Userspace);
}

/// `lines` audio m= lines, each with its own port, all at `ip`.
fn many_streams(ip: IpAddr, lines: u16) -> String {
    let mut sdp = format!("v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n");
    for i in 0..lines {
        sdp += &format!("m=audio {} RTP/AVP 0\r\n", 10_000 + 2 * i);
    }
    sdp
}

/// Attack 3: 700 media lines in one offer; then a normal call must still work.
fn many_media_lines(plane: Plane) {
    let net = Net::new();
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings());
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let raw = carrier(&net, &sbc);
    let local = raw.local();
    let sessions = sbc.metric("sbc_relay_sessions");
    let call_id = format!("many-{}", std::process::id());
    let sdp = many_streams(net.topo.caller_if.ip(false), 700);
    let inv = sip::invite_with_sdp(local, sbc.sip(), CLI, CLD, &call_id, &sdp);
    let r = final_response(&raw, &inv, "1 INVITE");
    let log = sbc.log_text();
    assert_refused_with_warning(&r, 488, "700 media lines");
    assert!(
        !log.contains("exhausted"),
        "the port range was not exhausted on the way:\n{log}"
    );
    assert_eq!(
        sbc.metric("sbc_relay_sessions"),
        sessions,
        "no relay session left"
    );
    // The range is whole: the next (honest) call gets its ports and its media.
    let call_id = format!("after-{}", std::process::id());
    let inv = sip::invite(local, sbc.sip(), CLI, CLD, &call_id, RTP_PORT);
    let ok = final_response(&raw, &inv, "1 INVITE");
    assert_eq!(ok.status(), Some(200), "{}", ok.text);
    raw.send(sip::in_dialog("ACK", 1, local, sbc.sip(), &call_id, &ok.text).as_bytes())
        .expect("ACK");
    let at_carrier = sip::sdp_media(ok.body()).expect("SDP in the 200");
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(5))
        .expect("vendor got the offer");
    sip::MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        1,
    )
    .assert_lossless();
    raw.send(sip::in_dialog("BYE", 2, local, sbc.sip(), &call_id, &ok.text).as_bytes())
        .expect("BYE");
}

#[test]
fn offer_with_700_media_lines_is_refused_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    many_media_lines(Plane::Xdp);
}

#[test]
fn offer_with_700_media_lines_is_refused_userspace() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    many_media_lines(Plane::Userspace);
}

/// Where a reflecting vendor's answer sends media, given where sipd's offer asked for it.
type Answer = Box<dyn Fn(SocketAddr) -> SocketAddr + Send>;

/// The vendor's 200 to `invite` (as received), with `sdp` as its answer.
fn vendor_ok(invite: &Msg, local: SocketAddr, sdp: &str) -> String {
    let mut head = String::from("SIP/2.0 200 OK\r\n");
    for v in invite.headers("Via") {
        head += &format!("Via: {v}\r\n");
    }
    for rr in invite.headers("Record-Route") {
        head += &format!("Record-Route: {rr}\r\n");
    }
    let h = |n| invite.header(n).unwrap_or_default();
    format!(
        "{head}From: {}\r\nTo: {};tag=reflector\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         Contact: <sip:vendor@{local}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        h("From"),
        h("To"),
        h("Call-ID"),
        h("CSeq"),
        sdp.len()
    )
}

/// What the reflecting vendor saw of one call: the offer's media address and every request
/// sipd sent it after the 200.
struct Reflected {
    offer: Option<SocketAddr>,
    requests: Vec<Msg>,
}

/// A vendor on the vendor's SIP address that answers the next INVITE 200 with the SDP
/// `answer` makes of the offer's media address, then collects sipd's requests (answering a
/// BYE 200) until a BYE or `window` passes.
fn reflecting_vendor(
    net: &Net,
    answer: Answer,
    window: Duration,
) -> std::thread::JoinHandle<Reflected> {
    let local = net.vendor_sip(SIP_PORT);
    let sock = net
        .topo
        .callee
        .enter(|| std::net::UdpSocket::bind(local))
        .expect("vendor SIP socket");
    std::thread::spawn(move || {
        let mut out = Reflected {
            offer: None,
            requests: Vec::new(),
        };
        let mut buf = vec![0u8; 65_536];
        let end = std::time::Instant::now() + window;
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        while std::time::Instant::now() < end {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let m = Msg {
                received: true,
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            };
            match m.method() {
                Some("INVITE") if out.offer.is_none() => {
                    let offer = sip::sdp_media(m.body()).expect("SDP in sipd's offer");
                    out.offer = Some(offer);
                    let ok = vendor_ok(&m, local, &sip::audio_sdp(answer(offer)));
                    sock.send_to(ok.as_bytes(), from).expect("vendor 200");
                }
                Some("INVITE") => {}
                Some("BYE") => {
                    let ok = vendor_ok(&m, local, "");
                    let ok = ok.replace("Content-Type: application/sdp\r\n", "");
                    let _ = sock.send_to(ok.as_bytes(), from);
                    out.requests.push(m);
                    return out;
                }
                Some(_) => out.requests.push(m),
                None => {}
            }
        }
        out
    })
}

/// Attack 4: vendors whose answer points media at the relay itself or at a multicast group.
fn vendor_reflects(plane: Plane) {
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings());
    let raw = carrier(&net, &sbc);
    let local = raw.local();
    let relay = sbc.addr;
    let cases: [(&str, Answer); 2] = [
        // The relay port sipd offered the vendor: each carrier packet would come back to it.
        ("the relay itself", Box::new(|offer| offer)),
        (
            "a multicast group",
            Box::new(|_| "224.0.0.1:4000".parse().unwrap()),
        ),
    ];
    for (i, (what, answer)) in cases.into_iter().enumerate() {
        let vendor = reflecting_vendor(&net, answer, Duration::from_secs(15));
        let call_id = format!("refl{i}-{}", std::process::id());
        let inv = sip::invite(local, sbc.sip(), CLI, CLD, &call_id, RTP_PORT);
        let r = final_response(&raw, &inv, "1 INVITE");
        let seen = vendor.join().expect("vendor thread");
        let offer = seen
            .offer
            .unwrap_or_else(|| panic!("{what}: the vendor got no INVITE"));
        assert_eq!(offer.ip(), relay, "{what}: the offer names the relay");
        assert_refused_with_warning(&r, 488, what);
        assert!(
            sip::sdp_media(r.body()).is_none(),
            "{what}: none of the vendor's SDP reaches the caller:\n{}",
            r.text
        );
        let methods: Vec<&str> = seen.requests.iter().filter_map(|m| m.method()).collect();
        assert!(
            methods.contains(&"ACK") && methods.contains(&"BYE"),
            "{what}: the vendor's 200 is ACKed and the vendor hung up; it got {methods:?}"
        );
        raw.send(sip::in_dialog("ACK", 1, local, sbc.sip(), &call_id, &r.text).as_bytes())
            .expect("ACK the 488");
        // No session left to loop through: a packet to the port offered goes nowhere.
        let before = sbc.metric("sbc_relay_packets_total");
        let mut buf = Vec::new();
        for seq in 0..PROBES {
            tests::rtp::build_packet(9, seq, 160, &mut buf);
            net.vendor_rtp.send_to(&buf, offer).expect("probe");
        }
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            sbc.metric("sbc_relay_packets_total"),
            before,
            "{what}: nothing relayed after the refusal"
        );
        assert_eq!(
            sbc.metric("sbc_relay_sessions"),
            0,
            "{what}: no relay session left"
        );
    }
    assert_eq!(drain(&net.carrier_rtp), 0, "no media reached the carrier");
    assert!(sbc.alive(), "sipd still runs:\n{}", sbc.log_text());
}

#[test]
fn vendor_answer_at_the_relay_or_multicast_is_refused_xdp() {
    require_privileged!();
    let _s = serial();
    vendor_reflects(Plane::Xdp);
}

#[test]
fn vendor_answer_at_the_relay_or_multicast_is_refused_userspace() {
    require_privileged!();
    let _s = serial();
    vendor_reflects(Plane::Userspace);
}
