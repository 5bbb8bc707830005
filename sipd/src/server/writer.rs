//! The store writer: CDRs and debits, in order, on a thread of their own so a flush never
//! stalls signalling. Whatever queued up while the last batch was flushed goes in the next
//! batch with one flush (the store's durability, at hundreds of calls per second).

use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use anyhow::Result;
use tracing::error;

use crate::store::{CdrDraft, Id, Micros, Store};

/// Most records in one batch (one flush).
const BATCH: usize = 1024;

pub struct Writer {
    tx: mpsc::Sender<(CdrDraft, Option<(Id, Micros)>)>,
    thread: JoinHandle<()>,
}

impl Writer {
    pub fn spawn(store: Arc<Store>) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<(CdrDraft, Option<(Id, Micros)>)>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    for e in store.settle_calls(batch) {
                        error!(error = %e, "CDR or balance debit not stored");
                    }
                }
            })?;
        Ok(Writer { tx, thread })
    }

    /// Queues a CDR and, for a billed call, its debit.
    pub fn settle(&self, cdr: CdrDraft, debit: Option<(Id, Micros)>) {
        if self.tx.send((cdr, debit)).is_err() {
            error!("store writer is gone: CDR lost");
        }
    }

    /// Writes what is queued and stops.
    pub fn finish(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            error!("store writer panicked");
        }
    }
}
