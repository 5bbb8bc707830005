//! The refusal table's copy in the store: one record per (source, reason), as the call core
//! counts them (`sipd_core::records::RefusalTable`), so a restart keeps the counts. Written
//! in batches (`sipd run` saves what changed every few seconds and at shutdown), never one
//! write per refusal; as bounded as the table it mirrors (`[guard] refusal_rows`).

use sled::Batch;

use super::record::{decode, encode};
use super::{Store, StoreError};
use sipd_core::records::{RefusalChanges, RefusalRow};

impl Store {
    /// Applies what changed in the refusal table since the last save, in one atomic batch,
    /// and flushes: durable when this returns.
    pub fn save_refusals(&self, changes: &RefusalChanges) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let _shared = self.shared_gate();
        let mut batch = Batch::default();
        if changes.replace_all {
            for kv in self.refusals.iter() {
                let (k, _) = kv?;
                batch.remove(k);
            }
        }
        for (source, reason) in &changes.removed {
            batch.remove(RefusalRow::store_key(*source, *reason).as_bytes());
        }
        // After the removals: a row evicted and counted again since is written, not removed.
        for row in &changes.rows {
            batch.insert(
                RefusalRow::store_key(row.source, row.reason).as_bytes(),
                encode(row)?,
            );
        }
        self.refusals.apply_batch(batch)?;
        self.flush()
    }

    /// The refusal table as last saved; an unreadable record is an `Err` in its place.
    pub fn refusals(&self) -> Vec<Result<RefusalRow, StoreError>> {
        self.refusals
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use sipd_core::records::{RefusalReason, RefusalTable};

    /// Saved batches, reopened: the rows as the table had them, evicted ones gone.
    #[test]
    fn the_table_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut t = RefusalTable::new(2);
            for ms in 0..5 {
                t.record(ms, a, RefusalReason::NoMatchingRule, 403);
            }
            t.record(10, b, RefusalReason::UnknownDialog, 481);
            store.save_refusals(&t.take_changes()).unwrap();
            t.record(20, a, RefusalReason::NoMatchingRule, 403);
            t.record(
                30,
                "192.0.2.3".parse().unwrap(),
                RefusalReason::Scanner,
                403,
            );
            store.save_refusals(&t.take_changes()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let mut rows: Vec<RefusalRow> = store.refusals().into_iter().map(Result::unwrap).collect();
        rows.sort_by_key(|r| r.last_ms);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            (
                rows[0].source,
                rows[0].count,
                rows[0].first_ms,
                rows[0].last_ms
            ),
            (a, 6, 0, 20)
        );
        assert_eq!(rows[1].reason, RefusalReason::Scanner);

        let mut t = RefusalTable::new(1);
        t.restore(rows);
        store.save_refusals(&t.take_changes()).unwrap();
        assert_eq!(store.refusals().len(), 1, "cut down to the capacity");
    }
}
