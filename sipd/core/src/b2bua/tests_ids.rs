//! The IDS on every method and the answers to callers that have not authenticated: scanners
//! of any method banned, REGISTER answered as what we are (no registrar), sweeps of any method
//! banned, one answer per request (no 100 before a refusal, no retransmitted refusal), and
//! refusals counted per (source, reason) instead of a CDR each.

use super::*;
use crate::records::RefusalReason;

const STRANGER: &str = "203.0.113.7:5070";

/// An out-of-dialog request of `method` from `who` to extension `ext`.
fn request(method: &str, who: &str, ext: &str, n: u32, extra: &str) -> String {
    format!(
        "{method} sip:{ext}@10.0.0.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {who};branch=z9hG4bK-{method}-{ext}-{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"{ext}\" <sip:{ext}@10.0.0.2>;tag=f{n}\r\n\
         To: \"{ext}\" <sip:{ext}@10.0.0.2>\r\n\
         Call-ID: {method}-{ext}-{n}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:{ext}@{who}>\r\n\
         {extra}\r\n"
    )
}

fn bans(w: &World) -> Vec<Offence> {
    w.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Ban { offence, .. } => Some(*offence),
            _ => None,
        })
        .collect()
}

#[test]
fn a_scanner_user_agent_is_banned_whatever_the_method() {
    for method in [
        "OPTIONS",
        "REGISTER",
        "INVITE",
        "SUBSCRIBE",
        "MESSAGE",
        "INFO",
    ] {
        let mut w = ip_world();
        w.from(
            STRANGER,
            &request(
                method,
                STRANGER,
                "100",
                1,
                "User-Agent: friendly-scanner\r\n",
            ),
        );
        assert_eq!(bans(&w), vec![Offence::Scanner], "{method}");
        let answers = w.take(STRANGER);
        assert_eq!(answers.len(), 1, "{method}: one answer");
        assert_eq!(answers[0].code(), Some(403), "{method}");
        assert!(answers[0].get("Warning").is_none(), "{method}");
        assert!(w.cdrs.is_empty(), "{method}: a scan writes no CDR");
        let rows = w.core.refusals();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].reason, RefusalReason::Scanner);
    }
}

#[test]
fn register_gets_403_from_a_stranger_and_405_with_allow_from_a_carrier() {
    let mut w = ip_world();
    w.from(STRANGER, &request("REGISTER", STRANGER, "100", 1, ""));
    assert_eq!(w.codes(STRANGER), vec![403]);
    w.from(CARRIER, &request("REGISTER", CARRIER, "100", 1, ""));
    let to_carrier = w.take(CARRIER);
    assert_eq!(to_carrier[0].code(), Some(405));
    assert_eq!(to_carrier[0].get("Allow"), Some(ALLOW));
    assert!(bans(&w).is_empty());
    assert_eq!(w.core.refusals()[0].reason, RefusalReason::NoRegistrar);
}

/// svwar -m REGISTER / -m OPTIONS and svcrack without their User-Agent: the sweep is banned
/// at the threshold (3 in these tests), by enumeration or, with credentials, brute force.
#[test]
fn sweeps_of_register_options_and_other_methods_are_banned() {
    let cases = [
        ("REGISTER", "", Offence::Enumeration),
        ("OPTIONS", "", Offence::Enumeration),
        ("SUBSCRIBE", "", Offence::Enumeration),
        (
            "REGISTER",
            "Authorization: Digest username=\"100\", realm=\"sbc\", nonce=\"x\", uri=\"sip:10.0.0.2\", response=\"0\"\r\n",
            Offence::BruteForce,
        ),
    ];
    for (method, extra, offence) in cases {
        let mut w = ip_world();
        for ext in 100..103 {
            w.from(
                STRANGER,
                &request(method, STRANGER, &ext.to_string(), ext, extra),
            );
        }
        assert_eq!(bans(&w), vec![offence], "{method} {extra}");
        // One answer per request.
        assert_eq!(w.take(STRANGER).len(), 3, "{method}");
    }
    // A carrier's OPTIONS pings are answered and never counted.
    let mut w = ip_world();
    for n in 0..10 {
        w.from(CARRIER, &request("OPTIONS", CARRIER, "ping", n, ""));
    }
    assert_eq!(w.codes(CARRIER), vec![200; 10]);
    assert!(bans(&w).is_empty());
}

