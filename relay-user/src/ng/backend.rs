//! What the ng layer needs from the relay: the narrow interface it drives.
//!
//! The session layer in `relay-user` implements this through an adapter; [`MemoryBackend`]
//! implements it without a data plane, for tests of the control protocol alone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A relay session (one call) as the backend names it.
pub type SessionId = u64;

/// A backend failure, carried to the ng client as `error-reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Which end of a stream: A is the offerer, B the answerer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
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
    pub a: u16,
    pub b: u16,
}

impl StreamPorts {
    pub fn of(&self, side: Side) -> u16 {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
}

/// One side of a stream as signalled. Serialisable: the ng state file keeps it across restarts.
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
    /// After latching, drop packets from other sources.
    pub strict_source: bool,
}

/// Traffic received on one relay port (from that side's peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets that arrived but were not relayed because strict source refused their sender
    /// (rtpengine reports these as `errors`).
    pub strict_drops: u64,
    /// Wall-clock time of the last packet, if any arrived.
    pub last_seen: Option<SystemTime>,
    /// The peer's address as the data plane knows it now (latched or from SDP).
    pub peer: Option<SocketAddr>,
}

/// The operations the ng layer performs, in the order it performs them: create a session on
/// the first offer, one stream per m= line, peers per side as offer and answer arrive,
/// activate once both sides are known, remove on delete.
pub trait MediaBackend: Send + Sync + 'static {
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
    /// timeout; the ng layer asks this to drop its record of such calls. The default says
    /// yes (then only `delete` ends a call in the ng layer, or `Engine::forget_session`).
    fn has_session(&self, session: SessionId) -> bool {
        let _ = session;
        true
    }
    /// Re-attaches a call the ng layer persisted before a restart to the session the relay
    /// recovered for it: the session takes `call_id` as its label, and each stream its ports'
    /// orientation (which side is A) and signalled setup from `streams`. Fails when the session
    /// or one of the streams was not recovered; the ng layer then drops its record. The
    /// default cannot adopt anything (a backend that does not survive restarts).
    fn adopt_session(
        &self,
        session: SessionId,
        call_id: &str,
        streams: &[AdoptStream],
    ) -> Result<(), BackendError> {
        let _ = (call_id, streams);
        Err(BackendError(format!(
            "session {session}: this backend cannot adopt sessions"
        )))
    }
}

/// One stream of a call being re-adopted after a restart: its relay ports (`a` is side A's)
/// and what was last signalled for each side (A, B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdoptStream {
    pub ports: StreamPorts,
    pub peer: [Option<PeerSetup>; 2],
}

/// A backend that forwards nothing: allocates ports from a range and remembers the
/// configuration, so tests can see what the ng layer asked for.
#[derive(Debug)]
pub struct MemoryBackend {
    inner: Mutex<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    next_session: SessionId,
    next_port: u16,
    end_port: u16,
    free: Vec<u16>,
    sessions: HashMap<SessionId, MemSession>,
}

/// What [`MemoryBackend`] recorded for a session.
#[derive(Debug, Clone, Default)]
pub struct MemSession {
    pub call_id: String,
    pub streams: Vec<StreamPorts>,
    pub peers: HashMap<(u16, bool), PeerSetup>,
    pub active: bool,
}

impl MemoryBackend {
    /// Allocates even ports in `[start, end)`.
    pub fn new(start: u16, end: u16) -> MemoryBackend {
        MemoryBackend {
            inner: Mutex::new(MemState {
                next_session: 1,
                next_port: start + start % 2,
                end_port: end,
                ..Default::default()
            }),
        }
    }

    pub fn session(&self, id: SessionId) -> Option<MemSession> {
        self.lock().sessions.get(&id).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A poisoned lock only means a test panicked elsewhere; the state is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemState {
    fn port(&mut self) -> Result<u16, BackendError> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        if self
            .next_port
            .checked_add(2)
            .is_none_or(|e| e > self.end_port)
        {
            return Err(BackendError("relay port range exhausted".into()));
        }
        let p = self.next_port;
        self.next_port += 2;
        Ok(p)
    }
}

impl MediaBackend for MemoryBackend {
    fn has_session(&self, session: SessionId) -> bool {
        self.lock().sessions.contains_key(&session)
    }

