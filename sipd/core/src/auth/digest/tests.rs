//! End-to-end checks of the verifier: a client answers our challenge, then every field it
//! could tamper with is tampered with.

use super::*;

const REALM: &str = "sbc.example";
const USER: &str = "alice";
const PW: &str = "s3cret";
const URI: &str = "sip:+441234@sbc.example";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn policy(algorithms: &[Algorithm]) -> DigestPolicy {
    DigestPolicy {
        realm: REALM.into(),
        algorithms: algorithms.to_vec(),
        nonce_lifetime: Duration::from_secs(300),
        allow_md5_without_qop: false,
        max_tracked_nonces: 1024,
    }
}

fn verifier(algorithms: &[Algorithm]) -> DigestVerifier {
    DigestVerifier::new(policy(algorithms), NonceKey::new([42; 32]), t(0))
}

fn pw(p: &str) -> Credential {
    Credential::Password { password: p.into() }
}

/// What a well-behaved UA sends back.
struct Answer<'a> {
    alg: Algorithm,
    nonce: &'a str,
    password: &'a str,
    method: &'a str,
    uri: &'a str,
    nc: u32,
    cnonce: &'a str,
    qop: bool,
}

impl Answer<'_> {
    fn header(&self) -> String {
        let qop_part = if self.qop {
            format!(", qop=auth, nc={:08x}, cnonce=\"{}\"", self.nc, self.cnonce)
        } else {
            String::new()
        };
        let zeros = "0".repeat(self.alg.hash().hex_len());
        let draft: DigestAuthorization = format!(
            r#"Digest username="{USER}", realm="{REALM}", nonce="{}", uri="{}", algorithm={}, response="{zeros}"{qop_part}"#,
            self.nonce, self.uri, self.alg
        )
        .parse()
        .unwrap();
        let ha1 = pw(self.password).ha1(self.alg.hash(), USER, REALM).unwrap();
        let resp = expected_response(&ha1, self.method, &draft).unwrap();
        format!(
            r#"Digest username="{USER}", realm="{REALM}", nonce="{}", uri="{}", algorithm={}, response="{resp}"{qop_part}"#,
            self.nonce, self.uri, self.alg
        )
    }
}

fn answer<'a>(alg: Algorithm, nonce: &'a str) -> Answer<'a> {
    Answer {
        alg,
        nonce,
        password: PW,
        method: "INVITE",
        uri: URI,
        nc: 1,
        cnonce: "0a4f113b",
        qop: true,
    }
}

fn check(
    v: &DigestVerifier,
    header: &str,
    method: &str,
    now: SystemTime,
) -> Result<Authenticated, DigestError> {
    let auth: DigestAuthorization = header.parse().unwrap();
    v.verify(&auth, method, URI, &pw(PW), None, now)
}

fn nonce(v: &DigestVerifier, now: SystemTime) -> String {
    v.challenges(false, None, None, now).unwrap()[0]
        .nonce
        .clone()
}

#[test]
fn every_algorithm_round_trips() {
    let v = verifier(&Algorithm::ALL);
    for alg in Algorithm::ALL {
        let n = nonce(&v, t(1));
        let ok = check(&v, &answer(alg, &n).header(), "INVITE", t(2)).unwrap();
        assert_eq!(
            ok,
            Authenticated {
                username: USER.into(),
                algorithm: alg
            }
        );
    }
}

