//! Calls in progress across restarts, and how calls are settled: the call core's saved
//! records (`calls` tree, keyed by media id), the checkpoint that says until when the running
//! sipd had them up, and the one write that settles a call: its debit, its CDR and the removal
//! of its saved record in one transaction (a crash leaves either a call to adopt or a billed
//! CDR, never both and never neither).

use sipd_core::b2bua::SavedCall;

use sled::Transactional;

use super::record::{decode, encode};
use super::{Account, Cdr, CdrDraft, Id, Micros, Store, StoreError, T, abort};

/// `meta` key of the checkpoint: Unix ms up to which the saved calls were known up.
const CALLS_ALIVE: &[u8] = b"calls_alive_ms";

/// One write the store writer makes for the call core, in order.
// `Settle` is the write every call makes: boxing it would cost an allocation per call to
// save room in a queue whose other variants are rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum CallWrite {
    /// Save (replace) a call's record; `hold`: the messages after it wait for it (see
    /// `Effect::SaveCall`), else it may be dropped on a full queue.
    Save {
        /// The record.
        call: Box<SavedCall>,
        /// Messages wait for it.
        hold: bool,
    },
    /// A call ended: debit, CDR and removal of its saved record, atomically.
    Settle {
        /// The CDR.
        cdr: CdrDraft,
        /// Account and amount to debit.
        debit: Option<(Id, Micros)>,
        /// The saved record to remove (its media id).
        saved: Option<String>,
    },
    /// The checkpoint: every saved call was up at this Unix ms.
    Alive(u64),
    /// Remove saved records that are not calls any more (unusable ones, after adoption).
    Forget(Vec<String>),
}

impl CallWrite {
    /// Whether the write must be durable before the messages that follow it go out: an
    /// answered call's record (its 2xx) and the CDR of an answered or billed call (the BYE's
    /// 200). Refusals and unanswered attempts never hold signalling up.
    pub fn holds_signalling(&self) -> bool {
        match self {
            CallWrite::Save { hold, .. } => *hold,
            CallWrite::Settle { cdr, debit, .. } => cdr.answer_ms.is_some() || debit.is_some(),
            CallWrite::Alive(_) | CallWrite::Forget(_) => false,
        }
    }

    /// Whether a full queue may drop it (see the writer): unanswered attempts' CDRs that
    /// remove no record, checkpoints, and the records of calls in setup (the writer then
    /// drops the removal from their CDR too), which cost nothing.
    pub fn droppable(&self) -> bool {
        match self {
            CallWrite::Settle { cdr, debit, saved } => {
                cdr.answer_ms.is_none() && debit.is_none() && saved.is_none()
            }
            CallWrite::Alive(_) => true,
            CallWrite::Save { hold, call } => {
                !*hold && call.phase == sipd_core::b2bua::SavedPhase::Trying
            }
            CallWrite::Forget(_) => false,
        }
    }
}

