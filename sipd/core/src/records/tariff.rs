//! Tariffs: what a minute costs and how durations are rounded, for balance reservation at
//! admission and the cost in the CDR.

use serde::{Deserialize, Serialize};

use super::{Id, Invalid, Micros, Record, valid_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub id: Id,
    pub name: String,
    pub rate_per_minute: Micros,
    /// Admission reserves the cost of this long a call for every call in progress.
    pub expected_call_secs: u32,
    /// First billed block and the blocks after it ("60/6" billing is 60 then 6).
    pub initial_increment_secs: u32,
    pub increment_secs: u32,
}

impl Record for Tariff {
    const KIND: &'static str = "tariff";
    const VERSION: u32 = 1;
}

impl Tariff {
    pub fn validate(&self) -> Result<(), Invalid> {
        valid_name("tariff", &self.name)?;
        let bad = |reason: &str| {
            Err(Invalid {
                kind: "tariff",
                reason: format!("{}: {reason}", self.name),
            })
        };
        if self.rate_per_minute.0 < 0 {
            return bad("rate_per_minute must not be negative");
        }
        if self.increment_secs == 0 || self.initial_increment_secs == 0 {
            return bad("increments must be at least 1 second");
        }
        if self.expected_call_secs == 0 {
            return bad("expected_call_secs must be at least 1");
        }
        Ok(())
    }

    /// Seconds billed for a call of `secs`: nothing for an unanswered call, else the initial
    /// block, then whole increments, rounded up.
    pub fn billed_secs(&self, secs: u64) -> u64 {
        if secs == 0 {
            return 0;
        }
        let first = u64::from(self.initial_increment_secs.max(1));
        let inc = u64::from(self.increment_secs.max(1));
        if secs <= first {
            first
        } else {
            first + (secs - first).div_ceil(inc) * inc
        }
    }

    /// Cost of a call of `secs`, rounded up to the micro-unit (never in the customer's favour
    /// by a fraction: a balance must not drift below zero).
    pub fn cost(&self, secs: u64) -> Micros {
        let billed = i128::from(self.billed_secs(secs));
        let micros = (billed * i128::from(self.rate_per_minute.0) + 59) / 60;
        Micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// What admission sets aside per call in progress.
    pub fn reservation(&self) -> Micros {
        self.cost(u64::from(self.expected_call_secs))
    }

    /// Longest call `balance` pays for, in whole billed seconds; `None` when calls are free.
    pub fn max_secs_for(&self, balance: Micros) -> Option<u64> {
        if self.rate_per_minute.0 <= 0 {
            return None;
        }
        let affordable = u64::try_from(balance.0.max(0)).unwrap_or(0) * 60
            / self.rate_per_minute.0.unsigned_abs();
        // Round down to a billing boundary so the last block is paid for too.
        let first = u64::from(self.initial_increment_secs.max(1));
        if affordable < first {
            return Some(0);
        }
        let inc = u64::from(self.increment_secs.max(1));
        Some(first + (affordable - first) / inc * inc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rate: &str, initial: u32, inc: u32) -> Tariff {
        Tariff {
            id: 0,
            name: "t".into(),
            rate_per_minute: rate.parse().unwrap(),
            expected_call_secs: 120,
            initial_increment_secs: initial,
            increment_secs: inc,
        }
    }

    #[test]
    fn billing_increments() {
        let sixty_six = t("0.06", 60, 6);
        assert_eq!(sixty_six.billed_secs(0), 0);
        assert_eq!(sixty_six.billed_secs(1), 60);
        assert_eq!(sixty_six.billed_secs(61), 66);
        assert_eq!(sixty_six.cost(61), Micros(66_000));
        assert_eq!(sixty_six.reservation(), Micros(120_000));
        let per_sec = t("0.01", 1, 1);
        assert_eq!(per_sec.cost(1), Micros(167), "rounded up");
    }

    #[test]
    fn max_duration_never_overspends() {
        let tar = t("0.06", 60, 6);
        assert_eq!(tar.max_secs_for(Micros(59_000)), Some(0));
        assert_eq!(tar.max_secs_for(Micros(70_000)), Some(66));
        for bal in [0, 1, 59_999, 60_000, 65_999, 1_234_567] {
            if let Some(s) = tar.max_secs_for(Micros(bal)) {
                assert!(tar.cost(s).0 <= bal, "{bal}: {s}s costs {}", tar.cost(s).0);
            }
        }
        assert_eq!(t("0", 1, 1).max_secs_for(Micros(0)), None);
    }
}
