//! The login decision, authorization and staff management over a real store, on a fake
//! clock (times are passed in; nothing sleeps).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::store::{AuditEntry, AuditFilter, AuditKind, AuditResult, Role, SessionScope, Store};

const PW: &str = "Tr4m-Lagoon-Quartz-91";
const PW2: &str = "Ochre-Violin-Hangar-37";

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    auth: StaffAuth,
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn env_with(policy: PasswordPolicy, costs: Argon2Costs) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let hasher = PasswordHasher::new(Pepper::from_bytes([9; 32]), costs).unwrap();
    let auth = StaffAuth::new(
        hasher,
        policy,
        BackoffConfig::default(),
        Duration::from_secs(3600),
    );
    Env {
        _dir: dir,
        store,
        auth,
    }
}

fn cheap() -> Argon2Costs {
    Argon2Costs {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
        max_concurrent: 2,
    }
}

fn env() -> Env {
    env_with(PasswordPolicy::default(), cheap())
}

fn admin() -> Actor {
    Actor {
        username: Some("root".into()),
        source: Some(ip("127.0.0.1")),
    }
}

impl Env {
    fn add(&self, name: &str, role: Role, hosts: &[&str]) -> crate::store::Staff {
        self.auth
            .create_staff(
                &self.store,
                &admin(),
                &NewStaff {
                    username: name.into(),
                    role,
                    password: PW.into(),
                    allowed_hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
                    must_change_password: false,
                    email: None,
                    email_codes: false,
                },
                t0(),
            )
            .unwrap()
            .0
    }

    /// A user with a confirmed TOTP factor; returns its secret.
    fn add_with_totp(&self, name: &str, role: Role) -> (crate::store::Staff, String) {
        let s = self.add(name, role, &[]);
        let e = self
            .auth
            .begin_totp(&self.store, &admin(), s.id, t0())
            .unwrap();
        let c = code(&e.secret, 0);
        let s = self
            .auth
            .confirm_totp(&self.store, &admin(), s.id, &c, None, t0())
            .unwrap();
        (s, e.secret)
    }

    fn login(
        &self,
        user: &str,
        pw: &str,
        code: Option<&str>,
        from: &str,
        when: SystemTime,
    ) -> Result<Session, LoginError> {
        self.auth.login(
            &self.store,
            when,
            &LoginAttempt {
                username: user,
                password: pw,
                totp_code: code,
                email_code: None,
                source: ip(from),
            },
        )
    }

    fn audit(&self) -> Vec<AuditEntry> {
        self.store
            .audit(&AuditFilter::default())
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    fn logins(&self) -> Vec<AuditEntry> {
        self.audit()
            .into_iter()
            .filter(|e| e.entry.kind == AuditKind::Login)
            .collect()
    }
}

/// The 6-digit code of a base32 secret at `t0() + secs`.
fn code(secret_b32: &str, secs: u64) -> String {
    let raw = totp_rs::Secret::try_from_base32(secret_b32).unwrap();
    totp::code_at(raw.as_bytes(), 1_700_000_000 + secs, 6).unwrap()
}

#[test]
fn login_then_authorize() {
    let e = env();
    let s = e.add("alice", Role::Operator, &[]);
    let sess = e.login("Alice", PW, None, "192.0.2.1", t0()).unwrap();
    assert_eq!(sess.token.len(), 43);
    assert_eq!(sess.info.scope, SessionScope::Full);
    assert_eq!(sess.info.expires_ms, unix_ms(t0()) + 3_600_000);
    assert_eq!(sess.staff.username, "alice");
    // The token is not stored, only its hash.
    let stored = e.store.sessions().unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        !serde_json::to_string(&stored[0].1)
            .unwrap()
            .contains(&sess.token)
    );

    let a = e
        .auth
        .authorize(&e.store, &sess.token, ip("192.0.2.1"), at(10))
        .unwrap();
    assert_eq!(a.staff.id, s.id);
    assert!(a.permit(Action::Provision).is_ok());
    assert_eq!(
        a.permit(Action::ManageStaff),
        Err(AuthzError::Forbidden {
            role: Role::Operator,
            action: Action::ManageStaff
        })
    );
    // last_seen is written at most once a minute.
    let a = e
        .auth
        .authorize(&e.store, &sess.token, ip("192.0.2.7"), at(61))
        .unwrap();
    assert_eq!(a.session.last_seen_ms, unix_ms(at(61)));
    assert_eq!(
        a.session.source_ip,
        ip("192.0.2.1"),
        "where the login came from"
    );
}

