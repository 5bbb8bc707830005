//! The login decision, per-request authorization, and logout.
//!
//! Order of checks in [`StaffAuth::login`], each chosen so that a refusal teaches an
//! attacker as little as possible:
//!
//! 1. Back-off: the username or the source is locked out, or an attempt for either is still
//!    in flight → refused before any password work (`LockedOut` with the time left). An
//!    attempt that passes holds the lock-out it would earn until its result is known (see
//!    [`super::backoff`]), so parallel logins cannot all pass this step at once.
//! 2. Unknown user → `BadCredentials`, after the same Argon2 work as a real check.
//! 3. Source not in the user's allowed hosts → `BadCredentials` too (the audit entry says
//!    why), with the same Argon2 work as 2 and *before* the password is checked: an outside
//!    attacker learns neither that the user exists nor whether a guess was right.
//! 4. Wrong password → `BadCredentials` (the audit entry says "bad password", the caller
//!    cannot tell it from an unknown user).
//! 5. Disabled → `Disabled` (only said to someone who knows the password).
//! 6. Second factor. TOTP enrolled → a code is required (`TotpRequired`, `TotpInvalid`,
//!    `TotpReplayed`); a pending enrolment is confirmed by a valid code at login. Email
//!    codes (no TOTP enrolled, the user chose them, their role may use them): no code → a
//!    code is mailed and the login refused with `EmailCodeSent` (at most `max_sends` per
//!    window, `EmailRateLimited` beyond; a dead SMTP server is `EmailUnavailable` and the
//!    `smtp_failed` alert); a wrong or expired code counts like a wrong TOTP code.
//! 7. Success. A hash in the old format (not seasoned with the user's identity) or with
//!    old costs is rehashed with the password just checked. An admin without a confirmed
//!    TOTP (or an email code, where the policy lets admins use them), or a user whose
//!    password expired or was set by an admin, gets a *setup* session that may only enrol
//!    TOTP / change the password (and log out); see `SessionScope`.
//!
//! Failures at 2, 3, 4 and 6 (wrong or replayed code) count towards the back-off of both the
//! username and the source; a success forgets the username's failures (not the source's:
//! otherwise one valid account would let an attacker reset their address between guesses
//! at others; the source's entry is forgotten an hour after its last lock-out). Every
//! attempt writes exactly one audit entry; a success writes it in the same transaction as
//! the session and the TOTP step.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::backoff::Key;
use super::role::Action;
use super::staff::StaffView;
use super::{StaffAuth, new_token, source, token_hash, totp, unix_ms};
use crate::store::{
    AuditDraft, AuditKind, AuditResult, Id, Role, SessionRecord, SessionScope, Staff, Store,
    StoreError, TokenHash, abort_tx,
};

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sessions' `last_seen_ms` is written at most this often.
const LAST_SEEN_EVERY_MS: u64 = 60_000;

/// One login attempt as the API received it.
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempt<'a> {
    /// As typed; matched case-insensitively for the back-off.
    pub username: &'a str,
    /// As typed, checked against the stored Argon2id hash.
    pub password: &'a str,
    /// The current TOTP code, needed once the user has one enrolled (or confirming a pending one).
    pub totp_code: Option<&'a str>,
    /// The code mailed at the previous attempt, for users whose second factor is email.
    pub email_code: Option<&'a str>,
    /// Where the attempt came from: checked against the user's allowed hosts and throttled.
    pub source: IpAddr,
}

/// A session as the API may show it (no token, no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The staff user the session belongs to.
    pub staff_id: Id,
    /// Login time, Unix milliseconds.
    pub created_ms: u64,
    /// When the session ends however it is used, Unix milliseconds.
    pub expires_ms: u64,
    /// Where the login came from (canonical: IPv4-mapped as IPv4).
    pub source_ip: IpAddr,
    /// Last use, Unix milliseconds, recorded at most once a minute (for the idle timeout).
    pub last_seen_ms: u64,
    /// What the session may do beyond the user's role (full, or setup steps only).
    pub scope: SessionScope,
}

impl From<&SessionRecord> for SessionInfo {
    fn from(r: &SessionRecord) -> Self {
        SessionInfo {
            staff_id: r.staff_id,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            source_ip: r.source_ip,
            last_seen_ms: r.last_seen_ms,
            scope: r.scope,
        }
    }
}

