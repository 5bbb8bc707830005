//! Staff users (A), through `mgmt`'s functions (each writes its own audit entry).

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::path_id;
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::mgmt::{Actor, NewStaff, StaffUpdate, StaffView, Strength};
use crate::store::{MAX_ALLOWED_HOSTS, Role};

fn actor(c: &Caller) -> Actor {
    Actor::staff(&c.authz.staff, c.ip)
}

/// A field that may be absent (unchanged), `null` (removed) or a value.
pub(crate) fn some_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn hosts(v: Vec<String>) -> ApiResult<Vec<IpNet>> {
    if v.len() > MAX_ALLOWED_HOSTS {
        return Err(ApiError::invalid(
            "allowed_hosts",
            format!("at most {MAX_ALLOWED_HOSTS} entries"),
        ));
    }
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    ApiError::invalid(
                        format!("allowed_hosts[{i}]"),
                        format!("{s:?} is not an address or CIDR"),
                    )
                })
        })
        .collect()
}

/// `GET /api/staff` (ViewStaff): every readable staff user, without secrets.
pub async fn list(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<StaffView>>> {
    blocking(&st, |s| {
        Ok(Json(
            s.store()
                .staff_list()
                .iter()
                .flatten()
                .map(StaffView::from)
                .collect(),
        ))
    })
    .await
}

/// `GET /api/staff/{id}` (ViewStaff).
pub async fn get_one(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<StaffView>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let u = s
            .store()
            .staff(id)?
            .ok_or_else(|| ApiError::not_found(format!("staff user #{id} not found")))?;
        Ok(Json(StaffView::from(&u)))
    })
    .await
}

/// The body of `POST /api/staff`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffIn {
    /// Unique among staff (409 if taken).
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// The first password (at most 256 characters, checked against the policy).
    pub password: String,
    /// Sources the user may use the API from (addresses or CIDRs, at most [`MAX_ALLOWED_HOSTS`]);
    /// empty: any.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Default true: a password an admin chose must be changed at first login.
    #[serde(default)]
    pub must_change_password: Option<bool>,
    /// The account of a `customer` user (required for one, refused for staff).
    #[serde(default)]
    pub account: Option<crate::store::Id>,
    /// Where email codes go (a valid address; the domain is lowercased).
    #[serde(default)]
    pub email: Option<String>,
    /// The second factor is an emailed code (needs `email` and a role the policy allows).
    #[serde(default)]
    pub email_codes: bool,
}

/// The answer to `POST /api/staff`.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The user as stored.
    pub staff: StaffView,
    /// The estimated strength of the password given.
    pub strength: Strength,
}

/// `POST /api/staff` (ManageStaff): creates a staff user, or with `"role": "customer"` and
/// `account` a customer user of that account (its password meets the account's template),
/// audited; 201 with the password's strength estimate.
pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<StaffIn>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let allowed_hosts = hosts(b.allowed_hosts)?;
    if b.password.chars().count() > 256 {
        return Err(ApiError::invalid("password", "at most 256 characters"));
    }
    blocking(&st, move |s| {
        if s.store().staff_by_username(&b.username)?.is_some() {
            return Err(ApiError::conflict(format!(
                "a staff user {:?} exists already",
                b.username
            )));
        }
        let new = NewStaff {
            username: b.username,
            role: b.role,
            password: b.password,
            allowed_hosts,
            must_change_password: b.must_change_password.unwrap_or(true),
            email: b.email,
            email_codes: b.email_codes,
        };
        let (u, strength) = match (b.role, b.account) {
            (Role::Customer, Some(a)) => {
                if s.store().account(a)?.is_none() {
                    return Err(ApiError::invalid(
                        "account",
                        format!("account #{a} not found"),
                    ));
                }
                s.auth
                    .create_customer(s.store(), &actor(&c), &new, a, SystemTime::now())?
            }
            (Role::Customer, None) => {
                return Err(ApiError::invalid(
                    "account",
                    "a customer user needs the id of its account",
                ));
            }
            (_, Some(_)) => {
                return Err(ApiError::invalid(
                    "account",
                    "only a customer user belongs to an account",
                ));
            }
            (_, None) => s
                .auth
                .create_staff(s.store(), &actor(&c), &new, SystemTime::now())?,
        };
        Ok((
            StatusCode::CREATED,
            Json(Created {
                staff: StaffView::from(&u),
                strength,
            }),
        ))
    })
    .await
}

