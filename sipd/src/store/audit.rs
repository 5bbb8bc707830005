//! The audit log: who did what, from where, with what result, and for changes the record
//! before and after. Append-only: there is an append and a filtered list, and no update or
//! delete at all. Entries are appended inside a transaction (`Tx::append_audit`), so a change
//! and its entry are durable together or not at all. Each entry carries the hash of the one
//! before it (see [`chain`]), so an edit made to the store behind sipd's back shows in
//! `sipd audit verify`.

pub mod chain;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::record::{decode, encode};
use super::{Id, Record, Store, StoreError, T, Tx, TxResult, abort, id_from};

const NEXT_AUDIT_ID: &[u8] = b"next_audit_id";

/// What an audit entry records happened; filters and `sipd audit` select on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditKind {
    /// A login attempt, successful or not (exactly one entry per attempt).
    Login,
    /// A session ended by its owner.
    Logout,
    /// A record created, changed or deleted (`target` names it; `before`/`after` hold it).
    Create,
    /// A record changed (`before` and `after` hold it).
    Update,
    /// A record deleted (`before` holds it).
    Delete,
    /// A password set or changed (the entry never holds the password or its hash).
    Password,
    /// A TOTP factor begun, confirmed or removed.
    Totp,
    /// Sessions revoked by someone other than their owner logging out.
    Revoke,
    /// `sipd init`: the first admin.
    Init,
    /// `sipd import`: a provisioning file applied (`after` holds what it created/updated).
    Import,
    /// An API request refused for the caller's role or session scope (403).
    Deny,
    /// A source banned by the IDS (`after` holds the evidence: offence, source, counts).
    Ban,
    /// `sipd backup`: a copy of the store taken (`after` holds its manifest).
    Backup,
    /// `sipd restore`: the store replaced by a backup (`after` holds the backup's manifest).
    Restore,
}

impl AuditKind {
    /// The kind as stored and as filters spell it (`login`, `create`, …); `FromStr` reads it
    /// back.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Login => "login",
            AuditKind::Logout => "logout",
            AuditKind::Create => "create",
            AuditKind::Update => "update",
            AuditKind::Delete => "delete",
            AuditKind::Password => "password",
            AuditKind::Totp => "totp",
            AuditKind::Revoke => "revoke",
            AuditKind::Init => "init",
            AuditKind::Import => "import",
            AuditKind::Deny => "deny",
            AuditKind::Ban => "ban",
            AuditKind::Backup => "backup",
            AuditKind::Restore => "restore",
        }
    }
}

impl std::str::FromStr for AuditKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).map_err(|_| {
            format!(
                "unknown audit kind {s:?} (login, logout, create, update, delete, password, totp, revoke, init, import, deny, ban, backup, restore)"
            )
        })
    }
}

/// Whether what an entry records was done or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditResult {
    /// Done.
    Success,
    /// Refused or failed; the entry's `reason` says why.
    Failure,
}

/// A staff member acting from an address: who every change is audited as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The staff username acting.
    pub username: String,
    /// The address the request came from (IPv4-mapped IPv6 is recorded as IPv4).
    pub source: IpAddr,
}

/// Who an audit entry names, from where, and when.
pub trait Auditor {
    /// The staff username; `None` for sipd itself.
    fn username(&self) -> Option<String>;
    /// The address acted from; `None` for sipd itself.
    fn source(&self) -> Option<IpAddr>;
    /// Unix ms.
    fn ts_ms(&self) -> u64 {
        sipd_core::records::unix_ms(std::time::SystemTime::now())
    }
}

impl Auditor for Actor {
    fn username(&self) -> Option<String> {
        Some(self.username.clone())
    }

    fn source(&self) -> Option<IpAddr> {
        Some(super::canonical_ip(self.source))
    }
}

/// sipd acting on its own (`sipd:ids`, `sipd:import`): a name no staff username can take
/// (`:` is not allowed in one), so filters by actor tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct System(pub &'static str);

impl Auditor for System {
    fn username(&self) -> Option<String> {
        Some(format!("sipd:{}", self.0))
    }

    fn source(&self) -> Option<IpAddr> {
        None
    }
}

/// One change as its audit entry records it, and what the caller gets back.
#[derive(Debug, Clone)]
pub struct Change<R> {
    /// What kind of change it is.
    pub kind: AuditKind,
    /// `account:<name>`, `staff:<name>`, …
    pub target: String,
    /// Why (an operator's note); `None` when none was given.
    pub reason: Option<String>,
    /// The record before the change, as JSON; `None` for a creation.
    pub before: Option<serde_json::Value>,
    /// The record after the change, as JSON; `None` for a deletion.
    pub after: Option<serde_json::Value>,
    /// What the caller gets back once the change and its entry are committed.
    pub out: R,
}

