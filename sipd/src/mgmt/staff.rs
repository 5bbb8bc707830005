//! Staff management: every change here writes exactly one audit entry, in the same
//! transaction as the change, with the user before and after as [`StaffView`] (never the
//! password hash or the TOTP secret). The caller (the API) has already checked that the
//! actor may do it (`Action::ManageStaff`, or `OwnPassword`/`OwnTotp` on themselves).
//!
//! Guard rails: the last enabled admin cannot be demoted, disabled or deleted, so the
//! appliance always has someone who can manage it.

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::password::{PasswordError, PolicyViolation, Strength};
use super::totp::{self, TotpError};
use super::{StaffAuth, unix_ms};
use crate::store::{
    AuditDraft, AuditKind, AuditResult, Auditor, Change, HashFormat, Id, Role, SessionScope, Staff,
    Store, StoreError, TokenHash, TotpState, Tx, TxResult, abort_tx, normalize_email,
    valid_username,
};

/// Who is making a change, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// Staff username; `None` for sipd itself or a local command (`sipd init`).
    pub username: Option<String>,
    /// Where the request came from (canonical); `None` for sipd itself or a local command.
    pub source: Option<IpAddr>,
}

impl Actor {
    /// sipd itself or a local command (`sipd init`): no username, no source.
    pub fn system() -> Actor {
        Actor::default()
    }

    /// Staff user `s` acting from `source` (IPv4-mapped recorded as IPv4).
    pub fn staff(s: &Staff, source: IpAddr) -> Actor {
        Actor {
            username: Some(super::audit_name(s)),
            source: Some(super::source(source)),
        }
    }
}

/// A staff user as the API and the audit log show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffView {
    /// The store's id.
    pub id: Id,
    /// The login name.
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// A disabled user can neither log in nor use a session.
    pub enabled: bool,
    /// "none", "pending" (enrolment not yet confirmed) or "enrolled".
    pub totp: String,
    /// Sources the user may log in and make requests from; empty = anywhere.
    pub allowed_hosts: Vec<IpNet>,
    /// Unix ms of the last password change (the policy's maximum age counts from here).
    pub password_changed_ms: u64,
    /// The next login gets a setup session that must change the password first.
    pub must_change_password: bool,
    /// Unix ms of creation.
    pub created_ms: u64,
    /// The account a `customer` user belongs to; absent for staff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Id>,
    /// Where email codes go; `null`: none.
    pub email: Option<String>,
    /// The user's second factor is an emailed code (when TOTP is not enrolled).
    pub email_codes: bool,
    /// `plain` (stored before seasoning; upgraded at the next login) or `seasoned`.
    pub password_hash_format: HashFormat,
}

impl From<&Staff> for StaffView {
    fn from(s: &Staff) -> Self {
        StaffView {
            id: s.id,
            username: s.username.clone(),
            role: s.role,
            enabled: s.enabled,
            totp: match &s.totp {
                None => "none",
                Some(t) if t.enrolled => "enrolled",
                Some(_) => "pending",
            }
            .into(),
            allowed_hosts: s.allowed_hosts.clone(),
            password_changed_ms: s.password_changed_ms,
            must_change_password: s.must_change_password,
            created_ms: s.created_ms,
            account: s.account,
            email: s.email.clone(),
            email_codes: s.email_codes,
            password_hash_format: s.hash_format,
        }
    }
}

fn view(s: &Staff) -> Option<serde_json::Value> {
    serde_json::to_value(StaffView::from(s)).ok()
}

