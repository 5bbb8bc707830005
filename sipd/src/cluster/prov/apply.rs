//! Applies other nodes' records to the store: checked one by one as `sipd import` checks a
//! file (a record this node cannot serve is refused alone, never the batch), then written
//! in one store transaction in an order that frees names before they are taken: deleted
//! accounts first, then the SIP usernames changed accounts give up, then tariffs and
//! connections, then accounts, then deleted tariffs and connections. A SIP username two
//! accounts claim goes to the newer record; the older account loses its SIP credentials
//! here (every node decides the same way), so an import is never stuck on a name.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tracing::warn;

use super::record::{Body, Journal, JournalError, ProvRecord, local_body};
use crate::config::Config;
use crate::store::{
    Account, AuditKind, AuthRule, Change, Connection, Id, Store, System, T, Tariff, TxResult,
};
use sipd_core::records::{Lookup, RuleOwner};

/// What an apply did, by kind (`tariff`, `connection`, `account`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    /// Records written (created or updated).
    pub put: BTreeMap<&'static str, usize>,
    /// Records deleted.
    pub deleted: BTreeMap<&'static str, usize>,
    /// Keys not applied here (invalid for this node, or a tariff still billed with).
    pub refused: Vec<String>,
    /// Accounts that lost their SIP username to a newer record of another account.
    pub displaced: Vec<String>,
}

impl Applied {
    /// Whether the store changed.
    pub fn changed(&self) -> bool {
        !self.put.is_empty() || !self.deleted.is_empty() || !self.displaced.is_empty()
    }
}

struct PutAccount {
    account: Account,
    tariff: Option<String>,
    rules: Vec<AuthRule>,
    /// The rules the stored account has now (a transaction cannot scan): those not in the
    /// record go.
    old_rules: Vec<String>,
    rec: ProvRecord,
}

#[derive(Default)]
struct Plan {
    tariffs: Vec<Tariff>,
    connections: Vec<Connection>,
    accounts: Vec<PutAccount>,
    /// Accounts to delete, with their rules now.
    gone_accounts: Vec<(String, Vec<String>)>,
    gone_tariffs: Vec<String>,
    gone_connections: Vec<String>,
}

/// Tariffs of the batch count as existing; SIP usernames are not checked here (the version
/// order settles them in the transaction).
struct BatchLookup<'a> {
    store: &'a Store,
    tariffs: BTreeSet<String>,
}

impl Lookup for BatchLookup<'_> {
    fn tariff_id(&self, name: &str) -> Result<Option<Id>, String> {
        if self.tariffs.contains(name) {
            return Ok(Some(0));
        }
        self.store.tariff_id(name)
    }

    fn sip_user_owner(&self, _: &str) -> Result<Option<(Id, String)>, String> {
        Ok(None)
    }
}

fn rule_names(store: &Store, account: &str) -> Result<Vec<String>, JournalError> {
    Ok(match store.account_by_name(account)? {
        None => Vec::new(),
        Some(a) => store
            .rules_of(a.id)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|r| r.name)
            .collect(),
    })
}

