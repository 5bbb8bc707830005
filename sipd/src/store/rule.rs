//! Authentication rules (Sippy's model): which sources, callers and called numbers an
//! account accepts, and whether the source address alone is proof enough.

use super::{AuthRule, Id, Store, StoreError, T, Tx, TxResult, abort};

fn key(account_id: Id, name: &str) -> Vec<u8> {
    let mut k = account_id.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}
impl Tx<'_> {
    /// The rule `name` of account `account_id` (rules are keyed by account, then name).
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
    /// Stores `r` (the account's rule of that name, replaced if it exists) and returns it as
    /// stored. `NotFound` without the account; `Invalid` for a non-`ip_only` rule on an account
    /// with no SIP credentials.
    pub fn put_rule(&self, r: &AuthRule) -> Result<AuthRule, StoreError> {
        let id = self.write(|tx| tx.put_rule(r))?;
        Ok(AuthRule { id, ..r.clone() })
    }

    /// The rules of one account, in name order; a corrupt one is an `Err` in its place.
    pub fn rules_of(&self, account_id: Id) -> Vec<Result<AuthRule, StoreError>> {
        self.scan(T::Rules, &account_id.to_be_bytes())
    }

    /// Every rule of every account, by account then name; a corrupt one is an `Err` in its place.
    pub fn rules(&self) -> Vec<Result<AuthRule, StoreError>> {
        self.scan(T::Rules, &[])
    }
}
