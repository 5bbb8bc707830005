//! The session vocabulary and what the media call table needs from the relay: the narrow
//! interface it drives.
//!
//! [`crate::Sessions`] implements it over the data plane (see `relay_backend.rs`);
//! [`super::MemoryBackend`] implements it without one, for tests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::session::SessionError;

/// A relay session (one call) as the backend names it.
pub type SessionId = u64;

/// A backend failure. Its text is what an ng client sees as `error-reason`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend has no session with this id (never made, removed, or timed out).
    #[error("no session {0}")]
    NoSession(SessionId),
    #[error("session {session} has no stream {a}/{b}")]
    /// The session has no stream on these ports.
    NoStream {
        /// The session.
        session: SessionId,
        /// The stream's A port asked for.
        a: u16,
        /// The stream's B port asked for.
        b: u16,
    },
    /// No free relay port pair is left in the configured range.
    #[error("relay port range exhausted")]
    PortsExhausted,
    /// This backend does not survive restarts, so it cannot adopt a recovered session.
    #[error("session {0}: this backend cannot adopt sessions")]
    CannotAdopt(SessionId),
    /// The session layer's own error (ports, sockets, the data plane).
    #[error(transparent)]
    Relay(Arc<SessionError>),
}

impl From<SessionError> for BackendError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NoSession(s) => BackendError::NoSession(s),
            e => BackendError::Relay(Arc::new(e)),
        }
    }
}

/// Which end of a stream: A is the offerer, B the answerer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The offerer's side.
    A,
    /// The answerer's side.
    B,
}

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// The two relay RTP ports of a stream (even; RTCP is each + 1). The peer of side A sends to
/// `a`, the peer of side B to `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPorts {
    /// The RTP port side A's peer sends to.
    pub a: u16,
    /// The RTP port side B's peer sends to.
    pub b: u16,
}

impl StreamPorts {
    /// The RTP port `side`'s peer sends to.
    pub fn of(&self, side: Side) -> u16 {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
}

/// One side of a stream as signalled. Serialisable: the state file keeps it across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSetup {
    /// Relay address this side's peer sends to (and that the partner leg sends from).
    pub local: IpAddr,
    /// Where the peer's RTP is, from SDP; `None` when unknown (0.0.0.0 / port 0 / on hold):
    /// then only latching can learn it.
    pub rtp: Option<SocketAddr>,
    /// Where the peer's RTCP is.
    pub rtcp: Option<SocketAddr>,
    /// Learn the peer from its first packet (symmetric RTP, NAT).
    pub latch: bool,
    /// After latching, drop packets from other sources; before, drop those not trusted.
    pub strict_source: bool,
    /// The address this side's SIP came from: besides the SDP's, the one address the peer
    /// may be learnt from (an endpoint behind NAT). Absent in state files of older versions.
    #[serde(default)]
    pub trusted: Option<IpAddr>,
}

/// Traffic received on one relay port (from that side's peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegStats {
    /// Packets received and relayed.
    pub packets: u64,
    /// UDP payload bytes of those packets.
    pub bytes: u64,
    /// Packets that arrived but were not relayed because strict source refused their sender
    /// (rtpengine reports these as `errors`).
    pub strict_drops: u64,
    /// Wall-clock time of the last packet, if any arrived.
    pub last_seen: Option<SystemTime>,
    /// The peer's address as the data plane knows it now (latched or from SDP).
    pub peer: Option<SocketAddr>,
}

/// The operations the media call table performs, in the order it performs them: create a session on
/// the first offer, one stream per m= line, peers per side as offer and answer arrive,
/// activate once both sides are known, remove on delete.
pub trait MediaBackend: Send + Sync + 'static {
    /// Makes a session for a new call labelled `call_id`; no ports yet.
    fn create_session(&self, call_id: &str) -> Result<SessionId, BackendError>;
    /// Allocates two relay port pairs for a new stream of the session.
    fn create_stream(&self, session: SessionId) -> Result<StreamPorts, BackendError>;
    /// Sets (or updates, on re-INVITE) one side of a stream.
    fn set_peer(
        &self,
        session: SessionId,
        stream: StreamPorts,
        side: Side,
        peer: &PeerSetup,
    ) -> Result<(), BackendError>;
    /// Starts forwarding for every stream of the session whose two sides are set.
    fn activate(&self, session: SessionId) -> Result<(), BackendError>;
    /// Stops forwarding and frees the session's ports.
    fn remove_session(&self, session: SessionId) -> Result<(), BackendError>;
    /// What arrived on relay port `port` (RTP: the even port; RTCP: `port + 1`).
    fn leg_stats(&self, session: SessionId, port: u16) -> Result<LegStats, BackendError>;
    /// Whether the session still exists. The relay removes sessions by itself on media
    /// timeout; the call table asks this to drop its record of such calls. The default says
    /// yes (then only `delete` ends a call, or `MediaCalls::forget_session`).
    fn has_session(&self, session: SessionId) -> bool {
        let _ = session;
        true
    }
    /// Re-attaches a call the call table persisted before a restart to the session the relay
    /// recovered for it: the session takes `call_id` as its label, and each stream its ports'
    /// orientation (which side is A) and signalled setup from `streams`. Fails when the session
    /// or one of the streams was not recovered; the call table then drops its record. The
    /// default cannot adopt anything (a backend that does not survive restarts).
    fn adopt_session(
        &self,
        session: SessionId,
        call_id: &str,
        streams: &[AdoptStream],
    ) -> Result<(), BackendError> {
        let _ = (call_id, streams);
        Err(BackendError::CannotAdopt(session))
    }
    /// Makes again, with the same id and ports, a session the relay did not keep across a
    /// restart, from what signalling recorded (see `Sessions::rebuild`). The default cannot.
    fn rebuild_session(
        &self,
        session: SessionId,
        call_id: &str,
        streams: &[AdoptStream],
    ) -> Result<(), BackendError> {
        let _ = (call_id, streams);
        Err(BackendError::CannotAdopt(session))
    }
    /// Removes the sessions without media for `timeout` and returns them (the media timeout).
    /// The default never times anything out.
    fn reap(&self, timeout: Duration) -> Vec<SessionId> {
        let _ = timeout;
        Vec::new()
    }
}

/// One stream of a call being re-adopted after a restart: its relay ports (`a` is side A's)
/// and what was last signalled for each side (A, B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdoptStream {
    /// The stream's relay ports.
    pub ports: StreamPorts,
    /// Side A's and side B's setup, `None` where nothing was signalled.
    pub peer: [Option<PeerSetup>; 2],
}
