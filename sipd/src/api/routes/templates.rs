//! Password templates of an account's customer logins (A: set by admins).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::Serialize;

use super::{Then, change, json, path_id};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::mgmt::LoginRules;
use crate::store::{AuditKind, Change, Id, LoginTemplate, StoreError};

/// A template as the API shows it: what is stored, and the rules in effect with the system
/// default filled in.
#[derive(Debug, Serialize)]
pub struct TemplateView {
    /// The stored template (`null` fields: the system default's); `None` when the account
    /// has none.
    pub template: Option<LoginTemplate>,
    /// Minimum length in effect.
    pub min_length: usize,
    /// Character classes required in effect.
    pub min_classes: u8,
    /// Days before a password expires in effect; 0 = never.
    pub max_age_days: u32,
    /// Whether a second factor is required in effect.
    pub require_second_factor: bool,
}

fn view(t: Option<LoginTemplate>, r: LoginRules) -> TemplateView {
    TemplateView {
        template: t,
        min_length: r.policy.min_length,
        min_classes: r.policy.min_classes,
        max_age_days: r.policy.max_age_days,
        require_second_factor: r.second_factor,
    }
}

fn account_name(s: &crate::api::ApiState, id: Id) -> ApiResult<String> {
    Ok(s.store()
        .account(id)?
        .ok_or_else(|| ApiError::not_found(format!("account #{id} not found")))?
        .name)
}

fn target(name: &str) -> String {
    format!("login-template:{name}")
}

/// `GET /api/accounts/{id}/login-template` (ViewStaff): the account's template and the rules
/// in effect.
pub async fn get_one(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        account_name(s, id)?;
        let t = s.store().login_template(id)?;
        let r = s.auth.rules_for_account(s.store(), Some(id))?;
        Ok(Json(view(t, r)))
    })
    .await
}

/// `PUT /api/accounts/{id}/login-template` (ManageStaff): sets (replaces) the template, audited;
/// applies to the next password set and the next login of the account's users.
pub async fn put(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<LoginTemplate>,
) -> ApiResult<Json<TemplateView>> {
    let id = path_id(&id)?;
    let t = LoginTemplate {
        account_id: id,
        ..body
    };
    t.validate().map_err(|e| match e {
        StoreError::Invalid { reason, .. } => {
            let field = reason
                .split_whitespace()
                .next()
                .unwrap_or("body")
                .to_owned();
            ApiError::invalid(field, reason)
        }
        e => ApiError::from(e),
    })?;
    let stored = change(
        &st,
        &c,
        Then::Nothing,
        move |s| account_name(s, id),
        move |tx, name: &String| {
            let before = tx.login_template(id)?;
            tx.put_login_template(&t)?;
            let ch = Change::new(AuditKind::Update, target(name), t.clone());
            let ch = match before {
                Some(b) => ch.before(&b),
                None => ch,
            };
            Ok(Ok(ch.after(&t)))
        },
    )
    .await?;
    let r = blocking(&st, move |s| {
        Ok(s.auth.rules_for_account(s.store(), Some(id))?)
    })
    .await?;
    Ok(Json(view(Some(stored), r)))
}

/// `DELETE /api/accounts/{id}/login-template` (ManageStaff): back to the system default,
/// audited; 204 (also when there was none).
pub async fn delete(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    change(
        &st,
        &c,
        Then::Nothing,
        move |s| account_name(s, id),
        move |tx, name: &String| {
            let before = tx.delete_login_template(id)?;
            let ch = Change::new(AuditKind::Delete, target(name), ());
            Ok(Ok(match before.as_ref().and_then(json) {
                Some(b) => ch.before(&b),
                None => ch,
            }))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
