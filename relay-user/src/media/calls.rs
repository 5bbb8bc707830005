//! The media call table: offer, answer, re-offer, delete, statistics and timed-out calls over
//! a [`MediaBackend`].
//!
//! One call per call id, one relay stream per m= line. Each call has two tags: side A is the
//! party that sent the first offer, side B the one that answered. Every SDP is attributed to
//! the side of the tag that sent it, so a re-offer from the callee works the same way as one
//! from the caller. An SDP from side X sets X's peer and is rewritten to point its receiver at
//! the relay port of the other side.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::backend::{LegStats, MediaBackend, PeerSetup, SessionId, Side, StreamPorts};
use super::error::MediaError;
use super::guard::{Destinations, Limits, PORTS_PER_STREAM};
use super::state::StateFile;
use crate::sdp::{self, Rewrite, Sdp};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip` (a v4-mapped IPv6 address counts as IPv6).
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

/// A relay interface the SDP may advertise (rtpengine's `--interface=name/addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface's name, as `direction` names it.
    pub name: String,
    /// Its IPv4 relay address, if it has one.
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 relay address, if it has one.
    pub v6: Option<Ipv6Addr>,
}

impl Interface {
    /// An interface named `name` with the first IPv4 and first IPv6 address of `addrs`.
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

    fn addrs(&self) -> impl Iterator<Item = IpAddr> {
        [self.v4.map(IpAddr::V4), self.v6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
    }

    fn addr(&self, fam: Family) -> Option<IpAddr> {
        match fam {
            Family::V4 => self.v4.map(IpAddr::V4),
            Family::V6 => self.v6.map(IpAddr::V6),
        }
    }
}

/// How to anchor one SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Symmetric RTP: learn each peer from its first packet (NAT). On by default.
    pub symmetric: bool,
    /// Once a peer is learnt, drop packets from other sources, and before, those from
    /// addresses it may not be learnt from (RTP bleed). On by default.
    pub strict_source: bool,
    /// The peer's address to use instead of the SDP's (the SIP source address).
    pub peer_address: Option<IpAddr>,
    /// The address the sender's SIP came from: its media may come from there rather than
    /// from the SDP's address (NAT), so its legs may learn their peer from it too.
    pub sip_source: Option<IpAddr>,
    /// The address family the receiver of this SDP wants; default: the SDP's.
    pub family: Option<Family>,
    /// Interface names: the sender's, the receiver's. Default: as last signalled (a new
    /// call: the first interface).
    pub direction: Option<[String; 2]>,
    /// Rewrite the o= line's address too (topology hiding).
    pub replace_origin: bool,
    /// Remove ICE attributes.
    pub remove_ice: bool,
}

impl Default for Anchor {
    fn default() -> Self {
        Anchor {
            symmetric: true,
            strict_source: true,
            peer_address: None,
            sip_source: None,
            family: None,
            direction: None,
            replace_origin: false,
            remove_ice: false,
        }
    }
}

/// One SDP of a call: which call, the tag of the party that sent it, the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal<'a> {
    /// The call (the SIP Call-ID).
    pub call_id: &'a str,
    /// An offer's from-tag, an answer's to-tag.
    pub tag: &'a str,
    /// The SDP body.
    pub sdp: &'a str,
}

/// One m= line of a call.
#[derive(Debug)]
pub struct Stream {
    /// The media type (`audio`, `video`, ...).
    pub kind: String,
    /// The transport protocol (`RTP/AVP`, ...).
    pub proto: String,
    /// `None` for an m= line with port 0.
    pub ports: Option<StreamPorts>,
    /// Per side (A, B) what was last signalled.
    pub peer: [Option<PeerSetup>; 2],
}

/// One call of the table.
#[derive(Debug)]
pub struct Call {
    /// The relay session carrying the call's streams.
    pub session: SessionId,
    /// Side A's and side B's tags.
    pub tags: [Option<String>; 2],
    /// Interface index per side.
    pub(super) iface: [usize; 2],
    /// When the call was first offered.
    pub created: SystemTime,
    /// When the last offer or answer arrived.
    pub last_signal: SystemTime,
    /// One per m= line, in SDP order.
    pub streams: Vec<Stream>,
}

