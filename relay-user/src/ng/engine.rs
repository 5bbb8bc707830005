//! The ng command semantics: bencode requests translated to typed calls on the media call
//! table ([`MediaCalls`]), and its results and errors back into rtpengine's replies.
//!
//! Each call has two tags: side A is the party that sent the first offer (its from-tag), side
//! B the one that answered (its to-tag). Every SDP is attributed to the side of the tag that
//! sent it — the from-tag for an offer, the to-tag for an answer.

use std::sync::Arc;
use std::time::Instant;

use super::bencode::Value;
use super::message::{Delete, Ice, OfferAnswer, Request, Response};
use crate::media::{
    Anchor, BackendError, Call, CallStats, Interface, MediaBackend, MediaCalls, MediaError,
    Restored, SessionId, Side, Signal, Snapshot, StateFile, Stream, StreamPorts, Traffic,
    side_index, unix,
};
use crate::sdp::Sdp;
use crate::session::SessionError;

/// Most calls listed by `list` without a `limit` (rtpengine's default is 32).
const DEFAULT_LIST_LIMIT: usize = 32;

/// How often the call table is checked against the relay's sessions.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// rtpengine's reason for an offer over its session limit; Kamailio's rtpengine module moves
/// on to another instance of the set on it (as on any `load limit` result).
pub const SESSION_LIMIT_REASON: &str = "Parallel session limit reached";

/// rtpengine's error reason when no relay port is left; Kamailio's rtpengine module (5.6 and
/// later) moves on to another instance of the set on it.
pub const OUT_OF_PORTS_REASON: &str = "Ran out of ports";

/// rtpengine's warning on a `delete` of a call it does not hold (the result is still `ok`).
pub const DELETE_NOT_FOUND_WARNING: &str = "Call-ID not found or tags didn't match";

/// The ng side of a call table. Not internally synchronised: the server keeps it behind a
/// mutex.
pub struct Engine<B: MediaBackend> {
    calls: MediaCalls<B>,
    last_prune: Option<Instant>,
    /// Most calls held at once (`None`: no limit but the port range).
    max_calls: Option<usize>,
    /// Calls deleted with a `delete-delay`: removed when their time comes. At most one entry
    /// per call held, so bounded by the call table.
    delayed: Vec<(Instant, String)>,
}

/// What an offer or answer asks of the relay, in the media API's terms.
fn anchor(oa: &OfferAnswer) -> Anchor {
    Anchor {
        symmetric: oa.flags.latch(),
        // Strict source is relayd's default (RTP bleed); the `strict source` flag is accepted
        // and changes nothing.
        strict_source: true,
        peer_address: oa.received_from.filter(|_| oa.flags.sip_source_address),
        // `received from` is where the endpoint's SIP came from: its media may too (NAT).
        sip_source: oa.received_from,
        family: oa.address_family,
        direction: match oa.direction.as_slice() {
            [from, to] => Some([from.clone(), to.clone()]),
            _ => None,
        },
        replace_origin: oa.replace.origin,
        remove_ice: oa.ice == Some(Ice::Remove),
    }
}

fn traffic(t: Traffic) -> Value {
    Value::dict()
        .with("packets", t.packets)
        .with("bytes", t.bytes)
        .with("errors", t.errors)
}

fn totals(s: CallStats) -> Value {
    Value::dict()
        .with("RTP", traffic(s.rtp))
        .with("RTCP", traffic(s.rtcp))
}

impl<B: MediaBackend> Engine<B> {
    /// `interfaces` must not be empty; the first is used when a request names no direction.
    pub fn new(backend: Arc<B>, interfaces: Vec<Interface>) -> Engine<B> {
        Engine::over(MediaCalls::new(backend, interfaces))
    }

