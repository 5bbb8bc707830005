//! Calls survive a restart of `sipd` ("nothing lost", DESIGN.md): established calls go on
//! across a hand-over (SIGUSR2, an upgrade) and across a crash (SIGKILL), their media never
//! stops (the kernel relays it while no sipd runs), in-dialog BYEs from either side after the
//! restart are answered 200, and every answered call has exactly one CDR covering it whole.
//!
//! The carrier is two sipp UACs (one hangs up its calls, the other waits for the vendor's
//! BYE), the vendor two sipp UASes on two connections (channels fill the first one, then the
//! second takes the rest), the media Rust sockets checked byte for byte.

mod sbc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sbc::*;
use serde_json::Value;
use tests::sip::{MediaCheck, Sipp, SippRun};
use tests::{require_privileged, require_sipp};

/// Calls of each kind (caller hangs up / vendor hangs up).
const HALF: u32 = 50;

/// Calls up on both vendor connections, each connection full.
fn provisioning() -> Prov {
    Prov {
        cps_limit: 100,
        max_sessions: 2 * HALF + 10,
        // The caller's and the vendor's half: the first connection's channels fill, then the
        // second one's.
        vendors: vec![(SIP_PORT, HALF, 10), (SIP_PORT + 10, HALF, 20)],
        vendor_cps: 100,
        ..Prov::default()
    }
}

/// A carrier UAC from its own SIP port.
fn carrier(net: &Net, scenario: &str, port: u16, target: SocketAddr, hold: Duration) -> Sipp {
    let local = SocketAddr::new(net.carrier_sip().ip(), port);
    let mut s = Sipp::uac(scenario, local, target, CLI, CLD, RTP_PORT);
    s.pause = hold;
    s.calls = HALF;
    s.rate = Some((25, Duration::from_secs(1)));
    s.deadline = Duration::from_secs(90);
    s
}

