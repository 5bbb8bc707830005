//! Provisioning files: accounts (with their rules), tariffs and connections in TOML, so a
//! carrier can be set up from scripts before the management API exists, and backed up.
//!
//! Import is an idempotent upsert by name, all or nothing: the whole file is validated first
//! (every problem reported with its line and column), then written in one store transaction.
//! Things not in the file are left alone. An account's `balance` is its opening balance:
//! applied when the account is created and ignored afterwards, so re-importing a file never
//! undoes billing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::store::{
    Account, AuthRule, Connection, Micros, Pattern, SipAuth, Store, StoreError, Tariff, Transport,
};
use crate::toml_span::{Location, locate};
use sipd_core::auth::digest::Credential;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionFile {
    #[serde(default, rename = "tariff", skip_serializing_if = "Vec::is_empty")]
    pub tariffs: Vec<TariffSpec>,
    #[serde(default, rename = "connection", skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionSpec>,
    #[serde(default, rename = "account", skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffSpec {
    pub name: String,
    /// Decimal currency amount, e.g. "0.0125".
    pub rate_per_minute: String,
    #[serde(default = "default_expected")]
    pub expected_call_secs: u32,
    #[serde(default = "one")]
    pub initial_increment_secs: u32,
    #[serde(default = "one")]
    pub increment_secs: u32,
}

fn default_expected() -> u32 {
    120
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_priority() -> u32 {
    100
}
fn udp() -> Transport {
    Transport::Udp
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `host`, `host:port`, `a.b.c.d:port` or `[v6]:port`; port defaults to 5060.
    pub destination: String,
    #[serde(default = "udp")]
    pub transport: Transport,
    #[serde(default)]
    pub cld_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cps_limit: Option<u32>,
    #[serde(default = "default_priority")]
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff: Option<String>,
    /// Opening balance (see the module comment), decimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cps_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipSpec>,
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
}

/// Either `password`, or HA1 values (`ha1_md5`/`ha1_sha256`, computed for `realm`, which
/// defaults to the configured one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSpec {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cld: Option<Pattern>,
    #[serde(default)]
    pub ip_only: bool,
}

/// One thing wrong with the file; `path` is the dotted path of the offending value (empty
/// for a TOML syntax or type error, whose message already says what and where).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub at: Option<Location>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if let Some(at) = p.at {
                write!(f, "{at}: ")?;
            }
            if !p.path.is_empty() {
                write!(f, "{}: ", p.path)?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub created: BTreeMap<&'static str, usize>,
    pub updated: BTreeMap<&'static str, usize>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in ["tariff", "connection", "account", "rule"] {
            let (c, u) = (
                self.created.get(kind).copied().unwrap_or(0),
                self.updated.get(kind).copied().unwrap_or(0),
            );
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{kind}s: {c} created, {u} updated")?;
        }
        Ok(())
    }
}

/// The file, turned into store records (ids still 0) once every check passed.
#[derive(Debug)]
pub struct Plan {
    tariffs: Vec<Tariff>,
    connections: Vec<Connection>,
    /// With the tariff by name (resolved inside the transaction, as it may be new) and rules.
    accounts: Vec<(Account, Option<String>, Vec<AuthRule>)>,
}

pub(crate) fn parse_destination(d: &str) -> Result<(String, u16), String> {
    let bad = || format!("{d:?} is not host, host:port or [v6]:port");
    if let Ok(sa) = d.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = d.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), 5060));
    }
    match d.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port.parse::<u16>().map_err(|_| bad())?;
            Ok((host.to_owned(), port))
        }
        Some(_) => Err(bad()),
        None => Ok((d.to_owned(), 5060)),
    }
}

pub(crate) fn destination(c: &Connection) -> String {
    match c.host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", c.port),
        _ => format!("{}:{}", c.host, c.port),
    }
}

