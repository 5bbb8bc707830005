//! Money as integer micro-units of the account's currency: exact sums, no float drift in
//! balances, and 1e-6 is finer than any carrier tariff.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An amount in micro-units (1e-6) of the account's currency; negative for a debt. Parses
/// from and prints as a decimal (`12.50`, at most 6 decimals); JSON holds the integer.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Micros(pub i64);

/// Micro-units in one currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// A decimal amount that does not parse (the input, cut to 40 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an amount (write e.g. 12.50 or 0.0125, at most 6 decimals)")]
pub struct BadAmount(pub String);

impl FromStr for Micros {
    type Err = BadAmount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadAmount(s.chars().take(40).collect());
        let t = s.trim();
        let (neg, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || frac.len() > 6
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || digits.ends_with('.')
        {
            return Err(bad());
        }
        let int: i64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
        let v = int
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|v| v.checked_add(frac))
            .ok_or_else(bad)?;
        Ok(Micros(if neg { -v } else { v }))
    }
}

impl fmt::Display for Micros {
    /// At least two decimals, more only when they carry value: `12.50`, `0.0125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let int = abs / MICROS_PER_UNIT.unsigned_abs();
        let frac = format!("{:06}", abs % MICROS_PER_UNIT.unsigned_abs());
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{sign}{int}.{shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (s, v, shown) in [
            ("12.5", 12_500_000, "12.50"),
            ("0.0125", 12_500, "0.0125"),
            ("3", 3_000_000, "3.00"),
            ("-1.000001", -1_000_001, "-1.000001"),
            (".5", 500_000, "0.50"),
        ] {
            let m: Micros = s.parse().unwrap();
            assert_eq!(m, Micros(v), "{s}");
            assert_eq!(m.to_string(), shown);
        }
        for bad in [
            "",
            ".",
            "1.",
            "1.2345678",
            "1e3",
            "abc",
            "--1",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Micros>().is_err(), "{bad}");
        }
    }
}