/// Checks every record; a refused one is named in `refused`.
fn plan(
    store: &Store,
    cfg: &Config,
    records: &[ProvRecord],
    refused: &mut Vec<String>,
) -> Result<Plan, JournalError> {
    let secrets = cfg.sip_secrets();
    let lookup = BatchLookup {
        store,
        tariffs: records
            .iter()
            .filter_map(|r| match &r.body {
                Some(Body::Tariff(t)) => Some(t.name.clone()),
                _ => None,
            })
            .collect(),
    };
    let mut p = Plan::default();
    let mut refuse = |key: &str, why: String| {
        warn!(key, reason = %why, "cluster: a record of another node is refused here");
        refused.push(key.to_owned());
    };
    for r in records {
        match &r.body {
            Some(Body::Tariff(t)) => match t.build(0) {
                Ok(t) => p.tariffs.push(t),
                Err(e) => refuse(&r.key, format!("{e:?}")),
            },
            Some(Body::Connection(c)) => {
                match c.build(0).map_err(|e| format!("{e:?}")).and_then(|c| {
                    crate::config::check_connection(cfg, &c)
                        .map(|()| c)
                        .map_err(|e| e.reason)
                }) {
                    Ok(c) => p.connections.push(c),
                    Err(e) => refuse(&r.key, e),
                }
            }
            Some(Body::Account(a)) => {
                let account = match a.build(&secrets, None, &lookup) {
                    Ok(x) => x,
                    Err(e) => {
                        refuse(&r.key, format!("{e:?}"));
                        continue;
                    }
                };
                let owner = RuleOwner {
                    id: 0,
                    name: &a.name,
                    has_sip: a.sip.is_some(),
                };
                let rules: Result<Vec<AuthRule>, String> = a
                    .rules
                    .iter()
                    .map(|s| {
                        let rule = s.build(0, owner).map_err(|e| format!("{e:?}"))?;
                        crate::config::check_rule(cfg, &rule).map_err(|e| e.reason)?;
                        Ok(rule)
                    })
                    .collect();
                match rules {
                    Ok(rules) => p.accounts.push(PutAccount {
                        account,
                        tariff: a.tariff.clone(),
                        rules,
                        old_rules: rule_names(store, &a.name)?,
                        rec: r.clone(),
                    }),
                    Err(e) => refuse(&r.key, e),
                }
            }
            None => match r.key.split_once(':') {
                Some(("account", name)) => p
                    .gone_accounts
                    .push((name.to_owned(), rule_names(store, name)?)),
                Some(("tariff", name)) => p.gone_tariffs.push(name.to_owned()),
                Some(("connection", name)) => p.gone_connections.push(name.to_owned()),
                _ => refuse(&r.key, "unknown kind".into()),
            },
        }
    }
    // A tariff an account still bills with stays (the API refuses that delete too).
    let mut billed: BTreeSet<String> = BTreeSet::new();
    let changing: BTreeSet<&str> = p
        .accounts
        .iter()
        .map(|a| a.account.name.as_str())
        .chain(p.gone_accounts.iter().map(|(n, _)| n.as_str()))
        .collect();
    for a in store.accounts().into_iter().flatten() {
        if !changing.contains(a.name.as_str())
            && let Some(t) = a.tariff_id.and_then(|id| store.tariff(id).ok().flatten())
        {
            billed.insert(t.name);
        }
    }
    billed.extend(p.accounts.iter().filter_map(|a| a.tariff.clone()));
    p.gone_tariffs.retain(|t| {
        let keep = billed.contains(t);
        if keep {
            refuse(&format!("tariff:{t}"), "an account bills with it".into());
        }
        !keep
    });
    Ok(p)
}

/// Applies `records` (each newer than the journal's) and records them in the journal with
/// what the store holds of each afterwards, so the next capture sees no change of this
/// node's in them.
pub fn apply(
    store: &Store,
    cfg: &Config,
    journal: &Journal,
    records: &[ProvRecord],
    origin: &str,
) -> Result<Applied, JournalError> {
    let mut refused = Vec::new();
    let plan = plan(store, cfg, records, &mut refused)?;
    // Read before the transaction: sled blocks reads of other trees during one, and a
    // transaction cannot scan.
    let versions = journal.all()?;
    // Digest rules by account: an account that loses its SIP username loses them too.
    let mut digest: BTreeMap<Id, Vec<String>> = BTreeMap::new();
    for r in store.rules().into_iter().flatten() {
        if !r.ip_only {
            digest.entry(r.account_id).or_default().push(r.name);
        }
    }
    let held = Held { versions, digest };
    let mut out = store.write(|tx| {
        let mut s = Applied {
            refused: refused.clone(),
            ..Applied::default()
        };
        for (name, rules) in &plan.gone_accounts {
            if let Some(a) = tx.account_by_name(name)? {
                tx.delete_account(a.id, rules)?;
                *s.deleted.entry("account").or_default() += 1;
            }
        }
        // Usernames changing hands inside the batch are free before any is taken.
        for p in &plan.accounts {
            if let Some(old) = tx.account_by_name(&p.account.name)?
                && let Some(sip) = old.sip
                && p.account.sip.as_ref().map(|s| &s.username) != Some(&sip.username)
            {
                tx.index_release(T::SipUsers, &sip.username)?;
            }
        }
        for t in &plan.tariffs {
            let id = tx.tariff_by_name(&t.name)?.map_or(0, |o| o.id);
            tx.put_tariff(&Tariff { id, ..t.clone() })?;
            *s.put.entry("tariff").or_default() += 1;
        }
        for c in &plan.connections {
            let id = tx.connection_by_name(&c.name)?.map_or(0, |o| o.id);
            tx.put_connection(&Connection { id, ..c.clone() })?;
            *s.put.entry("connection").or_default() += 1;
        }
        for p in &plan.accounts {
            put_account(tx, &held, p, &mut s)?;
        }
        for name in &plan.gone_tariffs {
            if let Some(t) = tx.tariff_by_name(name)? {
                tx.delete_tariff(t.id)?;
                *s.deleted.entry("tariff").or_default() += 1;
            }
        }
        for name in &plan.gone_connections {
            if let Some(c) = tx.connection_by_name(name)? {
                tx.delete_connection(c.id)?;
                *s.deleted.entry("connection").or_default() += 1;
            }
        }
        if s.changed() {
            let (entry, ()) = Change::new(AuditKind::Import, format!("cluster:{origin}"), ())
                .after(&s)
                .entry(&System("cluster"));
            tx.append_audit(&entry)?;
        }
        Ok(s)
    })?;
    out.refused.sort();
    let mut seen: Vec<ProvRecord> = Vec::new();
    for r in records {
        seen.push(ProvRecord {
            body: local_body(store, &r.key)?,
            ..r.clone()
        });
    }
    for name in &out.displaced {
        let key = format!("account:{name}");
        if let Some(old) = journal.get(&key)? {
            seen.push(ProvRecord {
                body: local_body(store, &key)?,
                ..old
            });
        }
    }
    journal.put(&seen)?;
    Ok(out)
}

