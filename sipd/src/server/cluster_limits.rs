//! The event loop's side of a cluster's shared limits and balances
//! ([`crate::shared_limits`]): every `limits_sync_ms` it hands each account's and
//! connection's use to a background task, which tops up or gives back the node's leases and
//! reservations (Redis round trips only when one needs it), and gives the core the shares
//! and balances that come back. No call waits on Redis: the core admits within what it was
//! last given.
//!
//! Two orders keep the core from admitting more than the cluster granted it:
//! - before the task runs, the core gets [`SharedLimits::pre_shares`] and
//!   [`SharedLimits::budget_bound`] (no I/O): never more than the lease or reservation now,
//!   nor than a coming give-back leaves;
//! - a reservation that comes back is lowered by the debits of the calls that ended while
//!   it was in flight (their cost already left the core's balance, the answer may predate
//!   it); until the first one, a charging account's balance here is 0.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipd_core::b2bua::Core;
use sipd_core::policy::Share;
use sipd_core::records::{Id, Micros};
use tokio::sync::mpsc;

use super::Provisioned;
use crate::media::RelayMedia;
use crate::shared_limits::{Scope, SharedLimits, Usage};

/// Reservations ask for the calls up plus this many more calls' reservations.
const SPARE_CALLS: i64 = 2;

/// An account or connection with cluster limits, as the core and the cluster name it.
#[derive(Debug, Clone)]
struct Limited {
    id: Id,
    scope: Scope,
    sessions: Option<u32>,
    cps: Option<u32>,
    /// For a charging account: what admission sets aside per call.
    reservation: Option<Micros>,
}

/// The accounts and connections of a [`Provisioned`] that have cluster limits or charge.
#[derive(Debug, Clone)]
pub(super) struct Limits(Vec<Limited>);

impl Limits {
    pub(super) fn of(p: &Provisioned) -> Limits {
        let reservation: HashMap<Id, Micros> = p
            .tariffs
            .iter()
            .filter(|t| t.rate_per_minute.0 > 0)
            .map(|t| (t.id, t.reservation()))
            .collect();
        let mut records = Vec::new();
        for a in p.rules.accounts() {
            let r = a.tariff_id.and_then(|t| reservation.get(&t).copied());
            if a.max_sessions.is_none() && a.cps_limit.is_none() && r.is_none() {
                continue;
            }
            records.push(Limited {
                id: a.id,
                scope: Scope::Account(a.name.clone()),
                sessions: a.max_sessions,
                cps: a.cps_limit,
                reservation: r,
            });
        }
        for c in &p.connections {
            if c.max_channels.is_none() && c.cps_limit.is_none() {
                continue;
            }
            records.push(Limited {
                id: c.id,
                scope: Scope::Connection(c.name.clone()),
                sessions: c.max_channels,
                cps: c.cps_limit,
                reservation: None,
            });
        }
        Limits(records)
    }
}

/// What a background sync brings back.
#[derive(Debug)]
pub(super) struct Synced {
    shares: Vec<(Scope, Share)>,
    /// Account, its reservation, and the debits seen when the sync started.
    budgets: Vec<(Id, Micros, i64)>,
}

/// The shares and reservations the event loop keeps in line with the cluster.
pub(super) struct LimitsSync {
    limits: Arc<SharedLimits>,
    every: Duration,
    records: Vec<Limited>,
    ids: HashMap<Scope, Id>,
    /// Per scope: (when, CPS tokens taken so far) over the last second.
    taken: HashMap<Scope, VecDeque<(Instant, u64)>>,
    /// Per account: debits of ended calls seen so far (only grows).
    debited: HashMap<Id, i64>,
    /// Per account: the balance last given to the core.
    given: HashMap<Id, Micros>,
    next: Instant,
    in_flight: bool,
    tx: mpsc::UnboundedSender<Synced>,
}

impl LimitsSync {
    /// Over `limits`, every `every`; the receiver is the event loop's.
    pub(super) fn new(
        limits: Arc<SharedLimits>,
        every: Duration,
    ) -> (LimitsSync, mpsc::UnboundedReceiver<Synced>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = LimitsSync {
            limits,
            every,
            records: Vec::new(),
            ids: HashMap::new(),
            taken: HashMap::new(),
            debited: HashMap::new(),
            given: HashMap::new(),
            next: Instant::now(),
            in_flight: false,
            tx,
        };
        (s, rx)
    }

