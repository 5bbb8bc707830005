//! Accounts: who may place calls, how they prove it, and what they may spend.

use super::{Account, Id, Micros, Store, StoreError, T, Tx, TxResult, abort};

impl Tx<'_> {
    /// The account with id `id`, as this transaction sees it; `None` when there is none.
    pub fn account(&self, id: Id) -> TxResult<Option<Account>> {
        self.get(T::Accounts, &id.to_be_bytes())
    }

    /// The account named `name` (operators' unique handle), through the name index.
    pub fn account_by_name(&self, name: &str) -> TxResult<Option<Account>> {
        match self.index_get(T::AccountNames, name)? {
            Some(id) => self.account(id),
            None => Ok(None),
        }
    }

    /// Inserts (id 0) or replaces an account, keeping the name and SIP-username indexes
    /// right. Returns the id.
    pub fn put_account(&self, a: &Account) -> TxResult<Id> {
        a.validate().or_else(abort)?;
        // Digest secrets are stored as HA1 values only; provisioning hashes passwords.
        if a.sip.as_ref().is_some_and(|s| s.credential.is_plain()) {
            return abort(StoreError::Invalid {
                kind: "account",
                reason: format!(
                    "sip: account {:?} carries a plain password; only HA1 values are stored",
                    a.name
                ),
            });
        }
        if let Some(t) = a.tariff_id
            && self.tariff(t)?.is_none()
        {
            return abort(StoreError::NotFound {
                kind: "tariff",
                what: format!("#{t} (for account {:?})", a.name),
            });
        }
        let id = if a.id == 0 { self.new_id()? } else { a.id };
        if let Some(old) = self.replaced::<Account>(T::Accounts, &id.to_be_bytes())? {
            if old.name != a.name {
                self.index_release(T::AccountNames, &old.name)?;
            }
            if let Some(s) = old
                .sip
                .filter(|s| Some(&s.username) != a.sip.as_ref().map(|n| &n.username))
                // Only if still its own: a batch may have given it to another account
                // already (a username moved between accounts in one transaction).
                && self.index_get(T::SipUsers, &s.username)? == Some(id)
            {
                self.index_release(T::SipUsers, &s.username)?;
            }
        }
        self.index_claim(T::AccountNames, "account", &a.name, id)?;
        if let Some(s) = &a.sip {
            self.index_claim(T::SipUsers, "account", &s.username, id)?;
        }
        self.put(T::Accounts, &id.to_be_bytes(), &Account { id, ..a.clone() })?;
        Ok(id)
    }
}

impl Store {
    /// Stores `a` (a new account when its id is 0) and returns it as stored.
    pub fn put_account(&self, a: &Account) -> Result<Account, StoreError> {
        let id = self.write(|tx| tx.put_account(a))?;
        Ok(Account { id, ..a.clone() })
    }

    /// The account with id `id`, `None` when there is none; `Corrupt` when it does not decode.
    pub fn account(&self, id: Id) -> Result<Option<Account>, StoreError> {
        self.get(T::Accounts, &id.to_be_bytes())
    }

    /// The account named `name`, through the name index.
    pub fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        self.by_index(T::AccountNames, T::Accounts, name)
    }

    /// The lookup digest authentication does with the `username` of a response.
    pub fn account_by_sip_user(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.by_index(T::SipUsers, T::Accounts, username)
    }

    /// Every account in id order; a corrupt one is an `Err` in its place and hides no other.
    pub fn accounts(&self) -> Vec<Result<Account, StoreError>> {
        self.scan(T::Accounts, &[])
    }

    /// Adds `delta` (negative to debit) to the balance atomically; returns the new balance.
    pub fn adjust_balance(&self, id: Id, delta: Micros) -> Result<Micros, StoreError> {
        let b = self.adjust_balance_unflushed(id, delta)?;
        self.flush()?;
        Ok(b)
    }

    pub(crate) fn adjust_balance_unflushed(
        &self,
        id: Id,
        delta: Micros,
    ) -> Result<Micros, StoreError> {
        self.write_unflushed(|tx| {
            let Some(mut a) = tx.account(id)? else {
                return abort(StoreError::NotFound {
                    kind: "account",
                    what: format!("#{id}"),
                });
            };
            let Some(b) = a.balance.0.checked_add(delta.0) else {
                return abort(StoreError::Invalid {
                    kind: "account",
                    reason: "balance overflow".into(),
                });
            };
            a.balance = Micros(b);
            tx.put(T::Accounts, &id.to_be_bytes(), &a)?;
            Ok(a.balance)
        })
    }
}
