//! Refusals before authentication, counted instead of recorded one by one: a source that
//! has not proved who it is can make us write one row per (source, reason), never one per
//! packet, in a table of stated capacity. The shell keeps a copy in the store, written in
//! batches from [`RefusalTable::take_changes`] (never a write per refusal), and gives it back
//! with [`RefusalTable::restore`] at start, so a restart keeps the counts.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Record;

/// Why a request was refused before its sender authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// A known scanner's User-Agent.
    Scanner,
    /// No auth rule could authenticate the call (403).
    NoMatchingRule,
    /// A digest answer that did not prove the credentials (403).
    BadCredentials,
    /// An `Authorization` header that could not be read (400).
    BadAuthorization,
    /// A REGISTER from a source no `ip_only` rule names: we are not a registrar (403).
    NoRegistrar,
    /// An in-dialog request (BYE, INFO, …) or a CANCEL naming a dialog or transaction that
    /// does not exist (481).
    UnknownDialog,
    /// An in-dialog request or a CANCEL from someone other than the dialog's (or the
    /// INVITE's) own peer: a third party that learnt the Call-ID and tags (403).
    InDialogStranger,
    /// A call matching an auth rule that names a TLS client certificate, sent without a
    /// verified certificate carrying that name (403).
    TlsClientCert,
}

impl RefusalReason {
    /// The label `/metrics` and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Scanner => "scanner",
            RefusalReason::NoMatchingRule => "no_matching_rule",
            RefusalReason::BadCredentials => "bad_credentials",
            RefusalReason::BadAuthorization => "bad_authorization",
            RefusalReason::NoRegistrar => "no_registrar",
            RefusalReason::UnknownDialog => "unknown_dialog",
            RefusalReason::InDialogStranger => "in_dialog_stranger",
            RefusalReason::TlsClientCert => "tls_client_cert",
        }
    }

    /// Every reason, for counters by label.
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::Scanner,
        RefusalReason::NoMatchingRule,
        RefusalReason::BadCredentials,
        RefusalReason::BadAuthorization,
        RefusalReason::NoRegistrar,
        RefusalReason::UnknownDialog,
        RefusalReason::InDialogStranger,
        RefusalReason::TlsClientCert,
    ];
}

/// One (source, reason) of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalRow {
    /// The refused source, IPv4-mapped addresses as IPv4.
    pub source: IpAddr,
    /// Why it was refused.
    pub reason: RefusalReason,
    /// The status code of the last refusal.
    pub code: u16,
    /// Unix ms of the first refusal counted in this row.
    pub first_ms: u64,
    /// Unix ms of the latest one.
    pub last_ms: u64,
    /// Refusals counted in this row.
    pub count: u64,
}

impl RefusalRow {
    /// The key the store files this row under: one row per (source, reason).
    pub fn store_key(source: IpAddr, reason: RefusalReason) -> String {
        format!("{}|{}", source.to_canonical(), reason.as_str())
    }
}

impl Record for RefusalRow {
    const KIND: &'static str = "refusal";
    const VERSION: u32 = 1;
}

/// What changed in a [`RefusalTable`] since the last [`RefusalTable::take_changes`]: what
/// the shell writes to the store in one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalChanges {
    /// Rows added or counted since, as they are now.
    pub rows: Vec<RefusalRow>,
    /// Rows that gave way to others since (table full), by (source, reason).
    pub removed: Vec<(IpAddr, RefusalReason)>,
    /// The store's copy must be replaced by `rows` as a whole (`rows` is then the whole
    /// table and `removed` empty): more rows gave way than the table holds, or the stored
    /// copy held more than the capacity when it was restored.
    pub replace_all: bool,
}

impl RefusalChanges {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.removed.is_empty() && !self.replace_all
    }
}