/// A successful login. `token` is shown once and never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer token: shown to the client once; the store keeps only its SHA-256.
    pub token: String,
    /// The session as stored.
    pub info: SessionInfo,
    /// The user who logged in.
    pub staff: StaffView,
}

/// Why a login was refused, as the caller may be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Unknown user or wrong password: deliberately the same.
    #[error("wrong username or password")]
    BadCredentials,
    /// The username or the source is locked out after failures, or another attempt for either is
    /// still in flight; nothing was checked (the API answers 429 with `Retry-After`).
    #[error("too many failed logins: try again in {} s", retry_after.as_secs())]
    LockedOut {
        /// How long until an attempt may be made again, rounded up to whole seconds.
        retry_after: Duration,
        /// When the lock-out ends, Unix milliseconds.
        until_ms: u64,
    },
    /// The user has TOTP enrolled and no code was given.
    #[error("a TOTP code is required")]
    TotpRequired,
    /// The code is not valid now (counts as a failure).
    #[error("wrong TOTP code")]
    TotpInvalid,
    /// The code was already used in its time step (counts as a failure).
    #[error("TOTP code already used; wait for the next one")]
    TotpReplayed,
    /// The user's second factor is email: a code was mailed; log in again with it.
    #[error("a code was sent to your email address; log in again with it")]
    EmailCodeSent,
    /// The email code is wrong, used already, or none is pending (counts as a failure).
    #[error("wrong email code")]
    EmailCodeInvalid,
    /// The email code's lifetime passed (counts as a failure); a new one is sent at the next
    /// attempt without a code.
    #[error("the email code expired; log in again without it for a new one")]
    EmailCodeExpired,
    /// Too many codes were mailed to this user lately.
    #[error("too many email codes sent: try again in {} s", retry_after.as_secs())]
    EmailRateLimited {
        /// Until another code may be sent.
        retry_after: Duration,
    },
    /// The code could not be mailed (no or a dead SMTP server); an alert is raised.
    #[error("the email code could not be sent ({0}); try again later or ask an admin")]
    EmailUnavailable(String),
    /// The password was right but the user is disabled.
    #[error("this staff account is disabled")]
    Disabled,
    /// The store, the audit log or the random source failed: no session, and the attempt does
    /// not count towards the back-off.
    #[error("internal error: {0}")]
    Internal(String),
}

/// An attempt [`Backoff::begin`](super::Backoff::begin) let through; ends it (as not
/// counting) if dropped without [`InFlight::end`], so a panic cannot leave keys locked.
struct InFlight<'a> {
    auth: &'a StaffAuth,
    keys: &'a [Key],
    done: bool,
}

impl InFlight<'_> {
    fn end(mut self, now_ms: u64, failed: bool) -> Option<super::Locked> {
        self.done = true;
        self.auth.backoff().end(self.keys, now_ms, failed)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.auth
                .backoff()
                .end(self.keys, unix_ms(SystemTime::now()), false);
        }
    }
}

/// Why a request's token was refused, or its action forbidden.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// Malformed, never issued, revoked by logout, or its user deleted.
    #[error("invalid session token")]
    InvalidToken,
    /// The session's lifetime or idle timeout passed; it is removed.
    #[error("session expired; log in again")]
    Expired,
    /// Revoked by "log out everywhere", a password or role change, or an admin.
    #[error("session revoked; log in again")]
    Revoked,
    /// The request's source is not among the user's allowed hosts (checked on every request).
    #[error("requests from {0} are not allowed for this user")]
    HostNotAllowed(IpAddr),
    /// The user was disabled after the session began.
    #[error("this staff account is disabled")]
    Disabled,
    /// The user's role does not allow the action (the API audits it as a denial).
    #[error("{role} may not {action:?}")]
    Forbidden {
        /// The caller's role.
        role: Role,
        /// What the request needed.
        action: Action,
    },
    /// A customer asked for a record of another account (or one that does not exist):
    /// answered as "not found" so other accounts' ids cannot be probed (audited as a denial).
    #[error("no such record in this account")]
    OtherAccount,
    /// A setup session asked for anything but its remaining step (the text names it).
    #[error("this session may only {0}")]
    SetupOnly(&'static str),
    /// The store failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A request's identity once its token checked out.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The user as stored now (role, enabled, hosts), not as at login.
    pub staff: Staff,
    /// The session the token belongs to.
    pub session: SessionInfo,
    /// The token's hash: the store key of the session (to keep it when other sessions end).
    pub token_hash: TokenHash,
}

