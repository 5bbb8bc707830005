//! How offenders are banned (`[bans]` in sbc.toml): the prefix one offender is banned as, and
//! when a whole range is banned because enough of its addresses offended.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use relay_user::{BANS_MAX, Cidr};
use serde::{Deserialize, Serialize};

/// `[bans]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BansConfig {
    /// Prefix an offending IPv4 source is banned as (32: the host alone).
    pub v4_prefix: u8,
    /// Prefix an offending IPv6 source is banned as (64: its subscriber's LAN, within which
    /// it can pick a new address at will).
    pub v6_prefix: u8,
    /// The range banned when `promote_after` offenders are found inside it.
    pub promote_v4_prefix: u8,
    /// The IPv6 range banned when `promote_after` offenders are found inside it.
    pub promote_v6_prefix: u8,
    /// Distinct offenders (banned as above) inside one range within `promote_window_secs`
    /// that get the whole range banned; 0: never.
    pub promote_after: u32,
    /// The window (seconds) within which `promote_after` offenders must be seen in a range.
    pub promote_window_secs: u64,
    /// Bans per family (IPv4, IPv6) sipd keeps, at most the kernel tries' capacity. When
    /// full, the ban expiring soonest gives way (counted, and an alert raised).
    pub capacity: u32,
    /// How often expired bans are purged from the table and the data plane.
    pub purge_interval_secs: u64,
}

impl Default for BansConfig {
    fn default() -> Self {
        BansConfig {
            v4_prefix: 32,
            v6_prefix: 64,
            promote_v4_prefix: 24,
            promote_v6_prefix: 48,
            promote_after: 5,
            promote_window_secs: 600,
            capacity: BANS_MAX,
            purge_interval_secs: 1,
        }
    }
}

impl BansConfig {
    /// Problems with these settings, each as (`bans.key`, message).
    pub fn problems(&self, bad: &mut impl FnMut(&str, String)) {
        let ranges = [
            ("bans.v4_prefix", self.v4_prefix, 8, 32),
            ("bans.v6_prefix", self.v6_prefix, 16, 128),
            ("bans.promote_v4_prefix", self.promote_v4_prefix, 8, 32),
            ("bans.promote_v6_prefix", self.promote_v6_prefix, 16, 128),
        ];
        for (key, v, min, max) in ranges {
            if !(min..=max).contains(&v) {
                bad(key, format!("{v} is outside {min}..={max}"));
            }
        }
        for (key, promote, offender) in [
            (
                "bans.promote_v4_prefix",
                self.promote_v4_prefix,
                self.v4_prefix,
            ),
            (
                "bans.promote_v6_prefix",
                self.promote_v6_prefix,
                self.v6_prefix,
            ),
        ] {
            if self.promote_after > 0 && promote >= offender {
                bad(
                    key,
                    format!(
                        "/{promote} is not wider than the /{offender} an offender is banned as"
                    ),
                );
            }
        }
        if self.promote_after == 1 {
            bad(
                "bans.promote_after",
                "1 would ban a whole range for one offender; use 0 (never) or at least 2".into(),
            );
        }
        if self.promote_after > 0 && self.promote_window_secs == 0 {
            bad("bans.promote_window_secs", "must be at least 1".into());
        }
        if !(1..=BANS_MAX).contains(&self.capacity) {
            bad(
                "bans.capacity",
                format!(
                    "{} is outside 1..={BANS_MAX} (the kernel's ban tries hold {BANS_MAX} per family)",
                    self.capacity
                ),
            );
        }
        if !(1..=3600).contains(&self.purge_interval_secs) {
            bad("bans.purge_interval_secs", "must be 1..=3600".into());
        }
    }

    /// The prefix an offender at `ip` is banned as.
    pub fn offender(&self, ip: IpAddr) -> Cidr {
        let len = if ip.is_ipv4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        Cidr::new(ip, len).unwrap_or_else(|_| Cidr::host(ip))
    }

    fn range_of(&self, offender: Cidr) -> Option<Cidr> {
        let len = if offender.is_v4() {
            self.promote_v4_prefix
        } else {
            self.promote_v6_prefix
        };
        (len < offender.prefix_len())
            .then(|| Cidr::new(offender.addr(), len).ok())
            .flatten()
    }
}

/// Ranges the promoter watches at most; a spoofed flood over more ranges than this forgets
/// the quietest (it cannot make sipd hold more).
const RANGES_MAX: usize = 4096;

