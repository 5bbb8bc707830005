//! Media anchoring as the call core sees it: offer, answer, delete, and which calls the relay
//! timed out. The shell implements it over relay-user's sessions; the core's tests over a
//! fake that rewrites SDP the same way.

use std::net::IpAddr;
use std::time::Duration;

/// Which side of the relay a message's SDP comes from. A is the carrier (caller) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller's side (the carrier, leg A).
    A,
    /// The callee's side (the vendor, leg B).
    B,
}

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Why the relay would not anchor a call's media; the core answers 488 or 503 on the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The SDP cannot be anchored as it is (unparsable, no usable stream, a refused
    /// destination): the caller may retry with another offer (488).
    #[error("media: unusable SDP: {0}")]
    Sdp(String),
    /// The relay cannot take the call (no ports, a data-plane error): 503.
    #[error("media: relay refused: {0}")]
    Relay(String),
}

impl MediaError {
    /// The SIP response code: 488 for the SDP's fault, 503 for the relay's.
    pub fn code(&self) -> u16 {
        match self {
            MediaError::Sdp(_) => 488,
            MediaError::Relay(_) => 503,
        }
    }

    /// The Warning text for the peer: what was wrong with its SDP (its own data, so it may
    /// know), but not the relay's internals.
    pub fn warning(&self) -> String {
        match self {
            MediaError::Sdp(why) => format!("SDP refused: {why}"),
            MediaError::Relay(_) => "media anchoring failed".to_owned(),
        }
    }
}

/// Offer and answer name the SDP's sender twice: its `Side`, and `sip_source`, the address its
/// SIP came from (if known). The relay learns that side's media peer only from the SDP's
/// address or `sip_source` (NAT), never from anyone else (RTP bleed). `strict`: after
/// learning, drop packets from anyone but the peer.
pub trait Media {
    /// An SDP offer from `from`; returns it rewritten to point at the relay.
    fn offer(
        &mut self,
        call: &str,
        from: Side,
        sip_source: Option<IpAddr>,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError>;
    /// The answer to the last offer, from the other side.
    fn answer(
        &mut self,
        call: &str,
        from: Side,
        sip_source: Option<IpAddr>,
        sdp: &str,
        strict: bool,
    ) -> Result<String, MediaError>;
    /// Forgets the call's media and frees its relay ports; unknown calls are ignored.
    fn delete(&mut self, call: &str);
    /// The SDP `from` sends from now on goes to a peer at `toward` (its SIP address): the
    /// relay writes its address of that family into it, bridging IPv4 and IPv6 peers.
    /// Relays of one family ignore it.
    fn receiver(&mut self, _call: &str, _from: Side, _toward: IpAddr) {}
    /// Calls whose media stopped for `timeout` (the relay has removed them).
    fn timed_out(&mut self, timeout: Duration) -> Vec<String>;
    /// Packets relayed so far for `call`, both directions together (for logs and tests).
    fn packets(&mut self, call: &str) -> Option<u64>;
    /// The relay's record of `call`'s media, persisted with the call so a later run can
    /// [`adopt`](Self::adopt) it; `None` when the relay cannot carry calls across restarts.
    fn saved(&self, _call: &str) -> Option<String> {
        None
    }
    /// Takes back `call`'s media from the record [`saved`](Self::saved) gave in an earlier
    /// run (see [`Adoption`]). An error when the relay cannot relay it any more.
    fn adopt(&mut self, _call: &str, _saved: &str) -> Result<Adoption, MediaError> {
        Err(MediaError::Relay(
            "this relay cannot take calls across restarts".into(),
        ))
    }
}

/// What [`Media::adopt`] found of a call's media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adoption {
    /// When the relay last saw media on it (Unix ms), if it knows.
    pub last_media_ms: Option<u64>,
    /// The relay had not kept the session: it made it again on its ports (so it knows no
    /// media from before).
    pub rebuilt: bool,
}

/// The address family of an SDP's session `c=` line: true for IPv4, false for IPv6.
pub(crate) fn sdp_is_ipv4(sdp: &str) -> Option<bool> {
    sdp.lines()
        .find_map(|l| match l.trim().strip_prefix("c=IN ")? {
            a if a.starts_with("IP4 ") => Some(true),
            a if a.starts_with("IP6 ") => Some(false),
            _ => None,
        })
}
