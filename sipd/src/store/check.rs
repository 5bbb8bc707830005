//! `sipd store check`: every tree and record walked, with sipd stopped. Reports records that
//! do not decode, keys that are not what their tree keys by, name indexes that point nowhere
//! or at the wrong record and records missing from them, id counters behind the records, the
//! schema and the audit chain. `--repair` fixes what can be fixed without losing anything:
//! an undecodable record moves, bytes untouched, into the `quarantine` tree (with its tree,
//! key and why), an index is rebuilt from its records, a counter is raised past the records.
//! What it cannot fix (a broken audit chain, two records claiming one name) it says.
//!
//! The walk goes over `db.tree_names()`, so a tree added later is covered: a tree this file
//! does not know is checked for the record envelope (`{"v": …, "d": …}`) only.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sled::Transactional;

use super::audit::AuditEntry;
use super::record::{decode, key_text};
use super::{
    Account, AlertAck, AuthRule, Cdr, Connection, FwAllow, FwDeny, Id, ManualBan, SCHEMA,
    SessionRecord, Staff, Store, StoreError, Tariff, id_from, username_key,
};
use sipd_core::records::RefusalRow;

/// The tree where `--repair` keeps records it took out of their tree.
pub const QUARANTINE: &str = "quarantine";

/// One thing wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The tree it is in.
    pub tree: String,
    /// The key, printable (an id, id/name, or the text of the key).
    pub key: String,
    /// What is wrong.
    pub what: String,
    /// What `--repair` did about it; `None` when it is still there.
    pub repaired: Option<String>,
}

/// What a check found: record counts per tree and the problems.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Entries per tree, as found (before any repair).
    pub trees: BTreeMap<String, u64>,
    /// Every problem, repaired or not.
    pub problems: Vec<Problem>,
    /// Records kept in the quarantine tree (from this or earlier repairs).
    pub quarantined: u64,
}

impl CheckReport {
    /// Problems still in the store (not repaired).
    pub fn left(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.repaired.is_none())
            .count()
    }
}

/// A name index: the tree, the records it points into, and the names a record takes in it.
struct Index {
    tree: &'static str,
    records: &'static str,
    names: fn(&Decoded) -> Vec<String>,
}

const INDEXES: [Index; 5] = [
    Index {
        tree: "accounts_by_name",
        records: "accounts",
        names: |d| match d {
            Decoded::Account(a) => vec![a.name.clone()],
            _ => vec![],
        },
    },
    Index {
        tree: "accounts_by_sip_user",
        records: "accounts",
        names: |d| match d {
            Decoded::Account(a) => a.sip.iter().map(|s| s.username.clone()).collect(),
            _ => vec![],
        },
    },
    Index {
        tree: "tariffs_by_name",
        records: "tariffs",
        names: |d| match d {
            Decoded::Tariff(t) => vec![t.name.clone()],
            _ => vec![],
        },
    },
    Index {
        tree: "connections_by_name",
        records: "connections",
        names: |d| match d {
            Decoded::Connection(c) => vec![c.name.clone()],
            _ => vec![],
        },
    },
    Index {
        tree: "staff_by_username",
        records: "staff",
        names: |d| match d {
            Decoded::Staff(s) => vec![username_key(&s.username)],
            _ => vec![],
        },
    },
];

/// A record that decoded, kept for the index checks.
enum Decoded {
    Account(Account),
    Tariff(Tariff),
    Connection(Connection),
    Staff(Staff),
    Other,
}

/// Decodes `v` as the record `tree` holds at `key`. `None`: not a record tree.
fn decode_in(tree: &str, key: &[u8], v: &[u8]) -> Option<Result<Decoded, String>> {
    fn id_key(key: &[u8], id: Id) -> Result<(), String> {
        match id_from(key) {
            None => Err("key is not an id".into()),
            Some(k) if k != id => Err(format!("key is id {k} but the record says {id}")),
            Some(_) => Ok(()),
        }
    }
    fn as_text<E: std::fmt::Display>(e: E) -> String {
        e.to_string()
    }
    let r = match tree {
        "accounts" => decode::<Account>(key, v)
            .map_err(as_text)
            .and_then(|a| id_key(key, a.id).map(|()| Decoded::Account(a))),
        "tariffs" => decode::<Tariff>(key, v)
            .map_err(as_text)
            .and_then(|t| id_key(key, t.id).map(|()| Decoded::Tariff(t))),
        "connections" => decode::<Connection>(key, v)
            .map_err(as_text)
            .and_then(|c| id_key(key, c.id).map(|()| Decoded::Connection(c))),
        "staff" => decode::<Staff>(key, v)
            .map_err(as_text)
            .and_then(|s| id_key(key, s.id).map(|()| Decoded::Staff(s))),
        "cdrs" => decode::<Cdr>(key, v)
            .map_err(as_text)
            .and_then(|c| id_key(key, c.id).map(|()| Decoded::Other)),
        "audit" => decode::<AuditEntry>(key, v)
            .map_err(as_text)
            .and_then(|e| id_key(key, e.id).map(|()| Decoded::Other)),
        "rules" => decode::<AuthRule>(key, v).map_err(as_text).and_then(|r| {
            let want = [&r.account_id.to_be_bytes()[..], r.name.as_bytes()].concat();
            if want == key {
                Ok(Decoded::Other)
            } else {
                Err(format!(
                    "key is not the rule's account and name ({}/{})",
                    r.account_id, r.name
                ))
            }
        }),
        "sessions" => decode::<SessionRecord>(key, v)
            .map_err(as_text)
            .map(|_| Decoded::Other),
        "login_templates" => decode::<super::LoginTemplate>(key, v)
            .map_err(as_text)
            .map(|_| Decoded::Other),
        "alert_acks" => decode::<AlertAck>(key, v)
            .map_err(as_text)
            .map(|_| Decoded::Other),
        "refusals" => decode::<RefusalRow>(key, v)
            .map_err(as_text)
            .map(|_| Decoded::Other),
        "firewall" => {
            let r = if key.starts_with(b"allow/") {
                decode::<FwAllow>(key, v).map(drop)
            } else if key.starts_with(b"deny/") {
                decode::<FwDeny>(key, v).map(drop)
            } else if key.starts_with(b"ban/") {
                decode::<ManualBan>(key, v).map(drop)
            } else {
                return Some(Err("key has no known firewall prefix".into()));
            };
            r.map_err(as_text).map(|()| Decoded::Other)
        }
        _ => return None,
    };
    Some(r)
}

