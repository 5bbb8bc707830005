//! Per-call decisions that need no I/O: which account a request belongs to (auth rules),
//! whether it may start a call now (admission), and where it goes (routing).
//!
//! Everything here is deterministic: time comes in as [`std::time::Instant`] arguments and
//! nothing reads a clock, a socket or the store (the shell reads the records and hands them
//! over).

pub mod admission;
mod gcra;
pub mod routing;
pub mod rules;
pub mod share;

pub use admission::{Admission, CallKey, Cut, Ended, Refusal};
pub use routing::{CapFull, Router};
pub use rules::{Classification, RuleRefusal, RuleSet};
pub use share::Share;
