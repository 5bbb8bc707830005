//! The resync task: whenever the node is Down and Redis answers the heartbeat, it reconciles
//! bans and provisioning both ways, then sends what changed here while it ran, and only then
//! sets the node Up. Anything that may have lost a change sets the node Down again (a
//! generation counter tells a resync that something happened while it ran: it then runs
//! again rather than claiming Up). While Up, each tick prunes a bounded slice of the shared
//! ban hash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, info};

use super::{Cluster, Status};

/// What the heartbeat, the listeners and the resync task share.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Raised by every reason to resync.
    dirty: AtomicU64,
    /// Wakes the resync task.
    pub(super) wake: Notify,
    /// The last heartbeat was answered (and the key is ours).
    pub(super) reachable: AtomicBool,
    /// Redis's epoch: last seen by the heartbeat, and as of the last resync done.
    epoch: Mutex<(Option<String>, Option<String>)>,
    /// Handed over (`leave` without forgetting): the heartbeat stops.
    pub(super) left: AtomicBool,
    /// The other live process's heartbeat value, once one was found using this node's name.
    conflict: Mutex<Option<String>>,
}

impl SyncState {
    fn epoch(&self) -> std::sync::MutexGuard<'_, (Option<String>, Option<String>)> {
        self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something may have been lost: Down, and the resync task runs.
    pub(super) fn want(&self, status: &watch::Sender<Status>) {
        self.dirty.fetch_add(1, Ordering::SeqCst);
        status.send_if_modified(|cur| {
            let changed = *cur != Status::Down;
            *cur = Status::Down;
            changed
        });
        self.wake.notify_one();
    }

    /// Up, unless something asked for another resync since `generation` was read.
    fn finish(&self, status: &watch::Sender<Status>, generation: u64) -> bool {
        status.send_if_modified(|cur| {
            if self.dirty.load(Ordering::SeqCst) != generation {
                return false;
            }
            let changed = *cur != Status::Up;
            *cur = Status::Up;
            changed
        });
        *status.borrow() == Status::Up
    }

    /// Whether `epoch` differs from the one the last resync saw.
    pub(super) fn epoch_changed(&self, epoch: &str) -> bool {
        self.epoch().1.as_deref().is_some_and(|e| e != epoch)
    }

    /// The heartbeat read `epoch`.
    pub(super) fn seen(&self, epoch: String) {
        self.epoch().0 = Some(epoch);
    }

    pub(super) fn set_conflict(&self, holder: String) {
        *self.conflict.lock().unwrap_or_else(|p| p.into_inner()) = Some(holder);
    }

    pub(super) fn conflict(&self) -> Option<String> {
        self.conflict
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Bans, then provisioning, both ways.
async fn resync(c: &Arc<Cluster>) -> Result<super::bans::Resynced, String> {
    let n = super::bans::resync(c).await?;
    super::prov::resync(c).await?;
    Ok(n)
}

/// Runs the resyncs and the pruning for as long as the process.
pub(super) fn spawn(c: Arc<Cluster>) {
    tokio::spawn(async move {
        let every = Duration::from_millis(c.cfg.heartbeat_ms);
        loop {
            // A missed wake-up costs at most one heartbeat period.
            let _ = tokio::time::timeout(every, c.sync.wake.notified()).await;
            if c.sync.conflict().is_some() {
                return;
            }
            if !c.sync.reachable.load(Ordering::Relaxed) {
                continue;
            }
            if c.is_up() {
                super::prune::tick(&c).await;
                continue;
            }
            let generation = c.sync.dirty.load(Ordering::SeqCst);
            let epoch = c.sync.epoch().0.clone();
            match resync(&c).await {
                Ok(n) => {
                    c.sync.epoch().1 = epoch;
                    if !c.sync.finish(&c.status, generation) {
                        info!(bans = ?n, "cluster: resynced, but something changed meanwhile; resyncing again");
                        continue;
                    }
                    c.counts.resyncs.fetch_add(1, Ordering::Relaxed);
                    info!(node = %c.node, bans = ?n, "cluster: connected to Redis and resynced");
                    // Changes made here while the resync ran.
                    super::bans::flush_unsent(&c).await;
                }
                Err(e) => {
                    error!(error = %e, "cluster: resync failed; trying again at the next heartbeat")
                }
            }
        }
    });
}
