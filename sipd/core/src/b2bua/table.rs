//! Every call the core knows, and the three ways a message finds its call: the caller's
//! dialog (Call-ID + From tag), the caller's INVITE transaction, and our Call-ID on the
//! vendor's side. The indexes change only here, so they never disagree with the calls.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::call::{Call, CallKey, Phase};
use crate::sip::txn::ServerKey;

/// The calls and their indexes (see the module docs).
#[derive(Default)]
pub struct CallTable {
    calls: HashMap<CallKey, Call>,
    /// Leg A dialogs and initial INVITEs: (Call-ID, caller's From tag).
    by_a: HashMap<(String, String), CallKey>,
    by_a_txn: HashMap<ServerKey, CallKey>,
    /// Leg A by the caller's Call-ID alone, for the shell's per-call message capture (a
    /// request we send the caller carries our tag in From, so the dialog key does not fit).
    by_a_call_id: HashMap<String, CallKey>,
    /// Leg B by our Call-ID.
    by_b: HashMap<String, CallKey>,
    /// The leg-B Call-ID each call is indexed under, to drop it when a failover replaces it.
    b_of: HashMap<CallKey, String>,
    next_key: CallKey,
}

impl CallTable {
    /// A key for a call about to be admitted (admission tracks it before the call exists).
    pub fn next_key(&mut self) -> CallKey {
        self.next_key += 1;
        self.next_key
    }

    /// Whether no call is held (ended ones lingering included).
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Adds a new call under its caller's dialog and INVITE transaction.
    pub fn insert_new(&mut self, call: Call) {
        let dialog = (
            call.a.call_id.clone(),
            call.a.remote_tag.clone().unwrap_or_default(),
        );
        self.by_a_call_id.insert(call.a.call_id.clone(), call.key);
        self.by_a.insert(dialog, call.key);
        self.by_a_txn.insert(call.a_txn.clone(), call.key);
        self.index_b(&call);
        self.calls.insert(call.key, call);
    }

    fn index_b(&mut self, call: &Call) {
        let Some(b) = &call.b else {
            return;
        };
        if self.b_of.get(&call.key) == Some(&b.call_id) {
            return;
        }
        if let Some(old) = self.b_of.insert(call.key, b.call_id.clone()) {
            self.by_b.remove(&old);
        }
        self.by_b.insert(b.call_id.clone(), call.key);
    }

    /// Takes a call out to work on it with the rest of the core borrowed; [`put`](Self::put)
    /// returns it. Its indexes stay.
    pub fn take(&mut self, key: CallKey) -> Option<Call> {
        self.calls.remove(&key)
    }

    /// Returns a call taken with [`take`](Self::take), indexing a new vendor-side Call-ID (a
    /// failover) and dropping the one it replaced.
    pub fn put(&mut self, call: Call) {
        self.index_b(&call);
        self.calls.insert(call.key, call);
    }

    /// The call with this key, ended or not.
    pub fn get(&self, key: CallKey) -> Option<&Call> {
        self.calls.get(&key)
    }

    /// The call with this key, to change it (not its Call-IDs: see [`put`](Self::put)).
    pub fn get_mut(&mut self, key: CallKey) -> Option<&mut Call> {
        self.calls.get_mut(&key)
    }

    /// The call a caller's in-dialog request or ACK belongs to.
    pub fn by_a_dialog(&self, call_id: &str, from_tag: &str) -> Option<CallKey> {
        self.by_a
            .get(&(call_id.to_owned(), from_tag.to_owned()))
            .copied()
    }

    /// The call whose caller's INVITE is this server transaction.
    pub fn by_a_txn(&self, key: &ServerKey) -> Option<CallKey> {
        self.by_a_txn.get(key).copied()
    }

    /// The call whose leg B has this Call-ID (ours).
    pub fn by_b(&self, call_id: &str) -> Option<CallKey> {
        self.by_b.get(call_id).copied()
    }

    /// The call a request inside a dialog belongs to, and whether it came from the caller.
    pub fn dialog_of(&self, call_id: &str, from_tag: &str) -> Option<(CallKey, bool)> {
        self.by_a_dialog(call_id, from_tag)
            .map(|k| (k, true))
            .or_else(|| self.by_b(call_id).map(|k| (k, false)))
    }

    /// The call a message with this Call-ID belongs to, and on which leg: ours on the
    /// vendor's side, the caller's on the carrier's.
    pub fn by_call_id(&self, call_id: &str) -> Option<(CallKey, super::Side)> {
        self.by_b(call_id)
            .map(|k| (k, super::Side::B))
            .or_else(|| self.by_a_call_id.get(call_id).map(|k| (*k, super::Side::A)))
    }

    /// Calls not yet ended.
    pub fn live(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().filter(|c| c.phase != Phase::Ended)
    }

    /// Ended calls that have absorbed stragglers for `linger`.
    pub fn lingered(&self, now: Instant, linger: Duration) -> Vec<CallKey> {
        self.calls
            .values()
            .filter(|c| c.ended_at.is_some_and(|t| now.duration_since(t) >= linger))
            .map(|c| c.key)
            .collect()
    }

    /// Removes a call and its indexes.
    pub fn forget(&mut self, key: CallKey) -> Option<Call> {
        let call = self.calls.remove(&key)?;
        self.by_a.remove(&(
            call.a.call_id.clone(),
            call.a.remote_tag.clone().unwrap_or_default(),
        ));
        self.by_a_txn.remove(&call.a_txn);
        if self.by_a_call_id.get(&call.a.call_id) == Some(&key) {
            self.by_a_call_id.remove(&call.a.call_id);
        }
        if let Some(b) = self.b_of.remove(&key) {
            self.by_b.remove(&b);
        }
        Some(call)
    }
}