/// The record envelope every record tree uses, for trees this build does not know.
fn envelope_ok(v: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[allow(dead_code)]
        v: u32,
        #[allow(dead_code)]
        d: serde_json::Value,
    }
    serde_json::from_slice::<Envelope>(v)
        .map(drop)
        .map_err(|e| format!("not a record envelope: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How a quarantined record is kept: everything needed to put it back by hand.
#[derive(Serialize)]
struct Quarantined<'a> {
    tree: &'a str,
    key: String,
    key_hex: String,
    value_hex: String,
    reason: &'a str,
    ts_ms: u64,
}

impl Store {
    /// Walks every tree and record (see the module doc); with `repair`, fixes what it can
    /// and flushes. Meant for a store no running sipd holds.
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let _quiet = self.exclusive_gate();
        let mut report = CheckReport::default();
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        names.sort();
        // Decoded records of the indexed trees, by key, for the index checks.
        let mut decoded: HashMap<&'static str, BTreeMap<Id, Decoded>> = HashMap::new();
        let mut max_id: Id = 0;
        for name in &names {
            let tree = self.db.open_tree(name)?;
            report.trees.insert(name.clone(), tree.len() as u64);
            if name == QUARANTINE {
                report.quarantined = tree.len() as u64;
                continue;
            }
            if name == "meta" || INDEXES.iter().any(|i| i.tree == name) {
                continue;
            }
            if name.as_bytes() == b"__sled__default" && tree.is_empty() {
                continue;
            }
            for kv in tree.iter() {
                let (k, v) = kv?;
                let outcome = match decode_in(name, &k, &v) {
                    Some(r) => r,
                    None => envelope_ok(&v).map(|()| Decoded::Other),
                };
                match outcome {
                    Ok(d) => {
                        let id = match &d {
                            Decoded::Account(a) => Some(a.id),
                            Decoded::Tariff(t) => Some(t.id),
                            Decoded::Connection(c) => Some(c.id),
                            Decoded::Staff(s) => Some(s.id),
                            Decoded::Other => None,
                        };
                        if name == "rules"
                            && let Ok(r) = decode::<AuthRule>(&k, &v)
                        {
                            max_id = max_id.max(r.id);
                        }
                        if let Some(id) = id {
                            max_id = max_id.max(id);
                            if let Some(i) = INDEXES.iter().find(|i| i.records == name) {
                                decoded.entry(i.records).or_default().insert(id, d);
                            }
                        }
                    }
                    Err(why) => {
                        let repaired = if repair {
                            self.quarantine(&tree, name, &k, &v, &why)?;
                            Some("moved to the quarantine tree".to_owned())
                        } else {
                            None
                        };
                        report.problems.push(Problem {
                            tree: name.clone(),
                            key: key_text(&k),
                            what: why,
                            repaired,
                        });
                    }
                }
            }
        }
        for index in &INDEXES {
            let empty = BTreeMap::new();
            let records = decoded.get(index.records).unwrap_or(&empty);
            self.check_index(index, records, repair, &mut report)?;
        }
        self.check_meta(max_id, repair, &mut report)?;
        let chain = self.verify_audit()?;
        if let Some(b) = &chain.broken {
            report.problems.push(Problem {
                tree: "audit".into(),
                key: b.id.to_string(),
                what: format!(
                    "audit chain broken ({:?}): {}; the chain is tamper evidence, so it is \
                     reported and never rewritten (see `sipd audit verify`)",
                    b.problem, b.detail
                ),
                repaired: None,
            });
        }
        if repair {
            self.flush()?;
        }
        Ok(report)
    }

    /// Moves one record, bytes untouched, into the quarantine tree, atomically.
    fn quarantine(
        &self,
        tree: &sled::Tree,
        name: &str,
        key: &[u8],
        value: &[u8],
        why: &str,
    ) -> Result<(), StoreError> {
        let q = self.db.open_tree(QUARANTINE)?;
        let kept = serde_json::to_vec(&Quarantined {
            tree: name,
            key: key_text(key),
            key_hex: hex(key),
            value_hex: hex(value),
            reason: why,
            ts_ms: sipd_core::records::unix_ms(std::time::SystemTime::now()),
        })
        .map_err(|e| StoreError::Encode {
            kind: "quarantine",
            reason: e.to_string(),
        })?;
        // Keyed by origin so a record is never kept twice and two never collide.
        let qkey = [name.as_bytes(), b"\0", key].concat();
        (tree, &q)
            .transaction(|(t, q)| {
                q.insert(qkey.as_slice(), kept.as_slice())?;
                t.remove(key)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::ReportableBug("quarantine aborted".into()))
                }
            })
    }

    fn check_index(
        &self,
        index: &Index,
        records: &BTreeMap<Id, Decoded>,
        repair: bool,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        let tree = self.db.open_tree(index.tree)?;
        let mut wanted: BTreeMap<String, Id> = BTreeMap::new();
        let mut clashes = Vec::new();
        for (id, d) in records {
            for n in (index.names)(d) {
                if let Some(other) = wanted.insert(n.clone(), *id) {
                    clashes.push((n, other, *id));
                }
            }
        }
        let mut found = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let what = match (id_from(&v), wanted.get(&name)) {
                (None, _) => Some("index entry is not an id".to_owned()),
                (Some(id), None) if records.contains_key(&id) => Some(format!(
                    "points at {} #{id}, which does not have this name",
                    index.records
                )),
                (Some(id), None) => Some(format!(
                    "points at {} #{id}, which does not exist or does not decode",
                    index.records
                )),
                (Some(id), Some(w)) if id != *w => Some(format!(
                    "points at {} #{id}, but the record with this name is #{w}",
                    index.records
                )),
                _ => None,
            };
            if let Some(what) = what {
                found.push((name, what));
            }
        }
        let present: std::collections::BTreeSet<String> = tree
            .iter()
            .keys()
            .filter_map(Result::ok)
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        for (id, d) in records {
            for n in (index.names)(d) {
                if !present.contains(&n) {
                    found.push((
                        n,
                        format!("{} #{id} is missing from this index", index.records),
                    ));
                }
            }
        }
        let can_fix = clashes.is_empty();
        for (name, what) in &found {
            report.problems.push(Problem {
                tree: index.tree.into(),
                key: name.clone(),
                what: what.clone(),
                repaired: (repair && can_fix).then(|| "index rebuilt from its records".into()),
            });
        }
        for (name, a, b) in &clashes {
            report.problems.push(Problem {
                tree: index.records.into(),
                key: name.clone(),
                what: format!(
                    "#{a} and #{b} both claim this name in {}: rename or delete one (the \
                     index cannot be rebuilt until then)",
                    index.tree
                ),
                repaired: None,
            });
        }
        if repair && can_fix && !found.is_empty() {
            let mut batch = sled::Batch::default();
            for k in present {
                batch.remove(k.as_bytes());
            }
            for (id, d) in records {
                for n in (index.names)(d) {
                    batch.insert(n.as_bytes(), &id.to_be_bytes());
                }
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    fn check_meta(
        &self,
        max_id: Id,
        repair: bool,
        report: &mut CheckReport,
    ) -> Result<(), StoreError> {
        let meta = self.db.open_tree("meta")?;
        let mut problem = |key: &str, what: String, repaired: Option<String>| {
            report.problems.push(Problem {
                tree: "meta".into(),
                key: key.into(),
                what,
                repaired,
            })
        };
        match meta.get("schema")? {
            None => problem("schema", "no schema version".into(), None),
            Some(v) => match <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes) {
                Err(_) => problem("schema", format!("{} bytes, expected 4", v.len()), None),
                Ok(s) if s > SCHEMA => problem(
                    "schema",
                    format!("schema {s} is newer than this sipd ({SCHEMA})"),
                    None,
                ),
                Ok(_) => {}
            },
        }
        let audit_last = self
            .db
            .open_tree("audit")?
            .last()?
            .and_then(|(k, _)| id_from(&k))
            .unwrap_or(0);
        for (key, floor, what) in [
            (
                "next_id",
                max_id,
                "new records would be refused (their id is taken)",
            ),
            (
                "next_audit_id",
                audit_last,
                "the next audit entry would be refused",
            ),
        ] {
            let at = match meta.get(key)? {
                None => 0,
                Some(v) => match id_from(&v) {
                    Some(n) => n,
                    None => {
                        problem(key, "counter is not an id".into(), None);
                        continue;
                    }
                },
            };
            if at < floor {
                let repaired = if repair {
                    meta.insert(key, &floor.to_be_bytes())?;
                    Some(format!("raised to {floor}"))
                } else {
                    None
                };
                problem(
                    key,
                    format!("counter {at} is behind the records ({floor}): {what}"),
                    repaired,
                );
            }
        }
        Ok(())
    }
}
