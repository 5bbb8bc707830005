//! Failed-login back-off: each failure locks the username and the source out for a delay
//! that doubles with every further failure (1 s, 2 s, 4 s, … up to 15 minutes by default).
//! While locked, an attempt is refused before the password is looked at, so guessing costs
//! the attacker time and the server no Argon2 work.
//!
//! Attempts in flight count before their result is known: [`Backoff::begin`] locks the keys as
//! if the attempt had already failed, and [`Backoff::end`] turns that into a real failure or
//! lifts it. So parallel attempts for one username or from one source are refused while
//! the first is still being checked, instead of all passing the check at once.
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
    /// The longest lock-out, however many failures (seconds, `first_secs..=86400`).
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
    /// Problems with these settings, for `sipd check-config`; empty when usable.
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
    /// A source address: IPv6 by its /64, IPv4-mapped as IPv4 (build it with [`Key::source`]).
    Source(IpAddr),
}

impl Key {
    /// The key of a username, lowercased.
    pub fn user(name: &str) -> Key {
        Key::User(name.to_ascii_lowercase())
    }

    /// The key of a source: an IPv6 address counts as its /64, an IPv4-mapped one as IPv4.
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
    /// Attempts begun and not yet ended.
    in_flight: u32,
    /// While `in_flight > 0`: the lock-out those attempts would earn if they failed.
    provisional_until_ms: u64,
}

impl Entry {
    fn until_ms(&self) -> u64 {
        if self.in_flight > 0 {
            self.locked_until_ms.max(self.provisional_until_ms)
        } else {
            self.locked_until_ms
        }
    }
}

/// A lock-out in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// When the lock-out ends, Unix milliseconds.
    pub until_ms: u64,
    /// Rounded up to whole seconds (what a `Retry-After` header says).
    pub retry_after: Duration,
}

/// The failed-login table: lock-outs per username and per source, bounded at `max_entries`.
#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    entries: HashMap<Key, Entry>,
}

