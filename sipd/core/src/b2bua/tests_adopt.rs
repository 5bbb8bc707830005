//! Calls across a restart: what one core saves is adopted by the next, on the same clock.

use super::*;
use crate::sip::NameAddr;

/// The records a run left in the store: the last save of each call, less those whose CDR
/// (which removes the record in the same write) was written.
fn saved(w: &World) -> Vec<SavedCall> {
    let mut by_id: Vec<SavedCall> = Vec::new();
    for e in &w.effects {
        match e {
            Effect::SaveCall { call: s, .. } => {
                by_id.retain(|x| x.media_id != s.media_id);
                by_id.push((**s).clone());
            }
            Effect::Cdr {
                saved: Some(id), ..
            } => by_id.retain(|x| &x.media_id != id),
            _ => {}
        }
    }
    by_id
}

/// The next run: a new core with the same records, on the old one's clock plus `down`.
fn restart(old: &World, accounts: Vec<Account>, down: Duration) -> (World, Adopted) {
    let mut w = World::new(
        accounts,
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1), connection(2, VENDOR2, 2)],
        vec![],
    );
    w.now = old.now + down;
    w.wall = old.wall + down;
    let records = saved(old);
    let adopted = w.core.adopt(w.now, w.wall, records);
    w.collect();
    (w, adopted)
}

fn ack_from_carrier(call_id: &str, to_tag: &str) -> String {
    bye_from_carrier(call_id, to_tag, 1)
        .replace("BYE sip:", "ACK sip:")
        .replace("CSeq: 1 BYE", "CSeq: 1 ACK")
        .replace("branch=z9hG4bK-bye1", "branch=z9hG4bK-ack1")
}

fn bye_from_carrier(call_id: &str, to_tag: &str, cseq: u32) -> String {
    format!(
        "BYE sip:sbc@10.0.0.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-{call_id}\r\n\
         To: <sip:4420555@10.0.0.2>;tag={to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} BYE\r\n\r\n"
    )
}

/// An answered call's 2xx goes out in the same batch as the call's record, so the shell can
/// hold the 2xx until the record is durable; the CDR names the record it removes.
#[test]
fn the_answer_is_saved_with_the_2xx_and_the_cdr_removes_the_record() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-s");
    assert!(
        w.effects.iter().any(|e| matches!(e,
            Effect::SaveCall { call, hold: false } if call.phase == SavedPhase::Trying)),
        "the attempt upstream is saved"
    );
    w.effects.clear();
    answer(&mut w, &inv);
    let batch = std::mem::take(&mut w.effects);
    let save = batch
        .iter()
        .position(|e| matches!(e, Effect::SaveCall { call, hold: true } if call.phase == SavedPhase::Answered));
    let ok = batch.iter().position(|e| match e {
        Effect::Send(t) => Msg::parse(&t.data, 65535).is_ok_and(|m| m.code() == Some(200)),
        _ => false,
    });
    assert!(save.is_some() && ok.is_some(), "{batch:?}");
    let to_tag = w.take(CARRIER)[0].to().tag.unwrap();
    w.from(CARRIER, &bye_from_carrier("call-s", &to_tag, 2));
    let cdr_saved = w.effects.iter().find_map(|e| match e {
        Effect::Cdr { saved, .. } => Some(saved.clone()),
        _ => None,
    });
    assert!(matches!(cdr_saved, Some(Some(id)) if id.starts_with("sbc-")));
    assert!(saved(&w).is_empty());
}

