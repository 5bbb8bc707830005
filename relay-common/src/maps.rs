//! Map names (as pinned under `/sys/fs/bpf/<instance>/`), capacities and layouts: each stated
//! once, here. The XDP program declares its maps with exactly these names and capacities,
//! `relay-user` opens them by name, bounds its userspace tables by the same capacities and checks
//! pinned maps against [`LAYOUT`]. Sizes in bytes are computed from the key and value types.

use core::mem::size_of;

use crate::{
    Addr,
    frag::{FragKey, FragVerdict},
    fw::{
        BanEntry, BanHitKey, BanHits, BanV4, BanV6, DenyV4, DenyV6, SVC_PORT_WORDS, ServiceEntry,
        ServiceKey, SvcAllowV4, SvcAllowV6,
    },
    guard::{GuardConfig, GuardEvent, GuardState, SessionCount},
    relay::{Leg, LegCounters, LegKey},
    route::Route,
    stats::STATS_LEN,
};

/// LPM trie of banned IPv4 prefixes ([`BanV4`] → [`BanEntry`]), written by `sipd`.
pub const BANS_V4: &str = "BANS_V4";
/// LPM trie of banned IPv6 prefixes ([`BanV6`] → [`BanEntry`]), written by `sipd`.
pub const BANS_V6: &str = "BANS_V6";
/// LPM trie of the operator's static IPv4 deny list ([`DenyV4`] → rule id).
pub const DENY_V4: &str = "DENY_V4";
/// LPM trie of the operator's static IPv6 deny list ([`DenyV6`] → rule id).
pub const DENY_V6: &str = "DENY_V6";
/// Hash of the services the ACL knows ([`ServiceKey`] → [`ServiceEntry`]); a port not in it
/// is no service.
pub const SERVICES: &str = "SERVICES";
/// LPM trie of the IPv4 per-service allow lists ([`SvcAllowV4`] → 1, a presence marker).
pub const SVC_ALLOW_V4: &str = "SVC_ALLOW_V4";
/// LPM trie of the IPv6 per-service allow lists ([`SvcAllowV6`] → 1, a presence marker).
pub const SVC_ALLOW_V6: &str = "SVC_ALLOW_V6";
/// Array of [`SVC_PORT_WORDS`] u64 words, a bit per port ([`svc_port_bit`](crate::fw::svc_port_bit)):
/// set for every port `SERVICES` holds, so a packet to another port skips that hash. Written
/// with `SERVICES` by relay-user, and rebuilt from it at every load.
pub const SVC_PORTS: &str = "SVC_PORTS";
/// Array holding the single [`GuardConfig`], at index 0.
pub const GUARD_CONFIG: &str = "GUARD_CONFIG";
/// LRU hash of the SIP guard's per-source state ([`Addr`] → [`GuardState`]), kernel-owned.
pub const GUARD_STATE: &str = "GUARD_STATE";
/// Hash of per-source calls in progress and session caps ([`Addr`] → [`SessionCount`]),
/// maintained by `sipd`.
pub const SESSIONS: &str = "SESSIONS";
/// Ring buffer of [`GuardEvent`]s the SIP guard emits for the IDS.
pub const GUARD_EVENTS: &str = "GUARD_EVENTS";
/// Array of media relay legs ([`Leg`]) indexed by relay port; a slot without
/// [`LEG_PRESENT`](crate::relay::LEG_PRESENT) holds none. Named `LEGS` since it became an
/// array: the hash of older builds is [`RETIRED_RELAY_LEGS`].
pub const RELAY_LEGS: &str = "LEGS";
/// Per-CPU array of what arrived on each leg ([`LegCounters`]), indexed by relay port like
/// `LEGS`. Named `LEG_STATS` since it became an array (a per-CPU hash lookup was a fifth of a
/// relayed packet's map work): the hash of older builds is [`RETIRED_LEG_COUNTERS`], and the
/// 32-byte `RELAY_COUNTERS` before it [`RETIRED_RELAY_COUNTERS`].
pub const RELAY_COUNTERS: &str = "LEG_STATS";
/// Array of the relay's cached routes, indexed by relay port ([`Route`], `route.rs`),
/// kernel-owned.
pub const ROUTES: &str = "ROUTES";
/// Per-CPU LRU hash of what the kernel dropped for each ban ([`BanHitKey`] → [`BanHits`]).
pub const BAN_HITS: &str = "BAN_HITS";
/// Devmap hash of the interfaces (by ifindex) the relay may redirect packets to; a packet
/// whose route leaves by another interface goes to the userspace relay.
pub const TX_PORTS: &str = "TX_PORTS";
/// Per-CPU array of verdict counters, indexed by [`Stat`](crate::stats::Stat).
pub const STATS: &str = "STATS";
/// LRU hash of first-fragment verdicts ([`FragKey`] → [`FragVerdict`]).
pub const FRAG_VERDICTS: &str = "FRAG_VERDICTS";

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "sbc_xdp";

