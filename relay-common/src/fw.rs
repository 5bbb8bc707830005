//! Firewall maps: bans, static deny, per-service ACL.

use crate::Addr;

/// Value of the `BANS_V4` and `BANS_V6` LPM tries (key: a banned prefix, [`BanV4`]/[`BanV6`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEntry {
    /// CLOCK_MONOTONIC ns (the clock of `bpf_ktime_get_ns`) after which the ban is void;
    /// [`BanEntry::PERMANENT`] never expires.
    pub expires_ns: u64,
    /// Why it was banned ([`BanReason`] as u32), for listings.
    pub reason: u32,
    /// The length of the prefix this entry bans (the trie's lookup does not say which prefix
    /// matched): when it has expired, the program looks again one bit shorter, so an expired
    /// host ban never hides a live range ban around it. 0 in entries of the old hash.
    pub prefix_len: u32,
}
crate::map_type!(BanEntry, 16);

impl BanEntry {
    /// An `expires_ns` of 0: the ban holds until it is removed.
    pub const PERMANENT: u64 = 0;

    /// Whether the ban still drops at CLOCK_MONOTONIC `now_ns`; an expired entry lingers in the
    /// trie until `sipd`'s purge removes it and must be looked through (see [`BAN_LOOKUPS`]).
    #[inline(always)]
    pub const fn is_active(&self, now_ns: u64) -> bool {
        self.expires_ns == Self::PERMANENT || now_ns < self.expires_ns
    }
}

/// Key of the per-CPU LRU hash `BAN_HITS`: one ban, named as its trie key names it (prefix
/// length and address, the address masked to the length), both families in one map.
///
/// Hits live in a map of their own rather than in [`BanEntry`]: a per-CPU count costs a drop no
/// atomic operation and no cache line shared with other CPUs (a banned flood arrives on every
/// receive queue), userspace rewriting a ban (a longer one for a repeat offender) swaps the
/// trie's node and would lose counts kept in it, and the pinned tries keep their layout across
/// an upgrade.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanHitKey {
    /// The prefix's address as [`Addr`] (IPv4 mapped), masked to the prefix, in two words of
    /// its bytes in memory order (only equality matters; the kernel reads addresses as such
    /// words).
    pub words: [u64; 2],
    /// The ban's prefix length in its family's terms (32 for an IPv4 host), as in the trie key.
    pub prefix_len: u32,
    /// Explicit padding; always zero, or equal keys would hash apart.
    pub _pad: u32,
}
crate::map_type!(BanHitKey, 24);

impl BanHitKey {
    /// The key of the ban of `prefix_len` bits holding `words` (an [`Addr`]'s bytes as two
    /// native-endian words): for an IPv4 address (`v4`) the length counts from the mapped
    /// address's 97th bit.
    #[inline(always)]
    pub const fn new(words: [u64; 2], prefix_len: u32, v4: bool) -> Self {
        let bits = if v4 { 96 + prefix_len } else { prefix_len };
        let hi = u64::from_be(words[0]) & mask(bits);
        let lo = u64::from_be(words[1]) & mask(bits.saturating_sub(64));
        BanHitKey {
            words: [hi.to_be(), lo.to_be()],
            prefix_len,
            _pad: 0,
        }
    }

    /// The key of the ban of `prefix_len` bits holding `addr`.
    pub fn of(addr: &Addr, prefix_len: u32) -> Self {
        let b = addr.bytes;
        let w = |i: usize| {
            u64::from_ne_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        Self::new([w(0), w(8)], prefix_len, addr.is_v4())
    }
}

/// The top `bits` bits of a word set (all of them from 64 on).
#[inline(always)]
const fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else if bits == 0 {
        0
    } else {
        u64::MAX << (64 - bits)
    }
}

/// Value of `BAN_HITS`, per CPU: the packets the kernel dropped for one ban. Userspace sums
/// over CPUs and takes the latest `last_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanHits {
    /// Packets dropped.
    pub hits: u64,
    /// CLOCK_MONOTONIC ns of the last one.
    pub last_ns: u64,
}
crate::map_type!(BanHits, 16);

/// How many nested bans the program looks through past expired ones before it lets a packet
/// pass (an expired ban lingers only until the next purge, a second or so).
pub const BAN_LOOKUPS: u32 = 4;

