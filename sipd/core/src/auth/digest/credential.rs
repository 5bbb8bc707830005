//! What the store keeps to check a SIP account's digest: the password, or only HA1 values so a
//! stolen database does not hand out reusable passwords for other realms.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::algorithm::{HashFn, from_hex};

/// What is stored is always [`Credential::Ha1`]: a password given at provisioning is hashed on
/// arrival ([`Credential::hashed`]), and [`Credential::Password`] exists only to read stores
/// written before that (which are migrated when opened) and for tests.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credential {
    /// A plain password: never written any more.
    Password {
        /// The password itself.
        password: String,
    },
    /// `H(username:realm:password)` per hash, lowercase hex. HA1 binds the realm, so it is
    /// stored with it: a realm change must fail loudly rather than reject every call.
    Ha1 {
        /// The realm the HA1 values were computed for.
        realm: String,
        /// MD5 HA1, 32 lowercase hex digits; needed for the MD5 algorithms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        md5: Option<String>,
        /// SHA-256 HA1, 64 lowercase hex digits; needed for the SHA-256 algorithms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug output reaches logs; secrets must not.
        match self {
            Credential::Password { .. } => f.write_str("Credential::Password(<redacted>)"),
            Credential::Ha1 { realm, md5, sha256 } => f
                .debug_struct("Credential::Ha1")
                .field("realm", realm)
                .field("md5", &md5.as_ref().map(|_| "<redacted>"))
                .field("sha256", &sha256.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// Why a stored credential is invalid, or cannot check a given answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The HA1 values are for another realm than the configured one.
    #[error("stored HA1 is for realm {stored:?}, but the server realm is {server:?}")]
    RealmMismatch {
        /// The realm the HA1 values are for.
        stored: String,
        /// `[auth] realm`.
        server: String,
    },
    /// No HA1 for the hash the answer's algorithm needs.
    #[error("no stored HA1 for {0:?}: the account cannot use this algorithm")]
    NoHa1For(HashFn),
    /// An empty plain password.
    #[error("password is empty")]
    EmptyPassword,
    /// An HA1 that is not lowercase hex of the hash's length (the length is given).
    #[error("HA1 for {0:?} must be {1} lowercase hex digits")]
    BadHa1(HashFn, usize),
    /// An HA1 credential with neither hash.
    #[error("an HA1 credential needs at least one of md5 or sha256")]
    NoHa1,
}

impl Credential {
    /// The HA1 values of `password` for `username` in `realm`, for both hashes (as Kamailio's
    /// `ha1` and `ha1b` columns): what is stored instead of the password. Both, so the
    /// account can answer every algorithm whatever `[auth] algorithms` becomes.
    pub fn hashed(username: &str, realm: &str, password: &str) -> Credential {
        let h = |f: HashFn| f.hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]);
        Credential::Ha1 {
            realm: realm.to_owned(),
            md5: Some(h(HashFn::Md5)),
            sha256: Some(h(HashFn::Sha256)),
        }
    }

    /// A plain password (a record from before HA1-only storage).
    pub fn is_plain(&self) -> bool {
        matches!(self, Credential::Password { .. })
    }

    /// The realm HA1 values were computed for; `None` for a plain password (good for any).
    pub fn realm(&self) -> Option<&str> {
        match self {
            Credential::Password { .. } => None,
            Credential::Ha1 { realm, .. } => Some(realm),
        }
    }

    /// HA1 of the plain (non `-sess`) algorithm for `hash`.
    pub fn ha1(
        &self,
        hash: HashFn,
        username: &str,
        realm: &str,
    ) -> Result<String, CredentialError> {
        match self {
            Credential::Password { password } => {
                Ok(hash.hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]))
            }
            Credential::Ha1 {
                realm: stored,
                md5,
                sha256,
            } => {
                if stored != realm {
                    return Err(CredentialError::RealmMismatch {
                        stored: stored.clone(),
                        server: realm.to_owned(),
                    });
                }
                let v = match hash {
                    HashFn::Md5 => md5,
                    HashFn::Sha256 => sha256,
                };
                v.clone().ok_or(CredentialError::NoHa1For(hash))
            }
        }
    }

    /// Whether this credential can answer a challenge using `hash` (so challenges only offer
    /// algorithms the account can actually pass).
    pub fn supports(&self, hash: HashFn) -> bool {
        match self {
            Credential::Password { .. } => true,
            Credential::Ha1 { md5, sha256, .. } => match hash {
                HashFn::Md5 => md5.is_some(),
                HashFn::Sha256 => sha256.is_some(),
            },
        }
    }

    /// Structural checks for provisioning; lowercase is required because we compare hex.
    pub fn validate(&self) -> Result<(), CredentialError> {
        match self {
            Credential::Password { password } if password.is_empty() => {
                Err(CredentialError::EmptyPassword)
            }
            Credential::Password { .. } => Ok(()),
            Credential::Ha1 { md5, sha256, .. } => {
                if md5.is_none() && sha256.is_none() {
                    return Err(CredentialError::NoHa1);
                }
                for (v, h) in [(md5, HashFn::Md5), (sha256, HashFn::Sha256)] {
                    if let Some(v) = v {
                        let ok = v.len() == h.hex_len()
                            && from_hex(v).is_some()
                            && !v.bytes().any(|b| b.is_ascii_uppercase());
                        if !ok {
                            return Err(CredentialError::BadHa1(h, h.hex_len()));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_and_ha1_agree() {
        let pw = Credential::Password {
            password: "Circle Of Life".into(),
        };
        let md5 = pw.ha1(HashFn::Md5, "Mufasa", "testrealm@host.com").unwrap();
        let ha1 = Credential::Ha1 {
            realm: "testrealm@host.com".into(),
            md5: Some(md5.clone()),
            sha256: None,
        };
        assert!(ha1.validate().is_ok());
        assert_eq!(
            ha1.ha1(HashFn::Md5, "Mufasa", "testrealm@host.com")
                .unwrap(),
            md5
        );
        assert_eq!(
            ha1.ha1(HashFn::Sha256, "Mufasa", "testrealm@host.com"),
            Err(CredentialError::NoHa1For(HashFn::Sha256))
        );
        assert!(matches!(
            ha1.ha1(HashFn::Md5, "Mufasa", "other"),
            Err(CredentialError::RealmMismatch { .. })
        ));
        assert!(!format!("{pw:?}").contains("Circle"));
        assert!(!format!("{ha1:?}").contains(&md5));
    }

    /// Both HA1 values of a password, for the realm given: they answer exactly as the
    /// password did.
    #[test]
    fn hashed_password_answers_like_the_password() {
        let pw = Credential::Password {
            password: "Circle Of Life".into(),
        };
        let h = Credential::hashed("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert!(!h.is_plain() && pw.is_plain());
        assert_eq!(h.realm(), Some("testrealm@host.com"));
        assert!(h.validate().is_ok());
        for f in [HashFn::Md5, HashFn::Sha256] {
            assert_eq!(
                h.ha1(f, "Mufasa", "testrealm@host.com"),
                pw.ha1(f, "Mufasa", "testrealm@host.com")
            );
        }
        let json = serde_json::to_string(&h).unwrap();
        assert!(!json.contains("Circle"), "{json}");
    }

    #[test]
    fn validate_rejects_bad_ha1() {
        let bad = Credential::Ha1 {
            realm: "r".into(),
            md5: Some("ABC".into()),
            sha256: None,
        };
        assert_eq!(
            bad.validate(),
            Err(CredentialError::BadHa1(HashFn::Md5, 32))
        );
        let none = Credential::Ha1 {
            realm: "r".into(),
            md5: None,
            sha256: None,
        };
        assert_eq!(none.validate(), Err(CredentialError::NoHa1));
        let empty = Credential::Password {
            password: String::new(),
        };
        assert_eq!(empty.validate(), Err(CredentialError::EmptyPassword));
    }
}