/// Per family: `BANS_V4` and `BANS_V6` each hold this many banned prefixes. When one is full,
/// `sipd` replaces the ban expiring soonest (counted, and an alert raised); its own table of
/// bans is bounded by the same number.
pub const BANS_MAX: u32 = 65_536;
/// Bans whose kernel drops `BAN_HITS` counts, both families together. An LRU: past this many
/// bans hit, the one hit longest ago starts counting afresh (its hits then read low; the
/// `drop_banned` total still has them). Small because each entry is per CPU.
pub const BAN_HITS_MAX: u32 = 16_384;
/// Per family: `DENY_V4` and `DENY_V6` each.
pub const DENY_MAX: u32 = 16_384;
/// Services (port and protocol pairs) in `SERVICES`.
pub const SERVICES_MAX: u32 = 256;
/// Per family: `SVC_ALLOW_V4` and `SVC_ALLOW_V6` each, all services together.
pub const SVC_ALLOW_MAX: u32 = 16_384;
/// `GUARD_CONFIG` is an array with a single entry.
pub const GUARD_CONFIG_LEN: u32 = 1;
/// Sources whose guard state `GUARD_STATE` keeps; an LRU, so a flood of many sources evicts
/// the least recently seen (whose limits then start afresh).
pub const GUARD_STATE_MAX: u32 = 65_536;
/// Sources with a session count or cap in `SESSIONS`.
pub const SESSIONS_MAX: u32 = 65_536;
/// One slot per port: the whole 16-bit port space. `RELAY_COUNTERS` has as many entries.
pub const RELAY_LEGS_MAX: u32 = 65_536;
/// `ROUTES` has an entry for every port.
pub const ROUTES_MAX: u32 = 65_536;
/// Interfaces in `TX_PORTS`.
pub const TX_PORTS_MAX: u32 = 64;
/// Fragmented datagrams whose first fragment's verdict is remembered (for
/// `frag::FRAG_VERDICT_TTL_NS`). An LRU: a flood of first fragments evicts the oldest
/// verdicts, whose later fragments are then dropped (counted) and retransmitted by SIP, rather
/// than failing inserts for everyone.
pub const FRAG_VERDICTS_MAX: u32 = 32_768;
/// Guard events the ring buffer holds at least while userspace is not reading.
pub const GUARD_EVENTS_MIN: u32 = 4096;

/// The kernel's header in front of each ring-buffer record (`BPF_RINGBUF_HDR_SZ`).
pub const RINGBUF_HEADER_BYTES: u32 = 8;
/// Ring-buffer bytes one [`GuardEvent`] takes: header and record, rounded up to 8 as the
/// kernel does.
pub const GUARD_EVENT_RECORD_BYTES: u32 =
    (RINGBUF_HEADER_BYTES + size_of::<GuardEvent>() as u32).next_multiple_of(8);
