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

use serde::{Deserialize, Serialize};

use crate::store::{
    Account, AuditKind, AuthRule, Change, Connection, Id, Store, StoreError, System, Tariff,
};
use crate::toml_span::{Location, locate};
pub use sipd_core::records::{AccountSpec, ConnectionSpec, RuleSpec, SipSpec, TariffSpec};
use sipd_core::records::{FieldErrors, Lookup, RuleOwner, SipSecrets};

/// A provisioning file as `sipd import` reads it and `sipd export` writes it: `[[tariff]]`,
/// `[[connection]]` and `[[account]]` tables (rules inside their account), each by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionFile {
    /// `[[tariff]]` tables.
    #[serde(default, rename = "tariff", skip_serializing_if = "Vec::is_empty")]
    pub tariffs: Vec<TariffSpec>,
    /// `[[connection]]` tables.
    #[serde(default, rename = "connection", skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionSpec>,
    /// `[[account]]` tables, each with its rules.
    #[serde(default, rename = "account", skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountSpec>,
}

/// One thing wrong with the file; `path` is the dotted path of the offending value (empty
/// for a TOML syntax or type error, whose message already says what and where).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending value (`account.0.sip.username`), empty for a TOML error.
    pub path: String,
    /// Line and column of the value (or of its nearest table), when the file has it.
    pub at: Option<Location>,
    /// What is wrong, for the operator.
    pub message: String,
}

/// Why an import was refused; nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file's path.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or breaks the records' rules: every problem found, each with
    /// its place.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
    /// The store failed while checking or writing.
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
    /// Records created, by kind (`tariff`, `connection`, `account`, `rule`).
    pub created: BTreeMap<&'static str, usize>,
    /// Records that existed by name and were updated, by kind.
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
    accounts: Vec<PlannedAccount>,
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

/// Collects the problems of a file, each with its place.
struct Report<'a> {
    src: &'a str,
    /// What the records must be servable by (see [`crate::config::check_records`]).
    cfg: &'a crate::config::Config,
    problems: Vec<Problem>,
}

impl Report<'_> {
    /// A problem at `path`, located at the nearest value the file writes (a missing key is
    /// reported where its table is).
    /// A record this sipd's configuration cannot serve, at `path`; the same check start and
    /// the API make.
    fn served(&mut self, path: &str, check: Result<(), crate::store::Invalid>) {
        if let Err(e) = check {
            self.bad(format!("{path}.{}", e.field), e.reason);
        }
    }

    fn bad(&mut self, path: String, message: String) {
        let mut at = None;
        let mut p = path.as_str();
        while at.is_none() && !p.is_empty() {
            at = locate(self.src, p);
            p = p.rsplit_once('.').map_or("", |(parent, _)| parent);
        }
        self.problems.push(Problem { path, at, message });
    }

    /// The problems of the record at `prefix` (`account.0`), each under its field.
    fn fields(&mut self, prefix: &str, errors: FieldErrors) {
        for e in errors.0 {
            self.bad(e.path_under(prefix), e.message);
        }
    }

    /// Refuses a second record of one name in the file.
    fn unique<'n>(
        &mut self,
        seen: &mut BTreeSet<&'n str>,
        path: String,
        kind: &str,
        name: &'n str,
    ) {
        if !seen.insert(name) {
            self.bad(
                format!("{path}.name"),
                format!("{kind} {name:?} appears twice"),
            );
        }
    }
}

/// Tariffs named in the file count as existing (stored before the accounts); the rest come
/// from the store.
struct FileLookup<'a> {
    store: &'a Store,
    tariffs: BTreeSet<&'a str>,
}

impl Lookup for FileLookup<'_> {
    fn tariff_id(&self, name: &str) -> Result<Option<Id>, String> {
        if self.tariffs.contains(name) {
            return Ok(Some(0));
        }
        self.store.tariff_id(name)
    }

    fn sip_user_owner(&self, username: &str) -> Result<Option<(Id, String)>, String> {
        self.store.sip_user_owner(username)
    }
}

/// Checks everything that can be checked before writing, against the store's current
/// contents (names of tariffs not in the file, SIP usernames owned by other accounts).
/// `src` locates problems; `secrets`: the realm SIP credentials are hashed for and the
/// password policies; `cfg`: the configuration the records must be servable by (a TLS
/// connection or a rule naming a TLS client certificate needs `[sip] tls`).
pub fn plan(
    file: &ProvisionFile,
    src: &str,
    store: &Store,
    secrets: &SipSecrets,
    cfg: &crate::config::Config,
) -> Result<Plan, ProvisionError> {
    let mut report = Report {
        src,
        cfg,
        problems: Vec::new(),
    };
    let tariffs = plan_tariffs(&mut report, &file.tariffs);
    let connections = plan_connections(&mut report, &file.connections);
    let lookup = FileLookup {
        store,
        tariffs: file.tariffs.iter().map(|t| t.name.as_str()).collect(),
    };
    let accounts = plan_accounts(&mut report, &file.accounts, &lookup, secrets);
    if report.problems.is_empty() {
        Ok(Plan {
            tariffs,
            connections,
            accounts,
        })
    } else {
        Err(ProvisionError::Invalid(report.problems))
    }
}