#[test]
fn unknown_user_and_bad_password_look_the_same_but_are_audited_apart() {
    let e = env();
    e.add("alice", Role::Operator, &[]);
    let a = e.login("nobody", PW, None, "192.0.2.1", t0()).unwrap_err();
    let b = e
        .login("alice", "wrong", None, "192.0.2.2", t0())
        .unwrap_err();
    assert_eq!(a, LoginError::BadCredentials);
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string());
    let l = e.logins();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].entry.actor.as_deref(), Some("nobody"));
    assert!(
        l[0].entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("unknown user")
    );
    assert!(
        l[1].entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("bad password")
    );
    assert_eq!(l[1].entry.source, Some(ip("192.0.2.2")));
    assert!(l.iter().all(|x| x.entry.result == AuditResult::Failure));
}

#[test]
fn back_off_grows_caps_and_refuses_early() {
    let e = env();
    e.add("alice", Role::Operator, &[]);
    let mut now = 0u64;
    let mut delays = Vec::new();
    for _ in 0..12 {
        assert_eq!(
            e.login("alice", "wrong", None, "192.0.2.1", at(now)),
            Err(LoginError::BadCredentials)
        );
        // Even the right password is refused while locked, before it is checked.
        match e.login("alice", PW, None, "192.0.2.1", at(now)) {
            Err(LoginError::LockedOut { retry_after, .. }) => delays.push(retry_after.as_secs()),
            other => panic!("{other:?}"),
        }
        now += *delays.last().unwrap();
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
    // From another address the username is still locked.
    now -= 1;
    assert!(matches!(
        e.login("alice", PW, None, "198.51.100.1", at(now)),
        Err(LoginError::LockedOut { .. })
    ));
    // Once it is over, the right password works and forgets the username's failures.
    now += 1;
    e.login("alice", PW, None, "198.51.100.1", at(now)).unwrap();
    e.login("alice", "wrong", None, "198.51.100.1", at(now))
        .unwrap_err();
    match e.login("alice", PW, None, "198.51.100.1", at(now)) {
        Err(LoginError::LockedOut { retry_after, .. }) => assert_eq!(retry_after.as_secs(), 1),
        other => panic!("{other:?}"),
    }
    // The lock-out is in the audit log.
    let locked = e
        .logins()
        .into_iter()
        .filter(|x| {
            x.entry
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("locked out"))
        })
        .count();
    assert_eq!(locked, 14);
}

#[test]
fn one_audit_entry_per_login_attempt() {
    let e = env();
    e.add("op", Role::Operator, &["10.0.0.0/8"]);
    let (_, secret) = e.add_with_totp("ro", Role::ReadOnly);
    let before = e.audit().len();
    let mut attempts = 0;
    let mut t = 0;
    let mut go = |user: &str, pw: &str, code: Option<&str>, from: &str| {
        attempts += 1;
        t += 1000; // past every lock-out
        let _ = e.login(user, pw, code, from, at(t));
        assert_eq!(
            e.audit().len(),
            before + attempts,
            "{user} {pw} {code:?} {from}"
        );
    };
    go("op", PW, None, "10.1.2.3"); // success
    go("op", PW, None, "192.0.2.1"); // host not allowed
    go("op", "bad", None, "10.1.2.3"); // bad password
    go("ghost", PW, None, "10.1.2.3"); // unknown user
    go("ro", PW, None, "10.1.2.3"); // TOTP required
    go("ro", PW, Some("000000"), "10.1.2.3"); // TOTP invalid (almost surely)
    go("ro", PW, Some("12"), "10.1.2.3"); // malformed
    let c = code(&secret, 8000); // the 8th attempt is at t = 8000
    go("ro", PW, Some(&c), "10.1.2.3"); // success
    let l = e.logins();
    assert_eq!(l.len(), 8);
    assert_eq!(l[0].entry.result, AuditResult::Success);
    assert_eq!(l[7].entry.result, AuditResult::Success);
    assert!(
        l[1].entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("host not allowed")
    );
    assert!(
        l[4].entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("TOTP required")
    );
    assert!(
        l[5].entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("TOTP invalid")
    );
}

