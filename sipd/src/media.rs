//! The call core's [`Media`] over relay-user: [`NgMedia`] drives relay-user's engine
//! in-process (same SDP rewriting and session handling as relayd, no control socket in
//! between); [`MemoryMedia`] drives it over the in-memory backend for tests.

use std::sync::Arc;
use std::time::Duration;

use relay_user::Sessions;
use relay_user::ng::{Engine, MediaBackend, MemoryBackend, OfferAnswer, Request, message::Delete};
use sipd_core::b2bua::{Media, MediaError, Side};

fn tag(side: Side) -> &'static str {
    match side {
        Side::A => "a",
        Side::B => "b",
    }
}

fn offer_answer(call: &str, from: Side, sdp: &str, answer: bool, strict: bool) -> OfferAnswer {
    // The ng engine attributes an offer to its from-tag and an answer to its to-tag.
    let mut oa = if answer {
        let mut oa = OfferAnswer::new(call, tag(from.other()), sdp);
        oa.to_tag = Some(tag(from).into());
        oa
    } else {
        let mut oa = OfferAnswer::new(call, tag(from), sdp);
        oa.to_tag = Some(tag(from.other()).into());
        oa
    };
    oa.flags.symmetric = true;
    // Topology hiding: the o= line names the originator's host too.
    oa.replace.origin = true;
    oa.flags.strict_source = strict;
    oa
}

fn run<B: MediaBackend>(engine: &mut Engine<B>, req: Request) -> Result<String, MediaError> {
    let resp = engine.handle(&req);
    if let Some(sdp) = resp.sdp() {
        return Ok(sdp.to_owned());
    }
    let reason = resp.error_reason().unwrap_or("relay refused").to_owned();
    // TODO(issue 10 §3): relay-user's typed media API replaces this reading of reply text.
    if reason.contains("SDP") || reason.contains("media sections") || reason.contains("family") {
        Err(MediaError::Sdp(reason))
    } else {
        Err(MediaError::Relay(reason))
    }
}

/// Where calls whose media stopped come from: the relay's own timeout reaper, or a test.
pub trait Expiry<B: MediaBackend> {
    /// Call ids the relay ended for lack of media, already removed from `engine`.
    fn expired(&mut self, engine: &mut Engine<B>, timeout: Duration) -> Vec<String>;
}

/// relay-user's ng engine (SDP rewriting, one relay session per call) over a backend.
pub struct EngineMedia<B: MediaBackend, E: Expiry<B>> {
    engine: Engine<B>,
    expiry: E,
}

impl<B: MediaBackend, E: Expiry<B>> EngineMedia<B, E> {
    fn with(backend: Arc<B>, advertised: std::net::IpAddr, expiry: E) -> Self {
        let iface = relay_user::ng::Interface::new("default", &[advertised]);
        EngineMedia {
            engine: Engine::new(backend, vec![iface]),
            expiry,
        }
    }

    pub fn calls(&self) -> usize {
        self.engine.call_count()
    }
}

impl<B: MediaBackend, E: Expiry<B>> Media for EngineMedia<B, E> {
    fn offer(
        &mut self,
        call: &str,
        from: Side,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError> {
        run(
            &mut self.engine,
            Request::Offer(offer_answer(call, from, sdp, false, strict)),
        )
    }

    fn answer(
        &mut self,
        call: &str,
        from: Side,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError> {
        run(
            &mut self.engine,
            Request::Answer(offer_answer(call, from, sdp, true, strict)),
        )
    }

    fn delete(&mut self, call: &str) {
        let _ = self.engine.handle(&Request::Delete(Delete {
            call_id: call.into(),
            from_tag: None,
            to_tag: None,
        }));
    }

    fn timed_out(&mut self, timeout: Duration) -> Vec<String> {
        self.expiry.expired(&mut self.engine, timeout)
    }

    fn packets(&mut self, call: &str) -> Option<u64> {
        let resp = self.engine.handle(&Request::Query {
            call_id: call.into(),
        });
        resp.is_ok().then(|| {
            resp.get("totals")
                .and_then(|t| t.get("RTP"))
                .and_then(|r| r.get("packets"))
                .and_then(|p| p.as_int())
                .map_or(0, |p| u64::try_from(p).unwrap_or(0))
        })
    }
}

/// The relay's media-timeout reaper: sessions without packets for the timeout are removed
/// (XDP legs or sockets) and their calls reported.
pub struct Reaper(Arc<Sessions>);

impl Expiry<Sessions> for Reaper {
    fn expired(&mut self, engine: &mut Engine<Sessions>, timeout: Duration) -> Vec<String> {
        self.0
            .reap(timeout)
            .into_iter()
            .filter_map(|r| engine.forget_session(r.session))
            .collect()
    }
}

/// The real relay: relay-user's sessions (XDP legs or userspace sockets).
pub type NgMedia = EngineMedia<Sessions, Reaper>;

impl NgMedia {
    pub fn new(sessions: Arc<Sessions>, advertised: std::net::IpAddr) -> NgMedia {
        EngineMedia::with(sessions.clone(), advertised, Reaper(sessions))
    }
}

/// Calls a test declares timed out.
#[derive(Default)]
pub struct Declared(pub Vec<String>);

impl Expiry<MemoryBackend> for Declared {
    fn expired(&mut self, engine: &mut Engine<MemoryBackend>, _timeout: Duration) -> Vec<String> {
        let gone = std::mem::take(&mut self.0);
        for c in &gone {
            let _ = engine.handle(&Request::Delete(Delete {
                call_id: c.clone(),
                from_tag: None,
                to_tag: None,
            }));
        }
        gone
    }
}

/// Real SDP rewriting over a backend that forwards nothing (fake ports): for tests.
pub type MemoryMedia = EngineMedia<MemoryBackend, Declared>;

impl MemoryMedia {
    pub fn new(advertised: std::net::IpAddr) -> MemoryMedia {
        EngineMedia::with(
            Arc::new(MemoryBackend::new(40_000, 41_000)),
            advertised,
            Declared::default(),
        )
    }

    /// Declares `call` (its media id) timed out at the next tick.
    pub fn expire(&mut self, call: String) {
        self.expiry.0.push(call);
    }
}
