//! sipd's own table of bans: the authoritative one, of which the data plane's tries are a
//! copy. Bounded by a capacity per family (at most the tries'); when a family is full, the ban
//! expiring soonest gives way: an old one, or the new one when it would expire first (a
//! permanent ban never gives way to one that ends).

use std::collections::{BTreeMap, BTreeSet};

use relay_user::{BanReason, Cidr};
use serde::{Deserialize, Serialize};

/// Who decided a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// The IDS (scanner, brute force, enumeration, flood), or its promotion of a range.
    Ids,
    /// An operator, through the API or `sbcctl`.
    Staff,
}

/// One ban as sipd keeps it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned source: a host (/32, /128) or a range; the table's key.
    pub prefix: Cidr,
    /// Why, as the data plane records it (`Manual` for operators' bans).
    pub reason: BanReason,
    /// Who decided it: operators' bans are stored and applied again at start; the IDS's are
    /// not stored.
    pub by: By,
    /// `None`: until removed.
    pub until_ms: Option<u64>,
    /// An operator's note.
    pub note: Option<String>,
    /// What the listing says of where the ban came from and what it has stopped since.
    pub meta: BanMeta,
}

/// Provenance and activity of a ban, for the listing (not copied to the data plane).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BanMeta {
    /// The IDS rule (offence) that earned it, `range:<offence>` for a promoted range,
    /// `staff:<username>` for an operator's.
    pub rule: String,
    /// What the IDS saw (offence, count, window), as its audit entry records it.
    pub evidence: Option<serde_json::Value>,
    /// Unix ms this prefix was first banned (kept across repeat offences).
    pub first_seen_ms: u64,
    /// Unix ms of the last offence, or of the last packet sipd dropped for this ban.
    pub last_seen_ms: u64,
    /// Packets sipd's userspace firewall dropped for this ban (XDP's drops are counted in
    /// total only, `drop_banned`).
    pub hits: u64,
}

impl Ban {
    /// Expiry order: permanent last.
    fn expiry_key(&self) -> u64 {
        self.until_ms.unwrap_or(u64::MAX)
    }

    /// Whether the ban has ended at `now_ms` (Unix ms); a permanent ban never has.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.until_ms.is_some_and(|u| u <= now_ms)
    }
}

/// What an insert did beyond adding the ban.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Added or replaced a ban of the same prefix.
    Fits,
    /// The family was full: this ban, expiring soonest, gave way.
    Replaced(Ban),
    /// The family was full and the new ban would expire before every ban there: not added.
    Refused,
}

/// The table of every ban sipd holds, keyed by prefix and ordered by expiry so the soonest to
/// end is found at once when a family is full. Behind the firewall's ban lock.
#[derive(Debug)]
pub struct Book {
    bans: BTreeMap<Cidr, Ban>,
    by_expiry: BTreeSet<(u64, Cidr)>,
    /// Per family: `[0]` IPv4, `[1]` IPv6.
    len: [usize; 2],
    capacity: usize,
}

fn fam(c: &Cidr) -> usize {
    usize::from(!c.is_v4())
}

impl Book {
    /// An empty table holding at most `capacity` bans per address family.
    pub fn new(capacity: usize) -> Book {
        Book {
            bans: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            len: [0; 2],
            capacity,
        }
    }

    /// The most bans held per address family.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bans held, both families together.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether no ban is held.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// The ban of exactly `prefix` (not one covering or covered by it).
    pub fn get(&self, prefix: &Cidr) -> Option<&Ban> {
        self.bans.get(prefix)
    }

    /// Counts a packet from `ip` dropped for a ban: on the longest live ban holding it.
    /// Whether one held it.
    pub fn hit(&mut self, ip: std::net::IpAddr, now_ms: u64) -> bool {
        let max = if Cidr::host(ip).is_v4() { 32 } else { 128 };
        for len in (0..=max).rev() {
            let Ok(c) = Cidr::new(ip, len) else {
                continue;
            };
            if let Some(b) = self.bans.get_mut(&c)
                && !b.expired(now_ms)
            {
                b.meta.hits += 1;
                b.meta.last_seen_ms = b.meta.last_seen_ms.max(now_ms);
                return true;
            }
        }
        false
    }

