//! The shell's side of the leases: what the event loop hands over (each account's and
//! connection's use) and gets back (the core's shares), in one batch per sync.
//!
//! A give-back is safe only if the core cannot admit above the smaller lease while the round
//! trip is in flight, so the event loop applies [`SharedLimits::pre_shares`] (no I/O) before
//! it awaits [`SharedLimits::shares`], and the result when it arrives.

use sipd_core::policy::Share;

use super::{Kind, Scope, SharedLimits};

/// One account's or connection's cluster limits and how much of them this node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Whose limits.
    pub scope: Scope,
    /// Cluster limit of calls up at once, and the calls up here (`None`: no such limit).
    pub sessions: Option<(u32, u32)>,
    /// Cluster limit of calls per second, and the calls started here in the last second.
    pub cps: Option<(u32, u32)>,
    /// Calls were attempted since the last sync (see [`SharedLimits::lease`]).
    pub demand: bool,
}

impl SharedLimits {
    /// The shares to give the core before [`shares`](Self::shares) is awaited: never more
    /// than what is leased now, nor than what the coming give-back leaves.
    pub fn pre_shares(&self, usage: &[Usage]) -> Vec<(Scope, Share)> {
        usage
            .iter()
            .map(|u| {
                let bound = |kind, l: Option<(u32, u32)>| {
                    l.map(|(limit, in_use)| self.lease_bound(kind, &u.scope, limit, in_use))
                };
                let share = Share {
                    sessions: bound(Kind::Sessions, u.sessions),
                    cps: bound(Kind::Cps, u.cps),
                };
                (u.scope.clone(), share)
            })
            .collect()
    }

    /// The shares this node holds after topping up or giving back each lease as needed
    /// (round trips only for the leases that need it; fallback shares when Redis is away).
    pub async fn shares(&self, usage: &[Usage]) -> Vec<(Scope, Share)> {
        let mut out = Vec::with_capacity(usage.len());
        for u in usage {
            let mut share = Share::default();
            if let Some((limit, in_use)) = u.sessions {
                share.sessions = Some(
                    self.lease(Kind::Sessions, &u.scope, limit, in_use, u.demand)
                        .await,
                );
            }
            if let Some((limit, in_use)) = u.cps {
                share.cps = Some(
                    self.lease(Kind::Cps, &u.scope, limit, in_use, u.demand)
                        .await,
                );
            }
            out.push((u.scope.clone(), share));
        }
        out
    }
}
