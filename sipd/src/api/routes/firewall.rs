//! The data plane's firewall per service (R view, A change: `Action::System`, as it can lock
//! everyone out). Entries made here are stored (store tree `firewall`) and applied at once;
//! `sbc.toml`'s `[firewall]` lists are applied at start and cannot be removed here.
//!
//! A service with a non-empty allow list is restricted (only those sources reach it); the
//! management service always is (`management_allow` is never empty).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{json, path_id};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{ApiState, Caller, State, blocking};
use crate::mgmt::{Action, unix_ms};
use crate::store::{AuditKind, FwAllow, Id, Store};
use relay_user::{BanReason, Cidr, DataPlane, ServiceId};

pub fn cidr(n: &IpNet) -> Option<Cidr> {
    n.to_string().parse().ok()
}

fn service_id(name: &str) -> ApiResult<ServiceId> {
    ServiceId::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| {
            ApiError::invalid(
                "service",
                format!(
                    "unknown service {name:?} (one of {})",
                    ServiceId::ALL.map(|s| s.name()).join(", ")
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

/// Restricted exactly when the allow list has entries (management: always).
pub fn sync_restricted(dp: &DataPlane, id: ServiceId) {
    let restricted =
        id == ServiceId::Management || dp.allow_list(id).map(|l| !l.is_empty()).unwrap_or(false);
    for s in dp.service_list().unwrap_or_default() {
        if s.id == id && s.restricted != restricted {
            let r = dp.service_set(relay_user::Service { restricted, ..s });
            if let Err(e) = r {
                error!(service = id.name(), error = %e, "service restriction not updated");
            }
        }
    }
}

/// At start: the stored allow and deny entries and the manual bans, into the data plane.
pub fn reapply(store: &Store, dp: &DataPlane) {
    let mut services = Vec::new();
    let mut n = 0;
    for a in store.fw_allows().into_iter().flatten() {
        let (Ok(id), Some(c)) = (service_id(&a.service), cidr(&a.cidr)) else {
            warn!(service = a.service, cidr = %a.cidr, "stored allow entry not understood; skipped");
            continue;
        };
        match dp.allow_add(id, c) {
            Ok(()) => n += 1,
            Err(e) => error!(cidr = %a.cidr, error = %e, "stored allow entry not applied"),
        }
        if !services.contains(&id) {
            services.push(id);
        }
    }
    for id in services {
        sync_restricted(dp, id);
    }
    for d in store.fw_denies().into_iter().flatten() {
        let Some(c) = cidr(&d.cidr) else { continue };
        match dp.deny_add(c, u32::try_from(d.id).unwrap_or(u32::MAX)) {
            Ok(()) => n += 1,
            Err(e) => error!(cidr = %d.cidr, error = %e, "stored deny entry not applied"),
        }
    }
    let now = unix_ms(SystemTime::now());
    let mut expired = Vec::new();
    for b in store.manual_bans().into_iter().flatten() {
        let left = match b.until_ms {
            None => None,
            Some(u) if u > now => Some(Duration::from_millis(u - now)),
            Some(_) => {
                expired.push(b.addr);
                continue;
            }
        };
        match dp.ban_add(b.addr, left, BanReason::Manual) {
            Ok(()) => n += 1,
            Err(e) => error!(addr = %b.addr, error = %e, "stored ban not applied"),
        }
    }
    if !expired.is_empty() {
        // Expiry is not a change anyone made: no audit entry.
        let r = store.write(|tx| {
            for a in &expired {
                tx.remove_manual_ban(*a)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            warn!(error = %e, "expired bans not removed from the store");
        }
    }
    if n > 0 {
        info!(
            entries = n,
            "firewall entries and bans from the management API applied"
        );
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub service: &'static str,
    pub port: u16,
    pub proto: String,
    pub restricted: bool,
    pub allow: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DenyView {
    pub cidr: String,
    /// `null` for entries from `sbc.toml`.
    pub id: Option<Id>,
    /// `api` or `config`.
    pub origin: &'static str,
}

#[derive(Debug, Serialize)]
pub struct FirewallView {
    pub services: Vec<ServiceView>,
    pub deny: Vec<DenyView>,
    /// Allow entries by origin, for telling what may be removed here.
    pub allow_entries: Vec<AllowEntry>,
}

#[derive(Debug, Serialize)]
pub struct AllowEntry {
    pub service: String,
    pub cidr: String,
    pub origin: &'static str,
}

fn config_allows(s: &ApiState) -> Vec<(ServiceId, IpNet)> {
    let f = &s.cfg.firewall;
    f.management_allow
        .iter()
        .map(|n| (ServiceId::Management, n.trunc()))
        .chain(f.sip_allow.iter().map(|n| (ServiceId::Sip, n.trunc())))
        .collect()
}

pub async fn show(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<FirewallView>> {
    c.permit(Action::View)?;
    blocking(&st, |s| {
        let dp = s.dp();
        let internal = |e: relay_user::DataPlaneError| ApiError::internal(e.to_string());
        let mut services = Vec::new();
        for svc in dp.service_list().map_err(internal)? {
            services.push(ServiceView {
                service: svc.id.name(),
                port: svc.port,
                proto: svc.proto.to_string(),
                restricted: svc.restricted,
                allow: dp
                    .allow_list(svc.id)
                    .map_err(internal)?
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        services.sort_by(|a, b| (a.service, a.port, &a.proto).cmp(&(b.service, b.port, &b.proto)));
        let mut deny: Vec<DenyView> = s
            .cfg
            .firewall
            .deny
            .iter()
            .map(|n| DenyView {
                cidr: n.trunc().to_string(),
                id: None,
                origin: "config",
            })
            .collect();
        deny.extend(
            s.store()
                .fw_denies()
                .into_iter()
                .flatten()
                .map(|d| DenyView {
                    cidr: d.cidr.to_string(),
                    id: Some(d.id),
                    origin: "api",
                }),
        );
        let mut allow_entries: Vec<AllowEntry> = config_allows(s)
            .into_iter()
            .map(|(id, n)| AllowEntry {
                service: id.name().into(),
                cidr: n.to_string(),
                origin: "config",
            })
            .collect();
        allow_entries.extend(
            s.store()
                .fw_allows()
                .into_iter()
                .flatten()
                .map(|a| AllowEntry {
                    service: a.service,
                    cidr: a.cidr.to_string(),
                    origin: "api",
                }),
        );
        Ok(Json(FirewallView {
            services,
            deny,
            allow_entries,
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowIn {
    pub service: String,
    pub cidr: String,
}

pub async fn allow_add(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<AllowIn>,
) -> ApiResult<(StatusCode, Json<AllowEntry>)> {
    c.permit(Action::System)?;
    let id = service_id(&b.service)?;
    let net = parse_net("cidr", &b.cidr)?;
    blocking(&st, move |s| {
        let entry = FwAllow {
            service: id.name().into(),
            cidr: net,
            created_ms: unix_ms(SystemTime::now()),
        };
        s.store().write(|tx| {
            if tx.fw_allow(id.name(), &net)?.is_some() {
                return Ok(Err(ApiError::conflict(format!(
                    "{net} is already allowed for {}",
                    id.name()
                ))));
            }
            tx.put_fw_allow(&entry)?;
            tx.append_audit(&c.audit(
                AuditKind::Create,
                format!("firewall:allow:{}:{net}", id.name()),
                None,
                None,
                json(&entry),
            ))?;
            Ok(Ok(()))
        })??;
        let c = cidr(&net).ok_or_else(|| ApiError::invalid("cidr", "not usable"))?;
        s.dp()
            .allow_add(id, c)
            .map_err(|e| ApiError::internal(format!("stored, but not applied: {e}")))?;
        sync_restricted(s.dp(), id);
        if id == ServiceId::Management {
            s.refresh_mgmt_allow();
        }
        Ok((
            StatusCode::CREATED,
            Json(AllowEntry {
                service: id.name().into(),
                cidr: net.to_string(),
                origin: "api",
            }),
        ))
    })
    .await
}

pub async fn allow_remove(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<AllowIn>,
) -> ApiResult<StatusCode> {
    c.permit(Action::System)?;
    let id = service_id(&b.service)?;
    let net = parse_net("cidr", &b.cidr)?;
    blocking(&st, move |s| {
        let in_config = config_allows(s).contains(&(id, net));
        if id == ServiceId::Management && !in_config {
            // Would the caller still get in?
            let me = crate::store::canonical_ip(c.ip);
            let others = s
                .cfg
                .firewall
                .management_allow
                .iter()
                .copied()
                .chain(
                    s.store()
                        .fw_allows()
                        .into_iter()
                        .flatten()
                        .filter(|a| a.service == id.name() && a.cidr != net)
                        .map(|a| a.cidr),
                )
                .any(|n| n.contains(&me));
            if net.contains(&me) && !others {
                return Err(ApiError::conflict(format!(
                    "removing {net} would lock out your own address {me}"
                )));
            }
        }
        let removed = s.store().write(|tx| {
            let Some(old) = tx.remove_fw_allow(id.name(), &net)? else {
                return Ok(None);
            };
            tx.append_audit(&c.audit(
                AuditKind::Delete,
                format!("firewall:allow:{}:{net}", id.name()),
                None,
                json(&old),
                None,
            ))?;
            Ok(Some(old))
        })?;
        if removed.is_none() {
            return Err(if in_config {
                ApiError::conflict(format!(
                    "{net} for {} comes from sbc.toml [firewall]; change it there",
                    id.name()
                ))
            } else {
                ApiError::not_found(format!("{net} is not on the {} allow list", id.name()))
            });
        }
        if !in_config && let Some(c) = cidr(&net) {
            s.dp().allow_remove(id, c).map_err(|e| {
                ApiError::internal(format!(
                    "removed from the store, not from the data plane: {e}"
                ))
            })?;
        }
        sync_restricted(s.dp(), id);
        if id == ServiceId::Management {
            s.refresh_mgmt_allow();
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyIn {
    pub cidr: String,
}

pub async fn deny_add(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(b): JsonBody<DenyIn>,
) -> ApiResult<(StatusCode, Json<DenyView>)> {
    c.permit(Action::System)?;
    let net = parse_net("cidr", &b.cidr)?;
    if net.prefix_len() == 0 {
        return Err(ApiError::invalid(
            "cidr",
            format!("denying {net} would drop everything"),
        ));
    }
    let me = crate::store::canonical_ip(c.ip);
    if net.contains(&me) {
        return Err(ApiError::conflict(format!(
            "{net} contains your own address {me}"
        )));
    }
    blocking(&st, move |s| {
        if s.store()
            .fw_denies()
            .into_iter()
            .flatten()
            .any(|d| d.cidr == net)
        {
            return Err(ApiError::conflict(format!("{net} is already denied")));
        }
        let d = s.store().write(|tx| {
            let d = tx.add_fw_deny(net, unix_ms(SystemTime::now()))?;
            tx.append_audit(&c.audit(
                AuditKind::Create,
                format!("firewall:deny:{net}"),
                None,
                None,
                json(&d),
            ))?;
            Ok(d)
        })?;
        let cd = cidr(&net).ok_or_else(|| ApiError::invalid("cidr", "not usable"))?;
        s.dp()
            .deny_add(cd, u32::try_from(d.id).unwrap_or(u32::MAX))
            .map_err(|e| ApiError::internal(format!("stored, but not applied: {e}")))?;
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

pub async fn deny_remove(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.permit(Action::System)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let old = s.store().write(|tx| {
            let Some(old) = tx.remove_fw_deny(id)? else {
                return Ok(None);
            };
            tx.append_audit(&c.audit(
                AuditKind::Delete,
                format!("firewall:deny:{}", old.cidr),
                None,
                json(&old),
                None,
            ))?;
            Ok(Some(old))
        })?;
        let Some(old) = old else {
            return Err(ApiError::not_found(format!("deny entry #{id} not found")));
        };
        let in_config = s.cfg.firewall.deny.iter().any(|n| n.trunc() == old.cidr);
        if !in_config && let Some(cd) = cidr(&old.cidr) {
            s.dp().deny_remove(cd).map_err(|e| {
                ApiError::internal(format!(
                    "removed from the store, not from the data plane: {e}"
                ))
            })?;
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
