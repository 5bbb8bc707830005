//! Login, logout and the caller's own account (password, TOTP).

use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::mgmt::{Action, Actor, LoginAttempt, Strength};
use crate::store::{Id, Role, SessionScope};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub totp: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LoginOut {
    pub token: String,
    pub expires_ms: u64,
    pub role: Role,
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
    blocking(&st, move |s| {
        let session = s.auth.login(
            s.store(),
            SystemTime::now(),
            &LoginAttempt {
                username: &b.username,
                password: &b.password,
                totp_code: b.totp.as_deref(),
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

pub async fn logout(
    c: Caller,
    Extract(st): Extract<State>,
    parts: axum::http::HeaderMap,
) -> ApiResult<StatusCode> {
    c.permit(Action::OwnSession)?;
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

pub async fn logout_all(c: Caller, Extract(st): Extract<State>) -> ApiResult<StatusCode> {
    c.permit(Action::OwnSession)?;
    blocking(&st, move |s| {
        let actor = Actor::staff(&c.authz.staff, c.ip);
        s.auth
            .revoke_sessions(s.store(), &actor, c.authz.staff.id, SystemTime::now())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Debug, Serialize)]
pub struct Me {
    pub id: Id,
    pub username: String,
    pub role: Role,
    pub totp_enrolled: bool,
    pub setup_only: bool,
    pub must: Vec<&'static str>,
    pub allowed_hosts: Vec<ipnet::IpNet>,
    pub expires_ms: u64,
    pub source: std::net::IpAddr,
}

pub async fn me(c: Caller) -> ApiResult<Json<Me>> {
    c.permit(Action::OwnSession)?;
    let s = &c.authz.staff;
    Ok(Json(Me {
        id: s.id,
        username: s.username.clone(),
        role: s.role,
        totp_enrolled: s.totp_enrolled(),
        setup_only: c.authz.session.scope != SessionScope::Full,
        must: must(c.authz.session.scope),
        allowed_hosts: s.allowed_hosts.clone(),
        expires_ms: c.authz.session.expires_ms,
        source: crate::store::canonical_ip(c.ip),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    pub current: String,
    pub new: String,
}

#[derive(Debug, Serialize)]
pub struct StrengthOut {
    pub strength: Strength,
}

pub async fn change_password(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<PasswordIn>,
) -> ApiResult<Json<StrengthOut>> {
    c.permit(Action::OwnPassword)?;
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

#[derive(Debug, Serialize)]
pub struct EnrolOut {
    pub otpauth_uri: String,
    /// The URI as a terminal QR code (Unicode half blocks).
    pub qr: String,
    /// For typing into an app by hand.
    pub secret: String,
}

pub async fn begin_totp(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<EnrolOut>> {
    c.permit(Action::OwnTotp)?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeIn {
    pub code: String,
}

pub async fn confirm_totp(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<CodeIn>,
) -> ApiResult<StatusCode> {
    c.permit(Action::OwnTotp)?;
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
