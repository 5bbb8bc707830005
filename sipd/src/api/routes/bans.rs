//! Bans (R list, O add/remove). The IDS's own bans live only in the data plane (pinned
//! maps survive a restart with XDP); bans made here are also stored and applied again at
//! start until they expire.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::json;
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::mgmt::Action;
use crate::store::ManualBan;
use relay_user::{BanInfo, BanReason};

/// Ten years: "permanent" is `duration_secs: null`.
const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

pub fn reason_name(code: u32) -> &'static str {
    match BanReason::from_u32(code) {
        Some(BanReason::Manual) => "manual",
        Some(BanReason::Flood) => "flood",
        Some(BanReason::Scanner) => "scanner",
        Some(BanReason::BruteForce) => "brute-force",
        Some(BanReason::Enumeration) => "enumeration",
        None => "unknown",
    }
}

#[derive(Debug, Serialize)]
pub struct BanView {
    pub addr: IpAddr,
    /// Why: `manual`, `flood`, `scanner`, `brute-force`, `enumeration`.
    pub reason: &'static str,
    /// `null`: permanent.
    pub remaining_secs: Option<u64>,
    pub expired: bool,
    /// The operator's note, for bans made through the API.
    pub note: Option<String>,
    /// Stored, so applied again after a restart.
    pub persistent: bool,
}

fn view(b: &BanInfo, stored: Option<&ManualBan>) -> BanView {
    BanView {
        addr: b.addr,
        reason: reason_name(b.reason_code),
        remaining_secs: b.remaining.map(|d| d.as_secs()),
        expired: b.expired,
        note: stored.and_then(|s| s.reason.clone()),
        persistent: stored.is_some(),
    }
}

pub async fn list(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<BanView>>> {
    c.permit(Action::View)?;
    blocking(&st, |s| {
        let stored: Vec<ManualBan> = s.store().manual_bans().into_iter().flatten().collect();
        let bans = s
            .dp()
            .ban_list()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Json(
            bans.iter()
                .map(|b| view(b, stored.iter().find(|m| m.addr == b.addr)))
                .collect(),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanIn {
    pub addr: String,
    #[serde(default)]
    pub duration_secs: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

pub async fn add(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<BanIn>,
) -> ApiResult<(StatusCode, Json<BanView>)> {
    c.permit(Action::Operate)?;
    let addr: IpAddr = b
        .addr
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid("addr", format!("{:?} is not an IP address", b.addr)))?;
    let addr = crate::store::canonical_ip(addr);
    if let Some(d) = b.duration_secs
        && !(1..=MAX_BAN_SECS).contains(&d)
    {
        return Err(ApiError::invalid(
            "duration_secs",
            format!("1..={MAX_BAN_SECS}, or null for permanent"),
        ));
    }
    if let Some(r) = &b.reason
        && (r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "reason",
            "at most 200 characters without control characters",
        ));
    }
    let by = c.actor();
    blocking(&st, move |s| {
        let duration = b.duration_secs.map(Duration::from_secs);
        let (info, ban) = s.firewall().ban_add(&by, addr, duration, b.reason)?;
        Ok((StatusCode::CREATED, Json(view(&info, Some(&ban)))))
    })
    .await
}

pub async fn remove(
    c: Caller,
    Extract(st): Extract<State>,
    Path(addr): Path<String>,
) -> ApiResult<StatusCode> {
    c.permit(Action::Operate)?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| ApiError::not_found(format!("{addr:?} is not an IP address")))?;
    let ip = crate::store::canonical_ip(ip);
    let by = c.actor();
    blocking(&st, move |s| {
        let live = s
            .dp()
            .ban_get(ip)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let stored = s
            .store()
            .manual_bans()
            .into_iter()
            .flatten()
            .find(|b| b.addr == ip);
        if live.is_none() && stored.is_none() {
            return Err(ApiError::not_found(format!("{ip} is not banned")));
        }
        let before = match (&stored, &live) {
            (Some(m), _) => json(m),
            (None, Some(l)) => json(&view(l, None)),
            (None, None) => None,
        };
        s.firewall().ban_remove(&by, ip, before)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
