//! Call detail records: one per call attempt, append-only, keyed by a monotonic id so they
//! read back in the order they were written and a reader can resume after the last it saw.

use super::record::decode;
use super::{Cdr, CdrDraft, Id, Store, StoreError};

impl Store {
    /// Appends a CDR; durable when this returns.
    pub fn append_cdr(&self, call: CdrDraft) -> Result<Cdr, StoreError> {
        let cdr = self.append_cdr_unflushed(call)?;
        self.flush()?;
        Ok(cdr)
    }

    pub(crate) fn append_cdr_unflushed(&self, call: CdrDraft) -> Result<Cdr, StoreError> {
        self.settle_call_unflushed(call, None, None)
    }

    /// Up to `limit` CDRs with id above `after`, oldest first.
    pub fn cdrs(&self, after: Id, limit: usize) -> Vec<Result<Cdr, StoreError>> {
        self.cdrs
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
}

impl Store {
    /// Removes CDRs that ended before `cutoff_ms` (Unix ms), oldest first, and stops at the
    /// first one that did not: ids follow write order, so what comes after is as recent or
    /// nearly so, and stopping early can only keep a record longer, never purge one that is
    /// not past retention. The newest CDR is always kept, so ids never go back. Returns how
    /// many went; durable when this returns.
    pub fn purge_cdrs_before(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let _gate = self.shared_gate();
        let last = self.cdrs.last()?.map(|(k, _)| k);
        let mut purged = 0;
        for kv in self.cdrs.iter() {
            let (k, v) = kv?;
            if last.as_ref() == Some(&k) {
                break;
            }
            // An unreadable record is never purged (nor anything after it).
            let cdr: Cdr = decode(&k, &v)?;
            if cdr.call.end_ms.max(cdr.call.start_ms) >= cutoff_ms {
                break;
            }
            self.cdrs.remove(&k)?;
            purged += 1;
        }
        if purged > 0 {
            self.flush()?;
        }
        Ok(purged)
    }
}
