//! Password templates per account (Sippy's `password_policy`): what the web logins of one
//! account's customer users must meet. One tree (`login_templates`) keyed by the account id;
//! each field left out falls back to the system default (`[management.password]`).

use serde::{Deserialize, Serialize};

use super::{Id, Record, Store, StoreError, T, Tx, TxResult};

/// One account's password template; `None` fields take the system default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginTemplate {
    /// The account whose customer users this applies to.
    #[serde(default)]
    pub account_id: Id,
    /// Characters (not bytes), 8-256.
    #[serde(default)]
    pub min_length: Option<usize>,
    /// How many of the four classes (lowercase, uppercase, digit, other) must appear, 1-4.
    #[serde(default)]
    pub min_classes: Option<u8>,
    /// Days after which the password must be changed at the next login; 0 = never.
    #[serde(default)]
    pub max_age_days: Option<u32>,
    /// Whether the users must enrol a second factor (TOTP) before anything else.
    #[serde(default)]
    pub require_second_factor: Option<bool>,
}

impl Record for LoginTemplate {
    const KIND: &'static str = "login template";
    const VERSION: u32 = 1;
}

impl LoginTemplate {
    /// The template's own rules; `Invalid` naming the field otherwise.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: &str| StoreError::Invalid {
            kind: "login template",
            reason: reason.into(),
        };
        if self.min_length.is_some_and(|n| !(8..=256).contains(&n)) {
            return Err(bad("min_length must be 8-256"));
        }
        if self.min_classes.is_some_and(|n| !(1..=4).contains(&n)) {
            return Err(bad("min_classes must be 1-4"));
        }
        if self.max_age_days.is_some_and(|d| d > 3650) {
            return Err(bad("max_age_days must be 0-3650"));
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// The template of account `account`, if it has one.
    pub fn login_template(&self, account: Id) -> TxResult<Option<LoginTemplate>> {
        self.get(T::LoginTemplates, &account.to_be_bytes())
    }

    /// Stores (or replaces) the template of `t.account_id`.
    pub fn put_login_template(&self, t: &LoginTemplate) -> TxResult<()> {
        t.validate().or_else(super::abort)?;
        self.put(T::LoginTemplates, &t.account_id.to_be_bytes(), t)
    }

    /// Removes the template of `account` (back to the system default); the old one.
    pub fn delete_login_template(&self, account: Id) -> TxResult<Option<LoginTemplate>> {
        let old = self.login_template(account)?;
        self.tree(T::LoginTemplates)
            .remove(&account.to_be_bytes())?;
        Ok(old)
    }
}

impl Store {
    /// The template of account `account`, if it has one.
    pub fn login_template(&self, account: Id) -> Result<Option<LoginTemplate>, StoreError> {
        self.get(T::LoginTemplates, &account.to_be_bytes())
    }
}