/// The amplifier: 100 Trying, then a 400 retransmitted by Timer G for 32 s, per
/// INVITE. Now: one packet out per packet in, and the source is banned as a brute-forcer.
#[test]
fn malformed_authorization_is_answered_once_and_counts_as_brute_force() {
    let mut w = ip_world();
    for n in 0..3 {
        w.from(
            STRANGER,
            &request(
                "INVITE",
                STRANGER,
                "4420555",
                n,
                "Authorization: Digest x\r\n",
            ),
        );
    }
    w.advance(Duration::from_secs(40));
    assert_eq!(w.codes(STRANGER), vec![400, 400, 400]);
    assert_eq!(bans(&w), vec![Offence::BruteForce]);
    assert!(w.cdrs.is_empty());
    let rows = w.core.refusals();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].reason, rows[0].count),
        (RefusalReason::BadAuthorization, 3)
    );
    assert_eq!(w.core.stats().refusals["bad_authorization"], 3);
}

#[test]
fn no_retransmission_and_no_100_toward_an_unauthenticated_caller() {
    let mut w = ip_world();
    // No rule names the stranger: 403, once, and the 401 of a digest world likewise.
    w.from(STRANGER, &request("INVITE", STRANGER, "4420555", 1, ""));
    w.advance(Duration::from_secs(40));
    assert_eq!(w.codes(STRANGER), vec![403]);
    let mut d = digest_world();
    d.from(CARRIER, &invite("c-401", "z9hG4bK-401", "", true));
    d.advance(Duration::from_secs(40));
    assert_eq!(d.codes(CARRIER), vec![401]);
    // A retransmitted INVITE gets the same answer again: one for one.
    d.from(CARRIER, &invite("c-401", "z9hG4bK-401", "", true));
    assert_eq!(d.codes(CARRIER), vec![401]);
}

#[test]
fn an_authenticated_caller_keeps_rfc3261_retransmissions() {
    let mut a = account(1, "carrier");
    a.max_sessions = Some(0);
    let mut w = World::new(
        vec![a],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    w.from(CARRIER, &invite("c-lim", "z9hG4bK-lim", "", true));
    w.advance(Duration::from_secs(2));
    let codes = w.codes(CARRIER);
    assert_eq!(codes[0], 100);
    assert!(
        codes.len() >= 3 && codes[1..].iter().all(|c| *c == codes[1]),
        "the refusal is retransmitted until ACKed: {codes:?}"
    );
    assert_eq!(w.cdrs.len(), 1, "an authenticated attempt keeps its CDR");
}

#[test]
fn refusals_are_counted_per_source_and_reason_not_recorded_per_request() {
    let mut w = ip_world();
    for n in 0..50 {
        let who = format!("203.0.113.{}:5060", n % 5 + 1);
        w.from(&who, &request("INVITE", &who, "4420555", n, ""));
    }
    assert!(w.cdrs.is_empty());
    let rows = w.core.refusals();
    // Each of the 5 sources was banned at its 3rd refusal (the test threshold) but the core
    // still answers here: the kernel drops a banned source's packets.
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r.count == 10 && r.reason == RefusalReason::NoMatchingRule)
    );
}