/// Why a staff change was refused; nothing was written (a refused check of the current
/// password or TOTP code may still be audited as a failure).
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    /// The new password breaks the password policy.
    #[error(transparent)]
    Policy(#[from] PolicyViolation),
    /// The store failed, or a unique name is taken.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Argon2 could not hash or check a password.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A TOTP code was malformed, wrong or replayed, or the secret is unusable.
    #[error(transparent)]
    Totp(#[from] TotpError),
    /// A field is malformed (a username outside the allowed characters, say); the text says
    /// which.
    #[error("{0}")]
    Invalid(String),
    /// An email address that is not one (the text says why).
    #[error("{0}")]
    InvalidEmail(String),
    /// Email codes for a user without an email address, or whose role may not use them.
    #[error("{0}")]
    EmailCodes(String),
    /// An admin changed what seasons a user's password hash (email or username) without
    /// giving a new password: the old hash would no longer verify.
    #[error(
        "changing the email or username of {0} changes what seasons their password hash: give a new password in the same change (they must change it at next login), or let them change their email themselves (with their password)"
    )]
    IdentityNeedsPassword(String),
    /// The user's name, email or hash changed between the check and the write.
    #[error("the user changed meanwhile; try again")]
    ChangedMeanwhile,
    /// A password change that keeps the same password.
    #[error("the new password must differ from the current one")]
    SamePassword,
    /// `sipd init` when staff exist already.
    #[error("staff users already exist; `sipd init` only creates the first admin")]
    AlreadyInitialised,
    /// No staff user with this id or name.
    #[error("staff user {0} not found")]
    NotFound(String),
    /// The change would leave no enabled admin (demote, disable or delete the last one).
    #[error("{0} is the last enabled admin: make another admin first")]
    LastAdmin(String),
    /// A user changing their own password gave the wrong current one (counts towards the
    /// back-off).
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    /// The current-password check is throttled like a login (same back-off keys).
    #[error("too many failed password checks: try again in {} s", retry_after.as_secs())]
    LockedOut {
        /// How long until the check may be tried again, rounded up to whole seconds.
        retry_after: std::time::Duration,
    },
    /// An enrolment was begun while a factor is enrolled.
    #[error("TOTP is already enrolled; an admin must reset it first")]
    AlreadyEnrolled,
    /// A confirmation with no enrolment begun.
    #[error("no TOTP enrolment is pending; begin one first")]
    NotPending,
}

/// A new staff user.
#[derive(Debug, Clone)]
pub struct NewStaff {
    /// The login name (1-64 of `A-Z a-z 0-9 . _ @ -`, unique).
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// The first password, checked against the policy.
    pub password: String,
    /// Sources the user may log in and make requests from; empty = anywhere.
    pub allowed_hosts: Vec<IpNet>,
    /// The user must change this password at first login (true when an admin chose it).
    pub must_change_password: bool,
    /// Where email codes go (checked and normalized); seasons the password hash.
    pub email: Option<String>,
    /// The second factor is an emailed code (needs `email` and a role the policy allows).
    pub email_codes: bool,
}

/// A change to a staff user; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct StaffUpdate {
    /// A new login name.
    pub username: Option<String>,
    /// A new role (ends the user's sessions).
    pub role: Option<Role>,
    /// Enable or disable (a disable ends the user's sessions).
    pub enabled: Option<bool>,
    /// New allowed sources (a narrowing ends the user's sessions).
    pub allowed_hosts: Option<Vec<IpNet>>,
    /// A new email address (`Some(None)` removes it).
    pub email: Option<Option<String>>,
    /// Turn email codes on or off.
    pub email_codes: Option<bool>,
    /// A new password (an admin's reset: must be changed at next login, sessions end);
    /// required when the change of email or username would change what seasons the hash.
    pub password: Option<String>,
}

/// What enrolment shows the user once: the secret for manual entry, the `otpauth://` URI
/// and the same URI as a terminal QR code.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The user, now with a pending enrolment.
    pub staff: StaffView,
    /// The base32 secret, for typing into an app by hand.
    pub secret: String,
    /// The `otpauth://totp/...` URI authenticator apps import.
    pub uri: String,
    /// The URI as a QR code drawn with Unicode half blocks, for a terminal.
    pub qr: String,
}

/// `email` normalized, or why not.
fn email_of(email: Option<&str>) -> Result<Option<String>, StaffError> {
    email
        .map(|e| normalize_email(e).map_err(StaffError::InvalidEmail))
        .transpose()
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound {
        kind: "staff",
        what,
    }
}

fn load(tx: &Tx<'_>, id: Id) -> TxResult<Staff> {
    match tx.staff(id)? {
        Some(s) => Ok(s),
        None => abort_tx(not_found(format!("#{id}"))),
    }
}

