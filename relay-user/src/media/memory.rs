//! A backend that forwards nothing, for tests of the media API and the ng protocol alone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::backend::{
    AdoptStream, BackendError, LegStats, MediaBackend, PeerSetup, SessionId, Side, StreamPorts,
};

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
    /// Sessions a test declared timed out: the next [`MediaBackend::reap`] removes them.
    expired: HashSet<SessionId>,
}

/// What [`MemoryBackend`] recorded for a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemSession {
    /// The label it was created with.
    pub call_id: String,
    /// Its streams, in creation order.
    pub streams: Vec<StreamPorts>,
    /// Peer setups by (stream's A port, is side B).
    pub peers: HashMap<(u16, bool), PeerSetup>,
    /// Whether it was activated.
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

    /// What was recorded for session `id`, if it exists.
    pub fn session(&self, id: SessionId) -> Option<MemSession> {
        self.lock().sessions.get(&id).cloned()
    }

    /// Sessions held.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Relay ports held by every session (RTP and RTCP, both sides of each stream).
    pub fn ports_in_use(&self) -> usize {
        let s = self.lock();
        s.sessions.values().map(|x| x.streams.len()).sum::<usize>() * super::PORTS_PER_STREAM
    }

    /// Declares `session` timed out: the next [`MediaBackend::reap`] removes it.
    pub fn expire(&self, session: SessionId) {
        self.lock().expired.insert(session);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A poisoned lock only means a test panicked elsewhere; the state is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemState {
    fn session(&mut self, id: SessionId) -> Result<&mut MemSession, BackendError> {
        self.sessions
            .get_mut(&id)
            .ok_or(BackendError::NoSession(id))
    }

    fn port(&mut self) -> Result<u16, BackendError> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        if self
            .next_port
            .checked_add(2)
            .is_none_or(|e| e > self.end_port)
        {
            return Err(BackendError::PortsExhausted);
        }
        let p = self.next_port;
        self.next_port += 2;
        Ok(p)
    }
}

impl MediaBackend for MemoryBackend {
    fn reap(&self, _timeout: Duration) -> Vec<SessionId> {
        let gone: Vec<SessionId> = self.lock().expired.drain().collect();
        gone.into_iter()
            .filter(|s| self.remove_session(*s).is_ok())
            .collect()
    }

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
            return Err(BackendError::NoSession(session));
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
        let sess = s.session(session)?;
        sess.peers.insert((stream.a, side == Side::B), *peer);
        Ok(())
    }

    fn activate(&self, session: SessionId) -> Result<(), BackendError> {
        let mut s = self.lock();
        let sess = s.session(session)?;
        sess.active = true;
        Ok(())
    }

    fn remove_session(&self, session: SessionId) -> Result<(), BackendError> {
        let mut s = self.lock();
        let sess = s
            .sessions
            .remove(&session)
            .ok_or(BackendError::NoSession(session))?;
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
        let sess = s.session(session)?;
        for st in streams {
            let p = st.ports;
            if !sess
                .streams
                .iter()
                .any(|x| (x.a, x.b) == (p.a, p.b) || (x.a, x.b) == (p.b, p.a))
            {
                return Err(BackendError::NoStream {
                    session,
                    a: p.a,
                    b: p.b,
                });
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
            .ok_or(BackendError::NoSession(session))?;
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
