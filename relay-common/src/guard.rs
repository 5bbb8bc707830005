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
    /// New TCP connections (SYN without ACK) to a SIP port, per source: a SYN flood from one
    /// source is shed before it costs the stack a half-open connection or a SYN cookie.
    pub syns: Gcra,
    /// Default concurrent-session cap per source for INVITEs; 0 = no cap. A source's own entry
    /// in `SESSIONS` (limit != 0) overrides it.
    pub max_sessions: u32,
    /// At most one ring-buffer event per source per this many ns (0 = every drop).
    pub event_interval_ns: u32,
}
crate::map_type!(GuardConfig, 56);

/// Value of the LRU hash `GUARD_STATE` (key: source [`Addr`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardState {
    /// GCRA state of [`GuardConfig::packets`]: theoretical arrival time, CLOCK_MONOTONIC ns.
    pub packets_tat_ns: u64,
    /// GCRA state of [`GuardConfig::invites`], as `packets_tat_ns`.
    pub invites_tat_ns: u64,
    /// GCRA state of [`GuardConfig::syns`], as `packets_tat_ns`.
    pub syns_tat_ns: u64,
    /// CLOCK_MONOTONIC ns of the last event emitted for this source, for
    /// [`GuardConfig::event_interval_ns`]; 0 before the first.
    pub last_event_ns: u64,
    /// Drops since the last event was emitted (reported in the next event).
    pub suppressed: u64,
}
crate::map_type!(GuardState, 40);

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
/// rate, session cap, TCP connection rate): the operator's own upstreams and IP-authenticated carriers, whose
/// trunks legitimately send far more than any per-source flood limit. Bans, the deny list and
/// service ACLs still apply.
pub const TRUSTED: u32 = u32::MAX;

/// Line ends a SIP datagram may carry before its request line (RFC 3261 §7.5 lets parsers
/// skip them). The kernel's INVITE detector looks past this many and sipd's parser refuses a
/// datagram with more, so a CR/LF prefix can never carry an INVITE past the calls-per-second
/// limit and the session cap.
pub const MAX_LEADING_CRLF: usize = 32;

const INVITE: &[u8; 7] = b"INVITE ";

/// Bytes of a datagram the INVITE detector reads: the longest CR/LF prefix, then "INVITE ".
pub const INVITE_WINDOW: usize = MAX_LEADING_CRLF + INVITE.len();

/// Whether a SIP datagram's payload (at least its first [`INVITE_WINDOW`] bytes) is an INVITE,
/// for the calls-per-second limit and the session cap. Leading CR/LF is skipped as SIP parsers
/// skip it (RFC 3261 §7.5). A datagram shorter than the window is no real INVITE; only its
/// very start is judged. The kernel and the userspace fallback both decide with this.
#[inline(always)]
pub fn is_invite(payload: &[u8]) -> bool {
    if payload.len() < INVITE_WINDOW {
        return starts_invite(payload, 0);
    }
    let mut skip = 0;
    while skip <= MAX_LEADING_CRLF {
        if starts_invite(payload, skip) {
            return true;
        }
        match payload.get(skip) {
            Some(b'\r' | b'\n') => skip += 1,
            _ => return false,
        }
    }
    false
}

/// Byte by byte: a slice `==` lowers to `bcmp`, which BPF cannot call.
#[inline(always)]
fn starts_invite(payload: &[u8], at: usize) -> bool {
    let mut i = 0;
    while i < INVITE.len() {
        if payload.get(at + i) != Some(&INVITE[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// Which SIP guard limit dropped the packet a [`GuardEvent`] reports, stored as u32 in
/// [`GuardEvent::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardEventKind {
    /// Packets to a SIP port over the per-source rate ([`GuardConfig::packets`]).
    PacketRate = 1,
    /// INVITEs over the per-source calls-per-second limit ([`GuardConfig::invites`]).
    InviteRate = 2,
    /// An INVITE from a source at its concurrent-session cap (`SESSIONS`).
    SessionCap = 3,
    /// New TCP connections to a SIP port over the per-source rate.
    SynRate = 4,
}

impl GuardEventKind {
    /// The kind stored as `v`, or `None` for a value this build does not know.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::PacketRate,
            2 => Self::InviteRate,
            3 => Self::SessionCap,
            4 => Self::SynRate,
            _ => return None,
        })
    }
}

/// Ring-buffer record (`GUARD_EVENTS`), sampled per source, for the IDS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardEvent {
    /// The dropped packet's source.
    pub source: Addr,
    /// CLOCK_MONOTONIC ns of the drop.
    pub ts_ns: u64,
    /// [`GuardEventKind`] as u32.
    pub kind: u32,
    /// Destination port (host order).
    pub port: u16,
    /// Explicit padding; zero.
    pub _pad: u16,
    /// Drops of this source that were not reported individually since the previous event.
    pub suppressed: u64,
}
crate::map_type!(GuardEvent, 40);

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(prefix: &str, body: &str) -> [u8; 64] {
        let mut b = [b'x'; 64];
        let text = [prefix.as_bytes(), body.as_bytes()].concat();
        b[..text.len()].copy_from_slice(&text);
        b
    }

    #[test]
    fn invites_are_found_behind_a_bounded_crlf_prefix() {
        assert!(is_invite(&padded("", "INVITE sip:a SIP/2.0")));
        assert!(is_invite(&padded("\r\n\r\n", "INVITE sip:a SIP/2.0")));
        let most = "\n".repeat(MAX_LEADING_CRLF);
        assert!(is_invite(&padded(&most, "INVITE ")));
        assert!(!is_invite(&padded(" ", "INVITE sip:a SIP/2.0")));
        assert!(!is_invite(&padded("", "INVITEX sip:a")));
        assert!(!is_invite(&padded("", "BYE sip:a SIP/2.0")));
        // Short datagrams: only their start counts.
        assert!(is_invite(b"INVITE "));
        assert!(!is_invite(b"\r\nINVITE "));
        assert!(!is_invite(b"INVIT"));
    }
}