/// Why a source was banned, stored as u32 in [`BanEntry::reason`]; the values are part of the
/// pinned maps' format and never change.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    /// Added by the operator (management API or CLI).
    Manual = 0,
    /// The kernel's SIP guard kept rate-limiting the source (packets, INVITEs or TCP SYNs).
    Flood = 1,
    /// The source's User-Agent is a known scanner's.
    Scanner = 2,
    /// Failed digest authentications, again and again.
    BruteForce = 3,
    /// Requests matching no rule or user (extension enumeration), again and again.
    Enumeration = 4,
}

impl BanReason {
    /// The reason stored as `v`, or `None` for a value this build does not know.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Manual,
            1 => Self::Flood,
            2 => Self::Scanner,
            3 => Self::BruteForce,
            4 => Self::Enumeration,
            _ => return None,
        })
    }
}

/// LPM key data of the ban tries: the prefix's address (`BANS_V4`: 4 bytes, `BANS_V6`: 16).
/// A prefix length of 32 (or 128) bans one host; shorter ones ban a range. The longest banned
/// prefix containing the source decides, so a live host ban inside an expired range ban still
/// drops.
pub type BanV4 = [u8; 4];
/// LPM key data of `BANS_V6`: the banned IPv6 prefix's 16 bytes (see [`BanV4`]).
pub type BanV6 = [u8; 16];

/// Default prefix an offender is banned as: its IPv4 host, its IPv6 /64 (one subscriber's LAN:
/// an IPv6 host picks any address of it at will).
pub const BAN_V4_PREFIX: u8 = 32;
/// Default prefix length an IPv6 offender is banned as: its /64 (see [`BAN_V4_PREFIX`]).
pub const BAN_V6_PREFIX: u8 = 64;

/// LPM key data for the static deny tries: the address alone (`DENY_V4`: 4 bytes, `DENY_V6`: 16).
/// Value: a rule id (u32) the operator can trace back.
pub type DenyV4 = [u8; 4];
/// LPM key data of `DENY_V6`: the denied IPv6 prefix's 16 bytes (see [`DenyV4`]).
pub type DenyV6 = [u8; 16];

/// Transport protocol numbers as used in [`ServiceKey::proto`].
pub const PROTO_TCP: u8 = 6;
/// UDP's IP protocol number (see [`PROTO_TCP`]).
pub const PROTO_UDP: u8 = 17;

/// Key of the `SERVICES` hash: destination port (host order) and L4 protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Destination port, host order.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// Explicit padding; always zero, or equal keys would hash apart.
    pub _pad: u8,
}
crate::map_type!(ServiceKey, 4);

impl ServiceKey {
    /// The key of `port` (host order) over `proto` ([`PROTO_TCP`] or [`PROTO_UDP`]), padding zeroed.
    pub const fn new(port: u16, proto: u8) -> Self {
        ServiceKey {
            port,
            proto,
            _pad: 0,
        }
    }
}

/// Service is restricted: only sources in its allow list (`SVC_ALLOW_V4/V6`) may reach it.
pub const SVC_RESTRICTED: u32 = 1 << 0;
/// Service carries SIP: the SIP guard runs on it.
pub const SVC_SIP: u32 = 1 << 1;

/// Words in the `SVC_PORTS` bitmap: one bit for each of the 65,536 ports, 64 to a word.
pub const SVC_PORT_WORDS: u32 = 65_536 / 64;

/// Where port `port`'s bit lies in the `SVC_PORTS` bitmap: the word's index and the bit's mask.
/// A set bit says `SERVICES` may hold the port (for either protocol); a clear one that it holds
/// neither, so the program skips the hash, which the relay's packets and any other traffic to
/// no service would otherwise all miss.
#[inline(always)]
pub const fn svc_port_bit(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}

/// Value of the `SERVICES` hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Operator-visible service id ([`ServiceId`] as u32); also the prefix of allow-list keys.
    pub service: u32,
    /// `SVC_*` bits.
    pub flags: u32,
}
crate::map_type!(ServiceEntry, 8);

/// The operator-visible services the firewall's ACL knows, stored as u32 in
/// [`ServiceEntry::service`] and in the allow-list keys; the values are part of the pinned maps'
/// format and never change.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceId {
    /// SIP over UDP or TCP; the SIP guard runs on its ports.
    Sip = 1,
    /// SIP over TLS.
    SipTls = 2,
    /// The management API; `sipd` always keeps it restricted to its allow list.
    Management = 3,
    /// SSH to the appliance.
    Ssh = 4,
    /// Media (RTP/RTCP) ports.
    Rtp = 5,
    /// Any other port the operator puts in the ACL.
    Other = 6,
}

