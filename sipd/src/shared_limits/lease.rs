//! Leases of cluster-wide counts (concurrent calls, calls per second): how many units this
//! node may use, taken from Redis only when the local use nears the lease or leaves much of
//! it idle.

use std::fmt;
use std::time::Instant;

use fred::types::Value;

use super::{SHARE_LUA, SharedLimits, ints};

/// What a lease counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Calls up at once (an account's sessions, a connection's channels).
    Sessions,
    /// Calls started per second.
    Cps,
}

/// Whose limit a lease is a part of, by name: store ids are each node's own (two nodes
/// provisioned apart give one account different ids), names are the cluster's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// An account's limits, by account name.
    Account(String),
    /// An upstream connection's caps, by connection name.
    Connection(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Account(name) => write!(f, "account:{name}"),
            Scope::Connection(name) => write!(f, "connection:{name}"),
        }
    }
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Sessions => "sessions",
            Kind::Cps => "cps",
        }
    }
}

/// A lease as this node holds it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    units: u32,
    limit: u32,
    /// Taken from Redis since the last outage (else it must be re-sent).
    pub(super) synced: bool,
    /// When Redis last saw it: a lease with idle units is re-sent every
    /// [`Settings::recheck`](super::Settings::recheck), so it gives them back to a node
    /// that waits for them.
    checked: Instant,
    /// Other nodes wait for units and this one holds idle ones: the core is bounded to the
    /// calls it has ([`SharedLimits::lease_bound`]) and the next lease gives the rest back.
    yield_next: bool,
}

/// Units kept free beyond the use: `pct` of the limit, at least 1.
fn headroom(limit: u32, pct: u32) -> u32 {
    let h = u64::from(limit) * u64::from(pct) / 100;
    u32::try_from(h).unwrap_or(u32::MAX).max(1)
}

/// Whether a held lease is fine as it is for `in_use` (no round trip): synced, under this
/// limit, between half and twice the headroom free, not to be yielded, and, if it has idle
/// units, seen by Redis within `recheck` (another node may be waiting for them).
fn fits(h: &Held, limit: u32, in_use: u32, headroom: u32, recheck: std::time::Duration) -> bool {
    let low = in_use.saturating_add(headroom.div_ceil(2));
    let high = in_use.saturating_add(headroom.saturating_mul(2));
    let fresh = h.units <= in_use || h.checked.elapsed() < recheck;
    h.synced
        && !h.yield_next
        && h.limit == limit
        && (h.units >= low || h.units >= limit)
        && h.units <= high
        && fresh
}

/// This node's share of `limit` when Redis is away: limit / live nodes, at least 1.
pub(super) fn fallback(limit: u32, live_nodes: u32) -> u32 {
    if limit == 0 {
        return 0;
    }
    (limit / live_nodes.max(1)).max(1)
}

impl SharedLimits {
    /// What the core may use while a [`lease`](Self::lease) for `in_use` is in flight: the
    /// lease held now, or less if that call is going to give units back (no I/O). When Redis
    /// is away: the fallback share.
    pub fn lease_bound(&self, kind: Kind, scope: &Scope, limit: u32, in_use: u32) -> u32 {
        let st = self.lock();
        if st.away.is_some() {
            return fallback(limit, st.live_nodes);
        }
        let room = headroom(limit, self.settings.lease_headroom_pct);
        let want = in_use.saturating_add(room).min(limit).max(in_use);
        st.leases.get(&(kind, scope.clone())).map_or(0, |h| {
            if h.yield_next {
                h.units.min(in_use)
            } else {
                h.units.min(want)
            }
        })
    }