/// Index of a side in per-side arrays (A, B).
pub fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Call {
    /// Which side sent with this tag; `None` for a tag of neither side.
    pub fn side_of(&self, tag: &str) -> Option<Side> {
        [Side::A, Side::B]
            .into_iter()
            .find(|s| self.tags[side_index(*s)].as_deref() == Some(tag))
    }

    /// `side`'s tag, once known.
    pub fn tag(&self, side: Side) -> Option<&str> {
        self.tags[side_index(side)].as_deref()
    }
}

/// Traffic of one kind (RTP or RTCP) received by the relay for a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets received and relayed.
    pub packets: u64,
    /// UDP payload bytes of those packets.
    pub bytes: u64,
    /// Packets strict source refused.
    pub errors: u64,
}

/// A call's traffic, both sides together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// RTP, both sides.
    pub rtp: Traffic,
    /// RTCP, both sides.
    pub rtcp: Traffic,
}

/// What [`MediaCalls::delete`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// When the call was first offered.
    pub created: SystemTime,
    /// What it carried until the delete.
    pub stats: CallStats,
}

/// The media call table. Not internally synchronised: a server keeps it behind a mutex.
pub struct MediaCalls<B: MediaBackend> {
    pub(super) backend: Arc<B>,
    pub(super) interfaces: Vec<Interface>,
    pub(super) calls: HashMap<String, Call>,
    /// Where the table is persisted after every change (XDP mode: calls outlive relayd).
    pub(super) state: Option<StateFile>,
    /// The last save failed: the next failure is not logged again until one succeeds.
    pub(super) state_failing: bool,
    /// Where SDP may send media.
    pub(super) destinations: Destinations,
    pub(super) limits: Limits,
}

impl<B: MediaBackend> MediaCalls<B> {
    /// `interfaces` must not be empty; the first is used when a request names no direction.
    pub fn new(backend: Arc<B>, interfaces: Vec<Interface>) -> MediaCalls<B> {
        assert!(!interfaces.is_empty(), "media calls need a relay interface");
        let own: Vec<IpAddr> = interfaces.iter().flat_map(Interface::addrs).collect();
        MediaCalls {
            backend,
            interfaces,
            calls: HashMap::new(),
            state: None,
            state_failing: false,
            destinations: Destinations::new(&own, None),
            limits: Limits::default(),
        }
    }

    /// The relay's sockets (the address its media sockets bind, its port range): SDP may not
    /// send media to them. Without this only the interfaces' addresses are known as the
    /// relay's own.
    pub fn with_relay(self, address: IpAddr, ports: RangeInclusive<u16>) -> MediaCalls<B> {
        self.with_relay_on_host(address, ports, Vec::new())
    }

    /// [`MediaCalls::with_relay`] for sockets bound to the unspecified address, which receive
    /// on every address of the host: `host` lists them.
    pub fn with_relay_on_host(
        mut self,
        address: IpAddr,
        ports: RangeInclusive<u16>,
        host: Vec<IpAddr>,
    ) -> MediaCalls<B> {
        let mut own: Vec<IpAddr> = self.interfaces.iter().flat_map(Interface::addrs).collect();
        own.push(address);
        self.destinations = Destinations::new(&own, Some(ports)).with_host_addresses(host);
        self
    }

    /// How much one call may hold (default: [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> MediaCalls<B> {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The relay backend the table drives.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Calls in the table.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The call with this Call-ID, if any.
    pub fn call(&self, call_id: &str) -> Option<&Call> {
        self.calls.get(call_id)
    }

    /// Every call id, sorted.
    pub fn call_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.calls.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The session of `call_id`, if the call is known.
    pub fn session_of(&self, call_id: &str) -> Option<SessionId> {
        self.calls.get(call_id).map(|c| c.session)
    }

    /// An SDP offer: creates the call on the first one, re-offers otherwise. Returns the SDP
    /// rewritten to point at the relay.
    pub fn offer(&mut self, s: Signal<'_>, anchor: &Anchor) -> Result<String, MediaError> {
        let r = self.signal(s, None, anchor);
        self.persist();
        r
    }

    /// A re-offer (re-INVITE, UPDATE) on a call that must exist.
    pub fn reoffer(&mut self, s: Signal<'_>, anchor: &Anchor) -> Result<String, MediaError> {
        if !self.calls.contains_key(s.call_id) {
            return Err(MediaError::UnknownCall);
        }
        self.offer(s, anchor)
    }

