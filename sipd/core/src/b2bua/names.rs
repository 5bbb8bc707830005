//! Upstream host names as the core knows them: answers the shell looked up, kept for the
//! time the shell said they are good for (the record's TTL, capped), bounded.
//!
//! The core never resolves: a name it has no answer for becomes
//! [`Effect::Resolve`](super::Effect::Resolve), the calls that need it wait, and the shell's
//! answer comes back through [`Core::on_resolved`](super::Core::on_resolved). An answer that
//! expired is still used while a fresh one is asked for (and kept when the fresh look-up
//! fails), for at most [`MAX_STALE`], so a slow or failing DNS server neither holds calls up
//! nor takes a working upstream away.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Names kept at once. Names come from provisioned connections only, so this is far above
/// need; at the limit the stalest answer goes.
pub const MAX_NAMES: usize = 1024;
/// Shortest time an answer is kept, whatever its TTL: a call that waited for it must find it
/// when it asks again at once.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest time an answer is trusted before it is asked for again, whatever its TTL (hosts
/// file entries come back valid for a day; an operator who repoints one expects it to count).
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// How long an expired answer may still be used while a fresh one is being looked up.
pub const MAX_STALE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Entry {
    /// The last addresses the name had (empty: it does not resolve).
    addrs: Vec<IpAddr>,
    /// Until when the answer stands; after it the name is asked for again.
    until: Instant,
    /// Until when `addrs` may still be used, stale, while fresh ones are asked for.
    usable_until: Instant,
    /// A question is out since then.
    asked: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            addrs: Vec::new(),
            until: now,
            usable_until: now,
            asked: None,
        }
    }
}

/// What the core can do with a host now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Addresses to try (empty: the name does not resolve). `ask`: they are stale, ask the
    /// shell for fresh ones meanwhile.
    Addrs {
        /// The addresses, in the order the resolver gave them.
        addrs: Vec<IpAddr>,
        /// Whether to ask the shell (an [`Effect::Resolve`](super::Effect::Resolve)).
        ask: bool,
    },
    /// Nothing known: wait for an answer. `ask`: this is the first to need it.
    Wait {
        /// Whether to ask the shell (an [`Effect::Resolve`](super::Effect::Resolve)).
        ask: bool,
    },
}

/// The core's cache of connection host names: answers it asked the shell for, how long they
/// hold, and which are being asked. Bounded.
#[derive(Debug, Default)]
pub struct Names {
    entries: HashMap<String, Entry>,
}

