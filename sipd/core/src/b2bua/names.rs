//! Upstream host names as the core knows them: answers the shell looked up, kept until the
//! time the shell said they are good for (the record's TTL), bounded.
//!
//! The core never resolves: a name it has no fresh answer for becomes
//! [`Effect::Resolve`](super::Effect::Resolve), the calls that need it wait, and the shell's
//! answer comes back through [`Core::on_resolved`](super::Core::on_resolved).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Names kept at once. Names come from provisioned connections only, so this is far above
/// need; at the limit the stalest answer goes.
pub const MAX_NAMES: usize = 1024;
/// A look-up the shell has not answered in this long counts as failed, so no call waits for
/// ever on a resolver that lost the question.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// Shortest time an answer is kept, whatever its TTL: a call that waited for it must find it
/// when it asks again at once.
pub const MIN_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Entry {
    Asked { at: Instant },
    Known { addrs: Vec<IpAddr>, until: Instant },
}

/// What the core can do with a host now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Addresses to try (empty: the name does not resolve).
    Addrs(Vec<IpAddr>),
    /// Not known or stale: ask the shell (this is the first to need it).
    Ask,
    /// Asked already; wait for the answer.
    Waiting,
}

#[derive(Debug, Default)]
pub struct Names {
    entries: HashMap<String, Entry>,
}

impl Names {
    pub fn lookup(&mut self, now: Instant, host: &str) -> Lookup {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Lookup::Addrs(vec![ip]);
        }
        match self.entries.get(host) {
            Some(Entry::Known { addrs, until }) if *until > now => Lookup::Addrs(addrs.clone()),
            Some(Entry::Asked { at }) if now.duration_since(*at) < PATIENCE => Lookup::Waiting,
            _ => {
                self.make_room(now);
                self.entries
                    .insert(host.to_owned(), Entry::Asked { at: now });
                Lookup::Ask
            }
        }
    }

    /// The shell's answer for `host`, good for `ttl` (an empty list: no such name, kept as
    /// long so a dead name is not asked for on every call).
    pub fn answer(&mut self, now: Instant, host: &str, addrs: Vec<IpAddr>, ttl: Duration) {
        if !self.entries.contains_key(host) {
            self.make_room(now);
        }
        self.entries.insert(
            host.to_owned(),
            Entry::Known {
                addrs,
                until: now + ttl.max(MIN_TTL),
            },
        );
    }

    /// Names asked for longer than [`PATIENCE`] ago and still unanswered.
    pub fn overdue(&self, now: Instant) -> Vec<String> {
        self.entries
            .iter()
            .filter(
                |(_, e)| matches!(e, Entry::Asked { at } if now.duration_since(*at) >= PATIENCE),
            )
            .map(|(h, _)| h.clone())
            .collect()
    }

    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < MAX_NAMES {
            return;
        }
        self.entries
            .retain(|_, e| matches!(e, Entry::Known { until, .. } if *until > now));
        if self.entries.len() >= MAX_NAMES {
            let stalest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| match e {
                    Entry::Known { until, .. } => *until,
                    Entry::Asked { at } => *at,
                })
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

    #[test]
    fn literals_answer_at_once_names_are_asked_once_and_expire_with_their_ttl() {
        let mut n = Names::default();
        let t = Instant::now();
        assert_eq!(
            n.lookup(t, "192.0.2.1"),
            Lookup::Addrs(vec!["192.0.2.1".parse().unwrap()])
        );
        assert_eq!(n.lookup(t, "vendor.example"), Lookup::Ask);
        assert_eq!(n.lookup(t, "vendor.example"), Lookup::Waiting);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        n.answer(t, "vendor.example", vec![ip], Duration::from_secs(30));
        assert_eq!(
            n.lookup(t + Duration::from_secs(29), "vendor.example"),
            Lookup::Addrs(vec![ip])
        );
        assert_eq!(
            n.lookup(t + Duration::from_secs(30), "vendor.example"),
            Lookup::Ask
        );
    }

    #[test]
    fn an_unanswered_question_is_overdue_after_patience_and_asked_again() {
        let mut n = Names::default();
        let t = Instant::now();
        assert_eq!(n.lookup(t, "slow.example"), Lookup::Ask);
        assert!(
            n.overdue(t + PATIENCE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(n.overdue(t + PATIENCE), vec!["slow.example".to_owned()]);
        assert_eq!(n.lookup(t + PATIENCE, "slow.example"), Lookup::Ask);
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
