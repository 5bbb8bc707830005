//! The shared balance: this node's reservation (what its core admits and cuts calls
//! within), top-ups, and debits applied exactly once through the durable outbox.

use std::time::Instant;

use fred::types::Value;
use sipd_core::records::Micros;

use super::{DEBIT_LUA, SHARE_LUA, SharedError, SharedLimits, ints};

const SEED_LUA: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 1 end return 0";
const GET_LUA: &str = "return tonumber(redis.call('GET', KEYS[1]) or '0')";

/// What became of a debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Debit {
    /// Applied now; the shared balance after it.
    Applied(Micros),
    /// This call was already debited (a retry): nothing changed.
    AlreadyApplied,
    /// Redis is away: queued in the outbox, applied once on reconnect.
    Queued,
}

/// An account's money as this node last saw it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Budget {
    /// This node's reservation.
    reserved: i64,
    /// The shared balance.
    balance: i64,
    /// The other nodes' reservations.
    others: i64,
    /// Taken from Redis since the last outage.
    pub(super) synced: bool,
    /// When Redis last saw it (an idle reservation is re-sent every `recheck`).
    checked: Option<Instant>,
    /// Other nodes wait for money and this one holds idle money: the core is bounded to
    /// what its calls hold ([`SharedLimits::budget_bound`]), the next budget gives the rest.
    yield_next: bool,
}

/// An outbox entry as the store's records are kept (a versioned JSON envelope), so
/// `sipd store check` reads it like any record.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    v: u32,
    d: Queued,
}

/// By account name: the shared balance is the cluster's, store ids are each node's own.
#[derive(serde::Serialize, serde::Deserialize)]
struct Queued {
    account: String,
    cost: i64,
}

/// The outbox value of a debit of `cost` from the account named `account` (the store writes
/// it in the settle); a negative cost is a top-up.
pub fn outbox_value(account: &str, cost: Micros) -> Vec<u8> {
    let e = Envelope {
        v: 1,
        d: Queued {
            account: account.to_owned(),
            cost: cost.0,
        },
    };
    // A string and an integer: serialising cannot fail.
    serde_json::to_vec(&e).unwrap_or_default()
}

/// The account name and cost of an outbox value; `None` if it is not one.
pub fn outbox_entry(v: &[u8]) -> Option<(String, Micros)> {
    let e: Envelope = serde_json::from_slice(v).ok()?;
    (e.v == 1).then_some((e.d.account, Micros(e.d.cost)))
}

impl SharedLimits {
    fn balance_key(&self, account: &str) -> String {
        self.key(&format!("balance:{account}"))
    }

    fn reserved_key(&self, account: &str) -> String {
        self.key(&format!("reserved:{account}"))
    }

    /// What to seed an emptied Redis's balance of `account` with: the store's balance (which
    /// already has every settled debit and top-up of this node) plus what the outbox still
    /// owes Redis (the scripts then apply those, once). `''`: no seed (not in the store).
    fn seed_arg(&self, account: &str) -> Value {
        match self.seed.as_ref().and_then(|f| f(account)) {
            Some(b) => b.0.saturating_add(self.pending(account, false)).into(),
            None => "".into(),
        }
    }

    /// Sets the shared balance of `account` if Redis has none yet (a node joining with its
    /// store's balance); `true` if this set it.
    pub async fn seed_balance(&self, account: &str, balance: Micros) -> Result<bool, SharedError> {
        let keys = vec![self.balance_key(account)];
        let set: i64 = self
            .script("seed", SEED_LUA, keys, vec![balance.0.into()])
            .await?;
        Ok(set == 1)
    }

    /// Credits (or, negative, debits) the shared balance, once: `id` names this top-up on
    /// this node (a retry with the same id changes nothing). Queued durably like a debit:
    /// when Redis is away it is applied on reconnect. Every node reserves from the new
    /// balance at its next [`budget`](Self::budget).
    pub async fn top_up(
        &self,
        account: &str,
        delta: Micros,
        id: &str,
    ) -> Result<Debit, SharedError> {
        self.debit(
            account,
            &format!("topup:{id}"),
            Micros(delta.0.saturating_neg()),
        )
        .await
    }

