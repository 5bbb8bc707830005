//! Media anchoring as the call core sees it: offer, answer, delete, and which calls the relay
//! timed out. [`RelayMedia`] drives relay-user's typed media API in-process (the same call
//! table, SDP rewriting and sessions as relayd's ng protocol, no control socket in between);
//! [`MemoryMedia`] drives it over the in-memory backend for deterministic tests.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use relay_user::Sessions;
use relay_user::media::{
    Anchor, Interface, MediaBackend, MediaCalls, MediaPlane, MemoryBackend, Signal,
};
// Side A is the carrier (caller) side.
pub use relay_user::media::{MediaError, Side};

pub trait Media {
    /// An SDP offer from `from`; returns it rewritten to point at the relay.
    fn offer(
        &mut self,
        call: &str,
        from: Side,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError>;
    /// The answer to the last offer, from the other side.
    fn answer(
        &mut self,
        call: &str,
        from: Side,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError>;
    fn delete(&mut self, call: &str);
    /// Calls whose media stopped for `timeout` (the relay has removed them).
    fn timed_out(&mut self, timeout: Duration) -> Vec<String>;
    /// Packets relayed so far for `call`, both directions together (for logs and tests).
    fn packets(&mut self, call: &str) -> Option<u64>;
}

/// The tag each side's SDP goes under in the call table.
fn tag(side: Side) -> &'static str {
    match side {
        Side::A => "a",
        Side::B => "b",
    }
}

fn anchor(strict: bool) -> Anchor {
    Anchor {
        symmetric: true,
        strict_source: strict,
        // Topology hiding: the o= line names the originator's host too.
        replace_origin: true,
        ..Anchor::default()
    }
}

/// relay-user's media call table (SDP rewriting, one relay session per call) over a backend.
pub struct Anchored<B: MediaBackend> {
    calls: MediaCalls<B>,
}

/// The one relay interface: SDP advertises `advertised`.
fn interfaces(advertised: IpAddr) -> Vec<Interface> {
    vec![Interface::new("default", &[advertised])]
}

impl<B: MediaBackend> Anchored<B> {
    pub fn calls(&self) -> usize {
        self.calls.call_count()
    }
}

impl<B: MediaBackend> Media for Anchored<B> {
    fn offer(
        &mut self,
        call: &str,
        from: Side,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError> {
        let s = Signal {
            call_id: call,
            tag: tag(from),
            sdp,
        };
        self.calls.offer(s, &anchor(strict))
    }

    fn answer(
        &mut self,
        call: &str,
        from: Side,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError> {
        let s = Signal {
            call_id: call,
            tag: tag(from),
            sdp,
        };
        self.calls.answer(s, tag(from.other()), &anchor(strict))
    }

    fn delete(&mut self, call: &str) {
        let _ = self.calls.delete(call, &[]);
    }

    fn timed_out(&mut self, timeout: Duration) -> Vec<String> {
        self.calls.timed_out(timeout)
    }

    fn packets(&mut self, call: &str) -> Option<u64> {
        self.calls.packets(call).ok()
    }
}

/// The real relay: the media plane's sessions (XDP legs or userspace sockets), timed out by
/// the relay's media-timeout reaper.
pub type RelayMedia = Anchored<Sessions>;

impl RelayMedia {
    pub fn new(plane: &MediaPlane, advertised: IpAddr) -> RelayMedia {
        Anchored {
            calls: plane.calls(interfaces(advertised)),
        }
    }
}

/// Real SDP rewriting over a backend that forwards nothing (fake ports): for tests.
pub type MemoryMedia = Anchored<MemoryBackend>;

impl MemoryMedia {
    pub fn new(advertised: IpAddr) -> MemoryMedia {
        let backend = Arc::new(MemoryBackend::new(40_000, 41_000));
        Anchored {
            calls: MediaCalls::new(backend, interfaces(advertised)),
        }
    }

    /// Declares `call` (its media id) timed out at the next tick.
    pub fn expire(&mut self, call: String) {
        if let Some(s) = self.calls.session_of(&call) {
            self.calls.backend().expire(s);
        }
    }
}
