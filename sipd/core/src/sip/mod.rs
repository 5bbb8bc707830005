//! SIP messages: stream framing, parsing with limits, typed accessors, building responses,
//! transactions, and the answer to a message that cannot be parsed.

pub mod framing;
pub mod malformed;
pub mod msg;
pub mod parse;
pub mod peer;
pub mod received;
mod start;
#[cfg(any(test, feature = "torture"))]
pub mod torture;
pub mod txn;
pub mod uri;

pub use framing::{FrameError, Framer, KeepAlives};
pub use malformed::Malformed;
pub use msg::{Msg, NameAddr, Start, Via};
pub use parse::ParseError;
pub use peer::{ConnId, Peer, Proto, Transmit};
