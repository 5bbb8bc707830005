//! SIP scenarios with real peers: Debian's `sipp` as the carrier (UAC, caller namespace) and
//! the vendor (UAS, callee namespace), RTP between Rust sockets next to them, checked byte for
//! byte (`tests::rtp`).
//!
//! `direct_*`: the sipp scenario pairs against each other with no SBC in the path (the relay
//! namespace only routes), proving each scenario, the trace parsing and the media check.
//!
//! `sbc_*`: `sipd run` in the relay namespace (SIP and media on the relay's carrier-facing
//! address), provisioned with `sipd import`, the carrier calling it and it calling the vendor.
//! Each asserts the SIP responses the carrier got (and their Warning), that media went through
//! the relay both ways byte for byte, and the CDRs (`sipd cdrs list --json`, read after sipd
//! stopped). The basic calls run on both data planes (generic XDP and userspace), the rest on
//! XDP.
//!
//! The harness (namespaces, provisioning, `sipd run`) is in `sbc/`, shared with the attack
//! scenarios. The scenarios share the machine's two cores, so they run one at a time (a lock), and every
//! load is bounded.

mod sbc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sbc::*;
use serde_json::Value;
use tests::sip::{self, MediaCheck, RawSip, Sipp, SippOutcome};
use tests::{require_privileged, require_sipp};

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

// ---------------------------------------------------------------------------------------------
// Phase 2: through sipd.
// ---------------------------------------------------------------------------------------------
/// One CDR's field as a string or number.
fn field<'a>(cdr: &'a Value, k: &str) -> &'a Value {
    cdr.get(k).unwrap_or(&Value::Null)
}

#[track_caller]
fn only_cdr(cdrs: &[Value]) -> &Value {
    assert_eq!(cdrs.len(), 1, "one CDR: {cdrs:#?}");
    &cdrs[0]
}

#[track_caller]
fn assert_refused(uac: &SippOutcome, code: u16, warning: &str) {
    let finals = uac.trace.finals("INVITE");
    let last = finals
        .iter()
        .rev()
        .find(|m| m.status() != Some(401))
        .unwrap_or_else(|| panic!("no final response:\n{uac}"));
    assert_eq!(last.status(), Some(code), "{uac}");
    assert!(
        last.headers("Warning").iter().any(|w| w.contains(warning)),
        "Warning containing {warning:?} in:\n{}",
        last.text
    );
}

/// The carrier and vendor were both told to send to the relay (never to each other), and
/// media flowed both ways through it, every byte intact.
#[track_caller]
fn assert_relayed(net: &Net, sbc: &Sbc, m: &Media) {
    assert_eq!(
        m.at_carrier.ip(),
        sbc.addr,
        "carrier's SDP answer points at the relay"
    );
    assert_eq!(
        m.at_vendor.ip(),
        sbc.addr,
        "vendor's SDP offer points at the relay"
    );
    assert_ne!(m.at_carrier, net.vendor_rtp_addr());
    assert_ne!(m.at_vendor, net.carrier_rtp_addr());
    m.check.assert_lossless();
    let (at_vendor_from, at_carrier_from) = m.check.sources();
    assert!(
        at_vendor_from.iter().all(|a| a.ip() == sbc.addr),
        "vendor got media from the relay only: {at_vendor_from:?}"
    );
    assert!(
        at_carrier_from.iter().all(|a| a.ip() == sbc.addr),
        "carrier got media from the relay only: {at_carrier_from:?}"
    );
}