    /// The answer to the last offer, whose sender's tag was `offerer`.
    pub fn answer(
        &mut self,
        s: Signal<'_>,
        offerer: &str,
        anchor: &Anchor,
    ) -> Result<String, MediaError> {
        let r = self.signal(s, Some(offerer), anchor);
        self.persist();
        r
    }

    /// Ends a call and frees its relay ports. Each of `tags` must be a side of the call.
    pub fn delete(&mut self, call_id: &str, tags: &[&str]) -> Result<Deleted, MediaError> {
        let r = self.remove(call_id, tags);
        self.persist();
        r
    }

    fn remove(&mut self, call_id: &str, tags: &[&str]) -> Result<Deleted, MediaError> {
        let call = self.calls.get(call_id).ok_or(MediaError::UnknownCall)?;
        if tags.iter().any(|t| call.side_of(t).is_none()) {
            return Err(MediaError::TagNotInCall);
        }
        let deleted = Deleted {
            created: call.created,
            stats: self.totals(call),
        };
        let session = call.session;
        self.calls.remove(call_id);
        self.backend.remove_session(session)?;
        Ok(deleted)
    }

    /// What the relay received for `call_id` so far.
    pub fn stats(&self, call_id: &str) -> Result<CallStats, MediaError> {
        let call = self.calls.get(call_id).ok_or(MediaError::UnknownCall)?;
        Ok(self.totals(call))
    }

    /// RTP packets relayed so far for `call_id`, both directions together.
    pub fn packets(&self, call_id: &str) -> Result<u64, MediaError> {
        self.stats(call_id).map(|s| s.rtp.packets)
    }

    /// What arrived on relay port `port` of `session` (nothing known: all zero).
    pub fn leg_stats(&self, session: SessionId, port: u16) -> LegStats {
        self.backend.leg_stats(session, port).unwrap_or_default()
    }

    /// Both sides' RTP and RTCP ports of every stream of `call`, summed.
    pub fn totals(&self, call: &Call) -> CallStats {
        let mut sums = [Traffic::default(); 2];
        for st in &call.streams {
            let Some(p) = st.ports else { continue };
            for side in [Side::A, Side::B] {
                for (k, port) in [p.of(side), p.of(side) + 1].into_iter().enumerate() {
                    let s = self.leg_stats(call.session, port);
                    sums[k].packets += s.packets;
                    sums[k].bytes += s.bytes;
                    sums[k].errors += s.strict_drops;
                }
            }
        }
        CallStats {
            rtp: sums[0],
            rtcp: sums[1],
        }
    }

    /// Drops calls whose session the relay removed by itself (media timeout). O(calls).
    /// Returns whether any call was dropped.
    pub fn prune(&mut self) -> bool {
        let backend = &self.backend;
        let before = self.calls.len();
        self.calls.retain(|id, c| {
            let alive = backend.has_session(c.session);
            if !alive {
                tracing::info!(call_id = %id, session = c.session, "relay ended the call (media timeout)");
            }
            alive
        });
        let pruned = before != self.calls.len();
        if pruned {
            self.persist();
        }
        pruned
    }

    /// Forgets the call of a session the relay already removed (media timeout). Returns the
    /// call id if the call was known.
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

    /// Has the relay remove sessions without media for `timeout`; returns their calls' ids
    /// (already forgotten here).
    pub fn timed_out(&mut self, timeout: Duration) -> Vec<String> {
        self.backend
            .reap(timeout)
            .into_iter()
            .filter_map(|s| self.forget_session(s))
            .collect()
    }