/// A BYE, INFO or CANCEL of a dialog (or transaction) `n` that does not exist, from `who`.
fn stray(method: &str, who: &str, n: u32) -> String {
    let to_tag = if method == "CANCEL" {
        String::new()
    } else {
        format!(";tag=t{n}")
    };
    format!(
        "{method} sip:100@10.0.0.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {who};branch=z9hG4bK-stray-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@{who}>;tag=f{n}\r\n\
         To: <sip:100@10.0.0.2>{to_tag}\r\n\
         Call-ID: stray-{n}@scan\r\n\
         CSeq: 2 {method}\r\n\r\n"
    )
}

/// A scanner spraying in-dialog requests and CANCELs at dialogs that do not exist: each gets
/// its 481 until the IDS's threshold bans it (a dialog probe, counted as `unknown_dialog`).
/// A carrier's and a vendor's strays (calls we forgot) are answered alike and never counted.
#[test]
fn a_spray_at_unknown_dialogs_is_banned_and_known_peers_are_not() {
    let mut w = ip_world();
    let methods = ["BYE", "INFO", "CANCEL"];
    for n in 0..9 {
        w.from(STRANGER, &stray(methods[n as usize % 3], STRANGER, n));
    }
    assert_eq!(w.codes(STRANGER), vec![481; 9]);
    assert!(bans(&w).is_empty(), "nine strays are below the threshold");
    w.from(STRANGER, &stray("BYE", STRANGER, 9));
    assert_eq!(bans(&w), vec![Offence::DialogProbe]);
    let rows = w.core.refusals();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].reason, rows[0].count, rows[0].code),
        (RefusalReason::UnknownDialog, 10, 481)
    );

    let mut w = ip_world();
    for n in 0..50 {
        w.from(CARRIER, &stray(methods[n as usize % 3], CARRIER, n));
        w.from(VENDOR1, &stray("BYE", VENDOR1, n));
    }
    assert_eq!(w.codes(CARRIER), vec![481; 50]);
    assert_eq!(w.codes(VENDOR1), vec![481; 50]);
    assert!(bans(&w).is_empty(), "a known peer's strays banned it");
    assert!(w.core.refusals().is_empty());
}

/// The caller's INVITE, as anyone who saw it can write its CANCEL.
fn cancel_of(call_id: &str) -> String {
    format!(
        "CANCEL sip:4420555@10.0.0.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-{call_id}\r\n\
         To: <sip:4420555@10.0.0.2>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 CANCEL\r\n\r\n"
    )
}

/// A third party's CANCEL of a ringing call (the INVITE's Via, From and Call-ID copied): 403,
/// counted, nothing reaches the vendor and the call rings on; the caller's own CANCEL of the
/// same transaction still ends it. Ten such CANCELs ban the stranger.
#[test]
fn a_third_party_cancel_is_refused_and_the_call_rings_on() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-ring");
    w.from(VENDOR1, &reply(&inv, 180, "vtag", None));
    assert_eq!(w.codes(CARRIER), vec![180]);
    w.from(STRANGER, &cancel_of("call-ring"));
    assert_eq!(w.codes(STRANGER), vec![403]);
    assert!(w.take(CARRIER).is_empty(), "no 487 to the caller");
    assert!(w.take(VENDOR1).is_empty(), "no CANCEL upstream");
    assert_eq!(w.core.active_calls(), 1);
    assert_eq!(w.core.stats().in_dialog_refused, 1);
    assert_eq!(w.core.refusals()[0].reason, RefusalReason::InDialogStranger);
    for _ in 0..9 {
        w.from(STRANGER, &cancel_of("call-ring"));
    }
    assert_eq!(w.codes(STRANGER), vec![403; 9], "one answer per CANCEL");
    assert_eq!(bans(&w), vec![Offence::DialogProbe]);
    assert_eq!(w.core.active_calls(), 1);

    w.from(CARRIER, &cancel_of("call-ring"));
    let mut codes = w.codes(CARRIER);
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    assert_eq!(w.take(VENDOR1)[0].method(), Some(&Method::Cancel));
    assert_eq!(w.cdrs[0].reason, "cancelled");
}