/// Counts distinct offenders per range within the window, and says when a range has had
/// enough. Bounded: 4,096 ranges (`RANGES_MAX`), `promote_after` offenders each.
#[derive(Debug)]
pub struct Promoter {
    cfg: BansConfig,
    seen: HashMap<Cidr, Vec<(Cidr, Instant)>>,
}

impl Promoter {
    /// A promoter with no offender seen yet, deciding by `cfg`'s range prefixes, count and window.
    pub fn new(cfg: &BansConfig) -> Promoter {
        Promoter {
            cfg: cfg.clone(),
            seen: HashMap::new(),
        }
    }

    /// Another offender was banned as `offender`: the range to ban now, if this made enough.
    pub fn offend(&mut self, offender: Cidr, now: Instant) -> Option<Cidr> {
        let after = self.cfg.promote_after as usize;
        if after == 0 {
            return None;
        }
        let range = self.cfg.range_of(offender)?;
        let window = Duration::from_secs(self.cfg.promote_window_secs);
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < window;
        if !self.seen.contains_key(&range) && self.seen.len() >= RANGES_MAX {
            self.seen.retain(|_, v| v.iter().any(|(_, t)| fresh(t)));
            if self.seen.len() >= RANGES_MAX {
                let quietest = self
                    .seen
                    .iter()
                    .min_by_key(|(_, v)| v.iter().map(|(_, t)| *t).max())
                    .map(|(k, _)| *k);
                if let Some(k) = quietest {
                    self.seen.remove(&k);
                }
            }
        }
        let v = self.seen.entry(range).or_default();
        v.retain(|(o, t)| fresh(t) && *o != offender);
        v.push((offender, now));
        if v.len() >= after {
            self.seen.remove(&range);
            return Some(range);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let mut found = Vec::new();
        BansConfig::default().problems(&mut |k, m| found.push(format!("{k}: {m}")));
        assert!(found.is_empty(), "{found:?}");
        let c = BansConfig {
            v4_prefix: 24,
            promote_v4_prefix: 24,
            promote_after: 1,
            capacity: 0,
            ..BansConfig::default()
        };
        let mut keys = Vec::new();
        c.problems(&mut |k, _| keys.push(k.to_string()));
        for k in [
            "bans.promote_v4_prefix",
            "bans.promote_after",
            "bans.capacity",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} in {keys:?}");
        }
    }

    #[test]
    fn offenders_are_banned_as_their_prefix() {
        let c = BansConfig::default();
        assert_eq!(
            c.offender("192.0.2.7".parse().unwrap()),
            net("192.0.2.7/32")
        );
        assert_eq!(
            c.offender("2001:db8:1:2:3::9".parse().unwrap()),
            net("2001:db8:1:2::/64")
        );
    }

    #[test]
    fn enough_distinct_offenders_in_a_range_within_the_window_promote_it() {
        let c = BansConfig {
            promote_after: 3,
            promote_window_secs: 60,
            ..BansConfig::default()
        };
        let mut p = Promoter::new(&c);
        let t = Instant::now();
        assert_eq!(p.offend(net("192.0.2.1/32"), t), None);
        // The same offender again is not a second one.
        assert_eq!(p.offend(net("192.0.2.1/32"), t), None);
        assert_eq!(p.offend(net("198.51.100.1/32"), t), None);
        assert_eq!(p.offend(net("192.0.2.2/32"), t), None);
        assert_eq!(p.offend(net("192.0.2.3/32"), t), Some(net("192.0.2.0/24")));
        // Outside the window they do not add up.
        let mut p = Promoter::new(&c);
        p.offend(net("192.0.2.1/32"), t);
        p.offend(net("192.0.2.2/32"), t);
        let late = t + Duration::from_secs(61);
        assert_eq!(p.offend(net("192.0.2.3/32"), late), None);
        // IPv6: /64 offenders in a /48.
        let mut p = Promoter::new(&c);
        for (i, o) in [
            "2001:db8:5:1::/64",
            "2001:db8:5:2::/64",
            "2001:db8:5:3::/64",
        ]
        .into_iter()
        .enumerate()
        {
            let want = (i == 2).then(|| net("2001:db8:5::/48"));
            assert_eq!(p.offend(net(o), t), want);
        }
    }

    #[test]
    fn the_promoter_stays_bounded() {
        let c = BansConfig {
            promote_after: 2,
            ..BansConfig::default()
        };
        let mut p = Promoter::new(&c);
        let t = Instant::now();
        for i in 0..(RANGES_MAX as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0001 + (i << 8));
            p.offend(Cidr::host(ip.into()), t);
        }
        assert!(p.seen.len() <= RANGES_MAX);
    }
}
