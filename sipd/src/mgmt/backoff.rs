//! Failed-login back-off: each failure locks the username and the source out for a delay
//! that doubles with every further failure (1 s, 2 s, 4 s, … up to 15 minutes by default).
//! While locked, an attempt is refused before the password is looked at, so guessing costs
//! the attacker time and the server no Argon2 work.
//!
//! Sans-IO: the caller passes the time in (Unix ms), nothing sleeps. Memory is bounded:
//! past `max_entries` the entry with the oldest failure goes first. IPv6 sources count per
//! /64 (one host gets a whole /64), IPv4-mapped ones as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[management.backoff]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Lock-out after the first failure; doubles per further failure.
    pub first_secs: u64,
    pub max_secs: u64,
    /// An entry with no failure for this long after its lock-out ended is forgotten, so
    /// a rare typo does not start from a long delay.
    pub forget_secs: u64,
    /// Entries kept (usernames plus sources).
    pub max_entries: usize,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            first_secs: 1,
            max_secs: 900,
            forget_secs: 3600,
            max_entries: 10_000,
        }
    }
}

impl BackoffConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=3600).contains(&self.first_secs) {
            out.push(format!(
                "first_secs {} is outside 1..=3600",
                self.first_secs
            ));
        }
        if self.max_secs < self.first_secs || self.max_secs > 86_400 {
            out.push(format!(
                "max_secs {} must be between first_secs and 86400",
                self.max_secs
            ));
        }
        if !(100..=10_000_000).contains(&self.max_entries) {
            out.push(format!(
                "max_entries {} is outside 100..=10000000",
                self.max_entries
            ));
        }
        out
    }
}

/// Who is being throttled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Lowercase username (also for names that do not exist: an attacker must not learn
    /// which do from the back-off).
    User(String),
    Source(IpAddr),
}

impl Key {
    pub fn user(name: &str) -> Key {
        Key::User(name.to_ascii_lowercase())
    }

    pub fn source(ip: IpAddr) -> Key {
        Key::Source(match crate::store::canonical_ip(ip) {
            IpAddr::V6(v6) => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(seg))
            }
            v4 => v4,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    failures: u32,
    locked_until_ms: u64,
    last_failure_ms: u64,
}

/// A lock-out in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub until_ms: u64,
    /// Rounded up to whole seconds (what a `Retry-After` header says).
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    entries: HashMap<Key, Entry>,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff {
            cfg,
            entries: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The delay after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let first = self.cfg.first_secs.max(1);
        let shift = failures.saturating_sub(1).min(40);
        Duration::from_secs(first.saturating_mul(1u64 << shift).min(self.cfg.max_secs))
    }

    /// The latest lock-out among `keys` still in force at `now_ms`.
    pub fn check(&self, keys: &[Key], now_ms: u64) -> Option<Locked> {
        keys.iter()
            .filter_map(|k| self.entries.get(k))
            .map(|e| e.locked_until_ms)
            .filter(|&u| u > now_ms)
            .max()
            .map(|until_ms| Locked {
                until_ms,
                retry_after: Duration::from_secs((until_ms - now_ms).div_ceil(1000)),
            })
    }

    /// Counts a failure against each key; returns the new lock-out (the longest).
    pub fn fail(&mut self, keys: &[Key], now_ms: u64) -> Locked {
        let mut until_ms = now_ms;
        for k in keys {
            let forget = self.cfg.forget_secs.saturating_mul(1000);
            let prev = self
                .entries
                .get(k)
                .copied()
                .filter(|e| now_ms < e.locked_until_ms.saturating_add(forget));
            let failures = prev.map_or(0, |e| e.failures).saturating_add(1);
            let delay = self.delay(failures).as_millis() as u64;
            let e = Entry {
                failures,
                locked_until_ms: now_ms.saturating_add(delay),
                last_failure_ms: now_ms,
            };
            until_ms = until_ms.max(e.locked_until_ms);
            self.entries.insert(k.clone(), e);
        }
        self.evict(now_ms);
        Locked {
            until_ms,
            retry_after: Duration::from_secs((until_ms - now_ms).div_ceil(1000)),
        }
    }

