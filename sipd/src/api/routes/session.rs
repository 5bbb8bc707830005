//! Login, logout and the caller's own account (password, TOTP).

use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::mgmt::{Actor, LoginAttempt, Strength};
use crate::store::{Id, Role, SessionScope};

/// The body of `POST /api/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    /// 1 to 64 bytes.
    pub username: String,
    /// 1 to 256 characters.
    pub password: String,
    /// The current 6-digit code, required once the user has TOTP enrolled.
    #[serde(default)]
    pub totp: Option<String>,
    /// The code mailed at the previous attempt (`email_code_sent`), for users whose second
    /// factor is email.
    #[serde(default)]
    pub email_code: Option<String>,
}

/// The answer to a successful login.
#[derive(Debug, Serialize)]
pub struct LoginOut {
    /// The bearer token for every later request; shown once, stored only as its hash.
    pub token: String,
    /// When the session ends, Unix milliseconds.
    pub expires_ms: u64,
    /// The user's role, which decides what the token may do.
    pub role: Role,
    /// The session may only do the steps in `must` until they are done.
    pub setup_only: bool,
    /// What a setup session must do first: `enrol_totp`, `change_password`.
    pub must: Vec<&'static str>,
}

fn must(scope: SessionScope) -> Vec<&'static str> {
    match scope {
        SessionScope::Full => Vec::new(),
        SessionScope::Setup {
            enrol_totp,
            change_password,
        } => [
            enrol_totp.then_some("enrol_totp"),
            change_password.then_some("change_password"),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

/// `POST /api/login` (no token): checks the password and TOTP code with the lock-out after failures
/// (429 with `Retry-After`), audits the attempt, and opens a session.
pub async fn login(
    Extract(st): Extract<State>,
    ConnectInfo(peer): ConnectInfo<crate::api::PeerAddr>,
    JsonBody(b): JsonBody<LoginIn>,
) -> ApiResult<Json<LoginOut>> {
    if b.username.is_empty() || b.username.len() > 64 {
        return Err(ApiError::invalid("username", "1-64 characters"));
    }
    if b.password.is_empty() || b.password.chars().count() > 256 {
        return Err(ApiError::invalid("password", "1-256 characters"));
    }
    if b.totp.as_ref().is_some_and(|t| t.len() > 16) {
        return Err(ApiError::invalid("totp", "a 6-digit code"));
    }
    if b.email_code.as_ref().is_some_and(|t| t.len() > 16) {
        return Err(ApiError::invalid(
            "email_code",
            "the digits of the mailed code",
        ));
    }
    blocking(&st, move |s| {
        let session = s.auth.login(
            s.store(),
            SystemTime::now(),
            &LoginAttempt {
                username: &b.username,
                password: &b.password,
                totp_code: b.totp.as_deref(),
                email_code: b.email_code.as_deref(),
                source: peer.0.ip(),
            },
        )?;
        Ok(Json(LoginOut {
            token: session.token,
            expires_ms: session.info.expires_ms,
            role: session.staff.role,
            setup_only: session.info.scope != SessionScope::Full,
            must: must(session.info.scope),
        }))
    })
    .await
}

/// `POST /api/logout`: ends the caller's own session; 204.
pub async fn logout(
    c: Caller,
    Extract(st): Extract<State>,
    parts: axum::http::HeaderMap,
) -> ApiResult<StatusCode> {
    let token = parts
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.trim().to_owned())
        .unwrap_or_default();
    blocking(&st, move |s| {
        s.auth
            .logout(s.store(), &token, c.ip, SystemTime::now())
            .map_err(ApiError::from)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `POST /api/logout/all`: ends every session of the caller's user, this one included; 204.
pub async fn logout_all(c: Caller, Extract(st): Extract<State>) -> ApiResult<StatusCode> {
    blocking(&st, move |s| {
        let actor = Actor::staff(&c.authz.staff, c.ip);
        s.auth
            .revoke_sessions(s.store(), &actor, c.authz.staff.id, SystemTime::now())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The caller as `GET /api/me` shows them.
#[derive(Debug, Serialize)]
pub struct Me {
    /// The staff id.
    pub id: Id,
    /// The staff username.
    pub username: String,
    /// The role, which decides what the caller may do.
    pub role: Role,
    /// Whether a TOTP factor is confirmed.
    pub totp_enrolled: bool,
    /// Where email codes go; `null`: none.
    pub email: Option<String>,
    /// The second factor is an emailed code (when no TOTP factor is enrolled).
    pub email_codes: bool,
    /// The session may only do the steps in `must` until they are done.
    pub setup_only: bool,
    /// What a setup session must do first: `enrol_totp`, `change_password`.
    pub must: Vec<&'static str>,
    /// Sources the user may use the API from; empty: any source the firewall lets through.
    pub allowed_hosts: Vec<ipnet::IpNet>,
    /// When this session ends, Unix milliseconds.
    pub expires_ms: u64,
    /// The address the request came from, as sipd sees it (IPv4-mapped shown as IPv4).
    pub source: std::net::IpAddr,
    /// The account a `customer` user sees (only its own); absent for staff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Id>,
}

/// `GET /api/me`: who the token belongs to and what its session may do.
pub async fn me(c: Caller) -> ApiResult<Json<Me>> {
    let s = &c.authz.staff;
    Ok(Json(Me {
        id: s.id,
        username: s.username.clone(),
        role: s.role,
        totp_enrolled: s.totp_enrolled(),
        email: s.email.clone(),
        email_codes: s.email_codes,
        setup_only: c.authz.session.scope != SessionScope::Full,
        must: must(c.authz.session.scope),
        allowed_hosts: s.allowed_hosts.clone(),
        expires_ms: c.authz.session.expires_ms,
        source: crate::store::canonical_ip(c.ip),
        account: s.customer_of(),
    }))
}

/// The body of `POST /api/me/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    /// The password now, which must match.
    pub current: String,
    /// The new password, at most 256 characters, checked against the password policy.
    pub new: String,
}

/// The answer to a password change.
#[derive(Debug, Serialize)]
pub struct StrengthOut {
    /// The new password's estimated strength.
    pub strength: Strength,
}

/// `POST /api/me/password`: changes the caller's password (the current one must match, the new one
/// meet the policy); every other session of the user ends, this one stays and loses its "change the
/// password" restriction.
pub async fn change_password(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<PasswordIn>,
) -> ApiResult<Json<StrengthOut>> {
    if b.new.chars().count() > 256 {
        return Err(ApiError::invalid("new", "at most 256 characters"));
    }
    blocking(&st, move |s| {
        let actor = Actor::staff(&c.authz.staff, c.ip);
        let strength = s
            .auth
            .set_password(
                s.store(),
                &actor,
                c.authz.staff.id,
                Some(&b.current),
                &b.new,
                Some(&c.authz.token_hash),
                SystemTime::now(),
            )
            .map_err(|e| match ApiError::from(e) {
                // The policy is about the new password.
                e if e.field.as_deref() == Some("password") => ApiError {
                    field: Some("new".into()),
                    ..e
                },
                e => e,
            })?;
        Ok(Json(StrengthOut { strength }))
    })
    .await
}

/// A TOTP enrolment to confirm with [`confirm_totp`].
#[derive(Debug, Serialize)]
pub struct EnrolOut {
    /// The `otpauth://` URI authenticator apps import.
    pub otpauth_uri: String,
    /// The URI as a terminal QR code (Unicode half blocks).
    pub qr: String,
    /// For typing into an app by hand.
    pub secret: String,
}

/// `POST /api/me/totp`: starts a TOTP enrolment (a new secret, pending until confirmed); refused
/// (409) when one is already enrolled.
pub async fn begin_totp(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<EnrolOut>> {
    blocking(&st, move |s| {
        let actor = Actor::staff(&c.authz.staff, c.ip);
        let e = s
            .auth
            .begin_totp(s.store(), &actor, c.authz.staff.id, SystemTime::now())?;
        Ok(Json(EnrolOut {
            otpauth_uri: e.uri,
            qr: e.qr,
            secret: e.secret,
        }))
    })
    .await
}

/// The body of `POST /api/me/totp/confirm`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeIn {
    /// A current code from the app.
    pub code: String,
}

/// `POST /api/me/totp/confirm`: confirms the pending enrolment with a code; the session loses its
/// "enrol TOTP" restriction; a wrong code is audited as a failure.
pub async fn confirm_totp(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<CodeIn>,
) -> ApiResult<StatusCode> {
    blocking(&st, move |s| {
        let actor = Actor::staff(&c.authz.staff, c.ip);
        s.auth.confirm_totp(
            s.store(),
            &actor,
            c.authz.staff.id,
            &b.code,
            Some(&c.authz.token_hash),
            SystemTime::now(),
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The body of `PUT /api/me/email`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailIn {
    /// The caller's password: proves who they are and re-seasons the hash for the new address.
    pub password: String,
    /// The new address; `null` removes it (and turns email codes off); absent: unchanged.
    #[serde(default, deserialize_with = "crate::api::routes::staff::some_or_null")]
    pub email: Option<Option<String>>,
    /// Use emailed codes as the second factor (needs an address and a role the policy allows).
    #[serde(default)]
    pub email_codes: Option<bool>,
}

/// `PUT /api/me/email`: the caller sets their email address and/or email codes, with their
/// password (checked and throttled like a password change; a wrong one is audited).
pub async fn set_email(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<EmailIn>,
) -> ApiResult<Json<crate::mgmt::StaffView>> {
    if b.password.is_empty() || b.password.chars().count() > 256 {
        return Err(ApiError::invalid("password", "1-256 characters"));
    }
    blocking(&st, move |s| {
        let actor = Actor::staff(&c.authz.staff, c.ip);
        let u = s
            .auth
            .set_own_email(
                s.store(),
                &actor,
                c.authz.staff.id,
                &b.password,
                b.email.as_ref().map(|e| e.as_deref()),
                b.email_codes,
                SystemTime::now(),
            )
            .map_err(|e| match ApiError::from(e) {
                e if e.field.as_deref() == Some("current") => ApiError {
                    field: Some("password".into()),
                    ..e
                },
                e => e,
            })?;
        Ok(Json(crate::mgmt::StaffView::from(&u)))
    })
    .await
}
