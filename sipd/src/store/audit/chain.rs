//! The audit log's hash chain: tamper evidence for an append-only log kept in a store that
//! anyone with the disk can edit.
//!
//! Entry #n carries `prev` = h(n-1), where h(0) is a fixed genesis value and
//! h(n) = SHA-256(h(n-1) ‖ JSON of (n, entry n's content)); `prev` itself is not hashed, so
//! the chain can be (re)computed from the content alone. The meta tree holds the head (the
//! last id and its h), so an edit of the last entry, or entries cut off the end, show too.
//! An edit of entry #n shows as #n+1's `prev` no longer matching: `verify` names #n.
//!
//! Logs written before the chain existed are migrated at the first open: their entries are
//! hashed in order from the genesis and each gets its `prev` (content unchanged, nothing
//! lost); the chain so covers the whole log, old entries included, from then on.
//!
//! Retention: a purge that removes entries #1..=#k records an anchor `(k, h(k))` in the same
//! transaction with [`Tx::anchor_audit_purge`] (h(k) is #k+1's `prev`, or the head when
//! nothing is left). `verify` then starts at #k+1 from the anchor instead of the genesis; any
//! entry missing after the anchor is reported as missing, so a purge cannot hide a deletion.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AuditDraft, AuditEntry};
use crate::store::record::{decode, encode};
use crate::store::{Id, Store, StoreError, T, Tx, TxResult, abort, id_from};

/// Meta key: the last chained id (8 bytes, big-endian) and its hash (32 bytes).
const HEAD: &[u8] = b"audit_head";
/// Meta key: the last purged id and the chain value after it, same layout.
const ANCHOR: &[u8] = b"audit_anchor";

/// A chain value.
pub type Hash = [u8; 32];

/// h(0): where the chain of every log starts.
pub fn genesis() -> Hash {
    Sha256::digest(b"sipd audit log v1 genesis").into()
}

/// h(n) from h(n-1) and entry n's content.
pub fn link(prev: &Hash, id: Id, draft: &AuditDraft) -> Result<Hash, StoreError> {
    let body = serde_json::to_vec(&(id, draft)).map_err(|e| StoreError::Encode {
        kind: "audit",
        reason: e.to_string(),
    })?;
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&body);
    Ok(h.finalize().into())
}

/// Lowercase hex, as `prev` is stored and shown.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn pack(id: Id, h: &Hash) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(h);
    v
}

fn unpack(v: &[u8]) -> Option<(Id, Hash)> {
    if v.len() != 40 {
        return None;
    }
    Some((id_from(&v[..8])?, v[8..].try_into().ok()?))
}

fn corrupt_meta(key: &[u8]) -> StoreError {
    StoreError::Corrupt {
        kind: "meta",
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "expected 40 bytes (id, SHA-256)".into(),
    }
}

impl Tx<'_> {
    /// The chain value entry `id` must carry as `prev`, and records `id`'s own as the head.
    pub(super) fn chain_audit(&self, id: Id, draft: &AuditDraft) -> TxResult<Hash> {
        let meta = self.tree(T::Meta);
        let prev = match meta.get(HEAD)? {
            Some(v) => match unpack(&v) {
                Some((head, h)) if head + 1 == id => h,
                Some((head, _)) => {
                    return abort(StoreError::Conflict {
                        kind: "audit",
                        what: format!("entry #{id}"),
                        by: format!("a chain head at #{head} (audit counter and chain disagree)"),
                    });
                }
                None => return abort(corrupt_meta(HEAD)),
            },
            // No head: the log is empty (an old log was migrated at open and has one).
            None => genesis(),
        };
        let next = link(&prev, id, draft).or_else(abort)?;
        meta.insert(HEAD, pack(id, &next))?;
        Ok(prev)
    }

    /// For the retention purge: entries up to `last_purged` are being removed in this
    /// transaction; records the chain value after it as where `verify` starts. Call it before
    /// removing them.
    pub fn anchor_audit_purge(&self, last_purged: Id) -> TxResult<()> {
        let audit = self.tree(T::Audit);
        let meta = self.tree(T::Meta);
        let after = match audit.get((last_purged + 1).to_be_bytes())? {
            Some(v) => {
                let e: AuditEntry = decode(&(last_purged + 1).to_be_bytes(), &v).or_else(abort)?;
                e.prev.as_deref().and_then(unhex)
            }
            None => match meta.get(HEAD)?.as_deref().and_then(unpack) {
                Some((head, h)) if head == last_purged => Some(h),
                _ => None,
            },
        };
        match after {
            Some(h) => {
                meta.insert(ANCHOR, pack(last_purged, &h))?;
                Ok(())
            }
            None => abort(StoreError::Invalid {
                kind: "audit",
                reason: format!("no chain value after #{last_purged} to anchor a purge on"),
            }),
        }
    }
}

