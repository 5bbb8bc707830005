//! One call: its two dialogs and where it is in its life.

use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use crate::records::Id;
use crate::sip::txn::ServerKey;
use crate::sip::{Msg, NameAddr};
use crate::sip::{Peer, Proto};

use super::Side;

/// The core's handle for one call: unique for the life of the process, never reused.
pub type CallKey = u64;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not answered yet: waiting for an upstream's addresses, or for the vendor's answer to
    /// the attempt in flight.
    Trying,
    /// 2xx relayed to the caller.
    Answered,
    /// Ending: BYEs/CANCEL sent; the record lingers to absorb late messages.
    Ended,
}

/// One dialog as one of its ends (us) sees it.
#[derive(Debug, Clone)]
pub struct Leg {
    /// The dialog's Call-ID (the caller's on leg A, ours on leg B).
    pub call_id: String,
    /// Our From (leg B) / To (leg A) header value, with our tag.
    pub local: String,
    /// Our tag in this dialog.
    pub local_tag: String,
    /// Their header value, with their tag once known.
    pub remote: String,
    /// Their tag; `None` on leg B until the first response that carries one.
    pub remote_tag: Option<String>,
    /// Request-URI for requests we send in the dialog (their Contact).
    pub target: String,
    /// Route headers for requests we send (RFC 3261 §12.1).
    pub route: Vec<String>,
    /// Where requests in this dialog go: the peer we talk to (symmetric signalling, NAT-safe).
    pub peer: Peer,
    /// CSeq of the last request we sent in this dialog.
    pub local_cseq: u32,
    /// Our address as written in Via and Contact on this leg.
    pub advertised: SocketAddr,
}

impl Leg {
    /// The CSeq for our next request in this dialog (wrapping), recorded as the last.
    pub fn next_cseq(&mut self) -> u32 {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        self.local_cseq
    }
}

/// An upstream attempt in flight.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The upstream connection tried.
    pub connection: Id,
    /// Top Via branch of the INVITE (the client transaction).
    pub branch: String,
    /// The client transaction's token, by which its answers and timeouts find the call.
    pub token: u64,
    /// The INVITE as sent (for CANCEL).
    pub invite: Msg,
    /// A provisional arrived (a CANCEL may be sent, §9.1).
    pub provisional: bool,
}

/// One call as the core keeps it: both legs, the upstream attempts, and what the CDR needs.
#[derive(Debug)]
pub struct Call {
    /// Its key in the call table.
    pub key: CallKey,
    /// Where it is in its life.
    pub phase: Phase,
    /// Carrier side: we are its UAS.
    pub a: Leg,
    /// The caller's INVITE as received.
    pub a_invite: Msg,
    /// The caller's INVITE server transaction, answered with the call's final response.
    pub a_txn: ServerKey,
    /// Vendor side: we are its UAC. Exists from the first attempt.
    pub b: Option<Leg>,
    /// The upstream attempt in flight; `None` between attempts and once answered or failed.
    pub attempt: Option<Attempt>,
    /// Connections still to try, best first.
    pub candidates: Vec<Id>,
    /// Connections that have a channel of this call taken.
    pub connection: Option<Id>,
    /// The last connection an attempt went to (for the CDR).
    pub last_connection: Option<Id>,
    /// The caller's offer as anchored (relay addresses), sent to every upstream tried.
    pub b_offer: Option<String>,
    /// The account the call was admitted for.
    pub account: Id,
    /// Calling number: the user part of the caller's From.
    pub cli: String,
    /// Called number: the Request-URI's user part (the To's when it has none).
    pub cld: String,
    /// Where the caller's INVITE came from.
    pub source: SocketAddr,
    /// The transport it came over.
    pub source_proto: Proto,
    /// Wall-clock arrival of the INVITE, for the CDR.
    pub started: SystemTime,
    /// Monotonic arrival of the INVITE.
    pub started_at: Instant,
    /// Wall-clock time the call was answered; `None` until then.
    pub answered: Option<SystemTime>,
    /// Media anchored under this id in the relay.
    pub media_id: String,
    /// The caller's INVITE had no SDP: the offer comes in the vendor's 2xx and the answer in
    /// the caller's ACK, so the vendor's ACK waits for it.
    pub delayed_offer: bool,
    /// ACK for the vendor's 2xx, once sent (re-sent on 2xx retransmissions).
    pub b_ack: Option<Msg>,
    /// Caller's ACK arrived for our 2xx.
    pub a_acked: bool,
    /// Last failure from upstream, for the final answer when all attempts fail.
    pub last_failure: Option<u16>,
    /// The CDR was written; the call only absorbs stragglers now.
    pub recorded: bool,
    /// When the call ended (monotonic): it is forgotten a linger time after.
    pub ended_at: Option<Instant>,
    /// Who ended it, once known before [`Core::finish`](super::Core) records it: `caller`,
    /// `callee` or `staff:<username>`; `None` there means sipd itself (`sbc`).
    pub ended_by: Option<String>,
    /// The 2xx the caller was answered with (saved with the call).
    pub a_answer: Option<String>,
    /// The legs' CSeqs (A, B) when the call was last saved.
    pub cseq_saved: [u32; 2],
    /// A record of the call is in the store ([`super::saved`]); its CDR removes it.
    pub saved: bool,
    /// Bill and record the call as ended at this moment rather than now: a call of a previous
    /// run that could not be resumed ends when it was last known to be up.
    pub settle_at: Option<(Instant, SystemTime)>,
}

impl Call {
    /// The caller's From header.
    pub fn caller(&self) -> NameAddr {
        self.a_invite.from()
    }

    /// Where `side`'s SIP comes from. An endpoint behind NAT sends its media from there too,
    /// so the relay may learn that side's media peer from this address as well as the SDP's.
    pub fn sip_source(&self, side: Side) -> Option<IpAddr> {
        match side {
            Side::A => Some(self.source.ip()),
            Side::B => self.b.as_ref().map(|b| b.peer.remote.ip()),
        }
    }
}

/// What a pending in-dialog request relayed across the call waits for.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The call it belongs to.
    pub call: CallKey,
    /// The request arrived on this leg and its response goes back through this transaction.
    pub from_a: bool,
    /// The server transaction the request arrived in.
    pub txn: ServerKey,
    /// The request as received.
    pub request: Msg,
}
