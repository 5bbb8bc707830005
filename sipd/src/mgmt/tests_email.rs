//! Hashes seasoned with the user's identity, email addresses, and email one-time codes.

use std::sync::{Arc, Mutex};

use super::*;
use crate::store::{HashFormat, Staff};

/// Keeps every mail so a test can read the code.
#[derive(Debug, Default)]
struct Outbox(Mutex<Vec<(String, String)>>);

impl Mailer for Outbox {
    fn send(&self, to: &str, _: &str, body: &str) -> Result<(), MailError> {
        self.0.lock().unwrap().push((to.into(), body.into()));
        Ok(())
    }
}

impl Outbox {
    fn last_code(&self) -> String {
        let mails = self.0.lock().unwrap();
        let body = &mails.last().expect("a mail").1;
        body.split_whitespace()
            .find(|w| w.len() >= 6 && w.bytes().all(|b| b.is_ascii_digit()))
            .expect("a code in the mail")
            .to_owned()
    }
}

fn create(e: &Env, name: &str, role: Role, pw: &str, email: Option<&str>, codes: bool) -> Staff {
    e.auth
        .create_staff(
            &e.store,
            &admin(),
            &NewStaff {
                username: name.into(),
                role,
                password: pw.into(),
                allowed_hosts: vec![],
                must_change_password: false,
                email: email.map(Into::into),
                email_codes: codes,
            },
            t0(),
        )
        .unwrap()
        .0
}

fn login(
    e: &Env,
    user: &str,
    pw: &str,
    email_code: Option<&str>,
    when: SystemTime,
) -> Result<Session, LoginError> {
    e.auth.login(
        &e.store,
        when,
        &LoginAttempt {
            username: user,
            password: pw,
            totp_code: None,
            email_code,
            source: ip("192.0.2.7"),
        },
    )
}

/// The attack: a hash copied from one user's record into another's (a write to one column,
/// a restored fragment) must not let either password in as the other user.
#[test]
fn a_hash_copied_to_another_user_does_not_verify() {
    let e = env();
    let ann = create(
        &e,
        "ann",
        Role::Operator,
        PW,
        Some("ann@example.net"),
        false,
    );
    let bob = create(&e, "bob", Role::Operator, PW2, None, false);
    assert_eq!(ann.hash_format, HashFormat::Seasoned);
    e.store
        .put_staff(&Staff {
            password_hash: ann.password_hash.clone(),
            ..bob.clone()
        })
        .unwrap();
    for (i, pw) in [PW, PW2].into_iter().enumerate() {
        // Apart by more than the back-off's lock-out.
        assert_eq!(
            login(&e, "bob", pw, None, at(10 * i as u64 + 1)).unwrap_err(),
            LoginError::BadCredentials,
            "{pw}"
        );
    }
    // Before seasoning (the old format, what every hash was): the copy lets ann's password
    // in as bob.
    let plain = e.auth.hasher.hash(PW).unwrap();
    e.store
        .put_staff(&Staff {
            password_hash: plain,
            hash_format: HashFormat::Plain,
            ..e.store.staff(bob.id).unwrap().unwrap()
        })
        .unwrap();
    assert!(login(&e, "bob", PW, None, at(30)).is_ok(), "the old hole");
    // The same copy between two users who chose the same password fails too.
    let e = env();
    let ann = create(&e, "ann", Role::Operator, PW, None, false);
    let bob = create(&e, "bob", Role::Operator, PW, None, false);
    e.store
        .put_staff(&Staff {
            password_hash: ann.password_hash,
            ..bob
        })
        .unwrap();
    assert_eq!(
        login(&e, "bob", PW, None, at(1)).unwrap_err(),
        LoginError::BadCredentials
    );
    assert!(login(&e, "ann", PW, None, at(10)).is_ok());
}