/// A whole answered call through sipd with media checked; returns the CDRs.
fn answered_call(plane: Plane, prov: Prov, auth: Option<(&str, &str)>) -> Vec<Value> {
    let net = Net::new();
    let mut sbc = Sbc::start(&net, plane, &prov, 60);
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let mut c = net.uac("uac.xml", sbc.sip(), Duration::from_millis(2500));
    c.auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
    let mut uac = c.spawn(&net.topo.caller).expect("uac");
    let m = net.media(&mut uac, &mut uas, "MEDIA");
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let finals = uac.trace.final_counts("INVITE");
    assert_eq!(finals.get(&200), Some(&1), "{uac}");
    if auth.is_some() {
        assert_eq!(finals.get(&401), Some(&1), "challenged first: {uac}");
    }
    assert_relayed(&net, &sbc, &m);
    assert_eq!(sbc.plane, plane);
    assert!(
        sbc.log_text().contains(plane.mode())
            || sbc.log_text().contains(&plane.mode().replace('-', " ")),
        "sipd says which data plane runs:\n{}",
        sbc.log_text()
    );
    if plane == Plane::Xdp {
        // The kernel relayed the media (the first packet each way may take the slow path
        // while the neighbour is resolved).
        let st = sbc.kernel_stats();
        let kernel = st["relay_redirect"] + st["relay_tx"];
        assert!(
            kernel + 4 >= 2 * PACKETS,
            "kernel relayed {kernel} of {}: {st:?}",
            2 * PACKETS
        );
    }
    // Topology hiding: the vendor sees sipd, not the carrier.
    let inv = &uas.trace.requests_received("INVITE")[0];
    assert!(
        !inv.text.contains(&net.topo.caller_if.ipv4.to_string()),
        "carrier address leaked to the vendor:\n{}",
        inv.text
    );
    let cdrs = sbc.cdrs();
    let cdr = only_cdr(&cdrs);
    let call_id = uac
        .trace
        .sent()
        .next()
        .and_then(|m| m.header("Call-ID"))
        .unwrap_or("")
        .to_string();
    assert_eq!(field(cdr, "call_id"), &Value::from(call_id), "{cdr:#}");
    assert_eq!(field(cdr, "result_code"), &Value::from(200), "{cdr:#}");
    assert_eq!(
        field(cdr, "reason"),
        &Value::from("caller hung up"),
        "{cdr:#}"
    );
    assert!(field(cdr, "account_id").is_number(), "{cdr:#}");
    assert!(field(cdr, "connection_id").is_number(), "{cdr:#}");
    assert!(field(cdr, "answer_ms").is_number(), "{cdr:#}");
    let secs = field(cdr, "duration_secs").as_u64().unwrap_or(0);
    assert!((2..=5).contains(&secs), "held ~2.5 s: {cdr:#}");
    assert!(
        field(cdr, "caller")
            .as_str()
            .is_some_and(|c| c.contains(CLI)),
        "{cdr:#}"
    );
    assert!(
        field(cdr, "callee")
            .as_str()
            .is_some_and(|c| c.contains(CLD)),
        "{cdr:#}"
    );
    cdrs
}

fn ip_auth_call(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let cdrs = answered_call(plane, Prov::default(), None);
    // 0.60 per minute, 1 s increments: 0.01 per second held.
    let cost = cost_micros(&cdrs[0]);
    let secs = field(&cdrs[0], "duration_secs").as_u64().unwrap_or(0);
    assert_eq!(cost, secs * 10_000, "{:#}", cdrs[0]);
}

/// `cost` as integer micro-units, whether sipd writes a number or a decimal string.
fn cost_micros(cdr: &Value) -> u64 {
    match field(cdr, "cost") {
        Value::Number(n) => n.as_u64().unwrap_or(u64::MAX),
        Value::String(s) => {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            let frac = format!("{frac:0<6}");
            int.parse::<u64>().unwrap_or(u64::MAX) * 1_000_000
                + frac[..6].parse::<u64>().unwrap_or(0)
        }
        _ => u64::MAX,
    }
}

#[test]
fn sbc_ip_auth_call_xdp() {
    ip_auth_call(Plane::Xdp);
}

#[test]
fn sbc_ip_auth_call_userspace() {
    ip_auth_call(Plane::Userspace);
}

fn digest_call(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        digest: Some(("carrier-a", "Kq9!Vt4m-Plover-82")),
        ..Prov::default()
    };
    answered_call(plane, prov, Some(("carrier-a", "Kq9!Vt4m-Plover-82")));
}

#[test]
fn sbc_digest_auth_call_xdp() {
    digest_call(Plane::Xdp);
}

#[test]
fn sbc_digest_auth_call_userspace() {
    digest_call(Plane::Userspace);
}