/// Refusals by (source, reason), bounded: when full, the row seen longest ago gives way
/// (counted in `evicted`); totals by reason are kept apart, so `/metrics` stays exact.
#[derive(Debug)]
pub struct RefusalTable {
    capacity: usize,
    rows: HashMap<(IpAddr, RefusalReason), RefusalRow>,
    totals: HashMap<RefusalReason, u64>,
    evicted: u64,
    /// Rows counted since the last `take_changes` (at most the capacity).
    dirty: HashSet<(IpAddr, RefusalReason)>,
    /// Rows evicted since then; when it would outgrow the capacity, `replace_all` instead.
    removed: HashSet<(IpAddr, RefusalReason)>,
    replace_all: bool,
}

impl RefusalTable {
    /// The default capacity: a row is under 100 bytes, so about 400 KiB.
    pub const DEFAULT_CAPACITY: usize = 4_096;

    /// An empty table of at most `capacity` rows (at least 1).
    pub fn new(capacity: usize) -> RefusalTable {
        RefusalTable {
            capacity: capacity.max(1),
            rows: HashMap::new(),
            totals: HashMap::new(),
            evicted: 0,
            dirty: HashSet::new(),
            removed: HashSet::new(),
            replace_all: false,
        }
    }

    /// Counts one refusal at `now_ms` (Unix time).
    pub fn record(&mut self, now_ms: u64, source: IpAddr, reason: RefusalReason, code: u16) {
        *self.totals.entry(reason).or_default() += 1;
        let key = (source.to_canonical(), reason);
        if !self.rows.contains_key(&key)
            && self.rows.len() >= self.capacity
            && let Some(stalest) = self
                .rows
                .iter()
                .min_by_key(|(_, r)| r.last_ms)
                .map(|(k, _)| *k)
        {
            self.rows.remove(&stalest);
            self.evicted += 1;
            self.forget(stalest);
        }
        self.dirty.insert(key);
        let row = self.rows.entry(key).or_insert(RefusalRow {
            source: key.0,
            reason,
            code,
            first_ms: now_ms,
            last_ms: now_ms,
            count: 0,
        });
        row.count += 1;
        row.code = code;
        row.last_ms = row.last_ms.max(now_ms);
    }

    /// A row went: the store's copy must lose it too.
    fn forget(&mut self, key: (IpAddr, RefusalReason)) {
        self.dirty.remove(&key);
        if self.replace_all {
            return;
        }
        self.removed.insert(key);
        if self.removed.len() > self.capacity {
            // A spoofing flood evicting row after row: rewriting the table is cheaper.
            self.removed.clear();
            self.replace_all = true;
        }
    }

    /// Takes back rows the store kept from an earlier run (before any refusal is counted):
    /// the freshest `capacity` of them, as they were. Totals by reason stay at zero (they
    /// count since start, as `/metrics` counters do).
    pub fn restore(&mut self, mut rows: Vec<RefusalRow>) {
        rows.sort_by_key(|r| std::cmp::Reverse(r.last_ms));
        if rows.len() > self.capacity {
            // The capacity was lowered since: the store's copy is cut down at the next save.
            rows.truncate(self.capacity);
            self.replace_all = true;
        }
        for r in rows {
            let key = (r.source.to_canonical(), r.reason);
            if self.rows.len() < self.capacity || self.rows.contains_key(&key) {
                self.rows.insert(key, RefusalRow { source: key.0, ..r });
            }
        }
    }

    /// What changed since the last call, for the store; empty when nothing did.
    pub fn take_changes(&mut self) -> RefusalChanges {
        if std::mem::take(&mut self.replace_all) {
            self.dirty.clear();
            self.removed.clear();
            return RefusalChanges {
                rows: self.rows.values().cloned().collect(),
                removed: Vec::new(),
                replace_all: true,
            };
        }
        let rows = self
            .dirty
            .drain()
            .filter_map(|k| self.rows.get(&k).cloned())
            .collect();
        RefusalChanges {
            rows,
            removed: self.removed.drain().collect(),
            replace_all: false,
        }
    }