/// Reads and parses a provisioning file, reporting TOML errors with their place.
pub fn read(path: &Path) -> Result<(ProvisionFile, String), ProvisionError> {
    let src = std::fs::read_to_string(path).map_err(|source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = toml::from_str(&src).map_err(|e: toml::de::Error| {
        ProvisionError::Invalid(vec![Problem {
            path: String::new(),
            at: e.span().map(|s| Location::of(&src, s.start)),
            message: e.message().trim_end().to_owned(),
        }])
    })?;
    Ok((file, src))
}

/// Checks everything that can be checked before writing, against the store's current
/// contents (names of tariffs not in the file, SIP usernames owned by other accounts).
/// `src` locates problems; `realm` is the default realm for HA1 credentials.
pub fn plan(
    file: &ProvisionFile,
    src: &str,
    store: &Store,
    realm: &str,
) -> Result<Plan, ProvisionError> {
    let mut problems = Vec::new();
    let mut bad = |path: String, message: String| {
        let at = locate(src, &path);
        problems.push(Problem { path, at, message });
    };
    let invalid = |e: crate::store::Invalid| e.reason;

    let mut tariffs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, t) in file.tariffs.iter().enumerate() {
        let p = format!("tariff.{i}");
        if !names.insert(t.name.as_str()) {
            bad(
                format!("{p}.name"),
                format!("tariff {:?} appears twice", t.name),
            );
        }
        let rate = match t.rate_per_minute.parse::<Micros>() {
            Ok(r) => r,
            Err(e) => {
                bad(format!("{p}.rate_per_minute"), e.to_string());
                continue;
            }
        };
        let tariff = Tariff {
            id: 0,
            name: t.name.clone(),
            rate_per_minute: rate,
            expected_call_secs: t.expected_call_secs,
            initial_increment_secs: t.initial_increment_secs,
            increment_secs: t.increment_secs,
        };
        match tariff.validate() {
            Ok(()) => tariffs.push(tariff),
            Err(e) => bad(p, invalid(e)),
        }
    }
    let file_tariffs = names;

    let mut connections = Vec::new();
    let mut names = BTreeSet::new();
    for (i, c) in file.connections.iter().enumerate() {
        let p = format!("connection.{i}");
        if !names.insert(c.name.as_str()) {
            bad(
                format!("{p}.name"),
                format!("connection {:?} appears twice", c.name),
            );
        }
        let (host, port) = match parse_destination(&c.destination) {
            Ok(hp) => hp,
            Err(e) => {
                bad(format!("{p}.destination"), e);
                continue;
            }
        };
        let conn = Connection {
            id: 0,
            name: c.name.clone(),
            enabled: c.enabled,
            host,
            port,
            transport: c.transport,
            cld_prefixes: c.cld_prefixes.clone(),
            max_channels: c.max_channels,
            cps_limit: c.cps_limit,
            priority: c.priority,
        };
        match conn.validate() {
            Ok(()) => connections.push(conn),
            Err(e) => bad(p, invalid(e)),
        }
    }

    let mut accounts = Vec::new();
    let mut names = BTreeSet::new();
    let mut users = BTreeSet::new();
    for (i, a) in file.accounts.iter().enumerate() {
        let p = format!("account.{i}");
        if !names.insert(a.name.as_str()) {
            bad(
                format!("{p}.name"),
                format!("account {:?} appears twice", a.name),
            );
        }
        if let Some(t) = &a.tariff
            && !file_tariffs.contains(t.as_str())
        {
            match store.tariff_by_name(t) {
                Ok(Some(_)) => {}
                Ok(None) => bad(
                    format!("{p}.tariff"),
                    format!("no tariff {t:?} in this file or the store"),
                ),
                Err(e) => bad(format!("{p}.tariff"), e.to_string()),
            }
        }
        let balance = match a.balance.as_deref().map(str::parse::<Micros>).transpose() {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                bad(format!("{p}.balance"), e.to_string());
                Micros(0)
            }
        };
        let sip = match &a.sip {
            None => None,
            Some(s) => {
                if !users.insert(s.username.as_str()) {
                    bad(
                        format!("{p}.sip.username"),
                        format!(
                            "SIP username {:?} is used by two accounts in this file",
                            s.username
                        ),
                    );
                }
                match store.account_by_sip_user(&s.username) {
                    Ok(Some(owner)) if owner.name != a.name => bad(
                        format!("{p}.sip.username"),
                        format!(
                            "SIP username {:?} belongs to account {:?} in the store",
                            s.username, owner.name
                        ),
                    ),
                    Ok(_) => {}
                    Err(e) => bad(format!("{p}.sip.username"), e.to_string()),
                }
                let has_ha1 = s.ha1_md5.is_some() || s.ha1_sha256.is_some();
                let credential = match (&s.password, has_ha1) {
                    (Some(pw), false) if s.realm.is_none() => Some(Credential::Password {
                        password: pw.clone(),
                    }),
                    (Some(_), false) => {
                        bad(
                            format!("{p}.sip.realm"),
                            "realm only goes with ha1_md5/ha1_sha256".into(),
                        );
                        None
                    }
                    (None, true) => Some(Credential::Ha1 {
                        realm: s.realm.clone().unwrap_or_else(|| realm.to_owned()),
                        md5: s.ha1_md5.clone(),
                        sha256: s.ha1_sha256.clone(),
                    }),
                    (Some(_), true) => {
                        bad(
                            format!("{p}.sip"),
                            "give either password or HA1 values, not both".into(),
                        );
                        None
                    }
                    (None, false) => {
                        bad(
                            format!("{p}.sip"),
                            "needs password, or ha1_md5 and/or ha1_sha256".into(),
                        );
                        None
                    }
                };
                credential.map(|credential| SipAuth {
                    username: s.username.clone(),
                    credential,
                })
            }
        };
        let account = Account {
            id: 0,
            name: a.name.clone(),
            enabled: a.enabled,
            sip,
            cps_limit: a.cps_limit,
            max_sessions: a.max_sessions,
            balance,
            tariff_id: None,
            max_call_secs: a.max_call_secs,
        };
        if let Err(e) = account.validate() {
            bad(p.clone(), invalid(e));
        }
        let mut rules = Vec::new();
        let mut rule_names = BTreeSet::new();
        for (j, r) in a.rules.iter().enumerate() {
            let rp = format!("{p}.rule.{j}");
            if !rule_names.insert(r.name.as_str()) {
                bad(
                    format!("{rp}.name"),
                    format!("rule {:?} appears twice in account {:?}", r.name, a.name),
                );
            }
            let rule = AuthRule {
                id: 0,
                account_id: 0,
                name: r.name.clone(),
                remote: r.remote,
                cli: r.cli.clone(),
                cld: r.cld.clone(),
                ip_only: r.ip_only,
            };
            if let Err(e) = rule.validate() {
                bad(rp.clone(), invalid(e));
            }
            if !r.ip_only && a.sip.is_none() {
                bad(
                    format!("{rp}.ip_only"),
                    format!(
                        "account {:?} has no [sip] credentials, so this rule needs ip_only = true",
                        a.name
                    ),
                );
            }
            rules.push(rule);
        }
        accounts.push((account, a.tariff.clone(), rules));
    }

    if problems.is_empty() {
        Ok(Plan {
            tariffs,
            connections,
            accounts,
        })
    } else {
        Err(ProvisionError::Invalid(problems))
    }
}

