//! Clients of the SBC's HTTPS management API: `sbcctl`, the scripting CLI, and `sbc-tui`,
//! the operator console. See README.md.

pub mod api;
pub mod cli;
#[warn(missing_docs)]
pub mod console;
pub mod ctl;
pub mod table;
pub mod token;