    fn create_session(&self, call_id: &str) -> Result<SessionId, BackendError> {
        let mut s = self.lock();
        let id = s.next_session;
        s.next_session += 1;
        s.sessions.insert(
            id,
            MemSession {
                call_id: call_id.into(),
                ..Default::default()
            },
        );
        Ok(id)
    }

    fn create_stream(&self, session: SessionId) -> Result<StreamPorts, BackendError> {
        let mut s = self.lock();
        if !s.sessions.contains_key(&session) {
            return Err(BackendError(format!("no session {session}")));
        }
        let a = s.port()?;
        let b = match s.port() {
            Ok(b) => b,
            Err(e) => {
                s.free.push(a);
                return Err(e);
            }
        };
        let ports = StreamPorts { a, b };
        s.sessions
            .get_mut(&session)
            .expect("checked above")
            .streams
            .push(ports);
        Ok(ports)
    }

    fn set_peer(
        &self,
        session: SessionId,
        stream: StreamPorts,
        side: Side,
        peer: &PeerSetup,
    ) -> Result<(), BackendError> {
        let mut s = self.lock();
        let sess = s
            .sessions
            .get_mut(&session)
            .ok_or_else(|| BackendError(format!("no session {session}")))?;
        sess.peers.insert((stream.a, side == Side::B), *peer);
        Ok(())
    }

    fn activate(&self, session: SessionId) -> Result<(), BackendError> {
        let mut s = self.lock();
        let sess = s
            .sessions
            .get_mut(&session)
            .ok_or_else(|| BackendError(format!("no session {session}")))?;
        sess.active = true;
        Ok(())
    }

    fn remove_session(&self, session: SessionId) -> Result<(), BackendError> {
        let mut s = self.lock();
        let sess = s
            .sessions
            .remove(&session)
            .ok_or_else(|| BackendError(format!("no session {session}")))?;
        for p in sess.streams {
            s.free.extend([p.a, p.b]);
        }
        Ok(())
    }

    fn adopt_session(
        &self,
        session: SessionId,
        call_id: &str,
        streams: &[AdoptStream],
    ) -> Result<(), BackendError> {
        let mut s = self.lock();
        let sess = s
            .sessions
            .get_mut(&session)
            .ok_or_else(|| BackendError(format!("no session {session}")))?;
        for st in streams {
            let p = st.ports;
            if !sess
                .streams
                .iter()
                .any(|x| (x.a, x.b) == (p.a, p.b) || (x.a, x.b) == (p.b, p.a))
            {
                return Err(BackendError(format!(
                    "session {session} has no stream {}/{}",
                    p.a, p.b
                )));
            }
        }
        sess.call_id = call_id.into();
        for x in &mut sess.streams {
            if streams
                .iter()
                .any(|st| (st.ports.a, st.ports.b) == (x.b, x.a))
            {
                *x = StreamPorts { a: x.b, b: x.a };
            }
        }
        for st in streams {
            for (i, p) in st.peer.iter().enumerate() {
                if let Some(p) = p {
                    sess.peers.insert((st.ports.a, i == 1), *p);
                }
            }
        }
        Ok(())
    }

    fn leg_stats(&self, session: SessionId, port: u16) -> Result<LegStats, BackendError> {
        let s = self.lock();
        let sess = s
            .sessions
            .get(&session)
            .ok_or_else(|| BackendError(format!("no session {session}")))?;
        let even = port & !1;
        let peer = sess.streams.iter().find_map(|st| {
            let side_b = if st.a == even {
                false
            } else if st.b == even {
                true
            } else {
                return None;
            };
            let p = sess.peers.get(&(st.a, side_b))?;
            if port.is_multiple_of(2) {
                p.rtp
            } else {
                p.rtcp
            }
        });
        Ok(LegStats {
            peer,
            ..Default::default()
        })
    }
}
