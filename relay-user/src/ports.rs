//! Relay port allocation. A stream side takes an RTP/RTCP pair (RTP even, RTCP = RTP + 1), so
//! the allocator hands out even ports whose odd successor is also in range.

use std::{collections::BTreeSet, fmt, str::FromStr};

/// Why a port range was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortRangeError {
    /// Not `FIRST-LAST` with two port numbers (the input is given).
    #[error("port range {0:?}: expected FIRST-LAST, e.g. 30000-39999")]
    Syntax(String),
    #[error(
        "port range {first}-{last} holds no RTP/RTCP pair (needs an even port and its successor)"
    )]
    /// The range holds no even port whose successor is also in it.
    TooSmall {
        /// First port given.
        first: u16,
        /// Last port given.
        last: u16,
    },
}

/// Inclusive range of relay ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port, inclusive.
    pub first: u16,
    /// Last port, inclusive.
    pub last: u16,
}

impl PortRange {
    /// The range `first..=last`; fails when it holds no RTP/RTCP pair.
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        let r = PortRange { first, last };
        if r.pairs() == 0 {
            return Err(PortRangeError::TooSmall { first, last });
        }
        Ok(r)
    }

    /// First usable RTP port: even, and never 0 (not a port).
    fn start(&self) -> u32 {
        (self.first as u32).next_multiple_of(2).max(2)
    }

    /// How many RTP/RTCP pairs fit.
    pub fn pairs(&self) -> u32 {
        let start = self.start();
        if start + 1 > self.last as u32 {
            return 0;
        }
        (self.last as u32 - start).div_ceil(2)
    }

    fn nth(&self, i: u32) -> u16 {
        (self.start() + 2 * i) as u16
    }

    /// Whether `port` is an RTP port of this range.
    pub fn contains_rtp(&self, port: u16) -> bool {
        let p = port as u32;
        p.is_multiple_of(2) && p >= self.start() && p < self.last as u32
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 30000,
            last: 39999,
        }
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PortRangeError::Syntax(s.to_owned());
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first > last {
            return Err(bad());
        }
        PortRange::new(first, last)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Where the allocator's randomness comes from: the OS by default, a fixed sequence in tests.
pub type PortRandom = Box<dyn FnMut() -> u64 + Send>;

/// A generator seeded from the OS (`getrandom`): splitmix64, which is enough to make the next
/// call's ports unguessable from the last ones' (an attacker who sees a relay port in one SDP
/// learns nothing about the next). Not for keys.
pub fn os_random() -> PortRandom {
    let mut seed = [0u8; 8];
    // SAFETY: writes at most `seed.len()` bytes into `seed`.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    let mut state = u64::from_ne_bytes(seed);
    if n != seed.len() as isize {
        // No getrandom (very old kernel): the clock and the address of the stack still make
        // the sequence differ from one start to the next.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        state ^= t ^ (&raw const state as u64);
    }
    Box::new(move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// Hands out RTP ports at random within the range, so one call's ports say nothing about the
/// next call's (a guessed port is a port an attacker can spray before the call starts).
pub struct PortAllocator {
    range: PortRange,
    used: BTreeSet<u16>,
    random: PortRandom,
}

impl fmt::Debug for PortAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortAllocator")
            .field("range", &self.range)
            .field("used", &self.used.len())
            .finish()
    }
}

/// Random picks before the allocator falls back to a scan (a nearly full range).
const RANDOM_TRIES: u32 = 16;

impl PortAllocator {
    /// Random from the OS.
    pub fn new(range: PortRange) -> Self {
        PortAllocator::with_random(range, os_random())
    }

    /// Random from `random` (tests: a fixed sequence gives fixed ports).
    pub fn with_random(range: PortRange, random: PortRandom) -> Self {
        PortAllocator {
            range,
            used: BTreeSet::new(),
            random,
        }
    }

    /// The range it allocates from.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// RTP ports (pairs) taken.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// RTP ports (pairs) still free.
    pub fn available(&self) -> usize {
        self.range.pairs() as usize - self.used.len()
    }