    /// Every ban held, in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
    }

    /// Adds `ban` (replacing one of the same prefix), making room if its family is full.
    pub fn insert(&mut self, ban: Ban) -> Inserted {
        let f = fam(&ban.prefix);
        if self.bans.contains_key(&ban.prefix) || self.len[f] < self.capacity {
            self.put(ban);
            return Inserted::Fits;
        }
        let soonest = self.by_expiry.iter().find(|(_, c)| fam(c) == f).copied();
        match soonest {
            Some((k, victim)) if k <= ban.expiry_key() => {
                let old = self.remove(&victim);
                self.put(ban);
                old.map_or(Inserted::Fits, Inserted::Replaced)
            }
            _ => Inserted::Refused,
        }
    }

    fn put(&mut self, ban: Ban) {
        let key = (ban.expiry_key(), ban.prefix);
        if let Some(old) = self.bans.insert(ban.prefix, ban) {
            self.by_expiry.remove(&(old.expiry_key(), old.prefix));
        } else {
            self.len[fam(&key.1)] += 1;
        }
        self.by_expiry.insert(key);
    }

    /// Removes the ban of exactly `prefix`; returns it, `None` when there was none.
    pub fn remove(&mut self, prefix: &Cidr) -> Option<Ban> {
        let old = self.bans.remove(prefix)?;
        self.by_expiry.remove(&(old.expiry_key(), old.prefix));
        self.len[fam(prefix)] -= 1;
        Some(old)
    }

    /// Bans inside `range` (not `range` itself) that end no later than `until_ms`: the range
    /// covers them for as long.
    pub fn covered_by(&self, range: &Cidr, until_ms: Option<u64>) -> Vec<Cidr> {
        let end = until_ms.unwrap_or(u64::MAX);
        self.bans
            .values()
            .filter(|b| {
                b.prefix != *range
                    && b.prefix.prefix_len() > range.prefix_len()
                    && range.contains(b.prefix.addr())
                    && b.expiry_key() <= end
            })
            .map(|b| b.prefix)
            .collect()
    }

    /// Takes out every ban expired at `now_ms`.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<Ban> {
        let due: Vec<Cidr> = self
            .by_expiry
            .iter()
            .take_while(|(k, _)| *k <= now_ms)
            .map(|(_, c)| *c)
            .collect();
        due.iter().filter_map(|c| self.remove(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(p: &str, until_ms: Option<u64>) -> Ban {
        Ban {
            prefix: p.parse().unwrap(),
            reason: BanReason::Flood,
            by: By::Ids,
            until_ms,
            note: None,
            meta: BanMeta::default(),
        }
    }

    #[test]
    fn a_hit_counts_on_the_longest_live_ban_holding_the_source() {
        let mut b = Book::new(10);
        b.insert(ban("192.0.2.0/24", Some(1_000)));
        b.insert(ban("192.0.2.7", Some(100)));
        let ip = "192.0.2.7".parse().unwrap();
        assert!(b.hit(ip, 50));
        // The host ban has ended: the range holds the source.
        assert!(b.hit(ip, 200));
        assert!(!b.hit("198.51.100.1".parse().unwrap(), 50));
        let host = b.get(&"192.0.2.7/32".parse().unwrap()).unwrap();
        let range = b.get(&"192.0.2.0/24".parse().unwrap()).unwrap();
        assert_eq!((host.meta.hits, host.meta.last_seen_ms), (1, 50));
        assert_eq!((range.meta.hits, range.meta.last_seen_ms), (1, 200));
    }

    #[test]
    fn a_full_family_gives_up_the_ban_expiring_soonest() {
        let mut b = Book::new(3);
        assert_eq!(b.insert(ban("192.0.2.1", Some(300))), Inserted::Fits);
        assert_eq!(b.insert(ban("192.0.2.2", Some(100))), Inserted::Fits);
        assert_eq!(b.insert(ban("192.0.2.3", None)), Inserted::Fits);
        // IPv6 has its own room.
        assert_eq!(b.insert(ban("2001:db8::1", Some(1))), Inserted::Fits);
        assert_eq!(
            b.insert(ban("192.0.2.4", Some(200))),
            Inserted::Replaced(ban("192.0.2.2", Some(100)))
        );
        // Replacing a ban of the same prefix needs no room.
        assert_eq!(b.insert(ban("192.0.2.4", Some(250))), Inserted::Fits);
        // A ban that would end before all of them is the one that gives way.
        assert_eq!(b.insert(ban("192.0.2.5", Some(10))), Inserted::Refused);
        assert_eq!(b.len(), 4);
        assert_eq!(
            b.take_expired(260)
                .iter()
                .map(|x| x.prefix.to_string())
                .collect::<Vec<_>>(),
            ["2001:db8::1/128", "192.0.2.4/32"]
        );
        // Permanent bans never give way to ones that end.
        let mut p = Book::new(1);
        p.insert(ban("192.0.2.9", None));
        assert_eq!(
            p.insert(ban("192.0.2.8", Some(u64::MAX - 1))),
            Inserted::Refused
        );
        assert!(matches!(
            p.insert(ban("192.0.2.8", None)),
            Inserted::Replaced(_)
        ));
    }

    #[test]
    fn a_range_covers_the_bans_inside_it_that_end_no_later() {
        let mut b = Book::new(10);
        b.insert(ban("192.0.2.1", Some(100)));
        b.insert(ban("192.0.2.2", Some(900)));
        b.insert(ban("192.0.3.1", Some(100)));
        let range: Cidr = "192.0.2.0/24".parse().unwrap();
        assert_eq!(
            b.covered_by(&range, Some(500)),
            ["192.0.2.1/32".parse::<Cidr>().unwrap()]
        );
        assert_eq!(b.covered_by(&range, None).len(), 2);
    }

    #[test]
    fn the_real_capacity_fills_and_replaces() {
        let cap = relay_user::BANS_MAX as usize;
        let mut b = Book::new(cap);
        for i in 0..cap as u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let r = b.insert(Ban {
                until_ms: Some(1_000 + u64::from(i)),
                ..ban(&ip.to_string(), None)
            });
            assert_eq!(r, Inserted::Fits);
        }
        let r = b.insert(ban("192.0.2.1", Some(10_000_000)));
        assert_eq!(
            r,
            Inserted::Replaced(Ban {
                until_ms: Some(1_000),
                ..ban("10.0.0.0", None)
            })
        );
        assert_eq!(b.len(), cap);
    }
}
