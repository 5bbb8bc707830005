//! One shared provisioning record and this node's journal of them.
//!
//! A record is one tariff, connection or account (with its auth rules: they have no name of
//! their own across the cluster), keyed cluster-wide by kind and name (`account:carrier-b`),
//! with a version and the node that made it; a deleted one is a tombstone (no body). The
//! journal (sled tree [`JOURNAL_TREE`]) holds this node's newest record of every key, made
//! here or applied here; it is also the durable outbox: what it holds newer than Redis goes
//! up at the next resync, even after a crash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provision::{AccountSpec, ConnectionSpec, ProvisionError, ProvisionFile, TariffSpec};
use crate::store::{Store, StoreError};

/// The store's tree holding the journal.
pub const JOURNAL_TREE: &str = "cluster_prov";

/// Set once the journal took the store's records in (the first capture ever).
const INIT: &[u8] = b"!init";

/// What a shared record holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec", rename_all = "lowercase")]
pub enum Body {
    /// A tariff.
    Tariff(TariffSpec),
    /// An upstream connection.
    Connection(ConnectionSpec),
    /// An account with its auth rules; SIP credentials as HA1 only. Its balance is the
    /// opening balance of a node that does not have the account yet, never applied to an
    /// existing one (money is not last-writer-wins).
    Account(AccountSpec),
}

impl Body {
    /// The cluster-wide key: kind and name.
    pub fn key(&self) -> String {
        match self {
            Body::Tariff(t) => format!("tariff:{}", t.name),
            Body::Connection(c) => format!("connection:{}", c.name),
            Body::Account(a) => format!("account:{}", a.name),
        }
    }

    /// Equal as far as sharing goes: an account's balance changes with every call and is
    /// not shared.
    pub fn same(&self, other: &Body) -> bool {
        match (self, other) {
            (Body::Account(a), Body::Account(b)) => {
                AccountSpec {
                    balance: None,
                    ..a.clone()
                } == AccountSpec {
                    balance: None,
                    ..b.clone()
                }
            }
            (a, b) => a == b,
        }
    }
}

/// One record's newest version as a node knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvRecord {
    /// `<kind>:<name>`.
    pub key: String,
    /// Unix ms of the change, raised above every version of the key seen before (so it wins
    /// over what it changes even when clocks differ); 0 for records a node held before it
    /// ever shared (see [`ProvRecord::newer_than`]).
    pub version: u64,
    /// The node that made it; breaks ties.
    pub origin: String,
    /// `None`: deleted (a tombstone, so a node still holding the record does not bring it
    /// back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

impl ProvRecord {
    /// Whether this one wins over `other` (a higher version, or the same and a higher origin).
    /// A record of version 0 (what a node held before it ever shared) never does: nodes
    /// provisioned apart keep their own copy until someone changes it; it only reaches a
    /// node that has no record of the key.
    pub fn newer_than(&self, other: &ProvRecord) -> bool {
        self.version > 0 && (self.version, &self.origin) > (other.version, &other.origin)
    }

    /// Why a record heard from Redis must not be applied, if it must not: its body names
    /// another record than its key (it would skip that record's version order, and this node
    /// would then pass it on as its own change), or its version is further ahead of this
    /// node's clock than any skew between nodes explains (it would win every later change
    /// of the key; at `u64::MAX` no change could follow it).
    pub fn refused(&self, now_ms: u64) -> Option<&'static str> {
        if self.body.as_ref().is_some_and(|b| b.key() != self.key) {
            return Some("its body names another record than its key");
        }
        (self.version > now_ms.saturating_add(MAX_AHEAD_MS))
            .then_some("its version is more than a day ahead of this node's clock")
    }
}

