//! The durable store: sled in the data directory.
//!
//! Every write goes through one multi-tree transaction and `flush()` before the call returns
//! `Ok`, so an acknowledged write survives a crash and a record and its indexes never
//! disagree. Records are versioned JSON (see `record.rs`). A record that fails to decode is
//! reported with its tree and key and never hides the others.

mod account;
mod alert_ack;
mod at_rest;
mod audit;
mod backup;
mod calls;
mod cdr;
mod check;
mod connection;
mod firewall;
mod login_template;
mod record;
mod refusal;
mod rule;
mod session;
mod staff;
mod tariff;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_backup;

use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

pub use alert_ack::{AlertAck, MAX_ACKS};
pub use at_rest::{AtRestError, owner_only, private_dir, realm_change_refusal};
pub use audit::chain::{Break, Broken, Verified};
pub use audit::{
    Actor, AuditDraft, AuditEntry, AuditFilter, AuditKind, AuditResult, Auditor, Change, System,
};
pub use backup::{BackupError, Manifest, Restored, restore, verify_backup};
pub use calls::CallWrite;
pub use check::{CheckReport, Problem};
pub use firewall::{FwAllow, FwDeny, ManualBan};
pub use login_template::LoginTemplate;
// The provisioned records and CDRs are the call core's types; the store persists them.
pub use session::{SessionRecord, SessionScope, TokenHash, token_hash_hex};
pub use sipd_core::records::{
    Account, AuthRule, BadAmount, Cdr, CdrDraft, Connection, Id, Invalid, MICROS_PER_UNIT, Matcher,
    Micros, Pattern, PatternError, Record, SipAuth, Tariff, Transport,
};
pub use staff::{
    HashFormat, MAX_ALLOWED_HOSTS, MAX_EMAIL_LEN, Role, Staff, TotpState, canonical_ip,
    normalize_email, username_key, valid_username,
};

use record::{decode, encode};

/// On-disk layout version of the store as a whole (trees and keys, not record bodies).
const SCHEMA: u32 = 1;
const NEXT_ID: &[u8] = b"next_id";
/// sled's page cache, at most.
const STORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Why a store operation failed. The management API answers `NotFound` with 404, `Conflict`
/// with 409 and `Invalid` with 400 naming the record; every other variant is the store's own
/// fault (500), and at start-up a reason for sipd to refuse to run.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database in the data directory.
    #[error("cannot open the store in {path}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// sled's reason.
        #[source]
        source: sled::Error,
    },
    /// Another process holds the store's file lock (still held after about a second).
    #[error("store in {path} is in use by another process (is another sipd running?)")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// A read, write or flush failed inside sled (disk full, I/O error).
    #[error("store I/O: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode: bad JSON, a body its type rejects, or a failed
    /// upgrade. Reported for that record only; the others stay readable.
    #[error("corrupt {kind} record at key {key}: {reason}")]
    Corrupt {
        /// The record's kind ([`Record::KIND`]).
        kind: &'static str,
        /// The record's key, printable (id, or id/name).
        key: String,
        /// What the decoder said.
        reason: String,
    },
    /// A record was written by a newer sipd (its version is above [`Record::VERSION`]):
    /// a downgrade, refused rather than misread.
    #[error(
        "{kind} record at key {key} has version {found}; this sipd reads up to {supported} (downgrade?)"
    )]
    NewerVersion {
        /// The record's kind ([`Record::KIND`]).
        kind: &'static str,
        /// The record's key, printable.
        key: String,
        /// The version on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The store's layout (trees and keys) is newer than this build: refused at open.
    #[error("store schema {found} is newer than this sipd understands ({SCHEMA})")]
    NewerSchema {
        /// The schema version on disk.
        found: u32,
    },
    /// A record could not be serialised to JSON; nothing was written.
    #[error("cannot encode {kind}: {reason}")]
    Encode {
        /// The record's kind.
        kind: &'static str,
        /// serde's reason.
        reason: String,
    },
    /// The record asked for does not exist (HTTP 404 in the API).
    #[error("{kind} {what} not found")]
    NotFound {
        /// The record's kind.
        kind: &'static str,
        /// How it was asked for (`#id` or a quoted name).
        what: String,
    },
    /// A unique name (account, SIP user, tariff, connection, staff user) is already taken by
    /// another record, or an audit id is already used (a counter behind the log); the write
    /// was undone (HTTP 409 in the API).
    #[error("{what} is already used by {kind} {by}")]
    Conflict {
        /// The kind of the record that owns it.
        kind: &'static str,
        /// The contested name (quoted) or entry.
        what: String,
        /// Its owner, as `#id`.
        by: String,
    },
    /// A record breaks its type's rules ([`Invalid`] from the call core, or a store-side
    /// check); the write was undone (HTTP 400 in the API).
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// The record's kind.
        kind: &'static str,
        /// The field at fault and why.
        reason: String,
    },
}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> Self {
        StoreError::Invalid {
            kind: e.kind,
            reason: format!("{}: {}", e.field, e.reason),
        }
    }
}

