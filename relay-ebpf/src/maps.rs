//! The maps, with the names, capacities and key/value types `relay_common::maps` states (its
//! `LAYOUT` is computed from the same types; the loader checks pinned maps against it).
//!
//! All are pinned by name (LIBBPF_PIN_BY_NAME): the loader reuses a pinned map of the same name
//! instead of creating one, so a restarted daemon keeps live bans, guard state and relay
//! sessions, and calls keep flowing while it restarts.

use aya_ebpf::{
    bindings::bpf_devmap_val,
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf,
    },
};
use relay_common::{
    Addr,
    frag::{FragKey, FragVerdict},
    fw::{
        BanEntry, BanHitKey, BanHits, BanV4, BanV6, DenyV4, DenyV6, SVC_PORT_WORDS, ServiceEntry,
        ServiceKey, SvcAllowV4, SvcAllowV6,
    },
    guard::{GuardConfig, GuardState, SessionCount},
    maps::{
        BAN_HITS_MAX, BANS_MAX, DENY_MAX, FRAG_VERDICTS_MAX, GUARD_CONFIG_LEN, GUARD_EVENTS_BYTES,
        GUARD_STATE_MAX, RELAY_LEGS_MAX, ROUTES_MAX, SERVICES_MAX, SESSIONS_MAX, SVC_ALLOW_MAX,
        TX_PORTS_MAX,
    },
    relay::{Leg, LegCounters},
    route::Route,
    stats::{STATS_LEN, Stat},
};

// The map names below are spelled out because `#[map]` needs literals; this keeps them tied to
// the constants userspace opens them by.
const _: () = {
    const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    use relay_common::maps as m;
    assert!(same(m::BANS_V4, "BANS_V4"));
    assert!(same(m::BANS_V6, "BANS_V6"));
    assert!(same(m::DENY_V4, "DENY_V4"));
    assert!(same(m::DENY_V6, "DENY_V6"));
    assert!(same(m::SERVICES, "SERVICES"));
    assert!(same(m::SVC_PORTS, "SVC_PORTS"));
    assert!(same(m::SVC_ALLOW_V4, "SVC_ALLOW_V4"));
    assert!(same(m::SVC_ALLOW_V6, "SVC_ALLOW_V6"));
    assert!(same(m::GUARD_CONFIG, "GUARD_CONFIG"));
    assert!(same(m::GUARD_STATE, "GUARD_STATE"));
    assert!(same(m::SESSIONS, "SESSIONS"));
    assert!(same(m::GUARD_EVENTS, "GUARD_EVENTS"));
    assert!(same(m::RELAY_LEGS, "LEGS"));
    assert!(same(m::RELAY_COUNTERS, "LEG_STATS"));
    assert!(same(m::BAN_HITS, "BAN_HITS"));
    assert!(same(m::ROUTES, "ROUTES"));
    assert!(same(m::TX_PORTS, "TX_PORTS"));
    assert!(same(m::STATS, "STATS"));
    assert!(same(m::FRAG_VERDICTS, "FRAG_VERDICTS"));
    assert!(same(m::PROGRAM, "sbc_xdp"));
};

/// Banned prefixes; the value says until when and why.
#[map(name = "BANS_V4")]
pub static BANS_V4: LpmTrie<BanV4, BanEntry> = LpmTrie::pinned(BANS_MAX, 0);

#[map(name = "BANS_V6")]
pub static BANS_V6: LpmTrie<BanV6, BanEntry> = LpmTrie::pinned(BANS_MAX, 0);

/// What each ban dropped, per CPU (see `BanHitKey` on why not in `BanEntry`).
#[map(name = "BAN_HITS")]
pub static BAN_HITS: LruPerCpuHashMap<BanHitKey, BanHits> =
    LruPerCpuHashMap::pinned(BAN_HITS_MAX, 0);

/// Value: the operator's rule id.
#[map(name = "DENY_V4")]
pub static DENY_V4: LpmTrie<DenyV4, u32> = LpmTrie::pinned(DENY_MAX, 0);

#[map(name = "DENY_V6")]
pub static DENY_V6: LpmTrie<DenyV6, u32> = LpmTrie::pinned(DENY_MAX, 0);

#[map(name = "SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceEntry> = HashMap::pinned(SERVICES_MAX, 0);

/// A bit per port `SERVICES` holds (`relay_common::fw::svc_port_bit`): an inlined array
/// lookup spares every packet to another port (all the relay's) the hash's miss.
#[map(name = "SVC_PORTS")]
pub static SVC_PORTS: Array<u64> = Array::pinned(SVC_PORT_WORDS, 0);

/// Value: the operator's rule id (only presence matters here).
#[map(name = "SVC_ALLOW_V4")]
pub static SVC_ALLOW_V4: LpmTrie<SvcAllowV4, u32> = LpmTrie::pinned(SVC_ALLOW_MAX, 0);

#[map(name = "SVC_ALLOW_V6")]
pub static SVC_ALLOW_V6: LpmTrie<SvcAllowV6, u32> = LpmTrie::pinned(SVC_ALLOW_MAX, 0);

#[map(name = "GUARD_CONFIG")]
pub static GUARD_CONFIG: Array<GuardConfig> = Array::pinned(GUARD_CONFIG_LEN, 0);

/// LRU: a flood of spoofed sources evicts the coldest state instead of failing inserts.
#[map(name = "GUARD_STATE")]
pub static GUARD_STATE: LruHashMap<Addr, GuardState> = LruHashMap::pinned(GUARD_STATE_MAX, 0);

#[map(name = "SESSIONS")]
pub static SESSIONS: HashMap<Addr, SessionCount> = HashMap::pinned(SESSIONS_MAX, 0);

#[map(name = "GUARD_EVENTS")]
pub static GUARD_EVENTS: RingBuf = RingBuf::pinned(GUARD_EVENTS_BYTES, 0);

/// By relay port: an array, so a lookup is an inlined index (`relay_common::relay`).
#[map(name = "LEGS")]
pub static RELAY_LEGS: Array<Leg> = Array::pinned(RELAY_LEGS_MAX, 0);

/// By relay port, like `LEGS`: an inlined index instead of a per-CPU hash's lookup (and its
/// insert on a leg's first packet).
#[map(name = "LEG_STATS")]
pub static RELAY_COUNTERS: PerCpuArray<LegCounters> = PerCpuArray::pinned(RELAY_LEGS_MAX, 0);

/// The relay's route cache, by relay port (`route.rs`): an array, so the lookup is inlined.
#[map(name = "ROUTES")]
pub static ROUTES: Array<Route> = Array::pinned(ROUTES_MAX, 0);

/// Egress devices for redirect, keyed by ifindex (value: `bpf_devmap_val`).
#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(TX_PORTS_MAX, 0);

/// LRU: a flood of first fragments evicts the oldest verdicts instead of failing inserts.
#[map(name = "FRAG_VERDICTS")]
pub static FRAG_VERDICTS: LruHashMap<FragKey, FragVerdict> =
    LruHashMap::pinned(FRAG_VERDICTS_MAX, 0);

#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(STATS_LEN, 0);

const _: () = assert!(core::mem::size_of::<bpf_devmap_val>() == 8);

/// Bumps one verdict counter. Per-CPU, so a plain add is race-free.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the pointer is this CPU's slot of a live array element, and XDP programs do
        // not preempt each other on one CPU.
        unsafe { *p += 1 };
    }
}