/// A record stored before seasoning (plain hash, no format field) logs in and is rewritten
/// seasoned; the next login checks the new format.
#[test]
fn an_old_format_record_logs_in_and_is_upgraded() {
    let e = env();
    let ann = create(&e, "ann", Role::Operator, PW, None, false);
    // The record as an older sipd wrote it: no email, format or email-code fields.
    let mut old = serde_json::to_value(&ann).unwrap();
    for k in ["email", "hash_format", "email_codes"] {
        old.as_object_mut().unwrap().remove(k);
    }
    old["password_hash"] = e.auth.hasher.hash(PW).unwrap().into();
    let old: Staff = serde_json::from_value(old).unwrap();
    assert_eq!(old.hash_format, HashFormat::Plain);
    assert_eq!((old.email.as_deref(), old.email_codes), (None, false));
    e.store.put_staff(&old).unwrap();

    assert_eq!(
        login(&e, "ann", PW2, None, at(1)).unwrap_err(),
        LoginError::BadCredentials
    );
    assert!(login(&e, "ann", PW, None, at(2)).is_ok());
    let now = e.store.staff(ann.id).unwrap().unwrap();
    assert_eq!(now.hash_format, HashFormat::Seasoned);
    assert_ne!(now.password_hash, old.password_hash);
    let note = e
        .logins()
        .last()
        .unwrap()
        .entry
        .reason
        .clone()
        .unwrap_or_default();
    assert!(note.contains("seasoned"), "{note}");
    assert!(login(&e, "ann", PW, None, at(3)).is_ok());
    // The upgraded hash is seasoned: unseasoned it no longer verifies.
    assert!(!e.auth.hasher.verify(PW, &now.password_hash).unwrap());
}

#[test]
fn email_addresses_are_checked_and_normalized() {
    use crate::store::normalize_email;
    assert_eq!(
        normalize_email(" Ann.Lee+sbc@Mail.Example.NET ").unwrap(),
        "Ann.Lee+sbc@mail.example.net"
    );
    for bad in [
        "",
        "ann",
        "ann@",
        "@example.net",
        "ann@localhost",
        "ann@@example.net",
        "ann lee@example.net",
        "ann@exa mple.net",
        "ann@example.net\r\nBcc: x@y.z",
        "ann@.example.net",
    ] {
        assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
    }
    assert!(normalize_email(&format!("{}@example.net", "a".repeat(65))).is_err());
    let e = env();
    let err = e
        .auth
        .create_staff(
            &e.store,
            &admin(),
            &NewStaff {
                username: "ann".into(),
                role: Role::Operator,
                password: PW.into(),
                allowed_hosts: vec![],
                must_change_password: false,
                email: Some("not-an-address".into()),
                email_codes: false,
            },
            t0(),
        )
        .unwrap_err();
    assert!(matches!(err, StaffError::InvalidEmail(_)), "{err}");
}

/// An admin cannot re-season a hash without the password: changing what seasons it needs a
/// new password in the same change; the user changes their own email with their password.
#[test]
fn email_changes_reseason_the_hash() {
    let e = env();
    let ann = create(
        &e,
        "ann",
        Role::Operator,
        PW,
        Some("ann@example.net"),
        false,
    );
    let err = e
        .auth
        .update_staff(
            &e.store,
            &admin(),
            ann.id,
            &StaffUpdate {
                email: Some(Some("ann@example.org".into())),
                ..StaffUpdate::default()
            },
            at(1),
        )
        .unwrap_err();
    assert!(matches!(err, StaffError::IdentityNeedsPassword(_)), "{err}");
    // A role change alone needs nothing.
    e.auth
        .update_staff(
            &e.store,
            &admin(),
            ann.id,
            &StaffUpdate {
                role: Some(Role::ReadOnly),
                ..StaffUpdate::default()
            },
            at(1),
        )
        .unwrap();
    assert!(login(&e, "ann", PW, None, at(2)).is_ok());
    // The user, with the password: the hash follows the new address.
    let me = Actor::staff(&ann, ip("192.0.2.7"));
    let err = e
        .auth
        .set_own_email(
            &e.store,
            &me,
            ann.id,
            PW2,
            Some(Some("x@example.org")),
            None,
            at(3),
        )
        .unwrap_err();
    assert!(matches!(err, StaffError::WrongCurrentPassword), "{err}");
    let s = e
        .auth
        .set_own_email(
            &e.store,
            &me,
            ann.id,
            PW,
            Some(Some("ann@Example.ORG")),
            None,
            at(10),
        )
        .unwrap();
    assert_eq!(s.email.as_deref(), Some("ann@example.org"));
    assert!(login(&e, "ann", PW, None, at(11)).is_ok());
    // The admin with a new password: a reset.
    let s = e
        .auth
        .update_staff(
            &e.store,
            &admin(),
            ann.id,
            &StaffUpdate {
                email: Some(None),
                password: Some(PW2.into()),
                ..StaffUpdate::default()
            },
            at(12),
        )
        .unwrap();
    assert!(s.must_change_password && s.email.is_none());
    assert!(login(&e, "ann", PW2, None, at(13)).is_ok());
}