/// What building an account looks up, answered from the stored records.
impl sipd_core::records::Lookup for Store {
    fn tariff_id(&self, name: &str) -> Result<Option<Id>, String> {
        self.tariff_by_name(name)
            .map(|t| t.map(|t| t.id))
            .map_err(|e| e.to_string())
    }

    fn sip_user_owner(&self, username: &str) -> Result<Option<(Id, String)>, String> {
        self.account_by_sip_user(username)
            .map(|a| a.map(|a| (a.id, a.name)))
            .map_err(|e| e.to_string())
    }
}

/// The trees taking part in transactions, by position in `Store::trees`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum T {
    Accounts,
    AccountNames,
    SipUsers,
    Rules,
    Tariffs,
    TariffNames,
    Connections,
    ConnectionNames,
    Meta,
    // Management plane (staff, sessions, audit): in the same transactions as the rest, so
    // a change and its audit entry commit together.
    Staff,
    StaffNames,
    Sessions,
    Audit,
    /// Firewall rules and manual bans made through the management API (`firewall.rs`).
    Firewall,
    /// Acknowledged alerts (`alert_ack.rs`): with their audit entry in one transaction.
    AlertAcks,
    /// CDRs, in the transactional set too so a call's debit, CDR and the removal of its saved
    /// record commit together (`calls.rs`); `Store::cdrs` is the same tree.
    Cdrs,
    /// Calls in progress, saved so the next run adopts them (`calls.rs`).
    Calls,
    /// Password templates of customer logins, per account (`login_template.rs`).
    LoginTemplates,
}

const TREE_NAMES: [&str; 18] = [
    "accounts",
    "accounts_by_name",
    "accounts_by_sip_user",
    "rules",
    "tariffs",
    "tariffs_by_name",
    "connections",
    "connections_by_name",
    "meta",
    "staff",
    "staff_by_username",
    "sessions",
    "audit",
    "firewall",
    "alert_acks",
    "cdrs",
    "calls",
    "login_templates",
];

/// The one handle on the data directory's sled database: provisioned records, staff, sessions,
/// audit, firewall changes and CDRs. Shared (`Arc`) by the server's tasks (store writer,
/// retention, bans) and the management API; sled serialises the writes.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    trees: Vec<Tree>,
    /// Append-only; outside the transactional set because nothing else changes with a CDR.
    cdrs: Tree,
    /// The refusal table's copy (`refusal.rs`): outside the transactional set too.
    refusals: Tree,
    /// Debits for the cluster's shared balance, written with the settle that made them
    /// (`calls.rs`) while [`Store::set_debit_outbox`] is on; `shared_limits` sends them.
    cluster_debits: Tree,
    /// The cluster's provisioning journal (`cluster::prov`): this node's newest version of
    /// every shared record, outside the transactional set (written after the records).
    cluster_prov: Tree,
    /// Whether settles queue their debit in `cluster_debits`.
    debit_outbox: std::sync::atomic::AtomicBool,
    /// Held while a CDR's id (one past the last key) is chosen and written, so two writers
    /// never race for an id inside a transaction that cannot read the tree's last key.
    cdr_ids: std::sync::Mutex<()>,
    /// Write paths hold it shared; a backup holds it exclusive while it copies, so the copy
    /// is one point in time across every tree (see `backup.rs`).
    gate: std::sync::RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// What a [`Store::write`] closure returns: `Abort(e)` (via [`abort_tx`]) undoes the whole
