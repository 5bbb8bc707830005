//! SIP scenarios with real peers: Debian's `sipp` as the carrier (UAC, caller namespace) and
//! the vendor (UAS, callee namespace), RTP between Rust sockets next to them, checked byte for
//! byte (`tests::rtp`).
//!
//! `direct_*`: the sipp scenario pairs against each other with no SBC in the path (the relay
//! namespace only routes), proving each scenario, the trace parsing and the media check.
//!
//! The scenarios share the machine's two cores, so they run one at a time (a lock), and every
//! load is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tests::netns::{Topology, TopologyOptions};
use tests::require_privileged;
use tests::rtp;
use tests::sip::{self, MediaCheck, RawSip, Sipp, SippOutcome};

const SIP_PORT: u16 = 5060;
const RTP_PORT: u16 = 20_000;
const CLI: &str = "441234567";
const CLD: &str = "3312345678";
/// 1 s of G.711 each way per checked call.
const PACKETS: u64 = 50;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Skips (returns) when sipp is missing, except under CI where it is a failure.
macro_rules! require_sipp {
    () => {
        if !sip::sipp_available() {
            assert!(
                !tests::in_ci(),
                "sipp is not installed (apt-get install sip-tester)"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: sipp not installed\n", module_path!()).as_bytes(),
            );
            return;
        }
    };
}

/// Carrier, relay and vendor namespaces, with the peers' RTP sockets.
struct Net {
    topo: Topology,
    carrier_rtp: UdpSocket,
    vendor_rtp: UdpSocket,
}

impl Net {
    fn new() -> Net {
        let topo = Topology::three(TopologyOptions {
            gro: Some(true),
            forwarding: true,
            ..Default::default()
        })
        .expect("topology");
        let carrier_rtp = rtp::bind_in(
            &topo.caller,
            SocketAddr::new(topo.caller_if.ip(false), RTP_PORT),
        )
        .expect("carrier rtp socket");
        let vendor_rtp = rtp::bind_in(
            &topo.callee,
            SocketAddr::new(topo.callee_if.ip(false), RTP_PORT),
        )
        .expect("vendor rtp socket");
        Net {
            topo,
            carrier_rtp,
            vendor_rtp,
        }
    }

    fn carrier_sip(&self) -> SocketAddr {
        SocketAddr::new(self.topo.caller_if.ip(false), SIP_PORT)
    }

    fn vendor_sip(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.topo.callee_if.ip(false), port)
    }

    fn carrier_rtp_addr(&self) -> SocketAddr {
        self.carrier_rtp.local_addr().expect("addr")
    }

    fn vendor_rtp_addr(&self) -> SocketAddr {
        self.vendor_rtp.local_addr().expect("addr")
    }

    /// A vendor UAS at `port`, started and bound.
    fn uas(&self, scenario: &str, port: u16, calls: u32, ring: Duration) -> sip::SippRun {
        let mut s = Sipp::new(scenario, self.vendor_sip(port));
        s.calls = calls;
        s.pause = ring;
        if !matches!(scenario, "uas_ring.xml" | "uas_503.xml") {
            s.var("rtp_port", &RTP_PORT.to_string());
        }
        let mut run = s.spawn(&self.topo.callee).expect("spawn uas");
        run.wait_bound(&self.topo.callee).expect("uas bound");
        run
    }

    /// A carrier UAC sending to `target`.
    fn uac(&self, scenario: &str, target: SocketAddr, hold: Duration) -> Sipp {
        let mut s = Sipp::uac(scenario, self.carrier_sip(), target, CLI, CLD, RTP_PORT);
        s.pause = hold;
        s
    }

    /// Media of an answered call: waits for both sides' SDP and exchanges RTP both ways.
    fn media(&self, uac: &mut sip::SippRun, uas: &mut sip::SippRun, tag: &str) -> Media {
        let at_carrier = uac
            .wait_media(tag, Duration::from_secs(10))
            .expect("carrier got an SDP answer");
        let at_vendor = uas
            .wait_media("MEDIA", Duration::from_secs(10))
            .expect("vendor got an SDP offer");
        let check = MediaCheck::run(
            &self.carrier_rtp,
            &self.vendor_rtp,
            at_carrier,
            at_vendor,
            PACKETS,
            1,
        );
        Media {
            at_carrier,
            at_vendor,
            check,
        }
    }
}

