//! The records an operator provisions (accounts, auth rules, tariffs, upstream connections)
//! and the call detail records the core produces: one type per record, owning its validation.
//! `sipd`'s store persists them as versioned JSON; the API and `sipd import` validate through
//! the same types.

mod account;
mod cdr;
mod connection;
mod money;
mod pattern;
mod rule;
mod tariff;

pub use account::{Account, SipAuth};
pub use cdr::{Cdr, CdrDraft};
pub use connection::{Connection, Transport};
pub use money::{BadAmount, MICROS_PER_UNIT, Micros};
pub use pattern::{Matcher, Pattern, PatternError};
pub use rule::AuthRule;
pub use tariff::Tariff;

/// A record's identity in the store: 0 until stored.
pub type Id = u64;

/// A record that breaks its type's rules, named by kind; `reason` says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct Invalid {
    pub kind: &'static str,
    pub reason: String,
}

/// How a record is kept: a kind for errors and a version for its JSON body.
pub trait Record: serde::Serialize + serde::de::DeserializeOwned {
    /// Tree name, used in errors.
    const KIND: &'static str;
    /// Bumped on an incompatible change; `upgrade` then turns old bodies into new ones.
    const VERSION: u32;

    /// Turns a body written at `from` into one of `VERSION`. No versions are retired yet.
    fn upgrade(from: u32, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let _ = body;
        Err(format!("no upgrade from version {from}"))
    }
}

/// Names are keys in the store's indexes and appear in CDRs, logs and the console.
pub(crate) fn valid_name(kind: &'static str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(Invalid {
            kind,
            reason: format!("name {name:?} must be 1-64 characters without control characters"),
        });
    }
    Ok(())
}