/// Whether another enabled admin than `id` exists.
fn other_admin(store: &Store, id: Id) -> Result<bool, StoreError> {
    Ok(store
        .staff_list()
        .into_iter()
        .flatten()
        .any(|s| s.id != id && s.enabled && s.role == Role::Admin))
}

fn map_store(e: StoreError) -> StaffError {
    match e {
        StoreError::NotFound { what, .. } => StaffError::NotFound(what),
        e => StaffError::Store(e),
    }
}

/// Stamps a change's audit entry with the actor and the (possibly fake) clock.
struct By<'a>(&'a Actor, SystemTime);

impl Auditor for By<'_> {
    fn username(&self) -> Option<String> {
        self.0.username.clone()
    }

    fn source(&self) -> Option<IpAddr> {
        self.0.source
    }

    fn ts_ms(&self) -> u64 {
        unix_ms(self.1)
    }
}

/// A change to staff user `name`, for [`Store::change`]: the user before and after as
/// [`StaffView`].
fn changed<R>(
    kind: AuditKind,
    name: &str,
    reason: Option<String>,
    before: Option<&Staff>,
    after: Option<&Staff>,
    out: R,
) -> Result<Change<R>, StaffError> {
    Ok(Change {
        kind,
        target: format!("staff:{name}"),
        reason,
        before: before.and_then(view),
        after: after.and_then(view),
        out,
    })
}

/// A failed attempt, audited on its own (nothing changed).
fn failure(
    actor: &Actor,
    now: SystemTime,
    kind: AuditKind,
    name: &str,
    reason: String,
) -> AuditDraft {
    let (entry, ()) = Change::new(kind, format!("staff:{name}"), ())
        .reason(Some(reason))
        .entry(&By(actor, now));
    AuditDraft {
        result: AuditResult::Failure,
        ..entry
    }
}

impl StaffAuth {
    /// Creates a staff user; returns it and the strength of its password. An admin gets a
    /// pending TOTP enrolment at once (see [`StaffAuth::begin_totp`] for showing it).
    pub fn create_staff(
        &self,
        store: &Store,
        actor: &Actor,
        new: &NewStaff,
        now: SystemTime,
    ) -> Result<(Staff, Strength), StaffError> {
        if new.role == Role::Customer {
            return Err(StaffError::Invalid(
                "a customer user is created for an account (create_customer)".into(),
            ));
        }
        self.create_user(store, actor, new, None, now)
    }

    /// Creates a `customer` user of account `account` (which must exist; `new.role` is
    /// ignored): its password meets the account's template. Audited like a staff creation.
    pub fn create_customer(
        &self,
        store: &Store,
        actor: &Actor,
        new: &NewStaff,
        account: Id,
        now: SystemTime,
    ) -> Result<(Staff, Strength), StaffError> {
        if store.account(account)?.is_none() {
            return Err(StaffError::Invalid(format!("account #{account} not found")));
        }
        let new = NewStaff {
            role: Role::Customer,
            ..new.clone()
        };
        self.create_user(store, actor, &new, Some(account), now)
    }

    fn create_user(
        &self,
        store: &Store,
        actor: &Actor,
        new: &NewStaff,
        account: Option<Id>,
        now: SystemTime,
    ) -> Result<(Staff, Strength), StaffError> {
        valid_username(&new.username).map_err(StaffError::Invalid)?;
        let rules = self.rules_for_account(store, account)?;
        let email = email_of(new.email.as_deref())?;
        self.check_email_codes(new.role, email.as_deref(), new.email_codes)?;
        let strength = rules.policy.check(&new.password, &new.username)?;
        let now_ms = unix_ms(now);
        let s = Staff {
            id: 0,
            username: new.username.clone(),
            role: new.role,
            password_hash: self.hash_for(&new.username, email.as_deref(), &new.password)?,
            password_changed_ms: now_ms,
            must_change_password: new.must_change_password,
            totp: None,
            allowed_hosts: new.allowed_hosts.clone(),
            enabled: true,
            created_ms: now_ms,
            session_epoch: 0,
            account,
            email,
            hash_format: HashFormat::Seasoned,
            email_codes: new.email_codes,
        };
        let stored = store.change(&By(actor, now), |tx| {
            let id = tx.put_staff(&s)?;
            let stored = Staff { id, ..s.clone() };
            Ok(changed(
                AuditKind::Create,
                &s.username,
                None,
                None,
                Some(&stored),
                stored.clone(),
            ))
        })??;
        Ok((stored, strength))
    }