fn plan_tariffs(report: &mut Report<'_>, specs: &[TariffSpec]) -> Vec<Tariff> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, t) in specs.iter().enumerate() {
        let p = format!("tariff.{i}");
        report.unique(&mut names, p.clone(), "tariff", &t.name);
        match t.build(0) {
            Ok(t) => out.push(t),
            Err(e) => report.fields(&p, e),
        }
    }
    out
}

fn plan_connections(report: &mut Report<'_>, specs: &[ConnectionSpec]) -> Vec<Connection> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, c) in specs.iter().enumerate() {
        let p = format!("connection.{i}");
        report.unique(&mut names, p.clone(), "connection", &c.name);
        match c.build(0) {
            Ok(c) => {
                report.served(&p, crate::config::check_connection(report.cfg, &c));
                out.push(c);
            }
            Err(e) => report.fields(&p, e),
        }
    }
    out
}

/// An account to write, with its tariff by name (resolved in the transaction, as it may be
/// new) and its rules.
type PlannedAccount = (Account, Option<String>, Vec<AuthRule>);

fn plan_accounts(
    report: &mut Report<'_>,
    specs: &[AccountSpec],
    lookup: &FileLookup<'_>,
    secrets: &SipSecrets,
) -> Vec<PlannedAccount> {
    let mut names = BTreeSet::new();
    let mut users = BTreeSet::new();
    let mut out = Vec::new();
    for (i, a) in specs.iter().enumerate() {
        let p = format!("account.{i}");
        report.unique(&mut names, p.clone(), "account", &a.name);
        if let Some(s) = &a.sip
            && !users.insert(s.username.as_str())
        {
            report.bad(
                format!("{p}.sip.username"),
                format!(
                    "SIP username {:?} is used by two accounts in this file",
                    s.username
                ),
            );
        }
        let account = a
            .build(secrets, None, lookup)
            .map_err(|e| report.fields(&p, e));
        let owner = RuleOwner {
            id: 0,
            name: &a.name,
            has_sip: a.sip.is_some(),
        };
        let rules = plan_rules(report, &p, &a.rules, owner);
        if let Ok(account) = account {
            out.push((account, a.tariff.clone(), rules));
        }
    }
    out
}

fn plan_rules(
    report: &mut Report<'_>,
    account_path: &str,
    specs: &[RuleSpec],
    owner: RuleOwner<'_>,
) -> Vec<AuthRule> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (j, r) in specs.iter().enumerate() {
        let p = format!("{account_path}.rule.{j}");
        if !names.insert(r.name.as_str()) {
            report.bad(
                format!("{p}.name"),
                format!(
                    "rule {:?} appears twice in account {:?}",
                    r.name, owner.name
                ),
            );
        }
        match r.build(0, owner) {
            Ok(r) => {
                report.served(&p, crate::config::check_rule(report.cfg, &r));
                out.push(r);
            }
            Err(e) => report.fields(&p, e),
        }
    }
    out
}

/// Writes a checked plan in one transaction, flushed before returning, with its audit entry
/// (actor `sipd:import`, target `file:<path>`, `after`: what was created and updated).
pub fn apply(plan: &Plan, store: &Store, file: &Path) -> Result<Summary, ProvisionError> {
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
        let (entry, ()) = Change::new(AuditKind::Import, format!("file:{}", file.display()), ())
            .after(&s)
            .entry(&System("import"));
        tx.append_audit(&entry)?;
        Ok(s)
    })?;
    tracing::info!(%summary, "provisioning imported");
    Ok(summary)
}

/// Validates `path` (against the store and against `cfg`, see [`plan`]) and imports it; with
/// `dry_run`, only validates.
pub fn import(
    path: &Path,
    store: &Store,
    secrets: &SipSecrets,
    cfg: &crate::config::Config,
    dry_run: bool,
) -> Result<Option<Summary>, ProvisionError> {
    let (file, src) = read(path)?;
    let plan = plan(&file, &src, store, secrets, cfg)?;
    if dry_run {
        return Ok(None);
    }
    apply(&plan, store, path).map(Some)
}

/// The store's configuration as a provisioning file. Refuses to produce a partial backup:
/// a corrupt record is an error naming it. SIP credentials go out as their HA1 values,
/// never as a password.
pub fn export(store: &Store) -> Result<ProvisionFile, ProvisionError> {
    let tariffs: Vec<Tariff> = store.tariffs().into_iter().collect::<Result<_, _>>()?;
    let tariff_names: BTreeMap<u64, String> =
        tariffs.iter().map(|t| (t.id, t.name.clone())).collect();
    let connections: Vec<Connection> = store.connections().into_iter().collect::<Result<_, _>>()?;
    let accounts: Vec<Account> = store.accounts().into_iter().collect::<Result<_, _>>()?;
    let mut out = ProvisionFile {
        tariffs: tariffs.iter().map(TariffSpec::from).collect(),
        connections: connections.iter().map(ConnectionSpec::from).collect(),
        accounts: Vec::new(),
    };
    for a in accounts {
        let rules: Vec<AuthRule> = store.rules_of(a.id).into_iter().collect::<Result<_, _>>()?;
        let tariff = a.tariff_id.and_then(|id| tariff_names.get(&id).cloned());
        let rules = rules.iter().map(RuleSpec::from).collect();
        out.accounts.push(AccountSpec::of(&a, tariff, rules));
    }
    Ok(out)
}

impl ProvisionFile {
    /// The file as TOML, in the layout `sipd export` prints.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests;