/// What the store and journal held before the transaction (sled blocks reads outside it).
struct Held {
    versions: BTreeMap<String, ProvRecord>,
    digest: BTreeMap<Id, Vec<String>>,
}

/// Writes one account with its rules (keeping its id and balance when it exists), settling
/// a SIP username another account holds by the version order.
fn put_account(
    tx: &crate::store::Tx<'_>,
    held: &Held,
    p: &PutAccount,
    s: &mut Applied,
) -> TxResult<()> {
    let tariff_id = match &p.tariff {
        None => None,
        Some(name) => match tx.tariff_by_name(name)? {
            Some(t) => Some(t.id),
            None => {
                return crate::store::abort_tx(crate::store::StoreError::NotFound {
                    kind: "tariff",
                    what: format!("{name:?}"),
                });
            }
        },
    };
    let old = tx.account_by_name(&p.account.name)?;
    let (id, balance) = old
        .as_ref()
        .map_or((0, p.account.balance), |o| (o.id, o.balance));
    let mut account = Account {
        id,
        balance,
        tariff_id,
        ..p.account.clone()
    };
    if let Some(sip) = &account.sip
        && let Some(holder_id) = tx.index_get(T::SipUsers, &sip.username)?
        && holder_id != id
        && let Some(holder) = tx.account(holder_id)?
    {
        let theirs = held.versions.get(&format!("account:{}", holder.name));
        if theirs.is_none_or(|h| p.rec.newer_than(h)) {
            warn!(username = %sip.username, from = %holder.name, to = %account.name, "cluster: SIP username goes to the newer record");
            tx.put_account(&Account {
                sip: None,
                ..holder.clone()
            })?;
            for name in held.digest.get(&holder.id).into_iter().flatten() {
                tx.delete_rule(holder.id, name)?;
            }
            s.displaced.push(holder.name.clone());
        } else {
            warn!(username = %sip.username, kept_by = %holder.name, account = %account.name, "cluster: SIP username stays with the newer record");
            account.sip = None;
            s.displaced.push(account.name.clone());
        }
    }
    let id = tx.put_account(&account)?;
    let keep: BTreeSet<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
    for name in &p.old_rules {
        if !keep.contains(name.as_str()) {
            tx.delete_rule(id, name)?;
        }
    }
    for r in &p.rules {
        // Without its SIP credentials (lost above) a digest rule cannot stand.
        if account.sip.is_none() && !r.ip_only {
            continue;
        }
        tx.put_rule(&AuthRule {
            account_id: id,
            ..r.clone()
        })?;
    }
    *s.put.entry("account").or_default() += 1;
    Ok(())
}