/// Ring buffer bytes: room for [`GUARD_EVENTS_MIN`] records, rounded up to the power of two
/// the kernel requires (and at least a 4 KiB page, which a power of two is a multiple of).
pub const GUARD_EVENTS_BYTES: u32 = {
    let bytes = GUARD_EVENTS_MIN * GUARD_EVENT_RECORD_BYTES;
    if bytes < 4096 {
        4096
    } else {
        bytes.next_power_of_two()
    }
};
/// Guard events the ring buffer holds when nobody reads it; the next one is lost (and counted).
pub const GUARD_EVENTS_CAPACITY: u32 = GUARD_EVENTS_BYTES / GUARD_EVENT_RECORD_BYTES;
const _: () = {
    assert!(GUARD_EVENTS_BYTES.is_power_of_two() && GUARD_EVENTS_BYTES >= 4096);
    assert!(GUARD_EVENTS_CAPACITY >= GUARD_EVENTS_MIN);
    // No larger than needed: half of it would not hold the minimum.
    assert!(GUARD_EVENTS_BYTES / 2 < GUARD_EVENTS_MIN * GUARD_EVENT_RECORD_BYTES);
};

/// What the kernel reports for one map (`bpftool map show`): the loader refuses a pinned map
/// whose key or value size differs from this build's. A size of 0 is not checked (the ring
/// buffer has none; a devmap's value size depends on kernel features).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    /// The map's name, as pinned and as in the object file.
    pub name: &'static str,
    /// Key size in bytes (for an LPM trie: the 4-byte prefix length and the data); 0: not checked.
    pub key_size: u32,
    /// Value size in bytes; 0: not checked.
    pub value_size: u32,
    /// Entries, or bytes for the ring buffer.
    pub max_entries: u32,
}

const fn layout<K, V>(name: &'static str, max_entries: u32) -> MapLayout {
    MapLayout {
        name,
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
    }
}

/// An LPM trie key as aya lays it out: the prefix length ahead of the data, packed.
#[repr(C, packed)]
struct LpmKey<T> {
    _prefix_len: u32,
    _data: T,
}

/// Every map of the XDP program, in the order the loader pins them.
pub const LAYOUT: &[MapLayout] = &[
    layout::<LpmKey<BanV4>, BanEntry>(BANS_V4, BANS_MAX),
    layout::<LpmKey<BanV6>, BanEntry>(BANS_V6, BANS_MAX),
    layout::<LpmKey<DenyV4>, u32>(DENY_V4, DENY_MAX),
    layout::<LpmKey<DenyV6>, u32>(DENY_V6, DENY_MAX),
    layout::<ServiceKey, ServiceEntry>(SERVICES, SERVICES_MAX),
    layout::<u32, u64>(SVC_PORTS, SVC_PORT_WORDS),
    layout::<LpmKey<SvcAllowV4>, u32>(SVC_ALLOW_V4, SVC_ALLOW_MAX),
    layout::<LpmKey<SvcAllowV6>, u32>(SVC_ALLOW_V6, SVC_ALLOW_MAX),
    layout::<u32, GuardConfig>(GUARD_CONFIG, GUARD_CONFIG_LEN),
    layout::<Addr, GuardState>(GUARD_STATE, GUARD_STATE_MAX),
    layout::<Addr, SessionCount>(SESSIONS, SESSIONS_MAX),
    layout::<(), ()>(GUARD_EVENTS, GUARD_EVENTS_BYTES),
    layout::<u32, Leg>(RELAY_LEGS, RELAY_LEGS_MAX),
    layout::<u32, LegCounters>(RELAY_COUNTERS, RELAY_LEGS_MAX),
    layout::<u32, Route>(ROUTES, ROUTES_MAX),
    layout::<u32, ()>(TX_PORTS, TX_PORTS_MAX),
    layout::<u32, u64>(STATS, STATS_LEN),
    layout::<FragKey, FragVerdict>(FRAG_VERDICTS, FRAG_VERDICTS_MAX),
    layout::<BanHitKey, BanHits>(BAN_HITS, BAN_HITS_MAX),
];