struct Media {
    /// Where the carrier was told to send (the SDP answer it got).
    at_carrier: SocketAddr,
    /// Where the vendor was told to send (the SDP offer it got).
    at_vendor: SocketAddr,
    check: MediaCheck,
}

#[track_caller]
fn assert_finals(uac: &SippOutcome, expect: &[(u16, usize)]) {
    let got = uac.trace.final_counts("INVITE");
    let want: std::collections::BTreeMap<u16, usize> = expect.iter().copied().collect();
    assert_eq!(got, want, "final responses to INVITE:\n{uac}");
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the scenario pairs against each other, no SBC.
// ---------------------------------------------------------------------------------------------

#[test]
fn direct_basic_call_with_media() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let mut uac = net
        .uac(
            "uac.xml",
            net.vendor_sip(SIP_PORT),
            Duration::from_millis(2500),
        )
        .spawn(&net.topo.caller)
        .expect("uac");
    let m = net.media(&mut uac, &mut uas, "MEDIA");
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    assert_finals(&uac, &[(200, 1)]);
    // No SBC: each side is told the other's own socket.
    assert_eq!(m.at_carrier, net.vendor_rtp_addr());
    assert_eq!(m.at_vendor, net.carrier_rtp_addr());
    m.check.assert_lossless();
    assert_eq!(uas.trace.requests_received("BYE").len(), 1, "{uas}");
}

#[test]
fn direct_digest_auth_good_and_bad_password() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    for (password, want) in [("s3cret", 200), ("wrong", 403)] {
        let mut s = Sipp::new("uas_auth.xml", net.vendor_sip(SIP_PORT));
        s.var("rtp_port", &RTP_PORT.to_string())
            .var("user", "carrier-a")
            .var("pass", "s3cret");
        let mut uas = s.spawn(&net.topo.callee).expect("uas");
        uas.wait_bound(&net.topo.callee).expect("bound");
        let mut c = net.uac(
            "uac.xml",
            net.vendor_sip(SIP_PORT),
            Duration::from_millis(300),
        );
        c.auth = Some(("carrier-a".into(), password.into()));
        let uac = c.spawn(&net.topo.caller).expect("uac").finish();
        let uas = uas.finish();
        uac.assert_ok();
        uas.assert_ok();
        let finals = uac.trace.final_counts("INVITE");
        assert_eq!(finals.get(&401), Some(&1), "challenged first:\n{uac}");
        assert_eq!(finals.get(&want), Some(&1), "password {password}:\n{uac}");
        // The second INVITE carried credentials.
        let invites: Vec<_> = uac
            .trace
            .sent()
            .filter(|m| m.method() == Some("INVITE"))
            .collect();
        assert!(
            invites
                .last()
                .and_then(|m| m.header("Authorization"))
                .is_some_and(|a| a.contains("Digest")),
            "{uac}"
        );
    }
}

#[test]
fn direct_error_final_is_acked() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let uas = net.uas("uas_503.xml", SIP_PORT, 1, Duration::ZERO);
    let uac = net
        .uac("uac.xml", net.vendor_sip(SIP_PORT), Duration::ZERO)
        .spawn(&net.topo.caller)
        .expect("uac")
        .finish();
    let uas = uas.finish();
    uac.assert_ok();
    uas.assert_ok();
    assert_finals(&uac, &[(503, 1)]);
    assert_eq!(uas.trace.requests_received("ACK").len(), 1, "{uas}");
}

#[test]
fn direct_cancel_before_answer() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let uas = net.uas("uas_ring.xml", SIP_PORT, 1, Duration::ZERO);
    let uac = net
        .uac("uac_cancel.xml", net.vendor_sip(SIP_PORT), Duration::ZERO)
        .spawn(&net.topo.caller)
        .expect("uac")
        .finish();
    let uas = uas.finish();
    uac.assert_ok();
    uas.assert_ok();
    assert_finals(&uac, &[(487, 1)]);
    assert_eq!(
        uac.trace.finals("CANCEL").first().and_then(|m| m.status()),
        Some(200)
    );
    assert_eq!(uas.trace.requests_received("CANCEL").len(), 1, "{uas}");
}

