//! Operator-facing types of the data-plane API: std types in, std types out. The raw map
//! layouts stay in `relay-common` and in `maps.rs`.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use relay_common::{
    fw::{BanReason, PROTO_TCP, PROTO_UDP, ServiceId},
    guard::{GuardConfig, GuardEventKind},
    ratelimit::Gcra,
    stats::Stat,
};
use serde::Serialize;

use crate::error::DataPlaneError;

/// L4 protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Proto {
    /// The IP protocol number (17, 6).
    pub const fn number(self) -> u8 {
        match self {
            Proto::Udp => PROTO_UDP,
            Proto::Tcp => PROTO_TCP,
        }
    }

    /// The protocol of IP protocol number `n`; `None` for anything but UDP and TCP.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_UDP => Some(Proto::Udp),
            PROTO_TCP => Some(Proto::Tcp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        })
    }
}

impl FromStr for Proto {
    type Err = DataPlaneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Proto::Udp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(DataPlaneError::Invalid(format!("unknown protocol {s:?}"))),
        }
    }
}

/// The id a service's allow list is keyed by in the kernel: a predefined [`ServiceId`] or an
/// operator-defined service's (from [`CUSTOM_SERVICE_BASE`] up). The XDP program treats both
/// alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcId(pub u32);

/// The first id of operator-defined services, clear of [`ServiceId`]'s.
pub const CUSTOM_SERVICE_BASE: u32 = 64;

impl From<ServiceId> for SvcId {
    fn from(s: ServiceId) -> Self {
        SvcId(s as u32)
    }
}

/// Parses a service name as shown by [`ServiceId::name`].
pub fn parse_service_id(s: &str) -> Result<ServiceId, DataPlaneError> {
    ServiceId::ALL
        .into_iter()
        .find(|id| id.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| DataPlaneError::Invalid(format!("unknown service {s:?}")))
}

/// Parses a ban reason (`manual`, `flood`, `scanner`, `brute-force`, `enumeration`).
pub fn parse_ban_reason(s: &str) -> Result<BanReason, DataPlaneError> {
    Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "manual" => BanReason::Manual,
        "flood" => BanReason::Flood,
        "scanner" => BanReason::Scanner,
        "brute-force" | "bruteforce" => BanReason::BruteForce,
        "enumeration" => BanReason::Enumeration,
        _ => return Err(DataPlaneError::Invalid(format!("unknown ban reason {s:?}"))),
    })
}

/// The name listings and the API use (`brute-force`, ...); [`parse_ban_reason`] reads it back.
pub const fn ban_reason_name(r: BanReason) -> &'static str {
    match r {
        BanReason::Manual => "manual",
        BanReason::Flood => "flood",
        BanReason::Scanner => "scanner",
        BanReason::BruteForce => "brute-force",
        BanReason::Enumeration => "enumeration",
    }
}

/// One ban as listed to an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BanInfo {
    /// What is banned: one host (/32, /128) or a range.
    pub prefix: crate::Cidr,
    /// The raw reason code; [`BanInfo::reason`] decodes it.
    pub reason_code: u32,
    /// `None`: permanent.
    pub remaining: Option<Duration>,
    /// Expired but not yet purged (the data plane ignores it).
    pub expired: bool,
    /// Packets the XDP program dropped for this ban (0 in userspace mode, where sipd counts
    /// its own drops).
    pub hits: u64,
    /// CLOCK_MONOTONIC ns of the last of them; 0: none.
    pub last_hit_ns: u64,
}

impl BanInfo {
    /// The decoded reason; `None` for a code this build does not know.
    pub fn reason(&self) -> Option<BanReason> {
        BanReason::from_u32(self.reason_code)
    }
}

/// One deny rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DenyRule {
    /// The denied prefix.
    pub cidr: crate::Cidr,
    /// Operator's rule id, so a drop can be traced back to the rule.
    pub rule_id: u32,
}

/// A service on a destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Destination port.
    pub port: u16,
    /// Transport protocol.
    pub proto: Proto,
    /// Which operator-visible service it is (its allow list is this service's).
    #[serde(serialize_with = "ser_service_id")]
    pub id: ServiceId,
    /// Only sources in the service's allow list may reach it.
    pub restricted: bool,
    /// The SIP guard runs on it.
    pub sip: bool,
}

fn ser_service_id<S: serde::Serializer>(id: &ServiceId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.name())
}

/// SIP guard limits in operator units. A rate of 0 disables that limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GuardSettings {
    /// SIP packets per second per source.
    pub packet_rate: u32,
    /// Packets a source may send at once above `packet_rate`.
    pub packet_burst: u32,
    /// INVITEs per second per source (calls per second).
    pub invite_rate: u32,
    /// INVITEs a source may send at once above `invite_rate`.
    pub invite_burst: u32,
    /// Concurrent sessions per source unless the source has its own limit; 0 = no cap.
    pub max_sessions: u32,
    /// New TCP connections (SYN) to a SIP port per second per source; enforced by the
    /// kernel only (the userspace fallback leaves SYN floods to the stack's SYN cookies).
    pub syn_rate: u32,
    /// SYNs a source may send at once above `syn_rate`.
    pub syn_burst: u32,
    /// At most one guard event per source per interval; zero reports every drop.
    pub event_interval: Duration,
}