/// What is wrong with the first broken entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Break {
    /// Its content no longer matches the hash the next entry (or the head) recorded.
    Edited,
    /// It is gone: a gap in the ids, or the log ends before the head.
    Missing,
    /// It cannot be read.
    Corrupt,
    /// It has no `prev`, or one that is not a hash, after the chain began.
    Unchained,
    /// It is past the recorded head: appended outside sipd.
    Unrecorded,
}

/// The first entry at which the chain fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The id of the entry at fault (for `Missing`, the id that should be there).
    pub id: Id,
    /// What is wrong with it.
    pub problem: Break,
    /// The same in words, for the operator.
    pub detail: String,
}

/// What `sipd audit verify` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Entries whose chain was checked.
    pub checked: u64,
    /// The first entry looked at (after any purge), `None` for an empty log.
    pub first_id: Option<Id>,
    /// The last entry looked at: where the check stopped, at a break or at the end.
    pub last_id: Option<Id>,
    /// Entries up to this id were purged by retention; the chain starts after it.
    pub purged_through: Option<Id>,
    /// The head's hash (what the next entry will carry as `prev`).
    pub head: Option<String>,
    /// The first break found, `None` when the whole chain holds.
    pub broken: Option<Broken>,
}

impl Verified {
    /// Whether the chain holds from its start (genesis or purge anchor) to the head.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

impl Store {
    /// Gives every entry of a log written before the chain its `prev` (content untouched),
    /// and records the head. Idempotent: runs only while the head is missing, and since
    /// `prev` is not hashed a rerun after a crash computes the same values.
    pub(crate) fn migrate_audit_chain(&self) -> Result<(), StoreError> {
        let meta = self.tree(T::Meta);
        if meta.get(HEAD)?.is_some() {
            return Ok(());
        }
        let audit = self.tree(T::Audit);
        let mut h = genesis();
        let mut last = None;
        let mut batch = sled::Batch::default();
        for kv in audit.iter() {
            let (k, v) = kv?;
            let Some(id) = id_from(&k) else { continue };
            match decode::<AuditEntry>(&k, &v) {
                Ok(mut e) => {
                    e.prev = Some(hex(&h));
                    h = link(&h, id, &e.entry)?;
                    batch.insert(k, encode(&e)?);
                }
                Err(err) => {
                    // Kept as it is: verify names it; the chain goes on over its raw bytes.
                    tracing::error!(id, error = %err, "audit entry unreadable while chaining");
                    let mut s = Sha256::new();
                    s.update(h);
                    s.update(&v);
                    h = s.finalize().into();
                }
            }
            last = Some(id);
        }
        let Some(last) = last else {
            return Ok(());
        };
        audit.apply_batch(batch)?;
        meta.insert(HEAD, pack(last, &h))?;
        self.flush()?;
        tracing::info!(
            entries = last,
            "audit log chained (entries written before the chain)"
        );
        Ok(())
    }

