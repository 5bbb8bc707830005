//! The relay's sessions ([`Sessions`]: XDP legs or userspace sockets) as the call table's
//! backend.

use std::time::{Duration, SystemTime};

use super::backend::{
    AdoptStream, BackendError, LegStats, MediaBackend, PeerSetup, SessionId, Side, StreamPorts,
};
use crate::clock::monotonic_ns;
use crate::session::Sessions;

/// Monotonic ns → wall clock, for reports to the ng client.
fn wall(mono_ns: u64) -> Option<SystemTime> {
    if mono_ns == 0 {
        return None;
    }
    let ago = monotonic_ns().saturating_sub(mono_ns);
    SystemTime::now().checked_sub(Duration::from_nanos(ago))
}

impl MediaBackend for Sessions {
    fn create_session(&self, call_id: &str) -> Result<SessionId, BackendError> {
        Ok(Sessions::create_session(self, call_id))
    }

    fn create_stream(&self, session: SessionId) -> Result<StreamPorts, BackendError> {
        Ok(self.create_stream_on(session, None, None)?)
    }

    fn set_peer(
        &self,
        session: SessionId,
        stream: StreamPorts,
        side: Side,
        peer: &PeerSetup,
    ) -> Result<(), BackendError> {
        Ok(Sessions::set_peer(self, session, stream, side, peer)?)
    }

    fn activate(&self, session: SessionId) -> Result<(), BackendError> {
        Ok(Sessions::activate(self, session)?)
    }

    fn remove_session(&self, session: SessionId) -> Result<(), BackendError> {
        Sessions::remove_session(self, session)?;
        Ok(())
    }

    // The reaper removes sessions on media timeout; this is how the call table learns of it.
    fn has_session(&self, session: SessionId) -> bool {
        self.contains(session)
    }

    fn adopt_session(
        &self,
        session: SessionId,
        call_id: &str,
        streams: &[AdoptStream],
    ) -> Result<(), BackendError> {
        Ok(self.adopt(session, call_id, streams)?)
    }

    fn rebuild_session(
        &self,
        session: SessionId,
        call_id: &str,
        streams: &[AdoptStream],
    ) -> Result<(), BackendError> {
        Ok(self.rebuild(session, call_id, streams)?)
    }

    fn leg_stats(&self, session: SessionId, port: u16) -> Result<LegStats, BackendError> {
        let r = self.port_report(session, port)?;
        Ok(LegStats {
            packets: r.packets,
            bytes: r.bytes,
            strict_drops: r.strict_drops,
            last_seen: wall(r.last_seen_ns),
            peer: r.peer,
        })
    }

    fn reap(&self, timeout: Duration) -> Vec<SessionId> {
        Sessions::reap(self, timeout)
            .into_iter()
            .map(|r| r.session)
            .collect()
    }
}