    /// The protocol over a call table set up by the caller (its relay sockets and limits:
    /// [`MediaCalls::with_relay`], [`MediaCalls::with_limits`]).
    pub fn over(calls: MediaCalls<B>) -> Engine<B> {
        Engine {
            calls,
            last_prune: None,
            max_calls: None,
            delayed: Vec::new(),
        }
    }

    /// Refuses offers for new calls beyond `max` calls held, with rtpengine's `load limit`
    /// reply, so a Kamailio with several relays in its set tries the next one.
    pub fn with_max_calls(mut self, max: Option<usize>) -> Engine<B> {
        self.max_calls = max;
        self
    }

    /// Persists the call table to `file` from now on (see [`MediaCalls::set_state_file`]).
    pub fn set_state_file(&mut self, file: StateFile) {
        self.calls.set_state_file(file);
    }

    /// The call table as the state file would hold it.
    pub fn snapshot(&self) -> Snapshot {
        self.calls.snapshot()
    }

    /// Takes back the calls of a snapshot saved before a restart ([`MediaCalls::restore`]).
    pub fn restore(&mut self, snap: Snapshot) -> Restored {
        self.calls.restore(snap)
    }

    /// The relay backend.
    pub fn backend(&self) -> &Arc<B> {
        self.calls.backend()
    }

    /// Calls held.
    pub fn call_count(&self) -> usize {
        self.calls.call_count()
    }

    /// Forgets the call of a session the relay already removed (media timeout).
    pub fn forget_session(&mut self, session: SessionId) -> Option<String> {
        self.calls.forget_session(session)
    }

    /// Handles one request. Failures become `result: error` replies; nothing here panics on
    /// client input.
    pub fn handle(&mut self, req: &Request) -> Response {
        self.prune();
        let r = match req {
            Request::Ping => Ok(Response::pong()),
            Request::Offer(oa) => {
                if self.over_limit(&oa.call_id) {
                    tracing::info!(call_id = %oa.call_id, "offer refused: session limit reached");
                    return Response::load_limit(SESSION_LIMIT_REASON);
                }
                self.undelay(&oa.call_id);
                self.calls
                    .offer(signal(oa, &oa.from_tag), &anchor(oa))
                    .map(sdp_reply)
                    .map_err(reason)
            }
            Request::Answer(oa) => {
                self.undelay(&oa.call_id);
                self.answer(oa)
            }
            Request::Delete(d) => self.delete(d).map_err(reason),
            Request::Query { call_id } => self.query(call_id).map_err(reason),
            Request::List { limit } => Ok(self.list(*limit)),
        };
        r.unwrap_or_else(|reason| {
            if reason == OUT_OF_PORTS_REASON {
                // The operator's sign that --ports is too small for the load.
                tracing::warn!(command = req.command(), "ng request refused: {reason}");
            } else {
                tracing::debug!(command = req.command(), %reason, "ng request failed");
            }
            Response::error(reason)
        })
    }

    /// Time-driven work with no request to trigger it: calls whose `delete-delay` ran out are
    /// removed, and calls whose session the relay timed out are forgotten. The server calls
    /// it a few times a second; an idle proxy sends nothing for minutes.
    pub fn housekeep(&mut self) {
        self.prune();
    }

