//! The password rules a user's logins follow: the system's `[management.password]` for
//! staff, and for a customer user its account's [`LoginTemplate`] over that default (each
//! field the template leaves out is the default's).

use super::{PasswordPolicy, StaffAuth};
use crate::store::{Id, LoginTemplate, Staff, Store, StoreError};

/// The rules one user's password and login follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRules {
    /// What a new password must meet, and when it expires.
    pub policy: PasswordPolicy,
    /// Whether the user must have a second factor before anything else (admins always do).
    pub second_factor: bool,
}

impl LoginTemplate {
    /// These rules over the system default `base`.
    pub fn over(&self, base: PasswordPolicy) -> LoginRules {
        LoginRules {
            policy: PasswordPolicy {
                min_length: self.min_length.unwrap_or(base.min_length),
                min_classes: self.min_classes.unwrap_or(base.min_classes),
                max_age_days: self.max_age_days.unwrap_or(base.max_age_days),
                min_strength: base.min_strength,
            },
            second_factor: self.require_second_factor.unwrap_or(false),
        }
    }
}

impl StaffAuth {
    /// The rules of a user of `account` (`None`: staff).
    pub fn rules_for_account(
        &self,
        store: &Store,
        account: Option<Id>,
    ) -> Result<LoginRules, StoreError> {
        let default = LoginRules {
            policy: self.policy,
            second_factor: false,
        };
        let Some(a) = account else {
            return Ok(default);
        };
        Ok(store
            .login_template(a)?
            .map_or(default, |t| t.over(self.policy)))
    }

    /// The rules of user `s`: admins must always have a second factor.
    pub fn rules_for(&self, store: &Store, s: &Staff) -> Result<LoginRules, StoreError> {
        let mut r = self.rules_for_account(store, s.customer_of())?;
        r.second_factor |= s.role == crate::store::Role::Admin;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_overrides_only_what_it_names() {
        let base = PasswordPolicy::default();
        let t = LoginTemplate {
            account_id: 4,
            min_length: Some(20),
            max_age_days: Some(30),
            require_second_factor: Some(true),
            ..LoginTemplate::default()
        };
        let r = t.over(base);
        assert_eq!(r.policy.min_length, 20);
        assert_eq!(r.policy.max_age_days, 30);
        assert_eq!(r.policy.min_classes, base.min_classes);
        assert!(r.second_factor);
        assert!(!LoginTemplate::default().over(base).second_factor);
        assert_eq!(LoginTemplate::default().over(base).policy, base);
    }
}