/// A call that must be refused: one UAC call, no vendor involved (a vendor UAS runs to catch
/// any INVITE that should not have reached it). `before_auth`: the refusal came before the
/// caller authenticated, so it is counted under that reason in the refusal table and
/// written as no CDR.
fn refused_call(
    prov: Prov,
    cli: &str,
    auth: Option<(&str, &str)>,
    code: u16,
    warning: &str,
    before_auth: Option<&str>,
) -> Vec<Value> {
    let net = Net::new();
    let set = Settings {
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    };
    let mut sbc = Sbc::start_with(&net, Plane::Xdp, &prov, &set);
    let uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let mut c = net.uac("uac.xml", sbc.sip(), Duration::ZERO);
    c.vars[0].1 = cli.to_string();
    c.auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
    let uac = c.spawn(&net.topo.caller).expect("uac").finish();
    uac.assert_ok();
    assert_refused(&uac, code, warning);
    drop(uas);
    assert!(sbc.alive(), "sipd still running");
    if let Some(reason) = before_auth {
        let key = format!("sipd_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(sbc.metric(&key), 1, "{key}");
        let cdrs = sbc.cdrs();
        assert!(cdrs.is_empty(), "no CDR before authentication: {cdrs:#?}");
        return cdrs;
    }
    let cdrs = sbc.cdrs();
    let cdr = only_cdr(&cdrs);
    assert_eq!(field(cdr, "result_code"), &Value::from(code), "{cdr:#}");
    assert!(
        field(cdr, "reason")
            .as_str()
            .is_some_and(|r| r.contains(warning)),
        "CDR reason has {warning:?}: {cdr:#}"
    );
    assert_eq!(field(cdr, "duration_secs"), &Value::from(0), "{cdr:#}");
    assert_eq!(cost_micros(cdr), 0, "{cdr:#}");
    cdrs
}

#[test]
fn sbc_wrong_password_403() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        digest: Some(("carrier-a", "Kq9!Vt4m-Plover-82")),
        ..Prov::default()
    };
    refused_call(
        prov,
        CLI,
        Some(("carrier-a", "wrong")),
        403,
        "bad credentials",
        Some("bad_credentials"),
    );
}

#[test]
fn sbc_cli_rule_mismatch_403() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    // The rule wants CLIs starting 44; this carrier sends 55...
    refused_call(
        Prov::default(),
        "5512345",
        None,
        403,
        "no matching auth rule",
        Some("no_matching_rule"),
    );
}

#[test]
fn sbc_cld_rule_mismatch_403() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        cld_prefix: "34",
        ..Prov::default()
    };
    refused_call(
        prov,
        CLI,
        None,
        403,
        "no matching auth rule",
        Some("no_matching_rule"),
    );
}

#[test]
fn sbc_balance_exhausted_402() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    // 0.60/min x 60 s expected = 0.60 needed; 0.10 there.
    let prov = Prov {
        balance: "0.10",
        ..Prov::default()
    };
    refused_call(prov, CLI, None, 402, "insufficient balance", None);
}

#[test]
fn sbc_no_route_404() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    // Authenticated and admitted, but no connection at all.
    let prov = Prov {
        vendors: vec![],
        ..Prov::default()
    };
    refused_call(prov, CLI, None, 404, "no route", None);
}

/// Several calls from the carrier at once: (uac outcome, cdrs).
fn burst(prov: Prov, calls: u32, rate: u32, hold: Duration) -> (SippOutcome, Vec<Value>) {
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &prov, 60);
    let uas = net.uas("uas.xml", SIP_PORT, calls, Duration::ZERO);
    let mut c = net.uac("uac.xml", sbc.sip(), hold);
    c.calls = calls;
    c.rate = Some((rate, Duration::from_secs(1)));
    c.limit = Some(calls);
    let uac = c.spawn(&net.topo.caller).expect("uac").finish();
    drop(uas);
    uac.assert_ok();
    let cdrs = sbc.cdrs();
    (uac, cdrs)
}

fn count_results(cdrs: &[Value]) -> std::collections::BTreeMap<u64, usize> {
    let mut m = std::collections::BTreeMap::new();
    for c in cdrs {
        *m.entry(field(c, "result_code").as_u64().unwrap_or(0))
            .or_insert(0) += 1;
    }
    m
}

#[test]
fn sbc_account_cps_limit_503() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        cps_limit: 2,
        ..Prov::default()
    };
    // 6 calls within a second against 2 per second.
    let (uac, cdrs) = burst(prov, 6, 12, Duration::from_millis(200));
    let finals = uac.trace.final_counts("INVITE");
    let ok = finals.get(&200).copied().unwrap_or(0);
    let busy = finals.get(&503).copied().unwrap_or(0);
    assert!(
        (2..=3).contains(&ok),
        "2 (or 3 across a second boundary) admitted: {finals:?}\n{uac}"
    );
    assert_eq!(ok + busy, 6, "{finals:?}\n{uac}");
    for m in uac
        .trace
        .finals("INVITE")
        .iter()
        .filter(|m| m.status() == Some(503))
    {
        assert!(
            m.headers("Warning")
                .iter()
                .any(|w| w.contains("account CPS limit")),
            "{}",
            m.text
        );
        assert!(m.header("Retry-After").is_some(), "{}", m.text);
    }
    assert_eq!(cdrs.len(), 6, "one CDR per attempt: {cdrs:#?}");
    assert_eq!(
        count_results(&cdrs).get(&503).copied().unwrap_or(0),
        busy,
        "{cdrs:#?}"
    );
}