impl Backoff {
    /// An empty table with these settings.
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff {
            cfg,
            entries: HashMap::new(),
        }
    }

    /// Usernames and sources held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no username or source is held.
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
            .map(Entry::until_ms)
            .filter(|&u| u > now_ms)
            .max()
            .map(|until_ms| Locked {
                until_ms,
                retry_after: Duration::from_secs((until_ms - now_ms).div_ceil(1000)),
            })
    }

    /// The entry of `k` as a new failure should see it: none, or forgotten.
    fn current(&self, k: &Key, now_ms: u64) -> Option<Entry> {
        let forget = self.cfg.forget_secs.saturating_mul(1000);
        self.entries
            .get(k)
            .copied()
            .filter(|e| e.in_flight > 0 || now_ms < e.locked_until_ms.saturating_add(forget))
    }

    /// Counts a failure against each key; returns the new lock-out (the longest).
    pub fn fail(&mut self, keys: &[Key], now_ms: u64) -> Locked {
        let mut until_ms = now_ms;
        for k in keys {
            let prev = self.current(k, now_ms);
            let failures = prev.map_or(0, |e| e.failures).saturating_add(1);
            let delay = self.delay(failures).as_millis() as u64;
            let e = Entry {
                failures,
                locked_until_ms: now_ms.saturating_add(delay),
                last_failure_ms: now_ms,
                in_flight: prev.map_or(0, |e| e.in_flight),
                provisional_until_ms: prev.map_or(0, |e| e.provisional_until_ms),
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

    /// Starts an attempt: refused with the lock-out in force, else every key is locked as if
    /// the attempt had failed until [`Backoff::end`] says how it went. Every `Ok` must be
    /// followed by exactly one `end` with the same keys.
    pub fn begin(&mut self, keys: &[Key], now_ms: u64) -> Result<(), Locked> {
        if let Some(l) = self.check(keys, now_ms) {
            return Err(l);
        }
        for k in keys {
            let prev = self.current(k, now_ms);
            let mut e = prev.unwrap_or(Entry {
                failures: 0,
                locked_until_ms: 0,
                last_failure_ms: now_ms,
                in_flight: 0,
                provisional_until_ms: 0,
            });
            e.in_flight = e.in_flight.saturating_add(1);
            let would_be = e.failures.saturating_add(e.in_flight);
            let delay = self.delay(would_be).as_millis() as u64;
            e.provisional_until_ms = e.provisional_until_ms.max(now_ms.saturating_add(delay));
            self.entries.insert(k.clone(), e);
        }
        self.evict(now_ms);
        Ok(())
    }

    /// Ends an attempt [`Backoff::begin`] let through: `failed` counts it as a failure (and
    /// returns the lock-out), otherwise only its provisional lock is lifted.
    pub fn end(&mut self, keys: &[Key], now_ms: u64, failed: bool) -> Option<Locked> {
        for k in keys {
            if let Some(e) = self.entries.get_mut(k) {
                e.in_flight = e.in_flight.saturating_sub(1);
                if e.in_flight == 0 {
                    e.provisional_until_ms = 0;
                }
            }
        }
        if failed {
            return Some(self.fail(keys, now_ms));
        }
        // Entries that only existed for the attempt go again.
        for k in keys {
            if self
                .entries
                .get(k)
                .is_some_and(|e| e.in_flight == 0 && e.failures == 0)
            {
                self.entries.remove(k);
            }
        }
        None
    }

    /// Attempts in flight for `key`.
    pub fn in_flight(&self, key: &Key) -> u32 {
        self.entries.get(key).map_or(0, |e| e.in_flight)
    }

    /// Forgets `key`'s failures (a successful login forgets the username's); attempts still
    /// in flight for it keep counting.
    pub fn reset(&mut self, key: &Key) {
        match self.entries.get_mut(key) {
            Some(e) if e.in_flight > 0 => {
                e.failures = 0;
                e.locked_until_ms = 0;
            }
            _ => {
                self.entries.remove(key);
            }
        }
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
            .retain(|_, e| e.in_flight > 0 || now_ms < e.locked_until_ms.saturating_add(forget));
        while self.entries.len() > self.cfg.max_entries {
            // An attempt in flight keeps its entry: evicting it would let a flood of new
            // names reopen the door for the attempts behind it.
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(_, e)| e.in_flight == 0)
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
    fn attempts_in_flight_lock_out_parallel_ones() {
        let mut b = Backoff::new(BackoffConfig::default());
        let src = Key::source(ip("192.0.2.7"));
        let keys = |u: &str| [Key::user(u), src.clone()];
        // 512 attempts at the same instant: one begins, the rest are refused before any
        // password work, for the same user and for other users from the same source.
        let mut begun = 0;
        for i in 0..512 {
            let user = if i % 2 == 0 { "admin" } else { "other" };
            if b.begin(&keys(user), 1_000).is_ok() {
                begun += 1;
            }
        }
        assert_eq!(begun, 1);
        assert_eq!(b.in_flight(&Key::user("admin")), 1);
        // Refused while it runs, for the user from anywhere.
        assert!(b.begin(&keys("admin"), 1_500).is_err());
        assert!(
            b.begin(
                &[Key::user("admin"), Key::source(ip("198.51.100.1"))],
                1_500
            )
            .is_err(),
            "the user is in flight from another source too"
        );
        // A slow attempt counts as a failure: once its delay is over another may begin, and
        // that one counts as the second failure (2 s) while both are in flight.
        b.begin(&keys("admin"), 2_000).unwrap();
        assert_eq!(b.in_flight(&Key::user("admin")), 2);
        assert_eq!(b.check(&keys("admin"), 2_500).unwrap().until_ms, 4_000);
        // Both fail: the real lock-outs are those of the first and second failure.
        assert_eq!(b.end(&keys("admin"), 3_000, true).unwrap().until_ms, 4_000);
        assert_eq!(b.end(&keys("admin"), 3_100, true).unwrap().until_ms, 5_100);
        assert_eq!(b.in_flight(&Key::user("admin")), 0);
        assert_eq!(b.failures(&Key::user("admin")), 2);
        assert!(b.begin(&keys("admin"), 5_000).is_err());
        // The next counts as the third failure while in flight (4 s), then succeeds: the
        // provisional lock goes, the user's failures are forgotten, the source's stay.
        b.begin(&keys("admin"), 5_100).unwrap();
        assert_eq!(b.check(&keys("admin"), 6_000).unwrap().until_ms, 9_100);
        assert_eq!(b.end(&keys("admin"), 5_200, false), None);
        b.reset(&Key::user("admin"));
        assert_eq!(b.failures(&Key::user("admin")), 0);
        assert_eq!(b.failures(&src), 2);
        assert_eq!(b.check(&[Key::user("admin")], 5_200), None);
    }

    #[test]
    fn an_attempt_that_does_not_count_leaves_nothing() {
        let mut b = Backoff::new(BackoffConfig::default());
        let keys = [Key::user("a"), Key::source(ip("192.0.2.1"))];
        b.begin(&keys, 0).unwrap();
        assert_eq!(b.end(&keys, 10, false), None);
        assert!(b.is_empty());
        assert_eq!(b.check(&keys, 10), None);
    }

    #[test]
    fn entries_in_flight_are_not_evicted() {
        let mut b = Backoff::new(BackoffConfig {
            max_entries: 100,
            ..BackoffConfig::default()
        });
        let held = [Key::user("held")];
        b.begin(&held, 0).unwrap();
        for i in 0..300u64 {
            b.fail(&[Key::user(&format!("u{i}"))], i + 1);
        }
        assert_eq!(b.in_flight(&Key::user("held")), 1);
        assert!(b.check(&held, 500).is_some());
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