/// sipd killed mid-call: the next run takes the call back; the caller's BYE is answered 200
/// and goes on to the vendor in its dialog, and the CDR covers the whole call.
#[test]
fn an_answered_call_survives_a_restart_and_is_billed_whole() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-r");
    answer(&mut w, &inv);
    let to_tag = w.take(CARRIER)[0].to().tag.unwrap();
    w.from(CARRIER, &ack_from_carrier("call-r", &to_tag));
    w.take(VENDOR1);
    w.advance(Duration::from_secs(20));
    let (mut w2, adopted) = restart(&w, vec![account(1, "carrier")], Duration::from_secs(2));
    assert_eq!(adopted.resumed.len(), 1, "{adopted:?}");
    assert_eq!(w2.core.active_calls(), 1);
    w2.advance(Duration::from_secs(10));
    w2.from(CARRIER, &bye_from_carrier("call-r", &to_tag, 2));
    assert_eq!(w2.codes(CARRIER), vec![200]);
    let byes: Vec<Msg> = w2
        .take(VENDOR1)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Bye))
        .collect();
    assert_eq!(byes.len(), 1);
    assert_eq!(
        byes[0].call_id(),
        inv.call_id(),
        "BYE in the vendor's dialog"
    );
    assert_eq!(byes[0].to().tag.as_deref(), Some("vtag"));
    assert!(
        byes[0].cseq().0 > inv.cseq().0,
        "CSeq moves on across the restart"
    );
    let cdr = &w2.cdrs[0];
    assert_eq!(cdr.call_id, "call-r");
    assert_eq!(cdr.result_code, 200);
    assert!((32..=34).contains(&cdr.duration_secs), "{cdr:?}");
    assert_eq!(w2.core.active_calls(), 0);
}

/// The vendor hangs up after the restart: answered 200, the caller gets our BYE.
#[test]
fn the_vendor_can_hang_up_an_adopted_call() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-v");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    let (mut w2, _) = restart(&w, vec![account(1, "carrier")], Duration::from_secs(1));
    let b_from = NameAddr::parse(inv.get("From").unwrap());
    let bye = format!(
        "BYE sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.1:5060;branch=z9hG4bK-vb2\r\nMax-Forwards: 70\r\nFrom: <sip:4420555@10.0.1.1>;tag=vtag\r\nTo: <{}>;tag={}\r\nCall-ID: {}\r\nCSeq: 7 BYE\r\n\r\n",
        b_from.uri,
        b_from.tag.unwrap_or_default(),
        inv.call_id()
    );
    w2.from(VENDOR1, &bye);
    assert_eq!(w2.codes(VENDOR1), vec![200]);
    let to_carrier = w2.take(CARRIER);
    assert!(
        to_carrier
            .iter()
            .any(|m| m.method() == Some(&Method::Bye) && m.call_id() == "call-v"),
        "{to_carrier:?}"
    );
    assert_eq!(w2.cdrs[0].hung_up_by.as_deref(), Some("callee"));
}

/// The account's maximum duration counts from the real answer, not from the restart.
#[test]
fn max_duration_fires_on_time_after_a_restart() {
    let mut a = account(1, "carrier");
    a.max_call_secs = Some(30);
    let mut w = World::new(
        vec![a.clone()],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    let inv = start_call(&mut w, "call-d");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.advance(Duration::from_secs(20));
    let (mut w2, _) = restart(&w, vec![a], Duration::from_secs(2));
    w2.advance(Duration::from_secs(7));
    assert_eq!(w2.core.active_calls(), 1, "cut too early");
    w2.advance(Duration::from_secs(3));
    assert_eq!(w2.core.active_calls(), 0, "not cut at 30 s");
    assert_byes_both_ways(&mut w2);
    assert_eq!(w2.cdrs[0].reason, "max duration");
    assert!(
        (29..=31).contains(&w2.cdrs[0].duration_secs),
        "{:?}",
        w2.cdrs[0]
    );
}

/// A call being set up at the crash: the caller gets 503 (from the saved INVITE), the
/// vendor a CANCEL, the attempt a CDR; a late 2xx from the vendor is ACKed and hung up.
#[test]
fn a_call_in_setup_is_ended_cleanly_by_the_next_run() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-t");
    w.from(VENDOR1, &reply(&inv, 180, "vtag", None));
    w.take(CARRIER);
    let (mut w2, adopted) = restart(&w, vec![account(1, "carrier")], Duration::from_secs(1));
    assert_eq!(adopted.ended_in_setup.len(), 1, "{adopted:?}");
    let to_a = w2.take(CARRIER);
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0].code(), Some(503));
    assert_eq!(to_a[0].call_id(), "call-t");
    assert_eq!(
        to_a[0].top_via().and_then(|v| v.branch).as_deref(),
        Some("z9hG4bK-call-t")
    );
    let to_b = w2.take(VENDOR1);
    assert!(
        to_b.iter().any(|m| m.method() == Some(&Method::Cancel)),
        "{to_b:?}"
    );
    assert_eq!(w2.cdrs.len(), 1);
    assert_eq!(w2.cdrs[0].result_code, 503);
    // The vendor answered just before the CANCEL reached it.
    w2.from(VENDOR1, &reply(&inv, 200, "vtag", Some(SDP_B)));
    let to_b = w2.take(VENDOR1);
    for m in [Method::Ack, Method::Bye] {
        assert!(
            to_b.iter().any(|x| x.method() == Some(&m)),
            "no {m} in {to_b:?}"
        );
    }
}

