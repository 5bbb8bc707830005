//! Authentication rules (Sippy's model): which sources, callers and called numbers an
//! account accepts, and whether the source address alone is proof enough.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::field::check_name;
use super::{Account, FieldErrors, Id, Invalid, Pattern, Record};

/// Which sources, callers and called numbers authenticate as an account, and whether the
/// source alone is proof. A call must match every pattern the rule has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRule {
    /// 0 until stored.
    pub id: Id,
    /// The account a match authenticates as.
    pub account_id: Id,
    /// Unique within the account; provisioning upserts by it.
    pub name: String,
    /// `None`: any source.
    #[serde(default)]
    pub remote: Option<IpNet>,
    /// The caller's number (From user) must match; `None`: any.
    #[serde(default)]
    pub cli: Option<Pattern>,
    /// The called number must match; `None`: any.
    #[serde(default)]
    pub cld: Option<Pattern>,
    /// Matching the rule is the whole authentication: no digest challenge. Only with a
    /// `remote`, otherwise anyone on the Internet would be that account.
    pub ip_only: bool,
    /// A call matching the rule is admitted only over a TLS connection whose client
    /// certificate (verified against `[sip] tls_client_roots`) carries this DNS name as a
    /// SAN; `None`: any transport, no certificate asked.
    #[serde(default)]
    pub tls_client_name: Option<String>,
}

impl Record for AuthRule {
    const KIND: &'static str = "rule";
    const VERSION: u32 = 1;
}

impl AuthRule {
    /// Every broken rule, by field.
    pub fn problems(&self) -> FieldErrors {
        let mut p = FieldErrors::default();
        check_name(&mut p, &self.name);
        match self.remote {
            None if self.ip_only => p.add("remote", "ip_only needs a remote address or network"),
            Some(net) if self.ip_only && net.prefix_len() == 0 => p.add(
                "remote",
                format!("ip_only with {net} would let the whole Internet in"),
            ),
            _ => {}
        }
        if let Some(n) = &self.tls_client_name
            && let Err(e) = check_tls_client_name(n)
        {
            p.add("tls_client_name", e);
        }
        for (what, pat) in [("cli", &self.cli), ("cld", &self.cld)] {
            if let Some(pat) = pat
                && let Err(e) = pat.compile()
            {
                p.add(what, e.to_string());
            }
        }
        p
    }

    /// Whether a caller whose verified TLS client certificate carries `names` (empty: no
    /// certificate, or not over TLS) satisfies the rule's `tls_client_name`. DNS names
    /// compare without regard to case.
    pub fn client_cert_ok(&self, names: &[String]) -> bool {
        self.tls_client_name
            .as_ref()
            .is_none_or(|want| names.iter().any(|n| n.eq_ignore_ascii_case(want)))
    }

    /// The first of [`AuthRule::problems`], as the record's error.
    pub fn validate(&self) -> Result<(), Invalid> {
        Invalid::first("rule", self.problems())
    }
}

/// Why `n` cannot be a rule's `tls_client_name`: it must be a DNS name (not an address,
/// not a wildcard: the rule names one peer, and a certificate's wildcard SAN is matched as
/// written, never expanded).
pub fn check_tls_client_name(n: &str) -> Result<(), String> {
    if n.contains('*') {
        return Err(format!("{n:?}: a wildcard is not allowed, name one host"));
    }
    if n.parse::<std::net::IpAddr>().is_ok() || !super::connection::is_host(n) {
        return Err(format!("{n:?} is not a DNS name"));
    }
    Ok(())
}

/// The account a rule belongs to, as far as building the rule needs it.
#[derive(Debug, Clone, Copy)]
pub struct RuleOwner<'a> {
    /// The account's id.
    pub id: Id,
    /// The account's name, for errors.
    pub name: &'a str,
    /// Without SIP credentials the source address is the only proof: the rule must be
    /// `ip_only`.
    pub has_sip: bool,
}

impl<'a> From<&'a Account> for RuleOwner<'a> {
    fn from(a: &'a Account) -> RuleOwner<'a> {
        RuleOwner {
            id: a.id,
            name: &a.name,
            has_sip: a.sip.is_some(),
        }
    }
}

/// An auth rule as the API and the provisioning file write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique within the account; an import upserts by it.
    pub name: String,
    /// Source address or network; absent: any. Host bits are cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpNet>,
    /// See [`AuthRule::cli`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<Pattern>,
    /// See [`AuthRule::cld`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cld: Option<Pattern>,
    /// See [`AuthRule::ip_only`]; defaults to `false`.
    #[serde(default)]
    pub ip_only: bool,
    /// See [`AuthRule::tls_client_name`]; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_name: Option<String>,
}

impl RuleSpec {
    /// The rule with id `id` (0 for a new one) of `owner`, or every problem by field.
    pub fn build(&self, id: Id, owner: RuleOwner<'_>) -> Result<AuthRule, FieldErrors> {
        let r = AuthRule {
            id,
            account_id: owner.id,
            name: self.name.clone(),
            remote: self.remote.map(|n| n.trunc()),
            cli: self.cli.clone(),
            cld: self.cld.clone(),
            ip_only: self.ip_only,
            tls_client_name: self.tls_client_name.clone(),
        };
        let mut p = r.problems();
        if !self.ip_only && !owner.has_sip {
            p.add(
                "ip_only",
                format!(
                    "account {:?} has no SIP credentials, so this rule needs ip_only = true",
                    owner.name
                ),
            );
        }
        p.or(r)
    }
}

impl From<&AuthRule> for RuleSpec {
    fn from(r: &AuthRule) -> RuleSpec {
        RuleSpec {
            name: r.name.clone(),
            remote: r.remote,
            cli: r.cli.clone(),
            cld: r.cld.clone(),
            ip_only: r.ip_only,
            tls_client_name: r.tls_client_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_client_name_must_be_a_dns_name_without_wildcard() {
        assert!(check_tls_client_name("carrier.example").is_ok());
        assert!(check_tls_client_name("sbc-1").is_ok());
        for bad in ["", "*.carrier.example", "192.0.2.1", "::1", "a..b", "a b"] {
            assert!(check_tls_client_name(bad).is_err(), "{bad:?}");
        }
        let spec = RuleSpec {
            name: "r".into(),
            remote: Some("192.0.2.0/24".parse().unwrap()),
            cli: None,
            cld: None,
            ip_only: true,
            tls_client_name: Some("*.x".into()),
        };
        let owner = RuleOwner {
            id: 1,
            name: "a",
            has_sip: false,
        };
        let e = spec.build(0, owner).unwrap_err();
        assert!(format!("{e:?}").contains("tls_client_name"), "{e:?}");
        let ok = RuleSpec {
            tls_client_name: Some("carrier.example".into()),
            ..spec
        };
        assert_eq!(
            ok.build(0, owner).unwrap().tls_client_name.as_deref(),
            Some("carrier.example")
        );
    }
}
