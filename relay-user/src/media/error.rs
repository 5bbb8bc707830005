//! Why the media API refused a request. Each variant's text is the `error-reason` the ng
//! protocol sends for it (rtpengine's wording where rtpengine has one).

use std::net::SocketAddr;

use super::backend::{BackendError, SessionId};
use super::guard::Refusal;
use crate::sdp::SdpError;

/// Why the media API refused a request (see the module docs).
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// No call with this call id (answer, delete, statistics of an unknown call).
    #[error("Unknown call-id")]
    UnknownCall,
    /// The SDP does not parse.
    #[error("Failed to parse SDP: {0}")]
    Sdp(SdpError),
    /// The SDP parsed but could not be rewritten.
    #[error("SDP rewrite: {0}")]
    Rewrite(SdpError),
    /// The SDP asks the relay to send media where it must not (itself, multicast, ...).
    #[error("SDP media {media}: refused destination {to}: {why}")]
    Destination {
        /// Index of the m= line.
        media: usize,
        /// The destination it names.
        to: SocketAddr,
        /// Why it is refused.
        why: Refusal,
    },
    /// More m= lines than the limit.
    #[error("SDP has {found} media sections, at most {max} allowed")]
    TooManyStreams {
        /// m= lines in the SDP.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// The call would hold more relay ports than the limit.
    #[error("call would hold {needed} relay ports, at most {max} allowed")]
    TooManyPorts {
        /// Ports it would hold.
        needed: usize,
        /// The limit.
        max: usize,
    },
    /// The sender's tag is neither side of the call (and both sides are known).
    #[error("Unknown tag {0:?} for this call")]
    UnknownTag(String),
    /// A tag given to `delete` is neither side of the call.
    #[error("Unknown tag for this call")]
    TagNotInCall,
    /// An answer's offerer tag is not the other side of the call.
    #[error("from-tag does not match the call")]
    OffererMismatch,
    /// The answer's m= lines do not pair with the offer's.
    #[error("Answer has {answer} media sections, offer had {offer}")]
    MediaCount {
        /// m= lines in the answer.
        answer: usize,
        /// m= lines in the offer.
        offer: usize,
    },
    /// `direction` names an interface the relay does not have.
    #[error("Unknown interface {0:?} in direction")]
    UnknownInterface(String),
    /// The sender's interface has no address of its SDP's family.
    #[error("No relay address of the offerer's family")]
    NoSenderAddress,
    /// The receiver's interface has no address of the family asked for.
    #[error("No relay address of the requested family")]
    NoReceiverAddress,
    /// The relay backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    // Why a saved call was not taken back after a restart (`MediaCalls::restore`).
    /// A saved call whose Call-ID is already in the table.
    #[error("call-id already known")]
    AlreadyKnown,
    /// A saved call whose session already carries another call.
    #[error("session {0} already has a call")]
    SessionTaken(SessionId),
    /// A saved call without a from-tag.
    #[error("no from-tag")]
    NoFromTag,
    #[error("bad stream ports {a}/{b}")]
    /// A saved call's stream ports that cannot be a stream (odd, zero or equal).
    BadPorts {
        /// Side A's port.
        a: u16,
        /// Side B's port.
        b: u16,
    },
    /// The relay did not recover the saved call's session.
    #[error("session not recovered by the relay")]
    NotRecovered,
}

impl MediaError {
    /// Whether the SDP itself is at fault (it does not parse, cannot be rewritten, names a
    /// refused destination or asks for more than a call may hold), rather than the call table
    /// or the relay: a SIP peer gets 488 for the one, 503 for the other.
    pub fn is_sdp_fault(&self) -> bool {
        matches!(
            self,
            MediaError::Sdp(_)
                | MediaError::Rewrite(_)
                | MediaError::Destination { .. }
                | MediaError::TooManyStreams { .. }
                | MediaError::TooManyPorts { .. }
        )
    }
}
