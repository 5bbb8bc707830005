//! Clients of the SBC's HTTPS management API: `sbcctl`, the scripting CLI, and `sbc-tui`,
//! the operator console. See README.md.

#![warn(missing_docs)]

pub mod api;
// clap turns doc comments into `--help` text: cli.rs's items are described by their help
// attributes, and a doc comment added for the lint would change sbcctl's help.
#[allow(missing_docs)]
pub mod cli;
pub mod console;
pub mod ctl;
pub mod events;
pub mod table;
pub mod token;
