//! What a SIP digest password must be before it is hashed and stored, as Sippy's password
//! templates: one policy by default (`[auth.sip_password]`) and named ones an account may
//! choose (`sip.password_template`), e.g. a looser one for a PBX that cannot hold long
//! secrets. A digest password is attacked offline from one captured exchange, so its
//! strength is all that stands between a sniffer and the account's credit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Composition, FieldError};
use crate::auth::digest::Credential;

/// Longest password accepted: the estimate's work grows with length, and no UA needs more.
pub const MAX_SIP_PASSWORD_CHARS: usize = 128;

/// One policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipPasswordPolicy {
    /// Characters (not bytes).
    pub min_length: usize,
    /// How many of the four classes (lowercase, uppercase, digit, other) must appear.
    pub min_classes: u8,
    /// Lowest strength estimate accepted, on zxcvbn's 0-4 scale (4: over 10^10 guesses).
    pub min_strength: u8,
}

impl Default for SipPasswordPolicy {
    /// 12 characters of two classes that zxcvbn scores 3 (about 10^8 guesses or more): a
    /// captured MD5 exchange is tried at billions of guesses a second.
    fn default() -> Self {
        SipPasswordPolicy {
            min_length: 12,
            min_classes: 2,
            min_strength: 3,
        }
    }
}

/// `[auth.sip_password]`: the default policy, and the named templates beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipPasswordPolicies {
    /// The default policy's minimum length, in characters.
    pub min_length: usize,
    /// The default policy's character classes (see [`SipPasswordPolicy::min_classes`]).
    pub min_classes: u8,
    /// The default policy's lowest zxcvbn score (0-4).
    pub min_strength: u8,
    /// `[auth.sip_password.templates.NAME]`, chosen per account by `sip.password_template`.
    pub templates: BTreeMap<String, SipPasswordPolicy>,
}

impl Default for SipPasswordPolicies {
    fn default() -> Self {
        let d = SipPasswordPolicy::default();
        SipPasswordPolicies {
            min_length: d.min_length,
            min_classes: d.min_classes,
            min_strength: d.min_strength,
            templates: BTreeMap::new(),
        }
    }
}

/// A strength estimate on zxcvbn's scale (0-4) of a password, given words an attacker
/// tries first (the username, the account's name). The shell supplies it (zxcvbn), so the
/// core stays free of its dictionaries.
pub type Strength = fn(password: &str, known: &[&str]) -> u8;

/// What provisioning a SIP credential needs beside the input: the realm its HA1 values are
/// for and the password policies.
#[derive(Clone, Copy)]
pub struct SipSecrets<'a> {
    /// The configured `[auth] realm`: HA1 values are computed for it and must be for it.
    pub realm: &'a str,
    /// The default policy and the templates.
    pub policies: &'a SipPasswordPolicies,
    /// Scores a password (zxcvbn in `sipd`).
    pub strength: Strength,
}

impl std::fmt::Debug for SipSecrets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipSecrets")
            .field("realm", &self.realm)
            .field("policies", self.policies)
            .finish_non_exhaustive()
    }
}

impl SipPasswordPolicy {
    /// The shared length, class and strength rules of this policy.
    fn composition(&self) -> Composition {
        Composition {
            min_length: self.min_length,
            max_chars: MAX_SIP_PASSWORD_CHARS,
            min_classes: self.min_classes,
            min_strength: self.min_strength,
        }
    }

    /// Problems with the policy itself, for the configuration check.
    pub fn problems(&self) -> Vec<String> {
        self.composition().problems()
    }

    /// Every rule `password` breaks, in one sentence each; empty when it passes.
    pub fn violations(&self, password: &str, known: &[&str], strength: Strength) -> Vec<String> {
        let rules = self.composition();
        let mut out = rules.breaks(password);
        if password.chars().count() > MAX_SIP_PASSWORD_CHARS {
            return out;
        }
        if let Some(weak) = rules.too_weak(strength(password, known)) {
            out.push(format!("{weak}: avoid words, names and the username"));
        }
        out
    }
}

