//! Refusals before authentication, counted instead of recorded one by one: a source that
//! has not proved who it is can make us write one row per (source, reason), never one per
//! packet, in a table of stated capacity.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

/// Why a request was refused before its sender authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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
        }
    }

    /// Every reason, for counters by label.
    pub const ALL: [RefusalReason; 5] = [
        RefusalReason::Scanner,
        RefusalReason::NoMatchingRule,
        RefusalReason::BadCredentials,
        RefusalReason::BadAuthorization,
        RefusalReason::NoRegistrar,
    ];
}

/// One (source, reason) of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Refusals by (source, reason), bounded: when full, the row seen longest ago gives way
/// (counted in `evicted`); totals by reason are kept apart, so `/metrics` stays exact.
#[derive(Debug)]
pub struct RefusalTable {
    capacity: usize,
    rows: HashMap<(IpAddr, RefusalReason), RefusalRow>,
    totals: HashMap<RefusalReason, u64>,
    evicted: u64,
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
        }
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
}