#[test]
fn totp_required_checked_and_never_replayed() {
    let e = env();
    let (_, secret) = e.add_with_totp("ro", Role::ReadOnly);
    let t = 600;
    let c = code(&secret, t);
    assert_eq!(
        e.login("ro", PW, None, "192.0.2.1", at(t)),
        Err(LoginError::TotpRequired)
    );
    // TOTP required is not a failure: no lock-out follows.
    let s = e.login("ro", PW, Some(&c), "192.0.2.1", at(t)).unwrap();
    assert_eq!(s.info.scope, SessionScope::Full);
    // The same code again, even a step later (within the skew) and from elsewhere: refused.
    assert_eq!(
        e.login("ro", PW, Some(&c), "198.51.100.9", at(t + 30)),
        Err(LoginError::TotpReplayed)
    );
    let l = e.logins();
    assert!(
        l.last()
            .unwrap()
            .entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("TOTP replayed")
    );
    // The next step's code works after the lock-out.
    let c2 = code(&secret, t + 60);
    e.login("ro", PW, Some(&c2), "198.51.100.9", at(t + 60))
        .unwrap();
    // A code from two steps ago is simply wrong.
    let old = code(&secret, t + 60 + 1000 - 90);
    assert_eq!(
        e.login("ro", PW, Some(&old), "192.0.2.1", at(t + 60 + 1000)),
        Err(LoginError::TotpInvalid)
    );
}

#[test]
fn admin_without_totp_gets_a_setup_session_then_enrols() {
    let e = env();
    let root = e.add("root", Role::Admin, &[]);
    let s = e.login("root", PW, None, "127.0.0.1", t0()).unwrap();
    assert_eq!(
        s.info.scope,
        SessionScope::Setup {
            enrol_totp: true,
            change_password: false
        }
    );
    let a = e
        .auth
        .authorize(&e.store, &s.token, ip("127.0.0.1"), t0())
        .unwrap();
    assert_eq!(
        a.permit(Action::View),
        Err(AuthzError::SetupOnly("enrol a TOTP factor"))
    );
    assert!(a.permit(Action::OwnTotp).is_ok());
    assert!(a.permit(Action::OwnSession).is_ok());
    let who = Actor::staff(&a.staff, ip("127.0.0.1"));
    let en = e.auth.begin_totp(&e.store, &who, root.id, t0()).unwrap();
    assert!(en.uri.starts_with("otpauth://totp/XDP%20SBC:root?"));
    assert!(!en.qr.is_empty());
    // A wrong code does not confirm, and is audited.
    assert!(matches!(
        e.auth.confirm_totp(
            &e.store,
            &who,
            root.id,
            "000000",
            Some(&a.token_hash),
            at(1)
        ),
        Err(StaffError::Totp(_))
    ));
    let c = code(&en.secret, 1);
    let st = e
        .auth
        .confirm_totp(&e.store, &who, root.id, &c, Some(&a.token_hash), at(1))
        .unwrap();
    assert!(st.totp_enrolled());
    let a = e
        .auth
        .authorize(&e.store, &s.token, ip("127.0.0.1"), at(2))
        .unwrap();
    assert_eq!(a.session.scope, SessionScope::Full);
    assert!(a.permit(Action::ManageStaff).is_ok());
    // Enrolling again is refused until reset; the confirming code cannot log in.
    assert!(matches!(
        e.auth.begin_totp(&e.store, &who, root.id, at(2)),
        Err(StaffError::AlreadyEnrolled)
    ));
    assert_eq!(
        e.login("root", PW, Some(&c), "127.0.0.1", at(2)),
        Err(LoginError::TotpReplayed)
    );
    let totp_entries = e
        .audit()
        .into_iter()
        .filter(|x| x.entry.kind == AuditKind::Totp)
        .map(|x| (x.entry.result, x.entry.reason.unwrap_or_default()))
        .collect::<Vec<_>>();
    assert_eq!(totp_entries.len(), 3, "{totp_entries:?}");
    assert_eq!(totp_entries[1].0, AuditResult::Failure);
}

