//! Acknowledgements of alerts (`POST /api/alerts/{id}/ack`), kept so that a restart of sipd,
//! or an alert that clears for a moment and comes back, does not make staff acknowledge it
//! again. One tree (`alert_acks`), keyed by the alert's id; the number of distinct alert ids
//! is bounded by the configuration (services, staff, addresses), and [`MAX_ACKS`] bounds it
//! anyway.

use serde::{Deserialize, Serialize};

use super::{Record, Store, StoreError, T, Tx, TxResult};

/// Most acknowledgements kept; past it, the oldest go.
pub const MAX_ACKS: usize = 1000;

/// Who acknowledged an alert, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertAck {
    /// The alert's id as `GET /api/alerts` lists it (`permissive_firewall:sip`, …).
    pub id: String,
    /// The staff member's username.
    pub by: String,
    /// Unix ms of the acknowledgement.
    pub at_ms: u64,
}

impl Record for AlertAck {
    const KIND: &'static str = "alert acknowledgement";
    const VERSION: u32 = 1;
}

impl Tx<'_> {
    /// Stores (or replaces) the acknowledgement of `a.id`.
    pub fn put_alert_ack(&self, a: &AlertAck) -> TxResult<()> {
        self.put(T::AlertAcks, a.id.as_bytes(), a)
    }
}

impl Store {
    /// Every stored acknowledgement, readable or not, in id order.
    pub fn alert_acks(&self) -> Vec<Result<AlertAck, StoreError>> {
        self.scan(T::AlertAcks, b"")
    }

    /// Removes the oldest acknowledgements beyond [`MAX_ACKS`]; how many went.
    pub fn trim_alert_acks(&self) -> Result<usize, StoreError> {
        let mut all: Vec<AlertAck> = self.alert_acks().into_iter().flatten().collect();
        if all.len() <= MAX_ACKS {
            return Ok(0);
        }
        all.sort_by_key(|a| a.at_ms);
        let over = all.len() - MAX_ACKS;
        for a in &all[..over] {
            self.tree(T::AlertAcks).remove(a.id.as_bytes())?;
        }
        self.flush()?;
        Ok(over)
    }
}
