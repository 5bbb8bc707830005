//! The calls-per-second bucket used by admission (per account) and routing (per connection).
//!
//! Same algorithm and parameters as the kernel SIP guard ([`relay_common::ratelimit::Gcra`]),
//! so an operator's "10 CPS" means the same thing at every layer, but the state is an
//! [`Instant`] instead of kernel nanoseconds: the policy code never reads a clock itself.

use std::time::{Duration, Instant};

use relay_common::ratelimit::Gcra;

/// One bucket's state: the theoretical arrival time of the next conforming call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpsBucket {
    tat: Option<Instant>,
}

impl CpsBucket {
    /// Takes one token for `rate` calls per second with a burst of `rate`. `false` (and no
    /// change) when over the limit. `rate == 0` never limits; validation refuses 0 anyway.
    pub(crate) fn take(&mut self, now: Instant, rate: u32) -> bool {
        let g = Gcra::per_second(rate, rate);
        if !g.is_enabled() {
            return true;
        }
        // An `Instant` earlier than the stored TAT is fine; a `now` that goes backwards (a
        // caller mixing clocks) only makes the bucket stricter, never looser.
        let base = self.tat.map_or(now, |t| t.max(now));
        if base.saturating_duration_since(now) > Duration::from_nanos(g.tolerance_ns) {
            return false;
        }
        self.tat = Some(base + Duration::from_nanos(g.interval_ns));
        true
    }

    /// How long until [`take`](Self::take) would succeed again at `rate`; zero if it would now.
    pub(crate) fn wait(&self, now: Instant, rate: u32) -> Duration {
        let g = Gcra::per_second(rate, rate);
        match self.tat {
            Some(tat) if g.is_enabled() => tat
                .saturating_duration_since(now)
                .saturating_sub(Duration::from_nanos(g.tolerance_ns)),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_of_rate_then_one_per_interval() {
        let t0 = Instant::now();
        let mut b = CpsBucket::default();
        for i in 0..5 {
            assert!(b.take(t0, 5), "call {i} within the burst");
        }
        assert!(!b.take(t0, 5), "6th call in the same instant");
        assert_eq!(b.wait(t0, 5), Duration::from_millis(200));
        assert!(!b.take(t0 + Duration::from_millis(199), 5));
        assert!(b.take(t0 + Duration::from_millis(200), 5));
        assert!(!b.take(t0 + Duration::from_millis(200), 5));
        // A quiet second refills the whole burst, and no more.
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(b.wait(t1, 5), Duration::ZERO);
        for _ in 0..5 {
            assert!(b.take(t1, 5));
        }
        assert!(!b.take(t1, 5));
    }

    #[test]
    fn steady_rate_never_refused() {
        let t0 = Instant::now();
        let mut b = CpsBucket::default();
        for i in 0..100u64 {
            assert!(b.take(t0 + Duration::from_millis(i * 500), 2), "call {i}");
        }
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = CpsBucket::default();
        for _ in 0..1000 {
            assert!(b.take(t0, 0));
        }
    }
}
