//! The session layer: relay ports, media streams and their legs, media timeouts. The media
//! call table ([`crate::media::MediaCalls`]) drives it through [`crate::media::MediaBackend`].
//!
//! A stream has two sides (A offerer, B answerer); each side owns an RTP/RTCP port pair, and
//! each port is one leg in the data plane whose partner is the same-kind port of the other side.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, Weak},
    thread,
    time::Duration,
};

use relay_common::{
    Addr,
    relay::{
        LEARN_WINDOW_NS, LEG_ACTIVE, LEG_LATCH, LEG_LATCHED, LEG_PEER_KNOWN, LEG_STRICT_SOURCE,
        LEG_TRUST_KNOWN, Leg, LegCounters,
    },
};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    DataPlane, DataPlaneError, UserRelay,
    clock::{duration_ns, monotonic_ns},
    media::{AdoptStream, PeerSetup, SessionId, Side, StreamPorts},
    ports::{PortAllocator, PortRange},
};

/// Why a relay session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No session with this id (never made, removed, or timed out).
    #[error("no session {0}")]
    NoSession(SessionId),
    #[error("session {session} has no stream on ports {a}/{b}")]
    /// The session has no stream on these ports.
    NoStream {
        /// The session.
        session: SessionId,
        /// Side A's RTP port asked for.
        a: u16,
        /// Side B's RTP port asked for.
        b: u16,
    },
    #[error("session {session} has no relay port {port}")]
    /// The session has no leg on this port.
    NoPort {
        /// The session.
        session: SessionId,
        /// The relay port asked for.
        port: u16,
    },
    /// A session with this id exists already (a rebuild of one the relay kept).
    #[error("session {0} exists already")]
    SessionExists(SessionId),
    /// No free RTP/RTCP pair left in the range.
    #[error("relay port range {0} exhausted")]
    PortsExhausted(PortRange),
    /// The process (EMFILE) or the system (ENFILE) has no descriptor left for a relay socket:
    /// the open-file limit is the cause, not the port range.
    #[error("out of file descriptors for relay port {port} on {addr} (open-file limit): {source}")]
    Descriptors {
        /// The relay address.
        addr: IpAddr,
        /// The port being opened.
        port: u16,
        /// EMFILE or ENFILE.
        #[source]
        source: std::io::Error,
    },
    /// A relay socket could not be bound (another process holds the port, or the address is
    /// not local).
    #[error("cannot bind relay port {port} on {addr}: {source}")]
    Bind {
        /// The relay address.
        addr: IpAddr,
        /// The port.
        port: u16,
        /// What bind said.
        #[source]
        source: std::io::Error,
    },
    /// Writing the session's legs into the data plane failed.
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

type R<T> = Result<T, SessionError>;

/// What was seen on one relay port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LegReport {
    /// The relay port.
    pub port: u16,
    /// Packets received and relayed.
    pub packets: u64,
    /// UDP payload bytes of those packets.
    pub bytes: u64,
    /// Packets strict source refused.
    pub strict_drops: u64,
    /// CLOCK_MONOTONIC ns of the last packet; 0 = none yet.
    pub last_seen_ns: u64,
    /// RTP packets expected (RFC 3550: highest sequence number - first + 1); 0 on RTCP legs
    /// and before the first RTP packet.
    pub rtp_expected: u64,
    /// RTP packets lost: expected - received, never below 0.
    pub rtp_lost: u64,
    /// The peer as the data plane knows it now (signalled or latched).
    pub peer: Option<SocketAddr>,
}

/// One stream's four legs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// RTP port of side A (RTCP is + 1).
    pub a: u16,
    /// RTP port of side B (RTCP is + 1).
    pub b: u16,
    /// A-RTP, A-RTCP, B-RTP, B-RTCP.
    pub legs: Vec<LegReport>,
}

/// A session's counters, for `query`, CDRs, and timeout reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    /// The session.
    pub session: SessionId,
    /// Its operator label (the Call-ID).
    pub label: String,
    /// Its streams, in creation order.
    pub streams: Vec<StreamReport>,
    /// Latest of: last packet on any leg, creation, last signalling change (monotonic ns).
    pub last_activity_ns: u64,
}

impl SessionReport {
    /// Packets relayed on all its legs.
    pub fn packets(&self) -> u64 {
        self.streams
            .iter()
            .flat_map(|s| &s.legs)
            .map(|l| l.packets)
            .sum()
    }

    /// UDP payload bytes relayed on all its legs.
    pub fn bytes(&self) -> u64 {
        self.streams
            .iter()
            .flat_map(|s| &s.legs)
            .map(|l| l.bytes)
            .sum()
    }

    /// RTP packets lost on all its legs.
    pub fn rtp_lost(&self) -> u64 {
        self.streams
            .iter()
            .flat_map(|s| &s.legs)
            .map(|l| l.rtp_lost)
            .sum()
    }
}

/// Media relayed since start, sessions ended or not: counters that only grow (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayTotals {
    /// Packets relayed.
    pub packets: u64,
    /// UDP payload bytes relayed.
    pub bytes: u64,
    /// Sessions open now.
    pub sessions: u64,
    /// RTP packets lost (RFC 3550, per leg, summed), sessions ended or not.
    pub rtp_lost: u64,
}

#[derive(Clone, Copy, Debug)]
struct SideState {
    /// RTP port; RTCP is + 1.
    port: u16,
    /// Address the side's sockets are bound to and its legs' `local_addr`.
    local: IpAddr,
    setup: Option<PeerSetup>,
}

