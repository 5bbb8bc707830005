//! The ng command semantics: a call table over a [`MediaBackend`].
//!
//! One call per Call-ID, one relay stream per m= line. Each call has two tags: side A is the
//! party that sent the first offer (its from-tag), side B the one that answered (its to-tag).
//! Every SDP is attributed to the side of the tag that sent it — the from-tag for an offer,
//! the to-tag for an answer — so a re-INVITE from the callee works the same way as one from
//! the caller. An SDP from side X sets X's peer and is rewritten to point its receiver at the
//! relay port of the other side.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backend::{AdoptStream, MediaBackend, PeerSetup, SessionId, Side, StreamPorts};
use super::bencode::Value;
use super::message::{Delete, Family, Ice, OfferAnswer, Request, Response};
use super::sdp::{Rewrite, Sdp};
use super::state::{CallRecord, Snapshot, StateFile, StreamRecord};

/// A relay interface the SDP may advertise (rtpengine's `--interface=name/addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Interface {
    pub fn new(name: &str, addrs: &[IpAddr]) -> Interface {
        Interface {
            name: name.into(),
            v4: addrs.iter().find_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                _ => None,
            }),
            v6: addrs.iter().find_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                _ => None,
            }),
        }
    }

    fn addr(&self, fam: Family) -> Option<IpAddr> {
        match fam {
            Family::V4 => self.v4.map(IpAddr::V4),
            Family::V6 => self.v6.map(IpAddr::V6),
        }
    }
}

/// Most calls listed by `list` without a `limit` (rtpengine's default is 32).
const DEFAULT_LIST_LIMIT: usize = 32;

#[derive(Debug)]
struct Stream {
    kind: String,
    proto: String,
    /// `None` for an m= line with port 0.
    ports: Option<StreamPorts>,
    /// Per side (A, B) what was last signalled.
    peer: [Option<PeerSetup>; 2],
}

#[derive(Debug)]
struct Call {
    session: SessionId,
    tags: [Option<String>; 2],
    /// Interface index per side.
    iface: [usize; 2],
    created: SystemTime,
    last_signal: SystemTime,
    streams: Vec<Stream>,
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Call {
    fn side_of(&self, tag: &str) -> Option<Side> {
        [Side::A, Side::B]
            .into_iter()
            .find(|s| self.tags[idx(*s)].as_deref() == Some(tag))
    }
}

/// The call table. Not internally synchronised: the server keeps it behind a mutex.
pub struct Engine<B: MediaBackend> {
    backend: Arc<B>,
    interfaces: Vec<Interface>,
    calls: HashMap<String, Call>,
    last_prune: Option<std::time::Instant>,
    /// Where the call table is persisted after every change (XDP mode: calls outlive relayd).
    state: Option<StateFile>,
    /// The last save failed: the next failure is not logged again until one succeeds.
    state_failing: bool,
}

/// What [`Engine::restore`] did with a saved snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Call-ids taken back.
    pub adopted: Vec<String>,
    /// Call-ids dropped, with why (usually: the relay did not recover their session).
    pub dropped: Vec<(String, String)>,
}

/// How often the call table is checked against the relay's sessions.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

impl<B: MediaBackend> Engine<B> {
    /// `interfaces` must not be empty; the first is used when a request names no direction.
    pub fn new(backend: Arc<B>, interfaces: Vec<Interface>) -> Engine<B> {
        assert!(!interfaces.is_empty(), "ng engine needs a relay interface");
        Engine {
            backend,
            interfaces,
            calls: HashMap::new(),
            last_prune: None,
            state: None,
            state_failing: false,
        }
    }

    /// Persists the call table to `file` from now on, after every change, and once now (so
    /// the file matches the table right after a [`Engine::restore`]).
    pub fn set_state_file(&mut self, file: StateFile) {
        self.state = Some(file);
        self.persist();
    }