#[test]
fn init_creates_the_first_admin_once_and_first_login_confirms_totp() {
    let e = env();
    let (en, strength) = e.auth.init_first_admin(&e.store, "root", PW, t0()).unwrap();
    assert!(strength.score >= 3);
    assert_eq!(en.staff.role, Role::Admin);
    assert_eq!(en.staff.totp, "pending");
    assert!(en.uri.contains(&format!("secret={}", en.secret)));
    assert!(matches!(
        e.auth.init_first_admin(&e.store, "other", PW, t0()),
        Err(StaffError::AlreadyInitialised)
    ));
    // Weak passwords are refused with the reasons.
    let e2 = env();
    match e2
        .auth
        .init_first_admin(&e2.store, "root", "password", t0())
    {
        Err(StaffError::Policy(v)) => assert!(v.problems.len() >= 2, "{v}"),
        other => panic!("{other:?}"),
    }
    assert!(!e2.store.has_staff().unwrap());
    // Without a code: setup session. With the app's code: enrolment confirmed, full session.
    let s = e.login("root", PW, None, "127.0.0.1", at(5)).unwrap();
    assert!(matches!(
        s.info.scope,
        SessionScope::Setup {
            enrol_totp: true,
            ..
        }
    ));
    let c = code(&en.secret, 40);
    let s = e.login("root", PW, Some(&c), "127.0.0.1", at(40)).unwrap();
    assert_eq!(s.info.scope, SessionScope::Full);
    assert_eq!(s.staff.totp, "enrolled");
    let last = e.logins().pop().unwrap();
    assert_eq!(
        last.entry.reason.as_deref(),
        Some("TOTP enrolment confirmed")
    );
    let init = e
        .audit()
        .into_iter()
        .find(|x| x.entry.kind == AuditKind::Init)
        .unwrap();
    let after = serde_json::to_string(&init.entry.after).unwrap();
    assert!(
        !after.contains("argon2") && !after.contains(&en.secret),
        "{after}"
    );
}

#[test]
fn parallel_logins_check_one_password_and_lock_out_the_rest() {
    let e = env();
    e.add("alice", Role::Operator, &[]);
    let before = e.auth.hasher.verifications();
    let barrier = std::sync::Barrier::new(32);
    let results: Vec<Result<Session, LoginError>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|i| {
                let (e, barrier) = (&e, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let user = if i % 2 == 0 { "alice" } else { "nobody" };
                    e.login(user, &format!("guess-{i}"), None, "192.0.2.1", t0())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = results
        .iter()
        .filter(|r| matches!(r, Err(LoginError::BadCredentials)))
        .count();
    let locked = results
        .iter()
        .filter(|r| matches!(r, Err(LoginError::LockedOut { .. })))
        .count();
    // Same source, same instant: whichever began first is the only guess checked.
    assert_eq!((checked, locked), (1, 31), "{results:?}");
    assert_eq!(e.auth.hasher.verifications() - before, 1);
    assert_eq!(e.logins().len(), 32, "one audit entry per attempt");
}

#[test]
fn unknown_user_and_excluded_host_get_the_same_answer_and_the_same_work() {
    let e = env();
    e.add("op", Role::Operator, &["10.0.0.0/8"]);
    let before = e.auth.hasher.verifications();
    let unknown = e.login("nobody", PW, None, "192.0.2.1", t0());
    let after_unknown = e.auth.hasher.verifications();
    let excluded = e.login("op", PW, None, "192.0.2.2", t0());
    let after_excluded = e.auth.hasher.verifications();
    assert_eq!(unknown, Err(LoginError::BadCredentials));
    assert_eq!(excluded, unknown);
    // One Argon2 verification each, at the same costs: the same time.
    assert_eq!(after_unknown - before, 1);
    assert_eq!(after_excluded - after_unknown, 1);
    // The audit log still tells the operator which it was.
    let reasons: Vec<String> = e
        .logins()
        .iter()
        .filter_map(|x| x.entry.reason.clone())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("unknown user")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("host not allowed")),
        "{reasons:?}"
    );
}

#[test]
fn allowed_hosts_at_login_and_on_every_request() {
    let e = env();
    e.add("op", Role::Operator, &["10.0.0.0/8", "2001:db8::/32"]);
    // The same answer as an unknown user: an outsider learns nothing of the account.
    assert_eq!(
        e.login("op", PW, None, "192.0.2.1", t0()),
        Err(LoginError::BadCredentials)
    );
    // Checked before the password: a wrong password from outside says the same.
    assert_eq!(
        e.login("op", "wrong", None, "192.0.2.2", at(100)),
        Err(LoginError::BadCredentials)
    );
    let s = e.login("op", PW, None, "::ffff:10.9.9.9", at(200)).unwrap();
    assert_eq!(s.info.source_ip, ip("10.9.9.9"));
    e.login("op", PW, None, "2001:db8::5", at(200)).unwrap();
    assert!(
        e.auth
            .authorize(&e.store, &s.token, ip("10.1.1.1"), at(201))
            .is_ok()
    );
    assert_eq!(
        e.auth
            .authorize(&e.store, &s.token, ip("203.0.113.5"), at(201))
            .unwrap_err(),
        AuthzError::HostNotAllowed(ip("203.0.113.5"))
    );
}

