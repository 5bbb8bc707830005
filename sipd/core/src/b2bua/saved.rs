//! A call as it is persisted so it outlives the process: written when an attempt goes
//! upstream, again when the call is answered and when its dialog changes, and removed in the
//! same store write as its CDR. The next run takes each record back with
//! [`Core::adopt`](super::Core::adopt): answered calls go on (in-dialog requests, cut-offs,
//! media timeout, a CDR covering the whole call); calls still being set up are ended cleanly.
//!
//! The record holds what the dialog needs (both legs' Call-IDs, tags, routes, targets, CSeqs
//! and peers), what billing needs (account, tariff as set up, answer time) and the relay's own
//! opaque record of the media session. TCP connections do not survive the process: the legs
//! come back without one and re-bind to the peer's next connection.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::call::{Call, Leg, Phase};
use crate::records::{Id, Record, Tariff, unix_ms};
use crate::sip::{Peer, Proto};

/// Where a saved call was when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SavedPhase {
    /// An attempt was upstream, not answered yet.
    Trying,
    /// Answered: the 2xx went (or was about to go) to the caller.
    Answered,
}

/// One dialog leg as persisted ([`Leg`] without the TCP connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLeg {
    /// The dialog's Call-ID.
    pub call_id: String,
    /// Our header value, with our tag.
    pub local: String,
    /// Our tag.
    pub local_tag: String,
    /// Their header value.
    pub remote: String,
    /// Their tag, once known.
    pub remote_tag: Option<String>,
    /// Request-URI of requests we send.
    pub target: String,
    /// Route set.
    pub route: Vec<String>,
    /// Transport to the peer.
    pub proto: Proto,
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Our address the peer talks to.
    pub local_addr: SocketAddr,
    /// CSeq of the last request we sent.
    pub local_cseq: u32,
    /// Our address in Via and Contact on this leg.
    pub advertised: SocketAddr,
}

impl SavedLeg {
    fn of(l: &Leg) -> SavedLeg {
        SavedLeg {
            call_id: l.call_id.clone(),
            local: l.local.clone(),
            local_tag: l.local_tag.clone(),
            remote: l.remote.clone(),
            remote_tag: l.remote_tag.clone(),
            target: l.target.clone(),
            route: l.route.clone(),
            proto: l.peer.proto,
            remote_addr: l.peer.remote,
            local_addr: l.peer.local,
            local_cseq: l.local_cseq,
            advertised: l.advertised,
        }
    }

    /// The leg again, without a connection, its CSeq moved on by `cseq_gap` (a request sent
    /// after the record was written must not be reused: RFC 3261 allows gaps, not repeats).
    pub(super) fn leg(&self, cseq_gap: u32) -> Leg {
        Leg {
            call_id: self.call_id.clone(),
            local: self.local.clone(),
            local_tag: self.local_tag.clone(),
            remote: self.remote.clone(),
            remote_tag: self.remote_tag.clone(),
            target: self.target.clone(),
            route: self.route.clone(),
            peer: Peer {
                proto: self.proto,
                remote: self.remote_addr,
                local: self.local_addr,
                conn: None,
            },
            local_cseq: self.local_cseq.wrapping_add(cseq_gap),
            advertised: self.advertised,
        }
    }
}

/// One call as persisted (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCall {
    /// Where the call was.
    pub phase: SavedPhase,
    /// The relay's id for the call's media, unique across runs: the record's store key.
    pub media_id: String,
    /// The caller's INVITE as received (responses to it are built from it).
    pub a_invite: String,
    /// The 2xx we answered it with, to answer a retransmission of it again.
    #[serde(default)]
    pub a_answer: Option<String>,
    /// The caller had ACKed our 2xx when the record was written.
    #[serde(default)]
    pub a_acked: bool,
    /// We had ACKed the vendor's 2xx (a delayed offer's ACK waits for the caller's answer).
    #[serde(default)]
    pub b_acked: bool,
    /// Leg A (the carrier's dialog).
    pub a: SavedLeg,
    /// Leg B (the vendor's dialog), once an attempt went upstream.
    pub b: Option<SavedLeg>,
    /// The INVITE of the attempt upstream as sent (for a CANCEL, and the ACK's CSeq).
    pub b_invite: Option<String>,
    /// The connection that attempt went to (it holds one of its channels).
    pub connection: Option<Id>,
    /// The account admitted for.
    pub account: Id,
    /// The tariff the call was set up with (a call is billed at its set-up price).
    pub tariff: Option<Tariff>,
    /// The account's `max_call_secs` at set-up.
    pub max_secs: Option<u32>,
    /// Calling and called numbers.
    pub cli: String,
    /// See `cli`.
    pub cld: String,
    /// Where the caller's INVITE came from, and over what.
    pub source: SocketAddr,
    /// See `source`.
    pub source_proto: Proto,
    /// Unix ms the INVITE arrived.
    pub started_ms: u64,
    /// Unix ms it was answered.
    pub answered_ms: Option<u64>,
    /// The caller's INVITE had no SDP.
    pub delayed_offer: bool,
    /// The relay's record of the call's media session (opaque to the core).
    pub media: Option<String>,
    /// Unix ms up to which the process that wrote it was known to run with the call up; the
    /// shell fills it from its checkpoint when it reads the records back. A call that cannot
    /// be resumed is billed up to the later of this and the last media the relay saw.
    #[serde(default)]
    pub alive_ms: Option<u64>,
}

impl SavedCall {
    /// The record of `call` now; `media` is the relay's own record of its session.
    pub(super) fn of(
        call: &Call,
        tariff: Option<Tariff>,
        max_secs: Option<u32>,
        media: Option<String>,
    ) -> SavedCall {
        SavedCall {
            phase: if call.phase == Phase::Answered {
                SavedPhase::Answered
            } else {
                SavedPhase::Trying
            },
            media_id: call.media_id.clone(),
            a_invite: String::from_utf8_lossy(&call.a_invite.to_bytes()).into_owned(),
            a_answer: call.a_answer.clone(),
            a_acked: call.a_acked,
            b_acked: call.b_ack.is_some(),
            a: SavedLeg::of(&call.a),
            b: call.b.as_ref().map(SavedLeg::of),
            b_invite: call
                .attempt
                .as_ref()
                .map(|a| String::from_utf8_lossy(&a.invite.to_bytes()).into_owned()),
            connection: call.connection,
            account: call.account,
            tariff,
            max_secs,
            cli: call.cli.clone(),
            cld: call.cld.clone(),
            source: call.source,
            source_proto: call.source_proto,
            started_ms: unix_ms(call.started),
            answered_ms: call.answered.map(unix_ms),
            delayed_offer: call.delayed_offer,
            media,
            alive_ms: None,
        }
    }
}

/// Versioned in the store like the provisioned records.
impl Record for SavedCall {
    const KIND: &'static str = "call";
    const VERSION: u32 = 1;
}
