//! Call detail records: one per call attempt, append-only, keyed by a monotonic id so they
//! read back in the order they were written and a reader can resume after the last it saw.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Id, Micros, Record};

/// A CDR before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrDraft {
    /// The caller's (A leg's) Call-ID.
    pub call_id: String,
    /// Unix milliseconds: INVITE received, answered, ended.
    pub start_ms: u64,
    /// `None` when the call was never answered.
    #[serde(default)]
    pub answer_ms: Option<u64>,
    /// See `start_ms`.
    pub end_ms: u64,
    /// Calling number: the user part of the caller's From.
    pub caller: String,
    /// Called number: the user part of the Request-URI (of To when it has none).
    pub callee: String,
    /// Where the caller's SIP came from.
    #[serde(default)]
    pub source: Option<SocketAddr>,
    /// The account the call was authenticated as; `None` when refused before that.
    #[serde(default)]
    pub account_id: Option<Id>,
    /// The upstream connection of the last attempt; `None` when no upstream was tried.
    #[serde(default)]
    pub connection_id: Option<Id>,
    /// Final SIP status sent to the caller (200 for an answered call).
    pub result_code: u16,
    /// Why: a Reason/Warning text or the pipeline stage that refused the call.
    #[serde(default)]
    pub reason: String,
    /// Seconds from answer to end, rounded up; 0 for an unanswered call.
    pub duration_secs: u64,
    /// What was debited from the account for this call.
    pub cost: Micros,
    /// Who ended the call: `caller`, `callee`, `sbc` (sipd: a limit, a timeout, a refusal, a
    /// failure, shutdown) or `staff:<username>` (hung up through the management API);
    /// `None` in CDRs written before this was recorded.
    #[serde(default)]
    pub hung_up_by: Option<String>,
}

/// A stored CDR: the draft with the id the store gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    /// Monotonic: later CDRs have larger ids, so a reader resumes after the last it saw.
    pub id: Id,
    /// The record itself (flattened in JSON).
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