impl Authorized {
    /// Whether this user, in this session, may do `a`.
    pub fn permit(&self, a: Action) -> Result<(), AuthzError> {
        if !self.staff.role.can(a) {
            return Err(AuthzError::Forbidden {
                role: self.staff.role,
                action: a,
            });
        }
        self.setup_allows(a)
    }

    /// Whether this user, in this session, may do `a` on `t` (the account it touches, when
    /// a customer asks): [`Role::decide`], then the session's setup restriction. Returns what
    /// the caller may see of lists across accounts.
    pub fn permit_in(&self, a: Action, t: super::Target) -> Result<super::Visible, AuthzError> {
        let v = self
            .staff
            .role
            .decide(self.staff.customer_of(), a, t)
            .map_err(|r| match r {
                super::Refused::Forbidden => AuthzError::Forbidden {
                    role: self.staff.role,
                    action: a,
                },
                super::Refused::OtherAccount => AuthzError::OtherAccount,
            })?;
        self.setup_allows(a)?;
        Ok(v)
    }

    fn setup_allows(&self, a: Action) -> Result<(), AuthzError> {
        if !self.session.scope.allows(a) {
            return Err(AuthzError::SetupOnly(match self.session.scope {
                SessionScope::Setup {
                    enrol_totp: true,
                    change_password: true,
                } => "enrol a TOTP factor and change the password",
                SessionScope::Setup {
                    enrol_totp: true, ..
                } => "enrol a TOTP factor",
                _ => "change the password",
            }));
        }
        Ok(())
    }
}

/// Internal verdict of a failed attempt: what the caller is told, what the audit says, and
/// whether it counts towards the back-off.
struct Refusal {
    err: LoginError,
    reason: String,
    counts: bool,
}

fn refuse(err: LoginError, reason: impl Into<String>, counts: bool) -> Refusal {
    Refusal {
        err,
        reason: reason.into(),
        counts,
    }
}

/// What a successful check decided to write.
struct Grant {
    staff: Staff,
    /// TOTP step accepted at this login (and whether it confirmed a pending enrolment).
    step: Option<(u64, bool)>,
    /// A new hash (seasoned, current costs) made with the password just checked.
    rehash: Option<String>,
    scope: SessionScope,
    note: Option<String>,
}

