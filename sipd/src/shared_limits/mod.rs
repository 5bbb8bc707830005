//! Limits and balances shared by a cluster of nodes, on Redis.
//!
//! # What is shared, and how the hot path stays local
//! - **Concurrent calls** (per account, and per upstream connection's channels): each node
//!   holds a bounded local *lease* of slots, taken from Redis atomically (`share.lua`: the
//!   nodes' leases never add up to more than the limit). The core admits within the lease
//!   ([`sipd_core::policy::Share`]); the shell calls [`SharedLimits::lease`] in the
//!   background, which asks Redis only when the local use nears the lease (top-up) or leaves
//!   much of it idle (give-back). Leases live in a hash per account (or connection) keyed by
//!   node, so [`SharedLimits::tick`] (`reclaim.lua`, run by every live node) gives back a
//!   dead node's slots once its heartbeat key has expired. Leases are keyed by account or
//!   connection *name* ([`Scope`]): store ids differ from node to node.
//!   A node with calls waiting and no free unit is marked waiting in Redis; every other
//!   node shows its lease to Redis at least every [`Settings::recheck`] while it holds idle
//!   units; one that learns of a waiting node stops growing, bounds its core to the calls it
//!   has ([`SharedLimits::lease_bound`]) and gives the rest back at its next lease (so a
//!   unit is never admitted on by two nodes): a small limit (2 over 3 nodes) never stays
//!   idle on one node while another refuses calls for longer than a recheck and two syncs.
//!   Accuracy while Redis is up: strict, never more than the limit up across the cluster.
//! - **CPS** (per account and per connection): the same lease, in calls per second: each node
//!   runs its own GCRA at its leased rate, and the leased rates never add up to more than the
//!   limit. Accuracy: over any second, at most what one node at the full limit could start
//!   (limit + a burst of limit, the GCRA's definition everywhere in the project) plus the
//!   rate moved between nodes during that second (a node that gives rate back has already
//!   spent its burst, the node that takes it starts with a full one).
//! - **Balance**: integer micro-units in Redis. Each node *reserves* part of the balance
//!   (`share.lua`, the balance read in the same script: the nodes' reservations never add up to more than the balance) and its
//!   core admits and cuts calls within that reservation as if it were the whole balance, so
//!   the calls in progress on every node count, and the shared balance never goes below
//!   zero. A top-up on any node ([`SharedLimits::top_up`]) raises the balance every node
//!   reserves from; it goes through the outbox like a debit (a negative one, with an id of
//!   its own), so it is applied once and survives an outage. A balance missing in Redis (an
//!   emptied Redis) is seeded, inside the script that first needs it, from this node's store
//!   plus what its outbox still owes, never taken as 0 or driven below it.
//!
//! # Money: exactly once
//! A finished call's debit goes through a durable outbox (the store's `cluster_debits`
//! tree, keyed by the CDR id) before it is sent, and `debit.lua` applies it once: it takes
//! the cost off the balance and off this node's reservation and sets a "debited" mark for
//! `{node}:{CDR id}` in the same script. A retry (after a timeout whose command did reach
//! Redis, a crash, an outage) finds the mark and changes nothing. So:
//! - the store's settle writes the debit, the CDR and the outbox entry in one sled
//!   transaction ([`crate::store::Store::set_debit_outbox`]): a crash before it leaves the
//!   call to adopt at restart, settled then, once; never a CDR without its queued debit;
//! - crash after the outbox write, before or after the Redis debit: the entry is still there
//!   at restart and [`SharedLimits::flush_outbox`] sends it; applied once by the mark;
//! - the mark outlives any plausible retry ([`Settings::debit_mark_ttl`], 7 days).
//!
//! The store's settlement (sipd/src/store/calls.rs) stays the local record of truth for the
//! CDR; Redis holds the shared balance.
//!
//! # When Redis is away
//! Every command has a deadline ([`Settings::timeout`]): nothing hangs. After a failure the
//! node is [`Health::Away`] (the shell raises an alert) and until a [`SharedLimits::tick`]
//! reaches Redis again:
//! - leases fall back to this node's share of the cluster limit: limit / live nodes at last
//!   sight, at least 1;
//! - the balance the core admits within is the balance last known, minus the other nodes'
//!   reservations at last sight, minus the debits queued here since (the core subtracts
//!   this node's own calls);
//! - debits are queued in the outbox and applied, once, on reconnect;
//! - on reconnect the outbox is flushed first, then every lease and reservation is re-sent
//!   with what is in use here as its floor, so the cluster sees the calls admitted during
//!   the outage and converges.
//!
//! # Round trips
//! None per call. Per account (and connection) in use: one `share.lua` per kind when the
//! lease needs a top-up or give-back, one `share.lua` when the reservation does; one
//! `debit.lua` per paid call, off the signalling path (after the settle); one `share.lua`
//! per [`Settings::recheck`] for a lease or reservation with idle units. Per node: one
//! `reclaim.lua` per tick.
//!
//! Scripts touch keys they compute (heartbeat keys), so this needs a single Redis (with or
//! without Sentinel), not Redis Cluster. Lua numbers are doubles: balances and reservations
//! are exact up to 2^53 micro-units (9 billion units), `DECRBY` itself is exact integer.

