//! Bans (R list, O add/remove), of prefixes: the IDS bans an offender as its /32 (IPv4) or /64
//! (IPv6) by default and a range once enough of it offended; operators ban any prefix. The
//! list is sipd's own table (bounded; see `firewall::book`); operators' bans are also stored
//! and applied again at start until they expire.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::json;
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::firewall::BanView;
use relay_user::Cidr;

/// Ten years: "permanent" is `duration_secs: null`.
const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

/// A prefix as an operator writes it: an address (its host prefix) or a CIDR without host
/// bits set.
fn parse_prefix(field: &str, s: &str) -> Result<Cidr, ApiError> {
    let s = s.trim();
    let c: Cidr = s
        .parse()
        .map_err(|e| ApiError::invalid(field, format!("{s:?} is not an address or prefix: {e}")))?;
    if let Some((a, _)) = s.split_once('/') {
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| ApiError::invalid(field, format!("{s:?} is not a prefix")))?;
        if Cidr::host(addr).addr() != c.addr() {
            return Err(ApiError::invalid(
                field,
                format!("{s} has host bits set; did you mean {c}?"),
            ));
        }
    }
    Ok(c)
}

/// `GET /api/bans` (View): every ban in sipd's table, the IDS's and operators' alike.
pub async fn list(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<BanView>>> {
    blocking(&st, |s| Ok(Json(s.firewall().ban_views()))).await
}

/// The body of `POST /api/bans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanIn {
    /// An address or a prefix (`prefix` is the same field under its new name).
    #[serde(alias = "prefix")]
    pub addr: String,
    /// Seconds until the ban lifts, 1 up to ten years; `null` or absent: permanent.
    #[serde(default)]
    pub duration_secs: Option<u64>,
    /// Why, shown in the list and the audit entry: at most 200 characters, no control characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/bans` (Operate): bans an address (its host prefix) or a prefix without host bits,
/// stored so it is applied again at start, audited; 201 with the ban.
pub async fn add(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<BanIn>,
) -> ApiResult<(StatusCode, Json<BanView>)> {
    let prefix = parse_prefix("addr", &b.addr)?;
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
        let v = s.firewall().ban_add(&by, prefix, duration, b.reason)?;
        Ok((StatusCode::CREATED, Json(v)))
    })
    .await
}

/// `DELETE /api/bans/{prefix}`, the prefix URL-encoded (`192.0.2.0%2F24`); an address alone
/// is its host prefix.
pub async fn remove(
    c: Caller,
    Extract(st): Extract<State>,
    Path(addr): Path<String>,
) -> ApiResult<StatusCode> {
    let prefix: Cidr = addr
        .parse()
        .map_err(|_| ApiError::not_found(format!("{addr:?} is not an address or prefix")))?;
    let by = c.actor();
    blocking(&st, move |s| {
        let live = s.firewall().ban_view(prefix);
        let kernel = s
            .dp()
            .ban_get(prefix)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let stored = s
            .store()
            .manual_bans()
            .into_iter()
            .flatten()
            .find(|b| Cidr::from(b.prefix) == prefix);
        if live.is_none() && kernel.is_none() && stored.is_none() {
            return Err(ApiError::not_found(format!("{prefix} is not banned")));
        }
        let before = match (&stored, &live) {
            (Some(m), _) => json(m),
            (None, Some(l)) => json(l),
            (None, None) => None,
        };
        s.firewall().ban_remove(&by, prefix, before)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// A source the IDS spares, as `GET /api/bans/never` lists it. There is no list of its own:
/// these follow from the provisioned records, and operators can still ban any of them.
#[derive(Debug, Serialize)]
pub struct NeverBan {
    /// The address or prefix (`203.0.113.5/32`), or an upstream's host name (its addresses
    /// as resolved at start are spared).
    pub prefix: String,
    /// Why: `ip_only_rule` (a carrier known by its address) or `upstream` (a connection).
    pub source: &'static str,
    /// The rule (`<account id>/<rule name>`) or connection name.
    pub name: String,
    /// The IDS rules it is never banned for (`range`: no range holding it is promoted).
    pub spared: Vec<&'static str>,
    /// The IDS rules that still ban it.
    pub still_banned_for: Vec<&'static str>,
}

/// `GET /api/bans/never` (View): the sources the IDS never bans, or bans for fewer reasons,
/// and why (see [`NeverBan`]).
pub async fn never(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<NeverBan>>> {
    blocking(&st, |s| {
        let mut out = Vec::new();
        for r in s.store().rules().into_iter().flatten() {
            let Some(net) = r.remote.filter(|_| r.ip_only) else {
                continue;
            };
            // A single host is also exempt from the SIP guard (no flood reports) and from
            // range promotion; a wider rule cannot be listed host by host.
            let host = net.prefix_len() == net.max_prefix_len();
            out.push(NeverBan {
                prefix: net.to_string(),
                source: "ip_only_rule",
                name: format!("{}/{}", r.account_id, r.name),
                spared: if host {
                    vec![
                        "brute-force",
                        "enumeration",
                        "dialog-probe",
                        "flood",
                        "range",
                    ]
                } else {
                    vec!["brute-force", "enumeration", "dialog-probe"]
                },
                still_banned_for: if host {
                    vec!["scanner"]
                } else {
                    vec!["scanner", "flood"]
                },
            });
        }
        for conn in s.store().connections().into_iter().flatten() {
            if !conn.enabled {
                continue;
            }
            let prefix = match conn.host.parse::<std::net::IpAddr>() {
                Ok(ip) => Cidr::host(ip).to_string(),
                Err(_) => conn.host.clone(),
            };
            out.push(NeverBan {
                prefix,
                source: "upstream",
                name: conn.name,
                spared: vec!["dialog-probe", "flood", "range"],
                still_banned_for: vec!["scanner", "brute-force", "enumeration"],
            });
        }
        Ok(Json(out))
    })
    .await
}
