//! Accounts: who may place calls, how they prove it, and what they may spend.

use serde::{Deserialize, Serialize};

use super::{Id, Invalid, Micros, Record, valid_name};
use crate::auth::digest::Credential;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// 0 until stored.
    pub id: Id,
    pub name: String,
    pub enabled: bool,
    /// Digest credentials; `None` for carriers authenticated by IP alone.
    #[serde(default)]
    pub sip: Option<SipAuth>,
    /// New calls per second; `None` is unlimited.
    #[serde(default)]
    pub cps_limit: Option<u32>,
    #[serde(default)]
    pub max_sessions: Option<u32>,
    pub balance: Micros,
    #[serde(default)]
    pub tariff_id: Option<Id>,
    /// Hard cap on any one call, on top of the balance-derived cap.
    #[serde(default)]
    pub max_call_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipAuth {
    pub username: String,
    pub credential: Credential,
}

impl Record for Account {
    const KIND: &'static str = "account";
    const VERSION: u32 = 1;
}

impl Account {
    pub fn validate(&self) -> Result<(), Invalid> {
        valid_name("account", &self.name)?;
        if let Some(sip) = &self.sip {
            let bad = |reason: String| Invalid {
                kind: "account",
                reason: format!("{}: {reason}", self.name),
            };
            // The username is matched against a header value; keep it to what UAs send.
            if sip.username.is_empty()
                || sip.username.len() > 128
                || sip
                    .username
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(bad(format!(
                    "SIP username {:?} must be 1-128 printable characters",
                    sip.username
                )));
            }
            sip.credential.validate().map_err(|e| bad(e.to_string()))?;
        }
        if self.cps_limit == Some(0)
            || self.max_sessions == Some(0)
            || self.max_call_secs == Some(0)
        {
            return Err(Invalid {
                kind: "account",
                reason: format!(
                    "{}: a limit of 0 would refuse every call; disable the account instead",
                    self.name
                ),
            });
        }
        Ok(())
    }
}