#[test]
fn expired_revoked_and_garbage_tokens() {
    let e = env();
    let s = e.add("alice", Role::ReadOnly, &[]);
    let a = e.login("alice", PW, None, "192.0.2.1", t0()).unwrap();
    let b = e.login("alice", PW, None, "192.0.2.1", t0()).unwrap();
    let c = e.login("alice", PW, None, "192.0.2.1", t0()).unwrap();
    let src = ip("192.0.2.1");
    for bad in [
        "",
        "x",
        &"A".repeat(43),
        &a.token[..42],
        &format!("{}=", a.token),
    ] {
        assert_eq!(
            e.auth.authorize(&e.store, bad, src, t0()).unwrap_err(),
            AuthzError::InvalidToken,
            "{bad:?}"
        );
    }
    // Expiry: valid until just before the hour is out.
    assert!(e.auth.authorize(&e.store, &a.token, src, at(3599)).is_ok());
    assert_eq!(
        e.auth
            .authorize(&e.store, &a.token, src, at(3600))
            .unwrap_err(),
        AuthzError::Expired
    );
    assert_eq!(
        e.auth
            .authorize(&e.store, &a.token, src, at(10))
            .unwrap_err(),
        AuthzError::InvalidToken,
        "an expired session is removed"
    );
    // Logout revokes one.
    assert!(e.auth.logout(&e.store, &b.token, src, at(20)).unwrap());
    assert!(!e.auth.logout(&e.store, &b.token, src, at(20)).unwrap());
    assert_eq!(
        e.auth
            .authorize(&e.store, &b.token, src, at(21))
            .unwrap_err(),
        AuthzError::InvalidToken
    );
    assert!(e.auth.authorize(&e.store, &c.token, src, at(21)).is_ok());
    // Revoke all.
    let d = e.login("alice", PW, None, "192.0.2.1", at(30)).unwrap();
    assert_eq!(
        e.auth
            .revoke_sessions(&e.store, &admin(), s.id, at(31))
            .unwrap(),
        2
    );
    for t in [&c.token, &d.token] {
        assert!(matches!(
            e.auth.authorize(&e.store, t, src, at(32)),
            Err(AuthzError::InvalidToken | AuthzError::Revoked)
        ));
    }
    assert!(e.store.sessions().unwrap().is_empty());
    // Sessions made before a revocation fail as Revoked even if their record survived.
    let f = e.login("alice", PW, None, "192.0.2.1", at(40)).unwrap();
    let (hash, rec) = e.store.sessions().unwrap().pop().unwrap();
    e.auth
        .revoke_sessions(&e.store, &admin(), s.id, at(41))
        .unwrap();
    e.store.put_session(&hash, &rec).unwrap();
    assert_eq!(
        e.auth
            .authorize(&e.store, &f.token, src, at(42))
            .unwrap_err(),
        AuthzError::Revoked
    );
    let kinds: Vec<AuditKind> = e.audit().iter().map(|x| x.entry.kind).collect();
    assert_eq!(kinds.iter().filter(|&&k| k == AuditKind::Logout).count(), 1);
    assert_eq!(kinds.iter().filter(|&&k| k == AuditKind::Revoke).count(), 2);
    // Expired sessions can be swept.
    e.login("alice", PW, None, "192.0.2.1", at(50)).unwrap();
    assert_eq!(e.store.expire_sessions(unix_ms(at(50 + 3600))).unwrap(), 1);
}

#[test]
fn disabled_accounts() {
    let e = env();
    e.add("root", Role::Admin, &[]);
    let s = e.add("alice", Role::Operator, &[]);
    let tok = e.login("alice", PW, None, "192.0.2.1", t0()).unwrap().token;
    e.auth
        .update_staff(
            &e.store,
            &admin(),
            s.id,
            &StaffUpdate {
                enabled: Some(false),
                ..Default::default()
            },
            at(1),
        )
        .unwrap();
    assert!(
        e.auth
            .authorize(&e.store, &tok, ip("192.0.2.1"), at(2))
            .is_err()
    );
    // Only someone with the password learns the account is disabled.
    assert_eq!(
        e.login("alice", "nope", None, "192.0.2.1", at(10)),
        Err(LoginError::BadCredentials)
    );
    assert_eq!(
        e.login("alice", PW, None, "192.0.2.2", at(100)),
        Err(LoginError::Disabled)
    );
}

