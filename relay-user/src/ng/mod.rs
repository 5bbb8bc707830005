//! The rtpengine *ng* control protocol: what Kamailio's `rtpengine` module uses to drive the
//! relay (relayd), and what our tests and benchmarks use to drive Debian's rtpengine.
//!
//! A message is `<cookie> <bencoded dictionary>` in one UDP datagram; the reply carries the
//! same cookie. Layers, each usable alone:
//!
//! - [`bencode`]: the codec;
//! - [`message`]: framing, typed [`Request`]s and [`Response`]s;
//! - [`sdp`]: parse and rewrite SDP (shared with the media API, [`crate::sdp`]);
//! - [`engine`]: command semantics (offer/answer/delete/query/list): requests translated to
//!   the typed media API ([`crate::media::MediaCalls`]) and its results and errors to replies;
//! - [`server`]: the tokio UDP server: it answers only the sources its [`access`] list
//!   allows (loopback by default) and replays retransmissions from its [`cache`], keyed by
//!   source and cookie and bounded in bytes;
//! - [`client`]: a blocking client, [`NgClient`].

pub mod access;
pub mod bencode;
pub mod cache;
pub mod client;
#[cfg(test)]
mod e2e;
pub mod engine;
pub mod message;
pub mod server;

pub use crate::sdp;
pub use access::AllowList;
pub use client::NgClient;
pub use engine::Engine;
pub use message::{OfferAnswer, Request, Response};
pub use server::{NgStats, NgStatsHandle, Server, ServerConfig, serve};
