//! Map names (as pinned under `/sys/fs/bpf/<instance>/`) and capacities. The XDP program
//! declares its maps with exactly these names and sizes; `relay-user` opens them by name.

pub const BANS: &str = "BANS";
pub const DENY_V4: &str = "DENY_V4";
pub const DENY_V6: &str = "DENY_V6";
pub const SERVICES: &str = "SERVICES";
pub const SVC_ALLOW_V4: &str = "SVC_ALLOW_V4";
pub const SVC_ALLOW_V6: &str = "SVC_ALLOW_V6";
pub const GUARD_CONFIG: &str = "GUARD_CONFIG";
pub const GUARD_STATE: &str = "GUARD_STATE";
pub const SESSIONS: &str = "SESSIONS";
pub const GUARD_EVENTS: &str = "GUARD_EVENTS";
pub const RELAY_LEGS: &str = "RELAY_LEGS";
pub const RELAY_COUNTERS: &str = "RELAY_COUNTERS";
pub const TX_PORTS: &str = "TX_PORTS";
pub const STATS: &str = "STATS";

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "sbc_xdp";

pub const BANS_MAX: u32 = 65_536;
pub const DENY_MAX: u32 = 16_384;
pub const SERVICES_MAX: u32 = 256;
pub const SVC_ALLOW_MAX: u32 = 16_384;
pub const GUARD_STATE_MAX: u32 = 65_536;
pub const SESSIONS_MAX: u32 = 65_536;
/// Ring buffer bytes (power of two, multiple of the page size).
pub const GUARD_EVENTS_BYTES: u32 = 256 * 1024;
/// One entry per relay port: the whole 16-bit port space fits.
pub const RELAY_LEGS_MAX: u32 = 65_536;
pub const TX_PORTS_MAX: u32 = 64;