    /// The rows, most recently seen first.
    pub fn rows(&self) -> Vec<RefusalRow> {
        let mut v: Vec<RefusalRow> = self.rows.values().cloned().collect();
        v.sort_by(|a, b| {
            b.last_ms
                .cmp(&a.last_ms)
                .then(a.source.cmp(&b.source))
                .then(a.reason.cmp(&b.reason))
        });
        v
    }

    /// Rows held (at most the capacity).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no refusal is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows dropped because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Refusals counted since start, by reason (every reason, zeros included).
    pub fn totals(&self) -> Vec<(RefusalReason, u64)> {
        RefusalReason::ALL
            .iter()
            .map(|r| (*r, self.totals.get(r).copied().unwrap_or(0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_source_and_reason_and_bounded() {
        let mut t = RefusalTable::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for ms in 0..1000 {
            t.record(ms, a, RefusalReason::BadAuthorization, 400);
        }
        assert_eq!(t.len(), 1);
        let r = &t.rows()[0];
        assert_eq!((r.count, r.first_ms, r.last_ms), (1000, 0, 999));
        for i in 0..10u8 {
            let ip = IpAddr::from([198, 51, 100, i]);
            t.record(2000 + u64::from(i), ip, RefusalReason::NoRegistrar, 403);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.evicted(), 8);
        // The freshest stay; totals stay exact.
        assert_eq!(t.rows()[0].source, IpAddr::from([198, 51, 100, 9]));
        let totals: HashMap<_, _> = t.totals().into_iter().collect();
        assert_eq!(totals[&RefusalReason::BadAuthorization], 1000);
        assert_eq!(totals[&RefusalReason::NoRegistrar], 10);
    }

    /// The changes hold each row counted once, however often, and the rows that went; a
    /// flood that evicts more than the table holds asks for a rewrite instead of a list.
    #[test]
    fn changes_are_batched_and_bounded() {
        let mut t = RefusalTable::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for ms in 0..100 {
            t.record(ms, a, RefusalReason::UnknownDialog, 481);
        }
        let c = t.take_changes();
        assert_eq!(c.rows.len(), 1);
        assert_eq!(c.rows[0].count, 100);
        assert!(c.removed.is_empty() && !c.replace_all);
        assert!(t.take_changes().is_empty());
        t.record(200, b, RefusalReason::InDialogStranger, 403);
        t.record(
            300,
            "192.0.2.3".parse().unwrap(),
            RefusalReason::Scanner,
            403,
        );
        let c = t.take_changes();
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.removed, vec![(a, RefusalReason::UnknownDialog)]);
        for i in 0..10u8 {
            t.record(
                400,
                IpAddr::from([198, 51, 100, i]),
                RefusalReason::Scanner,
                403,
            );
        }
        let c = t.take_changes();
        assert!(c.replace_all);
        assert_eq!(c.rows.len(), 2);
        assert!(t.take_changes().is_empty());
    }

    /// Restored rows are the table again (freshest first when there are too many), and go
    /// on counting; totals start from zero.
    #[test]
    fn restored_rows_count_on() {
        let row = |last: u8, count| RefusalRow {
            source: IpAddr::from([192, 0, 2, last]),
            reason: RefusalReason::NoMatchingRule,
            code: 403,
            first_ms: 1,
            last_ms: u64::from(last),
            count,
        };
        let mut t = RefusalTable::new(2);
        t.restore(vec![row(1, 5), row(3, 7), row(2, 9)]);
        assert_eq!(t.len(), 2);
        assert!(t.take_changes().replace_all, "the stored copy is cut down");
        t.record(
            10,
            IpAddr::from([192, 0, 2, 3]),
            RefusalReason::NoMatchingRule,
            403,
        );
        let rows = t.rows();
        assert_eq!(
            (rows[0].count, rows[0].first_ms, rows[0].last_ms),
            (8, 1, 10)
        );
        assert_eq!(rows[1].count, 9);
        let totals: HashMap<_, _> = t.totals().into_iter().collect();
        assert_eq!(totals[&RefusalReason::NoMatchingRule], 1);
    }
}