impl ServiceId {
    /// Every service, in value order (for listings and name look-ups).
    pub const ALL: [ServiceId; 6] = [
        Self::Sip,
        Self::SipTls,
        Self::Management,
        Self::Ssh,
        Self::Rtp,
        Self::Other,
    ];
    /// The service stored as `v`, or `None` for a value this build does not know.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Sip,
            2 => Self::SipTls,
            3 => Self::Management,
            4 => Self::Ssh,
            5 => Self::Rtp,
            6 => Self::Other,
            _ => return None,
        })
    }
    /// Stable lower-case name used by the API, the CLI and the store (`sip-tls`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sip => "sip",
            Self::SipTls => "sip-tls",
            Self::Management => "management",
            Self::Ssh => "ssh",
            Self::Rtp => "rtp",
            Self::Other => "other",
        }
    }
}

/// LPM data of the per-service allow lists: service id (big-endian, so it forms the first 32
/// bits of the prefix) followed by the address. Key prefix length = 32 + CIDR length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcAllowV4 {
    /// [`ServiceId`] as u32, big-endian.
    pub service_be: [u8; 4],
    /// The allowed IPv4 prefix's address.
    pub addr: [u8; 4],
}
crate::map_type!(SvcAllowV4, 8);

/// LPM data of the IPv6 per-service allow list, laid out as [`SvcAllowV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcAllowV6 {
    /// [`ServiceId`] as u32, big-endian.
    pub service_be: [u8; 4],
    /// The allowed IPv6 prefix's address.
    pub addr: [u8; 16],
}
crate::map_type!(SvcAllowV6, 20);

impl SvcAllowV4 {
    /// The key data for `service` ([`ServiceId`] as u32, host order) and an IPv4 address; the
    /// key's prefix length comes from [`svc_allow_prefix`].
    pub const fn new(service: u32, addr: [u8; 4]) -> Self {
        SvcAllowV4 {
            service_be: service.to_be_bytes(),
            addr,
        }
    }
}
impl SvcAllowV6 {
    /// The key data for `service` ([`ServiceId`] as u32, host order) and an IPv6 address; the
    /// key's prefix length comes from [`svc_allow_prefix`].
    pub const fn new(service: u32, addr: [u8; 16]) -> Self {
        SvcAllowV6 {
            service_be: service.to_be_bytes(),
            addr,
        }
    }
}

/// Prefix length of an allow-list key for a CIDR of `cidr_len` bits.
pub const fn svc_allow_prefix(cidr_len: u32) -> u32 {
    32 + cidr_len
}

/// Helper for the session-cap map key: sources are keyed by [`Addr`] everywhere.
pub type SourceKey = Addr;

#[cfg(test)]
mod tests {
    use super::*;

    /// Userspace names a ban by its prefix, the kernel by a source inside it: same key.
    #[test]
    fn a_source_and_its_ban_share_the_hit_key() {
        let host = Addr::from_v4([192, 0, 2, 7]);
        let net = Addr::from_v4([192, 0, 2, 0]);
        assert_eq!(BanHitKey::of(&host, 24), BanHitKey::of(&net, 24));
        assert_ne!(BanHitKey::of(&host, 32), BanHitKey::of(&net, 32));
        assert_eq!(BanHitKey::of(&host, 32).prefix_len, 32);
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2]);
        let mut v6_net = v6;
        v6[15] = 9;
        assert_eq!(
            BanHitKey::of(&Addr::from_v6(v6), 64),
            BanHitKey::of(&Addr::from_v6(v6_net), 64)
        );
        v6_net[7] = 3;
        assert_ne!(
            BanHitKey::of(&Addr::from_v6(v6), 64),
            BanHitKey::of(&Addr::from_v6(v6_net), 64)
        );
        assert_eq!(
            BanHitKey::of(&Addr::from_v6(v6), 0),
            BanHitKey::of(&Addr::from_v6(v6_net), 0)
        );
        assert_eq!(
            BanHitKey::of(&Addr::from_v6(v6), 128).words[1].to_ne_bytes()[7],
            9
        );
        // An IPv4 /0 is not an IPv6 /0: the mapped prefix stays.
        assert_ne!(
            BanHitKey::of(&host, 0),
            BanHitKey::of(&Addr::from_v6(v6), 0)
        );
    }
}