impl SipPasswordPolicies {
    /// Problems with the policies, keyed as the configuration writes them.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .default_policy()
            .problems()
            .into_iter()
            .map(|p| ("auth.sip_password".to_owned(), p))
            .collect();
        for (name, t) in &self.templates {
            let key = format!("auth.sip_password.templates.{name}");
            out.extend(t.problems().into_iter().map(|p| (key.clone(), p)));
        }
        out
    }

    /// The policy of accounts that name no template.
    pub fn default_policy(&self) -> SipPasswordPolicy {
        SipPasswordPolicy {
            min_length: self.min_length,
            min_classes: self.min_classes,
            min_strength: self.min_strength,
        }
    }

    /// The policy `template` names (`None`: the default one).
    pub fn get(&self, template: Option<&str>) -> Result<SipPasswordPolicy, FieldError> {
        match template {
            None => Ok(self.default_policy()),
            Some(t) => self.templates.get(t).copied().ok_or_else(|| {
                let known: Vec<&str> = self.templates.keys().map(String::as_str).collect();
                FieldError::new(
                    "sip.password_template",
                    format!(
                        "no password template {t:?} ([auth.sip_password.templates] has: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            }),
        }
    }
}

impl SipSecrets<'_> {
    /// `password` checked against `template`'s policy and hashed for `username`: the field
    /// named in the error is `sip.password`.
    pub fn hash(
        &self,
        username: &str,
        account: &str,
        password: &str,
        template: Option<&str>,
    ) -> Result<Credential, FieldError> {
        let policy = self.policies.get(template)?;
        let problems = policy.violations(password, &[username, account, self.realm], self.strength);
        if !problems.is_empty() {
            return Err(FieldError::new(
                "sip.password",
                format!("the password {}", problems.join("; ")),
            ));
        }
        Ok(Credential::hashed(username, self.realm, password))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stand-in for zxcvbn: long and varied is strong; the known words are weak.
    pub(crate) fn strength(password: &str, known: &[&str]) -> u8 {
        if known.iter().any(|k| !k.is_empty() && password.contains(k)) {
            return 0;
        }
        let distinct = password
            .chars()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        match distinct {
            0..=5 => 0,
            6..=8 => 2,
            _ => 4,
        }
    }

    #[test]
    fn policy_names_every_broken_rule() {
        let p = SipPasswordPolicy::default();
        assert!(
            p.violations("Vq7#pLm2!xR9wZt4", &["alice"], strength)
                .is_empty()
        );
        let v = p.violations("aaaa", &[], strength);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("at least 12") && v[1].contains("classes"));
        assert!(v[2].contains("too easy"));
        let v = p.violations("alice-Vq7#pLm2", &["alice"], strength);
        assert_eq!(v.len(), 1, "{v:?}");
        let v = p.violations(&"a".repeat(200), &[], strength);
        assert!(v.iter().any(|m| m.contains("over 128")), "{v:?}");
        assert!(SipPasswordPolicy::default().problems().is_empty());
        let bad = SipPasswordPolicy {
            min_length: 2,
            min_classes: 5,
            min_strength: 9,
        };
        assert_eq!(bad.problems().len(), 3);
    }

    #[test]
    fn templates_by_name_and_unknown_ones_named() {
        let mut policies = SipPasswordPolicies::default();
        policies.templates.insert(
            "pbx".into(),
            SipPasswordPolicy {
                min_length: 8,
                min_classes: 1,
                min_strength: 0,
            },
        );
        let secrets = SipSecrets {
            realm: "sbc",
            policies: &policies,
            strength,
        };
        let e = secrets.hash("u", "acct", "pbxpass1", None).unwrap_err();
        assert_eq!(e.field, "sip.password");
        assert!(e.message.contains("at least 12"), "{}", e.message);
        let c = secrets.hash("u", "acct", "pbxpass1", Some("pbx")).unwrap();
        assert!(!c.is_plain() && c.realm() == Some("sbc"));
        let e = secrets
            .hash("u", "acct", "pbxpass1", Some("nope"))
            .unwrap_err();
        assert_eq!(e.field, "sip.password_template");
        assert!(e.message.contains("pbx"), "{}", e.message);
    }
}
