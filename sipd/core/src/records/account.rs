//! Accounts: who may place calls, how they prove it, and what they may spend.

use serde::{Deserialize, Serialize};

use super::field::{check_name, check_nonzero, yes};
use super::{FieldError, FieldErrors, Id, Invalid, Lookup, Micros, Record, RuleSpec, SipSecrets};
use crate::auth::digest::{Algorithm, Credential, CredentialError, HashFn};

/// A customer who places calls: its credentials, limits, balance and tariff. Its auth rules
/// are separate records ([`AuthRule`](super::AuthRule)) that point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// 0 until stored.
    pub id: Id,
    /// Unique among accounts (the store indexes it); shown in CDRs, logs and the console.
    pub name: String,
    /// A disabled account's calls are refused at admission; its records are kept.
    pub enabled: bool,
    /// Digest credentials; `None` for carriers authenticated by IP alone.
    #[serde(default)]
    pub sip: Option<SipAuth>,
    /// New calls per second; `None` is unlimited.
    #[serde(default)]
    pub cps_limit: Option<u32>,
    /// Calls in progress at once; `None` is unlimited.
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// Credit left, in micro-units; admission reserves against it and each ended call's cost is
    /// debited. Never driven below zero by calls (the operator may set any value).
    pub balance: Micros,
    /// How calls are priced; `None`: calls are free (no balance rule applies).
    #[serde(default)]
    pub tariff_id: Option<Id>,
    /// Hard cap on any one call, on top of the balance-derived cap.
    #[serde(default)]
    pub max_call_secs: Option<u32>,
}

/// An account's digest identity: the username callers present and the stored secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipAuth {
    /// Digest username; one account's only (the store refuses it for another), 1-128 printable
    /// characters without spaces.
    pub username: String,
    /// HA1 values for the configured realm (or, in a store not yet migrated, a plain password).
    pub credential: Credential,
    /// The digest algorithms this account is offered and may answer with, in challenge
    /// order; `None`: `[auth] algorithms`. `["SHA-256"]` requires SHA-256 (no MD5 challenge
    /// once the caller has named the user, and an MD5 answer is challenged again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<Algorithm>>,
    /// The password policy template (`[auth.sip_password.templates]`) new passwords of this
    /// account are held to; `None`: the default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_template: Option<String>,
}

impl Record for Account {
    const KIND: &'static str = "account";
    const VERSION: u32 = 1;
}

impl Account {
    /// Every broken rule, by field (credentials named as the input writes them:
    /// `sip.password`, `sip.ha1_md5`, `sip.ha1_sha256`).
    pub fn problems(&self) -> FieldErrors {
        let mut p = FieldErrors::default();
        check_name(&mut p, &self.name);
        check_nonzero(&mut p, "cps_limit", self.cps_limit);
        check_nonzero(&mut p, "max_sessions", self.max_sessions);
        check_nonzero(&mut p, "max_call_secs", self.max_call_secs);
        if let Some(sip) = &self.sip {
            // The username is matched against a header value; keep it to what UAs send.
            let u = &sip.username;
            if u.is_empty()
                || u.len() > 128
                || u.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                p.add(
                    "sip.username",
                    format!("{u:?} must be 1-128 printable characters without spaces"),
                );
            }
            if let Err(e) = sip.credential.validate() {
                let field = match e {
                    CredentialError::BadHa1(HashFn::Md5, _) => "sip.ha1_md5",
                    CredentialError::BadHa1(HashFn::Sha256, _) => "sip.ha1_sha256",
                    _ => "sip.password",
                };
                p.add(field, e.to_string());
            }
            if let Some(list) = &sip.algorithms {
                check_algorithms(&mut p, list, &sip.credential);
            }
        }
        p
    }

    /// The first of [`Account::problems`], as the record's error (the store refuses to write it).
    pub fn validate(&self) -> Result<(), Invalid> {
        Invalid::first("account", self.problems())
    }
}