#[test]
fn expired_or_admin_set_password_gives_a_change_password_session() {
    let policy = PasswordPolicy {
        max_age_days: 90,
        ..PasswordPolicy::default()
    };
    let e = env_with(policy, cheap());
    let s = e.add("alice", Role::Operator, &[]);
    let day = 86_400;
    assert_eq!(
        e.login("alice", PW, None, "192.0.2.1", at(89 * day))
            .unwrap()
            .info
            .scope,
        SessionScope::Full
    );
    let other = e
        .login("alice", PW, None, "192.0.2.1", at(89 * day))
        .unwrap();
    let late = at(90 * day);
    let sess = e.login("alice", PW, None, "192.0.2.1", late).unwrap();
    assert_eq!(
        sess.info.scope,
        SessionScope::Setup {
            enrol_totp: false,
            change_password: true
        }
    );
    let a = e
        .auth
        .authorize(&e.store, &sess.token, ip("192.0.2.1"), late)
        .unwrap();
    assert_eq!(
        a.permit(Action::View),
        Err(AuthzError::SetupOnly("change the password"))
    );
    let me = Actor::staff(&a.staff, ip("192.0.2.1"));
    // Wrong current password, the same password, a weak one: refused.
    assert!(matches!(
        e.auth.set_password(
            &e.store,
            &me,
            s.id,
            Some("nope"),
            PW2,
            Some(&a.token_hash),
            late
        ),
        Err(StaffError::WrongCurrentPassword)
    ));
    // Throttled like a login: even the right one waits for the lock-out to end.
    assert!(matches!(
        e.auth.set_password(
            &e.store,
            &me,
            s.id,
            Some(PW),
            PW2,
            Some(&a.token_hash),
            late
        ),
        Err(StaffError::LockedOut { .. })
    ));
    let late = late + Duration::from_secs(1);
    assert!(matches!(
        e.auth
            .set_password(&e.store, &me, s.id, Some(PW), PW, Some(&a.token_hash), late),
        Err(StaffError::SamePassword)
    ));
    assert!(matches!(
        e.auth.set_password(
            &e.store,
            &me,
            s.id,
            Some(PW),
            "short",
            Some(&a.token_hash),
            late
        ),
        Err(StaffError::Policy(_))
    ));
    let st = e
        .auth
        .set_password(
            &e.store,
            &me,
            s.id,
            Some(PW),
            PW2,
            Some(&a.token_hash),
            late,
        )
        .unwrap();
    assert!(st.score >= 3);
    // This session is now full; the others are gone; the old password no longer works.
    let a = e
        .auth
        .authorize(&e.store, &sess.token, ip("192.0.2.1"), late)
        .unwrap();
    assert_eq!(a.session.scope, SessionScope::Full);
    assert!(
        e.auth
            .authorize(&e.store, &other.token, ip("192.0.2.1"), late)
            .is_err()
    );
    assert_eq!(
        e.login("alice", PW, None, "192.0.2.1", late),
        Err(LoginError::BadCredentials)
    );
    let t = at(90 * day + 10);
    assert_eq!(
        e.login("alice", PW2, None, "192.0.2.9", t)
            .unwrap()
            .info
            .scope,
        SessionScope::Full
    );
    // An admin reset: the user must change it at the next login.
    e.auth
        .set_password(&e.store, &admin(), s.id, None, PW, None, t)
        .unwrap();
    assert_eq!(
        e.login("alice", PW, None, "192.0.2.9", at(90 * day + 20))
            .unwrap()
            .info
            .scope,
        SessionScope::setup(false, true)
    );
    let pw_entries = e
        .audit()
        .into_iter()
        .filter(|x| x.entry.kind == AuditKind::Password)
        .count();
    assert_eq!(pw_entries, 3, "one failure (wrong current) and two changes");
}