#[test]
fn sbc_account_session_limit_486() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        max_sessions: 2,
        ..Prov::default()
    };
    // 3 calls held 2 s each, started 100 ms apart: the third finds two in progress.
    let (uac, cdrs) = burst(prov, 3, 10, Duration::from_millis(2000));
    let finals = uac.trace.final_counts("INVITE");
    assert_eq!(finals, [(200, 2), (486, 1)].into_iter().collect(), "{uac}");
    assert_refused_any(&uac, 486, "account session limit");
    assert_eq!(
        count_results(&cdrs),
        [(200, 2), (486, 1)].into_iter().collect(),
        "{cdrs:#?}"
    );
}

#[test]
fn sbc_upstream_channel_cap_503() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        vendors: vec![(SIP_PORT, 1, 10)],
        ..Prov::default()
    };
    let (uac, cdrs) = burst(prov, 2, 10, Duration::from_millis(2000));
    let finals = uac.trace.final_counts("INVITE");
    assert_eq!(finals, [(200, 1), (503, 1)].into_iter().collect(), "{uac}");
    assert_refused_any(&uac, 503, "upstream capacity");
    assert_eq!(
        count_results(&cdrs),
        [(200, 1), (503, 1)].into_iter().collect(),
        "{cdrs:#?}"
    );
}

#[track_caller]
fn assert_refused_any(uac: &SippOutcome, code: u16, warning: &str) {
    let refusals: Vec<_> = uac
        .trace
        .finals("INVITE")
        .into_iter()
        .filter(|m| m.status() == Some(code))
        .collect();
    assert!(!refusals.is_empty(), "no {code}:\n{uac}");
    for m in refusals {
        assert!(
            m.headers("Warning").iter().any(|w| w.contains(warning)),
            "Warning containing {warning:?} in:\n{}",
            m.text
        );
    }
}

#[test]
fn sbc_failover_to_second_vendor() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let prov = Prov {
        vendors: vec![(SIP_PORT, 10, 10), (SIP_PORT + 2, 10, 20)],
        ..Prov::default()
    };
    let mut sbc = Sbc::start(&net, Plane::Xdp, &prov, 60);
    let down = net.uas("uas_503.xml", SIP_PORT, 1, Duration::ZERO);
    let mut up = net.uas("uas.xml", SIP_PORT + 2, 1, Duration::ZERO);
    let mut uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_millis(2500))
        .spawn(&net.topo.caller)
        .expect("uac");
    let m = net.media(&mut uac, &mut up, "MEDIA");
    let (uac, up, down) = (uac.finish(), up.finish(), down.finish());
    uac.assert_ok();
    up.assert_ok();
    down.assert_ok();
    assert_finals(&uac, &[(200, 1)]);
    assert_eq!(
        down.trace.requests_received("INVITE").len(),
        1,
        "first vendor tried: {down}"
    );
    assert_eq!(
        down.trace.requests_received("ACK").len(),
        1,
        "its 503 ACKed: {down}"
    );
    assert_relayed(&net, &sbc, &m);
    let cdrs = sbc.cdrs();
    let cdr = only_cdr(&cdrs);
    assert_eq!(field(cdr, "result_code"), &Value::from(200), "{cdr:#}");
    assert!(field(cdr, "connection_id").is_number(), "{cdr:#}");
}

/// A call that sipd ends by itself (BYE to both legs); `talk`: 1 s of media first, checked.
/// Returns how long the carrier's call lasted and the CDRs.
fn sbc_ends_call(prov: Prov, media_timeout: u64, talk: bool) -> (Duration, Vec<Value>) {
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &prov, media_timeout);
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let mut c = net.uac("uac_recv_bye.xml", sbc.sip(), Duration::ZERO);
    c.deadline = Duration::from_secs(20);
    let t0 = Instant::now();
    let mut uac = c.spawn(&net.topo.caller).expect("uac");
    let m = net.media(&mut uac, &mut uas, "MEDIA");
    if talk {
        assert_relayed(&net, &sbc, &m);
    }
    let uac = uac.finish();
    let took = t0.elapsed();
    let uas = uas.finish();
    uac.assert_ok();
    uas.assert_ok();
    assert_eq!(
        uac.trace.requests_received("BYE").len(),
        1,
        "BYE to the carrier: {uac}"
    );
    assert_eq!(
        uas.trace.requests_received("BYE").len(),
        1,
        "BYE to the vendor: {uas}"
    );
    let cdrs = sbc.cdrs();
    (took, cdrs)
}