mod balance;
mod lease;
mod maintain;
mod sync;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::LuaInterface as _;
use fred::types::{FromValue, Value};
use sipd_core::records::Micros;

pub use balance::{Debit, outbox_entry, outbox_value};

/// The store's tree that holds the debits queued for the shared balance.
pub const OUTBOX_TREE: &str = "cluster_debits";
pub use lease::{Kind, Scope};
pub use sync::Usage;

/// Leases of limits and reservations of balances: one script, a share of a cap.
const SHARE_LUA: &str = include_str!("share.lua");
const DEBIT_LUA: &str = include_str!("debit.lua");
const RECLAIM_LUA: &str = include_str!("reclaim.lua");

/// How the shared limits behave (`[cluster]`: see `ClusterConfig::limits_settings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Deadline of every Redis command: past it the node is away and falls back.
    pub timeout: Duration,
    /// Slots leased beyond what is in use, in percent of the limit (at least 1): a node
    /// asks for more when fewer than half of them are left, and gives back what it holds
    /// beyond twice this.
    pub lease_headroom_pct: u32,
    /// How long Redis remembers that a call was debited (or a top-up applied), to refuse a
    /// repeat.
    pub debit_mark_ttl: Duration,
    /// How often a node holding idle units (slots, rate or money beyond what its calls use)
    /// shows them to Redis, which takes them back when another node waits for units: the
    /// longest a node waits for units another node holds idle.
    pub recheck: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_millis(500),
            lease_headroom_pct: 10,
            debit_mark_ttl: Duration::from_secs(7 * 24 * 3600),
            recheck: Duration::from_millis(500),
        }
    }
}

/// Why a Redis step failed (the caller falls back; nothing here is fatal).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// No answer within [`Settings::timeout`].
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis (or the connection to it) answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The local outbox of debits could not be read or written.
    #[error("debit outbox: {0}")]
    Outbox(#[from] sled::Error),
    /// A script answered something it never returns.
    #[error("unexpected answer from {0}")]
    Answer(&'static str),
    /// Redis is known to be away: nothing was sent (the next tick tries again).
    #[error("redis is away")]
    Away,
    /// Another process holds this node's name: nothing was sent.
    #[error("fenced: another process holds this node's name")]
    Fenced,
}

/// Whether the shared state is reachable: the shell turns `Away` into an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Leases, reservations and debits go to Redis.
    Up,
    /// Redis did not answer: fallback shares and balances, debits queued.
    Away {
        /// When the first failure was seen.
        since: Instant,
        /// Debits waiting in the outbox.
        queued_debits: usize,
    },
}

#[derive(Debug, Default)]
struct State {
    /// Units held per lease, and the limit they were taken under.
    leases: HashMap<(Kind, Scope), lease::Held>,
    /// Per account name: this node's reservation and what Redis said at last sight.
    budgets: HashMap<String, balance::Budget>,
    /// Live nodes at last sight (at least 1: this one).
    live_nodes: u32,
    /// Since when Redis is away; `None`: up.
    away: Option<Instant>,
}

/// Where an account's balance comes from when Redis has none (an emptied Redis): this
/// node's store, by account name.
pub type SeedFn = Box<dyn Fn(&str) -> Option<Micros> + Send + Sync>;

