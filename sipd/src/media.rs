//! The call core's [`Media`] over relay-user's typed media API: the same call table, SDP
//! rewriting and sessions as relayd's ng protocol, in-process, with no control socket in
//! between. [`RelayMedia`] runs on the media plane's sessions (XDP legs or userspace sockets).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use relay_user::Sessions;
use relay_user::media::{
    self as relay, Anchor, Family, Interface, Limits, MediaBackend, MediaCalls, MediaPlane, Signal,
};
use sipd_core::b2bua::{Media, MediaError, Side};

use crate::call_media::MediaLegs;

/// The tag each side's SDP goes under in the call table.
fn tag(side: Side) -> &'static str {
    match side {
        Side::A => "a",
        Side::B => "b",
    }
}

/// What `from` sent for `call`, under its side's tag.
fn signal<'a>(call: &'a str, from: Side, sdp: &'a str) -> Signal<'a> {
    Signal {
        call_id: call,
        tag: tag(from),
        sdp,
    }
}

/// `sip_source`: where the SDP's sender's SIP came from, the one address besides the SDP's
/// its relay legs may learn their peer from.
fn anchor(
    strict: bool,
    sip_source: Option<IpAddr>,
    strip_ice: bool,
    family: Option<Family>,
) -> Anchor {
    Anchor {
        symmetric: true,
        // The receiver's family (set by the core from its SIP address); else the SDP's.
        family,
        strict_source: strict,
        sip_source,
        // Topology hiding: the o= line names the originator's host too.
        replace_origin: true,
        // Candidates name the endpoints' own addresses and would let them reach each other
        // around the relay (and around the balance), so they go unless configured to stay.
        remove_ice: strip_ice,
        ..Anchor::default()
    }
}

/// The core answers 488 to an SDP it cannot anchor and 503 when the relay cannot take the call.
fn refusal(e: relay::MediaError) -> MediaError {
    if e.is_sdp_fault() {
        MediaError::Sdp(e.to_string())
    } else {
        MediaError::Relay(e.to_string())
    }
}

/// The one relay interface: SDP advertises the address of `advertised` of the receiver's
/// family (one per family; the first of a family wins).
fn interfaces(advertised: &[IpAddr]) -> Vec<Interface> {
    vec![Interface::new("default", advertised)]
}

/// relay-user's media call table (SDP rewriting, one relay session per call) over a backend.
pub struct Anchored<B: MediaBackend> {
    calls: MediaCalls<B>,
    /// `[media] strip_ice`: remove ICE attributes from every SDP relayed.
    strip_ice: bool,
    /// The family each (call, side)'s SDP is rewritten for, where the core named it.
    toward: HashMap<(String, &'static str), Family>,
}

impl<B: MediaBackend> Anchored<B> {
    fn family(&self, call: &str, from: Side) -> Option<Family> {
        self.toward.get(&(call.to_owned(), tag(from))).copied()
    }

    /// Calls with media anchored.
    pub fn calls(&self) -> usize {
        self.calls.call_count()
    }