    fn iface_index(&self, name: &str) -> Result<usize, MediaError> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .ok_or_else(|| MediaError::UnknownInterface(name.to_owned()))
    }

    /// An offer (`offerer` is `None`) or an answer.
    fn signal(
        &mut self,
        s: Signal<'_>,
        offerer: Option<&str>,
        anchor: &Anchor,
    ) -> Result<String, MediaError> {
        let sdp = Sdp::parse(s.sdp).map_err(MediaError::Sdp)?;
        // Before anything changes: a refused SDP leaves the call (and the port range) as it was.
        self.vet(s.call_id, &sdp, anchor)?;
        let now = SystemTime::now();
        let new_call = !self.calls.contains_key(s.call_id);
        if new_call {
            if offerer.is_some() {
                return Err(MediaError::UnknownCall);
            }
            let session = self.backend.create_session(s.call_id)?;
            self.calls.insert(
                s.call_id.to_owned(),
                Call {
                    session,
                    tags: [Some(s.tag.to_owned()), None],
                    iface: [0, 0],
                    created: now,
                    last_signal: now,
                    streams: Vec::new(),
                },
            );
        }
        let r = self.apply(s, offerer, &sdp, anchor, now);
        if r.is_err() && new_call {
            // Do not leave a half-made call (and its ports) behind a failed first offer.
            if let Some(call) = self.calls.remove(s.call_id) {
                let _ = self.backend.remove_session(call.session);
            }
        }
        r
    }

    /// Refuses an SDP the relay must not act on: more streams or ports than a call may hold,
    /// or a destination that would make the relay loop or reflect (see [`Destinations`]).
    fn vet(&self, call_id: &str, sdp: &Sdp<'_>, anchor: &Anchor) -> Result<(), MediaError> {
        let (found, max) = (sdp.media.len(), self.limits.max_streams);
        if found > max {
            return Err(MediaError::TooManyStreams { found, max });
        }
        let call = self.calls.get(call_id);
        let has_ports = |i: usize| {
            call.and_then(|c| c.streams.get(i))
                .is_some_and(|st| st.ports.is_some())
        };
        let held = call.map_or(0, |c| {
            c.streams.iter().filter(|st| st.ports.is_some()).count()
        });
        let new = (sdp.media.iter().enumerate())
            .filter(|(i, m)| m.enabled() && !has_ports(*i))
            .count();
        let needed = (held + new).saturating_mul(PORTS_PER_STREAM);
        if needed > self.limits.max_call_ports {
            let max = self.limits.max_call_ports;
            return Err(MediaError::TooManyPorts { needed, max });
        }
        // 0.0.0.0 / :: on an answered call is RFC 2543 hold: the relay sends nothing there.
        // A new call has nothing to hold, and an unknown peer would be learnt from whoever
        // sends first.
        let answered = call.is_some_and(|c| c.tags[1].is_some());
        for (media, m) in sdp.media.iter().enumerate().filter(|(_, m)| m.enabled()) {
            let (rtp, rtcp) = destinations(m, anchor);
            if answered && rtp.ip().is_unspecified() {
                continue;
            }
            for to in [rtp, rtcp] {
                (self.destinations.check(to)).map_err(|why| MediaError::Destination {
                    media,
                    to,
                    why,
                })?;
            }
        }
        Ok(())
    }

    /// Which side sent `s`, checked against the call (and for an answer, against the offer).
    fn sender(
        &self,
        call: &Call,
        s: Signal<'_>,
        offerer: Option<&str>,
        sdp: &Sdp<'_>,
    ) -> Result<Side, MediaError> {
        let sender = match call.side_of(s.tag) {
            Some(x) => x,
            // The first answer names side B's tag.
            None if call.tags[1].is_none() && (offerer.is_some() || call.tags[0].is_none()) => {
                Side::B
            }
            None => return Err(MediaError::UnknownTag(s.tag.to_owned())),
        };
        if let Some(offerer) = offerer {
            // The other tag of the answer must be the other side's.
            if call.side_of(offerer) != Some(sender.other()) {
                return Err(MediaError::OffererMismatch);
            }
            if sdp.media.len() != call.streams.len() {
                return Err(MediaError::MediaCount {
                    answer: sdp.media.len(),
                    offer: call.streams.len(),
                });
            }
        }
        Ok(sender)
    }

    fn apply(
        &mut self,
        s: Signal<'_>,
        offerer: Option<&str>,
        sdp: &Sdp<'_>,
        anchor: &Anchor,
        now: SystemTime,
    ) -> Result<String, MediaError> {
        let call = &self.calls[s.call_id];
        let sender = self.sender(call, s, offerer, sdp)?;
        let receiver = sender.other();
        let mut iface = call.iface;
        if let Some([from, to]) = &anchor.direction {
            iface[side_index(sender)] = self.iface_index(from)?;
            iface[side_index(receiver)] = self.iface_index(to)?;
        }
        let session = call.session;
        let backend = &*self.backend;
        let (from_if, to_if) = (
            &self.interfaces[iface[side_index(sender)]],
            &self.interfaces[iface[side_index(receiver)]],
        );
        let call = self.calls.get_mut(s.call_id).expect("present");
        call.tags[side_index(sender)] = Some(s.tag.to_owned());
        call.iface = iface;
        call.last_signal = now;

        let mut out_ports = Vec::with_capacity(sdp.media.len());
        let mut out_addr = None;
        for (i, m) in sdp.media.iter().enumerate() {
            let sender_fam = Family::of(&m.addr);
            let local_sender = from_if
                .addr(sender_fam)
                .ok_or(MediaError::NoSenderAddress)?;
            let local_receiver = to_if
                .addr(anchor.family.unwrap_or(sender_fam))
                .ok_or(MediaError::NoReceiverAddress)?;
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
            let local = [local_sender, local_receiver];
            out_ports.push(anchor_stream(
                backend, session, st, m, sender, local, anchor,
            )?);
        }
        if call.tags[1].is_some() {
            backend.activate(session)?;
        }
        let body = sdp
            .rewrite(&Rewrite {
                addr: out_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                ports: out_ports,
                origin: anchor.replace_origin,
                remove_ice: anchor.remove_ice,
            })
            .map_err(MediaError::Rewrite)?;
        tracing::debug!(call_id = %s.call_id, ?sender, answer = offerer.is_some(), "sdp anchored");
        Ok(body)
    }
}

