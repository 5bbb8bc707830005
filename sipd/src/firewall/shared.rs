//! Bans shared with the other nodes of a cluster ([`crate::cluster::bans`]): every ban made
//! or lifted here by a decision of this node (the IDS, an operator through the API or the
//! console) goes out as a [`BanRecord`]; records of the other nodes come back in through
//! [`Firewall::apply_shared`], which applies them to the table, the data plane and the store
//! without sending them out again.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

use relay_user::{BanReason, Cidr};

use super::Firewall;
use super::bans::{net, reason_name};
use super::book::{Ban, BanMeta, By};
use crate::mgmt::unix_ms;
use crate::store::{AuditKind, AuditResult, Auditor, ManualBan};

/// One ban, or its removal, as the nodes share it. `version` orders the changes of one
/// prefix across the cluster (Unix ms of the change, raised above every version the
/// changing node had seen of it), `origin` breaks ties; a removal is kept as a tombstone so
/// that an unban made while a node was away is not undone by its old copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned prefix (`192.0.2.7/32`).
    pub prefix: String,
    /// Orders the changes of this prefix; the higher wins.
    pub version: u64,
    /// The node that made the change.
    pub origin: String,
    /// A tombstone: the ban was lifted.
    pub removed: bool,
    /// `manual`, `flood`, `scanner`, `brute-force`, `enumeration`.
    pub reason: String,
    /// `ids` or `staff`.
    pub by: By,
    /// Unix ms; `None`: until lifted.
    pub until_ms: Option<u64>,
    /// The operator's note.
    pub note: Option<String>,
    /// The rule that earned it (`scanner`, `staff:<user>`, `range:<rule>`).
    pub rule: String,
    /// Unix ms of the first offence or of the operator's ban.
    pub first_seen_ms: u64,
    /// What the IDS saw.
    pub evidence: Option<serde_json::Value>,
}

impl BanRecord {
    /// Whether this record wins over `other` (same prefix).
    pub fn newer_than(&self, other: &BanRecord) -> bool {
        (self.version, &self.origin) > (other.version, &other.origin)
    }

    /// A record of `b` as of `version` (origin filled in by the cluster).
    pub fn of(b: &Ban, version: u64) -> BanRecord {
        BanRecord {
            prefix: b.prefix.to_string(),
            version,
            origin: String::new(),
            removed: false,
            reason: reason_name(b.reason).to_owned(),
            by: b.by,
            until_ms: b.until_ms,
            note: b.note.clone(),
            rule: b.meta.rule.clone(),
            first_seen_ms: b.meta.first_seen_ms,
            evidence: b.meta.evidence.clone(),
        }
    }

    /// The tombstone of `prefix` as of `version`.
    pub fn removal(prefix: Cidr, version: u64) -> BanRecord {
        BanRecord {
            prefix: prefix.to_string(),
            version,
            origin: String::new(),
            removed: true,
            reason: reason_name(BanReason::Manual).to_owned(),
            by: By::Staff,
            until_ms: None,
            note: None,
            rule: String::new(),
            first_seen_ms: version,
            evidence: None,
        }
    }

    /// Whether the ban had ended at `now` (a tombstone never has: it must stay to win).
    pub fn expired(&self, now_ms: u64) -> bool {
        !self.removed && self.until_ms.is_some_and(|u| u <= now_ms)
    }
}

/// The data plane's reason for a name [`reason_name`] gives.
fn reason_of(name: &str) -> Option<BanReason> {
    [
        BanReason::Manual,
        BanReason::Flood,
        BanReason::Scanner,
        BanReason::BruteForce,
        BanReason::Enumeration,
    ]
    .into_iter()
    .find(|r| reason_name(*r) == name)
}

/// Why a record of another node was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The record does not parse (a prefix or reason this build does not know).
    #[error("not a ban record: {0}")]
    Invalid(String),
    /// The table is full of bans that outlast it.
    #[error("{0} not banned here: the ban table is full of bans that outlast it")]
    Full(String),
}

/// The audit's actor for a change another node made: `cluster:<node>`.
struct FromNode<'a>(&'a str);

impl Auditor for FromNode<'_> {
    fn username(&self) -> Option<String> {
        Some(format!("cluster:{}", self.0))
    }

    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// Where this node's ban changes go, once a cluster is set up.
pub(super) type Share = OnceLock<UnboundedSender<BanRecord>>;

fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

impl Firewall {
    /// From now on, every ban made or lifted here goes to `tx` (the cluster's publisher).
    pub fn share_with(&self, tx: UnboundedSender<BanRecord>) {
        let _ = self.share.set(tx);
    }

    /// A ban this node made, to the cluster (if any).
    pub(super) fn share_added(&self, b: &Ban) {
        if let Some(tx) = self.share.get() {
            let _ = tx.send(BanRecord::of(b, now_ms()));
        }
    }

    /// A ban this node lifted, to the cluster (if any).
    pub(super) fn share_removed(&self, prefix: Cidr) {
        if let Some(tx) = self.share.get() {
            let _ = tx.send(BanRecord::removal(prefix, now_ms()));
        }
    }