impl Store {
    /// From now on (`true`), every settle with a debit also queues it, in the same
    /// transaction, in [`cluster_debits`](Self::cluster_debits) under its CDR id: what
    /// [`crate::shared_limits::SharedLimits`] sends to the cluster's shared balance, once.
    pub fn set_debit_outbox(&self, on: bool) {
        self.debit_outbox
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The queue of debits for the cluster's shared balance (give it to `SharedLimits`).
    pub fn cluster_debits(&self) -> sled::Tree {
        self.cluster_debits.clone()
    }

    /// Every call record the last run left, in key order; a corrupt one is an `Err` in its
    /// place (the others still load).
    pub fn saved_calls(&self) -> Vec<Result<SavedCall, StoreError>> {
        self.scan(T::Calls, &[])
    }

    /// How many call records the store holds (a bounded table: calls in progress).
    pub fn saved_call_count(&self) -> u64 {
        self.tree(T::Calls).len() as u64
    }

    /// Until when the last run had its saved calls up (Unix ms), if it ever said.
    pub fn calls_alive(&self) -> Option<u64> {
        let v = self.tree(T::Meta).get(CALLS_ALIVE).ok()??;
        Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))
    }

    /// Carries out call writes in order and makes them durable with one flush; returns the
    /// errors, one per write that failed (the others are durable).
    pub fn settle_calls(&self, writes: Vec<CallWrite>) -> Vec<StoreError> {
        let mut errors = self.write_calls(writes);
        if let Err(e) = self.flush_calls() {
            errors.push(e);
        }
        errors
    }

    /// Makes the call writes made so far durable.
    pub fn flush_calls(&self) -> Result<(), StoreError> {
        self.flush()
    }

    /// Carries out call writes in order, not flushed ([`flush_calls`](Self::flush_calls)
    /// makes them durable); returns the errors, one per write that failed.
    pub fn write_calls(&self, writes: Vec<CallWrite>) -> Vec<StoreError> {
        self.write_calls_keeping(writes, &mut Vec::new())
    }

    /// [`write_calls`](Self::write_calls), adding each CDR stored, with its id, to `stored`.
    pub fn write_calls_keeping(
        &self,
        writes: Vec<CallWrite>,
        stored: &mut Vec<sipd_core::records::Cdr>,
    ) -> Vec<StoreError> {
        let mut errors = Vec::new();
        let superseded = superseded_saves(&writes);
        for (i, w) in writes.into_iter().enumerate() {
            // A record a later write of the batch replaces or removes: the batch is made
            // durable by one flush after its last write, so the earlier version would never
            // be the durable one a message waits for; encoding and inserting it is wasted.
            if superseded.get(i).copied().unwrap_or(false) {
                continue;
            }
            // Held per write (a backup waits for it, never sees it half done).
            let _gate = self.shared_gate();
            let r = match w {
                CallWrite::Save { call, .. } => self.save_call_unflushed(&call),
                CallWrite::Settle { cdr, debit, saved } => {
                    // Takes the gate itself (`write_unflushed`): a reader lock is not
                    // re-entrant against a waiting backup.
                    drop(_gate);
                    self.settle_call_unflushed(cdr, debit, saved.as_deref())
                        .map(|cdr| stored.push(cdr))
                }
                CallWrite::Alive(ms) => self
                    .tree(T::Meta)
                    .insert(CALLS_ALIVE, &ms.to_be_bytes())
                    .map(|_| ())
                    .map_err(StoreError::from),
                CallWrite::Forget(ids) => ids.iter().try_for_each(|id| {
                    self.tree(T::Calls)
                        .remove(id.as_bytes())
                        .map(|_| ())
                        .map_err(StoreError::from)
                }),
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        errors
    }

    fn save_call_unflushed(&self, call: &SavedCall) -> Result<(), StoreError> {
        self.tree(T::Calls)
            .insert(call.media_id.as_bytes(), encode(call)?)?;
        Ok(())
    }

    /// The debit, the CDR and the removal of the call's saved record, in one transaction.
    /// An account that no longer exists is not debited (logged); the CDR is written anyway.
    pub(crate) fn settle_call_unflushed(
        &self,
        call: CdrDraft,
        debit: Option<(Id, Micros)>,
        saved: Option<&str>,
    ) -> Result<Cdr, StoreError> {
        let _ids = self.cdr_ids.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.last_cdr_id()? + 1;
        let cdr = Cdr { id, call };
        let bytes = encode(&cdr)?;
        // Only the three trees a settlement touches: a transaction over every tree (what
        // `write_unflushed` does) costs several times as much, once per call.
        let _gate = self.shared_gate();
        // The cluster's debit outbox joins only when it is on and there is a debit; the
        // entry names the account (read in the transaction) as the cluster knows it.
        let outbox = debit
            .filter(|_| self.debit_outbox.load(std::sync::atomic::Ordering::Relaxed))
            .map(|_| id.to_string());
        let mut trees = vec![
            self.tree(T::Accounts).clone(),
            self.tree(T::Cdrs).clone(),
            self.tree(T::Calls).clone(),
        ];
        if outbox.is_some() {
            trees.push(self.cluster_debits.clone());
        }
        trees[..]
            .transaction(|t| {
                let (accounts, cdrs, calls) = (&t[0], &t[1], &t[2]);
                if let Some((account, cost)) = debit {
                    let key = account.to_be_bytes();
                    match accounts.get(key)? {
                        Some(v) => {
                            let mut a: Account = decode(&key, &v).or_else(abort)?;
                            a.balance = Micros(a.balance.0.saturating_sub(cost.0));
                            accounts.insert(&key, encode(&a).or_else(abort)?)?;
                            if let (Some(entry), Some(queue)) = (&outbox, t.get(3)) {
                                let value = crate::shared_limits::outbox_value(&a.name, cost);
                                queue.insert(entry.as_bytes(), value)?;
                            }
                        }
                        None => tracing::warn!(
                            account,
                            %cost,
                            call_id = %cdr.call.call_id,
                            "account gone: call recorded without its debit"
                        ),
                    }
                }
                if cdrs.get(id.to_be_bytes())?.is_some() {
                    return abort(StoreError::Conflict {
                        kind: "cdr",
                        what: format!("id {id}"),
                        by: "another writer".into(),
                    });
                }
                cdrs.insert(&id.to_be_bytes(), bytes.clone())?;
                if let Some(key) = saved {
                    calls.remove(key.as_bytes())?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
        Ok(cdr)
    }

    /// The id of the last CDR (0 when there is none).
    pub(crate) fn last_cdr_id(&self) -> Result<Id, StoreError> {
        match self.cdrs.last()? {
            Some((k, _)) => super::id_from(&k).ok_or_else(|| StoreError::Corrupt {
                kind: "cdr",
                key: super::record::key_text(&k),
                reason: "key is not an id".into(),
            }),
            None => Ok(0),
        }
    }
}

/// For each write of a batch, whether it is a call's record that a later write of the same
/// batch saves again, settles or forgets (a call saves its record several times while it is
/// set up and answered, often within one batch).
fn superseded_saves(writes: &[CallWrite]) -> Vec<bool> {
    let mut later: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = vec![false; writes.len()];
    for (i, w) in writes.iter().enumerate().rev() {
        match w {
            CallWrite::Save { call, .. } => {
                out[i] = !later.insert(call.media_id.as_str());
            }
            CallWrite::Settle { saved, .. } => {
                if let Some(id) = saved {
                    later.insert(id.as_str());
                }
            }
            CallWrite::Forget(ids) => later.extend(ids.iter().map(String::as_str)),
            CallWrite::Alive(_) => {}
        }
    }
    out
}