#[test]
fn direct_reinvite_mid_call() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let mut uac = net
        .uac(
            "uac_reinvite.xml",
            net.vendor_sip(SIP_PORT),
            Duration::from_millis(2500),
        )
        .spawn(&net.topo.caller)
        .expect("uac");
    let before = net.media(&mut uac, &mut uas, "MEDIA");
    before.check.assert_lossless();
    // After the re-INVITE the media goes on.
    let again = uac
        .wait_media("REMEDIA", Duration::from_secs(10))
        .expect("re-INVITE answered");
    let check = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        again,
        before.at_vendor,
        PACKETS,
        3,
    );
    check.assert_lossless();
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let ok = uac.trace.finals("INVITE");
    assert_eq!(ok.len(), 2, "initial INVITE and re-INVITE answered:\n{uac}");
    assert_eq!(uas.trace.requests_received("INVITE").len(), 2, "{uas}");
}

#[test]
fn direct_far_end_hangs_up() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let uas = net.uas("uas_bye.xml", SIP_PORT, 1, Duration::from_millis(1000));
    let t0 = Instant::now();
    let uac = net
        .uac("uac_recv_bye.xml", net.vendor_sip(SIP_PORT), Duration::ZERO)
        .spawn(&net.topo.caller)
        .expect("uac")
        .finish();
    let uas = uas.finish();
    uac.assert_ok();
    uas.assert_ok();
    assert_eq!(uac.trace.requests_received("BYE").len(), 1, "{uac}");
    assert!(t0.elapsed() >= Duration::from_secs(1));
}

/// The raw carrier sends one INVITE `copies` times, 150 ms apart (byte-identical: the same
/// transaction retransmitted), then ACKs the 200, exchanges media and hangs up.
fn retransmitted_invite_call(
    net: &Net,
    target: SocketAddr,
    uas: &mut sip::SippRun,
    copies: usize,
) -> RawCall {
    let local = SocketAddr::new(net.topo.caller_if.ip(false), SIP_PORT + 2);
    let raw = RawSip::bind_in(&net.topo.caller, local, target).expect("raw socket");
    let call_id = format!("retrans-{}", std::process::id());
    let inv = sip::invite(local, target, CLI, CLD, &call_id, RTP_PORT);
    let mut seen = Vec::new();
    for _ in 0..copies {
        raw.send(inv.as_bytes()).expect("send INVITE");
        seen.extend(raw.collect(Duration::from_millis(150)));
    }
    let ok = seen
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .cloned()
        .or_else(|| {
            raw.wait_for(
                "SIP/2.0 200",
                "1 INVITE",
                Duration::from_secs(10),
                &mut seen,
            )
        });
    let Some(ok) = ok else {
        panic!(
            "no 200 to the retransmitted INVITE; got:\n{}",
            seen.join("\n")
        );
    };
    raw.send(sip::in_dialog("ACK", 1, local, target, &call_id, &ok).as_bytes())
        .expect("ACK");
    let at_carrier =
        sip::sdp_media(ok.split_once("\r\n\r\n").map_or("", |(_, b)| b)).expect("SDP in the 200");
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(5))
        .expect("vendor offer");
    let check = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        5,
    );
    raw.send(sip::in_dialog("BYE", 2, local, target, &call_id, &ok).as_bytes())
        .expect("BYE");
    let bye_ok = raw.wait_for("SIP/2.0 200", "2 BYE", Duration::from_secs(5), &mut seen);
    RawCall {
        call_id,
        responses: seen,
        bye_answered: bye_ok.is_some(),
        check,
    }
}

struct RawCall {
    call_id: String,
    responses: Vec<String>,
    bye_answered: bool,
    check: MediaCheck,
}

/// The raw carrier's call, sent once: sipp as a UAS does not absorb a retransmitted INVITE
/// once it has answered (it aborts the call), so only the SBC scenario retransmits.
#[test]
fn direct_raw_carrier_call() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let call = retransmitted_invite_call(&net, net.vendor_sip(SIP_PORT), &mut uas, 1);
    let uas = uas.finish();
    uas.assert_ok();
    assert!(call.bye_answered, "{}", call.responses.join("\n"));
    call.check.assert_lossless();
    assert_eq!(
        uas.trace.call_ids_received("INVITE"),
        vec![call.call_id.clone()],
        "{uas}"
    );
}
