//! The call core of `sipd`, with no I/O: see `shared/DESIGN.md` for where it sits.
//!
//! Like `quinn-proto`, this crate owns no socket, no clock, no store and no runtime (its
//! `Cargo.toml` has none of them): bytes, the peer they came from and the time go in; messages
//! to send, CDRs to store, kernel session counts, bans and name look-ups come out as
//! [`b2bua::Effect`]s. `sipd` is the shell that carries them out.
//!
//! Layers, outermost first: [`sip`] (framing, parsing, limits, transactions) → [`b2bua`] (the
//! call core: authentication gate, admission, outgoing legs, dialogs, endings, CDRs) using
//! [`auth`] (SIP digest), [`policy`] (auth rules, admission, routing) and [`records`] (the
//! provisioned records and their validation, which `sipd`'s store persists).
#![warn(missing_docs)]

pub mod auth;
pub mod b2bua;
pub mod policy;
pub mod random;
pub mod records;
pub mod sip;
