//! Errors that name the field at fault, as the input spells it (`sip.username`,
//! `cld_prefixes[0]`, `rate_per_minute`): the API answers them as a 400 `{"field": …}` and
//! `sipd import` prefixes the record's place in the file (`account.0.` + field).

/// One thing wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field as the input spells it (`sip.username`, `cld_prefixes[0]`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
    /// The value is well formed but another record holds it (a SIP username of another
    /// account): the API answers 409 rather than 400.
    pub taken: bool,
}

impl FieldError {
    /// A problem with `field` (answered 400).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
            taken: false,
        }
    }

    /// A well-formed value another record holds (answered 409).
    pub fn taken(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            taken: true,
            ..FieldError::new(field, message)
        }
    }

    /// The field as a dotted path under `prefix` (`account.0`), array indexes as segments:
    /// `cld_prefixes[0]` under `connection.1` is `connection.1.cld_prefixes.0`.
    pub fn path_under(&self, prefix: &str) -> String {
        let field = self.field.replace('[', ".").replace(']', "");
        if prefix.is_empty() {
            field
        } else {
            format!("{prefix}.{field}")
        }
    }
}

/// Every problem of one input, in the order the fields were checked (never empty as an
/// error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Notes a problem with `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// The value of `r`, or `None` with its error noted.
    pub fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    /// `value` when nothing was noted, else every problem.
    pub fn or<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The first problem (what the API reports).
    pub fn first(self) -> FieldError {
        self.0
            .into_iter()
            .next()
            .unwrap_or_else(|| FieldError::new("body", "invalid"))
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// Names are keys in the store's indexes and appear in CDRs, logs and the console.
pub(crate) fn check_name(p: &mut FieldErrors, name: &str) {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        p.add(
            "name",
            format!("{name:?} must be 1-64 characters without control characters"),
        );
    }
}

/// A limit of 0 would refuse everything; unlimited is written by leaving it out.
pub(crate) fn check_nonzero(p: &mut FieldErrors, field: &str, v: Option<u32>) {
    if v == Some(0) {
        p.add(
            field,
            format!(
                "{field} 0 would refuse everything: leave it out (unlimited) or disable instead"
            ),
        );
    }
}

