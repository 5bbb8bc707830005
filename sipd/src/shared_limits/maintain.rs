//! The periodic work every node does: reclaim dead nodes' leases and reservations, count
//! the live nodes (for the fallback shares), and, after an outage, flush the queued debits
//! and mark every lease for re-sending.

use std::sync::Arc;
use std::time::Duration;

use fred::types::Value;

use super::{Health, RECLAIM_LUA, SharedLimits, ints};

impl SharedLimits {
    /// One round of maintenance; returns the health after it (the shell raises or clears
    /// its alert from it). One Redis round trip, plus one per queued debit after an outage.
    pub async fn tick(&self) -> Health {
        let keys = vec![self.key("leases"), self.key("nodes")];
        let args: Vec<Value> = vec![self.key("node:").into(), self.node.as_str().into()];
        let r = self
            .script::<Value>("reclaim.lua", RECLAIM_LUA, keys, args)
            .await
            .and_then(|v| ints(v, "reclaim.lua"));
        if let Ok([removed, live]) = r.as_deref() {
            let back = {
                let mut st = self.lock();
                st.live_nodes = u32::try_from(*live).unwrap_or(1).max(1);
                let back = st.away.take();
                if back.is_some() {
                    // What was admitted during the outage is sent as the leases' floors.
                    st.leases.values_mut().for_each(|h| h.synced = false);
                    st.budgets.values_mut().for_each(|b| b.synced = false);
                }
                back
            };
            if let Some(since) = back {
                tracing::info!(
                    away_secs = since.elapsed().as_secs(),
                    queued = self.queued_debits(),
                    "shared limits: redis back, reconciling"
                );
            }
            if *removed > 0 {
                tracing::info!(removed, "shared limits: reclaimed dead nodes' leases");
            }
            if self.queued_debits() > 0
                && let Err(e) = self.flush_outbox().await
            {
                tracing::warn!(error = %e, "shared limits: queued debits not all sent");
            }
        }
        self.health()
    }

    /// Runs [`tick`](Self::tick) every `every` until the returned task is aborted, logging
    /// each change of health.
    pub fn spawn_maintenance(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut up = true;
            loop {
                t.tick().await;
                let h = self.tick().await;
                let now_up = h == Health::Up;
                if now_up != up {
                    tracing::info!(health = ?h, "shared limits: health changed");
                    up = now_up;
                }
            }
        })
    }
}
