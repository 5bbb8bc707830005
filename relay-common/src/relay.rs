//! Media relay sessions.
//!
//! A call's media stream has two legs. Each leg owns one relay port (RTP even, RTCP = RTP + 1 is
//! a separate pair of legs) on which its peer sends; a packet arriving on leg A is sent out from
//! leg B's port to leg B's peer. Each leg is the `RELAY_LEGS` slot of its port (an array, so
//! each lookup is an inlined index, not a hash), and the kernel reads two: the receiving leg
//! (latching, strict source, counters) and its partner (where to send).

use crate::Addr;

/// Key of `RELAY_COUNTERS` (and of the retired hash of legs): the relay port (host order) the
/// packet was sent to. `RELAY_LEGS` is indexed by the port itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegKey {
    /// The relay port, host order.
    pub port: u16,
    /// Explicit padding; always zero, or equal keys would hash apart.
    pub _pad: u16,
}
crate::map_type!(LegKey, 4);

impl LegKey {
    /// The key of relay port `port` (host order), padding zeroed.
    pub const fn new(port: u16) -> Self {
        LegKey { port, _pad: 0 }
    }
}

/// The peer's address is known (from SDP, or latched). Without it the partner leg cannot send.
pub const LEG_PEER_KNOWN: u32 = 1 << 0;
/// Learn the peer's real address from its first packet from a trusted address (NAT
/// traversal): see [`Leg::may_learn_from`].
pub const LEG_LATCH: u32 = 1 << 1;
/// Set by the data plane once the peer's address was learned from a packet.
pub const LEG_LATCHED: u32 = 1 << 2;
/// Once latched, drop packets from any other source (RTP bleed protection).
pub const LEG_STRICT_SOURCE: u32 = 1 << 3;
/// Leg is fully set up; a leg without it passes its packets to userspace.
pub const LEG_ACTIVE: u32 = 1 << 4;
/// `trust_addr` holds a second address the peer may be learnt from: the one its SIP came from
/// (an endpoint behind NAT sends media from its public address, not the SDP's).
pub const LEG_TRUST_KNOWN: u32 = 1 << 5;

/// The slot holds a leg: set by userspace on every leg it writes (`RELAY_LEGS` is an array,
/// so a port without a leg is an all-zero slot). The kernel leaves a port whose slot lacks it
/// to the rest of the pipeline, as if no relay port.
pub const LEG_PRESENT: u32 = 1 << 6;

/// How long after an offer or answer a leg may learn its peer, unless configured otherwise.
/// Long enough for a phone that starts its media late; the window only ever admits the SDP's
/// or the SIP source's address, so its length is no hole (RTP bleed).
pub const LEARN_WINDOW_NS: u64 = 30_000_000_000;

/// Value of `RELAY_LEGS`. Written by userspace, `peer_*` and `LEG_LATCHED` also by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leg {
    /// The relay address this leg's peer sends to (and that its partner sends from).
    pub local_addr: Addr,
    /// Where this leg's peer is: from SDP, replaced by the latched source.
    pub peer_addr: Addr,
    /// Session the leg belongs to, for reporting and timeouts.
    pub session_id: u64,
    /// Port of this leg (host order), equal to its key.
    pub local_port: u16,
    /// Port of the peer (host order).
    pub peer_port: u16,
    /// Relay port of the partner leg: packets received here leave from there.
    pub partner_port: u16,
    /// Explicit padding; zero.
    pub _pad: u16,
    /// `LEG_*` bits.
    pub flags: u32,
    /// Explicit padding; zero.
    pub _pad2: u32,
    /// The SIP source of the peer's side (valid with `LEG_TRUST_KNOWN`): besides the SDP's
    /// address (`peer_addr` as signalled), the one address the peer may be learnt from.
    pub trust_addr: Addr,
    /// CLOCK_MONOTONIC ns until which the peer may be learnt (`LEG_LATCH`); 0: never. Set by
    /// userspace on each offer, answer and re-INVITE.
    pub learn_until_ns: u64,
}
crate::map_type!(Leg, 80);