    /// The relay RTP ports each party of call `call` sends to, by the tag each side's SDP
    /// went under (the caller's is "a" even when the vendor made the first offer); `None`
    /// when the call has no media anchored.
    pub fn legs(&self, call: &str) -> Option<MediaLegs> {
        let c = self.calls.call(call)?;
        let ports = |t: Side| -> Vec<u16> {
            let Some(side) = c.side_of(tag(t)) else {
                return Vec::new();
            };
            c.streams
                .iter()
                .filter_map(|s| s.ports.map(|p| p.of(side)))
                .collect()
        };
        Some(MediaLegs {
            caller: ports(Side::A),
            vendor: ports(Side::B),
        })
    }
}

impl<B: MediaBackend> Media for Anchored<B> {
    fn offer(
        &mut self,
        call: &str,
        from: Side,
        sip_source: Option<IpAddr>,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError> {
        self.calls
            .offer(
                signal(call, from, sdp),
                &anchor(strict, sip_source, self.strip_ice, self.family(call, from)),
            )
            .map_err(refusal)
    }

    fn answer(
        &mut self,
        call: &str,
        from: Side,
        sip_source: Option<IpAddr>,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError> {
        self.calls
            .answer(
                signal(call, from, sdp),
                tag(from.other()),
                &anchor(strict, sip_source, self.strip_ice, self.family(call, from)),
            )
            .map_err(refusal)
    }

    fn delete(&mut self, call: &str) {
        let _ = self.calls.delete(call, &[]);
        for side in [Side::A, Side::B] {
            self.toward.remove(&(call.to_owned(), tag(side)));
        }
    }

    fn receiver(&mut self, call: &str, from: Side, toward: IpAddr) {
        self.toward
            .insert((call.to_owned(), tag(from)), Family::of(&toward));
    }

    fn timed_out(&mut self, timeout: Duration) -> Vec<String> {
        self.calls.timed_out(timeout)
    }

    fn packets(&mut self, call: &str) -> Option<u64> {
        self.calls.packets(call).ok()
    }

    /// relay-user's own record of the call (session, tags, streams and their ports), as JSON.
    fn saved(&self, call: &str) -> Option<String> {
        let rec = self.calls.record(call)?;
        serde_json::to_string(&rec).ok()
    }

    /// Joins the record with the session the relay recovered from the pinned maps; the last
    /// media seen is the latest packet on any of its legs.
    fn adopt(&mut self, call: &str, saved: &str) -> Result<sipd_core::b2bua::Adoption, MediaError> {
        let rec: relay::state::CallRecord = serde_json::from_str(saved)
            .map_err(|e| MediaError::Relay(format!("saved media record: {e}")))?;
        if rec.call_id != call {
            return Err(MediaError::Relay(format!(
                "saved media record names call {:?}",
                rec.call_id
            )));
        }
        let session = rec.session;
        let rebuilt = !self.calls.backend().has_session(session);
        let ports: Vec<u16> = rec
            .streams
            .iter()
            .filter_map(|s| s.ports)
            .flat_map(|p| [p.a, p.b])
            .collect();
        let restored = self
            .calls
            .restore_or_rebuild(relay::Snapshot::new(vec![rec]));
        if let Some((_, why)) = restored.dropped.into_iter().next() {
            return Err(MediaError::Relay(why.to_string()));
        }
        let backend = self.calls.backend();
        let last = ports
            .iter()
            .flat_map(|p| [*p, p + 1])
            .filter_map(|p| backend.leg_stats(session, p).ok()?.last_seen)
            .max();
        Ok(sipd_core::b2bua::Adoption {
            last_media_ms: last.map(crate::mgmt::unix_ms),
            rebuilt,
        })
    }
}

/// The real relay: the media plane's sessions, timed out by the relay's media-timeout reaper.
pub type RelayMedia = Anchored<Sessions>;

impl RelayMedia {
    /// SDP advertises `advertised`; each call is held to `limits`; `strip_ice`: ICE
    /// attributes are removed from relayed SDP.
    pub fn new(
        plane: &MediaPlane,
        advertised: &[IpAddr],
        limits: Limits,
        strip_ice: bool,
    ) -> RelayMedia {
        Anchored {
            calls: plane.calls(interfaces(advertised), limits),
            strip_ice,
            toward: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use relay_user::media::MemoryBackend;

    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";
    const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 10.0.1.1\r\ns=-\r\nc=IN IP4 10.0.1.1\r\nt=0 0\r\nm=audio 22000 RTP/AVP 0\r\n";

    fn media() -> Anchored<MemoryBackend> {
        media_ice(true)
    }

    fn media_ice(strip_ice: bool) -> Anchored<MemoryBackend> {
        let backend = Arc::new(MemoryBackend::new(40_000, 41_000));
        Anchored {
            calls: MediaCalls::new(backend, interfaces(&["192.0.2.10".parse().unwrap()]))
                .with_relay("192.0.2.10".parse().unwrap(), 40_000..=41_000),
            strip_ice,
            toward: HashMap::new(),
        }
    }

    /// ICE candidates name the endpoints' real addresses (a leak, and a way around the
    /// relay): gone by default from offers and answers, kept with `strip_ice = false`.
    #[test]
    fn ice_is_stripped_by_default_and_kept_when_configured() {
        let ice = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghij01\r\na=ice-options:trickle\r\n\
                   a=candidate:1 1 udp 2122260223 10.0.0.1 20000 typ host\r\n\
                   a=candidate:2 1 udp 1686052607 203.0.113.9 61000 typ srflx raddr 10.0.0.1 rport 20000\r\n\
                   a=remote-candidates:1 10.0.1.1 22000\r\na=end-of-candidates\r\n";
        let mut m = media_ice(true);
        let offer = m
            .offer("c1", Side::A, None, &format!("{OFFER}{ice}"), false)
            .unwrap();
        let answer = m
            .answer("c1", Side::B, None, &format!("{ANSWER}{ice}"), false)
            .unwrap();
        for sdp in [&offer, &answer] {
            for gone in ["candidate", "ice-", "203.0.113.9", "10.0.0.1", "10.0.1.1"] {
                assert!(!sdp.contains(gone), "{gone} left in:\n{sdp}");
            }
        }
        let mut m = media_ice(false);
        let offer = m
            .offer("c2", Side::A, None, &format!("{OFFER}{ice}"), false)
            .unwrap();
        assert!(
            offer.contains("a=candidate:2 1 udp") && offer.contains("a=ice-ufrag:abcd"),
            "{offer}"
        );
    }

    #[test]
    fn offer_and_answer_are_anchored_and_refusals_are_typed() {
        let mut m = media();
        let offer = m.offer("c1", Side::A, None, OFFER, false).unwrap();
        assert!(
            offer.contains("c=IN IP4 192.0.2.10") && !offer.contains("10.0.0.1"),
            "{offer}"
        );
        let answer = m.answer("c1", Side::B, None, ANSWER, false).unwrap();
        assert!(
            answer.contains("c=IN IP4 192.0.2.10") && !answer.contains("10.0.1.1"),
            "{answer}"
        );
        assert_eq!(m.calls(), 1);
        let legs = m.legs("c1").unwrap();
        assert_eq!((legs.caller.len(), legs.vendor.len()), (1, 1));
        assert!(
            offer.contains(&format!("m=audio {} ", legs.vendor[0])),
            "{offer}"
        );
        assert!(
            answer.contains(&format!("m=audio {} ", legs.caller[0])),
            "{answer}"
        );
        assert_eq!(m.legs("nope"), None);
        assert!(matches!(
            m.offer("c2", Side::A, None, "not sdp", false),
            Err(MediaError::Sdp(_))
        ));
        assert!(matches!(
            m.answer("nope", Side::B, None, ANSWER, false),
            Err(MediaError::Relay(_))
        ));
        m.delete("c1");
        assert_eq!(m.calls(), 0);
    }

    /// SDP that would make the relay loop or reflect, or hold too much, is the SDP's fault:
    /// 488 with a Warning that says why, not 503.
    #[test]
    fn loops_and_limits_are_sdp_faults() {
        let mut m = media();
        for (sdp, why) in [
            (OFFER.replace("10.0.0.1", "224.0.0.1"), "multicast"),
            (
                OFFER
                    .replace("10.0.0.1", "192.0.2.10")
                    .replace("20000", "40002"),
                "the relay's own",
            ),
            (
                format!("{OFFER}{}", "m=audio 4000 RTP/AVP 0\r\n".repeat(8)),
                "at most 8",
            ),
        ] {
            match m.offer("c1", Side::A, None, &sdp, false) {
                Err(e @ MediaError::Sdp(_)) => {
                    assert_eq!(e.code(), 488);
                    assert!(e.warning().contains(why), "{}", e.warning());
                }
                other => panic!("{sdp}: {other:?}"),
            }
        }
        assert_eq!(m.calls(), 0);
    }

    #[test]
    fn calls_are_bridged_between_families_toward_each_receiver() {
        let backend = Arc::new(MemoryBackend::new(40_000, 41_000));
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let mut m = Anchored {
            calls: MediaCalls::new(backend, interfaces(&[v4, v6]))
                .with_relay("::".parse().unwrap(), 40_000..=41_000),
            strip_ice: true,
            toward: HashMap::new(),
        };
        let offer6 = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";
        // IPv6 carrier (A) to IPv4 vendor (B).
        m.receiver("x", Side::B, "2001:db8::1".parse().unwrap());
        m.receiver("x", Side::A, "10.0.1.1".parse().unwrap());
        let to_vendor = m.offer("x", Side::A, None, offer6, true).unwrap();
        assert!(to_vendor.contains("c=IN IP4 192.0.2.10"), "{to_vendor}");
        let to_carrier = m.answer("x", Side::B, None, ANSWER, true).unwrap();
        assert!(to_carrier.contains("c=IN IP6 2001:db8::10"), "{to_carrier}");
        m.delete("x");
        assert!(m.toward.is_empty());
    }
}