#[test]
fn last_admin_is_protected_and_changes_are_audited_with_before_and_after() {
    let e = env();
    let root = e.add("root", Role::Admin, &[]);
    let op = e.add("op", Role::Operator, &[]);
    let demote = StaffUpdate {
        role: Some(Role::Operator),
        ..Default::default()
    };
    assert!(matches!(
        e.auth
            .update_staff(&e.store, &admin(), root.id, &demote, t0()),
        Err(StaffError::LastAdmin(_))
    ));
    assert!(matches!(
        e.auth.delete_staff(&e.store, &admin(), root.id, t0()),
        Err(StaffError::LastAdmin(_))
    ));
    let promote = StaffUpdate {
        role: Some(Role::Admin),
        ..Default::default()
    };
    let n = e.audit().len();
    e.auth
        .update_staff(&e.store, &admin(), op.id, &promote, t0())
        .unwrap();
    let audit = e.audit();
    assert_eq!(audit.len(), n + 1);
    let last = &audit.last().unwrap().entry;
    assert_eq!(last.kind, AuditKind::Update);
    assert_eq!(last.target.as_deref(), Some("staff:op"));
    assert_eq!(last.before.as_ref().unwrap()["role"], "operator");
    assert_eq!(last.after.as_ref().unwrap()["role"], "admin");
    assert!(!serde_json::to_string(last).unwrap().contains("argon2"));
    e.auth
        .delete_staff(&e.store, &admin(), root.id, t0())
        .unwrap();
    assert!(e.store.staff_by_username("root").unwrap().is_none());
    assert_eq!(e.audit().len(), n + 2);
    // Usernames are unique without regard to case.
    let dup = e.auth.create_staff(
        &e.store,
        &admin(),
        &NewStaff {
            username: "OP".into(),
            role: Role::ReadOnly,
            password: PW.into(),
            allowed_hosts: vec![],
            must_change_password: false,
            email: None,
            email_codes: false,
        },
        t0(),
    );
    assert!(matches!(dup, Err(StaffError::Store(_))), "{dup:?}");
    assert_eq!(e.audit().len(), n + 2, "a refused change leaves no entry");
}

#[test]
fn audit_filters() {
    let e = env();
    e.add("alice", Role::Operator, &[]);
    e.login("alice", PW, None, "192.0.2.1", at(10)).unwrap();
    e.login("bob", PW, None, "192.0.2.1", at(20)).unwrap_err();
    let f = |f: AuditFilter| -> Vec<u64> {
        e.store
            .audit(&f)
            .into_iter()
            .map(|r| r.unwrap().id)
            .collect()
    };
    assert_eq!(f(AuditFilter::default()).len(), 3);
    assert_eq!(
        f(AuditFilter {
            kind: Some(AuditKind::Login),
            ..Default::default()
        })
        .len(),
        2
    );
    assert_eq!(
        f(AuditFilter {
            actor: Some("ALICE".into()),
            ..Default::default()
        })
        .len(),
        1
    );
    assert_eq!(
        f(AuditFilter {
            from_ms: Some(unix_ms(at(15))),
            until_ms: Some(unix_ms(at(25))),
            ..Default::default()
        }),
        vec![3]
    );
    assert_eq!(
        f(AuditFilter {
            after_id: 1,
            limit: 1,
            ..Default::default()
        }),
        vec![2]
    );
    assert_eq!("login".parse::<AuditKind>(), Ok(AuditKind::Login));
    assert!("nope".parse::<AuditKind>().is_err());
}

#[test]
fn rehash_on_login_when_costs_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mk = |m| {
        StaffAuth::new(
            PasswordHasher::new(
                Pepper::from_bytes([9; 32]),
                Argon2Costs {
                    memory_kib: m,
                    ..cheap()
                },
            )
            .unwrap(),
            PasswordPolicy::default(),
            BackoffConfig::default(),
            Duration::from_secs(3600),
        )
    };
    let old = mk(64);
    old.create_staff(
        &store,
        &admin(),
        &NewStaff {
            username: "alice".into(),
            role: Role::Operator,
            password: PW.into(),
            allowed_hosts: vec![],
            must_change_password: false,
            email: None,
            email_codes: false,
        },
        t0(),
    )
    .unwrap();
    let new = mk(128);
    let login = LoginAttempt {
        username: "alice",
        password: PW,
        totp_code: None,
        email_code: None,
        source: ip("192.0.2.1"),
    };
    new.login(&store, t0(), &login).unwrap();
    let s = store.staff_by_username("alice").unwrap().unwrap();
    assert!(s.password_hash.contains("m=128,"), "{}", s.password_hash);
    assert!(!new.hasher.needs_rehash(&s.password_hash));
    new.login(&store, at(1), &login).unwrap();
}

