//! The store writer: the call core's writes (saved calls, and each ended call's debit, CDR
//! and record removal in one transaction), in order, on a thread of their own so a flush never
//! stalls the event loop. Whatever queued up while the last batch was flushed goes in the next
//! batch with one flush: group commit, the store's durability at hundreds of calls per second.
//!
//! Every write gets a sequence number, and the writer publishes the highest one that is
//! durable ([`Writer::durable`]). The event loop holds the messages that must not go out
//! before a write is durable (an answered call's 2xx, the 200 to the BYE that ended a billed
//! call) until that number passes the write's (`held.rs`).
//!
//! The queue is bounded ([`QUEUE`] records). When it is full (the disk is slower than the
//! calls ending), what happens depends on what the record is worth:
//! - a CDR of an answered call, any record with a debit and any saved call are never dropped:
//!   the event loop waits for room (back-pressure, counted in `blocked`). Signalling stalls for
//!   at most one batch's flush, and money records are never lost;
//! - a CDR of an unanswered attempt (refused after authentication, failed, cancelled) and a
//!   checkpoint are dropped and counted in `dropped`, with a warning: they cost nothing, and a
//!   slow disk must not stop new calls.
//!
//! Refusals before authentication never come here: the core counts them per (source,
//! reason), so nothing a stranger sends can fill this queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tracing::{error, warn};

use tokio::sync::watch;

use crate::store::{CallWrite, Store};

/// Most records in one batch (one flush).
const BATCH: usize = 1024;
/// How long a batch that messages wait for waits for more writes before its flush.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(2);
/// Writes no message waits for are flushed at most this long after they are written.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// Records queued at most: a CDR is a few hundred bytes, so a few MiB.
pub const QUEUE: usize = 16_384;

/// A write and its sequence number.
type Job = (u64, CallWrite);

/// The writer's counters, for `/metrics` and the status.
#[derive(Debug, Default)]
struct Counters {
    depth: AtomicU64,
    written: AtomicU64,
    blocked: AtomicU64,
    dropped: AtomicU64,
    held: AtomicU64,
}

/// A snapshot of the writer's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Records waiting to be written now.
    pub depth: u64,
    /// The queue's capacity.
    pub capacity: u64,
    /// Records handed to the store.
    pub written: u64,
    /// Times the event loop waited for room (answered or billed CDRs on a full queue).
    pub blocked: u64,
    /// Unanswered attempts' CDRs dropped on a full queue.
    pub dropped: u64,
    /// Messages the event loop holds until a write is durable (an answered call's 2xx, the
    /// 200 to a BYE that ended a billed call).
    pub held: u64,
}

/// A cheap handle on the counters, for the management API.
#[derive(Debug, Clone, Default)]
pub struct WriterProbe(Arc<Counters>);

impl WriterProbe {
    /// The counters now, with the queue's capacity.
    pub fn stats(&self) -> WriterStats {
        let c = &self.0;
        WriterStats {
            depth: c.depth.load(Ordering::Relaxed),
            capacity: QUEUE as u64,
            written: c.written.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            held: c.held.load(Ordering::Relaxed),
        }
    }
}

pub struct Writer {
    tx: mpsc::SyncSender<Job>,
    thread: JoinHandle<()>,
    counters: Arc<Counters>,
    /// The sequence number of the last write handed out.
    seq: u64,
    /// Calls in setup whose record was dropped on a full queue: their CDR removes nothing,
    /// so it may be dropped too.
    unsaved: std::collections::HashSet<String>,
    durable: watch::Receiver<u64>,
    /// Where durable CDRs are copied (the cluster's CDR stream), once set.
    tap: CdrTap,
}

/// Receives every CDR once it is durable in the store.
type CdrTap = Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<sipd_core::records::Cdr>>>;

impl Writer {
    /// From now on, every CDR goes to `tx` once it is durable (the cluster's CDR stream).
    pub fn tap_cdrs(&self, tx: tokio::sync::mpsc::UnboundedSender<sipd_core::records::Cdr>) {
        let _ = self.tap.set(tx);
    }

