//! Tariffs: what a minute costs and how durations are rounded, for balance reservation at
//! admission and the cost in the CDR.

use serde::{Deserialize, Serialize};

use super::field::check_name;
use super::{FieldError, FieldErrors, Id, Invalid, Micros, Record};

/// What calls cost and how their durations are billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    /// 0 until stored.
    pub id: Id,
    /// Unique among tariffs; accounts name it.
    pub name: String,
    /// Price of a billed minute, in micro-units; never negative (0: calls are free).
    pub rate_per_minute: Micros,
    /// Admission reserves the cost of this long a call for every call in progress.
    pub expected_call_secs: u32,
    /// First billed block and the blocks after it ("60/6" billing is 60 then 6).
    pub initial_increment_secs: u32,
    /// See `initial_increment_secs`; at least 1.
    pub increment_secs: u32,
}

impl Record for Tariff {
    const KIND: &'static str = "tariff";
    const VERSION: u32 = 1;
}

impl Tariff {
    /// Every broken rule, by field.
    pub fn problems(&self) -> FieldErrors {
        let mut p = FieldErrors::default();
        check_name(&mut p, &self.name);
        if self.rate_per_minute.0 < 0 {
            p.add("rate_per_minute", "must not be negative");
        }
        for (f, v) in [
            ("expected_call_secs", self.expected_call_secs),
            ("initial_increment_secs", self.initial_increment_secs),
            ("increment_secs", self.increment_secs),
        ] {
            if v == 0 {
                p.add(f, "must be at least 1 second");
            }
        }
        p
    }

    /// The first of [`Tariff::problems`], as the record's error.
    pub fn validate(&self) -> Result<(), Invalid> {
        Invalid::first("tariff", self.problems())
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

fn default_expected() -> u32 {
    120
}
fn one() -> u32 {
    1
}

/// A tariff as the API and the provisioning file write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffSpec {
    /// Unique among tariffs; an import upserts by it.
    pub name: String,
    /// Decimal currency amount, e.g. "0.0125".
    pub rate_per_minute: String,
    /// See [`Tariff::expected_call_secs`]; defaults to 120.
    #[serde(default = "default_expected")]
    pub expected_call_secs: u32,
    /// See [`Tariff::initial_increment_secs`]; defaults to 1.
    #[serde(default = "one")]
    pub initial_increment_secs: u32,
    /// See [`Tariff::increment_secs`]; defaults to 1.
    #[serde(default = "one")]
    pub increment_secs: u32,
}

impl TariffSpec {
    /// The tariff with id `id` (0 for a new one), or every problem by field.
    pub fn build(&self, id: Id) -> Result<Tariff, FieldErrors> {
        let mut p = FieldErrors::default();
        let rate = p
            .take(
                self.rate_per_minute
                    .parse::<Micros>()
                    .map_err(|e| FieldError::new("rate_per_minute", e.to_string())),
            )
            .unwrap_or_default();
        let t = Tariff {
            id,
            name: self.name.clone(),
            rate_per_minute: rate,
            expected_call_secs: self.expected_call_secs,
            initial_increment_secs: self.initial_increment_secs,
            increment_secs: self.increment_secs,
        };
        p.0.extend(t.problems().0);
        p.or(t)
    }
}

impl From<&Tariff> for TariffSpec {
    fn from(t: &Tariff) -> TariffSpec {
        TariffSpec {
            name: t.name.clone(),
            rate_per_minute: t.rate_per_minute.to_string(),
            expected_call_secs: t.expected_call_secs,
            initial_increment_secs: t.initial_increment_secs,
            increment_secs: t.increment_secs,
        }
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