/// Writes a checked plan in one transaction, flushed before returning.
pub fn apply(plan: &Plan, store: &Store) -> Result<Summary, ProvisionError> {
    let summary = store.write(|tx| {
        let mut s = Summary::default();
        let mut count = |kind: &'static str, existed: bool| {
            *if existed {
                &mut s.updated
            } else {
                &mut s.created
            }
            .entry(kind)
            .or_default() += 1;
        };
        for t in &plan.tariffs {
            let old = tx.tariff_by_name(&t.name)?;
            count("tariff", old.is_some());
            tx.put_tariff(&Tariff {
                id: old.map_or(0, |o| o.id),
                ..t.clone()
            })?;
        }
        for c in &plan.connections {
            let old = tx.connection_by_name(&c.name)?;
            count("connection", old.is_some());
            tx.put_connection(&Connection {
                id: old.map_or(0, |o| o.id),
                ..c.clone()
            })?;
        }
        for (a, tariff, rules) in &plan.accounts {
            let tariff_id = match tariff {
                None => None,
                Some(name) => match tx.tariff_by_name(name)? {
                    Some(t) => Some(t.id),
                    None => {
                        return crate::store::abort_tx(StoreError::NotFound {
                            kind: "tariff",
                            what: format!("{name:?}"),
                        });
                    }
                },
            };
            let old = tx.account_by_name(&a.name)?;
            count("account", old.is_some());
            let (id, balance) = old.map_or((0, a.balance), |o| (o.id, o.balance));
            let id = tx.put_account(&Account {
                id,
                balance,
                tariff_id,
                ..a.clone()
            })?;
            for r in rules {
                count("rule", tx.rule(id, &r.name)?.is_some());
                tx.put_rule(&AuthRule {
                    account_id: id,
                    ..r.clone()
                })?;
            }
        }
        Ok(s)
    })?;
    tracing::info!(%summary, "provisioning imported");
    Ok(summary)
}

