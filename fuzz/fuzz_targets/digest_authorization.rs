//! The `Authorization: Digest` parser, and verification of whatever it accepts against a
//! known account (the path a malformed or forged header takes through the gate).
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use sipd_core::auth::digest::{
    Algorithm, Credential, DigestAuthorization, DigestPolicy, DigestVerifier, NonceKey,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(auth) = text.parse::<DigestAuthorization>() else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let v = DigestVerifier::new(
        DigestPolicy {
            realm: "sbc".into(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            allow_md5_without_qop: false,
            max_tracked_nonces: 16,
        },
        NonceKey::new([7; 32]),
        now - Duration::from_secs(1),
    );
    let cred = Credential::Password {
        password: "s3cret".into(),
    };
    // The answer's own uri as the Request-URI, so the check goes on past the uri match; and
    // another, so the mismatch path runs too.
    let _ = v.verify(&auth, "INVITE", &auth.uri, &cred, None, now);
    let _ = v.verify(&auth, "INVITE", "sip:other@example.net", &cred, None, now);
});
