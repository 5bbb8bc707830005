//! Clients of the SBC's HTTPS management API: `sbcctl`, the scripting CLI (and, to come,
//! `sbc-tui`, the operator console). See README.md.

pub mod api;
pub mod cli;
pub mod ctl;
pub mod events;
pub mod table;
pub mod token;
