//! What a stranger can do with dialogs and transactions that are not its own, and what the
//! IDS remembers of it.
//!
//! 1. A third party that saw a ringing call's INVITE (Call-ID, From tag, top Via) sends its
//!    CANCEL: 403, counted with the other in-dialog refusals, and the call rings on; the
//!    caller's own CANCEL still ends it (`cancelled` in its CDR).
//! 2. A scanner spraying BYE, INFO and CANCEL with made-up Call-IDs and tags (looking for a
//!    live dialog to end): each is a 481 or a 403, and the IDS bans it in the kernel like any
//!    other scan, while a carrier keeps calling and its own stray BYEs (two) ban nothing.
//! 3. The refusal table (per source and reason: count, first and last seen) survives a
//!    restart of sipd on the same data directory.
//! 4. A scanner banned by the IDS: the audit log has the ban with the IDS as the actor and the
//!    evidence, and `sipd audit verify` still finds the chain intact.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::sbc::*;
use super::scanners::Bans;
use relay_user::BanReason;
use serde_json::Value;
use tests::sip::{self, Msg, RawSip};
use tests::{require_privileged, require_sipp};

/// The raw carrier's SIP port (sipp's is SIP_PORT on the same host).
const RAW_SIP_PORT: u16 = SIP_PORT + 2;

fn settings() -> Settings {
    Settings {
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    }
}

fn carrier(net: &Net, sbc: &Sbc) -> RawSip {
    let local = SocketAddr::new(net.topo.caller_if.ip(false), RAW_SIP_PORT);
    RawSip::bind_in(&net.topo.caller, local, sbc.sip()).expect("raw carrier socket")
}

fn attacker(net: &Net, sbc: &Sbc) -> RawSip {
    RawSip {
        sock: net.attacker(),
        to: sbc.sip(),
    }
}

/// The address `Net::attacker` gives the attacker's host.
fn attacker_ip(net: &Net) -> IpAddr {
    let c = net.topo.caller_if.ipv4.octets();
    IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], 66))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits up to `within` for a response to `cseq` whose first line starts with `prefix`.
fn expect(raw: &RawSip, prefix: &str, cseq: &str, within: Duration) -> Msg {
    let mut seen = Vec::new();
    let text = raw
        .wait_for(prefix, cseq, within, &mut seen)
        .unwrap_or_else(|| panic!("no {prefix:?} to {cseq}; got:\n{}", seen.join("\n")));
    Msg {
        received: true,
        text,
    }
}

/// Waits up to `within` for any response to `cseq`.
fn response(raw: &RawSip, cseq: &str, within: Duration) -> Option<Msg> {
    let mut seen = Vec::new();
    raw.wait_for("SIP/2.0 ", cseq, within, &mut seen)
        .map(|text| Msg {
            received: true,
            text,
        })
}

