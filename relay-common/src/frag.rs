//! Fragment verdicts: only the first fragment of a datagram carries its UDP or TCP header, so
//! only it can be judged by the service ACL and the SIP guard. Its verdict is remembered here,
//! keyed by the datagram, and the later fragments follow it; a later fragment with no
//! remembered verdict is dropped (it can only be out of order, or forged to slip past the
//! firewall without a header to judge).

use crate::Addr;

/// IPv6 extension headers (hop-by-hop, routing, fragment, destination options) the kernel
/// steps over to find a transport header; a longer chain is dropped and counted. RFC 8200
/// §4.1 recommends at most one of each (destination options twice): real traffic carries one
/// or two, and the bound keeps the walk a short loop the verifier accepts.
pub const MAX_EXT_HEADERS: usize = 6;

/// How long a first fragment's verdict is followed. Fragments of one datagram leave the
/// sender back to back, so they arrive within microseconds of each other; two seconds covers
/// queueing and reordering on any sane path, while a forged fragment train cannot ride on an
/// old verdict for long. (The stack's own reassembly gives up after 30 s, `ipfrag_time`, but
/// SIP over UDP retransmits the whole datagram long before that: T1 is 500 ms.)
pub const FRAG_VERDICT_TTL_NS: u64 = 2_000_000_000;

/// The first fragment passed: later ones pass too.
pub const FRAG_PASS: u32 = 1;
/// The first fragment was dropped: later ones are dropped too.
pub const FRAG_DROP: u32 = 2;

/// Key of the LRU hash `FRAG_VERDICTS`: what identifies one datagram's fragments (RFC 791
/// §3.2: source, destination, protocol and identification; IPv6 has no protocol in the IP
/// header, so the fragment header's next header stands in, the same in every fragment).
///
/// 8-aligned so the kernel writes each address as two words (see `relay-ebpf`'s `Words`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// The datagram's source address.
    pub src: Addr,
    /// The datagram's destination address.
    pub dst: Addr,
    /// IPv4: the 16-bit identification, zero-extended; IPv6: the 32-bit one. Host order.
    pub id: u32,
    /// IPv4 protocol, or the IPv6 fragment header's next header.
    pub proto: u8,
    /// Explicit padding; always zero, or equal datagrams would hash apart.
    pub _pad: [u8; 3],
}
crate::map_type!(FragKey, 40);

/// Value of `FRAG_VERDICTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragVerdict {
    /// When the first fragment was judged (CLOCK_MONOTONIC ns).
    pub at_ns: u64,
    /// [`FRAG_PASS`] or [`FRAG_DROP`].
    pub verdict: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
}
crate::map_type!(FragVerdict, 16);

impl FragVerdict {
    /// What a later fragment arriving at `now_ns` does: `Some(true)` pass, `Some(false)` drop,
    /// `None` no verdict that still holds (expired, or never made). The kernel and the tests
    /// decide with this.
    #[inline(always)]
    pub fn follow(&self, now_ns: u64) -> Option<bool> {
        if now_ns.wrapping_sub(self.at_ns) >= FRAG_VERDICT_TTL_NS {
            return None;
        }
        match self.verdict {
            FRAG_PASS => Some(true),
            FRAG_DROP => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_holds_for_its_ttl_only() {
        let v = |verdict| FragVerdict {
            at_ns: 10,
            verdict,
            _pad: 0,
        };
        assert_eq!(v(FRAG_PASS).follow(10), Some(true));
        assert_eq!(
            v(FRAG_DROP).follow(10 + FRAG_VERDICT_TTL_NS - 1),
            Some(false)
        );
        assert_eq!(v(FRAG_PASS).follow(10 + FRAG_VERDICT_TTL_NS), None);
        assert_eq!(v(0).follow(10), None, "an empty slot is no verdict");
        // A clock that went backwards (a value from before a reboot in a pinned map) is stale.
        assert_eq!(v(FRAG_PASS).follow(5), None);
    }
}