/// The relay lost the call's media (a reboot, or the userspace plane): the call is hung up
/// both ways and billed up to the previous run's checkpoint, not to the restart.
#[test]
fn a_call_whose_media_did_not_survive_is_hung_up_and_billed_to_the_checkpoint() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-l");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    w.advance(Duration::from_secs(10));
    let checkpoint = unix_ms(w.wall);
    let mut records = saved(&w);
    for r in &mut records {
        r.alive_ms = Some(checkpoint);
    }
    let mut w2 = World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    w2.now = w.now + Duration::from_secs(60);
    w2.wall = w.wall + Duration::from_secs(60);
    w2.core.media().lose(records[0].media_id.clone());
    let adopted = w2.core.adopt(w2.now, w2.wall, records);
    w2.collect();
    assert_eq!(adopted.not_resumed.len(), 1, "{adopted:?}");
    assert_byes_both_ways(&mut w2);
    let cdr = &w2.cdrs[0];
    assert_eq!(cdr.reason, "not resumed after restart");
    assert_eq!(cdr.end_ms, checkpoint);
    assert!((10..=11).contains(&cdr.duration_secs), "{cdr:?}");
}

/// A record that cannot be used is reported, never a panic, and the others are adopted.
#[test]
fn an_unusable_record_is_reported_and_the_rest_adopted() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-u");
    answer(&mut w, &inv);
    let mut records = saved(&w);
    let mut bad = records[0].clone();
    bad.media_id = "sbc-bad".into();
    bad.a_invite = "garbage".into();
    records.insert(0, bad);
    let mut w2 = ip_world();
    w2.now = w.now;
    w2.wall = w.wall;
    let adopted = w2.core.adopt(w2.now, w2.wall, records);
    assert_eq!(adopted.unusable.len(), 1);
    assert_eq!(adopted.resumed.len(), 1);
}

/// The balance cut-off counts the call's cost from its real answer: a balance worth 10 s,
/// 6 s of it spent before the crash, is cut about 4 s after the restart and never overspent.
#[test]
fn the_balance_cut_off_fires_on_time_after_a_restart() {
    let tariff = Tariff {
        id: 1,
        name: "t".into(),
        rate_per_minute: Micros(600_000),
        expected_call_secs: 5,
        initial_increment_secs: 1,
        increment_secs: 1,
    };
    let mut a = account(1, "ten-seconds");
    a.tariff_id = Some(1);
    a.balance = Micros(100_000);
    let world = |a: &Account| {
        World::new(
            vec![a.clone()],
            vec![rule(1, 1, Some("10.0.0.0/24"), true)],
            vec![connection(1, VENDOR1, 1)],
            vec![tariff.clone()],
        )
    };
    let mut w = world(&a);
    let inv = start_call(&mut w, "call-b");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.advance(Duration::from_secs(6));
    let mut w2 = world(&a);
    w2.now = w.now + Duration::from_millis(500);
    w2.wall = w.wall + Duration::from_millis(500);
    w2.core.adopt(w2.now, w2.wall, saved(&w));
    w2.collect();
    w2.advance(Duration::from_secs(2));
    assert_eq!(w2.core.active_calls(), 1, "cut too early");
    w2.advance(Duration::from_secs(4));
    assert_eq!(w2.core.active_calls(), 0, "not cut");
    let cdr = &w2.cdrs[0];
    assert_eq!(cdr.reason, "balance exhausted");
    assert!(cdr.cost.0 <= 100_000, "overspent: {cdr:?}");
    assert!(cdr.duration_secs >= 9, "{cdr:?}");
}

