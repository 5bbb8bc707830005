//! Keeps the store's copy of the refusal table up to date: what changed is taken from the
//! core at most once every [`EVERY`] and written off the event loop in one batch (one flush),
//! one save at a time, and a last time at shutdown. A stranger's packets therefore cost at
//! most one store write per interval, however many there are; a crash loses at most the last
//! interval's counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sipd_core::b2bua::{Core, Media};
use sipd_core::records::RefusalChanges;
use tracing::{info, warn};

use crate::store::Store;

/// How often the refusal table is saved at most.
pub const EVERY: Duration = Duration::from_secs(5);

/// Saves the core's refusal table to the store in batches (see the module's comment).
pub struct RefusalSaver {
    store: Arc<Store>,
    next: Instant,
    /// A save is running; the next waits for it (saves stay in order) and the changes wait
    /// in the core meanwhile.
    busy: Arc<AtomicBool>,
}

impl RefusalSaver {
    /// A saver whose first save is one interval from now.
    pub fn new(store: Arc<Store>) -> RefusalSaver {
        RefusalSaver {
            store,
            next: Instant::now() + EVERY,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Gives `core` the table the store kept from the last run.
    pub fn restore<M: Media>(store: &Store, core: &mut Core<M>) {
        let mut rows = Vec::new();
        for r in store.refusals() {
            match r {
                Ok(row) => rows.push(row),
                Err(e) => warn!(error = %e, "skipping an unreadable refusal record"),
            }
        }
        if !rows.is_empty() {
            info!(rows = rows.len(), "refusal table restored from the store");
            core.restore_refusals(rows);
        }
    }

    /// Saves what changed if the interval is up and no save is running.
    pub fn tick<M: Media>(&mut self, now: Instant, core: &mut Core<M>) {
        if now < self.next || self.busy.load(Ordering::Acquire) {
            return;
        }
        self.next = now + EVERY;
        let changes = core.refusal_changes();
        if changes.is_empty() {
            return;
        }
        self.busy.store(true, Ordering::Release);
        let (store, busy) = (self.store.clone(), self.busy.clone());
        tokio::task::spawn_blocking(move || {
            save(&store, &changes);
            busy.store(false, Ordering::Release);
        });
    }

    /// The last save, at shutdown: waits for one running (a few seconds at most), then
    /// writes what is left.
    pub fn finish<M: Media>(self, core: &mut Core<M>) {
        let end = Instant::now() + Duration::from_secs(5);
        while self.busy.load(Ordering::Acquire) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        save(&self.store, &core.refusal_changes());
    }
}

fn save(store: &Store, changes: &RefusalChanges) {
    if let Err(e) = store.save_refusals(changes) {
        warn!(error = %e, rows = changes.rows.len(), "refusal table not saved");
    }
}