/// Maps older builds pinned that this build no longer has, with the layout they had: the
/// loader moves what it can read of them into their successors and removes the pin, so an
/// upgrade neither fails on them nor leaves them behind.
pub const RETIRED: &[MapLayout] = &[
    // Until bans became prefixes: a hash of source address → ban, now `BANS_V4`/`BANS_V6`.
    layout::<Addr, BanEntry>(RETIRED_BANS, BANS_MAX),
    // Until the counters grew RTP loss state: four u64 (packets, bytes, last seen, strict
    // drops), now the head of `LegCounters` in `LEG_COUNTERS`.
    layout::<LegKey, [u64; 4]>(RETIRED_RELAY_COUNTERS, RELAY_LEGS_MAX),
    // Until the legs became an array indexed by port (a hash lookup per leg cost a relayed
    // packet two hashes): the same legs, keyed by `LegKey`, now in `LEGS`.
    layout::<LegKey, Leg>(RETIRED_RELAY_LEGS, RELAY_LEGS_MAX),
    // Until the leg counters became an array indexed by port: the same per-CPU counters,
    // keyed by `LegKey`, now in `LEG_STATS`.
    layout::<LegKey, LegCounters>(RETIRED_LEG_COUNTERS, RELAY_LEGS_MAX),
];
/// The hash of single-address bans that `BANS_V4` and `BANS_V6` replaced.
pub const RETIRED_BANS: &str = "BANS";
/// The per-CPU leg counters without RTP loss state that `LEG_COUNTERS` replaced.
pub const RETIRED_RELAY_COUNTERS: &str = "RELAY_COUNTERS";
/// The hash of legs that the array `LEGS` replaced.
pub const RETIRED_RELAY_LEGS: &str = "RELAY_LEGS";
/// The per-CPU hash of leg counters that the per-CPU array `LEG_STATS` replaced.
pub const RETIRED_LEG_COUNTERS: &str = "LEG_COUNTERS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_each_map_once_with_its_capacity() {
        for (i, l) in LAYOUT.iter().enumerate() {
            assert!(l.max_entries > 0, "{}", l.name);
            assert!(!LAYOUT[..i].iter().any(|m| m.name == l.name), "{}", l.name);
        }
        let names = [
            BANS_V4,
            BANS_V6,
            DENY_V4,
            DENY_V6,
            SERVICES,
            SVC_PORTS,
            SVC_ALLOW_V4,
            SVC_ALLOW_V6,
            GUARD_CONFIG,
            GUARD_STATE,
            SESSIONS,
            GUARD_EVENTS,
            RELAY_LEGS,
            RELAY_COUNTERS,
            ROUTES,
            TX_PORTS,
            STATS,
            FRAG_VERDICTS,
            BAN_HITS,
        ];
        assert_eq!(LAYOUT.len(), names.len());
        assert!(names.iter().all(|n| LAYOUT.iter().any(|l| l.name == *n)));
    }

    #[test]
    fn lpm_keys_are_the_prefix_length_then_the_data() {
        let deny_v4 = LAYOUT.iter().find(|l| l.name == DENY_V4).unwrap();
        assert_eq!(deny_v4.key_size as usize, 4 + size_of::<DenyV4>());
        let allow_v6 = LAYOUT.iter().find(|l| l.name == SVC_ALLOW_V6).unwrap();
        assert_eq!(allow_v6.key_size as usize, 4 + size_of::<SvcAllowV6>());
        let bans_v4 = LAYOUT.iter().find(|l| l.name == BANS_V4).unwrap();
        assert_eq!((bans_v4.key_size, bans_v4.value_size), (8, 16));
        let bans_v6 = LAYOUT.iter().find(|l| l.name == BANS_V6).unwrap();
        assert_eq!((bans_v6.key_size, bans_v6.value_size), (20, 16));
        assert_eq!(bans_v4.max_entries, BANS_MAX);
    }

    #[test]
    fn retired_maps_are_not_in_the_layout() {
        for r in RETIRED {
            assert!(!LAYOUT.iter().any(|l| l.name == r.name), "{}", r.name);
        }
        // The old ban hash: a 16-byte address key, the same 16-byte value as the tries.
        let old = RETIRED.iter().find(|l| l.name == RETIRED_BANS).unwrap();
        assert_eq!((old.key_size, old.value_size), (16, 16));
    }

    #[test]
    fn fragment_verdicts_are_keyed_by_datagram() {
        let frag = LAYOUT.iter().find(|l| l.name == FRAG_VERDICTS).unwrap();
        // Two addresses, the identification, the protocol and padding; a timestamp and verdict.
        assert_eq!((frag.key_size, frag.value_size), (40, 16));
    }
}