    /// Takes the records' limits (at start and after every reload, after the core took the
    /// records). A scope seen for the first time holds nothing yet: the core admits none of
    /// its calls until its first lease (a node never starts on the whole limit or the whole
    /// stored balance).
    pub(super) fn set_records(&mut self, records: Limits, core: &mut Core<RelayMedia>) {
        let records = records.0;
        for r in &records {
            if self.ids.contains_key(&r.scope) {
                continue;
            }
            let nothing = Share {
                sessions: r.sessions.map(|_| 0),
                cps: r.cps.map(|_| 0),
            };
            apply_share(core, &r.scope, r.id, nothing);
            if r.reservation.is_some() && core.account_usage(r.id).0 == 0 {
                core.set_balance(r.id, Micros(0));
                self.given.insert(r.id, Micros(0));
            }
        }
        self.ids = records.iter().map(|r| (r.scope.clone(), r.id)).collect();
        self.records = records;
        self.next = Instant::now();
    }

    /// A call's debit the core just made (its cost left the core's balance).
    pub(super) fn debited(&mut self, account: Id, cost: Micros) {
        *self.debited.entry(account).or_default() += cost.0;
    }

    /// When the next sync is due (the event loop wakes for it).
    pub(super) fn due(&self) -> Instant {
        self.next
    }

    /// Starts a sync if one is due and none is in flight.
    pub(super) fn maybe_start(&mut self, core: &mut Core<RelayMedia>) {
        let now = Instant::now();
        if self.in_flight || now < self.next {
            return;
        }
        self.next = now + self.every;
        let mut usage = Vec::new();
        let mut money = Vec::new();
        for r in &self.records {
            let (in_use, taken) = match r.scope {
                Scope::Account(_) => core.account_usage(r.id),
                Scope::Connection(_) => core.connection_usage(r.id),
            };
            let window = self.taken.entry(r.scope.clone()).or_default();
            let demand = window.back().is_none_or(|(_, t)| taken > *t);
            window.push_back((now, taken));
            while window
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
            {
                window.pop_front();
            }
            let last_second = taken - window.front().map_or(taken, |(_, t)| *t);
            let last_second = u32::try_from(last_second).unwrap_or(u32::MAX);
            if r.sessions.is_some() || r.cps.is_some() {
                usage.push(Usage {
                    scope: r.scope.clone(),
                    sessions: r.sessions.map(|l| (l, in_use)),
                    cps: r.cps.map(|l| (l, last_second)),
                    demand,
                });
            }
            if let (Some(res), Scope::Account(name)) = (r.reservation, &r.scope) {
                let held = core.account_held(r.id, now);
                let given = self.given.get(&r.id).copied().unwrap_or_default();
                // No room for one more call here while calls are attempted: waiting.
                let needy = demand && given.0 < held.0.saturating_add(res.0);
                let want = Micros(held.0.saturating_add(res.0.saturating_mul(SPARE_CALLS)));
                let seen = self.debited.get(&r.id).copied().unwrap_or_default();
                // As for the leases: never more while the budget is in flight than what it
                // can leave this node.
                let bound = self.limits.budget_bound(name, held, want);
                if bound < given {
                    core.set_balance(r.id, bound);
                    self.given.insert(r.id, bound);
                }
                money.push((r.id, name.clone(), held, want, needy, seen));
            }
        }
        self.taken.retain(|s, _| self.ids.contains_key(s));
        for (scope, share) in self.limits.pre_shares(&usage) {
            if let Some(id) = self.ids.get(&scope) {
                apply_share(core, &scope, *id, share);
            }
        }
        self.in_flight = true;
        let (limits, tx) = (self.limits.clone(), self.tx.clone());
        tokio::spawn(async move {
            let shares = limits.shares(&usage).await;
            let mut budgets = Vec::with_capacity(money.len());
            for (id, name, held, want, needy, seen) in money {
                let b = limits.budget(&name, held, want, needy).await;
                budgets.push((id, b, seen));
            }
            let _ = tx.send(Synced { shares, budgets });
        });
    }

    /// Gives the core what a sync brought back.
    pub(super) fn apply(&mut self, s: Synced, core: &mut Core<RelayMedia>) {
        self.in_flight = false;
        for (scope, share) in s.shares {
            if let Some(id) = self.ids.get(&scope) {
                apply_share(core, &scope, *id, share);
            }
        }
        for (id, budget, seen) in s.budgets {
            let since = self.debited.get(&id).copied().unwrap_or_default() - seen;
            let b = Micros(budget.0.saturating_sub(since.max(0)).max(0));
            core.set_balance(id, b);
            self.given.insert(id, b);
        }
    }

    /// A top-up reached the store: sync at once (the core is not credited directly, its
    /// balance is its reservation of the shared one).
    pub(super) fn soon(&mut self) {
        self.next = Instant::now();
    }
}

fn apply_share(core: &mut Core<RelayMedia>, scope: &Scope, id: Id, share: Share) {
    match scope {
        Scope::Account(_) => core.set_account_share(id, Some(share)),
        Scope::Connection(_) => core.set_connection_share(id, Some(share)),
    }
}
