//! relay-user: the data plane's userspace side. Loads and attaches the XDP program, owns every
//! BPF map behind a typed API ([`DataPlane`]), and runs the userspace relay where XDP cannot.
//!
//! - [`DataPlane`]: firewall tables, relay legs, counters; XDP maps or in-memory tables.
//! - [`loader`]: load, pin, attach (native → skb → userspace), replace on restart, detach;
//!   [`caps`] names a capability it needs and lacks;
//!   [`kernel_log`] forwards the program's rare-event log lines into `tracing`.
//! - [`UserRelay`]: batched socket relay (userspace mode, and XDP's slow path).
//! - [`Sessions`]: relay port allocation and media streams.
//! - [`media`]: media calls as a typed API (offer, answer, delete, stats, timeouts) over
//!   [`Sessions`], and [`media::MediaPlane`], which starts all of the above; the ng protocol
//!   ([`ng`]) and `sipd` are its clients.
//! - [`test_run`]: `BPF_PROG_TEST_RUN` of a loaded XDP program, for the tests and benchmarks.
#![warn(missing_docs)]

pub mod caps;
pub mod cidr;
pub mod clock;
pub mod dataplane;
pub mod error;
pub mod events;
pub mod host;
pub mod kernel_log;
pub mod loader;
pub mod maps;
pub mod media;
pub mod ng;
pub mod object;
pub mod ports;
pub mod relay;
mod retired;
pub mod sdp;
pub mod session;
mod sys;
pub mod tables;
pub mod test_run;
pub mod types;

pub use cidr::{Cidr, CidrError};
pub use dataplane::{DataPlane, Mode, PlaneCounters};
pub use error::DataPlaneError;
pub use events::GuardEvents;
pub use relay::UserRelay;
pub use types::{
    BanInfo, CUSTOM_SERVICE_BASE, DenyRule, GuardEventInfo, GuardSettings, Proto, Service,
    SourceSessions, SvcId, Verdict,
};

pub use ports::{PortAllocator, PortRange};
/// Re-exported so callers can name ban reasons, service ids and stats without a direct
/// dependency on the kernel contract crate.
pub use relay_common::{
    fw::BanReason,
    fw::ServiceId,
    guard::{GuardEventKind, TRUSTED as TRUSTED_SOURCE},
    maps::BANS_MAX,
    stats::Stat,
};
pub use session::{LegReport, RelayTotals, SessionError, SessionReport, Sessions, StreamReport};