/// One node's handle on the cluster's shared limits and balances.
pub struct SharedLimits {
    client: Client,
    node: String,
    prefix: String,
    settings: Settings,
    outbox: sled::Tree,
    state: Mutex<State>,
    seed: Option<SeedFn>,
    /// Another process may hold this node's name: nothing is sent under it (see
    /// [`SharedLimits::fence`]).
    fenced: AtomicBool,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SharedLimits {
    /// Over an already connected `client` (its reconnect policy is the caller's), as
    /// `node` (its heartbeat key is `{prefix}:node:{node}`), with keys under `prefix`.
    /// `outbox` is the durable queue of debits (a tree of this node's store).
    pub fn new(
        client: Client,
        node: impl Into<String>,
        prefix: impl Into<String>,
        settings: Settings,
        outbox: sled::Tree,
    ) -> SharedLimits {
        SharedLimits {
            client,
            node: node.into(),
            prefix: prefix.into(),
            settings,
            outbox,
            state: Mutex::new(State {
                live_nodes: 1,
                ..State::default()
            }),
            seed: None,
            fenced: AtomicBool::new(false),
        }
    }

    /// Fences this node off Redis (`true`) or lets it back (`false`). The cluster fences it
    /// while another process holds its heartbeat key: leases, reservations and debit marks
    /// are keyed by the node's name, so two live nodes of one name would each take the
    /// whole limit and the whole balance under one field. Fenced, the node falls back as in
    /// an outage (its share of each limit, its debits queued) until the name is its own.
    pub fn fence(&self, on: bool) {
        if self.fenced.swap(on, Ordering::Relaxed) != on {
            if on {
                tracing::warn!(node = %self.node, "shared limits: fenced (this node's name is held by another process); falling back");
            } else {
                tracing::info!(node = %self.node, "shared limits: no longer fenced");
            }
        }
    }

    /// Seeds an account's shared balance, when Redis has none, from `seed` (the node's
    /// store; [`for_store`](Self::for_store) sets it).
    pub fn with_seed(mut self, seed: SeedFn) -> SharedLimits {
        self.seed = Some(seed);
        self
    }

    /// Over `store`'s debit outbox, which this turns on: from now on every settle with a
    /// debit queues it for the shared balance in the same transaction. What the shell calls
    /// when the node is in a cluster (then [`spawn_maintenance`](Self::spawn_maintenance),
    /// which also sends the queued debits, within a tick of their settle).
    pub fn for_store(
        client: Client,
        node: impl Into<String>,
        prefix: impl Into<String>,
        settings: Settings,
        store: &std::sync::Arc<crate::store::Store>,
    ) -> SharedLimits {
        store.set_debit_outbox(true);
        let outbox = store.cluster_debits();
        let store = store.clone();
        let seed: SeedFn = Box::new(move |name| match store.account_by_name(name) {
            Ok(a) => a.map(|a| a.balance),
            Err(e) => {
                tracing::warn!(account = name, error = %e, "shared limits: no seed from the store");
                None
            }
        });
        SharedLimits::new(client, node, prefix, settings, outbox).with_seed(seed)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether Redis is reachable, as last seen.
    pub fn health(&self) -> Health {
        let since = self.lock().away;
        match since {
            None => Health::Up,
            Some(since) => Health::Away {
                since,
                queued_debits: self.outbox.len(),
            },
        }
    }

    /// Live nodes at last sight (this one included).
    pub fn live_nodes(&self) -> u32 {
        self.lock().live_nodes.max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind: keep using them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// How long a waiting node's mark counts: a few rechecks, so the node keeps it fresh
    /// by asking again while it waits, and a node that stopped waiting is forgotten.
    fn need_ttl_ms(&self) -> i64 {
        i64::try_from(self.settings.recheck.as_millis().saturating_mul(4))
            .unwrap_or(i64::MAX)
            .max(100)
    }

    fn is_away(&self) -> bool {
        self.lock().away.is_some()
    }

    /// Runs a script with the deadline; a failure marks Redis away.
    async fn script<R: FromValue>(
        &self,
        name: &'static str,
        lua: &'static str,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, SharedError> {
        if self.fenced.load(Ordering::Relaxed) {
            let mut st = self.lock();
            st.away.get_or_insert_with(Instant::now);
            return Err(SharedError::Fenced);
        }
        let t = self.settings.timeout;
        // EVAL, not EVALSHA: a restarted Redis has forgotten loaded scripts, and these run
        // off the call path, a few times a second at most.
        let r = match tokio::time::timeout(t, self.client.eval::<R, _, _, _>(lua, keys, args)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout(t)),
        };
        if let Err(e) = &r {
            let mut st = self.lock();
            if st.away.is_none() {
                tracing::warn!(script = name, error = %e, "shared limits: redis away, falling back");
                st.away = Some(Instant::now());
            }
        }
        r
    }
}

/// The integers a script returned.
fn ints(v: Value, name: &'static str) -> Result<Vec<i64>, SharedError> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| i.as_i64().ok_or(SharedError::Answer(name)))
            .collect(),
        _ => Err(SharedError::Answer(name)),
    }
}