#[test]
fn tokens() {
    let (t, h) = new_token().unwrap();
    assert_eq!(t.len(), 43);
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(token_hash(&t), Some(h));
    assert_ne!(new_token().unwrap().0, t);
    assert_eq!(token_hash("not a token"), None);
}

#[test]
fn an_unused_session_ends_after_the_idle_timeout() {
    let mut e = env();
    e.auth = std::mem::replace(&mut e.auth, env().auth)
        .with_idle_timeout(Some(Duration::from_secs(300)));
    e.add("alice", Role::Operator, &[]);
    let sess = e.login("alice", PW, None, "192.0.2.1", t0()).unwrap();
    let authz = |secs| {
        e.auth
            .authorize(&e.store, &sess.token, ip("192.0.2.1"), at(secs))
    };
    // Used every 4 minutes: stays alive well past the idle timeout.
    for minute in [4, 8, 12, 16] {
        assert!(authz(minute * 60).is_ok(), "minute {minute}");
    }
    // Then left alone for 5 minutes: gone, and stays gone.
    assert_eq!(authz(16 * 60 + 300).err(), Some(AuthzError::Expired));
    assert_eq!(authz(16 * 60 + 301).err(), Some(AuthzError::InvalidToken));
}

/// An account in the store, for customer users.
fn customer_account(e: &Env, name: &str) -> crate::store::Id {
    e.store
        .put_account(&crate::store::Account {
            id: 0,
            name: name.into(),
            enabled: true,
            sip: None,
            cps_limit: None,
            max_sessions: None,
            balance: crate::store::Micros(0),
            tariff_id: None,
            max_call_secs: None,
        })
        .unwrap()
        .id
}

#[test]
fn a_customer_follows_its_accounts_template() {
    let e = env();
    let acc = customer_account(&e, "acme");
    let new = |name: &str, pw: &str| NewStaff {
        username: name.into(),
        role: Role::Customer,
        password: pw.into(),
        allowed_hosts: vec![],
        must_change_password: false,
        email: None,
        email_codes: false,
    };
    // Staff creation refuses a customer; the customer creation needs a real account.
    assert!(
        e.auth
            .create_staff(&e.store, &admin(), &new("c0", PW), t0())
            .is_err()
    );
    assert!(
        e.auth
            .create_customer(&e.store, &admin(), &new("c0", PW), acc + 100, t0())
            .is_err()
    );
    e.store
        .write(|tx| {
            tx.put_login_template(&crate::store::LoginTemplate {
                account_id: acc,
                min_length: Some(24),
                max_age_days: Some(30),
                require_second_factor: Some(true),
                ..Default::default()
            })
        })
        .unwrap();
    let short = e
        .auth
        .create_customer(&e.store, &admin(), &new("alice", PW), acc, t0());
    assert!(matches!(short, Err(StaffError::Policy(_))), "{short:?}");
    let long = "Tr4m-Lagoon-Quartz-91-Marble-Fig";
    let (c, strength) = e
        .auth
        .create_customer(&e.store, &admin(), &new("alice", long), acc, t0())
        .unwrap();
    assert!(strength.score >= 3);
    assert_eq!((c.role, c.account), (Role::Customer, Some(acc)));

    // Second factor required: only enrolment until it is done.
    let s = e.login("alice", long, None, "192.0.2.1", at(60)).unwrap();
    assert_eq!(s.info.scope, SessionScope::setup(true, false));
    // Expired after 30 days: the password must be changed first.
    let en = e.auth.begin_totp(&e.store, &admin(), c.id, at(60)).unwrap();
    let day = 86_400;
    let when = 31 * day;
    let code_now = code(&en.secret, when);
    let s = e
        .login("alice", long, Some(&code_now), "192.0.2.1", at(when))
        .unwrap();
    assert_eq!(s.info.scope, SessionScope::setup(false, true));
    let a = e
        .auth
        .authorize(&e.store, &s.token, ip("192.0.2.1"), at(when))
        .unwrap();
    assert!(
        a.permit_in(Action::View, Target::Account(Some(acc)))
            .is_err()
    );
    assert!(a.permit_in(Action::OwnPassword, Target::Own).is_ok());

    // The login is audited with the account.
    let last = e
        .store
        .audit(&AuditFilter::default())
        .into_iter()
        .flatten()
        .last()
        .unwrap();
    assert_eq!(last.entry.actor, Some(format!("alice (account #{acc})")));
}
#[path = "tests_email.rs"]
mod email;