/// Where the relay is to send one stream's RTP and RTCP: the SDP's addresses, or the one the
/// anchor names instead (the SIP source address). One function, so what is checked
/// ([`MediaCalls::vet`]) is what is used.
fn destinations(m: &sdp::Media, anchor: &Anchor) -> (SocketAddr, SocketAddr) {
    let ip = anchor.peer_address.unwrap_or(m.addr);
    let rtcp_ip = if m.rtcp_addr == m.addr {
        ip
    } else {
        m.rtcp_addr
    };
    (
        SocketAddr::new(ip, m.port),
        SocketAddr::new(rtcp_ip, m.rtcp_port),
    )
}

/// Sets the sender's peer of one stream (allocating its ports on first use) and fixes the
/// receiver's relay address; returns the relay port the receiver is to send to.
fn anchor_stream<B: MediaBackend>(
    backend: &B,
    session: SessionId,
    st: &mut Stream,
    m: &sdp::Media,
    sender: Side,
    local: [IpAddr; 2],
    anchor: &Anchor,
) -> Result<u16, MediaError> {
    let [local_sender, local_receiver] = local;
    let receiver = sender.other();
    let ports = match st.ports {
        Some(p) => p,
        None => {
            let p = backend.create_stream(session)?;
            st.ports = Some(p);
            p
        }
    };
    let (rtp, rtcp) = destinations(m, anchor);
    // 0.0.0.0 / :: is RFC 2543 hold: the address is not known.
    let known = !rtp.ip().is_unspecified();
    let setup = PeerSetup {
        local: local_sender,
        rtp: known.then_some(rtp),
        rtcp: known.then_some(rtcp),
        latch: anchor.symmetric,
        strict_source: anchor.strict_source,
        trusted: anchor.sip_source,
    };
    backend.set_peer(session, ports, sender, &setup)?;
    st.peer[side_index(sender)] = Some(setup);
    // The receiving side's relay address is fixed now (it goes into the SDP), even if its
    // peer is not known yet.
    let recv = match st.peer[side_index(receiver)] {
        Some(p) if p.local == local_receiver => None,
        Some(p) => Some(PeerSetup {
            local: local_receiver,
            ..p
        }),
        None => Some(PeerSetup {
            local: local_receiver,
            rtp: None,
            rtcp: None,
            latch: anchor.symmetric,
            strict_source: anchor.strict_source,
            // Nothing to trust until its own SDP arrives: it learns nobody meanwhile.
            trusted: None,
        }),
    };
    if let Some(r) = recv {
        backend.set_peer(session, ports, receiver, &r)?;
        st.peer[side_index(receiver)] = Some(r);
    }
    Ok(ports.of(receiver))
}

#[cfg(test)]
mod tests {
    use super::super::MemoryBackend;
    use super::*;

    const CALLER: &str = "v=0\r\no=a 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const CALLEE: &str = "v=0\r\no=b 2 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