    /// The units of `limit` this node may use now for `kind` of `scope`, given `in_use`
    /// (calls up for [`Kind::Sessions`]; calls started in the last second for
    /// [`Kind::Cps`]). Talks to Redis only when the lease needs a top-up or give-back;
    /// falls back to this node's share of the limit when Redis is away. Never errors.
    ///
    /// `demand`: calls were attempted here since the last lease (the core's CPS tokens
    /// grew). With demand and no free unit, this node is *waiting*: Redis marks it, and every
    /// other node gives back its idle units at its next lease (within
    /// [`Settings::recheck`](super::Settings::recheck)), so a small limit is never held idle
    /// by one node while another refuses calls.
    pub async fn lease(
        &self,
        kind: Kind,
        scope: &Scope,
        limit: u32,
        in_use: u32,
        demand: bool,
    ) -> u32 {
        let room = headroom(limit, self.settings.lease_headroom_pct);
        let key = (kind, scope.clone());
        let (needy, yielding) = {
            let st = self.lock();
            if st.away.is_some() {
                return fallback(limit, st.live_nodes);
            }
            let held = st.leases.get(&key);
            if let Some(h) = held
                && fits(h, limit, in_use, room, self.settings.recheck)
            {
                return h.units;
            }
            let needy = demand && held.is_none_or(|h| h.units <= in_use) && in_use < limit;
            (needy, held.is_some_and(|h| h.yield_next))
        };
        let want = in_use.saturating_add(room).min(limit);
        let hash = self.key(&format!("lease:{}:{scope}", kind.key()));
        // The waiting marks live under a namespace of their own: a name may hold ':', so
        // "<hash>:waiting" would be the lease hash of a scope named "<scope>:waiting".
        let waiting = self.key(&format!("waiting:lease:{}:{scope}", kind.key()));
        let keys = vec![hash.clone(), self.key("leases"), waiting];
        let args: Vec<Value> = vec![
            self.node.as_str().into(),
            i64::from(want).into(),
            i64::from(in_use).into(),
            i64::from(limit).into(),
            if needy { "1" } else { "0" }.into(),
            self.need_ttl_ms().into(),
            if yielding { "1" } else { "0" }.into(),
        ];
        let r = self
            .script::<Value>("share.lua", SHARE_LUA, keys, args)
            .await
            .and_then(|v| ints(v, "share.lua"));
        let mut st = self.lock();
        match r.as_deref() {
            Ok([grant, _limit, _others, waiting]) => {
                let units = u32::try_from(*grant).unwrap_or(0);
                st.leases.insert(
                    key,
                    Held {
                        units,
                        limit,
                        synced: true,
                        checked: Instant::now(),
                        yield_next: *waiting > 0 && !needy && units > in_use,
                    },
                );
                units
            }
            _ => fallback(limit, st.live_nodes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_share_is_at_least_one() {
        assert_eq!(fallback(10, 3), 3);
        assert_eq!(fallback(10, 0), 10);
        assert_eq!(fallback(2, 5), 1);
        assert_eq!(fallback(0, 5), 0);
    }

    #[test]
    fn lease_is_kept_between_half_and_twice_the_headroom() {
        let r = std::time::Duration::from_secs(60);
        let h = Held {
            units: 5,
            limit: 30,
            synced: true,
            checked: Instant::now(),
            yield_next: false,
        };
        let room = headroom(30, 10);
        assert_eq!(room, 3);
        assert!(fits(&h, 30, 3, room, r), "2 free of 3: enough");
        assert!(!fits(&h, 30, 4, room, r), "1 free: top up");
        assert!(fits(&h, 30, 0, room, r));
        let big = Held { units: 9, ..h };
        assert!(!fits(&big, 30, 0, room, r), "9 idle: give back");
        assert!(!fits(&Held { synced: false, ..h }, 30, 3, room, r));
        assert!(!fits(&h, 20, 3, room, r), "the limit changed");
        let full = Held {
            units: 10,
            limit: 10,
            synced: true,
            checked: Instant::now(),
            yield_next: false,
        };
        assert!(
            fits(&full, 10, 10, 1, r),
            "the whole limit: nothing to ask for"
        );
        let zero = std::time::Duration::ZERO;
        assert!(!fits(&h, 30, 3, room, zero), "idle units: re-sent");
        assert!(fits(&full, 10, 10, 1, zero), "none idle: kept");
        let yielding = Held {
            yield_next: true,
            ..h
        };
        assert!(!fits(&yielding, 30, 3, room, r), "yields at the next lease");
    }
}
