//! `sipd`: the shell of the SIP edge of the XDP SBC. See `shared/DESIGN.md` for where it sits.
//!
//! The call core ([`sipd_core`]: SIP, transactions, digest, rules, admission, routing, the
//! B2BUA) does no I/O; this crate gives it sockets, time, names and a store: [`transport`]
//! (UDP/TCP sockets) → [`server`] (the event loop that feeds the core and carries out its
//! effects) with [`resolver`] (upstream names), [`media`] (the relay from relay-user),
//! [`firewall`] (the data plane's SIP and management rules) and [`store`] (sled); the
//! management plane is [`mgmt`] (staff, audit) and [`api`] (HTTPS, `/metrics`), live through
//! [`events`] (the event stream and the calls' SIP messages) and [`hep`] (copies of SIP to a
//! HEP collector); [`mod@panic`] makes any panic end the
//! process.

// Every public item says what it is for (the repository explains itself).
#![warn(missing_docs)]

pub mod acme;
pub mod api;
pub mod call_media;
pub mod cluster;
pub mod config;
pub mod control;
pub mod events;
pub mod firewall;
pub mod hep;
pub mod mail;
pub mod media;
pub mod mgmt;
pub mod ocsp;
pub mod panic;
pub mod private_file;
pub mod provision;
pub mod resolver;
pub mod server;
pub mod shared_limits;
pub mod store;
pub mod tls;
pub mod toml_span;
pub mod transport;
