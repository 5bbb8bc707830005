//! `sipd`: the SIP edge of the XDP SBC. See `shared/DESIGN.md` for where it sits.
//!
//! So far: digest authentication, configuration, the store and provisioning. The SIP
//! transports and call pipeline build on these.

pub mod auth;
pub mod config;
pub mod provision;
pub mod store;
pub mod toml_span;
