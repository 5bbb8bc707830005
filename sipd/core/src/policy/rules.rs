//! Which account a call belongs to: Sippy's authentication-rules model.
//!
//! An account has any number of rules, each a source network, a CLI pattern and a CLD pattern
//! (an absent field matches anything). An `ip_only` rule that matches authenticates the call
//! by itself. Otherwise the call must answer a digest challenge, and an account that has
//! rules only accepts its credentials when one of its rules matches; an account without rules
//! accepts its credentials from anywhere.
//!
//! [`RuleSet`] is an immutable, compiled snapshot: build a new one when provisioning changes
//! and swap it in, so a call in flight never sees half an update.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::records::{Account, AuthRule, Id, Matcher, PatternError};

/// What the source, caller and called number alone say about a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// An `ip_only` rule matched: the call belongs to `account` without a challenge. The
    /// account may be disabled; the caller decides what to answer.
    IpAuthenticated {
        /// The account the call belongs to.
        account: Id,
        /// The rule that matched (for logs and CDRs).
        rule: Id,
    },
    /// No `ip_only` rule matched, but some account with SIP credentials could place this
    /// call: challenge it (401).
    Challenge,
    /// Nothing could authenticate this call: 403 "no matching auth rule".
    NoMatch,
}

/// Why an account whose digest credentials were correct still may not place the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleRefusal {
    /// The credentials are right but none of the account's rules matches the call's source,
    /// CLI or CLD.
    #[error("no matching auth rule")]
    NoMatchingRule,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    rule: AuthRule,
    cli: Option<Matcher>,
    cld: Option<Matcher>,
}

impl CompiledRule {
    fn compile(rule: AuthRule) -> Result<CompiledRule, PatternError> {
        let cli = rule.cli.as_ref().map(|p| p.compile()).transpose()?;
        let cld = rule.cld.as_ref().map(|p| p.compile()).transpose()?;
        Ok(CompiledRule { rule, cli, cld })
    }

    fn matches(&self, src: IpAddr, cli: &str, cld: &str) -> bool {
        self.rule.remote.is_none_or(|net| net.contains(&src))
            && self.cli.as_ref().is_none_or(|m| m.matches(cli))
            && self.cld.as_ref().is_none_or(|m| m.matches(cld))
    }

    /// Sort key: the narrowest source network wins (an operator who writes a /32 next to a
    /// /16 means the /32), then the oldest rule, so the choice never depends on load order.
    fn rank(&self) -> (Reverse<u8>, Id) {
        (
            Reverse(self.rule.remote.map_or(0, |n: IpNet| n.prefix_len())),
            self.rule.id,
        )
    }
}

/// A compiled snapshot of every account (enabled or not) and its auth rules.
#[derive(Debug, Default)]
pub struct RuleSet {
    accounts: BTreeMap<Id, Account>,
    sip_users: HashMap<String, Id>,
    /// Every usable rule, most specific first; the lists below index into it, so they keep
    /// that order.
    rules: Vec<CompiledRule>,
    by_account: HashMap<Id, Vec<usize>>,
    ip_only: Vec<usize>,
    /// Rules that may lead to a challenge: not `ip_only`, of an account with credentials.
    challenge: Vec<usize>,
    /// Some account with credentials has no rules, so any call may be challenged.
    open_sip_account: bool,
    /// Accounts with a rule that could not be read or compiled. They count as having rules
    /// even when none is left: dropping a broken rule must narrow access, and an account
    /// whose only rule was dropped would otherwise accept its credentials from anywhere.
    restricted: BTreeSet<Id>,
}