impl<R> Change<R> {
    /// A change of `kind` to `target` returning `out`, with no reason, before or after yet.
    pub fn new(kind: AuditKind, target: String, out: R) -> Change<R> {
        Change {
            kind,
            target,
            reason: None,
            before: None,
            after: None,
            out,
        }
    }

    /// Records `v` as the state before the change (dropped if it does not serialise).
    pub fn before<V: Serialize>(self, v: &V) -> Change<R> {
        Change {
            before: serde_json::to_value(v).ok(),
            ..self
        }
    }

    /// Records `v` as the state after the change (dropped if it does not serialise).
    pub fn after<V: Serialize>(self, v: &V) -> Change<R> {
        Change {
            after: serde_json::to_value(v).ok(),
            ..self
        }
    }

    /// Records the operator's reason for the change.
    pub fn reason(self, reason: Option<String>) -> Change<R> {
        Change { reason, ..self }
    }

    /// The successful change's audit entry, stamped by `by`, and what the caller gets.
    pub fn entry(self, by: &dyn Auditor) -> (AuditDraft, R) {
        let draft = AuditDraft {
            ts_ms: by.ts_ms(),
            actor: by.username(),
            source: by.source(),
            kind: self.kind,
            target: Some(self.target),
            result: AuditResult::Success,
            reason: self.reason,
            before: self.before,
            after: self.after,
        };
        (draft, self.out)
    }
}

impl Store {
    /// Performs one change: `f` makes it inside one transaction and describes it, and
    /// exactly one audit entry (stamped by `by`, with before and after) is appended in the
    /// same transaction, flushed before this returns. `f` refuses with `Ok(Err(e))`, which
    /// writes nothing.
    pub fn change<R, E>(
        &self,
        by: &dyn Auditor,
        f: impl Fn(&Tx<'_>) -> TxResult<Result<Change<R>, E>>,
    ) -> Result<Result<R, E>, StoreError> {
        self.write(|tx| {
            let c = match f(tx)? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let (entry, out) = c.entry(by);
            tx.append_audit(&entry)?;
            Ok(Ok(out))
        })
    }
}

impl Actor {
    /// A successful change by this actor, for the transaction that makes it.
    pub fn audit(
        &self,
        kind: AuditKind,
        target: String,
        reason: Option<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> AuditDraft {
        let c = Change {
            kind,
            target,
            reason,
            before,
            after,
            out: (),
        };
        c.entry(self).0
    }
}

/// An entry before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDraft {
    /// Unix ms.
    pub ts_ms: u64,
    /// The staff username acting (for a login: the name that was tried); `None` for the
    /// system itself.
    #[serde(default)]
    pub actor: Option<String>,
    /// The address acted from (IPv4-mapped IPv6 as IPv4); `None` for the system itself.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// What happened.
    pub kind: AuditKind,
    /// What was acted on, `type:name` (`staff:alice`, `account:carrier-a`).
    #[serde(default)]
    pub target: Option<String>,
    /// Whether it was done or refused.
    pub result: AuditResult,
    /// Why it failed, or a note on a success (`limited session: enrol TOTP`).
    #[serde(default)]
    pub reason: Option<String>,
    /// The record before a change, as JSON.
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    /// The record after a change, or the evidence of a ban, as JSON.
    #[serde(default)]
    pub after: Option<serde_json::Value>,
}

/// A stored audit entry: its id (dense, in commit order), the entry and its chain link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The entry's position in the log, from 1.
    pub id: Id,
    /// What was recorded.
    #[serde(flatten)]
    pub entry: AuditDraft,
    /// The chain value of the entry before (lowercase hex SHA-256, see the `chain` module); `None`
    /// only in a log not yet migrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

impl Record for AuditEntry {
    const KIND: &'static str = "audit";
    const VERSION: u32 = 1;
}

/// What `Store::audit` returns; every field narrows, `None` does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Entries with an id above this (resume after the last one seen).
    pub after_id: Id,
    /// Actor username, without regard to case.
    pub actor: Option<String>,
    /// Only entries of this kind.
    pub kind: Option<AuditKind>,
    /// `from_ms <= ts_ms < until_ms`.
    pub from_ms: Option<u64>,
    /// See `from_ms`.
    pub until_ms: Option<u64>,
    /// At most this many (0 = no limit).
    pub limit: usize,
}

impl AuditFilter {
    /// Whether `e` passes every filter set (`limit` is applied by the caller, not here).
    pub fn matches(&self, e: &AuditEntry) -> bool {
        let d = &e.entry;
        e.id > self.after_id
            && self.kind.is_none_or(|k| k == d.kind)
            && self.from_ms.is_none_or(|f| d.ts_ms >= f)
            && self.until_ms.is_none_or(|u| d.ts_ms < u)
            && self
                .actor
                .as_ref()
                .is_none_or(|a| d.actor.as_ref().is_some_and(|x| x.eq_ignore_ascii_case(a)))
    }
}