/// Validates and imports `path`; with `dry_run`, only validates.
pub fn import(
    path: &Path,
    store: &Store,
    realm: &str,
    dry_run: bool,
) -> Result<Option<Summary>, ProvisionError> {
    let (file, src) = read(path)?;
    let plan = plan(&file, &src, store, realm)?;
    if dry_run {
        return Ok(None);
    }
    apply(&plan, store).map(Some)
}

/// The store's configuration as a provisioning file. Refuses to produce a partial backup:
/// a corrupt record is an error naming it.
pub fn export(store: &Store) -> Result<ProvisionFile, ProvisionError> {
    let tariffs: Vec<Tariff> = store.tariffs().into_iter().collect::<Result<_, _>>()?;
    let tariff_names: BTreeMap<u64, String> =
        tariffs.iter().map(|t| (t.id, t.name.clone())).collect();
    let connections: Vec<Connection> = store.connections().into_iter().collect::<Result<_, _>>()?;
    let accounts: Vec<Account> = store.accounts().into_iter().collect::<Result<_, _>>()?;
    let mut out = ProvisionFile::default();
    for t in tariffs {
        out.tariffs.push(TariffSpec {
            name: t.name,
            rate_per_minute: t.rate_per_minute.to_string(),
            expected_call_secs: t.expected_call_secs,
            initial_increment_secs: t.initial_increment_secs,
            increment_secs: t.increment_secs,
        });
    }
    for c in connections {
        out.connections.push(ConnectionSpec {
            destination: destination(&c),
            name: c.name,
            enabled: c.enabled,
            transport: c.transport,
            cld_prefixes: c.cld_prefixes,
            max_channels: c.max_channels,
            cps_limit: c.cps_limit,
            priority: c.priority,
        });
    }
    for a in accounts {
        let rules: Vec<AuthRule> = store.rules_of(a.id).into_iter().collect::<Result<_, _>>()?;
        let sip = a.sip.map(|s| match s.credential {
            Credential::Password { password } => SipSpec {
                username: s.username,
                password: Some(password),
                realm: None,
                ha1_md5: None,
                ha1_sha256: None,
            },
            Credential::Ha1 { realm, md5, sha256 } => SipSpec {
                username: s.username,
                password: None,
                realm: Some(realm),
                ha1_md5: md5,
                ha1_sha256: sha256,
            },
        });
        out.accounts.push(AccountSpec {
            name: a.name,
            enabled: a.enabled,
            tariff: a.tariff_id.and_then(|id| tariff_names.get(&id).cloned()),
            balance: Some(a.balance.to_string()),
            cps_limit: a.cps_limit,
            max_sessions: a.max_sessions,
            max_call_secs: a.max_call_secs,
            sip,
            rules: rules
                .into_iter()
                .map(|r| RuleSpec {
                    name: r.name,
                    remote: r.remote,
                    cli: r.cli,
                    cld: r.cld,
                    ip_only: r.ip_only,
                })
                .collect(),
        });
    }
    Ok(out)
}

impl ProvisionFile {
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests;
