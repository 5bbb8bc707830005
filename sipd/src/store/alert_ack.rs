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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored, read back after a reopen, replaced by a newer one, and bounded.
    #[test]
    fn acknowledgements_are_kept_replaced_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ack = |id: &str, by: &str, at_ms| AlertAck {
            id: id.into(),
            by: by.into(),
            at_ms,
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.write(|tx| tx.put_alert_ack(&ack("self_signed_certificate", "oper", 5)))
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let all: Vec<AlertAck> = s.alert_acks().into_iter().map(Result::unwrap).collect();
        assert_eq!(all, [ack("self_signed_certificate", "oper", 5)]);
        s.write(|tx| tx.put_alert_ack(&ack("self_signed_certificate", "admin", 9)))
            .unwrap();
        s.write(|tx| {
            (0..MAX_ACKS as u64 + 4)
                .try_for_each(|i| tx.put_alert_ack(&ack(&format!("x:{i:05}"), "oper", 10 + i)))
        })
        .unwrap();
        assert_eq!(s.trim_alert_acks().unwrap(), 5);
        let all: Vec<AlertAck> = s.alert_acks().into_iter().map(Result::unwrap).collect();
        assert_eq!(all.len(), MAX_ACKS);
        assert!(
            !all.iter().any(|a| a.id == "self_signed_certificate"),
            "oldest went"
        );
        assert!(!all.iter().any(|a| a.id == "x:00003"));
        assert!(all.iter().any(|a| a.id == "x:00004"));
    }
}