    /// The shared balance as Redis has it now.
    pub async fn balance(&self, account: &str) -> Result<Micros, SharedError> {
        let keys = vec![self.balance_key(account)];
        let b: i64 = self.script("balance", GET_LUA, keys, vec![]).await?;
        Ok(Micros(b))
    }

    /// The balance this node's core may admit and cut `account`'s calls within (give it to
    /// `set_balance`). `held`: what the calls in progress here hold (their cost so far or
    /// reservation, whichever is larger); `want`: `held` plus the headroom for new calls
    /// (e.g. a few calls' reservations). Talks to Redis only when the reservation is out of
    /// `held + [headroom / 2, headroom * 2]`. Never errors: when Redis is away it is the
    /// balance last known minus the other nodes' reservations at last sight minus the debits
    /// queued here.
    ///
    /// `needy`: a call was refused here for want of balance since the last budget; Redis
    /// then marks this node waiting and the other nodes give back their idle reservations
    /// (as with [`lease`](Self::lease)).
    pub async fn budget(&self, account: &str, held: Micros, want: Micros, needy: bool) -> Micros {
        let (held, want) = (held.0.max(0), want.0.max(held.0.max(0)));
        let room = want - held;
        // Debits settled here but not in Redis yet: the balance there still has them, so
        // the reservation keeps them too (debit.lua takes them off both). A top-up not in
        // Redis yet is not spent before it is.
        let pending = self.pending(account, true);
        {
            let st = self.lock();
            let b = st.budgets.get(account).copied().unwrap_or_default();
            if st.away.is_some() {
                drop(st);
                return self.fallback_budget(account, b);
            }
            let fresh = b.reserved <= held
                || b.checked
                    .is_some_and(|t| t.elapsed() < self.settings.recheck);
            if pending == 0
                && !needy
                && !b.yield_next
                && b.synced
                && fresh
                && b.reserved >= held + room / 2
                && b.reserved <= held + room * 2
            {
                return Micros(b.reserved);
            }
        }
        let yielding = self
            .lock()
            .budgets
            .get(account)
            .is_some_and(|b| b.yield_next);
        let (held, want) = (held + pending, want + pending);
        let reserved = self.reserved_key(account);
        let keys = vec![
            reserved.clone(),
            self.key("leases"),
            // Apart from the reservations, as for leases: names may hold ':'.
            self.key(&format!("waiting:reserved:{account}")),
            self.balance_key(account),
        ];
        let args: Vec<Value> = vec![
            self.node.as_str().into(),
            want.into(),
            held.into(),
            self.seed_arg(account),
            if needy { "1" } else { "0" }.into(),
            self.need_ttl_ms().into(),
            if yielding { "1" } else { "0" }.into(),
        ];
        let r = self
            .script::<Value>("share.lua", SHARE_LUA, keys, args)
            .await
            .and_then(|v| ints(v, "share.lua"));
        match r.as_deref() {
            Ok([grant, balance, others, waiting]) => {
                let b = Budget {
                    reserved: *grant,
                    balance: *balance,
                    others: *others,
                    synced: true,
                    checked: Some(Instant::now()),
                    yield_next: *waiting > 0 && !needy && *grant > held,
                };
                self.lock().budgets.insert(account.to_owned(), b);
                Micros((*grant - pending).max(0))
            }
            _ => {
                let b = self
                    .lock()
                    .budgets
                    .get(account)
                    .copied()
                    .unwrap_or_default();
                self.fallback_budget(account, b)
            }
        }
    }

    /// What the core may spend of `account`'s balance while a [`budget`](Self::budget) for
    /// `held` and `want` is in flight (no I/O): never more than that budget can leave it.
    /// The caller gives the core the smaller of this and what it gave it last.
    pub fn budget_bound(&self, account: &str, held: Micros, want: Micros) -> Micros {
        let st = self.lock();
        let b = st.budgets.get(account).copied().unwrap_or_default();
        if st.away.is_some() {
            drop(st);
            return self.fallback_budget(account, b);
        }
        if b.yield_next {
            held.max(Micros(0))
        } else {
            want.max(held).max(Micros(0))
        }
    }

    fn fallback_budget(&self, account: &str, b: Budget) -> Micros {
        Micros((b.balance - b.others - self.pending(account, true)).max(0))
    }

