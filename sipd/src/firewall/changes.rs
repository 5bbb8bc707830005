//! Firewall and ban changes operators make through the management API: each is stored with
//! its audit entry in one transaction, then applied to the data plane. `sbc.toml`'s own
//! entries are applied at start and cannot be removed here.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

use relay_user::{BanReason, Cidr, DataPlaneError, ServiceId};

use super::Firewall;
use super::bans::{BanView, net, staff_rule, view};
use super::book::{Ban, BanMeta, By};
use super::services::Named;
use crate::mgmt::unix_ms;
use crate::store::{Actor, AuditKind, FwAllow, FwDeny, Id, ManualBan, StoreError, canonical_ip};

/// Why a change was refused or only half made; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change would clash with what is there (already present, from `sbc.toml`, or locking
    /// out the caller's own address): nothing was changed (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The entry to remove does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store has the change; the data plane refused it.
    #[error("{0}")]
    NotApplied(String),
    /// Reading the data plane's tables failed (listing the firewall).
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

type Changed<T> = Result<T, ChangeError>;

fn json<T: Serialize>(t: &T) -> Option<Value> {
    serde_json::to_value(t).ok()
}

/// One port of a service the firewall knows, as listed by `GET /api/firewall`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    /// The service's name (`sip`, `management`, a host or custom service).
    pub service: String,
    /// The port it listens on.
    pub port: u16,
    /// `udp` or `tcp`.
    pub proto: String,
    /// Whether only sources on the allow list may reach it.
    pub restricted: bool,
    /// The allow list the data plane holds for the service, as CIDR strings.
    pub allow: Vec<String>,
}

/// One deny entry, from `sbc.toml` or added through the API.
#[derive(Debug, Serialize)]
pub struct DenyView {
    /// The denied network.
    pub cidr: String,
    /// `null` for entries from `sbc.toml`.
    pub id: Option<Id>,
    /// `api` or `config`.
    pub origin: &'static str,
}

/// One allow entry with where it comes from: only `api` entries may be removed through the
/// API.
#[derive(Debug, Serialize)]
pub struct AllowEntry {
    /// The service it opens.
    pub service: String,
    /// The allowed network.
    pub cidr: String,
    /// `api` (stored) or `config` (`sbc.toml`).
    pub origin: &'static str,
}

/// The whole firewall as `GET /api/firewall` shows it.
#[derive(Debug, Serialize)]
pub struct FirewallView {
    /// Every service port, sorted by service, port and protocol.
    pub services: Vec<ServiceView>,
    /// Every deny entry: `sbc.toml`'s first, then the API's.
    pub deny: Vec<DenyView>,
    /// Allow entries by origin, for telling what may be removed here.
    pub allow_entries: Vec<AllowEntry>,
}

impl Firewall {
    /// `sbc.toml`'s allow entries, by service name.
    fn config_allows(&self) -> Vec<(String, IpNet)> {
        let f = &self.cfg;
        let named = |id: ServiceId, nets: &[IpNet]| {
            nets.iter()
                .map(move |n| (id.name().to_string(), n.trunc()))
                .collect::<Vec<_>>()
        };
        let mut out = named(ServiceId::Management, &f.management_allow);
        out.extend(named(ServiceId::Sip, &f.sip_allow));
        for s in f.host_services().iter().chain(f.custom_services()) {
            out.extend(s.allow.iter().map(|n| (s.name.clone(), n.trunc())));
        }
        out
    }