    pub fn spawn(store: Arc<Store>) -> Result<Writer> {
        let s2 = store.clone();
        Writer::spawn_with(
            QUEUE,
            move |batch, stored| store.write_calls_keeping(batch, stored),
            move || s2.flush_calls(),
        )
    }

    /// With `capacity` records, `write` writing a batch and `flush` making what was written
    /// durable (tests give slow ones). A batch with a write that messages wait for is flushed
    /// at once; the others (calls in setup, refused attempts' CDRs, checkpoints) at most
    /// [`FLUSH_EVERY`] later, so they share flushes and cost no fsync each.
    fn spawn_with(
        capacity: usize,
        write: impl Fn(
            Vec<CallWrite>,
            &mut Vec<sipd_core::records::Cdr>,
        ) -> Vec<crate::store::StoreError>
        + Send
        + 'static,
        flush: impl Fn() -> Result<(), crate::store::StoreError> + Send + 'static,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::sync_channel::<Job>(capacity);
        let (durable_tx, durable) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let tap: CdrTap = Arc::new(std::sync::OnceLock::new());
        let cdr_tap = tap.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                // Written but not flushed yet: since when, and up to which sequence number.
                let mut dirty: Option<(Instant, u64)> = None;
                // CDRs written, for the tap once they are durable.
                let mut settled: Vec<sipd_core::records::Cdr> = Vec::new();
                loop {
                    let first = match dirty {
                        Some((since, _)) => {
                            match rx.recv_timeout(FLUSH_EVERY.saturating_sub(since.elapsed())) {
                                Ok(j) => Some(j),
                                Err(mpsc::RecvTimeoutError::Timeout) => None,
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            }
                        }
                        None => match rx.recv() {
                            Ok(j) => Some(j),
                            Err(_) => break,
                        },
                    };
                    let mut holds = false;
                    if let Some(first) = first {
                        c.depth.fetch_sub(1, Ordering::Relaxed);
                        let mut batch = vec![first];
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(j) => {
                                    c.depth.fetch_sub(1, Ordering::Relaxed);
                                    batch.push(j)
                                }
                                Err(_) => break,
                            }
                        }
                        holds = batch.iter().any(|(_, w)| w.holds_signalling());
                        // Group commit: a flush costs far more than a write, so a batch that
                        // must be flushed now waits a moment for the writes right behind it.
                        let until = Instant::now() + COMMIT_DELAY;
                        while holds && batch.len() < BATCH {
                            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                                Ok(j) => {
                                    c.depth.fetch_sub(1, Ordering::Relaxed);
                                    batch.push(j)
                                }
                                Err(_) => break,
                            }
                        }
                        let n = batch.len() as u64;
                        let last = batch.last().map_or(0, |(seq, _)| *seq);
                        // Only CDRs stored (with the id the store gave them) reach the tap.
                        let before = settled.len();
                        for e in write(batch.into_iter().map(|(_, w)| w).collect(), &mut settled) {
                            error!(error = %e, "call record, CDR or balance debit not stored");
                        }
                        if cdr_tap.get().is_none() {
                            settled.truncate(before);
                        }
                        c.written.fetch_add(n, Ordering::Relaxed);
                        dirty = Some((dirty.map_or(Instant::now(), |(t, _)| t), last));
                    }
                    if let Some((since, last)) = dirty
                        && (holds || since.elapsed() >= FLUSH_EVERY)
                    {
                        if let Err(e) = flush() {
                            error!(error = %e, "store flush failed: recent call records and CDRs may not be durable");
                        }
                        // Released even when the flush failed: its error is logged, and
                        // holding the calls' signalling forever would not make the disk work.
                        durable_tx.send_replace(last);
                        dirty = None;
                        if let Some(t) = cdr_tap.get() {
                            for cdr in settled.drain(..) {
                                let _ = t.send(cdr);
                            }
                        }
                    }
                }
                if let Some((_, last)) = dirty {
                    if let Err(e) = flush() {
                        error!(error = %e, "store flush failed at exit");
                    }
                    durable_tx.send_replace(last);
                }
            })?;
        Ok(Writer {
            tap,
            tx,
            thread,
            counters,
            seq: 0,
            unsaved: std::collections::HashSet::new(),
            durable,
        })
    }

    pub fn probe(&self) -> WriterProbe {
        WriterProbe(self.counters.clone())
    }

    /// The event loop holds `n` messages for durability now.
    pub fn set_held(&self, n: usize) {
        self.counters.held.store(n as u64, Ordering::Relaxed);
    }

    /// The highest sequence number that is durable, to wait on.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Queues a write; returns its sequence number (see the module's docs for a full queue).
    pub fn write(&mut self, mut w: CallWrite) -> u64 {
        match &mut w {
            CallWrite::Save { call, .. } => {
                self.unsaved.remove(&call.media_id);
            }
            CallWrite::Settle { saved, .. }
                if saved.as_ref().is_some_and(|id| self.unsaved.remove(id)) =>
            {
                *saved = None;
            }
            _ => {}
        }
        self.seq += 1;
        let seq = self.seq;
        let c = &self.counters;
        let keep = !w.droppable();
        c.depth.fetch_add(1, Ordering::Relaxed);
        let job = match self.tx.try_send((seq, w)) {
            Ok(()) => return seq,
            Err(mpsc::TrySendError::Full(job)) => job,
            Err(mpsc::TrySendError::Disconnected(_)) => {
                c.depth.fetch_sub(1, Ordering::Relaxed);
                error!("store writer is gone: call record or CDR lost");
                return seq;
            }
        };
        if !keep {
            if let (_, CallWrite::Save { call, .. }) = &job {
                self.unsaved.insert(call.media_id.clone());
            }
            c.depth.fetch_sub(1, Ordering::Relaxed);
            let n = c.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    dropped = n,
                    "CDR queue full: CDR of an unanswered attempt dropped (the disk is slower than the calls)"
                );
            }
            return seq;
        }
        c.blocked.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(job).is_err() {
            c.depth.fetch_sub(1, Ordering::Relaxed);
            error!("store writer is gone: call record or CDR lost");
        }
        seq
    }

    /// Writes what is queued and stops.
    pub fn finish(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            error!("store writer panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CdrDraft, Micros};
    use std::sync::Mutex;
    use std::time::Duration;

    fn cdr(call_id: &str, answered: bool) -> CdrDraft {
        CdrDraft {
            call_id: call_id.into(),
            start_ms: 1,
            answer_ms: answered.then_some(2),
            end_ms: 3,
            caller: "a".into(),
            callee: "b".into(),
            source: None,
            account_id: Some(1),
            connection_id: None,
            result_code: if answered { 200 } else { 486 },
            reason: String::new(),
            duration_secs: 0,
            cost: Micros(0),
            hung_up_by: None,
        }
    }

    fn settle(cdr: CdrDraft) -> CallWrite {
        CallWrite::Settle {
            cdr,
            debit: None,
            saved: None,
        }
    }

    /// A disk slower than the calls: the queue stays at its capacity, unanswered attempts
    /// are dropped and counted, every answered call's CDR is written (the caller waited).
    #[test]
    fn a_full_queue_drops_unanswered_attempts_and_keeps_every_answered_call() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let w2 = written.clone();
        let mut w = Writer::spawn_with(
            4,
            move |batch, _| {
                std::thread::sleep(Duration::from_millis(20));
                w2.lock()
                    .unwrap()
                    .extend(batch.into_iter().map(|w| match w {
                        CallWrite::Settle { cdr, .. } => cdr.call_id,
                        _ => String::new(),
                    }));
                Vec::new()
            },
            || Ok(()),
        )
        .unwrap();
        let probe = w.probe();
        for i in 0..200 {
            w.write(settle(cdr(&format!("u{i}"), false)));
            w.write(settle(cdr(&format!("a{i}"), true)));
            assert!(probe.stats().depth <= 4 + 1, "{:?}", probe.stats());
        }
        w.finish();
        let s = probe.stats();
        let written = written.lock().unwrap();
        let answered = written.iter().filter(|c| c.starts_with('a')).count();
        assert_eq!(answered, 200, "an answered call's CDR was lost");
        assert!(s.dropped > 0 && s.blocked > 0, "{s:?}");
        assert_eq!(written.len() as u64 + s.dropped, 400);
        assert_eq!(s.depth, 0);
    }
}