/// The relay times out an adopted call's media: the call is ended like any other.
#[test]
fn the_media_timeout_ends_an_adopted_call() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-m");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    let (mut w2, adopted) = restart(&w, vec![account(1, "carrier")], Duration::from_secs(1));
    assert_eq!(adopted.resumed.len(), 1);
    let media_id = w2.core.calls().next().unwrap().media_id.clone();
    w2.core.media().expire(media_id);
    w2.advance(Duration::from_secs(1));
    assert_eq!(w2.core.active_calls(), 0);
    assert_eq!(w2.cdrs[0].reason, "media timeout");
    assert_byes_both_ways(&mut w2);
}

/// The crash came between our 2xx and the caller's ACK: the next run sends the 2xx again
/// until the caller ACKs it, then stops.
#[test]
fn a_2xx_the_caller_had_not_acked_is_sent_again_by_the_next_run() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-k");
    answer(&mut w, &inv);
    let to_tag = w.take(CARRIER)[0].to().tag.unwrap();
    let (mut w2, adopted) = restart(&w, vec![account(1, "carrier")], Duration::from_millis(300));
    assert_eq!(adopted.resumed.len(), 1);
    w2.advance(Duration::from_secs(2));
    let again = w2.codes(CARRIER);
    assert!(
        !again.is_empty() && again.iter().all(|c| *c == 200),
        "{again:?}"
    );
    w2.from(CARRIER, &ack_from_carrier("call-k", &to_tag));
    w2.advance(Duration::from_secs(5));
    assert!(w2.codes(CARRIER).is_empty(), "still resent after the ACK");
    assert_eq!(w2.core.active_calls(), 1);
}

/// A re-INVITE from the caller after the restart is relayed in the vendor's dialog with a
/// CSeq past anything the previous run sent, re-anchored, answered, and the call saved again
/// with the 200 held for it.
#[test]
fn a_reinvite_after_a_restart_is_relayed_and_saved() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-re");
    answer(&mut w, &inv);
    let a_tag = w.take(CARRIER)[0].to().tag.unwrap();
    w.from(CARRIER, &ack_from_carrier("call-re", &a_tag));
    w.take(VENDOR1);
    let (mut w2, _) = restart(&w, vec![account(1, "carrier")], Duration::from_secs(1));
    let re = format!(
        "INVITE sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-re2\r\nMax-Forwards: 70\r\nFrom: <sip:1555000@10.0.0.1>;tag=ftag-call-re\r\nTo: <sip:4420555@10.0.0.2>;tag={a_tag}\r\nCall-ID: call-re\r\nCSeq: 2 INVITE\r\nContact: <sip:1555000@10.0.0.1>\r\nContent-Type: application/sdp\r\n\r\n{}",
        SDP_A.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=sendonly")
    );
    w2.from(CARRIER, &re);
    let up = w2.take(VENDOR1);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].method(), Some(&Method::Invite));
    assert_eq!(up[0].call_id(), inv.call_id());
    assert_eq!(up[0].to().tag.as_deref(), Some("vtag"));
    assert!(up[0].cseq().0 > inv.cseq().0 + 1, "{:?}", up[0].cseq());
    assert!(String::from_utf8_lossy(&up[0].body).contains("192.0.2.10"));
    w2.effects.clear();
    w2.from(VENDOR1, &reply(&up[0], 200, "vtag", Some(SDP_B)));
    assert_eq!(w2.codes(CARRIER), vec![200]);
    assert!(
        w2.effects
            .iter()
            .any(|e| matches!(e, Effect::SaveCall { hold: true, .. })),
        "the moved media is saved before the 200"
    );
}
