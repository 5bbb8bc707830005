//! The relay's route cache: how a packet leaving a leg's port for its peer left last time.
//!
//! `bpf_fib_lookup` per relayed packet was the largest single cost of the kernel relay (about
//! 240 ns of IPv4's 660, 420 of IPv6's 990, `cargo xtask bench xdp`). The kernel now looks the
//! route up once and keeps the answer in `ROUTES`, an array indexed by relay port (an array
//! lookup is inlined by the verifier: no hash, one cache line), and looks it up again when the
//! entry no longer matches the leg or has aged [`ROUTE_TTL_TICKS`]. So a route or neighbour
//! change (a new gateway MAC, an interface gone) is followed within about a second; until
//! then packets leave by the old route. A redirect the egress device refuses forgets the entry
//! at once. Only the kernel writes this map; userspace never needs to.

/// Value of `ROUTES`, indexed by the relay port (host order) of the leg the packet leaves
/// from. Valid only for the exact addresses, ports and ingress interface it was looked up for,
/// for frames no longer than `len`, until `until`: anything else is a miss and a fresh lookup.
///
/// Exactly one cache line. The kernel reads it in place; a refresh zeroes `until` first and
/// sets it last, and the fields a hit depends on are compared, not trusted (relay-ebpf's
/// `route.rs` on what a concurrent refresh can and cannot tear).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Source address of the rewritten packet (the leg's relay address).
    pub src: crate::Addr,
    /// Destination (the leg's peer).
    pub dst: crate::Addr,
    /// The interface the lookup was made for (the frame's ingress): `XDP_TX` when equal to
    /// `ifindex`, a redirect otherwise.
    pub ingress: u32,
    /// Egress interface; 0: the destination is this host (the stack delivers it).
    pub ifindex: u32,
    /// [`route_ticks`] until which the entry may be used; 0: none (or being written).
    pub until: u32,
    /// The largest IP length the route was confirmed for (below the path MTU): a longer frame
    /// is looked up again, so the MTU check is never skipped.
    pub len: u16,
    /// Source port (the leg's relay port), host order.
    pub sport: u16,
    /// Destination port (the peer's), host order.
    pub dport: u16,
    /// Source MAC of the egress interface.
    pub smac: [u8; 6],
    /// Next hop's MAC.
    pub dmac: [u8; 6],
    /// Explicit padding; zero.
    pub _pad: u16,
}
crate::map_type!(Route, 64);

/// About a second: how long a looked-up route is used before it is looked up again.
pub const ROUTE_TTL_TICKS: u32 = 1 << 10;

/// CLOCK_MONOTONIC ns as the 32-bit ticks of about a millisecond (2^20 ns) that
/// [`Route::until`] counts in; wraps after about 52 days, which [`route_alive`] allows for.
#[inline(always)]
pub const fn route_ticks(now_ns: u64) -> u32 {
    (now_ns >> 20) as u32
}

/// Whether an entry valid until `until` may be used at `now` (both [`route_ticks`]), across
/// the 32-bit wrap. 0 is never valid.
#[inline(always)]
pub const fn route_alive(until: u32, now: u32) -> bool {
    until != 0 && (until.wrapping_sub(now) as i32) > 0
}

/// The `until` of an entry looked up at `now` (never 0, which means "none").
#[inline(always)]
pub const fn route_until(now: u32) -> u32 {
    match now.wrapping_add(ROUTE_TTL_TICKS) {
        0 => 1,
        u => u,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_lives_about_a_second_across_the_wrap() {
        for now in [0u32, 1, 5_000, u32::MAX - 10, u32::MAX] {
            let until = route_until(now);
            assert!(route_alive(until, now));
            assert!(route_alive(until, now.wrapping_add(ROUTE_TTL_TICKS - 1)));
            assert!(!route_alive(until, now.wrapping_add(ROUTE_TTL_TICKS)));
        }
        assert!(!route_alive(0, 0));
        assert_eq!(route_ticks(3 << 20), 3);
        // A second is 954 ticks; the TTL is a little over it.
        assert!(u64::from(ROUTE_TTL_TICKS) << 20 >= 1_000_000_000);
    }

    #[test]
    fn the_until_word_sits_where_the_kernel_reads_it() {
        assert_eq!(core::mem::offset_of!(Route, until), 40);
        assert_eq!(core::mem::offset_of!(Route, dst), 16);
        assert_eq!(core::mem::align_of::<Route>(), 8);
    }
}