#[test]
fn challenges_are_one_per_algorithm_in_the_configured_order() {
    // The configured order is the order on the wire, whatever the hashes' strength.
    let v = verifier(&[Algorithm::Md5, Algorithm::Sha256, Algorithm::Md5]);
    let c = v.challenges(true, None, None, t(1)).unwrap();
    assert_eq!(
        c.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
        [Algorithm::Md5, Algorithm::Sha256]
    );
    let v = verifier(&[Algorithm::Sha256, Algorithm::Md5]);
    let c = v.challenges(true, None, None, t(1)).unwrap();
    assert_eq!(
        c.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
        [Algorithm::Sha256, Algorithm::Md5]
    );
    assert!(
        c.iter()
            .all(|x| x.stale && x.realm == REALM && x.nonce == c[0].nonce)
    );
    let md5_only = Credential::Ha1 {
        realm: REALM.into(),
        md5: Some("0".repeat(32)),
        sha256: None,
    };
    let c = v.challenges(false, Some(&md5_only), None, t(1)).unwrap();
    assert_eq!(
        c.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
        [Algorithm::Md5]
    );
}

#[test]
fn an_account_list_replaces_the_configured_one() {
    // Configured MD5 only; an account that requires SHA-256 is offered and accepts that alone.
    let v = verifier(&[Algorithm::Md5]);
    let own = [Algorithm::Sha256];
    let c = v.challenges(false, None, Some(&own), t(1)).unwrap();
    assert_eq!(
        c.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
        [Algorithm::Sha256]
    );
    for (alg, ok) in [(Algorithm::Md5, false), (Algorithm::Sha256, true)] {
        let n = nonce(&v, t(1));
        let auth: DigestAuthorization = answer(alg, &n).header().parse().unwrap();
        let r = v.verify(&auth, "INVITE", URI, &pw(PW), Some(&own), t(2));
        if ok {
            assert!(r.is_ok(), "{alg}: {r:?}");
        } else {
            assert_eq!(r, Err(DigestError::AlgorithmNotEnabled(alg)));
        }
    }
    // Without the account's list, SHA-256 is not accepted: the configuration does not name it.
    let n = nonce(&v, t(1));
    let auth: DigestAuthorization = answer(Algorithm::Sha256, &n).header().parse().unwrap();
    assert_eq!(
        v.verify(&auth, "INVITE", URI, &pw(PW), None, t(2)),
        Err(DigestError::AlgorithmNotEnabled(Algorithm::Sha256))
    );
}

#[test]
fn stored_ha1_verifies() {
    let v = verifier(&[Algorithm::Sha256, Algorithm::Md5Sess]);
    let cred = Credential::Ha1 {
        realm: REALM.into(),
        md5: Some(pw(PW).ha1(HashFn::Md5, USER, REALM).unwrap()),
        sha256: Some(pw(PW).ha1(HashFn::Sha256, USER, REALM).unwrap()),
    };
    for alg in [Algorithm::Sha256, Algorithm::Md5Sess] {
        let n = nonce(&v, t(1));
        let auth: DigestAuthorization = answer(alg, &n).header().parse().unwrap();
        assert!(
            v.verify(&auth, "INVITE", URI, &cred, None, t(2)).is_ok(),
            "{alg}"
        );
    }
}

#[test]
fn tampering_is_refused() {
    let v = verifier(&Algorithm::ALL);
    for alg in Algorithm::ALL {
        let n = nonce(&v, t(1));
        let wrong_pw = Answer {
            password: "guess",
            ..answer(alg, &n)
        }
        .header();
        let e = check(&v, &wrong_pw, "INVITE", t(2)).unwrap_err();
        assert_eq!(e, DigestError::WrongResponse);
        assert!(e.is_bad_credentials() && !e.wants_stale());

        let good = answer(alg, &n).header();
        assert_eq!(
            check(&v, &good, "BYE", t(2)),
            Err(DigestError::WrongResponse),
            "method"
        );
        let other_uri = good.replace(URI, "sip:+449999@sbc.example");
        assert!(
            matches!(
                check(&v, &other_uri, "INVITE", t(2)),
                Err(DigestError::UriMismatch { .. })
            ),
            "uri"
        );
        // The same tampered uri on a request really sent there: the response does not cover it.
        let auth: DigestAuthorization = other_uri.parse().unwrap();
        assert_eq!(
            v.verify(
                &auth,
                "INVITE",
                "sip:+449999@sbc.example",
                &pw(PW),
                None,
                t(2)
            ),
            Err(DigestError::WrongResponse),
            "uri under the response"
        );
        let other_nc = good.replace("nc=00000001", "nc=00000002");
        assert_eq!(
            check(&v, &other_nc, "INVITE", t(2)),
            Err(DigestError::WrongResponse),
            "nc"
        );
        let other_cnonce = good.replace("0a4f113b", "0a4f113c");
        assert_eq!(
            check(&v, &other_cnonce, "INVITE", t(2)),
            Err(DigestError::WrongResponse),
            "cnonce"
        );
        // None of the failures consumed the nonce-count: the genuine answer still passes.
        assert!(check(&v, &good, "INVITE", t(2)).is_ok());
    }
}