impl Tx<'_> {
    /// Appends an audit entry as part of this transaction; returns its id. Ids are dense
    /// and in commit order.
    pub fn append_audit(&self, entry: &AuditDraft) -> TxResult<Id> {
        let meta = self.tree(T::Meta);
        let id = meta
            .get(NEXT_AUDIT_ID)?
            .and_then(|v| id_from(&v))
            .unwrap_or(0)
            + 1;
        meta.insert(NEXT_AUDIT_ID, &id.to_be_bytes())?;
        let key = id.to_be_bytes();
        let audit = self.tree(T::Audit);
        // Never overwrite: an existing key means the counter went backwards (a restored
        // meta tree); refuse rather than lose history.
        if audit.get(key)?.is_some() {
            return abort(StoreError::Conflict {
                kind: "audit",
                what: format!("entry #{id}"),
                by: "an existing entry (audit counter behind the log)".into(),
            });
        }
        let prev = self.chain_audit(id, entry)?;
        let bytes = encode(&AuditEntry {
            id,
            entry: entry.clone(),
            prev: Some(chain::hex(&prev)),
        })
        .or_else(abort)?;
        audit.insert(&key, bytes)?;
        Ok(id)
    }
}

impl Store {
    /// Appends one entry on its own; durable when this returns.
    pub fn append_audit(&self, entry: &AuditDraft) -> Result<AuditEntry, StoreError> {
        let id = self.write(|tx| tx.append_audit(entry))?;
        // Read back for the chain value it was given.
        self.tree(T::Audit)
            .get(id.to_be_bytes())?
            .map(|v| decode::<AuditEntry>(&id.to_be_bytes(), &v))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                kind: "audit",
                what: format!("entry #{id}"),
            })
    }

    /// Appends one entry without waiting for the disk: visible to readers (and chained) at
    /// once, durable with the next flush ([`Store::flush_audit`]). For entries written from
    /// the event loop (a refused API request, an IDS ban), where an fsync would stall SIP.
    pub fn append_audit_lazy(&self, entry: &AuditDraft) -> Result<Id, StoreError> {
        self.write_unflushed(|tx| tx.append_audit(entry))
    }

    /// Makes lazily appended entries durable.
    pub fn flush_audit(&self) -> Result<(), StoreError> {
        self.flush()
    }

    /// Appends, lazily, an entry for sipd acting as `by` now (an IDS ban); returns its id.
    pub fn audit_system(
        &self,
        by: &dyn Auditor,
        kind: AuditKind,
        target: String,
        result: AuditResult,
        reason: Option<String>,
        after: Option<serde_json::Value>,
    ) -> Result<Id, StoreError> {
        self.append_audit_lazy(&AuditDraft {
            ts_ms: by.ts_ms(),
            actor: by.username(),
            source: by.source(),
            kind,
            target: Some(target),
            result,
            reason,
            before: None,
            after,
        })
    }

    /// The id of the newest entry (0 when there is none): where a follower starts.
    pub fn last_audit_id(&self) -> Id {
        self.tree(T::Audit)
            .last()
            .ok()
            .flatten()
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// Entries matching `f`, oldest first. A corrupt entry is an `Err` in its place (it
    /// counts towards the limit).
    pub fn audit(&self, f: &AuditFilter) -> Vec<Result<AuditEntry, StoreError>> {
        let limit = if f.limit == 0 { usize::MAX } else { f.limit };
        self.tree(T::Audit)
            .range(f.after_id.saturating_add(1).to_be_bytes()..)
            .map(|kv| {
                let (k, v) = kv?;
                decode::<AuditEntry>(&k, &v)
            })
            .filter(|r| r.as_ref().map_or(true, |e| f.matches(e)))
            .take(limit)
            .collect()
    }
}

impl Store {
    /// Retention: removes audit entries dated before `cutoff_ms` (Unix ms), oldest first,
    /// stopping at the first that is not (never purging one that is within retention). Ids
    /// come from a counter, so they never go back. Each batch moves the hash chain's anchor
    /// past the entries it removes in the same transaction, so `sipd audit verify` never sees
    /// a gap between the anchor and the first entry left. Returns how many went; durable when
    /// this returns.
    pub fn purge_audit_before(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        /// Entries removed per transaction: a purge after a long retention may be large.
        const BATCH: usize = 1024;
        let mut ids = Vec::new();
        for kv in self.tree(T::Audit).iter() {
            let (k, v) = kv?;
            let e: AuditEntry = decode(&k, &v)?;
            if e.entry.ts_ms >= cutoff_ms {
                break;
            }
            ids.push(e.id);
        }
        for batch in ids.chunks(BATCH) {
            let Some(&last) = batch.last() else { continue };
            self.write(|tx| {
                tx.anchor_audit_purge(last)?;
                for id in batch {
                    tx.tree(T::Audit).remove(&id.to_be_bytes())?;
                }
                Ok(())
            })?;
        }
        if !ids.is_empty() {
            self.flush()?;
        }
        Ok(ids.len())
    }
}