/// How far a version may be ahead of this node's clock: clocks of nodes kept by NTP differ
/// by far less; versions raised above older ones move ahead by 1 ms per change only.
pub const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store's tree.
    #[error("journal: {0}")]
    Sled(#[from] sled::Error),
    /// The store's records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Exporting the store's records.
    #[error(transparent)]
    Export(#[from] ProvisionError),
    /// A journal entry does not decode.
    #[error("journal entry {0}: {1}")]
    Corrupt(String, serde_json::Error),
}

/// This node's journal.
pub struct Journal {
    tree: sled::Tree,
}

impl Journal {
    /// The journal in `store`.
    pub fn of(store: &Store) -> Journal {
        Journal {
            tree: store.cluster_prov(),
        }
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<ProvRecord>, JournalError> {
        match self.tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| JournalError::Corrupt(key.to_owned(), e)),
        }
    }

    /// Every record (an entry that does not decode is skipped with a warning: its key is
    /// captured again as new).
    pub fn all(&self) -> Result<BTreeMap<String, ProvRecord>, JournalError> {
        let mut out = BTreeMap::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            if k.starts_with(b"!") {
                continue;
            }
            match serde_json::from_slice::<ProvRecord>(&v) {
                Ok(r) => {
                    out.insert(r.key.clone(), r);
                }
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "cluster: unreadable journal entry")
                }
            }
        }
        Ok(out)
    }

    /// Writes `records` and flushes.
    pub fn put(&self, records: &[ProvRecord]) -> Result<(), JournalError> {
        let mut b = sled::Batch::default();
        for r in records {
            let v = serde_json::to_vec(r).map_err(|e| JournalError::Corrupt(r.key.clone(), e))?;
            b.insert(r.key.as_bytes(), v);
        }
        b.insert(INIT, &[1u8][..]);
        self.tree.apply_batch(b)?;
        self.tree.flush()?;
        Ok(())
    }

    /// The changes made to the store since the journal last saw it (through the API, or
    /// `sipd import` while the node was stopped): each record that differs from its journal
    /// entry gets a version above it, made by `node`; a record gone from the store becomes a
    /// tombstone. A rename is both: a tombstone of the old name and the new one. Written to
    /// the journal before returning, so a crash does not lose them. At the very first
    /// capture every record gets version 0 (see [`ProvRecord::newer_than`]).
    pub fn capture(
        &self,
        store: &Store,
        node: &str,
        now: u64,
    ) -> Result<Vec<ProvRecord>, JournalError> {
        let first = self.tree.get(INIT)?.is_none();
        let local = bodies(crate::provision::export(store)?);
        let journal = self.all()?;
        let mut out = Vec::new();
        let version = |old: Option<&ProvRecord>| {
            if first {
                0
            } else {
                old.map_or(now, |o| now.max(o.version.saturating_add(1)))
            }
        };
        for (key, body) in local.iter() {
            let old = journal.get(key);
            if old
                .and_then(|o| o.body.as_ref())
                .is_some_and(|b| b.same(body))
            {
                continue;
            }
            out.push(ProvRecord {
                key: key.clone(),
                version: version(old),
                origin: node.to_owned(),
                body: Some(body.clone()),
            });
        }
        for (key, old) in &journal {
            if old.body.is_some() && !local.contains_key(key) {
                out.push(ProvRecord {
                    key: key.clone(),
                    version: version(Some(old)),
                    origin: node.to_owned(),
                    body: None,
                });
            }
        }
        if first || !out.is_empty() {
            self.put(&out)?;
        }
        Ok(out)
    }
}

/// A provisioning file's records by key.
pub fn bodies(file: ProvisionFile) -> BTreeMap<String, Body> {
    let all = file
        .tariffs
        .into_iter()
        .map(Body::Tariff)
        .chain(file.connections.into_iter().map(Body::Connection))
        .chain(file.accounts.into_iter().map(Body::Account));
    all.map(|b| (b.key(), b)).collect()
}

/// The store's record of `key` now, as the journal holds it.
pub fn local_body(store: &Store, key: &str) -> Result<Option<Body>, JournalError> {
    let Some((kind, name)) = key.split_once(':') else {
        return Ok(None);
    };
    Ok(match kind {
        "tariff" => store
            .tariff_by_name(name)?
            .map(|t| Body::Tariff(TariffSpec::from(&t))),
        "connection" => store
            .connection_by_name(name)?
            .map(|c| Body::Connection(ConnectionSpec::from(&c))),
        "account" => match store.account_by_name(name)? {
            None => None,
            Some(a) => {
                let rules = store
                    .rules_of(a.id)
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                let tariff = match a.tariff_id {
                    Some(id) => store.tariff(id)?.map(|t| t.name),
                    None => None,
                };
                let rules = rules.iter().map(crate::provision::RuleSpec::from).collect();
                Some(Body::Account(AccountSpec::of(&a, tariff, rules)))
            }
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tariff(name: &str) -> Body {
        Body::Tariff(
            serde_json::from_value(serde_json::json!({"name": name, "rate_per_minute": "0.01"}))
                .unwrap(),
        )
    }

    #[test]
    fn a_record_naming_another_or_from_the_far_future_is_refused() {
        let now = 1_765_000_000_000;
        let ok = ProvRecord {
            key: "tariff:std".into(),
            version: now + 5_000,
            origin: "node-1".into(),
            body: Some(tariff("std")),
        };
        assert_eq!(ok.refused(now), None, "a little clock skew is fine");
        let tomb = ProvRecord {
            key: "account:victim".into(),
            body: None,
            ..ok.clone()
        };
        assert_eq!(
            tomb.refused(now),
            None,
            "a tombstone has no body to disagree"
        );
        let smuggled = ProvRecord {
            key: "tariff:other".into(),
            ..ok.clone()
        };
        assert!(smuggled.refused(now).is_some());
        for version in [now + MAX_AHEAD_MS + 1, u64::MAX] {
            let ahead = ProvRecord {
                version,
                ..ok.clone()
            };
            assert!(ahead.refused(now).is_some(), "{version}");
        }
    }

    #[test]
    fn records_round_trip_and_order() {
        let a = ProvRecord {
            key: "tariff:std".into(),
            version: 5,
            origin: "node-1".into(),
            body: Some(tariff("std")),
        };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<ProvRecord>(&text).unwrap(), a);
        let tomb = ProvRecord {
            body: None,
            origin: "node-2".into(),
            ..a.clone()
        };
        assert!(tomb.newer_than(&a), "a tie goes to the higher origin");
        assert!(!a.newer_than(&tomb));
        let base = |origin: &str| ProvRecord {
            version: 0,
            origin: origin.into(),
            ..a.clone()
        };
        assert!(
            !base("node-9").newer_than(&base("node-1")),
            "a node's own copy stays until changed"
        );
    }
}