    /// What the outbox still owes the shared balance of `account`: debits minus top-ups,
    /// or the debits alone (`debits_only`).
    fn pending(&self, account: &str, debits_only: bool) -> i64 {
        self.outbox
            .iter()
            .values()
            .filter_map(|v| v.ok().and_then(|v| outbox_entry(&v)))
            .filter(|(a, c)| a == account && (!debits_only || c.0 > 0))
            .map(|(_, c)| c.0)
            .sum()
    }

    /// Debits a finished call's `cost` from the shared balance, once: queued durably in the
    /// outbox under `call` (unique on this node: the store queues settles under their CDR
    /// id) and sent. Redis away:
    /// [`Debit::Queued`], applied on reconnect by [`flush_outbox`](Self::flush_outbox).
    pub async fn debit(
        &self,
        account: &str,
        call: &str,
        cost: Micros,
    ) -> Result<Debit, SharedError> {
        let value = outbox_value(account, cost);
        self.outbox.insert(call.as_bytes(), value.as_slice())?;
        self.outbox.flush_async().await?;
        if self.is_away() {
            return Ok(Debit::Queued);
        }
        match self.apply(call, account, cost, &value).await {
            Ok(d) => Ok(d),
            Err(SharedError::Outbox(e)) => Err(SharedError::Outbox(e)),
            Err(_) => Ok(Debit::Queued),
        }
    }

    /// Sends one outbox entry and removes it once Redis has it.
    async fn apply(
        &self,
        call: &str,
        account: &str,
        cost: Micros,
        value: &[u8],
    ) -> Result<Debit, SharedError> {
        // Call ids are this node's (CDR ids): the node's name makes them the cluster's.
        let keys = vec![
            self.balance_key(account),
            self.reserved_key(account),
            self.key(&format!("debited:{}:{call}", self.node)),
        ];
        let args: Vec<Value> = vec![
            self.node.as_str().into(),
            cost.0.into(),
            i64::try_from(self.settings.debit_mark_ttl.as_secs().max(1))
                .unwrap_or(i64::MAX)
                .into(),
            self.seed_arg(account),
        ];
        let v: Value = self.script("debit.lua", DEBIT_LUA, keys, args).await?;
        let d = match ints(v, "debit.lua")?.as_slice() {
            [1, balance] => Debit::Applied(Micros(*balance)),
            [0, _] => Debit::AlreadyApplied,
            _ => return Err(SharedError::Answer("debit.lua")),
        };
        // Removed only if it is still this entry (a crash-restart could have re-queued it).
        let _ = self
            .outbox
            .compare_and_swap(call.as_bytes(), Some(value), None::<&[u8]>)?;
        if let Debit::Applied(_) = d
            && let Some(b) = self.lock().budgets.get_mut(account)
        {
            // As debit.lua did: the cost leaves the balance and (a debit) this node's
            // reservation.
            b.balance -= cost.0;
            if cost.0 > 0 {
                b.reserved = (b.reserved - cost.0).max(0);
            }
        }
        Ok(d)
    }

    /// Sends every queued debit (each applied once, whatever happened before); returns how
    /// many were sent. Stops at the first Redis failure (the rest stay queued).
    pub async fn flush_outbox(&self) -> Result<usize, SharedError> {
        let mut sent = 0;
        for entry in self.outbox.iter() {
            let (k, v) = entry?;
            let Some((account, cost)) = outbox_entry(&v) else {
                tracing::error!(key = ?k, "shared limits: corrupt outbox entry dropped");
                self.outbox.remove(&k)?;
                continue;
            };
            let call = String::from_utf8_lossy(&k).into_owned();
            self.apply(&call, &account, cost, &v).await?;
            sent += 1;
        }
        if sent > 0 {
            self.outbox.flush_async().await?;
        }
        Ok(sent)
    }

    /// Debits waiting in the outbox.
    pub fn queued_debits(&self) -> usize {
        self.outbox.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_entries_round_trip() {
        let v = outbox_value("acme", Micros(-3));
        assert_eq!(outbox_entry(&v), Some(("acme".to_owned(), Micros(-3))));
        assert_eq!(outbox_entry(&v[..v.len() - 1]), None);
        assert_eq!(
            outbox_entry(br#"{"v":2,"d":{"account":"a","cost":1}}"#),
            None
        );
    }
}