    /// `sipd init`: creates the first admin (refused if any staff user exists) with a
    /// pending TOTP enrolment, and returns what to show: the URI and QR. The first login
    /// with a valid code confirms the enrolment; until then the admin only gets a setup
    /// session.
    pub fn init_first_admin(
        &self,
        store: &Store,
        username: &str,
        password: &str,
        now: SystemTime,
    ) -> Result<(Enrolment, Strength), StaffError> {
        if store.has_staff()? {
            return Err(StaffError::AlreadyInitialised);
        }
        valid_username(username).map_err(StaffError::Invalid)?;
        let strength = self.policy.check(password, username)?;
        let now_ms = unix_ms(now);
        let secret = totp::generate_secret()?;
        let s = Staff {
            id: 0,
            username: username.into(),
            role: Role::Admin,
            password_hash: self.hash_for(username, None, password)?,
            password_changed_ms: now_ms,
            must_change_password: false,
            totp: Some(TotpState {
                secret: secret.clone(),
                enrolled: false,
                last_step: 0,
            }),
            allowed_hosts: Vec::new(),
            enabled: true,
            created_ms: now_ms,
            session_epoch: 0,
            account: None,
            email: None,
            hash_format: HashFormat::Seasoned,
            email_codes: false,
        };
        let stored = store.change(&By(&Actor::system(), now), |tx| {
            let id = tx.put_staff(&s)?;
            let stored = Staff { id, ..s.clone() };
            Ok(changed(
                AuditKind::Init,
                username,
                Some("first admin created; TOTP enrolment pending".into()),
                None,
                Some(&stored),
                stored.clone(),
            ))
        })??;
        let uri = totp::provisioning_uri(&secret, username)?;
        let qr = totp::qr_terminal(&uri)?;
        Ok((
            Enrolment {
                staff: StaffView::from(&stored),
                secret,
                uri,
                qr,
            },
            strength,
        ))
    }

    /// Changes role, enabled, username or allowed hosts. A change of role, a disable or a
    /// narrowing of hosts ends the user's sessions.
    pub fn update_staff(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        u: &StaffUpdate,
        now: SystemTime,
    ) -> Result<Staff, StaffError> {
        if let Some(name) = &u.username {
            valid_username(name).map_err(StaffError::Invalid)?;
        }
        let email = u
            .email
            .as_ref()
            .map(|e| email_of(e.as_deref()))
            .transpose()?;
        let before = store
            .staff(id)?
            .ok_or_else(|| StaffError::NotFound(format!("#{id}")))?;
        let name = u.username.as_deref().unwrap_or(&before.username);
        let new_email = email.clone().unwrap_or_else(|| before.email.clone());
        self.check_email_codes(
            u.role.unwrap_or(before.role),
            new_email.as_deref(),
            u.email_codes.unwrap_or(before.email_codes),
        )?;
        let identity_changes = super::seasoning(name, new_email.as_deref())
            != super::seasoning(&before.username, before.email.as_deref());
        // The new password's hash, for the identity after the change.
        let reset = match &u.password {
            Some(pw) => {
                let strength = self.rules_for(store, &before)?.policy.check(pw, name)?;
                tracing::debug!(score = strength.score, "password set with a staff update");
                Some(self.hash_for(name, new_email.as_deref(), pw)?)
            }
            None if identity_changes && before.hash_format == HashFormat::Seasoned => {
                return Err(StaffError::IdentityNeedsPassword(before.username));
            }
            None => None,
        };
        let loses_admin = before.role == Role::Admin
            && before.enabled
            && (u.role.is_some_and(|r| r != Role::Admin) || u.enabled == Some(false));
        if loses_admin && !other_admin(store, id)? {
            return Err(StaffError::LastAdmin(before.username));
        }
        let after = store
            .change(&By(actor, now), |tx| {
                let before = load(tx, id)?;
                let mut s = before.clone();
                if let Some(n) = &u.username {
                    s.username = n.clone();
                }
                if let Some(r) = u.role {
                    s.role = r;
                }
                if let Some(e) = u.enabled {
                    s.enabled = e;
                }
                if let Some(h) = &u.allowed_hosts {
                    s.allowed_hosts = h.clone();
                }
                if let Some(e) = &email {
                    s.email = e.clone();
                }
                if let Some(c) = u.email_codes {
                    s.email_codes = c;
                }
                // Seasoned for the identity checked above; a concurrent change to it is refused.
                if identity_changes
                    && before.hash_format == HashFormat::Seasoned
                    && (s.username != name || s.email != new_email)
                {
                    return Ok(Err(StaffError::ChangedMeanwhile));
                }
                if let Some(h) = &reset {
                    s.password_hash = h.clone();
                    s.hash_format = HashFormat::Seasoned;
                    s.password_changed_ms = unix_ms(now);
                    s.must_change_password = true;
                }
                let revoke = s.role != before.role
                    || (!s.enabled && before.enabled)
                    || s.allowed_hosts != before.allowed_hosts
                    || reset.is_some();
                if revoke {
                    s.session_epoch += 1;
                }
                tx.put_staff(&s)?;
                Ok(changed(
                    AuditKind::Update,
                    &before.username,
                    revoke.then(|| "sessions revoked".into()),
                    Some(&before),
                    Some(&s),
                    s.clone(),
                ))
            })
            .map_err(map_store)??;
        if after.session_epoch != before.session_epoch {
            store.remove_sessions_of(id)?;
        }
        Ok(after)
    }