/// Waits until `run` logged `n` answered calls.
fn wait_answered(run: &SippRun, n: usize, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while run.media("MEDIA").len() < n {
        assert!(
            Instant::now() < end,
            "{what}: {} of {n} calls answered in 30 s\n{}",
            run.media("MEDIA").len(),
            run.report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// RTP both ways on one call's relay addresses, every packet intact.
fn media_flows(net: &Net, at_carrier: SocketAddr, at_vendor: SocketAddr, stream: u32) {
    let m = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        stream,
    );
    m.assert_lossless();
}

/// Every answered call has exactly one CDR, answered, hung up by the side that sent BYE and
/// at least `min_secs` long.
fn assert_cdrs(cdrs: &[Value], calls: &[String], min_secs: u64) {
    for call_id in calls {
        let mine: Vec<&Value> = cdrs
            .iter()
            .filter(|c| c["call_id"].as_str() == Some(call_id.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "call {call_id}: {mine:#?}");
        let c = mine[0];
        assert_eq!(c["result_code"], 200, "{c:#}");
        let secs = c["duration_secs"].as_u64().unwrap_or(0);
        assert!(secs >= min_secs, "call {call_id} billed {secs} s: {c:#}");
        assert!(c["cost"].as_u64().is_some_and(|x| x > 0), "{c:#}");
    }
}

/// 100 established calls, sipd handed over (SIGUSR2) and started again: all 100 are hung up
/// afterwards, half by the caller and half by the vendor, every BYE answered 200, media never
/// stopped, 100 correct CDRs.
#[test]
fn a_hand_over_keeps_100_established_calls_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &provisioning(), 60);
    let hold = Duration::from_secs(14);
    let mut uas_a = net.uas("uas.xml", SIP_PORT, HALF, Duration::from_millis(100));
    let uas_b = net.uas("uas_bye.xml", SIP_PORT + 10, HALF, hold);
    let uac_a = carrier(&net, "uac.xml", SIP_PORT, sbc.sip(), hold)
        .spawn(&net.topo.caller)
        .expect("uac");
    wait_answered(&uac_a, HALF as usize, "caller-hangs-up calls");
    let uac_b = carrier(&net, "uac_recv_bye.xml", SIP_PORT + 2, sbc.sip(), hold)
        .spawn(&net.topo.caller)
        .expect("uac");
    wait_answered(&uac_b, HALF as usize, "vendor-hangs-up calls");
    let at_carrier = uac_a.media("MEDIA")[0].1;
    let at_vendor = uas_a
        .wait_media("MEDIA", Duration::from_secs(1))
        .expect("vendor media");
    media_flows(&net, at_carrier, at_vendor, 1);

    let t0 = Instant::now();
    sbc.hand_over(Duration::from_secs(15));
    eprintln!("handed over in {:?}", t0.elapsed());
    // Nobody runs sipd now: the kernel still relays.
    media_flows(&net, at_carrier, at_vendor, 3);
    sbc.start_again(&net);
    assert!(
        sbc.log_text()
            .contains("calls of the previous run taken back"),
        "{}",
        sbc.log_text()
    );
    media_flows(&net, at_carrier, at_vendor, 5);
    eprintln!(
        "back up and media checked {:?} after the hand-over",
        t0.elapsed()
    );

    let (uac_a, uac_b) = (uac_a.finish(), uac_b.finish());
    let (uas_a, uas_b) = (uas_a.finish(), uas_b.finish());
    eprintln!("sipp done {:?} after the hand-over", t0.elapsed());
    for o in [&uac_a, &uac_b, &uas_a, &uas_b] {
        o.assert_ok();
    }
    // Every BYE after the restart was answered 200, on both sides.
    for (o, who) in [(&uac_a, "caller"), (&uas_b, "vendor")] {
        let byes = o.trace.final_counts("BYE");
        assert_eq!(
            byes.get(&200),
            Some(&(HALF as usize)),
            "{who}'s BYEs: {byes:?}"
        );
        assert_eq!(byes.len(), 1, "{who}'s BYEs: {byes:?}");
    }
    let calls: Vec<String> = [&uac_a, &uac_b]
        .iter()
        .flat_map(|o| o.trace.call_ids_sent("INVITE"))
        .collect();
    assert_eq!(calls.len(), 2 * HALF as usize);
    let cdrs = sbc.cdrs();
    assert_cdrs(&cdrs, &calls, hold.as_secs() - 2);
    let by = |who: &str| cdrs.iter().filter(|c| c["hung_up_by"] == who).count();
    assert_eq!((by("caller"), by("callee")), (HALF as usize, HALF as usize));
}

/// A carrier over TCP: its connection dies with sipd (SIGKILL). sipp reconnects from a new
/// source port for its BYEs; the restarted sipd binds the adopted calls' leg to the new
/// connection (same host, reliable transport), answers 200 and hangs up the vendor's side.
#[test]
fn a_tcp_caller_re_binds_its_calls_after_a_crash_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &provisioning(), 60);
    let calls = 5;
    let hold = Duration::from_secs(10);
    let uas = net.uas("uas.xml", SIP_PORT, calls, Duration::from_millis(100));
    let mut c = carrier(&net, "uac.xml", SIP_PORT, sbc.sip(), hold);
    c.calls = calls;
    c.transport = "t1";
    // sipp notices the reset at once and tries again every 500 ms while sipd is down.
    c.extra = [
        "-max_reconnect",
        "40",
        "-reconnect_sleep",
        "500",
        "-reconnect_close",
        "false",
    ]
    .map(String::from)
    .to_vec();
    c.deadline = Duration::from_secs(40);
    let uac = c.spawn(&net.topo.caller).expect("uac");
    wait_answered(&uac, calls as usize, "TCP calls");
    sbc.signal(libc::SIGKILL);
    sbc.start_again(&net);
    let uac = uac.finish();
    // sipp learns that its connection is gone by writing its first BYE into it: that BYE is
    // lost (sipp does not send it again over the new connection), the rest go over the new
    // one. A real UA would send it again; the call is ended by sipd's shutdown below.
    let byes = uac.trace.final_counts("BYE");
    let answered = byes.get(&200).copied().unwrap_or(0);
    assert!(answered + 1 >= calls as usize, "{byes:?}\n{uac}");
    assert_eq!(byes.len(), 1, "only 200s: {byes:?}");
    let ids = uac.trace.call_ids_sent("INVITE");
    let cdrs = sbc.cdrs();
    let uas = uas.finish();
    assert_eq!(
        uas.trace.requests_received("BYE").len(),
        calls as usize,
        "the vendor was hung up: {uas}"
    );
    assert_cdrs(&cdrs, &ids, 1);
    let by_caller = cdrs.iter().filter(|c| c["hung_up_by"] == "caller").count();
    assert_eq!(by_caller, answered, "{cdrs:#?}");
}

/// The userspace data plane: the relay's sockets die with the process, so the restarted sipd
/// binds the calls' relay ports again from their saved records; media flows again, BYEs are
/// answered, CDRs are whole.
#[test]
fn calls_survive_a_crash_on_the_userspace_plane() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Userspace, &provisioning(), 60);
    let calls = 10;
    let hold = Duration::from_secs(10);
    let mut uas = net.uas("uas.xml", SIP_PORT, calls, Duration::from_millis(100));
    let mut c = carrier(&net, "uac.xml", SIP_PORT, sbc.sip(), hold);
    c.calls = calls;
    let uac = c.spawn(&net.topo.caller).expect("uac");
    wait_answered(&uac, calls as usize, "calls");
    let at_carrier = uac.media("MEDIA")[0].1;
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(1))
        .expect("vendor media");
    media_flows(&net, at_carrier, at_vendor, 1);
    sbc.signal(libc::SIGKILL);
    sbc.start_again(&net);
    assert!(sbc.log_text().contains("resumed=10"), "{}", sbc.log_text());
    media_flows(&net, at_carrier, at_vendor, 3);
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let ids = uac.trace.call_ids_sent("INVITE");
    let cdrs = sbc.cdrs();
    assert_cdrs(&cdrs, &ids, hold.as_secs() - 2);
}