#[derive(Debug)]
struct Stream {
    a: SideState,
    b: SideState,
    active: bool,
}

impl Stream {
    fn ports(&self) -> StreamPorts {
        StreamPorts {
            a: self.a.port,
            b: self.b.port,
        }
    }
    fn side(&mut self, s: Side) -> (&mut SideState, &SideState) {
        match s {
            Side::A => (&mut self.a, &self.b),
            Side::B => (&mut self.b, &self.a),
        }
    }
}

#[derive(Debug)]
struct Session {
    label: String,
    streams: Vec<Stream>,
    touched_ns: u64,
}

struct State {
    alloc: PortAllocator,
    next_id: SessionId,
    sessions: BTreeMap<SessionId, Session>,
    /// What removed sessions relayed, so totals do not shrink when a call ends.
    retired: RelayTotals,
}

/// Relay sessions over a [`DataPlane`] and a [`UserRelay`].
pub struct Sessions {
    dp: Arc<DataPlane>,
    relay: Arc<UserRelay>,
    default_addr: IpAddr,
    /// How long after signalling a leg may learn its peer (ns).
    learn_window_ns: u64,
    state: Mutex<State>,
}

fn peer(l: &Leg) -> Option<SocketAddr> {
    (l.has(LEG_PEER_KNOWN) && l.peer_port != 0)
        .then(|| SocketAddr::new(IpAddr::from(l.peer_addr), l.peer_port))
}

fn leg_report(port: u16, leg: Option<&Leg>, c: &LegCounters) -> LegReport {
    LegReport {
        port,
        packets: c.packets,
        bytes: c.bytes,
        strict_drops: c.strict_drops,
        last_seen_ns: c.last_seen_ns,
        rtp_expected: c.rtp_expected(),
        rtp_lost: c.rtp_lost(),
        peer: leg.and_then(peer),
    }
}

impl Sessions {
    /// `default_addr` is where new streams' sockets bind until signalling says otherwise.
    pub fn new(
        dp: Arc<DataPlane>,
        relay: Arc<UserRelay>,
        ports: PortRange,
        default_addr: IpAddr,
    ) -> Self {
        Sessions {
            dp,
            relay,
            default_addr,
            learn_window_ns: LEARN_WINDOW_NS,
            state: Mutex::new(State {
                alloc: PortAllocator::new(ports),
                next_id: 1,
                sessions: BTreeMap::new(),
                retired: RelayTotals::default(),
            }),
        }
    }

    /// How long after each offer, answer or re-INVITE a leg may learn its peer from a trusted
    /// address ([`LEARN_WINDOW_NS`] unless set).
    pub fn with_learn_window(mut self, window: Duration) -> Self {
        self.learn_window_ns = duration_ns(window);
        self
    }

    /// End of a learning window opened now.
    fn learn_until(&self) -> u64 {
        monotonic_ns().saturating_add(self.learn_window_ns)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data plane the legs are written to.
    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dp
    }

    /// A new, empty session. `label` is for operators (e.g. the SIP Call-ID).
    pub fn create_session(&self, label: &str) -> SessionId {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.sessions.insert(
            id,
            Session {
                label: label.to_owned(),
                streams: Vec::new(),
                touched_ns: monotonic_ns(),
            },
        );
        debug!(session = id, label, "session created");
        id
    }

    fn open_pair(&self, addr: IpAddr, port: u16) -> std::io::Result<()> {
        self.relay.open_port(addr, port)?;
        if let Err(e) = self.relay.open_port(addr, port + 1) {
            self.relay.close_port(port);
            return Err(e);
        }
        Ok(())
    }

    fn close_pair(&self, port: u16) {
        self.relay.close_port(port);
        self.relay.close_port(port + 1);
    }

