//! A relay for the core's tests: rewrites SDP to an anchor address and fake ports the way the
//! real relay does (connection, media ports, origin), forwards nothing, and times out what a
//! test declares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{Media, MediaError, Side};

/// A [`Media`] that answers like the relay without one: for the core's tests and the
/// `call_core` fuzz target (public under the `fuzzing` feature).
pub struct FakeMedia {
    anchor: IpAddr,
    /// Relay port per (call, side whose SDP we rewrote).
    ports: HashMap<(String, bool), u16>,
    next_port: u16,
    expired: Vec<String>,
    /// Calls whose session [`Media::adopt`] says did not survive.
    lost: Vec<String>,
    /// What [`Media::adopt`] reports as the last media seen.
    pub last_media_ms: Option<u64>,
}

impl FakeMedia {
    /// Rewrites every SDP to `anchor`, with ports counted up from 40000 (wrapping).
    pub fn new(anchor: IpAddr) -> FakeMedia {
        FakeMedia {
            anchor,
            ports: HashMap::new(),
            next_port: 40_000,
            expired: Vec::new(),
            lost: Vec::new(),
            last_media_ms: None,
        }
    }

    /// Calls with media anchored.
    pub fn calls(&self) -> usize {
        let calls: std::collections::HashSet<&String> = self.ports.keys().map(|(c, _)| c).collect();
        calls.len()
    }

    /// Declares that `call`'s session will not be recovered by [`Media::adopt`].
    pub fn lose(&mut self, call: String) {
        self.lost.push(call);
    }

    /// Declares `call` (its media id) timed out at the next tick.
    pub fn expire(&mut self, call: String) {
        self.expired.push(call);
    }

    fn rewrite(&mut self, call: &str, from: Side, sdp: &str) -> Result<String, MediaError> {
        if !sdp.starts_with("v=0") || !sdp.contains("\nm=") {
            return Err(MediaError::Sdp("no session or no media line".into()));
        }
        // As the real relay refuses destinations that would make it reflect media.
        if sdp.contains("c=IN IP4 224.") {
            return Err(MediaError::Sdp(
                "media destination 224.0.0.1 is multicast".into(),
            ));
        }
        let key = (call.to_owned(), from == Side::A);
        let port = match self.ports.get(&key) {
            Some(p) => *p,
            None => {
                let p = self.next_port;
                // Wraps rather than overflows: a fuzzed core can open more calls than ports.
                self.next_port = self.next_port.wrapping_add(2);
                self.ports.insert(key, p);
                p
            }
        };
        let family = if self.anchor.is_ipv4() { "IP4" } else { "IP6" };
        let out: Vec<String> = sdp
            .split("\r\n")
            .map(|l| {
                if l.starts_with("c=") {
                    format!("c=IN {family} {}", self.anchor)
                } else if let Some(rest) = l.strip_prefix("m=") {
                    let mut f: Vec<&str> = rest.split(' ').collect();
                    let p = port.to_string();
                    if f.len() > 1 {
                        f[1] = &p;
                    }
                    format!("m={}", f.join(" "))
                } else if l.starts_with("o=") {
                    let mut f: Vec<&str> = l.split(' ').collect();
                    let a = self.anchor.to_string();
                    if let Some(last) = f.last_mut() {
                        *last = &a;
                    }
                    f.join(" ")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        Ok(out.join("\r\n"))
    }
}

impl Media for FakeMedia {
    fn offer(
        &mut self,
        call: &str,
        from: Side,
        _: Option<IpAddr>,
        sdp: &str,
        _: bool,
    ) -> Result<String, MediaError> {
        self.rewrite(call, from, sdp)
    }

    fn answer(
        &mut self,
        call: &str,
        from: Side,
        _: Option<IpAddr>,
        sdp: &str,
        _: bool,
    ) -> Result<String, MediaError> {
        if !self.ports.contains_key(&(call.to_owned(), from == Side::B)) {
            return Err(MediaError::Relay("answer without an offer".into()));
        }
        self.rewrite(call, from, sdp)
    }

    fn delete(&mut self, call: &str) {
        self.ports.retain(|(c, _), _| c != call);
    }

    fn timed_out(&mut self, _timeout: Duration) -> Vec<String> {
        let gone = std::mem::take(&mut self.expired);
        for c in &gone {
            self.delete(c);
        }
        gone
    }

    fn packets(&mut self, call: &str) -> Option<u64> {
        self.ports.keys().any(|(c, _)| c == call).then_some(0)
    }

    /// The relay ports of each side, as `a,b` (0 for a side with none).
    fn saved(&self, call: &str) -> Option<String> {
        let port = |a: bool| self.ports.get(&(call.to_owned(), a)).copied().unwrap_or(0);
        self.ports
            .keys()
            .any(|(c, _)| c == call)
            .then(|| format!("{},{}", port(true), port(false)))
    }

    /// Takes back what [`saved`](Media::saved) wrote, unless the test made the relay lose it
    /// ([`FakeMedia::lose`]).
    fn adopt(&mut self, call: &str, saved: &str) -> Result<super::media::Adoption, MediaError> {
        if self.lost.iter().any(|c| c == call) {
            return Err(MediaError::Relay("session not recovered".into()));
        }
        let (a, b) = saved
            .split_once(',')
            .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
            .ok_or_else(|| MediaError::Relay(format!("bad saved media {saved:?}")))?;
        for (side, p) in [(true, a), (false, b)] {
            if p != 0 {
                self.ports.insert((call.to_owned(), side), p);
            }
        }
        Ok(super::media::Adoption {
            last_media_ms: self.last_media_ms,
            rebuilt: false,
        })
    }
}