#[test]
fn expired_nonce_is_stale_only_with_the_right_password() {
    let v = verifier(&[Algorithm::Sha256]);
    let n = nonce(&v, t(1));
    let late = t(1 + 301);
    let e = check(&v, &answer(Algorithm::Sha256, &n).header(), "INVITE", late).unwrap_err();
    assert_eq!(e, DigestError::Stale);
    assert!(e.wants_stale());
    let wrong = Answer {
        password: "guess",
        ..answer(Algorithm::Sha256, &n)
    }
    .header();
    assert_eq!(
        check(&v, &wrong, "INVITE", late),
        Err(DigestError::WrongResponse)
    );
    assert!(
        check(
            &v,
            &answer(Algorithm::Sha256, &n).header(),
            "INVITE",
            t(301)
        )
        .is_ok()
    );
}

#[test]
fn replayed_nonce_count_is_refused() {
    let v = verifier(&[Algorithm::Md5]);
    let n = nonce(&v, t(1));
    let first = answer(Algorithm::Md5, &n).header();
    assert!(check(&v, &first, "INVITE", t(2)).is_ok());
    assert_eq!(
        check(&v, &first, "INVITE", t(3)),
        Err(DigestError::Replay(ReplayError::Replayed {
            nc: 1,
            last: 1
        }))
    );
    let next = Answer {
        nc: 2,
        ..answer(Algorithm::Md5, &n)
    }
    .header();
    assert!(check(&v, &next, "INVITE", t(3)).is_ok());
    assert!(check(&v, &next, "INVITE", t(3)).is_err());
}

#[test]
fn foreign_and_pre_restart_nonces() {
    let v = verifier(&[Algorithm::Sha256]);
    let stranger = DigestVerifier::new(policy(&[Algorithm::Sha256]), NonceKey::new([1; 32]), t(0));
    let n = nonce(&stranger, t(1));
    assert_eq!(
        check(&v, &answer(Algorithm::Sha256, &n).header(), "INVITE", t(2)),
        Err(DigestError::Nonce(NonceError::Forged))
    );
    // Same key, but issued before this process started: its counts are unknown.
    let before = nonce(&v, t(1));
    let restarted =
        DigestVerifier::new(policy(&[Algorithm::Sha256]), NonceKey::new([42; 32]), t(5));
    let e = check(
        &restarted,
        &answer(Algorithm::Sha256, &before).header(),
        "INVITE",
        t(6),
    )
    .unwrap_err();
    assert!(e.wants_stale(), "{e}");
    let garbage = answer(Algorithm::Sha256, "not-a-nonce").header();
    assert_eq!(
        check(&v, &garbage, "INVITE", t(2)),
        Err(DigestError::Nonce(NonceError::Malformed))
    );
}