impl Names {
    /// What is known about `host` at `now` (an address literal is its own answer).
    pub fn lookup(&mut self, now: Instant, host: &str) -> Lookup {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Lookup::Addrs {
                addrs: vec![ip],
                ask: false,
            };
        }
        if !self.entries.contains_key(host) {
            self.make_room(now);
        }
        let e = self
            .entries
            .entry(host.to_owned())
            .or_insert_with(|| Entry::new(now));
        let fresh = e.until > now;
        let usable = fresh || (!e.addrs.is_empty() && e.usable_until > now);
        let ask = !fresh && e.asked.is_none();
        if ask {
            e.asked = Some(now);
        }
        if usable {
            Lookup::Addrs {
                addrs: e.addrs.clone(),
                ask,
            }
        } else {
            Lookup::Wait { ask }
        }
    }

    /// The shell's answer for `host`, good for `ttl`. An empty answer (the look-up failed)
    /// keeps the last good addresses while they may still be used stale.
    pub fn answer(&mut self, now: Instant, host: &str, addrs: Vec<IpAddr>, ttl: Duration) {
        if !self.entries.contains_key(host) {
            self.make_room(now);
        }
        let until = now + ttl.clamp(MIN_TTL, MAX_TTL);
        let e = self
            .entries
            .entry(host.to_owned())
            .or_insert_with(|| Entry::new(now));
        e.asked = None;
        e.until = until;
        if !addrs.is_empty() {
            e.addrs = addrs;
            e.usable_until = until + MAX_STALE;
        } else if e.usable_until <= now {
            e.addrs = addrs;
        }
    }

    /// Whether `ip` is among the addresses last known for `host` (stale ones included).
    pub fn has_addr(&self, host: &str, ip: IpAddr) -> bool {
        self.entries.get(host).is_some_and(|e| {
            e.addrs
                .iter()
                .any(|a| a.to_canonical() == ip.to_canonical())
        })
    }

    /// Forgets every answer (after a reload: an operator may have repointed a name).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < MAX_NAMES {
            return;
        }
        self.entries
            .retain(|_, e| e.asked.is_some() || e.until.max(e.usable_until) > now);
        if self.entries.len() >= MAX_NAMES {
            let stalest = self
                .entries
                .iter()
                .filter(|(_, e)| e.asked.is_none())
                .min_by_key(|(_, e)| e.until)
                .map(|(h, _)| h.clone());
            if let Some(h) = stalest {
                self.entries.remove(&h);
            }
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
    fn literals_answer_at_once_names_are_asked_once_and_expire_with_their_ttl() {
        let mut n = Names::default();
        let t = Instant::now();
        assert_eq!(
            n.lookup(t, "192.0.2.1"),
            Lookup::Addrs {
                addrs: vec![ip("192.0.2.1")],
                ask: false
            }
        );
        assert_eq!(n.lookup(t, "vendor.example"), Lookup::Wait { ask: true });
        assert_eq!(n.lookup(t, "vendor.example"), Lookup::Wait { ask: false });
        n.answer(
            t,
            "vendor.example",
            vec![ip("192.0.2.7")],
            Duration::from_secs(30),
        );
        let fresh = Lookup::Addrs {
            addrs: vec![ip("192.0.2.7")],
            ask: false,
        };
        assert_eq!(
            n.lookup(t + Duration::from_secs(29), "vendor.example"),
            fresh
        );
        // Expired: still used, and asked for again (once).
        let stale = |ask| Lookup::Addrs {
            addrs: vec![ip("192.0.2.7")],
            ask,
        };
        assert_eq!(
            n.lookup(t + Duration::from_secs(30), "vendor.example"),
            stale(true)
        );
        assert_eq!(
            n.lookup(t + Duration::from_secs(31), "vendor.example"),
            stale(false)
        );
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_good_addresses_a_bounded_time() {
        let mut n = Names::default();
        let t = Instant::now();
        n.lookup(t, "v.example");
        n.answer(
            t,
            "v.example",
            vec![ip("192.0.2.7")],
            Duration::from_secs(10),
        );
        let later = t + Duration::from_secs(20);
        n.lookup(later, "v.example");
        n.answer(later, "v.example", vec![], Duration::from_secs(5));
        assert!(
            matches!(n.lookup(later, "v.example"), Lookup::Addrs { ref addrs, .. } if addrs == &[ip("192.0.2.7")])
        );
        let much_later = t + MAX_STALE + Duration::from_secs(11);
        assert_eq!(
            n.lookup(much_later, "v.example"),
            Lookup::Wait { ask: true }
        );
    }

    #[test]
    fn ttls_are_clamped() {
        let mut n = Names::default();
        let t = Instant::now();
        n.answer(t, "zero.example", vec![ip("192.0.2.1")], Duration::ZERO);
        assert!(matches!(
            n.lookup(t, "zero.example"),
            Lookup::Addrs { ask: false, .. }
        ));
        n.answer(
            t,
            "day.example",
            vec![ip("192.0.2.2")],
            Duration::from_secs(86_400),
        );
        assert!(matches!(
            n.lookup(t + MAX_TTL, "day.example"),
            Lookup::Addrs { ask: true, .. }
        ));
    }

    #[test]
    fn bounded() {
        let mut n = Names::default();
        let t = Instant::now();
        for i in 0..MAX_NAMES + 10 {
            n.answer(t, &format!("h{i}.example"), vec![], Duration::from_secs(60));
        }
        assert!(n.entries.len() <= MAX_NAMES);
    }
}