    /// A random free even port for which `usable` agrees (e.g. both sockets could be bound).
    /// Ports `usable` rejects stay free and may be tried again later. A few random picks, then
    /// every pair once from a random start, so a nearly full range still finds its last pair.
    pub fn allocate(&mut self, mut usable: impl FnMut(u16) -> bool) -> Option<u16> {
        let n = self.range.pairs();
        if n == 0 {
            return None;
        }
        let mut take = |me: &mut Self, i: u32| {
            let p = me.range.nth(i);
            if me.used.contains(&p) || !usable(p) {
                return None;
            }
            me.used.insert(p);
            Some(p)
        };
        for _ in 0..RANDOM_TRIES {
            let i = ((self.random)() % u64::from(n)) as u32;
            if let Some(p) = take(self, i) {
                return Some(p);
            }
        }
        let start = ((self.random)() % u64::from(n)) as u32;
        (0..n).find_map(|k| take(self, (start + k) % n))
    }

    /// Marks a port taken (recovery of live sessions after a restart). False if it is outside
    /// the range, odd, or already taken.
    pub fn reserve(&mut self, port: u16) -> bool {
        if !self.range.contains_rtp(port) {
            return false;
        }
        self.used.insert(port)
    }

    /// Frees an RTP port (its pair); `false` when it was not taken.
    pub fn release(&mut self, port: u16) -> bool {
        self.used.remove(&port)
    }

    /// Whether this RTP port is taken.
    pub fn is_used(&self, port: u16) -> bool {
        self.used.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_count() {
        let r: PortRange = "30000-39999".parse().unwrap();
        assert_eq!(r.pairs(), 5000);
        assert_eq!("30001-30004".parse::<PortRange>().unwrap().pairs(), 1);
        assert!("30001-30002".parse::<PortRange>().is_err());
        assert!("5-4".parse::<PortRange>().is_err());
        assert!("x".parse::<PortRange>().is_err());
        assert!("1-70000".parse::<PortRange>().is_err());
        assert_eq!("0-3".parse::<PortRange>().unwrap().pairs(), 1);
        assert_eq!(PortRange::default().to_string(), "30000-39999");
    }

    /// A fixed sequence of "random" numbers, repeated.
    fn fixed(seq: &'static [u64]) -> PortRandom {
        let mut i = 0;
        Box::new(move || {
            i += 1;
            seq[(i - 1) % seq.len()]
        })
    }

    #[test]
    fn allocates_at_random_even_and_unique() {
        let r: PortRange = "30000-30007".parse().unwrap();
        let mut a = PortAllocator::with_random(r, fixed(&[2, 0, 2, 3, 1]));
        let got: Vec<u16> = (0..4).map(|_| a.allocate(|_| true).unwrap()).collect();
        // Index 2 twice: the second pick is taken, so the next number decides.
        assert_eq!(got, [30004, 30000, 30006, 30002]);
        assert_eq!(a.allocate(|_| true), None, "exhausted");
        assert!(a.release(30002));
        assert!(!a.release(30002));
        assert_eq!(
            a.allocate(|_| true),
            Some(30002),
            "the last free pair is found"
        );
    }

    #[test]
    fn os_random_ports_are_not_in_sequence() {
        let mut a = PortAllocator::new(PortRange::default());
        let got: Vec<u16> = (0..8).map(|_| a.allocate(|_| true).unwrap()).collect();
        assert!(
            got.iter()
                .all(|p| p.is_multiple_of(2) && (30000..39999).contains(p))
        );
        let sequential = got.windows(2).all(|w| w[1] == w[0] + 2);
        assert!(!sequential, "{got:?}");
    }

    #[test]
    fn never_hands_out_a_port_in_use() {
        let mut a = PortAllocator::new("30000-30009".parse().unwrap());
        assert!(a.reserve(30002));
        assert!(!a.reserve(30002));
        assert!(!a.reserve(30003));
        // Someone else holds 30000: skipped but not marked.
        let mut a = PortAllocator::with_random(a.range, fixed(&[0]));
        assert!(a.reserve(30002));
        let p = a.allocate(|p| p != 30000).unwrap();
        assert_eq!(p, 30004);
        let mut seen = std::collections::BTreeSet::new();
        while let Some(p) = a.allocate(|_| true) {
            assert!(seen.insert(p));
            assert!(p.is_multiple_of(2) && p != 30002 && p != 30004);
        }
        assert_eq!(a.available(), 0);
    }
}
