//! `sipd`: the SIP edge of the XDP SBC. See `shared/DESIGN.md` for where it sits.
//!
//! Layers, outermost first: [`transport`] (UDP/TCP sockets and stream framing) → [`sip`]
//! (parsing, limits, transactions) → [`b2bua`] (the call core: security pipeline, dialogs,
//! media anchoring, CDRs) using [`policy`] (auth rules, admission, routing) and [`store`].

pub mod api;
pub mod auth;
pub mod b2bua;
pub mod config;
pub mod control;
pub mod mgmt;
pub mod policy;
pub mod provision;
pub mod server;
pub mod sip;
pub mod store;
pub mod toml_span;
pub mod transport;
