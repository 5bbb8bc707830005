//! Auth rules that name a TLS client certificate: the gate admits a call matching such a
//! rule only when the transport verified a client certificate carrying that name.

use super::*;
use crate::records::RefusalReason;

/// The carrier's network, admitted by address only with a certificate for
/// `carrier.example`.
fn cert_world() -> World {
    World::new(
        vec![account(1, "carrier")],
        vec![AuthRule {
            tls_client_name: Some("carrier.example".into()),
            ..rule(1, 1, Some("10.0.0.0/24"), true)
        }],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    )
}

/// An INVITE from the carrier over TLS whose verified client certificate names `names`.
fn invite_with(w: &mut World, call_id: &str, names: &[&str]) {
    let peer = Peer {
        proto: Proto::Tls,
        remote: sa(CARRIER),
        local: sa(US),
        conn: Some(1),
    };
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let text = fix_length(&invite(call_id, &format!("z9hG4bK-{call_id}"), "", true));
    w.now += Duration::from_millis(1);
    w.wall += Duration::from_millis(1);
    w.core
        .on_verified_message(w.now, w.wall, peer, &names, text.as_bytes());
    w.collect();
}

#[test]
fn the_named_certificate_is_admitted_case_insensitively() {
    let mut w = cert_world();
    invite_with(&mut w, "ok", &["other.example", "Carrier.Example"]);
    assert_eq!(w.codes(CARRIER), vec![100]);
    assert_eq!(w.take(VENDOR1).len(), 1, "the call goes upstream");
    assert!(w.core.refusals().is_empty());
}

#[test]
fn no_certificate_or_another_name_is_403_counted_as_tls_client_cert() {
    let mut w = cert_world();
    invite_with(&mut w, "none", &[]);
    invite_with(&mut w, "wrong", &["evil.example"]);
    // The same rule's source over UDP: no certificate at all.
    w.from(CARRIER, &invite("udp", "z9hG4bK-udp", "", true));
    let msgs = w.take(CARRIER);
    assert_eq!(
        msgs.iter().filter_map(Msg::code).collect::<Vec<_>>(),
        vec![403, 403, 403]
    );
    assert!(
        msgs[0]
            .get("Warning")
            .unwrap()
            .contains("TLS client certificate required")
    );
    assert!(w.take(VENDOR1).is_empty());
    assert!(w.cdrs.is_empty());
    let rows = w.core.refusals();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].reason, rows[0].count),
        (RefusalReason::TlsClientCert, 3)
    );
    // A carrier with a bad certificate is no attacker: no ban.
    assert!(!w.effects.iter().any(|e| matches!(e, Effect::Ban { .. })));
}

#[test]
fn a_rule_without_a_name_asks_for_no_certificate() {
    let mut w = ip_world();
    invite_with(&mut w, "plain", &[]);
    assert_eq!(w.codes(CARRIER), vec![100]);
}
