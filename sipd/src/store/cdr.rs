//! Call detail records: one per call attempt, append-only, keyed by a monotonic id so they
//! read back in the order they were written and a reader can resume after the last it saw.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::record::{decode, encode};
use super::{Id, Micros, Record, Store, StoreError};

/// A CDR before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrDraft {
    pub call_id: String,
    /// Unix milliseconds: INVITE received, answered, ended.
    pub start_ms: u64,
    #[serde(default)]
    pub answer_ms: Option<u64>,
    pub end_ms: u64,
    pub caller: String,
    pub callee: String,
    #[serde(default)]
    pub source: Option<SocketAddr>,
    #[serde(default)]
    pub account_id: Option<Id>,
    #[serde(default)]
    pub connection_id: Option<Id>,
    /// Final SIP status sent to the caller (200 for an answered call).
    pub result_code: u16,
    /// Why: a Reason/Warning text or the pipeline stage that refused the call.
    #[serde(default)]
    pub reason: String,
    pub duration_secs: u64,
    pub cost: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    pub id: Id,
    #[serde(flatten)]
    pub call: CdrDraft,
}

impl Record for Cdr {
    const KIND: &'static str = "cdr";
    const VERSION: u32 = 1;
}

impl Store {
    /// Appends a CDR; durable when this returns.
    pub fn append_cdr(&self, call: CdrDraft) -> Result<Cdr, StoreError> {
        // sled's id generator is monotonic across restarts and crashes (it skips ahead on
        // recovery), which is what makes the key order the write order.
        let id = self.db.generate_id()? + 1;
        let cdr = Cdr { id, call };
        let key = id.to_be_bytes();
        // compare_and_swap from "absent" makes this append-only even against a bug elsewhere.
        let swapped =
            self.cdrs
                .compare_and_swap(key, None as Option<&[u8]>, Some(encode(&cdr)?))?;
        if swapped.is_err() {
            return Err(StoreError::Conflict {
                kind: "cdr",
                what: format!("id {id}"),
                by: "an existing record".into(),
            });
        }
        self.flush()?;
        Ok(cdr)
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