    /// Drops calls whose session the relay removed by itself (media timeout), so `list`,
    /// `query` and a new offer with the same Call-ID see the call as gone.
    fn prune(&mut self) {
        let now = Instant::now();
        self.run_delayed(now);
        // O(calls): at most a few times a second, not per request.
        if self
            .last_prune
            .is_some_and(|t| now.duration_since(t) < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(now);
        self.calls.prune();
    }

    /// Removes the calls whose `delete-delay` has passed.
    fn run_delayed(&mut self, now: Instant) {
        if self.delayed.iter().all(|(t, _)| *t > now) {
            return;
        }
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = keep;
        for (_, call_id) in due {
            // Gone already (media timeout, a second delete): nothing to do.
            if let Err(e) = self.calls.delete(&call_id, &[]) {
                tracing::debug!(%call_id, error = %e, "delayed delete: call already gone");
            }
        }
    }

    /// A new offer or answer revives a call waiting for its delayed delete, as in rtpengine.
    fn undelay(&mut self, call_id: &str) {
        self.delayed.retain(|(_, c)| c != call_id);
    }

    /// Whether an offer for `call_id` would be a call beyond the session limit.
    fn over_limit(&self, call_id: &str) -> bool {
        self.max_calls
            .is_some_and(|max| self.calls.call(call_id).is_none() && self.calls.call_count() >= max)
    }

    fn answer(&mut self, oa: &OfferAnswer) -> Result<Response, String> {
        let Some(to_tag) = oa.to_tag.as_deref() else {
            // An SDP that does not parse is the first thing reported, as for an offer.
            Sdp::parse(&oa.sdp).map_err(|e| MediaError::Sdp(e).to_string())?;
            return Err("Missing to-tag".into());
        };
        self.calls
            .answer(signal(oa, to_tag), &oa.from_tag, &anchor(oa))
            .map(sdp_reply)
            .map_err(reason)
    }

    /// rtpengine (10.5) answers a delete of a call it does not hold, or with tags that are
    /// not the call's, `ok` with this warning: a second delete (CANCEL then the failure
    /// route's, a retransmitted BYE) is not a failure for Kamailio's script.
    fn delete(&mut self, d: &Delete) -> Result<Response, MediaError> {
        match self.delete_call(d) {
            Err(MediaError::UnknownCall | MediaError::TagNotInCall) => {
                Ok(Response::ok().with("warning", DELETE_NOT_FOUND_WARNING))
            }
            r => r,
        }
    }

    fn delete_call(&mut self, d: &Delete) -> Result<Response, MediaError> {
        let tags: Vec<&str> = [&d.from_tag, &d.to_tag]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if let Some(secs) = d.delete_delay.filter(|s| *s > 0) {
            let call = self.calls.call(&d.call_id).ok_or(MediaError::UnknownCall)?;
            if tags.iter().any(|t| call.side_of(t).is_none()) {
                return Err(MediaError::TagNotInCall);
            }
            let created = call.created;
            let stats = self.calls.totals(call);
            let at = Instant::now() + std::time::Duration::from_secs(u64::from(secs));
            self.undelay(&d.call_id);
            self.delayed.push((at, d.call_id.clone()));
            return Ok(Response::ok()
                .with("created", unix(created))
                .with("totals", totals(stats)));
        }
        self.undelay(&d.call_id);
        let gone = self.calls.delete(&d.call_id, &tags)?;
        Ok(Response::ok()
            .with("created", unix(gone.created))
            .with("totals", totals(gone.stats)))
    }

    /// One relay port of a stream, as `query` lists it.
    fn port_dict(
        &self,
        call: &Call,
        st: &Stream,
        side: Side,
        ports: StreamPorts,
        rtcp: bool,
    ) -> Value {
        let port = ports.of(side) + u16::from(rtcp);
        let s = self.calls.leg_stats(call.session, port);
        let stats = Value::dict()
            .with("packets", s.packets)
            .with("bytes", s.bytes)
            .with("errors", s.strict_drops);
        let mut d = Value::dict()
            .with("local port", port)
            .with("last packet", s.last_seen.map_or(0, unix))
            .with("stats", stats);
        if let Some(l) = st.peer[side_index(side)].map(|p| p.local) {
            d.insert("local address", l.to_string());
        }
        if let Some(peer) = s.peer {
            d.insert(
                "endpoint",
                Value::dict()
                    .with("family", if peer.is_ipv4() { "IPv4" } else { "IPv6" })
                    .with("address", peer.ip().to_string())
                    .with("port", peer.port()),
            );
        }
        if rtcp {
            d.insert("flags", vec![Value::str("RTCP")]);
        }
        d
    }

    /// rtpengine's `query` layout: `tags` → tag → `medias` → `streams` (RTP, RTCP) with
    /// `local port`, `endpoint`, `last packet` and `stats`; plus `totals`.
    fn query(&self, call_id: &str) -> Result<Response, MediaError> {
        let call = self.calls.call(call_id).ok_or(MediaError::UnknownCall)?;
        let mut tags = Value::dict();
        for side in [Side::A, Side::B] {
            let tag = call.tag(side).unwrap_or_default();
            let mut medias = Vec::new();
            for (i, st) in call.streams.iter().enumerate() {
                let streams: Vec<Value> = st
                    .ports
                    .into_iter()
                    .flat_map(|p| [false, true].map(|rtcp| self.port_dict(call, st, side, p, rtcp)))
                    .collect();
                medias.push(
                    Value::dict()
                        .with("index", (i + 1) as u64)
                        .with("type", st.kind.as_str())
                        .with("protocol", st.proto.as_str())
                        .with("streams", streams),
                );
            }
            let mut t = Value::dict()
                .with("tag", tag)
                .with("created", unix(call.created))
                .with("medias", medias);
            if let Some(o) = call.tag(side.other()) {
                t.insert("in dialogue with", o);
            }
            tags.insert(tag.as_bytes(), t);
        }
        Ok(Response::ok()
            .with("created", unix(call.created))
            .with("last signal", unix(call.last_signal))
            .with("tags", tags)
            .with("totals", totals(self.calls.totals(call))))
    }

    fn list(&self, limit: Option<u32>) -> Response {
        let limit = limit.map_or(DEFAULT_LIST_LIMIT, |l| l as usize);
        let calls: Vec<Value> = self
            .calls
            .call_ids()
            .into_iter()
            .take(limit)
            .map(Value::str)
            .collect();
        Response::ok().with("calls", calls)
    }
}

/// The reply's `error-reason`: rtpengine's own words where Kamailio acts on them.
fn reason(e: MediaError) -> String {
    let out_of_ports = match &e {
        MediaError::Backend(BackendError::PortsExhausted) => true,
        MediaError::Backend(BackendError::Relay(s)) => {
            matches!(**s, SessionError::PortsExhausted(_))
        }
        _ => false,
    };
    if out_of_ports {
        OUT_OF_PORTS_REASON.to_string()
    } else {
        e.to_string()
    }
}

/// The SDP of an offer or answer, attributed to `tag`.
fn signal<'a>(oa: &'a OfferAnswer, tag: &'a str) -> Signal<'a> {
    Signal {
        call_id: &oa.call_id,
        tag,
        sdp: &oa.sdp,
    }
}

fn sdp_reply(sdp: String) -> Response {
    Response::ok().with("sdp", sdp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MemoryBackend;

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
            delete_delay: None,
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
            delete_delay: None,
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

    /// SDP that would make the relay loop, reflect or run out of ports gets an ng error, and
    /// takes nothing.
    #[test]
    fn refused_destinations_and_limits_are_ng_errors() {
        let calls = MediaCalls::new(Arc::new(MemoryBackend::new(30000, 30100)), interfaces())
            .with_relay("203.0.113.1".parse().unwrap(), 30000..=30100)
            .with_limits(crate::media::Limits::streams(2));
        let mut e = Engine::over(calls);
        let to_self = CALLER
            .replace("198.51.100.7", "203.0.113.1")
            .replace("4000", "30002");
        let multicast = CALLER.replace("198.51.100.7", "224.0.0.1");
        let many = format!("{CALLER}m=audio 4002 RTP/AVP 0\r\nm=audio 4004 RTP/AVP 0\r\n");
        for (sdp, why) in [
            (to_self, "relay's own ports"),
            (multicast, "multicast"),
            (many, "at most 2 allowed"),
        ] {
            let r = e.handle(&offer("c1", "ft", &sdp));
            assert_eq!(r.result(), Some("error"), "{r:?}");
            let reason = r.error_reason().unwrap_or_default();
            assert!(reason.contains(why), "{reason}");
        }
        assert_eq!(e.backend().session_count(), 0);
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
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
    fn delete_of_unknown_call_is_ok_with_warning_as_in_rtpengine() {
        let mut e = engine();
        for r in [
            e.handle(&delete("nope")),
            e.handle(&Request::Delete(Delete {
                call_id: "nope".into(),
                from_tag: None,
                to_tag: None,
                delete_delay: Some(2),
            })),
        ] {
            assert_eq!(r.result(), Some("ok"), "{r:?}");
            assert_eq!(
                r.get("warning").and_then(Value::as_str),
                Some(DELETE_NOT_FOUND_WARNING)
            );
        }
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        let r = e.handle(&Request::Delete(Delete {
            call_id: "c1".into(),
            from_tag: Some("not-a-tag".into()),
            to_tag: None,
            delete_delay: None,
        }));
        assert!(r.get("warning").is_some(), "{r:?}");
        assert_eq!(e.call_count(), 1, "a wrong tag deletes nothing");
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

    #[test]
    fn session_limit_answers_load_limit() {
        let mut e = engine().with_max_calls(Some(1));
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        // A retransmitted or re-offer of a call held is not a new call.
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        let r = e.handle(&offer("c2", "ft", CALLER));
        assert_eq!(r.result(), Some("load limit"), "{r:?}");
        assert_eq!(
            r.get("message").and_then(Value::as_str),
            Some(SESSION_LIMIT_REASON)
        );
        assert_eq!(e.call_count(), 1);
        assert!(e.handle(&delete("c1")).is_ok());
        assert!(e.handle(&offer("c2", "ft", CALLER)).is_ok());
    }

    #[test]
    fn out_of_ports_is_rtpengines_reason() {
        // Room for one stream (two port pairs).
        let mut e = Engine::new(Arc::new(MemoryBackend::new(30000, 30004)), interfaces());
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        let r = e.handle(&offer("c2", "ft", CALLER));
        assert_eq!(r.result(), Some("error"), "{r:?}");
        assert_eq!(r.error_reason(), Some(OUT_OF_PORTS_REASON));
    }

    #[test]
    fn delete_delay_keeps_the_call_until_due() {
        let mut e = engine();
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        let d = e.handle(&Request::Delete(Delete {
            call_id: "c1".into(),
            from_tag: Some("ft".into()),
            to_tag: None,
            delete_delay: Some(1),
        }));
        assert!(d.is_ok(), "{d:?}");
        assert!(d.get("totals").is_some());
        // Still there, and still queryable.
        assert!(e.handle(&query("c1")).is_ok());
        assert_eq!(e.backend().session_count(), 1);
        // A tag that is not the call's changes nothing (rtpengine's warning), as without a
        // delay.
        let bad = e.handle(&Request::Delete(Delete {
            call_id: "c1".into(),
            from_tag: Some("nope".into()),
            to_tag: None,
            delete_delay: Some(1),
        }));
        assert_eq!(
            bad.get("warning").and_then(Value::as_str),
            Some(DELETE_NOT_FOUND_WARNING)
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while e.call_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            e.handle(&Request::Ping);
        }
        assert_eq!(e.call_count(), 0);
        assert_eq!(e.backend().session_count(), 0);
        assert_eq!(e.handle(&query("c1")).result(), Some("error"));
    }

    #[test]
    fn new_offer_revives_a_delayed_delete() {
        let mut e = engine();
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        let d = e.handle(&Request::Delete(Delete {
            call_id: "c1".into(),
            from_tag: None,
            to_tag: None,
            delete_delay: Some(1),
        }));
        assert!(d.is_ok());
        assert!(e.handle(&offer("c1", "ft", CALLER)).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        e.handle(&Request::Ping);
        assert_eq!(e.call_count(), 1);
    }
}