impl StaffAuth {
    /// Decides a login attempt at `now`. Writes exactly one audit entry whatever happens
    /// (unless the store itself fails).
    pub fn login(
        &self,
        store: &Store,
        now: SystemTime,
        a: &LoginAttempt<'_>,
    ) -> Result<Session, LoginError> {
        let now_ms = unix_ms(now);
        let src = source(a.source);
        let keys = [Key::user(a.username), Key::source(src)];
        let draft = |result: AuditResult, reason: Option<String>| AuditDraft {
            ts_ms: now_ms,
            actor: Some(a.username.chars().take(64).collect()),
            source: Some(src),
            kind: AuditKind::Login,
            target: None,
            result,
            reason,
            before: None,
            after: None,
        };
        let flight = match self.backoff().begin(&keys, now_ms) {
            Ok(()) => InFlight {
                auth: self,
                keys: &keys,
                done: false,
            },
            Err(l) => {
                let reason = format!("locked out ({} s left)", l.retry_after.as_secs());
                if let Err(e) = store.append_audit(&draft(AuditResult::Failure, Some(reason))) {
                    tracing::error!(error = %e, "cannot write the audit entry of a failed login");
                    return Err(LoginError::Internal("audit log unavailable".into()));
                }
                return Err(LoginError::LockedOut {
                    retry_after: l.retry_after,
                    until_ms: l.until_ms,
                });
            }
        };
        match self.check(store, now, a, src) {
            Err(r) => {
                let mut reason = r.reason;
                if let Some(l) = flight.end(now_ms, r.counts) {
                    reason = format!("{reason}; locked out for {} s", l.retry_after.as_secs());
                }
                if let Err(e) = store.append_audit(&draft(AuditResult::Failure, Some(reason))) {
                    tracing::error!(error = %e, "cannot write the audit entry of a failed login");
                    return Err(LoginError::Internal("audit log unavailable".into()));
                }
                Err(r.err)
            }
            Ok(g) => {
                let (token, hash) = match new_token() {
                    Ok(t) => t,
                    Err(e) => {
                        flight.end(now_ms, false);
                        return Err(LoginError::Internal(e.to_string()));
                    }
                };
                let rec = SessionRecord {
                    token_sha256: crate::store::token_hash_hex(&hash),
                    staff_id: g.staff.id,
                    created_ms: now_ms,
                    expires_ms: now_ms.saturating_add(self.session_ttl.as_millis() as u64),
                    source_ip: src,
                    last_seen_ms: now_ms,
                    epoch: g.staff.session_epoch,
                    scope: g.scope,
                };
                let entry = AuditDraft {
                    actor: Some(super::audit_name(&g.staff)),
                    ..draft(AuditResult::Success, g.note.clone())
                };
                let written = store.write(|tx| {
                    let Some(mut cur) = tx.staff(g.staff.id)? else {
                        return abort_tx(StoreError::NotFound {
                            kind: "staff",
                            what: format!("#{}", g.staff.id),
                        });
                    };
                    if let (Some((step, confirm)), Some(t)) = (g.step, cur.totp.as_mut()) {
                        // A concurrent login with the same code got here first.
                        if step <= t.last_step {
                            return Ok(None);
                        }
                        t.last_step = step;
                        if confirm {
                            t.enrolled = true;
                        }
                    }
                    // Only over the hash that was checked, for the identity it was made for:
                    // a password or email change in between wins.
                    if let Some(h) = &g.rehash
                        && cur.password_hash == g.staff.password_hash
                        && cur.username == g.staff.username
                        && cur.email == g.staff.email
                    {
                        cur.password_hash = h.clone();
                        cur.hash_format = crate::store::HashFormat::Seasoned;
                    }
                    if g.step.is_some() || g.rehash.is_some() {
                        tx.put_staff(&cur)?;
                    }
                    tx.put_session(
                        &hash,
                        &SessionRecord {
                            epoch: cur.session_epoch,
                            ..rec.clone()
                        },
                    )?;
                    tx.append_audit(&entry)?;
                    Ok(Some(cur))
                });
                match written {
                    Ok(Some(staff)) => {
                        flight.end(now_ms, false);
                        self.backoff().reset(&keys[0]);
                        Ok(Session {
                            token,
                            info: SessionInfo::from(&rec),
                            staff: StaffView::from(&staff),
                        })
                    }
                    Ok(None) => {
                        let l = flight
                            .end(now_ms, true)
                            .unwrap_or_else(|| self.backoff().fail(&keys, now_ms));
                        let reason = format!(
                            "TOTP replayed (concurrent login); locked out for {} s",
                            l.retry_after.as_secs()
                        );
                        store
                            .append_audit(&draft(AuditResult::Failure, Some(reason)))
                            .map_err(|e| LoginError::Internal(e.to_string()))?;
                        Err(LoginError::TotpReplayed)
                    }
                    Err(e) => {
                        flight.end(now_ms, false);
                        tracing::error!(error = %e, "cannot store a session");
                        let _ = store.append_audit(&draft(
                            AuditResult::Failure,
                            Some(format!("internal error: {e}")),
                        ));
                        Err(LoginError::Internal("cannot store the session".into()))
                    }
                }
            }
        }
    }

