//! SIP messages: parsing with limits, typed accessors, building responses, transactions.

pub mod msg;
pub mod parse;
pub mod txn;

pub use msg::{Msg, NameAddr, Start, Via};
pub use parse::ParseError;