    /// Walks the whole chain and names the first entry that fails it.
    pub fn verify_audit(&self) -> Result<Verified, StoreError> {
        let meta = self.tree(T::Meta);
        let anchor = match meta.get(ANCHOR)? {
            Some(v) => Some(unpack(&v).ok_or_else(|| corrupt_meta(ANCHOR))?),
            None => None,
        };
        let head = match meta.get(HEAD)? {
            Some(v) => Some(unpack(&v).ok_or_else(|| corrupt_meta(HEAD))?),
            None => None,
        };
        let (mut expect, mut h) = anchor.map_or((1, genesis()), |(id, h)| (id + 1, h));
        let mut out = Verified {
            checked: 0,
            first_id: None,
            last_id: None,
            purged_through: anchor.map(|a| a.0),
            head: head.map(|(_, h)| hex(&h)),
            broken: None,
        };
        let broken = |id, problem, detail: String| Broken {
            id,
            problem,
            detail,
        };
        for kv in self.tree(T::Audit).iter() {
            let (k, v) = kv?;
            let Some(id) = id_from(&k) else { continue };
            if id < expect && out.checked == 0 {
                // Below the anchor: a purge still under way; not part of the chain.
                continue;
            }
            out.first_id.get_or_insert(id);
            out.last_id = Some(id);
            if head.is_some_and(|(hid, _)| id > hid) {
                out.broken = Some(broken(
                    id,
                    Break::Unrecorded,
                    format!("entry #{id} is past the chain head"),
                ));
                return Ok(out);
            }
            if id != expect {
                out.broken = Some(broken(
                    expect,
                    Break::Missing,
                    format!("entry #{expect} is missing (next present: #{id})"),
                ));
                return Ok(out);
            }
            let e = match decode::<AuditEntry>(&k, &v) {
                Ok(e) => e,
                Err(err) => {
                    out.broken = Some(broken(id, Break::Corrupt, err.to_string()));
                    return Ok(out);
                }
            };
            let Some(prev) = e.prev.as_deref().and_then(unhex) else {
                out.broken = Some(broken(
                    id,
                    Break::Unchained,
                    format!("entry #{id} carries no hash of its predecessor"),
                ));
                return Ok(out);
            };
            if prev != h {
                // This entry's record of its predecessor disagrees with the predecessor's
                // content: the predecessor was changed (or, less likely, this `prev` was).
                let (at, what) = if out.checked == 0 {
                    (
                        id,
                        "does not continue from the chain's start (genesis or purge anchor)",
                    )
                } else {
                    (id - 1, "was changed after it was written")
                };
                out.broken = Some(broken(
                    at,
                    Break::Edited,
                    format!("entry #{at} {what}: #{id} recorded a different hash"),
                ));
                return Ok(out);
            }
            h = link(&h, id, &e.entry)?;
            out.checked += 1;
            expect = id + 1;
        }
        if let Some((hid, hh)) = head {
            if hid >= expect {
                out.broken = Some(broken(
                    expect,
                    Break::Missing,
                    format!("entries #{expect}..=#{hid} are missing from the end of the log"),
                ));
            } else if hh != h {
                let last = expect - 1;
                out.broken = Some(broken(
                    last,
                    Break::Edited,
                    format!("entry #{last} (the last) was changed after it was written"),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditKind, AuditResult};

    fn draft(n: u64) -> AuditDraft {
        AuditDraft {
            ts_ms: 1_700_000_000_000 + n,
            actor: Some("admin".into()),
            source: Some("10.0.0.9".parse().unwrap()),
            kind: AuditKind::Update,
            target: Some(format!("account:a{n}")),
            result: AuditResult::Success,
            reason: None,
            before: Some(serde_json::json!({"balance": "1.00", "n": n})),
            after: Some(serde_json::json!({"balance": "2.00", "n": n})),
        }
    }

    fn store_with(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 1..=n {
            s.append_audit(&draft(i)).unwrap();
        }
        (dir, s)
    }

    /// Opens the store's sled tree behind sipd's back, as someone with the disk would.
    fn tamper(dir: &std::path::Path, f: impl FnOnce(&sled::Tree)) {
        let db = sled::open(dir).unwrap();
        f(&db.open_tree("audit").unwrap());
        db.flush().unwrap();
    }

    fn edit(tree: &sled::Tree, id: u64, f: impl FnOnce(&mut serde_json::Value)) {
        let key = id.to_be_bytes();
        let mut v: serde_json::Value =
            serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
        f(&mut v["d"]);
        tree.insert(key, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    fn broken_after(n: u64, f: impl FnOnce(&sled::Tree)) -> Verified {
        let (dir, s) = store_with(n);
        assert!(s.verify_audit().unwrap().ok());
        drop(s);
        tamper(dir.path(), f);
        Store::open(dir.path()).unwrap().verify_audit().unwrap()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_d, s) = store_with(5);
        let v = s.verify_audit().unwrap();
        assert_eq!((v.checked, v.first_id, v.last_id), (5, Some(1), Some(5)));
        assert!(v.ok(), "{v:?}");
        let e = s.audit(&Default::default());
        assert_eq!(
            e[0].as_ref().unwrap().prev.as_deref(),
            Some(&*hex(&genesis()))
        );
    }

    #[test]
    fn an_edited_entry_is_named() {
        let v = broken_after(5, |t| edit(t, 3, |d| d["actor"] = "mallory".into()));
        let b = v.broken.unwrap();
        assert_eq!((b.id, b.problem), (3, Break::Edited), "{}", b.detail);
        assert_eq!(v.checked, 3, "#1..#3 were read before #4 disagreed");
    }

    #[test]
    fn an_edit_deep_in_a_value_is_named() {
        let v = broken_after(4, |t| {
            edit(t, 2, |d| d["after"]["balance"] = "1000.00".into())
        });
        assert_eq!(
            v.broken.map(|b| (b.id, b.problem)),
            Some((2, Break::Edited))
        );
    }

    #[test]
    fn an_edited_last_entry_is_named_by_the_head() {
        let v = broken_after(3, |t| edit(t, 3, |d| d["result"] = "failure".into()));
        assert_eq!(
            v.broken.map(|b| (b.id, b.problem)),
            Some((3, Break::Edited))
        );
    }

    #[test]
    fn a_rewritten_prev_breaks_the_chain() {
        // The forger also rewrites #2's record of #1: #2 no longer continues from #1.
        let v = broken_after(4, |t| {
            edit(t, 2, |d| {
                d["reason"] = "nothing happened".into();
                d["prev"] = hex(&genesis()).into();
            })
        });
        let b = v.broken.unwrap();
        assert_eq!((b.id, b.problem), (1, Break::Edited), "{}", b.detail);
        assert!(b.detail.contains("#2"), "{}", b.detail);
    }

    #[test]
    fn deleted_entries_are_named() {
        let v = broken_after(5, |t| drop(t.remove(2u64.to_be_bytes()).unwrap()));
        assert_eq!(
            v.broken.map(|b| (b.id, b.problem)),
            Some((2, Break::Missing))
        );
        let v = broken_after(5, |t| drop(t.remove(5u64.to_be_bytes()).unwrap()));
        assert_eq!(
            v.broken.map(|b| (b.id, b.problem)),
            Some((5, Break::Missing))
        );
    }

    #[test]
    fn unreadable_and_foreign_entries_are_named() {
        let v = broken_after(3, |t| {
            drop(t.insert(2u64.to_be_bytes(), b"{not json".to_vec()))
        });
        assert_eq!(
            v.broken.map(|b| (b.id, b.problem)),
            Some((2, Break::Corrupt))
        );
        let v = broken_after(3, |t| {
            let e = t.get(3u64.to_be_bytes()).unwrap().unwrap();
            t.insert(4u64.to_be_bytes(), e).unwrap();
        });
        assert_eq!(
            v.broken.map(|b| (b.id, b.problem)),
            Some((4, Break::Unrecorded))
        );
    }

    #[test]
    fn an_old_log_is_chained_at_first_open_without_loss() {
        let (dir, s) = store_with(4);
        let before: Vec<_> = s
            .audit(&Default::default())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        drop(s);
        // A log as sipd wrote it before the chain: no prev, no head.
        let db = sled::open(dir.path()).unwrap();
        let t = db.open_tree("audit").unwrap();
        for e in &before {
            let mut e = e.clone();
            e.prev = None;
            t.insert(e.id.to_be_bytes(), encode(&e).unwrap()).unwrap();
        }
        db.open_tree("meta").unwrap().remove(HEAD).unwrap();
        db.flush().unwrap();
        drop((t, db));

        let s = Store::open(dir.path()).unwrap();
        let v = s.verify_audit().unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.checked, 4);
        let after: Vec<_> = s
            .audit(&Default::default())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(after, before, "same entries, same chain values");
        s.append_audit(&draft(5)).unwrap();
        assert_eq!(s.verify_audit().unwrap().checked, 5);
    }

    #[test]
    fn a_purged_prefix_verifies_from_its_anchor() {
        let (_d, s) = store_with(5);
        s.write(|tx| {
            tx.anchor_audit_purge(2)?;
            let t = tx.tree(T::Audit);
            for id in 1..=2u64 {
                t.remove(&id.to_be_bytes())?;
            }
            Ok(())
        })
        .unwrap();
        let v = s.verify_audit().unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(
            (v.purged_through, v.first_id, v.checked),
            (Some(2), Some(3), 3)
        );
        // A deletion past the anchor is still a deletion.
        s.write(|tx| {
            tx.tree(T::Audit).remove(&4u64.to_be_bytes())?;
            Ok(())
        })
        .unwrap();
        let b = s.verify_audit().unwrap().broken.unwrap();
        assert_eq!((b.id, b.problem), (4, Break::Missing));
    }

    #[test]
    fn the_report_serialises_for_json_output() {
        let v = broken_after(3, |t| edit(t, 1, |d| d["target"] = "x".into()));
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["broken"]["id"], 1);
        assert_eq!(j["broken"]["problem"], "edited");
        assert_eq!(j["checked"], 1);
    }

    #[test]
    fn hex_round_trips() {
        let g = genesis();
        assert_eq!(unhex(&hex(&g)), Some(g));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"é".repeat(32)), None);
    }
}