impl Default for GuardSettings {
    /// Everything off: the guard does nothing until an operator configures it.
    fn default() -> Self {
        GuardSettings {
            packet_rate: 0,
            packet_burst: 0,
            invite_rate: 0,
            invite_burst: 0,
            max_sessions: 0,
            syn_rate: 0,
            syn_burst: 0,
            event_interval: Duration::from_secs(1),
        }
    }
}

impl GuardSettings {
    /// The kernel's `GUARD_CONFIG` entry; fails when `event_interval` is over `u32::MAX` ns
    /// (about 4.3 s).
    pub fn to_config(&self) -> Result<GuardConfig, DataPlaneError> {
        let event_interval_ns = u32::try_from(self.event_interval.as_nanos()).map_err(|_| {
            DataPlaneError::Invalid(format!(
                "event interval {:?} too long (max {:?})",
                self.event_interval,
                Duration::from_nanos(u32::MAX as u64)
            ))
        })?;
        Ok(GuardConfig {
            packets: Gcra::per_second(self.packet_rate, self.packet_burst),
            invites: Gcra::per_second(self.invite_rate, self.invite_burst),
            syns: Gcra::per_second(self.syn_rate, self.syn_burst),
            max_sessions: self.max_sessions,
            event_interval_ns,
        })
    }

    /// Back to operator units (rates rounded to whole packets per second).
    pub fn from_config(c: &GuardConfig) -> Self {
        let (packet_rate, packet_burst) = gcra_units(&c.packets);
        let (invite_rate, invite_burst) = gcra_units(&c.invites);
        let (syn_rate, syn_burst) = gcra_units(&c.syns);
        GuardSettings {
            packet_rate,
            packet_burst,
            invite_rate,
            invite_burst,
            max_sessions: c.max_sessions,
            syn_rate,
            syn_burst,
            event_interval: Duration::from_nanos(c.event_interval_ns as u64),
        }
    }
}

/// Inverse of [`Gcra::per_second`] (rounded: 1e9 / rate is not always exact).
fn gcra_units(g: &Gcra) -> (u32, u32) {
    if !g.is_enabled() {
        return (0, 0);
    }
    let rate = (1_000_000_000u64 + g.interval_ns / 2) / g.interval_ns;
    let burst = g.tolerance_ns / g.interval_ns + 1;
    (
        u32::try_from(rate).unwrap_or(u32::MAX),
        u32::try_from(burst).unwrap_or(u32::MAX),
    )
}

/// Per-source concurrent-session entry (`SESSIONS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceSessions {
    /// Calls in progress from the source, as `sipd` counts them.
    pub active: u32,
    /// 0 = the guard's default cap.
    pub limit: u32,
}

/// What the firewall decided, and the counter that recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let through, counted under this stat.
    Pass(Stat),
    /// Dropped, counted under this stat.
    Drop(Stat),
}

impl Verdict {
    /// Whether the packet passes.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass(_))
    }
    /// The counter that recorded the verdict.
    pub fn stat(&self) -> Stat {
        match *self {
            Verdict::Pass(s) | Verdict::Drop(s) => s,
        }
    }
}

/// A decoded guard event (from the kernel ring buffer or the userspace guard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardEventInfo {
    /// The dropped packet's source.
    pub source: IpAddr,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
    /// Which limit dropped it; `None` for a kind this build does not know.
    #[serde(serialize_with = "ser_kind")]
    pub kind: Option<GuardEventKind>,
    /// Destination port.
    pub port: u16,
    /// Drops of this source not reported since the previous event.
    pub suppressed: u64,
}

fn ser_kind<S: serde::Serializer>(k: &Option<GuardEventKind>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match k {
        Some(GuardEventKind::PacketRate) => "packet_rate",
        Some(GuardEventKind::InviteRate) => "invite_rate",
        Some(GuardEventKind::SessionCap) => "session_cap",
        Some(GuardEventKind::SynRate) => "syn_rate",
        None => "unknown",
    })
}

impl From<relay_common::guard::GuardEvent> for GuardEventInfo {
    fn from(e: relay_common::guard::GuardEvent) -> Self {
        GuardEventInfo {
            source: e.source.into(),
            ts_ns: e.ts_ns,
            kind: GuardEventKind::from_u32(e.kind),
            port: e.port,
            suppressed: e.suppressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_settings_round_trip() {
        let s = GuardSettings {
            packet_rate: 50,
            packet_burst: 100,
            invite_rate: 3,
            invite_burst: 5,
            max_sessions: 10,
            syn_rate: 7,
            syn_burst: 14,
            event_interval: Duration::from_millis(500),
        };
        assert_eq!(GuardSettings::from_config(&s.to_config().unwrap()), s);
        assert_eq!(
            GuardSettings::from_config(&GuardSettings::default().to_config().unwrap()),
            GuardSettings::default()
        );
        let too_long = GuardSettings {
            event_interval: Duration::from_secs(10),
            ..s
        };
        assert!(too_long.to_config().is_err());
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_service_id("SIP-TLS").unwrap(), ServiceId::SipTls);
        assert!(parse_service_id("nope").is_err());
        assert_eq!(
            parse_ban_reason("brute_force").unwrap(),
            BanReason::BruteForce
        );
        assert_eq!("TCP".parse::<Proto>().unwrap(), Proto::Tcp);
    }
}
