//! Authentication rules (Sippy's model): which sources, callers and called numbers an
//! account accepts, and whether the source address alone is proof enough.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Id, Invalid, Pattern, Record, valid_name};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRule {
    pub id: Id,
    pub account_id: Id,
    /// Unique within the account; provisioning upserts by it.
    pub name: String,
    /// `None`: any source.
    #[serde(default)]
    pub remote: Option<IpNet>,
    #[serde(default)]
    pub cli: Option<Pattern>,
    #[serde(default)]
    pub cld: Option<Pattern>,
    /// Matching the rule is the whole authentication: no digest challenge. Only with a
    /// `remote`, otherwise anyone on the Internet would be that account.
    pub ip_only: bool,
}

impl Record for AuthRule {
    const KIND: &'static str = "rule";
    const VERSION: u32 = 1;
}

impl AuthRule {
    pub fn validate(&self) -> Result<(), Invalid> {
        valid_name("rule", &self.name)?;
        let bad = |reason: String| Invalid {
            kind: "rule",
            reason: format!("{}: {reason}", self.name),
        };
        if self.ip_only && self.remote.is_none() {
            return Err(bad("ip_only needs a remote address or network".into()));
        }
        if let Some(net) = self.remote
            && self.ip_only
            && net.prefix_len() == 0
        {
            return Err(bad(format!(
                "ip_only with {net} would let the whole Internet in"
            )));
        }
        for (what, p) in [("cli", &self.cli), ("cld", &self.cld)] {
            if let Some(p) = p {
                p.compile().map_err(|e| bad(format!("{what}: {e}")))?;
            }
        }
        Ok(())
    }
}