/// The body of `PUT /api/staff/{id}`: only the fields given change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffPatch {
    /// A new unique username.
    #[serde(default)]
    pub username: Option<String>,
    /// A new role (ends the user's sessions).
    #[serde(default)]
    pub role: Option<Role>,
    /// `false` disables the user (ends their sessions); the last enabled admin cannot be disabled.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New allowed sources (at most [`MAX_ALLOWED_HOSTS`]); a narrowing ends the user's sessions.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// A new email address; `null` removes it. Changing what seasons the password hash (the
    /// email, or the username of a user without one) needs `password` too.
    #[serde(default, deserialize_with = "some_or_null")]
    pub email: Option<Option<String>>,
    /// Turn email codes on or off.
    #[serde(default)]
    pub email_codes: Option<bool>,
    /// A new password (at most 256 characters, checked against the policy): an admin's reset
    /// (must be changed at next login; sessions end).
    #[serde(default)]
    pub password: Option<String>,
}

/// `PUT /api/staff/{id}` (ManageStaff): changes username, role, enabled or allowed hosts, audited.
pub async fn update(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<StaffPatch>,
) -> ApiResult<Json<StaffView>> {
    let id = path_id(&id)?;
    let allowed_hosts = b.allowed_hosts.map(hosts).transpose()?;
    if b.password.as_ref().is_some_and(|p| p.chars().count() > 256) {
        return Err(ApiError::invalid("password", "at most 256 characters"));
    }
    blocking(&st, move |s| {
        let u = s.auth.update_staff(
            s.store(),
            &actor(&c),
            id,
            &StaffUpdate {
                username: b.username,
                role: b.role,
                enabled: b.enabled,
                allowed_hosts,
                email: b.email,
                email_codes: b.email_codes,
                password: b.password,
            },
            SystemTime::now(),
        )?;
        Ok(Json(StaffView::from(&u)))
    })
    .await
}

/// `DELETE /api/staff/{id}` (ManageStaff): deletes the user and ends their sessions; callers cannot
/// delete themselves, nor the last admin (409); 204.
pub async fn delete(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    if id == c.authz.staff.id {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    blocking(&st, move |s| {
        s.auth
            .delete_staff(s.store(), &actor(&c), id, SystemTime::now())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `POST /api/staff/{id}/revoke` (ManageStaff): ends every session of the user; 204.
pub async fn revoke(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        s.auth
            .revoke_sessions(s.store(), &actor(&c), id, SystemTime::now())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The body of `POST /api/staff/{id}/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    /// The new password (at most 256 characters, checked against the policy).
    pub password: String,
}

/// `POST /api/staff/{id}/password` (ManageStaff): an admin's reset: sets the password, which the
/// user must change at next login, and ends the user's sessions.
pub async fn set_password(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PasswordIn>,
) -> ApiResult<Json<super::session::StrengthOut>> {
    let id = path_id(&id)?;
    if b.password.chars().count() > 256 {
        return Err(ApiError::invalid("password", "at most 256 characters"));
    }
    blocking(&st, move |s| {
        let strength = s.auth.set_password(
            s.store(),
            &actor(&c),
            id,
            None,
            &b.password,
            None,
            SystemTime::now(),
        )?;
        Ok(Json(super::session::StrengthOut { strength }))
    })
    .await
}

/// `POST /api/staff/{id}/totp/reset` (ManageStaff): removes the user's TOTP factor (lost phone) and
/// ends their sessions; an admin then gets only a setup session until they enrol again.
pub async fn reset_totp(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<StaffView>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let u = s
            .auth
            .reset_totp(s.store(), &actor(&c), id, SystemTime::now())?;
        Ok(Json(StaffView::from(&u)))
    })
    .await
}