    fn check(
        &self,
        store: &Store,
        now: SystemTime,
        a: &LoginAttempt<'_>,
        src: IpAddr,
    ) -> Result<Grant, Refusal> {
        let now_ms = unix_ms(now);
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "{what}");
            refuse(
                LoginError::Internal(what.into()),
                format!("internal error: {what}: {e}"),
                false,
            )
        };
        let staff = store
            .staff_by_username(a.username)
            .map_err(|e| internal("staff lookup failed", &e))?;
        let Some(staff) = staff else {
            self.hasher.verify_dummy(a.password);
            return Err(refuse(LoginError::BadCredentials, "unknown user", true));
        };
        if !staff.host_allowed(src) {
            // The same work and the same answer as an unknown user.
            self.hasher.verify_dummy(a.password);
            return Err(refuse(LoginError::BadCredentials, "host not allowed", true));
        }
        match self.verify_staff(&staff, a.password) {
            Ok(true) => {}
            Ok(false) => {
                return Err(refuse(LoginError::BadCredentials, "bad password", true));
            }
            Err(e) => return Err(internal("stored password hash unusable", &e)),
        }
        if !staff.enabled {
            return Err(refuse(LoginError::Disabled, "account disabled", false));
        }
        let mut step = None;
        let mut notes = Vec::new();
        let email_ok = self.email_factor(&staff, a, now_ms)?;
        if email_ok {
            notes.push("email code accepted");
        }
        if let Some(t) = &staff.totp {
            match (a.totp_code, t.enrolled) {
                (None, true) => {
                    return Err(refuse(LoginError::TotpRequired, "TOTP required", false));
                }
                (None, false) => {}
                (Some(code), enrolled) => {
                    let secs = now_ms / 1000;
                    match totp::verify(&t.secret, code, secs, t.last_step) {
                        Ok(s) => {
                            step = Some((s, !enrolled));
                            if !enrolled {
                                notes.push("TOTP enrolment confirmed");
                            }
                        }
                        Err(totp::TotpError::Replayed) => {
                            return Err(refuse(LoginError::TotpReplayed, "TOTP replayed", true));
                        }
                        Err(totp::TotpError::Invalid | totp::TotpError::Malformed) => {
                            return Err(refuse(LoginError::TotpInvalid, "TOTP invalid", true));
                        }
                        Err(e @ totp::TotpError::Secret(_)) => {
                            return Err(internal("stored TOTP secret unusable", &e));
                        }
                    }
                }
            }
        }
        let rules = self
            .rules_for(store, &staff)
            .map_err(|e| internal("login template lookup failed", &e))?;
        let totp_ok = staff.totp_enrolled() || step.is_some_and(|(_, confirmed)| confirmed);
        // A user who chose email codes that the policy no longer allows their role has no
        // second factor now: enrol TOTP before anything else rather than log in on the
        // password alone.
        let lost_email = staff.email_codes && !self.email.allowed(staff.role);
        let enrol = (rules.second_factor || lost_email) && !totp_ok && !email_ok;
        let expired = rules.policy.expired(staff.password_changed_ms, now_ms);
        let change = staff.must_change_password || expired;
        if enrol && staff.role == Role::Admin {
            notes.push("setup session: admin must enrol TOTP");
        } else if enrol {
            notes.push("setup session: the account's template requires a second factor");
        }
        if expired {
            notes.push("setup session: password expired");
        } else if staff.must_change_password {
            notes.push("setup session: password must be changed");
        }
        let old_format = staff.hash_format == crate::store::HashFormat::Plain;
        let rehash = if old_format || self.hasher.needs_rehash(&staff.password_hash) {
            match self.hash_for(&staff.username, staff.email.as_deref(), a.password) {
                Ok(h) => {
                    notes.push(if old_format {
                        "password rehashed seasoned with the user's identity"
                    } else {
                        "password rehashed with the current costs"
                    });
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rehash failed; keeping the old hash");
                    None
                }
            }
        } else {
            None
        };
        Ok(Grant {
            staff,
            step,
            rehash,
            scope: SessionScope::setup(enrol, change),
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    /// The email factor of a login whose password was right: `Ok(false)` when the user does
    /// not use it (TOTP enrolled, not chosen, or not allowed for the role), `Ok(true)` when
    /// the code given is right; otherwise mails a code or refuses the one given.
    fn email_factor(
        &self,
        staff: &Staff,
        a: &LoginAttempt<'_>,
        now_ms: u64,
    ) -> Result<bool, Refusal> {
        let Some(to) = staff.email.as_deref() else {
            return Ok(false);
        };
        if staff.totp_enrolled() || !staff.email_codes || !self.email.allowed(staff.role) {
            return Ok(false);
        }
        use super::email_code::{CodeError, SendError};
        let Some(code) = a.email_code else {
            return match self.email.send(staff.id, &staff.username, to, now_ms) {
                Ok(_) => Err(refuse(LoginError::EmailCodeSent, "email code sent", false)),
                Err(SendError::RateLimited { retry_after }) => Err(refuse(
                    LoginError::EmailRateLimited { retry_after },
                    "email code not sent: too many lately",
                    false,
                )),
                Err(e) => {
                    tracing::error!(error = %e, user = %staff.username, "cannot mail an email code");
                    let short = match &e {
                        SendError::Mail(super::MailError::NotConfigured) => {
                            "no mail server configured"
                        }
                        SendError::Mail(super::MailError::Timeout(_)) => {
                            "the mail server did not answer"
                        }
                        _ => "the mail server failed",
                    };
                    Err(refuse(
                        LoginError::EmailUnavailable(short.into()),
                        format!("email code not sent: {e}"),
                        false,
                    ))
                }
            };
        };
        match self.email.verify(staff.id, code, now_ms) {
            Ok(()) => Ok(true),
            Err(CodeError::Expired) => Err(refuse(
                LoginError::EmailCodeExpired,
                "email code expired",
                true,
            )),
            Err(e @ (CodeError::Invalid | CodeError::NoCode)) => Err(refuse(
                LoginError::EmailCodeInvalid,
                format!("email code refused: {e}"),
                true,
            )),
        }
    }

    /// The current-password check of a password change, throttled like a login: refused
    /// while the username or the source is locked out or has an attempt in flight, and a
    /// wrong password counts towards both (a stolen session must not become a fast
    /// password oracle). A right one forgets the username's failures.
    pub(crate) fn check_current_password(
        &self,
        staff: &Staff,
        password: &str,
        source_ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<bool, super::StaffError> {
        let mut keys = vec![Key::user(&staff.username)];
        keys.extend(source_ip.map(|ip| Key::source(source(ip))));
        if let Err(l) = self.backoff().begin(&keys, now_ms) {
            return Err(super::StaffError::LockedOut {
                retry_after: l.retry_after,
            });
        }
        let flight = InFlight {
            auth: self,
            keys: &keys,
            done: false,
        };
        let ok = match self.verify_staff(staff, password) {
            Ok(ok) => ok,
            Err(e) => {
                flight.end(now_ms, false);
                return Err(e.into());
            }
        };
        flight.end(now_ms, !ok);
        if ok {
            self.backoff().reset(&keys[0]);
        }
        Ok(ok)
    }

    /// Checks a request's bearer token at `now`: known, not expired, not revoked, user
    /// enabled, and the source among the user's allowed hosts (every time, so narrowing a
    /// user's hosts applies to sessions already open). Then use [`Authorized::permit`].
    pub fn authorize(
        &self,
        store: &Store,
        token: &str,
        source_ip: IpAddr,
        now: SystemTime,
    ) -> Result<Authorized, AuthzError> {
        let now_ms = unix_ms(now);
        let internal = |e: StoreError| AuthzError::Internal(e.to_string());
        let hash = token_hash(token).ok_or(AuthzError::InvalidToken)?;
        let rec = store
            .session(&hash)
            .map_err(internal)?
            .ok_or(AuthzError::InvalidToken)?;
        if !rec.matches(&hash) {
            return Err(AuthzError::InvalidToken);
        }
        let idle = self
            .session_idle
            .is_some_and(|d| now_ms.saturating_sub(rec.last_seen_ms) >= duration_ms(d));
        if now_ms >= rec.expires_ms || idle {
            let _ = store.remove_session(&hash);
            return Err(AuthzError::Expired);
        }
        let staff = store
            .staff(rec.staff_id)
            .map_err(internal)?
            .ok_or(AuthzError::InvalidToken)?;
        if rec.epoch != staff.session_epoch {
            let _ = store.remove_session(&hash);
            return Err(AuthzError::Revoked);
        }
        if !staff.enabled {
            return Err(AuthzError::Disabled);
        }
        let src = source(source_ip);
        if !staff.host_allowed(src) {
            return Err(AuthzError::HostNotAllowed(src));
        }
        let mut rec = rec;
        if now_ms.saturating_sub(rec.last_seen_ms) >= LAST_SEEN_EVERY_MS {
            rec.last_seen_ms = now_ms;
            // Only if it still exists: a logout in between must win.
            let r = store.write(|tx| {
                if tx.session(&hash)?.is_some() {
                    tx.put_session(&hash, &rec)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot update a session's last-seen time");
            }
        }
        Ok(Authorized {
            staff,
            session: SessionInfo::from(&rec),
            token_hash: hash,
        })
    }

    /// Ends the session of `token` (one audit entry). Logging out an unknown or expired
    /// token is not an error: the result is the same.
    pub fn logout(
        &self,
        store: &Store,
        token: &str,
        source_ip: IpAddr,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let Some(hash) = token_hash(token) else {
            return Ok(false);
        };
        let src = source(source_ip);
        store.write(|tx| {
            let Some(rec) = tx.session(&hash)? else {
                return Ok(false);
            };
            let actor = tx.staff(rec.staff_id)?.map(|s| super::audit_name(&s));
            tx.remove_session(&hash)?;
            tx.append_audit(&AuditDraft {
                ts_ms: unix_ms(now),
                actor,
                source: Some(src),
                kind: AuditKind::Logout,
                target: None,
                result: AuditResult::Success,
                reason: None,
                before: None,
                after: None,
            })?;
            Ok(true)
        })
    }
}