    /// Every ban held now, as records (the cluster's starting point), all at version 0: any
    /// record the cluster holds wins over them. A ban this node held before it started (kept
    /// in the pinned kernel map or the store across a restart) may have been lifted or changed
    /// elsewhere meanwhile, and its adoption time must not pass for a newer change: that
    /// would bring the lifted ban back on every node. One Redis has never seen still goes up.
    pub fn shared_snapshot(&self) -> Vec<BanRecord> {
        self.ban_state()
            .book
            .iter()
            .map(|b| BanRecord::of(b, 0))
            .collect()
    }

    /// Applies another node's change: into (or out of) the table and the data plane, and the
    /// store for operators' bans, with an audit entry naming the node. Not shared again.
    pub fn apply_shared(&self, r: &BanRecord) -> Result<(), ApplyError> {
        let prefix: Cidr = r
            .prefix
            .parse()
            .map_err(|e| ApplyError::Invalid(format!("{}: {e}", r.prefix)))?;
        let who = FromNode(&r.origin);
        let target = format!("ban:{prefix}");
        if r.removed {
            let had = self.ban_state().book.remove(&prefix);
            if let Err(e) = self.dp.ban_remove(prefix) {
                warn!(%prefix, error = %e, "shared unban not removed from the data plane");
            }
            let stored = self
                .store
                .write(|tx| tx.remove_manual_ban(&net(prefix)).map(|o| o.is_some()));
            if had.is_some() || stored.unwrap_or(false) {
                self.announce_removed(prefix);
                self.audit_shared(&who, AuditKind::Delete, target, None);
            }
            return Ok(());
        }
        let reason = reason_of(&r.reason).ok_or_else(|| ApplyError::Invalid(r.reason.clone()))?;
        let now = now_ms();
        if r.expired(now) {
            return Ok(());
        }
        let ban = Ban {
            prefix,
            reason,
            by: r.by,
            until_ms: r.until_ms,
            note: r.note.clone(),
            meta: BanMeta {
                rule: r.rule.clone(),
                evidence: r.evidence.clone(),
                first_seen_ms: r.first_seen_ms,
                last_seen_ms: now,
                hits: 0,
            },
        };
        if !self.insert_quiet(ban) {
            return Err(ApplyError::Full(r.prefix.clone()));
        }
        if r.by == By::Staff {
            let m = ManualBan {
                prefix: net(prefix),
                reason: r.note.clone(),
                until_ms: r.until_ms,
                created_ms: r.first_seen_ms,
                by: r.rule.strip_prefix("staff:").map(str::to_owned),
            };
            if let Err(e) = self.store.write(|tx| tx.put_manual_ban(&m)) {
                warn!(%prefix, error = %e, "shared ban not stored (applied until the next restart)");
            }
        }
        let kind = if r.by == By::Staff {
            AuditKind::Create
        } else {
            AuditKind::Ban
        };
        self.audit_shared(&who, kind, target, serde_json::to_value(r).ok());
        Ok(())
    }

    fn audit_shared(
        &self,
        who: &FromNode<'_>,
        kind: AuditKind,
        target: String,
        after: Option<serde_json::Value>,
    ) {
        let reason = Some(format!("shared by cluster node {}", who.0));
        if let Err(e) =
            self.store
                .audit_system(who, kind, target, AuditResult::Success, reason, after)
        {
            warn!(error = %e, "audit entry of a shared ban not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use relay_user::DataPlane;

    use super::*;
    use crate::config::Config;
    use crate::firewall::BansConfig;
    use crate::store::Store;

    fn fw() -> (tempfile::TempDir, Firewall) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let dp = Arc::new(DataPlane::userspace("test"));
        let fw = Firewall::new(
            &Config::default().firewall,
            &BansConfig::default(),
            store,
            dp,
        );
        (dir, fw)
    }

    /// A remote ban lands in the table and the store, is not sent out again, and its
    /// tombstone lifts it; the audit names the node.
    #[test]
    fn a_remote_ban_is_applied_without_echo_and_its_tombstone_lifts_it() {
        let (_d, fw) = fw();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        fw.share_with(tx);
        let mut r = BanRecord {
            prefix: "198.51.100.7/32".into(),
            version: 10,
            origin: "node-1".into(),
            removed: false,
            reason: "manual".into(),
            by: By::Staff,
            until_ms: None,
            note: Some("scanner".into()),
            rule: "staff:alice".into(),
            first_seen_ms: 5,
            evidence: None,
        };
        fw.apply_shared(&r).unwrap();
        assert_eq!(fw.ban_views().len(), 1);
        assert_eq!(fw.store.manual_bans().len(), 1);
        assert!(rx.try_recv().is_err(), "a remote ban is not shared again");
        r.removed = true;
        r.version = 11;
        fw.apply_shared(&r).unwrap();
        assert!(fw.ban_views().is_empty());
        assert!(fw.store.manual_bans().is_empty());
        let audit = fw.store.audit(&Default::default());
        assert!(
            audit
                .iter()
                .flatten()
                .any(|e| e.entry.actor.as_deref() == Some("cluster:node-1")),
            "{audit:?}"
        );
    }

    #[test]
    fn versions_then_origins_order_records() {
        let a = BanRecord::removal("192.0.2.1/32".parse().unwrap(), 5);
        let mut b = a.clone();
        b.version = 6;
        assert!(b.newer_than(&a) && !a.newer_than(&b));
        let mut c = a.clone();
        c.origin = "z".into();
        assert!(c.newer_than(&a));
        assert!(!a.newer_than(&a));
    }
}
