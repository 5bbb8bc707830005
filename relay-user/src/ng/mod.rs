//! The rtpengine *ng* control protocol: what Kamailio's `rtpengine` module and `sipd` use to
//! drive the relay, and what our tests and benchmarks use to drive Debian's rtpengine.
//!
//! A message is `<cookie> <bencoded dictionary>` in one UDP datagram; the reply carries the
//! same cookie. Layers, each usable alone:
//!
//! - [`bencode`]: the codec;
//! - [`message`]: framing, typed [`Request`]s and [`Response`]s;
//! - [`sdp`]: parse and rewrite SDP to anchor media on the relay;
//! - [`backend`]: the [`MediaBackend`] trait the relay implements;
//! - [`engine`]: command semantics (offer/answer/delete/query/list) over a backend;
//! - [`state`]: the call table's state file, so calls survive a relayd restart (XDP);
//! - [`server`]: the tokio UDP server with rtpengine's retransmission cache;
//! - [`client`]: a blocking client, [`NgClient`].

pub mod backend;
pub mod bencode;
pub mod client;
#[cfg(test)]
mod e2e;
pub mod engine;
pub mod message;
pub mod sdp;
pub mod server;
pub mod state;

pub use backend::{AdoptStream, MediaBackend, MemoryBackend};
pub use client::NgClient;
pub use engine::{Engine, Interface, Restored};
pub use message::{OfferAnswer, Request, Response};
pub use server::{Server, serve};
pub use state::{Snapshot, StateError, StateFile};