/// An account's own algorithm list: not empty, no repeats, and each one answerable with the
/// stored credential (an MD5-only HA1 cannot pass a SHA-256 challenge).
fn check_algorithms(p: &mut FieldErrors, list: &[Algorithm], credential: &Credential) {
    if list.is_empty() {
        p.add(
            "sip.algorithms",
            "give at least one algorithm, or leave it out to use [auth] algorithms",
        );
    }
    for (i, a) in list.iter().enumerate() {
        if list[..i].contains(a) {
            p.add("sip.algorithms", format!("{a} is listed twice"));
        }
        if !credential.supports(a.hash()) {
            let field = match a.hash() {
                HashFn::Md5 => "ha1_md5",
                HashFn::Sha256 => "ha1_sha256",
            };
            p.add(
                "sip.algorithms",
                format!("{a} needs the password or sip.{field}"),
            );
        }
    }
}

/// An account as the API and the provisioning file write it. In the file it carries its
/// auth rules (`[[account.rule]]`); the API manages rules on their own endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// The account's name (see [`Account::name`]); an import upserts by it.
    pub name: String,
    /// Defaults to `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Name of the tariff to bill with; it must exist (or be defined in the same file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff: Option<String>,
    /// Opening balance, decimal: applied when the account is created, ignored afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    /// New calls per second; absent: unlimited; 0 is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cps_limit: Option<u32>,
    /// Calls in progress at once; absent: unlimited; 0 is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    /// Hard cap on any one call, in seconds; absent: none; 0 is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_secs: Option<u32>,
    /// Digest credentials; absent for an account authenticated by IP alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipSpec>,
    /// The account's auth rules, in the provisioning file only (`[[account.rule]]`).
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
}

/// Either `password` (checked against the account's password policy, then hashed: only its
/// HA1 values are stored), or HA1 values (`ha1_md5`/`ha1_sha256`, computed for `realm`,
/// which must be the configured one and is assumed when left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSpec {
    /// Digest username (see [`SipAuth::username`]).
    pub username: String,
    /// Plain password: checked against the policy, hashed on arrival, never stored or exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Realm the HA1 values were computed for; only with them, and it must be `[auth] realm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// MD5 HA1 (`MD5(user:realm:password)`), 32 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_md5: Option<String>,
    /// SHA-256 HA1 (`SHA-256(user:realm:password)`), 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_sha256: Option<String>,
    /// Digest algorithms for this account, in challenge order (e.g. `["SHA-256"]` to
    /// require SHA-256); absent: `[auth] algorithms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<Algorithm>>,
    /// The password policy template a new password must meet (`[auth.sip_password.templates]`);
    /// absent: `[auth.sip_password]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_template: Option<String>,
    /// What the API's view shows (`password` or `ha1`); accepted and ignored on input, so
    /// a view sent back with changes reads.
    #[serde(default, skip_serializing)]
    pub auth: Option<String>,
}

impl SipSpec {
    /// The credential the input gives (a password hashed on arrival), or `keep` (the stored
    /// one) when it gives no secret for the same username. `account`: the account's name,
    /// a word a password must not be built on.
    fn credential(
        &self,
        secrets: &SipSecrets,
        account: &str,
        keep: Option<&SipAuth>,
    ) -> Result<Credential, FieldError> {
        let realm = secrets.realm;
        let has_ha1 = self.ha1_md5.is_some() || self.ha1_sha256.is_some();
        match (&self.password, has_ha1) {
            (Some(_), true) => Err(FieldError::new(
                "sip.password",
                "give either password or HA1 values, not both",
            )),
            (Some(_), false) if self.realm.is_some() => Err(FieldError::new(
                "sip.realm",
                "realm only goes with ha1_md5/ha1_sha256",
            )),
            (Some(p), false) => secrets.hash(
                &self.username,
                account,
                p,
                self.password_template.as_deref(),
            ),
            // HA1 binds the realm: values for another one could never answer our challenges.
            (None, true) if self.realm.as_deref().is_some_and(|r| r != realm) => {
                Err(FieldError::new(
                    "sip.realm",
                    format!(
                        "HA1 values for realm {:?} cannot answer challenges for realm {realm:?} ([auth] realm): compute them for {realm:?}",
                        self.realm.as_deref().unwrap_or_default()
                    ),
                ))
            }
            (None, true) => Ok(Credential::Ha1 {
                realm: realm.to_owned(),
                md5: self.ha1_md5.as_ref().map(|h| h.to_ascii_lowercase()),
                sha256: self.ha1_sha256.as_ref().map(|h| h.to_ascii_lowercase()),
            }),
            (None, false) => match keep {
                Some(cur) if cur.username == self.username => Ok(cur.credential.clone()),
                _ => Err(FieldError::new(
                    "sip.password",
                    "needs password, or ha1_md5 and/or ha1_sha256",
                )),
            },
        }
    }
}