/// The CANCEL of [`sip::invite`]'s INVITE from `local`: its top Via (branch and sent-by),
/// From, To, Call-ID and CSeq number, as anyone who saw the INVITE can write it.
fn cancel_of(local: SocketAddr, sbc: SocketAddr, call_id: &str) -> String {
    format!(
        "CANCEL sip:{CLD}@{sbc} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-1\r\n\
         From: <sip:{CLI}@{local}>;tag=raw-{call_id}\r\n\
         To: <sip:{CLD}@{sbc}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 CANCEL\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Attack 1: a sniffer's CANCEL of someone else's ringing call.
#[test]
fn third_party_cancel_of_a_ringing_call_is_refused() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, Plane::Userspace, &Prov::default(), &settings());
    let uas = net.uas("uas_ring.xml", SIP_PORT, 1, Duration::ZERO);
    let victim = carrier(&net, &sbc);
    let evil = attacker(&net, &sbc);
    let call_id = format!("ringing-{}", std::process::id());
    let inv = sip::invite(victim.local(), sbc.sip(), CLI, CLD, &call_id, RTP_PORT);
    victim.send(inv.as_bytes()).expect("INVITE");
    expect(&victim, "SIP/2.0 180", "1 INVITE", Duration::from_secs(10));

    // The attacker saw the INVITE: it writes the caller's CANCEL, from its own address.
    let forged = cancel_of(victim.local(), sbc.sip(), &call_id);
    evil.send(forged.as_bytes()).expect("forged CANCEL");
    let answer = response(&evil, "1 CANCEL", Duration::from_secs(5));
    let victim_got = victim.collect(Duration::from_secs(1));
    let status = answer.as_ref().and_then(Msg::status);
    assert_eq!(
        status,
        Some(403),
        "the third party's CANCEL was answered {:?}; the caller then got: {:?}",
        answer.map(|m| m.text),
        victim_got
            .iter()
            .map(|m| m.lines().next().unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert!(
        !victim_got.iter().any(|m| m.starts_with("SIP/2.0 487")),
        "the caller's call was ended: {victim_got:?}"
    );
    assert_eq!(sbc.metric("sipd_calls_active"), 1, "the call still rings");
    let refused = sbc.metric("sipd_in_dialog_refused_total");
    assert!(refused >= 1, "the refusal is counted ({refused})");

    // The caller's own CANCEL ends it.
    victim
        .send(cancel_of(victim.local(), sbc.sip(), &call_id).as_bytes())
        .expect("CANCEL");
    expect(&victim, "SIP/2.0 200", "1 CANCEL", Duration::from_secs(5));
    let terminated = expect(&victim, "SIP/2.0 487", "1 INVITE", Duration::from_secs(5));
    victim
        .send(
            sip::in_dialog(
                "ACK",
                1,
                victim.local(),
                sbc.sip(),
                &call_id,
                &terminated.text,
            )
            .as_bytes(),
        )
        .expect("ACK the 487");
    uas.finish().assert_ok();
    let cdrs = sbc.cdrs();
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"].as_str() == Some(call_id.as_str()))
        .expect("the call's CDR");
    assert_eq!(cdr["reason"].as_str(), Some("cancelled"), "{cdr}");
}

/// An in-dialog request of a dialog that does not exist (made-up Call-ID and tags), as a
/// scanner sprays them; `n` picks the method (mostly BYE, some INFO and CANCEL).
fn stray(n: u32, local: SocketAddr, sbc: SocketAddr) -> String {
    let method = match n % 5 {
        3 => "INFO",
        4 => "CANCEL",
        _ => "BYE",
    };
    let seed = u64::from(std::process::id()) << 20 | u64::from(n);
    let call_id = format!("{:016x}@scan", seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // A CANCEL names its INVITE's transaction (no To tag); the others a dialog.
    let to_tag = if method == "CANCEL" {
        String::new()
    } else {
        format!(";tag=t{n}")
    };
    let cseq = if method == "CANCEL" { 1 } else { 2 };
    format!(
        "{method} sip:{CLD}@{sbc} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-stray-{seed:x}\r\n\
         From: <sip:{CLI}@{local}>;tag=f{n}\r\n\
         To: <sip:{CLD}@{sbc}>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Attack 2: 200 BYE/INFO/CANCEL with made-up dialogs from one source.
#[test]
fn stray_in_dialog_spray_is_banned_in_the_kernel() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let sbc = Sbc::start_with(&net, Plane::Xdp, &Prov::default(), &settings());
    let bans = Bans::open(&sbc);

    // A carrier's calls from its own address, all through the spray.
    let calls = 4;
    let uas = net.uas("uas.xml", SIP_PORT, calls, Duration::from_millis(100));
    let mut uac = net.uac("uac.xml", sbc.sip(), Duration::from_millis(500));
    uac.calls = calls;
    uac.rate = Some((1, Duration::from_secs(1)));
    uac.deadline = Duration::from_secs(60);
    let uac = uac.spawn(&net.topo.caller).expect("carrier uac");

    // The carrier's own strays (a BYE for a call we already forgot): answered, never banned.
    let own = carrier(&net, &sbc);
    for n in [1_000_001, 1_000_002] {
        own.send(stray(n, own.local(), sbc.sip()).as_bytes())
            .expect("carrier's stray BYE");
        let r = response(&own, "2 BYE", Duration::from_secs(5)).expect("an answer to a stray");
        assert_eq!(r.status(), Some(481), "{}", r.text);
    }

    let evil = attacker(&net, &sbc);
    let ip = attacker_ip(&net);
    let start = Instant::now();
    let mut banned_after = None;
    let sent = 200;
    for n in 0..sent {
        evil.send(stray(n, evil.local(), sbc.sip()).as_bytes())
            .expect("send");
        std::thread::sleep(Duration::from_millis(2));
        if banned_after.is_none() && n % 10 == 9 && bans.reason(ip).is_some() {
            banned_after = Some((n + 1, start.elapsed()));
        }
    }
    let ban = bans.wait(ip, Duration::from_secs(10));
    let banned_after = banned_after.unwrap_or((sent, start.elapsed()));
    eprintln!(
        "{sent} stray in-dialog requests: ban {ban:?}, seen after {} sent ({:?})",
        banned_after.0, banned_after.1
    );
    assert_eq!(
        ban.map(|b| b.1),
        Some(Some(BanReason::Enumeration)),
        "the sprayer is not banned as a scanner of dialogs\n{}",
        sbc.log_text()
    );
    let unknown = sbc.metric("sipd_refusals_total{reason=\"unknown_dialog\"}");
    eprintln!("unknown_dialog refusals counted: {unknown}");
    assert!(unknown >= 1, "the strays are counted as unknown_dialog");
    let carrier_ip = net.topo.caller_if.ip(false);
    assert_eq!(bans.reason(carrier_ip), None, "the carrier was banned");

    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    assert_eq!(
        uac.trace.final_counts("INVITE").get(&200).copied(),
        Some(calls as usize),
        "every carrier call answered: {:?}",
        uac.trace.final_counts("INVITE")
    );
}

/// `n` INVITEs from the attacker that no rule admits (403, counted in the refusal table).
fn refused_invites(evil: &RawSip, sbc: &Sbc, first: u32, n: u32) {
    for i in first..first + n {
        let call_id = format!("refused-{}-{i}", std::process::id());
        let inv = sip::invite(evil.local(), sbc.sip(), CLI, CLD, &call_id, RTP_PORT);
        evil.send(inv.as_bytes()).expect("INVITE");
        expect(evil, "SIP/2.0 403", "1 INVITE", Duration::from_secs(5));
    }
}

/// Attack 3's defence: the refusal table is not lost with the process.
#[test]
fn refusal_table_survives_a_restart() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, Plane::Userspace, &Prov::default(), &settings());
    let evil = attacker(&net, &sbc);
    let ip = attacker_ip(&net);
    // Below the ban threshold (10): the source keeps being refused, not banned.
    refused_invites(&evil, &sbc, 0, 5);
    let rows = sbc.metric("sipd_refusal_rows");
    assert!(rows >= 1, "no refusal row");

    let restarted_ms = unix_ms();
    sbc.restart(&net);
    let after = sbc.metric("sipd_refusal_rows");
    assert_eq!(
        after, rows,
        "refusal rows before the restart: {rows}, after: {after}"
    );
    refused_invites(&evil, &sbc, 5, 2);
    sbc.stop();

    let table = sbc.json_list(&["refusals", "list", "--json"]);
    let row = table
        .iter()
        .find(|r| {
            r["source"].as_str() == Some(ip.to_string().as_str())
                && r["reason"].as_str() == Some("no_matching_rule")
        })
        .unwrap_or_else(|| panic!("no row for {ip}: {table:?}"));
    eprintln!("after a restart: {row}");
    assert_eq!(row["count"].as_u64(), Some(7), "{row}");
    assert!(
        row["first_ms"].as_u64().is_some_and(|t| t < restarted_ms),
        "first seen before the restart: {row}"
    );
    assert!(
        row["last_ms"].as_u64().is_some_and(|t| t >= restarted_ms),
        "last seen after it: {row}"
    );
}

/// Attack 4's record: the IDS's ban of a scanner in the audit log, with its evidence.
#[test]
fn ids_ban_of_a_scanner_is_audited_with_its_evidence() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, Plane::Userspace, &Prov::default(), &settings());
    let evil = attacker(&net, &sbc);
    let ip = attacker_ip(&net);
    let local = evil.local();
    let to = sbc.sip();
    let options = format!(
        "OPTIONS sip:100@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-svmap-1\r\n\
         From: \"sipvicious\" <sip:100@{local}>;tag=scan1\r\n\
         To: <sip:100@{to}>\r\n\
         Call-ID: svmap-{}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: friendly-scanner\r\n\
         Content-Length: 0\r\n\r\n",
        std::process::id()
    );
    evil.send(options.as_bytes()).expect("OPTIONS");
    expect(&evil, "SIP/2.0 403", "1 OPTIONS", Duration::from_secs(5));
    sbc.stop();

    let entries = sbc.json_list(&["audit", "list", "--json"]);
    let target = format!("ip:{ip}");
    let ban = entries
        .iter()
        .find(|e| e["kind"] == "ban" && e["target"].as_str() == Some(target.as_str()))
        .unwrap_or_else(|| panic!("no ban of {ip} in the audit log: {entries:#?}"));
    eprintln!("audit entry: {ban}");
    assert_eq!(ban["actor"], "sipd:ids", "{ban}");
    let evidence: &Value = &ban["after"];
    assert_eq!(evidence["offence"], "scanner", "{ban}");
    assert_eq!(evidence["source"], ip.to_string(), "{ban}");
    assert_eq!(evidence["count"], 1, "{ban}");
    assert!(
        evidence["evidence"]
            .as_str()
            .is_some_and(|t| t.contains("scanner")),
        "{ban}"
    );
    assert!(
        evidence["ban_secs"].as_u64().is_some_and(|s| s > 0),
        "{ban}"
    );

    let verify = sbc.cli(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "sipd audit verify: {text}");
    assert!(text.contains("chain intact"), "{text}");
}