#[test]
fn sbc_max_duration_cut_off() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let prov = Prov {
        max_call_secs: 3,
        ..Prov::default()
    };
    let (took, cdrs) = sbc_ends_call(prov, 60, true);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(7),
        "cut at ~3 s, took {took:?}"
    );
    let cdr = only_cdr(&cdrs);
    assert_eq!(
        field(cdr, "reason"),
        &Value::from("max duration"),
        "{cdr:#}"
    );
    assert_eq!(field(cdr, "result_code"), &Value::from(200), "{cdr:#}");
    let secs = field(cdr, "duration_secs").as_u64().unwrap_or(0);
    assert!((3..=4).contains(&secs), "{cdr:#}");
}

#[test]
fn sbc_media_timeout_bye_both_ways() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    // 1 s of media, then silence; media timeout 2 s.
    let (took, cdrs) = sbc_ends_call(Prov::default(), 2, true);
    assert!(
        took < Duration::from_secs(10),
        "media timeout fired, took {took:?}"
    );
    let cdr = only_cdr(&cdrs);
    assert_eq!(
        field(cdr, "reason"),
        &Value::from("media timeout"),
        "{cdr:#}"
    );
}

#[test]
fn sbc_cancel_before_answer() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &Prov::default(), 60);
    let uas = net.uas("uas_ring.xml", SIP_PORT, 1, Duration::ZERO);
    let uac = net
        .uac("uac_cancel.xml", sbc.sip(), Duration::ZERO)
        .spawn(&net.topo.caller)
        .expect("uac")
        .finish();
    let uas = uas.finish();
    uac.assert_ok();
    uas.assert_ok();
    assert_finals(&uac, &[(487, 1)]);
    assert_eq!(
        uas.trace.requests_received("CANCEL").len(),
        1,
        "CANCEL passed on: {uas}"
    );
    let cdrs = sbc.cdrs();
    let cdr = only_cdr(&cdrs);
    assert_eq!(field(cdr, "result_code"), &Value::from(487), "{cdr:#}");
    assert_eq!(field(cdr, "reason"), &Value::from("cancelled"), "{cdr:#}");
    assert_eq!(cost_micros(cdr), 0, "{cdr:#}");
}

#[test]
fn sbc_reinvite_mid_call() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &Prov::default(), 60);
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let mut uac = net
        .uac("uac_reinvite.xml", sbc.sip(), Duration::from_millis(2500))
        .spawn(&net.topo.caller)
        .expect("uac");
    let before = net.media(&mut uac, &mut uas, "MEDIA");
    assert_relayed(&net, &sbc, &before);
    let again = uac
        .wait_media("REMEDIA", Duration::from_secs(10))
        .expect("re-INVITE answered");
    assert_eq!(again.ip(), sbc.addr, "re-INVITE answer points at the relay");
    let vendor_again = uas
        .media("REINVITE")
        .first()
        .map(|(_, a)| *a)
        .expect("re-INVITE reached the vendor");
    assert_eq!(vendor_again.ip(), sbc.addr);
    let check = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        again,
        vendor_again,
        PACKETS,
        3,
    );
    check.assert_lossless();
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let answered = uac
        .trace
        .finals("INVITE")
        .iter()
        .filter(|m| m.status() == Some(200))
        .count();
    assert!(answered >= 2, "INVITE and re-INVITE answered: {uac}");
    let cdrs = sbc.cdrs();
    let cdr = only_cdr(&cdrs);
    assert_eq!(field(cdr, "result_code"), &Value::from(200), "{cdr:#}");
    assert_eq!(
        field(cdr, "reason"),
        &Value::from("caller hung up"),
        "{cdr:#}"
    );
}