    fn alloc_pair(&self, st: &mut State, addr: IpAddr) -> R<u16> {
        let range = st.alloc.range();
        // Out of descriptors, every other port would fail the same way: stop at the first and
        // say so, rather than try the whole range and blame it.
        let mut no_fds: Option<(u16, std::io::Error)> = None;
        let got = st.alloc.allocate(|p| {
            if no_fds.is_some() {
                return false;
            }
            match self.open_pair(addr, p) {
                Ok(()) => true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    no_fds = Some((p, e));
                    false
                }
                Err(e) => {
                    debug!(port = p, error = %e, "relay port busy, skipped");
                    false
                }
            }
        });
        match (got, no_fds) {
            (Some(p), _) => Ok(p),
            (None, Some((port, source))) => Err(SessionError::Descriptors { addr, port, source }),
            (None, None) => Err(SessionError::PortsExhausted(range)),
        }
    }

    /// Allocates the two port pairs of a new stream, binds their sockets and writes the four
    /// legs (not yet forwarding: peers unknown). `a_addr`/`b_addr` default to the relay address.
    pub fn create_stream_on(
        &self,
        session: SessionId,
        a_addr: Option<IpAddr>,
        b_addr: Option<IpAddr>,
    ) -> R<StreamPorts> {
        let a_addr = a_addr.unwrap_or(self.default_addr);
        let b_addr = b_addr.unwrap_or(self.default_addr);
        let mut st = self.lock();
        if !st.sessions.contains_key(&session) {
            return Err(SessionError::NoSession(session));
        }
        let a = self.alloc_pair(&mut st, a_addr)?;
        let b = match self.alloc_pair(&mut st, b_addr) {
            Ok(b) => b,
            Err(e) => {
                self.close_pair(a);
                st.alloc.release(a);
                return Err(e);
            }
        };
        let stream = Stream {
            a: SideState {
                port: a,
                local: a_addr,
                setup: None,
            },
            b: SideState {
                port: b,
                local: b_addr,
                setup: None,
            },
            active: false,
        };
        let r = self
            .write_side(session, &stream.a, &stream.b, false, None)
            .and_then(|()| self.write_side(session, &stream.b, &stream.a, false, None));
        if let Err(e) = r {
            for p in [a, b] {
                self.drop_pair(p);
                st.alloc.release(p);
            }
            return Err(e);
        }
        let s = st
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::NoSession(session))?;
        s.streams.push(stream);
        s.touched_ns = monotonic_ns();
        debug!(session, a, b, "stream created");
        Ok(StreamPorts { a, b })
    }

    /// Writes both legs (RTP, RTCP) of `me`. `old_setup` is what was signalled before: a
    /// latch survives only if the signalled peer did not change.
    fn write_side(
        &self,
        session: SessionId,
        me: &SideState,
        other: &SideState,
        active: bool,
        old_setup: Option<PeerSetup>,
    ) -> R<()> {
        for rtcp in [false, true] {
            let port = me.port + rtcp as u16;
            let mut leg = Leg {
                local_addr: me.local.into(),
                session_id: session,
                local_port: port,
                partner_port: other.port + rtcp as u16,
                ..Leg::default()
            };
            if active {
                leg.flags |= LEG_ACTIVE;
            }
            if let Some(s) = &me.setup {
                if s.latch {
                    leg.flags |= LEG_LATCH;
                    // Signalling (re)opens the window in which the peer may be learnt.
                    leg.learn_until_ns = self.learn_until();
                }
                if let Some(t) = s.trusted {
                    leg.trust_addr = Addr::from(t);
                    leg.flags |= LEG_TRUST_KNOWN;
                }
                if s.strict_source {
                    leg.flags |= LEG_STRICT_SOURCE;
                }
                let p = if rtcp {
                    s.rtcp.or_else(|| {
                        s.rtp
                            .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
                    })
                } else {
                    s.rtp
                };
                if let Some(p) = p {
                    leg.peer_addr = p.ip().into();
                    leg.peer_port = p.port();
                    leg.flags |= LEG_PEER_KNOWN;
                }
                let same_signalling = old_setup.is_some_and(|o| o.rtp == s.rtp && o.rtcp == s.rtcp);
                if s.latch
                    && same_signalling
                    && let Some(old) = self.dp.leg_get(port)?
                    && old.session_id == session
                    && old.has(LEG_LATCHED)
                {
                    leg.peer_addr = old.peer_addr;
                    leg.peer_port = old.peer_port;
                    leg.flags |= LEG_LATCHED | LEG_PEER_KNOWN;
                }
            }
            self.dp.leg_put(&leg)?;
        }
        Ok(())
    }

    /// Sets or updates (re-INVITE) one side of a stream from signalling.
    pub fn set_peer(
        &self,
        session: SessionId,
        ports: StreamPorts,
        side: Side,
        setup: &PeerSetup,
    ) -> R<()> {
        let mut st = self.lock();
        let sess = st
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::NoSession(session))?;
        let stream =
            sess.streams
                .iter_mut()
                .find(|s| s.ports() == ports)
                .ok_or(SessionError::NoStream {
                    session,
                    a: ports.a,
                    b: ports.b,
                })?;
        let active = stream.active;
        let (me, other) = stream.side(side);
        if me.local != setup.local {
            // Another relay interface: the sockets must move so replies leave from it.
            self.close_pair(me.port);
            if let Err(source) = self.open_pair(setup.local, me.port) {
                if let Err(e) = self.open_pair(me.local, me.port) {
                    warn!(port = me.port, error = %e, "could not restore relay sockets");
                }
                return Err(SessionError::Bind {
                    addr: setup.local,
                    port: me.port,
                    source,
                });
            }
            me.local = setup.local;
        }
        let old = me.setup.replace(*setup);
        let (me, other) = (*me, *other);
        self.write_side(session, &me, &other, active, old)?;
        sess.touched_ns = monotonic_ns();
        Ok(())
    }

    /// Marks every stream whose two sides are signalled as active (the kernel fast path takes
    /// over from userspace for it).
    pub fn activate(&self, session: SessionId) -> R<()> {
        let mut st = self.lock();
        let sess = st
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::NoSession(session))?;
        for stream in &mut sess.streams {
            if stream.a.setup.is_none() || stream.b.setup.is_none() {
                continue;
            }
            stream.active = true;
            for port in [
                stream.a.port,
                stream.a.port + 1,
                stream.b.port,
                stream.b.port + 1,
            ] {
                if let Some(mut leg) = self.dp.leg_get(port)? {
                    leg.flags |= LEG_ACTIVE;
                    // The answer opens a window for both sides: many phones only start their
                    // media once the call is answered, long after their offer.
                    if leg.has(LEG_LATCH) && !leg.has(LEG_LATCHED) {
                        leg.learn_until_ns = self.learn_until();
                    }
                    self.dp.leg_put(&leg)?;
                }
            }
        }
        sess.touched_ns = monotonic_ns();
        Ok(())
    }

    fn drop_pair(&self, port: u16) {
        self.close_pair(port);
        for p in [port, port + 1] {
            if let Err(e) = self.dp.leg_remove(p) {
                warn!(port = p, error = %e, "could not remove relay leg");
            }
        }
    }

    fn report_locked(&self, id: SessionId, sess: &Session) -> R<SessionReport> {
        let mut streams = Vec::with_capacity(sess.streams.len());
        let mut last = sess.touched_ns;
        for s in &sess.streams {
            let mut legs = Vec::with_capacity(4);
            for port in [s.a.port, s.a.port + 1, s.b.port, s.b.port + 1] {
                let leg = self.dp.leg_get(port)?;
                let c = self.dp.leg_counters(port)?;
                last = last.max(c.last_seen_ns);
                legs.push(leg_report(port, leg.as_ref(), &c));
            }
            streams.push(StreamReport {
                a: s.a.port,
                b: s.b.port,
                legs,
            });
        }
        Ok(SessionReport {
            session: id,
            label: sess.label.clone(),
            streams,
            last_activity_ns: last,
        })
    }

    /// Counters of every leg of a session.
    pub fn report(&self, session: SessionId) -> R<SessionReport> {
        let st = self.lock();
        let sess = st
            .sessions
            .get(&session)
            .ok_or(SessionError::NoSession(session))?;
        self.report_locked(session, sess)
    }

    /// Removes a session: legs out of the data plane, sockets closed, ports free. Returns its
    /// final counters.
    pub fn remove_session(&self, session: SessionId) -> R<SessionReport> {
        let mut st = self.lock();
        let sess = st
            .sessions
            .get(&session)
            .ok_or(SessionError::NoSession(session))?;
        let report = self.report_locked(session, sess).unwrap_or_else(|e| {
            warn!(session, error = %e, "final counters unavailable");
            SessionReport {
                session,
                ..SessionReport::default()
            }
        });
        let sess = st
            .sessions
            .remove(&session)
            .ok_or(SessionError::NoSession(session))?;
        st.retired.packets += report.packets();
        st.retired.bytes += report.bytes();
        st.retired.rtp_lost += report.rtp_lost();
        for s in &sess.streams {
            for p in [s.a.port, s.b.port] {
                self.drop_pair(p);
                st.alloc.release(p);
            }
        }
        debug!(session, "session removed");
        Ok(report)
    }

    /// Every live session's id, in no particular order.
    pub fn list(&self) -> Vec<SessionId> {
        self.lock().sessions.keys().copied().collect()
    }

    /// Packets and bytes relayed since start (live sessions' counters plus those of removed
    /// ones), both data planes alike.
    pub fn totals(&self) -> RelayTotals {
        let st = self.lock();
        let mut t = st.retired;
        for (id, sess) in &st.sessions {
            if let Ok(r) = self.report_locked(*id, sess) {
                t.packets += r.packets();
                t.bytes += r.bytes();
                t.rtp_lost += r.rtp_lost();
            }
        }
        t.sessions = st.sessions.len() as u64;
        t
    }

    /// Whether the session is live (not removed, not timed out).
    pub fn contains(&self, session: SessionId) -> bool {
        self.lock().sessions.contains_key(&session)
    }

    /// The operator label of a session (the Call-ID; "recovered" for a session adopted from
    /// the pinned maps that no signalling record named).
    pub fn label(&self, session: SessionId) -> Option<String> {
        self.lock().sessions.get(&session).map(|s| s.label.clone())
    }

    /// Joins a session recovered from the pinned maps with what signalling had recorded for
    /// it before the restart: its real label, which port of each stream is side A (recovery
    /// cannot tell, it calls the lower port A), and each side's signalled setup (recovery only
    /// sees the legs, whose peer may be a latched address rather than the signalled one; the
    /// signalled one decides whether a re-INVITE keeps the latch). All or nothing: if a
    /// stream is missing, nothing changes.
    pub fn adopt(&self, session: SessionId, label: &str, streams: &[AdoptStream]) -> R<()> {
        let mut st = self.lock();
        let sess = st
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::NoSession(session))?;
        let mut found = Vec::with_capacity(streams.len());
        for a in streams {
            let p = a.ports;
            let i = sess
                .streams
                .iter()
                .position(|s| {
                    (s.a.port, s.b.port) == (p.a, p.b) || (s.a.port, s.b.port) == (p.b, p.a)
                })
                .filter(|i| !found.contains(i))
                .ok_or(SessionError::NoStream {
                    session,
                    a: p.a,
                    b: p.b,
                })?;
            found.push(i);
        }
        for (a, i) in streams.iter().zip(found) {
            let s = &mut sess.streams[i];
            if s.a.port != a.ports.a {
                std::mem::swap(&mut s.a, &mut s.b);
            }
            for (side, setup) in [(&mut s.a, a.peer[0]), (&mut s.b, a.peer[1])] {
                if let Some(setup) = setup {
                    side.setup = Some(setup);
                }
            }
        }
        if sess.label != label {
            debug!(session, label, was = %sess.label, "session adopted by signalling");
        }
        sess.label = label.to_owned();
        Ok(())
    }

    /// Makes a session again from what signalling recorded for it, when the data plane did
    /// not keep it (the userspace relay, whose sockets died with the process; XDP after a
    /// reboot): the same id and ports, sockets bound again, legs written with each side's
    /// signalled setup and forwarding where both sides are known. A latched peer is learnt
    /// again from the trusted address within the learning window. All or nothing.
    pub fn rebuild(&self, session: SessionId, label: &str, streams: &[AdoptStream]) -> R<()> {
        let mut st = self.lock();
        if st.sessions.contains_key(&session) {
            return Err(SessionError::SessionExists(session));
        }
        let mut built: Vec<Stream> = Vec::with_capacity(streams.len());
        let undo = |st: &mut State, built: &[Stream]| {
            for s in built {
                for p in [s.a.port, s.b.port] {
                    self.drop_pair(p);
                    st.alloc.release(p);
                }
            }
        };
        for a in streams {
            let local = |i: usize| a.peer[i].map_or(self.default_addr, |p| p.local);
            let (pa, pb) = (a.ports.a, a.ports.b);
            if !st.alloc.reserve(pa) {
                undo(&mut st, &built);
                return Err(SessionError::NoStream {
                    session,
                    a: pa,
                    b: pb,
                });
            }
            if !st.alloc.reserve(pb) {
                st.alloc.release(pa);
                undo(&mut st, &built);
                return Err(SessionError::NoStream {
                    session,
                    a: pa,
                    b: pb,
                });
            }
            for (addr, port) in [(local(0), pa), (local(1), pb)] {
                if let Err(source) = self.open_pair(addr, port) {
                    self.close_pair(pa);
                    st.alloc.release(pa);
                    st.alloc.release(pb);
                    undo(&mut st, &built);
                    return Err(SessionError::Bind { addr, port, source });
                }
            }
            let stream = Stream {
                a: SideState {
                    port: pa,
                    local: local(0),
                    setup: a.peer[0],
                },
                b: SideState {
                    port: pb,
                    local: local(1),
                    setup: a.peer[1],
                },
                active: a.peer[0].is_some() && a.peer[1].is_some(),
            };
            let r = self
                .write_side(session, &stream.a, &stream.b, stream.active, None)
                .and_then(|()| self.write_side(session, &stream.b, &stream.a, stream.active, None));
            built.push(stream);
            if let Err(e) = r {
                undo(&mut st, &built);
                return Err(e);
            }
        }
        st.next_id = st.next_id.max(session.saturating_add(1));
        st.sessions.insert(
            session,
            Session {
                label: label.to_owned(),
                streams: built,
                touched_ns: monotonic_ns(),
            },
        );
        debug!(session, label, "session rebuilt from signalling");
        Ok(())
    }

    /// (RTP pairs in use, RTP pairs free).
    pub fn port_usage(&self) -> (usize, usize) {
        let st = self.lock();
        (st.alloc.in_use(), st.alloc.available())
    }

    /// What was seen on relay port `port` (RTP: the even port; RTCP: `port + 1`) of `session`.
    pub fn port_report(&self, session: SessionId, port: u16) -> R<LegReport> {
        {
            let st = self.lock();
            let sess = st
                .sessions
                .get(&session)
                .ok_or(SessionError::NoSession(session))?;
            let even = port & !1;
            if !sess
                .streams
                .iter()
                .any(|s| s.a.port == even || s.b.port == even)
            {
                return Err(SessionError::NoPort { session, port });
            }
        }
        let c = self.dp.leg_counters(port)?;
        let leg = self.dp.leg_get(port)?;
        Ok(leg_report(port, leg.as_ref(), &c))
    }

    /// Removes every session without activity for `timeout` and returns their final reports.
    pub fn reap(&self, timeout: Duration) -> Vec<SessionReport> {
        let now = monotonic_ns();
        let limit = duration_ns(timeout);
        let stale: Vec<SessionId> = {
            let st = self.lock();
            st.sessions
                .iter()
                .filter_map(|(id, s)| {
                    let r = self.report_locked(*id, s).ok()?;
                    (now.saturating_sub(r.last_activity_ns) >= limit).then_some(*id)
                })
                .collect()
        };
        stale
            .into_iter()
            .filter_map(|id| match self.remove_session(id) {
                Ok(r) => {
                    info!(session = id, label = %r.label, packets = r.packets(), "media timeout");
                    Some(r)
                }
                Err(_) => None, // removed by signalling meanwhile
            })
            .collect()
    }

    /// Runs [`Sessions::reap`] every `period` on a thread until the `Sessions` is dropped or
    /// the receiver is; timed-out sessions arrive on the channel.
    pub fn spawn_reaper(
        self: &Arc<Self>,
        timeout: Duration,
        period: Duration,
    ) -> mpsc::UnboundedReceiver<SessionReport> {
        let (tx, rx) = mpsc::unbounded_channel();
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = thread::Builder::new()
            .name("media-timeout".into())
            .spawn(move || {
                loop {
                    thread::sleep(period);
                    let Some(me) = weak.upgrade() else { return };
                    if tx.is_closed() {
                        return;
                    }
                    for r in me.reap(timeout) {
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "could not start the media-timeout reaper");
        }
        rx
    }

    /// Adopts legs already in the data plane (a restarted daemon over pinned maps): rebuilds
    /// their sessions, reserves their ports and opens their sockets, so they keep relaying and
    /// eventually time out. Returns how many sessions were adopted.
    pub fn recover(&self) -> R<usize> {
        let legs = self.dp.leg_list()?;
        let by_port: BTreeMap<u16, Leg> = legs.iter().map(|l| (l.local_port, *l)).collect();
        let mut st = self.lock();
        let now = monotonic_ns();
        let mut adopted = 0;
        for leg in &legs {
            // One stream per (lower RTP port, higher RTP port) pair of partner legs.
            let (p, q) = (leg.local_port, leg.partner_port);
            if !p.is_multiple_of(2) || p > q || !by_port.contains_key(&q) {
                continue;
            }
            if st
                .sessions
                .get(&leg.session_id)
                .is_some_and(|s| s.streams.iter().any(|s| s.a.port == p))
            {
                continue;
            }
            let other = by_port[&q];
            if !st.alloc.reserve(p) || !st.alloc.reserve(q) {
                warn!(
                    session = leg.session_id,
                    p, q, "recovered leg outside the port range or clashing; left alone"
                );
                continue;
            }
            let a_local = IpAddr::from(leg.local_addr);
            let b_local = IpAddr::from(other.local_addr);
            for (addr, port) in [(a_local, p), (b_local, q)] {
                if let Err(e) = self.open_pair(addr, port) {
                    warn!(port, error = %e, "recovered relay port: socket not bound (kernel path only)");
                }
            }
            let sess = st.sessions.entry(leg.session_id).or_insert_with(|| {
                adopted += 1;
                Session {
                    label: "recovered".into(),
                    streams: Vec::new(),
                    touched_ns: now,
                }
            });
            let setup = |l: &Leg, local| PeerSetup {
                local,
                rtp: peer(l),
                rtcp: by_port.get(&(l.local_port + 1)).and_then(peer),
                latch: l.has(LEG_LATCH),
                strict_source: l.has(LEG_STRICT_SOURCE),
                trusted: l.has(LEG_TRUST_KNOWN).then(|| IpAddr::from(l.trust_addr)),
            };
            sess.streams.push(Stream {
                a: SideState {
                    port: p,
                    local: a_local,
                    setup: Some(setup(leg, a_local)),
                },
                b: SideState {
                    port: q,
                    local: b_local,
                    setup: Some(setup(&other, b_local)),
                },
                active: leg.has(LEG_ACTIVE),
            });
        }
        if let Some(max) = st.sessions.keys().next_back() {
            st.next_id = st.next_id.max(max + 1);
        }
        if adopted > 0 {
            info!(
                sessions = adopted,
                "adopted live relay sessions from the pinned maps"
            );
        }
        Ok(adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaBackend;
    use std::{net::UdpSocket, time::Instant};

    fn setup(local: &str, rtp: Option<&str>) -> PeerSetup {
        PeerSetup {
            local: local.parse().unwrap(),
            rtp: rtp.map(|r| r.parse().unwrap()),
            rtcp: None,
            latch: true,
            strict_source: false,
            trusted: None,
        }
    }

    /// A range unlikely to collide with other tests running in parallel.
    fn sessions(range: &str) -> Arc<Sessions> {
        let dp = Arc::new(DataPlane::userspace("test"));
        let relay = Arc::new(UserRelay::start(dp.clone(), 1).unwrap());
        Arc::new(Sessions::new(
            dp,
            relay,
            range.parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ))
    }

    #[test]
    fn streams_allocate_pairs_and_free_them() {
        let s = sessions("41000-41007");
        let id = s.create_session("call-1");
        let p = s.create_stream_on(id, None, None).unwrap();
        assert!(p.a.is_multiple_of(2) && p.b.is_multiple_of(2) && p.a != p.b);
        let p2 = s.create_stream_on(id, None, None).unwrap();
        assert!(matches!(
            s.create_stream_on(id, None, None),
            Err(SessionError::PortsExhausted(_))
        ));
        assert_eq!(s.port_usage(), (4, 0));
        let dp = s.dataplane();
        let la = dp.leg_get(p.a + 1).unwrap().unwrap();
        assert_eq!(la.partner_port, p.b + 1, "RTCP pairs with RTCP");
        let r = s.remove_session(id).unwrap();
        assert_eq!(r.streams.len(), 2);
        assert_eq!(s.port_usage(), (0, 4));
        assert!(dp.leg_get(p2.b).unwrap().is_none());
        assert!(matches!(
            s.remove_session(id),
            Err(SessionError::NoSession(_))
        ));
        assert!(s.create_stream_on(99, None, None).is_err());
    }

    #[test]
    fn rtcp_peer_defaults_to_rtp_plus_one_and_activate_needs_both_sides() {
        let s = sessions("41100-41107");
        let id = s.create_session("c");
        let p = s.create_stream_on(id, None, None).unwrap();
        Sessions::set_peer(
            &s,
            id,
            p,
            Side::A,
            &setup("127.0.0.1", Some("10.0.0.1:4000")),
        )
        .unwrap();
        let dp = s.dataplane().clone();
        let rtcp = dp.leg_get(p.a + 1).unwrap().unwrap();
        assert_eq!(peer(&rtcp), Some("10.0.0.1:4001".parse().unwrap()));
        Sessions::activate(&s, id).unwrap();
        assert!(
            !dp.leg_get(p.a).unwrap().unwrap().has(LEG_ACTIVE),
            "side B unknown"
        );
        Sessions::set_peer(&s, id, p, Side::B, &setup("127.0.0.1", None)).unwrap();
        Sessions::activate(&s, id).unwrap();
        for port in [p.a, p.a + 1, p.b, p.b + 1] {
            assert!(dp.leg_get(port).unwrap().unwrap().has(LEG_ACTIVE));
        }
        let bad = StreamPorts { a: 1, b: 2 };
        assert!(Sessions::set_peer(&s, id, bad, Side::A, &setup("127.0.0.1", None)).is_err());
    }

    #[test]
    fn end_to_end_relay_and_media_timeout() {
        let s = sessions("41200-41219");
        let mut timeouts = s.spawn_reaper(Duration::from_millis(300), Duration::from_millis(50));
        let id = s.create_session("call-e2e");
        let p = s.create_stream_on(id, None, None).unwrap();
        let alice = UdpSocket::bind("127.0.0.1:0").unwrap();
        let bob = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a_addr = alice.local_addr().unwrap().to_string();
        let b_addr = bob.local_addr().unwrap().to_string();
        Sessions::set_peer(&s, id, p, Side::A, &setup("127.0.0.1", Some(&a_addr))).unwrap();
        Sessions::set_peer(&s, id, p, Side::B, &setup("127.0.0.1", Some(&b_addr))).unwrap();
        Sessions::activate(&s, id).unwrap();
        bob.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        alice.send_to(b"hello", ("127.0.0.1", p.a)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = bob.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.port(), p.b);
        // The relay publishes a leg's counters after forwarding, so they may trail the packet.
        let t0 = Instant::now();
        let st = loop {
            let st = MediaBackend::leg_stats(&*s, id, p.a).unwrap();
            if st.packets > 0 || t0.elapsed() > Duration::from_secs(2) {
                break st;
            }
            thread::sleep(Duration::from_millis(5));
        };
        assert_eq!((st.packets, st.bytes), (1, 5));
        assert!(st.last_seen.is_some());
        assert_eq!(
            s.totals(),
            RelayTotals {
                packets: 1,
                bytes: 5,
                sessions: 1,
                rtp_lost: 0,
            }
        );
        // Silence: the reaper removes it and reports the counters.
        let t0 = Instant::now();
        let r = loop {
            if let Ok(r) = timeouts.try_recv() {
                break r;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "timed out session reported"
            );
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(r.session, id);
        assert_eq!(r.label, "call-e2e");
        assert_eq!(r.packets(), 1);
        assert!(s.list().is_empty());
        assert_eq!(s.port_usage().0, 0);
        // Totals keep what the ended session relayed.
        assert_eq!(
            s.totals(),
            RelayTotals {
                packets: 1,
                bytes: 5,
                sessions: 0,
                rtp_lost: 0,
            }
        );
    }

    #[test]
    fn resignalling_same_peer_keeps_latch_new_peer_resets_it() {
        let s = sessions("41300-41307");
        let id = s.create_session("c");
        let p = s.create_stream_on(id, None, None).unwrap();
        let dp = s.dataplane().clone();
        Sessions::set_peer(
            &s,
            id,
            p,
            Side::A,
            &setup("127.0.0.1", Some("10.0.0.1:4000")),
        )
        .unwrap();
        dp.relay_latch(p.a, id, "192.0.2.1:7000".parse().unwrap())
            .unwrap();
        Sessions::set_peer(
            &s,
            id,
            p,
            Side::A,
            &setup("127.0.0.1", Some("10.0.0.1:4000")),
        )
        .unwrap();
        assert_eq!(
            peer(&dp.leg_get(p.a).unwrap().unwrap()),
            Some("192.0.2.1:7000".parse().unwrap())
        );
        Sessions::set_peer(
            &s,
            id,
            p,
            Side::A,
            &setup("127.0.0.1", Some("10.0.0.9:4000")),
        )
        .unwrap();
        let l = dp.leg_get(p.a).unwrap().unwrap();
        assert!(!l.has(LEG_LATCHED));
        assert_eq!(peer(&l), Some("10.0.0.9:4000".parse().unwrap()));
    }

    #[test]
    fn recover_adopts_legs_already_in_the_data_plane() {
        let s = sessions("41400-41407");
        let id = s.create_session("c");
        let p = s.create_stream_on(id, None, None).unwrap();
        Sessions::set_peer(
            &s,
            id,
            p,
            Side::A,
            &setup("127.0.0.1", Some("10.0.0.1:4000")),
        )
        .unwrap();
        // A "restarted daemon": same data plane, fresh sessions and sockets.
        let dp = s.dataplane().clone();
        drop(s);
        let relay = Arc::new(UserRelay::start(dp.clone(), 1).unwrap());
        let s2 = Sessions::new(
            dp,
            relay,
            "41400-41407".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        );
        assert_eq!(s2.recover().unwrap(), 1);
        assert_eq!(s2.list(), vec![id]);
        assert_eq!(s2.port_usage().0, 2);
        assert!(s2.create_session("next") > id);
        let r = s2.remove_session(id).unwrap();
        assert_eq!(r.streams[0].a, p.a.min(p.b));
    }

    /// After a restart, the ng record of a call joins the recovered session: the real label
    /// comes back, and the signalled (not the latched) peer decides whether a re-INVITE with
    /// the same SDP keeps the latch.
    #[test]
    fn adopt_joins_a_recovered_session_with_its_signalling_record() {
        let s = sessions("41500-41507");
        let id = s.create_session("call-x");
        let p = s.create_stream_on(id, None, None).unwrap();
        let signalled = setup("127.0.0.1", Some("10.0.0.1:4000"));
        Sessions::set_peer(&s, id, p, Side::A, &signalled).unwrap();
        let dp = s.dataplane().clone();
        dp.relay_latch(p.a, id, "192.0.2.1:7000".parse().unwrap())
            .unwrap();
        drop(s);
        let relay = Arc::new(UserRelay::start(dp.clone(), 1).unwrap());
        let s2 = Sessions::new(
            dp.clone(),
            relay,
            "41500-41507".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        );
        assert_eq!(s2.recover().unwrap(), 1);
        assert_eq!(s2.label(id).as_deref(), Some("recovered"));

        // A record naming a stream the relay did not recover changes nothing. Ports are drawn
        // at random, so the bogus pair is two of the range's other even ports.
        let mut others = (41500..=41506)
            .step_by(2)
            .filter(|port| ![p.a, p.b].contains(port));
        let (a, b) = (others.next().unwrap(), others.next().unwrap());
        let bogus = AdoptStream {
            ports: StreamPorts { a, b },
            peer: [None, None],
        };
        assert!(matches!(
            s2.adopt(id, "call-x", &[bogus]),
            Err(SessionError::NoStream { .. })
        ));
        assert!(matches!(
            s2.adopt(id + 1, "call-x", &[]),
            Err(SessionError::NoSession(_))
        ));
        assert_eq!(s2.label(id).as_deref(), Some("recovered"));

        let rec = AdoptStream {
            ports: p,
            peer: [Some(signalled), None],
        };
        MediaBackend::adopt_session(&s2, id, "call-x", &[rec]).unwrap();
        assert_eq!(s2.label(id).as_deref(), Some("call-x"));
        Sessions::set_peer(&s2, id, p, Side::A, &signalled).unwrap();
        assert_eq!(
            peer(&dp.leg_get(p.a).unwrap().unwrap()),
            Some("192.0.2.1:7000".parse().unwrap()),
            "same SDP after the restart: latch kept"
        );

        // Recovery calls the lower port A; the record's orientation wins.
        let swapped = StreamPorts { a: p.b, b: p.a };
        s2.adopt(
            id,
            "call-x",
            &[AdoptStream {
                ports: swapped,
                peer: [None, None],
            }],
        )
        .unwrap();
        Sessions::set_peer(
            &s2,
            id,
            swapped,
            Side::A,
            &setup("127.0.0.1", Some("10.0.0.2:5000")),
        )
        .unwrap();
        assert_eq!(
            peer(&dp.leg_get(p.b).unwrap().unwrap()),
            Some("10.0.0.2:5000".parse().unwrap()),
            "side A is the record's A port"
        );
        assert!(MediaBackend::has_session(&s2, id));
        s2.remove_session(id).unwrap();
        assert!(!MediaBackend::has_session(&s2, id));
    }

    /// Signalling names the SIP source the legs may learn their peer from and opens the
    /// learning window: the offer for its side, the answer again for every leg not latched.
    #[test]
    fn signalling_opens_the_learning_window_and_names_the_sip_source() {
        let s = sessions("41700-41707");
        let dp = s.dataplane().clone();
        let id = s.create_session("window");
        let p = s.create_stream_on(id, None, None).unwrap();
        let sip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = monotonic_ns();
        let a = PeerSetup {
            trusted: Some(sip),
            ..setup("127.0.0.1", Some("10.0.0.1:4000"))
        };
        Sessions::set_peer(&s, id, p, Side::A, &a).unwrap();
        for port in [p.a, p.a + 1] {
            let l = dp.leg_get(port).unwrap().unwrap();
            assert!(
                l.has(LEG_TRUST_KNOWN) && l.trust_addr == Addr::from(sip),
                "{l:?}"
            );
            assert!(l.learn_until_ns >= t0 + LEARN_WINDOW_NS, "{l:?}");
        }
        Sessions::set_peer(
            &s,
            id,
            p,
            Side::B,
            &setup("127.0.0.1", Some("10.0.0.2:5000")),
        )
        .unwrap();
        assert!(!dp.leg_get(p.b).unwrap().unwrap().has(LEG_TRUST_KNOWN));
        dp.relay_latch(p.a + 1, id, "192.0.2.7:7001".parse().unwrap())
            .unwrap();
        let latched_until = dp.leg_get(p.a + 1).unwrap().unwrap().learn_until_ns;
        let t1 = monotonic_ns();
        Sessions::activate(&s, id).unwrap();
        assert!(dp.leg_get(p.a).unwrap().unwrap().learn_until_ns >= t1 + LEARN_WINDOW_NS);
        assert_eq!(
            dp.leg_get(p.a + 1).unwrap().unwrap().learn_until_ns,
            latched_until,
            "a latched leg's window is not reopened"
        );
    }

    /// Strict-source drops reach the ng layer's per-leg stats (its `errors`).
    #[test]
    fn leg_stats_carry_strict_source_drops() {
        let s = sessions("41600-41607");
        let id = s.create_session("strict");
        let p = s.create_stream_on(id, None, None).unwrap();
        let alice = UdpSocket::bind("127.0.0.1:0").unwrap();
        let bob = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mallory = UdpSocket::bind("127.0.0.1:0").unwrap();
        let strict = |at: &UdpSocket| PeerSetup {
            strict_source: true,
            ..setup("127.0.0.1", Some(&at.local_addr().unwrap().to_string()))
        };
        Sessions::set_peer(&s, id, p, Side::A, &strict(&alice)).unwrap();
        Sessions::set_peer(&s, id, p, Side::B, &strict(&bob)).unwrap();
        Sessions::activate(&s, id).unwrap();
        bob.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        alice.send_to(b"rtp", ("127.0.0.1", p.a)).unwrap();
        let mut buf = [0u8; 64];
        bob.recv_from(&mut buf).expect("relayed");
        for _ in 0..3 {
            mallory.send_to(b"bleed", ("127.0.0.1", p.a)).unwrap();
        }
        let t0 = Instant::now();
        let st = loop {
            let st = MediaBackend::leg_stats(&*s, id, p.a).unwrap();
            if st.strict_drops >= 3 || t0.elapsed() > Duration::from_secs(2) {
                break st;
            }
            thread::sleep(Duration::from_millis(10));
        };
        assert_eq!((st.packets, st.strict_drops), (1, 3));
    }
}