impl RuleSet {
    /// Builds a snapshot. Rules of accounts not in `accounts` are ignored with a warning; a
    /// pattern that does not compile is an error (the store validates patterns on write, so
    /// this means the caller built the records by hand).
    pub fn new(accounts: Vec<Account>, rules: Vec<AuthRule>) -> Result<RuleSet, PatternError> {
        let compiled = rules
            .into_iter()
            .map(CompiledRule::compile)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleSet::build(accounts, compiled, BTreeSet::new()))
    }

    /// Builds a snapshot from records as they were read back from storage, each rule
    /// either usable or the reason it is not. One bad record must not take every carrier
    /// down, so an unusable rule (undecodable, or a pattern that no longer compiles) is
    /// skipped with a warning, and its account stays restricted to its other rules rather
    /// than open to its credentials from anywhere.
    pub fn tolerant(
        accounts: Vec<Account>,
        rules: impl IntoIterator<Item = (Id, Result<AuthRule, String>)>,
    ) -> RuleSet {
        let mut compiled = Vec::new();
        let mut restricted = BTreeSet::new();
        for (account, rule) in rules {
            let c = rule.and_then(|r| {
                let name = r.name.clone();
                CompiledRule::compile(r).map_err(|e| format!("rule {name:?}: {e}"))
            });
            match c {
                Ok(c) => compiled.push(c),
                Err(error) => {
                    let name = accounts
                        .iter()
                        .find(|a| a.id == account)
                        .map(|a| a.name.as_str());
                    tracing::warn!(
                        account = name.unwrap_or("?"),
                        %error,
                        "skipping unusable auth rule; the account stays restricted to its other rules"
                    );
                    restricted.insert(account);
                }
            }
        }
        RuleSet::build(accounts, compiled, restricted)
    }

    fn build(
        accounts: Vec<Account>,
        mut rules: Vec<CompiledRule>,
        restricted: BTreeSet<Id>,
    ) -> RuleSet {
        let accounts: BTreeMap<Id, Account> = accounts.into_iter().map(|a| (a.id, a)).collect();
        let mut sip_users = HashMap::new();
        // BTreeMap order: on a duplicate username (the store's index forbids it) the lowest
        // id keeps it, deterministically.
        for a in accounts.values() {
            if let Some(sip) = &a.sip
                && let Some(first) = sip_users.insert(sip.username.clone(), a.id)
            {
                tracing::warn!(
                    username = %sip.username,
                    kept = first,
                    ignored = a.id,
                    "SIP username used by two accounts"
                );
                sip_users.insert(sip.username.clone(), first);
            }
        }
        rules.retain(|r| {
            let known = accounts.contains_key(&r.rule.account_id);
            if !known {
                tracing::warn!(
                    rule = %r.rule.name,
                    account = r.rule.account_id,
                    "ignoring auth rule of an unknown account"
                );
            }
            known
        });
        rules.sort_by_key(CompiledRule::rank);

        let mut by_account: HashMap<Id, Vec<usize>> = HashMap::new();
        let mut ip_only = Vec::new();
        let mut challenge = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            by_account.entry(r.rule.account_id).or_default().push(i);
            let has_sip = accounts[&r.rule.account_id].sip.is_some();
            if r.rule.ip_only {
                if r.rule.remote.is_none() {
                    // Validation forbids this: it would let the whole Internet in.
                    tracing::warn!(rule = %r.rule.name, "ip_only rule without remote never authenticates by address");
                } else {
                    ip_only.push(i);
                }
            } else if has_sip {
                challenge.push(i);
            }
        }
        let open_sip_account = accounts.values().any(|a| {
            a.sip.is_some() && !by_account.contains_key(&a.id) && !restricted.contains(&a.id)
        });
        RuleSet {
            accounts,
            sip_users,
            rules,
            by_account,
            ip_only,
            challenge,
            open_sip_account,
            restricted,
        }
    }

    /// The account with this id, as of this snapshot.
    pub fn account(&self, id: Id) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// The account whose SIP credentials carry this digest `username` (exact match).
    pub fn by_sip_user(&self, username: &str) -> Option<&Account> {
        self.sip_users
            .get(username)
            .and_then(|id| self.account(*id))
    }

    /// Every usable rule, best first.
    pub fn rules(&self) -> impl Iterator<Item = &AuthRule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// The rule with this id, for logs and CDRs.
    pub fn rule(&self, id: Id) -> Option<&AuthRule> {
        self.rules.iter().map(|r| &r.rule).find(|r| r.id == id)
    }

    /// Every account of this snapshot, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Decides what to do with a new call from `src` with caller `cli` and called `cld`
    /// (the user parts of From and To, matched as given: a rule for `44` does not match
    /// `+44…`).
    pub fn classify(&self, src: IpAddr, cli: &str, cld: &str) -> Classification {
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; rules are written as v4.
        let src = src.to_canonical();
        if let Some(r) = self
            .ip_only
            .iter()
            .map(|&i| &self.rules[i])
            .find(|r| r.matches(src, cli, cld))
        {
            return Classification::IpAuthenticated {
                account: r.rule.account_id,
                rule: r.rule.id,
            };
        }
        if self.open_sip_account
            || self
                .challenge
                .iter()
                .any(|&i| self.rules[i].matches(src, cli, cld))
        {
            Classification::Challenge
        } else {
            Classification::NoMatch
        }
    }

    /// Whether the caller's verified TLS client certificate names (`names`) satisfy rule
    /// `rule` (see [`AuthRule::client_cert_ok`]); an unknown rule asks for nothing.
    pub fn client_cert_ok(&self, rule: Id, names: &[String]) -> bool {
        self.rules
            .iter()
            .find(|r| r.rule.id == rule)
            .is_none_or(|r| r.rule.client_cert_ok(names))
    }

    /// After `account` proved its digest credentials: may it place this call? `Ok(None)`
    /// when the account has no rules (credentials work from anywhere), `Ok(Some(rule))` for
    /// the most specific matching rule (an `ip_only` one counts too). An unknown account is
    /// refused: there is nothing to authorise it.
    pub fn digest_allowed(
        &self,
        account: Id,
        src: IpAddr,
        cli: &str,
        cld: &str,
    ) -> Result<Option<Id>, RuleRefusal> {
        if !self.accounts.contains_key(&account) {
            return Err(RuleRefusal::NoMatchingRule);
        }
        let src = src.to_canonical();
        match self.by_account.get(&account) {
            None if !self.restricted.contains(&account) => Ok(None),
            None => Err(RuleRefusal::NoMatchingRule),
            Some(list) => list
                .iter()
                .map(|&i| &self.rules[i])
                .find(|r| r.matches(src, cli, cld))
                .map(|r| Some(r.rule.id))
                .ok_or(RuleRefusal::NoMatchingRule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::digest::Credential;
    use crate::records::{Micros, Pattern, SipAuth};

    fn account(id: Id, user: Option<&str>) -> Account {
        Account {
            id,
            name: format!("acct{id}"),
            enabled: true,
            sip: user.map(|u| SipAuth {
                username: u.into(),
                credential: Credential::Password {
                    password: "pw".into(),
                },
                algorithms: None,
                password_template: None,
            }),
            cps_limit: None,
            max_sessions: None,
            balance: Micros(0),
            tariff_id: None,
            max_call_secs: None,
        }
    }

    fn prefix(p: &str) -> Option<Pattern> {
        Some(Pattern::Prefix(p.into()))
    }

    fn rule(
        id: Id,
        account_id: Id,
        remote: Option<&str>,
        cli: Option<Pattern>,
        cld: Option<Pattern>,
        ip_only: bool,
    ) -> AuthRule {
        AuthRule {
            id,
            account_id,
            name: format!("r{id}"),
            remote: remote.map(|r| r.parse().unwrap()),
            cli,
            cld,
            ip_only,
            tls_client_name: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    use Classification::*;

    /// Carrier 1 (IP only) with a /24 and a more specific /32 for account 2 inside it;
    /// account 3 has credentials and one office rule; account 4 has credentials, no rules.
    fn sample(with_open_account: bool) -> RuleSet {
        let mut accounts = vec![
            account(1, None),
            account(2, None),
            account(3, Some("alice")),
        ];
        if with_open_account {
            accounts.push(account(4, Some("bob")));
        }
        RuleSet::new(
            accounts,
            vec![
                rule(10, 1, Some("203.0.113.0/24"), None, None, true),
                rule(11, 2, Some("203.0.113.7/32"), None, prefix("44"), true),
                rule(12, 1, Some("2001:db8::/32"), prefix("1"), None, true),
                rule(
                    13,
                    3,
                    Some("198.51.100.0/24"),
                    None,
                    Some(Pattern::Regex("^00[1-9]".into())),
                    false,
                ),
                // Rule of an account that does not exist: ignored.
                rule(14, 99, Some("192.0.2.0/24"), None, None, true),
            ],
        )
        .unwrap()
    }

    #[test]
    fn classify_table() {
        let rs = sample(false);
        let cases: &[(&str, &str, &str, Classification)] = &[
            (
                "203.0.113.5",
                "111",
                "442",
                IpAuthenticated {
                    account: 1,
                    rule: 10,
                },
            ),
            // The /32 beats the /24 when its CLD pattern matches...
            (
                "203.0.113.7",
                "111",
                "442",
                IpAuthenticated {
                    account: 2,
                    rule: 11,
                },
            ),
            // ...and falls back to the /24 when it does not.
            (
                "203.0.113.7",
                "111",
                "331",
                IpAuthenticated {
                    account: 1,
                    rule: 10,
                },
            ),
            // v4-mapped v6 source is the v4 address.
            (
                "::ffff:203.0.113.5",
                "1",
                "2",
                IpAuthenticated {
                    account: 1,
                    rule: 10,
                },
            ),
            (
                "2001:db8::5",
                "1555",
                "2",
                IpAuthenticated {
                    account: 1,
                    rule: 12,
                },
            ),
            ("2001:db8::5", "+1555", "2", NoMatch),
            // Office rule (not ip_only) of a SIP account: challenge.
            ("198.51.100.9", "1", "0044", Challenge),
            ("198.51.100.9", "1", "0004", NoMatch),
            ("192.0.2.1", "1", "0044", NoMatch),
            ("192.0.2.1", "", "", NoMatch),
        ];
        for (src, cli, cld, want) in cases {
            assert_eq!(rs.classify(ip(src), cli, cld), *want, "{src} {cli} {cld}");
        }
    }

    #[test]
    fn account_without_rules_makes_everything_challengeable() {
        let rs = sample(true);
        assert_eq!(rs.classify(ip("192.0.2.1"), "1", "2"), Challenge);
        // ip_only still wins over a challenge.
        assert_eq!(
            rs.classify(ip("203.0.113.5"), "1", "2"),
            IpAuthenticated {
                account: 1,
                rule: 10
            }
        );
    }

    #[test]
    fn account_without_credentials_and_rules_is_not_challengeable() {
        let rs = RuleSet::new(vec![account(1, None)], vec![]).unwrap();
        assert_eq!(rs.classify(ip("192.0.2.1"), "1", "2"), NoMatch);
    }

    #[test]
    fn equal_prefixes_pick_the_lowest_rule_id() {
        let rs = RuleSet::new(
            vec![account(1, None), account(2, None)],
            vec![
                rule(21, 2, Some("10.0.0.0/8"), None, None, true),
                rule(20, 1, Some("10.0.0.0/8"), None, None, true),
            ],
        )
        .unwrap();
        assert_eq!(
            rs.classify(ip("10.1.2.3"), "", ""),
            IpAuthenticated {
                account: 1,
                rule: 20
            }
        );
    }

    #[test]
    fn disabled_accounts_are_still_classified() {
        let mut a = account(1, None);
        a.enabled = false;
        let rs = RuleSet::new(
            vec![a],
            vec![rule(5, 1, Some("10.0.0.0/8"), None, None, true)],
        )
        .unwrap();
        assert_eq!(
            rs.classify(ip("10.0.0.1"), "", ""),
            IpAuthenticated {
                account: 1,
                rule: 5
            }
        );
        assert!(!rs.account(1).unwrap().enabled);
    }

    #[test]
    fn digest_allowed_table() {
        let mut accounts = vec![account(3, Some("alice")), account(4, Some("bob"))];
        accounts.push(account(5, Some("carol")));
        let rs = RuleSet::new(
            accounts,
            vec![
                rule(30, 3, Some("198.51.100.0/24"), None, prefix("00"), false),
                rule(31, 3, Some("198.51.100.8/29"), None, None, false),
                rule(50, 5, Some("192.0.2.0/24"), None, None, true),
            ],
        )
        .unwrap();
        type Want = Result<Option<Id>, RuleRefusal>;
        let cases: &[(Id, &str, &str, Want)] = &[
            (3, "198.51.100.9", "0044", Ok(Some(31))),
            (3, "198.51.100.1", "0044", Ok(Some(30))),
            (3, "198.51.100.1", "44", Err(RuleRefusal::NoMatchingRule)),
            (3, "192.0.2.1", "0044", Err(RuleRefusal::NoMatchingRule)),
            (4, "192.0.2.1", "0044", Ok(None)),
            (4, "::1", "", Ok(None)),
            // An ip_only rule also authorises the account's digest logins.
            (5, "192.0.2.200", "1", Ok(Some(50))),
            (5, "10.0.0.1", "1", Err(RuleRefusal::NoMatchingRule)),
            (77, "192.0.2.1", "1", Err(RuleRefusal::NoMatchingRule)),
        ];
        for (acct, src, cld, want) in cases {
            assert_eq!(
                rs.digest_allowed(*acct, ip(src), "123", cld),
                *want,
                "account {acct} from {src} to {cld}"
            );
        }
    }

    #[test]
    fn sip_user_lookup() {
        let rs = sample(true);
        assert_eq!(rs.by_sip_user("alice").map(|a| a.id), Some(3));
        assert_eq!(rs.by_sip_user("bob").map(|a| a.id), Some(4));
        assert!(rs.by_sip_user("Alice").is_none());
        assert!(rs.by_sip_user("").is_none());
        assert_eq!(rs.rule(13).map(|r| r.name.as_str()), Some("r13"));
        assert!(rs.rule(14).is_none(), "rule of an unknown account");
    }

    #[test]
    fn bad_pattern_is_an_error() {
        let r = RuleSet::new(
            vec![account(1, Some("u"))],
            vec![rule(
                1,
                1,
                None,
                Some(Pattern::Regex("(".into())),
                None,
                false,
            )],
        );
        assert!(matches!(r, Err(PatternError::BadRegex(_))));
    }

    #[test]
    fn tolerant_skips_unusable_rules_and_keeps_their_account_restricted() {
        let carrier = account(1, None);
        let alice = account(2, Some("alice"));
        let good = rule(10, 1, Some("203.0.113.0/24"), None, None, true);
        let rs = RuleSet::tolerant(
            vec![carrier, alice],
            vec![(1, Ok(good)), (2, Err("corrupt rule record".to_owned()))],
        );
        assert_eq!(
            rs.classify(ip("203.0.113.1"), "1", "2"),
            IpAuthenticated {
                account: 1,
                rule: 10
            }
        );
        assert_eq!(
            rs.digest_allowed(2, ip("192.0.2.1"), "1", "2"),
            Err(RuleRefusal::NoMatchingRule)
        );
        assert_eq!(rs.by_sip_user("alice").map(|a| a.id), Some(2));
    }

    #[test]
    fn restricted_account_stays_restricted() {
        // What `tolerant` does with an account whose only rule was unreadable.
        let rs = RuleSet::build(vec![account(1, Some("alice"))], vec![], BTreeSet::from([1]));
        assert_eq!(
            rs.digest_allowed(1, ip("192.0.2.1"), "1", "2"),
            Err(RuleRefusal::NoMatchingRule)
        );
        assert_eq!(rs.classify(ip("192.0.2.1"), "1", "2"), NoMatch);
    }
}
