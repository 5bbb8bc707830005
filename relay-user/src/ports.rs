//! Relay port allocation. A stream side takes an RTP/RTCP pair (RTP even, RTCP = RTP + 1), so
//! the allocator hands out even ports whose odd successor is also in range.

use std::{collections::BTreeSet, fmt, str::FromStr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortRangeError {
    #[error("port range {0:?}: expected FIRST-LAST, e.g. 30000-39999")]
    Syntax(String),
    #[error(
        "port range {first}-{last} holds no RTP/RTCP pair (needs an even port and its successor)"
    )]
    TooSmall { first: u16, last: u16 },
}

/// Inclusive range of relay ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
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

/// Hands out RTP ports round-robin, so a just-freed port is reused as late as possible (late
/// packets of an old call must not land in a new one).
#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    used: BTreeSet<u16>,
    cursor: u32,
}

impl PortAllocator {
    pub fn new(range: PortRange) -> Self {
        PortAllocator {
            range,
            used: BTreeSet::new(),
            cursor: 0,
        }
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    pub fn available(&self) -> usize {
        self.range.pairs() as usize - self.used.len()
    }

    /// Next free even port for which `usable` agrees (e.g. both sockets could be bound).
    /// Ports `usable` rejects stay free and are tried again later.
    pub fn allocate(&mut self, mut usable: impl FnMut(u16) -> bool) -> Option<u16> {
        let n = self.range.pairs();
        for _ in 0..n {
            let p = self.range.nth(self.cursor);
            self.cursor = (self.cursor + 1) % n;
            if self.used.contains(&p) {
                continue;
            }
            if usable(p) {
                self.used.insert(p);
                return Some(p);
            }
        }
        None
    }

    /// Marks a port taken (recovery of live sessions after a restart). False if it is outside
    /// the range, odd, or already taken.
    pub fn reserve(&mut self, port: u16) -> bool {
        if !self.range.contains_rtp(port) {
            return false;
        }
        self.used.insert(port)
    }

    pub fn release(&mut self, port: u16) -> bool {
        self.used.remove(&port)
    }

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

    #[test]
    fn allocates_even_unique_and_reuses_late() {
        let mut a = PortAllocator::new("30000-30007".parse().unwrap());
        let got: Vec<u16> = (0..4).map(|_| a.allocate(|_| true).unwrap()).collect();
        assert_eq!(got, [30000, 30002, 30004, 30006]);
        assert_eq!(a.allocate(|_| true), None, "exhausted");
        assert!(a.release(30002));
        assert!(!a.release(30002));
        assert_eq!(a.allocate(|_| true), Some(30002));
        assert!(a.release(30000));
        assert!(a.release(30004));
        // Round-robin: the cursor has moved past 30000, so 30004 comes first.
        assert_eq!(a.allocate(|_| true), Some(30004));
    }

    #[test]
    fn never_hands_out_a_port_in_use() {
        let mut a = PortAllocator::new("30000-30009".parse().unwrap());
        assert!(a.reserve(30002));
        assert!(!a.reserve(30002));
        assert!(!a.reserve(30003));
        // Someone else holds 30000: skipped but not marked.
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
