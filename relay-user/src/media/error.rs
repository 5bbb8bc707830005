//! Why the media API refused a request. Each variant's text is the `error-reason` the ng
//! protocol sends for it (rtpengine's wording where rtpengine has one).

use std::net::SocketAddr;

use super::backend::{BackendError, SessionId};
use super::guard::Refusal;
use crate::sdp::SdpError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// No call with this call id (answer, delete, statistics of an unknown call).
    #[error("Unknown call-id")]
    UnknownCall,
    #[error("Failed to parse SDP: {0}")]
    Sdp(SdpError),
    #[error("SDP rewrite: {0}")]
    Rewrite(SdpError),
    /// The SDP asks the relay to send media where it must not (itself, multicast, ...).
    #[error("SDP media {media}: refused destination {to}: {why}")]
    Destination {
        media: usize,
        to: SocketAddr,
        why: Refusal,
    },
    #[error("SDP has {found} media sections, at most {max} allowed")]
    TooManyStreams { found: usize, max: usize },
    #[error("call would hold {needed} relay ports, at most {max} allowed")]
    TooManyPorts { needed: usize, max: usize },
    /// The sender's tag is neither side of the call (and both sides are known).
    #[error("Unknown tag {0:?} for this call")]
    UnknownTag(String),
    /// A tag given to `delete` is neither side of the call.
    #[error("Unknown tag for this call")]
    TagNotInCall,
    /// An answer's offerer tag is not the other side of the call.
    #[error("from-tag does not match the call")]
    OffererMismatch,
    #[error("Answer has {answer} media sections, offer had {offer}")]
    MediaCount { answer: usize, offer: usize },
    #[error("Unknown interface {0:?} in direction")]
    UnknownInterface(String),
    /// The sender's interface has no address of its SDP's family.
    #[error("No relay address of the offerer's family")]
    NoSenderAddress,
    /// The receiver's interface has no address of the family asked for.
    #[error("No relay address of the requested family")]
    NoReceiverAddress,
    #[error(transparent)]
    Backend(#[from] BackendError),
    // Why a saved call was not taken back after a restart (`MediaCalls::restore`).
    #[error("call-id already known")]
    AlreadyKnown,
    #[error("session {0} already has a call")]
    SessionTaken(SessionId),
    #[error("no from-tag")]
    NoFromTag,
    #[error("bad stream ports {a}/{b}")]
    BadPorts { a: u16, b: u16 },
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
