//! Media sessions as a typed API: the call table that anchors SDP offers and answers on relay
//! ports, over the session layer ([`crate::Sessions`]).
//!
//! - [`MediaCalls`]: offer, re-offer, answer, delete, statistics, timed-out calls; errors are
//!   a [`MediaError`];
//! - [`Destinations`] and [`Limits`]: where an SDP may send media (never the relay itself,
//!   multicast, broadcast, ...) and how much one call may hold;
//! - [`backend`]: the session vocabulary ([`SessionId`], [`Side`], [`StreamPorts`],
//!   [`PeerSetup`]) and the [`MediaBackend`] the table drives, implemented by
//!   [`crate::Sessions`] and, without a data plane, by [`MemoryBackend`];
//! - [`state`]: the table's state file, so calls survive a relayd restart (XDP);
//! - [`MediaPlane`]: starting the data plane, relay and sessions, shared by relayd and sipd.
//!
//! The rtpengine *ng* protocol ([`crate::ng`]) is one client of this API, `sipd` another.

pub mod backend;
mod calls;
mod error;
mod guard;
mod memory;
mod persist;
mod plane;
#[cfg(test)]
mod refusals;
mod relay_backend;
pub mod state;

pub use backend::{
    AdoptStream, BackendError, LegStats, MediaBackend, PeerSetup, SessionId, Side, StreamPorts,
};
pub use calls::{
    Anchor, Call, CallStats, Deleted, Family, Interface, MediaCalls, Signal, Stream, Traffic,
    side_index,
};
pub use error::MediaError;
pub use guard::{DEFAULT_MAX_STREAMS, Destinations, Limits, PORTS_PER_STREAM, Refusal};
pub use memory::{MemSession, MemoryBackend};
pub use persist::{Restored, unix};
pub use plane::{MediaPlane, MediaPlaneBuilder, PlaneError, Previous};
pub use state::{Snapshot, StateError, StateFile};
