//! Spending someone else's credit, or ending their call, with what a sniffer sees.
//!
//! 1. A captured `Authorization` (the victim's answer to our challenge, taken off the wire
//!    before it reached us) sent with another Request-URI: the digest covers the `uri`
//!    parameter, not the Request-URI, so unless the two are compared the call is billed to
//!    the victim. Refused with 403 and no CDR billed; the victim's own request still passes.
//! 2. A BYE and a re-INVITE (moving the caller's media to the attacker) from a third party
//!    that knows the Call-ID and both tags: 403, counted, and the call goes on (media still
//!    flows both ways, the call is still up).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::sbc::*;
use md5::{Digest, Md5};
use serde_json::Value;
use tests::sip::{self, Msg, RawSip};
use tests::{require_privileged, require_sipp};

/// The raw carrier's SIP port (sipp's is SIP_PORT on the same host).
const RAW_SIP_PORT: u16 = SIP_PORT + 2;
const USER: &str = "carrier-a";
const PASSWORD: &str = "Vq7#pLm2!xR9wZt4";
/// A number the victim never called, on the same route.
const OTHER_CLD: &str = "3399999999";

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

/// Sends `msg` and waits for the final response to `cseq`.
fn final_response(raw: &RawSip, msg: &str, cseq: &str) -> Msg {
    raw.send(msg.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
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

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name="value"` or `name=value` of a challenge.
fn param(challenge: &str, name: &str) -> Option<String> {
    challenge.split(',').find_map(|p| {
        let p = p.trim().trim_start_matches("Digest ").trim();
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The victim's answer to `challenge` for an INVITE to `uri`, as its phone computes it.
fn authorization(challenge: &str, uri: &str) -> String {
    let realm = param(challenge, "realm").expect("realm");
    let nonce = param(challenge, "nonce").expect("nonce");
    let (nc, cnonce) = ("00000001", "0a4f113b");
    let ha1 = md5_hex(&format!("{USER}:{realm}:{PASSWORD}"));
    let ha2 = md5_hex(&format!("INVITE:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{USER}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

/// An INVITE from `local` to `cld` with `auth` as its Authorization header.
fn invite_with_auth(
    local: SocketAddr,
    sbc: SocketAddr,
    cld: &str,
    call_id: &str,
    auth: &str,
) -> String {
    let inv = sip::invite(local, sbc, CLI, cld, call_id, RTP_PORT);
    inv.replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nAuthorization: {auth}\r\n"),
        1,
    )
}

/// CDRs of calls to `cld` that were answered or cost anything.
fn billed(cdrs: &[Value], cld: &str) -> Vec<Value> {
    cdrs.iter()
        .filter(|c| c["callee"].as_str().is_some_and(|x| x.contains(cld)))
        .filter(|c| !c["answer_ms"].is_null() || c["cost"].as_i64().unwrap_or(0) != 0)
        .cloned()
        .collect()
}

/// Attack 1: the victim's Authorization, replayed against another number.
fn replayed_authorization(plane: Plane) {
    let net = Net::new();
    // The account's rule admits its office network: the attacker is on it (or spoofs it).
    let carrier_ip = net.topo.caller_if.ip(false);
    let prov = Prov {
        digest: Some((USER, PASSWORD)),
        ..Prov::default()
    };
    let c = net.topo.caller_if.ipv4.octets();
    let office = format!("{}.{}.{}.0/24", c[0], c[1], c[2]);
    let toml = prov
        .toml(&net)
        .replace(&format!("{carrier_ip}/32"), &office);
    let mut sbc = Sbc::start_provisioned(&net, plane, &toml, &settings());
    let mut uas = net.uas("uas.xml", SIP_PORT, 2, Duration::ZERO);
    let victim = carrier(&net, &sbc);
    let evil = attacker(&net, &sbc);

    // The victim is challenged; its answer is what the attacker captures.
    let id = std::process::id();
    let victim_call = format!("victim-{id}");
    let first = sip::invite(victim.local(), sbc.sip(), CLI, CLD, &victim_call, RTP_PORT);
    let challenge = final_response(&victim, &first, "1 INVITE");
    assert_eq!(challenge.status(), Some(401), "{}", challenge.text);
    victim
        .send(
            sip::in_dialog(
                "ACK",
                1,
                victim.local(),
                sbc.sip(),
                &victim_call,
                &challenge.text,
            )
            .as_bytes(),
        )
        .expect("ACK the 401");
    let www = challenge
        .headers("WWW-Authenticate")
        .into_iter()
        .find(|h| param(h, "algorithm").is_none_or(|a| a.eq_ignore_ascii_case("MD5")))
        .expect("an MD5 challenge")
        .to_string();
    let uri = format!("sip:{CLD}@{}", sbc.sip());
    let captured = authorization(&www, &uri);

    // The attacker gets there first, with another number in the Request-URI.
    let evil_call = format!("evil-{id}");
    let replay = invite_with_auth(evil.local(), sbc.sip(), OTHER_CLD, &evil_call, &captured);
    let r = final_response(&evil, &replay, "1 INVITE");
    if r.status() == Some(200) {
        // The hole: hang up so the CDR is written.
        evil.send(
            sip::in_dialog("ACK", 1, evil.local(), sbc.sip(), &evil_call, &r.text).as_bytes(),
        )
        .expect("ACK");
        let bye = sip::in_dialog("BYE", 2, evil.local(), sbc.sip(), &evil_call, &r.text);
        let _ = final_response(&evil, &bye, "2 BYE");
    }
    if r.status() != Some(403) {
        let cdrs = sbc.cdrs();
        panic!(
            "the replayed Authorization against {OTHER_CLD} was answered {}; CDRs billed for it: {:?}",
            r.first_line(),
            billed(&cdrs, OTHER_CLD)
        );
    }

    // The victim's own request, with the same answer, still goes through.
    let mine = invite_with_auth(
        victim.local(),
        sbc.sip(),
        CLD,
        &format!("{victim_call}-2"),
        &captured,
    );
    let ok = final_response(&victim, &mine, "1 INVITE");
    assert_eq!(ok.status(), Some(200), "the victim's call: {}", ok.text);
    let call2 = format!("{victim_call}-2");
    victim
        .send(sip::in_dialog("ACK", 1, victim.local(), sbc.sip(), &call2, &ok.text).as_bytes())
        .expect("ACK");
    let bye = sip::in_dialog("BYE", 2, victim.local(), sbc.sip(), &call2, &ok.text);
    assert_eq!(final_response(&victim, &bye, "2 BYE").status(), Some(200));
    let _ = uas.wait_media("MEDIA", Duration::from_secs(5));

    let cdrs = sbc.cdrs();
    assert!(
        billed(&cdrs, OTHER_CLD).is_empty(),
        "a call to {OTHER_CLD} was billed: {:?}",
        billed(&cdrs, OTHER_CLD)
    );
}

#[test]
fn replayed_authorization_against_another_number_is_refused_userspace() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    replayed_authorization(Plane::Userspace);
}

#[test]
fn replayed_authorization_against_another_number_is_refused_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    replayed_authorization(Plane::Xdp);
}

/// Attack 2: a sniffer's BYE and re-INVITE inside someone else's call.
fn third_party_in_dialog(plane: Plane) {
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings());
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::ZERO);
    let raw = carrier(&net, &sbc);
    let evil = attacker(&net, &sbc);
    let local = raw.local();
    let call_id = format!("sniffed-{}", std::process::id());
    let inv = sip::invite(local, sbc.sip(), CLI, CLD, &call_id, RTP_PORT);
    let ok = final_response(&raw, &inv, "1 INVITE");
    assert_eq!(ok.status(), Some(200), "{}", ok.text);
    raw.send(sip::in_dialog("ACK", 1, local, sbc.sip(), &call_id, &ok.text).as_bytes())
        .expect("ACK");
    let at_carrier = sip::sdp_media(ok.body()).expect("SDP in the 200");
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(5))
        .expect("vendor got the offer");
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

    // The attacker knows Call-ID, tags and CSeq: it has seen the 200.
    let bye = sip::in_dialog("BYE", 5, evil.local(), sbc.sip(), &call_id, &ok.text);
    let bye_answer = final_response(&evil, &bye, "5 BYE");
    let stolen_media = SocketAddr::new(evil.local().ip(), 41_000);
    let reinvite = sip::with_sdp(
        &sip::in_dialog("INVITE", 6, evil.local(), sbc.sip(), &call_id, &ok.text),
        evil.local(),
        &sip::audio_sdp(stolen_media),
    );
    let reinvite_answer = final_response(&evil, &reinvite, "6 INVITE");
    if reinvite_answer.status() == Some(200) {
        evil.send(
            sip::in_dialog(
                "ACK",
                6,
                evil.local(),
                sbc.sip(),
                &call_id,
                &reinvite_answer.text,
            )
            .as_bytes(),
        )
        .expect("ACK");
    }
    assert_eq!(
        bye_answer.status(),
        Some(403),
        "third-party BYE: {}",
        bye_answer.text
    );
    assert_eq!(
        reinvite_answer.status(),
        Some(403),
        "third-party re-INVITE: {}",
        reinvite_answer.text
    );
    let active = sbc.metric("sipd_calls_active");
    let refused = sbc.metric("sipd_in_dialog_refused_total");
    assert_eq!(active, 1, "the call is still up");
    assert!(refused >= 2, "the refusals are counted ({refused})");
    // The media still flows between the real parties, and nothing reached the vendor.
    check(PACKETS).assert_lossless();
    assert!(uas.media("REINVITE").is_empty(), "{:?}", uas.logs());

    // The caller ends its own call.
    let bye = sip::in_dialog("BYE", 7, local, sbc.sip(), &call_id, &ok.text);
    assert_eq!(final_response(&raw, &bye, "7 BYE").status(), Some(200));
    let cdrs = sbc.cdrs();
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"].as_str() == Some(call_id.as_str()))
        .expect("the call's CDR");
    assert_eq!(cdr["reason"].as_str(), Some("caller hung up"), "{cdr}");
}

#[test]
fn third_party_bye_and_reinvite_are_refused_userspace() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    third_party_in_dialog(Plane::Userspace);
}

#[test]
fn third_party_bye_and_reinvite_are_refused_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    third_party_in_dialog(Plane::Xdp);
}