pub(crate) fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::super::{AccountSpec, ConnectionSpec, Id, Lookup, RuleOwner, RuleSpec, TariffSpec};
    use super::*;

    struct Fake;
    impl Lookup for Fake {
        fn tariff_id(&self, name: &str) -> Result<Option<Id>, String> {
            Ok((name == "std").then_some(7))
        }
        fn sip_user_owner(&self, username: &str) -> Result<Option<(Id, String)>, String> {
            Ok((username == "taken").then(|| (9, "other".to_owned())))
        }
    }

    fn fields(e: FieldErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    fn account(json: &str) -> Result<crate::records::Account, FieldErrors> {
        let policies = crate::records::SipPasswordPolicies::default();
        let secrets = crate::records::SipSecrets {
            realm: "sbc",
            policies: &policies,
            strength: crate::records::sip_password::tests::strength,
        };
        serde_json::from_str::<AccountSpec>(json)
            .unwrap()
            .build(&secrets, None, &Fake)
    }

    /// A password is hashed on arrival (HA1 for both hashes, for our realm) and never kept;
    /// one that breaks the policy is refused with the field named; HA1 values for another
    /// realm could never answer our challenges and are refused too.
    #[test]
    fn sip_passwords_are_hashed_and_held_to_the_policy() {
        use crate::auth::digest::{Credential, HashFn};
        let a = account(r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4"}}"#)
            .unwrap();
        let c = &a.sip.as_ref().unwrap().credential;
        assert_eq!(c, &Credential::hashed("u", "sbc", "Vq7#pLm2!xR9wZt4"));
        assert!(c.supports(HashFn::Md5) && c.supports(HashFn::Sha256));
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("Vq7#pLm2"), "{json}");
        let spec = AccountSpec::of(&a, None, vec![]);
        let sip = spec.sip.unwrap();
        assert_eq!(sip.password, None, "what is exported has no password");
        assert!(sip.ha1_md5.is_some() && sip.ha1_sha256.is_some());

        for (pw, why) in [
            ("short1A!", "at least 12"),
            ("abcdefghijklmnop", "classes"),
            ("u-Vq7#pLm2!xR9wZt4", "too easy"),
        ] {
            let e = account(&format!(
                r#"{{"name":"a","sip":{{"username":"u","password":"{pw}"}}}}"#
            ))
            .unwrap_err();
            assert_eq!(fields(e.clone()), ["sip.password"], "{pw}");
            assert!(e.0[0].message.contains(why), "{pw}: {}", e.0[0].message);
            assert!(
                !e.0[0].message.contains(pw),
                "the refusal never echoes the password"
            );
        }
        let e = account(
            r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4","password_template":"pbx"}}"#,
        )
        .unwrap_err();
        assert_eq!(fields(e), ["sip.password_template"]);
        let e = account(&format!(
            r#"{{"name":"a","sip":{{"username":"u","realm":"elsewhere","ha1_md5":"{}"}}}}"#,
            "ab".repeat(16)
        ))
        .unwrap_err();
        assert_eq!(fields(e), ["sip.realm"]);
    }

    #[test]
    fn account_errors_name_their_fields() {
        let a = account(
            r#"{"name":"a","tariff":"std","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4"}}"#,
        );
        assert_eq!(a.unwrap().tariff_id, Some(7));
        let e = account(
            r#"{"name":"","cps_limit":0,"balance":"x","tariff":"no","sip":{"username":"a b"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(e),
            [
                "name",
                "cps_limit",
                "sip.username",
                "balance",
                "sip.password",
                "tariff"
            ]
        );
        let e = account(r#"{"name":"a","sip":{"username":"taken","ha1_md5":"12"}}"#).unwrap_err();
        assert_eq!(fields(e.clone()), ["sip.ha1_md5", "sip.username"]);
        assert!(e.0[1].taken && !e.0[0].taken);
        let ha1 = account(&format!(
            r#"{{"name":"a","sip":{{"username":"u","ha1_sha256":"{}","auth":"ha1"}}}}"#,
            "AB".repeat(32)
        ))
        .unwrap();
        assert!(ha1.validate().is_ok(), "HA1 hex is lowercased");
    }

    #[test]
    fn account_algorithms_are_checked_once_by_field() {
        use crate::auth::digest::Algorithm;
        let a = account(
            r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4","algorithms":["SHA-256"]}}"#,
        )
        .unwrap();
        assert_eq!(a.sip.unwrap().algorithms, Some(vec![Algorithm::Sha256]));
        let plain = account(r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4"}}"#)
            .unwrap();
        assert_eq!(
            plain.sip.unwrap().algorithms,
            None,
            "absent: [auth] algorithms"
        );
        let e = account(
            r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4","algorithms":[]}}"#,
        )
        .unwrap_err();
        assert_eq!(fields(e), ["sip.algorithms"]);
        let e = account(
            r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4","algorithms":["MD5","MD5"]}}"#,
        )
        .unwrap_err();
        assert_eq!(fields(e), ["sip.algorithms"]);
        // An MD5-only HA1 cannot answer SHA-256: refused when provisioned, not at call time.
        let e = account(&format!(
            r#"{{"name":"a","sip":{{"username":"u","ha1_md5":"{}","algorithms":["SHA-256"]}}}}"#,
            "ab".repeat(16)
        ))
        .unwrap_err();
        assert_eq!(fields(e.clone()), ["sip.algorithms"]);
        assert!(e.0[0].message.contains("ha1_sha256"), "{}", e.0[0].message);
        assert!(
            serde_json::from_str::<AccountSpec>(
                r#"{"name":"a","sip":{"username":"u","password":"Vq7#pLm2!xR9wZt4","algorithms":["SHA-1"]}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn connection_tariff_and_rule_errors_name_their_fields() {
        let c: ConnectionSpec = serde_json::from_str(
            r#"{"name":"c","destination":"a:b:c","cld_prefixes":["4x"],"max_channels":0}"#,
        )
        .unwrap();
        let e = c.build(0).unwrap_err();
        assert_eq!(
            fields(e.clone()),
            ["destination", "cld_prefixes[0]", "max_channels"]
        );
        assert_eq!(
            e.0[1].path_under("connection.2"),
            "connection.2.cld_prefixes.0"
        );
        let t: TariffSpec =
            serde_json::from_str(r#"{"name":"t","rate_per_minute":"-1","increment_secs":0}"#)
                .unwrap();
        assert_eq!(
            fields(t.build(0).unwrap_err()),
            ["rate_per_minute", "increment_secs"]
        );
        let r: RuleSpec = serde_json::from_str(r#"{"name":"r","cld":{"regex":"("}}"#).unwrap();
        let owner = RuleOwner {
            id: 1,
            name: "a",
            has_sip: false,
        };
        assert_eq!(fields(r.build(0, owner).unwrap_err()), ["cld", "ip_only"]);
        let r: RuleSpec = serde_json::from_str(r#"{"name":"r","ip_only":true}"#).unwrap();
        assert_eq!(fields(r.build(0, owner).unwrap_err()), ["remote"]);
        assert!(serde_json::from_str::<RuleSpec>(r#"{"name":"r","bogus":1}"#).is_err());
    }

    #[test]
    fn record_validation_names_the_field() {
        let c = ConnectionSpec {
            name: "c".into(),
            enabled: true,
            destination: "h:1".into(),
            transport: crate::records::Transport::Udp,
            cld_prefixes: vec![],
            max_channels: None,
            cps_limit: Some(1),
            priority: 1,
            tls_name: None,
        };
        let mut rec = c.build(0).unwrap();
        rec.port = 0;
        let e = rec.validate().unwrap_err();
        assert_eq!((e.kind, e.field.as_str()), ("connection", "destination"));
    }
}