    /// Deletes a staff user and ends their sessions.
    pub fn delete_staff(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        now: SystemTime,
    ) -> Result<Staff, StaffError> {
        let before = store
            .staff(id)?
            .ok_or_else(|| StaffError::NotFound(format!("#{id}")))?;
        if before.role == Role::Admin && before.enabled && !other_admin(store, id)? {
            return Err(StaffError::LastAdmin(before.username));
        }
        let old = store
            .change(&By(actor, now), |tx| {
                let old = tx.delete_staff(id)?;
                Ok(changed(
                    AuditKind::Delete,
                    &old.username,
                    None,
                    Some(&old),
                    None,
                    old.clone(),
                ))
            })
            .map_err(map_store)??;
        store.remove_sessions_of(id)?;
        Ok(old)
    }

    /// Sets a new password. With `current` (a user changing their own), it must match;
    /// without it (an admin resetting someone's), the user must change it at next login.
    /// Every other session of the user ends; `keep` (the caller's own session, if any)
    /// survives, and loses its "change the password" restriction.
    #[allow(clippy::too_many_arguments)]
    pub fn set_password(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        current: Option<&str>,
        new: &str,
        keep: Option<&TokenHash>,
        now: SystemTime,
    ) -> Result<Strength, StaffError> {
        let before = store
            .staff(id)?
            .ok_or_else(|| StaffError::NotFound(format!("#{id}")))?;
        if let Some(cur) = current
            && !self.check_current_password(&before, cur, actor.source, unix_ms(now))?
        {
            let _ = store.append_audit(&failure(
                actor,
                now,
                AuditKind::Password,
                &before.username,
                "wrong current password".into(),
            ));
            return Err(StaffError::WrongCurrentPassword);
        }
        let strength = self
            .rules_for(store, &before)?
            .policy
            .check(new, &before.username)?;
        if self.verify_staff(&before, new)? {
            return Err(StaffError::SamePassword);
        }
        let hash = self.hash_for(&before.username, before.email.as_deref(), new)?;
        let now_ms = unix_ms(now);
        let by_admin = current.is_none();
        let (before_name, before_email) = (before.username.clone(), before.email.clone());
        store
            .change(&By(actor, now), |tx| {
                let before = load(tx, id)?;
                let mut s = before.clone();
                if s.username != before_name || s.email != before_email {
                    return Ok(Err(StaffError::ChangedMeanwhile));
                }
                s.password_hash = hash.clone();
                s.hash_format = HashFormat::Seasoned;
                s.password_changed_ms = now_ms;
                s.must_change_password = by_admin;
                s.session_epoch += 1;
                tx.put_staff(&s)?;
                if let Some(k) = keep
                    && let Some(mut rec) = tx.session(k)?
                    && rec.staff_id == id
                {
                    rec.epoch = s.session_epoch;
                    if let SessionScope::Setup { enrol_totp, .. } = rec.scope {
                        rec.scope = SessionScope::setup(enrol_totp, s.must_change_password);
                    }
                    tx.put_session(k, &rec)?;
                }
                Ok(changed(
                    AuditKind::Password,
                    &before.username,
                    Some(
                        if by_admin {
                            "password reset (must be changed at next login); other sessions revoked"
                        } else {
                            "password changed; other sessions revoked"
                        }
                        .into(),
                    ),
                    Some(&before),
                    Some(&s),
                    (),
                ))
            })
            .map_err(map_store)??;
        self.remove_other_sessions(store, id, keep)?;
        Ok(strength)
    }