#[test]
fn policy_is_enforced() {
    let v = verifier(&[Algorithm::Sha256]);
    let n = nonce(&v, t(1));
    assert_eq!(
        check(&v, &answer(Algorithm::Md5, &n).header(), "INVITE", t(2)),
        Err(DigestError::AlgorithmNotEnabled(Algorithm::Md5))
    );
    let other_realm = answer(Algorithm::Sha256, &n)
        .header()
        .replace(REALM, "evil");
    let auth: DigestAuthorization = other_realm.parse().unwrap();
    assert!(matches!(
        v.verify(&auth, "INVITE", URI, &pw(PW), None, t(2)),
        Err(DigestError::RealmMismatch(_))
    ));
}

#[test]
fn legacy_no_qop_only_for_md5_and_only_when_enabled() {
    let strict = verifier(&[Algorithm::Md5, Algorithm::Sha256]);
    let n = nonce(&strict, t(1));
    let legacy = Answer {
        qop: false,
        ..answer(Algorithm::Md5, &n)
    }
    .header();
    assert_eq!(
        check(&strict, &legacy, "INVITE", t(2)),
        Err(DigestError::QopRequired(Algorithm::Md5))
    );

    let lax = DigestVerifier::new(
        DigestPolicy {
            allow_md5_without_qop: true,
            ..policy(&[Algorithm::Md5, Algorithm::Sha256])
        },
        NonceKey::new([42; 32]),
        t(0),
    );
    assert!(check(&lax, &legacy, "INVITE", t(2)).is_ok());
    let sha_legacy = Answer {
        qop: false,
        ..answer(Algorithm::Sha256, &n)
    }
    .header();
    assert_eq!(
        check(&lax, &sha_legacy, "INVITE", t(2)),
        Err(DigestError::QopRequired(Algorithm::Sha256))
    );
}

#[test]
fn unusable_credentials_are_typed_errors() {
    let v = verifier(&[Algorithm::Sha256]);
    let n = nonce(&v, t(1));
    let auth: DigestAuthorization = answer(Algorithm::Sha256, &n).header().parse().unwrap();
    let md5_only = Credential::Ha1 {
        realm: REALM.into(),
        md5: Some("0".repeat(32)),
        sha256: None,
    };
    assert_eq!(
        v.verify(&auth, "INVITE", URI, &md5_only, None, t(2)),
        Err(DigestError::Credential(CredentialError::NoHa1For(
            HashFn::Sha256
        )))
    );
}

/// A captured answer replayed with another Request-URI (another number) is refused with 403
/// (not challenged again), whatever the case or spelling of the same URI would have been,
/// and does not use up the answer's nonce-count.
#[test]
fn answer_for_another_request_uri_is_refused() {
    let v = verifier(&[Algorithm::Md5]);
    let n = nonce(&v, t(1));
    let captured = answer(Algorithm::Md5, &n).header();
    let auth: DigestAuthorization = captured.parse().unwrap();
    let e = v
        .verify(
            &auth,
            "INVITE",
            "sip:+449999@sbc.example",
            &pw(PW),
            None,
            t(2),
        )
        .unwrap_err();
    assert!(matches!(e, DigestError::UriMismatch { .. }), "{e:?}");
    assert!(e.is_bad_credentials() && !e.wants_stale());
    // The same URI written differently is the same URI (RFC 3261 §19.1.4).
    assert!(
        v.verify(
            &auth,
            "INVITE",
            "SIP:+441234@SBC.EXAMPLE",
            &pw(PW),
            None,
            t(2)
        )
        .is_ok()
    );
}

/// An answer for another realm is challenged again with ours (it is no guess at our
/// password), and never verified against our credential.
#[test]
fn answer_for_another_realm_is_challenged_again() {
    let v = verifier(&[Algorithm::Md5]);
    let n = nonce(&v, t(1));
    let other = answer(Algorithm::Md5, &n)
        .header()
        .replace(&format!("realm=\"{REALM}\""), "realm=\"elsewhere\"");
    let e = check(&v, &other, "INVITE", t(2)).unwrap_err();
    assert_eq!(e, DigestError::RealmMismatch("elsewhere".into()));
    assert!(!e.is_bad_credentials() && !e.wants_stale());
}
