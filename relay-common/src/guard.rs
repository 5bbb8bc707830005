//! SIP guard: per-source packet rate, INVITE calls-per-second, concurrent-session cap.

use crate::{Addr, ratelimit::Gcra};

/// The single entry of the `GUARD_CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// Every packet to a SIP service, per source.
    pub packets: Gcra,
    /// INVITEs (payload starts with `INVITE `), per source.
    pub invites: Gcra,
    /// Default concurrent-session cap per source for INVITEs; 0 = no cap. A source's own entry
    /// in `SESSIONS` (limit != 0) overrides it.
    pub max_sessions: u32,
    /// At most one ring-buffer event per source per this many ns (0 = every drop).
    pub event_interval_ns: u32,
}
crate::map_type!(GuardConfig, 40);

/// Value of the LRU hash `GUARD_STATE` (key: source [`Addr`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardState {
    pub packets_tat_ns: u64,
    pub invites_tat_ns: u64,
    pub last_event_ns: u64,
    /// Drops since the last event was emitted (reported in the next event).
    pub suppressed: u64,
}
crate::map_type!(GuardState, 32);

/// Value of the `SESSIONS` hash (key: source [`Addr`]), maintained by `sipd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCount {
    /// Calls in progress from this source.
    pub active: u32,
    /// Per-source cap; 0 = use `GuardConfig::max_sessions`; [`TRUSTED`] = no SIP guard at all.
    pub limit: u32,
}
crate::map_type!(SessionCount, 8);

/// A `SessionCount::limit` that exempts the source from the SIP guard (packet rate, INVITE
/// rate, session cap): the operator's own upstreams and IP-authenticated carriers, whose
/// trunks legitimately send far more than any per-source flood limit. Bans, the deny list and
/// service ACLs still apply.
pub const TRUSTED: u32 = u32::MAX;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardEventKind {
    PacketRate = 1,
    InviteRate = 2,
    SessionCap = 3,
}

impl GuardEventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::PacketRate,
            2 => Self::InviteRate,
            3 => Self::SessionCap,
            _ => return None,
        })
    }
}

/// Ring-buffer record (`GUARD_EVENTS`), sampled per source, for the IDS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardEvent {
    pub source: Addr,
    pub ts_ns: u64,
    /// [`GuardEventKind`] as u32.
    pub kind: u32,
    /// Destination port (host order).
    pub port: u16,
    pub _pad: u16,
    /// Drops of this source that were not reported individually since the previous event.
    pub suppressed: u64,
}
crate::map_type!(GuardEvent, 40);
