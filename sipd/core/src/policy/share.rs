//! A node's share of a limit that holds across a cluster of nodes.
//!
//! The shell leases slots of a cluster-wide limit (concurrent calls, calls per second) from
//! the shared engine and tells the core how many it holds; the core then admits within
//! `min(own limit, share)` with no I/O. A share of 0 refuses everything: the node holds no
//! slot (the shell asks for more in the background). No share: the node is alone and the
//! record's own limits apply.

use std::time::Instant;

use super::gcra::CpsBucket;

/// What this node may use of an account's (or a connection's) cluster limits right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Share {
    /// Concurrent calls (sessions, or channels of a connection) this node may have up;
    /// `None`: only the record's own cap.
    pub sessions: Option<u32>,
    /// Calls per second this node may start; `None`: only the record's own cap.
    pub cps: Option<u32>,
}

/// The tighter of a record's own cap and the node's share (`None`: no cap at all).
pub(crate) fn cap(own: Option<u32>, share: Option<u32>) -> Option<u32> {
    match (own, share) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Takes a CPS token at `rate`, where `Some(0)` (a share of nothing) refuses; the bucket
/// itself reads 0 as "unlimited".
pub(crate) fn take_cps(bucket: &mut CpsBucket, now: Instant, rate: Option<u32>) -> bool {
    match rate {
        None => true,
        Some(0) => false,
        Some(r) => bucket.take(now, r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tighter_cap_wins() {
        assert_eq!(cap(None, None), None);
        assert_eq!(cap(Some(5), None), Some(5));
        assert_eq!(cap(None, Some(3)), Some(3));
        assert_eq!(cap(Some(5), Some(3)), Some(3));
        assert_eq!(cap(Some(2), Some(3)), Some(2));
    }

    #[test]
    fn zero_share_refuses_every_token() {
        let mut b = CpsBucket::default();
        let t = Instant::now();
        assert!(!take_cps(&mut b, t, Some(0)));
        assert!(take_cps(&mut b, t, None));
        assert!(take_cps(&mut b, t, Some(1)));
        assert!(!take_cps(&mut b, t, Some(1)));
    }
}
