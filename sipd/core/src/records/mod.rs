//! The records an operator provisions (accounts, auth rules, tariffs, upstream connections)
//! and the call detail records the core produces: one type per record, owning its validation.
//! `sipd`'s store persists them as versioned JSON. Each provisioned record has one input type
//! (`AccountSpec`, `RuleSpec`, `TariffSpec`, `ConnectionSpec`), read from the API's JSON
//! bodies and from the provisioning TOML alike, which builds the record and reports every
//! problem as a [`FieldError`] naming the field; look-ups that need the store come in
//! through [`Lookup`].

mod account;
mod cdr;
mod composition;
mod connection;
mod field;
mod money;
mod pattern;
mod refusal;
mod rule;
mod sip_password;
mod tariff;

pub use account::{Account, AccountSpec, SipAuth, SipSpec};
pub use cdr::{Cdr, CdrDraft, unix_ms};
pub use composition::{Composition, classes};
pub use connection::{Connection, ConnectionSpec, Transport, parse_destination};
pub use field::{FieldError, FieldErrors};
pub use money::{BadAmount, MICROS_PER_UNIT, Micros};
pub use pattern::{Matcher, Pattern, PatternError};
pub use refusal::{RefusalChanges, RefusalReason, RefusalRow, RefusalTable};
pub use rule::{AuthRule, RuleOwner, RuleSpec, check_tls_client_name};
pub use sip_password::{
    MAX_SIP_PASSWORD_CHARS, SipPasswordPolicies, SipPasswordPolicy, SipSecrets, Strength,
};
pub use tariff::{Tariff, TariffSpec};

/// A record's identity in the store: 0 until stored.
pub type Id = u64;

/// A record that breaks its type's rules, named by kind and field; `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {field}: {reason}")]
pub struct Invalid {
    /// The record's kind (`account`, `rule`, ...).
    pub kind: &'static str,
    /// The field at fault, as the input spells it.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    /// The first of `problems`, if any, as the record's error.
    pub(crate) fn first(kind: &'static str, problems: FieldErrors) -> Result<(), Invalid> {
        match problems.0.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(Invalid {
                kind,
                field: e.field,
                reason: e.message,
            }),
        }
    }
}

/// What building an account needs from the store, so the core stays free of I/O.
pub trait Lookup {
    /// The id of the tariff named `name`, `None` when there is none (`Some(0)` for one that
    /// is about to be stored, as in a provisioning file that also defines it).
    fn tariff_id(&self, name: &str) -> Result<Option<Id>, String>;
    /// The account (id, name) that holds SIP username `username`, if any.
    fn sip_user_owner(&self, username: &str) -> Result<Option<(Id, String)>, String>;
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