    /// Services, allow lists and deny entries as the data plane and the store have them.
    pub fn view(&self) -> Changed<FirewallView> {
        let dp = &self.dp;
        let mut services = Vec::new();
        for svc in dp.service_list()? {
            services.push(ServiceView {
                service: svc.id.name().to_string(),
                port: svc.port,
                proto: svc.proto.to_string(),
                restricted: svc.restricted,
                allow: dp
                    .allow_list(svc.id)?
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        for (n, s) in self.custom() {
            let allow: Vec<String> = dp
                .allow_list(n.id)?
                .iter()
                .map(ToString::to_string)
                .collect();
            for &port in &s.ports {
                services.push(ServiceView {
                    service: n.name.clone(),
                    port,
                    proto: super::services::dp_proto(s.protocol).to_string(),
                    restricted: true,
                    allow: allow.clone(),
                });
            }
        }
        services
            .sort_by(|a, b| (&a.service, a.port, &a.proto).cmp(&(&b.service, b.port, &b.proto)));
        let config_deny = self.cfg.deny.iter().map(|n| DenyView {
            cidr: n.trunc().to_string(),
            id: None,
            origin: "config",
        });
        let stored_deny = self
            .store
            .fw_denies()
            .into_iter()
            .flatten()
            .map(|d| DenyView {
                cidr: d.cidr.to_string(),
                id: Some(d.id),
                origin: "api",
            });
        let config_allow = self
            .config_allows()
            .into_iter()
            .map(|(name, n)| AllowEntry {
                service: name,
                cidr: n.to_string(),
                origin: "config",
            });
        let stored_allow = self
            .store
            .fw_allows()
            .into_iter()
            .flatten()
            .map(|a| AllowEntry {
                service: a.service,
                cidr: a.cidr.to_string(),
                origin: "api",
            });
        Ok(FirewallView {
            services,
            deny: config_deny.chain(stored_deny).collect(),
            allow_entries: config_allow.chain(stored_allow).collect(),
        })
    }

    /// Allows `net` to reach `svc`: stored with its audit entry, then added to the data plane
    /// (and to the management allow list sipd checks itself). `Conflict` when already allowed;
    /// `NotApplied` when stored but the data plane refused it.
    pub fn allow_add(&self, by: &Actor, svc: &Named, net: IpNet) -> Changed<AllowEntry> {
        let entry = FwAllow {
            service: svc.name.clone(),
            cidr: net,
            created_ms: unix_ms(SystemTime::now()),
        };
        self.store.write(|tx| {
            if tx.fw_allow(&svc.name, &net)?.is_some() {
                return Ok(Err(ChangeError::Conflict(format!(
                    "{net} is already allowed for {}",
                    svc.name
                ))));
            }
            tx.put_fw_allow(&entry)?;
            let target = format!("firewall:allow:{}:{net}", svc.name);
            tx.append_audit(&by.audit(AuditKind::Create, target, None, None, json(&entry)))?;
            Ok(Ok(()))
        })??;
        self.dp
            .allow_add(svc.id, Cidr::from(net))
            .map_err(|e| ChangeError::NotApplied(format!("stored, but not applied: {e}")))?;
        self.after_allow_change(svc);
        Ok(AllowEntry {
            service: svc.name.clone(),
            cidr: net.to_string(),
            origin: "api",
        })
    }

    /// Removes an API-added allow entry of `svc`, refusing (`Conflict`) to remove `sbc.toml`'s
    /// entries or the last management entry that covers the caller's own address.
    pub fn allow_remove(&self, by: &Actor, svc: &Named, net: IpNet) -> Changed<()> {
        let in_config = self.config_allows().contains(&(svc.name.clone(), net));
        if svc.is(ServiceId::Management) && !in_config {
            self.refuse_own_lockout(by, svc, net)?;
        }
        let removed = self.store.write(|tx| {
            let Some(old) = tx.remove_fw_allow(&svc.name, &net)? else {
                return Ok(None);
            };
            let target = format!("firewall:allow:{}:{net}", svc.name);
            tx.append_audit(&by.audit(AuditKind::Delete, target, None, json(&old), None))?;
            Ok(Some(old))
        })?;
        if removed.is_none() {
            return Err(if in_config {
                ChangeError::Conflict(format!(
                    "{net} for {} comes from sbc.toml [firewall]; change it there",
                    svc.name
                ))
            } else {
                ChangeError::NotFound(format!("{net} is not on the {} allow list", svc.name))
            });
        }
        if !in_config {
            self.dp.allow_remove(svc.id, Cidr::from(net)).map_err(|e| {
                ChangeError::NotApplied(format!(
                    "removed from the store, not from the data plane: {e}"
                ))
            })?;
        }
        self.after_allow_change(svc);
        Ok(())
    }

    /// Removing `net` from the management allow list must leave the caller a way in.
    fn refuse_own_lockout(&self, by: &Actor, svc: &Named, net: IpNet) -> Changed<()> {
        let me = canonical_ip(by.source);
        let stored = self.store.fw_allows().into_iter().flatten();
        let others = self
            .cfg
            .management_allow
            .iter()
            .copied()
            .chain(
                stored
                    .filter(|a| a.service == svc.name && a.cidr != net)
                    .map(|a| a.cidr),
            )
            .any(|n| n.contains(&me));
        if net.contains(&me) && !others {
            return Err(ChangeError::Conflict(format!(
                "removing {net} would lock out your own address {me}"
            )));
        }
        Ok(())
    }

    fn after_allow_change(&self, svc: &Named) {
        self.sync_restricted(svc);
        if svc.is(ServiceId::Management) {
            self.refresh_mgmt_allow();
        }
    }

    /// Denies `net` before anything else looks at it: stored with its audit entry, then added to
    /// the data plane. `Conflict` when it contains the caller's own address or is already denied.
    pub fn deny_add(&self, by: &Actor, net: IpNet) -> Changed<FwDeny> {
        let me = canonical_ip(by.source);
        if net.contains(&me) {
            return Err(ChangeError::Conflict(format!(
                "{net} contains your own address {me}"
            )));
        }
        if self
            .store
            .fw_denies()
            .into_iter()
            .flatten()
            .any(|d| d.cidr == net)
        {
            return Err(ChangeError::Conflict(format!("{net} is already denied")));
        }
        let d = self.store.write(|tx| {
            let d = tx.add_fw_deny(net, unix_ms(SystemTime::now()))?;
            let target = format!("firewall:deny:{net}");
            tx.append_audit(&by.audit(AuditKind::Create, target, None, None, json(&d)))?;
            Ok(d)
        })?;
        self.dp
            .deny_add(Cidr::from(net), u32::try_from(d.id).unwrap_or(u32::MAX))
            .map_err(|e| ChangeError::NotApplied(format!("stored, but not applied: {e}")))?;
        Ok(d)
    }

    /// Removes the API's deny entry `id` (from the store, and from the data plane unless
    /// `sbc.toml` denies the same network); `NotFound` when there is none.
    pub fn deny_remove(&self, by: &Actor, id: Id) -> Changed<()> {
        let old = self.store.write(|tx| {
            let Some(old) = tx.remove_fw_deny(id)? else {
                return Ok(None);
            };
            let target = format!("firewall:deny:{}", old.cidr);
            tx.append_audit(&by.audit(AuditKind::Delete, target, None, json(&old), None))?;
            Ok(Some(old))
        })?;
        let Some(old) = old else {
            return Err(ChangeError::NotFound(format!("deny entry #{id} not found")));
        };
        let in_config = self.cfg.deny.iter().any(|n| n.trunc() == old.cidr);
        if !in_config {
            self.dp.deny_remove(Cidr::from(old.cidr)).map_err(|e| {
                ChangeError::NotApplied(format!(
                    "removed from the store, not from the data plane: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// A ban an operator made, of any prefix: stored (applied again at start until it
    /// expires), into the table (making room if it is full) and the data plane.
    pub fn ban_add(
        &self,
        by: &Actor,
        prefix: Cidr,
        duration: Option<Duration>,
        note: Option<String>,
    ) -> Changed<BanView> {
        let me = canonical_ip(by.source);
        if prefix.contains(me) {
            return Err(ChangeError::Conflict(format!(
                "{prefix} contains your own address {me}"
            )));
        }
        let now = unix_ms(SystemTime::now());
        let stored = ManualBan {
            prefix: net(prefix),
            reason: note.clone(),
            until_ms: duration.map(|d| now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            created_ms: now,
            by: Some(by.username.clone()),
        };
        let ban = Ban {
            prefix,
            reason: BanReason::Manual,
            by: By::Staff,
            until_ms: stored.until_ms,
            note: note.clone(),
            meta: BanMeta {
                rule: staff_rule(Some(&by.username)),
                evidence: None,
                first_seen_ms: now,
                last_seen_ms: now,
                hits: 0,
            },
        };
        self.store.write(|tx| {
            let before = tx.manual_ban(&stored.prefix)?;
            let kind = if before.is_some() {
                AuditKind::Update
            } else {
                AuditKind::Create
            };
            let target = format!("ban:{prefix}");
            tx.put_manual_ban(&stored)?;
            tx.append_audit(&by.audit(
                kind,
                target,
                note.clone(),
                before.as_ref().and_then(json),
                json(&stored),
            ))?;
            Ok(())
        })?;
        if !self.insert(ban.clone()) {
            self.store
                .write(|tx| tx.remove_manual_ban(&stored.prefix).map(|_| ()))?;
            return Err(ChangeError::Conflict(format!(
                "the ban table is full ({} per family) of bans that outlast this one",
                self.bans_cfg.capacity
            )));
        }
        Ok(view(&ban, now))
    }

    /// Lifts the ban of exactly `prefix`, stored or the IDS's; `before` is what the audit
    /// records of it.
    pub fn ban_remove(&self, by: &Actor, prefix: Cidr, before: Option<Value>) -> Changed<()> {
        self.store.write(|tx| {
            tx.remove_manual_ban(&net(prefix))?;
            let target = format!("ban:{prefix}");
            tx.append_audit(&by.audit(AuditKind::Delete, target, None, before.clone(), None))?;
            Ok(())
        })?;
        self.ban_state().book.remove(&prefix);
        let r = self.dp.ban_remove(prefix);
        self.announce_removed(prefix);
        self.share_removed(prefix);
        r.map_err(|e| {
            ChangeError::NotApplied(format!(
                "removed from the store, not from the data plane: {e}"
            ))
        })?;
        Ok(())
    }
}
