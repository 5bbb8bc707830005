//! Call detail records: one per call attempt, append-only, keyed by a monotonic id so they
//! read back in the order they were written and a reader can resume after the last it saw.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Id, Micros, Record};

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

/// Unix milliseconds of `t` (0 before 1970): how CDRs, audit entries and sessions date things.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Record for Cdr {
    const KIND: &'static str = "cdr";
    const VERSION: u32 = 1;
}