    fn remove_other_sessions(
        &self,
        store: &Store,
        id: Id,
        keep: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        let doomed: Vec<TokenHash> = store
            .sessions()?
            .into_iter()
            .filter(|(k, s)| s.staff_id == id && Some(k) != keep)
            .map(|(k, _)| k)
            .collect();
        if !doomed.is_empty() {
            store.write(|tx| {
                for k in &doomed {
                    tx.remove_session(k)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Starts a TOTP enrolment for user `id` (a new secret, pending until a code confirms
    /// it). Refused when one is already enrolled: an admin resets it first.
    pub fn begin_totp(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        now: SystemTime,
    ) -> Result<Enrolment, StaffError> {
        let secret = totp::generate_secret()?;
        let s = store
            .change(&By(actor, now), |tx| {
                let before = load(tx, id)?;
                if before.totp_enrolled() {
                    return Ok(Err(StaffError::AlreadyEnrolled));
                }
                let mut s = before.clone();
                s.totp = Some(TotpState {
                    secret: secret.clone(),
                    enrolled: false,
                    last_step: 0,
                });
                tx.put_staff(&s)?;
                Ok(changed(
                    AuditKind::Totp,
                    &s.username,
                    Some("enrolment begun".into()),
                    Some(&before),
                    Some(&s),
                    s.clone(),
                ))
            })
            .map_err(map_store)??;
        let uri = totp::provisioning_uri(&secret, &s.username)?;
        let qr = totp::qr_terminal(&uri)?;
        Ok(Enrolment {
            staff: StaffView::from(&s),
            secret,
            uri,
            qr,
        })
    }

    /// Confirms a pending enrolment with a code from the app. `keep` (the caller's session)
    /// loses its "enrol TOTP" restriction. A wrong code is audited as a failure.
    pub fn confirm_totp(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        code: &str,
        keep: Option<&TokenHash>,
        now: SystemTime,
    ) -> Result<Staff, StaffError> {
        let secs = unix_ms(now) / 1000;
        let r = store
            .change(&By(actor, now), |tx| {
                let before = load(tx, id)?;
                let Some(t) = before.totp.as_ref().filter(|t| !t.enrolled) else {
                    return Ok(Err(StaffError::NotPending));
                };
                let step = match totp::verify(&t.secret, code, secs, t.last_step) {
                    Ok(step) => step,
                    Err(e) => return Ok(Err(StaffError::Totp(e))),
                };
                let mut s = before.clone();
                s.totp = Some(TotpState {
                    secret: t.secret.clone(),
                    enrolled: true,
                    last_step: step,
                });
                tx.put_staff(&s)?;
                if let Some(k) = keep
                    && let Some(mut rec) = tx.session(k)?
                    && rec.staff_id == id
                    && let SessionScope::Setup {
                        change_password, ..
                    } = rec.scope
                {
                    rec.scope = SessionScope::setup(false, change_password);
                    tx.put_session(k, &rec)?;
                }
                Ok(changed(
                    AuditKind::Totp,
                    &s.username,
                    Some("enrolment confirmed".into()),
                    Some(&before),
                    Some(&s),
                    s.clone(),
                ))
            })
            .map_err(map_store)?;
        if let Err(StaffError::Totp(e)) = &r
            && let Ok(Some(s)) = store.staff(id)
        {
            let _ = store.append_audit(&failure(
                actor,
                now,
                AuditKind::Totp,
                &s.username,
                format!("enrolment not confirmed: {e}"),
            ));
        }
        r
    }

    /// Removes a user's TOTP factor (lost phone) and ends their sessions. An admin then
    /// gets only a setup session until they enrol again.
    pub fn reset_totp(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        now: SystemTime,
    ) -> Result<Staff, StaffError> {
        let s = store
            .change(&By(actor, now), |tx| {
                let before = load(tx, id)?;
                let mut s = before.clone();
                s.totp = None;
                s.session_epoch += 1;
                tx.put_staff(&s)?;
                Ok(changed(
                    AuditKind::Totp,
                    &s.username,
                    Some("TOTP removed; sessions revoked".into()),
                    Some(&before),
                    Some(&s),
                    s.clone(),
                ))
            })
            .map_err(map_store)??;
        store.remove_sessions_of(id)?;
        Ok(s)
    }

    /// Refuses email codes without an address, or for a role the policy does not allow.
    fn check_email_codes(
        &self,
        role: Role,
        email: Option<&str>,
        on: bool,
    ) -> Result<(), StaffError> {
        if !on {
            return Ok(());
        }
        if email.is_none() {
            return Err(StaffError::EmailCodes(
                "email codes need an email address".into(),
            ));
        }
        if !self.email.allowed(role) {
            return Err(StaffError::EmailCodes(format!(
                "the {role} role may not use email codes ([management.email_codes] roles)"
            )));
        }
        Ok(())
    }

    /// A user sets their own email address (`Some(None)` removes it) and/or turns email codes
    /// on or off, proving who they are with their password (checked and throttled like a
    /// password change). The password also re-seasons the hash for the new address, so the
    /// change needs no admin and no password reset.
    #[allow(clippy::too_many_arguments)]
    pub fn set_own_email(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        password: &str,
        email: Option<Option<&str>>,
        email_codes: Option<bool>,
        now: SystemTime,
    ) -> Result<Staff, StaffError> {
        let email = email.map(email_of).transpose()?;
        let before = store
            .staff(id)?
            .ok_or_else(|| StaffError::NotFound(format!("#{id}")))?;
        if !self.check_current_password(&before, password, actor.source, unix_ms(now))? {
            let _ = store.append_audit(&failure(
                actor,
                now,
                AuditKind::Update,
                &before.username,
                "email change: wrong password".into(),
            ));
            return Err(StaffError::WrongCurrentPassword);
        }
        let new_email = email.clone().unwrap_or_else(|| before.email.clone());
        self.check_email_codes(
            before.role,
            new_email.as_deref(),
            email_codes.unwrap_or(before.email_codes && new_email.is_some()),
        )?;
        let hash = self.hash_for(&before.username, new_email.as_deref(), password)?;
        store
            .change(&By(actor, now), |tx| {
                let cur = load(tx, id)?;
                if cur.password_hash != before.password_hash || cur.username != before.username {
                    return Ok(Err(StaffError::ChangedMeanwhile));
                }
                let mut s = cur.clone();
                s.email = new_email.clone();
                s.email_codes = email_codes.unwrap_or(cur.email_codes) && s.email.is_some();
                s.password_hash = hash.clone();
                s.hash_format = HashFormat::Seasoned;
                tx.put_staff(&s)?;
                Ok(changed(
                    AuditKind::Update,
                    &s.username,
                    Some("own email or second factor changed; password hash re-seasoned".into()),
                    Some(&cur),
                    Some(&s),
                    s.clone(),
                ))
            })
            .map_err(map_store)?
    }

    /// Ends every session of user `id` ("log out everywhere", or an admin's decision).
    pub fn revoke_sessions(
        &self,
        store: &Store,
        actor: &Actor,
        id: Id,
        now: SystemTime,
    ) -> Result<usize, StaffError> {
        store
            .change(&By(actor, now), |tx| {
                let before = load(tx, id)?;
                let mut s = before.clone();
                s.session_epoch += 1;
                tx.put_staff(&s)?;
                Ok(changed(
                    AuditKind::Revoke,
                    &s.username,
                    Some("all sessions revoked".into()),
                    None,
                    None,
                    (),
                ))
            })
            .map_err(map_store)??;
        Ok(store.remove_sessions_of(id)?)
    }
}