    /// Forgets `key` (a successful login forgets the username's failures).
    pub fn reset(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Failures counted for `key` (0 when none or forgotten).
    pub fn failures(&self, key: &Key) -> u32 {
        self.entries.get(key).map_or(0, |e| e.failures)
    }

    fn evict(&mut self, now_ms: u64) {
        if self.entries.len() <= self.cfg.max_entries {
            return;
        }
        let forget = self.cfg.forget_secs.saturating_mul(1000);
        self.entries
            .retain(|_, e| now_ms < e.locked_until_ms.saturating_add(forget));
        while self.entries.len() > self.cfg.max_entries {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_failure_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn grows_doubling_and_caps() {
        let mut b = Backoff::new(BackoffConfig::default());
        let keys = [Key::user("Alice"), Key::source(ip("192.0.2.1"))];
        let mut now = 1_000_000u64;
        let mut seen = Vec::new();
        for _ in 0..14 {
            assert_eq!(b.check(&keys, now), None, "unlocked once the delay is over");
            let l = b.fail(&keys, now);
            seen.push(l.retry_after.as_secs());
            // Refused early until the delay is over, with the time left.
            let c = b.check(&keys, now + 500).unwrap();
            assert_eq!(c.until_ms, l.until_ms);
            assert_eq!(
                c.retry_after.as_secs(),
                (l.until_ms - now - 500).div_ceil(1000)
            );
            now = l.until_ms;
        }
        assert_eq!(
            seen,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900]
        );
        assert_eq!(b.failures(&Key::user("ALICE")), 14, "case-insensitive");
    }

    #[test]
    fn success_resets_and_idle_entries_are_forgotten() {
        let mut b = Backoff::new(BackoffConfig::default());
        let u = Key::user("bob");
        let s = Key::source(ip("192.0.2.9"));
        b.fail(&[u.clone(), s.clone()], 0);
        let l = b.fail(&[u.clone(), s.clone()], 1_000);
        assert_eq!(l.retry_after.as_secs(), 2);
        b.reset(&u);
        assert_eq!(b.failures(&u), 0);
        assert_eq!(b.check(std::slice::from_ref(&u), 1_500), None);
        // The source still counts (see the module docs in mgmt).
        assert!(b.check(std::slice::from_ref(&s), 1_500).is_some());
        // An hour after the lock ended, the next failure starts again at 1 s.
        let l = b.fail(std::slice::from_ref(&s), 3_000 + 3_600_000);
        assert_eq!(l.retry_after.as_secs(), 1);
    }

    #[test]
    fn per_user_and_per_source_are_separate() {
        let mut b = Backoff::new(BackoffConfig::default());
        b.fail(&[Key::user("a"), Key::source(ip("192.0.2.1"))], 0);
        assert!(
            b.check(&[Key::user("a"), Key::source(ip("198.51.100.1"))], 10)
                .is_some()
        );
        assert!(
            b.check(&[Key::user("b"), Key::source(ip("192.0.2.1"))], 10)
                .is_some()
        );
        assert!(
            b.check(&[Key::user("b"), Key::source(ip("198.51.100.1"))], 10)
                .is_none()
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_as_v4() {
        assert_eq!(
            Key::source(ip("2001:db8:1:2:aaaa::1")),
            Key::source(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Key::source(ip("2001:db8:1:2::1")),
            Key::source(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Key::source(ip("::ffff:192.0.2.1")),
            Key::source(ip("192.0.2.1"))
        );
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut b = Backoff::new(BackoffConfig {
            max_entries: 100,
            ..BackoffConfig::default()
        });
        for i in 0..250u64 {
            b.fail(&[Key::user(&format!("u{i}"))], i);
            assert!(b.len() <= 100);
        }
        assert_eq!(b.failures(&Key::user("u249")), 1);
        assert_eq!(b.failures(&Key::user("u150")), 1);
        assert_eq!(b.failures(&Key::user("u149")), 0, "oldest evicted");
    }

    #[test]
    fn config_problems() {
        assert!(BackoffConfig::default().problems().is_empty());
        let bad = BackoffConfig {
            first_secs: 0,
            max_secs: 0,
            forget_secs: 0,
            max_entries: 1,
        };
        assert_eq!(bad.problems().len(), 2);
    }
}
