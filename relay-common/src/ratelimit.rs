//! GCRA token bucket (the "virtual scheduling" form): one `u64` of state per bucket, no floats,
//! no division on the packet path. Used by the kernel SIP guard and the userspace fallback.
//!
//! `interval_ns` = 1e9 / rate; `tolerance_ns` = interval_ns * (burst - 1). The state is the
//! theoretical arrival time (TAT) of the next conforming packet.

/// Precomputed parameters of one bucket, stored in the guard configuration map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds of credit one packet costs; 0 disables the limit.
    pub interval_ns: u64,
    /// How far TAT may run ahead of now: the burst allowance.
    pub tolerance_ns: u64,
}
crate::map_type!(Gcra, 16);

impl Gcra {
    /// No limit: [`Gcra::check`] lets everything through and leaves the state alone.
    pub const DISABLED: Gcra = Gcra {
        interval_ns: 0,
        tolerance_ns: 0,
    };

    /// `rate` packets per second with bursts of up to `burst` packets. `rate == 0` disables.
    pub const fn per_second(rate: u32, burst: u32) -> Gcra {
        if rate == 0 {
            return Gcra::DISABLED;
        }
        let interval_ns = 1_000_000_000u64 / rate as u64;
        let burst = if burst == 0 { 1 } else { burst };
        Gcra {
            interval_ns,
            tolerance_ns: interval_ns * (burst as u64 - 1),
        }
    }

    /// Whether this bucket limits anything (a non-zero interval).
    pub const fn is_enabled(&self) -> bool {
        self.interval_ns != 0
    }

    /// Decides one arrival at `now_ns` against state `tat`. Returns the new TAT if the packet
    /// conforms, `None` if it is over the limit (state unchanged).
    #[inline(always)]
    pub const fn check(&self, tat: u64, now_ns: u64) -> Option<u64> {
        if self.interval_ns == 0 {
            return Some(tat);
        }
        let base = if tat > now_ns { tat } else { now_ns };
        if base - now_ns > self.tolerance_ns {
            None
        } else {
            Some(base + self.interval_ns)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let g = Gcra::per_second(10, 3); // 100 ms interval, burst 3
        let mut tat = 0;
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            tat = g.check(tat, t0).expect("within burst");
        }
        assert_eq!(
            g.check(tat, t0),
            None,
            "4th packet in the same instant is over"
        );
        // After one interval, exactly one more token.
        let t1 = t0 + 100_000_000;
        tat = g.check(tat, t1).expect("refilled");
        assert_eq!(g.check(tat, t1), None);
    }

    #[test]
    fn disabled_always_passes() {
        assert_eq!(Gcra::per_second(0, 5).check(42, 0), Some(42));
    }

    #[test]
    fn steady_rate_passes() {
        let g = Gcra::per_second(50, 1);
        let mut tat = 0;
        for i in 0..1000u64 {
            tat = g
                .check(tat, 5_000_000_000 + i * 20_000_000)
                .expect("at rate");
        }
    }
}
