//! The ng reply cache: rtpengine's answer to retransmissions.
//!
//! A client that gets no reply sends the same datagram again, same cookie. Like rtpengine we
//! answer a repeated cookie with the reply already sent, so an offer is never applied twice.
//!
//! Two things rtpengine does not do, because the cache is fed by the network:
//!
//! - Entries are keyed by the client's address *and* the cookie. Cookies are chosen by clients
//!   (Kamailio uses a counter), so two clients collide on them; keyed by cookie alone, one
//!   client would be handed another's reply (its SDP, its call's ports) by reusing its cookie.
//! - The cache is bounded in bytes, not entries: a reply can be 64 KiB, so a count bound alone
//!   would let the cache grow to gigabytes. Beyond the bound the oldest entries go first, each
//!   eviction counted. Entries also expire after [`CACHE_TTL`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a reply is replayed for its cookie. Kamailio retries within a few seconds.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Default bound on the cache's size: 4 MiB, some thousands of typical offer replies, far more
/// than one [`CACHE_TTL`] of retransmissions from a busy proxy needs.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;
/// What one entry costs beyond its cookie and reply: the key's address, the vectors' headers,
/// the hash slot and the expiry queue's copy of the key. An estimate, on the high side, so the
/// bound holds for many small entries too.
pub const ENTRY_OVERHEAD: usize = 160;

/// Who sent a request and which cookie it carried.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    from: SocketAddr,
    cookie: Vec<u8>,
}

impl Key {
    fn cost(&self, reply: &[u8]) -> usize {
        self.cookie.len() + reply.len() + ENTRY_OVERHEAD
    }
}

/// What the cache did, for `--status` and the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now (cookies, replies and [`ENTRY_OVERHEAD`] each).
    pub bytes: usize,
    /// The bound on `bytes`.
    pub max_bytes: usize,
    /// Retransmissions answered from the cache.
    pub hits: u64,
    /// Entries removed early to make room (oldest first).
    pub evicted: u64,
    /// Entries removed after [`CACHE_TTL`].
    pub expired: u64,
    /// Replies not cached because alone they exceed the bound.
    pub too_large: u64,
}

/// Replies by (source, cookie), oldest first for expiry and eviction.
pub struct ReplyCache {
    map: HashMap<Key, Vec<u8>>,
    /// Insertion order; every key in `map` is here exactly once.
    order: VecDeque<(Instant, Key)>,
    stats: CacheStats,
}

impl Default for ReplyCache {
    fn default() -> Self {
        ReplyCache::new(DEFAULT_CACHE_BYTES)
    }
}

impl ReplyCache {
    /// A cache holding at most `max_bytes` (see [`CacheStats::bytes`] for what is counted).
    pub fn new(max_bytes: usize) -> ReplyCache {
        ReplyCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            stats: CacheStats {
                max_bytes,
                ..CacheStats::default()
            },
        }
    }

    /// The reply sent to `from` for `cookie`, if it is still held.
    pub fn get(&mut self, from: SocketAddr, cookie: &[u8], now: Instant) -> Option<&[u8]> {
        self.expire(now);
        let key = Key {
            from,
            cookie: cookie.to_vec(),
        };
        let hit = self.map.get(&key).map(Vec::as_slice);
        if hit.is_some() {
            self.stats.hits += 1;
        }
        hit
    }

    /// Remembers the reply sent to `from` for `cookie`, evicting the oldest entries until it
    /// fits. A reply that alone exceeds the bound is not cached (counted): a retransmission of
    /// its request is then handled again, which for `offer` is an update, not a new call.
    pub fn put(&mut self, from: SocketAddr, cookie: &[u8], reply: Vec<u8>, now: Instant) {
        self.expire(now);
        let key = Key {
            from,
            cookie: cookie.to_vec(),
        };
        let cost = key.cost(&reply);
        if cost > self.stats.max_bytes {
            self.stats.too_large += 1;
            return;
        }
        // Same key again (not reached through `handle_datagram`, which answers it from here):
        // replace in place and keep its place in the order.
        if let Some(old) = self.map.remove(&key) {
            self.stats.bytes -= key.cost(&old);
            self.order.retain(|(_, k)| k != &key);
            self.stats.entries -= 1;
        }
        while self.stats.bytes + cost > self.stats.max_bytes {
            if !self.pop_oldest() {
                break;
            }
            self.stats.evicted += 1;
        }
        self.stats.bytes += cost;
        self.stats.entries += 1;
        self.order.push_back((now, key.clone()));
        self.map.insert(key, reply);
    }

    /// Replies cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no reply is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Its counters now.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < CACHE_TTL {
                break;
            }
            self.pop_oldest();
            self.stats.expired += 1;
        }
    }

    /// Removes the oldest entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else {
            return false;
        };
        if let Some(reply) = self.map.remove(&key) {
            self.stats.bytes -= key.cost(&reply);
            self.stats.entries -= 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_reply_is_only_replayed_to_its_own_source() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        let kamailio = addr("127.0.0.1:5000");
        c.put(kamailio, b"42", b"42 d6:result2:oke".to_vec(), t);
        assert!(c.get(kamailio, b"42", t).is_some());
        // Same cookie from another address or another port of the same host: not the reply.
        assert!(c.get(addr("127.0.0.2:5000"), b"42", t).is_none());
        assert!(c.get(addr("127.0.0.1:5001"), b"42", t).is_none());
        assert_eq!(c.stats().hits, 1);
    }

    #[test]
    fn filled_cache_stays_under_its_bound_oldest_out_first() {
        let bound = 64 * 1024;
        let mut c = ReplyCache::new(bound);
        let t = Instant::now();
        let reply = vec![b'x'; 1000];
        for i in 0..1000u32 {
            let from = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 5000));
            c.put(from, &i.to_be_bytes(), reply.clone(), t);
            assert!(c.stats().bytes <= bound, "{:?}", c.stats());
        }
        let s = c.stats();
        let per = 4 + 1000 + ENTRY_OVERHEAD;
        assert_eq!(s.entries, bound / per);
        assert_eq!(s.evicted, 1000 - s.entries as u64);
        // The newest survive, the oldest went.
        let newest = SocketAddr::from(([10, 0, 3, 231], 5000));
        assert!(c.get(newest, &999u32.to_be_bytes(), t).is_some());
        let oldest = SocketAddr::from(([10, 0, 0, 0], 5000));
        assert!(c.get(oldest, &0u32.to_be_bytes(), t).is_none());
        // One reply bigger than the whole bound is refused, not allowed to flush the cache.
        c.put(newest, b"big", vec![0; bound], t);
        assert_eq!(c.stats().too_large, 1);
        assert_eq!(c.stats().entries, s.entries);
    }

    #[test]
    fn entries_expire_and_give_back_their_bytes() {
        let mut c = ReplyCache::default();
        let t = Instant::now();
        let from = addr("[::1]:5000");
        c.put(from, b"k1", vec![1; 10], t);
        c.put(from, b"k1", vec![1; 20], t);
        assert_eq!(c.len(), 1);
        assert_eq!(c.stats().bytes, 2 + 20 + ENTRY_OVERHEAD);
        assert!(c.get(from, b"k1", t + CACHE_TTL).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.expired), (0, 0, 1));
        assert!(c.is_empty());
    }
}