impl From<&SipAuth> for SipSpec {
    /// The input that rebuilds `s`: its HA1 values, never a password (a plain one, from a
    /// store not yet migrated, is left out; importing the result keeps the stored one).
    fn from(s: &SipAuth) -> SipSpec {
        let (realm, ha1_md5, ha1_sha256) = match &s.credential {
            Credential::Password { .. } => (None, None, None),
            Credential::Ha1 { realm, md5, sha256 } => {
                (Some(realm.clone()), md5.clone(), sha256.clone())
            }
        };
        SipSpec {
            username: s.username.clone(),
            password: None,
            realm,
            ha1_md5,
            ha1_sha256,
            algorithms: s.algorithms.clone(),
            password_template: s.password_template.clone(),
            auth: None,
        }
    }
}

impl AccountSpec {
    /// The account (not its rules), or every problem by field. `current` is the stored
    /// account an update replaces: it keeps its id and balance, and its credential when
    /// `sip` names the same user without a secret. `secrets`: the realm HA1 values are for
    /// and the password policies.
    pub fn build(
        &self,
        secrets: &SipSecrets,
        current: Option<&Account>,
        lookup: &dyn Lookup,
    ) -> Result<Account, FieldErrors> {
        let mut p = FieldErrors::default();
        let balance = match (current, &self.balance) {
            (Some(c), _) => c.balance,
            (None, None) => Micros(0),
            (None, Some(b)) => p
                .take(
                    b.parse::<Micros>()
                        .map_err(|e| FieldError::new("balance", e.to_string())),
                )
                .unwrap_or_default(),
        };
        let sip = self.sip.as_ref().map(|s| {
            let credential = p
                .take(s.credential(secrets, &self.name, current.and_then(|c| c.sip.as_ref())))
                // Stands in for the refused one so the username is still checked; the
                // account is not returned.
                .unwrap_or_else(|| Credential::hashed(&s.username, secrets.realm, "-"));
            self.check_owner(&mut p, &s.username, current, lookup);
            SipAuth {
                username: s.username.clone(),
                credential,
                algorithms: s.algorithms.clone(),
                password_template: s.password_template.clone(),
            }
        });
        let tariff_id = self.tariff.as_ref().and_then(|n| {
            let found = lookup
                .tariff_id(n)
                .map_err(|e| FieldError::new("tariff", e));
            match p.take(found)? {
                None => {
                    p.add("tariff", format!("no tariff {n:?}"));
                    None
                }
                id => id,
            }
        });
        let a = Account {
            id: current.map_or(0, |c| c.id),
            name: self.name.clone(),
            enabled: self.enabled,
            sip,
            cps_limit: self.cps_limit,
            max_sessions: self.max_sessions,
            balance,
            tariff_id,
            max_call_secs: self.max_call_secs,
        };
        let mut all = a.problems();
        all.0.extend(p.0);
        all.or(a)
    }

    /// A SIP username is one account's: refuses one another account holds.
    fn check_owner(
        &self,
        p: &mut FieldErrors,
        username: &str,
        current: Option<&Account>,
        lookup: &dyn Lookup,
    ) {
        match lookup.sip_user_owner(username) {
            Ok(Some((id, owner))) if current.map_or(owner != self.name, |c| c.id != id) => {
                p.0.push(FieldError::taken(
                    "sip.username",
                    format!("SIP username {username:?} belongs to account {owner:?}"),
                ));
            }
            Ok(_) => {}
            Err(e) => p.add("sip.username", e),
        }
    }

    /// The input that builds `a`, with its tariff's name and its rules.
    pub fn of(a: &Account, tariff: Option<String>, rules: Vec<RuleSpec>) -> AccountSpec {
        AccountSpec {
            name: a.name.clone(),
            enabled: a.enabled,
            tariff,
            balance: Some(a.balance.to_string()),
            cps_limit: a.cps_limit,
            max_sessions: a.max_sessions,
            max_call_secs: a.max_call_secs,
            sip: a.sip.as_ref().map(SipSpec::from),
            rules,
        }
    }
}