/// transaction and `write` returns `e`.
pub type TxResult<R> = Result<R, ConflictableTransactionError<StoreError>>;

pub(crate) fn abort<R>(e: impl Into<StoreError>) -> TxResult<R> {
    Err(ConflictableTransactionError::Abort(e.into()))
}

/// Ends a [`Store::write`] closure with `e`, undoing everything it wrote.
pub fn abort_tx<R>(e: StoreError) -> TxResult<R> {
    abort(e)
}

/// A write in progress; see [`Store::write`].
pub struct Tx<'a> {
    trees: &'a [TransactionalTree],
}

impl Tx<'_> {
    fn tree(&self, t: T) -> &TransactionalTree {
        &self.trees[t as usize]
    }

    /// Small, dense ids operators can type: a counter in `meta`, advanced in the same
    /// transaction as the record that takes it. 0 is never handed out, so it can mean "not
    /// yet stored" in records.
    pub(crate) fn new_id(&self) -> TxResult<Id> {
        let meta = self.tree(T::Meta);
        let last = meta.get(NEXT_ID)?.and_then(|v| id_from(&v)).unwrap_or(0);
        let id = last + 1;
        meta.insert(NEXT_ID, &id.to_be_bytes())?;
        Ok(id)
    }

    pub(crate) fn get<R: Record>(&self, t: T, key: &[u8]) -> TxResult<Option<R>> {
        match self.tree(t).get(key)? {
            None => Ok(None),
            Some(v) => decode(key, &v).map(Some).or_else(abort),
        }
    }

    /// The record being replaced, if readable. A corrupt one is being repaired by this very
    /// write, so it must not block it; its index entries are claimed again by the new one.
    pub(crate) fn replaced<R: Record>(&self, t: T, key: &[u8]) -> TxResult<Option<R>> {
        match self.get(t, key) {
            Err(ConflictableTransactionError::Abort(StoreError::Corrupt { kind, key, reason })) => {
                tracing::warn!(kind, key, reason, "overwriting a corrupt record");
                Ok(None)
            }
            other => other,
        }
    }

    pub(crate) fn put<R: Record>(&self, t: T, key: &[u8], r: &R) -> TxResult<()> {
        let bytes = encode(r).or_else(abort)?;
        self.tree(t).insert(key, bytes)?;
        Ok(())
    }

    pub(crate) fn index_get(&self, t: T, name: &str) -> TxResult<Option<Id>> {
        Ok(self.tree(t).get(name.as_bytes())?.and_then(|v| id_from(&v)))
    }

    /// Points `name` at `id` in index `t`, refusing to take a name another record owns.
    pub(crate) fn index_claim(&self, t: T, kind: &'static str, name: &str, id: Id) -> TxResult<()> {
        if let Some(owner) = self.index_get(t, name)?
            && owner != id
        {
            return abort(StoreError::Conflict {
                kind,
                what: format!("{name:?}"),
                by: format!("#{owner}"),
            });
        }
        self.tree(t).insert(name.as_bytes(), &id.to_be_bytes())?;
        Ok(())
    }

    pub(crate) fn index_release(&self, t: T, name: &str) -> TxResult<()> {
        self.tree(t).remove(name.as_bytes())?;
        Ok(())
    }
}