impl Leg {
    /// Whether any bit of `flag` (a `LEG_*` constant) is set.
    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether a packet from `src` (at CLOCK_MONOTONIC `now_ns`) may teach this leg its peer:
    /// a latching leg that has not learnt yet, inside its window, and a source address it has
    /// reason to trust: the SDP's (`peer_addr` while not latched) or the SIP source's. The port
    /// is free (NAT rewrites it). The userspace relay's rule; the kernel's is the same.
    pub fn may_learn_from(&self, src: &Addr, now_ns: u64) -> bool {
        self.has(LEG_LATCH)
            && !self.has(LEG_LATCHED)
            && now_ns <= self.learn_until_ns
            && self.trusts(src)
    }

    /// `src` is the SDP's address (while not latched) or the SIP source's.
    pub fn trusts(&self, src: &Addr) -> bool {
        (self.has(LEG_PEER_KNOWN) && !self.has(LEG_LATCHED) && self.peer_addr == *src)
            || (self.has(LEG_TRUST_KNOWN) && self.trust_addr == *src)
    }

    /// Strict source: whether a packet from `src`:`sport` that did not teach the leg its
    /// peer is to be dropped. Once learnt (or with a signalled peer and no latching) only that
    /// exact address and port pass; before, only the addresses the leg trusts.
    pub fn refuses(&self, src: &Addr, sport: u16) -> bool {
        if !self.has(LEG_STRICT_SOURCE) {
            return false;
        }
        if self.has(LEG_LATCHED) || (!self.has(LEG_LATCH) && self.has(LEG_PEER_KNOWN)) {
            return self.peer_addr != *src || self.peer_port != sport;
        }
        !self.trusts(src)
    }
}

/// Value of the per-CPU hash `RELAY_COUNTERS`: what arrived on a leg. Userspace sums over
/// CPUs (and takes the maximum `last_seen_ns`). Kept apart from `Leg` so a userspace update of
/// the leg never races with the counters.
///
/// The `rtp_*` fields are RFC 3550's loss state of the leg's RTP (see [`crate::rtp`]), kept per
/// CPU like the rest: each CPU counts the packets it relayed, with no atomic operation and no
/// shared cache line, and a reader joins the CPUs' states with [`LegCounters::merge`], which
/// lines their sequence numbers up rather than adding each CPU's gaps (a CPU that saw every
/// other packet saw a gap after each, yet the stream lost none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Packets received and forwarded.
    pub packets: u64,
    /// UDP payload bytes of those packets (RTP header included; IP and UDP headers not).
    pub bytes: u64,
    /// CLOCK_MONOTONIC ns of the last packet received (forwarded or not).
    pub last_seen_ns: u64,
    /// Packets dropped by strict source.
    pub strict_drops: u64,
    /// Forwarded packets that looked like RTP and counted for loss (RFC 3550 `received`,
    /// duplicates included); 0: no RTP yet, the other `rtp_*` fields mean nothing.
    pub rtp_received: u32,
    /// Extended highest sequence number: wrap count in the high half, sequence number in the
    /// low half (RFC 3550 `cycles` + `max_seq`).
    pub rtp_max: u32,
    /// Extended sequence number of the first RTP packet, in the numbering of `rtp_max` (RFC
    /// 3550 `base_seq`): expected = `rtp_max` - `rtp_base` + 1, wrapping.
    pub rtp_base: u32,
    /// The sequence number that would confirm a big jump (RFC 3550 `bad_seq`);
    /// [`crate::rtp::RTP_NO_BAD`] when none is pending.
    pub rtp_bad: u32,
}
crate::map_type!(LegCounters, 48);

impl LegCounters {
    /// Adds another CPU's counters (or the userspace relay's, for the same leg) into these:
    /// sums, the later `last_seen_ns`, and the RTP loss state of both joined (see
    /// [`crate::rtp`]). Views of different streams are not merged:
    /// add their [`rtp_expected`](LegCounters::rtp_expected) and
    /// [`rtp_lost`](LegCounters::rtp_lost) instead.
    pub fn merge(&mut self, o: &LegCounters) {
        // Before `last_seen_ns` changes: which view saw its last packet later decides.
        self.merge_rtp(o);
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.strict_drops += o.strict_drops;
        if o.last_seen_ns > self.last_seen_ns {
            self.last_seen_ns = o.last_seen_ns;
        }
    }
}
