//! Nonce-count replay protection (RFC 7616 §3.3 `nc`), in bounded memory.
//!
//! Only nonces that have already produced a correct response are tracked, so unauthenticated
//! traffic cannot grow the table. When it is full the oldest-issued entries are forgotten and
//! a watermark remembers up to which serial we have forgotten: a nonce at or below it that is
//! not in the table might have been used before, so it is answered `stale=true` (the client
//! retries at once with a fresh nonce) instead of being trusted. The watermark starts at the
//! process start time, which is what makes a restart safe against replays too.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why a nonce-count was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Not above the highest count accepted for this nonce: a replayed request.
    #[error("nonce-count {nc:#010x} not above the last one seen ({last:#010x})")]
    Replayed {
        /// The count the request carried.
        nc: u32,
        /// The highest accepted before (0 for a first count of 0).
        last: u32,
    },
    /// The nonce is older than the table remembers: it might have been used; answered stale.
    #[error("nonce is older than what the replay table still remembers")]
    Forgotten,
}

/// The highest nonce-count accepted per nonce, bounded (see the module docs); shared by
/// threads behind a mutex.
#[derive(Debug)]
pub struct NonceCounts {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// serial → highest nc accepted.
    seen: BTreeMap<u64, u32>,
    watermark: u64,
}

impl NonceCounts {
    /// `start_serial`: nonces with a serial at or below this are never accepted (use the
    /// current time in nanoseconds at start).
    pub fn new(capacity: usize, start_serial: u64) -> Self {
        NonceCounts {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                seen: BTreeMap::new(),
                watermark: start_serial,
            }),
        }
    }

    /// Accepts `nc` for the nonce `serial` if it is above every count accepted before, and
    /// records it. `expired_before`: serials below this have expired and can be dropped first.
    pub fn check_and_record(
        &self,
        serial: u64,
        nc: u32,
        expired_before: u64,
    ) -> Result<(), ReplayError> {
        // A poisoned lock only means another thread panicked mid-update of a plain map; the
        // map is still consistent enough to keep refusing replays.
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = g.seen.get_mut(&serial) {
            if nc <= *last {
                return Err(ReplayError::Replayed { nc, last: *last });
            }
            *last = nc;
            return Ok(());
        }
        if serial <= g.watermark {
            return Err(ReplayError::Forgotten);
        }
        if nc == 0 {
            return Err(ReplayError::Replayed { nc, last: 0 });
        }
        g.seen.insert(serial, nc);
        while g.seen.len() > self.capacity {
            let Some((&oldest, _)) = g.seen.first_key_value() else {
                break;
            };
            g.seen.remove(&oldest);
            // Forgetting an expired nonce loses nothing: expiry refuses it anyway.
            if oldest >= expired_before {
                g.watermark = g.watermark.max(oldest);
            }
        }
        // Drop expired entries opportunistically, a few at a time, to keep the table small.
        for _ in 0..4 {
            match g.seen.first_key_value() {
                Some((&s, _)) if s < expired_before && s != serial => {
                    g.seen.remove(&s);
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Nonces tracked.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_per_nonce() {
        let t = NonceCounts::new(8, 0);
        assert_eq!(t.check_and_record(10, 1, 0), Ok(()));
        assert_eq!(
            t.check_and_record(10, 1, 0),
            Err(ReplayError::Replayed { nc: 1, last: 1 })
        );
        assert_eq!(t.check_and_record(10, 3, 0), Ok(()));
        assert!(t.check_and_record(10, 2, 0).is_err());
        assert_eq!(t.check_and_record(11, 1, 0), Ok(()), "counts are per nonce");
        assert!(t.check_and_record(12, 0, 0).is_err(), "nc starts at 1");
    }

    #[test]
    fn nonces_from_before_start_are_forgotten() {
        let t = NonceCounts::new(8, 100);
        assert_eq!(t.check_and_record(100, 1, 0), Err(ReplayError::Forgotten));
        assert_eq!(t.check_and_record(101, 1, 0), Ok(()));
    }

    #[test]
    fn bounded_and_evicted_nonces_cannot_be_replayed() {
        let t = NonceCounts::new(3, 0);
        for s in 1..=10 {
            t.check_and_record(s, 1, 0).unwrap();
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.check_and_record(5, 2, 0), Err(ReplayError::Forgotten));
        assert_eq!(t.check_and_record(10, 2, 0), Ok(()));
        // A nonce issued after the evictions is still usable.
        assert_eq!(t.check_and_record(11, 1, 0), Ok(()));
    }

    #[test]
    fn expired_entries_are_dropped_without_raising_the_watermark() {
        let t = NonceCounts::new(2, 0);
        t.check_and_record(1, 1, 0).unwrap();
        t.check_and_record(2, 1, 0).unwrap();
        t.check_and_record(50, 1, 10).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.check_and_record(20, 1, 10), Ok(()));
    }
}
