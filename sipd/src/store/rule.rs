//! Authentication rules (Sippy's model): which sources, callers and called numbers an
//! account accepts, and whether the source address alone is proof enough.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::account::valid_name;
use super::{Id, Pattern, Record, Store, StoreError, T, Tx, TxResult, abort};

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

fn key(account_id: Id, name: &str) -> Vec<u8> {
    let mut k = account_id.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl AuthRule {
    pub fn validate(&self) -> Result<(), StoreError> {
        valid_name("rule", &self.name)?;
        let bad = |reason: String| StoreError::Invalid {
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

impl Tx<'_> {
    pub fn rule(&self, account_id: Id, name: &str) -> TxResult<Option<AuthRule>> {
        self.get(T::Rules, &key(account_id, name))
    }

    /// Inserts or replaces the account's rule of that name; returns its id.
    pub fn put_rule(&self, r: &AuthRule) -> TxResult<Id> {
        r.validate().or_else(abort)?;
        let Some(account) = self.account(r.account_id)? else {
            return abort(StoreError::NotFound {
                kind: "account",
                what: format!("#{} (for rule {:?})", r.account_id, r.name),
            });
        };
        if !r.ip_only && account.sip.is_none() {
            return abort(StoreError::Invalid {
                kind: "rule",
                reason: format!(
                    "{}: account {:?} has no SIP credentials, so the rule needs ip_only = true",
                    r.name, account.name
                ),
            });
        }
        let k = key(r.account_id, &r.name);
        let id = match self.replaced::<AuthRule>(T::Rules, &k)? {
            Some(old) => old.id,
            None if r.id != 0 => r.id,
            None => self.new_id()?,
        };
        self.put(T::Rules, &k, &AuthRule { id, ..r.clone() })?;
        Ok(id)
    }
}

impl Store {
    pub fn put_rule(&self, r: &AuthRule) -> Result<AuthRule, StoreError> {
        let id = self.write(|tx| tx.put_rule(r))?;
        Ok(AuthRule { id, ..r.clone() })
    }

    pub fn rules_of(&self, account_id: Id) -> Vec<Result<AuthRule, StoreError>> {
        self.scan(T::Rules, &account_id.to_be_bytes())
    }

    pub fn rules(&self) -> Vec<Result<AuthRule, StoreError>> {
        self.scan(T::Rules, &[])
    }
}