fn env_with_mail(cfg: EmailCodeConfig) -> (Env, Arc<Outbox>) {
    let out = Arc::new(Outbox::default());
    let mut e = env();
    e.auth = e.auth.with_email_codes(EmailCodes::new(cfg, out.clone()));
    (e, out)
}

#[test]
fn email_codes_are_mailed_single_use_and_expire() {
    let (e, out) = env_with_mail(EmailCodeConfig::default());
    create(&e, "ops", Role::Operator, PW, Some("ops@example.net"), true);
    assert_eq!(
        login(&e, "ops", PW, None, at(0)).unwrap_err(),
        LoginError::EmailCodeSent
    );
    assert_eq!(out.0.lock().unwrap()[0].0, "ops@example.net");
    let code = out.last_code();
    let s = login(&e, "ops", PW, Some(&code), at(10)).unwrap();
    assert_eq!(s.info.scope, SessionScope::Full);
    // Used once: refused, and counted towards the back-off.
    assert_eq!(
        login(&e, "ops", PW, Some(&code), at(20)).unwrap_err(),
        LoginError::EmailCodeInvalid
    );
    // A wrong password never sends a code.
    let sent = out.0.lock().unwrap().len();
    assert!(login(&e, "ops", PW2, None, at(100)).is_err());
    assert_eq!(out.0.lock().unwrap().len(), sent);
    // Expired after 5 minutes.
    assert_eq!(
        login(&e, "ops", PW, None, at(200)).unwrap_err(),
        LoginError::EmailCodeSent
    );
    let code = out.last_code();
    assert_eq!(
        login(&e, "ops", PW, Some(&code), at(200 + 301)).unwrap_err(),
        LoginError::EmailCodeExpired
    );
}

#[test]
fn email_codes_follow_the_policy() {
    let (e, out) = env_with_mail(EmailCodeConfig::default());
    // Admins keep TOTP by default.
    let err = e
        .auth
        .create_staff(
            &e.store,
            &admin(),
            &NewStaff {
                username: "boss".into(),
                role: Role::Admin,
                password: PW.into(),
                allowed_hosts: vec![],
                must_change_password: false,
                email: Some("boss@example.net".into()),
                email_codes: true,
            },
            t0(),
        )
        .unwrap_err();
    assert!(matches!(err, StaffError::EmailCodes(_)), "{err}");
    // Allowed for admins, an admin with an email code gets a full session (no TOTP setup).
    let (e, out2) = env_with_mail(EmailCodeConfig {
        roles: vec![Role::Admin],
        ..EmailCodeConfig::default()
    });
    create(&e, "boss", Role::Admin, PW, Some("boss@example.net"), true);
    assert_eq!(
        login(&e, "boss", PW, None, at(0)).unwrap_err(),
        LoginError::EmailCodeSent
    );
    let s = login(&e, "boss", PW, Some(&out2.last_code()), at(1)).unwrap();
    assert_eq!(s.info.scope, SessionScope::Full);
    // Rate limit: 3 sends per window.
    let (e, _) = (e, out);
    for i in 0..2 {
        assert_eq!(
            login(&e, "boss", PW, None, at(10 + i)).unwrap_err(),
            LoginError::EmailCodeSent
        );
    }
    assert!(matches!(
        login(&e, "boss", PW, None, at(20)).unwrap_err(),
        LoginError::EmailRateLimited { .. }
    ));
}

#[test]
fn no_mail_server_is_a_clear_error() {
    let e = env();
    e.auth
        .create_staff(
            &e.store,
            &admin(),
            &NewStaff {
                username: "ops".into(),
                role: Role::Operator,
                password: PW.into(),
                allowed_hosts: vec![],
                must_change_password: false,
                email: Some("ops@example.net".into()),
                email_codes: true,
            },
            t0(),
        )
        .unwrap();
    let err = login(&e, "ops", PW, None, at(0)).unwrap_err();
    assert!(matches!(err, LoginError::EmailUnavailable(_)), "{err}");
    assert!(err.to_string().contains("no mail server"), "{err}");
    assert!(e.auth.email.last_failure().is_some());
}