    fn calls() -> MediaCalls<MemoryBackend> {
        let iface = Interface::new("pub", &["203.0.113.1".parse().unwrap()]);
        MediaCalls::new(Arc::new(MemoryBackend::new(30000, 30100)), vec![iface])
    }

    fn sig<'a>(call_id: &'a str, tag: &'a str, sdp: &'a str) -> Signal<'a> {
        Signal { call_id, tag, sdp }
    }

    #[test]
    fn offer_answer_reoffer_stats_delete() {
        let mut m = calls();
        let a = Anchor {
            sip_source: Some("198.51.100.70".parse().unwrap()),
            ..Anchor::default()
        };
        let sdp = m.offer(sig("c1", "a", CALLER), &a).unwrap();
        assert!(sdp.contains("c=IN IP4 203.0.113.1\r\n") && sdp.contains("m=audio 30002 "));
        let peer = m.backend().session(1).unwrap().peers[&(30000, false)];
        assert!(
            peer.latch && peer.strict_source,
            "strict by default: {peer:?}"
        );
        assert_eq!(
            peer.trusted, a.sip_source,
            "the sender's SIP source is trusted"
        );
        let callee = m.backend().session(1).unwrap().peers[&(30000, true)];
        assert_eq!(
            callee.trusted, None,
            "the answerer trusts nothing before its SDP"
        );
        let sdp = m.answer(sig("c1", "b", CALLEE), "a", &a).unwrap();
        assert!(sdp.contains("m=audio 30000 "), "{sdp}");
        assert!(m.backend().session(1).unwrap().active);
        // The callee re-offers: same ports, its own side.
        let sdp = m.reoffer(sig("c1", "b", CALLEE), &a).unwrap();
        assert!(sdp.contains("m=audio 30000 "), "{sdp}");
        assert_eq!(m.stats("c1").unwrap(), CallStats::default());
        assert_eq!(m.packets("c1").unwrap(), 0);
        assert!(matches!(
            m.delete("c1", &["x"]),
            Err(MediaError::TagNotInCall)
        ));
        m.delete("c1", &["a", "b"]).unwrap();
        assert_eq!(m.backend().session_count(), 0);
        assert!(matches!(m.packets("c1"), Err(MediaError::UnknownCall)));
    }

    #[test]
    fn refusals_are_typed() {
        let mut m = calls();
        let a = Anchor::default();
        assert!(matches!(
            m.reoffer(sig("c1", "a", CALLER), &a),
            Err(MediaError::UnknownCall)
        ));
        assert!(matches!(
            m.answer(sig("c1", "b", CALLEE), "a", &a),
            Err(MediaError::UnknownCall)
        ));
        let e = m.offer(sig("c1", "a", "v=0\r\nm=audio x RTP/AVP 0\r\n"), &a);
        assert!(matches!(&e, Err(e) if e.is_sdp_fault()), "{e:?}");
        assert_eq!(m.call_count(), 0, "a failed first offer leaves nothing");
        m.offer(sig("c1", "a", CALLER), &a).unwrap();
        assert!(matches!(
            m.answer(sig("c1", "b", CALLEE), "z", &a),
            Err(MediaError::OffererMismatch)
        ));
        let far = Anchor {
            direction: Some(["pub".into(), "nowhere".into()]),
            ..Anchor::default()
        };
        assert!(matches!(
            m.offer(sig("c1", "a", CALLER), &far),
            Err(MediaError::UnknownInterface(n)) if n == "nowhere"
        ));
        let v6 = CALLER.replace("IN IP4 198.51.100.7", "IN IP6 2001:db8::7");
        let e = m.offer(sig("c2", "a", &v6), &a).unwrap_err();
        assert!(matches!(e, MediaError::NoSenderAddress));
        assert!(!e.is_sdp_fault());
    }

    #[test]
    fn timed_out_calls_are_reported_once() {
        let mut m = calls();
        m.offer(sig("c1", "a", CALLER), &Anchor::default()).unwrap();
        m.offer(sig("c2", "a", CALLER), &Anchor::default()).unwrap();
        let s = m.session_of("c2").unwrap();
        m.backend().expire(s);
        assert_eq!(m.timed_out(Duration::from_secs(30)), vec!["c2".to_string()]);
        assert!(m.timed_out(Duration::from_secs(30)).is_empty());
        assert_eq!(m.call_ids(), vec!["c1"]);
    }
}