/// sled releases its file lock from a background thread shortly after the last handle is
/// dropped, so a reopen in the same process (tests, a future in-process restart) may find it
/// still held for a moment. Another process holding it is reported as such after a second.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let mut tries = 0;
    loop {
        // No background flusher: every write is flushed before it is acknowledged anyway.
        // sled keeps pages it read or wrote in a cache of up to 1 GiB by default: with CDRs
        // appended all day that reads as a leak (the soak saw RSS grow ~2 KiB per call). A
        // bounded cache keeps memory flat; reads of old CDRs go to the page cache instead.
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .cache_capacity(STORE_CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                tries += 1;
                if tries >= 40 {
                    return Err(StoreError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

pub(crate) fn id_from(v: &[u8]) -> Option<Id> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = open_db(dir)?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema")? {
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).map_err(|_| {
                    StoreError::Corrupt {
                        kind: "meta",
                        key: "schema".into(),
                        reason: format!("{} bytes, expected 4", v.len()),
                    }
                })?;
                if found > SCHEMA {
                    return Err(StoreError::NewerSchema { found });
                }
            }
            None => {
                meta.insert("schema", &SCHEMA.to_be_bytes())?;
                db.flush()?;
            }
        }
        let trees = TREE_NAMES
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        let cdrs = db.open_tree("cdrs")?;
        let refusals = db.open_tree("refusals")?;
        let cluster_debits = db.open_tree(crate::shared_limits::OUTBOX_TREE)?;
        let cluster_prov = db.open_tree(crate::cluster::prov::JOURNAL_TREE)?;
        tracing::debug!(path = %dir.display(), "store opened");
        let store = Store {
            db,
            path: dir.to_path_buf(),
            trees,
            cdrs,
            refusals,
            cluster_debits,
            cluster_prov,
            debit_outbox: std::sync::atomic::AtomicBool::new(false),
            cdr_ids: std::sync::Mutex::new(()),
            gate: std::sync::RwLock::new(()),
        };
        store.migrate_audit_chain()?;
        Ok(store)
    }

    /// The cluster's provisioning journal (see `cluster::prov`).
    pub fn cluster_prov(&self) -> sled::Tree {
        self.cluster_prov.clone()
    }

    /// The data directory the store was opened in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` as one atomic transaction over all configuration trees, then flushes. `f`
    /// may run more than once on conflict, so it must not have side effects outside `tx`.
    pub fn write<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R, StoreError> {
        let r = self.write_unflushed(f)?;
        self.flush()?;
        Ok(r)
    }

    /// [`Store::write`] without the flush: for batches that flush once at the end and only
    /// then report success.
    pub(crate) fn write_unflushed<R>(
        &self,
        f: impl Fn(&Tx<'_>) -> TxResult<R>,
    ) -> Result<R, StoreError> {
        let _shared = self.shared_gate();
        self.trees[..]
            .transaction(|trees| f(&Tx { trees }))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })
    }

    /// Held by every write (shared) so a backup (exclusive) sees none half done. Any write
    /// path outside [`Store::write_unflushed`] must hold it across all its tree writes.
    pub(crate) fn shared_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A panic ends the process (see `crate::panic`), so a poisoned lock guards nothing
        // half written that matters here.
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held by a backup while it copies: no write is in progress or starts meanwhile.
    pub(crate) fn exclusive_gate(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // One log backs every tree, so flushing the db makes all of them durable.
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, t: T) -> &Tree {
        &self.trees[t as usize]
    }

    fn get<R: Record>(&self, t: T, key: &[u8]) -> Result<Option<R>, StoreError> {
        self.tree(t).get(key)?.map(|v| decode(key, &v)).transpose()
    }

    fn by_index<R: Record>(
        &self,
        index: T,
        records: T,
        name: &str,
    ) -> Result<Option<R>, StoreError> {
        match self.tree(index).get(name.as_bytes())? {
            None => Ok(None),
            Some(v) => {
                let id = id_from(&v).ok_or_else(|| StoreError::Corrupt {
                    kind: TREE_NAMES[index as usize],
                    key: name.into(),
                    reason: "index entry is not an id".into(),
                })?;
                self.get(records, &id.to_be_bytes())
            }
        }
    }

    /// Every record of a tree, in key order; a corrupt one is an `Err` in its place.
    fn scan<R: Record>(&self, t: T, prefix: &[u8]) -> Vec<Result<R, StoreError>> {
        self.tree(t)
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
}
