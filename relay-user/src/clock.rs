//! The data plane's clock. `bpf_ktime_get_ns` reads CLOCK_MONOTONIC, so ban expiries, GCRA
//! state and last-seen times written by either side are comparable only on this clock.

use std::time::Duration;

/// CLOCK_MONOTONIC in nanoseconds, the same clock as `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so the
    // call cannot fail and leaves `ts` initialised.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Saturating conversion: a duration too long for u64 ns (585 years) is as good as forever.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances() {
        let a = monotonic_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(monotonic_ns() >= a + 1_000_000);
    }
}