    /// The call table as the state file stores it.
    pub fn snapshot(&self) -> Snapshot {
        let mut ids: Vec<&String> = self.calls.keys().collect();
        ids.sort();
        let name = |i: usize| {
            self.interfaces
                .get(i)
                .map_or_else(String::new, |f| f.name.clone())
        };
        Snapshot::new(
            ids.into_iter()
                .map(|id| {
                    let c = &self.calls[id];
                    CallRecord {
                        call_id: id.clone(),
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
                    }
                })
                .collect(),
        )
    }

    /// Takes back the calls of a snapshot saved before a restart, joined with the sessions
    /// the relay recovered: a call whose session (or one of its streams) the backend cannot
    /// adopt is dropped, since nothing relays it any more. Sessions the relay recovered that
    /// no record names stay with the relay alone and end by media timeout.
    pub fn restore(&mut self, snap: Snapshot) -> Restored {
        let mut out = Restored::default();
        for rec in snap.calls {
            match self.restore_one(&rec) {
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

    fn restore_one(&self, rec: &CallRecord) -> Result<Call, String> {
        if self.calls.contains_key(&rec.call_id) {
            return Err("call-id already known".into());
        }
        if self.calls.values().any(|c| c.session == rec.session) {
            return Err(format!("session {} already has a call", rec.session));
        }
        if rec.tags[0].is_none() {
            return Err("no from-tag".into());
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
                    return Err(format!("bad stream ports {}/{}", p.a, p.b));
                }
                adopt.push(AdoptStream {
                    ports: p,
                    peer: st.peer,
                });
            }
        }
        if !self.backend.has_session(rec.session) {
            return Err("session not recovered by the relay".into());
        }
        self.backend
            .adopt_session(rec.session, &rec.call_id, &adopt)
            .map_err(|e| e.to_string())?;
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
    fn persist(&mut self) {
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

    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Handles one request. Failures become `result: error` replies; nothing here panics on
    /// client input.
    pub fn handle(&mut self, req: &Request) -> Response {
        let pruned = self.prune();
        // Offers, answers and deletes change the table even when they fail part-way (a
        // stream set before a later one failed), so they always save.
        let changes = matches!(
            req,
            Request::Offer(_) | Request::Answer(_) | Request::Delete(_)
        );
        let r = match req {
            Request::Ping => Ok(Response::pong()),
            Request::Offer(oa) => self.offer_answer(oa, false),
            Request::Answer(oa) => self.offer_answer(oa, true),
            Request::Delete(d) => self.delete(d),
            Request::Query { call_id } => self.query(call_id),
            Request::List { limit } => Ok(self.list(*limit)),
        };
        let resp = r.unwrap_or_else(|reason| {
            tracing::debug!(command = req.command(), %reason, "ng request failed");
            Response::error(reason)
        });
        if pruned || changes {
            self.persist();
        }
        resp
    }

    /// Drops calls whose session the relay removed by itself (media timeout), so `list`,
    /// `query` and a new offer with the same Call-ID see the call as gone.
    /// Returns whether any call was dropped.
    fn prune(&mut self) -> bool {
        // O(calls): at most a few times a second, not per request.
        let now = std::time::Instant::now();
        if self
            .last_prune
            .is_some_and(|t| now.duration_since(t) < PRUNE_EVERY)
        {
            return false;
        }
        self.last_prune = Some(now);
        let backend = &self.backend;
        let before = self.calls.len();
        self.calls.retain(|id, c| {
            let alive = backend.has_session(c.session);
            if !alive {
                tracing::info!(call_id = %id, session = c.session, "relay ended the call (media timeout)");
            }
            alive
        });
        before != self.calls.len()
    }

    /// Forgets the call of a session the relay already removed (media timeout), so `list`
    /// and `query` stop showing it at once rather than at the next prune. Returns the call-id
    /// if the call was known.
    pub fn forget_session(&mut self, session: SessionId) -> Option<String> {
        let id = self
            .calls
            .iter()
            .find(|(_, c)| c.session == session)
            .map(|(id, _)| id.clone())?;
        self.calls.remove(&id);
        tracing::info!(call_id = %id, session, "relay ended the call (media timeout)");
        self.persist();
        Some(id)
    }

    fn iface_index(&self, name: Option<&String>, default: usize) -> Result<usize, String> {
        match name {
            None => Ok(default),
            Some(n) => self
                .interfaces
                .iter()
                .position(|i| i.name == *n)
                .ok_or_else(|| format!("Unknown interface {n:?} in direction")),
        }
    }

    fn offer_answer(&mut self, oa: &OfferAnswer, answer: bool) -> Result<Response, String> {
        let sdp = Sdp::parse(&oa.sdp).map_err(|e| format!("Failed to parse SDP: {e}"))?;
        let now = SystemTime::now();
        // The tag of the party that sent this SDP.
        let sender_tag = if answer {
            oa.to_tag.as_deref().ok_or("Missing to-tag")?
        } else {
            oa.from_tag.as_str()
        };

        let new_call = !self.calls.contains_key(&oa.call_id);
        if new_call {
            if answer {
                return Err("Unknown call-id".into());
            }
            let session = self
                .backend
                .create_session(&oa.call_id)
                .map_err(|e| e.to_string())?;
            self.calls.insert(
                oa.call_id.clone(),
                Call {
                    session,
                    tags: [Some(oa.from_tag.clone()), None],
                    iface: [0, 0],
                    created: now,
                    last_signal: now,
                    streams: Vec::new(),
                },
            );
        }
        let r = self.apply(oa, answer, sender_tag, &sdp, now);
        if r.is_err() && new_call {
            // Do not leave a half-made call (and its ports) behind a failed first offer.
            if let Some(call) = self.calls.remove(&oa.call_id) {
                let _ = self.backend.remove_session(call.session);
            }
        }
        r
    }

    fn apply(
        &mut self,
        oa: &OfferAnswer,
        answer: bool,
        sender_tag: &str,
        sdp: &Sdp<'_>,
        now: SystemTime,
    ) -> Result<Response, String> {
        let dir_default = {
            let call = &self.calls[&oa.call_id];
            call.iface
        };
        let call = &self.calls[&oa.call_id];
        let sender = match call.side_of(sender_tag) {
            Some(s) => s,
            // The first answer names side B's tag.
            None if call.tags[1].is_none() && (answer || call.tags[0].is_none()) => Side::B,
            None => return Err(format!("Unknown tag {sender_tag:?} for this call")),
        };
        if answer {
            // The other tag of the answer must be the other side's.
            if call.side_of(&oa.from_tag) != Some(sender.other()) {
                return Err("from-tag does not match the call".into());
            }
            if sdp.media.len() != call.streams.len() {
                return Err(format!(
                    "Answer has {} media sections, offer had {}",
                    sdp.media.len(),
                    call.streams.len()
                ));
            }
        }
        let receiver = sender.other();
        let mut iface = dir_default;
        if oa.direction.len() == 2 {
            iface[idx(sender)] = self.iface_index(Some(&oa.direction[0]), 0)?;
            iface[idx(receiver)] = self.iface_index(Some(&oa.direction[1]), 0)?;
        }

        let session = call.session;
        let backend = Arc::clone(&self.backend);
        let interfaces = self.interfaces.clone();
        let call = self.calls.get_mut(&oa.call_id).expect("present");
        call.tags[idx(sender)] = Some(sender_tag.to_string());
        call.iface = iface;
        call.last_signal = now;

        let latch = oa.flags.latch();
        let strict = oa.flags.strict_source;
        let mut out_ports = Vec::with_capacity(sdp.media.len());
        let mut out_addr = None;
        for (i, m) in sdp.media.iter().enumerate() {
            let sender_fam = Family::of(&m.addr);
            let receiver_fam = oa.address_family.unwrap_or(sender_fam);
            let local_sender = interfaces[iface[idx(sender)]]
                .addr(sender_fam)
                .ok_or("No relay address of the offerer's family")?;
            let local_receiver = interfaces[iface[idx(receiver)]]
                .addr(receiver_fam)
                .ok_or("No relay address of the requested family")?;
            out_addr.get_or_insert(local_receiver);

            if i == call.streams.len() {
                call.streams.push(Stream {
                    kind: m.kind.clone(),
                    proto: m.proto.clone(),
                    ports: None,
                    peer: [None, None],
                });
            }
            let st = &mut call.streams[i];
            if !m.enabled() {
                out_ports.push(0);
                continue;
            }
            let ports = match st.ports {
                Some(p) => p,
                None => {
                    let p = backend.create_stream(session).map_err(|e| e.to_string())?;
                    st.ports = Some(p);
                    p
                }
            };
            let ip = match (oa.flags.sip_source_address, oa.received_from) {
                (true, Some(rf)) => rf,
                _ => m.addr,
            };
            // 0.0.0.0 / :: is RFC 2543 hold: the address is not known.
            let known = !ip.is_unspecified();
            let setup = PeerSetup {
                local: local_sender,
                rtp: known.then_some(SocketAddr::new(ip, m.port)),
                rtcp: known.then_some(SocketAddr::new(
                    if m.rtcp_addr == m.addr {
                        ip
                    } else {
                        m.rtcp_addr
                    },
                    m.rtcp_port,
                )),
                latch,
                strict_source: strict,
            };
            backend
                .set_peer(session, ports, sender, &setup)
                .map_err(|e| e.to_string())?;
            st.peer[idx(sender)] = Some(setup);
            // The receiving side's relay address is fixed now (it goes into the SDP), even
            // if its peer is not known yet.
            let recv = match st.peer[idx(receiver)] {
                Some(p) if p.local == local_receiver => None,
                Some(p) => Some(PeerSetup {
                    local: local_receiver,
                    ..p
                }),
                None => Some(PeerSetup {
                    local: local_receiver,
                    rtp: None,
                    rtcp: None,
                    latch,
                    strict_source: strict,
                }),
            };
            if let Some(r) = recv {
                backend
                    .set_peer(session, ports, receiver, &r)
                    .map_err(|e| e.to_string())?;
                st.peer[idx(receiver)] = Some(r);
            }
            out_ports.push(ports.of(receiver));
        }
        if call.tags[1].is_some() {
            backend.activate(session).map_err(|e| e.to_string())?;
        }
        let body = sdp
            .rewrite(&Rewrite {
                addr: out_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                ports: out_ports,
                origin: oa.replace.origin,
                remove_ice: oa.ice == Some(Ice::Remove),
            })
            .map_err(|e| format!("SDP rewrite: {e}"))?;
        tracing::debug!(call_id = %oa.call_id, ?sender, answer, "ng sdp anchored");
        Ok(Response::ok().with("sdp", body))
    }

    fn delete(&mut self, d: &Delete) -> Result<Response, String> {
        let call = self.calls.get(&d.call_id).ok_or("Unknown call-id")?;
        for t in [&d.from_tag, &d.to_tag].into_iter().flatten() {
            if call.side_of(t).is_none() {
                return Err("Unknown tag for this call".into());
            }
        }
        let totals = self.totals(call);
        let created = unix(call.created);
        let session = call.session;
        self.calls.remove(&d.call_id);
        self.backend
            .remove_session(session)
            .map_err(|e| e.to_string())?;
        Ok(Response::ok()
            .with("created", created)
            .with("totals", totals))
    }

    fn stats_dict(&self, session: SessionId, port: u16) -> (Value, Option<SocketAddr>, i64) {
        let s = self.backend.leg_stats(session, port).unwrap_or_default();
        let last = s.last_seen.map_or(0, unix);
        (
            Value::dict()
                .with("packets", s.packets)
                .with("bytes", s.bytes)
                .with("errors", s.strict_drops),
            s.peer,
            last,
        )
    }

    fn totals(&self, call: &Call) -> Value {
        // Per kind (RTP, RTCP): packets, bytes, errors.
        let mut sums = [[0u64; 3]; 2];
        for st in &call.streams {
            let Some(p) = st.ports else { continue };
            for side in [Side::A, Side::B] {
                for (k, port) in [p.of(side), p.of(side) + 1].into_iter().enumerate() {
                    let s = self
                        .backend
                        .leg_stats(call.session, port)
                        .unwrap_or_default();
                    sums[k][0] += s.packets;
                    sums[k][1] += s.bytes;
                    sums[k][2] += s.strict_drops;
                }
            }
        }
        let d = |s: [u64; 3]| {
            Value::dict()
                .with("packets", s[0])
                .with("bytes", s[1])
                .with("errors", s[2])
        };
        Value::dict()
            .with("RTP", d(sums[0]))
            .with("RTCP", d(sums[1]))
    }

    /// rtpengine's `query` layout: `tags` → tag → `medias` → `streams` (RTP, RTCP) with
    /// `local port`, `endpoint`, `last packet` and `stats`; plus `totals`.
    fn query(&self, call_id: &str) -> Result<Response, String> {
        let call = self.calls.get(call_id).ok_or("Unknown call-id")?;
        let mut tags = Value::dict();
        for side in [Side::A, Side::B] {
            let tag = call.tags[idx(side)].clone().unwrap_or_default();
            let mut medias = Vec::new();
            for (i, st) in call.streams.iter().enumerate() {
                let mut streams = Vec::new();
                if let Some(p) = st.ports {
                    for (rtcp, port) in [(false, p.of(side)), (true, p.of(side) + 1)] {
                        let (stats, peer, last) = self.stats_dict(call.session, port);
                        let mut s = Value::dict()
                            .with("local port", port)
                            .with("last packet", last)
                            .with("stats", stats);
                        if let Some(l) = st.peer[idx(side)].map(|p| p.local) {
                            s.insert("local address", l.to_string());
                        }
                        if let Some(peer) = peer {
                            s.insert(
                                "endpoint",
                                Value::dict()
                                    .with("family", if peer.is_ipv4() { "IPv4" } else { "IPv6" })
                                    .with("address", peer.ip().to_string())
                                    .with("port", peer.port()),
                            );
                        }
                        if rtcp {
                            s.insert("flags", vec![Value::str("RTCP")]);
                        }
                        streams.push(s);
                    }
                }
                medias.push(
                    Value::dict()
                        .with("index", (i + 1) as u64)
                        .with("type", st.kind.as_str())
                        .with("protocol", st.proto.as_str())
                        .with("streams", streams),
                );
            }
            let mut t = Value::dict()
                .with("tag", tag.as_str())
                .with("created", unix(call.created))
                .with("medias", medias);
            if let Some(o) = &call.tags[idx(side.other())] {
                t.insert("in dialogue with", o.as_str());
            }
            tags.insert(tag.as_bytes(), t);
        }
        Ok(Response::ok()
            .with("created", unix(call.created))
            .with("last signal", unix(call.last_signal))
            .with("tags", tags)
            .with("totals", self.totals(call)))
    }

    fn list(&self, limit: Option<u32>) -> Response {
        let limit = limit.map_or(DEFAULT_LIST_LIMIT, |l| l as usize);
        let mut ids: Vec<&String> = self.calls.keys().collect();
        ids.sort();
        let calls: Vec<Value> = ids.into_iter().take(limit).map(Value::str).collect();
        Response::ok().with("calls", calls)
    }
}

#[cfg(test)]
mod tests {
    use super::super::backend::MemoryBackend;
    use super::*;

    fn interfaces() -> Vec<Interface> {
        vec![
            Interface::new(
                "pub",
                &[
                    "203.0.113.1".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                ],
            ),
            Interface::new("priv", &["10.0.0.1".parse().unwrap()]),
        ]
    }

    fn engine() -> Engine<MemoryBackend> {
        Engine::new(Arc::new(MemoryBackend::new(30000, 30100)), interfaces())
    }

    fn query(call: &str) -> Request {
        Request::Query {
            call_id: call.into(),
        }
    }

    fn delete(call: &str) -> Request {
        Request::Delete(Delete {
            call_id: call.into(),
            from_tag: None,
            to_tag: None,
        })
    }

    const CALLER: &str = "v=0\r\no=a 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n";
    const CALLEE: &str = "v=0\r\no=b 2 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

    fn offer(call: &str, tag: &str, sdp: &str) -> Request {
        let mut oa = OfferAnswer::new(call, tag, sdp);
        oa.flags.strict_source = true;
        oa.replace.origin = true;
        Request::Offer(oa)
    }

    fn answer(call: &str, from: &str, to: &str, sdp: &str) -> Request {
        let mut oa = OfferAnswer::new(call, from, sdp);
        oa.to_tag = Some(to.into());
        Request::Answer(oa)
    }

    #[test]
    fn offer_answer_query_delete() {
        let mut e = engine();
        assert_eq!(e.handle(&Request::Ping).result(), Some("pong"));
        let r = e.handle(&offer("c1", "ft", CALLER));
        assert!(r.is_ok(), "{r:?}");
        let sdp = r.sdp().unwrap();
        assert_eq!(
            sdp,
            "v=0\r\no=a 1 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\na=sendrecv\r\n"
        );
        let sess = e.backend().session(1).unwrap();
        assert_eq!(sess.streams, vec![StreamPorts { a: 30000, b: 30002 }]);
        let a = sess.peers[&(30000, false)];
        assert_eq!(a.rtp, Some("198.51.100.7:4000".parse().unwrap()));
        assert_eq!(a.rtcp, Some("198.51.100.7:4001".parse().unwrap()));
        assert!(a.strict_source && a.latch);
        assert!(!sess.active);

        // Retransmitted offer: same ports.
        assert_eq!(e.handle(&offer("c1", "ft", CALLER)).sdp(), Some(sdp));

        let r = e.handle(&answer("c1", "ft", "tt", CALLEE));
        assert!(r.is_ok(), "{r:?}");
        assert!(r.sdp().unwrap().contains("m=audio 30000 RTP/AVP 0\r\n"));
        assert!(r.sdp().unwrap().contains("o=b 2 2 IN IP4 192.0.2.9\r\n"));
        let sess = e.backend().session(1).unwrap();
        assert!(sess.active);
        assert_eq!(
            sess.peers[&(30000, true)].rtp,
            Some("192.0.2.9:5000".parse().unwrap())
        );

        let q = e.handle(&Request::Query {
            call_id: "c1".into(),
        });
        assert!(q.is_ok(), "{q:?}");
        let ft = q.get("tags").unwrap().get("ft").unwrap();
        assert_eq!(ft.get("in dialogue with").unwrap().as_str(), Some("tt"));
        let stream0 = &ft.get("medias").unwrap().as_list().unwrap()[0]
            .get("streams")
            .unwrap()
            .as_list()
            .unwrap()[0];
        assert_eq!(stream0.get("local port").unwrap().as_int(), Some(30000));
        assert_eq!(
            stream0
                .get("endpoint")
                .unwrap()
                .get("port")
                .unwrap()
                .as_int(),
            Some(4000)
        );

        let l = e.handle(&Request::List { limit: None });
        assert_eq!(l.get("calls").unwrap().as_list().unwrap().len(), 1);

        let d = e.handle(&Request::Delete(Delete {
            call_id: "c1".into(),
            from_tag: Some("ft".into()),
            to_tag: None,
        }));
        assert!(d.is_ok(), "{d:?}");
        assert_eq!(e.backend().session_count(), 0);
        assert_eq!(
            e.handle(&Request::Query {
                call_id: "c1".into()
            })
            .error_reason(),
            Some("Unknown call-id")
        );
    }

    #[test]
    fn reinvite_from_callee_and_direction() {
        let mut e = engine();
        let mut o = OfferAnswer::new("c2", "ft", CALLER);
        o.direction = vec!["pub".into(), "priv".into()];
        let r = e.handle(&Request::Offer(o));
        assert!(r.sdp().unwrap().contains("c=IN IP4 10.0.0.1\r\n"), "{r:?}");
        let r = e.handle(&answer("c2", "ft", "tt", CALLEE));
        assert!(
            r.sdp().unwrap().contains("c=IN IP4 203.0.113.1\r\n"),
            "{r:?}"
        );
        // Callee re-INVITEs with a new port: its offer goes to the caller, via side A's port.
        let moved = CALLEE.replace("5000", "5008");
        let r = e.handle(&offer("c2", "tt", &moved));
        assert!(r.sdp().unwrap().contains("m=audio 30000 "), "{r:?}");
        assert_eq!(
            e.backend().session(1).unwrap().peers[&(30000, true)].rtp,
            Some("192.0.2.9:5008".parse().unwrap())
        );
        let r = e.handle(&answer("c2", "tt", "ft", CALLER));
        assert!(r.sdp().unwrap().contains("m=audio 30002 "), "{r:?}");
    }

    #[test]
    fn calls_the_relay_ended_disappear() {
        let mut e = engine();
        assert!(e.handle(&offer("c6", "ft", CALLER)).is_ok());
        e.backend().remove_session(1).unwrap();
        e.last_prune = None;
        let l = e.handle(&Request::List { limit: None });
        assert_eq!(l.get("calls").unwrap().as_list().unwrap().len(), 0);
        // A new offer with the same Call-ID starts a new call.
        e.last_prune = None;
        assert!(e.handle(&offer("c6", "ft", CALLER)).is_ok());
        assert!(e.backend().session(2).is_some());
    }

    /// A "restart": the snapshot of one engine restored into a new one over the backend that
    /// survived, minus a session the relay did not recover.
    #[test]
    fn snapshot_restore_joins_with_the_recovered_sessions() {
        let mut e = engine();
        let mut o = OfferAnswer::new("c1", "ft", CALLER);
        o.direction = vec!["priv".into(), "pub".into()];
        assert!(e.handle(&Request::Offer(o)).is_ok());
        assert!(e.handle(&answer("c1", "ft", "tt", CALLEE)).is_ok());
        assert!(e.handle(&offer("c2", "ft", CALLER)).is_ok());
        let snap = e.snapshot();
        assert_eq!(snap.calls.len(), 2);
        assert_eq!(snap.calls[0].iface, ["priv".to_string(), "pub".to_string()]);
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snap);

        let backend = e.backend().clone();
        backend.remove_session(2).unwrap(); // c2's session was not recovered
        drop(e);
        let mut e2 = Engine::new(backend.clone(), interfaces());
        let r = e2.restore(snap.clone());
        assert_eq!(r.adopted, vec!["c1".to_string()]);
        assert_eq!(r.dropped.len(), 1);
        assert_eq!(r.dropped[0].0, "c2");
        assert_eq!(backend.session(1).unwrap().call_id, "c1");
        assert_eq!(e2.call_count(), 1);

        // The adopted call is managed as before: query, re-INVITE on its ports, delete.
        let q = e2.handle(&query("c1"));
        let ft = q.get("tags").unwrap().get("ft").unwrap();
        assert_eq!(ft.get("in dialogue with").unwrap().as_str(), Some("tt"));
        let r = e2.handle(&offer("c1", "ft", CALLER));
        assert!(
            r.sdp().unwrap().contains("c=IN IP4 203.0.113.1\r\n"),
            "{r:?}"
        );
        assert!(r.sdp().unwrap().contains("m=audio 30002 "), "{r:?}");
        // Restoring the same snapshot again adopts nothing twice.
        let again = e2.restore(snap);
        assert!(again.adopted.is_empty());
        assert_eq!(e2.call_count(), 1);
        assert!(e2.handle(&delete("c1")).is_ok());
        assert_eq!(backend.session_count(), 0);
    }

    #[test]
    fn restore_refuses_records_it_cannot_trust() {
        let mut e = engine();
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        let good = e.snapshot().calls.remove(0);
        let mut e2 = Engine::new(e.backend().clone(), interfaces());
        let mut odd_port = good.clone();
        odd_port.call_id = "odd".into();
        odd_port.streams[0].ports = Some(StreamPorts { a: 30001, b: 30002 });
        let mut no_tag = good.clone();
        no_tag.call_id = "untagged".into();
        no_tag.tags = [None, None];
        let mut gone_iface = good.clone();
        gone_iface.iface = ["gone".into(), "gone".into()];
        let mut same_session = good.clone();
        same_session.call_id = "twin".into();
        let r = e2.restore(Snapshot::new(vec![
            odd_port,
            no_tag,
            gone_iface,
            same_session,
        ]));
        assert_eq!(r.adopted, vec!["c1".to_string()], "{r:?}");
        assert_eq!(r.dropped.len(), 3);
        // An interface that no longer exists falls back to the default one.
        assert_eq!(
            e2.snapshot().calls[0].iface,
            ["pub".to_string(), "pub".to_string()]
        );
    }

    #[test]
    fn every_change_is_saved() {
        let dir = std::env::temp_dir().join(format!("ng-engine-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = StateFile::new(&dir);
        let mut e = engine();
        e.set_state_file(file.clone());
        assert_eq!(file.load().unwrap().unwrap().calls.len(), 0);
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        assert!(e.handle(&offer("c2", "ft", CALLER)).is_ok());
        let saved = file.load().unwrap().unwrap();
        assert_eq!(saved, e.snapshot());
        assert_eq!(saved.calls.len(), 2);
        assert!(e.handle(&delete("c1")).is_ok());
        assert_eq!(file.load().unwrap().unwrap().calls.len(), 1);
        // The relay timed c2 out.
        e.backend().remove_session(2).unwrap();
        assert_eq!(e.forget_session(2).as_deref(), Some("c2"));
        assert_eq!(e.forget_session(2), None);
        assert_eq!(file.load().unwrap().unwrap().calls.len(), 0);
        assert_eq!(
            e.handle(&query("c2")).error_reason(),
            Some("Unknown call-id")
        );
        file.remove().unwrap();
    }

    #[test]
    fn errors_are_replies() {
        let mut e = engine();
        let r = e.handle(&answer("nope", "a", "b", CALLEE));
        assert_eq!(r.error_reason(), Some("Unknown call-id"));
        let r = e.handle(&offer("c3", "ft", "v=0\r\nm=audio x RTP/AVP 0\r\n"));
        assert!(r.error_reason().unwrap().starts_with("Failed to parse SDP"));
        assert_eq!(e.call_count(), 0, "failed first offer leaves nothing");
        assert_eq!(e.backend().session_count(), 0);
        // v6 offer on an interface without v6.
        let v6 = CALLER.replace("IN IP4 198.51.100.7", "IN IP6 2001:db8::7");
        let mut o = OfferAnswer::new("c4", "ft", &v6);
        o.direction = vec!["priv".into(), "priv".into()];
        let r = e.handle(&Request::Offer(o));
        assert!(r.error_reason().unwrap().contains("family"), "{r:?}");
        assert_eq!(e.backend().session_count(), 0);
        // v6 on pub works, and an answer with the wrong media count is refused.
        let r = e.handle(&offer("c5", "ft", &v6));
        assert!(
            r.sdp().unwrap().contains("c=IN IP6 2001:db8::1\r\n"),
            "{r:?}"
        );
        let two = format!("{CALLEE}m=video 0 RTP/AVP 96\r\n");
        let r = e.handle(&answer("c5", "ft", "tt", &two));
        assert!(
            r.error_reason().unwrap().contains("media sections"),
            "{r:?}"
        );
    }
}