#[test]
fn sbc_retransmitted_invite_is_one_call() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Xdp, &Prov::default(), 60);
    // The vendor rings 1 s, so all three copies arrive while the INVITE is unanswered.
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(1000));
    let call = retransmitted_invite_call(&net, sbc.sip(), &mut uas, 3);
    let uas = uas.finish();
    uas.assert_ok();
    assert!(call.bye_answered, "{}", call.responses.join("\n"));
    call.check.assert_lossless();
    assert_eq!(
        uas.trace.call_ids_received("INVITE").len(),
        1,
        "one call reached the vendor: {uas}"
    );
    assert_eq!(uas.trace.requests_received("INVITE").len(), 1, "{uas}");
    let finals: Vec<_> = call
        .responses
        .iter()
        .filter(|r| r.starts_with("SIP/2.0 200") && r.contains("INVITE"))
        .collect();
    assert!(!finals.is_empty());
    let cdrs = sbc.cdrs();
    let cdr = only_cdr(&cdrs);
    assert_eq!(
        field(cdr, "call_id"),
        &Value::from(call.call_id.clone()),
        "{cdr:#}"
    );
    assert_eq!(field(cdr, "result_code"), &Value::from(200), "{cdr:#}");
}

fn malformed_burst(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, plane, &Prov::default(), 60);
    let local = SocketAddr::new(net.topo.caller_if.ip(false), SIP_PORT + 4);
    let raw = RawSip::bind_in(&net.topo.caller, local, sbc.sip()).expect("raw socket");
    let msgs = sip::malformed_messages(local, sbc.sip());
    let mut answers = Vec::new();
    for (what, bytes) in &msgs {
        let _ = raw.send(bytes);
        let got = raw.collect(Duration::from_millis(60));
        answers.push((*what, got));
    }
    answers.push(("(late)", raw.collect(Duration::from_millis(500))));
    assert!(
        sbc.alive(),
        "sipd died on malformed input:\n{}",
        sbc.log_text()
    );
    let mut report = String::new();
    for (what, got) in &answers {
        for g in got {
            let line = g.lines().next().unwrap_or("");
            report += &format!("{what}: {line}\n");
            let code = sip::Msg {
                received: true,
                text: g.clone(),
            }
            .status();
            assert!(
                matches!(code, Some(400 | 505 | 513)),
                "{what} drew {line:?}, expected 400/505/513 or silence\n{g}"
            );
        }
    }
    eprintln!("malformed burst ({}):\n{report}", plane.mode());
    // Each request whose Via/From/To/Call-ID/CSeq can be read gets its 400 (513 when too
    // large); the unreadable ones are dropped (sipd/README.md).
    for (what, code) in [
        ("huge Content-Length", 400),
        ("Content-Length beyond the datagram", 400),
        ("negative Content-Length", 400),
        ("bad CSeq", 400),
        ("header without colon", 400),
        ("oversized", 513),
    ] {
        let got = &answers.iter().find(|(w, _)| *w == what).expect("sent").1;
        assert!(
            got.iter()
                .any(|g| g.starts_with(&format!("SIP/2.0 {code} "))),
            "{what}: expected {code}, got {got:?}\n{report}"
        );
    }
    // And a good call still goes through afterwards.
    let uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_millis(200))
        .spawn(&net.topo.caller)
        .expect("uac")
        .finish();
    let uas = uas.finish();
    uac.assert_ok();
    uas.assert_ok();
    assert_finals(&uac, &[(200, 1)]);
    let cdrs = sbc.cdrs();
    assert!(
        cdrs.iter()
            .any(|c| field(c, "result_code") == &Value::from(200)),
        "{cdrs:#?}"
    );
}

#[test]
fn sbc_malformed_burst_xdp() {
    malformed_burst(Plane::Xdp);
}

#[test]
fn sbc_malformed_burst_userspace() {
    malformed_burst(Plane::Userspace);
}

/// An INVITE with a NUL byte in its Request-URI (`INVITE sip\0100@host SIP/2.0`) or in a
/// header value (the From tag) gets a 400, not a call attempt: no SIP grammar rule allows
/// those bytes, and parsers that disagree on them are how filters get bypassed.
#[test]
fn sbc_nul_bytes_get_400() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start(&net, Plane::Userspace, &Prov::default(), 60);
    let local = SocketAddr::new(net.topo.caller_if.ip(false), SIP_PORT + 4);
    let raw = RawSip::bind_in(&net.topo.caller, local, sbc.sip()).expect("raw socket");
    let mut answers = Vec::new();
    for (what, bytes) in sip::nul_bytes(local, sbc.sip()) {
        raw.send(&bytes).expect("send");
        for g in raw.collect(Duration::from_millis(400)) {
            answers.push(format!("{what}: {}", g.lines().next().unwrap_or("")));
        }
    }
    assert!(sbc.alive());
    assert!(
        answers
            .iter()
            .all(|a| a.ends_with("SIP/2.0 400 Bad Request") || a.contains(" 400 ")),
        "answers: {answers:#?}"
    );
}
