//! The call table across restarts: a snapshot saved after every change, taken back over the
//! sessions the relay recovered from its pinned maps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backend::{AdoptStream, MediaBackend};
use super::calls::{Call, MediaCalls, Stream};
use super::error::MediaError;
use super::state::{CallRecord, Snapshot, StateFile, StreamRecord};

/// What [`MediaCalls::restore`] did with a saved snapshot.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    /// Call ids taken back.
    pub adopted: Vec<String>,
    /// Call ids dropped, with why (usually: the relay did not recover their session).
    pub dropped: Vec<(String, MediaError)>,
}

/// Seconds since the epoch (0 before it, saturating).
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

impl<B: MediaBackend> MediaCalls<B> {
    /// Persists the call table to `file` from now on, after every change, and once now (so
    /// the file matches the table right after a [`MediaCalls::restore`]).
    pub fn set_state_file(&mut self, file: StateFile) {
        self.state = Some(file);
        self.persist();
    }

    /// The call table as the state file stores it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(
            self.call_ids()
                .into_iter()
                .filter_map(|id| self.record(id))
                .collect(),
        )
    }

    /// One call as the state file stores it (sipd persists it with the call's dialogs).
    pub fn record(&self, id: &str) -> Option<CallRecord> {
        let c = self.calls.get(id)?;
        let name = |i: usize| {
            self.interfaces
                .get(i)
                .map_or_else(String::new, |f| f.name.clone())
        };
        Some(CallRecord {
            call_id: id.to_owned(),
            session: c.session,
            tags: c.tags.clone(),
            iface: [name(c.iface[0]), name(c.iface[1])],
            created: unix(c.created).max(0) as u64,
            last_signal: unix(c.last_signal).max(0) as u64,
            streams: c
                .streams
                .iter()
                .map(|st| StreamRecord {
                    kind: st.kind.clone(),
                    proto: st.proto.clone(),
                    ports: st.ports,
                    peer: st.peer,
                })
                .collect(),
        })
    }

    /// Takes back the calls of a snapshot saved before a restart, joined with the sessions
    /// the relay recovered: a call whose session (or one of its streams) the backend cannot
    /// adopt is dropped, since nothing relays it any more. Sessions the relay recovered that
    /// no record names stay with the relay alone and end by media timeout.
    pub fn restore(&mut self, snap: Snapshot) -> Restored {
        self.restore_with(snap, false)
    }

    /// [`restore`](Self::restore), and a call whose session the relay did not keep (the
    /// userspace relay's sockets died with its process; XDP after a reboot) gets it made again
    /// on its ports ([`MediaBackend::rebuild_session`]) rather than dropped: sipd's calls
    /// outlive the process whatever the data plane.
    pub fn restore_or_rebuild(&mut self, snap: Snapshot) -> Restored {
        self.restore_with(snap, true)
    }

    fn restore_with(&mut self, snap: Snapshot, rebuild: bool) -> Restored {
        let mut out = Restored::default();
        for rec in snap.calls {
            match self.restore_one(&rec, rebuild) {
                Ok(call) => {
                    out.adopted.push(rec.call_id.clone());
                    self.calls.insert(rec.call_id, call);
                }
                Err(why) => {
                    tracing::info!(call_id = %rec.call_id, session = rec.session, reason = %why, "saved ng call not adopted");
                    out.dropped.push((rec.call_id, why));
                }
            }
        }
        self.persist();
        out
    }

    fn restore_one(&self, rec: &CallRecord, rebuild: bool) -> Result<Call, MediaError> {
        if self.calls.contains_key(&rec.call_id) {
            return Err(MediaError::AlreadyKnown);
        }
        if self.calls.values().any(|c| c.session == rec.session) {
            return Err(MediaError::SessionTaken(rec.session));
        }
        if rec.tags[0].is_none() {
            return Err(MediaError::NoFromTag);
        }
        let mut iface = [0; 2];
        for (i, name) in rec.iface.iter().enumerate() {
            // An interface that no longer exists: the default one, as for a new offer.
            iface[i] = self
                .interfaces
                .iter()
                .position(|f| f.name == *name)
                .unwrap_or(0);
        }
        let mut adopt = Vec::new();
        for st in &rec.streams {
            if let Some(p) = st.ports {
                if p.a == p.b || p.a % 2 != 0 || p.b % 2 != 0 || p.a == 0 || p.b == 0 {
                    return Err(MediaError::BadPorts { a: p.a, b: p.b });
                }
                adopt.push(AdoptStream {
                    ports: p,
                    peer: st.peer,
                });
            }
        }
        if self.backend.has_session(rec.session) {
            self.backend
                .adopt_session(rec.session, &rec.call_id, &adopt)?;
        } else if rebuild {
            self.backend
                .rebuild_session(rec.session, &rec.call_id, &adopt)
                .map_err(|e| {
                    tracing::info!(call_id = %rec.call_id, error = %e, "relay session not rebuilt");
                    MediaError::NotRecovered
                })?;
        } else {
            return Err(MediaError::NotRecovered);
        }
        Ok(Call {
            session: rec.session,
            tags: rec.tags.clone(),
            iface,
            created: from_unix(rec.created),
            last_signal: from_unix(rec.last_signal),
            streams: rec
                .streams
                .iter()
                .map(|st| Stream {
                    kind: st.kind.clone(),
                    proto: st.proto.clone(),
                    ports: st.ports,
                    peer: st.peer,
                })
                .collect(),
        })
    }

    /// Saves the call table if a state file is set. A failure is logged, not returned: the
    /// call itself is set up in the relay, and refusing signalling because a file could not
    /// be written would cut calls to protect a restart that may never come.
    pub(super) fn persist(&mut self) {
        let Some(f) = &self.state else { return };
        match f.save(&self.snapshot()) {
            Ok(()) => {
                if self.state_failing {
                    tracing::info!(path = %f.path().display(), "ng state file written again");
                }
                self.state_failing = false;
            }
            Err(e) => {
                if !self.state_failing {
                    tracing::warn!(error = %e, "ng state not saved: calls may not survive a relayd restart");
                }
                self.state_failing = true;
            }
        }
    }
}
