//! The data plane's firewall per service (R view, A change: `Action::System`, as it can lock
//! everyone out). The changes themselves (stored with their audit entry, then applied) are
//! [`crate::firewall`]'s; this is their HTTP face.
//!
//! A service with a non-empty allow list is restricted (only those sources reach it); the
//! management service always is (`management_allow` is never empty).

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;

use super::path_id;
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::firewall::changes::{AllowEntry, ChangeError, DenyView, FirewallView};
use crate::firewall::services::Named;

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Conflict(m) => ApiError::conflict(m),
            ChangeError::NotFound(m) => ApiError::not_found(m),
            ChangeError::Store(e) => ApiError::from(e),
            ChangeError::NotApplied(m) => ApiError::internal(m),
            ChangeError::DataPlane(e) => ApiError::internal(e.to_string()),
        }
    }
}

/// The predefined services and those `[[firewall.services]]` adds; any other name is an error
/// naming them all.
fn service(st: &State, name: &str) -> ApiResult<Named> {
    let fw = st.firewall();
    fw.service(name).ok_or_else(|| {
        ApiError::invalid(
            "service",
            format!(
                "unknown service {name:?} (one of {})",
                fw.service_names().join(", ")
            ),
        )
    })
}

fn parse_net(field: &str, s: &str) -> ApiResult<IpNet> {
    let s = s.trim();
    let net = s
        .parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| ApiError::invalid(field, format!("{s:?} is not an address or CIDR")))?;
    Ok(net.trunc())
}

/// `GET /api/firewall` (View): each service with its allow list, and the deny list, each entry
/// marked as from the config or the API.
pub async fn show(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<FirewallView>> {
    blocking(&st, |s| Ok(Json(s.firewall().view()?))).await
}

/// The body of `POST` and `DELETE /api/firewall/allow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowIn {
    /// The service's name: a predefined one (`sip`, `management`, `ssh`, ...) or one of
    /// `[[firewall.services]]`.
    pub service: String,
    /// An address or a CIDR (host bits are cleared).
    pub cidr: String,
}

/// `POST /api/firewall/allow` (System): adds a source to a service's allow list, which restricts
/// the service to its list; stored and audited, then programmed into the data plane; 201.
pub async fn allow_add(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<AllowIn>,
) -> ApiResult<(StatusCode, Json<AllowEntry>)> {
    let svc = service(&st, &b.service)?;
    let net = parse_net("cidr", &b.cidr)?;
    let by = c.actor();
    blocking(&st, move |s| {
        let entry = s.firewall().allow_add(&by, &svc, net)?;
        Ok((StatusCode::CREATED, Json(entry)))
    })
    .await
}

/// `DELETE /api/firewall/allow` (System): removes an API-added entry (409 for one from `sbc.toml`,
/// and for one whose removal would lock the caller out of the management API); 204.
pub async fn allow_remove(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<AllowIn>,
) -> ApiResult<StatusCode> {
    let svc = service(&st, &b.service)?;
    let net = parse_net("cidr", &b.cidr)?;
    let by = c.actor();
    blocking(&st, move |s| {
        s.firewall().allow_remove(&by, &svc, net)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The body of `POST /api/firewall/deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyIn {
    /// An address or a CIDR (host bits are cleared); `0.0.0.0/0` and `::/0` are refused.
    pub cidr: String,
}

/// `POST /api/firewall/deny` (System): drops every packet from `cidr` in the data plane; refused
/// (409) when it contains the caller's own address; stored and audited; 201 with the entry's id.
pub async fn deny_add(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<DenyIn>,
) -> ApiResult<(StatusCode, Json<DenyView>)> {
    let net = parse_net("cidr", &b.cidr)?;
    if net.prefix_len() == 0 {
        return Err(ApiError::invalid(
            "cidr",
            format!("denying {net} would drop everything"),
        ));
    }
    let by = c.actor();
    blocking(&st, move |s| {
        let d = s.firewall().deny_add(&by, net)?;
        Ok((
            StatusCode::CREATED,
            Json(DenyView {
                cidr: net.to_string(),
                id: Some(d.id),
                origin: "api",
            }),
        ))
    })
    .await
}

/// `DELETE /api/firewall/deny/{id}` (System): removes the deny entry `id`; 204.
pub async fn deny_remove(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    let by = c.actor();
    blocking(&st, move |s| {
        s.firewall().deny_remove(&by, id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
